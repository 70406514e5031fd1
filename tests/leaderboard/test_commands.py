"""Every command through redis-py (RESP2 and RESP3), the error paths, expiry and the keyspace."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sdi.leaderboard import Keyspace, LeaderboardServer, format_score, glob_match, zset_commands
from sdi.resp import ReplyError, encode_command
from sdi.runtime.respserver import Client, RespServer, serve_in_thread
from sdi.zset import MEMBER_MAX

from .conftest import RawClient, running


def pairs(reply: Any) -> list[tuple[Any, float]]:
    """A with-scores reply as (member, score) tuples, whichever shape redis-py gave."""
    items = list(reply)
    if items and not isinstance(items[0], (list, tuple)):
        items = list(zip(items[::2], items[1::2], strict=True))
    return [(member, float(score)) for member, score in items]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(
    request: pytest.FixtureRequest, memory_server: tuple[int, LeaderboardServer]
) -> Iterator[redis.Redis]:
    connection = redis.Redis(port=memory_server[0], protocol=request.param)
    connection.flushall()
    yield connection
    connection.close()


def test_zadd_and_scores(client: redis.Redis) -> None:
    assert client.zadd("board", {"alice": 10, "bob": 30, "carol": 20.5}) == 3
    assert client.zadd("board", {"alice": 10}) == 0
    assert client.zadd("board", {"alice": 11, "dave": 1}, ch=True) == 2
    assert client.zadd("board", {"alice": 5, "erin": 1}, xx=True) == 0
    assert client.zscore("board", "erin") is None
    assert client.zadd("board", {"alice": 4}, xx=True, gt=True, ch=True) == 0
    assert client.zadd("board", {"alice": 40}, xx=True, gt=True, ch=True) == 1
    assert client.zadd("board", {"alice": 39}, lt=True, ch=True) == 1
    assert client.zadd("board", {"zed": 1}, nx=True) == 1
    assert client.zadd("board", {"zed": 2}, nx=True) == 0
    assert client.zadd("board", {"alice": 1}, incr=True) == 40.0
    assert client.zadd("board", {"nobody": 1}, incr=True, xx=True) is None
    assert client.zincrby("board", 2.5, "bob") == 32.5
    assert client.zincrby("board", -1, "new") == -1.0
    assert client.zscore("board", "alice") == 40.0
    assert client.zscore("board", "missing") is None
    assert client.zmscore("board", ["alice", "x", "bob"]) == [40.0, None, 32.5]
    assert client.zmscore("nokey", ["a", "b"]) == [None, None]
    assert client.zcard("board") == 6
    assert client.zcard("nokey") == 0
    assert client.zadd("inf", {"top": float("inf"), "bottom": float("-inf")}) == 2
    assert client.zscore("inf", "top") == float("inf")
    assert pairs(client.zrange("inf", 0, -1, withscores=True)) == [
        (b"bottom", float("-inf")),
        (b"top", float("inf")),
    ]


def test_ranks_and_ranges(client: redis.Redis) -> None:
    client.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    assert client.zrank("z", "c") == 2
    assert client.zrevrank("z", "c") == 2
    assert client.zrevrank("z", "a") == 4
    assert client.zrank("z", "x") is None
    assert client.zrank("nokey", "x") is None
    assert client.execute_command("ZRANK", "z", "d", "WITHSCORE") in ([3, b"4"], [3, 4.0])
    assert client.execute_command("ZREVRANK", "z", "d", "withscore") in ([1, b"4"], [1, 4.0])
    assert client.execute_command("ZRANK", "z", "x", "WITHSCORE") is None
    assert client.zrange("z", 0, 1) == [b"a", b"b"]
    assert pairs(client.zrange("z", -2, -1, withscores=True)) == [(b"d", 4.0), (b"e", 5.0)]
    assert client.zrange("z", 0, 0, desc=True) == [b"e"]
    assert pairs(client.zrevrange("z", 0, 1, withscores=True)) == [(b"e", 5.0), (b"d", 4.0)]
    assert client.zrange("z", "(1", 3, byscore=True) == [b"b", b"c"]
    assert client.zrange("z", 4, "(1", byscore=True, desc=True, offset=1, num=2) == [b"c", b"b"]
    assert pairs(client.zrangebyscore("z", "-inf", "+inf", start=1, num=2, withscores=True)) == [
        (b"b", 2.0),
        (b"c", 3.0),
    ]
    assert client.zrevrangebyscore("z", 5, "(3") == [b"e", b"d"]
    assert client.zcount("z", "(1", "+inf") == 4
    assert client.zcount("nokey", 0, 1) == 0
    client.zadd("lex", {name: 0 for name in ["apple", "banana", "cherry", "date"]})
    assert client.zrangebylex("lex", "[b", "(d") == [b"banana", b"cherry"]
    assert client.zrevrangebylex("lex", "+", "[c", start=0, num=1) == [b"date"]
    assert client.zrange("lex", "[a", "[c", bylex=True) == [b"apple", b"banana"]
    assert client.zlexcount("lex", "-", "+") == 4
    assert client.zrange("nokey", 0, -1) == []


def test_removal_and_pops(client: redis.Redis) -> None:
    client.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6})
    assert client.zrem("z", "a", "nobody") == 1
    assert client.zremrangebyrank("z", 0, 0) == 1
    assert client.zremrangebyscore("z", "(5", "+inf") == 1
    assert client.zrange("z", 0, -1) == [b"c", b"d", b"e"]
    assert pairs(client.zpopmin("z")) == [(b"c", 3.0)]
    assert pairs(client.zpopmax("z", 5)) == [(b"e", 5.0), (b"d", 4.0)]
    assert client.exists("z") == 0  # an emptied set is deleted
    assert client.zpopmin("z") == []
    client.zadd("lex", {"a": 0, "b": 0, "c": 0})
    assert client.zremrangebylex("lex", "[a", "(c") == 2
    assert client.zrem("lex", "c") == 1
    assert client.type("lex") == b"none"
    assert client.zrem("nokey", "a") == 0


def test_random_members(client: redis.Redis) -> None:
    members = {f"m{i}": i for i in range(10)}
    client.zadd("z", members)
    assert client.zrandmember("z") in {name.encode() for name in members}
    distinct = client.zrandmember("z", 5)
    assert len(distinct) == len(set(distinct)) == 5
    assert sorted(client.zrandmember("z", 50)) == sorted(name.encode() for name in members)
    repeated = client.zrandmember("z", -30)
    assert len(repeated) == 30
    assert set(repeated) <= {name.encode() for name in members}
    with_scores = pairs(client.zrandmember("z", 3, withscores=True))
    assert len(with_scores) == 3
    for member, score in with_scores:
        assert members[member.decode()] == score
    assert client.zrandmember("nokey") is None
    assert client.zrandmember("nokey", 3) == []


def test_union_and_intersection(client: redis.Redis) -> None:
    client.zadd("a", {"x": 1, "y": 2, "z": 3})
    client.zadd("b", {"y": 10, "z": 20, "w": 30})
    assert client.zunionstore("u", ["a", "b"]) == 4
    assert pairs(client.zrange("u", 0, -1, withscores=True)) == [
        (b"x", 1.0),
        (b"y", 12.0),
        (b"z", 23.0),
        (b"w", 30.0),
    ]
    assert client.zinterstore("i", {"a": 2, "b": 1}, aggregate="MAX") == 2
    assert pairs(client.zrange("i", 0, -1, withscores=True)) == [(b"y", 10.0), (b"z", 20.0)]
    assert client.zinterstore("i", ["a", "b"], aggregate="MIN") == 2
    assert pairs(client.zrange("i", 0, -1, withscores=True)) == [(b"y", 2.0), (b"z", 3.0)]
    assert client.zinterstore("i", ["a", "nokey"]) == 0
    assert client.exists("i") == 0
    client.zadd("inf", {"x": float("inf")})
    client.zadd("ninf", {"x": float("-inf")})
    assert client.zunionstore("nan", ["inf", "ninf"]) == 1
    assert client.zscore("nan", "x") == 0.0  # inf + -inf is NaN, which Redis stores as 0
    assert client.zunionstore("zero", {"inf": 0}) == 1
    assert client.zscore("zero", "x") == 0.0


def test_union_inter_diff_replies_and_stores(client: redis.Redis) -> None:
    """ZUNION, ZINTER, ZDIFF, ZINTERCARD, ZDIFFSTORE (Redis 6.2, 7.0), used by redis-py's suite."""
    client.zadd("a", {"a1": 1, "a2": 2, "a3": 1})
    client.zadd("b", {"a1": 2, "a2": 2, "a3": 2})
    client.zadd("c", {"a1": 6, "a3": 5, "a4": 4})
    assert client.zunion(["a", "b", "c"]) == [b"a2", b"a4", b"a3", b"a1"]
    assert pairs(client.zunion({"a": 1, "b": 2, "c": 3}, withscores=True)) == [
        (b"a2", 6.0),
        (b"a4", 12.0),
        (b"a3", 20.0),
        (b"a1", 23.0),
    ]
    assert pairs(client.zinter(["a", "b", "c"], aggregate="MIN", withscores=True)) == [
        (b"a1", 1.0),
        (b"a3", 1.0),
    ]
    assert client.zinter(["a", "nokey"]) == []
    assert client.zintercard(3, ["a", "b", "c"]) == 2
    assert client.zintercard(3, ["a", "b", "c"], limit=1) == 1
    assert client.zintercard(2, ["a", "nokey"]) == 0
    assert client.zdiff(["a", "c"]) == [b"a2"]
    assert pairs(client.zdiff(["c", "a", "nokey"], withscores=True)) == [(b"a4", 4.0)]
    assert client.zdiff(["nokey", "a"]) == []
    assert client.zdiffstore("out", ["a", "c"]) == 1
    assert pairs(client.zrange("out", 0, -1, withscores=True)) == [(b"a2", 2.0)]
    assert client.zdiffstore("out", ["a", "b"]) == 0
    assert client.exists("out") == 0  # an empty result deletes the destination


def test_zrangestore(client: redis.Redis) -> None:
    client.zadd("a", {"a1": 1, "a2": 2, "a3": 3})
    assert client.zrangestore("b", "a", 0, 1) == 2
    assert pairs(client.zrange("b", 0, -1, withscores=True)) == [(b"a1", 1.0), (b"a2", 2.0)]
    assert client.zrangestore("b", "a", 1, 2, desc=True) == 2
    assert client.zrange("b", 0, -1) == [b"a1", b"a2"]
    assert client.zrangestore("b", "a", 2, 1, byscore=True, offset=0, num=1, desc=True) == 1
    assert client.zrange("b", 0, -1) == [b"a2"]
    client.zadd("lex", {"x": 5, "y": 5, "z": 5})
    assert client.zrangestore("b", "lex", "[y", "+", bylex=True) == 2
    assert pairs(client.zrange("b", 0, -1, withscores=True)) == [(b"y", 5.0), (b"z", 5.0)]
    assert client.zrangestore("a", "a", 0, 0) == 1  # the source may be the destination
    assert client.zrange("a", 0, -1) == [b"a1"]
    assert client.zrangestore("b", "nokey", 0, -1) == 0
    assert client.exists("b") == 0
    with pytest.raises(redis.ResponseError, match="syntax error"):
        client.execute_command("ZRANGESTORE", "b", "a", "0", "-1", "WITHSCORES")


def test_zmpop(client: redis.Redis) -> None:
    client.zadd("a", {"a1": 1, "a2": 2, "a3": 3})
    assert client.execute_command("ZMPOP", "2", "nokey", "a", "MIN", "COUNT", "2") in (
        [b"a", [[b"a1", b"1"], [b"a2", b"2"]]],
        [b"a", [[b"a1", 1.0], [b"a2", 2.0]]],
    )
    assert client.execute_command("ZMPOP", "1", "a", "max", "count", "5") in (
        [b"a", [[b"a3", b"3"]]],
        [b"a", [[b"a3", 3.0]]],
    )
    assert client.exists("a") == 0  # popped empty: gone
    assert client.execute_command("ZMPOP", "2", "a", "nokey", "MIN") is None


def test_scan_family(client: redis.Redis) -> None:
    members = {f"m{i}": i % 7 for i in range(300)}
    client.zadd("big", members)
    client.zadd("small", {"a": 1, "b": 2})
    cursor, found = client.zscan("small", 0, count=1)
    assert (cursor, found) == (0, [(b"a", 1.0), (b"b", 2.0)])
    seen = dict(client.zscan_iter("big", count=17))
    assert seen == {name.encode(): float(score) for name, score in members.items()}
    assert dict(client.zscan_iter("big", match="m1?")) == {
        f"m1{i}".encode(): float((10 + i) % 7) for i in range(10)
    }
    assert client.zscan("nokey", 0) == (0, [])
    for i in range(50):
        client.zadd(f"key:{i}", {"m": i})
    assert len(list(client.scan_iter(count=7))) == 52
    assert sorted(client.scan_iter(match="key:1*")) == sorted(
        f"key:{i}".encode() for i in range(50) if str(i).startswith("1")
    )
    assert list(client.scan_iter(_type="string")) == []
    assert len(list(client.scan_iter(_type="zset"))) == 52
    assert sorted(client.keys("key:4?")) == sorted(f"key:4{i}".encode() for i in range(10))
    assert client.dbsize() == 52


def test_scan_returns_every_key_present_throughout(client: redis.Redis) -> None:
    for i in range(200):
        client.zadd(f"stay:{i}", {"m": 1})
    rng = random.Random(5)
    cursor = 0
    seen: list[bytes] = []
    churn = 0
    while True:
        cursor, keys = client.scan(cursor, count=9)
        seen += keys
        for _ in range(5):  # keys come and go between the calls
            client.zadd(f"churn:{churn}", {"m": 1})
            client.delete(f"churn:{rng.randrange(churn + 1)}")
            churn += 1
        if cursor == 0:
            break
    stays = [key for key in seen if key.startswith(b"stay:")]
    assert sorted(stays) == sorted(f"stay:{i}".encode() for i in range(200))


def test_zscan_of_a_big_set_under_changes(client: redis.Redis) -> None:
    client.zadd("big", {f"m{i}": i // 3 for i in range(600)})
    cursor = 0
    seen: list[bytes] = []
    extra = 0
    while True:
        cursor, pairs = client.zscan("big", cursor, count=25)
        seen += [member for member, _ in pairs]
        client.zadd("big", {f"new{extra}": extra % 200})
        client.zrem("big", f"new{extra - 1}")
        extra += 1
        if cursor == 0:
            break
    original = [member for member in seen if member.startswith(b"m")]
    assert sorted(original) == sorted(f"m{i}".encode() for i in range(600))  # each exactly once


def test_keys_and_expiry(client: redis.Redis) -> None:
    client.zadd("a", {"m": 1})
    client.zadd("b", {"m": 1})
    assert client.exists("a", "a", "b", "c") == 3
    assert client.type("a") == b"zset"
    assert client.ttl("a") == -1
    assert client.ttl("nokey") == -2
    assert client.expire("a", 100)
    assert 99 <= client.ttl("a") <= 100
    assert 99_000 <= client.pttl("a") <= 100_000
    assert client.expire("a", 50, gt=True) is False
    assert client.expire("a", 50, lt=True) is True
    assert client.expire("a", 10, nx=True) is False
    assert client.expire("b", 10, xx=True) is False
    deadline = int(time.time()) + 1000
    assert client.expireat("b", deadline)
    assert client.expiretime("b") == deadline
    assert client.pexpiretime("b") == deadline * 1000
    assert client.persist("b") is True
    assert client.persist("b") is False
    assert client.pexpire("a", 30)
    time.sleep(0.06)
    assert client.exists("a") == 0  # lazily expired on access
    client.zadd("gone", {"m": 1})
    client.pexpire("gone", 20)
    time.sleep(0.4)
    assert b"gone" not in client.keys("*")
    assert client.expire("b", -1) is True  # a past deadline deletes at once
    assert client.exists("b") == 0
    assert client.expire("nokey", 10) is False


def test_rename_and_flush(client: redis.Redis) -> None:
    client.zadd("a", {"m": 1})
    client.expire("a", 100)
    client.zadd("b", {"n": 2})
    assert client.rename("a", "c")
    assert client.exists("a") == 0
    assert 99 <= client.ttl("c") <= 100  # the deadline moves with the key
    assert client.renamenx("c", "b") is False
    assert client.renamenx("c", "d") is True
    assert client.rename("d", "b")
    assert client.zrange("b", 0, -1) == [b"m"]
    assert client.ttl("b") > 0
    with pytest.raises(redis.ResponseError, match="no such key"):
        client.rename("nokey", "x")
    assert client.delete("b", "nokey") == 1
    client.zadd("a", {"m": 1})
    assert client.unlink("a") == 1
    client.zadd("a", {"m": 1})
    assert client.flushdb()
    assert client.dbsize() == 0
    assert client.flushall(asynchronous=True)


def test_resp3_reply_shapes(memory_server: tuple[int, LeaderboardServer]) -> None:
    raw = RawClient(memory_server[0], protocol=3)
    raw.call("FLUSHALL")
    raw.call("ZADD", "z", "1", "a", "2.5", "b", "3", "c")
    assert raw.call("ZSCORE", "z", "b") == 2.5
    assert raw.call("ZRANGE", "z", "0", "1", "WITHSCORES") == [[b"a", 1.0], [b"b", 2.5]]
    assert raw.call("ZMSCORE", "z", "a", "x") == [1.0, None]
    assert raw.call("ZINCRBY", "z", "1", "a") == 2.0
    assert raw.call("ZPOPMIN", "z") == [b"a", 2.0]
    assert raw.call("ZPOPMAX", "z", "1") == [[b"c", 3.0]]
    assert raw.call("ZRANK", "z", "b", "WITHSCORE") == [0, 2.5]
    assert raw.call("ZSCAN", "z", "0") == [b"0", [b"b", b"2.5"]]
    raw.close()
    raw2 = RawClient(memory_server[0], protocol=2)
    assert raw2.call("ZSCORE", "z", "b") == b"2.5"
    assert raw2.call("ZADD", "z", "0.1", "d") == 1
    assert raw2.call("ZSCORE", "z", "d") == b"0.10000000000000001"
    raw2.close()


ERRORS = [
    (["ZADD", "z"], "ERR wrong number of arguments for 'zadd' command"),
    (["ZADD", "z", "1"], "ERR wrong number of arguments for 'zadd' command"),
    (["ZADD", "z", "1", "a", "2"], "ERR syntax error"),
    (["ZADD", "z", "nan", "a"], "ERR value is not a valid float"),
    (["ZADD", "z", "x", "a"], "ERR value is not a valid float"),
    (
        ["ZADD", "z", "NX", "XX", "1", "a"],
        "ERR XX and NX options at the same time are not compatible",
    ),
    (
        ["ZADD", "z", "GT", "LT", "1", "a"],
        "ERR GT, LT, and/or NX options at the same time are not compatible",
    ),
    (
        ["ZADD", "z", "INCR", "1", "a", "2", "b"],
        "ERR INCR option supports a single increment-element pair",
    ),
    (["ZADD", "inf", "INCR", "-inf", "top"], "ERR resulting score is not a number (NaN)"),
    (["ZINCRBY", "inf", "-inf", "top"], "ERR resulting score is not a number (NaN)"),
    (["ZINCRBY", "z", "x", "a"], "ERR value is not a valid float"),
    (["ZRANGE", "z", "x", "1"], "ERR value is not an integer or out of range"),
    (["ZRANGE", "z", "0", "1", "FOO"], "ERR syntax error"),
    (["ZRANGEBYSCORE", "z", "x", "1"], "ERR min or max is not a float"),
    (["ZRANGEBYLEX", "z", "a", "b"], "ERR min or max not valid string range item"),
    (["ZCOUNT", "z", "(x", "1"], "ERR min or max is not a float"),
    (["ZPOPMIN", "z", "-1"], "ERR value is out of range, must be positive"),
    (["ZRANDMEMBER", "z", "1", "FOO"], "ERR syntax error"),
    (
        ["ZUNIONSTORE", "d", "0", "z"],
        "ERR at least 1 input key is needed for 'zunionstore' command",
    ),
    (["ZINTERSTORE", "d", "1", "z", "WEIGHTS", "x"], "ERR weight value is not a float"),
    (["ZUNION", "0", "z"], "ERR at least 1 input key is needed for 'zunion' command"),
    (["ZINTER", "2", "z"], "ERR syntax error"),
    (["ZUNIONSTORE", "d", "1", "z", "WITHSCORES"], "ERR syntax error"),
    (["ZDIFF", "2", "z", "z", "WEIGHTS", "1", "2"], "ERR syntax error"),
    (["ZDIFFSTORE", "d", "1", "z", "AGGREGATE", "MIN"], "ERR syntax error"),
    (["ZINTERCARD", "1", "z", "WITHSCORES"], "ERR syntax error"),
    (["ZINTERCARD", "1", "z", "LIMIT", "-1"], "ERR LIMIT can't be negative"),
    (["ZINTERCARD", "1", "z", "LIMIT", "x"], "ERR LIMIT can't be negative"),
    (["ZMPOP", "0", "z", "MIN"], "ERR numkeys should be greater than 0"),
    (["ZMPOP", "x", "z", "MIN"], "ERR numkeys should be greater than 0"),
    (["ZMPOP", "2", "z", "MIN"], "ERR syntax error"),
    (["ZMPOP", "1", "z", "FIRST"], "ERR syntax error"),
    (["ZMPOP", "1", "z", "MIN", "COUNT", "0"], "ERR count should be greater than 0"),
    (["ZMPOP", "1", "z", "MIN", "COUNT", "1", "COUNT", "1"], "ERR syntax error"),
    (["ZMPOP", "1", "z"], "ERR wrong number of arguments for 'zmpop' command"),
    (
        ["ZRANGESTORE", "d", "z", "0", "1", "LIMIT", "0", "1"],
        "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
    ),
    (["ZSCAN", "z", "x"], "ERR invalid cursor"),
    (
        ["EXPIRE", "z", "10", "NX", "XX"],
        "ERR NX and XX, GT or LT options at the same time are not compatible",
    ),
    (["EXPIRE", "z", "10", "FOO"], "ERR Unsupported option FOO"),
    (["PEXPIRE", "z", "9223372036854775807"], "ERR invalid expire time in 'pexpire' command"),
    (["GET", "z"], "ERR unknown command 'GET', with args beginning with: 'z' "),
    (["HSET", "z", "f", "v"], "ERR unknown command 'HSET', with args beginning with: 'z' 'f' 'v' "),
    (["FLUSHALL", "x"], "ERR syntax error"),
]


def test_errors_keep_the_connection_usable(memory_server: tuple[int, LeaderboardServer]) -> None:
    raw = RawClient(memory_server[0])
    raw.call("FLUSHALL")
    raw.call("ZADD", "inf", "inf", "top")
    raw.call("ZADD", "z", "1", "a")
    for command, message in ERRORS:
        reply = raw.call(*command)
        assert isinstance(reply, ReplyError), command
        assert str(reply) == message, command
    assert raw.call("ZSCORE", "inf", "top") == b"inf"  # nothing changed by the failures
    assert raw.call("ZRANGE", "z", "0", "-1", "WITHSCORES") == [b"a", b"1"]
    assert raw.call("PING") == b"PONG"
    raw.close()


def test_huge_pipeline(memory_server: tuple[int, LeaderboardServer]) -> None:
    raw = RawClient(memory_server[0])
    raw.call("FLUSHALL")
    count = 50_000
    batch = b"".join(
        encode_command("ZADD", "big", str(i), f"m{i}")
        if i % 1000
        else encode_command("ZADD", "big", "nan", "x")
        for i in range(count)
    )
    raw.send(batch)
    replies = [raw.read() for _ in range(count)]
    assert sum(reply == 1 for reply in replies) == count - count // 1000
    assert all(isinstance(reply, ReplyError) for reply in replies[::1000])
    assert raw.call("ZCARD", "big") == count - count // 1000
    assert raw.call("ZREVRANGE", "big", "0", "0") == [b"m49999"]
    raw.close()


def test_redis_py_pipeline_and_asyncio(memory_server: tuple[int, LeaderboardServer]) -> None:
    client = redis.Redis(port=memory_server[0])
    client.flushall()
    with client.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.zincrby("counts", 1, f"p{i % 10}")
        pipe.zrevrange("counts", 0, 2, withscores=True)
        results = pipe.execute()
    assert pairs(results[-1]) == [(b"p9", 10.0), (b"p8", 10.0), (b"p7", 10.0)]
    client.close()

    async def concurrent() -> float | None:
        connection = redis.asyncio.Redis(port=memory_server[0])
        await asyncio.gather(*(connection.zincrby("hits", 1, "page") for _ in range(50)))
        score = await connection.zscore("hits", "page")
        await connection.aclose()
        return score

    assert asyncio.run(concurrent()) == 50.0


def test_info_and_command(
    client: redis.Redis, memory_server: tuple[int, LeaderboardServer]
) -> None:
    client.zadd("a", {"m": 1})
    client.expire("a", 100)
    info = client.info("keyspace")
    assert info["db0"]["keys"] == 1
    assert info["db0"]["expires"] == 1
    assert client.info("persistence")["aof_enabled"] == 0
    raw = RawClient(memory_server[0])
    assert raw.call("COMMAND", "COUNT") > 40
    raw.close()
    assert client.ping()


def test_lazy_expiry_and_sweep_with_a_clock() -> None:
    now = [1_000_000]
    deleted: list[bytes] = []
    keyspace = Keyspace(clock=lambda: now[0], on_expire=deleted.append)
    for i in range(3000):
        keyspace.create(b"k%d" % i).zadd([1.0], [b"m"])
        keyspace.expires[b"k%d" % i] = 1_000_100 if i % 2 else 2_000_000
    now[0] = 1_000_100
    assert keyspace.get(b"k1") is None
    assert keyspace.get(b"k0") is not None
    removed = sum(keyspace.sweep(budget=1000) for _ in range(3))
    assert removed == 1499
    assert len(keyspace) == 1500
    assert sorted(deleted) == sorted(b"k%d" % i for i in range(1, 3000, 2))
    keyspace.loading = True
    now[0] = 3_000_000
    assert keyspace.get(b"k0") is not None  # nothing expires while the log is replayed
    keyspace.loading = False
    assert keyspace.get(b"k0") is None


def test_expired_keys_are_logged_as_del() -> None:
    now = [5_000]
    logged: list[list[bytes]] = []
    keyspace = Keyspace(clock=lambda: now[0])
    keyspace.on_expire = lambda key: logged.append([b"DEL", key])
    table = zset_commands(keyspace, logged.append)
    server = RespServer(table)
    with serve_in_thread(server) as port:
        raw = RawClient(port)
        assert raw.call("ZADD", "k", "1", "m") == 1
        assert raw.call("EXPIRE", "k", "10") == 1
        assert raw.call("EXPIRE", "k", "10", "NX") == 0
        now[0] = 15_000
        assert raw.call("ZCARD", "k") == 0
        raw.close()
    assert logged == [
        [b"ZADD", b"k", b"1", b"m"],
        [b"PEXPIREAT", b"k", b"15000"],
        [b"DEL", b"k"],
    ]


def test_zmpop_and_stores_are_logged_to_replay() -> None:
    """ZMPOP is logged as the ZPOPMIN/ZPOPMAX it did; a store that changed nothing is not logged."""
    logged: list[list[bytes]] = []
    keyspace = Keyspace()
    table = zset_commands(keyspace, logged.append)
    with serve_in_thread(RespServer(table)) as port:
        raw = RawClient(port)
        raw.call("ZADD", "a", "1", "x", "2", "y", "3", "z")
        assert raw.call("ZMPOP", "2", "nokey", "a", "MAX", "COUNT", "2") == [
            b"a",
            [[b"z", b"3"], [b"y", b"2"]],
        ]
        assert raw.call("ZMPOP", "1", "nokey", "MIN") is None
        assert raw.call("ZDIFFSTORE", "d", "1", "nokey") == 0
        assert raw.call("ZRANGESTORE", "r", "a", "0", "-1") == 1
        assert raw.call("ZUNION", "1", "a") == [b"x"]
        raw.close()
    assert logged == [
        [b"ZADD", b"a", b"1", b"x", b"2", b"y", b"3", b"z"],
        [b"ZPOPMAX", b"a", b"2"],
        [b"ZRANGESTORE", b"r", b"a", b"0", b"-1"],
    ]
    replayed = Keyspace()
    replay = zset_commands(replayed)
    replayer = Client(RespServer(replay), 0, "aof", "aof")
    for argv in logged:
        replay[argv[0].lower().decode()].handler(replayer, argv)
    assert {key: zset.items() for key, zset in replayed.data.items()} == {
        key: zset.items() for key, zset in keyspace.data.items()
    }


#: Command lines run on sdi and on redis-server 7.0, whose replies must be the same.
NEW_COMMANDS_SCRIPT = [
    ["ZADD", "a", "1", "a1", "2", "a2", "1", "a3", "0.1", "f"],
    ["ZADD", "b", "2", "a1", "2", "a2", "2", "a3", "inf", "f"],
    ["ZADD", "c", "6", "a1", "5", "a3", "4", "a4", "-inf", "f"],
    ["ZUNION", "3", "a", "b", "c", "WITHSCORES"],
    ["ZUNION", "3", "a", "b", "c", "WEIGHTS", "1", "2", "3", "AGGREGATE", "MAX", "WITHSCORES"],
    ["ZUNION", "2", "a", "nokey", "WITHSCORES", "WITHSCORES"],
    ["ZINTER", "3", "a", "b", "c", "WITHSCORES"],
    ["ZINTER", "3", "a", "b", "c", "AGGREGATE", "min", "withscores"],
    ["ZINTER", "2", "a", "nokey"],
    ["ZDIFF", "2", "a", "b", "WITHSCORES"],
    ["ZDIFF", "3", "c", "a", "nokey", "WITHSCORES"],
    ["ZDIFF", "1", "nokey"],
    ["ZINTERCARD", "3", "a", "b", "c"],
    ["ZINTERCARD", "2", "a", "b", "LIMIT", "2"],
    ["ZINTERCARD", "2", "a", "b", "LIMIT", "0"],
    ["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"],
    ["ZINTERCARD", "0", "a"],
    ["ZDIFFSTORE", "d", "2", "c", "a"],
    ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
    ["ZDIFFSTORE", "d", "2", "a", "a"],
    ["EXISTS", "d"],
    ["ZRANGESTORE", "d", "a", "(0.1", "+inf", "BYSCORE", "REV", "LIMIT", "1", "2"],
    ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
    ["ZRANGESTORE", "d", "a", "-2", "-1"],
    ["ZRANGESTORE", "d", "a", "[a", "+", "BYLEX"],
    ["ZRANGESTORE", "d", "a", "0", "-1", "WITHSCORES"],
    ["ZRANGESTORE", "d", "nokey", "0", "-1"],
    ["EXISTS", "d"],
    ["ZMPOP", "3", "nokey", "a", "b", "MIN", "COUNT", "2"],
    ["ZMPOP", "1", "b", "MAX"],
    ["ZMPOP", "1", "a", "MAX", "COUNT", "100"],
    ["EXISTS", "a"],
    ["ZMPOP", "2", "a", "nokey", "MIN"],
    ["ZMPOP", "9223372036854775807", "a", "MIN"],
    ["ZMPOP", "1", "a", "MIN", "COUNT", "-1"],
]


def test_new_commands_match_redis(reference_redis: object) -> None:
    from sdi.testing.servers import RedisServer

    assert isinstance(reference_redis, RedisServer)
    server = LeaderboardServer(None)
    with running(server) as port:
        for protocol in (2, 3):
            ours, theirs = RawClient(port, protocol), RawClient(reference_redis.port, protocol)
            for connection in (ours, theirs):
                connection.call("FLUSHALL")
            for command in NEW_COMMANDS_SCRIPT:
                expected = theirs.call(*command)
                got = ours.call(*command)
                if isinstance(expected, ReplyError):
                    assert isinstance(got, ReplyError), (protocol, command, got)
                    assert str(got) == str(expected), (protocol, command)
                else:
                    assert got == expected, (protocol, command)
            ours.close()
            theirs.close()
        ours, theirs = RawClient(port), RawClient(reference_redis.port)
        names = ["zunion", "zinter", "zdiff", "zintercard", "zdiffstore", "zrangestore", "zmpop"]
        for info, expected in zip(
            ours.call("COMMAND", "INFO", *names),
            theirs.call("COMMAND", "INFO", *names),
            strict=True,
        ):
            # name, arity, flags, first key, last key, step
            assert info[:6] == expected[:6]
        ours.close()
        theirs.close()


@pytest.mark.parametrize(
    ("pattern", "string", "expected"),
    [
        (b"*", b"", True),
        (b"a*b", b"acccb", True),
        (b"a*b", b"acccbc", False),
        (b"a?c", b"abc", True),
        (b"[abc]x", b"bx", True),
        (b"[^abc]x", b"bx", False),
        (b"[a-c]x", b"dx", False),
        (b"[c-a]x", b"bx", True),
        (b"\\*", b"*", True),
        (b"\\*", b"a", False),
        (b"[", b"a", False),
        (b"[a", b"a", True),
        (b"a\\", b"a\\", True),
        (b"**a", b"ba", True),
        (b"a" * 30 + b"*" * 30 + b"b", b"a" * 60, False),
    ],
)
def test_glob_match(pattern: bytes, string: bytes, expected: bool) -> None:
    assert glob_match(pattern, string) is expected


def test_glob_matches_redis_keys(reference_redis: object) -> None:
    from sdi.testing.servers import RedisServer

    assert isinstance(reference_redis, RedisServer)
    names = ["a", "b", "ab", "abc", "a*", "a?", "[a]", "x\\y", "hello", "hallo", "h\xe9llo", ""]
    patterns = [
        "*", "a*", "?", "??", "a[bc]*", "[^a]*", "h[ae]llo", "h[a-f]llo", "a\\*", "*\\?", "[[]*",
        "\\[a]", "x\\\\y", "[a-", "[", "*[", "h?llo", "*l*o", "[!a]*", "[]a]", "[z-a]*",
    ]  # fmt: skip
    server = LeaderboardServer(None)
    redis_client = redis.Redis(port=reference_redis.port)
    with running(server) as port:
        ours = redis.Redis(port=port)
        for connection in (redis_client, ours):
            connection.flushall()
            for name in names:
                if name:
                    connection.zadd(name.encode("utf-8"), {"m": 1})
        for pattern in patterns:
            assert sorted(ours.keys(pattern)) == sorted(redis_client.keys(pattern)), pattern
        ours.close()
    redis_client.close()


def test_format_score() -> None:
    assert format_score(1e17) == b"1e+17"
    assert format_score(4503599627370495.0) == b"4503599627370495"
    assert format_score(-2.5) == b"-2.5"


def test_member_too_long_changes_nothing(memory_server: tuple[int, LeaderboardServer]) -> None:
    raw = RawClient(memory_server[0])
    raw.call("FLUSHALL")
    raw.call("ZADD", "z", "1", "a")
    reply = raw.call("ZADD", "z", "2", "a", "3", b"x" * (MEMBER_MAX + 1))
    assert isinstance(reply, ReplyError)
    assert "longer than the 33554432 bytes allowed" in str(reply)
    assert raw.call("ZSCORE", "z", "a") == b"1"
    raw.close()


def test_zrandmember_with_repetition_is_bounded(memory_server: tuple[int, Any]) -> None:
    from sdi.leaderboard.commands import RANDMEMBER_REPLY_MAX

    client = redis.Redis(port=memory_server[0])
    client.zadd("rand-bounded", {"a": 1, "b": 2})
    assert len(client.zrandmember("rand-bounded", -1000)) == 1000
    with pytest.raises(redis.ResponseError, match="count is too large"):
        client.zrandmember("rand-bounded", -(RANDMEMBER_REPLY_MAX + 1))
    assert client.ping() is True
    client.delete("rand-bounded")
    client.close()
