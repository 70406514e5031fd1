"""The log and the snapshots: restarts, kill -9 under a write storm, torn and damaged files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import uvloop

from sdi.errors import Corrupt
from sdi.leaderboard import LeaderboardServer, read_aof
from sdi.leaderboard.persistence import SNAPSHOT_NAME, aof_generations, aof_path
from sdi.resp import encode_command

from .conftest import RawClient, running

POLICIES = ["always", "everysec", "no"]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _fill(port: int) -> None:
    client = redis.Redis(port=port)
    client.zadd("board", {f"p{i}": i for i in range(300)})
    client.zincrby("board", 1000, "p7")
    client.zrem("board", "p0")
    client.zadd("small", {"a": 1.5, "b": float("-inf")})
    client.zadd("gone", {"x": 1})
    client.delete("gone")
    client.zadd("ttl", {"x": 1})
    client.expire("ttl", 1000)
    client.zadd("short", {"x": 1})
    client.pexpire("short", 1)
    client.zunionstore("both", ["board", "small"], aggregate="MAX")
    client.zpopmin("both", 2)
    client.close()


def _state(port: int) -> dict[bytes, object]:
    client = redis.Redis(port=port)
    state: dict[bytes, object] = {}
    for key in sorted(client.keys("*")):
        state[key] = (client.zrange(key, 0, -1, withscores=True), client.pexpiretime(key))
    client.close()
    return state


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("fsync", POLICIES)
def test_restart_restores_everything(tmp_path: Path, fsync: str, loop: str) -> None:
    with running(LeaderboardServer(tmp_path, fsync), loop_factory=LOOPS[loop]) as port:
        _fill(port)
        time.sleep(0.05)  # "short" expires
        before = _state(port)
    assert b"short" not in before
    assert b"gone" not in before
    assert set(before) == {b"board", b"small", b"ttl", b"both"}
    server = LeaderboardServer(tmp_path, fsync)
    with running(server, loop_factory=LOOPS[loop]) as port:
        assert _state(port) == before
        assert server.recovered is not None
        assert server.recovered.commands_replayed >= 10
    lines = [argv[0] for argv in read_aof(aof_path(tmp_path, 0))]
    assert b"PEXPIREAT" in lines
    assert b"EXPIRE" not in lines
    assert b"PEXPIRE" not in lines


@pytest.mark.parametrize("fsync", POLICIES)
def test_snapshot_then_log(tmp_path: Path, fsync: str) -> None:
    server = LeaderboardServer(tmp_path, fsync)
    with running(server) as port:
        _fill(port)
        client = redis.Redis(port=port)
        assert client.save()
        assert aof_generations(tmp_path) == [1]
        assert (tmp_path / SNAPSHOT_NAME).exists()
        client.zincrby("board", 5, "p1")  # after the snapshot: in generation 1
        client.zadd("later", {"m": 3})
        assert client.bgsave()
        for _ in range(200):
            if aof_generations(tmp_path) == [2]:
                break
            time.sleep(0.01)
        assert aof_generations(tmp_path) == [2]
        client.zadd("last", {"m": 4})
        client.close()
        before = _state(port)
    again = LeaderboardServer(tmp_path, fsync)
    with running(again) as port:
        assert _state(port) == before
        assert again.recovered is not None
        assert again.recovered.snapshot_generation == 2
        assert again.recovered.keys_from_snapshot == 5
        # The last ZADD, and the sweep's DEL of "short" if it came after the snapshot.
        assert again.recovered.commands_replayed in (1, 2)
        logged = list(read_aof(aof_path(tmp_path, 2)))
        assert [b"ZADD", b"last", b"4", b"m"] in logged
        assert all(argv in ([b"ZADD", b"last", b"4", b"m"], [b"DEL", b"short"]) for argv in logged)
        assert redis.Redis(port=port).zscore("board", "p1") == 6.0


def test_periodic_snapshot_and_sweep(tmp_path: Path) -> None:
    server = LeaderboardServer(tmp_path, "everysec", snapshot_interval=0.2, sweep_interval=0.02)
    with running(server) as port:
        client = redis.Redis(port=port)
        client.zadd("k", {"m": 1})
        client.zadd("brief", {"m": 1})
        client.pexpire("brief", 50)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
            (tmp_path / SNAPSHOT_NAME).exists() and server.keyspace.expired_keys
        ):
            time.sleep(0.02)
        assert (tmp_path / SNAPSHOT_NAME).exists()
        assert server.keyspace.expired_keys == 1  # swept without anyone asking
        assert client.info("persistence")["aof_generation"] >= 1
        client.close()


def test_crash_before_old_logs_are_deleted(tmp_path: Path) -> None:
    """A snapshot in place but the logs it holds still there: they are not replayed twice."""
    with running(LeaderboardServer(tmp_path, "always")) as port:
        client = redis.Redis(port=port)
        client.zincrby("k", 1, "m")
        client.save()
        client.zincrby("k", 1, "m")
        client.close()
    # Put back a generation the snapshot holds, as if the process died before deleting it.
    aof_path(tmp_path, 0).write_bytes(encode_command("ZINCRBY", "k", "100", "m"))
    server = LeaderboardServer(tmp_path)
    with running(server) as port:
        assert redis.Redis(port=port).zscore("k", "m") == 2.0
    assert not aof_path(tmp_path, 0).exists()


def test_torn_log_tail_is_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running(LeaderboardServer(tmp_path, "always")) as port:
        client = redis.Redis(port=port)
        for i in range(10):
            client.zadd("k", {f"m{i}": i})
        client.close()
    path = aof_path(tmp_path, 0)
    whole = path.stat().st_size
    torn = encode_command("ZADD", "k", "99", "torn")
    for cut in (1, 5, len(torn) - 1):
        with path.open("ab") as log:
            log.write(torn[:cut])
        server = LeaderboardServer(tmp_path)
        with caplog.at_level(logging.WARNING), running(server) as port:
            client = redis.Redis(port=port)
            assert client.zcard("k") == 10
            assert client.zscore("k", "torn") is None
            client.close()
        assert server.recovered is not None
        assert server.recovered.truncated_bytes == cut
        assert path.stat().st_size == whole
        assert "incomplete" in caplog.text
    with running(LeaderboardServer(tmp_path)) as port:  # and it goes on appending after it
        redis.Redis(port=port).zadd("k", {"after": 1})
    with running(LeaderboardServer(tmp_path)) as port:
        assert redis.Redis(port=port).zcard("k") == 11


def test_garbage_in_the_log_is_an_error(tmp_path: Path) -> None:
    with running(LeaderboardServer(tmp_path)) as port:
        redis.Redis(port=port).zadd("k", {"m": 1})
    path = aof_path(tmp_path, 0)
    good = path.read_bytes()
    path.write_bytes(good + b"GARBAGE NOT RESP AT ALL\r\n" + good)
    with pytest.raises(Corrupt, match=r"corrupt at offset \d+ .*truncate it to \d+ bytes"):
        asyncio.run(LeaderboardServer(tmp_path).start())
    path.write_bytes(encode_command("SET", "k", "v"))
    with pytest.raises(Corrupt, match="does not know"):
        asyncio.run(LeaderboardServer(tmp_path).start())


def test_damaged_snapshot_is_an_error(tmp_path: Path) -> None:
    with running(LeaderboardServer(tmp_path)) as port:
        client = redis.Redis(port=port)
        client.zadd("k", {f"m{i}": i for i in range(100)})
        client.save()
        client.close()
    snapshot = tmp_path / SNAPSHOT_NAME
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0x40
    snapshot.write_bytes(bytes(data))
    with pytest.raises(Corrupt, match=r"fails its CRC-32 checksum.*move it away"):
        asyncio.run(LeaderboardServer(tmp_path).start())
    snapshot.write_bytes(bytes(data[:20]))
    with pytest.raises(Corrupt, match="not a leaderboard snapshot"):
        asyncio.run(LeaderboardServer(tmp_path).start())


def test_expired_while_down(tmp_path: Path) -> None:
    now = [1_000_000]
    with running(LeaderboardServer(tmp_path, clock=lambda: now[0])) as port:
        client = redis.Redis(port=port)
        client.zadd("k", {"m": 1})
        client.pexpire("k", 500)
        client.zadd("k", {"n": 2})  # before the deadline: part of the same key
        client.close()
    now[0] = 1_000_600
    server = LeaderboardServer(tmp_path, clock=lambda: now[0])
    with running(server) as port:
        assert redis.Redis(port=port).exists("k") == 0  # the whole key, n too


def _start_subprocess(directory: Path, fsync: str) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdi.leaderboard",
            "--data-dir",
            str(directory),
            "--fsync",
            fsync,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    process.stdout.close()  # it prints nothing more
    assert line.startswith("listening on "), line
    return process, int(line.rsplit(":", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path, fsync: str) -> None:
    process, port = _start_subprocess(tmp_path, fsync)
    acknowledged: dict[int, set[int]] = {}
    increments: dict[int, int] = {}
    stop = threading.Event()

    def storm(worker: int) -> None:
        raw = RawClient(port)
        done: set[int] = set()
        acknowledged[worker] = done
        increments[worker] = 0
        i = 0
        try:
            while not stop.is_set():
                batch = [
                    encode_command("ZADD", f"w{worker}", str(n), f"m{n}") for n in range(i, i + 20)
                ]
                batch.append(encode_command("ZINCRBY", "counter", "1", f"w{worker}"))
                raw.send(b"".join(batch))
                for n in range(i, i + 20):
                    assert raw.read() == 1
                    done.add(n)
                raw.read()
                increments[worker] += 1
                i += 20
        except (ConnectionError, OSError):
            pass
        finally:
            raw.close()

    threads = [threading.Thread(target=storm, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert sum(len(done) for done in acknowledged.values()) > 1000
    server = LeaderboardServer(tmp_path, fsync)
    with running(server) as restarted:
        client = redis.Redis(port=restarted)
        for worker, done in acknowledged.items():
            stored = {int(member[1:]) for member in client.zrange(f"w{worker}", 0, -1)}
            assert done <= stored, f"worker {worker} lost acknowledged writes"
            counter = client.zscore("counter", f"w{worker}") or 0.0
            assert counter >= increments[worker]
        client.close()


@pytest.mark.slow
def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    process, port = _start_subprocess(tmp_path, "no")
    client = redis.Redis(port=port)
    client.zadd("k", {"m": 1})
    client.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    with running(LeaderboardServer(tmp_path)) as again:
        assert redis.Redis(port=again).zscore("k", "m") == 1.0


def test_fsync_always_waits_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``always`` no reply goes out before the fsync that covers it has returned."""
    synced = threading.Event()
    real_fsync = os.fsync
    calls: list[float] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.2)
        real_fsync(fd)
        calls.append(time.monotonic())
        synced.set()

    server = LeaderboardServer(tmp_path, "always")
    with running(server) as port:
        monkeypatch.setattr(os, "fsync", slow_fsync)
        raw = RawClient(port)
        raw.send(b"".join(encode_command("ZADD", "k", str(i), f"m{i}") for i in range(100)))
        replies = [raw.read() for _ in range(100)]
        answered = time.monotonic()
        assert replies == [1] * 100
        assert calls
        assert calls[0] <= answered
        assert len(calls) <= 3  # one fsync for the batch (group commit), not one per command
        raw.close()
        monkeypatch.setattr(os, "fsync", real_fsync)


def test_always_holds_other_clients_replies_until_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader never sees a write before it is on disk (as Redis under appendfsync always)."""
    real_fsync = os.fsync
    done: list[float] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        real_fsync(fd)
        done.append(time.monotonic())

    with running(LeaderboardServer(tmp_path, "always")) as port:
        monkeypatch.setattr(os, "fsync", slow_fsync)
        writer, reader = RawClient(port), RawClient(port)
        writer.send(encode_command("ZADD", "k", "1", "m"))
        time.sleep(0.05)  # the write is applied, its fsync under way
        assert reader.call("ZSCORE", "k", "m") == b"1"
        read_at = time.monotonic()
        assert writer.read() == 1
        assert done
        assert done[0] <= read_at
        writer.close()
        reader.close()
        monkeypatch.setattr(os, "fsync", real_fsync)
