"""``ProximityService``: real places on first start only, PostgreSQL shared by two services,
the ``service(options)`` factory, and ``sdi serve proximity`` as a process."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sdi.errors import InvalidArgument
from sdi.proximity.service import ProximityService, service
from sdi.testing import servers
from sdi.testing.broker import ServiceProcess
from sdi.testing.running import TEST_TOKEN, RunningService, request
from sdi.testing.servers import PostgresServer

PARIS = 2988507  # its GeoNames id


Running = RunningService


def nearby(port: int, lat: float, lon: float, radius: int, **extra: object) -> dict[str, Any]:
    query = urlencode({"latitude": lat, "longitude": lon, "radius": radius, **extra})
    status, page = request(port, "GET", f"/v1/search/nearby?{query}")
    assert status == 200, page
    result: dict[str, Any] = page
    return result


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = servers.require_postgres()
    with servers.postgres_server(bindir) as server:
        yield server


def test_places_are_loaded_on_the_first_start_only(tmp_path: Path) -> None:
    first = Running(ProximityService(api_token=TEST_TOKEN, places_min_population=15000), tmp_path)
    try:
        page = nearby(first.port, 48.8566, 2.3522, 5000, category="city")
        assert PARIS in [item["id"] for item in page["businesses"]]
        status, paris = first.request("GET", f"/v1/businesses/{PARIS}")
        assert status == 200
        assert (paris["name"], paris["country"], paris["category"]) == ("Paris", "FR", "city")
        assert paris["attributes"]["population"] > 2_000_000
        api = first.service.api
        assert api is not None
        loaded = api.store.count()
        assert loaded > 30_000
        assert len(api.index) == loaded
        seq = api.store.last_seq()
        assert api.store.changes_since(0) == []  # a SQLite log is trimmed at start
        port = first.port
    finally:
        first.stop()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass  # stopped: nothing listens any more
    second = Running(ProximityService(api_token=TEST_TOKEN, places_min_population=15000), tmp_path)
    try:
        api = second.service.api
        assert api is not None
        assert api.store.last_seq() == seq  # nothing was loaded again
        assert len(api.index) == loaded
    finally:
        second.stop()


def test_two_services_share_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database()
    a = Running(
        ProximityService(api_token=TEST_TOKEN, database_url=url, load_places=False), tmp_path / "a"
    )
    b = Running(
        ProximityService(api_token=TEST_TOKEN, database_url=url, load_places=False), tmp_path / "b"
    )
    try:
        status, created = a.request(
            "POST",
            "/v1/businesses",
            {"name": "Bar", "category": "bar", "latitude": 40.0, "longitude": -3.0},
        )
        assert status == 201
        assert nearby(a.port, 40.0, -3.0, 500)["total"] == 1  # at once on the writer
        started = time.monotonic()
        while nearby(b.port, 40.0, -3.0, 500)["total"] == 0:  # within a poll on the other
            assert time.monotonic() - started < 2.0
            time.sleep(0.01)
        assert b.request("DELETE", f"/v1/businesses/{created['id']}")[0] == 204
        started = time.monotonic()
        while nearby(a.port, 40.0, -3.0, 500)["total"] != 0:
            assert time.monotonic() - started < 2.0
            time.sleep(0.01)
        assert b.request("GET", "/v1/stats")[1]["database"] == "postgresql"
    finally:
        a.stop()
        b.stop()


def test_the_factory_and_bad_options() -> None:
    built = service(
        {"database_url": None, "redis_url": "redis://127.0.0.1:1/0", "load_places": False}
    )
    assert isinstance(built, ProximityService)
    assert built.key == "proximity"
    assert built.redis_url == "redis://127.0.0.1:1/0"
    assert built.load_places is False
    assert service({}).load_places is True  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="--database-url must be a postgresql:// URL"):
        ProximityService(database_url="mysql://x")
    with pytest.raises(InvalidArgument, match="--resp-port must be between"):
        ProximityService(resp_port=70000)
    with pytest.raises(InvalidArgument, match="places_min_population"):
        ProximityService(places_min_population=7)


def test_sdi_serve_proximity(tmp_path: Path) -> None:
    with ServiceProcess(
        "proximity", tmp_path, args=["--no-places", "--api-token", TEST_TOKEN]
    ) as process:
        assert process.port
        status, created = request(
            process.port,
            "POST",
            "/v1/businesses",
            {"name": "Cafe", "category": "cafe", "latitude": 48.85, "longitude": 2.35},
        )
        assert status == 201
        page = nearby(process.port, 48.85, 2.35, 500)
        assert [item["id"] for item in page["businesses"]] == [created["id"]]
        assert process.stop() == 0
        assert any("listening on http://127.0.0.1:" in line for line in process.output)
        process.restart()
        assert request(process.port, "GET", f"/v1/businesses/{created['id']}")[0] == 200


def test_the_redis_geo_commands_follow_the_businesses(tmp_path: Path) -> None:
    import redis

    running = Running(
        ProximityService(api_token=TEST_TOKEN, load_places=False, resp_port=0), tmp_path
    )
    try:
        endpoints = [endpoint.url for endpoint in running.endpoints]
        assert endpoints[1].startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(endpoints[1] + "/0")
        ids = []
        for n, (lat, lon) in enumerate(
            [(48.8566, 2.3522), (48.8606, 2.3376), (48.87, 2.40), (86.0, 0.0)]
        ):
            status, created = running.request(
                "POST",
                "/v1/businesses",
                {"name": f"p{n}", "category": "x", "latitude": lat, "longitude": lon},
            )
            assert status == 201
            ids.append(created["id"])

        def geosearch() -> list[int]:
            hits = client.geosearch(
                "businesses", longitude=2.3522, latitude=48.8566, radius=5, unit="km", sort="ASC"
            )
            return [int(member) for member in hits]

        deadline = time.monotonic() + 2.0
        while len(geosearch()) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        page = nearby(running.port, 48.8566, 2.3522, 5000)
        assert geosearch() == [item["id"] for item in page["businesses"]] == ids[:3]
        assert client.geopos("businesses", str(ids[3])) == [None]  # beyond Redis's 85.05 degrees
        assert running.request("DELETE", f"/v1/businesses/{ids[0]}")[0] == 204
        deadline = time.monotonic() + 2.0
        while ids[0] in geosearch():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        client.close()
    finally:
        running.stop()


def test_writes_need_an_api_token_and_reads_do_not(tmp_path: Path) -> None:
    from sdi.runtime.auth import FIRST_TOKEN_FILE, TOKENS_FILE, TokenStore

    running = Running(ProximityService(load_places=False), tmp_path)
    try:
        # A first start without a configured token writes an admin token and says where.
        token_file = tmp_path / FIRST_TOKEN_FILE
        assert str(token_file) in running.endpoints[0].name
        admin = token_file.read_text().strip()
        body = {"name": "Cafe", "category": "cafe", "latitude": 48.85, "longitude": 2.35}
        for token in (None, "sdi_wrong", TEST_TOKEN):
            status, answer = running.request("POST", "/v1/businesses", body, token=token)
            assert status == 401, answer
            assert "token" in answer["error"]
        status, created = running.request("POST", "/v1/businesses", body, token=admin)
        assert status == 201
        path = f"/v1/businesses/{created['id']}"
        # Reads and searches are public.
        assert running.request("GET", path, token=None) == (200, created)
        assert nearby(running.port, 48.85, 2.35, 500)["total"] == 1
        # A token issued while the service runs works at once; revoked, it stops working.
        store = TokenStore(tmp_path / TOKENS_FILE)
        issued = store.issue("editor")
        assert running.request("PUT", path, {**body, "name": "Bar"}, token=issued)[0] == 200
        assert running.request("DELETE", path, token=None)[0] == 401
        store.revoke(issued)
        assert running.request("DELETE", path, token=issued)[0] == 401
        store.close()
        assert running.request("GET", path, token=None)[1]["name"] == "Bar"
        assert running.request("DELETE", path, token=admin)[0] == 204
    finally:
        running.stop()


def test_a_refused_write_carries_a_bearer_challenge() -> None:
    from sdi.proximity.index import BruteForceIndex
    from sdi.proximity.lbs import ProximityApi
    from sdi.proximity.store import BusinessStore
    from sdi.runtime.auth import Authenticator
    from sdi.runtime.http import Request

    auth = Authenticator("proximity", fixed=[TEST_TOKEN])
    api = ProximityApi(BusinessStore(":memory:"), BruteForceIndex(), auth=auth)
    body = json.dumps({"name": "A", "category": "b", "latitude": 1.0, "longitude": 2.0}).encode()
    refused = asyncio.run(api.handle(Request("POST", "/v1/businesses", "HTTP/1.1", {}, body)))
    assert refused.status == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="sdi proximity"'
    assert api.store.count() == 0
    headers = {"authorization": f"Bearer {TEST_TOKEN}"}
    created = asyncio.run(api.handle(Request("POST", "/v1/businesses", "HTTP/1.1", headers, body)))
    assert created.status == 201
    api.close()
