"""Shared fixtures: every async test runs on both asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

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
