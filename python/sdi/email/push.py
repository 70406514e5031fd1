"""WebSocket push of new-mail events to every connected session of a user.

A client connects to the push port and authenticates with its API token,
either in the handshake (``Authorization: Bearer <token>``) or as its first
message (``{"token": "<token>"}``, for browsers, which cannot set headers on
a WebSocket). The server answers ``{"type": "ready", "user": ...}``, then
sends ``{"type": "new_mail", "id": ..., "folder": ..., "from": ...,
"subject": ...}`` for each message stored for that user, on every session
the user has open. A bad token gets close code 4401.

>>> import asyncio, json
>>> from websockets.asyncio.client import connect
>>> from sdi.email.store import StoredMessage
>>> async def demo() -> list[str]:
...     hub = PushHub(lambda token: "ann@x.org" if token == "sdi_t" else None)
...     port = await hub.start("127.0.0.1", 0)
...     url = f"ws://127.0.0.1:{port}"
...     async with connect(url, additional_headers={"Authorization": "Bearer sdi_t"}) as ws:
...         ready = json.loads(await ws.recv())
...         hub.publish([StoredMessage(7, "ann@x.org", "inbox", False, 0, "b@y", "Hi", {})])
...         event = json.loads(await ws.recv())
...     await hub.stop()
...     return [ready["type"], event["type"], event["subject"]]
>>> asyncio.run(demo())
['ready', 'new_mail', 'Hi']
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sdi.email.store import StoredMessage
from sdi.runtime.auth import bearer_token

__all__ = ["PushHub"]

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0
#: Close code for a refused token (4000-4999 are the application's).
CLOSE_UNAUTHORIZED = 4401


class PushHub:
    """The push server and the registry of sessions by user (runs on the event loop)."""

    def __init__(self, verify: Callable[[str], str | None]) -> None:
        self.verify = verify
        self.sessions: dict[str, set[ServerConnection]] = {}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str, port: int) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(self._session, host, port, compression=None)
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _authenticate(self, connection: ServerConnection) -> str | None:
        assert connection.request is not None
        headers = {k.lower(): v for k, v in connection.request.headers.raw_items()}
        token = bearer_token(headers)
        if token is None:
            with contextlib.suppress(TimeoutError, ValueError, TypeError, AttributeError):
                async with asyncio.timeout(AUTH_TIMEOUT_S):
                    first = json.loads(await connection.recv())
                token = str(first.get("token", ""))
        if not token:
            return None
        return await asyncio.to_thread(self.verify, token)

    async def _session(self, connection: ServerConnection) -> None:
        try:
            user = await self._authenticate(connection)
            if user is None:
                await connection.close(CLOSE_UNAUTHORIZED, "a valid API token is needed")
                return
            self.sessions.setdefault(user, set()).add(connection)
            try:
                await connection.send(json.dumps({"type": "ready", "user": user}))
                async for _ in connection:
                    pass  # clients have nothing to say; reading notices the close
            finally:
                self.sessions[user].discard(connection)
                if not self.sessions[user]:
                    del self.sessions[user]
        except ConnectionClosed:
            pass

    def publish(self, messages: list[StoredMessage]) -> None:
        """Sends a ``new_mail`` event per message to its user's sessions (any thread)."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(messages)
        else:
            loop.call_soon_threadsafe(self._publish, messages)

    def _publish(self, messages: list[StoredMessage]) -> None:
        for message in messages:
            event = json.dumps(
                {
                    "type": "new_mail",
                    "id": message.id,
                    "folder": message.folder,
                    "from": message.sender,
                    "subject": message.subject,
                    "date": message.date,
                }
            )
            for connection in list(self.sessions.get(message.user, ())):
                task = asyncio.ensure_future(self._send(connection, event))
                task.add_done_callback(lambda t: t.exception())

    @staticmethod
    async def _send(connection: ServerConnection, event: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(event)
