"""Cluster metadata in etcd: a client of its v3 JSON API and a member run as a child process.

The brokers of a replicated message queue keep their shared metadata (live
brokers, partition assignment, leaders, leader epochs, in-sync replicas) in
etcd, the Raft-based key-value store. Each broker runs one etcd member as a
child process (:class:`EtcdMember`); the members of all brokers form one
etcd cluster, so three brokers keep a quorum when one of them dies.

:class:`Etcd` talks to the members through etcd's JSON gRPC-gateway
(``POST /v3/kv/range`` and friends) with a small HTTP/1.1 client written on
asyncio streams: keys and values travel base64-encoded, int64 fields come
back as JSON strings and absent fields mean zero (proto3 JSON). Every
request is bounded by the client's ``timeout``; an endpoint that refuses
the connection, hangs or answers "unavailable" (no leader, leader changed,
request timed out) is left for the next one. A typical exchange::

    member = EtcdMember("b0", Path("data/etcd"), "http://127.0.0.1:2379",
                        "http://127.0.0.1:2380", {"b0": "http://127.0.0.1:2380"})
    await member.start()
    async with Etcd([member.client_url]) as etcd:
        revision = await etcd.put(b"/brokers/0", b"host:9092")
        ok = await etcd.txn([(b"/leader/t-0", 0)], [(b"/leader/t-0", b"0", 0)])
    await member.stop()

Only etcd 3.4's API is used (the ``/v3/`` prefix, Debian's ``etcd-server``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from sdi import errors
from sdi.runtime.text import is_decimal

__all__ = ["Etcd", "EtcdError", "EtcdMember"]

#: gRPC status codes that mean "this member cannot serve right now, ask another".
_CODE_CANCELLED = 1
_CODE_DEADLINE_EXCEEDED = 4
_CODE_NOT_FOUND = 5
_CODE_UNAVAILABLE = 14
_RETRYABLE_CODES = frozenset({_CODE_CANCELLED, _CODE_DEADLINE_EXCEEDED, _CODE_UNAVAILABLE})
#: HTTP statuses of a gateway or proxy that could not reach the server.
_RETRYABLE_STATUSES = frozenset({502, 503, 504})

#: The largest HTTP response body the client accepts.
_BODY_MAX = 256 << 20
#: The most header lines one HTTP response may carry.
_HEADERS_MAX = 100
#: Idle keep-alive connections kept per endpoint.
_IDLE_MAX = 8
#: Bytes of the member's log quoted in a start-up failure.
_LOG_TAIL = 3000

_PR_SET_PDEATHSIG = 1


class EtcdError(errors.SdiError):
    """etcd answered with an error, answered nonsense, or no endpoint answered at all.

    The message names the endpoint(s), the request and what came back.
    ``code`` is the gRPC status code etcd gave (5 for "not found", 3 for an
    invalid argument, ...), or None when there was no answer to take one from.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# The member process


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` making the child get SIGKILL when the thread that forked it dies."""
    prctl: Any = None
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(
                ctypes.c_int(_PR_SET_PDEATHSIG),
                ctypes.c_ulong(signal.SIGKILL),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            )
        # The parent may have died between fork() and prctl(): then nobody
        # would send the signal any more.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _split_url(url: str, what: str) -> tuple[str, int, str]:
    """``(host, port, netloc)`` of an ``http://host:port`` URL; InvalidArgument otherwise."""
    text = url if "://" in url else f"http://{url}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise errors.InvalidArgument(
            f"{what} {url!r} is not an http://host:port URL (TLS is not supported)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise errors.InvalidArgument(f"{what} {url!r} must not have a path or query")
    return parts.hostname, port, parts.netloc


class EtcdMember:
    """One etcd member as a child process, killed with SIGKILL if its parent dies.

    The child gets ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (through ctypes, in
    ``preexec_fn``): when the process that started it dies, even by
    SIGKILL, the kernel kills the member too. Linux sends that signal when
    the *thread* that forked the child exits, so call :meth:`start` from the
    event loop's thread, not from a short-lived worker thread. The member
    runs in its own session, so a Ctrl-C meant for the broker does not stop
    it before the broker is done with it.

    ``data_dir`` is the member's etcd data directory (created with mode
    0700); its stdout and stderr go to ``data_dir/etcd.log`` (etcd warns
    once per start about that "invalid file" in its directory: harmless). On a start
    with a data directory from an earlier run etcd resumes from it and
    ignores ``initial_cluster``, ``cluster_token`` and the "new" cluster
    state. ``initial_cluster`` maps every member's name to its peer URL,
    this member's included. ``heartbeat_interval_ms`` and
    ``election_timeout_ms`` are etcd's Raft timings (fast defaults for a
    loopback cluster; etcd's own are 100 and 1000); every member of a
    cluster must use the same. ``extra_args`` are appended to etcd's
    command line (``["--auto-compaction-retention", "1h"]``).
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_url: str,
        peer_url: str,
        initial_cluster: dict[str, str],
        *,
        binary: str = "etcd",
        cluster_token: str = "sdi-mq",
        heartbeat_interval_ms: int = 50,
        election_timeout_ms: int = 500,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not name or "=" in name or "," in name:
            raise errors.InvalidArgument(f"etcd member name {name!r} must be non-empty, no = or ,")
        if initial_cluster.get(name) != peer_url:
            raise errors.InvalidArgument(
                f"initial_cluster must map this member {name!r} to its peer URL {peer_url!r}; "
                f"it is {initial_cluster!r}"
            )
        for other, url in initial_cluster.items():
            _split_url(url, f"peer URL of {other!r}")
        self._client_host, self._client_port, _ = _split_url(client_url, "client_url")
        _split_url(peer_url, "peer_url")
        if heartbeat_interval_ms <= 0 or election_timeout_ms < 5 * heartbeat_interval_ms:
            raise errors.InvalidArgument(
                "heartbeat_interval_ms must be positive and election_timeout_ms at least "
                f"5 times it; they are {heartbeat_interval_ms} and {election_timeout_ms}"
            )
        self.name = name
        self.data_dir = Path(data_dir)
        #: Where clients reach this member (``http://host:port``).
        self.client_url = client_url
        self.peer_url = peer_url
        self.initial_cluster = dict(initial_cluster)
        self.binary = binary
        self.cluster_token = cluster_token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The member's process id while it runs; None before start and after it exited."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        return process.pid

    @property
    def log_path(self) -> Path:
        """The member's log file (its stdout and stderr, appended across starts)."""
        return self.data_dir / "etcd.log"

    def command(self) -> list[str]:
        """The command line :meth:`start` runs (the binary as given, not resolved)."""
        cluster = ",".join(f"{name}={url}" for name, url in self.initial_cluster.items())
        return [
            self.binary,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.cluster_token,
            "--heartbeat-interval",
            str(self.heartbeat_interval_ms),
            "--election-timeout",
            str(self.election_timeout_ms),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            *self.extra_args,
        ]

    async def start(self, timeout: float = 30.0) -> None:
        """Starts the member and returns once it is up.

        "Up" depends on the cluster: a single-member cluster can serve on
        its own, and start() returns once it answers ``GET /health`` with
        ``true``. A member of a larger cluster cannot serve until a quorum
        of members runs (etcd does not even answer HTTP before it has joined),
        so start() returns as soon as its process accepts TCP connections on
        ``client_url``; :meth:`wait_ready` then waits until it serves.

        Raises :class:`EtcdError` (quoting the end of ``etcd.log``) when the
        binary is missing, the process exits, or it is not up within
        ``timeout`` seconds; the process is killed then. Starting a member
        that runs already is an error too.
        """
        if self.pid is not None:
            raise EtcdError(f"etcd member {self.name!r} runs already (pid {self.pid})")
        binary = shutil.which(self.binary)
        if binary is None:
            raise EtcdError(
                f"the etcd binary {self.binary!r} was not found; install Debian's etcd-server "
                "package or pass binary= the path of etcd 3.4"
            )
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            command = [binary, *self.command()[1:]]
            env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
            with self.log_path.open("ab") as log:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                log.write(f"--- sdi: {stamp} starting {' '.join(command)}\n".encode())
                log.flush()
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # The death signal can only be set in the child, before exec; the
                    # function only calls prctl and getppid, which are fork-safe.
                    preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509
                    start_new_session=True,
                )
        except OSError as exc:
            raise EtcdError(f"could not start etcd member {self.name!r}: {exc}") from exc
        try:
            await self._wait_up(timeout, serving=len(self.initial_cluster) == 1)
        except BaseException:
            self._kill_now()
            raise

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the member answers ``GET /health`` with ``true``: it has a leader, it serves.

        Raises :class:`EtcdError` (quoting the end of ``etcd.log``) when the
        process exits or is not ready within ``timeout`` seconds; the process
        keeps running then.
        """
        await self._wait_up(timeout, serving=True)

    async def _wait_up(self, timeout: float, *, serving: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listening = False
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                status = None if process is None else process.returncode
                raise EtcdError(
                    f"etcd member {self.name!r} exited (status {status}) before it was up; "
                    f"the end of {self.log_path}:\n{self._log_tail()}"
                )
            if not listening:
                listening = await _port_open(self._client_host, self._client_port, 0.5)
            if listening and (not serving or await self._healthy(0.5)):
                return
            if loop.time() >= deadline:
                what = "answer GET /health with true" if listening else "listen on its client URL"
                raise EtcdError(
                    f"etcd member {self.name!r} did not {what} ({self.client_url}) within "
                    f"{timeout:g} s; the end of {self.log_path}:\n{self._log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _healthy(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                status, body = await _one_shot(
                    _Endpoint.parse(self.client_url), b"GET", "/health", b""
                )
        except (OSError, TimeoutError, _HttpError):
            return False
        if status != 200:
            return False
        try:
            reply = json.loads(body)
        except ValueError:
            return False
        return isinstance(reply, dict) and reply.get("health") in ("true", True)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stops the member: SIGTERM, up to ``timeout`` seconds' wait, then SIGKILL.

        Does nothing when it does not run (never started, exited, or killed
        from outside, whose exit status is collected here).
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while process.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if process.poll() is None:
            self._kill_now()

    def _kill_now(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL))
                return log.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def __repr__(self) -> str:
        pid = self.pid
        state = f"pid {pid}" if pid is not None else "stopped"
        return f"EtcdMember({self.name!r}, {self.client_url!r}, {state})"


async def _port_open(host: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# ---------------------------------------------------------------------------
# HTTP/1.1 on asyncio streams


class _HttpError(Exception):
    """The connection broke or the peer did not speak HTTP/1.1 (try another endpoint)."""


class _NoResponseError(_HttpError):
    """The connection closed before a single byte of the response (a stale keep-alive)."""


@dataclass(eq=False, slots=True)
class _Endpoint:
    url: str
    host: str
    port: int
    netloc: str
    idle: list[_Connection] = field(default_factory=list)

    @classmethod
    def parse(cls, url: str) -> _Endpoint:
        host, port, netloc = _split_url(url, "etcd endpoint")
        return cls(url, host, port, netloc)


@dataclass(eq=False, slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()


def _request_bytes(endpoint: _Endpoint, method: bytes, path: str, body: bytes) -> bytes:
    head = (
        f"{method.decode()} {path} HTTP/1.1\r\n"
        f"Host: {endpoint.netloc}\r\n"
        "Accept: application/json\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _read_line(reader: asyncio.StreamReader, *, first: bool = False) -> str:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as exc:
        if first and not exc.partial:
            raise _NoResponseError("the connection closed before a response") from None
        raise _HttpError("the connection closed in the middle of a response") from None
    except asyncio.LimitOverrunError:
        raise _HttpError("a response line is longer than the reader's limit") from None
    return line[:-2].decode("latin-1")


async def _read_exactly(reader: asyncio.StreamReader, count: int) -> bytes:
    try:
        return await reader.readexactly(count)
    except asyncio.IncompleteReadError:
        raise _HttpError("the connection closed in the middle of a response body") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """``(status, headers with lower-case names, keep-alive)`` of one response."""
    while True:
        line = await _read_line(reader, first=True)
        version, _, rest = line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not is_decimal(code):
            raise _HttpError(f"not an HTTP/1.x status line: {line[:200]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for _ in range(_HEADERS_MAX):
            header = await _read_line(reader)
            if not header:
                break
            name, colon, value = header.partition(":")
            if not colon:
                raise _HttpError(f"malformed header line: {header[:200]!r}")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        else:
            raise _HttpError(f"more than {_HEADERS_MAX} header lines")
        if 100 <= status < 200:  # an interim response: the real one follows
            continue
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        return status, headers, keep_alive


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; ``b""`` for the last one (whose trailers are consumed)."""
    line = await _read_line(reader)
    size_text = line.partition(";")[0].strip()
    if not size_text or any(c not in "0123456789abcdefABCDEF" for c in size_text):
        raise _HttpError(f"bad chunk size line: {line[:200]!r}")
    size = int(size_text, 16)
    if size > _BODY_MAX:
        raise _HttpError(f"a chunk of {size} bytes is past the {_BODY_MAX}-byte limit")
    if size == 0:
        while await _read_line(reader):  # trailers, up to the blank line
            pass
        return b""
    data = await _read_exactly(reader, size)
    if await _read_exactly(reader, 2) != b"\r\n":
        raise _HttpError("a chunk does not end with CRLF")
    return data


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: Mapping[str, str]
) -> tuple[bytes, bool]:
    """``(body, connection reusable)``."""
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            raise _HttpError(f"unsupported Transfer-Encoding {encoding!r}")
        parts: list[bytes] = []
        total = 0
        while chunk := await _read_chunk(reader):
            total += len(chunk)
            if total > _BODY_MAX:
                raise _HttpError(f"a response body past the {_BODY_MAX}-byte limit")
            parts.append(chunk)
        return b"".join(parts), True
    length_text = headers.get("content-length")
    if length_text is not None:
        if not is_decimal(length_text):
            raise _HttpError(f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > _BODY_MAX:
            raise _HttpError(f"a response body of {length} bytes is past the limit")
        return await _read_exactly(reader, length), True
    if status in (204, 304):
        return b"", True
    # No framing: the body runs to the end of the connection.
    parts = []
    total = 0
    while data := await reader.read(65536):
        total += len(data)
        if total > _BODY_MAX:
            raise _HttpError(f"a response body past the {_BODY_MAX}-byte limit")
        parts.append(data)
    return b"".join(parts), False


async def _read_first_object(
    reader: asyncio.StreamReader, status: int, headers: Mapping[str, str]
) -> bytes:
    """The first JSON object of a streamed (chunked, newline-delimited) response."""
    if status != 200 or "chunked" not in headers.get("transfer-encoding", "").lower():
        body, _ = await _read_body(reader, status, headers)
        return body
    buffer = b""
    while True:
        chunk = await _read_chunk(reader)
        if not chunk:
            if buffer.strip():
                return buffer
            raise _HttpError("the stream ended before its first message")
        buffer += chunk
        if len(buffer) > _BODY_MAX:
            raise _HttpError(f"a stream message past the {_BODY_MAX}-byte limit")
        line, newline, _ = buffer.partition(b"\n")
        if newline and line.strip():
            return line
        with contextlib.suppress(ValueError):
            json.loads(buffer)
            return buffer


async def _one_shot(
    endpoint: _Endpoint, method: bytes, path: str, body: bytes
) -> tuple[int, bytes]:
    """One request on a connection of its own, closed after."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(_request_bytes(endpoint, method, path, body))
        await writer.drain()
        status, headers, _ = await _read_head(reader)
        data, _ = await _read_body(reader, status, headers)
        return status, data
    finally:
        writer.close()


# ---------------------------------------------------------------------------
# The client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` covering every key that starts with ``prefix``."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\x00"  # every key from ``key`` on
    end[-1] += 1
    return bytes(end)


def _check_key(key: bytes, what: str = "key") -> None:
    if not isinstance(key, bytes | bytearray):
        raise errors.InvalidArgument(f"an etcd {what} is bytes, not {type(key).__name__}")
    if what == "key" and not key:
        raise errors.InvalidArgument("an etcd key must not be empty")


def _check_int(value: int, what: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise errors.InvalidArgument(f"{what} must be an integer >= {minimum}, not {value!r}")


class _Reply:
    """A decoded JSON reply, read with proto3 JSON's rules and validated."""

    __slots__ = ("context", "data")

    def __init__(self, data: Any, context: str) -> None:
        if not isinstance(data, dict):
            raise EtcdError(f"{context}: expected a JSON object, got {_shorten(data)}")
        self.data: dict[str, Any] = data
        self.context = context

    def fail(self, problem: str) -> EtcdError:
        return EtcdError(f"{self.context}: {problem} in {_shorten(self.data)}")

    def get_int(self, name: str, *, required: bool = False) -> int:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(f"the field {name!r} is missing")
            return 0
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(f"the field {name!r} is not an integer")
        try:
            return int(value)
        except ValueError:
            raise self.fail(f"the field {name!r} is not an integer") from None

    def get_bool(self, name: str) -> bool:
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            raise self.fail(f"the field {name!r} is not a boolean")
        return value

    def get_bytes(self, name: str, *, required: bool = False) -> bytes:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(f"the field {name!r} is missing")
            return b""
        if not isinstance(value, str):
            raise self.fail(f"the field {name!r} is not a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(f"the field {name!r} is not valid base64") from None

    def get_object(self, name: str, *, required: bool = False) -> _Reply:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(f"the field {name!r} is missing")
            value = {}
        if not isinstance(value, dict):
            raise self.fail(f"the field {name!r} is not an object")
        return _Reply(value, self.context)

    def get_objects(self, name: str) -> list[_Reply]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.fail(f"the field {name!r} is not a list")
        return [_Reply(item, self.context) for item in value]

    def revision(self) -> int:
        """``header.revision``, which every KV reply carries."""
        revision = self.get_object("header", required=True).get_int("revision", required=True)
        if revision <= 0:
            raise self.fail(f"header.revision {revision} is not positive")
        return revision


def _shorten(data: Any, limit: int = 500) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Etcd:
    """Async client of etcd's v3 JSON API; tries each endpoint in turn when one fails.

    ``endpoints`` are the members' client URLs (``http://host:port``).
    Every request to one endpoint is bounded by ``timeout`` seconds. A
    request goes to the endpoint that answered last; when that endpoint
    refuses the connection, breaks it, does not answer in time, or answers
    that it cannot serve (gRPC "unavailable": no leader, leader changed,
    request timed out), the next endpoint is tried, round after round with
    a short backoff, until every endpoint failed at least once and
    ``timeout`` seconds have passed since the call began; then
    :class:`EtcdError` lists what each endpoint did last. A call thus takes
    at most about ``(len(endpoints) + 1) * timeout`` seconds (when every
    endpoint hangs), and waits up to ``timeout`` for a leader to be elected. Any other error etcd
    answers (an invalid argument, a missing lease, too many operations in a
    txn) raises :class:`EtcdError` at once, with etcd's message and gRPC
    ``code``; so does a reply that is not the expected JSON.

    A write that timed out or whose connection broke may still have been
    applied when it is retried elsewhere: a retried :meth:`txn` can then
    answer False although its writes are in; re-read after a False when
    that matters. Reads are linearizable.

    Connections are kept alive and reused (a few per endpoint); the client
    belongs to the event loop it is first used on. :meth:`close` closes
    them; calls after it raise :class:`sdi.errors.Closed`. Also an async
    context manager closing on exit.
    """

    def __init__(self, endpoints: list[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise errors.InvalidArgument("Etcd needs a non-empty list of endpoint URLs")
        if not timeout > 0:
            raise errors.InvalidArgument(f"timeout must be positive, not {timeout!r}")
        self._endpoints = [_Endpoint.parse(url) for url in endpoints]
        self._timeout = float(timeout)
        self._preferred = 0
        self._closed = False
        self._open: set[_Connection] = set()

    @property
    def endpoints(self) -> list[str]:
        """The endpoint URLs, as given."""
        return [endpoint.url for endpoint in self._endpoints]

    # -- the KV API --------------------------------------------------------

    async def get(self, key: bytes) -> tuple[bytes, int] | None:
        """``(value, mod_revision)`` of ``key``, or None when it does not exist."""
        _check_key(key)
        reply = await self._call("kv/range", {"key": _b64(key)})
        reply.revision()
        for kv in reply.get_objects("kvs"):
            if kv.get_bytes("key", required=True) != key:
                raise reply.fail("a range of one key returned another key")
            return kv.get_bytes("value"), kv.get_int("mod_revision", required=True)
        return None

    async def get_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        """``(key, value, mod_revision)`` of every key starting with ``prefix``, sorted by key.

        An empty prefix reads every key.
        """
        _check_key(prefix, "prefix")
        start = prefix or b"\x00"
        request = {"key": _b64(start), "range_end": _b64(_prefix_end(prefix))}
        reply = await self._call("kv/range", request)
        reply.revision()
        if reply.get_bool("more"):
            raise reply.fail("etcd cut the range short although no limit was asked")
        found = [
            (
                kv.get_bytes("key", required=True),
                kv.get_bytes("value"),
                kv.get_int("mod_revision", required=True),
            )
            for kv in reply.get_objects("kvs")
        ]
        found.sort(key=lambda item: item[0])
        return found

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Sets ``key`` to ``value`` (attached to ``lease`` unless 0); returns the new revision."""
        _check_key(key)
        _check_key(value, "value")
        _check_int(lease, "lease", 0)
        request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            request["lease"] = str(lease)
        reply = await self._call("kv/put", request)
        return reply.revision()

    async def delete(self, key: bytes) -> int:
        """Deletes ``key``; returns how many keys were deleted (0 or 1)."""
        _check_key(key)
        reply = await self._call("kv/deleterange", {"key": _b64(key)})
        reply.revision()
        return reply.get_int("deleted")

    async def delete_prefix(self, prefix: bytes) -> int:
        """Deletes every key starting with ``prefix`` (all keys when empty); returns how many."""
        _check_key(prefix, "prefix")
        start = prefix or b"\x00"
        request = {"key": _b64(start), "range_end": _b64(_prefix_end(prefix))}
        reply = await self._call("kv/deleterange", request)
        reply.revision()
        return reply.get_int("deleted")

    async def txn(
        self,
        compares: list[tuple[bytes, int]],
        puts: list[tuple[bytes, bytes, int]],
        deletes: list[bytes] = [],  # noqa: B006 (never mutated)
    ) -> bool:
        """An all-or-nothing conditional write; True when the compares held and it was applied.

        ``compares`` are ``(key, mod_revision)``: each key must have been
        last written at exactly that revision, 0 meaning the key must not
        exist. When all hold, ``puts`` (``(key, value, lease)``, lease 0
        for none) and then ``deletes`` are applied in one revision; else
        nothing is written and the result is False. etcd refuses a txn that
        names a key twice among its writes, or has more than 128 operations
        (its ``--max-txn-ops``): that raises :class:`EtcdError`.
        """
        compare_list = []
        for key, mod_revision in compares:
            _check_key(key)
            _check_int(mod_revision, "a compared mod_revision", 0)
            compare_list.append(
                {
                    "key": _b64(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(mod_revision),
                }
            )
        success: list[dict[str, Any]] = []
        for key, value, lease in puts:
            _check_key(key)
            _check_key(value, "value")
            _check_int(lease, "lease", 0)
            put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
            if lease:
                put["lease"] = str(lease)
            success.append({"request_put": put})
        for key in deletes:
            _check_key(key)
            success.append({"request_delete_range": {"key": _b64(key)}})
        reply = await self._call("kv/txn", {"compare": compare_list, "success": success})
        reply.revision()
        return reply.get_bool("succeeded")

    async def revision(self) -> int:
        """The store's current revision (the header of a range read)."""
        reply = await self._call("kv/range", {"key": _b64(b"\x00"), "count_only": True})
        return reply.revision()

    # -- leases ------------------------------------------------------------

    async def lease_grant(self, ttl_seconds: int) -> int:
        """A new lease of ``ttl_seconds``; returns its id.

        etcd raises a TTL below its minimum (1.5 election timeouts, rounded
        up to whole seconds) to that minimum.
        """
        _check_int(ttl_seconds, "ttl_seconds", 1)
        reply = await self._call("lease/grant", {"TTL": str(ttl_seconds)})
        problem = reply.data.get("error")
        if problem:
            raise reply.fail(f"etcd refused the lease: {problem}")
        lease = reply.get_int("ID", required=True)
        if lease <= 0:
            raise reply.fail(f"lease id {lease} is not positive")
        return lease

    async def lease_keepalive(self, lease: int) -> int:
        """Refreshes ``lease``; returns its TTL left, 0 when it is gone (expired or revoked)."""
        _check_int(lease, "lease", 1)
        reply = await self._call("lease/keepalive", {"ID": str(lease)}, stream=True)
        return max(0, reply.get_int("TTL"))

    async def lease_revoke(self, lease: int) -> None:
        """Revokes ``lease``, deleting the keys attached to it; a lease already gone is fine."""
        _check_int(lease, "lease", 1)
        try:
            await self._call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code != _CODE_NOT_FOUND:
                raise

    # -- lifecycle ---------------------------------------------------------

    async def close(self) -> None:
        """Closes every connection; calls after it raise :class:`sdi.errors.Closed`."""
        self._closed = True
        connections = list(self._open)
        self._open.clear()
        for endpoint in self._endpoints:
            endpoint.idle.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Etcd({self.endpoints!r}, timeout={self._timeout:g}, {state})"

    # -- plumbing ----------------------------------------------------------

    def _closed_error(self) -> errors.Closed:
        return errors.Closed("this etcd client was closed; create a new Etcd")

    async def _call(self, api: str, request: dict[str, Any], *, stream: bool = False) -> _Reply:
        """POSTs ``request`` to ``/v3/<api>``, failing over between endpoints (see the class)."""
        if self._closed:
            raise self._closed_error()
        path = f"/v3/{api}"
        body = json.dumps(request, separators=(",", ":")).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        failures: dict[str, str] = {}
        count = len(self._endpoints)
        index = self._preferred
        attempts = 0
        while True:
            endpoint = self._endpoints[index]
            failure: str
            try:
                async with asyncio.timeout(self._timeout):
                    status, data = await self._exchange(endpoint, path, body, stream=stream)
            except TimeoutError:
                failure = f"no answer within {self._timeout:g} s"
            except (OSError, _HttpError) as exc:
                failure = str(exc) or type(exc).__name__
            else:
                reply, problem = self._decode(endpoint, path, status, data, stream=stream)
                if reply is not None:
                    self._preferred = index
                    return reply
                failure = problem
            if self._closed:
                raise self._closed_error()
            failures[endpoint.url] = failure
            attempts += 1
            index = (index + 1) % count
            if attempts % count == 0:
                left = deadline - loop.time()
                if left <= 0:
                    detail = "; ".join(f"{url}: {text}" for url, text in failures.items())
                    raise EtcdError(
                        f"no etcd endpoint answered {path} ({attempts} attempts in "
                        f"{self._timeout:g} s): {detail}. Check that the etcd members run "
                        "and that a majority of them is up"
                    )
                await asyncio.sleep(min(0.025 * 2 ** (attempts // count), 0.5, left))

    def _decode(
        self, endpoint: _Endpoint, path: str, status: int, data: bytes, *, stream: bool
    ) -> tuple[_Reply | None, str]:
        """The reply, or ``(None, why)`` when another endpoint should be asked; raises otherwise."""
        context = f"etcd at {endpoint.url} answered {path}"
        try:
            decoded = json.loads(data)
        except ValueError:
            if status in _RETRYABLE_STATUSES:
                return None, f"HTTP {status}: {_shorten(data, 200)}"
            raise EtcdError(
                f"{context} with HTTP {status} and a body that is not JSON: {_shorten(data)}"
            ) from None
        if status == 200 and not stream:
            return _Reply(decoded, context), ""
        reply = _Reply(decoded, context)
        if status == 200:  # a stream message: {"result": {...}} or {"error": {...}}
            if reply.data.get("error") is None:
                return reply.get_object("result", required=True), ""
            error = reply.data["error"]
            if not isinstance(error, dict):
                raise reply.fail("the stream error is not an object")
            reply = _Reply(error, context)
            code_field = "grpc_code" if "grpc_code" in error else "code"
        else:
            code_field = "code"
        code = reply.get_int(code_field) if code_field in reply.data else None
        message = reply.data.get("message") or reply.data.get("error") or "(no message)"
        if code in _RETRYABLE_CODES or (code is None and status in _RETRYABLE_STATUSES):
            return None, f"{message} (gRPC code {code}, HTTP {status})"
        raise EtcdError(
            f"{context} with an error: {message} (gRPC code {code}, HTTP {status})", code=code
        )

    async def _connect(self, endpoint: _Endpoint) -> _Connection:
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        connection = _Connection(reader, writer)
        if self._closed:
            connection.close()
            raise self._closed_error()
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    def _release(self, endpoint: _Endpoint, connection: _Connection) -> None:
        if self._closed or not connection.usable or len(endpoint.idle) >= _IDLE_MAX:
            self._discard(connection)
        else:
            endpoint.idle.append(connection)

    async def _exchange(
        self, endpoint: _Endpoint, path: str, body: bytes, *, stream: bool
    ) -> tuple[int, bytes]:
        """One request and its response on a kept-alive connection (or a new one)."""
        request = _request_bytes(endpoint, b"POST", path, body)
        while True:
            reused = False
            connection: _Connection | None = None
            while endpoint.idle:
                candidate = endpoint.idle.pop()
                if candidate.usable:
                    connection, reused = candidate, True
                    break
                self._discard(candidate)
            if connection is None:
                connection = await self._connect(endpoint)
            answered = False
            try:
                connection.writer.write(request)
                await connection.writer.drain()
                status, headers, keep_alive = await _read_head(connection.reader)
                answered = True
                if stream:
                    data = await _read_first_object(connection.reader, status, headers)
                    keep_alive = False  # the stream stays open on the server: drop it
                else:
                    data, reusable = await _read_body(connection.reader, status, headers)
                    keep_alive = keep_alive and reusable
            except (_NoResponseError, ConnectionResetError, BrokenPipeError):
                self._discard(connection)
                if reused and not answered:
                    continue  # the server had closed the idle connection: once more, afresh
                raise
            except BaseException:
                self._discard(connection)
                raise
            if keep_alive:
                self._release(endpoint, connection)
            else:
                self._discard(connection)
            return status, data
