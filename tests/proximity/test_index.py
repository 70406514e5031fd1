"""BruteForceIndex against a slow pure-Python haversine model.

Hypothesis draws points near the poles and the antimeridian, and duplicates.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument
from sdi.proximity.index import EARTH_RADIUS_M, BruteForceIndex, GeoIndex, haversine_m

#: Distances this close to the radius may fall either side in floating point: not compared.
TOLERANCE_M = 1e-6


def slow_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def model_points(
    points: dict[int, tuple[float, float]], lat: float, lon: float
) -> list[tuple[float, int]]:
    return sorted((slow_haversine(lat, lon, a, b), key) for key, (a, b) in points.items())


latitudes = st.one_of(
    st.floats(-90, 90),
    st.sampled_from([90.0, -90.0, 89.9999, -89.9999, 0.0]),
    st.floats(89.0, 90.0),
    st.floats(-90.0, -89.0),
)
longitudes = st.one_of(
    st.floats(-180, 180),
    st.sampled_from([180.0, -180.0, 179.9999, -179.9999, 0.0]),
    st.floats(179.0, 180.0),
    st.floats(-180.0, -179.0),
)
points_strategy = st.lists(st.tuples(latitudes, longitudes), min_size=0, max_size=150)
radii = st.sampled_from([0.0, 1.0, 500.0, 20_000.0, 200_000.0, 5_000_000.0, 25_000_000.0])


def build(
    points: list[tuple[float, float]], duplicate_every: int = 5
) -> tuple[BruteForceIndex, dict[int, tuple[float, float]]]:
    """An index of ``points`` (every few a duplicate of the previous position, another id)."""
    index = BruteForceIndex()
    model: dict[int, tuple[float, float]] = {}
    positions = []
    for number, drawn in enumerate(points):
        point = (
            positions[-1]
            if duplicate_every and number % duplicate_every == 4 and positions
            else drawn
        )
        positions.append(point)
        model[number + 1] = point
    if positions:
        index.upsert(
            np.arange(1, len(positions) + 1, dtype=np.uint64),
            np.array([p[0] for p in positions]),
            np.array([p[1] for p in positions]),
        )
    return index, model


def check_radius_answer(
    index: GeoIndex, model: dict[int, tuple[float, float]], lat: float, lon: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    ids, distances = index.radius(lat, lon, radius)
    expected = model_points(model, lat, lon)
    sure = {key for distance, key in expected if distance <= radius - TOLERANCE_M}
    maybe = {key for distance, key in expected if abs(distance - radius) <= TOLERANCE_M}
    got = set(ids.tolist())
    assert sure <= got, f"missing {sorted(sure - got)[:5]}"
    assert got <= sure | maybe, f"extra {sorted(got - sure - maybe)[:5]}"
    assert len(got) == len(ids), "an id twice"
    by_id = {key: distance for distance, key in expected}
    for key, distance in zip(ids.tolist(), distances.tolist(), strict=True):
        assert math.isclose(distance, by_id[key], rel_tol=1e-9, abs_tol=1e-6)
    pairs = list(zip(distances.tolist(), ids.tolist(), strict=True))
    assert pairs == sorted(pairs), "not sorted by distance then id"
    return ids, distances


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points_strategy, latitudes, longitudes, radii)
def test_radius_matches_the_slow_model(
    points: list[tuple[float, float]], lat: float, lon: float, radius: float
) -> None:
    index, model = build(points)
    check_radius_answer(index, model, lat, lon, radius)


@settings(max_examples=100, deadline=None)
@given(points_strategy, latitudes, longitudes, radii, st.integers(1, 7))
def test_pages_concatenate_to_the_full_answer(
    points: list[tuple[float, float]], lat: float, lon: float, radius: float, page: int
) -> None:
    index, _ = build(points)
    full_ids, full_distances = index.radius(lat, lon, radius)
    ids: list[int] = []
    distances: list[float] = []
    offset = 0
    while True:
        part_ids, part_distances = index.radius(lat, lon, radius, limit=page, offset=offset)
        assert len(part_ids) <= page
        ids += part_ids.tolist()
        distances += part_distances.tolist()
        offset += page
        if len(part_ids) < page:
            break
    assert ids == full_ids.tolist()
    assert distances == full_distances.tolist()


@settings(max_examples=100, deadline=None)
@given(points_strategy, latitudes, longitudes, st.integers(0, 20))
def test_knn_matches_the_slow_model(
    points: list[tuple[float, float]], lat: float, lon: float, k: int
) -> None:
    index, model = build(points)
    ids, distances = index.knn(lat, lon, k)
    expected = model_points(model, lat, lon)
    assert len(ids) == min(k, len(model))
    for got, (want, _) in zip(distances.tolist(), expected, strict=False):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)
    pairs = list(zip(distances.tolist(), ids.tolist(), strict=True))
    assert pairs == sorted(pairs)
    if len(ids) and len(ids) < len(expected):
        # Nothing left out is nearer than the farthest returned.
        assert expected[len(ids)][0] >= distances[-1] - TOLERANCE_M


def destination(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` from (lat, lon) along ``bearing`` (radians) on the sphere."""
    angle = metres / EARTH_RADIUS_M
    phi1, lam1 = math.radians(lat), math.radians(lon)
    sin_phi2 = math.sin(phi1) * math.cos(angle) + math.cos(phi1) * math.sin(angle) * math.cos(
        bearing
    )
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lam2 = lam1 + math.atan2(
        math.sin(bearing) * math.sin(angle) * math.cos(phi1),
        math.cos(angle) - math.sin(phi1) * sin_phi2,
    )
    return max(-90.0, min(90.0, math.degrees(phi2))), (math.degrees(lam2) + 180.0) % 360.0 - 180.0


@settings(max_examples=150, deadline=None)
@given(
    latitudes,
    longitudes,
    st.sampled_from([1.0, 500.0, 20_000.0, 1_000_000.0, 9_000_000.0]),
    st.lists(st.tuples(st.floats(0, 2 * math.pi), st.floats(0.9, 1.1)), min_size=1, max_size=80),
)
def test_points_near_the_edge_of_the_circle(
    lat: float, lon: float, radius: float, offsets: list[tuple[float, float]]
) -> None:
    points = [destination(lat, lon, bearing, radius * scale) for bearing, scale in offsets]
    index, model = build(points, duplicate_every=0)
    check_radius_answer(index, model, lat, lon, radius)


def test_upserts_and_removes_follow_a_dict_model() -> None:
    rng = random.Random(6)
    index = BruteForceIndex()
    model: dict[int, tuple[float, float]] = {}
    for _round in range(60):
        count = rng.randint(0, 40)
        keys = [rng.randint(1, 120) for _ in range(count)]  # repeats within a batch too
        lats = [rng.uniform(-90, 90) for _ in keys]
        lons = [rng.uniform(-180, 180) for _ in keys]
        index.upsert(np.array(keys, dtype=np.uint64), np.array(lats), np.array(lons))
        for key, lat, lon in zip(keys, lats, lons, strict=True):
            model[key] = (lat, lon)  # the last of repeated ids wins
        gone = [rng.randint(1, 150) for _ in range(rng.randint(0, 15))]
        removed = index.remove(np.array(gone, dtype=np.uint64))
        expected_removed = 0
        for key in gone:
            if model.pop(key, None) is not None:
                expected_removed += 1
        assert removed == expected_removed
        assert len(index) == len(model)
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        check_radius_answer(index, model, lat, lon, rng.choice([1e5, 2e6, 2.1e7]))
    ids, lats, lons = index.points()
    assert {
        key: (a, b) for key, a, b in zip(ids.tolist(), lats.tolist(), lons.tolist(), strict=True)
    } == model
    assert index.memory_bytes() > 0


def test_a_known_distance_and_the_antimeridian() -> None:
    index = BruteForceIndex()
    index.upsert(
        np.array([1, 2, 3], dtype=np.uint64),
        np.array([0.0, 0.0, 0.0]),
        np.array([179.999, -179.999, 0.0]),
    )
    ids, distances = index.radius(0.0, 180.0, 200)
    assert sorted(ids.tolist()) == [1, 2]
    assert distances[0] == pytest.approx(111.195, abs=0.01)
    assert float(haversine_m(90.0, 0.0, 90.0, 123.0)) == pytest.approx(0.0, abs=1e-6)
    # At a pole every longitude is the same point.
    index.upsert(np.array([4, 5], dtype=np.uint64), np.array([90.0, 90.0]), np.array([0.0, 170.0]))
    assert index.radius(90.0, -45.0, 0.5)[0].tolist() == [4, 5]
    assert index.knn(89.0, 10.0, 2)[0].tolist() == [4, 5]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i: i.radius(float("nan"), 0.0, 10), "latitude must be a finite number"),
        (lambda i: i.radius(0.0, 180.5, 10), "longitude must be between -180 and 180"),
        (lambda i: i.radius(0.0, 0.0, -1), "radius must be a finite number of metres >= 0"),
        (lambda i: i.radius(0.0, 0.0, float("inf")), "radius must be a finite number"),
        (lambda i: i.radius(0.0, 0.0, 10, limit=-1), "limit must be an integer >= 0"),
        (lambda i: i.radius(0.0, 0.0, 10, offset=-2), "offset must be an integer >= 0"),
        (lambda i: i.knn(0.0, 0.0, -1), "k must be an integer >= 0"),
        (lambda i: i.knn(95.0, 0.0, 1), "latitude must be between -90 and 90"),
        (
            lambda i: i.upsert(np.array([1], dtype=np.uint64), np.array([np.nan]), np.array([0.0])),
            "latitude at position 0 must be a finite number",
        ),
        (
            lambda i: i.upsert(np.array([1, 2], dtype=np.uint64), np.array([0.0]), np.array([0.0])),
            "must have the same length",
        ),
        (lambda i: i.upsert(np.array([-1]), np.array([0.0]), np.array([0.0])), "ids must be >= 0"),
        (lambda i: i.remove(np.array([1.5])), "ids must be integers"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(call: object, message: str) -> None:
    index = BruteForceIndex()
    index.upsert(np.array([7], dtype=np.uint64), np.array([1.0]), np.array([2.0]))
    with pytest.raises(InvalidArgument, match=message):
        call(index)  # type: ignore[operator]
    assert len(index) == 1
    assert index.radius(1.0, 2.0, 0)[0].tolist() == [7]


def test_the_protocol_is_met() -> None:
    assert isinstance(BruteForceIndex(), GeoIndex)
