"""Leaderboards over Redis-protocol servers: one server, or several sharded by hash or by score.

The book's leaderboard (chapter 10) is one sorted set per month, members
are user ids and scores are points; the top 10 is ``ZREVRANGE key 0 9``
and a user's rank ``ZREVRANK``. :class:`SingleBoard` is that, on one
server. When one server is not enough the book weighs two ways to split
a board, both here:

:class:`HashShards`
    Users are spread over the servers by a hash of their id (CRC-32). A
    win is one ``ZINCRBY`` on one server. The top 10 asks every server
    for its top 10 and merges (scatter-gather). A rank sums, over every
    server, the users ahead: those with a higher score (``ZCOUNT``, O(log n))
    and those with the same score and a greater id (fetched, so the cost
    grows with the number of users tied with this one).

:class:`ScoreRangeShards`
    Each server holds a fixed range of scores (``bounds`` split them), so
    ties never span servers. The top 10 comes from the highest servers
    first, usually one. A rank is the users on every higher server
    (``ZCARD``) plus ``ZREVRANK`` on the user's own server. A win can move
    a user to the next server, so a user's current score is kept in a
    directory (the sorted set ``<key>:scores``, spread by hash over the
    same servers): the router increments it, then removes the user from
    the old range's server and sets the new score on the new range's one.
    These steps are not one transaction: one router process serialises
    the writes for each user, and a crash between them leaves the
    directory ahead of the board; :meth:`ScoreRangeShards.repair` puts
    every user back where the directory says.

:class:`LocalBoard` is a board on the :class:`~sdi.leaderboard.server.LeaderboardServer`
of this process, called directly (no network hop; writes go through the
same command and log path as a client's).

All of them order a board as Redis does for ``ZREVRANGE``: score descending,
then user id descending (byte order); ranks count from 1. They work with
any server that speaks RESP: sdi's leaderboard server or redis-server.
The clients are redis-py's asyncio ones; the boards own and close them.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdi.errors import InvalidArgument

if TYPE_CHECKING:
    from sdi.leaderboard.server import LeaderboardServer

__all__ = [
    "Board",
    "Entry",
    "HashShards",
    "LocalBoard",
    "ScoreRangeShards",
    "SingleBoard",
    "Standing",
]


@dataclass(frozen=True)
class Entry:
    """A user's place on a board: ``rank`` 1 is the top."""

    user_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Standing:
    """A user's entry and the users just above and below (best first, the user included)."""

    entry: Entry
    around: list[Entry]


def _key_bytes(member: bytes | str) -> bytes:
    return member if isinstance(member, bytes) else member.encode()


def _text(member: bytes) -> str:
    """A member as a user id (members written by other clients may not be UTF-8)."""
    return member.decode("utf-8", "replace")


def _bound(score: float, exclusive: bool = False) -> str:
    """A score bound in Redis's syntax (``(`` for exclusive; ``inf`` as Redis spells it)."""
    text = "inf" if score == math.inf else "-inf" if score == -math.inf else repr(score)
    return ("(" if exclusive else "") + text


def _order(item: tuple[bytes, float]) -> tuple[float, bytes]:
    member, score = item
    return score, member


class Board(ABC):
    """What the HTTP API needs of a leaderboard store (every method is one board ``key``)."""

    @abstractmethod
    async def add(self, key: str, user_id: str, points: float) -> float:
        """Adds points to a user's score (a user starts at 0); the new score."""

    @abstractmethod
    async def top(self, key: str, count: int = 10) -> list[Entry]:
        """The best ``count`` users."""

    @abstractmethod
    async def standing(self, key: str, user_id: str, span: int = 4) -> Standing | None:
        """The user's entry with up to ``span`` users above and below, or None if absent."""

    @abstractmethod
    async def size(self, key: str) -> int:
        """How many users the board has."""

    @abstractmethod
    async def close(self) -> None:
        """Closes the clients."""

    async def ping(self) -> None:  # noqa: B027 - optional for boards without a server
        """Raises when a server does not answer."""


class SingleBoard(Board):
    """A board on one server (the book's design)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def add(self, key: str, user_id: str, points: float) -> float:
        return float(await self.client.zincrby(key, points, user_id))

    async def top(self, key: str, count: int = 10) -> list[Entry]:
        if count <= 0:
            return []
        items = await self.client.zrevrange(key, 0, count - 1, withscores=True)
        return [Entry(_text(m), float(s), n + 1) for n, (m, s) in enumerate(items)]

    async def standing(self, key: str, user_id: str, span: int = 4) -> Standing | None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrevrank(key, user_id)
            pipe.zscore(key, user_id)
            rank, score = await pipe.execute()
        if rank is None or score is None:
            return None
        start = max(0, rank - span)
        items = await self.client.zrevrange(key, start, rank + span, withscores=True)
        around = [Entry(_text(m), float(s), start + n + 1) for n, (m, s) in enumerate(items)]
        # The range is read after the rank: a write in between can shift it.
        mine = next((e for e in around if e.user_id == user_id), None)
        return Standing(mine or Entry(user_id, float(score), rank + 1), around)

    async def size(self, key: str) -> int:
        return int(await self.client.zcard(key))

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        await self.client.ping()


class LocalBoard(Board):
    """A board on this process's leaderboard server (use it on the server's event loop)."""

    def __init__(self, server: LeaderboardServer) -> None:
        self.server = server

    async def add(self, key: str, user_id: str, points: float) -> float:
        argv = [b"ZINCRBY", key.encode(), repr(float(points)).encode(), user_id.encode()]
        reply = self.server.execute(argv)
        await self.server.durable()
        return float(reply)

    async def top(self, key: str, count: int = 10) -> list[Entry]:
        zset = self.server.keyspace.get(key.encode())
        if zset is None or count <= 0:
            return []
        items = zset.range_by_rank(0, count - 1, rev=True)
        return [Entry(_text(m), s, n + 1) for n, (m, s) in enumerate(items)]

    async def standing(self, key: str, user_id: str, span: int = 4) -> Standing | None:
        zset = self.server.keyspace.get(key.encode())
        found = None if zset is None else zset.rank(user_id.encode(), rev=True)
        if zset is None or found is None:
            return None
        rank, score = found
        start = max(0, rank - span)
        items = zset.range_by_rank(start, rank + span, rev=True)
        around = [Entry(_text(m), s, start + n + 1) for n, (m, s) in enumerate(items)]
        return Standing(Entry(user_id, score, rank + 1), around)

    async def size(self, key: str) -> int:
        zset = self.server.keyspace.get(key.encode())
        return 0 if zset is None else len(zset)

    async def close(self) -> None:
        """The server belongs to its owner; nothing to close."""


class _Sharded(Board):
    def __init__(self, clients: Sequence[Any]) -> None:
        if not clients:
            raise InvalidArgument("a sharded board needs at least one server")
        self.clients = list(clients)

    def hash_shard(self, user_id: str) -> int:
        """The server a user hashes to (CRC-32 of the id, modulo the servers)."""
        return zlib.crc32(user_id.encode()) % len(self.clients)

    async def close(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))

    async def ping(self) -> None:
        await asyncio.gather(*(client.ping() for client in self.clients))

    async def size(self, key: str) -> int:
        return sum(await asyncio.gather(*(c.zcard(key) for c in self.clients)))


async def _ties(client: Any, key: str, score: float, batch: int = 10_000) -> list[bytes]:
    """Every member with exactly ``score`` (fetched in pages)."""
    members: list[bytes] = []
    bound = _bound(score)
    while True:
        page = await client.zrangebyscore(key, bound, bound, start=len(members), num=batch)
        members += page
        if len(page) < batch:
            return members


class HashShards(_Sharded):
    """A board spread over servers by a hash of the user id (see the module docstring)."""

    async def add(self, key: str, user_id: str, points: float) -> float:
        client = self.clients[self.hash_shard(user_id)]
        return float(await client.zincrby(key, points, user_id))

    async def top(self, key: str, count: int = 10) -> list[Entry]:
        if count <= 0:
            return []
        parts = await asyncio.gather(
            *(c.zrevrange(key, 0, count - 1, withscores=True) for c in self.clients)
        )
        merged = sorted((item for part in parts for item in part), key=_order, reverse=True)
        return [Entry(_text(m), float(s), n + 1) for n, (m, s) in enumerate(merged[:count])]

    async def standing(self, key: str, user_id: str, span: int = 4) -> Standing | None:
        own = self.clients[self.hash_shard(user_id)]
        score = await own.zscore(key, user_id)
        if score is None:
            return None
        score = float(score)
        me = user_id.encode()
        parts = await asyncio.gather(*(self._near(c, key, score, me, span) for c in self.clients))
        ahead = sum(count for count, _, _ in parts)
        above = sorted((item for _, up, _ in parts for item in up), key=_order)[:span]
        below = sorted((item for _, _, down in parts for item in down), key=_order, reverse=True)
        below = below[:span]
        entry = Entry(user_id, score, ahead + 1)
        around = [Entry(_text(m), s, ahead - n) for n, (m, s) in enumerate(above)][::-1]
        around.append(entry)
        around += [Entry(_text(m), s, ahead + n + 2) for n, (m, s) in enumerate(below)]
        return Standing(entry, around)

    @staticmethod
    async def _near(
        client: Any, key: str, score: float, me: bytes, span: int
    ) -> tuple[int, list[tuple[bytes, float]], list[tuple[bytes, float]]]:
        """On one server: the users ahead of (score, me), and up to ``span`` on each side."""
        higher, tied = await asyncio.gather(
            client.zcount(key, _bound(score, exclusive=True), "+inf"),
            client.zcount(key, _bound(score), _bound(score)),
        )
        ties = await _ties(client, key, score) if tied else []
        up_ties = [(m, score) for m in ties if m > me]
        down_ties = [(m, score) for m in reversed(ties) if m < me]
        up: list[tuple[bytes, float]] = up_ties[:span]
        down: list[tuple[bytes, float]] = down_ties[:span]
        if len(up) < span:
            more = await client.zrangebyscore(
                key, _bound(score, exclusive=True), "+inf", start=0, num=span, withscores=True
            )
            up += [(m, float(s)) for m, s in more]
        if len(down) < span:
            more = await client.zrevrangebyscore(
                key, _bound(score, exclusive=True), "-inf", start=0, num=span, withscores=True
            )
            down += [(m, float(s)) for m, s in more]
        return int(higher) + len(up_ties), up, down


class ScoreRangeShards(_Sharded):
    """A board split by score ranges: server ``i`` holds scores in ``[bounds[i-1], bounds[i])``.

    ``bounds`` are the ``len(clients) - 1`` increasing split points (server 0
    holds everything below ``bounds[0]``, the last server everything from
    ``bounds[-1]`` up).
    """

    def __init__(self, clients: Sequence[Any], bounds: Sequence[float]) -> None:
        super().__init__(clients)
        bounds = [float(b) for b in bounds]
        if len(bounds) != len(self.clients) - 1:
            raise InvalidArgument(
                f"{len(self.clients)} servers need {len(self.clients) - 1} score bounds,"
                f" not {len(bounds)}"
            )
        if any(not math.isfinite(b) for b in bounds) or any(
            a >= b for a, b in itertools.pairwise(bounds)
        ):
            raise InvalidArgument(f"score bounds must be finite and increasing, not {bounds}")
        self.bounds = bounds
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def range_shard(self, score: float) -> int:
        """The server whose range holds ``score``."""
        return bisect.bisect_right(self.bounds, score)

    @staticmethod
    def directory(key: str) -> str:
        """The sorted set that holds every user's current score (spread by hash)."""
        return f"{key}:scores"

    def directory_client(self, user_id: str) -> Any:
        """The client of the server that holds the user's directory entry."""
        return self.clients[self.hash_shard(user_id)]

    async def add(self, key: str, user_id: str, points: float) -> float:
        lock_key = (key, user_id)
        lock = self._locks.setdefault(lock_key, asyncio.Lock())
        try:
            async with lock:
                return await self._add(key, user_id, points)
        finally:
            if not lock.locked() and self._locks.get(lock_key) is lock:
                del self._locks[lock_key]

    async def _add(self, key: str, user_id: str, points: float) -> float:
        where = self.directory_client(user_id)
        async with where.pipeline(transaction=True) as pipe:
            pipe.zscore(self.directory(key), user_id)
            pipe.zincrby(self.directory(key), points, user_id)
            old, new = await pipe.execute()
        new = float(new)
        target = self.range_shard(new)
        if old is not None and self.range_shard(float(old)) != target:
            await self.clients[self.range_shard(float(old))].zrem(key, user_id)
        await self.clients[target].zadd(key, {user_id: new})
        return new

    async def top(self, key: str, count: int = 10) -> list[Entry]:
        found: list[Entry] = []
        for client in reversed(self.clients):
            if len(found) >= count:
                break
            items = await client.zrevrange(key, 0, count - len(found) - 1, withscores=True)
            found += [
                Entry(_text(m), float(s), len(found) + n + 1) for n, (m, s) in enumerate(items)
            ]
        return found

    async def standing(self, key: str, user_id: str, span: int = 4) -> Standing | None:
        score = await self.directory_client(user_id).zscore(self.directory(key), user_id)
        if score is None:
            return None
        home = self.range_shard(float(score))
        client = self.clients[home]
        cards = await asyncio.gather(*(c.zcard(key) for c in self.clients[home + 1 :]))
        local = await client.zrevrank(key, user_id)
        if local is None:
            return None  # the directory is ahead of the board: a write is under way
        ahead = sum(cards) + local
        start = max(0, local - span)
        items = await client.zrevrange(key, start, local + span, withscores=True)
        around = [
            Entry(_text(m), float(s), ahead - local + start + n + 1)
            for n, (m, s) in enumerate(items)
        ]
        # Neighbours on the servers above (their lowest) and below (their highest).
        missing_up = span - (local - start)
        for shard in range(home + 1, len(self.clients)):
            if missing_up <= 0:
                break
            lowest = await self.clients[shard].zrange(key, 0, missing_up - 1, withscores=True)
            first = around[0].rank if around else ahead + 1
            around = [Entry(_text(m), float(s), first - n - 1) for n, (m, s) in enumerate(lowest)][
                ::-1
            ] + around
            missing_up -= len(lowest)
        missing_down = span - (len(items) - (local - start) - 1)
        for shard in range(home - 1, -1, -1):
            if missing_down <= 0:
                break
            highest = await self.clients[shard].zrevrange(key, 0, missing_down - 1, withscores=True)
            last = around[-1].rank
            around += [Entry(_text(m), float(s), last + n + 1) for n, (m, s) in enumerate(highest)]
            missing_down -= len(highest)
        mine = next(e for e in around if e.user_id == user_id)
        return Standing(mine, around)

    async def repair(self, key: str) -> int:
        """Puts every user of the directory on the server of its range; how many were moved."""
        moved = 0
        for where in self.clients:
            cursor = 0
            while True:
                cursor, items = await where.zscan(self.directory(key), cursor, count=1000)
                for member, score in items:
                    user = _text(_key_bytes(member))
                    target = self.range_shard(float(score))
                    fixed = False
                    for shard, client in enumerate(self.clients):
                        present = await client.zscore(key, user)
                        if shard == target:
                            if present is None or float(present) != float(score):
                                await client.zadd(key, {user: float(score)})
                                fixed = True
                        elif present is not None:
                            await client.zrem(key, user)
                            fixed = True
                    moved += fixed
                if cursor == 0:
                    break
        return moved
