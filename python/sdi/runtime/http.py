"""A small HTTP/1.1 server on asyncio streams, for sdi's JSON and status endpoints.

It handles what a browser, curl, a JSON client or an S3 SDK sends:
keep-alive, bodies by ``Content-Length`` or chunked, ``Expect: 100-continue``,
``HEAD`` (a response may state the ``Content-Length`` a GET would have), and
bounded headers and bodies (a request past a limit gets ``413`` or ``431``
and the connection is closed). Error responses come from a factory, so a
service can answer in its own format (JSON by default). No TLS.

>>> import asyncio
>>> async def hello(request: Request) -> Response:
...     return Response.json({"path": request.path})
>>> async def demo() -> bytes:
...     server = HttpServer(hello)
...     port = await server.start("127.0.0.1", 0)
...     reader, writer = await asyncio.open_connection("127.0.0.1", port)
...     writer.write(b"GET /x?a=1 HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n")
...     reply = await reader.read()
...     writer.close()
...     await server.stop()
...     return reply.split(b"\\r\\n\\r\\n", 1)[1]
>>> asyncio.run(demo())
b'{"path": "/x"}'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from sdi.runtime.service import close_connections
from sdi.runtime.text import is_decimal

__all__ = [
    "ErrorFactory",
    "HttpServer",
    "MethodNotAllowedError",
    "NotFoundError",
    "Request",
    "Response",
    "json_error",
]

REQUEST_HEAD_BYTES_MAX = 16 * 1024
REQUEST_BODY_BYTES_MAX = 1024 * 1024
logger = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 30.0


@dataclass
class Request:
    """One parsed request. Header names are lower-case."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass
class Response:
    """A response; build JSON, text and HTML ones with the class methods."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: The Content-Length to announce when it is not the body's (a HEAD answer).
    content_length: int | None = None
    #: A body sent in pieces instead of ``body`` (``content_length`` must say its size):
    #: each ``next()`` runs on a worker thread, so it may block (read a file). If it
    #: raises or yields fewer bytes than announced, the connection is closed, so the
    #: client sees a short body rather than a wrong one.
    chunks: Iterator[bytes] | None = None

    @classmethod
    def json(cls, value: object, status: int = 200) -> Response:
        return cls(status, json.dumps(value).encode(), {"content-type": "application/json"})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status, text.encode(), {"content-type": f"{content_type}; charset=utf-8"})

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json({"error": message, "status": status}, status)


Handler = Callable[[Request], Awaitable[Response]]
#: Builds the response for a request the server itself refuses: (status, code, message).
ErrorFactory = Callable[[int, str, str], Response]


def json_error(status: int, code: str, message: str) -> Response:
    """The default error response: ``{"error": message, "status": status}``."""
    return Response.error(status, message)


class NotFoundError(Exception):
    """A router's "no such resource": its handler answers 404 with the message."""


class MethodNotAllowedError(Exception):
    """A router's "wrong method": its handler answers 405 with ``Allow: allowed``."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


class _BadRequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class HttpServer:
    """Serves ``handler`` over HTTP/1.1; ``stop()`` lets in-flight requests finish."""

    def __init__(
        self,
        handler: Handler,
        *,
        body_bytes_max: int = REQUEST_BODY_BYTES_MAX,
        head_bytes_max: int = REQUEST_HEAD_BYTES_MAX,
        errors: ErrorFactory = json_error,
    ) -> None:
        self._handler = handler
        self._errors = errors
        self._body_bytes_max = body_bytes_max
        self._head_bytes_max = head_bytes_max
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (``port`` 0 picks a free one); returns the port."""
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=self._head_bytes_max
        )
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def stop(self) -> None:
        """Stops listening, lets requests in progress finish, closes idle connections."""
        self._stopping = True
        await close_connections(self._server, self._connections, self._busy)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer, task)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # stop() ends idle connections this way
        finally:
            self._connections.discard(task)
            self._busy.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(KEEP_ALIVE_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                refusal = self._errors(
                    431, "RequestHeaderSectionTooLarge", "request head too large"
                )
                await self._send(writer, refusal, "", False)
                return
            except asyncio.IncompleteReadError:
                return
            self._busy.add(task)
            try:
                request = self._parse_head(head)
                request.body = await self._read_body(reader, writer, request.headers)
            except _BadRequestError as bad:
                await self._send(writer, self._errors(bad.status, bad.code, str(bad)), "", False)
                return
            keep_alive = self._keep_alive(request)
            try:
                response = await self._handler(request)
            except Exception as error:  # A handler bug must not kill the server.
                response = self._errors(
                    500, "InternalError", f"internal error: {type(error).__name__}"
                )
            await self._send(writer, response, request.method, keep_alive)
            self._busy.discard(task)
            if not keep_alive:
                return

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bytes:
        """The body by Content-Length or chunked, after a 100 Continue if one is expected."""
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding and encoding != "chunked":
            raise _BadRequestError(501, "NotImplemented", f"transfer-encoding {encoding!r}")
        chunked = encoding == "chunked"
        length_text = headers.get("content-length", "0") or "0"
        if not is_decimal(length_text):
            raise _BadRequestError(400, "InvalidArgument", "bad Content-Length")
        length = int(length_text)
        if length > self._body_bytes_max:
            raise _BadRequestError(413, "EntityTooLarge", f"body over {self._body_bytes_max} bytes")
        if headers.get("expect", "").lower() == "100-continue" and (length or chunked):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if not chunked:
            return await reader.readexactly(length) if length else b""
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as error:
                raise _BadRequestError(400, "IncompleteBody", "malformed chunk size") from error
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > self._body_bytes_max:
                raise _BadRequestError(
                    413, "EntityTooLarge", f"body over {self._body_bytes_max} bytes"
                )
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequestError(400, "IncompleteBody", "a chunk does not end with CRLF")

    @staticmethod
    def _keep_alive(request: Request) -> bool:
        connection = request.headers.get("connection", "").lower()
        if request.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"

    @staticmethod
    def _parse_head(head: bytes) -> Request:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError as error:  # pragma: no cover - latin-1 decodes every byte
            raise _BadRequestError(400, "BadRequest", "undecodable request head") from error
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequestError(400, "BadRequest", "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequestError(400, "BadRequest", f"malformed header line {line[:40]!r}")
            name, value = name.lower(), value.strip()
            # A header sent twice is one list, comma-separated (RFC 9110 5.3).
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        return Request(method, target, version, headers)

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, method: str, keep_alive: bool
    ) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        length = len(response.body) if response.content_length is None else response.content_length
        headers = {
            "server": "sdi",
            "content-length": str(length),
            "connection": "keep-alive" if keep_alive else "close",
            **response.headers,
        }
        if response.status in (204, 304):
            del headers["content-length"]
        head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        writer.write(head.encode("utf-8") + b"\r\n")
        if method != "HEAD" and response.body:
            writer.write(response.body)
        await writer.drain()
        if response.chunks is not None:
            chunks, response.chunks = response.chunks, None
            if method != "HEAD":
                await self._send_chunks(writer, chunks, length)

    @staticmethod
    async def _send_chunks(
        writer: asyncio.StreamWriter, chunks: Iterator[bytes], length: int
    ) -> None:
        sent = 0
        try:
            while sent < length:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                sent += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except Exception:
            logger.exception("a streamed response body failed after %d bytes", sent)
            sent = -1
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if sent != length:
            raise ConnectionAbortedError(f"streamed body ended after {sent} of {length} bytes")
