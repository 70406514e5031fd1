"""Random command scripts against sdi's leaderboard server and a real redis-server, reply by reply.

Sets stay small (at most a few dozen members of a few bytes), so redis-server
keeps them in its listpack encoding, whose replies the core matches
exactly (BYLEX on unequal scores and the sign of a zero included). Replies
that are random (ZRANDMEMBER) or time-dependent (TTL, PTTL) or whose cursor
is the server's own (SCAN) are compared by what they must satisfy.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.leaderboard import LeaderboardServer
from sdi.resp import ReplyError
from sdi.testing.servers import RedisServer

from .conftest import RawClient

pytestmark = pytest.mark.needs_server

KEYS = ["a", "b", "c"]
MEMBERS = ["m0", "m1", "m2", "m3", "m4", "m5", "x", "", "aa", "b"]
SCORES = [
    "0", "1", "-1", "2", "2.5", "-2.5", "3", "10", "1e3", "0.1", "1.5e300", "inf", "-inf",
    "+inf", "-0", "0x10", "1e-310", "007", " 1", "nan", "abc", "1e400", "", "5.",
]  # fmt: skip
BOUNDS = [
    "-inf", "+inf", "inf", "0", "1", "(1", "2.5", "(2.5", "-1", "(-1", "3", "(3", "10", "(inf",
    "(-inf", "x", "(", "1e3", "nan",
]  # fmt: skip
LEX = ["-", "+", "[m1", "(m1", "[m3", "(m4", "[", "(", "[x", "(aa", "m1", "[b", "(zz"]
INTS = ["0", "1", "2", "-1", "-2", "3", "5", "-5", "10", "-100", "x", "1.5"]
PATTERNS = ["*", "m*", "?", "[ab]*", "*1", "[^m]*", "\\*", "a", "[a-c]", "m[2-4]"]

keys = st.sampled_from(KEYS)
members = st.sampled_from(MEMBERS)
scores = st.sampled_from(SCORES[:18])  # mostly valid ones
any_scores = st.sampled_from(SCORES)
bounds = st.sampled_from(BOUNDS)
lex = st.sampled_from(LEX)
ints = st.sampled_from(INTS)


@st.composite
def zadd(draw: st.DrawFn) -> list[str]:
    command = ["ZADD", draw(keys)]
    command += draw(
        st.lists(st.sampled_from(["NX", "XX", "GT", "LT", "CH", "INCR"]), max_size=3, unique=True)
    )
    pairs = draw(st.integers(1, 4))
    for _ in range(pairs):
        command += [draw(any_scores if draw(st.integers(0, 9)) == 0 else scores), draw(members)]
    if draw(st.integers(0, 19)) == 0:
        command.pop()
    return command


@st.composite
def ranges(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(
            [
                "ZRANGE",
                "ZRANGE",
                "ZREVRANGE",
                "ZRANGEBYSCORE",
                "ZREVRANGEBYSCORE",
                "ZRANGEBYLEX",
                "ZREVRANGEBYLEX",
            ]
        )
    )
    key = draw(keys)
    options: list[str] = []
    if kind == "ZRANGE":
        by = draw(st.sampled_from([None, "BYSCORE", "BYLEX"]))
        source = {None: ints, "BYSCORE": bounds, "BYLEX": lex}[by]
        command = [kind, key, draw(source), draw(source)]
        if by:
            options.append(by)
        if draw(st.booleans()):
            options.append("REV")
    elif kind == "ZREVRANGE":
        command = [kind, key, draw(ints), draw(ints)]
    elif "SCORE" in kind:
        command = [kind, key, draw(bounds), draw(bounds)]
    else:
        command = [kind, key, draw(lex), draw(lex)]
    if draw(st.booleans()):
        options.append("WITHSCORES")
    if draw(st.integers(0, 2)) == 0:
        options += ["LIMIT", draw(ints), draw(ints)]
    if draw(st.integers(0, 29)) == 0:
        options.append(draw(st.sampled_from(["REV", "BYSCORE", "FOO", "LIMIT"])))
    return command + draw(st.permutations(options))


@st.composite
def other(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(
            [
                "ZINCRBY",
                "ZREM",
                "ZSCORE",
                "ZMSCORE",
                "ZCARD",
                "ZCOUNT",
                "ZLEXCOUNT",
                "ZRANK",
                "ZREVRANK",
                "ZREMRANGEBYRANK",
                "ZREMRANGEBYSCORE",
                "ZREMRANGEBYLEX",
                "ZPOPMIN",
                "ZPOPMAX",
                "ZRANDMEMBER",
                "STORE",
                "ZSCAN",
                "KEYS",
            ]
        )
    )
    key = draw(keys)
    if kind == "ZINCRBY":
        return [kind, key, draw(any_scores), draw(members)]
    if kind in ("ZREM", "ZMSCORE"):
        return [kind, key, *draw(st.lists(members, min_size=1, max_size=4))]
    if kind in ("ZSCORE", "ZRANK", "ZREVRANK"):
        return [kind, key, draw(members)]
    if kind == "ZCARD":
        return [kind, key]
    if kind in ("ZCOUNT", "ZREMRANGEBYSCORE"):
        return [kind, key, draw(bounds), draw(bounds)]
    if kind in ("ZLEXCOUNT", "ZREMRANGEBYLEX"):
        return [kind, key, draw(lex), draw(lex)]
    if kind == "ZREMRANGEBYRANK":
        return [kind, key, draw(ints), draw(ints)]
    if kind in ("ZPOPMIN", "ZPOPMAX"):
        return [kind, key] + ([draw(ints)] if draw(st.booleans()) else [])
    if kind == "ZRANDMEMBER":
        command = [kind, key]
        if draw(st.booleans()):
            command.append(draw(st.sampled_from(["0", "1", "3", "-3", "20", "-20", "x"])))
            if draw(st.booleans()):
                command.append(draw(st.sampled_from(["WITHSCORES", "WITHSCORES", "FOO"])))
        return command
    if kind == "STORE":
        name = draw(st.sampled_from(["ZUNIONSTORE", "ZINTERSTORE"]))
        sources = draw(st.lists(keys, min_size=1, max_size=3))
        command = [name, draw(st.sampled_from([*KEYS, "d"])), str(len(sources)), *sources]
        if draw(st.booleans()):
            weights = ["1", "2", "-1.5", "0", "inf", "-inf", "0.5", "x"]
            command += ["WEIGHTS", *(draw(st.sampled_from(weights)) for _ in sources)]
        if draw(st.booleans()):
            command += ["AGGREGATE", draw(st.sampled_from(["SUM", "MIN", "MAX", "max", "avg"]))]
        if draw(st.integers(0, 19)) == 0:
            command[2] = draw(st.sampled_from(["0", "5", "-1", "x"]))
        return command
    if kind == "ZSCAN":
        command = [kind, key, draw(st.sampled_from(["0", "0", "0", "x", "-1"]))]
        if draw(st.booleans()):
            command += ["MATCH", draw(st.sampled_from(PATTERNS))]
        if draw(st.booleans()):
            command += ["COUNT", draw(st.sampled_from(["1", "10", "0", "x"]))]
        return command
    return ["KEYS", draw(st.sampled_from(PATTERNS))]


@st.composite
def keyspace(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(
            [
                "DEL",
                "UNLINK",
                "EXISTS",
                "TYPE",
                "RENAME",
                "RENAMENX",
                "EXPIRE",
                "PEXPIREAT",
                "TTL",
                "PTTL",
                "EXPIRETIME",
                "PERSIST",
                "DBSIZE",
                "SCAN",
                "FLUSHDB",
            ]
        )
    )
    if kind in ("DEL", "UNLINK", "EXISTS"):
        return [kind, *draw(st.lists(st.sampled_from([*KEYS, "d"]), min_size=1, max_size=3))]
    if kind in ("TYPE", "TTL", "PTTL", "EXPIRETIME", "PERSIST"):
        return [kind, draw(st.sampled_from([*KEYS, "d"]))]
    if kind in ("RENAME", "RENAMENX"):
        return [kind, draw(keys), draw(st.sampled_from([*KEYS, "d"]))]
    if kind == "EXPIRE":
        seconds = draw(st.sampled_from(["1000", "2000", "-1", "0", "x", "500"]))
        flags = draw(st.lists(st.sampled_from(["NX", "XX", "GT", "LT"]), max_size=2, unique=True))
        return [kind, draw(keys), seconds, *flags]
    if kind == "PEXPIREAT":
        when = draw(st.sampled_from(["1", "4000000000000", "5000000000000", "1700000000000"]))
        return [kind, draw(keys), when]
    if kind == "DBSIZE":
        return [kind]
    if kind == "SCAN":
        return ["SCAN-ALL", draw(st.sampled_from(PATTERNS)), draw(st.sampled_from(["zset", "x"]))]
    if draw(st.integers(0, 4)) == 0:
        return ["FLUSHDB"]
    return ["EXISTS", "a"]


commands = st.one_of(zadd(), zadd(), zadd(), ranges(), ranges(), other(), other(), keyspace())


def _scan_all(client: RawClient, pattern: str, type_name: str) -> Any:
    cursor = b"0"
    found: list[bytes] = []
    for _ in range(1000):
        reply = client.call("SCAN", cursor, "MATCH", pattern, "COUNT", "2", "TYPE", type_name)
        if isinstance(reply, ReplyError):
            return reply
        cursor, keys = reply
        found += keys
        if cursor == b"0":
            return sorted(found)
    raise AssertionError("SCAN did not end")


def _plain(value: Any) -> Any:
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _members_of(reply: list[Any], with_scores: bool, protocol: int) -> list[tuple[Any, Any]]:
    if not with_scores:
        return [(member, None) for member in reply]
    if protocol == 3:
        return [(pair[0], pair[1]) for pair in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _check_random(command: list[str], expected: Any, got: Any, truth: Any, protocol: int) -> None:
    """ZRANDMEMBER: the same shape and rules, members and scores from the set."""
    if isinstance(expected, ReplyError) or expected is None or len(command) == 2:
        if expected is None or isinstance(expected, ReplyError):
            assert _plain(got) == _plain(expected), command
        else:
            assert isinstance(got, bytes), (command, got)
        return
    assert isinstance(got, list), (command, got)
    count = int(command[2])
    with_scores = len(command) == 4
    pairs = _members_of(got, with_scores, protocol)
    assert len(pairs) == len(_members_of(expected, with_scores, protocol)), (command, got)
    table = dict(_members_of(truth, True, protocol))
    for member, score in pairs:
        assert member in table, (command, got)
        if with_scores:
            assert score == table[member], (command, got)
    if count > 0:
        assert len({member for member, _ in pairs}) == len(pairs), (command, got)


@pytest.fixture
def clients(
    memory_server: tuple[int, LeaderboardServer], reference_redis: RedisServer
) -> Iterator[dict[int, tuple[RawClient, RawClient]]]:
    made = {
        protocol: (RawClient(reference_redis.port, protocol), RawClient(memory_server[0], protocol))
        for protocol in (2, 3)
    }
    yield made
    for pair in made.values():
        for client in pair:
            client.close()


@settings(
    max_examples=int(os.environ.get("SDI_LEADERBOARD_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(protocol=st.sampled_from([2, 3]), script=st.lists(commands, min_size=1, max_size=40))
def test_differential_against_redis(
    clients: dict[int, tuple[RawClient, RawClient]], protocol: int, script: list[list[str]]
) -> None:
    redis_client, sdi_client = clients[protocol]
    for client in (redis_client, sdi_client):
        assert client.call("FLUSHALL") == b"OK"
    for command in script:
        if command[0] == "SCAN-ALL":
            assert _scan_all(sdi_client, *command[1:]) == _scan_all(redis_client, *command[1:])
            continue
        expected = redis_client.call(*command)
        got = sdi_client.call(*command)
        name = command[0]
        if name == "ZRANDMEMBER":
            truth = redis_client.call("ZRANGE", command[1], "0", "-1", "WITHSCORES")
            _check_random(command, expected, got, truth, protocol)
        elif name in ("TTL", "PTTL") and isinstance(expected, int) and expected >= 0:
            assert isinstance(got, int), (command, got)
            assert abs(got - expected) <= (1 if name == "TTL" else 250), (command, expected, got)
        elif name == "KEYS" and isinstance(expected, list):
            assert sorted(got) == sorted(expected), command
        else:
            assert _plain(got) == _plain(expected), (command, expected, got)
    # The whole keyspace agrees at the end.
    for key in [*KEYS, "d"]:
        whole = ("ZRANGE", key, "0", "-1", "WITHSCORES")
        assert _plain(sdi_client.call(*whole)) == _plain(redis_client.call(*whole)), key


def _big_script(rng: random.Random) -> list[list[str]]:
    """Commands over a set of several hundred members (Redis's skiplist encoding).

    Scores are non-zero integers and halves (no -0), and BYLEX only runs
    while every score is equal: the two cases where the encodings differ.
    """
    equal = rng.random() < 0.3
    size = rng.randrange(150, 600)
    script: list[list[str]] = []
    for start in range(0, size, 100):
        command = ["ZADD", "big"]
        for i in range(start, min(size, start + 100)):
            score = "7" if equal else str(rng.choice([1, -1]) * rng.randrange(1, 400) / 2)
            command += [score, f"member:{i:04d}"]
        script.append(command)

    def bound() -> str:
        return rng.choice(["", "("]) + str(rng.randrange(-200, 200) / 2)

    for _ in range(60):
        kind = rng.randrange(12)
        if kind == 0:
            script.append(
                [
                    "ZRANGE",
                    "big",
                    str(rng.randrange(-300, 300)),
                    str(rng.randrange(-300, 300)),
                    "WITHSCORES",
                ]
            )
        elif kind == 1:
            script.append(
                ["ZREVRANGE", "big", str(rng.randrange(0, 50)), str(rng.randrange(0, 300))]
            )
        elif kind == 2:
            script.append(
                [
                    "ZRANGEBYSCORE",
                    "big",
                    bound(),
                    bound(),
                    "LIMIT",
                    str(rng.randrange(0, 20)),
                    str(rng.randrange(-1, 30)),
                ]
            )
        elif kind == 3:
            script.append(["ZREVRANGEBYSCORE", "big", bound(), bound(), "WITHSCORES"])
        elif kind == 4:
            script.append(["ZCOUNT", "big", bound(), bound()])
        elif kind == 5:
            member = f"member:{rng.randrange(size + 20):04d}"
            script.append([rng.choice(["ZRANK", "ZREVRANK", "ZSCORE"]), "big", member])
        elif kind == 6:
            member = f"member:{rng.randrange(size + 20):04d}"
            delta = "0" if equal else str(rng.randrange(1, 50))
            script.append(["ZINCRBY", "big", delta, member])
        elif kind == 7:
            script.append(["ZREM", "big", *(f"member:{rng.randrange(size):04d}" for _ in range(3))])
        elif kind == 8 and equal:
            low = f"member:{rng.randrange(size):04d}"
            high = f"member:{rng.randrange(size):04d}"
            script.append([rng.choice(["ZRANGEBYLEX", "ZLEXCOUNT"]), "big", "[" + low, "(" + high])
        elif kind == 9:
            script.append([rng.choice(["ZPOPMIN", "ZPOPMAX"]), "big", str(rng.randrange(1, 5))])
        elif kind == 10:
            script.append(
                ["ZREMRANGEBYRANK", "big", str(rng.randrange(0, 5)), str(rng.randrange(5, 9))]
            )
        else:
            script.append(["ZUNIONSTORE", "u", "2", "big", "big", "WEIGHTS", "1", "0.5"])
            script.append(["ZRANGE", "u", "0", "20", "WITHSCORES"])
    return script


@pytest.mark.parametrize("seed", range(30))
def test_differential_on_big_sets(
    clients: dict[int, tuple[RawClient, RawClient]], seed: int
) -> None:
    rng = random.Random(seed)
    protocol = 2 + seed % 2
    redis_client, sdi_client = clients[protocol]
    for client in (redis_client, sdi_client):
        client.call("FLUSHALL")
    for command in _big_script(rng):
        expected = redis_client.call(*command)
        got = sdi_client.call(*command)
        assert _plain(got) == _plain(expected), (command, expected, got)
    assert redis_client.call("OBJECT", "ENCODING", "big") in (b"skiplist", None)
    whole = ("ZRANGE", "big", "0", "-1", "WITHSCORES")
    assert _plain(sdi_client.call(*whole)) == _plain(redis_client.call(*whole))
    cursor, seen = b"0", []
    while True:  # ZSCAN of a big set: every member once, with its score
        cursor, batch = sdi_client.call("ZSCAN", "big", cursor, "COUNT", "13")
        seen += list(zip(batch[::2], batch[1::2], strict=True))
        if cursor == b"0":
            break
    expected_pairs = redis_client.call("ZRANGE", "big", "0", "-1", "WITHSCORES")
    if protocol == 3:
        expected_pairs = [(member, _plain(score)) for member, score in expected_pairs]
        seen = [(member, float(score)) for member, score in seen]
    else:
        expected_pairs = list(zip(expected_pairs[::2], expected_pairs[1::2], strict=True))
    assert sorted(seen) == sorted(expected_pairs)


GLOB_KEYS = [
    "",
    "a",
    "b",
    "ab",
    "ba",
    "aab",
    "a*",
    "a?",
    "[a]",
    "a\\b",
    "^a",
    "-",
    "]",
    "a-b",
    "\\",
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=st.text(alphabet="ab*?[]^-\\", max_size=8))
def test_keys_glob_against_redis(
    clients: dict[int, tuple[RawClient, RawClient]], pattern: str
) -> None:
    redis_client, sdi_client = clients[2]
    if sdi_client.call("DBSIZE") != len(GLOB_KEYS) - 1:
        for client in (redis_client, sdi_client):
            client.call("FLUSHALL")
            for key in GLOB_KEYS[1:]:
                client.call("ZADD", key, "1", "m")
    expected = sorted(redis_client.call("KEYS", pattern))
    assert sorted(sdi_client.call("KEYS", pattern)) == expected, pattern
    assert sorted(_scan_all(sdi_client, pattern, "zset")) == expected, pattern
