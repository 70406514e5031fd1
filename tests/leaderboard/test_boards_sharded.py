"""The three boards (one server, hash shards, score-range shards) against a model, on redis-server.

Every board must give what one sorted set gives: the top users, a user's
rank and the users around them, in Redis's ZREVRANGE order (score
descending, then user id descending). Points are small integers so that
ties are common, including ties spread over several servers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
import redis.asyncio

from sdi.errors import InvalidArgument
from sdi.leaderboard.board import Board, Entry, HashShards, ScoreRangeShards, SingleBoard
from sdi.testing.servers import RedisServer

KEY = "leaderboard:2026-11"


class Model:
    def __init__(self) -> None:
        self.scores: dict[str, float] = {}

    def add(self, user: str, points: float) -> float:
        self.scores[user] = self.scores.get(user, 0.0) + points
        return self.scores[user]

    def ordered(self) -> list[Entry]:
        best = sorted(self.scores.items(), key=lambda kv: (kv[1], kv[0].encode()), reverse=True)
        return [Entry(user, score, n + 1) for n, (user, score) in enumerate(best)]

    def standing(self, user: str, span: int) -> tuple[Entry, list[Entry]] | None:
        ordered = self.ordered()
        for n, entry in enumerate(ordered):
            if entry.user_id == user:
                return entry, ordered[max(0, n - span) : n + span + 1]
        return None


@pytest.fixture
def clients(redis_server: RedisServer) -> Iterator[list[str]]:
    """URLs of four separate keyspaces (databases 1 to 4 of one redis-server), emptied."""
    urls = [f"{redis_server.url.rsplit('/', 1)[0]}/{db}" for db in range(1, 5)]
    yield urls
    import redis as sync_redis

    for url in urls:
        client = sync_redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def boards(urls: list[str]) -> dict[str, Board]:
    def client(url: str) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(url)

    return {
        "single": SingleBoard(client(urls[0])),
        "hash": HashShards([client(url) for url in urls[1:4]]),
        "range": ScoreRangeShards([client(url) for url in urls[1:4]], [20, 45]),
    }


async def _exercise(urls: list[str], seed: int) -> None:
    rng = random.Random(seed)
    made = boards(urls)
    users = [f"u{n:02d}" for n in range(rng.randint(5, 40))] + ["z", "\u00e9t\u00e9"]
    try:
        for name in ("hash", "range"):
            # Each sharded board gets its own keyspaces' board key.
            assert await made[name].size(f"{KEY}:{name}") == 0
        model = Model()
        for step in range(200):
            user = rng.choice(users)
            points = float(rng.randint(1, 6))
            expected = model.add(user, points)
            for name, board in made.items():
                got = await board.add(f"{KEY}:{name}", user, points)
                assert got == expected, (name, step)
            if step % 20 == 19:
                ordered = model.ordered()
                for name, board in made.items():
                    key = f"{KEY}:{name}"
                    assert await board.size(key) == len(ordered), name
                    assert await board.top(key, 10) == ordered[:10], name
                    assert await board.top(key, 0) == []
                    for probe in rng.sample(users, min(8, len(users))):
                        span = rng.choice([0, 1, 4])
                        want = model.standing(probe, span)
                        got = await board.standing(key, probe, span)
                        if want is None:
                            assert got is None, (name, probe)
                        else:
                            assert got is not None, (name, probe)
                            assert (got.entry, got.around) == want, (name, probe, span)
        # The range board's servers each hold only their range, and no user twice.
        ranges = made["range"]
        assert isinstance(ranges, ScoreRangeShards)
        seen: set[bytes] = set()
        for shard, client in enumerate(ranges.clients):
            items = await client.zrange(f"{KEY}:range", 0, -1, withscores=True)
            for member, score in items:
                assert ranges.range_shard(score) == shard
                assert member not in seen
                seen.add(member)
        assert len(seen) == len(model.scores)
        assert await ranges.repair(f"{KEY}:range") == 0
    finally:
        for board in made.values():
            await board.close()


@pytest.mark.parametrize("seed", range(6))
def test_every_board_agrees_with_the_model(clients: list[str], seed: int) -> None:
    asyncio.run(_exercise(clients, seed))


def test_repair_moves_users_back_where_the_directory_says(clients: list[str]) -> None:
    async def scenario() -> None:
        board = ScoreRangeShards([redis.asyncio.Redis.from_url(u) for u in clients[:3]], [10, 20])
        try:
            for user, points in [("a", 5), ("b", 15), ("c", 25), ("a", 10)]:
                await board.add(KEY, user, points)
            # A crash between the directory's increment and the move: "a" is on the wrong server.
            await board.clients[1].zrem(KEY, "a")
            await board.clients[0].zadd(KEY, {"a": 5})
            await board.directory_client("b").zincrby(board.directory(KEY), 10, "b")
            assert await board.repair(KEY) == 2
            assert await board.top(KEY) == [
                Entry("c", 25.0, 1),  # ties: the greater id first, as ZREVRANGE orders
                Entry("b", 25.0, 2),
                Entry("a", 15.0, 3),
            ]
            assert await board.clients[0].zcard(KEY) == 0
            assert await board.repair(KEY) == 0
        finally:
            await board.close()

    asyncio.run(scenario())


def test_bad_shard_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at least one server"):
        HashShards([])
    fake = [object(), object(), object()]
    with pytest.raises(InvalidArgument, match="need 2 score bounds"):
        ScoreRangeShards(fake, [1])
    with pytest.raises(InvalidArgument, match="increasing"):
        ScoreRangeShards(fake, [5, 5])
    with pytest.raises(InvalidArgument, match="finite"):
        ScoreRangeShards(fake, [1, float("inf")])
