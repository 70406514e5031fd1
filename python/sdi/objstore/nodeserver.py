"""Data nodes as separate processes: an HTTP server per node, and the client the cluster uses.

A data node server exposes one :class:`~sdi.objstore.datanode.DataNode` over
HTTP/1.1 on loopback (the runtime's :class:`~sdi.runtime.http.HttpServer`;
store calls run on worker threads). :class:`RemoteNode` is the
:class:`~sdi.objstore.nodes.NodeClient` that talks to it: a small pool of
keep-alive connections, shared by many threads. :class:`NodeProcess` runs one
server as a child process (tests, benchmarks, a cluster on one machine), and
:func:`spawn_nodes` starts several at once.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path, NodeProcess("node-0", path, sync=False) as process:
...     node = process.client()
...     node.put("photos/cat.jpg#0", b"shard bytes")
...     node.get("photos/cat.jpg#0"), node.object_ids("photos/"), node.delete("photos/cat.jpg#0")
...     node.close()
(b'shard bytes', ['photos/cat.jpg#0'], True)

**What is durable when.** A ``PUT`` is answered ``200`` only once
:meth:`DataNode.put <sdi.objstore.datanode.DataNode.put>` has returned: the
bytes are synced to the data file and the index row is committed, so the
object survives a crash of the node process and of the machine (with
``--no-sync``, of the process only). A put that got no answer (the node died,
the connection broke) may or may not be stored, but never in part: after a
restart the id is either absent or holds exactly the bytes sent. A
``DELETE`` answered ``200`` is committed the same way. The server compacts
its data files itself (every ``compact_interval_s``, ten minutes by default).

**The HTTP API.** Object ids are percent-encoded in paths and query strings
(``urllib.parse.quote(id, safe="")``); CRC-32Cs are 8 lower-case hex digits.
Every response carries ``x-sdi-node-id`` (the client checks it, so a node
restarted on the wrong port is never taken for another).

=========================  =============================================================
``PUT /objects/{id}``      body = the object; ``x-sdi-crc32c`` (required) is checked
                           before anything is stored; ``200`` ``{"size", "crc32c"}`` once
                           durable (``Expect: 100-continue`` and chunked bodies work)
``GET /objects/{id}``      ``200`` the bytes, with ``x-sdi-crc32c``; ``404`` if absent
``DELETE /objects/{id}``   ``200`` ``{"deleted": true|false}`` (whether it was there)
``GET /objects``           ids, one percent-encoded id per line, in order; query
                           ``prefix``, ``after`` (a cursor: ids after it), ``limit``
                           (1 to 100000, default 10000); when more may follow the
                           response has ``x-sdi-next-after``, the cursor for the next page
``POST /scrub``            reads every object back; ``200`` ``{"rotten": [ids]}``
``GET /health``            ``{"node_id", "pid", "uptime_s", "objects", "bytes",
                           "live_bytes", "files", "sync"}``
``GET /ping``              ``{"node_id"}`` (cheap: the store is not touched)
=========================  =============================================================

An error is JSON ``{"error": message, "code": code, "status": status}`` with
the code also in ``x-sdi-error``: ``400`` InvalidArgument, MissingChecksum,
BadChecksumHeader, BadChecksum (the body does not match its CRC: nothing was
stored), BadRequest, IncompleteBody; ``404`` NoSuchObject, NoSuchPath;
``405`` MethodNotAllowed; ``413`` EntityTooLarge; ``431``
RequestHeaderSectionTooLarge; ``501`` NotImplemented (a transfer coding other
than chunked); ``500`` Corrupt (the stored bytes fail their CRC-32C: read
another replica), InternalError; ``503`` NodeStopping. A malformed request
gets its answer and the connection is closed; the server serves on.

**Running one.** ``python -m sdi.objstore.nodeserver --node-id node-0 --port 0
--data-dir /tmp/node-0`` prints one line ``sdi data node node-0 listening on
http://127.0.0.1:PORT`` once it serves; SIGTERM or SIGINT stops it cleanly
(requests in flight finish, the store is closed, exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import parse_qs, quote, unquote

from sdi.errors import (
    Closed,
    Corrupt,
    InternalError,
    InvalidArgument,
    LimitExceeded,
    ProtocolError,
    SdiError,
)
from sdi.objstore.datanode import ID_BYTES_MAX, CompactionReport, DataNode
from sdi.objstore.ec import checksum as crc32c
from sdi.objstore.nodes import NodeUnavailable
from sdi.runtime.child import ChildProcess
from sdi.runtime.http import HttpServer, Request, Response
from sdi.runtime.service import (
    Endpoint,
    Service,
    ServiceConfig,
    cancel_and_wait,
    run,
    run_services,
)
from sdi.runtime.text import is_decimal

__all__ = [
    "OBJECT_BYTES_MAX",
    "NodeProcess",
    "NodeServer",
    "RemoteNode",
    "check_node_id",
    "main",
    "spawn_nodes",
]

log = logging.getLogger(__name__)

#: The largest body a node server takes by default (the S3 API's object limit:
#: a replicated object is stored whole). Bodies are held in memory.
OBJECT_BYTES_MAX = 512 << 20
LIST_LIMIT_DEFAULT = 10_000
LIST_LIMIT_MAX = 100_000
HEAD_BYTES_MAX = 16 * 1024

CRC_HEADER = "x-sdi-crc32c"
NODE_HEADER = "x-sdi-node-id"
ERROR_HEADER = "x-sdi-error"
NEXT_HEADER = "x-sdi-next-after"

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_CRC = re.compile(r"[0-9A-Fa-f]{8}")
#: A percent-encoded path segment (RFC 3986 pchar, plus "/"), nothing else.
_ENCODED = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is a valid node id (it travels in a header); InvalidArgument if not."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise InvalidArgument(
            f"a node id is 1 to 128 letters, digits and '._:-' starting with a letter or digit"
            f" (like 'node-0'), not {node_id!r}"
        )
    return node_id


def _check_object_id(object_id: str) -> str:
    """``object_id`` percent-encoded for a URL; InvalidArgument if the DataNode would refuse it."""
    if not isinstance(object_id, str) or not object_id:
        raise InvalidArgument(f"an object id is a non-empty string, not {object_id!r}")
    try:
        size = len(object_id.encode())
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"an object id must be encodable as UTF-8 (no lone surrogates): {object_id!r}"
        ) from error
    if size > ID_BYTES_MAX:
        raise InvalidArgument(f"an object id is at most {ID_BYTES_MAX} bytes, not {size}")
    return quote(object_id, safe="")


# -- the server -------------------------------------------------------------------------------


class _RefusalError(Exception):
    """A request the handler refuses: becomes an error response."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


def _error(status: int, code: str, message: str, node_id: str, **headers: str) -> Response:
    body = json.dumps({"error": message, "code": code, "status": status}).encode()
    return Response(
        status,
        body,
        {
            "content-type": "application/json",
            ERROR_HEADER: code,
            NODE_HEADER: node_id,
            **headers,
        },
    )


class NodeServer(Service):
    """One :class:`DataNode` in ``data_dir`` served over HTTP (the API in the module docstring).

    ``sync=False`` skips the data file's fsync (see :class:`DataNode`).
    ``object_bytes_max`` bounds a PUT body (``413`` past it). Also a
    :class:`~sdi.runtime.Service`, which is how :func:`main` runs it.
    """

    key = "datanode"

    def __init__(
        self,
        node_id: str,
        data_dir: str | PathLike[str],
        *,
        sync: bool = True,
        object_bytes_max: int = OBJECT_BYTES_MAX,
        parent_pid: int | None = None,
        compact_interval_s: float = 600.0,
    ) -> None:
        self.node_id = check_node_id(node_id)
        self.compact_interval_s = compact_interval_s
        self._compactor: asyncio.Task[None] | None = None
        self._compacting: asyncio.Future[CompactionReport] | None = None
        self.data_dir = Path(data_dir)
        self.sync = sync
        if object_bytes_max < 0:
            raise InvalidArgument(f"object_bytes_max must not be negative, not {object_bytes_max}")
        self.object_bytes_max = object_bytes_max
        self.parent_pid = parent_pid
        self.port = 0
        self.node: DataNode | None = None
        self._http: HttpServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    # -- lifecycle ------------------------------------------------------------

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        """Opens the store in ``config.data_dir`` and listens on ``config.host:config.port``."""
        self.data_dir = config.data_dir
        port = await self.listen(config.host, config.port)
        url = f"http://{config.host}:{port}"
        return [Endpoint(f"data node {self.node_id}", url, f"curl {url}/health")]

    async def listen(self, host: str, port: int) -> int:
        """Opens the store and starts serving; the port (``port`` 0 picks a free one)."""
        node = await asyncio.to_thread(DataNode, self.data_dir, sync=self.sync)
        try:
            server = HttpServer(
                self._handle,
                body_bytes_max=self.object_bytes_max,
                head_bytes_max=HEAD_BYTES_MAX,
                errors=lambda status, code, message: _error(status, code, message, self.node_id),
            )
            self.port = await server.start(host, port)
        except BaseException:
            node.close()
            raise
        self.node, self._http = node, server
        self._started = time.monotonic()
        if self.parent_pid is not None:
            self._watch = asyncio.create_task(self._watch_parent(self.parent_pid))
        self._compactor = asyncio.create_task(self._compact_periodically(node))
        return self.port

    async def _compact_periodically(self, node: DataNode) -> None:
        """Compacts mostly-dead sealed data files every ``compact_interval_s``."""
        while True:
            await asyncio.sleep(self.compact_interval_s)
            # Shielded: stop() waits for a compaction in progress before closing the node.
            compacting = asyncio.ensure_future(asyncio.to_thread(node.compact))
            self._compacting = compacting
            try:
                report = await asyncio.shield(compacting)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("data node %s: compaction failed; it runs again later", self.node_id)
                continue
            log.info("data node %s: compaction %s", self.node_id, report)

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish, then closes the store."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        await cancel_and_wait(self._compactor)
        self._compactor = None
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await self._compacting
            self._compacting = None
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self.node is not None:
            await asyncio.to_thread(self.node.close)
            self.node = None

    async def _watch_parent(self, parent_pid: int) -> None:
        """Stops this process (SIGTERM: a clean stop) once ``parent_pid`` is gone."""
        while os.getppid() == parent_pid:
            await asyncio.sleep(0.5)
        log.warning("data node %s: parent process %d is gone; stopping", self.node_id, parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    # -- requests -------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        try:
            response = await self._route(request)
        except _RefusalError as refusal:
            return _error(
                refusal.status, refusal.code, str(refusal), self.node_id, **refusal.headers
            )
        except Exception as error:  # a bug must not kill the server
            log.exception(
                "data node %s: %s %s failed", self.node_id, request.method, request.target
            )
            return _error(
                500,
                "InternalError",
                f"internal error: {type(error).__name__}: {error}; see the node's log",
                self.node_id,
            )
        response.headers[NODE_HEADER] = self.node_id
        return response

    def _store(self) -> DataNode:
        if self.node is None:
            raise _RefusalError(503, "NodeStopping", "the data node is stopping; use another node")
        return self.node

    async def _route(self, request: Request) -> Response:
        path, _, query = request.target.partition("?")
        method = request.method
        if path.startswith("/objects/"):
            object_id = _decode_id(path[len("/objects/") :])
            self._no_query(query)
            if method == "PUT":
                return await self._put(object_id, request)
            if method == "GET":
                return await self._call(self._get, object_id)
            if method == "DELETE":
                return await self._call(self._delete, object_id)
            raise _not_allowed(method, path, "GET, PUT, DELETE")
        routes = {
            "/objects": ("GET", self._list),
            "/scrub": ("POST", self._scrub),
            "/health": ("GET", self._health),
            "/ping": ("GET", self._ping),
        }
        if path not in routes:
            raise _RefusalError(
                404,
                "NoSuchPath",
                f"no such path {path[:100]!r}; a data node serves /objects/{{id}}, /objects,"
                " /scrub, /health and /ping",
            )
        allowed, handler = routes[path]
        if method != allowed:
            raise _not_allowed(method, path, allowed)
        return await self._call(handler, query)

    @staticmethod
    def _no_query(query: str) -> None:
        if query:
            raise _RefusalError(400, "InvalidArgument", "/objects/{id} takes no query string")

    async def _call(self, handler: Callable[[str], Response], argument: str) -> Response:
        """Runs a blocking handler on a worker thread, turning store errors into responses."""
        try:
            response: Response = await asyncio.to_thread(handler, argument)
        except KeyError as missing:
            raise _RefusalError(
                404, "NoSuchObject", f"no object {missing.args[0]!r} on this node"
            ) from None
        except Corrupt as error:
            raise _RefusalError(500, "Corrupt", str(error)) from None
        except Closed as error:
            raise _RefusalError(503, "NodeStopping", f"{error}; the node is stopping") from None
        except LimitExceeded as error:
            raise _RefusalError(413, "EntityTooLarge", str(error)) from None
        except InvalidArgument as error:
            raise _RefusalError(400, "InvalidArgument", str(error)) from None
        return response

    async def _put(self, object_id: str, request: Request) -> Response:
        header = request.headers.get(CRC_HEADER)
        if header is None:
            raise _RefusalError(
                400,
                "MissingChecksum",
                f"a PUT needs an {CRC_HEADER} header: the body's CRC-32C as 8 hex digits",
            )
        if not _CRC.fullmatch(header):
            raise _RefusalError(
                400,
                "BadChecksumHeader",
                f"{CRC_HEADER} is the body's CRC-32C as 8 hex digits, not {header[:40]!r}",
            )
        expected = int(header, 16)
        body = request.body

        def put(object_id: str) -> Response:
            actual = crc32c(body)
            if actual != expected:
                raise _RefusalError(
                    400,
                    "BadChecksum",
                    f"the body's CRC-32C is {actual:08x}, not {expected:08x} as {CRC_HEADER}"
                    " says; it was damaged on the way, nothing was stored: send it again",
                )
            self._store().put(object_id, body)
            return Response.json({"size": len(body), "crc32c": f"{actual:08x}"})

        return await self._call(put, object_id)

    def _get(self, object_id: str) -> Response:
        data = self._store().get(object_id)
        return Response(
            200,
            data,
            {"content-type": "application/octet-stream", CRC_HEADER: f"{crc32c(data):08x}"},
        )

    def _delete(self, object_id: str) -> Response:
        return Response.json({"deleted": self._store().delete(object_id)})

    def _list(self, query: str) -> Response:
        params = _parse_query(query, {"prefix", "after", "limit"})
        limit_text = params.get("limit", str(LIST_LIMIT_DEFAULT))
        if not is_decimal(limit_text) or not 1 <= int(limit_text) <= LIST_LIMIT_MAX:
            raise _RefusalError(
                400, "InvalidArgument", f"limit is 1 to {LIST_LIMIT_MAX}, not {limit_text[:20]!r}"
            )
        ids, more = self._store().page(
            params.get("prefix", ""), params.get("after"), int(limit_text)
        )
        body = "".join(quote(object_id, safe="") + "\n" for object_id in ids).encode("ascii")
        headers = {"content-type": "text/plain; charset=utf-8"}
        if more:
            headers[NEXT_HEADER] = quote(ids[-1], safe="")
        return Response(200, body, headers)

    def _scrub(self, query: str) -> Response:
        _parse_query(query, set())
        return Response.json({"rotten": self._store().scrub()})

    def _health(self, query: str) -> Response:
        _parse_query(query, set())
        node = self._store()
        files = [file for file in node.files() if file.state != "dead"]
        return Response.json(
            {
                "node_id": self.node_id,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self._started, 3),
                "objects": node.count(),
                "bytes": sum(file.size for file in files),
                "live_bytes": sum(file.live_bytes for file in files),
                "files": len(files),
                "sync": self.sync,
            }
        )

    def _ping(self, query: str) -> Response:
        _parse_query(query, set())
        self._store()
        return Response.json({"node_id": self.node_id})


def _not_allowed(method: str, path: str, allowed: str) -> _RefusalError:
    return _RefusalError(
        405,
        "MethodNotAllowed",
        f"{method[:20]} is not allowed on {path[:60]!r}; use {allowed}",
        allow=allowed,
    )


def _decode_id(encoded: str) -> str:
    """The object id in a path segment; a 400 refusal if it is not a valid, encoded id."""
    if not encoded:
        raise _RefusalError(
            400, "InvalidArgument", "the object id is empty: PUT/GET/DELETE /objects/{id}"
        )
    if len(encoded) > 3 * ID_BYTES_MAX or not _ENCODED.fullmatch(encoded):
        raise _RefusalError(
            400,
            "InvalidArgument",
            f"an object id is percent-encoded UTF-8 of at most {ID_BYTES_MAX} bytes"
            f" (urllib.parse.quote(id, safe='')), not {encoded[:60]!r}",
        )
    try:
        object_id = unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        raise _RefusalError(
            400, "InvalidArgument", f"the object id {encoded[:60]!r} is not percent-encoded UTF-8"
        ) from None
    size = len(object_id.encode())
    if size > ID_BYTES_MAX:
        raise _RefusalError(
            400, "InvalidArgument", f"an object id is at most {ID_BYTES_MAX} bytes, not {size}"
        )
    return object_id


def _parse_query(query: str, allowed: set[str]) -> dict[str, str]:
    """The query's parameters (each at most once, each in ``allowed``); a 400 refusal if not."""
    try:
        parsed = parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise _RefusalError(
            400, "InvalidArgument", f"malformed query string {query[:60]!r}"
        ) from None
    params: dict[str, str] = {}
    for name, values in parsed.items():
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise _RefusalError(
                400, "InvalidArgument", f"unknown query parameter {name[:40]!r} (known: {known})"
            )
        if len(values) != 1:
            raise _RefusalError(400, "InvalidArgument", f"query parameter {name!r} given twice")
        params[name] = values[0]
    return params


# -- the client -------------------------------------------------------------------------------

_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


#: Bodies from this size on wait for ``100 Continue`` before they are sent.
_EXPECT_CONTINUE_BYTES = 1 << 20


def _interim_continue(sock: socket.socket, timeout: float) -> bool:
    """Waits for the first answer to a request sent with ``Expect: 100-continue``.

    True if it is ``100 Continue`` (send the body), False if it is the final
    response (a refusal); nothing is consumed: ``getresponse`` reads it.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            raise TimeoutError("no answer to Expect: 100-continue")
        head = sock.recv(12, socket.MSG_PEEK)
        if not head:
            raise http.client.RemoteDisconnected("closed before answering")
        if len(head) >= 12:
            return head[9:12] == b"100"
        time.sleep(0.001)  # a status line in pieces: wait for the rest


class _Connection(http.client.HTTPConnection):
    idle_since = 0.0
    reused = False


class RemoteNode:
    """A :class:`~sdi.objstore.nodes.NodeClient` for a node server at ``host:port``.

    Thread-safe: calls from many threads share up to ``pool_size``
    keep-alive connections (a call waits for a free one). ``connect_timeout``
    bounds connecting (and :meth:`ping`), ``read_timeout`` waiting for an
    answer (``scrub_timeout`` for :meth:`scrub`). A request that finds its
    pooled connection closed by the node (idle too long, the node restarted)
    is sent once more on a new connection; every request here is idempotent.
    A node that cannot be reached or does not answer in time raises
    :class:`~sdi.objstore.nodes.NodeUnavailable`.

    A :meth:`put` is durable on the node when it returns; its body's CRC-32C
    travels with it and is checked before the node stores anything. A
    :meth:`get` checks the bytes it receives against the CRC the node sends
    (:class:`~sdi.errors.Corrupt` if they differ). Bodies larger than
    ``object_bytes_max`` raise :class:`~sdi.errors.LimitExceeded` without
    being sent; bodies of 1 MiB or more wait for the node's ``100 Continue``,
    so a node with a lower ``--object-bytes-max`` refuses them (``413``,
    LimitExceeded too) before they travel. Idle connections are dropped after
    ``keepalive_seconds`` (the server closes them after 30 s).
    """

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        scrub_timeout: float = 3600.0,
        pool_size: int = 8,
        keepalive_seconds: float = 15.0,
        object_bytes_max: int = OBJECT_BYTES_MAX,
    ) -> None:
        self._node_id = check_node_id(node_id)
        if not 0 < port < 65536:
            raise InvalidArgument(f"port is 1 to 65535, not {port}")
        if min(connect_timeout, read_timeout, scrub_timeout) <= 0:
            raise InvalidArgument("timeouts must be positive")
        if pool_size < 1:
            raise InvalidArgument(f"pool_size must be at least 1, not {pool_size}")
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.scrub_timeout = scrub_timeout
        self.pool_size = pool_size
        self.keepalive_seconds = keepalive_seconds
        self.object_bytes_max = object_bytes_max
        #: How many TCP connections this client has opened (keep-alive keeps it low).
        self.connections_opened = 0
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"RemoteNode({self._node_id!r}, {self.address!r})"

    # -- NodeClient -----------------------------------------------------------

    def put(self, object_id: str, data: bytes | bytearray | memoryview) -> None:
        """Stores ``data`` under ``object_id`` (replacing what was there); durable on return."""
        path = "/objects/" + _check_object_id(object_id)
        view = memoryview(data).cast("B")  # sent as it is: no copy of a large body
        size = view.nbytes
        if size > self.object_bytes_max:
            raise LimitExceeded(
                f"an object sent to a data node holds at most {self.object_bytes_max} bytes,"
                f" not {size}; split it into shards"
            )
        checksum = crc32c(view)
        status, response, payload = self._request(
            "PUT", path, view, {CRC_HEADER: f"{checksum:08x}"}
        )
        if status != 200:
            self._fail(status, response, payload, object_id)

    def get(self, object_id: str) -> bytes:
        """The whole object, its CRC-32C checked; KeyError if absent, Corrupt if rotten."""
        status, response, payload = self._request("GET", "/objects/" + _check_object_id(object_id))
        if status != 200:
            self._fail(status, response, payload, object_id)
        header = response.getheader(CRC_HEADER) or ""
        if not _CRC.fullmatch(header) or crc32c(payload) != int(header, 16):
            raise Corrupt(
                f"object {object_id!r} from {self._where()} fails its CRC-32C ({CRC_HEADER}:"
                f" {header[:20]!r}); it was damaged on the way: read it again or from another node"
            )
        return payload

    def delete(self, object_id: str) -> bool:
        """Deletes ``object_id``; True if it was there. Committed on the node on return."""
        status, response, payload = self._request(
            "DELETE", "/objects/" + _check_object_id(object_id)
        )
        if status != 200:
            self._fail(status, response, payload, object_id)
        return bool(self._json(payload)["deleted"])

    def object_ids(self, prefix: str = "") -> list[str]:
        """Every stored object id starting with ``prefix``, in order."""
        return list(self.iter_object_ids(prefix))

    def iter_object_ids(
        self, prefix: str = "", *, page_size: int = LIST_LIMIT_DEFAULT
    ) -> Iterator[str]:
        """The ids starting with ``prefix``, in order, fetched ``page_size`` at a time.

        Each page is read at its own moment: ids put or deleted while this
        runs may or may not be listed.
        """
        if not 1 <= page_size <= LIST_LIMIT_MAX:
            raise InvalidArgument(f"page_size is 1 to {LIST_LIMIT_MAX}, not {page_size}")
        query = f"/objects?limit={page_size}&prefix={quote(prefix, safe='')}"
        after: str | None = None
        while True:
            target = query if after is None else f"{query}&after={after}"
            status, response, payload = self._request("GET", target)
            if status != 200:
                self._fail(status, response, payload, None)
            try:
                ids = [unquote(line, errors="strict") for line in payload.decode().splitlines()]
            except UnicodeDecodeError as error:
                raise self._protocol(f"an id list that is not percent-encoded ({error})") from None
            yield from ids
            cursor = response.getheader(NEXT_HEADER)
            if cursor is None:
                return
            if not ids or cursor == after or not _ENCODED.fullmatch(cursor):
                raise self._protocol(f"a list page that does not move on (cursor {cursor[:60]!r})")
            after = cursor

    def scrub(self) -> list[str]:
        """Has the node read every object back; the ids whose bytes fail their checksum."""
        status, response, payload = self._request("POST", "/scrub", timeout=self.scrub_timeout)
        if status != 200:
            self._fail(status, response, payload, None)
        rotten = self._json(payload)["rotten"]
        if not isinstance(rotten, list) or not all(isinstance(item, str) for item in rotten):
            raise self._protocol("a scrub answer without a list of ids")
        return rotten

    def ping(self) -> bool:
        """True if the node answers (as this node id) within ``connect_timeout``."""
        try:
            status, _, _ = self._request("GET", "/ping", timeout=self.connect_timeout)
        except NodeUnavailable:
            return False
        return status == 200

    def health(self) -> dict[str, Any]:
        """The node's id, pid, uptime and store figures (objects, bytes, live_bytes, files)."""
        status, response, payload = self._request("GET", "/health")
        if status != 200:
            self._fail(status, response, payload, None)
        return self._json(payload)

    def close(self) -> None:
        """Closes the idle connections; connections in use close when their call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the connection pool --------------------------------------------------

    def _where(self) -> str:
        return f"data node {self._node_id} at {self.address}"

    def _connection(self, fresh: bool) -> _Connection:
        """An idle pooled connection (unless ``fresh``) or a new one; NodeUnavailable if none."""
        now = time.monotonic()
        stale: list[_Connection] = []
        connection: _Connection | None = None
        with self._lock:
            if self._closed:
                raise Closed(f"{self!r} is closed; make a new client")
            while self._idle and not fresh:
                candidate = self._idle.pop()
                if now - candidate.idle_since < self.keepalive_seconds:
                    connection = candidate
                    break
                stale.append(candidate)  # the node may be closing it: do not race it
        for old in stale:
            old.close()
        if connection is not None:
            connection.reused = True
            return connection
        connection = _Connection(self.host, self.port, timeout=self.connect_timeout)
        try:
            connection.connect()
        except TimeoutError:
            connection.close()
            raise NodeUnavailable(
                f"{self._where()} did not accept a connection within {self.connect_timeout} s;"
                " it is down, overloaded or unreachable: use another node and check it"
            ) from None
        except OSError as error:
            connection.close()
            raise NodeUnavailable(
                f"{self._where()} cannot be reached ({error.strerror or error}); it is down or"
                " not started: use another node, and start it (python -m sdi.objstore.nodeserver)"
            ) from None
        with self._lock:
            self.connections_opened += 1
        return connection

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    def _drop_idle(self) -> None:
        """Closes every idle connection: one was found closed by the node, so the rest are too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _request(
        self,
        method: str,
        target: str,
        body: bytes | memoryview | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        """Sends one request; its status, response and body. NodeUnavailable if it cannot."""
        wait = self.connect_timeout + self.read_timeout
        if not self._slots.acquire(timeout=wait):
            raise NodeUnavailable(
                f"all {self.pool_size} connections to {self._where()} stayed busy for {wait} s;"
                " the node is slow: use another node, or a larger pool_size"
            )
        try:
            for attempt in (0, 1):
                connection = self._connection(fresh=attempt > 0)
                try:
                    response, payload = self._exchange(
                        connection, method, target, body, headers, timeout or self.read_timeout
                    )
                except _STALE as error:
                    connection.close()
                    if connection.reused and attempt == 0:
                        self._drop_idle()
                        continue  # the node closed it while idle: once more, on a new one
                    raise NodeUnavailable(
                        f"{self._where()} closed the connection during {method} {target[:80]}"
                        f" ({type(error).__name__}); it may have died: retry on another node"
                    ) from None
                except TimeoutError:
                    connection.close()
                    raise NodeUnavailable(
                        f"{self._where()} did not answer {method} {target[:80]} within"
                        f" {timeout or self.read_timeout} s; it is hung or overloaded: use"
                        " another node and check its log"
                    ) from None
                except (OSError, http.client.HTTPException) as error:
                    connection.close()
                    raise NodeUnavailable(
                        f"{self._where()} broke off {method} {target[:80]} ({error!r});"
                        " it may have died: retry on another node"
                    ) from None
                answered_as = response.getheader(NODE_HEADER)
                if response.will_close:
                    connection.close()
                else:
                    self._release(connection)
                if answered_as != self._node_id:
                    raise NodeUnavailable(
                        f"{self.address} answered as data node {answered_as!r}, not"
                        f" {self._node_id!r}; another process took its port: fix the"
                        " cluster's node map"
                    )
                return response.status, response, payload
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    @staticmethod
    def _exchange(
        connection: _Connection,
        method: str,
        target: str,
        body: bytes | memoryview | None,
        headers: dict[str, str] | None,
        timeout: float,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole response on ``connection``.

        A large body waits for the node's ``100 Continue`` first, so a body
        the node refuses (too large) is answered ``413`` rather than cut off.
        """
        sock = connection.sock
        assert sock is not None
        sock.settimeout(timeout)
        size = 0 if body is None else len(body)
        expect = size >= _EXPECT_CONTINUE_BYTES
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("content-length", str(size))
        if expect:
            connection.putheader("expect", "100-continue")
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders(None if expect else body)
        if expect and _interim_continue(sock, timeout):
            assert body is not None
            connection.send(body)
        response = connection.getresponse()  # skips a 100 Continue
        return response, response.read()

    def _json(self, payload: bytes) -> dict[str, Any]:
        try:
            value = json.loads(payload)
        except ValueError:
            raise self._protocol(f"a body that is not JSON: {payload[:80]!r}") from None
        if not isinstance(value, dict):
            raise self._protocol(f"JSON that is not an object: {payload[:80]!r}")
        return value

    def _protocol(self, what: str) -> ProtocolError:
        return ProtocolError(f"{self._where()} answered {what}; is it a data node server?")

    def _fail(
        self,
        status: int,
        response: http.client.HTTPResponse,
        payload: bytes,
        object_id: str | None,
    ) -> NoReturn:
        """Raises the exception that an error response stands for."""
        code = response.getheader(ERROR_HEADER) or ""
        try:
            message = str(json.loads(payload)["error"])
        except (ValueError, KeyError, TypeError):
            message = payload[:200].decode("utf-8", "replace")
        where = self._where()
        if code == "NoSuchObject" and object_id is not None:
            raise KeyError(object_id)
        if code == "Corrupt":
            raise Corrupt(f"{where}: {message}")
        if code == "BadChecksum":
            raise Corrupt(f"{where} refused the put: {message}")
        if status == 413:
            raise LimitExceeded(f"{where}: {message}; send less, or raise its --object-bytes-max")
        if status == 503:
            raise NodeUnavailable(f"{where}: {message}")
        if 400 <= status < 500:
            raise InvalidArgument(f"{where} refused the request ({status} {code}): {message}")
        if status >= 500:
            raise InternalError(f"{where} failed ({status} {code}): {message}")
        raise self._protocol(f"{status} {code}: {message}")


# -- child processes --------------------------------------------------------------------------


class NodeProcess(ChildProcess):
    """A node server as a child process: ``node_id`` over ``data_dir`` on ``port`` (0: free one).

    :meth:`start` returns once it listens (:attr:`port` is then the real
    one); :meth:`kill` is ``kill -9``, :meth:`stop` a clean stop (SIGTERM);
    :meth:`restart` starts it again on the same port and directory. The
    end of what it prints is kept in :attr:`output`. The child stops on its
    own (cleanly) if this process dies.
    """

    timeout = 30.0

    def __init__(
        self,
        node_id: str,
        data_dir: str | PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        sync: bool = True,
        args: Sequence[str] = (),
    ) -> None:
        self.node_id = check_node_id(node_id)
        super().__init__(f"data node {self.node_id} ({data_dir})", port=port, host=host)
        self.data_dir = Path(data_dir)
        self.sync = sync
        self.args = list(args)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sdi.objstore.nodeserver",
            "--node-id", self.node_id, "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--parent-pid", str(os.getpid()),
            *([] if self.sync else ["--no-sync"]), *self.args,
        ]  # fmt: skip

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **options: Any) -> RemoteNode:
        """A new :class:`RemoteNode` for this node (``options`` go to its constructor)."""
        if self.port == 0:
            raise InvalidArgument(f"data node {self.node_id} has not started: call start() first")
        return RemoteNode(self.node_id, self.host, self.port, **options)


def spawn_nodes(
    count: int,
    data_dir: str | PathLike[str],
    *,
    sync: bool = True,
    host: str = "127.0.0.1",
    args: Sequence[str] = (),
    timeout: float = 30.0,
) -> list[NodeProcess]:
    """Starts ``node-0`` .. ``node-{count-1}`` in ``data_dir/node-i``, in parallel; once all listen.

    If one fails to start, the others are killed and RuntimeError says why.
    """
    if count < 1:
        raise InvalidArgument(f"count must be at least 1, not {count}")
    nodes = [
        NodeProcess(
            f"node-{index}", Path(data_dir) / f"node-{index}", host=host, sync=sync, args=args
        )
        for index in range(count)
    ]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_listening(timeout)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


# -- the entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sdi.objstore.nodeserver``: serves one data node until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m sdi.objstore.nodeserver",
        description="Serve one sdi data node (packed data files + SQLite index) over HTTP.",
    )
    parser.add_argument("--node-id", required=True, help="this node's id, like node-0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--data-dir", required=True, type=Path, help="the node's directory")
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="skip the data file's fsync (puts then survive a process crash, not a power cut)",
    )
    parser.add_argument(
        "--object-bytes-max",
        type=int,
        default=OBJECT_BYTES_MAX,
        help=f"largest PUT body in bytes (default {OBJECT_BYTES_MAX})",
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="stop cleanly once this process is gone"
    )
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 0 <= options.port < 65536:
        parser.error(f"--port is 0 to 65535, not {options.port}")
    try:
        server = NodeServer(
            options.node_id,
            options.data_dir,
            sync=not options.no_sync,
            object_bytes_max=options.object_bytes_max,
            parent_pid=options.parent_pid,
        )
    except InvalidArgument as error:
        parser.error(str(error))
    config = ServiceConfig(options.host, options.port, options.data_dir)

    async def serve() -> None:
        await run_services([(server, config)])

    try:
        run(serve)
    except (SdiError, OSError) as error:
        with contextlib.suppress(OSError):  # stderr may be a pipe nobody reads any more
            print(
                f"sdi data node {options.node_id} cannot serve {options.data_dir} on"
                f" {options.host}:{options.port}: {error}",
                file=sys.stderr,
                flush=True,
            )
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
