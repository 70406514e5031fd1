"""The message queue's storage: a partition is an append-only, segmented log.

A :class:`Partition` owns one directory. Each append writes one checksummed
batch and returns the offset given to its first record; reads return whole
batches as bytes, which :func:`decode` and :func:`batches` take apart.
Opening a directory cuts a torn tail left by a crash; a second handle on a
directory that is open elsewhere is refused.

>>> import tempfile
>>> from sdi.mq.log import Partition, decode
>>> with tempfile.TemporaryDirectory() as path, Partition(path) as log:
...     log.append_records([b"user-1", None], [b"hello", b"world"], timestamp_ms=1_000)
...     log.append_records(None, [b"again"], timestamp_ms=2_000)
...     log.next_offset
...     for record in decode(log.read(0, max_bytes=1 << 20)):
...         print(record.offset, record.timestamp_ms, record.key, record.value)
0
2
3
0 1000 b'user-1' b'hello'
1 1000 b'' b'world'
2 2000 b'' b'again'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import Literal

from sdi._rust import log as _native

__all__ = [
    "BATCH_BYTES_MAX",
    "BATCH_RECORDS_MAX",
    "Batch",
    "CompactionOutcome",
    "Partition",
    "Record",
    "batches",
    "decode",
]

#: Largest batch in bytes, its 40-byte header included.
BATCH_BYTES_MAX: int = _native.BATCH_BYTES_MAX
#: Most records one batch may carry.
BATCH_RECORDS_MAX: int = _native.BATCH_RECORDS_MAX

#: When appends are forced to disk (see :class:`Partition`).
Fsync = Literal["every_batch", "interval", "never"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record read back from the log.

    A key appended as ``None`` is stored empty and reads back as ``b""``.
    Every record of a batch carries the batch's timestamp.
    """

    offset: int
    timestamp_ms: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """One stored batch: its header fields and its payload.

    ``opaque`` batches came from :meth:`Partition.append_payload` and hold the
    bytes given there; the others hold records, which :func:`decode` reads.
    """

    base_offset: int
    opaque: bool
    record_count: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CompactionOutcome:
    """What one :meth:`Partition.compact` did (``segments_before == 0``: nothing was due)."""

    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    #: Records dropped because a later record has the same key.
    records_removed: int
    #: Tombstones dropped because they were past their retention.
    tombstones_removed: int


def decode(data: bytes) -> list[Record]:
    """The records in ``data`` (bytes from :meth:`Partition.read`).

    Raises :class:`sdi.errors.InvalidArgument` when the bytes are not whole,
    valid batches or hold an opaque payload (use :func:`batches` for those).
    """
    return [Record(*fields) for fields in _native.decode(data)]


def batches(data: bytes) -> list[Batch]:
    """The batches in ``data`` (bytes from :meth:`Partition.read`), checksums checked.

    Raises :class:`sdi.errors.InvalidArgument` when the bytes are not whole, valid batches.
    """
    return [
        Batch(base, kind == 1, count, first, newest, payload)
        for base, kind, count, first, newest, payload in _native.batches(data)
    ]


class Partition:
    """An open partition directory, holding its lock until :meth:`close`.

    ``fsync`` says what an acknowledged append survives: ``"every_batch"``
    syncs before each append returns (a power cut loses nothing
    acknowledged); ``"interval"`` syncs when ``fsync_interval_ms`` has gone
    by since the last sync; ``"never"`` leaves it to :meth:`flush`. All
    three survive a process crash. A new segment starts when the next batch
    would take the active one past ``segment_bytes_max`` bytes;
    :meth:`apply_retention` deletes whole old segments by age
    (``retention_ms``) and total size (``retention_bytes``).

    Raises :class:`sdi.errors.InvalidArgument` for a bad setting or a
    directory another handle holds, :class:`sdi.errors.Corrupt` when stored
    data fails its checks, :class:`sdi.errors.StorageError` when the
    operating system refuses a file operation.
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        segment_bytes_max: int = _native.SEGMENT_BYTES_DEFAULT,
        index_interval_bytes: int = _native.INDEX_INTERVAL_BYTES_DEFAULT,
        fsync: Fsync = "every_batch",
        fsync_interval_ms: int = 1000,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        self._native = _native.Partition(
            path,
            segment_bytes_max=segment_bytes_max,
            index_interval_bytes=index_interval_bytes,
            fsync=fsync,
            fsync_interval_ms=fsync_interval_ms,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
        )

    def append_records(
        self,
        keys: Sequence[bytes | None] | None,
        values: Sequence[bytes],
        timestamp_ms: int,
    ) -> int:
        """Appends ``values`` (with ``keys``: one per value, or ``None``) as one batch.

        Returns the offset of the first record; the others follow it.
        """
        return self._native.append_records(keys, values, timestamp_ms)

    def append_payload(
        self, payload: bytes, record_count: int, first_timestamp_ms: int, max_timestamp_ms: int
    ) -> int:
        """Appends ``payload`` as one opaque batch of ``record_count`` records.

        The log does not look inside (the broker stores Kafka record batches
        this way). Returns the offset given to its first record.
        """
        return self._native.append_payload(
            payload, record_count, first_timestamp_ms, max_timestamp_ms
        )

    def append_payload_at(
        self,
        base_offset: int,
        payload: bytes,
        record_count: int,
        first_timestamp_ms: int,
        max_timestamp_ms: int,
    ) -> int:
        """:meth:`append_payload` at ``base_offset``, at or past :attr:`next_offset`.

        A replica copying a leader whose log was compacted keeps the leader's
        offsets: the offsets skipped hold nothing. Returns ``base_offset``.
        """
        return self._native.append_payload_at(
            base_offset, payload, record_count, first_timestamp_ms, max_timestamp_ms
        )

    def compact(self, up_to: int, now_ms: int, tombstone_retention_ms: int) -> CompactionOutcome:
        """Compacts the closed segments wholly below ``up_to`` (Kafka's ``cleanup.policy=compact``).

        Looks into opaque payloads that are Kafka record batches: per key, only
        the record with the highest offset among those segments stays; records
        without a key all stay; a tombstone (null value) stays until its
        timestamp is more than ``tombstone_retention_ms`` before ``now_ms``.
        The active segment is never touched; offsets and timestamps are kept
        (the log gets gaps, which reads skip). A crash at any point leaves the
        old segments or the new ones; the next open finishes or undoes it.
        """
        return CompactionOutcome(*self._native.compact(up_to, now_ms, tombstone_retention_ms))

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``, as stored.

        In a gap left by compaction, from the first batch after ``offset``.
        The first batch always comes whole, even past ``max_bytes``; empty at
        :attr:`next_offset`; :class:`sdi.errors.InvalidArgument` outside the log.
        """
        return self._native.read(offset, max_bytes)

    def read_payloads(self, offset: int, max_bytes: int) -> bytes:
        """The payloads of the batches :meth:`read` returns, back to back, headers dropped.

        For opaque batches this is the bytes given to :meth:`append_payload`
        (the broker answers a Kafka fetch with them).
        """
        return self._native.read_payloads(offset, max_bytes)

    def read_records(self, offset: int, max_bytes: int) -> list[Record]:
        """:meth:`read` then :func:`decode`, without the records before ``offset``."""
        return [
            record for record in decode(self.read(offset, max_bytes)) if record.offset >= offset
        ]

    def truncate_to(self, offset: int) -> None:
        """Removes every batch from ``offset`` on, so that it is :attr:`next_offset`.

        ``offset`` must be where a batch starts (or the end). A replica uses
        this to drop a tail its new leader does not have. Raises
        :class:`sdi.errors.InvalidArgument` inside a batch or outside the log.
        """
        self._native.truncate_to(offset)

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The base offset of the first batch with a record at or after ``timestamp_ms``."""
        return self._native.offset_for_time(timestamp_ms)

    def flush(self) -> None:
        """Forces everything appended so far to disk, whatever the fsync policy."""
        self._native.flush()

    def apply_retention(self, now_ms: int) -> tuple[int, int]:
        """Deletes old closed segments; returns ``(segments_deleted, bytes_deleted)``."""
        return self._native.apply_retention(now_ms)

    def segment_base_offsets(self) -> list[int]:
        """The segments' base offsets, oldest first; the last is the one appended to."""
        return self._native.segment_base_offsets()

    @property
    def log_start_offset(self) -> int:
        """The first offset still in the log (retention moves it forward)."""
        return self._native.log_start_offset

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets."""
        return self._native.next_offset

    @property
    def size_bytes(self) -> int:
        """Bytes of batches in all segments."""
        return self._native.size_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def close(self) -> None:
        """Releases the directory; later calls raise :class:`sdi.errors.Closed`."""
        self._native.close()

    def __enter__(self) -> Partition:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
