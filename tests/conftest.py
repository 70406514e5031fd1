"""Shared fixtures: every async test runs on both asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from sdi.testing import servers
from sdi.testing.servers import RedisServer

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

AsyncRunner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=sorted(LOOPS))
def run_async(request: pytest.FixtureRequest) -> AsyncRunner:
    """Runs a coroutine to completion on the parametrised loop, in debug mode."""
    factory = LOOPS[request.param]

    def runner(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory, debug=True) as loop_runner:
            return loop_runner.run(coroutine)

    return runner


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port in a temporary directory, stopped after.

    Skips where redis-server is not installed, except under CI=true (a failure there).
    """
    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as server:
        yield server
