"""The HTTP API end to end (http.client against a running ProximityService).

Searches are compared with a slow haversine model over the stored businesses;
every bad input gets 400 and changes nothing; writes are searchable as soon as
their response arrives (the stated delay: none for writes through the API, one
poll interval, 100 ms, for writes to the database by another process).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sdi.proximity.index import EARTH_RADIUS_M
from sdi.proximity.lbs import ALLOWED_RADII_M
from sdi.proximity.service import DATABASE_FILE, ProximityService
from sdi.proximity.store import Business, BusinessStore
from sdi.testing.running import TEST_TOKEN, RunningService
from sdi.testing.servers import RedisServer

CENTRES = [(48.8566, 2.3522), (0.0, 179.995), (-33.87, 151.21)]
CATEGORIES = ["cafe", "museum", "shop"]


class Running(RunningService):
    """The service with a search client."""

    def search(self, **params: object) -> tuple[int, Any]:
        return self.request("GET", "/v1/search/nearby?" + urlencode(params))

    def search_all(self, page_size: int = 37, **params: object) -> tuple[list[dict[str, Any]], int]:
        """Every page of a search, concatenated; and the total the first page gave."""
        status, page = self.search(page_size=page_size, **params)
        assert status == 200, page
        found = list(page["businesses"])
        total = page["total"]
        while page["next_page_token"] is not None:
            status, page = self.search(
                page_size=page_size, page_token=page["next_page_token"], **params
            )
            assert status == 200, page
            assert page["total"] == total
            found += page["businesses"]
        return found, total


def slow_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def seed(path: Path, count: int = 3000) -> list[Business]:
    rng = random.Random(7)
    rows = []
    for n in range(count):
        lat, lon = rng.choice(CENTRES)
        lat = max(-90.0, min(90.0, lat + rng.gauss(0, 0.08)))
        lon = (lon + rng.gauss(0, 0.1) + 180) % 360 - 180
        rows.append(Business(f"place {n}", rng.choice(CATEGORIES), lat, lon, id=n + 1))
    store = BusinessStore(path)
    store.bulk_upsert(rows)
    store.close()
    return rows


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Business]]:
    path = tmp_path_factory.mktemp("proximity")
    return path, seed(path / DATABASE_FILE)


@pytest.fixture
def lbs(seeded: tuple[Path, list[Business]], tmp_path: Path) -> Iterator[Running]:
    source, _ = seeded
    (tmp_path / DATABASE_FILE).write_bytes((source / DATABASE_FILE).read_bytes())
    running = Running(ProximityService(api_token=TEST_TOKEN, load_places=False), tmp_path)
    try:
        yield running
    finally:
        running.stop()


def expected(
    rows: list[Business], lat: float, lon: float, radius: float, category: str | None = None
) -> tuple[list[int], set[int]]:
    """Ids surely inside (sorted by distance, id) and ids on the edge (either answer is right)."""
    scored = sorted(
        (slow_haversine(lat, lon, row.latitude, row.longitude), row.id)
        for row in rows
        if category is None or row.category == category
    )
    sure = [key for distance, key in scored if distance <= radius - SNAP_M]
    edge = {key for distance, key in scored if abs(distance - radius) <= SNAP_M}
    return sure, edge


#: How far the index's distances may be from exact ones: it stores coordinates to
#: 1e-7 degree (about 1.1 cm), so a distance moves by at most about that much.
SNAP_M = 0.02


def test_search_matches_the_slow_model_page_by_page(
    lbs: Running, seeded: tuple[Path, list[Business]]
) -> None:
    _, rows = seeded
    by_id = {row.id: row for row in rows}
    rng = random.Random(8)
    queries = [(lat, lon) for lat, lon in CENTRES] + [(48.9, 2.4), (0.01, -179.999)]
    totals = []
    for lat, lon in queries:
        for radius in ALLOWED_RADII_M:
            category = rng.choice([None, *CATEGORIES])
            params: dict[str, object] = {"latitude": lat, "longitude": lon, "radius": radius}
            if category is not None:
                params["category"] = category
            found, total = lbs.search_all(**params)
            sure, edge = expected(rows, lat, lon, radius, category)
            got = [item["id"] for item in found]
            assert total == len(found)
            totals.append(total)
            assert sorted(key for key in got if key not in edge) == sorted(sure)
            exact = []
            for item in found:
                row = by_id[item["id"]]
                assert item["name"] == row.name
                assert item["category"] == row.category
                assert (item["latitude"], item["longitude"]) == (row.latitude, row.longitude)
                want = slow_haversine(lat, lon, row.latitude, row.longitude)
                assert item["distance_m"] == pytest.approx(want, abs=SNAP_M)
                exact.append(want)
            # Nearest first: two results only swap when their exact distances are within
            # what the stored coordinates' rounding can move them.
            assert all(b >= a - 2 * SNAP_M for a, b in itertools.pairwise(exact))
            distances = [item["distance_m"] for item in found]
            assert distances == sorted(distances)
    assert sum(totals) > 1000  # the answers were not all empty...
    assert max(totals) > 37 * 3  # ... and some took several pages


def test_a_created_business_is_found_at_once_moves_and_disappears(lbs: Running) -> None:
    body = {
        "name": "New cafe",
        "category": "cafe",
        "latitude": 10.5,
        "longitude": -20.25,
        "city": "Nowhere",
    }
    status, created = lbs.request("POST", "/v1/businesses", body)
    assert status == 201
    business_id = created["id"]
    assert created["city"] == "Nowhere"
    # No wait: the index has the change before the POST's response is sent.
    status, page = lbs.search(latitude=10.5, longitude=-20.25, radius=500)
    assert [item["id"] for item in page["businesses"]] == [business_id]
    assert page["businesses"][0]["distance_m"] == 0.0
    assert lbs.request("GET", f"/v1/businesses/{business_id}") == (200, created)
    moved = {**body, "latitude": -10.5, "longitude": 20.25, "name": "Moved cafe"}
    status, updated = lbs.request("PUT", f"/v1/businesses/{business_id}", moved)
    assert status == 200
    assert updated["name"] == "Moved cafe"
    assert lbs.search(latitude=10.5, longitude=-20.25, radius=20000)[1]["total"] == 0
    status, page = lbs.search(latitude=-10.5, longitude=20.2501, radius=500)
    assert [(item["id"], item["name"]) for item in page["businesses"]] == [
        (business_id, "Moved cafe")
    ]
    assert lbs.request("DELETE", f"/v1/businesses/{business_id}") == (204, None)
    assert lbs.search(latitude=-10.5, longitude=20.25, radius=20000)[1]["total"] == 0
    assert lbs.request("GET", f"/v1/businesses/{business_id}")[0] == 404
    assert lbs.request("DELETE", f"/v1/businesses/{business_id}")[0] == 404
    assert lbs.request("PUT", f"/v1/businesses/{business_id}", moved)[0] == 404


def test_a_write_by_another_process_is_searchable_within_the_poll_interval(
    lbs: Running, tmp_path: Path
) -> None:
    # Another writer of the same database (here a second connection to the SQLite file).
    other = BusinessStore(tmp_path / DATABASE_FILE)
    try:
        other.put(Business("Elsewhere", "shop", -45.0, 170.0, id=10**9))
        started = time.monotonic()
        while lbs.search(latitude=-45.0, longitude=170.0, radius=500)[1]["total"] == 0:
            assert time.monotonic() - started < 2.0, "not applied within 2 s"
            time.sleep(0.01)
        # 100 ms poll interval, plus the poll itself and slack for a busy test machine.
        assert time.monotonic() - started < 1.0
    finally:
        other.close()


BAD_SEARCHES: list[tuple[dict[str, object], str]] = [
    ({"longitude": 2, "radius": 500}, "latitude is required"),
    ({"latitude": "", "longitude": 2, "radius": 500}, "latitude is required"),
    ({"latitude": "abc", "longitude": 2, "radius": 500}, "latitude must be a number"),
    ({"latitude": "nan", "longitude": 2, "radius": 500}, "latitude must be a finite number"),
    ({"latitude": "inf", "longitude": 2, "radius": 500}, "latitude must be a finite number"),
    ({"latitude": 91, "longitude": 2, "radius": 500}, "latitude must be between -90 and 90"),
    ({"latitude": 1, "longitude": -180.5, "radius": 500}, "longitude must be between -180 and 180"),
    ({"latitude": 1, "longitude": 2}, "radius is required"),
    (
        {"latitude": 1, "longitude": 2, "radius": 600},
        "radius must be one of 500, 1000, 2000, 5000, 20000",
    ),
    ({"latitude": 1, "longitude": 2, "radius": -500}, "radius must be one of"),
    ({"latitude": 1, "longitude": 2, "radius": "nan"}, "radius must be one of"),
    ({"latitude": 1, "longitude": 2, "radius": "5km"}, "radius must be a number"),
    (
        {"latitude": 1, "longitude": 2, "radius": 500, "page_size": 0},
        "page_size must be from 1 to 100",
    ),
    (
        {"latitude": 1, "longitude": 2, "radius": 500, "page_size": 101},
        "page_size must be from 1 to 100",
    ),
    (
        {"latitude": 1, "longitude": 2, "radius": 500, "page_size": "x"},
        "page_size must be an integer",
    ),
    (
        {"latitude": 1, "longitude": 2, "radius": 500, "page_token": "abc"},
        "page_token is not a token",
    ),
    (
        {"latitude": 1, "longitude": 2, "radius": 500, "page_token": "e30.AAAA"},
        "page_token is not a token",
    ),
    ({"latitude": 1, "longitude": 2, "radius": 500, "lat": 1}, "unknown parameter"),
]


def test_bad_searches_get_400(lbs: Running) -> None:
    for params, message in BAD_SEARCHES:
        status, answer = lbs.search(**params)
        assert status == 400, (params, answer)
        assert message in answer["error"], (params, answer)
    status, answer = lbs.request(
        "GET", "/v1/search/nearby?latitude=1&latitude=2&longitude=2&radius=500"
    )
    assert (status, answer["error"]) == (400, "latitude must be given once, not 2 times")


def test_page_tokens_are_tamper_evident(lbs: Running) -> None:
    lat, lon = CENTRES[0]
    status, page = lbs.search(latitude=lat, longitude=lon, radius=20000, page_size=5)
    assert status == 200
    token = page["next_page_token"]
    assert token is not None
    assert (
        lbs.search(latitude=lat, longitude=lon, radius=20000, page_size=5, page_token=token)[0]
        == 200
    )
    # The same token for another query (radius, place or category) is refused.
    for changed in ({"radius": 5000}, {"latitude": lat + 0.001}, {"category": "cafe"}):
        params: dict[str, object] = {
            "latitude": lat,
            "longitude": lon,
            "radius": 20000,
            "page_token": token,
        }
        status, answer = lbs.search(**{**params, **changed})
        assert status == 400
        assert "page_token was issued for another search" in answer["error"]
    # A token edited to skip ahead (its payload changed, its MAC kept) is refused.
    payload, mac = token.split(".")
    import base64

    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(b'"o":5', b'"o":50')
    forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac
    status, answer = lbs.search(latitude=lat, longitude=lon, radius=20000, page_token=forged)
    assert (status, answer["error"]) == (400, "page_token is not a token this service issued")


GOOD = {"name": "Shop", "category": "shop", "latitude": 1.0, "longitude": 2.0}
BAD_BODIES: list[tuple[bytes, str]] = [
    (b"", "the body must be a JSON object"),
    (b"{", "the body must be a JSON object"),
    (b"\xff", "the body must be a JSON object"),
    (b"[]", "a business is a JSON object, not an array"),
    (
        b'{"name": "x", "category": "c", "latitude": NaN, "longitude": 1}',
        "latitude must be a finite number",
    ),
    (
        b'{"name": "x", "category": "c", "latitude": 1, "longitude": Infinity}',
        "longitude must be a finite number",
    ),
    (json.dumps({**GOOD, "latitude": None}).encode(), "latitude is required"),
    (
        json.dumps({k: v for k, v in GOOD.items() if k != "longitude"}).encode(),
        "longitude is required",
    ),
    (json.dumps({**GOOD, "latitude": 90.0001}).encode(), "latitude must be between -90 and 90"),
    (json.dumps({**GOOD, "longitude": -181}).encode(), "longitude must be between -180 and 180"),
    (json.dumps({**GOOD, "latitude": "1.0"}).encode(), "latitude must be a number, not str"),
    (json.dumps({**GOOD, "longitude": [1]}).encode(), "longitude must be a number, not list"),
    (json.dumps({**GOOD, "latitude": False}).encode(), "latitude must be a number, not bool"),
    (json.dumps({**GOOD, "name": 3}).encode(), "name must be a string"),
    (json.dumps({**GOOD, "category": ""}).encode(), "category must not be empty"),
    (json.dumps({**GOOD, "address": {"a": 1}}).encode(), "address must be a string, not an object"),
    (json.dumps({**GOOD, "attributes": "x"}).encode(), "attributes must be a JSON object"),
    (json.dumps({**GOOD, "rating": 5}).encode(), "unknown field(s) 'rating'"),
]


def test_bad_writes_get_400_and_change_nothing(lbs: Running, tmp_path: Path) -> None:
    status, existing = lbs.request("POST", "/v1/businesses", GOOD)
    assert status == 201
    path = f"/v1/businesses/{existing['id']}"
    api = lbs.service.api
    assert api is not None
    before = (api.store.count(), api.store.last_seq(), len(api.index))
    for body, message in BAD_BODIES:
        for method, target in (("POST", "/v1/businesses"), ("PUT", path)):
            status, answer = lbs.request(method, target, raw=body)
            assert status == 400, (method, body, answer)
            assert message in answer["error"], (method, body, answer)
    for bad_id in ("abc", "0", "-1", "1.5", "99999999999999999999"):
        for method in ("GET", "PUT", "DELETE"):
            status, answer = lbs.request(method, f"/v1/businesses/{bad_id}", GOOD)
            assert status == 400, (method, bad_id, answer)
            assert "business id" in answer["error"]
    assert (api.store.count(), api.store.last_seq(), len(api.index)) == before
    assert lbs.request("GET", path) == (200, existing)


def test_routes_and_methods(lbs: Running) -> None:
    assert lbs.request("GET", "/nope")[0] == 404
    assert lbs.request("POST", "/v1/search/nearby")[0] == 405
    assert lbs.request("GET", "/v1/businesses")[0] == 405
    assert lbs.request("POST", "/v1/businesses/1")[0] == 405
    status, stats = lbs.request("GET", "/v1/stats")
    assert status == 200
    assert stats["businesses_indexed"] == 3000
    assert stats["index"] == "QuadtreeIndex"
    assert stats["database"] == "sqlite"


def test_the_redis_cache_path(
    redis_server: RedisServer, seeded: tuple[Path, list[Business]], tmp_path: Path
) -> None:
    source, _ = seeded
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / DATABASE_FILE).write_bytes((source / DATABASE_FILE).read_bytes())
    both = [
        Running(
            ProximityService(api_token=TEST_TOKEN, load_places=False, redis_url=redis_server.url),
            tmp_path / "a",
        ),
        Running(
            ProximityService(
                api_token=TEST_TOKEN,
                load_places=False,
                redis_url=redis_server.url,
                search_via="cache",
            ),
            tmp_path / "b",
        ),
    ]
    try:
        # The two share Redis; each has its own copy of the database (they are compared).
        via_index, via_cache = both
        for lat, lon in CENTRES:
            for radius in (500, 5000, 20000):
                a = via_index.search_all(latitude=lat, longitude=lon, radius=radius)
                b = via_cache.search_all(latitude=lat, longitude=lon, radius=radius)
                assert [item["id"] for item in a[0]] == [item["id"] for item in b[0]]
                assert a[1] == b[1]
        stats = via_cache.request("GET", "/v1/stats")[1]
        assert stats["cache"]["hits"] + stats["cache"]["misses"] > 0
        # A write through the API invalidates what the cache held.
        status, created = via_index.request("POST", "/v1/businesses", GOOD)
        assert status == 201
        assert via_index.request("GET", f"/v1/businesses/{created['id']}")[1]["name"] == "Shop"
        renamed = {**GOOD, "name": "Renamed"}
        assert via_index.request("PUT", f"/v1/businesses/{created['id']}", renamed)[0] == 200
        assert via_index.request("GET", f"/v1/businesses/{created['id']}")[1]["name"] == "Renamed"
        page = via_index.search(latitude=1.0, longitude=2.0, radius=500)[1]
        assert [item["name"] for item in page["businesses"]] == ["Renamed"]
    finally:
        for running in both:
            running.stop()


def test_concurrent_writes_and_searches_leave_the_index_equal_to_the_store(lbs: Running) -> None:
    api = lbs.service.api
    assert api is not None
    errors: list[object] = []

    def writer(seed_value: int) -> None:
        rng = random.Random(seed_value)
        mine: list[int] = []
        for _ in range(40):
            action = rng.random()
            body = {
                "name": "w",
                "category": "shop",
                "latitude": rng.uniform(-1, 1),
                "longitude": rng.uniform(-1, 1),
            }
            if action < 0.5 or not mine:
                status, created = lbs.request("POST", "/v1/businesses", body)
                mine.append(created["id"])
            elif action < 0.8:
                status, _ = lbs.request("PUT", f"/v1/businesses/{rng.choice(mine)}", body)
            else:
                victim = mine.pop(rng.randrange(len(mine)))
                status, _ = lbs.request("DELETE", f"/v1/businesses/{victim}")
            if status not in (200, 201, 204):
                errors.append(status)

    def searcher() -> None:
        for _ in range(40):
            status, page = lbs.search(latitude=0.0, longitude=0.0, radius=20000, page_size=100)
            if status != 200:
                errors.append(page)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=searcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    api.sync_index()
    _, ids, lats, lons = api.store.snapshot()
    stored = dict(zip(ids.tolist(), zip(lats.tolist(), lons.tolist(), strict=True), strict=True))
    index = api.index
    assert len(index) == len(stored)
    for key, (lat, lon) in stored.items():  # every stored business is indexed where it is
        near, _ = index.radius(lat, lon, 0.05)
        assert key in near.tolist()
