"""The leaderboard's sorted set: sdi's compiled ZSet beside sortedcontainers and Redis ZSETs.

The members are ``n`` distinct 11-byte names (``p`` and ten digits) in random order
with random integer scores. In-process, every library does the same work, taking turns
round by round, and the figure is the median of the rounds:

* **bulk load, members/s**: sdi ``ZSet.add_many`` of all ``n`` into an empty set (a
  float64 array and a numpy ``S11`` array, one call, GIL released); Python:
  ``SortedList`` of ``(score, member)`` tuples plus a ``dict`` member -> score; Redis:
  ``ZADD`` of 1,000 pairs per command, pipelined (redis-server started here, redis-py
  with hiredis in this process).
* **ZINCRBY/s**: ``n/4`` increments of random members: sdi ``incr_many`` (one call);
  Python: ``dict`` lookup, ``SortedList.remove``, ``add``; Redis: ``ZINCRBY`` pipelined.
* **ZREVRANK/s**: ``n/4`` reverse ranks of random members: sdi ``ranks(rev=True)``;
  Python: ``dict`` lookup and ``SortedList.bisect_left``; Redis: ``ZREVRANK`` pipelined.
* **bytes per member beyond the member bytes and an 8-byte score**, after the load and
  the increments: sdi ``stats()["overhead_per_member"]`` (``memory_bytes`` from the
  capacity of every allocation); Redis: ``used_memory`` grown by loading its members,
  per member, less 19 bytes; Python: ``sys.getsizeof`` of the tuples, floats, bytes
  headers, the dict and the SortedList's lists, per member.

Redis and Python process a subset of the operations (their rates do not depend much on
how many are measured): Redis loads up to 1M members and runs 200k of each command;
Python runs up to 500k increments and ranks, and at ``full`` builds its structure over
the first 5M members only (25M tuples would take minutes and several GB).

Then sdi's RESP server beside redis-server under ``redis-benchmark`` (see
``cores/leaderboard.py``).

Goals (issue 8): in process at least 10x Redis's throughput, the RESP server at least
as fast as redis-server, at most 16 bytes of overhead per member.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale  # noqa: E402
from sdi.zset import ZSet  # noqa: E402

SIZES = {  # scale: (members, rounds, python members cap, python ops cap, redis members, redis ops)
    "tiny": (20_000, 1, 20_000, 5_000, 20_000, 5_000),
    "quick": (1_000_000, 3, 1_000_000, 250_000, 1_000_000, 200_000),
    "full": (25_000_000, 3, 5_000_000, 500_000, 1_000_000, 200_000),
}
MEMBER_LEN = 11


def _names(ids: np.ndarray) -> np.ndarray:
    """``p`` and ten digits for each id, as a numpy ``S11`` array (built without Python loops)."""
    digits = np.empty((len(ids), MEMBER_LEN), dtype=np.uint8)
    digits[:, 0] = ord("p")
    value = ids.astype(np.int64)
    for place in range(MEMBER_LEN - 1, 0, -1):
        digits[:, place] = ord("0") + value % 10
        value //= 10
    return digits.view(f"S{MEMBER_LEN}").reshape(-1)


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def run(scale: Scale, progress: Progress) -> list[Result]:
    n, rounds, py_n, py_ops, redis_n, redis_ops = SIZES[scale]
    rng = np.random.default_rng(8)
    names = _names(rng.permutation(n))
    scores = rng.integers(0, 1_000_000, n).astype(np.float64)
    ops = n // 4
    picked = rng.integers(0, n, ops)
    op_names = names[picked]
    deltas = rng.integers(1, 100, ops).astype(np.float64)

    progress(f"{n:,} members; Python over {py_n:,}, Redis over {redis_n:,}")
    py_names: list[bytes] = names[:py_n].tolist()
    py_scores: list[float] = scores[:py_n].tolist()
    py_picked = rng.integers(0, py_n, py_ops).tolist()
    py_op_names = [py_names[i] for i in py_picked]
    py_deltas = deltas[:py_ops].tolist()

    samples: dict[str, list[float]] = {
        key: [] for key in ("load", "incr", "rank", "py_load", "py_incr", "py_rank")
    }
    overhead_loaded = overhead_incr = py_overhead = 0.0
    for round_ in range(rounds):
        progress(f"round {round_ + 1}/{rounds}: sdi")
        load, incr, rank, overhead_loaded, overhead_incr = _sdi(scores, names, deltas, op_names)
        samples["load"].append(n / load)
        samples["incr"].append(ops / incr)
        samples["rank"].append(ops / rank)
        progress(f"round {round_ + 1}/{rounds}: sortedcontainers")
        load, incr, rank, py_overhead = _python(py_names, py_scores, py_op_names, py_deltas)
        samples["py_load"].append(py_n / load)
        samples["py_incr"].append(py_ops / incr)
        samples["py_rank"].append(py_ops / rank)

    redis = _redis(names[:redis_n], scores[:redis_n], rng, redis_ops, progress)
    median = {key: statistics.median(values) for key, values in samples.items()}
    label = f"{n / 1e6:g}M members"

    def baselines(py_key: str, redis_key: str) -> dict[str, float]:
        out = {"SortedList + dict (Python)": median[py_key]}
        if redis_key in redis:
            out[f"Redis {redis_key}, pipelined"] = redis[redis_key]
        return out

    py_note = "" if py_n == n else f"; Python over {py_n / 1e6:g}M members"
    results = [
        Result(
            f"bulk load, {label}",
            "members/s",
            True,
            median["load"],
            baselines("py_load", "ZADD x1000 pairs"),
            note=f"sdi: add_many of float64 + S{MEMBER_LEN} arrays into an empty set{py_note}",
        ),
        Result(
            f"ZINCRBY, {label}",
            "ops/s",
            True,
            median["incr"],
            baselines("py_incr", "ZINCRBY"),
            note=f"sdi: incr_many of {ops:,} random members in one call{py_note}",
        ),
        Result(
            f"ZREVRANK, {label}",
            "ops/s",
            True,
            median["rank"],
            baselines("py_rank", "ZREVRANK"),
            note=f"sdi: ranks(rev=True) of {ops:,} random members in one call{py_note}",
        ),
    ]
    memory = {"SortedList + dict (sys.getsizeof)": py_overhead}
    if "bytes" in redis:
        memory["Redis (used_memory)"] = redis["bytes"]
    results.append(
        Result(
            f"bytes/member beyond member+score, {label}",
            "bytes",
            False,
            overhead_incr,
            memory,
            note=f"sdi: {overhead_loaded:.1f} after the bulk load, {overhead_incr:.1f} after "
            f"{ops:,} ZINCRBY (leaves less full); members are {MEMBER_LEN} bytes",
        )
    )
    # The RESP server beside redis-server, under redis-benchmark (cores/leaderboard.py).
    from cores.leaderboard import resp_results

    results += resp_results(scale, progress)
    return results


def _sdi(
    scores: np.ndarray, names: np.ndarray, deltas: np.ndarray, op_names: np.ndarray
) -> tuple[float, float, float, float, float]:
    """(load, incr, rank seconds, overhead per member after the load and after the incrs)."""
    board = ZSet()
    load = _seconds(lambda: board.add_many(scores, names))
    loaded = float(board.stats()["overhead_per_member"])
    incr = _seconds(lambda: board.incr_many(deltas, op_names))
    rank = _seconds(lambda: board.ranks(op_names, rev=True))
    return load, incr, rank, loaded, float(board.stats()["overhead_per_member"])


def _python(
    names: list[bytes], scores: list[float], op_names: list[bytes], deltas: list[float]
) -> tuple[float, float, float, float]:
    """(load, incr, rank seconds, overhead bytes per member) for SortedList + dict."""
    from sortedcontainers import SortedList

    start = time.perf_counter()
    ordered = SortedList(zip(scores, names, strict=True))
    by_member = dict(zip(names, scores, strict=True))
    load = time.perf_counter() - start

    n = len(names)
    sample = ordered[n // 2]
    structure = sys.getsizeof(by_member) + sys.getsizeof(ordered._lists)
    structure += sum(sys.getsizeof(part) for part in ordered._lists)
    structure += sys.getsizeof(ordered._maxes)
    per_member = (
        sys.getsizeof(sample)  # the (score, member) tuple
        + sys.getsizeof(sample[0])  # the float
        + sys.getsizeof(sample[1])
        - len(sample[1])  # the bytes object's header
    )
    overhead = per_member + structure / n

    def incr() -> None:
        for member, delta in zip(op_names, deltas, strict=True):
            old = by_member[member]
            new = old + delta
            ordered.remove((old, member))
            ordered.add((new, member))
            by_member[member] = new

    def rank() -> None:
        last = len(ordered) - 1
        for member in op_names:
            _ = last - ordered.bisect_left((by_member[member], member))

    return load, _seconds(incr), _seconds(rank), overhead


def _redis(
    names: np.ndarray,
    scores: np.ndarray,
    rng: np.random.Generator,
    ops: int,
    progress: Progress,
) -> dict[str, float]:
    """Rates of Redis ZADD (bulk), ZINCRBY and ZREVRANK, and bytes per member; {} without it."""
    import redis

    from sdi.testing.servers import RedisServer

    try:
        server = RedisServer().start()
    except Exception as error:
        progress(f"no redis-server ({error}); the Redis baseline is left out")
        return {}
    try:
        client = redis.Redis(host=server.host, port=server.port)
        member_list: list[bytes] = names.tolist()
        score_list: list[float] = scores.tolist()
        n = len(member_list)
        progress(f"loading {n:,} members into redis-server")
        before = int(client.info("memory")["used_memory"])
        chunk = 1_000
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(0, n, chunk):
            pairs: list[object] = []
            for s, m in zip(score_list[i : i + chunk], member_list[i : i + chunk], strict=True):
                pairs += [s, m]
            pipe.execute_command("ZADD", "board", *pairs)
            if len(pipe) == 50:
                pipe.execute()
        pipe.execute()
        load = n / (time.perf_counter() - start)
        used = int(client.info("memory")["used_memory"]) - before
        out = {"ZADD x1000 pairs": load, "bytes": used / n - MEMBER_LEN - 8}
        picked = [member_list[i] for i in rng.integers(0, n, ops).tolist()]
        deltas = rng.integers(1, 100, ops).tolist()

        def pipelined(command: Callable[[redis.client.Pipeline, int], object]) -> float:
            start = time.perf_counter()
            for first in range(0, ops, 10_000):
                pipe = client.pipeline(transaction=False)
                for i in range(first, min(first + 10_000, ops)):
                    command(pipe, i)
                pipe.execute()
            return ops / (time.perf_counter() - start)

        progress(f"redis-server: {ops:,} ZINCRBY and ZREVRANK")
        out["ZINCRBY"] = pipelined(
            lambda pipe, i: pipe.execute_command("ZINCRBY", "board", deltas[i], picked[i])
        )
        out["ZREVRANK"] = pipelined(
            lambda pipe, i: pipe.execute_command("ZREVRANK", "board", picked[i])
        )
        return out
    finally:
        server.stop()
