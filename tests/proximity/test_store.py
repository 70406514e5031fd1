"""The business store on SQLite and on a real PostgreSQL: CRUD, bulk loads, the change log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sdi.errors import InvalidArgument
from sdi.proximity.store import (
    Business,
    BusinessFields,
    BusinessStore,
    StoreUnavailableError,
    parse_business,
)
from sdi.testing import servers
from sdi.testing.servers import PostgresServer


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = servers.require_postgres()
    with servers.postgres_server(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusinessStore]:
    if request.param == "sqlite":
        opened = BusinessStore(tmp_path / "businesses.sqlite")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = BusinessStore(server.create_database())
    try:
        yield opened
    finally:
        opened.close()


CAFE = BusinessFields(
    "Cafe de Flore", "cafe", 48.8541, 2.3326, "172 Bd Saint-Germain", "Paris", "FR"
)


def test_crud_and_the_change_log(store: BusinessStore) -> None:
    assert store.count() == 0
    assert store.snapshot()[0] == 0
    cafe = store.create(CAFE)
    assert cafe.id >= 1
    assert store.get(cafe.id) == cafe
    moved = BusinessFields("Cafe de Flore", "cafe", 48.86, 2.34, attributes={"stars": 4.5})
    old, new = store.update(cafe.id, moved) or (None, None)
    assert old == cafe
    assert new is not None
    assert store.get(cafe.id) == new
    assert new.attributes == {"stars": 4.5}
    assert store.update(10**12, moved) is None
    other = store.put(Business("Louvre", "museum", 48.8606, 2.3376, id=5000))
    assert other is None
    assert store.get_many([cafe.id, 5000, 77]).keys() == {cafe.id, 5000}
    # A fresh id never collides with an id written explicitly.
    third = store.create(CAFE)
    assert third.id > 5000
    assert store.delete(cafe.id) == new
    assert store.delete(cafe.id) is None
    assert store.get(cafe.id) is None
    changes = store.changes_since(0)
    assert [change.seq for change in changes] == sorted(change.seq for change in changes)
    assert [(c.business_id, c.op) for c in changes] == [
        (cafe.id, "upsert"),
        (cafe.id, "upsert"),
        (5000, "upsert"),
        (third.id, "upsert"),
        (cafe.id, "delete"),
    ]
    update = changes[1]
    assert (update.latitude, update.longitude) == (48.86, 2.34)
    assert (update.old_latitude, update.old_longitude) == (48.8541, 2.3326)
    delete = changes[-1]
    assert (delete.latitude, delete.old_latitude) == (None, 48.86)
    assert store.changes_since(changes[2].seq) == changes[3:]
    assert store.changes_since(0, limit=2) == changes[:2]
    seq, ids, _, _ = store.snapshot()
    assert seq == changes[-1].seq == store.last_seq()
    assert sorted(ids.tolist()) == [5000, third.id]
    assert store.trim_changes(changes[2].seq) == 3
    assert store.changes_since(0) == changes[3:]


def test_bulk_upsert_logs_old_positions_and_reports_progress(store: BusinessStore) -> None:
    store.put(Business("Old", "shop", 1.0, 1.0, id=3))
    before = store.last_seq()
    rows = [Business(f"b{n}", "shop", n / 100, -n / 100, id=n + 1) for n in range(2500)]
    rows.insert(10, Business("again", "shop", 5.0, 5.0, id=1))  # the last of repeated ids wins
    seen: list[int] = []
    assert store.bulk_upsert(rows, batch=1000, progress=seen.append) == 2500
    assert seen == [1000, 2000, 2500]
    assert store.count() == 2500
    assert store.get(1) == Business("again", "shop", 5.0, 5.0, id=1)
    changes = store.changes_since(before, limit=100_000)
    assert len(changes) == 2500
    moved = next(change for change in changes if change.business_id == 3)
    assert (moved.old_latitude, moved.latitude) == (1.0, 0.02)
    assert store.create(CAFE).id == 2501
    found = store.ids_in_box(0.0, 0.1, -0.1, 0.0)
    assert sorted(found.tolist()) == list(range(2, 12))
    _, ids, lats, _ = store.snapshot()
    assert len(ids) == 2501
    assert lats.dtype == np.float64


def test_concurrent_writers_keep_the_log_in_commit_order(store: BusinessStore) -> None:
    def write(base: int) -> None:
        for n in range(40):
            store.put(Business("w", "shop", 0.0, float(n), id=base + n))

    threads = [threading.Thread(target=write, args=(1000 * (t + 1),)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    changes = store.changes_since(0)
    assert len(changes) == 160
    seqs = [change.seq for change in changes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 160


def test_settings(store: BusinessStore) -> None:
    assert store.setting("places_loaded") is None
    store.set_setting("places_loaded", "12")
    store.set_setting("places_loaded", "13")
    assert store.setting("places_loaded") == "13"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a business is a JSON object, not an array"),
        ({"category": "x", "latitude": 1, "longitude": 1}, "name is required"),
        ({"name": "x", "latitude": 1, "longitude": 1}, "category is required"),
        ({"name": "x", "category": "c", "longitude": 1}, "latitude is required"),
        ({"name": "x", "category": "c", "latitude": None, "longitude": 1}, "latitude is required"),
        ({"name": "x", "category": "c", "latitude": 1}, "longitude is required"),
        (
            {"name": "x", "category": "c", "latitude": "1", "longitude": 1},
            "latitude must be a number, not str",
        ),
        (
            {"name": "x", "category": "c", "latitude": True, "longitude": 1},
            "latitude must be a number, not bool",
        ),
        (
            {"name": "x", "category": "c", "latitude": float("nan"), "longitude": 1},
            "latitude must be a finite",
        ),
        (
            {"name": "x", "category": "c", "latitude": -90.5, "longitude": 1},
            "latitude must be between",
        ),
        (
            {"name": "x", "category": "c", "latitude": 1, "longitude": 181},
            "longitude must be between",
        ),
        (
            {"name": 5, "category": "c", "latitude": 1, "longitude": 1},
            "name must be a string, not a number",
        ),
        ({"name": " ", "category": "c", "latitude": 1, "longitude": 1}, "name must not be empty"),
        (
            {"name": "x" * 201, "category": "c", "latitude": 1, "longitude": 1},
            "name must be at most 200",
        ),
        ({"name": "x", "category": "c", "latitude": 1, "longitude": 1, "id": 3}, "unknown field"),
        (
            {"name": "x", "category": "c", "latitude": 1, "longitude": 1, "attributes": []},
            "attributes must be",
        ),
        (
            {
                "name": "x",
                "category": "c",
                "latitude": 1,
                "longitude": 1,
                "attributes": {"a": float("inf")},
            },
            "attributes must hold finite numbers",
        ),
        (
            {"name": "x\x00", "category": "c", "latitude": 1, "longitude": 1},
            "name must not contain",
        ),
    ],
)
def test_parse_business_names_the_bad_field(data: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_business(data)


def test_a_bad_business_id_is_refused(tmp_path: Path) -> None:
    store = BusinessStore(tmp_path / "b.sqlite")
    try:
        with pytest.raises(InvalidArgument, match="business id"):
            store.put(Business("x", "c", 0.0, 0.0, id=0))
        with pytest.raises(InvalidArgument, match="business id"):
            store.bulk_upsert([Business("x", "c", 0.0, 0.0, id=-4)])
        assert store.count() == 0
        assert store.last_seq() == 0
    finally:
        store.close()


def test_sqlite_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    store = BusinessStore(path)
    cafe = store.create(CAFE)
    store.close()
    store = BusinessStore(path)
    try:
        assert store.get(cafe.id) == cafe
        assert store.last_seq() == 1
        assert store.create(CAFE).id == cafe.id + 1
    finally:
        store.close()


def test_an_unreachable_or_closed_store_is_unavailable(tmp_path: Path) -> None:
    """Both are a StoreUnavailableError, which the API answers with 503."""
    pytest.importorskip("psycopg")
    url = f"postgresql://postgres@127.0.0.1:{servers.free_port()}/sdi"
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        BusinessStore(url, connect_timeout=1)
    store = BusinessStore(tmp_path / "b.sqlite")
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.count()
