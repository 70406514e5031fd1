"""Proximity search on the sphere: geohash, quadtree and Hilbert-cell indexes, compiled.

The core is ``rust/sdi-geo`` (bound as ``sdi._rust.geo``): three indexes over
``(id, latitude, longitude)`` points behind one query interface, with exact
great-circle (haversine) distances on a sphere of radius
:data:`EARTH_RADIUS_M`. Results are numpy arrays, nearest first (ties by id),
and every query runs with the GIL released; batch queries answer many points
in one call.

- ``"cell"``: points sorted by a Hilbert-curve cell id on the six faces of a
  cube (as S2 does); the most compact.
- ``"geohash"``: points sorted by geohash (a Z-order curve, as Redis GEO).
- ``"quadtree"``: leaves split past ``capacity`` points (the book's 100);
  takes :meth:`GeoIndex.upsert`, :meth:`GeoIndex.insert`,
  :meth:`GeoIndex.move` and :meth:`GeoIndex.remove`. The sorted kinds are
  rebuilt instead.

>>> import numpy as np
>>> index = GeoIndex("cell", [1, 2, 3], [48.8584, 48.8606, 51.5007], [2.2945, 2.3376, -0.1246])
>>> ids, metres = index.radius(48.8566, 2.3522, 5_000)
>>> ids.tolist(), np.round(metres).tolist()
([2, 1], [1157.0, 4226.0])
>>> index.knn(48.8566, 2.3522, 1)[0].tolist()
[2]
>>> geohash_encode([42.6], [-5.6], 5)
['ezs42']

Bad input (NaN, a latitude past 90, a negative radius, a duplicate id)
raises :class:`sdi.errors.InvalidArgument` saying what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from sdi._rust import geo as _geo

__all__ = [
    "EARTH_RADIUS_M",
    "BatchResult",
    "GeoIndex",
    "geohash_decode",
    "geohash_encode",
    "geohash_neighbors",
    "haversine_m",
]

EARTH_RADIUS_M: float = _geo.EARTH_RADIUS_M

Kind = Literal["cell", "geohash", "quadtree"]
Floats = npt.ArrayLike
Ids = npt.NDArray[np.uint64]
Metres = npt.NDArray[np.float64]


def _floats(values: Floats) -> npt.NDArray[np.float64]:
    return np.ascontiguousarray(values, dtype=np.float64).reshape(-1)


def _ids(values: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    array = np.asarray(values)
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        from sdi.errors import InvalidArgument

        raise InvalidArgument("ids must be non-negative integers (they are stored as uint64)")
    return np.ascontiguousarray(array, dtype=np.uint64).reshape(-1)


class BatchResult(NamedTuple):
    """The answers to many queries: query ``i``'s hits are at ``offsets[i]:offsets[i + 1]``."""

    offsets: npt.NDArray[np.uint64]
    ids: Ids
    distances_m: Metres

    @property
    def queries(self) -> int:
        """How many queries this answers."""
        return max(0, len(self.offsets) - 1)

    def hits(self, query: int) -> tuple[Ids, Metres]:
        """The ids and distances of query ``query``."""
        start, end = int(self.offsets[query]), int(self.offsets[query + 1])
        return self.ids[start:end], self.distances_m[start:end]


class GeoIndex:
    """A spatial index of points; see the module docstring for the kinds."""

    def __init__(
        self,
        kind: Kind,
        ids: npt.ArrayLike,
        lats: Floats,
        lons: Floats,
        *,
        capacity: int = 100,
    ) -> None:
        self._index = _geo.GeoIndex(kind, _ids(ids), _floats(lats), _floats(lons), capacity)

    @property
    def kind(self) -> str:
        return self._index.kind

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"GeoIndex({self.kind!r}, {len(self)} points)"

    def memory_bytes(self) -> int:
        """Bytes the index holds; divide by ``len()`` for the cost of a point."""
        return self._index.memory_bytes()

    def radius(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[Ids, Metres]:
        """Points within ``radius_m`` metres, nearest first (a page: ``limit``, ``offset``)."""
        return self._index.radius(lat, lon, radius_m, limit, offset)

    def knn(self, lat: float, lon: float, k: int) -> tuple[Ids, Metres]:
        """The ``k`` nearest points, nearest first."""
        return self._index.knn(lat, lon, k)

    def radius_batch(
        self,
        lats: Floats,
        lons: Floats,
        radii_m: Floats,
        *,
        limit: int | None = None,
        offset: int = 0,
        threads: int = 1,
    ) -> BatchResult:
        """:meth:`radius` for many points (one radius each, or one for all) in one call."""
        return BatchResult(
            *self._index.radius_batch(
                _floats(lats), _floats(lons), _floats(radii_m), limit, offset, threads
            )
        )

    def knn_batch(self, lats: Floats, lons: Floats, k: int, *, threads: int = 1) -> BatchResult:
        """:meth:`knn` for many points in one call."""
        return BatchResult(*self._index.knn_batch(_floats(lats), _floats(lons), k, threads))

    def upsert(self, ids: npt.ArrayLike, lats: Floats, lons: Floats) -> None:
        """Adds points or moves the ones there (quadtree only), in one call.

        The last of repeated ids wins; a bad point anywhere changes nothing.
        """
        self._index.upsert(_ids(ids), _floats(lats), _floats(lons))

    def remove_many(self, ids: npt.ArrayLike) -> int:
        """Removes points (quadtree only); how many were there."""
        return self._index.remove_many(_ids(ids))

    def insert(self, id: int, lat: float, lon: float) -> None:
        """Adds a point (quadtree only)."""
        self._index.insert(id, lat, lon)

    def move(self, id: int, lat: float, lon: float) -> None:
        """Moves a point (quadtree only)."""
        self._index.move(id, lat, lon)

    def remove(self, id: int) -> bool:
        """Removes a point (quadtree only); whether it was there."""
        return self._index.remove(id)


def geohash_encode(lats: Floats, lons: Floats, precision: int) -> list[str]:
    """Geohash strings of ``precision`` characters (1-12)."""
    return _geo.geohash_encode(_floats(lats), _floats(lons), precision)


def geohash_decode(hashes: Sequence[str]) -> tuple[Metres, Metres]:
    """The centres ``(lats, lons)`` of geohash cells."""
    return _geo.geohash_decode(list(hashes))


def geohash_neighbors(geohash: str) -> list[str | None]:
    """The 8 neighbours of a cell, clockwise from north (None where a pole ends the map)."""
    return _geo.geohash_neighbors(geohash)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points."""
    return _geo.haversine_m(lat1, lon1, lat2, lon2)
