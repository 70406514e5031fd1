"""The ``sdi`` command as a user runs it: a real process, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import sdi
from sdi.systems import SYSTEMS

SDI = [sys.executable, "-m", "sdi.cli"]


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Starts ``sdi`` and waits for its first 'listening on' line; returns the process and URL."""
    process = subprocess.Popen(
        [*SDI, *args, "--port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    lines = []
    url = None
    # `up` is ready when it says so; `serve` when it listens.
    ready = "all services up" if args[0] == "up" else "listening on"
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match and url is None:
            url = match.group(1)
        if url is not None and ready in line:
            return process, url
    process.kill()
    raise AssertionError(f"sdi never said it was listening; it printed: {''.join(lines)}")


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def _stop(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    return out


def test_version() -> None:
    out = subprocess.run([*SDI, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"sdi {sdi.__version__}"


def test_help_lists_every_command() -> None:
    out = subprocess.run([*SDI, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("up", "serve", "systems", "bench", "token", "user"):
        assert command in out


def test_serve_help_lists_every_system() -> None:
    out = subprocess.run(
        [*SDI, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for system in SYSTEMS:
        assert system.key in out


def test_serving_a_system_that_is_not_built_says_so() -> None:
    unbuilt = next(system for system in SYSTEMS if system.state != "built")
    result = subprocess.run([*SDI, "serve", unbuilt.key], capture_output=True, text=True)
    assert result.returncode != 0
    assert "not built yet" in result.stderr


def test_bad_port_is_refused_with_a_message() -> None:
    result = subprocess.run([*SDI, "up", "--port", "70000"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--port must be between 0 and 65535" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_the_status_page_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    process, url = _start(["up"], tmp_path)
    try:
        status, body = _get(url + "api/status")
        assert status == 200
        document = json.loads(body)
        assert [entry["key"] for entry in document["systems"]] == [s.key for s in SYSTEMS]
        for entry, system in zip(document["systems"], SYSTEMS, strict=True):
            expected = "running" if system.state == "built" else "not built yet"
            assert entry["state"] == expected
        status, page = _get(url)
        assert status == 200
        for system in SYSTEMS:
            assert system.title.encode() in page
        assert _get(url + "healthz") == (200, b"ok\n")
    finally:
        if process.poll() is None:
            out = _stop(process, signum)
    assert "stopped cleanly" in out
    assert (tmp_path / "data" / "status").is_dir()


def test_serve_status_follows_the_service_contract(tmp_path: Path) -> None:
    process, url = _start(["serve", "status"], tmp_path)
    try:
        status, _ = _get(url + "api/status")
        assert status == 200
    finally:
        out = _stop(process, signal.SIGINT)
    assert "stopped cleanly" in out


def test_bench_refuses_an_unknown_core() -> None:
    result = subprocess.run(
        [*SDI, "bench", "no-such-core", "--tiny"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_email_users_and_their_tokens(tmp_path: Path) -> None:
    from sdi.runtime.auth import TokenStore

    def sdi_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SDI, *args, "--data-dir", str(tmp_path)], capture_output=True, text=True
        )

    created = sdi_run("user", "create", "email", "Ada@Example.org", "--name", "Ada")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split()[-1]
    assert "ada@example.org" in created.stdout
    assert sdi_run("user", "list", "email").stdout.split() == ["ada@example.org"]
    tokens = TokenStore(tmp_path / "email" / "tokens.sqlite")
    assert tokens.verify(token) == "ada@example.org"
    again = sdi_run("token", "create", "email", "--subject", "ada@example.org")
    assert again.returncode == 0, again.stderr
    assert tokens.verify(again.stdout.strip()) == "ada@example.org"
    tokens.close()
    taken = sdi_run("user", "create", "email", "ada@example.org")
    assert taken.returncode == 2
    assert "error" in taken.stderr
    assert sdi_run("user", "create", "email", "not an address").returncode == 2
    assert sdi_run("user", "create", "email").returncode == 2
    assert "--subject ADDRESS" in sdi_run("token", "create", "email").stderr
    assert "no user" in sdi_run("token", "create", "email", "--subject", "bob@x.org").stderr
    bad_route = subprocess.run(
        [*SDI, "serve", "email", "--port", "0", "--route", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_route.returncode == 2
    assert "domain=host:port" in bad_route.stderr


def test_serve_email_blob_options_and_their_errors(tmp_path: Path) -> None:
    from sdi.testing.servers import free_port

    out = subprocess.run(
        [*SDI, "serve", "email", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--blob-url",
        "--blob-access-key",
        "--blob-secret-key",
        "--blob-gc-interval",
        "--blob-gc-grace",
        "--database-url",
    ):
        assert option in out
    assert "AWS_ACCESS_KEY_ID" in out
    assert "AWS_SECRET_ACCESS_KEY" in out

    def serve(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SDI, "serve", "email", "--port", "0", "--data-dir", str(tmp_path), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )

    def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert "Traceback" not in result.stderr, result.stderr
        return [line for line in result.stderr.splitlines() if not line.startswith("usage:")]

    malformed = serve("--blob-url", "ftp://somewhere/blobs")
    assert malformed.returncode == 2
    assert error_lines(malformed) == [
        "sdi: error: --blob-url is s3://BUCKET/PREFIX?endpoint=http://host:port or "
        "file:///dir, not 'ftp://somewhere/blobs'"
    ]
    no_keys = serve("--blob-url", "s3://mail")
    assert no_keys.returncode == 2
    [line] = error_lines(no_keys)
    assert "--blob-access-key" in line
    assert "AWS_ACCESS_KEY_ID" in line
    negative = serve("--blob-gc-interval", "-1")
    assert negative.returncode == 2
    assert len(error_lines(negative)) == 1
    # well formed, but nothing listens there: refused at start, in one line
    endpoint = f"http://127.0.0.1:{free_port()}"
    down = serve(
        "--blob-url", f"s3://mail/p/?endpoint={endpoint}",
        "--blob-access-key", "k", "--blob-secret-key", "s",
    )  # fmt: skip
    assert down.returncode == 1
    [line] = error_lines(down)
    assert line.startswith(f"sdi serve email: cannot reach the object store at {endpoint}")


def test_email_token_with_a_database_url_is_checked() -> None:
    result = subprocess.run(
        [*SDI, "token", "create", "email", "--subject", "ann@sdi.local",
         "--database-url", "mysql://x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--database-url must be a postgresql:// URL" in result.stderr
    other = subprocess.run(
        [*SDI, "token", "create", "proximity", "--database-url", "postgresql://u@h:1/db"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 2
    assert "--database-url is for email tokens" in other.stderr


def test_email_token_create_finds_the_user_in_the_database(tmp_path: Path) -> None:
    from sdi.runtime.auth import TokenStore
    from sdi.testing import servers

    bindir = servers.require_postgres()

    def sdi_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SDI, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
        )

    with servers.postgres_server(bindir) as postgres:
        url = postgres.create_database()
        created = sdi_run(
            tmp_path / "a", "user", "create", "email", "ada@example.org", "--database-url", url
        )
        assert created.returncode == 0, created.stderr
        # another process's data directory: the user is in the shared database only
        issued = sdi_run(
            tmp_path / "b", "token", "create", "email", "--subject", "ada@example.org",
            "--database-url", url,
        )  # fmt: skip
        assert issued.returncode == 0, issued.stderr
        tokens = TokenStore(tmp_path / "b" / "email" / "tokens.sqlite")
        try:
            assert tokens.verify(issued.stdout.strip()) == "ada@example.org"
        finally:
            tokens.close()
        unknown = sdi_run(
            tmp_path / "b", "token", "create", "email", "--subject", "bob@example.org",
            "--database-url", url,
        )  # fmt: skip
        assert unknown.returncode == 2
        assert "no user bob@example.org" in unknown.stderr
        assert not (tmp_path / "b" / "email" / "mail.sqlite").exists()
        postgres.shutdown()
        down = sdi_run(
            tmp_path / "b", "token", "create", "email", "--subject", "ada@example.org",
            "--database-url", url,
        )  # fmt: skip
        assert down.returncode == 2
        assert "Traceback" not in down.stderr
        assert "unavailable" in down.stderr
