"""The SQL layer on SQLite and on a real PostgreSQL: placeholders, types, transactions, errors.

Every test taking ``where`` runs on both dialects: a SQLite file, and a
fresh database on a PostgreSQL server started once for the module (whose
default collation is ICU's en-US, so that only ``{key}`` gives byte order).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sdi.errors import InvalidArgument
from sdi.runtime import sql
from sdi.runtime.sql import (
    Connection,
    ConstraintError,
    Database,
    DatabaseUnavailableError,
    NulTextError,
    translate,
)
from sdi.testing import servers
from sdi.testing.servers import PostgresServer, free_port

#: createdb options for a database whose default collation is not byte order.
_ICU_DATABASE = ("--template=template0", "--locale-provider=icu", "--icu-locale=en-US")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (id {serial}, body TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS items (
    id {rowid},
    name {key} NOT NULL,
    size {int64} NOT NULL,
    weight {real} NOT NULL,
    data {blob}
);
CREATE TABLE IF NOT EXISTS log (seq {sequence}, what TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value {int64} NOT NULL)
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = servers.require_postgres()
    pytest.importorskip("psycopg")
    with servers.postgres_server(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "test.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(options=_ICU_DATABASE)


@pytest.fixture
def opener(where: str) -> Iterator[Callable[..., Database]]:
    """Opens databases on the test's ``where`` (each as another process would), schema set up."""
    opened: list[Database] = []

    def open_db(**options: object) -> Database:
        db = sql.connect(where, **options)  # type: ignore[arg-type]
        opened.append(db)
        db.setup(_SCHEMA)
        return db

    yield open_db
    for db in opened:
        db.close()


@pytest.fixture
def db(opener: Callable[..., Database]) -> Database:
    return opener()


# -- placeholders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT ?", "SELECT %s"),
        ("SELECT ?, ?", "SELECT %s, %s"),
        ("SELECT a WHERE b LIKE '5%' AND c = ?", "SELECT a WHERE b LIKE '5%%' AND c = %s"),
        ("SELECT 100 % 7", "SELECT 100 %% 7"),
        ("SELECT '?'", "SELECT '?'"),
        ("SELECT 'it''s?', ?", "SELECT 'it''s?', %s"),
        ("SELECT '', ?", "SELECT '', %s"),
        ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = %s'),
        ('SELECT "a""?" FROM t', 'SELECT "a""?" FROM t'),
        ("SELECT ? -- why?\nFROM t WHERE y = ?", "SELECT %s -- why?\nFROM t WHERE y = %s"),
        ("SELECT /* which? 100% */ ?", "SELECT /* which? 100%% */ %s"),
        ("SELECT 'no end ?", "SELECT 'no end ?"),
        ("SELECT 1 - ?", "SELECT 1 - %s"),
        ("SELECT 4 / ?", "SELECT 4 / %s"),
        ("", ""),
    ],
)
def test_translate(statement: str, expected: str) -> None:
    assert translate(statement) == expected


def test_question_marks_in_literals_are_text_on_both(db: Database) -> None:
    found = db.read(
        lambda conn: conn.row(
            "SELECT '?', 'it''s ?', \"q?\" FROM (SELECT 1 AS \"q?\") t WHERE ? = 1 -- ok?",
            (1,),
        )
    )
    assert found == ("?", "it's ?", 1)
    assert db.read(lambda conn: conn.value("SELECT CAST(? AS TEXT) || '%'", ("5",))) == "5%"


# -- schema types and ids ----------------------------------------------------------------------


def test_serial_and_rowid_and_sequence_ids(db: Database) -> None:
    def add(conn: Connection) -> list[int]:
        return [conn.insert_id("INSERT INTO notes (body) VALUES (?)", (b,)) for b in "abc"]

    assert db.write(add) == [1, 2, 3]
    assert db.read(lambda conn: conn.rows("SELECT id, body FROM notes ORDER BY id")) == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]

    # {rowid} takes explicit ids too; a fresh one follows the largest (after setval on PostgreSQL).
    def explicit(conn: Connection) -> int:
        conn.run("INSERT INTO items VALUES (?, ?, ?, ?, ?)", (40, "x", 1, 1.0, None))
        if conn.dialect is sql.POSTGRES:
            conn.run("SELECT setval(pg_get_serial_sequence('items', 'id'), 40)")
        return conn.insert_id(
            "INSERT INTO items (name, size, weight) VALUES (?, ?, ?)", ("y", 2, 2.0)
        )

    assert db.write(explicit) == 41
    db.write(lambda conn: [conn.run("INSERT INTO log (what) VALUES (?)", (w,)) for w in "pq"])
    assert db.read(lambda conn: conn.rows("SELECT seq, what FROM log ORDER BY seq")) == [
        (1, "p"),
        (2, "q"),
    ]


def test_types_round_trip(db: Database) -> None:
    row = ("name", 2**62 + 1, 0.1 + 0.2, b"\x00\xffbytes")

    def write(conn: Connection) -> None:
        conn.run("INSERT INTO items (name, size, weight, data) VALUES (?, ?, ?, ?)", row)

    db.write(write)
    found = db.read(lambda conn: conn.row("SELECT name, size, weight, data FROM items"))
    assert found is not None
    assert (found[0], found[1], found[2], bytes(found[3])) == row


def test_key_columns_sort_in_byte_order(db: Database) -> None:
    names = ["b", "B", "a", "é", "z", "Z", "a b", "ab", "\U0001f600", "\ufffd"]

    def write(conn: Connection) -> None:
        for name in names:
            conn.run("INSERT INTO items (name, size, weight) VALUES (?, 0, 0)", (name,))

    db.write(write)
    found = db.read(lambda conn: conn.rows("SELECT name FROM items ORDER BY name"))
    assert [row[0] for row in found] == sorted(names, key=lambda n: n.encode())


# -- transactions and errors -------------------------------------------------------------------


def test_a_broken_constraint_writes_nothing(db: Database) -> None:
    db.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES (?)", ("taken",)))

    def write(conn: Connection) -> None:
        conn.run("INSERT INTO notes (body) VALUES (?)", ("first",))
        conn.run("INSERT INTO notes (body) VALUES (?)", ("taken",))

    with pytest.raises(ConstraintError):
        db.write(write)
    with pytest.raises(ConstraintError), db.transaction() as conn:
        conn.insert_id("INSERT INTO notes (body) VALUES (?)", ("taken",))
    assert db.read(lambda conn: conn.rows("SELECT body FROM notes")) == [("taken",)]
    # The database is still usable, and an error raised by the function rolls back too.

    def fails(conn: Connection) -> None:
        conn.run("INSERT INTO notes (body) VALUES (?)", ("gone",))
        raise KeyError("no")

    with pytest.raises(KeyError):
        db.write(fails)
    assert db.read(lambda conn: conn.value("SELECT COUNT(*) FROM notes")) == 1


def test_nul_in_text(opener: Callable[..., Database]) -> None:
    refusing = opener()
    replacing = opener(nul="\ufffd")
    if refusing.dialect is sql.SQLITE:
        refusing.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES (?)", ("a\x00b",)))
        assert refusing.read(lambda conn: conn.value("SELECT body FROM notes")) == "a\x00b"
        return
    with pytest.raises(NulTextError, match="NUL") as refused:
        refusing.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES (?)", ("a\x00b",)))
    assert isinstance(refused.value, InvalidArgument)
    with pytest.raises(NulTextError):
        refusing.write(lambda conn: conn.load("notes", ["body"], [("ok",), ("a\x00",)]))
    replacing.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES (?)", ("a\x00b",)))
    assert refusing.read(lambda conn: conn.rows("SELECT body FROM notes")) == [("a\ufffdb",)]


def test_closed_databases_refuse_calls(db: Database) -> None:
    db.close()
    with pytest.raises(DatabaseUnavailableError, match="closed"):
        db.read(lambda conn: conn.value("SELECT 1"))
    with pytest.raises(DatabaseUnavailableError, match="closed"):
        db.write(lambda conn: conn.value("SELECT 1"))


# -- bulk loads and snapshots ------------------------------------------------------------------


def test_bulk_load(db: Database) -> None:
    rows = [(f"item {n}", n, n / 4, bytes([n % 256])) for n in range(5000)]
    columns = ["name", "size", "weight", "data"]
    assert db.write(lambda conn: conn.load("items", columns, iter(rows))) == len(rows)
    assert db.read(lambda conn: conn.row("SELECT COUNT(*), SUM(size) FROM items")) == (
        5000,
        sum(range(5000)),
    )
    found = db.read(lambda conn: conn.row("SELECT weight, data FROM items WHERE size = 4999"))
    assert found is not None
    assert (found[0], bytes(found[1])) == (4999 / 4, bytes([4999 % 256]))
    # A broken constraint fails the whole load.
    with pytest.raises(ConstraintError):
        db.write(lambda conn: conn.load("notes", ["body"], [("x",), ("y",), ("x",)]))
    assert db.read(lambda conn: conn.value("SELECT COUNT(*) FROM notes")) == 0
    assert db.write(lambda conn: conn.load("notes", ["body"], [])) == 0


def test_snapshot_reads_see_one_moment(opener: Callable[..., Database]) -> None:
    """A snapshot does not see what another process commits meanwhile; a plain read does."""
    reader, writer = opener(), opener()
    writer.write(lambda conn: conn.run("INSERT INTO counters VALUES ('n', 1)"))

    def count(conn: Connection) -> int:
        return int(conn.value("SELECT value FROM counters WHERE name = 'n'"))

    def look_twice(conn: Connection) -> tuple[int, int]:
        first = count(conn)
        writer.write(lambda w: w.run("UPDATE counters SET value = value + 1"))
        return first, count(conn)

    assert reader.snapshot(look_twice) == (1, 1)
    assert reader.read(count) == 2
    assert reader.read(look_twice) == (2, 3)  # outside a snapshot each statement sees the latest


# -- PostgreSQL: locks, retries, losing the server ----------------------------------------------


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    db = sql.connect(pg_url, pool_size=4)
    db.setup(_SCHEMA)
    yield db
    db.close()


def test_advisory_locks_serialise_writers(pg: Database) -> None:
    held = threading.Event()
    times: dict[str, float] = {}

    def first(conn: Connection) -> None:
        conn.lock("the lock")
        held.set()
        time.sleep(0.3)
        times["first done"] = time.monotonic()

    def second(conn: Connection) -> None:
        conn.lock("the lock")
        times["second in"] = time.monotonic()

    thread = threading.Thread(target=pg.write, args=(first,))
    thread.start()
    assert held.wait(10)
    pg.write(second)
    thread.join()
    assert times["second in"] >= times["first done"]
    pg.write(lambda conn: conn.lock(12345))  # a number is a lock id as it is


def test_a_lost_deadlock_is_run_again(pg: Database) -> None:
    pg.write(lambda conn: conn.run("INSERT INTO counters VALUES ('a', 0), ('b', 0)"))
    both = threading.Barrier(2)
    calls: list[str] = []

    def updater(first: str, second: str) -> Callable[[Connection], None]:
        def update(conn: Connection) -> None:
            calls.append(first)
            conn.run("UPDATE counters SET value = value + 1 WHERE name = ?", (first,))
            if len(calls) <= 2:  # the first attempts meet here, each holding its first row
                both.wait(10)
            conn.run("UPDATE counters SET value = value + 1 WHERE name = ?", (second,))

        return update

    thread = threading.Thread(target=pg.write, args=(updater("a", "b"),))
    thread.start()
    pg.write(updater("b", "a"))
    thread.join()
    assert len(calls) == 3  # the deadlock's loser ran again
    assert pg.read(lambda conn: conn.rows("SELECT name, value FROM counters ORDER BY name")) == [
        ("a", 2),
        ("b", 2),
    ]


def test_retries_end_as_unavailable(pg: Database) -> None:
    import psycopg

    calls: list[int] = []

    def always_loses(conn: Connection) -> None:
        calls.append(1)
        conn.run("INSERT INTO notes (body) VALUES ('x')")
        raise psycopg.errors.SerializationFailure("could not serialize access")

    with pytest.raises(DatabaseUnavailableError, match="could not serialize") as error:
        pg.write(always_loses)
    assert len(calls) == sql.WRITE_ATTEMPTS
    assert error.value.reason == "could not serialize access"
    assert pg.read(lambda conn: conn.value("SELECT COUNT(*) FROM notes")) == 0


def test_an_unreachable_server_is_unavailable() -> None:
    pytest.importorskip("psycopg")
    db = sql.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/sdi", connect_timeout=1)
    try:
        for call in (db.read, db.write, db.snapshot):
            with pytest.raises(DatabaseUnavailableError) as error:
                call(lambda conn: conn.value("SELECT 1"))
            message = str(error.value)
            assert message.startswith("the PostgreSQL database is unavailable (")
            assert "check that the server in the database URL is running" in message
            assert error.value.reason
            assert error.value.reason in message
    finally:
        db.close()


def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(sql.DriverMissingError, match=r"pip install 'psycopg\[binary\]'"):
        sql.connect("postgresql://postgres@127.0.0.1:1/sdi")


def test_losing_and_regaining_the_server(postgres: PostgresServer) -> None:
    """Idle connections from before a restart are replaced unnoticed; while down: unavailable."""
    db = sql.connect(postgres.create_database(), connect_timeout=1)
    try:
        db.setup(_SCHEMA)
        db.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES ('a')"))
        postgres.restart()
        assert db.read(lambda conn: conn.value("SELECT COUNT(*) FROM notes")) == 1
        postgres.restart()
        db.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES ('b')"))
        postgres.restart()
        assert db.snapshot(lambda conn: conn.value("SELECT COUNT(*) FROM notes")) == 2
        postgres.shutdown()
        try:
            with pytest.raises(DatabaseUnavailableError):
                db.read(lambda conn: conn.value("SELECT 1"))
            with pytest.raises(DatabaseUnavailableError):
                db.write(lambda conn: conn.run("INSERT INTO notes (body) VALUES ('c')"))
        finally:
            postgres.restart()
        assert db.read(lambda conn: conn.rows("SELECT body FROM notes ORDER BY body")) == [
            ("a",),
            ("b",),
        ]
    finally:
        db.close()
