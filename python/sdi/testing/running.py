"""A service on an event loop of its own thread, and a JSON HTTP client for it.

Tests give a service (the proximity service, the leaderboard) :data:`TEST_TOKEN`
as its API token; :func:`request` sends it unless told otherwise
(``token=None`` sends no token).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdi.runtime import Service, ServiceConfig

__all__ = ["TEST_TOKEN", "RunningService", "request"]

#: The API token tests configure (``ProximityService(api_token=TEST_TOKEN)``).
TEST_TOKEN = "sdi_test-token-for-the-proximity-tests"


def request(
    port: int,
    method: str,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    token: str | None = TEST_TOKEN,
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON body (None when empty)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        connection.close()


class RunningService:
    """A started service on its own event loop thread; ``stop()`` when done."""

    def __init__(
        self,
        service: Service,
        data_dir: Path,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.service = service
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = ServiceConfig("127.0.0.1", 0, data_dir)
        try:
            self.endpoints = asyncio.run_coroutine_threadsafe(
                service.start(config), self.loop
            ).result(120)
        except BaseException:
            self._end_loop()
            raise
        self.port = int(self.endpoints[0].url.rsplit(":", 1)[1])

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(60)
        self._end_loop()

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        raw: bytes | None = None,
        token: str | None = TEST_TOKEN,
    ) -> tuple[int, Any]:
        return request(self.port, method, path, body, raw=raw, token=token)
