"""A generic RESP (Redis protocol) server on asyncio, for systems that speak Redis.

A system brings a command table, ``{name: Command(handler, arity)}``, and the
server does the rest: the protocol (the compiled codec of :mod:`sdi.resp`),
pipelining, RESP2/RESP3 per connection (``HELLO``), and the commands every
client sends on its own (``PING``, ``HELLO``, ``CLIENT``, ``SELECT``,
``COMMAND``, ``INFO``, ``QUIT``, ``RESET``, ``AUTH``, ``ECHO``), and
transactions: ``MULTI`` queues commands (checking names and arity; a
refused one makes ``EXEC`` answer ``EXECABORT``) and ``EXEC`` runs them in
order with no other client's command in between (while the handlers are
plain functions), ``DISCARD`` drops them. ``WATCH`` works when the server
is made with ``watch=True`` and the data's owner reports every change with
:meth:`RespServer.touch` (an ``EXEC`` after a watched key changed runs
nothing and replies nil); otherwise it is refused with a message saying
so. Blocking commands wait with :meth:`RespServer.block`. Errors are worded
as redis-server words them, so clients (redis-py, redis-cli) react as they
would against Redis.

A handler gets the connection's :class:`Client` and the whole command line
(``argv[0]`` is the command name as sent) and returns a reply value for
:func:`sdi.resp.encode_reply` or raises :class:`RespError`. Handlers are
plain functions run on the event loop (keep them fast), or coroutine
functions (``async def``: awaited in order; a connection's commands never overlap).

>>> import asyncio
>>> def incr(client: Client, argv: list[bytes]) -> int:
...     return parse_int(argv[1]) + 1
>>> async def demo() -> bytes:
...     server = RespServer({"incr1": Command(incr, 2)})
...     port = await server.start("127.0.0.1", 0)
...     reader, writer = await asyncio.open_connection("127.0.0.1", port)
...     writer.write(b"PING\\r\\nINCR1 41\\r\\nINCR1 x\\r\\nNOPE a\\r\\n")
...     replies = b""
...     while replies.count(b"\\r\\n") < 4:
...         replies += await reader.read(1024)
...     writer.close()
...     await server.stop()
...     return replies
>>> for line in asyncio.run(demo()).decode().splitlines():
...     print(line.rstrip())
+PONG
:42
-ERR value is not an integer or out of range
-ERR unknown command 'NOPE', with args beginning with: 'a'

Limits (constructor keywords): the longest argument (``bulk_bytes_max``),
the most arguments in one command (``arguments_max``), the bytes a
connection may have buffered but not parsed (``buffer_bytes_max``). Past any
of them the client gets ``-ERR Protocol error: ...`` and is disconnected, as
redis-server does with a malformed stream. Replies are written once per
batch of pipelined commands (every ``reply_batch`` commands at most) and the
connection reads nothing more until the socket has taken them, so a client
that sends without reading cannot make the server buffer without bound.
Only database 0 exists (``SELECT 0``; any other index is
``ERR DB index is out of range``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

from sdi.errors import InvalidArgument, LimitExceeded, ProtocolError
from sdi.resp import CommandParser, ReplyError, SimpleString, encode_replies, encode_reply
from sdi.runtime.service import close_connections

__all__ = [
    "NOT_FLOAT",
    "NOT_INTEGER",
    "OK",
    "REDIS_VERSION",
    "SYNTAX_ERROR",
    "WRONGTYPE",
    "Client",
    "ClientGoneError",
    "Command",
    "Handler",
    "Reply",
    "RespError",
    "RespServer",
    "parse_float",
    "parse_int",
    "serve_in_thread",
]

logger = logging.getLogger(__name__)

#: The Redis version the server reports (HELLO, INFO): its behaviour is checked against it.
REDIS_VERSION = "7.0.15"

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
SYNTAX_ERROR = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"

#: ``+OK``, the reply of most commands that change something.
OK = SimpleString(b"OK")

BULK_BYTES_MAX = 64 * 1024 * 1024
ARGUMENTS_MAX = 1024 * 1024
BUFFER_BYTES_MAX = 128 * 1024 * 1024
READ_BYTES = 64 * 1024
REPLY_BATCH = 1024

#: What a handler returns: anything :func:`sdi.resp.encode_reply` encodes.
Reply: TypeAlias = Any


class ClientGoneError(Exception):
    """Raised by :meth:`RespServer.block` when the client disconnects while it waits."""


class RespError(Exception):
    """Raised by a handler: the client gets ``-<message>`` (``"ERR ..."``, ``"WRONGTYPE ..."``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def parse_int(argument: bytes, error: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written as Redis accepts it (no sign, space or leading zero).

    >>> parse_int(b"-12")
    -12
    >>> parse_int(b"012")
    Traceback (most recent call last):
    ...
    sdi.runtime.respserver.RespError: ERR value is not an integer or out of range
    """
    if len(argument) > 20 or _INTEGER.fullmatch(argument) is None:
        raise RespError(error)
    value = int(argument)
    if value < _INT64_MIN or value > _INT64_MAX:
        raise RespError(error)
    return value


_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)
_HEXADECIMAL = re.compile(
    rb"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)"
)
_NONZERO_DIGIT = re.compile(rb"[1-9]")


def parse_float(argument: bytes, error: str = NOT_FLOAT) -> float:
    """A double as Redis reads it (``strtod`` over the whole argument, no NaN, no overflow).

    ``inf`` and ``-inf`` are accepted, as Redis accepts them; a number too
    large or too small for a double is refused.

    >>> parse_float(b"1.5e3"), parse_float(b"-inf")
    (1500.0, -inf)
    >>> parse_float(b"1e400")
    Traceback (most recent call last):
    ...
    sdi.runtime.respserver.RespError: ERR value is not a valid float
    """
    if _DECIMAL.fullmatch(argument) is not None:
        value = float(argument)
        if math.isinf(value):
            raise RespError(error)  # strtod's ERANGE: past the largest double
        if value == 0.0 and _NONZERO_DIGIT.search(argument.split(b"e")[0].split(b"E")[0]):
            raise RespError(error)  # strtod's ERANGE: below the smallest double
        return value
    if _INFINITY.fullmatch(argument) is not None:
        return -math.inf if argument.startswith(b"-") else math.inf
    match = _HEXADECIMAL.fullmatch(argument)
    if match is not None:
        try:
            value = float.fromhex(match.group(2).decode())
        except (OverflowError, ValueError):
            raise RespError(error) from None
        return -value if match.group(1) == b"-" else value
    raise RespError(error)


class Client:
    """One connection's state, given to every handler."""

    __slots__ = (
        "address",
        "closing",
        "created",
        "db",
        "eof",
        "executing",
        "id",
        "last_command",
        "lib_name",
        "lib_ver",
        "local_address",
        "multi",
        "multi_failed",
        "name",
        "protocol",
        "pushback",
        "reader",
        "server",
        "task",
        "watch_broken",
        "watched",
    )

    def __init__(self, server: RespServer, client_id: int, address: str, local_address: str):
        self.server = server
        self.id = client_id
        self.address = address
        self.local_address = local_address
        #: 2 or 3, set by HELLO: the RESP version replies are encoded in.
        self.protocol = 2
        self.name: bytes | None = None
        self.db = 0
        self.lib_name = b""
        self.lib_ver = b""
        self.created = time.monotonic()
        self.last_command = b""
        #: Set by QUIT: the connection closes once the replies so far are written.
        self.closing = False
        #: The commands queued since MULTI (None: not in a transaction).
        self.multi: list[list[bytes]] | None = None
        #: A command queued since MULTI was refused (unknown, wrong arity): EXEC aborts.
        self.multi_failed = False
        #: Running EXEC's queue: blocking commands do not block (as in Redis).
        self.executing = False
        #: The connection's reader and task (None for a client made in-process).
        self.reader: asyncio.StreamReader | None = None
        self.task: asyncio.Task[None] | None = None
        #: Bytes read while a blocking command waited; parsed once it is done.
        self.pushback = bytearray()
        #: The peer closed the connection (seen while a blocking command waited).
        self.eof = False
        #: Keys under WATCH, and whether one has changed since (EXEC then fails).
        self.watched: set[bytes] = set()
        self.watch_broken = False

    def info_line(self) -> str:
        """This client as a line of ``CLIENT INFO`` / ``CLIENT LIST``."""
        now = time.monotonic()
        fields = [
            f"id={self.id}",
            f"addr={self.address}",
            f"laddr={self.local_address}",
            "fd=-1",
            f"name={(self.name or b'').decode('utf-8', 'replace')}",
            f"age={int(now - self.created)}",
            "idle=0",
            "flags=N",
            f"db={self.db}",
            "sub=0",
            "psub=0",
            "ssub=0",
            f"multi={-1 if self.multi is None else len(self.multi)}",
            "qbuf=0",
            "qbuf-free=0",
            "argv-mem=0",
            "multi-mem=0",
            "rbs=0",
            "rbp=0",
            "obl=0",
            "oll=0",
            "omem=0",
            "tot-mem=0",
            "events=r",
            f"cmd={self.last_command.decode('utf-8', 'replace') or 'NULL'}",
            "user=default",
            "redir=-1",
            f"resp={self.protocol}",
            f"lib-name={self.lib_name.decode('utf-8', 'replace')}",
            f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}",
        ]
        return " ".join(fields)


#: ``handler(client, argv) -> reply``; ``argv[0]`` is the command name as the client sent it.
Handler: TypeAlias = Callable[[Client, list[bytes]], Reply | Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a table: its handler and Redis's arity and metadata.

    ``arity`` counts the command name: positive means exactly that many
    arguments, negative at least ``-arity``. ``flags``, the key positions and
    ``group`` are what ``COMMAND`` reports (``first_key`` 1 for commands on one key).
    """

    handler: Handler
    arity: int
    flags: tuple[str, ...] = ()
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    group: str = "generic"
    summary: str = ""


_PROTOCOL_ERRORS = (
    ("expected '$'", None),
    ("bad command length", "invalid multibulk length"),
    ("command length", "invalid multibulk length"),
    ("bad argument length", "invalid bulk length"),
    ("argument length", "invalid bulk length"),
    ("unbalanced quotes", "unbalanced quotes in request"),
    ("inline", "too big inline request"),
    ("would be buffered", "query buffer limit reached"),
)


def _protocol_error_text(message: str) -> str:
    """``ERR Protocol error: ...`` in redis-server's words where the parser's cause has them."""
    for marker, redis_text in _PROTOCOL_ERRORS:
        if message.startswith(marker) or (marker == "inline" and "inline" in message):
            if redis_text is not None:
                return f"ERR Protocol error: {redis_text}"
            got = message.split("got b", 1)[1][1:2] if "got b" in message else "?"
            return f"ERR Protocol error: expected '$', got '{got}'"
    return f"ERR Protocol error: {message.split(' at stream offset', 1)[0]}"


def _name_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class _GatedWriter:
    """A connection's writer whose replies wait for ``gate`` before they are written."""

    __slots__ = ("_gate", "_pending", "_writer")

    def __init__(self, writer: asyncio.StreamWriter, gate: Callable[[], Awaitable[None]]):
        self._writer = writer
        self._gate = gate
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._pending.append(data)

    async def drain(self) -> None:
        await self._gate()
        if self._pending:
            self._writer.writelines(self._pending)
            self._pending = []
        await self._writer.drain()


class RespServer:
    """Serves a command table over RESP2/RESP3; ``stop()`` lets commands in progress finish.

    ``before_reply``, when given, is awaited before each batch of replies is
    written (a server that logs writes makes it wait for its log, so no
    reply shows a change that is not yet durable).
    """

    def __init__(
        self,
        commands: Mapping[str, Command] | Mapping[bytes, Command],
        *,
        bulk_bytes_max: int = BULK_BYTES_MAX,
        arguments_max: int = ARGUMENTS_MAX,
        buffer_bytes_max: int = BUFFER_BYTES_MAX,
        reply_batch: int = REPLY_BATCH,
        info: Mapping[str, Callable[[], Mapping[str, object]]] | None = None,
        before_reply: Callable[[], Awaitable[None]] | None = None,
        watch: bool = False,
    ) -> None:
        if buffer_bytes_max < 1024 or bulk_bytes_max < 1 or arguments_max < 1 or reply_batch < 1:
            raise InvalidArgument("RespServer limits must be positive (buffer_bytes_max >= 1024)")
        self._limits = {
            "bulk_bytes_max": bulk_bytes_max,
            "aggregate_length_max": arguments_max,
            "buffer_bytes_max": buffer_bytes_max,
            "inline_bytes_max": min(64 * 1024, buffer_bytes_max),
        }
        self._reply_batch = reply_batch
        self._before_reply = before_reply
        #: WATCH is served (the data's owner calls :meth:`touch` on every change).
        self.watch_supported = watch
        self._watchers: dict[bytes, set[Client]] = {}
        self._info_sections = dict(info or {})
        self.commands: dict[bytes, Command] = dict(_builtin_commands())
        for name, command in commands.items():
            key = name.encode() if isinstance(name, str) else bytes(name)
            self.commands[key.lower()] = command
        # The lookup table holds each name in lower and upper case, so the
        # usual spellings are found without a .lower() per command.
        self._table: dict[bytes, tuple[bytes, Command, bool]] = {}
        for key, command in self.commands.items():
            entry = (key, command, inspect.iscoroutinefunction(command.handler))
            self._table[key] = entry
            self._table[key.upper()] = entry
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], Client] = {}
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        self.port = 0
        #: Commands run since start (for INFO).
        self.commands_processed = 0
        self.connections_received = 0

    @property
    def clients(self) -> list[Client]:
        """The connected clients."""
        return list(self._connections.values())

    async def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (``port`` 0 picks a free one); returns the port."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=READ_BYTES)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._started = time.monotonic()
        return self.port

    async def stop(self) -> None:
        """Stops listening, lets the commands being run finish, closes every connection."""
        self._stopping = True
        await close_connections(self._server, list(self._connections), self._busy)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        client = Client(self, next(self._ids), _address(peer), _address(local))
        client.reader, client.task = reader, task
        self._connections[task] = client
        self.connections_received += 1
        try:
            await self._serve(reader, writer, client, task)
        except (ConnectionError, asyncio.CancelledError, TimeoutError, ClientGoneError):
            pass  # stop() ends idle (and blocked) connections by cancelling them
        finally:
            self.unwatch(client)
            self._connections.pop(task, None)
            self._busy.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: Client,
        task: asyncio.Task[None],
    ) -> None:
        parser = CommandParser(**self._limits)
        while not self._stopping:
            if client.pushback:  # read while a blocking command waited
                data = bytes(client.pushback)
                client.pushback.clear()
            elif client.eof:
                return
            else:
                data = await reader.read(READ_BYTES)
            if not data:
                return
            self._busy.add(task)
            try:
                commands = parser.parse(data)
            except (ProtocolError, LimitExceeded) as error:
                commands = []
                failure: str | None = str(error)
            else:
                failure = parser.error
            if commands:
                await self._run(commands, client, writer)
            if failure is not None and not client.closing:
                reply = ReplyError(_protocol_error_text(failure))
                writer.write(encode_reply(reply, client.protocol))
                await writer.drain()
                return
            self._busy.discard(task)
            if client.closing:
                return

    async def _run(
        self, commands: list[list[bytes]], client: Client, writer: asyncio.StreamWriter
    ) -> None:
        """Runs pipelined commands in order; writes their replies in as few writes as it may."""
        if self._before_reply is not None:
            writer = cast(asyncio.StreamWriter, _GatedWriter(writer, self._before_reply))
        table = self._table
        replies: list[Reply] = []
        protocol = client.protocol
        for argv in commands:
            entry = table.get(argv[0])
            if entry is None:
                entry = table.get(argv[0].lower())
            try:
                if client.multi is not None and (entry is None or entry[0] not in _NOT_QUEUED):
                    reply = _queue(client, argv, entry)
                else:
                    if entry is None:
                        raise RespError(_unknown_command(argv))
                    name, command, is_async = entry
                    _check_arity(name, command, argv)
                    client.last_command = name
                    reply = command.handler(client, argv)
                    if is_async:
                        reply = await reply
                    if name == b"exec":
                        reply = await self._exec(client)
            except RespError as error:
                reply = ReplyError(error.message)
            except ClientGoneError:
                raise  # nobody to answer
            except Exception:
                logger.exception("RESP command %r failed", argv[0][:64])
                reply = ReplyError("ERR internal error")
            self.commands_processed += 1
            if client.protocol != protocol:  # HELLO switched: earlier replies keep the old one
                if replies:
                    writer.write(self._encode(replies, protocol))
                    replies = []
                protocol = client.protocol
            replies.append(reply)
            if client.closing:
                break
            if len(replies) >= self._reply_batch:
                writer.write(self._encode(replies, protocol))
                replies = []
                await writer.drain()
        if replies:
            writer.write(self._encode(replies, protocol))
        await writer.drain()

    async def _exec(self, client: Client) -> Reply:
        """EXEC: runs the queued commands in order; their replies (errors among them) as one."""
        queued, failed = client.multi or [], client.multi_failed
        client.multi, client.multi_failed = None, False
        broken = client.watch_broken
        self.unwatch(client)
        if failed:
            raise RespError("EXECABORT Transaction discarded because of previous errors.")
        if broken:  # a watched key changed: nothing runs, and the reply is nil
            return None
        replies: list[Reply] = []
        client.executing = True
        try:
            for argv in queued:
                name, command, is_async = self._table[argv[0].lower()]
                try:
                    client.last_command = name
                    reply = command.handler(client, argv)
                    if is_async:
                        reply = await reply
                except RespError as error:
                    reply = ReplyError(error.message)
                except Exception:
                    logger.exception("RESP command %r failed", argv[0][:64])
                    reply = ReplyError("ERR internal error")
                replies.append(reply)
        finally:
            client.executing = False
        return replies

    # --- WATCH ---------------------------------------------------------------------------

    def watch(self, client: Client, keys: Iterable[bytes]) -> None:
        """Puts ``keys`` under the client's WATCH: a change to one before its EXEC (by
        anyone, the client included) makes that EXEC run nothing and reply nil."""
        for key in keys:
            client.watched.add(key)
            self._watchers.setdefault(key, set()).add(client)

    def unwatch(self, client: Client) -> None:
        """Forgets the client's watched keys (EXEC, DISCARD, UNWATCH, RESET, disconnect)."""
        for key in client.watched:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._watchers[key]
        client.watched.clear()
        client.watch_broken = False

    @property
    def watching(self) -> bool:
        """Whether any client watches a key (so changes need :meth:`touch`)."""
        return bool(self._watchers)

    def touch(self, keys: Iterable[bytes]) -> None:
        """Called by the data's owner with the keys a change touched (Redis's
        ``signalModifiedKey``): their watchers' next EXEC fails."""
        for key in keys:
            for client in self._watchers.get(key, ()):
                client.watch_broken = True

    def touch_all(self) -> None:
        """Every watched key changed (FLUSHDB, FLUSHALL)."""
        for watchers in self._watchers.values():
            for client in watchers:
                client.watch_broken = True

    async def block(
        self, client: Client, ready: asyncio.Future[None], timeout: float | None
    ) -> bool:
        """For a blocking command: waits until ``ready`` is done (True) or ``timeout``
        seconds pass (False; None waits for ever). Raises :class:`ClientGoneError` if the
        client disconnects meanwhile, so the command takes nothing it cannot deliver.

        The connection is read while it waits (that is how a disconnect shows);
        commands the client pipelines behind the blocking one are kept and run after
        it, up to the query buffer limit. A waiting client does not hold up
        :meth:`stop`, which ends it as it ends idle connections.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        task = client.task
        if task is not None:
            self._busy.discard(task)
        read: asyncio.Future[bytes] | None = None
        try:
            while not ready.done():
                if (
                    read is None
                    and client.reader is not None
                    and not client.eof
                    and len(client.pushback) < self._limits["buffer_bytes_max"]
                ):
                    read = asyncio.ensure_future(client.reader.read(READ_BYTES))
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return False
                waits: set[asyncio.Future[Any]] = {ready} if read is None else {ready, read}
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if read is not None and read.done():
                    try:
                        data = read.result()
                    except OSError:  # reset by the peer
                        data = b""
                    read = None
                    if not data:
                        client.eof = True
                        raise ClientGoneError
                    client.pushback += data
            return True
        finally:
            if read is not None:
                if read.done() and not read.cancelled() and read.exception() is None:
                    data = read.result()
                    client.pushback += data
                    client.eof = client.eof or not data
                else:
                    # Let the cancelled read finish, or the next read of the
                    # connection finds the stream still claimed by it.
                    read.cancel()
                    await asyncio.wait([read])
            if task is not None and not self._stopping:
                self._busy.add(task)

    @staticmethod
    def _encode(replies: list[Reply], protocol: int) -> bytes:
        try:
            return encode_replies(replies, protocol)
        except (InvalidArgument, LimitExceeded):
            parts = []
            for reply in replies:
                try:
                    parts.append(encode_reply(reply, protocol))
                except (InvalidArgument, LimitExceeded):
                    logger.exception("a RESP handler returned a reply that cannot be encoded")
                    parts.append(encode_reply(ReplyError("ERR internal error"), protocol))
            return b"".join(parts)

    # --- what the built-in commands need -------------------------------------------

    def info_text(self, sections: list[bytes]) -> str:
        """The ``INFO`` text for the named sections (all the default ones when none)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        uptime = int(time.monotonic() - self._started)
        rss = _resident_bytes()
        builtin: dict[str, Mapping[str, object]] = {
            "server": {
                "redis_version": REDIS_VERSION,
                "redis_mode": "standalone",
                "os": f"{os.uname().sysname} {os.uname().release} {os.uname().machine}",
                "arch_bits": 64 if sys.maxsize > 2**32 else 32,
                "implementation": "sdi",
                "process_id": os.getpid(),
                "tcp_port": self.port,
                "uptime_in_seconds": uptime,
                "uptime_in_days": uptime // 86400,
            },
            "clients": {"connected_clients": len(self._connections), "blocked_clients": 0},
            "memory": {
                "used_memory": rss,
                "used_memory_human": _human_bytes(rss),
                "used_memory_rss": rss,
                "maxmemory": 0,
            },
            "persistence": {"loading": 0, "rdb_changes_since_last_save": 0},
            "stats": {
                "total_connections_received": self.connections_received,
                "total_commands_processed": self.commands_processed,
            },
            "replication": {"role": "master", "connected_slaves": 0},
            "cpu": {
                "used_cpu_sys": round(usage.ru_stime, 6),
                "used_cpu_user": round(usage.ru_utime, 6),
            },
            "cluster": {"cluster_enabled": 0},
        }
        extra = {name.lower(): provide for name, provide in self._info_sections.items()}
        names = [*builtin, *(name for name in extra if name not in builtin)]
        wanted = {section.decode("utf-8", "replace").lower() for section in sections}
        if not wanted or wanted & {"all", "default", "everything"}:
            chosen = names
        else:
            chosen = [name for name in names if name in wanted]
        parts = []
        for name in chosen:
            fields = dict(builtin.get(name, {}))
            if name in extra:
                fields.update(extra[name]())
            lines = [f"# {name.capitalize()}"]
            lines += [f"{key}:{value}" for key, value in fields.items()]
            parts.append("\r\n".join(lines) + "\r\n")
        return "\r\n".join(parts)


class Startable(Protocol):
    """A server with ``async start(host, port) -> port`` and ``async stop()``."""

    async def start(self, host: str, port: int) -> int: ...

    async def stop(self) -> None: ...


@contextlib.contextmanager
def serve_in_thread(
    server: Startable,
    host: str = "127.0.0.1",
    port: int = 0,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> Iterator[int]:
    """Runs ``server`` on an event loop in a thread (for blocking clients and tests); the port.

    Any server with ``start(host, port)`` and ``stop()`` will do (a
    :class:`RespServer`, a leaderboard server). The server is stopped
    cleanly and the thread joined on exit.
    """
    loop = loop_factory()
    thread = threading.Thread(target=loop.run_forever, name="sdi-resp-server", daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(server.start(host, port), loop).result()
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def _address(name: object) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name or "")


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in "BKMG":
        if value < 1024 or unit == "G":
            return f"{count}B" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return f"{count}B"  # pragma: no cover - the loop always returns


def _cstring(data: bytes) -> bytes:
    """What C's ``%s`` prints of an argument: up to its first NUL byte."""
    return data.split(b"\0", 1)[0]


def _unknown_command(argv: list[bytes]) -> str:
    args = b""
    for argument in argv[1:]:
        if len(args) >= 128:
            break
        args += b"'" + _cstring(argument)[: 128 - len(args)] + b"' "
    name = _cstring(argv[0])[:128]
    text = f"ERR unknown command '{_name_text(name)}', with args beginning with: {_name_text(args)}"
    return text.replace("\r", " ").replace("\n", " ")


# --- built-in commands ----------------------------------------------------------------

_PONG = SimpleString(b"PONG")
_RESET = SimpleString(b"RESET")
_QUEUED = SimpleString(b"QUEUED")


def _ping(client: Client, argv: list[bytes]) -> Reply:
    if len(argv) > 2:
        raise RespError("ERR wrong number of arguments for 'ping' command")
    return _PONG if len(argv) == 1 else argv[1]


def _echo(client: Client, argv: list[bytes]) -> Reply:
    return argv[1]


#: Commands run at once inside MULTI rather than queued.
_NOT_QUEUED = frozenset({b"exec", b"discard", b"multi", b"watch", b"quit", b"reset"})


def _check_arity(name: bytes, command: Command, argv: list[bytes]) -> None:
    arity = command.arity
    if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
        raise RespError(f"ERR wrong number of arguments for '{_name_text(name)}' command")


def _queue(client: Client, argv: list[bytes], entry: tuple[bytes, Command, bool] | None) -> Reply:
    """Inside MULTI: checks a command and queues it; a refused one makes EXEC abort."""
    assert client.multi is not None
    try:
        if entry is None:
            raise RespError(_unknown_command(argv))
        _check_arity(entry[0], entry[1], argv)
    except RespError:
        client.multi_failed = True
        raise
    client.multi.append([entry[0], *argv[1:]])
    return _QUEUED


def _multi(client: Client, argv: list[bytes]) -> Reply:
    if client.multi is not None:
        raise RespError("ERR MULTI calls can not be nested")
    client.multi, client.multi_failed = [], False
    return OK


def _exec(client: Client, argv: list[bytes]) -> Reply:
    if client.multi is None:
        raise RespError("ERR EXEC without MULTI")
    return OK  # the server runs the queue (RespServer._exec)


def _discard(client: Client, argv: list[bytes]) -> Reply:
    if client.multi is None:
        raise RespError("ERR DISCARD without MULTI")
    client.multi, client.multi_failed = None, False
    client.server.unwatch(client)
    return OK


def _watch(client: Client, argv: list[bytes]) -> Reply:
    if client.multi is not None:
        raise RespError("ERR WATCH inside MULTI is not allowed")
    if not client.server.watch_supported:
        raise RespError("ERR WATCH is not supported by this server; use MULTI and EXEC without it")
    client.server.watch(client, argv[1:])
    return OK


def _unwatch(client: Client, argv: list[bytes]) -> Reply:
    client.server.unwatch(client)
    return OK


def _quit(client: Client, argv: list[bytes]) -> Reply:
    client.closing = True
    return OK


def _reset(client: Client, argv: list[bytes]) -> Reply:
    client.multi, client.multi_failed = None, False
    client.server.unwatch(client)
    client.protocol = 2
    client.name = None
    client.db = 0
    return _RESET


def _select(client: Client, argv: list[bytes]) -> Reply:
    index = parse_int(argv[1])
    if index != 0:
        raise RespError("ERR DB index is out of range")
    client.db = 0
    return OK


_NAME_BYTES = re.compile(rb"[!-~]*")


def _check_name(name: bytes) -> None:
    if _NAME_BYTES.fullmatch(name) is None:
        raise RespError("ERR Client names cannot contain spaces, newlines or special characters.")


def _auth(client: Client, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        raise RespError(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    if len(argv) != 3:
        raise RespError(SYNTAX_ERROR)
    if argv[1] != b"default":
        raise RespError("WRONGPASS invalid username-password pair or user is disabled.")
    return OK


def _hello(client: Client, argv: list[bytes]) -> Reply:
    protocol = client.protocol
    index = 1
    if len(argv) > 1:
        try:
            protocol = parse_int(argv[1])
        except RespError:
            raise RespError("ERR Protocol version is not an integer or out of range") from None
        index = 2
        if protocol < 2 or protocol > 3:
            raise RespError("NOPROTO unsupported protocol version")
    name: bytes | None = None
    while index < len(argv):
        option = argv[index].lower()
        more = len(argv) - index - 1
        if option == b"auth" and more >= 2:
            if argv[index + 1] != b"default":
                raise RespError("WRONGPASS invalid username-password pair or user is disabled.")
            index += 3
        elif option == b"setname" and more >= 1:
            name = argv[index + 1]
            _check_name(name)
            index += 2
        else:
            raise RespError(f"ERR Syntax error in HELLO option '{_name_text(argv[index])}'")
    if name is not None:
        client.name = name or None
    client.protocol = protocol
    return {
        b"server": b"redis",
        b"version": REDIS_VERSION.encode(),
        b"proto": protocol,
        b"id": client.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


def _subcommand_arity(argv: list[bytes], parent: bytes, name: bytes, arity: int) -> None:
    if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
        raise RespError(
            f"ERR wrong number of arguments for '{parent.decode()}|{name.decode()}' command"
        )


def _client(client: Client, argv: list[bytes]) -> Reply:
    sub = argv[1].lower()
    if sub == b"id":
        _subcommand_arity(argv, b"client", sub, 2)
        return client.id
    if sub == b"setname":
        _subcommand_arity(argv, b"client", sub, 3)
        _check_name(argv[2])
        client.name = argv[2] or None
        return OK
    if sub == b"getname":
        _subcommand_arity(argv, b"client", sub, 2)
        return client.name
    if sub == b"info":
        _subcommand_arity(argv, b"client", sub, 2)
        return client.info_line() + "\n"
    if sub == b"list":
        _subcommand_arity(argv, b"client", sub, -2)
        return "".join(other.info_line() + "\n" for other in client.server.clients)
    if sub == b"setinfo":
        _subcommand_arity(argv, b"client", sub, 4)
        attribute = argv[2].lower()
        if attribute not in (b"lib-name", b"lib-ver"):
            raise RespError(f"ERR Unrecognized option '{_name_text(argv[2])}'")
        if _NAME_BYTES.fullmatch(argv[3]) is None:
            raise RespError(
                f"ERR {attribute.decode()} cannot contain spaces, newlines or special characters."
            )
        if attribute == b"lib-name":
            client.lib_name = argv[3]
        else:
            client.lib_ver = argv[3]
        return OK
    raise RespError(f"ERR unknown subcommand '{_name_text(_cstring(argv[1]))}'. Try CLIENT HELP.")


def _command_info(name: bytes, command: Command) -> list[Reply]:
    return [
        name,
        command.arity,
        [SimpleString(flag.encode()) for flag in command.flags],
        command.first_key,
        command.last_key,
        command.step,
        [SimpleString(b"@" + command.group.encode())],
        [],
        [],
        [],
    ]


def _command(client: Client, argv: list[bytes]) -> Reply:
    commands = client.server.commands
    if len(argv) == 1:
        return [_command_info(name, command) for name, command in commands.items()]
    sub = argv[1].lower()
    if sub == b"count":
        _subcommand_arity(argv, b"command", sub, 2)
        return len(commands)
    if sub == b"list":
        return list(commands)
    if sub == b"info":
        names = [name.lower() for name in argv[2:]] or list(commands)
        found = [(name, commands.get(name)) for name in names]
        return [None if cmd is None else _command_info(name, cmd) for name, cmd in found]
    if sub == b"docs":
        names = [name.lower() for name in argv[2:]] or list(commands)
        docs: dict[bytes, Reply] = {}
        for name in names:
            command_entry = commands.get(name)
            if command_entry is not None:
                docs[name] = {
                    b"summary": command_entry.summary.encode(),
                    b"since": b"1.0.0",
                    b"group": command_entry.group.encode(),
                }
        return docs
    raise RespError(f"ERR unknown subcommand '{_name_text(_cstring(argv[1]))}'. Try COMMAND HELP.")


def _info(client: Client, argv: list[bytes]) -> Reply:
    return client.server.info_text(argv[1:])


def _builtin_commands() -> dict[bytes, Command]:
    connection = "connection"
    return {
        b"ping": Command(_ping, -1, ("fast",), group=connection, summary="Ping the server"),
        b"echo": Command(_echo, 2, ("fast",), group=connection, summary="Echo the message"),
        b"quit": Command(_quit, -1, ("fast",), group=connection, summary="Close the connection"),
        b"reset": Command(_reset, 1, ("fast",), group=connection, summary="Reset the connection"),
        b"select": Command(_select, 2, ("fast",), group=connection, summary="Select database 0"),
        b"auth": Command(_auth, -2, ("fast",), group=connection, summary="Authenticate"),
        b"hello": Command(_hello, -1, ("fast",), group=connection, summary="Handshake"),
        b"client": Command(_client, -2, (), group=connection, summary="Connection state"),
        b"command": Command(_command, -1, (), group="server", summary="Command table"),
        b"multi": Command(
            _multi, 1, ("fast",), group="transactions", summary="Start a transaction"
        ),
        b"exec": Command(_exec, 1, (), group="transactions", summary="Run the transaction"),
        b"discard": Command(_discard, 1, ("fast",), group="transactions", summary="Drop it"),
        b"watch": Command(
            _watch, -2, ("fast",), 1, -1, 1, group="transactions", summary="Watch keys"
        ),
        b"unwatch": Command(_unwatch, 1, ("fast",), group="transactions", summary="Unwatch"),
        b"info": Command(_info, -1, (), group="server", summary="Server information"),
    }
