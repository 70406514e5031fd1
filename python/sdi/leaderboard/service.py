"""``sdi serve leaderboard``: the gaming leaderboard of chapter 10 (HTTP API and RESP server).

::

    sdi serve leaderboard --port 8800 --resp-port 8801 --data-dir /tmp/leaderboard
    curl -X POST -H "Authorization: Bearer $(cat /tmp/leaderboard/api-token)" \\
        -d '{"user_id": "ada", "points": 3}' http://127.0.0.1:8800/v1/scores
    curl http://127.0.0.1:8800/v1/scores
    redis-cli -p 8801 ZREVRANGE leaderboard:2026-11 0 9 WITHSCORES

One process runs both: the sorted-set server (:class:`~sdi.leaderboard.server.LeaderboardServer`,
Redis's protocol on ``resp_port``, the log and snapshots in ``data_dir/store``
with ``fsync`` ``always``, ``everysec`` or ``no``) and the book's HTTP API
(:mod:`sdi.leaderboard.api`) on the main port, which reads and writes the
server's sets directly.

With ``shards`` (``--shards redis://a:6379,redis://b:6379``) the process is
a router instead: the HTTP API's boards live on those servers (sdi
leaderboard servers or redis-server), split by ``sharding``: ``hash`` of
the user id, or ``range`` of scores at ``score_bounds`` (see
:mod:`sdi.leaderboard.board`); no local store is run. The router needs
redis-py (``pip install redis``).

``POST /v1/scores`` needs an API token: ``api_token`` (``--api-token`` or
``$SDI_LEADERBOARD_API_TOKEN``), or one from ``sdi token create
leaderboard``; on a first start without either the service writes an
``admin`` token to ``data_dir/api-token``.

>>> import asyncio, tempfile
>>> from pathlib import Path
>>> from sdi.runtime import ServiceConfig
>>> async def demo(path: str) -> list[str]:
...     service = LeaderboardService(api_token="sdi_doc")
...     endpoints = await service.start(ServiceConfig("127.0.0.1", 0, Path(path)))
...     await service.stop()
...     return [endpoint.name for endpoint in endpoints]
>>> with tempfile.TemporaryDirectory() as path:
...     for name in asyncio.run(demo(path)):
...         print(name)
leaderboard (HTTP API; POST needs the API token of the settings)
leaderboard (sorted sets, Redis protocol)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from sdi.errors import InvalidArgument
from sdi.leaderboard.api import LeaderboardApi, board_key
from sdi.leaderboard.board import Board, HashShards, LocalBoard, ScoreRangeShards
from sdi.leaderboard.persistence import FSYNC_POLICIES
from sdi.leaderboard.server import LeaderboardServer
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.auth import Authenticator, service_authenticator
from sdi.runtime.http import HttpServer

__all__ = ["LeaderboardService", "service"]

logger = logging.getLogger(__name__)

#: Where the sorted-set server keeps its log and snapshots, in the data directory.
STORE_DIR = "store"


def _parse_shards(shards: str | list[str] | None) -> list[str]:
    if shards is None:
        return []
    urls = [u.strip() for u in shards.split(",")] if isinstance(shards, str) else list(shards)
    urls = [u for u in urls if u]
    for url in urls:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidArgument(f"--shards takes redis:// URLs, comma-separated, not {url!r}")
    return urls


def _parse_bounds(bounds: str | list[float] | None) -> list[float]:
    if bounds is None:
        return []
    if isinstance(bounds, str):
        try:
            return [float(b) for b in bounds.split(",") if b.strip()]
        except ValueError:
            raise InvalidArgument(
                f"--score-bounds takes numbers, comma-separated (1000,5000), not {bounds!r}"
            ) from None
    return [float(b) for b in bounds]


class LeaderboardService(Service):
    """The HTTP API over a local sorted-set server, or over sharded remote ones."""

    key = "leaderboard"

    def __init__(
        self,
        *,
        resp_port: int | None = None,
        fsync: str = "everysec",
        shards: str | list[str] | None = None,
        sharding: str = "hash",
        score_bounds: str | list[float] | None = None,
        api_token: str | None = None,
    ) -> None:
        if resp_port is not None and not 0 <= resp_port <= 65535:
            raise InvalidArgument(f"--resp-port must be between 0 and 65535, not {resp_port}")
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument(f"--aof-fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if sharding not in ("hash", "range"):
            raise InvalidArgument(f"--sharding must be hash or range, not {sharding!r}")
        self.shards = _parse_shards(shards)
        self.score_bounds = _parse_bounds(score_bounds)
        if sharding == "range" and self.shards and len(self.score_bounds) != len(self.shards) - 1:
            raise InvalidArgument(
                f"--sharding range over {len(self.shards)} servers needs"
                f" {len(self.shards) - 1} --score-bounds, not {len(self.score_bounds)}"
            )
        self.resp_port = resp_port
        self.fsync = fsync
        self.sharding = sharding
        self.api_token = api_token or os.environ.get("SDI_LEADERBOARD_API_TOKEN") or None
        self.store: LeaderboardServer | None = None
        self.board: Board | None = None
        self.auth: Authenticator | None = None
        self.http: HttpServer | None = None
        self.token_file: Path | None = None

    def _remote_board(self) -> Board:
        try:
            import redis.asyncio
        except ImportError:
            raise InvalidArgument(
                "--shards needs redis-py to reach the servers: pip install redis"
            ) from None
        clients = [redis.asyncio.Redis.from_url(url) for url in self.shards]
        if self.sharding == "range":
            return ScoreRangeShards(clients, self.score_bounds)
        return HashShards(clients)

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        root = Path(config.data_dir)
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        self.auth, self.token_file = await asyncio.to_thread(
            service_authenticator,
            "leaderboard",
            root,
            [self.api_token] if self.api_token else None,
        )
        endpoints: list[Endpoint] = []
        try:
            unavailable: tuple[type[BaseException], ...] = (ConnectionError, OSError)
            if self.shards:
                self.board = self._remote_board()
                import redis.exceptions

                unavailable += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
            else:
                self.store = LeaderboardServer(root / STORE_DIR, self.fsync)
                resp_port = self.resp_port
                if resp_port is None:
                    resp_port = config.port + 1 if config.port else 0
                bound = await self.store.start(config.host, resp_port)
                self.board = LocalBoard(self.store)
                url = f"redis://{config.host}:{bound}"
                this_month = time.strftime("%Y-%m", time.gmtime())
                endpoints.append(
                    Endpoint(
                        "leaderboard (sorted sets, Redis protocol)",
                        url,
                        f"redis-cli -p {bound} ZREVRANGE {board_key(this_month)} 0 9 WITHSCORES",
                    )
                )
            api = LeaderboardApi(self.board, auth=self.auth, unavailable=unavailable)
            self.http = HttpServer(api.handle)
            port = await self.http.start(config.host, config.port)
        except BaseException:
            await self.stop()
            raise
        if self.token_file is not None:
            writes = f"POST needs the API token in {self.token_file}"
        elif self.api_token is not None:
            writes = "POST needs the API token of the settings"
        else:
            writes = "POST needs a token from `sdi token create leaderboard`"
        http_url = f"http://{config.host}:{port}"
        where = f"over {len(self.shards)} {self.sharding}-sharded servers; " if self.shards else ""
        endpoints.insert(
            0,
            Endpoint(
                f"leaderboard (HTTP API; {where}{writes})", http_url, f"curl {http_url}/v1/scores"
            ),
        )
        return endpoints

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.board is not None:
            await self.board.close()
            self.board = None
        if self.store is not None:
            await self.store.stop()
            self.store = None
        if self.auth is not None:
            await asyncio.to_thread(self.auth.close)
            self.auth = None


def service(options: dict[str, Any]) -> Service:
    """The leaderboard service from ``sdi serve leaderboard`` options (``sdi up`` passes none)."""
    return LeaderboardService(
        resp_port=options.get("resp_port"),
        fsync=options.get("aof_fsync") or "everysec",
        shards=options.get("shards"),
        sharding=options.get("sharding") or "hash",
        score_bounds=options.get("score_bounds"),
        api_token=options.get("api_token"),
    )
