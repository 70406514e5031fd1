"""The business service's storage: businesses, and a change log the geo index follows.

A business is a row ``{id, name, category, latitude, longitude, address,
city, country, attributes}`` (``attributes`` is a JSON object for anything
else: a city's population, opening hours). Every write also appends to the
``changes`` table, in the same transaction, one row per business changed:
its id, ``upsert`` or ``delete``, the new position and the old one. Its
``seq`` grows with commit order, so a reader that remembers the last ``seq``
it applied (:meth:`BusinessStore.changes_since`) sees every change exactly
once, in order: that is how the in-memory index (and the Redis cache's
invalidation) keep up with writes made by any process sharing the database.
:meth:`BusinessStore.snapshot` reads every position together with the
``seq`` it is current to, to build an index from.

**Backends.** ``BusinessStore(path)`` is one SQLite file (WAL,
``synchronous=FULL``: a write acknowledged is on disk; one process per
file). ``BusinessStore("postgresql://user@host:port/db")`` is PostgreSQL
through a small pool of connections, for several service processes sharing
one database; writers take one transaction-scoped advisory lock, so change
sequence numbers are handed out in commit order (a reader never sees seq 7
before seq 6 has committed). Both run the same SQL through
:mod:`sdi.runtime.sql` (placeholders, column types, pooled connections,
bulk loads, REPEATABLE READ snapshots); an unreachable database is a
:class:`StoreUnavailableError` (HTTP 503). Bulk loads
(:meth:`BusinessStore.bulk_upsert`) fill a staging table (``executemany``
on SQLite, ``COPY`` on PostgreSQL) and merge it with two statements.

>>> store = BusinessStore(":memory:")
>>> cafe = store.create(BusinessFields("Cafe", "cafe", 48.85, 2.35))
>>> store.get(cafe.id).name
'Cafe'
>>> [(change.seq, change.op) for change in store.changes_since(0)]
[(1, 'upsert')]
>>> store.delete(cafe.id) is not None, store.get(cafe.id)
(True, None)
>>> store.close()
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from sdi.errors import InvalidArgument
from sdi.proximity.index import check_point
from sdi.runtime import sql
from sdi.runtime.sql import POSTGRES_URL_SCHEMES, Connection, DatabaseUnavailableError
from sdi.runtime.text import is_decimal

__all__ = [
    "POSTGRES_URL_SCHEMES",
    "Business",
    "BusinessFields",
    "BusinessStore",
    "Change",
    "StoreUnavailableError",
    "parse_business",
]

ID_MAX = (1 << 63) - 1
NAME_CHARS_MAX = 200
TEXT_CHARS_MAX = 500
ATTRIBUTES_BYTES_MAX = 16 * 1024
#: Rows per staging batch in a bulk load (and between progress reports).
BULK_BATCH = 20_000
#: Changes one :meth:`BusinessStore.changes_since` call returns at most.
CHANGES_LIMIT = 10_000

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS businesses (
    id {rowid},
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    latitude {real} NOT NULL,
    longitude {real} NOT NULL,
    address TEXT NOT NULL,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_ms {int64} NOT NULL
);
CREATE INDEX IF NOT EXISTS businesses_location ON businesses (latitude, longitude);
CREATE TABLE IF NOT EXISTS changes (
    seq {sequence},
    business_id {int64} NOT NULL,
    op TEXT NOT NULL,
    latitude {real},
    longitude {real},
    old_latitude {real},
    old_longitude {real}
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, name, category, latitude, longitude, address, city, country, attributes, updated_ms"
_COLUMN_NAMES = _COLUMNS.split(", ")
_STAGING = (
    "staging (id {int64} NOT NULL, name TEXT NOT NULL, category TEXT NOT NULL,"
    " latitude {real} NOT NULL, longitude {real} NOT NULL, address TEXT NOT NULL,"
    " city TEXT NOT NULL, country TEXT NOT NULL, attributes TEXT NOT NULL,"
    " updated_ms {int64} NOT NULL)"
)
_UPSERT_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category,"
    " latitude = excluded.latitude, longitude = excluded.longitude, address = excluded.address,"
    " city = excluded.city, country = excluded.country, attributes = excluded.attributes,"
    " updated_ms = excluded.updated_ms"
)
_CHANGE_COLUMNS = "business_id, op, latitude, longitude, old_latitude, old_longitude"
#: The advisory lock every PostgreSQL writer holds, so change seqs follow commit order.
_WRITE_LOCK = 0x5D1_9E0


#: The database could not be reached or refused the call; retry later (HTTP 503).
StoreUnavailableError = DatabaseUnavailableError


@dataclass(frozen=True)
class BusinessFields:
    """What a client says about a business (everything but its id)."""

    name: str
    category: str
    latitude: float
    longitude: float
    address: str = ""
    city: str = ""
    country: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Business(BusinessFields):
    """A stored business."""

    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "address": self.address,
            "city": self.city,
            "country": self.country,
            "attributes": self.attributes,
        }

    @classmethod
    def from_fields(cls, business_id: int, fields: BusinessFields) -> Business:
        return cls(
            fields.name, fields.category, fields.latitude, fields.longitude, fields.address,
            fields.city, fields.country, dict(fields.attributes), business_id,
        )  # fmt: skip

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Business:
        """The inverse of :meth:`to_json` (for what the cache stored; not for client input)."""
        return cls(
            str(value["name"]), str(value["category"]), float(value["latitude"]),
            float(value["longitude"]), str(value["address"]), str(value["city"]),
            str(value["country"]), dict(value["attributes"]), int(value["id"]),
        )  # fmt: skip


@dataclass(frozen=True)
class Change:
    """One entry of the change log: a business upserted (new and old position) or deleted."""

    seq: int
    business_id: int
    op: Literal["upsert", "delete"]
    latitude: float | None
    longitude: float | None
    old_latitude: float | None
    old_longitude: float | None


def check_business_id(value: object) -> int:
    """A business id: an integer from 1 to 2**63 - 1 (a decimal string is accepted)."""
    if isinstance(value, str):
        if not is_decimal(value) or len(value) > 19:
            raise InvalidArgument(f"a business id is a positive integer, not {value[:40]!r}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ID_MAX:
        raise InvalidArgument(f"a business id is an integer from 1 to {ID_MAX}, not {value!r}")
    return value


_FIELDS = {"name", "category", "latitude", "longitude", "address", "city", "country", "attributes"}


def parse_business(data: object) -> BusinessFields:
    """Decoded client JSON as :class:`BusinessFields`; ``InvalidArgument`` names a bad field.

    ``name``, ``category``, ``latitude`` and ``longitude`` are required;
    ``address``, ``city``, ``country`` (strings) and ``attributes`` (an
    object) are optional; any other field is refused.

    >>> parse_business({"name": "x", "category": "cafe", "latitude": 1, "longitude": 200})
    Traceback (most recent call last):
    ...
    sdi.errors.InvalidArgument: longitude must be between -180 and 180 degrees, not 200.0
    """
    if not isinstance(data, dict):
        raise InvalidArgument(f"a business is a JSON object, not {_json_type(data)}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidArgument(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a business has"
            f" {', '.join(sorted(_FIELDS))}"
        )
    for name in ("name", "category", "latitude", "longitude"):
        if name not in data or data[name] is None:
            raise InvalidArgument(f"{name} is required")
    text: dict[str, str] = {}
    for name in ("name", "category", "address", "city", "country"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise InvalidArgument(f"{name} must be a string, not {_json_type(value)}")
        limit = NAME_CHARS_MAX if name in ("name", "category") else TEXT_CHARS_MAX
        if len(value) > limit:
            raise InvalidArgument(f"{name} must be at most {limit} characters, not {len(value)}")
        if "\x00" in value:
            raise InvalidArgument(f"{name} must not contain the NUL character")
        text[name] = value
    for name in ("name", "category"):
        if not text[name].strip():
            raise InvalidArgument(f"{name} must not be empty")
    latitude, longitude = check_point(data["latitude"], data["longitude"])
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise InvalidArgument(f"attributes must be a JSON object, not {_json_type(attributes)}")
    try:
        encoded = json.dumps(attributes, allow_nan=False)
    except ValueError as error:
        raise InvalidArgument(f"attributes must hold finite numbers only ({error})") from None
    if len(encoded) > ATTRIBUTES_BYTES_MAX or "\\u0000" in encoded:
        raise InvalidArgument(
            f"attributes must be at most {ATTRIBUTES_BYTES_MAX} bytes of JSON without NUL"
        )
    return BusinessFields(
        text["name"], text["category"], latitude, longitude, text["address"], text["city"],
        text["country"], attributes,
    )  # fmt: skip


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _row_business(row: Sequence[Any]) -> Business:
    business_id, name, category, lat, lon, address, city, country, attributes, _ = row
    return Business(
        name, category, float(lat), float(lon), address, city, country, json.loads(attributes),
        int(business_id),
    )  # fmt: skip


def _business_row(business: Business, now_ms: int) -> tuple[Any, ...]:
    return (
        business.id, business.name, business.category, business.latitude, business.longitude,
        business.address, business.city, business.country,
        json.dumps(business.attributes, allow_nan=False), now_ms,
    )  # fmt: skip


def _now_ms() -> int:
    return int(time.time() * 1000)


class BusinessStore:
    """Businesses and their change log in SQLite (a path) or PostgreSQL (a URL).

    Every method is safe to call from several threads. Writes return the
    business as it was before (``None`` if there was none), which is what
    the cache needs to invalidate the old location's cells.
    """

    def __init__(
        self,
        where: str | PathLike[str],
        *,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
    ) -> None:
        self._db = sql.connect(
            where,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            application_name="sdi-proximity",
        )
        try:
            # Under the writers' lock: processes starting together take turns.
            self._db.setup(_SCHEMA, lock=_WRITE_LOCK)
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect.name

    def close(self) -> None:
        self._db.close()

    def _write(self, fn: Callable[[Connection], _T]) -> _T:
        """Runs ``fn`` in a write transaction holding :data:`_WRITE_LOCK` (PostgreSQL: so
        change seqs follow commit order; SQLite's writers take turns anyway)."""

        def locked(db: Connection) -> _T:
            db.lock(_WRITE_LOCK)
            return fn(db)

        return self._db.write(locked)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, business_id: int) -> Business | None:
        row = self._db.read(
            lambda db: db.row(f"SELECT {_COLUMNS} FROM businesses WHERE id = ?", (business_id,))
        )
        return None if row is None else _row_business(row)

    def get_many(self, ids: Iterable[int]) -> dict[int, Business]:
        """The businesses with these ids that exist, by id."""
        wanted = list(dict.fromkeys(int(value) for value in ids))
        found: dict[int, Business] = {}

        def read(db: Connection) -> None:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                marks = ",".join("?" * len(batch))
                sql = f"SELECT {_COLUMNS} FROM businesses WHERE id IN ({marks})"
                for row in db.rows(sql, batch):
                    business = _row_business(row)
                    found[business.id] = business

        if wanted:
            self._db.snapshot(read)  # the batches as of one moment
        return found

    def count(self) -> int:
        row = self._db.read(lambda db: db.row("SELECT COUNT(*) FROM businesses"))
        return 0 if row is None else int(row[0])

    def ids_in_box(
        self, lat_min: float, lat_max: float, lon_min: float, lon_max: float
    ) -> npt.NDArray[np.uint64]:
        """Ids of the businesses in the box, bounds included (a box never crosses 180°)."""
        rows = self._db.read(
            lambda db: db.rows(
                "SELECT id FROM businesses WHERE latitude >= ? AND latitude <= ?"
                " AND longitude >= ? AND longitude <= ?",
                (lat_min, lat_max, lon_min, lon_max),
            )
        )
        return np.fromiter((row[0] for row in rows), dtype=np.uint64, count=len(rows))

    def snapshot(
        self,
    ) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(seq, ids, latitudes, longitudes)``: every position, current as of change ``seq``."""

        def read(db: Connection) -> tuple[int, list[tuple[Any, ...]]]:
            last = db.row("SELECT COALESCE(MAX(seq), 0) FROM changes")
            rows = db.rows("SELECT id, latitude, longitude FROM businesses")
            return (0 if last is None else int(last[0])), rows

        seq, rows = self._db.snapshot(read)
        ids = np.fromiter((row[0] for row in rows), dtype=np.uint64, count=len(rows))
        lats = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
        lons = np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows))
        return seq, ids, lats, lons

    def last_seq(self) -> int:
        row = self._db.read(lambda db: db.row("SELECT COALESCE(MAX(seq), 0) FROM changes"))
        return 0 if row is None else int(row[0])

    def changes_since(self, seq: int, limit: int = CHANGES_LIMIT) -> list[Change]:
        """The changes after ``seq``, oldest first, at most ``limit`` of them."""
        rows = self._db.read(
            lambda db: db.rows(
                f"SELECT seq, {_CHANGE_COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
        )
        return [
            Change(
                int(r[0]), int(r[1]), r[2], _float(r[3]), _float(r[4]), _float(r[5]), _float(r[6])
            )
            for r in rows
        ]

    def trim_changes(self, before_seq: int) -> int:
        """Drops the changes up to ``before_seq`` (every follower has applied them); how many."""
        return self._write(lambda db: db.run("DELETE FROM changes WHERE seq <= ?", (before_seq,)))

    def setting(self, name: str) -> str | None:
        row = self._db.read(lambda db: db.row("SELECT value FROM settings WHERE name = ?", (name,)))
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        self._write(
            lambda db: db.run(
                "INSERT INTO settings (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        )

    # -- writes --------------------------------------------------------------------------------

    def _log(
        self, db: Connection, business_id: int, op: str, new: Business | None, old: Business | None
    ) -> None:
        db.run(
            f"INSERT INTO changes ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                business_id, op,
                None if new is None else new.latitude, None if new is None else new.longitude,
                None if old is None else old.latitude, None if old is None else old.longitude,
            ),
        )  # fmt: skip

    def _select(self, db: Connection, business_id: int) -> Business | None:
        row = db.row(f"SELECT {_COLUMNS} FROM businesses WHERE id = ?", (business_id,))
        return None if row is None else _row_business(row)

    def _bump_identity(self, db: Connection) -> None:
        """PostgreSQL: move the id sequence past ids written explicitly (SQLite needs nothing)."""
        if self.dialect == "postgresql":
            db.run(
                "SELECT setval(pg_get_serial_sequence('businesses', 'id'),"
                " GREATEST((SELECT MAX(id) FROM businesses), 1))"
            )

    def create(self, fields: BusinessFields) -> Business:
        """Adds a business under a fresh id; returns it."""

        def write(db: Connection) -> Business:
            business_id = db.insert_id(
                "INSERT INTO businesses (name, category, latitude, longitude, address, city,"
                " country, attributes, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fields.name, fields.category, fields.latitude, fields.longitude,
                    fields.address, fields.city, fields.country,
                    json.dumps(fields.attributes, allow_nan=False), _now_ms(),
                ),
            )  # fmt: skip
            business = Business.from_fields(business_id, fields)
            self._log(db, business.id, "upsert", business, None)
            return business

        return self._write(write)

    def put(self, business: Business) -> Business | None:
        """Stores ``business`` under its id (created or replaced); the previous one, if any."""
        check_business_id(business.id)

        def write(db: Connection) -> Business | None:
            old = self._select(db, business.id)
            db.run(
                f"INSERT INTO businesses ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?){_UPSERT_TAIL}",
                _business_row(business, _now_ms()),
            )
            if old is None:
                self._bump_identity(db)
            self._log(db, business.id, "upsert", business, old)
            return old

        return self._write(write)

    def update(self, business_id: int, fields: BusinessFields) -> tuple[Business, Business] | None:
        """Replaces an existing business's fields: ``(old, new)``, or None when there is none."""

        def write(db: Connection) -> tuple[Business, Business] | None:
            old = self._select(db, business_id)
            if old is None:
                return None
            new = Business.from_fields(business_id, fields)
            db.run(
                "UPDATE businesses SET name = ?, category = ?, latitude = ?, longitude = ?,"
                " address = ?, city = ?, country = ?, attributes = ?, updated_ms = ? WHERE id = ?",
                (*_business_row(new, _now_ms())[1:], business_id),
            )
            self._log(db, business_id, "upsert", new, old)
            return old, new

        return self._write(write)

    def delete(self, business_id: int) -> Business | None:
        """Deletes a business; the one deleted, or None when there was none."""

        def write(db: Connection) -> Business | None:
            old = self._select(db, business_id)
            if old is None:
                return None
            db.run("DELETE FROM businesses WHERE id = ?", (business_id,))
            self._log(db, business_id, "delete", None, old)
            return old

        return self._write(write)

    def bulk_upsert(
        self,
        businesses: Iterable[Business],
        *,
        batch: int = BULK_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Creates or replaces many businesses, ``batch`` per transaction; how many were written.

        Each batch goes to a staging table (``executemany`` on SQLite,
        ``COPY`` on PostgreSQL), then one statement logs the changes (with
        the old positions) and one merges the rows. The last of repeated ids
        wins. ``progress`` gets the running total after each batch.
        """
        written = 0
        pending: dict[int, Business] = {}
        for business in businesses:
            check_business_id(business.id)
            pending[business.id] = business
            if len(pending) >= batch:
                written += self._bulk_batch(list(pending.values()))
                pending.clear()
                if progress is not None:
                    progress(written)
        if pending:
            written += self._bulk_batch(list(pending.values()))
            if progress is not None:
                progress(written)
        return written

    def _bulk_batch(self, businesses: list[Business]) -> int:
        now = _now_ms()
        rows = [_business_row(business, now) for business in businesses]
        staging = _STAGING.format(**self._db.dialect.types)

        def write(db: Connection) -> int:
            if self.dialect == "postgresql":
                db.run(f"CREATE TEMP TABLE {staging} ON COMMIT DROP")
            else:
                db.run(f"CREATE TEMP TABLE IF NOT EXISTS {staging}")
                db.run("DELETE FROM staging")
            db.load("staging", _COLUMN_NAMES, rows)
            db.run(
                f"INSERT INTO changes ({_CHANGE_COLUMNS}) SELECT s.id, 'upsert', s.latitude,"
                " s.longitude, b.latitude, b.longitude FROM staging s"
                " LEFT JOIN businesses b ON b.id = s.id ORDER BY s.id"
            )
            db.run(
                f"INSERT INTO businesses ({_COLUMNS}) SELECT {_COLUMNS} FROM staging"
                f" WHERE true{_UPSERT_TAIL}"
            )
            if self.dialect == "sqlite":
                db.run("DELETE FROM staging")
            self._bump_identity(db)
            return len(rows)

        return self._write(write)


def _float(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None
