"""The leaderboard's servers: sdi's RESP sorted-set server beside redis-server, and the
book's two ways to shard a board beside one server.

**RESP server** (``resp_results``, also run by the ``zset`` benchmark): sdi's
leaderboard server (``python -m sdi.leaderboard``, in memory, uvloop, one process)
and redis-server (Debian's, persistence off) each get the same board of ``members``
members, then ``redis-benchmark`` (Debian's ``redis-tools``) drives them in turn with
50 connections: ``-t zadd -r members`` (``ZADD myzset <rand> element:<rand>``) one
command per round trip and pipelined 16 deep, and a leaderboard read mix: ``ZREVRANK`` of a random
member and ``ZREVRANGE 0 9 WITHSCORES`` (the top 10). Each server is pinned to one CPU
and redis-benchmark to the other. Bytes per member: ``used_memory`` grown by loading
the board, per member, less the member's bytes and an 8-byte score (redis-server
reports its allocator's count; sdi's server reports its resident set, which also holds
the interpreter's own growth).

**Sharding** (``run``): three sdi leaderboard servers (processes); the same users and
wins through :class:`~sdi.leaderboard.board.ScoreRangeShards` (bounds at the 50th and
90th percentile of the loaded scores, so the ranges hold 50/40/10 % of the users),
:class:`~sdi.leaderboard.board.HashShards` and one server
(:class:`~sdi.leaderboard.board.SingleBoard`), from 32 concurrent asyncio tasks in
this process: wins (``add``), the top 10 and a user's standing (rank and the four
above and below). Scores are skewed (exponential), as most players score little.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale, pin_process, two_cpus  # noqa: E402

SIZES = {  # scale: (board members, redis-benchmark requests, shard users, shard ops, rounds)
    "tiny": (2_000, 2_000, 300, 300, 1),
    "quick": (100_000, 50_000, 3_000, 3_000, 1),
    "full": (1_000_000, 1_000_000, 100_000, 50_000, 3),
}
CLIENTS = 50
TASKS = 32
MEMBER_PREFIX = b"member:"


@contextlib.contextmanager
def _sdi_server(cpu: int | None) -> Iterator[int]:
    """``python -m sdi.leaderboard`` in memory on a free port (pinned to ``cpu``)."""
    from sdi.testing.servers import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sdi.leaderboard", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if b"listening on" not in line:
            raise RuntimeError(f"the sdi leaderboard server did not start: {line!r}")
        if cpu is not None:
            pin_process(process.pid, cpu)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _member(n: int) -> bytes:
    return MEMBER_PREFIX + b"%012d" % n


def _load(port: int, members: int) -> int:
    """Loads ``lb`` with ``members`` members; the ``used_memory`` it added."""
    import redis

    client = redis.Redis(port=port)
    rng = random.Random(5)
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for first in range(0, members, 1_000):
        pairs: list[object] = []
        for n in range(first, min(first + 1_000, members)):
            pairs += [rng.randrange(1_000_000), _member(n)]
        pipe.execute_command("ZADD", "lb", *pairs)
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()
    time.sleep(0.2)
    grown = int(client.info("memory")["used_memory"]) - before
    client.close()
    return grown


def _redis_benchmark(port: int, requests: int, args: list[str], cpu: int | None) -> float:
    """Requests/s of one redis-benchmark run (its CSV line)."""
    command = [
        "redis-benchmark", "-p", str(port), "-c", str(CLIENTS), "-n", str(requests),
        "--csv", *args,
    ]  # fmt: skip
    if cpu is not None and two_cpus():
        command = ["taskset", "-c", str(cpu), *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [row for row in csv.reader(io.StringIO(out)) if row and row[0] != "test"]
    if not rows:
        raise RuntimeError(f"redis-benchmark printed no result: {out!r}")
    return float(rows[-1][1])


def resp_results(scale: Scale, progress: Progress) -> list[Result]:
    """sdi's RESP server beside redis-server under redis-benchmark (see the module docstring)."""
    import shutil

    from sdi.testing.servers import redis_server

    members, requests, _, _, rounds = SIZES[scale]
    for binary in ("redis-server", "redis-benchmark"):
        if shutil.which(binary) is None:
            progress(
                f"{binary} is not installed (`make system-deps`); the RESP comparison is left out"
            )
            return []
    server_cpu, client_cpu = (0, 1) if two_cpus() else (None, None)
    tests: dict[str, list[str]] = {
        # -r: random members (without it every ZADD updates one member).
        "ZADD, one per round trip": ["-t", "zadd", "-r", str(members)],
        "ZADD, pipelined 16 deep": ["-t", "zadd", "-r", str(members), "-P", "16"],
        "ZREVRANK of a random member": [
            "-r",
            str(members),
            "ZREVRANK",
            "lb",
            "member:__rand_int__",
        ],
        "ZREVRANGE 0 9 WITHSCORES": ["ZREVRANGE", "lb", "0", "9", "WITHSCORES"],
    }
    figures: dict[str, dict[str, list[float]]] = {name: {"sdi": [], "redis": []} for name in tests}
    grown: dict[str, int] = {}
    with _sdi_server(server_cpu) as sdi_port, redis_server() as redis:
        if server_cpu is not None and redis.process is not None:
            pin_process(redis.process.pid, server_cpu)
        for name, port in (("sdi", sdi_port), ("redis", redis.port)):
            progress(f"loading {members:,} members into the {name} server")
            grown[name] = _load(port, members)
        for n in range(rounds):
            for test, args in tests.items():
                for name, port in (("sdi", sdi_port), ("redis", redis.port)):
                    progress(f"round {n + 1}/{rounds}: {test} on {name}")
                    rate = _redis_benchmark(port, requests, args, client_cpu)
                    figures[test][name].append(rate)
    results = [
        Result(
            f"RESP {test}",
            "requests/s",
            True,
            statistics.median(rates["sdi"]),
            {"redis-server": statistics.median(rates["redis"])},
            note=f"redis-benchmark -c {CLIENTS} -n {requests:,}; board of {members:,} members",
        )
        for test, rates in figures.items()
    ]
    payload = len(_member(0)) + 8
    results.append(
        Result(
            f"RESP server bytes/member, {members:,} members",
            "bytes",
            False,
            grown["sdi"] / members - payload,
            {"redis-server (used_memory)": grown["redis"] / members - payload},
            note="sdi: resident set growth (interpreter included); redis: allocator count",
        )
    )
    return results


# --- sharding -------------------------------------------------------------------------


async def _rate(work: Callable[[int], Awaitable[object]], ops: int) -> float:
    """Operations/s of ``work(i)`` for i < ops, from TASKS concurrent tasks."""
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            await work(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    return ops / (time.perf_counter() - start)


async def _shard_figures(
    ports: list[int], users: int, ops: int, rounds: int, progress: Progress
) -> dict[str, dict[str, float]]:
    import redis.asyncio

    from sdi.leaderboard.board import Board, HashShards, ScoreRangeShards, SingleBoard

    rng = random.Random(9)
    points = [max(1, int(rng.expovariate(1 / 200))) for _ in range(users)]
    ordered = sorted(points)
    bounds = [ordered[users // 2] + 0.5, ordered[users * 9 // 10] + 0.5]

    def clients(chosen: list[int]) -> list[Any]:
        return [redis.asyncio.Redis(port=p) for p in chosen]

    boards: dict[str, Board] = {
        "score-range shards": ScoreRangeShards(clients(ports), bounds),
        "hash shards": HashShards(clients(ports)),
        "one server": SingleBoard(clients(ports[:1])[0]),
    }
    names = [f"user{n:07d}" for n in range(users)]
    figures: dict[str, dict[str, list[float]]] = {
        op: {board: [] for board in boards} for op in ("add", "top", "standing")
    }

    async def load(board: Board, key: str) -> None:
        await _rate(lambda i: board.add(key, names[i], points[i]), users)

    async def measure(board: Board, key: str, picks: list[int]) -> dict[str, float]:
        return {
            "add": await _rate(lambda i: board.add(key, names[picks[i]], 1), ops),
            "top": await _rate(lambda i: board.top(key, 10), ops),
            "standing": await _rate(lambda i: board.standing(key, names[picks[i]]), ops),
        }

    try:
        for scheme, board in boards.items():
            progress(f"sharding: loading {users:,} users through {scheme}")
            await load(board, f"lb:{scheme}")
        for n in range(rounds):
            picks = [rng.randrange(users) for _ in range(ops)]
            for scheme, board in boards.items():
                progress(f"sharding round {n + 1}/{rounds}: {scheme}")
                for op, rate in (await measure(board, f"lb:{scheme}", picks)).items():
                    figures[op][scheme].append(rate)
    finally:
        for board in boards.values():
            await board.close()
    return {op: {s: statistics.median(v) for s, v in by.items()} for op, by in figures.items()}


def run(scale: Scale, progress: Progress) -> list[Result]:
    _, _, users, ops, rounds = SIZES[scale]
    with contextlib.ExitStack() as stack:
        ports = [stack.enter_context(_sdi_server(None)) for _ in range(3)]
        figures = asyncio.run(_shard_figures(ports, users, ops, rounds, progress))
    labels = {"add": "a win (add points)", "top": "the top 10", "standing": "a user's standing"}
    note = f"{users:,} users on 3 sdi servers; {TASKS} concurrent tasks; ops: {ops:,}"
    return [
        Result(
            f"sharded: {labels[op]}",
            "ops/s",
            True,
            by["score-range shards"],
            {"hash shards": by["hash shards"], "one server": by["one server"]},
            note=note,
        )
        for op, by in figures.items()
    ]
