"""Outgoing mail: submission, the delivery workers with retries, and bounces (RFC 3464 DSNs).

A message sent by a user (``POST /v1/messages`` or SMTP submission) is
recorded in one transaction by :func:`submit`: the sender's copy in
``sent``, an incoming-queue entry for the recipients in the service's own
domains (delivered locally by the pipeline), and one ``outgoing`` row per
remote recipient. :class:`OutgoingWorkers` deliver the rows: the recipient
domain's server comes from the route map (``domain -> host:port``; no DNS
MX lookups here), and each row goes through the state machine::

    queued --250--> sent
    queued --4xx, connection error--> queued (attempts + 1, next_attempt = now + base * 2**attempts)
    queued --5xx, no route, or attempts == max_attempts--> bounced (a DSN to the sender's inbox)

The DSN is a ``multipart/report; report-type=delivery-status`` message
(:func:`build_dsn`), queued in the same transaction as the ``bounced`` state.

>>> dsn = build_dsn("mailer-daemon@sdi.local", "ann@sdi.local",
...                 b"Subject: hi\\r\\nTo: x@far.example\\r\\n\\r\\nbody\\r\\n",
...                 [("x@far.example", "5.1.1", "550 no such user")])
>>> import email; report = email.message_from_bytes(dsn)
>>> report.get_content_type(), report.get_param("report-type")
('multipart/report', 'delivery-status')
>>> [part.get_content_type() for part in report.get_payload()]
['text/plain', 'message/delivery-status', 'text/rfc822-headers']
>>> backoff(1, 2.0, 600.0), backoff(3, 2.0, 600.0), backoff(20, 2.0, 600.0)
(2.0, 8.0, 600.0)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiosmtplib

from sdi.email.blobs import BlobStore
from sdi.email.mime import parse_message
from sdi.email.store import MailStore, NewMessage, OutgoingEntry, StoredMessage
from sdi.errors import InvalidArgument

__all__ = ["OutgoingWorkers", "RetryPolicy", "backoff", "build_dsn", "domain_of", "submit"]

logger = logging.getLogger(__name__)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def backoff(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base * 2**(attempts-1), capped."""
    return float(min(cap_s, base_s * 2 ** max(0, min(attempts - 1, 40))))


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 60.0
    cap_s: float = 3600.0
    max_attempts: int = 8
    timeout_s: float = 30.0


def build_dsn(
    reporter: str,
    to: str,
    original: bytes,
    failures: list[tuple[str, str, str]],
    reporting_mta: str = "sdi.local",
) -> bytes:
    """A delivery status notification (RFC 3464) to ``to`` for ``failures``:
    (recipient, status code like ``5.1.1``, diagnostic) each."""
    boundary = "sdi-dsn-" + secrets.token_hex(12)
    now = email.utils.formatdate(localtime=False)
    head = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    head_text = head.decode("utf-8", "replace").replace("\r\n", "\n").replace("\n", "\r\n")
    lines = [
        f"From: Mail Delivery System <{reporter}>",
        f"To: <{to}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: <{secrets.token_hex(12)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Your message could not be delivered to these recipients:",
        "",
    ]
    lines += [f"  {rcpt}: {diagnostic}" for rcpt, _, diagnostic in failures]
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {now}",
    ]
    for rcpt, status, diagnostic in failures:
        clean = " ".join(diagnostic.split())[:900]
        lines += [
            "",
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: smtp; {clean}",
        ]
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", "", head_text, ""]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8")


def submit(
    store: MailStore,
    blobs: BlobStore,
    user: str,
    rcpts: list[str],
    data: bytes,
    local_domains: frozenset[str],
) -> tuple[StoredMessage, list[int]]:
    """Records a user's message for sending (blocking): the sent copy, local and remote legs."""
    if not rcpts:
        raise InvalidArgument("a message needs at least one recipient")
    key = blobs.put(data)
    parsed = parse_message(data)
    sent = NewMessage(
        user, "sent", parsed.date, parsed.message_id, parsed.references, parsed.sender,
        parsed.recipients, parsed.subject, parsed.snippet, len(data), key, 0.0, [],
        parsed.search_fields(), read=True,
    )  # fmt: skip
    local = [r for r in rcpts if domain_of(r) in local_domains]
    remote = [(user, user, r, key) for r in rcpts if domain_of(r) not in local_domains]
    stored, _, ids = store.submit(sent, (user, local, data) if local else None, remote)
    assert stored is not None
    return stored, ids


class OutgoingWorkers:
    """Delivers due ``outgoing`` rows to their routes, retrying and bouncing (asyncio)."""

    def __init__(
        self,
        store: MailStore,
        blobs: BlobStore,
        routes: Mapping[str, tuple[str, int]],
        *,
        policy: RetryPolicy | None = None,
        workers: int = 4,
        hostname: str = "sdi.local",
        bounce_from: str = "mailer-daemon@sdi.local",
        on_bounce: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.routes = {domain.lower(): route for domain, route in routes.items()}
        self.policy = policy or RetryPolicy()
        self.workers = workers
        self.hostname = hostname
        self.bounce_from = bounce_from
        self.on_bounce = on_bounce
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: set[int] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        limit = asyncio.Semaphore(self.workers)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                now = time.time()
                due = await asyncio.to_thread(self.store.due_outgoing, now, 64)
                for entry in due:
                    if entry.id in self._busy:
                        continue
                    self._busy.add(entry.id)
                    await limit.acquire()
                    task = asyncio.create_task(self._deliver(entry, limit))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                upcoming = await asyncio.to_thread(self.store.next_outgoing_time)
                wait = 1.0 if upcoming is None else min(1.0, max(0.01, upcoming - time.time()))
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, entry: OutgoingEntry, limit: asyncio.Semaphore) -> None:
        try:
            error, permanent = await self._attempt(entry)
            attempts = entry.attempts + 1
            if error is None:
                await asyncio.to_thread(self.store.set_outgoing, entry.id, "sent", attempts, 0, "")
                logger.info("email: outgoing %d delivered to %s", entry.id, entry.rcpt)
                return
            if not permanent and attempts < self.policy.max_attempts:
                delay = backoff(attempts, self.policy.base_s, self.policy.cap_s)
                await asyncio.to_thread(
                    self.store.set_outgoing, entry.id, "queued", attempts,
                    time.time() + delay, error,
                )  # fmt: skip
                logger.info(
                    "email: outgoing %d to %s failed (%s); retry in %.1f s",
                    entry.id, entry.rcpt, error, delay,
                )  # fmt: skip
                return
            bounce = None
            if entry.mail_from:
                original = await asyncio.to_thread(self.blobs.get, entry.blob)
                status = "5.0.0" if permanent else "4.4.7"
                dsn = build_dsn(
                    self.bounce_from, entry.user, original, [(entry.rcpt, status, error)],
                    self.hostname,
                )  # fmt: skip
                bounce = ("", [entry.user], dsn)
            await asyncio.to_thread(
                self.store.set_outgoing, entry.id, "bounced", attempts, 0, error, bounce
            )
            logger.info("email: outgoing %d to %s bounced: %s", entry.id, entry.rcpt, error)
            if self.on_bounce is not None:
                self.on_bounce()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("email: outgoing %d failed unexpectedly", entry.id)
        finally:
            self._busy.discard(entry.id)
            limit.release()

    async def _attempt(self, entry: OutgoingEntry) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (error, whether it is permanent)."""
        route = self.routes.get(domain_of(entry.rcpt))
        if route is None:
            return f"no route to the domain {domain_of(entry.rcpt)!r}", True
        data = await asyncio.to_thread(self.blobs.get, entry.blob)
        try:
            await aiosmtplib.send(
                data,
                sender=entry.mail_from,
                recipients=[entry.rcpt],
                hostname=route[0],
                port=route[1],
                timeout=self.policy.timeout_s,
                local_hostname=self.hostname,
                start_tls=False,
                use_tls=False,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            codes = [r.code for r in refused.recipients]
            text = "; ".join(f"{r.code} {r.message}" for r in refused.recipients)
            return text, bool(codes) and all(code >= 500 for code in codes)
        except aiosmtplib.SMTPResponseException as error:
            return f"{error.code} {error.message}", error.code >= 500
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return f"{type(error).__name__}: {error}", False
        return None, False
