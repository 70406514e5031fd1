"""The SMTP servers: inbound mail (MX, port 25's role) and submission (AUTH), on aiosmtpd.

Inbound (``mode="mx"``) accepts mail for the service's users only: a
recipient outside the service's domains is refused with ``550 5.7.1``
(no relaying), an unknown user with ``550 5.1.1``, a message over
``message_bytes_max`` with ``552`` (the ``SIZE`` extension announces the
limit), a header section over ``header_bytes_max`` with ``552 5.3.4``.
``8BITMIME`` and ``SMTPUTF8`` are announced, and ``STARTTLS`` when a TLS
context is given. The ``250`` after DATA is sent only once the raw message
is committed to the durable incoming queue (SQLite, ``synchronous=FULL``).

Submission (``mode="submission"``) needs ``AUTH PLAIN`` or ``AUTH LOGIN``
with the user's address and one of the user's API tokens as the password
(over TLS when a certificate is configured), takes mail from that address
only (``553`` otherwise) and relays to any recipient
(:func:`sdi.email.outgoing.submit`).

>>> import asyncio, smtplib
>>> from sdi.email.store import MailStore
>>> async def demo() -> list[object]:
...     store = MailStore(":memory:")
...     store.create_user("ann@sdi.local")
...     server = SmtpServer(store, frozenset({"sdi.local"}))
...     port = await server.start("127.0.0.1", 0)
...     def send() -> object:
...         with smtplib.SMTP("127.0.0.1", port) as client:
...             return client.sendmail("x@y.org", ["ann@sdi.local"], b"Subject: hi\\r\\n\\r\\nyo")
...     refused = await asyncio.to_thread(send)
...     await server.stop()
...     return [refused, store.incoming_count()]
>>> asyncio.run(demo())
[{}, 1]
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sdi.email.blobs import Blobs
from sdi.email.outgoing import domain_of, submit
from sdi.email.search import SearchIndex
from sdi.email.store import MailStore
from sdi.runtime.auth import TokenStore

__all__ = ["HEADER_BYTES_MAX", "MESSAGE_BYTES_MAX", "RCPTS_MAX", "SmtpServer"]

logger = logging.getLogger(__name__)


class _QuietLoginData(logging.Filter):
    """aiosmtpd warns about its own use of the deprecated ``Session.login_data`` at every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietLoginData())

MESSAGE_BYTES_MAX = 25 * 1024 * 1024
HEADER_BYTES_MAX = 64 * 1024
RCPTS_MAX = 100


def _header_bytes(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end


class _Handler:
    """aiosmtpd's handler hooks for one server."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook names
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.server.mode == "submission":
            if not session.authenticated:
                return "530 5.7.0 Authentication required"
            if address.lower() != str(session.auth_data).lower():
                return f"553 5.7.1 you may send as {session.auth_data} only"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= RCPTS_MAX:
            return "452 4.5.3 Too many recipients"
        local = domain_of(address) in self.server.domains
        if not local and self.server.mode == "mx":
            return "550 5.7.1 Relaying denied: not a domain of this server"
        if local:
            user = await asyncio.to_thread(self.server.store.user, address)
            if user is None:
                return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, smtp: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        if _header_bytes(data) > self.server.header_bytes_max:
            return "552 5.3.4 Header section too large"
        server = self.server
        server.in_flight += 1
        try:
            if server.mode == "submission":
                blobs = server.blobs
                assert blobs is not None
                user, rcpts = str(session.auth_data), list(envelope.rcpt_tos)

                def submit_and_index() -> tuple[Any, list[int]]:
                    # On a worker thread: the store commits and the index syncs to disk.
                    stored, ids = submit(server.store, blobs, user, rcpts, data, server.domains)
                    if server.index is not None:
                        server.index.add(
                            stored.user, stored.id, stored.search, stored.date, stored.folder, True
                        )
                    return stored, ids

                stored, ids = await asyncio.to_thread(submit_and_index)
                entry = ids[0] if ids else stored.id
            else:
                entry = await asyncio.to_thread(
                    server.store.enqueue_incoming,
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    data,
                )
        except Exception:
            logger.exception("email: queueing a message failed")
            return "451 4.3.0 Could not queue the message, try again later"
        finally:
            server.in_flight -= 1
        if server.on_queued is not None:
            server.on_queued()
        return f"250 2.0.0 OK queued as {entry}"


class SmtpServer:
    """One listening SMTP server (inbound or submission) over a :class:`MailStore`."""

    def __init__(
        self,
        store: MailStore,
        domains: frozenset[str],
        *,
        mode: str = "mx",
        tokens: TokenStore | None = None,
        blobs: Blobs | None = None,
        tls: ssl.SSLContext | None = None,
        message_bytes_max: int = MESSAGE_BYTES_MAX,
        header_bytes_max: int = HEADER_BYTES_MAX,
        hostname: str = "sdi.local",
        on_queued: Callable[[], None] | None = None,
        index: SearchIndex | None = None,
    ) -> None:
        if mode not in ("mx", "submission"):
            raise ValueError(f"mode is 'mx' or 'submission', not {mode!r}")
        if mode == "submission" and (tokens is None or blobs is None):
            raise ValueError("submission needs the token store and the blob store")
        self.store = store
        self.domains = frozenset(d.lower() for d in domains)
        self.mode = mode
        self.tokens = tokens
        self.blobs = blobs
        self.tls = tls
        self.message_bytes_max = message_bytes_max
        self.header_bytes_max = header_bytes_max
        self.hostname = hostname
        self.on_queued = on_queued
        self.index = index
        self.in_flight = 0
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.tokens is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace").strip().lower()
        subject = self.tokens.verify(data.password.decode("utf-8", "replace"))
        if subject is None or subject.lower() != login:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=login)

    def _protocol(self) -> SMTP:
        submission = self.mode == "submission"
        smtp = SMTP(
            self._handler,
            data_size_limit=self.message_bytes_max,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="sdi email",
            tls_context=self.tls,
            require_starttls=False,
            auth_required=False,
            auth_require_tls=submission and self.tls is not None,
            authenticator=self._authenticate if submission else None,
            auth_exclude_mechanism=None if submission else ["PLAIN", "LOGIN"],
            timeout=300,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(smtp)
        return smtp

    async def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (0 picks one); the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stops listening, lets messages being queued finish, closes sessions."""
        if self._server is not None:
            self._server.close()
        for _ in range(100):
            if self.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        for smtp in list(self._sessions):
            transport = smtp.transport
            if transport is not None:
                transport.close()
        self._sessions.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
