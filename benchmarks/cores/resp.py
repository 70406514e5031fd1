"""RESP parsing and encoding: sdi.resp beside hiredis.Reader and redis-py's Python parser.

Streams (generated once per run from a fixed seed):

* ``replies``: a redis-benchmark-like mix of RESP2 replies: ``+OK``, integers,
  bulk strings of 10-100 bytes, null bulks, and arrays of bulk strings shaped
  like LRANGE and ZRANGE WITHSCORES replies.
* ``resp3``: RESP3 replies: maps (HGETALL), doubles (ZSCORE), booleans, nulls,
  sets (SMEMBERS), mixed with simple strings and bulk strings.
* ``commands``: what a server reads: SET key value, GET key, ZADD key score member
  as RESP arrays of bulk strings.

Every parser gets the stream as a socket would deliver it, in 64 KiB chunks:

* sdi: ``ReplyParser.parse(chunk)`` / ``CommandParser.parse(chunk)`` per chunk
  (feed plus a batch read of every complete value).
* hiredis: ``Reader.feed(chunk)`` then ``gets()`` until it reports no data.
  64 KiB feeds are hiredis' best setting: one huge feed makes it compact its
  buffer over and over.
* redis-py: ``redis._parsers.resp2._RESP2Parser`` (``_RESP3Parser`` for RESP3),
  the pure-Python parser redis-py uses when hiredis is absent. It reads from a
  socket through ``SocketBuffer``; ``_ChunkSocket`` stands in for the socket
  and returns the stream's 64 KiB chunks from ``recv``. The parser is attached
  with ``on_connect`` to a minimal connection object (``_sock``,
  ``socket_timeout``, ``encoder``) and asked for ``read_response(
  disable_decoding=True)`` once per reply.

Encoding: ``encode_commands`` of SET commands beside ``hiredis.pack_command``
per command and redis-py's ``PythonRespSerializer.pack``.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale  # noqa: E402
from sdi import resp  # noqa: E402

CHUNK_BYTES = 64 * 1024


def _bulk(payload: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(payload), payload)


def _word(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high)).hex().encode()[: rng.randint(low, high)]


def reply_stream(count: int, seed: int = 1) -> bytes:
    """``count`` RESP2 replies in a redis-benchmark-like mix."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.25:
            parts.append(b"+OK\r\n")
        elif roll < 0.45:
            parts.append(b":%d\r\n" % rng.randint(0, 10**9))
        elif roll < 0.75:
            parts.append(_bulk(_word(rng, 10, 100)))
        elif roll < 0.80:
            parts.append(b"$-1\r\n")
        elif roll < 0.90:
            items = [_bulk(_word(rng, 5, 30)) for _ in range(10)]
            parts.append(b"*10\r\n" + b"".join(items))
        else:
            items = []
            for _ in range(5):
                items.append(_bulk(_word(rng, 5, 20)))
                items.append(_bulk(b"%.17g" % rng.uniform(0, 1000)))
            parts.append(b"*10\r\n" + b"".join(items))
    return b"".join(parts)


def resp3_stream(count: int, seed: int = 2) -> bytes:
    """``count`` RESP3 replies: maps, doubles, booleans, nulls, sets, strings."""
    rng = random.Random(seed)
    values: list[object] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.2:
            values.append(resp.SimpleString(b"OK"))
        elif roll < 0.4:
            values.append(rng.uniform(-1000, 1000))
        elif roll < 0.5:
            values.append(rng.random() < 0.5)
        elif roll < 0.55:
            values.append(None)
        elif roll < 0.75:
            values.append(_word(rng, 10, 100))
        elif roll < 0.9:
            values.append({_word(rng, 3, 12): _word(rng, 5, 30) for _ in range(5)})
        else:
            values.append({_word(rng, 5, 20) for _ in range(8)})
    return resp.encode_replies(values, protocol=3)


def command_stream(count: int, seed: int = 3) -> bytes:
    """``count`` commands: SET (40%), GET (40%), ZADD (20%)."""
    rng = random.Random(seed)
    commands: list[tuple[object, ...]] = []
    for _ in range(count):
        key = b"key:%012d" % rng.randint(0, 10**6)
        roll = rng.random()
        if roll < 0.4:
            commands.append((b"SET", key, _word(rng, 10, 100)))
        elif roll < 0.8:
            commands.append((b"GET", key))
        else:
            commands.append((b"ZADD", key, rng.randint(0, 10**6), _word(rng, 5, 20)))
    return resp.encode_commands(commands)


def chunked(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK_BYTES] for i in range(0, len(stream), CHUNK_BYTES)]


def parse_sdi(chunks: list[bytes], commands: bool = False) -> int:
    parser = resp.CommandParser() if commands else resp.ReplyParser()
    count = 0
    for chunk in chunks:
        count += len(parser.parse(chunk))
    return count


def parse_hiredis(chunks: list[bytes]) -> int:
    import hiredis

    nothing = object()
    reader = hiredis.Reader(notEnoughData=nothing)
    count = 0
    for chunk in chunks:
        reader.feed(chunk)
        gets = reader.gets
        while gets() is not nothing:
            count += 1
    return count


class _ChunkSocket:
    """The part of a socket redis-py's SocketBuffer uses, serving chunks from memory."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    def recv(self, size: int) -> bytes:
        return next(self._chunks, b"")

    def settimeout(self, timeout: float | None) -> None:
        return None


class _Connection:
    """The attributes redis-py's parsers read from a connection in ``on_connect``."""

    def __init__(self, chunks: list[bytes]) -> None:
        from redis.connection import Encoder

        self._sock = _ChunkSocket(chunks)
        self.socket_timeout = None
        self.encoder = Encoder("utf-8", "strict", decode_responses=False)


def parse_redis_py(chunks: list[bytes], count: int, resp3: bool = False) -> int:
    if resp3:
        from redis._parsers.resp3 import _RESP3Parser as Parser
    else:
        from redis._parsers.resp2 import _RESP2Parser as Parser  # type: ignore[assignment]
    parser = Parser(socket_read_size=CHUNK_BYTES)
    parser.on_connect(_Connection(chunks))
    for _ in range(count):
        parser.read_response(disable_decoding=True)
    return count


def _interleaved(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per runner, the runners taking turns within each repeat.

    The machine is shared: taking turns spreads a burst of load from another
    process over every runner instead of landing on whichever ran during it.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def _throughput(
    name: str,
    stream: bytes,
    count: int,
    runners: dict[str, Callable[[], int]],
    repeats: int,
    progress: Progress,
) -> list[Result]:
    for runner_name, runner in runners.items():
        produced = runner()
        if produced != count:
            raise AssertionError(f"{runner_name} parsed {produced} values, expected {count}")
    seconds = _interleaved(runners, repeats)
    for runner_name, value in seconds.items():
        progress(f"{name}: {runner_name} {count / value:,.0f} values/s")
    megabytes = len(stream) / 1e6
    note = f"{count:,} values, {megabytes:.1f} MB, fed in 64 KiB chunks"
    sdi_seconds = seconds.pop("sdi")
    return [
        Result(
            f"parse {name}",
            "values/s",
            True,
            count / sdi_seconds,
            {runner: count / value for runner, value in seconds.items()},
            note=note,
        ),
        Result(
            f"parse {name}",
            "MB/s",
            True,
            megabytes / sdi_seconds,
            {runner: megabytes / value for runner, value in seconds.items()},
        ),
    ]


def run(scale: Scale, progress: Progress) -> list[Result]:
    import hiredis
    from redis.connection import PythonRespSerializer

    counts = {"tiny": 2_000, "quick": 200_000, "full": 1_000_000}[scale]
    repeats = {"tiny": 1, "quick": 5, "full": 9}[scale]
    results: list[Result] = []

    replies = reply_stream(counts)
    reply_chunks = chunked(replies)
    results += _throughput(
        "RESP2 replies",
        replies,
        counts,
        {
            "sdi": lambda: parse_sdi(reply_chunks),
            "hiredis": lambda: parse_hiredis(reply_chunks),
            "redis-py": lambda: parse_redis_py(reply_chunks, counts),
        },
        repeats,
        progress,
    )

    resp3 = resp3_stream(counts)
    resp3_chunks = chunked(resp3)
    results += _throughput(
        "RESP3 replies",
        resp3,
        counts,
        {
            "sdi": lambda: parse_sdi(resp3_chunks),
            "hiredis": lambda: parse_hiredis(resp3_chunks),
            "redis-py": lambda: parse_redis_py(resp3_chunks, counts, resp3=True),
        },
        repeats,
        progress,
    )

    commands = command_stream(counts)
    command_chunks = chunked(commands)
    results += _throughput(
        "commands (server side)",
        commands,
        counts,
        {
            "sdi": lambda: parse_sdi(command_chunks, commands=True),
            "hiredis": lambda: parse_hiredis(command_chunks),
            "redis-py": lambda: parse_redis_py(command_chunks, counts),
        },
        repeats,
        progress,
    )

    rng = random.Random(4)
    to_send = [
        (b"SET", b"key:%012d" % rng.randint(0, 10**6), _word(rng, 10, 100)) for _ in range(counts)
    ]
    serializer = PythonRespSerializer(CHUNK_BYTES, lambda value: value)
    timings = _interleaved(
        {
            "sdi": lambda: resp.encode_commands(to_send),
            "hiredis": lambda: [hiredis.pack_command(command) for command in to_send],
            "redis-py": lambda: [serializer.pack(*command) for command in to_send],
        },
        repeats,
    )
    progress("encode: done")
    sdi_seconds = timings.pop("sdi")
    results.append(
        Result(
            "encode SET commands",
            "commands/s",
            True,
            counts / sdi_seconds,
            {name: counts / value for name, value in timings.items()},
            note="sdi: one encode_commands() call for the pipeline; hiredis: pack_command "
            "per command; redis-py: PythonRespSerializer.pack per command",
        )
    )
    return results
