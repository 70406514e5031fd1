"""Helpers of the email tests: a service on a thread with two users, SMTP sinks.

>>> wait_for(lambda: 42, 1.0)
42
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from sdi.email.outgoing import RetryPolicy
from sdi.email.service import EmailService, create_token, create_user
from sdi.testing.running import RunningService, request

__all__ = ["ANN", "BOB", "Mail", "Sink", "start_mail", "wait_for"]

ANN = "ann@sdi.local"
BOB = "bob@sdi.local"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "it") -> Any:
    """Polls ``predicate`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Mail:
    """A running email service and what tests need to talk to it."""

    running: RunningService
    service: EmailService
    data_dir: Path
    tokens: dict[str, str]

    @property
    def http(self) -> int:
        return self.running.port

    @property
    def smtp(self) -> int:
        return self.service.ports["smtp"]

    @property
    def submission(self) -> int:
        return self.service.ports["submission"]

    @property
    def ws(self) -> int:
        return self.service.ports["ws"]

    def api(
        self, method: str, path: str, body: object = None, user: str = ANN, raw: bytes | None = None
    ) -> tuple[int, Any]:
        return request(self.http, method, path, body, raw=raw, token=self.tokens[user])

    def raw(self, message_id: int, user: str = ANN) -> bytes:
        """``GET /v1/messages/{id}/raw``: the message as received."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http, timeout=30)
        try:
            headers = {"authorization": f"Bearer {self.tokens[user]}"}
            connection.request("GET", f"/v1/messages/{message_id}/raw", headers=headers)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, body
            return body
        finally:
            connection.close()

    def folder(self, folder: str = "inbox", user: str = ANN) -> list[dict[str, Any]]:
        status, page = self.api("GET", f"/v1/folders/{folder}/messages?limit=200", user=user)
        assert status == 200, page
        return list(page["messages"])

    def wait_messages(
        self, count: int, folder: str = "inbox", user: str = ANN, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            messages = self.folder(folder, user)
            # Stored is not yet indexed: the pipeline writes the index after
            # the store; wait for the entries in progress to finish.
            indexed = self.service._processing == 0
            return messages if len(messages) >= count and indexed else None

        return list(wait_for(enough, timeout, f"{count} messages in {user}'s {folder}"))


def start_mail(data_dir: Path, *, loop: str = "asyncio", **options: Any) -> Mail:
    """The service with users :data:`ANN` and :data:`BOB` over ``data_dir``, on a thread
    running ``loop`` (``asyncio`` or ``uvloop``); ``options`` go to :class:`EmailService`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for user in (ANN, BOB):
        with contextlib.suppress(ValueError):  # a restart over the same directory
            create_user(data_dir, user, user.split("@")[0].capitalize())
        tokens[user] = create_token(data_dir, user)
    options.setdefault("retry", RetryPolicy(base_s=0.05, cap_s=0.2, max_attempts=3))
    service = EmailService(**options)
    if loop == "uvloop":
        import uvloop

        running = RunningService(service, data_dir, loop_factory=uvloop.new_event_loop)
    else:
        running = RunningService(service, data_dir)
    return Mail(running, service, data_dir, tokens)


@dataclass
class Sink:
    """An SMTP server standing in for a remote domain's: records what it accepts."""

    port: int
    fail_first: int = 0
    always_fail: bool = False
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.always_fail:
            self.attempts.append(time.monotonic())
            return "550 5.1.1 User unknown at the far end"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.fail_first:
            return "451 4.3.0 Try again later"
        assert envelope.original_content is not None
        self.received.append(
            (str(envelope.mail_from), list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 OK"
