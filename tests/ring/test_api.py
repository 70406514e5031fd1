"""The public API of sdi.ring: arguments, limits, errors, roles, blocking."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy
import pytest

from sdi import errors, ring
from sdi._rust import ring as native


@pytest.fixture
def path(tmp_path: Path) -> Path:
    ring_path = tmp_path / "ring"
    ring.create(ring_path, 4096)
    return ring_path


def test_create_checks_capacity_and_existing_files(tmp_path: Path) -> None:
    target = tmp_path / "ring"
    for capacity in [0, 32, 1000, 1 << 41]:
        with pytest.raises(errors.InvalidArgument, match="power of two"):
            ring.create(target, capacity)
    with pytest.raises(errors.InvalidArgument, match="try 1024"):
        ring.create(target, 1000)
    with pytest.raises(OverflowError):
        ring.create(target, -1)
    ring.create(target, 4096)
    assert target.stat().st_size == 4096 + native.HEADER_BYTES
    with pytest.raises(errors.StorageError, match="overwrite=True"):
        ring.create(target, 4096)
    ring.create(target, 8192, overwrite=True)
    info = ring.inspect(target)
    assert info == ring.RingInfo(8192, 0, 0, ring.PeerState.ABSENT, ring.PeerState.ABSENT)


def test_opening_a_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="open the ring file"):
        ring.Consumer(tmp_path / "missing")


def test_damaged_files_are_corrupt(tmp_path: Path, path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 100)
    with pytest.raises(errors.Corrupt, match="shorter than"):
        ring.Producer(short)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x07" * 8192)
    with pytest.raises(errors.Corrupt, match="bad magic"):
        ring.Consumer(garbage)
    with path.open("r+b") as file:
        file.truncate(4096 + 4096 + 64)
    with pytest.raises(errors.Corrupt, match="header says"):
        ring.inspect(path)


def test_a_corrupt_length_is_caught_on_pop(path: Path) -> None:
    producer, consumer = ring.Producer(path), ring.Consumer(path)
    assert producer.push(b"a" * 16)
    with path.open("r+b") as file:
        file.seek(native.HEADER_BYTES)
        file.write((5000).to_bytes(4, "little"))
    with pytest.raises(errors.Corrupt, match="record_bytes_max"):
        consumer.pop(1)


def test_oversize_records_are_refused_whole() -> None:
    producer, consumer = ring.pair(256)
    assert producer.record_bytes_max == 248
    with pytest.raises(errors.LimitExceeded, match="record 1 is 249 bytes"):
        producer.push_many([b"ok", bytes(249)])
    with pytest.raises(errors.LimitExceeded):
        producer.push_many(numpy.zeros((2, 249), dtype=numpy.uint8))
    with pytest.raises(errors.LimitExceeded):
        producer.push(bytes(300), timeout=1.0)
    assert consumer.pop(10) == []


def test_bad_arguments_are_invalid() -> None:
    producer, consumer = ring.pair(1024)
    with pytest.raises(errors.InvalidArgument, match="records\\[1\\] is a str"):
        producer.push_many([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidArgument, match="list of bytes or a C-contiguous"):
        producer.push_many((b"a",))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="C-contiguous"):
        producer.push_many(numpy.zeros((4, 8), dtype=numpy.uint8)[:, ::2])
    with pytest.raises(errors.InvalidArgument, match="list of bytes"):
        producer.push_many(numpy.zeros((4, 8), dtype=numpy.int32))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="timeout must be"):
        producer.push(b"x", timeout=-1.0)
    with pytest.raises(errors.InvalidArgument, match="timeout must be"):
        consumer.pop(1, timeout=float("nan"))
    with pytest.raises(errors.InvalidArgument, match="wait must be"):
        consumer.pop(1, timeout=1.0, wait="nap")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="1-D numpy uint8"):
        consumer.pop_into(numpy.zeros(8, dtype=numpy.int8), numpy.zeros(3, dtype=numpy.int64))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="int64"):
        consumer.pop_into(numpy.zeros(8, dtype=numpy.uint8), numpy.zeros(3, dtype=numpy.int32))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="at least 2"):
        consumer.pop_into(numpy.zeros(8, dtype=numpy.uint8), numpy.zeros(1, dtype=numpy.int64))
    read_only = numpy.zeros((2, 4), dtype=numpy.uint8)
    read_only.flags.writeable = False
    with pytest.raises(errors.InvalidArgument, match="rows"):
        consumer.pop_rows_into(read_only)
    with pytest.raises(errors.LimitExceeded, match="at most"):
        consumer.pop(ring.BATCH_RECORDS_MAX + 1)


def test_push_takes_any_bytes_like_object() -> None:
    producer, consumer = ring.pair(1024)
    assert producer.push(bytearray(b"ab"))
    assert producer.push(memoryview(b"cd"))
    assert consumer.pop(5) == [b"ab", b"cd"]


def test_fixed_rows_round_trip_and_mismatches_stay_in_the_ring() -> None:
    producer, consumer = ring.pair(4096)
    records = numpy.arange(40, dtype=numpy.uint8).reshape(5, 8)
    assert producer.push_many(records) == 5
    assert producer.push(b"not eight")
    rows = numpy.zeros((10, 8), dtype=numpy.uint8)
    assert consumer.pop_rows_into(rows) == 5
    numpy.testing.assert_array_equal(rows[:5], records)
    with pytest.raises(errors.InvalidArgument, match="not 8 like the rows"):
        consumer.pop_rows_into(rows)
    assert consumer.pop(1) == [b"not eight"]


def test_non_blocking_calls_report_counts_and_never_write_part_of_a_record() -> None:
    producer, consumer = ring.pair(128)
    record = bytes(range(24))  # 32 bytes framed: four fit in 128
    assert producer.push_many([record] * 6) == 4
    assert not producer.push(record)
    assert producer.push_many([record]) == 0
    assert (len(producer), producer.used_bytes(), producer.free_bytes()) == (4, 128, 0)
    assert consumer.pop(1) == [record]
    assert producer.push_many([record] * 3) == 1
    assert consumer.pop(10) == [record] * 4
    assert consumer.pop(10) == []


def test_second_live_producer_or_consumer_is_refused(path: Path) -> None:
    producer = ring.Producer(path)
    consumer = ring.Consumer(path)
    with pytest.raises(errors.LimitExceeded, match="already has a live producer"):
        ring.Producer(path)
    with pytest.raises(errors.LimitExceeded, match="already has a live consumer"):
        ring.Consumer(path)
    info = ring.inspect(path)
    assert (info.producer, info.consumer) == (ring.PeerState.ALIVE, ring.PeerState.ALIVE)
    assert consumer.producer_alive()
    assert producer.consumer_alive()
    producer.close()
    assert consumer.producer_state() is ring.PeerState.CLOSED
    again = ring.Producer(path)
    assert consumer.producer_alive()
    again.close()


def test_closed_handles_raise_closed() -> None:
    producer, consumer = ring.pair(1024)
    producer.close()
    producer.close()  # idempotent
    assert producer.closed
    assert repr(producer) == "<sdi.ring.Producer closed>"
    with pytest.raises(errors.Closed, match="producer is closed"):
        producer.push(b"x")
    with pytest.raises(errors.Closed):
        len(producer)
    consumer.close()
    with pytest.raises(errors.Closed, match="consumer is closed"):
        consumer.pop(1)
    with pytest.raises(errors.Closed):
        consumer.pop_rows_into(numpy.zeros((1, 1), dtype=numpy.uint8))


def test_blocking_pop_times_out_then_sees_the_clean_end() -> None:
    producer, consumer = ring.pair(1024)
    for wait in ["spin", "spin_then_yield", "sleep"]:
        started = time.monotonic()
        with pytest.raises(errors.Timeout, match="waited"):
            consumer.pop(1, timeout=0.05, wait=wait)  # type: ignore[arg-type]
        assert 0.05 <= time.monotonic() - started < 1.0
    assert not consumer.is_finished()
    producer.push_many([b"1", b"2"])
    producer.close()
    assert not consumer.is_finished()
    assert consumer.pop(1, timeout=None) == [b"1"]
    buffer, offsets = numpy.zeros(8, dtype=numpy.uint8), numpy.zeros(4, dtype=numpy.int64)
    assert consumer.pop_into(buffer, offsets, timeout=None) == 1
    assert consumer.pop_into(buffer, offsets, timeout=None) == 0
    assert consumer.pop(5, timeout=None) == []
    assert consumer.is_finished()


def test_blocking_push_waits_for_room_and_fails_on_a_closed_consumer() -> None:
    producer, consumer = ring.pair(64)
    assert producer.push(bytes(56))
    with pytest.raises(errors.Timeout):
        producer.push(b"x", timeout=0.05)
    with pytest.raises(errors.Timeout):
        producer.push_many([b"x"], timeout=0.05, wait="sleep")
    consumer.close()
    with pytest.raises(errors.Closed, match="consumer closed cleanly"):
        producer.push(b"x", timeout=1.0)


def test_blocking_calls_release_the_gil_across_threads() -> None:
    producer, consumer = ring.pair(4096)
    received: list[bytes] = []

    def consume() -> None:
        received.extend(consumer)

    thread = threading.Thread(target=consume)
    thread.start()
    # The consumer thread blocks in Rust; this thread still runs Python.
    for index in range(2000):
        record = index.to_bytes(4, "little")
        assert producer.push(record, timeout=5.0)
    producer.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert received == [index.to_bytes(4, "little") for index in range(2000)]


def test_a_handle_used_from_two_threads_at_once_is_refused() -> None:
    producer, consumer = ring.pair(1024)
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            consumer.pop(1, timeout=0.5)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=wait_forever)
    thread.start()
    time.sleep(0.1)
    with pytest.raises(errors.InvalidArgument, match="in use by another thread"):
        consumer.pop(1)
    thread.join()
    assert isinstance(outcome[0], errors.Timeout)
    producer.close()


def test_large_records_round_trip() -> None:
    producer, consumer = ring.pair(1 << 20)
    big = bytes(range(256)) * 1024  # 256 KiB: copied with the GIL released
    assert producer.push(big, timeout=1.0)
    buffer = numpy.zeros(consumer.record_bytes_max, dtype=numpy.uint8)
    offsets = numpy.zeros(2, dtype=numpy.int64)
    assert consumer.pop_into(buffer, offsets) == 1
    assert offsets[1] == len(big)
    assert bytes(buffer[: offsets[1]]) == big
