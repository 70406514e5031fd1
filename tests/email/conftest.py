"""Fixtures of the email tests: a running service with two users, SMTP sinks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from sdi.testing.email import Mail, Sink, start_mail
from sdi.testing.servers import free_port


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Mail]:
    """The service on asyncio's loop."""
    started = start_mail(tmp_path / "mail")
    try:
        yield started
    finally:
        started.running.stop()


@pytest.fixture(params=["asyncio", "uvloop"])
def mail_on_each_loop(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mail]:
    """The service on asyncio's loop, then on uvloop (``sdi serve``'s)."""
    started = start_mail(tmp_path / "mail", loop=request.param)
    try:
        yield started
    finally:
        started.running.stop()


@pytest.fixture
def make_sink() -> Iterator[Callable[..., Sink]]:
    controllers: list[Controller] = []

    def make(**options: Any) -> Sink:
        sink = Sink(free_port(), **options)
        controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
        controller.start()
        controllers.append(controller)
        return sink

    yield make
    for controller in controllers:
        controller.stop()
