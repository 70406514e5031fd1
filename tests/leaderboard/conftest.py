"""Fixtures: an in-memory leaderboard server on a thread and a real redis-server; the raw
RESP client (:class:`sdi.testing.resp.RawClient`) and ``running`` for the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from sdi.leaderboard import LeaderboardServer
from sdi.runtime.respserver import serve_in_thread
from sdi.testing import servers
from sdi.testing.resp import RawClient
from sdi.testing.servers import RedisServer

__all__ = ["RawClient", "connect", "running"]


#: Runs a server on an event loop in a thread; yields its port; stops it on exit.
running = serve_in_thread

#: How long a test waits for anything (seconds).
DEADLINE_S = 10.0


def connect(port: int, protocol: int = 2) -> redis.Redis:
    return redis.Redis(port=port, protocol=protocol, socket_timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def memory_server() -> Iterator[tuple[int, LeaderboardServer]]:
    """An in-memory server (no data directory) for the whole module."""
    server = LeaderboardServer(None)
    with running(server) as port:
        yield port, server


@pytest.fixture(scope="module")
def reference_redis() -> Iterator[RedisServer]:
    """A real redis-server for the whole module."""
    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as server:
        yield server


@pytest.fixture(params=["sdi", "redis"])
def port(request: pytest.FixtureRequest, memory_server: tuple[int, LeaderboardServer]) -> int:
    """A server with an empty keyspace: sdi's, then a real redis-server."""
    if request.param == "sdi":
        number = memory_server[0]
    else:
        reference: RedisServer = request.getfixturevalue("reference_redis")
        number = reference.port
    with redis.Redis(port=number) as connection:
        connection.flushall()
    return number
