"""The leaderboard's files: an append-only log of write commands and snapshots.

A data directory holds

- ``appendonly.<generation>.aof``: the write commands, each as the RESP
  array a client sends (Redis's AOF format; ``redis-cli --pipe`` could
  replay one), appended as they are applied. The ``EXPIRE`` family is
  logged as ``PEXPIREAT`` with the absolute deadline.
- ``dump.sdb``: a snapshot, written to ``dump.sdb.tmp``, fsynced and renamed
  over the old one (then the directory fsynced). It holds every key (its
  deadline and its :meth:`sdi.zset.ZSet.dump` bytes) as of the start of an
  AOF generation, which it names, and ends with a CRC-32 of the whole file.

A snapshot switches the log to a new generation at the instant the sets are
dumped, so the snapshot plus the generations from the one it names are the
whole data; once the snapshot is in place the older generations are
deleted (this is the AOF rewrite). A crash at any point leaves either the
old snapshot and every generation since it, or the new one and its
generations, so recovery (:func:`recover`) loads the snapshot and replays
the generations it does not hold, in order.

A log whose last record is incomplete (the process died while writing it)
is truncated to its last whole record with a warning: that write was never
acknowledged under ``fsync="always"``. Anything else that does not parse,
and a snapshot that fails its checksum, is :class:`sdi.errors.Corrupt` with
what to do about it; nothing is loaded then.

:class:`AppendOnlyFile` is the write side: :meth:`~AppendOnlyFile.append`
buffers a command, :meth:`~AppendOnlyFile.flush` hands the buffer to the
operating system (the server does so before it sends replies) and
:meth:`~AppendOnlyFile.sync` fsyncs, in a thread, every byte flushed so far:
one fsync covers every command appended before it started (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sdi.errors import Corrupt, InvalidArgument
from sdi.resp import encode_command
from sdi.runtime.files import fsync_directory

__all__ = [
    "FSYNC_POLICIES",
    "SNAPSHOT_NAME",
    "AppendOnlyFile",
    "Recovered",
    "SnapshotEntry",
    "aof_generations",
    "aof_path",
    "fsync_directory",
    "read_aof",
    "read_snapshot",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

#: When the log is fsynced: before each reply, once a second, or when the OS likes.
FSYNC_POLICIES = ("always", "everysec", "no")
SNAPSHOT_NAME = "dump.sdb"
_MAGIC = b"SDI-LEADERBOARD-SNAPSHOT\x001\n"
_AOF_NAME = re.compile(r"appendonly\.(\d+)\.aof")
_HEADER = struct.Struct("<QQ")
_ENTRY = struct.Struct("<IqQ")
_CRC = struct.Struct("<I")


def aof_path(directory: Path, generation: int) -> Path:
    """The log file of ``generation`` in ``directory``."""
    return directory / f"appendonly.{generation}.aof"


def aof_generations(directory: Path) -> list[int]:
    """The generations that have a log file in ``directory``, in order."""
    found = []
    for entry in directory.iterdir():
        match = _AOF_NAME.fullmatch(entry.name)
        if match is not None:
            found.append(int(match.group(1)))
    return sorted(found)


# --- the log, written ------------------------------------------------------------------


class AppendOnlyFile:
    """The log being written: commands buffered, flushed to the OS, fsynced in a thread.

    Offsets are logical (bytes appended since this object was made, across
    generations): ``appended`` counts what :meth:`append` took, ``flushed``
    what the OS has, ``synced`` what is known to be on disk.
    """

    def __init__(self, directory: Path, generation: int, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument(
                f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}"
            )
        self.directory = directory
        self.policy = fsync
        self.generation = generation
        self.fd = self._open(generation)
        self.appended = 0
        self.flushed = 0
        self.synced = 0
        #: Bytes in the current generation's file (for the snapshot trigger).
        self.file_bytes = os.fstat(self.fd).st_size
        self._buffer = bytearray()
        self._retired: list[int] = []  # older generations' fds, closed after their last fsync
        self._sync_task: asyncio.Task[None] | None = None
        self.closed = False

    def _open(self, generation: int) -> int:
        path = aof_path(self.directory, generation)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        fsync_directory(self.directory)
        return fd

    def append(self, argv: list[bytes]) -> None:
        """Buffers one command line."""
        record = encode_command(*argv)
        self._buffer += record
        self.appended += len(record)

    @property
    def dirty(self) -> bool:
        """Whether something appended is not known to be on disk yet."""
        return self.synced < self.appended

    def flush(self) -> None:
        """Writes the buffer to the file (to the OS's cache: a crash of the process keeps it)."""
        if not self._buffer:
            return
        data = memoryview(self._buffer)
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        self.file_bytes += len(self._buffer)
        self.flushed += len(self._buffer)
        self._buffer = bytearray()

    async def sync(self, target: int | None = None) -> None:
        """Returns once every byte up to ``target`` (all appended, by default) is fsynced.

        Concurrent callers share fsyncs: one started after a caller's bytes
        were flushed covers them.
        """
        goal = self.appended if target is None else target
        while self.synced < goal:
            task = self._sync_task
            if task is None:
                self.flush()
                task = self._sync_task = asyncio.ensure_future(self._fsync())
            try:
                await asyncio.shield(task)
            finally:
                if self._sync_task is task and task.done():
                    self._sync_task = None

    async def _fsync(self) -> None:
        covered = self.flushed
        retired, fd = list(self._retired), self.fd
        await asyncio.to_thread(_fsync_all, retired, fd)
        for old in retired:
            self._retired.remove(old)
        self.synced = max(self.synced, covered)
        self._sync_task = None

    def rotate(self, generation: int) -> None:
        """Starts ``generation``: what was appended so far stays in the older file.

        The older file is closed after its last fsync (at once under ``no``).
        """
        self.flush()
        old = self.fd
        self.fd = self._open(generation)
        self.generation = generation
        self.file_bytes = 0
        if self.policy == "no":
            os.close(old)
            self.synced = self.flushed
        else:
            self._retired.append(old)

    async def close(self) -> None:
        """Flushes, fsyncs (whatever the policy) and closes."""
        if self.closed:
            return
        if self._sync_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._sync_task)
        self.flush()
        retired, self._retired = self._retired, []
        await asyncio.to_thread(_fsync_all, retired, self.fd)
        self.synced = self.flushed
        os.close(self.fd)
        self.closed = True


def _fsync_all(retired: list[int], fd: int) -> None:
    for old in retired:
        os.fsync(old)
        os.close(old)
    os.fsync(fd)


# --- the log, read ---------------------------------------------------------------------


class _TornError(Exception):
    """The data ends inside a record."""


def _line(data: bytes, at: int, prefix: int) -> tuple[int, int]:
    """The integer of a ``<prefix><digits>\\r\\n`` line at ``at``, and the offset after it."""
    end = data.find(b"\r\n", at)
    if end < 0:
        if len(data) - at > 32:
            raise ValueError("a header line without its end")
        raise _TornError
    if data[at] != prefix:
        raise ValueError(f"expected {chr(prefix)!r}, found {data[at : at + 1]!r}")
    digits = data[at + 1 : end]
    if not digits.isdigit() or len(digits) > 18:
        raise ValueError(f"bad length {digits[:20]!r}")
    return int(digits), end + 2


def read_aof(path: Path) -> Iterator[list[bytes]]:
    """The commands of a log file, in order.

    A last record cut short is dropped and the file truncated to the records
    before it (with a warning); anything else malformed raises
    :class:`sdi.errors.Corrupt`.
    """
    data = path.read_bytes()
    at = 0
    size = len(data)
    while at < size:
        start = at
        try:
            count, at = _line(data, at, ord("*"))
            argv = []
            for _ in range(count):
                length, at = _line(data, at, ord("$"))
                if at + length + 2 > size:
                    raise _TornError
                if data[at + length : at + length + 2] != b"\r\n":
                    raise ValueError("an argument without its CRLF")
                argv.append(data[at : at + length])
                at += length + 2
        except _TornError:
            logger.warning(
                "%s: the last record (%d bytes at offset %d) is incomplete, the process "
                "having stopped while writing it; it is dropped and the file truncated to %d "
                "bytes",
                path,
                size - start,
                start,
                start,
            )
            os.truncate(path, start)
            return
        except ValueError as error:
            raise Corrupt(
                f"{path} is corrupt at offset {start} ({error}): nothing was loaded. Keep a copy"
                f" of the file; to start anyway, truncate it to {start} bytes (the commands"
                " after that offset are then lost) or restore the data directory from a backup"
            ) from None
        if count == 0:
            continue
        yield argv


# --- snapshots -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One key of a snapshot: its deadline (ms since the epoch, or None) and dumped set."""

    key: bytes
    deadline: int | None
    blob: bytes


def write_snapshot(directory: Path, generation: int, entries: list[SnapshotEntry]) -> Path:
    """Writes ``dump.sdb`` for ``entries``, made when ``generation`` began; its path.

    Written to a temporary file, fsynced, renamed over the old snapshot and
    the directory fsynced: a crash leaves the old snapshot or the new one.
    """
    final = directory / SNAPSHOT_NAME
    temporary = directory / (SNAPSHOT_NAME + ".tmp")
    crc = 0
    with open(temporary, "wb") as out:

        def put(chunk: bytes) -> None:
            nonlocal crc
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)

        put(_MAGIC)
        put(_HEADER.pack(generation, len(entries)))
        for entry in entries:
            deadline = -1 if entry.deadline is None else entry.deadline
            put(_ENTRY.pack(len(entry.key), deadline, len(entry.blob)))
            put(entry.key)
            put(entry.blob)
        out.write(_CRC.pack(crc))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, final)
    fsync_directory(directory)
    return final


def read_snapshot(path: Path) -> tuple[int, list[SnapshotEntry]]:
    """The generation a snapshot names and its keys; :class:`Corrupt` if it fails a check."""
    data = path.read_bytes()

    def corrupt(why: str) -> Corrupt:
        return Corrupt(
            f"snapshot {path} {why}: it was not loaded, and the server does not start without"
            f" it. Restore {path.name} from a backup; or, accepting the loss of every write"
            f" before it, move it away (e.g. to {path.name}.bad) and start again: the server"
            " then loads only the append-only files in the directory"
        )

    if len(data) < len(_MAGIC) + _HEADER.size + _CRC.size or not data.startswith(_MAGIC):
        raise corrupt("is not a leaderboard snapshot (wrong magic or too short)")
    body, (stored,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != stored:
        raise corrupt("fails its CRC-32 checksum (damaged or cut short)")
    at = len(_MAGIC)
    generation, count = _HEADER.unpack_from(body, at)
    at += _HEADER.size
    entries = []
    for _ in range(count):
        if at + _ENTRY.size > len(body):
            raise corrupt("has fewer keys than its header says")
        key_length, deadline, blob_length = _ENTRY.unpack_from(body, at)
        at += _ENTRY.size
        key = body[at : at + key_length]
        at += key_length
        blob = body[at : at + blob_length]
        at += blob_length
        if len(key) != key_length or len(blob) != blob_length:
            raise corrupt("has a key cut short")
        entries.append(SnapshotEntry(key, None if deadline < 0 else deadline, blob))
    if at != len(body):
        raise corrupt("has bytes after its last key")
    return generation, entries


@dataclass(slots=True)
class Recovered:
    """What :func:`sdi.leaderboard.server.LeaderboardServer` found in its directory."""

    snapshot_generation: int = 0
    keys_from_snapshot: int = 0
    commands_replayed: int = 0
    generations: tuple[int, ...] = ()
    truncated_bytes: int = 0
