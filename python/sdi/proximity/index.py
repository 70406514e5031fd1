"""The geo index the proximity service searches, and a brute-force one over numpy.

:class:`GeoIndex` is the interface the services use: batch calls over numpy
arrays of ids (``uint64``) and coordinates (degrees, ``float64``), a radius
search and a k-nearest search, both returning ids and great-circle
distances in metres sorted by distance, then by id. Distances are haversine
on a sphere of radius :data:`EARTH_RADIUS_M` (the mean Earth radius,
6,371,008.8 m).

:class:`QuadtreeIndex` is the index the service uses: the compiled quadtree
of ``rust/sdi-geo`` (:mod:`sdi.geo`), which takes live inserts, moves and
removes; it stores coordinates to 1e-7 degree (about a centimetre), so its
distances can differ from exact ones by that much.

:class:`BruteForceIndex` computes the distance to every point (vectorised
numpy, after a latitude-band filter): the reference model the tests hold
every other index to.

>>> import numpy as np
>>> index = BruteForceIndex()
>>> index.upsert(np.array([1, 2, 3], dtype=np.uint64),
...              np.array([48.8566, 48.8606, 51.5072]),    # Paris, the Louvre, London
...              np.array([2.3522, 2.3376, -0.1276]))
>>> ids, metres = index.radius(48.8566, 2.3522, 2000)
>>> ids.tolist(), [round(m) for m in metres]
([1, 2], [0, 1157])
>>> index.knn(51.0, 0.0, 1)[0].tolist()
[3]
>>> index.remove(np.array([2], dtype=np.uint64)), len(index)
(1, 2)
"""

from __future__ import annotations

import math
import threading
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sdi.errors import InvalidArgument

__all__ = [
    "EARTH_RADIUS_M",
    "BruteForceIndex",
    "GeoIndex",
    "QuadtreeIndex",
    "check_ids",
    "check_point",
    "check_points",
    "check_radius",
    "haversine_m",
]

#: The mean Earth radius (IUGG), the sphere every distance here is measured on.
EARTH_RADIUS_M = 6_371_008.8
#: Half the Earth's circumference: no two points are farther apart.
MAX_DISTANCE_M = math.pi * EARTH_RADIUS_M

Ids = npt.NDArray[np.uint64]
Floats = npt.NDArray[np.float64]


@runtime_checkable
class GeoIndex(Protocol):
    """What the proximity service needs from a geo index (every implementation is thread-safe).

    ``upsert`` adds points or moves existing ones (the last of repeated ids
    in one call wins); ``remove`` drops ids (unknown ones are ignored) and
    says how many it removed. ``radius`` returns the ids within
    ``radius_m`` metres of the point, inclusive, with their distances,
    sorted by distance then id, from ``offset`` and at most ``limit`` of
    them; ``knn`` the ``k`` nearest, sorted the same way. Bad input raises
    :class:`~sdi.errors.InvalidArgument`.
    """

    def upsert(self, ids: Ids, lat: Floats, lon: Floats) -> None: ...

    def remove(self, ids: Ids) -> int: ...

    def radius(
        self, lat: float, lon: float, radius_m: float, *, limit: int | None = None, offset: int = 0
    ) -> tuple[Ids, Floats]: ...

    def knn(self, lat: float, lon: float, k: int) -> tuple[Ids, Floats]: ...

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


def haversine_m(
    lat1: float | Floats, lon1: float | Floats, lat2: float | Floats, lon2: float | Floats
) -> Floats:
    """Great-circle distance in metres between points given in degrees (broadcasts).

    >>> round(float(haversine_m(0.0, 0.0, 0.0, 180.0)))
    20015114
    """
    phi1 = np.radians(lat1)
    phi2 = np.radians(lat2)
    dphi = phi2 - phi1
    dlambda = np.radians(np.asarray(lon2, dtype=np.float64) - lon1)
    h = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    result: Floats = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return result


def check_point(lat: object, lon: object, *, what: str = "") -> tuple[float, float]:
    """``(lat, lon)`` as floats; ``InvalidArgument`` naming the bad one otherwise.

    >>> check_point(91, 0)
    Traceback (most recent call last):
    ...
    sdi.errors.InvalidArgument: latitude must be between -90 and 90 degrees, not 91.0
    """
    prefix = f"{what} " if what else ""
    values = []
    for name, value, bound in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise InvalidArgument(f"{prefix}{name} must be a number, not {type(value).__name__}")
        number = float(value)
        if not math.isfinite(number):
            raise InvalidArgument(f"{prefix}{name} must be a finite number, not {number}")
        if not -bound <= number <= bound:
            raise InvalidArgument(
                f"{prefix}{name} must be between {-bound:g} and {bound:g} degrees, not {number}"
            )
        values.append(number)
    return values[0], values[1]


def check_radius(radius_m: object) -> float:
    """``radius_m`` as a float: a finite number of metres >= 0."""
    if isinstance(radius_m, bool) or not isinstance(radius_m, (int, float, np.number)):
        raise InvalidArgument(f"radius must be a number of metres, not {type(radius_m).__name__}")
    radius = float(radius_m)
    if not math.isfinite(radius) or radius < 0:
        raise InvalidArgument(f"radius must be a finite number of metres >= 0, not {radius}")
    return radius


def check_ids(ids: object) -> Ids:
    """``ids`` as a 1-D ``uint64`` array (non-negative integers that fit in 64 bits)."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise InvalidArgument(f"ids must be a 1-D array, not {array.ndim}-D")
    if array.dtype == np.uint64:
        return array
    if array.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if array.dtype.kind not in "iu":
        raise InvalidArgument(f"ids must be integers, not {array.dtype}")
    if array.dtype.kind == "i" and int(array.min()) < 0:
        raise InvalidArgument(f"ids must be >= 0, and {int(array.min())} is not")
    return array.astype(np.uint64)


def check_points(lat: object, lon: object, count: int | None = None) -> tuple[Floats, Floats]:
    """``lat`` and ``lon`` as 1-D ``float64`` arrays of equal length, every value in range."""
    lats = np.asarray(lat, dtype=np.float64)
    lons = np.asarray(lon, dtype=np.float64)
    if lats.ndim != 1 or lons.ndim != 1:
        raise InvalidArgument("latitudes and longitudes must be 1-D arrays")
    if lats.shape != lons.shape or (count is not None and lats.shape[0] != count):
        raise InvalidArgument(
            f"ids, latitudes and longitudes must have the same length, not"
            f" {count if count is not None else '-'}, {lats.shape[0]} and {lons.shape[0]}"
        )
    for name, values, bound in (("latitude", lats, 90.0), ("longitude", lons, 180.0)):
        bad = ~(np.abs(values) <= bound)  # NaN compares False, so it is bad too
        if bad.any():
            where = int(np.flatnonzero(bad)[0])
            raise InvalidArgument(
                f"{name} at position {where} must be a finite number between {-bound:g} and"
                f" {bound:g} degrees, not {float(values[where])}"
            )
    return lats, lons


def _check_count(name: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise InvalidArgument(f"{name} must be an integer >= 0, not {value!r}")
    return int(value)


def _sorted_by_distance(ids: Ids, distances: Floats) -> tuple[Ids, Floats]:
    order = np.lexsort((ids, distances))
    return ids[order], distances[order]


class QuadtreeIndex:
    """The compiled quadtree (:class:`sdi.geo.GeoIndex`, ``"quadtree"``) as a :class:`GeoIndex`.

    Leaves split past ``capacity`` points (the book's 100). Calls release the
    GIL; the tree takes a reader-writer lock inside, so threads may share it.
    """

    def __init__(self, capacity: int = 100) -> None:
        from sdi.geo import GeoIndex as CompiledIndex

        empty_ids = np.zeros(0, dtype=np.uint64)
        empty = np.zeros(0, dtype=np.float64)
        self._tree = CompiledIndex("quadtree", empty_ids, empty, empty, capacity=capacity)

    def __len__(self) -> int:
        return len(self._tree)

    def memory_bytes(self) -> int:
        return self._tree.memory_bytes()

    def upsert(self, ids: Ids, lat: Floats, lon: Floats) -> None:
        self._tree.upsert(check_ids(ids), lat, lon)

    def remove(self, ids: Ids) -> int:
        return self._tree.remove_many(check_ids(ids))

    def radius(
        self, lat: float, lon: float, radius_m: float, *, limit: int | None = None, offset: int = 0
    ) -> tuple[Ids, Floats]:
        return self._tree.radius(lat, lon, radius_m, limit=limit, offset=offset)

    def knn(self, lat: float, lon: float, k: int) -> tuple[Ids, Floats]:
        return self._tree.knn(lat, lon, k)


class BruteForceIndex:
    """Every point in flat numpy arrays; queries compute the distance to each candidate.

    The reference model for tests (see the module docstring). Points live in
    parallel arrays (id, latitude, longitude) grown by doubling; a dict maps
    an id to its slot, and removing swaps the last point into the hole. A
    radius query first keeps the points whose latitude is within
    ``radius / R`` radians of the centre (no point outside that band can be
    closer), then computes haversine distances for those.
    One lock serialises calls, so threads may share an index.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: Ids = np.zeros(0, dtype=np.uint64)
        self._lat: Floats = np.zeros(0, dtype=np.float64)
        self._lon: Floats = np.zeros(0, dtype=np.float64)
        self._count = 0
        self._slots: dict[int, int] = {}

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """Bytes held: the arrays' capacity plus an estimate of the id map (~100 B a point)."""
        return int(self._ids.nbytes + self._lat.nbytes + self._lon.nbytes) + 100 * len(self._slots)

    def _reserve(self, count: int) -> None:
        if count <= self._ids.shape[0]:
            return
        capacity = max(count, 2 * self._ids.shape[0], 16)
        for name in ("_ids", "_lat", "_lon"):
            old = getattr(self, name)
            grown = np.zeros(capacity, dtype=old.dtype)
            grown[: self._count] = old[: self._count]
            setattr(self, name, grown)

    def upsert(self, ids: Ids, lat: Floats, lon: Floats) -> None:
        """Adds the points, or moves the ids already here; the last of repeated ids wins."""
        keys = check_ids(ids)
        lats, lons = check_points(lat, lon, keys.shape[0])
        if keys.shape[0] == 0:
            return
        # The last occurrence of each id: unique over the reversed batch.
        reverse_keys = keys[::-1]
        _, first = np.unique(reverse_keys, return_index=True)
        keep = keys.shape[0] - 1 - first
        keys, lats, lons = keys[keep], lats[keep], lons[keep]
        with self._lock:
            slots = self._slots
            found = [slots.get(key, -1) for key in keys.tolist()]
            where = np.asarray(found, dtype=np.int64)
            old = where >= 0
            if old.any():
                self._lat[where[old]] = lats[old]
                self._lon[where[old]] = lons[old]
            new = ~old
            added = int(new.sum())
            if added:
                start = self._count
                self._reserve(start + added)
                end = start + added
                self._ids[start:end] = keys[new]
                self._lat[start:end] = lats[new]
                self._lon[start:end] = lons[new]
                slots.update(zip(keys[new].tolist(), range(start, end), strict=True))
                self._count = end

    def remove(self, ids: Ids) -> int:
        """Removes the ids that are here; how many that was."""
        keys = check_ids(ids)
        removed = 0
        with self._lock:
            for key in keys.tolist():
                slot = self._slots.pop(key, None)
                if slot is None:
                    continue
                last = self._count - 1
                if slot != last:
                    moved = int(self._ids[last])
                    self._ids[slot] = self._ids[last]
                    self._lat[slot] = self._lat[last]
                    self._lon[slot] = self._lon[last]
                    self._slots[moved] = slot
                self._count = last
                removed += 1
        return removed

    def radius(
        self, lat: float, lon: float, radius_m: float, *, limit: int | None = None, offset: int = 0
    ) -> tuple[Ids, Floats]:
        """Ids within ``radius_m`` metres (inclusive) and their distances, nearest first."""
        lat, lon = check_point(lat, lon)
        radius = check_radius(radius_m)
        top = _check_count("limit", limit, allow_none=True)
        start = _check_count("offset", offset)
        assert start is not None
        with self._lock:
            count = self._count
            band = math.degrees(radius / EARTH_RADIUS_M) + 1e-9
            lats = self._lat[:count]
            candidates = np.flatnonzero(np.abs(lats - lat) <= band)
            ids = self._ids[candidates]
            distances = haversine_m(lat, lon, lats[candidates], self._lon[candidates])
        inside = distances <= radius
        ids, distances = _sorted_by_distance(ids[inside], distances[inside])
        stop = None if top is None else start + top
        return ids[start:stop], distances[start:stop]

    def knn(self, lat: float, lon: float, k: int) -> tuple[Ids, Floats]:
        """The ``k`` nearest ids (fewer when there are fewer points), nearest first, ties by id."""
        lat, lon = check_point(lat, lon)
        want = _check_count("k", k)
        assert want is not None
        with self._lock:
            count = self._count
            ids = self._ids[:count].copy()
            distances = haversine_m(lat, lon, self._lat[:count], self._lon[:count])
        if want == 0 or count == 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float64)
        if want < count:
            # Everything up to the k-th distance, ties included, then the exact order.
            kth = np.partition(distances, want - 1)[want - 1]
            close = distances <= kth
            ids, distances = ids[close], distances[close]
        ids, distances = _sorted_by_distance(ids, distances)
        return ids[:want], distances[:want]

    def points(self) -> tuple[Ids, Floats, Floats]:
        """Copies of every id, latitude and longitude held, in slot order."""
        with self._lock:
            count = self._count
            return self._ids[:count].copy(), self._lat[:count].copy(), self._lon[:count].copy()
