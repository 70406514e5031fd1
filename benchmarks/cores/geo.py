"""Proximity search: sdi's compiled indexes beside scipy's cKDTree, Redis GEOSEARCH and H3.

Points are ``n`` ids with coordinates, either uniform over the sphere's
latitudes -80..80 (Redis GEO refuses past 85.05) or clustered like cities
(2,000 centres, normal spread of 5 km). Every library answers the same
queries, taking turns round by round, and the figure is the median of the
rounds:

* **radius queries/s** (1 km and 5 km around query points at data points,
  moved by up to about a kilometre): sdi ``GeoIndex.radius_batch`` of all
  the queries in one call (one thread; ids and exact great-circle distances, sorted by distance);
  ``cKDTree.query_ball_point`` on 3-D unit vectors with the chord for the
  radius (one worker; unsorted indices, no distances: less work than sdi's);
  Redis ``GEOSEARCH FROMLONLAT BYRADIUS .. ASC WITHDIST`` over a pipeline
  (redis-server started here, the client in this process, hiredis parsing);
  an H3 lookup: ``latlng_to_cell`` at resolution 9 and ``grid_disk`` of the
  rings that cover the radius, ids from a dict of cells, then haversine in
  numpy over the candidates.
* **k-nearest queries/s** (k = 10): ``knn_batch`` beside ``cKDTree.query``.
* **build, points/s** and **bytes per point** (``memory_bytes()``; Redis:
  ``used_memory`` grown by the load, divided by the points).

Goals (issue 6): at least 2x cKDTree's query throughput, at least 50x
GEOSEARCH, at most 24 bytes per point.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale  # noqa: E402
from sdi.geo import EARTH_RADIUS_M, GeoIndex  # noqa: E402

SIZES = {  # scale: (points, queries, rounds)
    "tiny": (5_000, 200, 1),
    "quick": (1_000_000, 5_000, 3),
    "full": (10_000_000, 20_000, 5),
}
K = 10


def _points(n: int, clustered: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if not clustered:
        lats = np.degrees(
            np.arcsin(rng.uniform(np.sin(np.radians(-80)), np.sin(np.radians(80)), n))
        )
        return lats, rng.uniform(-180, 180, n)
    centres_lat = np.degrees(np.arcsin(rng.uniform(-0.9, 0.9, 2000)))
    centres_lon = rng.uniform(-179, 179, 2000)
    which = rng.integers(0, 2000, n)
    spread = 5_000 / EARTH_RADIUS_M * 180 / np.pi  # 5 km in degrees of latitude
    lats = np.clip(centres_lat[which] + rng.normal(0, spread, n), -80, 80)
    lons = centres_lon[which] + rng.normal(0, spread, n) / np.cos(np.radians(lats))
    return lats, np.clip(lons, -180, 180)


def _unit(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lats), np.radians(lons)
    return np.column_stack((np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)))


def _rate(work: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def run(scale: Scale, progress: Progress) -> list[Result]:
    from scipy.spatial import cKDTree

    n, queries, rounds = SIZES[scale]
    rng = np.random.default_rng(7)
    results: list[Result] = []
    for clustered in (False, True):
        shape = "clustered" if clustered else "uniform"
        lats, lons = _points(n, clustered, rng)
        ids = np.arange(n, dtype=np.uint64)
        # Queries where the data is: at data points, moved by up to about a kilometre.
        picked = rng.integers(0, n, queries)
        qlats = np.clip(lats[picked] + rng.uniform(-0.01, 0.01, queries), -80, 80)
        qlons = np.clip(lons[picked] + rng.uniform(-0.01, 0.01, queries), -180, 180)
        progress(f"{shape}: building indexes over {n:,} points")
        builds: dict[str, list[float]] = {"cell": [], "geohash": [], "quadtree": [], "ckdtree": []}
        index: dict[str, GeoIndex] = {}
        for _ in range(max(1, rounds - 1)):
            for kind in ("cell", "geohash", "quadtree"):
                start = time.perf_counter()
                index[kind] = GeoIndex(kind, ids, lats, lons)  # type: ignore[arg-type]
                builds[kind].append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            xyz = _unit(lats, lons)
            tree = cKDTree(xyz)
            builds["ckdtree"].append(n / (time.perf_counter() - start))
        redis_rate, redis_bytes = _redis(lats, lons, qlats, qlons, rounds, progress)
        h3_lookup = _h3_lookup(lats, lons)
        for radius in (1_000.0, 5_000.0):
            progress(f"{shape}: radius {radius / 1000:g} km, {queries:,} queries x {rounds}")
            chord = 2 * np.sin(radius / EARTH_RADIUS_M / 2)
            qxyz = _unit(qlats, qlons)
            radii = np.array([radius])
            samples: dict[str, list[float]] = {"sdi": [], "ckdtree": [], "h3": []}
            for _ in range(rounds):
                cell = index["cell"]
                samples["sdi"].append(
                    _rate(partial(cell.radius_batch, qlats, qlons, radii), queries)
                )
                samples["ckdtree"].append(
                    _rate(partial(tree.query_ball_point, qxyz, chord, workers=1), queries)
                )
                few = min(queries, 500)
                samples["h3"].append(
                    _rate(partial(_h3_many, h3_lookup, qlats[:few], qlons[:few], radius), few)
                )
            baselines = {
                "cKDTree.query_ball_point": statistics.median(samples["ckdtree"]),
                "H3 grid_disk + haversine": statistics.median(samples["h3"]),
            }
            if redis_rate:
                baselines["Redis GEOSEARCH, pipelined"] = redis_rate[radius]
            results.append(
                Result(
                    f"radius {radius / 1000:g} km, {n / 1e6:g}M {shape} points",
                    "queries/s",
                    True,
                    statistics.median(samples["sdi"]),
                    baselines,
                    note="sdi: cell index, radius_batch, one thread, sorted with distances; "
                    "cKDTree: unsorted indices only",
                )
            )
        progress(f"{shape}: k-nearest, k={K}")
        knn: dict[str, list[float]] = {"sdi": [], "ckdtree": []}
        qxyz = _unit(qlats, qlons)
        for _ in range(rounds):
            knn["sdi"].append(_rate(partial(index["cell"].knn_batch, qlats, qlons, K), queries))
            knn["ckdtree"].append(_rate(partial(tree.query, qxyz, k=K, workers=1), queries))
        results.append(
            Result(
                f"k-nearest k={K}, {n / 1e6:g}M {shape} points",
                "queries/s",
                True,
                statistics.median(knn["sdi"]),
                {"cKDTree.query": statistics.median(knn["ckdtree"])},
            )
        )
        results.append(
            Result(
                f"build, {n / 1e6:g}M {shape} points",
                "points/s",
                True,
                statistics.median(builds["cell"]),
                {
                    "sdi geohash index": statistics.median(builds["geohash"]),
                    "sdi quadtree": statistics.median(builds["quadtree"]),
                    "cKDTree (with the 3-D vectors)": statistics.median(builds["ckdtree"]),
                },
            )
        )
        memory = {
            "sdi geohash index": index["geohash"].memory_bytes() / n,
            "sdi quadtree": index["quadtree"].memory_bytes() / n,
        }
        if redis_bytes:
            memory["Redis GEO (used_memory)"] = redis_bytes
        results.append(
            Result(
                f"bytes per point, {n / 1e6:g}M {shape} points",
                "bytes",
                False,
                index["cell"].memory_bytes() / n,
                memory,
            )
        )
    return results


def _h3_many(
    lookup: Callable[[float, float, float], object],
    lats: np.ndarray,
    lons: np.ndarray,
    radius: float,
) -> None:
    for lat, lon in zip(lats.tolist(), lons.tolist(), strict=True):
        lookup(lat, lon, radius)


def _h3_lookup(lats: np.ndarray, lons: np.ndarray) -> Callable[[float, float, float], object]:
    import h3

    resolution = 9  # cells of about 0.17 km edge
    cells: dict[str, list[int]] = {}
    for i, cell in enumerate(
        h3.latlng_to_cell(float(a), float(b), resolution) for a, b in zip(lats, lons, strict=True)
    ):
        cells.setdefault(cell, []).append(i)
    edge_m = h3.average_hexagon_edge_length(resolution, unit="m")

    def lookup(lat: float, lon: float, radius: float) -> object:
        rings = int(np.ceil(radius / (edge_m * 1.5))) + 1
        found = [
            i
            for cell in h3.grid_disk(h3.latlng_to_cell(lat, lon, resolution), rings)
            for i in cells.get(cell, ())
        ]
        if not found:
            return found
        candidates = np.array(found)
        phi1, phi2 = np.radians(lat), np.radians(lats[candidates])
        h = (
            np.sin((phi2 - phi1) / 2) ** 2
            + np.cos(phi1) * np.cos(phi2) * np.sin(np.radians(lons[candidates] - lon) / 2) ** 2
        )
        metres = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(h))
        keep = metres <= radius
        order = np.argsort(metres[keep], kind="stable")
        return candidates[keep][order]

    return lookup


def _redis(
    lats: np.ndarray,
    lons: np.ndarray,
    qlats: np.ndarray,
    qlons: np.ndarray,
    rounds: int,
    progress: Progress,
) -> tuple[dict[float, float], float]:
    """GEOSEARCH queries/s by radius, and used_memory per point; empty if no redis-server."""
    import redis

    from sdi.testing.servers import RedisServer

    try:
        server = RedisServer().start()
    except Exception as error:
        progress(f"no redis-server ({error}); the Redis baseline is left out")
        return {}, 0.0
    try:
        client = redis.Redis(host=server.host, port=server.port)
        before = int(client.info("memory")["used_memory"])
        progress(f"loading {len(lats):,} points into redis-server")
        chunk = 10_000
        for start in range(0, len(lats), chunk):
            values: list[object] = []
            for i in range(start, min(start + chunk, len(lats))):
                values += [float(lons[i]), float(lats[i]), i]
            client.execute_command("GEOADD", "points", *values)
        used = (int(client.info("memory")["used_memory"]) - before) / len(lats)
        rates: dict[float, float] = {}
        few = min(len(qlats), 2_000)
        for radius in (1_000.0, 5_000.0):
            samples = []
            for _ in range(rounds):

                def work(radius: float = radius) -> None:
                    pipe = client.pipeline(transaction=False)
                    for i in range(few):
                        pipe.execute_command(
                            "GEOSEARCH", "points", "FROMLONLAT", float(qlons[i]), float(qlats[i]),
                            "BYRADIUS", radius, "m", "ASC", "WITHDIST",
                        )  # fmt: skip
                    pipe.execute()

                samples.append(_rate(work, few))
            rates[radius] = statistics.median(samples)
        return rates, used
    finally:
        server.stop()
