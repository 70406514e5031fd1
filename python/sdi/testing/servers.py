"""Real Debian servers for tests and benchmarks, each on a free loopback port.

:func:`redis_server` starts a ``redis-server`` in a temporary directory with
persistence off, waits until it answers ``PING`` and stops it on exit::

    with redis_server() as server:
        client = redis.Redis.from_url(server.url)

:func:`require_binary` is for pytest fixtures: it returns a server's path,
or skips the test with the reason when the server is not installed (a
failure instead under ``CI=true``, where every server must be there).
:func:`postgres_server` does the same for PostgreSQL (``initdb`` into a
temporary directory, ``postgres`` with ``fsync`` off, one database created,
:attr:`PostgresServer.url` to connect to; as root the server runs as the
``postgres`` user); :func:`require_postgres` finds Debian's binaries or skips.

Nothing here needs pytest, a Redis client or a PostgreSQL driver.
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

from sdi.runtime.text import is_decimal

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "free_port",
    "missing",
    "postgres_bindir",
    "postgres_server",
    "redis_server",
    "require_binary",
    "require_postgres",
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


def free_port_block(taken: set[int], width: int = 3, host: str = "127.0.0.1") -> int:
    """A port ``p`` with ``p`` .. ``p + width - 1`` all free and none in ``taken``
    (an mq broker and its etcd member's two ports); adds them to ``taken``."""
    for _ in range(200):
        port = free_port(host)
        block = set(range(port, port + width))
        if block & taken or port + width - 1 > 65535:
            continue
        try:
            for candidate in block:
                with socket.socket() as probe:
                    probe.bind((host, candidate))
        except OSError:
            continue
        taken |= block
        return port
    raise ServerError(f"no {width} consecutive free ports found")


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


def postgres_bindir() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries (the newest version), or None.

    Debian keeps them in ``/usr/lib/postgresql/<version>/bin``, off PATH;
    elsewhere a ``postgres`` on PATH will do.
    """

    def version(path: Path) -> tuple[int, ...]:
        name = path.parent.parent.name
        return tuple(int(part) for part in name.split(".") if is_decimal(part))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=version)
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    return None if on_path is None else Path(on_path).resolve().parent


def require_postgres() -> Path:
    """:func:`postgres_bindir` for a pytest fixture: skipped (failed under ``CI=true``) if none."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        missing(
            "postgres is not installed (Debian package postgresql; `make system-deps` installs"
            " it; its binaries live in /usr/lib/postgresql/<version>/bin)"
        )
    return bindir


class PostgresServer:
    """One PostgreSQL server with its own temporary data directory.

    :meth:`start` runs ``initdb`` (superuser ``postgres``, trust
    authentication: for tests only), starts ``postgres`` on a free port of
    ``host`` (its Unix socket in the temporary directory, ``fsync`` off
    unless ``durable``), waits until it accepts connections and creates the
    database ``database``; :attr:`url` is that database's URL.
    :meth:`create_database` adds more, :meth:`shutdown` and :meth:`restart`
    stop and start the server on the same port and data (to test clients
    across an outage), and :meth:`stop` stops it and removes the directory.
    Also a context manager.

    PostgreSQL refuses to run as root: as root the server (and ``initdb``)
    run as the user ``run_as`` (default ``postgres``, which Debian's package
    creates) and the directory is given to that user.
    ``extra_args`` are passed on to ``postgres`` (``["-c", "max_connections=200"]``).
    """

    def __init__(
        self,
        bindir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        database: str = "sdi",
        run_as: str | None = None,
        durable: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        found = Path(bindir) if bindir is not None else postgres_bindir()
        if found is None or not (found / "postgres").exists():
            raise FileNotFoundError(
                "postgres is not installed (Debian package postgresql, binaries in"
                " /usr/lib/postgresql/<version>/bin)"
            )
        self.bindir = found
        self.host = host
        self.port = port or 0
        self.database = database
        if run_as is None and os.geteuid() == 0:
            run_as = "postgres"
        self.run_as = run_as
        self.durable = durable
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.user = "postgres"  # the superuser initdb creates
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    @property
    def url(self) -> str:
        """``postgresql://postgres@host:port/<database>``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of the database ``database`` on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (its stdout and stderr, and initdb's), while it exists."""
        return None if self.directory is None else self.directory / "postgres.log"

    def log(self) -> str:
        """What the server has logged so far (empty when there is no log)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def _user_ids(self) -> tuple[int, int] | None:
        if self.run_as is None:
            return None
        import pwd

        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise ServerError(
                f"running as root, postgres must run as another user, and there is no user"
                f" {self.run_as!r} (Debian's postgresql package creates 'postgres')"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, *command: str) -> None:
        """Runs a PostgreSQL tool to completion, as the server's user; ServerError if it fails."""
        assert self.directory is not None
        ids = self._user_ids()
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.directory,
            user=None if ids is None else ids[0],
            group=None if ids is None else ids[1],
            extra_groups=None if ids is None else [],
            timeout=self.startup_timeout,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(
                f"{Path(command[0]).name} failed ({result.returncode}):\n{output}\n{self.log()}"
            )

    def start(self) -> PostgresServer:
        """Creates the cluster, starts the server, creates :attr:`database`; returns self.

        Raises :class:`ServerError` with the log when a step fails or the
        server does not accept connections within ``startup_timeout`` s. A
        port taken between the pick and the bind is retried on another one.
        """
        if self.process is not None:
            raise ServerError("this postgres is started already")
        self.directory = Path(tempfile.mkdtemp(prefix="sdi-postgres-"))
        try:
            (self.directory / "socket").mkdir()
            ids = self._user_ids()
            if ids is not None:
                for path in (self.directory, self.directory / "socket"):
                    os.chown(path, *ids)
            self._run(
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.directory / "data"),
                "--username",
                self.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
            fixed_port = self.port != 0
            for _attempt in range(5):
                if not fixed_port:
                    self.port = free_port(self.host)
                if self._launch():
                    break
                if fixed_port or "already in use" not in self.log():
                    raise ServerError(
                        f"postgres did not start on {self.host}:{self.port}; its log:\n{self.log()}"
                    )
            else:
                raise ServerError(f"postgres found no free port; its log:\n{self.log()}")
            self._createdb(self.database)
            return self
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """Runs the server; True once it accepts connections, False when it exits."""
        assert self.directory is not None
        ids = self._user_ids()
        command = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.directory / "data"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self.directory / "socket"),
            "-c",
            f"fsync={'on' if self.durable else 'off'}",
            "-c",
            f"synchronous_commit={'on' if self.durable else 'off'}",
            "-c",
            f"full_page_writes={'on' if self.durable else 'off'}",
            *self.extra_args,
        ]
        log_path = self.log_path
        assert log_path is not None
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                user=None if ids is None else ids[0],
                group=None if ids is None else ids[1],
                extra_groups=None if ids is None else [],
            )
        ready = str(self.bindir / "pg_isready")
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            check = subprocess.run(
                [ready, "-q", "-h", self.host, "-p", str(self.port), "-U", self.user, "-t", "1"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if check.returncode == 0:
                return True
            time.sleep(0.05)
        raise ServerError(
            f"postgres on {self.host}:{self.port} did not accept connections within "
            f"{self.startup_timeout:g} s; its log:\n{self.log()}"
        )

    def _createdb(self, name: str, options: Sequence[str] = ()) -> None:
        self._run(
            str(self.bindir / "createdb"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            *options,
            name,
        )

    def create_database(self, name: str | None = None, *, options: Sequence[str] = ()) -> str:
        """Creates a database (named ``name``, or a fresh ``test_<n>``); its URL.

        ``options`` go to ``createdb`` (``["--template=template0",
        "--locale-provider=icu", "--icu-locale=en-US"]`` for a database whose
        default collation is not byte order).
        """
        if self.process is None:
            raise ServerError("this postgres is not running")
        if name is None:
            self._databases += 1
            name = f"test_{self._databases}"
        self._createdb(name, options)
        return self.url_for(name)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops the server (fast shutdown: clients are disconnected), keeping its files."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Starts the server again on the same port and data (after :meth:`shutdown`)."""
        if self.directory is None:
            raise ServerError("this postgres was never started (or was stopped)")
        self.shutdown()
        if not self._launch():
            raise ServerError(
                f"postgres did not restart on {self.host}:{self.port}; its log:\n{self.log()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server (SIGINT, then SIGKILL after ``timeout`` s) and removes its files."""
        self.shutdown(timeout)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresServer:
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
        return f"PostgresServer({self.url!r}, {state})"


@contextlib.contextmanager
def postgres_server(
    bindir: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    database: str = "sdi",
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> Iterator[PostgresServer]:
    """A running :class:`PostgresServer` on a free port of ``host``, stopped on exit."""
    server = PostgresServer(
        bindir,
        host=host,
        database=database,
        extra_args=extra_args,
        startup_timeout=startup_timeout,
    ).start()
    try:
        yield server
    finally:
        server.stop()
