"""Redis's GEO commands over an in-memory keyspace, for :class:`sdi.runtime.respserver.RespServer`.

A key holds a geo set: what Redis keeps as a sorted set whose scores are
52-bit interleaved geohashes (26 bits of longitude over [-180, 180], 26 of
latitude over [-85.05112878, 85.05112878]). The quantisation, the decoding to
the centre of the cell, the haversine distance (Earth radius 6372797.560856 m)
and the search method are Redis's, so positions, hashes, distances and
result sets are the ones redis-server 7 gives (the tests compare the two).

The search is Redis's: pick the geohash precision from the radius (one step
coarser near an edge of the cells, one or two towards the poles), scan the
score ranges of the centre cell and its 8 neighbours (less the ones outside
the bounding box), and keep the points whose exact distance (or box
distances) fit. Each cell is one range of the sorted scores, so a query is
``O(9 log n + m)`` for ``m`` points in the scanned cells; an insert or removal
is ``O(log n)`` comparisons plus an ``O(n)`` list move, a batch load
``O(n log n)``. The sorted scores live behind :class:`GeoIndex`, so a compiled
index can replace :class:`SortedScoreIndex`.

>>> keyspace = GeoKeyspace()
>>> keyspace.geoadd(
...     "places", [13.361389, 15.087269], [38.115556, 37.502669], ["Palermo", "Catania"])
2
>>> [(hit.member, round(hit.distance, 4)) for hit in keyspace.geosearch(
...     "places", lon=15, lat=37, radius=200, unit="km", sort="asc")]
[(b'Catania', 56.4413), (b'Palermo', 190.4424)]
>>> keyspace.geohash("places", "Palermo")
b'sqc8b49rny0'

Served over RESP (``RespServer({**geo_commands(keyspace)})``), redis-py's
``geoadd``/``geosearch``/``geodist``/``geopos``/``geohash``/``zrem`` work
unchanged. Not supported: keys of other types (every key is a geo set, so
``WRONGTYPE`` never happens), expiry, ``MULTI``, and the sorted-set commands
beyond ``ZREM``/``ZCARD``/``ZSCORE``. Two byte-level differences from Redis
that clients do not see: a missing member in ``GEOPOS`` is ``$-1`` (Redis
sends ``*-1``; both are nil), and RESP3 doubles carry the same value in
Python's shortest form rather than Redis's 17 decimals.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from sdi.errors import InvalidArgument
from sdi.resp import SimpleString
from sdi.runtime.glob import glob_match
from sdi.runtime.respserver import (
    OK,
    SYNTAX_ERROR,
    Client,
    Command,
    Reply,
    RespError,
    parse_float,
    parse_int,
)

__all__ = [
    "LAT_MAX",
    "LAT_MIN",
    "LON_MAX",
    "LON_MIN",
    "UNITS",
    "GeoHit",
    "GeoIndex",
    "GeoKeyspace",
    "GeoSet",
    "SortedScoreIndex",
    "decode_score",
    "distance",
    "encode_score",
    "encode_scores",
    "geo_commands",
    "geohash_string",
    "keyspace_info",
]

LON_MIN = -180.0
LON_MAX = 180.0
LAT_MIN = -85.05112878
LAT_MAX = 85.05112878
STEP_MAX = 26
EARTH_RADIUS_METERS = 6372797.560856
MERCATOR_MAX = 20037726.37
_D_R = math.pi / 180.0
_LAT_SCALE = LAT_MAX - LAT_MIN
_LON_SCALE = LON_MAX - LON_MIN
#: Meters per unit, as GEO commands name them.
UNITS = {b"m": 1.0, b"km": 1000.0, b"ft": 0.3048, b"mi": 1609.34}
_GEOALPHABET = b"0123456789bcdefghjkmnpqrstuvwxyz"
_EVEN = 0x5555555555555555
_ODD = 0xAAAAAAAAAAAAAAAA
_UINT64 = (1 << 64) - 1


# --- geohash arithmetic (Redis's, bit for bit) ----------------------------------------


def _spread(value: int) -> int:
    value &= 0xFFFFFFFF
    value = (value | (value << 16)) & 0x0000FFFF0000FFFF
    value = (value | (value << 8)) & 0x00FF00FF00FF00FF
    value = (value | (value << 4)) & 0x0F0F0F0F0F0F0F0F
    value = (value | (value << 2)) & 0x3333333333333333
    return (value | (value << 1)) & _EVEN


def _squash(value: int) -> int:
    value &= _EVEN
    value = (value | (value >> 1)) & 0x3333333333333333
    value = (value | (value >> 2)) & 0x0F0F0F0F0F0F0F0F
    value = (value | (value >> 4)) & 0x00FF00FF00FF00FF
    value = (value | (value >> 8)) & 0x0000FFFF0000FFFF
    return (value | (value >> 16)) & 0x00000000FFFFFFFF


def _encode(
    lon: float,
    lat: float,
    step: int,
    lat_min: float = LAT_MIN,
    lat_max: float = LAT_MAX,
) -> int:
    """The ``2 * step`` interleaved bits of a point (latitude on even bits)."""
    lat_offset = (lat - lat_min) / (lat_max - lat_min) * float(1 << step)
    lon_offset = (lon - LON_MIN) / _LON_SCALE * float(1 << step)
    return _spread(int(lat_offset)) | (_spread(int(lon_offset)) << 1)


def encode_score(lon: float, lat: float) -> int:
    """The 52-bit score Redis gives ``(lon, lat)`` (checked to be in range by the caller).

    >>> encode_score(13.361389, 38.115556)
    3479099956230698
    """
    return _encode(lon, lat, STEP_MAX)


def _spread_array(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    v = values & np.uint64(0xFFFFFFFF)
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, _EVEN),
    ):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def encode_scores(lons: npt.ArrayLike, lats: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """:func:`encode_score` over arrays (the same bits, vectorised)."""
    lon = np.asarray(lons, dtype=np.float64)
    lat = np.asarray(lats, dtype=np.float64)
    scale = float(1 << STEP_MAX)
    ilat = ((lat - LAT_MIN) / _LAT_SCALE * scale).astype(np.uint64)
    ilon = ((lon - LON_MIN) / _LON_SCALE * scale).astype(np.uint64)
    return _spread_array(ilat) | (_spread_array(ilon) << np.uint64(1))


def _area(bits: int, step: int) -> tuple[float, float, float, float]:
    """(lon_min, lon_max, lat_min, lat_max) of the cell ``bits`` at ``step``."""
    ilat = _squash(bits)
    ilon = _squash(bits >> 1)
    cells = float(1 << step)
    lat_lo = LAT_MIN + (ilat * 1.0 / cells) * _LAT_SCALE
    lat_hi = LAT_MIN + ((ilat + 1) * 1.0 / cells) * _LAT_SCALE
    lon_lo = LON_MIN + (ilon * 1.0 / cells) * _LON_SCALE
    lon_hi = LON_MIN + ((ilon + 1) * 1.0 / cells) * _LON_SCALE
    return lon_lo, lon_hi, lat_lo, lat_hi


def _score_bits(score: float) -> int:
    if not (score >= 0.0) or score >= 18446744073709551616.0:
        return 0
    return int(score) & _UINT64


def decode_score(score: float) -> tuple[float, float]:
    """The (lon, lat) Redis reports for a score: the centre of its cell, clamped to the limits.

    >>> decode_score(3479099956230698)
    (13.361389338970184, 38.1155563954963)
    """
    lon_lo, lon_hi, lat_lo, lat_hi = _area(_score_bits(score), STEP_MAX)
    lon = (lon_lo + lon_hi) / 2
    lon = LON_MAX if lon > LON_MAX else LON_MIN if lon < LON_MIN else lon
    lat = (lat_lo + lat_hi) / 2
    lat = LAT_MAX if lat > LAT_MAX else LAT_MIN if lat < LAT_MIN else lat
    return lon, lat


def geohash_string(score: float) -> bytes:
    """Redis's 11-character standard geohash (latitude over [-90, 90]) of a score."""
    lon, lat = decode_score(score)
    bits = _encode(lon, lat, STEP_MAX, -90.0, 90.0)
    chars = bytearray(11)
    for i in range(10):
        chars[i] = _GEOALPHABET[(bits >> (52 - (i + 1) * 5)) & 0x1F]
    chars[10] = _GEOALPHABET[0]
    return bytes(chars)


def _lat_distance(lat1: float, lat2: float) -> float:
    return EARTH_RADIUS_METERS * abs(lat2 * _D_R - lat1 * _D_R)


def _asin(value: float) -> float:
    return math.asin(value) if -1.0 <= value <= 1.0 else math.nan


def distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Redis's haversine distance in meters (the same rounding, so the same doubles)."""
    lon1r = lon1 * _D_R
    lon2r = lon2 * _D_R
    v = math.sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return _lat_distance(lat1, lat2)
    lat1r = lat1 * _D_R
    lat2r = lat2 * _D_R
    u = math.sin((lat2r - lat1r) / 2)
    a = u * u + math.cos(lat1r) * math.cos(lat2r) * v * v
    return 2.0 * EARTH_RADIUS_METERS * _asin(math.sqrt(a) if a >= 0 else math.nan)


def _cos(value: float) -> float:
    return math.cos(value) if math.isfinite(value) else math.nan


def _divide(a: float, b: float) -> float:
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _move_x(bits: int, step: int, direction: int) -> int:
    if direction == 0:
        return bits
    x = bits & _ODD
    y = bits & _EVEN
    zz = _EVEN >> (64 - step * 2)
    x = x + (zz + 1) if direction > 0 else (x | zz) - (zz + 1)
    x &= _ODD >> (64 - step * 2)
    return x | y


def _move_y(bits: int, step: int, direction: int) -> int:
    if direction == 0:
        return bits
    x = bits & _ODD
    y = bits & _EVEN
    zz = _ODD >> (64 - step * 2)
    y = y + (zz + 1) if direction > 0 else (y | zz) - (zz + 1)
    y &= _EVEN >> (64 - step * 2)
    return x | y


def _neighbour(bits: int, step: int, dx: int, dy: int) -> int:
    return _move_y(_move_x(bits, step, dx), step, dy) & _UINT64


def _estimate_steps(range_meters: float, lat: float) -> int:
    if range_meters == 0:
        return STEP_MAX
    step = 1
    while range_meters < MERCATOR_MAX:
        range_meters *= 2
        step += 1
    step -= 2
    if lat > 66 or lat < -66:
        step -= 1
        if lat > 80 or lat < -80:
            step -= 1
    return max(1, min(STEP_MAX, step))


@dataclass(frozen=True, slots=True)
class _Shape:
    lon: float
    lat: float
    conversion: float
    radius: float = 0.0  # in units; a circle when width and height are None
    width: float | None = None
    height: float | None = None

    def bounding_box(self) -> tuple[float, float, float, float]:
        circle = self.width is None
        assert circle or self.height is not None
        h = self.conversion * (self.radius if circle else (self.height or 0.0) / 2)
        w = self.conversion * (self.radius if circle else (self.width or 0.0) / 2)
        lat_delta = h / EARTH_RADIUS_METERS / _D_R
        top = _divide(w / EARTH_RADIUS_METERS, _cos((self.lat + lat_delta) * _D_R)) / _D_R
        bottom = _divide(w / EARTH_RADIUS_METERS, _cos((self.lat - lat_delta) * _D_R)) / _D_R
        delta = bottom if self.lat < 0 else top
        return self.lon - delta, self.lat - lat_delta, self.lon + delta, self.lat + lat_delta

    def ranges(self) -> list[tuple[int, int]]:
        """The score ranges ``[min, max)`` Redis scans, in its order."""
        min_lon, min_lat, max_lon, max_lat = self.bounding_box()
        if self.width is None:
            radius = self.radius
        else:
            half_w, half_h = self.width / 2, (self.height or 0.0) / 2
            radius = math.sqrt(half_w * half_w + half_h * half_h)
        steps = _estimate_steps(radius * self.conversion, self.lat)
        center = _encode(self.lon, self.lat, steps)
        north = _area(_neighbour(center, steps, 0, 1), steps)
        south = _area(_neighbour(center, steps, 0, -1), steps)
        east = _area(_neighbour(center, steps, 1, 0), steps)
        west = _area(_neighbour(center, steps, -1, 0), steps)
        if steps > 1 and (
            north[3] < max_lat or south[2] > min_lat or east[1] < max_lon or west[0] > min_lon
        ):
            steps -= 1
            center = _encode(self.lon, self.lat, steps)
        lon_lo, lon_hi, lat_lo, lat_hi = _area(center, steps)
        # Redis's order: centre, N, S, E, W, NE, NW, SE, SW.
        moves = [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)]
        cells: list[int | None] = [
            center if (dx, dy) == (0, 0) else _neighbour(center, steps, dx, dy) for dx, dy in moves
        ]
        if steps >= 2:
            excluded = set()
            if lat_lo < min_lat:
                excluded |= {2, 7, 8}
            if lat_hi > max_lat:
                excluded |= {1, 5, 6}
            if lon_lo < min_lon:
                excluded |= {4, 8, 6}
            if lon_hi > max_lon:
                excluded |= {3, 7, 5}
            for index in excluded:
                cells[index] = None
        shift = 52 - steps * 2
        ranges = []
        last: int | None = None
        for index, cell in enumerate(cells):
            if cell is None:
                continue
            # Redis skips a cell equal to the last one scanned, except the centre.
            if last is not None and last != 0 and cell == cells[last]:
                continue
            ranges.append((cell << shift, (cell + 1) << shift))
            last = index
        return ranges

    def distance_if_inside(self, lon: float, lat: float) -> float | None:
        """The distance in meters from the centre when ``(lon, lat)`` is inside, else None."""
        if self.width is None:
            d = distance(self.lon, self.lat, lon, lat)
            return None if d > self.radius * self.conversion else d
        height = (self.height or 0.0) * self.conversion
        if _lat_distance(lat, self.lat) > height / 2:
            return None
        if distance(lon, lat, self.lon, lat) > self.width * self.conversion / 2:
            return None
        return distance(self.lon, self.lat, lon, lat)


# --- the sorted scores ------------------------------------------------------------------


class GeoIndex(Protocol):
    """Members ordered by (score, member), as a Redis sorted set orders them."""

    def __len__(self) -> int: ...

    def insert(self, score: float, member: bytes) -> None: ...

    def remove(self, score: float, member: bytes) -> None: ...

    def load(self, entries: Sequence[tuple[float, bytes]]) -> None:
        """Replaces the content with ``entries``, sorted by (score, member)."""

    def range(self, low: float, high: float) -> Iterator[tuple[float, bytes]]:
        """The entries with ``low <= score < high`` in order."""


class SortedScoreIndex:
    """Two parallel sorted lists (scores, members): bisect to find, list moves to change."""

    __slots__ = ("_members", "_scores")

    def __init__(self) -> None:
        self._scores: list[float] = []
        self._members: list[bytes] = []

    def __len__(self) -> int:
        return len(self._scores)

    def _position(self, score: float, member: bytes) -> int:
        low = bisect.bisect_left(self._scores, score)
        high = bisect.bisect_right(self._scores, score, low)
        return bisect.bisect_left(self._members, member, low, high)

    def insert(self, score: float, member: bytes) -> None:
        at = self._position(score, member)
        self._scores.insert(at, score)
        self._members.insert(at, member)

    def remove(self, score: float, member: bytes) -> None:
        at = self._position(score, member)
        if at < len(self._members) and self._members[at] == member:
            del self._scores[at]
            del self._members[at]

    def load(self, entries: Sequence[tuple[float, bytes]]) -> None:
        self._scores = [score for score, _ in entries]
        self._members = [member for _, member in entries]

    def range(self, low: float, high: float) -> Iterator[tuple[float, bytes]]:
        start = bisect.bisect_left(self._scores, low)
        end = bisect.bisect_left(self._scores, high, start)
        return zip(self._scores[start:end], self._members[start:end], strict=True)


class GeoHit(NamedTuple):
    """One search result: ``distance`` in the query's unit, ``score`` the 52-bit hash."""

    member: bytes
    distance: float
    score: float
    lon: float
    lat: float


class GeoSet:
    """One key's members: ``member -> score`` plus the sorted index the search scans."""

    __slots__ = ("index", "scores")

    #: Past this many changes in one batch the index is rebuilt rather than edited.
    REBUILD_CHANGES = 256

    def __init__(self, index: GeoIndex | None = None) -> None:
        self.scores: dict[bytes, float] = {}
        self.index: GeoIndex = index if index is not None else SortedScoreIndex()

    def __len__(self) -> int:
        return len(self.scores)

    def add(
        self,
        scores: Iterable[float],
        members: Iterable[bytes],
        *,
        nx: bool = False,
        xx: bool = False,
    ) -> tuple[int, int]:
        """ZADD's rules, element by element: (added, updated)."""
        added = updated = 0
        table = self.scores
        changes: list[tuple[bytes, float | None, float]] = []
        for score, member in zip(scores, members, strict=True):
            old = table.get(member)
            if old is None:
                if xx:
                    continue
                added += 1
            else:
                if nx or old == score:
                    continue
                updated += 1
            table[member] = score
            changes.append((member, old, score))
        if len(changes) > max(self.REBUILD_CHANGES, len(table) // 8):
            self.index.load(sorted((score, member) for member, score in table.items()))
        else:
            for member, old, score in changes:
                if old is not None:
                    self.index.remove(old, member)
                self.index.insert(score, member)
        return added, updated

    def remove(self, member: bytes) -> bool:
        score = self.scores.pop(member, None)
        if score is None:
            return False
        self.index.remove(score, member)
        return True

    def position(self, member: bytes) -> tuple[float, float] | None:
        score = self.scores.get(member)
        return None if score is None else decode_score(score)

    def _search(self, shape: _Shape, limit: int) -> list[tuple[float, float, bytes, float, float]]:
        """Redis's scan: (distance_m, score, member, lon, lat) in the order found."""
        found: list[tuple[float, float, bytes, float, float]] = []
        inside = shape.distance_if_inside
        for low, high in shape.ranges():
            if found and limit and len(found) >= limit:
                break
            for score, member in self.index.range(low, high):
                lon, lat = decode_score(score)
                d = inside(lon, lat)
                if d is not None:
                    found.append((d, score, member, lon, lat))
                if found and limit and len(found) >= limit:
                    break
        return found


def _sort_key(hit: tuple[float, float, bytes, float, float]) -> float:
    return hit[0]


def _search_hits(
    geoset: GeoSet, shape: _Shape, count: int, any_: bool, sort: str | None
) -> list[tuple[float, float, bytes, float, float]]:
    if count and sort is None and not any_:
        sort = "asc"
    hits = geoset._search(shape, count if any_ else 0)
    if sort is not None:
        hits.sort(key=_sort_key, reverse=sort == "desc")
    return hits[:count] if count else hits


def _to_bytes(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class GeoKeyspace:
    """The keys of one database, each a :class:`GeoSet`; Python calls and RESP commands share it."""

    def __init__(self) -> None:
        self.keys: dict[bytes, GeoSet] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: bytes | str) -> GeoSet | None:
        return self.keys.get(_to_bytes(key))

    def geoadd(
        self,
        key: bytes | str,
        lons: npt.ArrayLike,
        lats: npt.ArrayLike,
        members: Sequence[bytes | str | int],
        *,
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
    ) -> int:
        """Adds or moves members in a batch, as GEOADD; the count GEOADD would reply.

        Raises :class:`sdi.errors.InvalidArgument` (nothing changed) for a
        coordinate out of Redis's range or NaN, or mismatched lengths.
        """
        lon = np.asarray(lons, dtype=np.float64).reshape(-1)
        lat = np.asarray(lats, dtype=np.float64).reshape(-1)
        if not (len(lon) == len(lat) == len(members)):
            raise InvalidArgument("lons, lats and members must have the same length")
        if nx and xx:
            raise InvalidArgument("nx and xx cannot both be set")
        bad = ~((lon >= LON_MIN) & (lon <= LON_MAX) & (lat >= LAT_MIN) & (lat <= LAT_MAX))
        if bad.any():
            at = int(np.argmax(bad))
            raise InvalidArgument(
                f"invalid longitude,latitude pair {lon[at]:f},{lat[at]:f} (at index {at})"
            )
        return self._add(
            _to_bytes(key),
            encode_scores(lon, lat).astype(np.float64).tolist(),
            [_to_bytes(member) for member in members],
            nx=nx,
            xx=xx,
            ch=ch,
        )

    def _add(
        self,
        key: bytes,
        scores: Sequence[float],
        members: Sequence[bytes],
        *,
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
    ) -> int:
        geoset = self.keys.get(key)
        if geoset is None:
            if xx or not members:
                return 0
            geoset = self.keys[key] = GeoSet()
        added, updated = geoset.add(scores, members, nx=nx, xx=xx)
        if not geoset:
            del self.keys[key]
        return added + updated if ch else added

    def zrem(self, key: bytes | str, members: Iterable[bytes | str | int]) -> int:
        """Removes members; the number removed. An emptied key is deleted."""
        name = _to_bytes(key)
        geoset = self.keys.get(name)
        if geoset is None:
            return 0
        removed = sum(geoset.remove(_to_bytes(member)) for member in members)
        if not geoset:
            del self.keys[name]
        return removed

    def delete(self, key: bytes | str) -> bool:
        return self.keys.pop(_to_bytes(key), None) is not None

    def geopos(self, key: bytes | str, member: bytes | str | int) -> tuple[float, float] | None:
        geoset = self.get(key)
        return None if geoset is None else geoset.position(_to_bytes(member))

    def geohash(self, key: bytes | str, member: bytes | str | int) -> bytes | None:
        geoset = self.get(key)
        score = None if geoset is None else geoset.scores.get(_to_bytes(member))
        return None if score is None else geohash_string(score)

    def geodist(
        self, key: bytes | str, member1: bytes | str, member2: bytes | str, unit: str = "m"
    ) -> float | None:
        """The distance in ``unit`` between two members (None if either is missing)."""
        conversion = _unit(unit.encode())
        a = self.geopos(key, member1)
        b = self.geopos(key, member2)
        if a is None or b is None:
            return None
        return distance(a[0], a[1], b[0], b[1]) / conversion

    def geosearch(
        self,
        key: bytes | str,
        *,
        member: bytes | str | None = None,
        lon: float | None = None,
        lat: float | None = None,
        radius: float | None = None,
        width: float | None = None,
        height: float | None = None,
        unit: str = "m",
        count: int = 0,
        any: bool = False,
        sort: str | None = None,
    ) -> list[GeoHit]:
        """GEOSEARCH from a member or a point, by radius or by box; distances in ``unit``.

        ``sort`` is None, ``"asc"`` or ``"desc"``; ``count`` 0 means all. Raises
        :class:`sdi.errors.InvalidArgument` for what GEOSEARCH refuses.
        """
        try:
            conversion = _unit(unit.encode())
        except RespError as error:
            raise InvalidArgument(error.message.removeprefix("ERR ")) from None
        if (member is None) == (lon is None or lat is None):
            raise InvalidArgument("give exactly one of member or lon and lat")
        if (radius is None) == (width is None or height is None):
            raise InvalidArgument("give exactly one of radius or width and height")
        if count < 0 or (any and not count) or sort not in (None, "asc", "desc"):
            raise InvalidArgument("count must be > 0 with any; sort is None, 'asc' or 'desc'")
        geoset = self.get(key)
        if geoset is None:
            return []
        if member is not None:
            center = geoset.position(_to_bytes(member))
            if center is None:
                raise InvalidArgument("could not decode requested zset member")
        else:
            assert lon is not None
            assert lat is not None
            if not (LON_MIN <= lon <= LON_MAX and LAT_MIN <= lat <= LAT_MAX):
                raise InvalidArgument(f"invalid longitude,latitude pair {lon:f},{lat:f}")
            center = (lon, lat)
        for value in (radius, width, height):
            if value is not None and not value >= 0:
                raise InvalidArgument("radius, width and height must be >= 0")
        shape = _Shape(center[0], center[1], conversion, radius or 0.0, width, height)
        return [
            GeoHit(hit[2], hit[0] / conversion, hit[1], hit[3], hit[4])
            for hit in _search_hits(geoset, shape, count, any, sort)
        ]


# --- reply formatting ---------------------------------------------------------------------

_INT64_RANGE = float(1 << 63)


def _format_distance(value: float) -> bytes:
    """Redis's 4-decimal distance: the double times 10^4 rounded half to even, then placed."""
    if value == 0:
        return b"0.0000"
    scaled = value * 10000.0
    if not math.isfinite(scaled) or not -_INT64_RANGE <= scaled < _INT64_RANGE:
        fixed = -(1 << 63)  # what llrint gives for what it cannot round
    else:
        fixed = round(scaled)
    sign = "-" if fixed < 0 else ""
    digits = str(abs(fixed)).rjust(5, "0")
    return f"{sign}{digits[:-4]}.{digits[-4:]}".encode()


def _human(value: float) -> bytes:
    """Redis's "human" long double: 17 decimals, trailing zeros (and dot) dropped."""
    text = f"{value:.17f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()


def _coordinate(value: float, protocol: int) -> bytes | float:
    text = _human(value)
    return text if protocol == 2 else float(text)


def _score_reply(score: float, protocol: int) -> bytes | float:
    """ZSCORE's double as Redis 7.0 writes it: an integer below 2^52 when it is one, else %.17g."""
    if protocol == 3:
        return score
    if math.isinf(score):
        return b"inf" if score > 0 else b"-inf"
    if score == 0:
        return b"-0" if math.copysign(1.0, score) < 0 else b"0"
    if -4503599627370495.0 < score < 4503599627370496.0 and score == int(score):
        return str(int(score)).encode()
    return b"%.17g" % score


def _unit(name: bytes) -> float:
    conversion = UNITS.get(name.lower())
    if conversion is None:
        raise RespError("ERR unsupported unit provided. please use M, KM, FT, MI")
    return conversion


def _lon_lat(argv: list[bytes], at: int) -> tuple[float, float]:
    lon = parse_float(argv[at])
    lat = parse_float(argv[at + 1])
    if not (LON_MIN <= lon <= LON_MAX and LAT_MIN <= lat <= LAT_MAX):
        raise RespError(f"ERR invalid longitude,latitude pair {lon:f},{lat:f}")
    return lon, lat


def _radius(argv: list[bytes], at: int) -> tuple[float, float]:
    radius = parse_float(argv[at], "ERR need numeric radius")
    if radius < 0:
        raise RespError("ERR radius cannot be negative")
    return radius, _unit(argv[at + 1])


def _box(argv: list[bytes], at: int) -> tuple[float, float, float]:
    width = parse_float(argv[at], "ERR need numeric width")
    height = parse_float(argv[at + 1], "ERR need numeric height")
    if height < 0 or width < 0:
        raise RespError("ERR height or width cannot be negative")
    return width, height, _unit(argv[at + 2])


# --- the commands ---------------------------------------------------------------------------

_GEORADIUS = 1  # GEORADIUS: from coordinates
_BYMEMBER = 2  # GEORADIUSBYMEMBER
_NOSTORE = 4  # the _RO variants
_GEOSEARCH = 8
_GEOSEARCHSTORE = 16


class _GeoCommands:
    """The handlers, bound to one keyspace."""

    def __init__(self, keyspace: GeoKeyspace) -> None:
        self.keyspace = keyspace

    def geoadd(self, client: Client, argv: list[bytes]) -> Reply:
        nx = xx = ch = False
        at = 2
        while at < len(argv):
            option = argv[at].lower()
            if option == b"nx":
                nx = True
            elif option == b"xx":
                xx = True
            elif option == b"ch":
                ch = True
            else:
                break
            at += 1
        if (len(argv) - at) % 3 or (xx and nx) or at == len(argv):
            raise RespError(SYNTAX_ERROR)
        scores: list[float] = []
        members: list[bytes] = []
        for j in range(at, len(argv), 3):
            lon, lat = _lon_lat(argv, j)
            scores.append(float(encode_score(lon, lat)))
            members.append(argv[j + 2])
        return self.keyspace._add(argv[1], scores, members, nx=nx, xx=xx, ch=ch)

    def _search(self, client: Client, argv: list[bytes], flags: int) -> Reply:
        keyspace = self.keyspace
        store_key: bytes | None = None
        store_dist = False
        source = argv[2] if flags & _GEOSEARCHSTORE else argv[1]
        geoset = keyspace.keys.get(source)
        lon = lat = 0.0
        radius = 0.0
        conversion = 1.0
        width: float | None = None
        height: float | None = None
        if flags & _GEORADIUS:
            base = 6
            lon, lat = _lon_lat(argv, 2)
            radius, conversion = _radius(argv, 4)
        elif flags & _BYMEMBER:
            base = 5
            if geoset is not None:
                center = geoset.position(argv[2])
                if center is None:
                    raise RespError("ERR could not decode requested zset member")
                lon, lat = center
                radius, conversion = _radius(argv, 3)
        else:
            base = 2
            if flags & _GEOSEARCHSTORE:
                base = 3
                store_key = argv[1]
        with_dist = with_hash = with_coord = False
        from_member = from_lonlat = by_radius = by_box = False
        any_ = False
        sort: str | None = None
        count = 0
        remaining = len(argv) - base
        i = 0
        while i < remaining:
            arg = argv[base + i].lower()
            if arg == b"withdist":
                with_dist = True
            elif arg == b"withhash":
                with_hash = True
            elif arg == b"withcoord":
                with_coord = True
            elif arg == b"any":
                any_ = True
            elif arg == b"asc":
                sort = "asc"
            elif arg == b"desc":
                sort = "desc"
            elif arg == b"count" and i + 1 < remaining:
                count = parse_int(argv[base + i + 1])
                if count <= 0:
                    raise RespError("ERR COUNT must be > 0")
                i += 1
            elif (
                arg in (b"store", b"storedist")
                and i + 1 < remaining
                and not flags & (_NOSTORE | _GEOSEARCH)
            ):
                store_key = argv[base + i + 1]
                store_dist = arg == b"storedist"
                i += 1
            elif arg == b"storedist" and flags & _GEOSEARCHSTORE:
                store_dist = True
            elif (
                arg == b"frommember"
                and i + 1 < remaining
                and flags & _GEOSEARCH
                and not from_lonlat
            ):
                if geoset is not None:
                    center = geoset.position(argv[base + i + 1])
                    if center is None:
                        raise RespError("ERR could not decode requested zset member")
                    lon, lat = center
                from_member = True
                i += 1
            elif (
                arg == b"fromlonlat"
                and i + 2 < remaining
                and flags & _GEOSEARCH
                and not from_member
            ):
                lon, lat = _lon_lat(argv, base + i + 1)
                from_lonlat = True
                i += 2
            elif arg == b"byradius" and i + 2 < remaining and flags & _GEOSEARCH and not by_box:
                radius, conversion = _radius(argv, base + i + 1)
                width = height = None
                by_radius = True
                i += 2
            elif arg == b"bybox" and i + 3 < remaining and flags & _GEOSEARCH and not by_radius:
                width, height, conversion = _box(argv, base + i + 1)
                by_box = True
                i += 3
            else:
                raise RespError(SYNTAX_ERROR)
            i += 1
        if store_key is not None and (with_dist or with_hash or with_coord):
            what = "GEOSEARCHSTORE" if flags & _GEOSEARCHSTORE else "STORE option in GEORADIUS"
            raise RespError(
                f"ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
            )
        name = argv[0].decode("utf-8", "replace")
        if flags & _GEOSEARCH and from_member == from_lonlat:
            raise RespError(
                f"ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
            )
        if flags & _GEOSEARCH and by_radius == by_box:
            raise RespError(f"ERR exactly one of BYRADIUS and BYBOX can be specified for {name}")
        if any_ and not count:
            raise RespError("ERR the ANY argument requires COUNT argument")
        if geoset is None:
            if store_key is not None:
                keyspace.keys.pop(store_key, None)
                return 0
            return []
        shape = _Shape(lon, lat, conversion, radius, width, height)
        hits = _search_hits(geoset, shape, count, any_, sort)
        if store_key is not None:
            keyspace.keys.pop(store_key, None)
            if hits:
                scores = [hit[0] / conversion if store_dist else hit[1] for hit in hits]
                keyspace._add(store_key, scores, [hit[2] for hit in hits])
            return len(hits)
        if not (with_dist or with_hash or with_coord):
            return [hit[2] for hit in hits]
        protocol = client.protocol
        replies: list[Reply] = []
        for d, score, member, hit_lon, hit_lat in hits:
            entry: list[Reply] = [member]
            if with_dist:
                entry.append(_format_distance(d / conversion))
            if with_hash:
                entry.append(int(score))
            if with_coord:
                entry.append([_coordinate(hit_lon, protocol), _coordinate(hit_lat, protocol)])
            replies.append(entry)
        return replies

    def geosearch(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _GEOSEARCH)

    def geosearchstore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _GEOSEARCH | _GEOSEARCHSTORE)

    def georadius(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _GEORADIUS)

    def georadius_ro(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _GEORADIUS | _NOSTORE)

    def georadiusbymember(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _BYMEMBER)

    def georadiusbymember_ro(self, client: Client, argv: list[bytes]) -> Reply:
        return self._search(client, argv, _BYMEMBER | _NOSTORE)

    def geodist(self, client: Client, argv: list[bytes]) -> Reply:
        conversion = 1.0
        if len(argv) == 5:
            conversion = _unit(argv[4])
        elif len(argv) > 5:
            raise RespError(SYNTAX_ERROR)
        geoset = self.keyspace.keys.get(argv[1])
        if geoset is None:
            return None
        a = geoset.position(argv[2])
        b = geoset.position(argv[3])
        if a is None or b is None:
            return None
        return _format_distance(distance(a[0], a[1], b[0], b[1]) / conversion)

    def geopos(self, client: Client, argv: list[bytes]) -> Reply:
        geoset = self.keyspace.keys.get(argv[1])
        protocol = client.protocol
        replies: list[Reply] = []
        for member in argv[2:]:
            position = None if geoset is None else geoset.position(member)
            if position is None:
                replies.append(None)
            else:
                replies.append(
                    [_coordinate(position[0], protocol), _coordinate(position[1], protocol)]
                )
        return replies

    def geohash(self, client: Client, argv: list[bytes]) -> Reply:
        geoset = self.keyspace.keys.get(argv[1])
        replies: list[Reply] = []
        for member in argv[2:]:
            score = None if geoset is None else geoset.scores.get(member)
            replies.append(None if score is None else geohash_string(score))
        return replies

    def zrem(self, client: Client, argv: list[bytes]) -> Reply:
        return self.keyspace.zrem(argv[1], argv[2:])

    def zcard(self, client: Client, argv: list[bytes]) -> Reply:
        geoset = self.keyspace.keys.get(argv[1])
        return 0 if geoset is None else len(geoset)

    def zscore(self, client: Client, argv: list[bytes]) -> Reply:
        geoset = self.keyspace.keys.get(argv[1])
        score = None if geoset is None else geoset.scores.get(argv[2])
        return None if score is None else _score_reply(score, client.protocol)

    def delete(self, client: Client, argv: list[bytes]) -> Reply:
        keys = self.keyspace.keys
        return sum(keys.pop(key, None) is not None for key in argv[1:])

    def exists(self, client: Client, argv: list[bytes]) -> Reply:
        keys = self.keyspace.keys
        return sum(key in keys for key in argv[1:])

    def type(self, client: Client, argv: list[bytes]) -> Reply:
        return SimpleString(b"zset" if argv[1] in self.keyspace.keys else b"none")

    def keys(self, client: Client, argv: list[bytes]) -> Reply:
        pattern = argv[1]
        if pattern == b"*":
            return list(self.keyspace.keys)
        return [key for key in self.keyspace.keys if glob_match(pattern, key)]

    def dbsize(self, client: Client, argv: list[bytes]) -> Reply:
        return len(self.keyspace.keys)

    def flushdb(self, client: Client, argv: list[bytes]) -> Reply:
        if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"async", b"sync")):
            raise RespError(SYNTAX_ERROR)
        self.keyspace.keys.clear()
        return OK


def geo_commands(keyspace: GeoKeyspace) -> dict[str, Command]:
    """The command table for :class:`sdi.runtime.respserver.RespServer`, over ``keyspace``."""
    handlers = _GeoCommands(keyspace)
    geo = "geo"
    read = ("readonly",)
    write = ("write", "denyoom")
    table: dict[str, Command] = {
        "geoadd": Command(handlers.geoadd, -5, write, 1, 1, 1, geo, "Add members by position"),
        "geosearch": Command(handlers.geosearch, -7, read, 1, 1, 1, geo, "Search a geo set"),
        "geosearchstore": Command(
            handlers.geosearchstore, -8, write, 1, 2, 1, geo, "Search and store"
        ),
        "georadius": Command(handlers.georadius, -6, write, 1, 1, 1, geo, "Radius search"),
        "georadius_ro": Command(handlers.georadius_ro, -6, read, 1, 1, 1, geo, "Radius search"),
        "georadiusbymember": Command(
            handlers.georadiusbymember, -5, write, 1, 1, 1, geo, "Radius search from a member"
        ),
        "georadiusbymember_ro": Command(
            handlers.georadiusbymember_ro, -5, read, 1, 1, 1, geo, "Radius search from a member"
        ),
        "geodist": Command(handlers.geodist, -4, read, 1, 1, 1, geo, "Distance of two members"),
        "geopos": Command(handlers.geopos, -2, read, 1, 1, 1, geo, "Positions of members"),
        "geohash": Command(handlers.geohash, -2, read, 1, 1, 1, geo, "Geohashes of members"),
        "zrem": Command(handlers.zrem, -3, ("write", "fast"), 1, 1, 1, "sortedset", "Remove"),
        "zcard": Command(handlers.zcard, 2, ("readonly", "fast"), 1, 1, 1, "sortedset", "Size"),
        "zscore": Command(handlers.zscore, 3, ("readonly", "fast"), 1, 1, 1, "sortedset", "Score"),
        "del": Command(handlers.delete, -2, ("write",), 1, -1, 1, "keyspace", "Delete keys"),
        "exists": Command(handlers.exists, -2, read, 1, -1, 1, "keyspace", "Count keys"),
        "type": Command(handlers.type, 2, read, 1, 1, 1, "keyspace", "Type of a key"),
        "keys": Command(handlers.keys, 2, read, 0, 0, 0, "keyspace", "Keys matching a glob"),
        "dbsize": Command(handlers.dbsize, 1, read, 0, 0, 0, "server", "Number of keys"),
        "flushdb": Command(handlers.flushdb, -1, ("write",), 0, 0, 0, "server", "Delete all"),
        "flushall": Command(handlers.flushdb, -1, ("write",), 0, 0, 0, "server", "Delete all"),
    }
    return table


def keyspace_info(keyspace: GeoKeyspace) -> dict[str, Any]:
    """The ``# Keyspace`` section of INFO for ``keyspace`` (database 0)."""
    if not keyspace.keys:
        return {}
    return {"db0": f"keys={len(keyspace.keys)},expires=0,avg_ttl=0"}
