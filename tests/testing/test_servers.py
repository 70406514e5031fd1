"""``sdi.testing.servers``: a real redis-server per test, reached with redis-py."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from sdi.testing import servers
from sdi.testing.servers import RedisServer

pytestmark = pytest.mark.needs_server


def test_the_fixture_serves_ping_set_get_and_xadd(redis_server: RedisServer) -> None:
    assert redis_server.host == "127.0.0.1"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping() is True
        assert client.set("greeting", b"hello") is True
        assert client.get("greeting") == b"hello"
        first = client.xadd("events", {"value": b"x" * 100})
        second = client.xadd("events", {"value": b"y"})
        assert client.xlen("events") == 2
        entries = client.xrange("events")
        assert [entry_id for entry_id, _ in entries] == [first, second]
        assert entries[0][1] == {b"value": b"x" * 100}
        # No persistence: nothing is saved, nothing is appended.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_stop_ends_the_process_and_removes_the_directory() -> None:
    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as server:
        process, directory = server.process, server.directory
        assert process is not None
        assert directory is not None
        assert directory.is_dir()
        assert "Ready to accept connections" in server.log()
    assert process.returncode is not None
    assert not directory.exists()
    assert server.process is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=5).close()


def test_two_servers_get_different_ports() -> None:
    binary = servers.require_binary("redis-server")
    with servers.redis_server(binary) as one, servers.redis_server(binary) as two:
        assert one.port != two.port
        with redis.Redis.from_url(one.url) as a, redis.Redis.from_url(two.url) as b:
            a.set("k", "one")
            b.set("k", "two")
            assert a.get("k") == b"one"
            assert b.get("k") == b"two"


def test_a_server_that_cannot_start_reports_its_log() -> None:
    binary = servers.require_binary("redis-server")
    server = RedisServer(binary, extra_args=["--no-such-option", "1"])
    with pytest.raises(servers.ServerError, match="no-such-option"):
        server.start()
    assert server.process is None
    assert server.directory is None


def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    ignoring = tmp_path / "stubborn"
    ignoring.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import signal, socket, sys
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            port = int(sys.argv[sys.argv.index("--port") + 1])
            with socket.create_server(("127.0.0.1", port)) as listener:
                while True:
                    connection, _ = listener.accept()
                    with connection:
                        connection.recv(64)
                        connection.sendall(b"+PONG\\r\\n")
            """
        )
    )
    ignoring.chmod(0o755)
    server = RedisServer(str(ignoring)).start()
    process = server.process
    assert process is not None
    server.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL


def test_require_binary_returns_the_path() -> None:
    path = servers.require_binary("sh")
    assert os.access(path, os.X_OK)


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_a_missing_server_skips_with_the_reason(
    ci: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="sdi-no-such-server is not installed"):
        servers.require_binary("sdi-no-such-server")


def test_a_missing_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true a missing server is a failure"):
        servers.require_binary("sdi-no-such-server")
