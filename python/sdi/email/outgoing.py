"""Outgoing mail: submission, the delivery workers with retries, and bounces (RFC 3464 DSNs).

A message sent by a user (``POST /v1/messages`` or SMTP submission) is
recorded in one transaction by :func:`submit`: the sender's copy in
``sent``, an incoming-queue entry for the recipients in the service's own
domains (delivered locally by the pipeline), and one ``outgoing`` row per
remote recipient. :class:`OutgoingWorkers` deliver the rows: the recipient
domain's server comes from the route map (``domain -> host:port``; no DNS
MX lookups here), and each row goes through the state machine::

    queued --claimed (lease)--> queued, next_attempt = now + lease_s, being sent
    queued --250--> sent
    queued --4xx, connection error--> queued (attempts + 1, next_attempt = now + base * 2**attempts)
    queued --5xx, no route, or attempts == max_attempts--> bounced (a DSN to the sender's inbox)

The DSN is a ``multipart/report; report-type=delivery-status`` message
(:func:`build_dsn`), queued in the same transaction as the ``bounced`` state.

**Several processes, one database.** A worker takes due rows with a lease
(:meth:`~sdi.email.store.MailStore.due_outgoing` with ``lease_s``): the
claim moves the row's ``next_attempt`` ``lease_s`` into the future in the
same transaction that reads it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite serialises writers), so no other process sees the row as due while
it is being sent. A worker claims only as many rows as it has free
delivery slots (a claimed row never waits for a slot while its lease runs
down), and an attempt is abandoned as a temporary failure once it has run
for half the lease, so a lease never runs out under a live sender. If the
process dies, the row is due again when its lease runs out, and any process
sends it. A worker that is stopped mid-attempt gives its row back (due at
once). Leases are compared with each process's wall clock: processes on
different machines need synchronised clocks (NTP), with a skew far below
``lease_s``.

**At least once, never lost.** A row is marked ``sent`` only after the
remote server has answered the end of DATA with 250, and the row is
marked in the very next step: the mark is written before anything else is
done (the QUIT comes after it), and a stop that arrives meanwhile waits for
the mark to be committed. What remains is the instant between the remote
server's 250 and that commit (and an attempt whose 250 is lost on the way,
or cut off by the attempt's time limit): if the process dies there, or
the connection breaks after the final ``.`` was sent but before the reply
arrived, the row is still ``queued`` and the message is sent again later,
so the recipient gets it twice. SMTP cannot do better: the sender cannot
know whether a message whose reply it never read was accepted, and RFC
5321 section 6.1 (and RFC 1047 before it) chooses duplicates over losses
for exactly this case; receivers and mail clients drop duplicates by their
``Message-ID``, which a resend keeps (the bytes sent are the stored blob,
unchanged). The alternative, marking the row before sending, would lose
the message whenever the process dies during the attempt.

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
>>> RetryPolicy().attempt_s
150.0
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiosmtplib

from sdi.email.blobs import Blobs
from sdi.email.mime import parse_message
from sdi.email.store import MailStore, NewMessage, OutgoingEntry, StoredMessage
from sdi.errors import InvalidArgument, SdiError

__all__ = ["OutgoingWorkers", "RetryPolicy", "backoff", "build_dsn", "domain_of", "submit"]

logger = logging.getLogger(__name__)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def backoff(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base * 2**(attempts-1), capped."""
    return float(min(cap_s, base_s * 2 ** max(0, min(attempts - 1, 40))))


async def back_off(
    failures: int, doing: str, error: BaseException, base_s: float = 1.0, cap_s: float = 30.0
) -> None:
    """After the ``failures``-th failure in a row of a loop's step (the database or a store
    is down, say): logs it and sleeps the :func:`backoff` delay."""
    delay = backoff(failures, base_s, cap_s)
    logger.warning("email: cannot %s (%s); trying again in %.1f s", doing, error, delay)
    await asyncio.sleep(delay)


@dataclass(frozen=True)
class RetryPolicy:
    """How outgoing rows are retried: ``base_s * 2**(attempts-1)`` capped at ``cap_s``,
    ``max_attempts`` in all; ``timeout_s`` per SMTP command; ``lease_s`` is how long a
    claimed row is kept from other processes (an attempt gives up after half of it)."""

    base_s: float = 60.0
    cap_s: float = 3600.0
    max_attempts: int = 8
    timeout_s: float = 30.0
    lease_s: float = 300.0

    def __post_init__(self) -> None:
        if self.lease_s <= 0 or self.timeout_s <= 0 or self.max_attempts < 1:
            raise InvalidArgument(
                "a retry policy needs lease_s and timeout_s above 0 and max_attempts of 1 or more"
            )

    @property
    def attempt_s(self) -> float:
        """The longest one attempt may take: half the lease, so the lease outlasts it."""
        return self.lease_s / 2


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
    blobs: Blobs,
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
    """Delivers due ``outgoing`` rows to their routes, retrying and bouncing (asyncio).

    ``workers`` deliveries run at once; each claims its row with the policy's
    lease, so several processes sharing one database never send a row at the
    same time (the module docs say what remains: a resend after a crash).
    """

    def __init__(
        self,
        store: MailStore,
        blobs: Blobs,
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
        self.workers = max(1, workers)
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
        """Stops claiming; deliveries in progress are cancelled and give their rows back
        (a row whose 250 was read is recorded as sent first)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self._wake.set()  # a slot is free: claim more

        store_failures = 0
        try:
            while True:
                self._wake.clear()
                free = self.workers - len(tasks)
                due: list[OutgoingEntry] = []
                try:
                    upcoming = await asyncio.to_thread(self.store.next_outgoing_time)
                    now = time.time()
                    if free > 0 and upcoming is not None and upcoming <= now:
                        # Only as many rows as there are free slots: a claimed row is sent
                        # at once, never left waiting while its lease runs down.
                        due = await asyncio.to_thread(
                            self.store.due_outgoing, now, min(free, 64),
                            lease_s=self.policy.lease_s,
                        )  # fmt: skip
                    store_failures = 0
                except Exception as error:  # the database is down: try again later
                    store_failures += 1
                    await back_off(store_failures, "read the outgoing queue", error)
                    continue
                if due:
                    for entry in due:
                        if entry.id in self._busy:
                            continue
                        self._busy.add(entry.id)
                        task = asyncio.create_task(self._deliver(entry))
                        tasks.add(task)
                        task.add_done_callback(finished)
                    continue  # more may be due
                if free <= 0 or upcoming is None:
                    wait = 1.0
                else:
                    wait = min(1.0, max(0.01, upcoming - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _record(self, write: Callable[[], None]) -> None:
        """Runs a store write to its end even if the caller is cancelled meanwhile."""
        future = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise

    async def _deliver(self, entry: OutgoingEntry) -> None:
        attempts = entry.attempts + 1
        settled = False
        try:
            error, permanent, client = await self._attempt(entry)
            settled = True  # no await since the answer: the outcome is recorded from here on
            if client is not None:
                try:
                    # 250 to the end of DATA: recorded before anything else (the QUIT and
                    # the log come after), and to its end even if a stop comes meanwhile.
                    await self._record(
                        functools.partial(
                            self.store.set_outgoing, entry.id, "sent", attempts, 0, ""
                        )
                    )
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(self.policy.timeout_s):
                            await client.quit()
                finally:
                    client.close()
                logger.info("email: outgoing %d delivered to %s", entry.id, entry.rcpt)
                return
            assert error is not None
            if not permanent and attempts < self.policy.max_attempts:
                delay = backoff(attempts, self.policy.base_s, self.policy.cap_s)
                await self._record(
                    functools.partial(
                        self.store.set_outgoing, entry.id, "queued", attempts,
                        time.time() + delay, error,
                    )
                )  # fmt: skip
                logger.info(
                    "email: outgoing %d to %s failed (%s); retry in %.1f s",
                    entry.id, entry.rcpt, error, delay,
                )  # fmt: skip
                return
            bounce = None
            if entry.mail_from:
                try:
                    original = await asyncio.to_thread(self.blobs.get, entry.blob)
                except (OSError, SdiError):  # the DSN goes without the original's headers
                    original = b""
                status = "5.0.0" if permanent else "4.4.7"
                dsn = build_dsn(
                    self.bounce_from, entry.user, original, [(entry.rcpt, status, error)],
                    self.hostname,
                )  # fmt: skip
                bounce = ("", [entry.user], dsn)
            await self._record(
                functools.partial(
                    self.store.set_outgoing, entry.id, "bounced", attempts, 0, error, bounce
                )
            )
            logger.info("email: outgoing %d to %s bounced: %s", entry.id, entry.rcpt, error)
            if self.on_bounce is not None:
                self.on_bounce()
        except asyncio.CancelledError:
            if not settled:  # stopped mid-attempt: the row is due again at once, for anyone
                with contextlib.suppress(Exception):
                    await self._record(
                        functools.partial(
                            self.store.set_outgoing, entry.id, "queued", entry.attempts,
                            time.time(), entry.last_error,
                        )
                    )  # fmt: skip
            raise
        except Exception:
            # The row keeps its lease and is tried again when it runs out (here or elsewhere).
            logger.exception("email: outgoing %d failed unexpectedly", entry.id)
        finally:
            self._busy.discard(entry.id)

    async def _attempt(
        self, entry: OutgoingEntry
    ) -> tuple[str | None, bool, aiosmtplib.SMTP | None]:
        """One SMTP transaction up to the answer to the end of DATA: ``(None, False,
        client)`` when the remote server took the message (the connection still open for
        the caller to QUIT), else ``(error, whether it is permanent, None)``."""
        route = self.routes.get(domain_of(entry.rcpt))
        if route is None:
            return f"no route to the domain {domain_of(entry.rcpt)!r}", True, None
        client: aiosmtplib.SMTP | None = None
        try:
            async with asyncio.timeout(self.policy.attempt_s):
                data = await asyncio.to_thread(self.blobs.get, entry.blob)
                client = aiosmtplib.SMTP(
                    hostname=route[0],
                    port=route[1],
                    timeout=self.policy.timeout_s,
                    local_hostname=self.hostname,
                    start_tls=False,
                    use_tls=False,
                )
                await client.connect()
                await client.sendmail(entry.mail_from, [entry.rcpt], data)
        except BaseException as error:
            if client is not None:
                client.close()
            if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
                codes = [r.code for r in error.recipients]
                text = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
                return text, bool(codes) and all(code >= 500 for code in codes), None
            if isinstance(error, aiosmtplib.SMTPResponseException):
                return f"{error.code} {error.message}", error.code >= 500, None
            if isinstance(error, TimeoutError) and not str(error):  # asyncio.timeout's
                return f"the attempt took over {self.policy.attempt_s:g} s", False, None
            if isinstance(error, aiosmtplib.SMTPException | OSError | SdiError | TimeoutError):
                return f"{type(error).__name__}: {error}", False, None
            raise
        return None, False, client
