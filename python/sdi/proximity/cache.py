"""The proximity service's Redis cache, as the book describes it (used only when configured).

Two kinds of keys, both read-through with the database as the source of truth:

* ``<prefix>cell:<geohash>`` -> the ids of the businesses in that geohash
  cell (packed little-endian ``uint64``; an empty cell is cached too), for
  cells of precision 3 to 7 (156 km down to 153 m);
* ``<prefix>biz:<id>`` -> the business as JSON.

A miss reads the database (``ids_in_box`` for a cell, ``get_many`` for
businesses) and sets the key with a TTL (10 minutes by default). Every
write invalidates: the business's key and, at every precision, the cells of
its old and its new position (:meth:`ProximityCache.invalidate_changes`).
The service calls that right after each write commits and again when its
change-log follower applies the change (at most ~100 ms later), which also
covers writes made by other processes sharing the database; the second
delete closes most of the window in which a reader that fetched the old row
before the write could put it back. The TTL bounds what is left.

:meth:`ProximityCache.nearby` is the book's search path over these keys:
the cells covering the query circle at the finest precision that needs at
most 32 of them, their ids, the businesses, and the exact haversine
distance of each. If Redis fails, reads fall back to the database (and log
it; for the next 5 s reads skip Redis altogether), so the cache can only
ever make a search slower, never wrong. Invalidations are always tried;
one that fails (Redis down) leaves keys that expire with their TTL.

The geohash helpers here are plain Python (until ``rust/sdi-geo`` is bound):

>>> geohash_encode(37.7749, -122.4194, 6)
'9q8yyk'
>>> [round(edge, 3) for edge in cell_box("9q8yyk")]
[37.771, 37.776, -122.421, -122.41]
>>> len(covering_cells(37.7749, -122.4194, 500, 6)) <= 9
True
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sdi.proximity.index import EARTH_RADIUS_M, check_point, check_radius, haversine_m
from sdi.proximity.store import Business, BusinessStore, Change

if TYPE_CHECKING:
    import redis

__all__ = [
    "CELL_PRECISIONS",
    "ProximityCache",
    "cell_box",
    "covering_cells",
    "geohash_encode",
]

_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {char: value for value, char in enumerate(_BASE32)}
#: The geohash precisions whose cells are cached (and invalidated on every write).
CELL_PRECISIONS = (3, 4, 5, 6, 7)
#: The most cells one search reads; past it a coarser precision is used.
CELLS_PER_SEARCH_MAX = 32
#: Cell box queries are widened by this much (degrees) so rounding never drops a point.
_BOX_MARGIN = 1e-9
DEFAULT_TTL_S = 600
#: After a failed Redis read, reads go straight to the database this long.
RETRY_AFTER_S = 5.0

logger = logging.getLogger(__name__)


def _bits(precision: int) -> tuple[int, int]:
    """(longitude bits, latitude bits) of a geohash of ``precision`` characters."""
    total = 5 * precision
    return (total + 1) // 2, total // 2


def _cell_index(value: float, low: float, span: float, bits: int) -> int:
    count = 1 << bits
    return min(count - 1, max(0, math.floor((value - low) / span * count)))


def _hash(lon_index: int, lat_index: int, precision: int) -> str:
    lon_bits, lat_bits = _bits(precision)
    code = 0
    for bit in range(5 * precision):
        if bit % 2 == 0:
            code = (code << 1) | ((lon_index >> (lon_bits - 1 - bit // 2)) & 1)
        else:
            code = (code << 1) | ((lat_index >> (lat_bits - 1 - bit // 2)) & 1)
    return "".join(
        _BASE32[(code >> (5 * (precision - 1 - position))) & 31] for position in range(precision)
    )


def geohash_encode(lat: float, lon: float, precision: int) -> str:
    """The geohash of ``precision`` characters (1 to 12) of the cell holding the point."""
    lat, lon = check_point(lat, lon)
    lon_bits, lat_bits = _bits(precision)
    return _hash(
        _cell_index(lon, -180.0, 360.0, lon_bits),
        _cell_index(lat, -90.0, 180.0, lat_bits),
        precision,
    )


def cell_box(cell: str) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` of a geohash cell."""
    code = 0
    for char in cell:
        code = (code << 5) | _DECODE[char]
    lon_bits, lat_bits = _bits(len(cell))
    lon_index = lat_index = 0
    for bit in range(5 * len(cell)):
        value = (code >> (5 * len(cell) - 1 - bit)) & 1
        if bit % 2 == 0:
            lon_index = (lon_index << 1) | value
        else:
            lat_index = (lat_index << 1) | value
    height = 180.0 / (1 << lat_bits)
    width = 360.0 / (1 << lon_bits)
    return (
        -90.0 + lat_index * height,
        -90.0 + (lat_index + 1) * height,
        -180.0 + lon_index * width,
        -180.0 + (lon_index + 1) * width,
    )


def _lon_ranges(lat: float, lon: float, angle: float) -> list[tuple[float, float]]:
    """The longitude intervals (within -180..180) of the circle's bounding box."""
    lat_lo = lat - math.degrees(angle)
    lat_hi = lat + math.degrees(angle)
    if lat_lo <= -90.0 or lat_hi >= 90.0:
        return [(-180.0, 180.0)]  # the circle holds a pole
    ratio = math.sin(angle) / math.cos(math.radians(lat))
    if ratio >= 1.0:
        return [(-180.0, 180.0)]
    half = math.degrees(math.asin(ratio)) * (1 + 1e-9) + 1e-9
    west, east = lon - half, lon + half
    if west < -180.0:
        return [(west + 360.0, 180.0), (-180.0, east)]
    if east > 180.0:
        return [(west, 180.0), (-180.0, east - 360.0)]
    return [(west, east)]


def covering_cells(lat: float, lon: float, radius_m: float, precision: int) -> list[str]:
    """Every cell of ``precision`` that meets the circle's bounding box (so covers the circle)."""
    lat, lon = check_point(lat, lon)
    angle = min(check_radius(radius_m) / EARTH_RADIUS_M, math.pi)
    margin = math.degrees(angle) * (1 + 1e-9) + 1e-9
    lon_bits, lat_bits = _bits(precision)
    lat_first = _cell_index(max(-90.0, lat - margin), -90.0, 180.0, lat_bits)
    lat_last = _cell_index(min(90.0, lat + margin), -90.0, 180.0, lat_bits)
    cells: list[str] = []
    for west, east in _lon_ranges(lat, lon, angle):
        lon_first = _cell_index(west, -180.0, 360.0, lon_bits)
        lon_last = _cell_index(east, -180.0, 360.0, lon_bits)
        for lat_index in range(lat_first, lat_last + 1):
            for lon_index in range(lon_first, lon_last + 1):
                cells.append(_hash(lon_index, lat_index, precision))
    return list(dict.fromkeys(cells))


def _cell_count(lat: float, lon: float, radius_m: float, precision: int) -> int:
    angle = min(radius_m / EARTH_RADIUS_M, math.pi)
    margin = math.degrees(angle) * (1 + 1e-9) + 1e-9
    lon_bits, lat_bits = _bits(precision)
    rows = (
        _cell_index(min(90.0, lat + margin), -90.0, 180.0, lat_bits)
        - _cell_index(max(-90.0, lat - margin), -90.0, 180.0, lat_bits)
        + 1
    )
    columns = sum(
        _cell_index(east, -180.0, 360.0, lon_bits) - _cell_index(west, -180.0, 360.0, lon_bits) + 1
        for west, east in _lon_ranges(lat, lon, angle)
    )
    return rows * columns


def search_precision(lat: float, lon: float, radius_m: float) -> int:
    """The finest cached precision whose covering has at most 32 cells (else the coarsest)."""
    for precision in reversed(CELL_PRECISIONS):
        if _cell_count(lat, lon, radius_m, precision) <= CELLS_PER_SEARCH_MAX:
            return precision
    return CELL_PRECISIONS[0]


class ProximityCache:
    """Read-through Redis caches of geohash cells and businesses over a :class:`BusinessStore`.

    Thread-safe (redis-py's connection pool); meant to be called from worker threads.
    ``hits`` and ``misses`` count keys found and not found.
    """

    def __init__(
        self,
        url: str,
        store: BusinessStore,
        *,
        prefix: str = "sdi:proximity:",
        ttl_s: int = DEFAULT_TTL_S,
        client: redis.Redis | None = None,
    ) -> None:
        import redis as redis_module
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.store = store
        self.prefix = prefix
        self.ttl_s = ttl_s
        # One quick retry: an outage must cost a search milliseconds, not seconds.
        self.client: redis.Redis = client or redis_module.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1)
        )
        self._down_until = 0.0
        self._errors: tuple[type[Exception], ...] = (redis_module.RedisError, OSError)
        self.hits = 0
        self.misses = 0

    def ping(self) -> bool:
        """Whether Redis answers (the service checks this at start)."""
        try:
            return bool(self.client.ping())
        except self._errors:
            return False

    def close(self) -> None:
        self.client.close()

    def _cell_key(self, cell: str) -> str:
        return f"{self.prefix}cell:{cell}"

    def _business_key(self, business_id: int) -> str:
        return f"{self.prefix}biz:{business_id}"

    def businesses(self, ids: Iterable[int]) -> dict[int, Business]:
        """The businesses with these ids that exist: from Redis, the rest from the store."""
        wanted = list(dict.fromkeys(int(value) for value in ids))
        if not wanted:
            return {}
        found: dict[int, Business] = {}
        if self._down():
            return self.store.get_many(wanted)
        try:
            values = self.client.mget([self._business_key(key) for key in wanted])
        except self._errors as error:
            self._failed(error)
            return self.store.get_many(wanted)
        missing = []
        for key, value in zip(wanted, values, strict=True):
            if value is None:
                missing.append(key)
            else:
                found[key] = Business.from_json(json.loads(value))
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        if missing:
            loaded = self.store.get_many(missing)
            found.update(loaded)
            self._set_many(
                {
                    self._business_key(key): json.dumps(business.to_json())
                    for key, business in loaded.items()
                }
            )
        return found

    def cell_ids(self, cells: Sequence[str]) -> dict[str, npt.NDArray[np.uint64]]:
        """The ids in each geohash cell: from Redis, the rest from the store's box query."""
        if not cells:
            return {}
        result: dict[str, npt.NDArray[np.uint64]] = {}
        values: list[Any] = [None] * len(cells)
        if not self._down():
            try:
                values = self.client.mget([self._cell_key(cell) for cell in cells])
            except self._errors as error:
                self._failed(error)
        fresh: dict[str, bytes] = {}
        for cell, value in zip(cells, values, strict=True):
            if value is not None:
                result[cell] = np.frombuffer(value, dtype="<u8").astype(np.uint64)
                self.hits += 1
                continue
            self.misses += 1
            lat_min, lat_max, lon_min, lon_max = cell_box(cell)
            ids = self.store.ids_in_box(
                lat_min - _BOX_MARGIN, lat_max + _BOX_MARGIN,
                lon_min - _BOX_MARGIN, lon_max + _BOX_MARGIN,
            )  # fmt: skip
            result[cell] = ids
            fresh[self._cell_key(cell)] = ids.astype("<u8").tobytes()
        self._set_many(fresh)
        return result

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, error: Exception) -> None:
        """After a failed read, reads skip Redis for :data:`RETRY_AFTER_S` seconds."""
        self._down_until = time.monotonic() + RETRY_AFTER_S
        logger.warning(
            "proximity cache: Redis failed (%s); reading the database for the next %.0f s",
            error, RETRY_AFTER_S,
        )  # fmt: skip

    def _set_many(self, values: dict[str, Any]) -> None:
        if not values or self._down():
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(key, value, ex=self.ttl_s)
                pipe.execute()
        except self._errors as error:
            logger.warning("proximity cache: Redis write failed (%s); not cached", error)

    def nearby(
        self, lat: float, lon: float, radius_m: float
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], dict[int, Business]]:
        """The book's search over the cache: ids within ``radius_m``, distances, the businesses.

        Sorted by distance then id, like :meth:`GeoIndex.radius`.
        """
        lat, lon = check_point(lat, lon)
        radius = check_radius(radius_m)
        cells = covering_cells(lat, lon, radius, search_precision(lat, lon, radius))
        per_cell = self.cell_ids(cells)
        candidates = (
            np.unique(np.concatenate(list(per_cell.values())))
            if per_cell
            else np.zeros(0, dtype=np.uint64)
        )
        found = self.businesses(candidates.tolist())
        ids = np.fromiter(found, dtype=np.uint64, count=len(found))
        lats = np.fromiter((b.latitude for b in found.values()), dtype=np.float64, count=len(found))
        lons = np.fromiter(
            (b.longitude for b in found.values()), dtype=np.float64, count=len(found)
        )
        distances = haversine_m(lat, lon, lats, lons)
        inside = distances <= radius
        ids, distances = ids[inside], distances[inside]
        order = np.lexsort((ids, distances))
        ids, distances = ids[order], distances[order]
        return ids, distances, {int(key): found[int(key)] for key in ids.tolist()}

    def invalidate(self, business_id: int, positions: Iterable[tuple[float, float]]) -> None:
        """Deletes the business's key and its cells (every precision) at each position."""
        keys = {self._business_key(business_id)}
        for lat, lon in positions:
            for precision in CELL_PRECISIONS:
                keys.add(self._cell_key(geohash_encode(lat, lon, precision)))
        try:
            self.client.delete(*keys)
        except self._errors as error:
            logger.warning(
                "proximity cache: invalidating business %d failed (%s); its keys expire within"
                " %d s",
                business_id, error, self.ttl_s,
            )  # fmt: skip

    def invalidate_changes(self, changes: Iterable[Change]) -> None:
        """:meth:`invalidate` for change-log entries (old and new positions), in batched deletes."""
        keys: set[str] = set()
        for change in changes:
            keys.add(self._business_key(change.business_id))
            for lat, lon in (
                (change.latitude, change.longitude),
                (change.old_latitude, change.old_longitude),
            ):
                if lat is not None and lon is not None:
                    for precision in CELL_PRECISIONS:
                        keys.add(self._cell_key(geohash_encode(lat, lon, precision)))
        ordered = sorted(keys)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for start in range(0, len(ordered), 1000):
                    pipe.delete(*ordered[start : start + 1000])
                pipe.execute()
        except self._errors as error:
            logger.warning(
                "proximity cache: invalidating %d keys failed (%s); they expire within %d s",
                len(ordered), error, self.ttl_s,
            )  # fmt: skip
