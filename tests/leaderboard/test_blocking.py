"""The blocking pops (BZPOPMIN, BZPOPMAX, BZMPOP) through redis-py and raw sockets, each
behaviour checked on sdi's server and on a real redis-server alike: immediate pops, timeouts,
wake-ups by another client in arrival order, MULTI, errors, a client that disconnects while it
waits (nothing is taken from the set), commands pipelined behind a blocked one, the log, and a
server that stops while clients wait."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from sdi.leaderboard import LeaderboardServer
from sdi.resp import encode_command
from sdi.testing.servers import RedisServer

from .conftest import DEADLINE_S, RawClient, connect, running


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Runs ``call`` on a thread; its result lands in the returned list."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def popped(reply: Any) -> tuple[bytes, list[tuple[bytes, float]]]:
    """A ZMPOP-shaped reply with float scores (redis-py leaves RESP2's as bytes)."""
    key, items = reply
    return key, [(member, float(score)) for member, score in items]


def blocked_clients(port: int) -> int:
    """How many clients wait in a blocking command (CLIENT LIST's ``cmd=bz...``)."""
    with connect(port) as admin:
        return sum(1 for line in admin.client_list() if str(line.get("cmd", "")).startswith("bz"))


@pytest.mark.parametrize("protocol", [2, 3])
def test_pops_at_once_when_a_set_has_members(port: int, protocol: int) -> None:
    with connect(port, protocol) as client:
        client.zadd("b", {"x": 1, "y": 2})
        assert tuple(client.bzpopmin(["a", "b"], timeout=1)) == (b"b", b"x", 1.0)
        assert tuple(client.bzpopmax(["b"], timeout=1)) == (b"b", b"y", 2.0)
        assert client.exists("b") == 0
        client.zadd("c", {"p": 1, "q": 2, "r": 3})
        assert popped(client.bzmpop(1, 2, ["a", "c"], max=True, count=2)) == (
            b"c",
            [(b"r", 3.0), (b"q", 2.0)],
        )


def test_a_timeout_gives_nil(port: int) -> None:
    with connect(port) as client:
        start = time.monotonic()
        assert client.bzpopmin(["nothing"], timeout=0.2) is None
        assert client.bzmpop(0.2, 1, ["nothing"], min=True) is None
        assert time.monotonic() - start >= 0.35
        # the connection goes on at once after a timeout
        assert client.zadd("k", {"m": 1}) == 1
        assert tuple(client.bzpopmin(["k"], timeout=1)) == (b"k", b"m", 1.0)


def test_another_clients_zadd_wakes_the_waiters_in_arrival_order(port: int) -> None:
    first_client, second_client = connect(port), connect(port)
    try:
        first, first_out = in_thread(lambda: first_client.bzpopmin(["k"], timeout=0))
        wait_until(lambda: blocked_clients(port) == 1)
        second, second_out = in_thread(lambda: second_client.bzpopmax(["k"], timeout=0))
        wait_until(lambda: blocked_clients(port) == 2)
        with connect(port) as writer:
            writer.zadd("k", {"one": 1})
            first.join(DEADLINE_S)
            assert first_out == [(b"k", b"one", 1.0)]
            assert second.is_alive()  # one member, one pop
            writer.zadd("k", {"two": 2, "three": 3})
            second.join(DEADLINE_S)
            assert second_out == [(b"k", b"three", 3.0)]
            assert writer.zrange("k", 0, -1) == [b"two"]
    finally:
        first_client.close()
        second_client.close()


def test_inside_multi_it_does_not_block(port: int) -> None:
    with connect(port) as client:
        pipe = client.pipeline(transaction=True)
        pipe.bzpopmin(["nothing"], timeout=0)
        pipe.zadd("k", {"m": 1})
        pipe.bzpopmin(["k"], timeout=0)
        assert pipe.execute() == [None, 1, (b"k", b"m", 1.0)]


def test_error_messages_match_redis(
    memory_server: tuple[int, LeaderboardServer], reference_redis: RedisServer
) -> None:
    commands = [
        ("BZPOPMIN", "k", "-1"),
        ("BZPOPMIN", "k", "soon"),
        ("BZPOPMIN", "k", "1e300"),
        ("BZPOPMAX", "k", "inf"),
        ("BZPOPMAX", "k", "nan"),
        ("BZMPOP", "-1", "1", "k", "MIN"),
        ("BZMPOP", "1", "0", "k", "MIN"),
        ("BZMPOP", "1", "1", "k", "SIDEWAYS"),
        ("BZMPOP", "1", "1", "k", "MIN", "COUNT", "0"),
        ("BZPOPMIN", "k"),
    ]
    ours, theirs = RawClient(memory_server[0]), RawClient(reference_redis.port)
    try:
        for command in commands:
            assert str(ours.call(*command)) == str(theirs.call(*command)), command
    finally:
        ours.close()
        theirs.close()


def test_a_client_that_leaves_while_waiting_takes_nothing(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as gone:
        gone.sendall(encode_command(b"BZPOPMIN", b"k", b"0"))
        wait_until(lambda: blocked_clients(port) == 1)
    wait_until(lambda: blocked_clients(port) == 0)
    with connect(port) as writer:
        # The server has dropped the waiter (no blocked client left), so nothing pops.
        writer.zadd("k", {"kept": 1})
        assert writer.zrange("k", 0, -1) == [b"kept"]


def test_commands_pipelined_behind_a_blocked_one_run_after_it(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as raw:
        raw.sendall(
            encode_command(b"BZPOPMIN", b"k", b"0")
            + encode_command(b"ECHO", b"after")
            + encode_command(b"ZCARD", b"k")
        )
        wait_until(lambda: blocked_clients(port) == 1)
        with connect(port) as writer:
            writer.zadd("k", {"a": 1, "b": 2})
        want = b"*3\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n1\r\n$5\r\nafter\r\n:1\r\n"
        got = b""
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < len(want) and time.monotonic() < deadline:
            got += raw.recv(4096)
        assert got == want


def test_a_blocking_pop_is_logged_as_a_pop(tmp_path: Path) -> None:
    with running(LeaderboardServer(tmp_path, "always")) as port, connect(port) as client:
        client.zadd("k", {"a": 1, "b": 2, "c": 3})
        assert client.bzpopmin(["k"], timeout=1) == (b"k", b"a", 1.0)
        assert popped(client.bzmpop(1, 1, ["k"], max=True)) == (b"k", [(b"c", 3.0)])
    with running(LeaderboardServer(tmp_path, "always")) as port, connect(port) as client:
        assert client.zrange("k", 0, -1) == [b"b"]


def test_stop_ends_clients_that_wait() -> None:
    server = LeaderboardServer(None)
    client: redis.Redis | None = None
    with running(server) as port:
        client = connect(port)
        waiting, out = in_thread(lambda: _swallow(lambda: client.bzpopmin(["k"], timeout=0)))
        wait_until(lambda: blocked_clients(port) == 1)
        started = time.monotonic()
    assert time.monotonic() - started < DEADLINE_S / 2  # stop() did not wait for the pop
    waiting.join(DEADLINE_S)
    assert len(out) == 1
    assert isinstance(out[0], redis.ConnectionError)
    client.close()


def test_local_execute_refuses_blocking_commands() -> None:
    server = LeaderboardServer(None)
    with (
        running(server),
        pytest.raises(Exception, match="blocking commands are for network clients"),
    ):
        server.execute([b"BZPOPMIN", b"k", b"0"])


def _swallow(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except redis.RedisError as error:
        return error
