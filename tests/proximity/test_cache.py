"""The Redis cache (a real redis-server): read-through, invalidation, the book's geohash search."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sdi.proximity.cache import (
    CELL_PRECISIONS,
    ProximityCache,
    cell_box,
    covering_cells,
    geohash_encode,
    search_precision,
)
from sdi.proximity.index import BruteForceIndex
from sdi.proximity.store import Business, BusinessFields, BusinessStore
from sdi.testing.servers import RedisServer, free_port


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BusinessStore]:
    opened = BusinessStore(tmp_path / "businesses.sqlite")
    yield opened
    opened.close()


@pytest.fixture
def cache(redis_server: RedisServer, store: BusinessStore) -> Iterator[ProximityCache]:
    opened = ProximityCache(redis_server.url, store, prefix="t:")
    assert opened.ping()
    yield opened
    opened.close()


def test_geohash_matches_known_values_and_boxes_contain_their_points() -> None:
    assert geohash_encode(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert geohash_encode(-90.0, -180.0, 5) == "00000"
    assert geohash_encode(90.0, 180.0, 5) == "zzzzz"
    rng = random.Random(1)
    for _ in range(500):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        for precision in (1, 3, 6, 9):
            lat_min, lat_max, lon_min, lon_max = cell_box(geohash_encode(lat, lon, precision))
            assert lat_min <= lat <= lat_max
            assert lon_min <= lon <= lon_max


def test_coverings_hold_every_point_of_the_circle() -> None:
    rng = random.Random(2)
    centres = [(0.0, 179.9995), (89.99, 10.0), (-89.999, -170.0), (48.85, 2.35), (0.0, -180.0)]
    centres += [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(30)]
    for lat, lon in centres:
        for radius in (500, 1000, 2000, 5000, 20000):
            precision = search_precision(lat, lon, radius)
            assert precision in CELL_PRECISIONS
            cells = set(covering_cells(lat, lon, radius, precision))
            # Points on the circle (and inside): their cells must be covered.
            for _ in range(60):
                bearing = rng.uniform(0, 2 * np.pi)
                angle = radius / 6_371_008.8 * rng.choice([1.0, rng.random()])
                phi1, lam1 = np.radians(lat), np.radians(lon)
                phi2 = np.arcsin(
                    np.sin(phi1) * np.cos(angle) + np.cos(phi1) * np.sin(angle) * np.cos(bearing)
                )
                lam2 = lam1 + np.arctan2(
                    np.sin(bearing) * np.sin(angle) * np.cos(phi1),
                    np.cos(angle) - np.sin(phi1) * np.sin(phi2),
                )
                plat = float(np.clip(np.degrees(phi2), -90, 90))
                plon = float((np.degrees(lam2) + 180) % 360 - 180)
                assert geohash_encode(plat, plon, precision) in cells, (lat, lon, radius)


def test_business_objects_are_read_through(cache: ProximityCache, store: BusinessStore) -> None:
    cafe = store.create(BusinessFields("Cafe", "cafe", 48.85, 2.35))
    assert cache.businesses([cafe.id, 999]) == {cafe.id: cafe}
    assert (cache.hits, cache.misses) == (0, 2)
    assert cache.businesses([cafe.id]) == {cafe.id: cafe}
    assert cache.hits == 1
    assert cache.client.ttl(f"t:biz:{cafe.id}") > 0
    # The database is the source of truth: a write the cache was not told of is not seen...
    store.update(cafe.id, BusinessFields("Renamed", "cafe", 48.85, 2.35))
    assert cache.businesses([cafe.id])[cafe.id].name == "Cafe"
    # ... until it is invalidated, from the change log as the service does.
    cache.invalidate_changes(store.changes_since(1))
    assert cache.businesses([cafe.id])[cafe.id].name == "Renamed"


def test_cells_are_read_through_and_invalidated_at_old_and_new_positions(
    cache: ProximityCache, store: BusinessStore
) -> None:
    shop = store.create(BusinessFields("Shop", "shop", 10.0, 20.0))
    cell = geohash_encode(10.0, 20.0, 6)
    assert cache.cell_ids([cell])[cell].tolist() == [shop.id]
    assert cache.cell_ids([cell])[cell].tolist() == [shop.id]
    assert cache.hits == 1
    empty = geohash_encode(-10.0, -20.0, 6)
    assert cache.cell_ids([empty])[empty].tolist() == []
    assert cache.client.exists(f"t:cell:{empty}") == 1  # empty cells are cached too
    old, new = store.update(shop.id, BusinessFields("Shop", "shop", -10.0, -20.0)) or (None, None)
    assert old is not None
    assert new is not None
    cache.invalidate(shop.id, [(old.latitude, old.longitude), (new.latitude, new.longitude)])
    assert cache.cell_ids([cell, empty]) == {
        cell: pytest.approx(np.zeros(0, dtype=np.uint64)),
        empty: pytest.approx(np.array([shop.id], dtype=np.uint64)),
    }


def test_nearby_over_the_cache_equals_brute_force(
    cache: ProximityCache, store: BusinessStore
) -> None:
    rng = random.Random(3)
    centres = [(48.85, 2.35), (0.0, 179.99), (89.95, 0.0)]
    rows = []
    for n in range(3000):
        lat, lon = rng.choice(centres)
        lat = float(np.clip(lat + rng.gauss(0, 0.1), -90, 90))
        lon = (lon + rng.gauss(0, 0.2) + 180) % 360 - 180
        rows.append(Business(f"b{n}", "shop", lat, lon, id=n + 1))
    store.bulk_upsert(rows)
    index = BruteForceIndex()
    _, ids, lats, lons = store.snapshot()
    index.upsert(ids, lats, lons)
    for lat, lon in [*centres, (48.9, 2.3), (0.05, -179.98), (90.0, 0.0)]:
        for radius in (500, 2000, 5000, 20000):
            want_ids, want_distances = index.radius(lat, lon, radius)
            for _ in range(2):  # cold, then warm
                got_ids, got_distances, objects = cache.nearby(lat, lon, radius)
                assert got_ids.tolist() == want_ids.tolist()
                assert np.allclose(got_distances, want_distances)
                assert set(objects) == set(want_ids.tolist())
    assert cache.hits > 0


def test_a_redis_outage_falls_back_to_the_database(store: BusinessStore) -> None:
    cafe = store.create(BusinessFields("Cafe", "cafe", 1.0, 1.0))
    cache = ProximityCache(f"redis://127.0.0.1:{free_port()}/0", store)
    try:
        started = time.monotonic()
        assert not cache.ping()
        assert cache.businesses([cafe.id]) == {cafe.id: cafe}
        ids, _, _ = cache.nearby(1.0, 1.0, 500)
        assert ids.tolist() == [cafe.id]
        cache.invalidate(cafe.id, [(1.0, 1.0)])  # logged, not raised
        assert time.monotonic() - started < 5
    finally:
        cache.close()
