"""sdi.geo, the compiled indexes from Python: the three kinds against brute force, batches,
updates, bad input, and threads sharing one index."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument
from sdi.geo import GeoIndex, geohash_decode, geohash_encode, geohash_neighbors, haversine_m
from sdi.proximity.index import BruteForceIndex

KINDS = ("cell", "geohash", "quadtree")
#: Stored coordinates are rounded to 1e-7 degree (about 1.1 cm).
SNAP_M = 0.02

_LAT = st.one_of(st.floats(-90, 90), st.sampled_from([-90.0, 90.0, 0.0, 89.9999, -89.9999]))
_LON = st.one_of(st.floats(-180, 180), st.sampled_from([-180.0, 180.0, 179.9999, -179.9999]))


def _points(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 60))
    lats = [draw(_LAT) for _ in range(n)]
    lons = [draw(_LON) for _ in range(n)]
    if n and draw(st.booleans()):  # duplicates of one spot
        lats += [lats[0]] * 5
        lons += [lons[0]] * 5
    ids = np.arange(1, len(lats) + 1, dtype=np.uint64) * 7
    return ids, np.array(lats, dtype=np.float64), np.array(lons, dtype=np.float64)


points = st.composite(_points)


@settings(max_examples=60, deadline=None)
@given(
    data=points(),
    lat=_LAT,
    lon=_LON,
    radius=st.sampled_from([0.0, 500.0, 5_000.0, 1e6, 2.1e7]),
    k=st.integers(1, 12),
)
def test_every_kind_agrees_with_brute_force(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], lat: float, lon: float, radius: float, k: int
) -> None:
    ids, lats, lons = data
    model = BruteForceIndex()
    model.upsert(ids, lats, lons)
    want_ids, want_m = model.radius(lat, lon, radius)
    exact = dict(zip(want_ids.tolist(), want_m.tolist(), strict=True))
    answers = []
    for kind in KINDS:
        index = GeoIndex(kind, ids, lats, lons)
        got_ids, got_m = index.radius(lat, lon, radius)
        assert np.all(np.diff(got_m) >= 0)
        # Only points within the rounding of the edge may differ.
        all_m = dict(zip(ids.tolist(), haversine_all(lat, lon, lats, lons), strict=True))
        assert {i for i in got_ids.tolist() if abs(all_m[i] - radius) > SNAP_M} == {
            i for i in exact if abs(exact[i] - radius) > SNAP_M
        }
        for i, metres in zip(got_ids.tolist(), got_m.tolist(), strict=True):
            assert metres == pytest.approx(all_m[i], abs=SNAP_M)
        knn_ids, knn_m = index.knn(lat, lon, k)
        assert len(knn_ids) == min(k, len(ids))
        answers.append((got_ids.tolist(), got_m.tolist(), knn_ids.tolist(), knn_m.tolist()))
    assert answers[0] == answers[1] == answers[2]  # the three kinds answer identically


def haversine_all(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> list[float]:
    return [haversine_m(lat, lon, a, b) for a, b in zip(lats.tolist(), lons.tolist(), strict=True)]


def test_batches_equal_single_queries_and_pages_concatenate() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    lats, lons = rng.uniform(40, 50, n), rng.uniform(0, 10, n)
    ids = np.arange(n, dtype=np.uint64)
    qlats, qlons = rng.uniform(40, 50, 200), rng.uniform(0, 10, 200)
    for kind in KINDS:
        index = GeoIndex(kind, ids, lats, lons)
        assert len(index) == n
        assert index.memory_bytes() > 0
        for threads in (1, 2):
            batch = index.radius_batch(qlats, qlons, [20_000.0], threads=threads)
            assert batch.queries == 200
            knn = index.knn_batch(qlats, qlons, 5, threads=threads)
            for q in range(0, 200, 37):
                single = index.radius(qlats[q], qlons[q], 20_000.0)
                got = batch.hits(q)
                assert got[0].tolist() == single[0].tolist()
                assert knn.hits(q)[0].tolist() == index.knn(qlats[q], qlons[q], 5)[0].tolist()
        full_ids, _ = index.radius(45.0, 5.0, 30_000.0)
        pages = [index.radius(45.0, 5.0, 30_000.0, limit=7, offset=o)[0] for o in range(0, 200, 7)]
        assert np.concatenate(pages).tolist() == full_ids.tolist()
    cell = GeoIndex("cell", ids, lats, lons)
    assert cell.memory_bytes() / n <= 24  # the goal: at most 24 bytes a point


def test_quadtree_updates_and_sorted_kinds_refuse_them() -> None:
    tree = GeoIndex("quadtree", [], [], [], capacity=4)
    tree.upsert([1, 2, 3], [10.0, 11.0, 12.0], [10.0, 11.0, 12.0])
    tree.upsert([2], [-10.0], [-10.0])
    tree.insert(4, 0.0, 0.0)
    tree.move(4, 1.0, 1.0)
    assert tree.knn(-10.0, -10.0, 1)[0].tolist() == [2]
    assert tree.remove(1)
    assert not tree.remove(1)
    assert tree.remove_many([3, 99]) == 1
    assert sorted(tree.knn(0, 0, 10)[0].tolist()) == [2, 4]
    with pytest.raises(InvalidArgument):
        tree.insert(4, 0.0, 0.0)  # there already
    with pytest.raises(InvalidArgument, match="latitude"):
        tree.upsert([7, 8], [0.0, 95.0], [0.0, 0.0])
    assert len(tree) == 2  # nothing changed
    cell = GeoIndex("cell", [1], [0.0], [0.0])
    with pytest.raises(InvalidArgument, match="quadtree"):
        cell.insert(2, 1.0, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_refused(kind: str) -> None:
    with pytest.raises(InvalidArgument):
        GeoIndex(kind, [1, 2], [0.0, float("nan")], [0.0, 0.0])
    with pytest.raises(InvalidArgument):
        GeoIndex(kind, [1, 1], [0.0, 1.0], [0.0, 1.0])  # a duplicate id
    with pytest.raises(InvalidArgument):
        GeoIndex(kind, [1], [0.0, 1.0], [0.0])  # lengths differ
    with pytest.raises(InvalidArgument):
        GeoIndex(kind, [-1], [0.0], [0.0])
    index = GeoIndex(kind, [1], [0.0], [0.0])
    for lat, lon, radius in ((91.0, 0.0, 1.0), (0.0, 181.0, 1.0), (0.0, 0.0, -1.0)):
        with pytest.raises(InvalidArgument):
            index.radius(lat, lon, radius)
    with pytest.raises(InvalidArgument):
        index.knn(0.0, 0.0, 0)
    with pytest.raises(InvalidArgument):
        index.radius_batch([0.0, 0.0], [0.0], [1.0])
    with pytest.raises(InvalidArgument, match="kind"):
        GeoIndex("rtree", [1], [0.0], [0.0])  # type: ignore[arg-type]


def test_threads_share_a_quadtree_while_it_changes() -> None:
    """Readers and a writer at once: no deadlock (locks are taken without the GIL)."""
    rng = np.random.default_rng(5)
    tree = GeoIndex(
        "quadtree", np.arange(5000), rng.uniform(-60, 60, 5000), rng.uniform(-170, 170, 5000)
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                tree.radius(0.0, 0.0, 2e6)
                len(tree)
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for round_ in range(200):
        ids = rng.integers(0, 8000, 50)
        tree.upsert(
            np.unique(ids),
            rng.uniform(-60, 60, len(np.unique(ids))),
            rng.uniform(-170, 170, len(np.unique(ids))),
        )
        tree.remove_many(rng.integers(0, 8000, 10))
        assert round_ >= 0
    stop.set()
    for thread in readers:
        thread.join(30)
        assert not thread.is_alive()
    assert errors == []


def test_geohash_functions() -> None:
    assert geohash_encode([42.6], [-5.6], 5) == ["ezs42"]
    assert geohash_encode([57.64911], [10.40744], 11) == ["u4pruydqqvj"]
    lats, lons = geohash_decode(["ezs42"])
    assert (round(float(lats[0]), 1), round(float(lons[0]), 1)) == (42.6, -5.6)
    neighbours = geohash_neighbors("ezs42")
    assert len(neighbours) == 8
    assert all(n is not None and len(n) == 5 for n in neighbours)
    with pytest.raises(InvalidArgument):
        geohash_encode([0.0], [0.0], 13)
