"""Fixtures of the email tests: a running service with two users, SMTP sinks, and a mail
store on SQLite or on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from sdi.email.store import MailStore
from sdi.testing import servers
from sdi.testing.email import Mail, Sink, start_mail
from sdi.testing.servers import PostgresServer, free_port


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


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the module (skipped without Debian's postgresql)."""
    bindir = servers.require_postgres()
    with servers.postgres_server(bindir, extra_args=["-c", "max_connections=200"]) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh mail store lives: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "mail.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def opener(where: str) -> Iterator[Callable[[], MailStore]]:
    """Opens stores on the test's database, as separate processes would (each its own
    connections); all closed at the end."""
    opened: list[MailStore] = []

    def open_store() -> MailStore:
        store = MailStore(where)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
