"""The leaderboard's Redis server: sorted sets over RESP, an append-only log and snapshots.

:class:`LeaderboardServer` serves :func:`sdi.leaderboard.commands.zset_commands`
on :class:`sdi.runtime.respserver.RespServer`, and, given a data directory,
keeps the data there (:mod:`sdi.leaderboard.persistence`): every change is
appended to the log, fsynced per ``fsync`` (``always``: before any reply
that could show it is sent, one fsync for every command appended before it
started, so pipelines and concurrent clients share them; ``everysec``: in a
thread once a second; ``no``: when the OS likes). Every reply is sent only
after the log records before it have been handed to the OS, so a killed
process loses nothing acknowledged under any policy, and a lost machine
nothing acknowledged under ``always`` (up to about a second under ``everysec``).

A snapshot is taken every ``snapshot_interval`` seconds when something
changed, when the current log passes ``snapshot_log_bytes``, on ``SAVE`` and
``BGSAVE`` (``BGREWRITEAOF`` too), and the log before it is then deleted. On
start the server loads the snapshot and replays the log after it. Keys past
their deadline are removed when touched and by a sweep every
``sweep_interval`` seconds; each removal is logged as ``DEL``.

>>> import asyncio, redis, tempfile
>>> async def demo(directory: str) -> list[object]:
...     server = LeaderboardServer(directory, fsync="always")
...     port = await server.start("127.0.0.1", 0)
...     client = redis.asyncio.Redis(port=port)
...     await client.zadd("board", {"alice": 10, "bob": 30})
...     await client.zincrby("board", 25, "alice")
...     top = await client.zrevrange("board", 0, 9, withscores=True)
...     await client.aclose()
...     await server.stop()
...     again = LeaderboardServer(directory)
...     await again.start("127.0.0.1", 0)
...     restored = again.keyspace.get(b"board").items()
...     await again.stop()
...     return [top, restored]
>>> with tempfile.TemporaryDirectory() as directory:
...     asyncio.run(demo(directory))
[[(b'alice', 35.0), (b'bob', 30.0)], [(b'bob', 30.0), (b'alice', 35.0)]]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdi.errors import Corrupt, InvalidArgument
from sdi.leaderboard.commands import keyspace_info, zset_commands
from sdi.leaderboard.keyspace import Keyspace, now_ms
from sdi.leaderboard.persistence import (
    FSYNC_POLICIES,
    SNAPSHOT_NAME,
    AppendOnlyFile,
    Recovered,
    SnapshotEntry,
    aof_generations,
    aof_path,
    read_aof,
    read_snapshot,
    write_snapshot,
)
from sdi.resp import SimpleString
from sdi.runtime.respserver import (
    OK,
    Client,
    Command,
    Reply,
    RespError,
    RespServer,
)
from sdi.runtime.service import cancel_and_wait, run
from sdi.zset import ZSet

__all__ = ["LeaderboardServer"]

logger = logging.getLogger(__name__)


class LeaderboardServer:
    """Sorted sets over RESP with persistence in ``data_dir`` (None: in memory only).

    ``fsync`` is ``always``, ``everysec`` or ``no``; ``clock`` (ms since the
    epoch) is for tests; ``resp_options`` go to :class:`RespServer` (limits).
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        fsync: str = "everysec",
        *,
        snapshot_interval: float = 300.0,
        snapshot_log_bytes: int = 64 * 1024 * 1024,
        sweep_interval: float = 0.1,
        clock: Callable[[], int] = now_ms,
        **resp_options: Any,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument(
                f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}"
            )
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.fsync = fsync
        self.snapshot_interval = snapshot_interval
        self.snapshot_log_bytes = snapshot_log_bytes
        self.sweep_interval = sweep_interval
        self.keyspace = Keyspace(clock=clock, on_expire=self._expired)
        self.commands = zset_commands(self.keyspace, self._propagate)
        table = dict(self.commands)
        table.update(self._server_commands())
        info = {
            "keyspace": lambda: keyspace_info(self.keyspace),
            "persistence": self._persistence_info,
            "stats": lambda: {"expired_keys": self.keyspace.expired_keys},
        }
        self.resp: RespServer
        if self.data_dir is None:
            self.resp = RespServer(table, info=info, watch=True, **resp_options)
        else:
            self.resp = RespServer(
                table, before_reply=self._before_reply, info=info, watch=True, **resp_options
            )
        self.aof: AppendOnlyFile | None = None
        #: What recovery found (None before start or without a directory).
        self.recovered: Recovered | None = None
        #: Changes since the last snapshot (INFO's ``rdb_changes_since_last_save``).
        self.changes = 0
        self.last_snapshot = int(time.time())
        self._last_snapshot_clock = time.monotonic()
        self._replaying = False
        self._snapshot_task: asyncio.Task[None] | None = None
        self._cron_task: asyncio.Task[None] | None = None
        self._started = False
        self._local: Client | None = None

    @property
    def port(self) -> int:
        """The port served (after :meth:`start`)."""
        return self.resp.port

    # --- life cycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Recovers the data directory, then listens on ``host:port``; returns the port.

        Raises :class:`sdi.errors.Corrupt` (nothing served) when a snapshot
        fails its checksum or a log does not parse.
        """
        if self.data_dir is not None:
            # Nothing is served yet, so nothing else touches the keyspace; a worker
            # thread keeps a long replay from stalling other services on this loop.
            await asyncio.to_thread(self._recover, self.data_dir)
        bound = await self.resp.start(host, port)
        self._cron_task = asyncio.create_task(self._cron(), name="sdi-leaderboard-cron")
        self._started = True
        return bound

    async def stop(self) -> None:
        """Stops serving, finishes a snapshot in progress, fsyncs and closes the log."""
        await self.resp.stop()
        await cancel_and_wait(self._cron_task)
        self._cron_task = None
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._snapshot_task)
        if self.aof is not None:
            await self.aof.close()
            self.aof = None
        self._started = False

    # --- commands from this process ----------------------------------------------------

    def execute(self, argv: list[bytes]) -> Reply:
        """Runs one command as a RESP2 client would (on the event loop); its reply.

        Changes are logged like a client's; await :meth:`durable` before
        telling anyone about them. Raises :class:`RespError` as a client
        would get it.
        """
        command = self.commands.get(argv[0].lower().decode("latin-1"))
        if command is None:
            raise RespError(f"ERR unknown command '{argv[0][:64].decode('latin-1')}'")
        if "blocking" in command.flags:
            raise RespError("ERR blocking commands are for network clients; use ZPOPMIN/ZMPOP")
        if self._local is None:
            self._local = Client(self.resp, 0, "local", "local")
        return command.handler(self._local, argv)

    async def durable(self) -> None:
        """Returns once every change so far is as durable as ``fsync`` promises a reply."""
        await self._before_reply()

    # --- the log ------------------------------------------------------------------------

    def _propagate(self, argv: list[bytes]) -> None:
        if self._replaying:
            return
        # Every change passes here as the command the log gets: the keys it names
        # are the keys it changed, which breaks their WATCHes.
        if self.resp.watching:
            name = argv[0].lower()
            if name in (b"flushall", b"flushdb"):
                self.resp.touch_all()
            elif name in (b"del", b"unlink", b"rename", b"renamenx"):
                self.resp.touch(argv[1:])
            else:
                self.resp.touch(argv[1:2])
        self.changes += 1
        if self.aof is not None:
            self.aof.append(argv)

    def _expired(self, key: bytes) -> None:
        self._propagate([b"DEL", key])

    async def _before_reply(self) -> None:
        aof = self.aof
        if aof is None:
            return
        aof.flush()
        if self.fsync == "always" and aof.dirty:
            await aof.sync()

    def _recover(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / (SNAPSHOT_NAME + ".tmp")).unlink(missing_ok=True)
        recovered = Recovered()
        keyspace = self.keyspace
        keyspace.clear()
        keyspace.loading = True
        self._replaying = True
        try:
            snapshot = directory / SNAPSHOT_NAME
            if snapshot.exists():
                generation, entries = read_snapshot(snapshot)
                recovered.snapshot_generation = generation
                for entry in entries:
                    try:
                        zset = ZSet.load(entry.blob)
                    except Corrupt as error:
                        raise Corrupt(
                            f"snapshot {snapshot}: the set of key {entry.key[:64]!r} does not"
                            f" load ({error}) although the file passed its checksum: a bug;"
                            " keep the file and report it"
                        ) from None
                    keyspace.store(entry.key, zset)
                    if entry.deadline is not None:
                        keyspace.expires[entry.key] = entry.deadline
                recovered.keys_from_snapshot = len(entries)
            base = recovered.snapshot_generation
            generations = aof_generations(directory)
            for generation in generations:
                if generation < base:  # held by the snapshot; left by a crash before deletion
                    aof_path(directory, generation).unlink(missing_ok=True)
            live = [generation for generation in generations if generation >= base]
            client = Client(self.resp, 0, "aof", "aof")
            for generation in live:
                path = aof_path(directory, generation)
                size = path.stat().st_size
                for argv in read_aof(path):
                    self._replay(client, argv, path)
                    recovered.commands_replayed += 1
                recovered.truncated_bytes += size - path.stat().st_size
            recovered.generations = tuple(live)
        finally:
            keyspace.loading = False
            self._replaying = False
        self.recovered = recovered
        self.aof = AppendOnlyFile(directory, live[-1] if live else base, self.fsync)
        if recovered.keys_from_snapshot or recovered.commands_replayed:
            logger.info(
                "leaderboard: %d keys from the snapshot, %d commands replayed from %s",
                recovered.keys_from_snapshot,
                recovered.commands_replayed,
                directory,
            )

    def _replay(self, client: Client, argv: list[bytes], path: Path) -> None:
        command = self.commands.get(argv[0].lower().decode("latin-1"))
        if command is None:
            raise Corrupt(
                f"{path} holds a command this server does not know ({argv[0][:32]!r}): is it a"
                " leaderboard log? Nothing was loaded"
            )
        try:
            command.handler(client, argv)
        except RespError as error:
            raise Corrupt(
                f"{path}: replaying {argv[0][:32]!r} failed ({error.message}); nothing was"
                " loaded. Keep the directory and report it"
            ) from None

    # --- snapshots ----------------------------------------------------------------------

    async def snapshot(self) -> None:
        """Takes a snapshot now (after one in progress) and drops the log it holds."""
        while (running := self._snapshot_task) is not None and not running.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        await asyncio.shield(self._start_snapshot())

    def _start_snapshot(self) -> asyncio.Task[None]:
        if self.data_dir is None or self.aof is None:
            raise RespError("ERR persistence is off (the server has no data directory)")
        task = asyncio.ensure_future(self._snapshot(self.data_dir, self.aof))
        self._snapshot_task = task
        task.add_done_callback(self._snapshot_done)
        return task

    def _snapshot_done(self, task: asyncio.Task[None]) -> None:
        if self._snapshot_task is task:
            self._snapshot_task = None

    async def _snapshot(self, directory: Path, aof: AppendOnlyFile) -> None:
        keyspace = self.keyspace
        expires = keyspace.expires
        now = keyspace.clock()
        entries = [
            SnapshotEntry(key, expires.get(key), zset.dump())
            for key, zset in keyspace.data.items()
            if expires.get(key, now + 1) > now  # past their deadline: gone already
        ]
        generation = aof.generation + 1
        aof.rotate(generation)
        changes = self.changes
        self._last_snapshot_clock = time.monotonic()
        await asyncio.to_thread(write_snapshot, directory, generation, entries)
        self.changes -= changes
        self.last_snapshot = int(time.time())
        for old in aof_generations(directory):
            if old < generation:
                aof_path(directory, old).unlink(missing_ok=True)

    def _background_snapshot(self) -> bool:
        """Starts a snapshot unless one is in progress; whether it did."""
        running = self._snapshot_task
        if running is not None and not running.done():
            return False
        self._start_snapshot().add_done_callback(_log_failure)
        return True

    # --- periodic work ------------------------------------------------------------------

    async def _cron(self) -> None:
        last_fsync = time.monotonic()
        sync_task: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.keyspace.sweep()
            aof = self.aof
            if aof is None:
                continue
            aof.flush()
            now = time.monotonic()
            if (
                self.fsync == "everysec"
                and now - last_fsync >= 1.0
                and aof.dirty
                and (sync_task is None or sync_task.done())
            ):
                last_fsync = now
                sync_task = asyncio.ensure_future(aof.sync())
                sync_task.add_done_callback(_log_failure)
            if self.changes and (
                now - self._last_snapshot_clock >= self.snapshot_interval
                or aof.file_bytes >= self.snapshot_log_bytes
            ):
                self._background_snapshot()

    # --- SAVE, BGSAVE, INFO -------------------------------------------------------------

    def _persistence_info(self) -> dict[str, object]:
        aof = self.aof
        return {
            "rdb_changes_since_last_save": self.changes,
            "rdb_bgsave_in_progress": int(self._snapshot_task is not None),
            "rdb_last_save_time": self.last_snapshot,
            "aof_enabled": int(aof is not None),
            "aof_fsync": self.fsync,
            "aof_current_size": 0 if aof is None else aof.file_bytes,
            "aof_generation": 0 if aof is None else aof.generation,
        }

    async def _save(self, client: Client, argv: list[bytes]) -> Reply:
        await self.snapshot()
        return OK

    def _bgsave(self, client: Client, argv: list[bytes]) -> Reply:
        if not self._background_snapshot():
            raise RespError("ERR Background save already in progress")
        if argv[0].lower() == b"bgrewriteaof":
            return SimpleString(b"Background append only file rewriting started")
        return SimpleString(b"Background saving started")

    def _lastsave(self, client: Client, argv: list[bytes]) -> Reply:
        return self.last_snapshot

    def _server_commands(self) -> dict[str, Command]:
        admin = ("admin", "noscript")
        return {
            "save": Command(self._save, 1, admin, 0, 0, 0, "server", "Snapshot now"),
            "bgsave": Command(self._bgsave, -1, admin, 0, 0, 0, "server", "Snapshot"),
            "bgrewriteaof": Command(self._bgsave, 1, admin, 0, 0, 0, "server", "Snapshot"),
            "lastsave": Command(self._lastsave, 1, ("fast",), 0, 0, 0, "server", "Last snapshot"),
        }


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("leaderboard background work failed", exc_info=task.exception())


def main(argv: list[str] | None = None) -> None:
    """``python -m sdi.leaderboard``: serves until SIGINT or SIGTERM (for tests and trials).

    Prints ``listening on <host>:<port>`` once it serves.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m sdi.leaderboard", description=main.__doc__)
    parser.add_argument("--data-dir", default=None, help="where the log and snapshots live")
    parser.add_argument("--fsync", choices=FSYNC_POLICIES, default="everysec")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--snapshot-interval", type=float, default=300.0)
    options = parser.parse_args(argv)

    async def serve() -> None:
        server = LeaderboardServer(
            options.data_dir, options.fsync, snapshot_interval=options.snapshot_interval
        )
        port = await server.start(options.host, options.port)
        print(f"listening on {options.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(serve)
