"""What every sdi service implements, and the loop that runs a set of them.

A service listens on one main port (plus ports of its own), keeps its files
under its own folder of the data directory, and stops cleanly: requests in
flight finish, stores flush. ``run_services`` starts services in order, prints
each endpoint with a client command to paste, waits for SIGINT or SIGTERM, and
stops them in reverse order.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "Endpoint",
    "Service",
    "ServiceConfig",
    "cancel_and_wait",
    "close_connections",
    "run",
    "run_services",
]

#: How long a stopping server waits for requests in progress before cancelling them.
SHUTDOWN_GRACE_SECONDS = 5.0


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancels a background task (None is fine) and waits until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def close_connections(
    server: asyncio.Server | None,
    connections: Collection[asyncio.Task[None]],
    busy: Collection[asyncio.Task[None]],
) -> None:
    """A server's clean stop: stop listening, end idle connections, give the busy ones
    :data:`SHUTDOWN_GRACE_SECONDS` to finish what they are doing, then end them too."""
    if server is not None:
        server.close()
    for task in set(connections) - set(busy):
        task.cancel()
    if busy:
        await asyncio.wait(set(busy), timeout=SHUTDOWN_GRACE_SECONDS)
    for task in connections:
        task.cancel()
    if connections:
        await asyncio.gather(*connections, return_exceptions=True)
    if server is not None:
        await server.wait_closed()


@dataclass(frozen=True)
class Endpoint:
    """Where a running service listens, and a command a user can paste to try it."""

    name: str
    url: str
    try_it: str


@dataclass(frozen=True)
class ServiceConfig:
    """Where a service listens and keeps its files."""

    host: str
    port: int
    data_dir: Path


class Service(abc.ABC):
    """A long-running system: ``start`` returns its endpoints, ``stop`` drains and flushes.

    A service that breaks while running sets ``failure`` (and stops the
    process with SIGTERM); the command then exits non-zero.
    """

    key: str
    failure: str | None = None

    @abc.abstractmethod
    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        """Opens stores under ``config.data_dir`` and starts listening."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stops listening, lets in-flight work finish and flushes stores."""


async def run_services(
    services: Sequence[tuple[Service, ServiceConfig]],
    *,
    out: TextIO = sys.stdout,
    on_ready: Callable[[dict[str, list[Endpoint]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs ``services`` until SIGINT/SIGTERM (or ``stop`` is set), then stops them.

    ``on_ready`` gets every service's endpoints by service key once all have started.
    Meant for a process's entry point: once everything has stopped, SIGINT and
    SIGTERM are ignored for the rest of the process, so that a second Ctrl-C
    cannot interrupt the last of the teardown.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started: list[Service] = []
    endpoints: dict[str, list[Endpoint]] = {}
    try:
        for service, config in services:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            service_endpoints = await service.start(config)
            started.append(service)
            for endpoint in service_endpoints:
                print(f"sdi {endpoint.name} listening on {endpoint.url}", file=out, flush=True)
                print(f"    try: {endpoint.try_it}", file=out, flush=True)
            endpoints[service.key] = service_endpoints
        if on_ready is not None:
            on_ready(endpoints)
        await stop.wait()
        print("sdi stopping: letting requests in flight finish", file=out, flush=True)
    finally:
        for service in reversed(started):
            await service.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            # A second Ctrl-C while the loop winds down would otherwise raise
            # KeyboardInterrupt in the middle of the teardown: everything is
            # stopped already, so it is ignored from here on.
            signal.signal(signum, signal.SIG_IGN)
    print("sdi stopped cleanly", file=out, flush=True)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs the coroutine function ``main`` on uvloop (asyncio's loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
