"""WATCH and UNWATCH (optimistic transactions) through redis-py, each case on sdi's server and
on a real redis-server alike: an EXEC after a watched key changed (by another client, by the
client itself, by expiry, by FLUSHALL, by a RENAME or DEL naming it) runs nothing and replies
nil (redis-py raises WatchError); unchanged keys, UNWATCH, DISCARD and a finished EXEC let the
next transaction through; WATCH inside MULTI is an error."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from .conftest import connect


def attempt(client: redis.Redis, key: str, meanwhile: Callable[[], object]) -> bool:
    """WATCH ``key``, run ``meanwhile``, then MULTI / ZADD / EXEC: whether EXEC ran."""
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        meanwhile()
        pipe.multi()
        pipe.zadd(key, {"txn": 1})
        try:
            pipe.execute()
        except redis.WatchError:
            return False
    return True


CHANGES: dict[str, Callable[[redis.Redis], object]] = {
    "zadd by another client": lambda other: other.zadd("w", {"x": 5}),
    "zincrby by another client": lambda other: other.zincrby("w", 1, "seed"),
    "zrem by another client": lambda other: other.zrem("w", "seed"),
    "del by another client": lambda other: other.delete("w", "nothing"),
    "rename onto it": lambda other: other.zadd("src", {"a": 1}) and other.rename("src", "w"),
    "rename away": lambda other: other.rename("w", "elsewhere"),
    "expire": lambda other: other.expire("w", 100),
    "flushall": lambda other: other.flushall(),
    "zunionstore into it": lambda other: other.zunionstore("w", ["w", "w"]),
    "zpopmin": lambda other: other.zpopmin("w"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_a_watched_key_fails_the_exec(port: int, change: str) -> None:
    with connect(port) as client, connect(port) as other:
        client.zadd("w", {"seed": 1})
        assert not attempt(client, "w", lambda: CHANGES[change](other))
        assert client.zscore("w", "txn") is None  # nothing ran
        assert attempt(client, "w", lambda: None)  # the next transaction goes through


def test_unchanged_and_unrelated_keys_let_it_through(port: int) -> None:
    with connect(port) as client, connect(port) as other:
        client.zadd("w", {"seed": 1})
        assert attempt(client, "w", lambda: other.zadd("unrelated", {"x": 1}))
        assert attempt(client, "w", lambda: other.zscore("w", "seed"))  # a read changes nothing
        assert attempt(client, "w", lambda: other.delete("missing"))  # nothing deleted
        assert client.zscore("w", "txn") == 1.0


def test_the_clients_own_change_also_fails_it(port: int) -> None:
    with connect(port) as client:
        assert not attempt(client, "w", lambda: client.zadd("w", {"mine": 1}))


def test_expiry_of_a_watched_key_fails_it(port: int) -> None:
    with connect(port) as client:
        client.zadd("w", {"seed": 1})
        client.pexpire("w", 50)

        def wait_for_expiry() -> None:
            deadline = time.monotonic() + 5
            while client.exists("w"):
                assert time.monotonic() < deadline
                time.sleep(0.01)

        assert not attempt(client, "w", wait_for_expiry)


def test_unwatch_discard_and_exec_end_the_watch(port: int) -> None:
    with connect(port) as client, connect(port) as other:
        client.zadd("w", {"seed": 1})
        with client.pipeline(transaction=True) as pipe:
            pipe.watch("w")
            pipe.unwatch()
            other.zadd("w", {"x": 1})
            pipe.multi()
            pipe.zadd("w", {"txn": 1})
            assert pipe.execute() == [1]
        # DISCARD drops the watch: a change afterwards does not fail the next EXEC
        raw = client.connection_pool.get_connection()
        try:
            for command in (("WATCH", "w"), ("MULTI",), ("DISCARD",)):
                raw.send_command(*command)
                assert raw.read_response() == b"OK"
            other.zadd("w", {"y": 1})
            for command, want in ((("MULTI",), b"OK"), (("ZCARD", "w"), b"QUEUED")):
                raw.send_command(*command)
                assert raw.read_response() == want
            raw.send_command("EXEC")
            assert raw.read_response() == [4]
        finally:
            client.connection_pool.release(raw)


def test_watch_inside_multi_is_an_error(port: int) -> None:
    with connect(port) as client:
        raw = client.connection_pool.get_connection()
        try:
            raw.send_command("MULTI")
            assert raw.read_response() == b"OK"
            raw.send_command("WATCH", "w")
            with pytest.raises(redis.ResponseError, match="WATCH inside MULTI is not allowed"):
                raw.read_response()
            raw.send_command("DISCARD")
            assert raw.read_response() == b"OK"
        finally:
            client.connection_pool.release(raw)
