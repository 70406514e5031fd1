"""A raw RESP client for tests: commands in, parsed replies out, nothing interpreted.

Unlike redis-py it turns no reply into Python types of its own and raises
nothing for error replies (they come back as :class:`sdi.resp.ReplyError`
values), so tests can compare servers reply for reply.
"""

from __future__ import annotations

import socket
from typing import Any

from sdi.resp import ReplyParser, encode_command

__all__ = ["RawClient"]


class RawClient:
    """One connection to ``127.0.0.1:port`` (RESP3 after ``HELLO 3`` when ``protocol`` is 3)."""

    def __init__(self, port: int, protocol: int = 2, timeout: float = 30.0) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.parser = ReplyParser()
        if protocol == 3:
            self.call("HELLO", "3")

    def send(self, data: bytes) -> None:
        """Sends raw bytes (a pipeline, or something malformed)."""
        self.socket.sendall(data)

    def read(self) -> Any:
        """The next reply."""
        while True:
            value = self.parser.gets()
            if value is not False:
                return value
            data = self.socket.recv(1 << 16)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.parser.feed(data)

    def call(self, *args: Any) -> Any:
        """Sends one command; its reply."""
        self.send(encode_command(*args))
        return self.read()

    def close(self) -> None:
        self.socket.close()
