"""The SPSC ring across two processes, beside multiprocessing.Queue and faster_fifo.

Throughput: a producer process streams sequence-numbered messages to the
consumer (this process); both are pinned to different cores. sdi pushes
batches from a 2-D uint8 array (``push_many``) and pops them into another
(``pop_rows_into``); a second metric uses lists of ``bytes`` on both sides.
The consumer checks the first and last sequence number of every batch,
compares the whole content of a sample of batches, and compares the sum of
all sequence numbers with the expected total at the end.

Baselines, each in its normal and its best setting: ``multiprocessing.Queue``
with one message per ``put``/``get`` and with lists of messages per ``put``;
``faster_fifo.Queue`` with ``put_many``/``get_many`` and ``bytes`` for its ``dumps``/``loads``
(no pickling: the messages are bytes already).

Latency: one 64-byte message bounced between the processes over two queues
(rings), median and p99 of the round trip.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import statistics
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy

from harness import Progress, Result, Scale, percentile

PRODUCER_CPU = 0
CONSUMER_CPU = 1
RING_BYTES = 1 << 21
BATCH_BYTES = 1 << 18
SAMPLE_EVERY_BATCHES = 64

SIZES = {
    # scale: (sdi messages per size, queue messages one per put, batched queue messages, pings)
    "tiny": (20_000, 2_000, 20_000, 200),
    "quick": (20_000_000, 100_000, 1_000_000, 20_000),
    "full": (100_000_000, 300_000, 5_000_000, 100_000),
}


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "sdi.ring"])
    return context


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def _pinned(cpu: int) -> Iterator[None]:
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    _pin(cpu)
    try:
        yield
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def _template(record_bytes: int, batch: int) -> numpy.ndarray[Any, numpy.dtype[numpy.uint8]]:
    """A batch of messages: a u64 sequence number, then a fixed byte pattern."""
    block = numpy.empty((batch, record_bytes), dtype=numpy.uint8)
    block[:] = (numpy.arange(record_bytes, dtype=numpy.uint32) * 7 + 3).astype(numpy.uint8)
    return block


def _message(sequence: int, record_bytes: int) -> bytes:
    return sequence.to_bytes(8, "little") + bytes(record_bytes - 8)


# --- child processes -----------------------------------------------------------------


def _ring_producer(path: str, record_bytes: int, total: int, as_bytes: bool, go: Event) -> None:
    from sdi import ring

    _pin(PRODUCER_CPU)
    producer = ring.Producer(path)
    batch = max(1, BATCH_BYTES // (record_bytes + 8))
    block = _template(record_bytes, batch)
    sequences = block.view(numpy.uint64)[:, 0]
    steps = numpy.arange(batch, dtype=numpy.uint64)
    go.wait()
    sent = 0
    while sent < total:
        count = min(batch, total - sent)
        sequences[:count] = steps[:count] + numpy.uint64(sent)
        rows: Any = block[:count]
        if as_bytes:
            rows = [row.tobytes() for row in rows]
        offset = 0
        while offset < count:
            offset += producer.push_many(rows[offset:], timeout=None, wait="spin")
        sent += count
    producer.close()


def _ring_echo(ping_path: str, pong_path: str) -> None:
    from sdi import ring

    _pin(PRODUCER_CPU)
    consumer = ring.Consumer(ping_path)
    producer = ring.Producer(pong_path)
    while message := consumer.pop(1, timeout=None, wait="spin"):
        producer.push(message[0], timeout=None, wait="spin")
    producer.close()


def _queue_producer(
    channel: Any, record_bytes: int, total: int, batch: int, go: Event, many: bool
) -> None:
    _pin(PRODUCER_CPU)
    go.wait()
    if batch == 1:
        for sequence in range(total):
            channel.put(_message(sequence, record_bytes))
        return
    for start in range(0, total, batch):
        messages = [_message(s, record_bytes) for s in range(start, min(total, start + batch))]
        if many:
            channel.put_many(messages, timeout=60)
        else:
            channel.put(messages)


def _queue_echo(ping: Any, pong: Any) -> None:
    _pin(PRODUCER_CPU)
    while (message := ping.get()) is not None:
        pong.put(message)


# --- measurements (consumer side) ----------------------------------------------------


def _ring_throughput(directory: Path, record_bytes: int, total: int, as_bytes: bool) -> float:
    from sdi import ring

    path = directory / f"throughput-{record_bytes}-{as_bytes}"
    ring.create(path, RING_BYTES, overwrite=True)
    consumer = ring.Consumer(path)
    context = _context()
    go = context.Event()
    child = context.Process(
        target=_ring_producer, args=(str(path), record_bytes, total, as_bytes, go)
    )
    child.start()
    batch = max(1, BATCH_BYTES // (record_bytes + 8))
    rows = numpy.zeros((batch, record_bytes), dtype=numpy.uint8)
    template = _template(record_bytes, batch)
    received = 0
    sequence_sum = 0
    batches = 0
    with _pinned(CONSUMER_CPU):
        while consumer.producer_state() is not ring.PeerState.ALIVE:
            time.sleep(0.001)
        started = time.perf_counter()
        go.set()
        while received < total:
            if as_bytes:
                records = consumer.pop(batch, timeout=30.0, wait="spin")
                count = len(records)
                first = int.from_bytes(records[0][:8], "little")
                last = int.from_bytes(records[-1][:8], "little")
                sequence_sum += sum(int.from_bytes(record[:8], "little") for record in records)
            else:
                count = consumer.pop_rows_into(rows, timeout=30.0, wait="spin")
                sequences = rows[:count].view(numpy.uint64)[:, 0]
                first, last = int(sequences[0]), int(sequences[count - 1])
                sequence_sum += int(sequences.sum(dtype=numpy.uint64))
                if batches % SAMPLE_EVERY_BATCHES == 0 and record_bytes > 8:
                    assert (rows[:count, 8:] == template[:count, 8:]).all(), "payload damaged"
            assert count > 0, "the producer closed early"
            assert (first, last) == (received, received + count - 1), "lost or reordered"
            received += count
            batches += 1
        elapsed = time.perf_counter() - started
    child.join(timeout=30)
    assert child.exitcode == 0
    expected_sum = total * (total - 1) // 2
    assert sequence_sum % (1 << 64) == expected_sum % (1 << 64), "sequence checksum mismatch"
    assert consumer.pop(1, timeout=10.0) == []  # the producer's clean end
    consumer.close()
    return total / elapsed


def _queue_throughput(kind: str, record_bytes: int, total: int, batch: int) -> float:
    context = _context()
    many = kind == "faster_fifo"
    if many:
        import faster_fifo

        # Its best setting: the messages are bytes already, so skip pickle both ways.
        channel: Any = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024, dumps=bytes, loads=bytes)
    else:
        channel = context.Queue()
    go = context.Event()
    child = context.Process(
        target=_queue_producer, args=(channel, record_bytes, total, batch, go, many)
    )
    child.start()
    received = 0
    with _pinned(CONSUMER_CPU):
        time.sleep(0.05)
        started = time.perf_counter()
        go.set()
        while received < total:
            if many:
                messages = channel.get_many(timeout=30, max_messages_to_get=batch)
            elif batch == 1:
                messages = [channel.get(timeout=30)]
            else:
                messages = channel.get(timeout=30)
            for message in messages:
                assert int.from_bytes(message[:8], "little") == received, "lost or reordered"
                received += 1
        elapsed = time.perf_counter() - started
    child.join(timeout=30)
    return total / elapsed


def _ring_round_trip(directory: Path, pings: int) -> list[float]:
    from sdi import ring

    ping_path, pong_path = directory / "ping", directory / "pong"
    ring.create(ping_path, 1 << 16, overwrite=True)
    ring.create(pong_path, 1 << 16, overwrite=True)
    producer = ring.Producer(ping_path)
    context = _context()
    child = context.Process(target=_ring_echo, args=(str(ping_path), str(pong_path)))
    child.start()
    while ring.inspect(pong_path).producer is not ring.PeerState.ALIVE:
        time.sleep(0.001)
    consumer = ring.Consumer(pong_path)
    message = bytes(64)
    times = []
    with _pinned(CONSUMER_CPU):
        for index in range(pings + pings // 10):
            started = time.perf_counter_ns()
            producer.push(message, timeout=None, wait="spin")
            reply = consumer.pop(1, timeout=10.0, wait="spin")
            elapsed = time.perf_counter_ns() - started
            assert reply == [message]
            if index >= pings // 10:  # the first tenth warms up
                times.append(elapsed / 1000)
    producer.close()
    assert consumer.pop(1, timeout=10.0) == []
    child.join(timeout=10)
    consumer.close()
    return times


def _queue_round_trip(kind: str, pings: int) -> list[float]:
    context = _context()
    if kind == "faster_fifo":
        import faster_fifo

        ping: Any = faster_fifo.Queue()
        pong: Any = faster_fifo.Queue()
    else:
        ping, pong = context.Queue(), context.Queue()
    child = context.Process(target=_queue_echo, args=(ping, pong))
    child.start()
    message = bytes(64)
    times = []
    with _pinned(CONSUMER_CPU):
        for index in range(pings + pings // 10):
            started = time.perf_counter_ns()
            ping.put(message)
            reply = pong.get(timeout=10)
            elapsed = time.perf_counter_ns() - started
            assert reply == message
            if index >= pings // 10:
                times.append(elapsed / 1000)
    ping.put(None)
    child.join(timeout=10)
    with contextlib.suppress(queue.Empty):
        pong.get_nowait()
    return times


def run(scale: Scale, progress: Progress) -> list[Result]:
    """Measure the ring and its baselines; see the module docstring."""
    ring_messages, single_messages, batched_messages, pings = SIZES[scale]
    results: list[Result] = []
    directory = Path(
        tempfile.mkdtemp(
            prefix="sdi-ring-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    try:
        baseline_batch = 1024
        for record_bytes in [8, 64, 256]:
            total = ring_messages if record_bytes < 256 else ring_messages // 2
            progress(f"sdi ring, {record_bytes} B messages: {total:,}")
            sdi_rate = _ring_throughput(directory, record_bytes, total, as_bytes=False)
            baselines: dict[str, float] = {}
            if record_bytes == 64:
                progress(f"multiprocessing.Queue, one per put: {single_messages:,}")
                baselines["mp.Queue (1/put)"] = _queue_throughput(
                    "multiprocessing", record_bytes, single_messages, 1
                )
            progress(f"multiprocessing.Queue, lists of {baseline_batch}, {record_bytes} B")
            baselines["mp.Queue (lists)"] = _queue_throughput(
                "multiprocessing", record_bytes, batched_messages, baseline_batch
            )
            progress(f"faster_fifo put_many/get_many, {record_bytes} B")
            baselines["faster_fifo (many)"] = _queue_throughput(
                "faster_fifo", record_bytes, batched_messages, baseline_batch
            )
            results.append(
                Result(
                    metric=f"throughput {record_bytes} B, numpy batches",
                    unit="msgs/s",
                    higher_is_better=True,
                    sdi=sdi_rate,
                    baselines=baselines,
                    note=f"{total:,} messages, "
                    f"{sdi_rate * record_bytes / 1e9:.2f} GB/s of payload; "
                    f"batches of {BATCH_BYTES // (record_bytes + 8)}, "
                    f"ring {RING_BYTES // 1024} KiB",
                )
            )
            if record_bytes == 64:
                bytes_total = max(batched_messages, ring_messages // 20)
                progress(f"sdi ring, 64 B bytes objects: {bytes_total:,}")
                results.append(
                    Result(
                        metric="throughput 64 B, lists of bytes",
                        unit="msgs/s",
                        higher_is_better=True,
                        sdi=_ring_throughput(directory, 64, bytes_total, as_bytes=True),
                        baselines=dict(baselines),
                        note="push_many(list of bytes) / pop(n) -> list of bytes: "
                        "the same Python objects the baselines move",
                    )
                )
        progress(f"round trips, {pings:,} pings each")
        sdi_times = sorted(_ring_round_trip(directory, pings))
        baseline_pings = max(200, pings // 4)
        queue_times = sorted(_queue_round_trip("multiprocessing", baseline_pings))
        fifo_times = sorted(_queue_round_trip("faster_fifo", baseline_pings))
        for label, fraction in [("median", 0.5), ("p99", 0.99)]:
            results.append(
                Result(
                    metric=f"round trip 64 B, {label}",
                    unit="us",
                    higher_is_better=False,
                    sdi=percentile(sdi_times, fraction),
                    baselines={
                        "mp.Queue": percentile(queue_times, fraction),
                        "faster_fifo": percentile(fifo_times, fraction),
                    },
                    note=f"ping-pong over two rings, push/pop with wait='spin'; "
                    f"mean {statistics.fmean(sdi_times):.2f} us"
                    if label == "median"
                    else "",
                )
            )
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
    return results
