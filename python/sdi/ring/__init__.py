"""A lock-free single-producer single-consumer ring buffer over shared memory.

One producer and one consumer exchange variable-length records (``bytes``)
through a file, usually under ``/dev/shm``, or through an anonymous mapping
for two threads of one process (:func:`pair`). The hot paths are in Rust:
batch calls (:meth:`Producer.push_many`, :meth:`Consumer.pop_into`,
:meth:`Consumer.pop_rows_into`) cross into Rust once per batch, copy with the
GIL released, and publish the ring's index once per batch.

>>> producer, consumer = pair(4096)
>>> producer.push(b"hello")
True
>>> producer.push_many([b"ring", b"buffer"])
2
>>> consumer.pop(10)
[b'hello', b'ring', b'buffer']
>>> producer.close()
>>> consumer.pop(10, timeout=1.0)  # a clean end: the producer closed, all read
[]

Across processes, one side creates the file and each side attaches:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "ring")
>>> create(path, 1 << 16)
>>> with Producer(path) as producer, Consumer(path) as consumer:
...     producer.push_many(numpy.arange(12, dtype=numpy.uint8).reshape(3, 4))
...     rows = numpy.zeros((8, 4), dtype=numpy.uint8)
...     count = consumer.pop_rows_into(rows)
...     rows[:count].tolist()
3
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]

Semantics in short:

* **Non-blocking** calls (``timeout=0``, the default) never wait and never
  raise for a full or empty ring: ``push`` returns ``False``, ``push_many``
  returns how many leading records went in (possibly 0), pops return what
  was there (possibly nothing). A record is never written in part.
* **Blocking** calls (``timeout=None`` to wait forever, or seconds) wait
  with the GIL released until they can move at least one record, then move
  as many as fit (``push_many`` behaves like ``socket.send``: it returns a
  count, call it again for the rest). They raise :class:`~sdi.errors.Timeout`
  when nothing could move in time, :class:`~sdi.errors.PeerGone` when the
  other side's process died (checked by pid and start time), and the
  producer gets :class:`~sdi.errors.Closed` when the consumer closed its end.
* **The clean end**: when the producer closes, the consumer reads what is
  left, then every blocking pop returns an empty result (``[]`` or ``0``) at
  once, like ``read()`` at the end of a file; :meth:`Consumer.is_finished`
  says the same without popping.
* **Errors**: a record over :attr:`Producer.record_bytes_max` (the capacity
  minus 8, at most 1 GiB) raises :class:`~sdi.errors.LimitExceeded` and
  nothing of the batch is written; a second live producer or consumer also
  raises ``LimitExceeded``; bad arguments raise
  :class:`~sdi.errors.InvalidArgument`; a damaged file raises
  :class:`~sdi.errors.Corrupt`; using a closed handle raises
  :class:`~sdi.errors.Closed`.

Each handle is for one thread at a time, and must not be used in a child
process after ``fork`` (attach a new one there). See
``docs/internals/ring.md`` for the file format and the memory-ordering
argument.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import numpy
import numpy.typing as npt

from sdi._rust import ring as _native

__all__ = [
    "BATCH_RECORDS_MAX",
    "CAPACITY_BYTES_MAX",
    "CAPACITY_BYTES_MIN",
    "RECORD_BYTES_MAX",
    "Consumer",
    "PeerState",
    "Producer",
    "RingInfo",
    "Wait",
    "create",
    "inspect",
    "pair",
]

#: How a blocking call waits: ``"spin"`` (lowest latency, burns a core),
#: ``"spin_then_yield"`` (spins a few thousand rounds, then yields the core
#: between looks; the default) or ``"sleep"`` (spins briefly, then sleeps
#: with backoff up to 1 ms: least CPU, most latency).
Wait = Literal["spin", "spin_then_yield", "sleep"]

#: The smallest capacity a ring may have, in bytes.
CAPACITY_BYTES_MIN: int = _native.CAPACITY_BYTES_MIN
#: The largest capacity a ring may have, in bytes (1 TiB).
CAPACITY_BYTES_MAX: int = _native.CAPACITY_BYTES_MAX
#: The largest payload of one record in any ring (1 GiB); a ring also caps it
#: at its capacity minus the 8-byte record header.
RECORD_BYTES_MAX: int = _native.RECORD_BYTES_MAX
#: The most records one batch call may push or pop.
BATCH_RECORDS_MAX: int = _native.BATCH_RECORDS_MAX

PathLike = str | os.PathLike[str]


class PeerState(enum.Enum):
    """What the other end of a ring is doing."""

    #: Nobody holds the role and nobody closed it (not started yet).
    ABSENT = "absent"
    #: A live process holds the role.
    ALIVE = "alive"
    #: The process that held the role exited without closing it.
    DEAD = "dead"
    #: The last holder closed cleanly.
    CLOSED = "closed"


@dataclass(frozen=True)
class RingInfo:
    """A ring file's state, read by :func:`inspect` without attaching."""

    capacity_bytes: int
    used_bytes: int
    len_records: int
    producer: PeerState
    consumer: PeerState


def create(path: PathLike, capacity_bytes: int, *, overwrite: bool = False) -> None:
    """Create a ring file of ``capacity_bytes`` (a power of two, 64 B to 1 TiB).

    The file is ``capacity_bytes`` plus a 4096-byte header. Put it under
    ``/dev/shm`` to keep it in memory. Raises ``StorageError`` if the file
    exists and ``overwrite`` is false, ``InvalidArgument`` for a bad capacity.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ring")
    >>> create(path, 4096)
    >>> os.path.getsize(path)
    8192
    """
    _native.create(path, capacity_bytes, overwrite)


def inspect(path: PathLike) -> RingInfo:
    """Check a ring file's header and report its state, without attaching.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ring")
    >>> create(path, 4096)
    >>> inspect(path).producer
    <PeerState.ABSENT: 'absent'>
    """
    capacity, used, length, producer, consumer = _native.inspect(path)
    return RingInfo(capacity, used, length, PeerState(producer), PeerState(consumer))


def pair(capacity_bytes: int) -> tuple[Producer, Consumer]:
    """A producer and a consumer over one anonymous mapping, for two threads.

    >>> producer, consumer = pair(1024)
    >>> producer.capacity_bytes, consumer.capacity_bytes
    (1024, 1024)
    """
    native_producer, native_consumer = _native.pair(capacity_bytes)
    return Producer._wrap(native_producer), Consumer._wrap(native_consumer)


class Producer:
    """The one producer of a ring: attach to the file at ``path``.

    Raises ``LimitExceeded`` if a live process already holds the producer
    role; a dead holder is replaced. Use it as a context manager, or call
    :meth:`close`, so that the consumer sees a clean end.

    >>> producer, consumer = pair(128)
    >>> producer.push_many([b"x" * 24] * 6)  # 32 bytes each with the header
    4
    >>> len(producer), producer.free_bytes()
    (4, 0)
    """

    __slots__ = ("_native",)

    def __init__(self, path: PathLike) -> None:
        self._native = _native.Producer(path)

    @classmethod
    def _wrap(cls, native: _native.Producer) -> Producer:
        producer = cls.__new__(cls)
        producer._native = native
        return producer

    def push(
        self, record: bytes, *, timeout: float | None = 0.0, wait: Wait = "spin_then_yield"
    ) -> bool:
        """Push one record; return whether it went in.

        With ``timeout=0`` returns ``False`` when the ring is too full. With
        a timeout (``None`` = forever) waits for room and returns ``True``,
        or raises ``Timeout``, ``PeerGone`` (consumer died) or ``Closed``
        (consumer closed). ``record`` may be any bytes-like object.
        """
        if type(record) is not bytes:
            record = bytes(record)
        return self._native.push(record, timeout, wait)

    def push_many(
        self,
        records: list[bytes] | npt.NDArray[numpy.uint8],
        *,
        timeout: float | None = 0.0,
        wait: Wait = "spin_then_yield",
    ) -> int:
        """Push the longest leading run of ``records`` that fits; return its length.

        ``records`` is a list of ``bytes``, or a C-contiguous 2-D ``uint8``
        array whose rows are fixed-size records. With ``timeout=0`` the count
        may be 0. With a timeout, waits until at least one record fits, then
        pushes as many as fit (call again with the rest); raises as
        :meth:`push` does. The copy runs with the GIL released and the ring's
        tail is published once for the whole batch.
        """
        return self._native.push_many(records, timeout, wait)

    def close(self) -> None:
        """Publish, mark the producer closed and release the role. Idempotent."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    @property
    def capacity_bytes(self) -> int:
        """The size of the ring's data area."""
        return self._native.capacity_bytes

    @property
    def record_bytes_max(self) -> int:
        """The largest payload one record may have in this ring."""
        return self._native.record_bytes_max

    def free_bytes(self) -> int:
        """Bytes free now; a record takes its payload plus 8, rounded up to 8."""
        return self._native.free_bytes()

    def used_bytes(self) -> int:
        """Bytes holding records not yet popped (headers and padding included)."""
        return self._native.used_bytes()

    def __len__(self) -> int:
        """Records pushed and not yet popped."""
        return len(self._native)

    def consumer_state(self) -> PeerState:
        """The consumer's state (reads ``/proc``; a few microseconds)."""
        return PeerState(self._native.consumer_state())

    def consumer_alive(self) -> bool:
        """Whether a live process holds the consumer role."""
        return self.consumer_state() is PeerState.ALIVE

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<sdi.ring.Producer closed>"
        return f"<sdi.ring.Producer capacity_bytes={self.capacity_bytes} records={len(self)}>"


class Consumer:
    """The one consumer of a ring: attach to the file at ``path``.

    Raises ``LimitExceeded`` if a live process already holds the consumer
    role; a dead holder is replaced (records it popped but had not yet
    released, at most one batch, are delivered again).

    >>> producer, consumer = pair(4096)
    >>> producer.push_many([b"a", b"bc", b"def"])
    3
    >>> buffer = numpy.zeros(64, dtype=numpy.uint8)
    >>> offsets = numpy.zeros(9, dtype=numpy.int64)  # up to 8 records
    >>> count = consumer.pop_into(buffer, offsets)
    >>> [bytes(buffer[offsets[i] : offsets[i + 1]]) for i in range(count)]
    [b'a', b'bc', b'def']
    """

    __slots__ = ("_native",)

    def __init__(self, path: PathLike) -> None:
        self._native = _native.Consumer(path)

    @classmethod
    def _wrap(cls, native: _native.Consumer) -> Consumer:
        consumer = cls.__new__(cls)
        consumer._native = native
        return consumer

    def pop(
        self, max_records: int, *, timeout: float | None = 0.0, wait: Wait = "spin_then_yield"
    ) -> list[bytes]:
        """Pop up to ``max_records`` records, oldest first.

        With ``timeout=0`` returns what is there, possibly ``[]``. With a
        timeout (``None`` = forever) waits for at least one record; returns
        ``[]`` only at the clean end (producer closed, ring drained); raises
        ``Timeout``, or ``PeerGone`` if the producer died and the ring is
        drained.
        """
        return self._native.pop(max_records, timeout, wait)

    def pop_into(
        self,
        buffer: npt.NDArray[numpy.uint8],
        offsets: npt.NDArray[numpy.int64],
        *,
        timeout: float | None = 0.0,
        wait: Wait = "spin_then_yield",
    ) -> int:
        """Pop records back to back into ``buffer``; return how many.

        Record ``i`` lands in ``buffer[offsets[i]:offsets[i + 1]]`` (the call
        sets ``offsets[0] = 0``), so at most ``len(offsets) - 1`` records are
        popped. Stops before a record that does not fit the rest of
        ``buffer``; raises ``InvalidArgument`` if even the first does not (it
        stays in the ring; size ``buffer`` to at least
        :attr:`record_bytes_max` to rule this out). Waits and returns 0 at
        the clean end as :meth:`pop` does. Copies with the GIL released.
        """
        return self._native.pop_into(buffer, offsets, timeout, wait)

    def pop_rows_into(
        self,
        rows: npt.NDArray[numpy.uint8],
        *,
        timeout: float | None = 0.0,
        wait: Wait = "spin_then_yield",
    ) -> int:
        """Pop fixed-size records into the rows of a 2-D ``uint8`` array; return how many.

        Every record must be exactly ``rows.shape[1]`` bytes: the call stops
        before one of another length, and raises ``InvalidArgument`` if the
        first one is (it stays in the ring). Waits and returns 0 at the clean
        end as :meth:`pop` does. Copies with the GIL released.
        """
        return self._native.pop_rows_into(rows, timeout, wait)

    def __iter__(self) -> Iterator[bytes]:
        """Yield records until the producer closes and the ring drains.

        Waits forever between records; raises ``PeerGone`` if the producer dies.

        >>> producer, consumer = pair(1024)
        >>> _ = producer.push_many([b"1", b"2"]); producer.close()
        >>> list(consumer)
        [b'1', b'2']
        """
        while batch := self.pop(1024, timeout=None):
            yield from batch

    def is_finished(self) -> bool:
        """Whether the producer closed cleanly and every record has been popped."""
        return self._native.is_finished()

    def producer_state(self) -> PeerState:
        """The producer's state (reads ``/proc``; a few microseconds)."""
        return PeerState(self._native.producer_state())

    def producer_alive(self) -> bool:
        """Whether a live process holds the producer role.

        ``False`` also before any producer attached, and after a clean close;
        :meth:`producer_state` tells these apart.
        """
        return self.producer_state() is PeerState.ALIVE

    def close(self) -> None:
        """Release the consumer role and mark it closed. Idempotent."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    @property
    def capacity_bytes(self) -> int:
        """The size of the ring's data area."""
        return self._native.capacity_bytes

    @property
    def record_bytes_max(self) -> int:
        """The largest payload one record may have in this ring."""
        return self._native.record_bytes_max

    def used_bytes(self) -> int:
        """Bytes holding records not yet popped (headers and padding included)."""
        return self._native.used_bytes()

    def __len__(self) -> int:
        """Records pushed and not yet popped."""
        return len(self._native)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<sdi.ring.Consumer closed>"
        return f"<sdi.ring.Consumer capacity_bytes={self.capacity_bytes} records={len(self)}>"
