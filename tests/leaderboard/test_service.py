"""``sdi serve leaderboard``: the book's HTTP API over the local store, tokens, bad input,
the RESP view of the same boards, restarts, the router over sharded servers, and the CLI."""

from __future__ import annotations

import math
import random
import urllib.parse
from pathlib import Path

import pytest
import redis

from sdi.errors import InvalidArgument
from sdi.leaderboard import LeaderboardServer
from sdi.leaderboard.api import POINTS_MAX
from sdi.leaderboard.service import LeaderboardService, service
from sdi.testing.broker import ServiceProcess
from sdi.testing.running import TEST_TOKEN, RunningService, request
from sdi.testing.servers import free_port

from .conftest import running


def win(board: RunningService, user: str, points: object, **extra: object) -> tuple[int, object]:
    return board.request("POST", "/v1/scores", {"user_id": user, "points": points, **extra})


def test_the_books_api(tmp_path: Path) -> None:
    board = RunningService(LeaderboardService(api_token=TEST_TOKEN), tmp_path)
    try:
        resp = redis.Redis.from_url(board.endpoints[1].url)
        scores: dict[str, float] = {}
        rng = random.Random(3)
        for _ in range(300):
            user = f"player-{rng.randrange(40)}"
            points = rng.choice([1, 2, 3, 2.5])
            status, body = win(board, user, points)
            assert status == 200, body
            scores[user] = scores.get(user, 0.0) + points
            assert isinstance(body, dict)
            assert body["score"] == scores[user]
        month = body["month"]
        ordered = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        status, top = board.request("GET", "/v1/scores")
        assert status == 200
        assert top["total"] == len(scores)
        assert [(e["user_id"], e["score"], e["rank"]) for e in top["data"]] == [
            (u, s, n + 1) for n, (u, s) in enumerate(ordered[:10])
        ]
        # The RESP port serves the same sorted set.
        key = f"leaderboard:{month}"
        assert resp.zrevrange(key, 0, 9, withscores=True) == [
            (u.encode(), s) for u, s in ordered[:10]
        ]
        for n in (0, 2, 20, len(ordered) - 1):
            user, score = ordered[n]
            status, standing = board.request("GET", f"/v1/scores/{user}")
            assert status == 200
            assert standing["user"] == {"user_id": user, "score": score, "rank": n + 1}
            want = ordered[max(0, n - 4) : n + 5]
            assert [e["user_id"] for e in standing["around"]] == [u for u, _ in want]
            assert [e["rank"] for e in standing["around"]] == list(
                range(max(0, n - 4) + 1, max(0, n - 4) + 1 + len(want))
            )
        status, limited = board.request("GET", "/v1/scores?limit=3")
        assert [e["user_id"] for e in limited["data"]] == [u for u, _ in ordered[:3]]
        # Another month is another board.
        assert board.request("GET", "/v1/scores?month=2020-01")[1]["data"] == []
        assert win(board, "ada", 5)[0] == 200
        status, answer = board.request(
            "POST", "/v1/scores?month=2020-01", {"user_id": "x", "points": 1}
        )
        assert status == 200
        assert answer["month"] == "2020-01"
        assert board.request("GET", "/v1/scores/x?month=2020-01")[1]["user"]["rank"] == 1
        assert board.request("GET", "/v1/scores/nobody")[0] == 404
        # Odd user ids travel in the path, quoted.
        assert win(board, "ä b/c", 1)[0] == 200
        quoted = urllib.parse.quote("ä b/c", safe="")
        assert board.request("GET", f"/v1/scores/{quoted}")[1]["user"]["user_id"] == "ä b/c"
        resp.close()
    finally:
        board.stop()


def test_writes_need_a_token_and_bad_input_changes_nothing(tmp_path: Path) -> None:
    board = RunningService(LeaderboardService(), tmp_path)
    try:
        admin = (tmp_path / "api-token").read_text().strip()
        for token in (None, "sdi_wrong"):
            status, answer = board.request(
                "POST", "/v1/scores", {"user_id": "a", "points": 1}, token=token
            )
            assert status == 401
            assert "token" in answer["error"]
        bad_bodies: list[object] = [
            {"user_id": "a"},
            {"user_id": "a", "points": 0},
            {"user_id": "a", "points": -3},
            {"user_id": "a", "points": POINTS_MAX + 1},
            {"user_id": "a", "points": True},
            {"user_id": "a", "points": "5"},
            {"user_id": "", "points": 1},
            {"user_id": 7, "points": 1},
            {"user_id": "x" * 300, "points": 1},
            {"user_id": "a\nb", "points": 1},
            {"user_id": "a", "points": 1, "extra": 1},
            [1, 2],
        ]
        for body in bad_bodies:
            status, answer = board.request("POST", "/v1/scores", body, token=admin)
            assert status == 400, body
            assert answer["error"]
        for raw in (
            b"{",
            b"\xff",
            b'{"user_id": "a", "points": NaN}',
            b'{"user_id": "a", "points": 1e999}',
        ):
            status, _ = board.request("POST", "/v1/scores", raw=raw, token=admin)
            assert status == 400, raw
        for query in (
            "month=2026-13",
            "month=26-11",
            "limit=0",
            "limit=101",
            "limit=x",
            "sort=1",
            "limit=%C2%B2",
        ):
            assert board.request("GET", f"/v1/scores?{query}")[0] == 400, query
        assert board.request("DELETE", "/v1/scores")[0] == 405
        assert board.request("GET", "/v2/nothing")[0] == 404
        assert board.request("GET", "/v1/scores")[1]["total"] == 0
        assert win(board, "a", 1)[0] == 401  # TEST_TOKEN is not this service's
        status, body = board.request(
            "POST", "/v1/scores", {"user_id": "a", "points": 1}, token=admin
        )
        assert status == 200
        assert body["score"] == 1
        assert not math.isnan(body["score"])
    finally:
        board.stop()


def test_scores_survive_a_restart(tmp_path: Path) -> None:
    board = RunningService(LeaderboardService(api_token=TEST_TOKEN, fsync="always"), tmp_path)
    try:
        for n in range(50):
            assert win(board, f"u{n % 7}", n + 1)[0] == 200
        before = board.request("GET", "/v1/scores")[1]
    finally:
        board.stop()
    again = RunningService(LeaderboardService(api_token=TEST_TOKEN), tmp_path)
    try:
        assert again.request("GET", "/v1/scores")[1] == before
    finally:
        again.stop()


@pytest.mark.parametrize("sharding", ["hash", "range"])
def test_the_router_over_sharded_sdi_servers(tmp_path: Path, sharding: str) -> None:
    servers = [LeaderboardServer(None) for _ in range(3)]
    with running(servers[0]) as a, running(servers[1]) as b, running(servers[2]) as c:
        urls = ",".join(f"redis://127.0.0.1:{port}/0" for port in (a, b, c))
        router = RunningService(
            LeaderboardService(
                api_token=TEST_TOKEN, shards=urls, sharding=sharding, score_bounds="10,30"
            ),
            tmp_path,
        )
        try:
            assert len(router.endpoints) == 1  # no local store
            scores: dict[str, float] = {}
            rng = random.Random(11)
            for _ in range(200):
                user = f"p{rng.randrange(30)}"
                points = rng.randint(1, 4)
                assert win(router, user, points)[0] == 200
                scores[user] = scores.get(user, 0.0) + points
            ordered = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
            top = router.request("GET", "/v1/scores")[1]
            assert [(e["user_id"], e["score"]) for e in top["data"]] == ordered[:10]
            assert top["total"] == len(scores)
            for n, (user, score) in enumerate(ordered):
                standing = router.request("GET", f"/v1/scores/{user}")[1]
                assert standing["user"] == {"user_id": user, "score": score, "rank": n + 1}
                want = [u for u, _ in ordered[max(0, n - 4) : n + 5]]
                assert [e["user_id"] for e in standing["around"]] == want
            month = top["month"]
            held = [len(s.keyspace.get(f"leaderboard:{month}".encode()) or []) for s in servers]
            assert sum(held) == len(scores)
            assert all(held)  # every server holds part of the board
        finally:
            router.stop()


def test_options_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="--resp-port"):
        LeaderboardService(resp_port=70000)
    with pytest.raises(InvalidArgument, match="--aof-fsync"):
        LeaderboardService(fsync="sometimes")
    with pytest.raises(InvalidArgument, match="--sharding"):
        LeaderboardService(sharding="round-robin")
    with pytest.raises(InvalidArgument, match="redis:// URLs"):
        LeaderboardService(shards="http://x")
    with pytest.raises(InvalidArgument, match="needs 1 --score-bounds"):
        LeaderboardService(shards="redis://a,redis://b", sharding="range")
    with pytest.raises(InvalidArgument, match="numbers"):
        LeaderboardService(score_bounds="1,x")
    built = service({"aof_fsync": "always", "resp_port": 7000})
    assert isinstance(built, LeaderboardService)
    assert (built.fsync, built.resp_port) == ("always", 7000)


def test_sdi_serve_leaderboard(tmp_path: Path) -> None:
    # A fixed RESP port: the restart must find the same one free (port + 1 may not be).
    resp_port = str(free_port())
    args = ["--api-token", TEST_TOKEN, "--aof-fsync", "always", "--resp-port", resp_port]
    with ServiceProcess("leaderboard", tmp_path, args=args) as process:
        status, body = request(process.port, "POST", "/v1/scores", {"user_id": "a", "points": 2})
        assert status == 200
        assert body["score"] == 2
        process.kill()
        process.restart()
        assert request(process.port, "GET", "/v1/scores/a")[1]["user"]["score"] == 2
        resp = redis.Redis(port=int(resp_port))
        assert resp.zrevrange(f"leaderboard:{body['month']}", 0, -1, withscores=True) == [
            (b"a", 2.0)
        ]
        resp.close()
        assert process.stop() == 0
