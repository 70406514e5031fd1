"""The book's leaderboard HTTP API (chapter 10), one board per month, over a :class:`Board`.

Routes (JSON; errors are ``{"error": message, "status": code}``):

``POST /v1/scores``
    ``{"user_id": str, "points": number}``: a won match adds ``points``
    (more than 0, at most :data:`POINTS_MAX`) to the user's score on this
    month's board; answers ``{"user_id", "score", "month"}``. Game servers
    call it, so it needs an API token (``Authorization: Bearer``) when the
    API has an :class:`~sdi.runtime.auth.Authenticator`.
``GET /v1/scores[?month=YYYY-MM][&limit=N]``
    The top 10 (or ``limit``, 1 to 100): ``{"month", "total", "data":
    [{"user_id", "score", "rank"}]}``.
``GET /v1/scores/{user_id}[?month=YYYY-MM]``
    The user's rank and score and the users four places above and below:
    ``{"month", "user": {...}, "around": [...]}``; 404 when the user has
    no score that month.

The month is the UTC calendar month of the request unless ``month`` names
another; its board is the sorted set ``leaderboard:YYYY-MM``.

>>> import asyncio
>>> class Memory(Board):
...     def __init__(self): self.scores = {}
...     async def add(self, key, user_id, points):
...         self.scores[user_id] = self.scores.get(user_id, 0.0) + points
...         return self.scores[user_id]
...     async def top(self, key, count=10):
...         best = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
...         return [Entry(u, s, n + 1) for n, (u, s) in enumerate(best)]
...     async def standing(self, key, user_id, span=4): return None
...     async def size(self, key): return len(self.scores)
...     async def close(self): pass
>>> api = LeaderboardApi(Memory(), clock=lambda: 1_796_000_000.0)
>>> async def demo():
...     won = b'{"user_id": "ada", "points": 3}'
...     await api.handle(Request("POST", "/v1/scores", "HTTP/1.1", {}, won))
...     top = await api.handle(Request("GET", "/v1/scores", "HTTP/1.1", {}))
...     return json.loads(top.body)
>>> asyncio.run(demo())
{'month': '2026-11', 'total': 1, 'data': [{'user_id': 'ada', 'score': 3.0, 'rank': 1}]}
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from sdi.leaderboard.board import Board, Entry
from sdi.runtime.auth import Authenticator
from sdi.runtime.http import Request, Response
from sdi.runtime.text import is_decimal

__all__ = ["POINTS_MAX", "LeaderboardApi", "board_key"]

#: The most points one POST may add.
POINTS_MAX = 1_000_000
USER_ID_BYTES_MAX = 256
LIMIT_MAX = 100
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def board_key(month: str) -> str:
    """The sorted set of a month's board."""
    return f"leaderboard:{month}"


class _BadRequestError(Exception):
    pass


def _entry(entry: Entry) -> dict[str, Any]:
    return {"user_id": entry.user_id, "score": entry.score, "rank": entry.rank}


def _check_user(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise _BadRequestError("user_id must be a non-empty string")
    if len(user_id.encode()) > USER_ID_BYTES_MAX or not user_id.isprintable():
        raise _BadRequestError(
            f"user_id must be printable and at most {USER_ID_BYTES_MAX} bytes long"
        )
    return user_id


class LeaderboardApi:
    """Routes the API's requests to a board (``clock`` gives the time, for the month)."""

    def __init__(
        self,
        board: Board,
        *,
        auth: Authenticator | None = None,
        clock: Callable[[], float] = time.time,
        unavailable: tuple[type[BaseException], ...] = (ConnectionError, OSError),
    ) -> None:
        self.board = board
        self.auth = auth
        self.clock = clock
        self.unavailable = unavailable

    def month(self, query: dict[str, list[str]]) -> str:
        given = query.get("month")
        if given is None:
            return time.strftime("%Y-%m", time.gmtime(self.clock()))
        if len(given) != 1 or not _MONTH.match(given[0]):
            raise _BadRequestError("month must be given once, as YYYY-MM (for example 2026-11)")
        return given[0]

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except _BadRequestError as error:
            return Response.error(400, str(error))
        except self.unavailable as error:
            return Response.error(
                503, f"the leaderboard store does not answer ({error}); try again shortly"
            )

    async def _route(self, request: Request) -> Response:
        path, method, query = request.path, request.method, request.query
        if path == "/v1/scores":
            if method == "POST":
                return await self._post(request)
            if method not in ("GET", "HEAD"):
                return self._not_allowed("GET, HEAD, POST")
            unknown = sorted(set(query) - {"month", "limit"})
            if unknown:
                raise _BadRequestError(f"unknown parameter(s) {unknown}; use month and limit")
            month = self.month(query)
            limit = 10
            if "limit" in query:
                text = query["limit"][0]
                if (
                    len(query["limit"]) != 1
                    or not is_decimal(text)
                    or not 1 <= int(text) <= LIMIT_MAX
                ):
                    raise _BadRequestError(f"limit must be an integer from 1 to {LIMIT_MAX}")
                limit = int(text)
            key = board_key(month)
            top = await self.board.top(key, limit)
            total = await self.board.size(key)
            return Response.json({"month": month, "total": total, "data": [_entry(e) for e in top]})
        if path.startswith("/v1/scores/"):
            if method not in ("GET", "HEAD"):
                return self._not_allowed("GET, HEAD")
            user_id = _check_user(unquote(path.removeprefix("/v1/scores/")))
            unknown = sorted(set(query) - {"month"})
            if unknown:
                raise _BadRequestError(f"unknown parameter(s) {unknown}; use month")
            month = self.month(query)
            standing = await self.board.standing(board_key(month), user_id)
            if standing is None:
                return Response.error(404, f"{user_id!r} has no score in {month}")
            return Response.json(
                {
                    "month": month,
                    "user": _entry(standing.entry),
                    "around": [_entry(e) for e in standing.around],
                }
            )
        return Response.error(
            404, f"no route {path!r}; the routes are POST/GET /v1/scores and GET /v1/scores/{{id}}"
        )

    @staticmethod
    def _not_allowed(allowed: str) -> Response:
        response = Response.error(405, f"the method is not allowed here; use {allowed}")
        response.headers["allow"] = allowed
        return response

    async def _post(self, request: Request) -> Response:
        if self.auth is not None:
            refusal = await asyncio.to_thread(self.auth.refusal, request.headers)
            if refusal is not None:
                response = Response.error(401, refusal)
                response.headers["www-authenticate"] = self.auth.challenge()
                return response
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError) as error:
            raise _BadRequestError(f"the body must be JSON: {error}") from None
        if not isinstance(body, dict):
            raise _BadRequestError(
                'the body must be a JSON object: {"user_id": ..., "points": ...}'
            )
        unknown = sorted(set(body) - {"user_id", "points"})
        if unknown:
            raise _BadRequestError(f"unknown field(s) {unknown}; send user_id and points")
        user_id = _check_user(body.get("user_id"))
        points = body.get("points")
        if (
            isinstance(points, bool)
            or not isinstance(points, int | float)
            or not math.isfinite(points)
            or not 0 < points <= POINTS_MAX
        ):
            raise _BadRequestError(f"points must be a number above 0 and at most {POINTS_MAX}")
        month = self.month(request.query)
        score = await self.board.add(board_key(month), user_id, float(points))
        return Response.json({"user_id": user_id, "score": score, "month": month})
