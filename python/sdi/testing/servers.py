"""Real Debian servers for tests and benchmarks, each on a free loopback port.

:func:`redis_server` starts a ``redis-server`` in a temporary directory with
persistence off, waits until it answers ``PING`` and stops it on exit::

    with redis_server() as server:
        client = redis.Redis.from_url(server.url)

:func:`require_binary` is for pytest fixtures: it returns a server's path,
or skips the test with the reason when the server is not installed (a
failure instead under ``CI=true``, where every server must be there).
Nothing here needs pytest or a Redis client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

__all__ = [
    "RedisServer",
    "ServerError",
    "free_port",
    "missing",
    "redis_server",
    "require_binary",
]

#: The Debian package that installs each server binary, for the skip reason.
_PACKAGES = {
    "redis-server": "redis-server",
    "kcat": "kcat",
    "etcd": "etcd-server",
    "postgres": "postgresql",
}


class ServerError(RuntimeError):
    """A server did not start (the message carries the end of its log)."""


def require_binary(name: str) -> str:
    """The path of the executable ``name``, for a pytest fixture or test.

    When it is not installed the test is skipped with the reason, except
    when the environment variable ``CI`` is ``true``: there a missing server
    is a failure, not a skip.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    package = _PACKAGES.get(name, name)
    missing(f"{name} is not installed (Debian package {package}; `make system-deps` installs it)")


def missing(reason: str, what: str = "server") -> NoReturn:
    """Skips the current test for a ``what`` not installed; under ``CI=true``, fails it."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true a missing {what} is a failure", pytrace=False)
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL and wait."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def _ping(host: str, port: int, timeout: float) -> bool:
    """Whether a RESP server at ``host:port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = connection.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process with its own temporary directory.

    :meth:`start` picks a free port on ``host`` (unless ``port`` is given),
    starts the server with persistence off and waits until it answers
    ``PING``; :meth:`stop` sends SIGTERM, waits, falls back to SIGKILL and
    removes the directory. Also a context manager doing both.
    ``extra_args`` are passed on to ``redis-server`` (``["--maxmemory", "1gb"]``).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 15.0,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        self.binary = found
        self.host = host
        self.port = port or 0
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://host:port/0``, for ``redis.Redis.from_url``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr), while the server runs."""
        return None if self.directory is None else self.directory / "redis.log"

    def log(self) -> str:
        """What the server has logged so far (empty when there is no log)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def start(self) -> RedisServer:
        """Starts the server and returns once it answers ``PING``.

        Raises :class:`ServerError` with the server's log when it exits or
        does not answer within ``startup_timeout`` seconds. A port taken
        between the pick and the bind is retried on another free port.
        """
        if self.process is not None:
            raise ServerError("this redis-server is started already")
        self.directory = Path(tempfile.mkdtemp(prefix="sdi-redis-"))
        fixed_port = self.port != 0
        try:
            for _attempt in range(5):
                if not fixed_port:
                    self.port = free_port(self.host)
                if self._launch():
                    return self
                if fixed_port or "Address already in use" not in self.log():
                    break
            raise ServerError(
                f"redis-server did not start on {self.host}:{self.port}; its log:\n{self.log()}"
            )
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """Runs the server once; True when it answers ``PING``, False when it exits."""
        assert self.directory is not None
        self._reap()
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
            *self.extra_args,
        ]
        log_path = self.log_path
        assert log_path is not None
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _ping(self.host, self.port, timeout=1.0):
                return True
            time.sleep(0.01)
        raise ServerError(
            f"redis-server on {self.host}:{self.port} did not answer PING within "
            f"{self.startup_timeout:g} s; its log:\n{self.log()}"
        )

    def _reap(self) -> None:
        if self.process is not None:
            _stop_process(self.process, timeout=10.0)
            self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server (SIGTERM, then SIGKILL after ``timeout`` s) and removes its files."""
        if self.process is not None:
            _stop_process(self.process, timeout)
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"RedisServer({self.url!r}, {state})"


@contextlib.contextmanager
def redis_server(
    binary: str | None = None,
    *,
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    startup_timeout: float = 15.0,
) -> Iterator[RedisServer]:
    """A running :class:`RedisServer` on a free port of ``host``, stopped on exit."""
    server = RedisServer(
        binary, host=host, extra_args=extra_args, startup_timeout=startup_timeout
    ).start()
    try:
        yield server
    finally:
        server.stop()
