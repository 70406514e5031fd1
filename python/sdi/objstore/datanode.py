"""A data node's storage: small objects packed into append-only data files, indexed in SQLite.

As the book's chapter 9 lays it out, a data node does not keep one file per
object: objects (whole objects, replicas, or erasure-coded shards) are
appended to the active data file, which turns read-only ("sealed") once it
reaches ``file_bytes_max``; a SQLite index maps each object id to its file,
offset, size and CRC-32C. A directory holds::

    index.sqlite          the index (WAL mode, synchronous=FULL)
    data/<file:08>.dat    data files: a 16-byte header, then records

A record is ``magic u32 | id length u16 | size u64 | crc32c u32 | id | data``
(big-endian), so a data file also says on its own which bytes are whose.

**What a put means.** :meth:`DataNode.put` appends the record, syncs the data
file, then commits the index row (SQLite syncs its journal): when it returns
the object survives a crash of the process and of the machine. A crash
between the two leaves bytes no row points at; on open, the active file is
cut back to the end of its last indexed record, so they are never served.

**Deletes are tombstones**: the row is marked deleted and the file's live
byte count goes down; the bytes stay until compaction. **Compaction** copies
the live objects out of sealed files that are mostly dead into the active
file, syncs it, then in one transaction points the rows at the copies,
drops the tombstones and marks the old file dead; dead files are unlinked
afterwards (or on the next open). A crash at any point loses nothing: before
the commit the old rows still point at the old file (the copies are
unindexed and cut on open); after it the old file is only garbage.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path, DataNode(path) as node:
...     node.put("photo-1", b"jpeg bytes").size
...     node.get("photo-1")
...     node.delete("photo-1")
...     node.exists("photo-1")
10
b'jpeg bytes'
True
False
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType

from sdi.errors import Closed, Corrupt, InvalidArgument
from sdi.objstore.ec import checksum as crc32c
from sdi.runtime.files import fsync_directory
from sdi.runtime.text import is_decimal

__all__ = ["CompactionReport", "DataNode", "FileInfo", "ObjectInfo"]

FILE_MAGIC = b"SDIDATA1"
FILE_HEADER = struct.Struct(">8sQ")  # magic, file id
RECORD_MAGIC = 0x5344494F  # "SDIO"
RECORD_HEADER = struct.Struct(">IHQI")  # magic, id length, size, crc32c
ID_BYTES_MAX = 1024
#: Objects larger than this are refused (a data node stores shards and small objects).
OBJECT_BYTES_MAX = 5 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    live_bytes INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'sealed', 'dead'))
);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY,
    file_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL,
    deleted_ms INTEGER
);
CREATE INDEX IF NOT EXISTS objects_by_file ON objects (file_id);
"""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Where an object's bytes are, and their checksum."""

    object_id: str
    file_id: int
    offset: int
    size: int
    crc32c: int
    stored_ms: int


@dataclass(frozen=True, slots=True)
class FileInfo:
    file_id: int
    size: int
    live_bytes: int
    state: str


@dataclass(frozen=True, slots=True)
class CompactionReport:
    files_removed: int
    objects_moved: int
    bytes_moved: int
    bytes_freed: int


class DataNode:
    """One data node's object storage in directory ``path`` (created if needed).

    ``sync=False`` skips the data file's fsync (tests and benchmarks only: an
    acknowledged put then survives a process crash but not a power cut).
    Not thread-safe across processes; calls from threads are serialised.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        file_bytes_max: int = 64 << 20,
        sync: bool = True,
    ) -> None:
        if file_bytes_max < 4096:
            raise InvalidArgument(f"file_bytes_max must be at least 4096, not {file_bytes_max}")
        self.path = Path(path)
        self.file_bytes_max = file_bytes_max
        self.sync = sync
        self._lock = threading.Lock()
        (self.path / "data").mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path / "index.sqlite", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._active_fd = -1
        self._active_id = 0
        self._active_size = 0
        self._fds: dict[int, int] = {}
        self._recover()

    # -- lifecycle ------------------------------------------------------------

    def _file_path(self, file_id: int) -> Path:
        return self.path / "data" / f"{file_id:08d}.dat"

    def _recover(self) -> None:
        db = self._conn()
        for (file_id,) in db.execute("SELECT file_id FROM files WHERE state = 'dead'").fetchall():
            self._file_path(file_id).unlink(missing_ok=True)
            db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
        known = {row[0] for row in db.execute("SELECT file_id FROM files")}
        for entry in (self.path / "data").glob("*.dat"):
            if is_decimal(entry.stem) and int(entry.stem) not in known:
                entry.unlink()  # made for a file whose row never committed
        row = db.execute("SELECT file_id FROM files WHERE state = 'active'").fetchone()
        if row is None:
            self._new_active_file()
            return
        file_id = row[0]
        end = db.execute(
            "SELECT MAX(offset + size) FROM objects WHERE file_id = ?", (file_id,)
        ).fetchone()[0]
        end = FILE_HEADER.size if end is None else end
        descriptor = self._open_file(file_id, create=not self._file_path(file_id).exists())
        if os.fstat(descriptor).st_size < end:
            raise Corrupt(
                f"data file {self._file_path(file_id)} is shorter than its index says "
                f"({os.fstat(descriptor).st_size} < {end} bytes); it was cut outside sdi"
            )
        # Bytes past the last indexed record were never acknowledged: cut them.
        os.ftruncate(descriptor, end)
        os.fsync(descriptor)
        db.execute("UPDATE files SET size = ? WHERE file_id = ?", (end, file_id))
        self._active_fd, self._active_id, self._active_size = descriptor, file_id, end

    def _open_file(self, file_id: int, *, create: bool = False) -> int:
        descriptor = self._fds.get(file_id)
        if descriptor is None:
            flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
            descriptor = os.open(self._file_path(file_id), flags, 0o644)
            if create:
                os.pwrite(descriptor, FILE_HEADER.pack(FILE_MAGIC, file_id), 0)
                os.fsync(descriptor)
                fsync_directory(self.path / "data")
            self._fds[file_id] = descriptor
        return descriptor

    def _new_active_file(self) -> None:
        db = self._conn()
        row = db.execute("SELECT MAX(file_id) FROM files").fetchone()
        file_id = (row[0] or 0) + 1
        # The row first: a file on disk without a row is removed on open.
        db.execute(
            "INSERT INTO files (file_id, size, live_bytes, state) VALUES (?, ?, 0, 'active')",
            (file_id, FILE_HEADER.size),
        )
        self._active_fd = self._open_file(file_id, create=True)
        self._active_id, self._active_size = file_id, FILE_HEADER.size

    def _seal_active(self) -> None:
        self._conn().execute(
            "UPDATE files SET state = 'sealed', size = ? WHERE file_id = ?",
            (self._active_size, self._active_id),
        )
        self._new_active_file()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise Closed("the data node is closed; open a new DataNode")
        return self._db

    def close(self) -> None:
        """Closes the index and every data file; later calls raise :class:`Closed`."""
        with self._lock:
            if self._db is None:
                return
            for descriptor in self._fds.values():
                os.close(descriptor)
            self._fds.clear()
            self._db.close()
            self._db = None

    def __enter__(self) -> DataNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- objects --------------------------------------------------------------

    def put(self, object_id: str, data: bytes | bytearray | memoryview) -> ObjectInfo:
        """Stores ``data`` under ``object_id`` (replacing what was there); durable on return."""
        with self._lock:
            return self._put(object_id, data, time.time_ns() // 1_000_000)

    def _append(self, object_id: str, data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
        """Appends one record to the active file (rolling first if it is full); its location."""
        key = _check_id(object_id)
        size = len(data)
        if size > OBJECT_BYTES_MAX:
            raise InvalidArgument(f"an object holds at most {OBJECT_BYTES_MAX} bytes, not {size}")
        record = RECORD_HEADER.size + len(key) + size
        if (
            self._active_size > FILE_HEADER.size
            and self._active_size + record > self.file_bytes_max
        ):
            self._seal_active()
        checksum = crc32c(data)
        header = RECORD_HEADER.pack(RECORD_MAGIC, len(key), size, checksum) + key
        position = self._active_size
        os.pwritev(self._active_fd, [header, data], position)
        self._active_size += record
        return position + len(header), size, checksum

    def _put(self, object_id: str, data: bytes | bytearray | memoryview, now_ms: int) -> ObjectInfo:
        db = self._conn()
        offset, size, checksum = self._append(object_id, data)
        if self.sync:
            os.fdatasync(self._active_fd)
        db.execute("BEGIN IMMEDIATE")
        try:
            self._forget_live(object_id)
            db.execute(
                "INSERT OR REPLACE INTO objects (object_id, file_id, offset, size, crc, stored_ms,"
                " deleted_ms) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (object_id, self._active_id, offset, size, checksum, now_ms),
            )
            db.execute(
                "UPDATE files SET size = ?, live_bytes = live_bytes + ? WHERE file_id = ?",
                (self._active_size, size, self._active_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ObjectInfo(object_id, self._active_id, offset, size, checksum, now_ms)

    def _forget_live(self, object_id: str) -> None:
        """Inside a transaction: the live bytes of the object's current copy are dead now."""
        db = self._conn()
        row = db.execute(
            "SELECT file_id, size FROM objects WHERE object_id = ? AND deleted_ms IS NULL",
            (object_id,),
        ).fetchone()
        if row is not None:
            db.execute(
                "UPDATE files SET live_bytes = live_bytes - ? WHERE file_id = ?", (row[1], row[0])
            )

    def stat(self, object_id: str) -> ObjectInfo:
        """Where ``object_id`` is; KeyError if it is not stored (or deleted)."""
        with self._lock:
            return self._stat(object_id)

    def _stat(self, object_id: str) -> ObjectInfo:
        row = (
            self._conn()
            .execute(
                "SELECT file_id, offset, size, crc, stored_ms FROM objects"
                " WHERE object_id = ? AND deleted_ms IS NULL",
                (object_id,),
            )
            .fetchone()
        )
        if row is None:
            raise KeyError(object_id)
        return ObjectInfo(object_id, *row)

    def exists(self, object_id: str) -> bool:
        try:
            self.stat(object_id)
        except KeyError:
            return False
        return True

    def get(self, object_id: str) -> bytes:
        """The object's bytes, checksum checked; KeyError if absent, Corrupt if rotten."""
        with self._lock:  # one lock for both: compaction cannot move it in between
            info = self._stat(object_id)
            data = self._read(info.file_id, info.offset, info.size)
        if crc32c(data) != info.crc32c:
            raise Corrupt(
                f"object {object_id!r} in data file {info.file_id} fails its CRC-32C; "
                "read another replica or rebuild it from the other shards"
            )
        return data

    def get_range(self, object_id: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (cut at the end); not checksummed (use :meth:`get`)."""
        if start < 0 or length < 0:
            raise InvalidArgument(f"range start {start} and length {length} must not be negative")
        with self._lock:
            info = self._stat(object_id)
            if start >= info.size:
                return b""
            return self._read(info.file_id, info.offset + start, min(length, info.size - start))

    def _read(self, file_id: int, offset: int, size: int) -> bytes:
        self._conn()
        data = os.pread(self._open_file(file_id), size, offset)
        if len(data) != size:
            raise Corrupt(f"data file {file_id} ends inside an object (read {len(data)} of {size})")
        return data

    def delete(self, object_id: str) -> bool:
        """Marks the object deleted (a tombstone); True if it was there."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._forget_live(object_id)
                changed = db.execute(
                    "UPDATE objects SET deleted_ms = ? WHERE object_id = ? AND deleted_ms IS NULL",
                    (time.time_ns() // 1_000_000, object_id),
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return changed > 0

    def object_ids(self, prefix: str = "") -> Iterator[str]:
        """The stored (not deleted) object ids starting with ``prefix``, in order."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT object_id FROM objects WHERE deleted_ms IS NULL AND object_id >= ?"
                    " ORDER BY object_id",
                    (prefix,),
                )
                .fetchall()
            )
        for (object_id,) in rows:
            if not object_id.startswith(prefix):
                return
            yield object_id

    def page(
        self, prefix: str = "", after: str | None = None, limit: int = 10_000
    ) -> tuple[list[str], bool]:
        """Up to ``limit`` stored ids with ``prefix``, after ``after``; and whether more follow.

        Pages through millions of ids by key range (each call reads one page).
        """
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, not {limit}")
        if after is not None and after >= prefix:
            condition, start = "object_id > ?", after
        else:
            condition, start = "object_id >= ?", prefix
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    f"SELECT object_id FROM objects WHERE deleted_ms IS NULL AND {condition}"
                    " ORDER BY object_id LIMIT ?",
                    (start, limit + 1),
                )
                .fetchall()
            )
        ids: list[str] = []
        for (object_id,) in rows:
            if not object_id.startswith(prefix):
                return ids, False
            ids.append(object_id)
        if len(ids) > limit:
            return ids[:limit], True
        return ids, False

    def count(self) -> int:
        """How many objects are stored (not deleted)."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT COUNT(*) FROM objects WHERE deleted_ms IS NULL")
                .fetchone()
            )
        return int(row[0])

    def scrub(self) -> list[str]:
        """Reads every stored object back; the ids whose bytes fail their CRC-32C, in order.

        Objects are read one at a time under the lock, so puts and gets go on
        between them.
        """
        rotten = []
        for object_id in list(self.object_ids()):
            try:
                self.get(object_id)
            except KeyError:  # deleted meanwhile
                continue
            except Corrupt:
                rotten.append(object_id)
        return rotten

    def files(self) -> list[FileInfo]:
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT file_id, size, live_bytes, state FROM files ORDER BY file_id")
                .fetchall()
            )
        return [FileInfo(*row) for row in rows]

    # -- compaction -----------------------------------------------------------

    def compact(
        self,
        *,
        live_ratio_below: float = 0.5,
        _crash_at: Callable[[str], None] | None = None,
    ) -> CompactionReport:
        """Rewrites sealed files whose live bytes are under ``live_ratio_below`` of their size.

        ``_crash_at`` is for crash tests: called with the name of each step.
        """
        crash = _crash_at or (lambda step: None)
        removed = moved = moved_bytes = freed = 0
        with self._lock:
            db = self._conn()
            candidates = db.execute(
                "SELECT file_id, size FROM files WHERE state = 'sealed'"
                " AND live_bytes < ? * size ORDER BY file_id",
                (live_ratio_below,),
            ).fetchall()
            for file_id, size in candidates:
                live = db.execute(
                    "SELECT object_id, offset, size, crc FROM objects"
                    " WHERE file_id = ? AND deleted_ms IS NULL",
                    (file_id,),
                ).fetchall()
                copies = []
                for object_id, offset, length, checksum in live:
                    data = self._read(file_id, offset, length)
                    if crc32c(data) != checksum:
                        raise Corrupt(
                            f"object {object_id!r} in data file {file_id} fails its CRC-32C; "
                            "compaction stopped, nothing changed"
                        )
                    new_offset, _, _ = self._append(object_id, data)
                    copies.append((object_id, self._active_id, new_offset, length))
                    crash("copied")
                if self.sync:
                    os.fdatasync(self._active_fd)
                crash("synced")
                db.execute("BEGIN IMMEDIATE")
                try:
                    for object_id, new_file, new_offset, length in copies:
                        db.execute(
                            "UPDATE objects SET file_id = ?, offset = ? WHERE object_id = ?",
                            (new_file, new_offset, object_id),
                        )
                        db.execute(
                            "UPDATE files SET live_bytes = live_bytes + ? WHERE file_id = ?",
                            (length, new_file),
                        )
                    db.execute("DELETE FROM objects WHERE file_id = ?", (file_id,))
                    db.execute("UPDATE files SET state = 'dead' WHERE file_id = ?", (file_id,))
                    db.execute(
                        "UPDATE files SET size = ? WHERE file_id = ?",
                        (self._active_size, self._active_id),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                crash("committed")
                descriptor = self._fds.pop(file_id, None)
                if descriptor is not None:
                    os.close(descriptor)
                self._file_path(file_id).unlink(missing_ok=True)
                db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
                removed += 1
                moved += len(copies)
                moved_bytes += sum(copy[3] for copy in copies)
                freed += size
        return CompactionReport(removed, moved, moved_bytes, freed - moved_bytes)


def _check_id(object_id: str) -> bytes:
    if not isinstance(object_id, str) or not object_id:
        raise InvalidArgument(f"an object id is a non-empty string, not {object_id!r}")
    key = object_id.encode()
    if len(key) > ID_BYTES_MAX:
        raise InvalidArgument(f"an object id is at most {ID_BYTES_MAX} bytes, not {len(key)}")
    return key
