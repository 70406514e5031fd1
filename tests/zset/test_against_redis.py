"""sdi.zset.ZSet beside a real redis-server: random command sequences, same replies.

The sets stay under 128 short members, so Redis keeps them in its listpack encoding,
the one whose BYLEX answers on mixed scores the core reproduces (see the crate docs).
Scores in replies are compared as floats (Redis prints them with 17 digits).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument
from sdi.testing import servers
from sdi.zset import ZSet

pytestmark = pytest.mark.needs_server

MEMBERS = [b"", b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\x00", b"a\x00", b"\xff", b"zz"]
member = st.sampled_from(MEMBERS)
SCORES = [b"0", b"-0", b"1", b"-1", b"2.5", b"3", b"1e300", b"inf", b"-inf", b"+inf", b"7"]
score = st.sampled_from(SCORES)
# Bad bounds (nan, x) are rare choices, so that most ranges are answered.
score_bound = st.sampled_from([*SCORES, *(b"(" + s for s in SCORES), b"nan"])
lex_bound = st.sampled_from(
    [b"-", b"+", *(b"[" + m for m in MEMBERS), *(b"(" + m for m in MEMBERS), b"x"]
)
FLAGS = ("nx", "xx", "gt", "lt", "ch", "incr")

operation = st.one_of(
    st.tuples(
        st.just("zadd"),
        st.lists(st.tuples(score, member), min_size=1, max_size=3),
        st.lists(st.sampled_from(FLAGS), max_size=2, unique=True),
    ),
    st.tuples(st.just("zincrby"), score, member),
    st.tuples(st.just("zrem"), st.lists(member, min_size=1, max_size=3)),
    st.tuples(st.just("zrank"), member, st.booleans()),
    st.tuples(st.just("zmscore"), st.lists(member, min_size=1, max_size=3)),
    st.tuples(st.just("zrange"), st.integers(-6, 6), st.integers(-6, 6), st.booleans()),
    st.tuples(
        st.just("byscore"),
        score_bound,
        score_bound,
        st.booleans(),
        st.integers(-1, 3),
        st.integers(-1, 3),
    ),
    st.tuples(
        st.just("bylex"),
        lex_bound,
        lex_bound,
        st.booleans(),
        st.integers(-1, 3),
        st.integers(-1, 3),
    ),
    st.tuples(st.just("zpop"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("remrank"), st.integers(-4, 4), st.integers(-4, 4)),
    st.tuples(st.just("remscore"), score_bound, score_bound),
    st.tuples(st.just("remlex"), lex_bound, lex_bound),
)


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as server:
        yield redis.Redis(host=server.host, port=server.port)


def pairs(reply: list[Any]) -> list[tuple[bytes, float]]:
    """redis-py's ``[[member, score], ...]`` (or tuples) as ``[(member, score), ...]``."""
    return [(bytes(m), float(s)) for m, s in reply]


def call(real: Any, server: Any) -> None:
    """Both give the same reply, or both fail with the same message."""
    try:
        want = server()
    except redis.ResponseError as error:
        message = str(error).removeprefix("ERR ")
        with pytest.raises(InvalidArgument) as info:
            real()
        assert str(info.value) == message
        return
    assert real() == want


def optional_float(reply: Any) -> float | None:
    return None if reply is None else float(reply)


def apply(z: ZSet, client: redis.Redis, key: str, op: tuple[Any, ...]) -> None:
    """Runs one operation on both and compares the replies."""
    run = client.execute_command
    name = op[0]
    if name == "zadd":
        _, items, flags = op
        words = [f.upper() for f in flags]
        args = [x for s, m in items for x in (s, m)]
        reply = lambda: z.zadd(  # noqa: E731
            [s for s, _ in items], [m for _, m in items], **dict.fromkeys(flags, True)
        )

        def from_redis() -> Any:
            answer = run("ZADD", key, *words, *args)
            return answer if isinstance(answer, int) else optional_float(answer)

        call(reply, from_redis)
    elif name == "zincrby":
        _, delta, m = op
        call(lambda: z.incr(delta, m), lambda: float(run("ZINCRBY", key, delta, m)))
    elif name == "zrem":
        call(lambda: z.remove(op[1]), lambda: run("ZREM", key, *op[1]))
    elif name == "zrank":
        _, m, rev = op

        def rank_from_redis() -> Any:
            rank = run("ZREVRANK" if rev else "ZRANK", key, m)
            return None if rank is None else (rank, float(run("ZSCORE", key, m)))

        call(lambda: z.rank(m, rev), rank_from_redis)
    elif name == "zmscore":
        call(
            lambda: z.mscore(op[1]),
            lambda: [optional_float(s) for s in run("ZMSCORE", key, *op[1])],
        )
    elif name == "zrange":
        _, start, stop, rev = op
        rev_word = ["REV"] if rev else []
        call(
            lambda: z.range_by_rank(start, stop, rev),
            lambda: pairs(run("ZRANGE", key, start, stop, *rev_word, "WITHSCORES")),
        )
    elif name in ("byscore", "bylex"):
        _, low, high, rev, offset, count = op
        ends = (high, low) if rev else (low, high)  # Redis takes max first with REV
        words = ["BYSCORE" if name == "byscore" else "BYLEX", *(["REV"] if rev else [])]
        limit = ["LIMIT", offset, count]
        if name == "byscore":
            call(
                lambda: z.range_by_score(low, high, rev, offset, count),
                lambda: pairs(run("ZRANGE", key, *ends, *words, *limit, "WITHSCORES")),
            )
            call(lambda: z.count_by_score(low, high), lambda: run("ZCOUNT", key, low, high))
        else:
            call(
                lambda: z.range_by_lex(low, high, rev, offset, count),
                lambda: run("ZRANGE", key, *ends, *words, *limit),
            )
            call(lambda: z.count_by_lex(low, high), lambda: run("ZLEXCOUNT", key, low, high))
    elif name == "zpop":
        _, count, top = op
        call(
            lambda: z.pop(count, top),
            lambda: pairs(run("ZPOPMAX" if top else "ZPOPMIN", key, count)),
        )
    else:
        command, method = {
            "remrank": ("ZREMRANGEBYRANK", z.remove_range_by_rank),
            "remscore": ("ZREMRANGEBYSCORE", z.remove_range_by_score),
            "remlex": ("ZREMRANGEBYLEX", z.remove_range_by_lex),
        }[name]
        call(lambda: method(op[1], op[2]), lambda: run(command, key, op[1], op[2]))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    initial=st.lists(st.tuples(score, member), min_size=1, max_size=12),
    ops=st.lists(operation, max_size=25),
)
def test_replies_equal_redis(
    client: redis.Redis, initial: list[tuple[bytes, bytes]], ops: list[tuple[Any, ...]]
) -> None:
    key = "z"
    client.delete(key)
    z = ZSet()
    apply(z, client, key, ("zadd", initial, []))
    for op in ops:
        apply(z, client, key, op)
        assert z.items() == pairs(client.execute_command("ZRANGE", key, 0, -1, "WITHSCORES"))
    assert client.execute_command("OBJECT", "ENCODING", key) in (None, b"listpack")
