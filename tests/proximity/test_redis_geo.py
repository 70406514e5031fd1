"""Redis's GEO commands in sdi: redis-py's geo API, and replies compared with redis-server's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument
from sdi.proximity.redisgeo import (
    LAT_MAX,
    LAT_MIN,
    GeoKeyspace,
    decode_score,
    encode_score,
    encode_scores,
    geo_commands,
    keyspace_info,
)
from sdi.resp import ReplyError
from sdi.runtime.respserver import RespServer, serve_in_thread
from sdi.testing.resp import RawClient
from sdi.testing.servers import RedisServer

pytestmark = pytest.mark.needs_server


@pytest.fixture(scope="module")
def geo_server() -> Iterator[tuple[int, GeoKeyspace]]:
    keyspace = GeoKeyspace()
    server = RespServer(geo_commands(keyspace), info={"keyspace": lambda: keyspace_info(keyspace)})
    with serve_in_thread(server) as port:
        yield port, keyspace


# --- redis-py against sdi ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_geo_api(geo_server: tuple[int, GeoKeyspace], protocol: int) -> None:
    port, _ = geo_server
    client = redis.Redis(port=port, protocol=protocol)
    client.flushall()
    sicily: list[float | str] = [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]
    assert client.geoadd("Sicily", sicily) == 2
    assert client.geoadd("Sicily", [13.361389, 38.115556, "Palermo"], nx=True) == 0
    assert client.geoadd("Sicily", [13.4, 38.1, "Palermo"], xx=True, ch=True) == 1
    assert client.geoadd("Sicily", [13.361389, 38.115556, "Palermo"]) == 0
    assert client.geodist("Sicily", "Palermo", "Catania") == 166274.1516
    assert client.geodist("Sicily", "Palermo", "Catania", "km") == 166.2742
    assert client.geodist("Sicily", "Palermo", "nobody") is None
    hashes = client.geohash("Sicily", "Palermo", "Catania", "x")
    assert [h.decode() if isinstance(h, bytes) else h for h in hashes] == [
        "sqc8b49rny0",
        "sqdtr74hyu0",
        None,
    ]
    positions = client.geopos("Sicily", "Palermo", "x")
    assert positions[0] == pytest.approx((13.36138933897018433, 38.11555639549629859))
    assert positions[1] is None
    assert client.geosearch("Sicily", longitude=15, latitude=37, radius=200, unit="km") == [
        b"Palermo",
        b"Catania",
    ]
    assert client.geosearch(
        "Sicily",
        longitude=15,
        latitude=37,
        radius=200,
        unit="km",
        sort="ASC",
        withdist=True,
        withcoord=True,
        withhash=True,
    ) == [
        [b"Catania", 56.4413, 3479447370796909, (15.087267458438873, 37.50266842333162)],
        [b"Palermo", 190.4424, 3479099956230698, (13.361389338970184, 38.1155563954963)],
    ]
    assert client.geosearch(
        "Sicily", member="Palermo", width=400, height=400, unit="km", sort="DESC", count=1
    ) == [b"Catania"]
    assert client.geosearch(
        "Sicily", longitude=15, latitude=37, radius=200, unit="km", count=1, any=True
    ) in ([b"Palermo"], [b"Catania"])
    assert client.geosearchstore("near", "Sicily", longitude=15, latitude=37, radius=100) == 0
    assert (
        client.geosearchstore(
            "near", "Sicily", longitude=15, latitude=37, radius=100, unit="km", storedist=True
        )
        == 1
    )
    assert client.zscore("near", "Catania") == pytest.approx(56.4413, abs=1e-4)
    assert client.georadius("Sicily", 15, 37, 200, "km", withdist=True, sort="ASC") == [
        [b"Catania", 56.4413],
        [b"Palermo", 190.4424],
    ]
    assert client.georadiusbymember("Sicily", "Palermo", 10, "km") == [b"Palermo"]
    assert client.zscore("Sicily", "Palermo") == 3479099956230698
    assert client.zcard("Sicily") == 2
    assert client.type("Sicily") == b"zset"
    assert client.exists("Sicily", "near", "nothing") == 2
    assert sorted(client.keys("*")) == [b"Sicily", b"near"]
    assert client.keys("S?c[h-j]*") == [b"Sicily"]
    assert client.dbsize() == 2
    assert client.info("keyspace")["db0"]["keys"] == 2
    assert client.zrem("Sicily", "Palermo", "nobody") == 1
    assert client.zrem("Sicily", "Catania") == 1
    assert client.exists("Sicily") == 0
    assert client.delete("near", "x") == 1
    assert client.info("keyspace") == {}
    with pytest.raises(redis.ResponseError, match=r"invalid longitude,latitude pair 181\.000000"):
        client.geoadd("Sicily", [181, 10, "x"])
    with pytest.raises(redis.ResponseError, match="unsupported unit"):
        client.execute_command(  # type: ignore[no-untyped-call]
            "GEOSEARCH", "Sicily", "FROMLONLAT", 1, 1, "BYRADIUS", 1, "yd"
        )
    client.close()


def test_resp3_coordinates_are_doubles(geo_server: tuple[int, GeoKeyspace]) -> None:
    port, _ = geo_server
    client = redis.Redis(port=port, protocol=3)
    client.flushall()
    client.geoadd("Sicily", [13.361389, 38.115556, "Palermo"])
    raw = RawClient(port, protocol=3)
    assert raw.call("GEOPOS", "Sicily", "Palermo", "x") == [
        [13.36138933897018433, 38.11555639549629859],
        None,
    ]
    assert raw.call("ZSCORE", "Sicily", "Palermo") == 3479099956230698.0
    assert raw.call(
        "GEOSEARCH", "Sicily", "FROMLONLAT", "13", "38", "BYRADIUS", "100", "km", "WITHCOORD"
    ) == [[b"Palermo", [13.36138933897018433, 38.11555639549629859]]]
    raw.close()
    assert client.geosearch("Sicily", longitude=13, latitude=38, radius=100, unit="km") == [
        b"Palermo"
    ]
    client.close()


def test_python_api_batch_load(geo_server: tuple[int, GeoKeyspace]) -> None:
    port, keyspace = geo_server
    keyspace.keys.clear()
    rng = np.random.default_rng(7)
    lons = rng.uniform(-180, 180, 20_000)
    lats = rng.uniform(LAT_MIN, LAT_MAX, 20_000)
    names = [f"b{i}" for i in range(20_000)]
    assert keyspace.geoadd("biz", lons, lats, names) == 20_000
    assert keyspace.geoadd("biz", lons[:10] + 0.5 * (lons[:10] < 179), lats[:10], names[:10]) == 0
    scores = encode_scores(lons[10:20], lats[10:20])
    assert [int(s) for s in scores] == [
        encode_score(a, b) for a, b in zip(lons[10:20], lats[10:20], strict=True)
    ]
    hits = keyspace.geosearch("biz", lon=2.35, lat=48.85, radius=500, unit="km", sort="asc")
    client = redis.Redis(port=port)
    served = client.geosearch(
        "biz", longitude=2.35, latitude=48.85, radius=500, unit="km", sort="ASC"
    )
    assert [hit.member for hit in hits] == served
    assert all(hit.distance <= 500 for hit in hits)
    with pytest.raises(InvalidArgument, match="invalid longitude,latitude pair"):
        keyspace.geoadd("biz", [0.0, math.nan], [0.0, 0.0], ["a", "b"])
    assert keyspace.zrem("biz", names) == 20_000
    assert keyspace.get("biz") is None
    assert decode_score(0) == pytest.approx((-180, LAT_MIN), abs=1e-5)
    client.close()


# --- differential: sdi and redis-server, reply by reply -----------------------------------

MEMBERS = [f"m{i}" for i in range(8)]
UNITS = ["m", "km", "ft", "mi", "M", "Km"]
special_lons = st.sampled_from([-180.0, 180.0, 179.99999, -179.99999, 0.0, 90.0])
special_lats = st.sampled_from([LAT_MIN, LAT_MAX, 85.0, -85.0, 84.99999, 0.0, 66.5, -80.5])
# Clusters near a few anchors (the antimeridian, the latitude limits) so that
# small searches find several points, cross cell edges and meet ties.
near_lons = st.tuples(st.sampled_from([0.0, 180.0, -180.0, 13.36]), st.floats(-0.05, 0.05)).map(
    lambda pair: min(180.0, max(-180.0, pair[0] + pair[1]))
)
near_lats = st.tuples(st.sampled_from([0.0, LAT_MAX, LAT_MIN, 38.1]), st.floats(-0.05, 0.05)).map(
    lambda pair: min(LAT_MAX, max(LAT_MIN, pair[0] + pair[1]))
)
lons = st.one_of(special_lons, st.floats(-180, 180), near_lons)
lats = st.one_of(special_lats, st.floats(LAT_MIN, LAT_MAX), near_lats)
members = st.sampled_from(MEMBERS)
radii = st.one_of(
    st.sampled_from(["0", "1", "100", "5000", "20000000", "inf"]),
    st.floats(0, 3e6).map(repr),
    st.floats(0, 20).map(repr),
)
units = st.sampled_from(UNITS)


def _number(value: float) -> str:
    return repr(value)


@st.composite
def geoadd_commands(draw: st.DrawFn) -> list[str]:
    command = ["GEOADD", "k"]
    command += draw(st.lists(st.sampled_from(["NX", "XX", "CH"]), max_size=2, unique=True))
    for _ in range(draw(st.integers(1, 4))):
        command += [_number(draw(lons)), _number(draw(lats)), draw(members)]
    return command


@st.composite
def search_commands(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(["GEOSEARCH", "GEOSEARCH", "GEOSEARCHSTORE", "GEORADIUS", "BYMEMBER"])
    )
    if kind == "GEORADIUS":
        command = ["GEORADIUS", "k", _number(draw(lons)), _number(draw(lats))]
        command += [draw(radii), draw(units)]
    elif kind == "BYMEMBER":
        command = ["GEORADIUSBYMEMBER", "k", draw(members), draw(radii), draw(units)]
    else:
        command = ["GEOSEARCH", "k"] if kind == "GEOSEARCH" else ["GEOSEARCHSTORE", "dest", "k"]
        if draw(st.booleans()):
            command += ["FROMMEMBER", draw(members)]
        else:
            command += ["FROMLONLAT", _number(draw(lons)), _number(draw(lats))]
        if draw(st.booleans()):
            command += ["BYRADIUS", draw(radii), draw(units)]
        else:
            command += ["BYBOX", draw(radii), draw(radii), draw(units)]
    sort = draw(st.sampled_from([None, "ASC", "DESC"]))
    if sort:
        command.append(sort)
    if draw(st.booleans()):
        command += ["COUNT", str(draw(st.integers(1, 6)))]
        # Redis partly sorts for COUNT without ANY, in no set order among equal
        # distances: a stored set could then differ from ours by which of the
        # tied members made the cut, and so every later reply about it.
        if kind == "GEOSEARCHSTORE" or draw(st.booleans()):
            command.append("ANY")
    if kind == "GEOSEARCHSTORE":
        if draw(st.booleans()):
            command.append("STOREDIST")
    else:
        command += draw(
            st.lists(
                st.sampled_from(["WITHDIST", "WITHCOORD", "WITHHASH"]), max_size=3, unique=True
            )
        )
    return command


@st.composite
def other_commands(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(["ZREM", "GEODIST", "GEOPOS", "GEOHASH", "ZSCORE", "ZCARD", "DEST"])
    )
    if kind == "ZREM":
        return ["ZREM", "k", *draw(st.lists(members, min_size=1, max_size=3))]
    if kind == "GEODIST":
        command = ["GEODIST", "k", draw(members), draw(members)]
        return command + ([draw(units)] if draw(st.booleans()) else [])
    if kind in ("GEOPOS", "GEOHASH"):
        return [kind, "k", *draw(st.lists(members, min_size=1, max_size=3))]
    if kind == "ZSCORE":
        return ["ZSCORE", draw(st.sampled_from(["k", "dest"])), draw(members)]
    if kind == "DEST":
        return ["GEOPOS", "dest", *MEMBERS]
    return ["ZCARD", "k"]


commands = st.one_of(geoadd_commands(), geoadd_commands(), search_commands(), other_commands())


def _with_dist(command: list[str]) -> list[str]:
    return [part for part in command if part != "ANY"] + ["WITHDIST"]


def _entries(reply: list[Any]) -> list[tuple[bytes, bytes]]:
    return [(entry[0], entry[1]) for entry in reply]


def _same_up_to_ties(
    command: list[str], expected: Any, got: Any, redis_client: RawClient, sdi_client: RawClient
) -> bool:
    """Whether two search replies differ only where Redis leaves the order or choice open."""
    if not isinstance(expected, list) or not isinstance(got, list) or len(expected) != len(got):
        return False
    with_dist = command if "WITHDIST" in command else _with_dist(command)
    upper = [part.upper() for part in command]
    if "ANY" in upper:
        # Any `count` points inside will do: compare with the full answer.
        full = command[: upper.index("COUNT")] + command[upper.index("COUNT") + 3 :]
        everything = redis_client.call(*full)
        pool = {entry if isinstance(entry, bytes) else entry[0] for entry in everything}
        names = [entry if isinstance(entry, bytes) else entry[0] for entry in got]
        return set(names) <= pool and len(set(names)) == len(names)
    a = _entries(redis_client.call(*with_dist))
    b = _entries(sdi_client.call(*with_dist))
    if [d for _, d in a] != [d for _, d in b]:
        return False
    cut = "COUNT" in upper
    full_groups: dict[bytes, set[bytes]] = {}
    if cut:
        at = upper.index("COUNT")
        for name, d in _entries(redis_client.call(*(with_dist[:at] + with_dist[at + 2 :]))):
            full_groups.setdefault(d, set()).add(name)
    last = a[-1][1] if a else None
    for d in {d for _, d in a}:
        group_a = sorted(name for name, dist in a if dist == d)
        group_b = sorted(name for name, dist in b if dist == d)
        if d == last and cut:
            if not set(group_b) <= full_groups.get(d, set()):
                return False
        elif group_a != group_b:
            return False
    return True


def _plain(value: Any) -> Any:
    """A reply with errors as comparable ("error", text) pairs."""
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


SEARCHES = {"GEOSEARCH", "GEORADIUS", "GEORADIUSBYMEMBER"}


@pytest.fixture(scope="module")
def reference_redis() -> Iterator[RedisServer]:
    from sdi.testing import servers

    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as server:
        yield server


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    protocol=st.sampled_from([2, 3]),
    script=st.lists(commands, min_size=1, max_size=25),
)
def test_differential_against_redis(
    geo_server: tuple[int, GeoKeyspace],
    reference_redis: RedisServer,
    protocol: int,
    script: list[list[str]],
) -> None:
    redis_client = RawClient(reference_redis.port, protocol)
    sdi_client = RawClient(geo_server[0], protocol)
    try:
        for client in (redis_client, sdi_client):
            client.call("FLUSHALL")
        for command in script:
            expected = redis_client.call(*command)
            got = sdi_client.call(*command)
            if isinstance(expected, ReplyError):
                assert isinstance(got, ReplyError), (command, expected, got)
                assert str(got) == str(expected), command
                continue
            if got == expected:
                continue
            assert command[0] in SEARCHES, (command, expected, got)
            assert _same_up_to_ties(command, expected, got, redis_client, sdi_client), (
                command,
                expected,
                got,
            )
    finally:
        redis_client.close()
        sdi_client.close()


ERROR_CASES = [
    ["GEOADD", "k", "181", "10", "a"],
    ["GEOADD", "k", "10", "86", "a"],
    ["GEOADD", "k", "inf", "10", "a"],
    ["GEOADD", "k", "nan", "10", "a"],
    ["GEOADD", "k", "1e400", "10", "a"],
    ["GEOADD", "k", "0x10", "10", "a"],
    ["GEOADD", "k", " 1", "10", "a"],
    ["GEOADD", "k", "1", "2"],
    ["GEOADD", "k", "NX", "XX", "1", "2", "a"],
    ["GEOADD", "k", "NX", "CH", "CH"],
    ["GEOADD", "k", "1", "2", "a", "3"],
    ["GEOSEARCH", "k"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "COUNT", "0"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "COUNT", "-2"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "COUNT", "x"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "-1", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "x", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "nan", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "yd"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYBOX", "-1", "1", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYBOX", "1", "x", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "ASC", "DESC"],
    ["GEOSEARCH", "k", "BYBOX", "1", "1", "km", "ASC"],
    ["GEOSEARCH", "k", "FROMMEMBER", "zz", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "FROMMEMBER", "a", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "BYBOX", "1", "1", "km"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "ANY"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "STOREDIST"],
    ["GEOSEARCH", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "STORE", "x"],
    ["GEOSEARCH", "k", "FROMLONLAT", "200", "2", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "nokey", "FROMMEMBER", "x", "BYRADIUS", "1", "km"],
    ["geosearch", "k", "fromlonlat", "1", "2", "asc", "withdist"],
    ["GEOSEARCHSTORE", "d", "k", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km", "WITHDIST"],
    ["GEOSEARCHSTORE", "d", "nokey", "FROMLONLAT", "1", "2", "BYRADIUS", "1", "km"],
    ["GEORADIUS", "k", "1", "2", "1", "km", "STORE"],
    ["GEORADIUS", "k", "1", "2", "1", "km", "WITHDIST", "STORE", "x"],
    ["GEORADIUS", "k", "1", "2", "1", "km", "ANY"],
    ["GEORADIUS_RO", "k", "1", "2", "1", "km", "STORE", "x"],
    ["GEORADIUSBYMEMBER", "k", "zz", "1", "km"],
    ["GEORADIUSBYMEMBER", "nokey", "zz", "x", "km"],
    ["GEODIST", "k", "a", "b", "yd"],
    ["GEODIST", "k", "a", "b", "km", "x"],
    ["GEODIST", "k", "a"],
    ["GEOPOS"],
    ["GEOPOS", "k"],
    ["GEOHASH", "nokey", "a", "b"],
    ["ZREM", "k"],
    ["ZCARD", "k", "x"],
    ["TYPE", "k"],
    ["TYPE", "nokey"],
    ["FLUSHDB", "foo"],
    ["DBSIZE", "x"],
    ["NOSUCHCOMMAND", "a", "b"],
]


def test_errors_match_redis(
    geo_server: tuple[int, GeoKeyspace], reference_redis: RedisServer
) -> None:
    redis_client = RawClient(reference_redis.port)
    sdi_client = RawClient(geo_server[0])
    for client in (redis_client, sdi_client):
        client.call("FLUSHALL")
        client.call("GEOADD", "k", "1", "2", "a", "1.001", "2.001", "b")
    for command in ERROR_CASES:
        assert _plain(sdi_client.call(*command)) == _plain(redis_client.call(*command)), command
    redis_client.close()
    sdi_client.close()
