"""The location-based service (read path) and the business API (write path) over HTTP.

Routes (JSON in and out; errors are ``{"error": message, "status": code}``):

``GET /v1/search/nearby?latitude=&longitude=&radius=[&category=][&page_size=][&page_token=]``
    Businesses within ``radius`` metres, nearest first (ties by id):
    ``{"businesses": [{id, name, category, latitude, longitude, distance_m}],
    "total": n, "next_page_token": str | null}``. ``radius`` must be one of
    the book's 500, 1000, 2000, 5000 or 20000; ``page_size`` 1 to 100
    (default 20); ``page_token`` is what the previous page returned, for the
    same query. Tokens are HMAC-signed with a per-service secret: a token
    that was altered, forged or issued for another query is refused (400).
``POST /v1/businesses``
    Creates a business from ``{name, category, latitude, longitude[, address,
    city, country, attributes]}``; 201 with the business and its ``id``.
``GET | PUT | DELETE /v1/businesses/{id}``
    Reads, replaces (the same fields as POST; 404 if there is none) or deletes (204).
``GET /v1/stats``
    Businesses indexed, index kind and memory, change-log position, cache counters.

**API tokens.** With an :class:`~sdi.runtime.auth.Authenticator` (the
service always gives one), ``POST``, ``PUT`` and ``DELETE`` need
``Authorization: Bearer <token>``; without a valid one they get 401 with a
``WWW-Authenticate: Bearer`` challenge and nothing changes. Searches and
``GET`` stay public, as the book's LBS is.

Bad input (a missing or wrong-typed field, a coordinate out of range or
NaN, a radius outside the allowed set, an unknown parameter) gets 400 with
a message naming the field, and nothing is changed.

**Index freshness.** Searches read the in-memory :class:`~sdi.proximity.index.GeoIndex`,
which follows the store's change log (:meth:`ProximityApi.sync_index`):
every write through this API applies the log to the index before its
response is sent, so the writer (and everyone after) finds the change at
once (delay 0); a background task (:class:`~sdi.proximity.service.ProximityService`)
also applies it every 100 ms, for writes made by other processes sharing a
PostgreSQL database. Objects come from the Redis cache when one is
configured (read-through), else from the store.

>>> import asyncio
>>> from sdi.proximity.index import BruteForceIndex
>>> from sdi.proximity.store import BusinessStore
>>> api = ProximityApi(BusinessStore(":memory:"), BruteForceIndex())
>>> async def demo() -> list[object]:
...     body = b'{"name": "Cafe", "category": "cafe", "latitude": 48.85, "longitude": 2.35}'
...     created = await api.handle(Request("POST", "/v1/businesses", "HTTP/1.1", {}, body))
...     query = "/v1/search/nearby?latitude=48.851&longitude=2.35&radius=500"
...     found = await api.handle(Request("GET", query, "HTTP/1.1", {}))
...     bad = await api.handle(Request("GET", query.replace("500", "600"), "HTTP/1.1", {}))
...     return [created.status, json.loads(found.body)["total"], bad.status]
>>> asyncio.run(demo())
[201, 1, 400]
>>> api.close()
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sdi.errors import InvalidArgument
from sdi.proximity.cache import ProximityCache
from sdi.proximity.index import GeoIndex, QuadtreeIndex, check_point
from sdi.proximity.store import (
    Business,
    BusinessStore,
    Change,
    StoreUnavailableError,
    check_business_id,
    parse_business,
)
from sdi.runtime.auth import Authenticator
from sdi.runtime.http import MethodNotAllowedError, NotFoundError, Request, Response
from sdi.runtime.text import is_decimal

__all__ = [
    "ALLOWED_RADII_M",
    "PAGE_SIZE_DEFAULT",
    "PAGE_SIZE_MAX",
    "PageTokens",
    "ProximityApi",
]

#: The search radii the book allows, in metres.
ALLOWED_RADII_M = (500, 1000, 2000, 5000, 20000)
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
BODY_BYTES_MAX = 64 * 1024
_SEARCH_PARAMS = frozenset(
    {"latitude", "longitude", "radius", "category", "page_size", "page_token"}
)
_TOKEN_MAC_BYTES = 16
_T = TypeVar("_T")

logger = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Opaque, tamper-evident page tokens: the offset and the query, HMAC-SHA256-signed.

    >>> tokens = PageTokens(b"k" * 32)
    >>> query = (48.85, 2.35, 500, None)
    >>> tokens.read(tokens.issue(query, 40), query)
    40
    >>> tokens.read(tokens.issue(query, 40), (48.85, 2.35, 1000, None))
    Traceback (most recent call last):
    ...
    sdi.errors.InvalidArgument: page_token was issued for another search; ...
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise InvalidArgument("the page token secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_TOKEN_MAC_BYTES]

    def issue(self, query: tuple[Any, ...], offset: int) -> str:
        payload = json.dumps({"o": offset, "q": list(query)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, token: str, query: tuple[Any, ...]) -> int:
        """The offset in ``token``; ``InvalidArgument`` unless we issued it for ``query``."""
        refused = InvalidArgument("page_token is not a token this service issued")
        body, dot, mac = token.partition(".")
        if not dot or len(token) > 1024:
            raise refused
        try:
            payload = _unb64(body)
            signature = _unb64(mac)
        except (ValueError, TypeError):
            raise refused from None
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise refused
        value = json.loads(payload)
        if value.get("q") != json.loads(json.dumps(list(query))):
            raise InvalidArgument(
                "page_token was issued for another search; repeat the same query or drop page_token"
            )
        offset = value.get("o")
        if not isinstance(offset, int) or offset < 0:
            raise refused
        return offset


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise InvalidArgument(f"{name} must be given once, not {len(values)} times")
    return values[0]


def _number(query: dict[str, list[str]], name: str) -> float:
    text = _single(query, name)
    if text is None or not text.strip():
        raise InvalidArgument(f"{name} is required")
    try:
        return float(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be a number, not {text[:40]!r}") from None


class ProximityApi:
    """The HTTP API over a store, an index and an optional cache (see the module docstring).

    ``search_via="cache"`` answers searches the book's way instead, from the
    Redis geohash-cell keys (it needs ``cache``). ``secret`` signs page
    tokens (a random one per instance by default, so tokens do not outlive
    the process). ``auth`` guards the writes (none: writes are open, for
    embedding in a program of one's own).
    """

    def __init__(
        self,
        store: BusinessStore,
        index: GeoIndex | None = None,
        *,
        cache: ProximityCache | None = None,
        secret: bytes | None = None,
        search_via: str = "index",
        auth: Authenticator | None = None,
    ) -> None:
        if search_via not in ("index", "cache"):
            raise InvalidArgument(f"search_via must be 'index' or 'cache', not {search_via!r}")
        if search_via == "cache" and cache is None:
            raise InvalidArgument("search_via='cache' needs a Redis cache (a Redis URL)")
        self.store = store
        self.index: GeoIndex = index if index is not None else QuadtreeIndex()
        self.cache = cache
        self.search_via = search_via
        self.auth = auth
        self.tokens = PageTokens(secret or secrets.token_bytes(32))
        self._sync_lock = threading.Lock()
        self._listeners: list[Callable[[list[Change]], None]] = []
        self.applied_seq = 0
        self.build_index()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if self.auth is not None:
            self.auth.close()
        self.store.close()

    # -- the index follows the change log --------------------------------------------------------

    def build_index(self) -> int:
        """Loads every stored position into the index; the change seq it is current to."""
        with self._sync_lock:
            seq, ids, lats, lons = self.store.snapshot()
            self.index.upsert(ids, lats, lons)
            self.applied_seq = seq
            return seq

    def sync_index(self) -> int:
        """Applies the changes logged since the last call to the index (and the cache); how many.

        Within one batch only the last change of each id matters (a change
        carries the whole new state), so upserts and removals are applied
        in two batch calls. Safe from several threads: one applies at a time.
        """
        applied = 0
        with self._sync_lock:
            while True:
                changes = self.store.changes_since(self.applied_seq)
                if not changes:
                    return applied
                final = {change.business_id: change for change in changes}
                upserts = [
                    change
                    for change in final.values()
                    if change.op == "upsert"
                    and change.latitude is not None
                    and change.longitude is not None
                ]
                removals = [key for key, change in final.items() if change.op == "delete"]
                if removals:
                    self.index.remove(np.asarray(removals, dtype=np.uint64))
                if upserts:
                    self.index.upsert(
                        np.asarray([change.business_id for change in upserts], dtype=np.uint64),
                        np.asarray([change.latitude for change in upserts], dtype=np.float64),
                        np.asarray([change.longitude for change in upserts], dtype=np.float64),
                    )
                if self.cache is not None:
                    self.cache.invalidate_changes(changes)
                for listener in self._listeners:
                    listener(changes)
                self.applied_seq = changes[-1].seq
                applied += len(changes)

    def follow(
        self, listener: Callable[[list[Change]], None]
    ) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Calls ``listener`` with every batch of changes :meth:`sync_index` applies from now on.

        Returns a snapshot of the store to start from (as :meth:`BusinessStore.snapshot`).
        The listener may then get changes the snapshot already holds: each
        change carries a whole state, so applying them again in order is
        harmless. It runs on the thread that syncs: keep it short.
        """
        with self._sync_lock:
            snapshot = self.store.snapshot()
            self._listeners.append(listener)
            return snapshot

    # -- reads -----------------------------------------------------------------------------------

    def _objects(self, ids: list[int]) -> dict[int, Business]:
        if self.cache is not None:
            return self.cache.businesses(ids)
        return self.store.get_many(ids)

    def search(
        self,
        latitude: float,
        longitude: float,
        radius_m: int,
        *,
        category: str | None = None,
        page_size: int = PAGE_SIZE_DEFAULT,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of a nearby search, as the JSON the route returns (blocking)."""
        latitude, longitude = check_point(latitude, longitude)
        if radius_m not in ALLOWED_RADII_M:
            raise InvalidArgument(_radius_message(radius_m))
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise InvalidArgument(f"page_size must be from 1 to {PAGE_SIZE_MAX}, not {page_size}")
        query = (latitude, longitude, radius_m, category)
        offset = 0 if page_token is None else self.tokens.read(page_token, query)
        objects: dict[int, Business]
        if self.search_via == "cache":
            assert self.cache is not None
            ids, distances, objects = self.cache.nearby(latitude, longitude, radius_m)
        else:
            ids, distances = self.index.radius(latitude, longitude, radius_m)
            objects = {}
        if category is not None:
            if not objects:
                objects = self._objects(ids.tolist())
            keep = np.asarray(
                [key in objects and objects[key].category == category for key in ids.tolist()],
                dtype=bool,
            )
            ids, distances = ids[keep], distances[keep]
        total = int(ids.shape[0])
        page_ids = ids[offset : offset + page_size].tolist()
        page_distances = distances[offset : offset + page_size].tolist()
        missing = [key for key in page_ids if key not in objects]
        if missing:
            objects.update(self._objects(missing))
        businesses = []
        for key, distance in zip(page_ids, page_distances, strict=True):
            business = objects.get(key)
            if business is None:
                continue  # deleted since the index was read
            businesses.append(
                {
                    "id": business.id,
                    "name": business.name,
                    "category": business.category,
                    "latitude": business.latitude,
                    "longitude": business.longitude,
                    "distance_m": round(distance, 3),
                }
            )
        end = offset + page_size
        return {
            "businesses": businesses,
            "total": total,
            "next_page_token": self.tokens.issue(query, end) if end < total else None,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "businesses_indexed": len(self.index),
            "index": type(self.index).__name__,
            "index_memory_bytes": self.index.memory_bytes(),
            "applied_seq": self.applied_seq,
            "database": self.store.dialect,
            "search_via": self.search_via,
            "cache": None
            if self.cache is None
            else {"hits": self.cache.hits, "misses": self.cache.misses},
        }

    # -- writes ----------------------------------------------------------------------------------

    def _after_write(self, business_id: int, positions: list[tuple[float, float]]) -> None:
        if self.cache is not None:
            self.cache.invalidate(business_id, positions)
        self.sync_index()

    def create(self, data: object) -> Business:
        business = self.store.create(parse_business(data))
        self._after_write(business.id, [(business.latitude, business.longitude)])
        return business

    def replace(self, business_id: int, data: object) -> Business:
        fields = parse_business(data)
        result = self.store.update(business_id, fields)
        if result is None:
            raise NotFoundError(business_id)
        old, new = result
        self._after_write(
            business_id, [(old.latitude, old.longitude), (new.latitude, new.longitude)]
        )
        return new

    def delete(self, business_id: int) -> None:
        old = self.store.delete(business_id)
        if old is None:
            raise NotFoundError(business_id)
        self._after_write(business_id, [(old.latitude, old.longitude)])

    def get(self, business_id: int) -> Business:
        found = self._objects([business_id]).get(business_id)
        if found is None:
            raise NotFoundError(business_id)
        return found

    # -- HTTP ------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Routes one request (blocking work runs on worker threads)."""
        try:
            return await self._route(request)
        except InvalidArgument as error:
            return Response.error(400, str(error))
        except NotFoundError as missing:
            return Response.error(404, f"there is no business with id {missing.args[0]}")
        except MethodNotAllowedError as refused:
            response = Response.error(405, f"{request.method} is not allowed here")
            response.headers["allow"] = refused.allowed
            return response
        except StoreUnavailableError as error:
            return Response.error(503, str(error))

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(fn, *args)

    async def _route(self, request: Request) -> Response:
        path = request.path
        method = request.method
        if method in ("POST", "PUT", "DELETE") and self.auth is not None:
            refusal = await self._run(self.auth.refusal, request.headers)
            if refusal is not None:
                response = Response.error(401, refusal)
                response.headers["www-authenticate"] = self.auth.challenge()
                return response
        if path == "/v1/search/nearby":
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowedError("GET, HEAD")
            return Response.json(await self._run(self._search_request, request.query))
        if path == "/v1/businesses":
            if method != "POST":
                raise MethodNotAllowedError("POST")
            data = _body(request)
            business = await self._run(self.create, data)
            response = Response.json(business.to_json(), 201)
            response.headers["location"] = f"/v1/businesses/{business.id}"
            return response
        if path.startswith("/v1/businesses/"):
            business_id = check_business_id(path.removeprefix("/v1/businesses/"))
            if method in ("GET", "HEAD"):
                return Response.json((await self._run(self.get, business_id)).to_json())
            if method == "PUT":
                data = _body(request)
                return Response.json((await self._run(self.replace, business_id, data)).to_json())
            if method == "DELETE":
                await self._run(self.delete, business_id)
                return Response(204)
            raise MethodNotAllowedError("GET, HEAD, PUT, DELETE")
        if path == "/v1/stats":
            return Response.json(self.stats())
        return Response.error(
            404,
            f"no route {path!r}; the routes are GET /v1/search/nearby, POST /v1/businesses,"
            " GET/PUT/DELETE /v1/businesses/{id} and GET /v1/stats",
        )

    def _search_request(self, query: dict[str, list[str]]) -> dict[str, Any]:
        unknown = sorted(set(query) - _SEARCH_PARAMS)
        if unknown:
            raise InvalidArgument(
                f"unknown parameter(s) {', '.join(map(repr, unknown))}; the parameters are"
                f" {', '.join(sorted(_SEARCH_PARAMS))}"
            )
        latitude, longitude = check_point(_number(query, "latitude"), _number(query, "longitude"))
        radius = _number(query, "radius")
        if not math.isfinite(radius) or radius not in ALLOWED_RADII_M:
            raise InvalidArgument(_radius_message(radius))
        page_size = PAGE_SIZE_DEFAULT
        size_text = _single(query, "page_size")
        if size_text is not None:
            if not is_decimal(size_text):
                raise InvalidArgument(
                    f"page_size must be an integer from 1 to {PAGE_SIZE_MAX},"
                    f" not {size_text[:40]!r}"
                )
            page_size = int(size_text)
        return self.search(
            latitude,
            longitude,
            int(radius),
            category=_single(query, "category"),
            page_size=page_size,
            page_token=_single(query, "page_token"),
        )


def _radius_message(radius: float) -> str:
    allowed = ", ".join(str(value) for value in ALLOWED_RADII_M)
    return f"radius must be one of {allowed} (metres), not {radius:g}"


def _body(request: Request) -> object:
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"the body must be a JSON object: {error}") from None
