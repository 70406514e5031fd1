"""The partition log through Python: round trips, reopen, locking, errors,
torn-tail recovery, retention, and a SIGKILL crash test."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdi import errors
from sdi.mq.log import Partition, Record, batches, decode


def test_records_round_trip(tmp_path: Path) -> None:
    with Partition(tmp_path) as log:
        assert (log.log_start_offset, log.next_offset, log.size_bytes) == (0, 0, 0)
        assert log.append_records([b"a", None, b""], [b"1", b"2", b""], timestamp_ms=10) == 0
        assert log.append_records(None, [b"x" * 1000], timestamp_ms=20) == 3
        assert log.next_offset == 4
        assert log.size_bytes > 1000
        records = decode(log.read(0, 1 << 20))
        assert records == [
            Record(0, 10, b"a", b"1"),
            Record(1, 10, b"", b"2"),
            Record(2, 10, b"", b""),
            Record(3, 20, b"", b"x" * 1000),
        ]
        # A read starts at the batch holding the offset; read_records trims it.
        assert [r.offset for r in decode(log.read(1, 1))] == [0, 1, 2]
        assert [r.offset for r in log.read_records(1, 1)] == [1, 2]
        assert log.read(4, 1 << 20) == b""
        assert log.offset_for_time(15) == 3
        assert log.offset_for_time(5) == 0
        assert log.offset_for_time(21) is None


def test_payload_round_trip(tmp_path: Path) -> None:
    with Partition(tmp_path, fsync="never") as log:
        log.append_records(None, [b"r"], timestamp_ms=1)
        assert log.append_payload(b"kafka-batch", 5, 100, 200) == 1
        assert log.append_payload(b"\x00" * 7, 1, 300, 300) == 6
        found = batches(log.read(0, 1 << 20))
        assert [(b.base_offset, b.opaque, b.record_count) for b in found] == [
            (0, False, 1),
            (1, True, 5),
            (6, True, 1),
        ]
        assert found[1].payload == b"kafka-batch"
        assert (found[1].first_timestamp_ms, found[1].max_timestamp_ms) == (100, 200)
        assert log.offset_for_time(150) == 1
        with pytest.raises(errors.InvalidArgument, match="opaque"):
            decode(log.read(1, 1 << 20))
        log.flush()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    expected = []
    with Partition(tmp_path, segment_bytes_max=512, fsync="interval", fsync_interval_ms=5) as log:
        for n in range(50):
            value = f"value-{n}".encode() * 3
            assert log.append_records([str(n).encode()], [value], timestamp_ms=n) == n
            expected.append(Record(n, n, str(n).encode(), value))
        segments = log.segment_base_offsets()
        size = log.size_bytes
    assert len(segments) > 3
    with Partition(tmp_path, segment_bytes_max=512) as log:
        assert log.next_offset == 50
        assert log.segment_base_offsets() == segments
        assert log.size_bytes == size
        got: list[Record] = []
        while len(got) < 50:
            got.extend(log.read_records(len(got), 256))
        assert got == expected
        assert log.append_records(None, [b"more"], timestamp_ms=99) == 50


def test_second_open_is_refused(tmp_path: Path) -> None:
    log = Partition(tmp_path)
    with pytest.raises(errors.InvalidArgument, match="held by another"):
        Partition(tmp_path)
    log.close()
    assert log.closed
    log.close()  # a second close does nothing
    with Partition(tmp_path) as again:
        assert again.next_offset == 0


def test_closed_handle_raises_closed(tmp_path: Path) -> None:
    log = Partition(tmp_path)
    log.close()
    with pytest.raises(errors.Closed):
        log.append_records(None, [b"x"], 1)
    with pytest.raises(errors.Closed):
        _ = log.next_offset
    with pytest.raises(errors.Closed):
        log.read(0, 10)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match="fsync"):
        Partition(tmp_path / "a", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="segment_bytes_max"):
        Partition(tmp_path / "b", segment_bytes_max=10)
    with pytest.raises(errors.InvalidArgument, match="fsync interval"):
        Partition(tmp_path / "c", fsync="interval", fsync_interval_ms=0)
    with Partition(tmp_path / "d", fsync="never") as log:
        with pytest.raises(errors.InvalidArgument, match="keys"):
            log.append_records([b"k"], [b"a", b"b"], 1)
        with pytest.raises(errors.InvalidArgument, match="records"):
            log.append_records(None, [], 1)
        with pytest.raises(errors.InvalidArgument, match="max_timestamp_ms"):
            log.append_payload(b"p", 1, 10, 5)
        with pytest.raises(errors.InvalidArgument, match="outside the log"):
            log.read(1, 10)
        with pytest.raises(errors.LimitExceeded):
            log.append_payload(bytes(16 << 20), 1, 0, 0)
        with pytest.raises(OverflowError):
            log.read(-1, 10)
        with pytest.raises(errors.InvalidArgument, match="whole, valid"):
            decode(b"\x01" * 50)
        log.append_records(None, [b"v"], 1)
        data = log.read(0, 100)
        with pytest.raises(errors.InvalidArgument, match="cut short"):
            batches(data[:-1])
        with pytest.raises(errors.InvalidArgument, match="checksum"):
            batches(data[:-1] + bytes([data[-1] ^ 1]))


def test_torn_tail_is_cut_on_reopen(tmp_path: Path) -> None:
    with Partition(tmp_path) as log:
        for n in range(5):
            log.append_records(None, [b"v%d" % n], timestamp_ms=n)
        size = log.size_bytes
    last = sorted(tmp_path.glob("*.log"))[-1]
    with last.open("ab") as file:
        file.write(b"\xde\xad\xbe\xef" * 13)
    assert last.stat().st_size > size
    with Partition(tmp_path) as log:
        assert log.next_offset == 5
        assert log.size_bytes == size
        assert [r.value for r in decode(log.read(0, 1 << 20))] == [b"v%d" % n for n in range(5)]
        assert log.append_records(None, [b"after"], timestamp_ms=9) == 5
    assert last.stat().st_size > size


def test_retention_by_size_deletes_old_segments(tmp_path: Path) -> None:
    with Partition(tmp_path, segment_bytes_max=1024, retention_bytes=2048) as log:
        for n in range(40):
            log.append_records(None, [bytes(100)], timestamp_ms=n)
        before = log.segment_base_offsets()
        assert len(before) > 3
        deleted, bytes_deleted = log.apply_retention(now_ms=1_000)
        assert deleted > 0
        assert bytes_deleted > 0
        assert log.segment_base_offsets() == before[deleted:]
        assert log.log_start_offset == before[deleted]
        assert log.size_bytes <= 2048
        assert len(list(tmp_path.glob("*.log"))) == len(before) - deleted
        with pytest.raises(errors.InvalidArgument):
            log.read(0, 10)
        start = log.log_start_offset
        assert decode(log.read(start, 1 << 20))[0].offset == start
        assert log.apply_retention(now_ms=1_000) == (0, 0)


def test_retention_by_time(tmp_path: Path) -> None:
    with Partition(tmp_path, segment_bytes_max=512, retention_ms=100) as log:
        for n in range(20):
            log.append_records(None, [bytes(100)], timestamp_ms=n * 10)
        assert log.apply_retention(now_ms=0)[0] == 0
        deleted, _ = log.apply_retention(now_ms=10_000)
        assert deleted == len(log.segment_base_offsets()) + deleted - 1
        assert len(log.segment_base_offsets()) == 1


CHILD = """
import sys
from sdi.mq.log import Partition
log = Partition(sys.argv[1], fsync="every_batch", segment_bytes_max=4096)
n = log.next_offset
while True:
    count = 1 + n % 3
    values = [b"rec-%d" % (n + i) for i in range(count)]
    base = log.append_records(None, values, timestamp_ms=n)
    print(base, count, flush=True)
    n = base + count
"""


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_keeps_every_acknowledged_record(tmp_path: Path, round_: int) -> None:
    rng = random.Random(round_)
    runs: list[list[tuple[int, int]]] = []
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until it is appending
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
        # An acknowledgement is a whole line; the kill may cut the last one short.
        lines = (first + rest).split("\n")[:-1]
        runs.append([(int(base), int(count)) for base, count in map(str.split, lines)])
    assert all(runs)
    with Partition(tmp_path) as log:
        stored: list[tuple[int, int]] = []
        while not stored or sum(stored[-1]) < log.next_offset:
            offset = sum(stored[-1]) if stored else 0
            stored += [(b.base_offset, b.record_count) for b in batches(log.read(offset, 1 << 20))]
        records: list[Record] = []
        while len(records) < log.next_offset:
            records += log.read_records(len(records), 1 << 20)
    # Offsets are dense and each record holds the value written for its offset.
    assert [r.offset for r in records] == list(range(len(records)))
    assert [r.value for r in records] == [b"rec-%d" % r.offset for r in records]
    # Every acknowledged batch is stored whole, once, in order. A run may
    # leave one more whole batch it wrote but was killed before
    # acknowledging: the last batch of the log or of that run.
    acked = [batch for run in runs for batch in run]
    unacked = [batch for batch in stored if batch not in acked]
    assert [batch for batch in stored if batch in acked] == acked
    assert len(unacked) <= len(runs)
    run_ends = {run[-1][0] + run[-1][1] for run in runs}
    assert all(base in run_ends for base, _ in unacked)
    assert all(count <= 3 for _, count in unacked)
