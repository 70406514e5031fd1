"""``sdi serve objects``: the S3 API on one machine, with SigV4 and a dev key pair.

Point boto3, the AWS CLI or any S3 client at it with path-style addressing::

    sdi serve objects --port 8790 --data-dir /tmp/s3
    AWS_ACCESS_KEY_ID=sdi AWS_SECRET_ACCESS_KEY=sdi-secret-key \\
        aws --endpoint-url http://127.0.0.1:8790 s3 mb s3://demo

The access key pair comes from ``$SDI_S3_ACCESS_KEY`` and
``$SDI_S3_SECRET_KEY`` (default ``sdi`` / ``sdi-secret-key``, a development
pair printed at start).

It brings its own small HTTP/1.1 server rather than the runtime's, because
S3 clients need what that one leaves out: ``Expect: 100-continue`` (boto3
sends it with every PUT body), chunked request bodies, bodies of hundreds of
MiB, and HEAD answers whose ``Content-Length`` is the object's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from http import HTTPStatus
from typing import Any

from sdi.objstore.s3 import OBJECT_BYTES_MAX, S3Api, S3Request, S3Response, error_response
from sdi.runtime import Endpoint, Service, ServiceConfig

__all__ = ["DEV_ACCESS_KEY", "DEV_SECRET_KEY", "ObjectsService", "S3HttpServer", "service"]

DEV_ACCESS_KEY = "sdi"
DEV_SECRET_KEY = "sdi-secret-key"
HEAD_BYTES_MAX = 64 * 1024
KEEP_ALIVE_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 10.0


class _BadRequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class S3HttpServer:
    """HTTP/1.1 in front of :class:`S3Api`; each request runs on a worker thread."""

    def __init__(self, api: S3Api, *, body_bytes_max: int = OBJECT_BYTES_MAX) -> None:
        self.api = api
        self._body_bytes_max = body_bytes_max
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=HEAD_BYTES_MAX
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stops listening, lets requests in progress finish, closes idle connections."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=SHUTDOWN_GRACE_SECONDS)
        for task in self._connections:
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while not self._stopping:
                try:
                    async with asyncio.timeout(KEEP_ALIVE_SECONDS):
                        head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    await self._send_error(writer, 400, "RequestHeaderSectionTooLarge", "")
                    return
                self._busy.add(task)
                try:
                    method, target, version, headers = _parse_head(head)
                    body = await self._read_body(reader, writer, headers)
                except _BadRequestError as bad:
                    await self._send_error(writer, bad.status, bad.code, str(bad))
                    return
                path, _, query = target.partition("?")
                request = S3Request(method, path, query, headers, body)
                try:
                    response = await asyncio.to_thread(self.api.handle, request)
                except Exception as error:  # a bug must not kill the server
                    response = error_response(
                        "InternalError", f"internal error: {type(error).__name__}", 500, path, "-"
                    )
                keep_alive = _keep_alive(version, headers)
                await _send(writer, response, method, keep_alive)
                self._busy.discard(task)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Cancelled by stop(): end quietly (asyncio logs a connection task
            # that ends cancelled as an error).
            pass
        finally:
            self._connections.discard(task)
            self._busy.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bytes:
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length_text = headers.get("content-length", "0") or "0"
        if not length_text.isdigit():
            raise _BadRequestError(400, "InvalidArgument", "bad Content-Length")
        length = int(length_text)
        if length > self._body_bytes_max:
            raise _BadRequestError(
                400, "EntityTooLarge", f"a body holds at most {self._body_bytes_max} bytes here"
            )
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
                    400, "EntityTooLarge", f"a body holds at most {self._body_bytes_max} bytes here"
                )
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequestError(400, "IncompleteBody", "a chunk does not end with CRLF")

    @staticmethod
    async def _send_error(
        writer: asyncio.StreamWriter, status: int, code: str, message: str
    ) -> None:
        await _send(writer, error_response(code, message, status, "", "-"), "", False)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError(400, "BadRequest", "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequestError(400, "BadRequest", f"malformed header line {line[:40]!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return parts[0], parts[1], parts[2], headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


async def _send(
    writer: asyncio.StreamWriter, response: S3Response, method: str, keep_alive: bool
) -> None:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    length = response.content_length
    if length is None:
        length = len(response.body)
    headers = {
        "server": "sdi",
        "content-length": str(length),
        "connection": "keep-alive" if keep_alive else "close",
        **response.headers,
    }
    if response.status == 204:
        del headers["content-length"]
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    writer.write(head.encode("utf-8") + b"\r\n")
    if method != "HEAD" and response.body:
        writer.write(response.body)
    await writer.drain()


class ObjectsService(Service):
    """The S3 API over one in-process data node and the metadata store."""

    key = "objects"

    def __init__(self, *, access_key: str | None = None, secret_key: str | None = None) -> None:
        self.access_key = access_key or os.environ.get("SDI_S3_ACCESS_KEY") or DEV_ACCESS_KEY
        self.secret_key = secret_key or os.environ.get("SDI_S3_SECRET_KEY") or DEV_SECRET_KEY
        self.api: S3Api | None = None
        self.server: S3HttpServer | None = None
        self.port = 0

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        api = await asyncio.to_thread(S3Api, config.data_dir, {self.access_key: self.secret_key})
        server = S3HttpServer(api)
        try:
            self.port = await server.start(config.host, config.port)
        except BaseException:
            api.close()
            raise
        self.api, self.server = api, server
        url = f"http://{config.host}:{self.port}"
        return [
            Endpoint(
                f"objects (S3 API, access key {self.access_key!r}, secret key {self.secret_key!r})",
                url,
                f"AWS_ACCESS_KEY_ID={self.access_key} AWS_SECRET_ACCESS_KEY={self.secret_key}"
                f" aws --endpoint-url {url} s3 mb s3://demo",
            )
        ]

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.api is not None:
            self.api.close()
            self.api = None


def service(options: dict[str, Any]) -> Service:
    """The S3 service from ``sdi serve objects`` options (its keys come from the environment)."""
    return ObjectsService()
