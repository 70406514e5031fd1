"""Two processes through a ring file, with the other side killed by SIGKILL.

The producer runs in its own interpreter (``_producer_child.py``) and is
killed at a random point of its stream, many times. Each time the consumer
must have seen an exact prefix of the stream (sequence numbers 0..n-1, each
payload intact), must have every record the producer had acknowledged, and
must be told the producer is dead (``PeerGone``) instead of hanging.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest
from _ring_payloads import check_payload

from sdi import errors, ring

HERE = Path(__file__).resolve().parent
RUNS = 40


def start(script: str, *arguments: str) -> subprocess.Popen[bytes]:
    """Start a child interpreter; use it in a ``with`` block to close its pipes."""
    return subprocess.Popen(
        [sys.executable, str(HERE / script), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_producer(consumer: ring.Consumer, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while consumer.producer_state() is not ring.PeerState.ALIVE:
        assert time.monotonic() < deadline, "timed out waiting for the child to attach"
        time.sleep(0.001)


def consume_until_peer_gone(consumer: ring.Consumer) -> int:
    """Pop and check everything until PeerGone; return the records seen."""
    expected = 0

    def drain() -> None:
        nonlocal expected
        while True:
            batch = consumer.pop(256, timeout=10.0)
            assert batch, "a clean end from a producer that was killed"
            for payload in batch:
                sequence = check_payload(payload)
                assert sequence == expected, f"got {sequence}, expected {expected}"
                expected += 1

    with pytest.raises(errors.PeerGone, match="has died"):
        drain()
    return expected


@pytest.mark.slow
def test_producer_killed_at_random_points_leaves_an_exact_prefix(tmp_path: Path) -> None:
    chooser = random.Random(20240601)
    seen_counts = []
    for run in range(RUNS):
        path = tmp_path / f"ring-{run}"
        acks_path = tmp_path / f"acks-{run}"
        acks_path.write_bytes(bytes(8))
        # A small ring, so the producer wraps and waits on a full ring often.
        ring.create(path, chooser.choice([1024, 4096, 65536]))
        consumer = ring.Consumer(path)
        with start("_producer_child.py", str(path), str(acks_path), "forever") as child:
            wait_for_producer(consumer, 10.0)
            delay = chooser.uniform(0.0, 0.03)
            killer = threading.Timer(delay, os.kill, (child.pid, signal.SIGKILL))
            killer.start()
            started = time.monotonic()
            seen = consume_until_peer_gone(consumer)
            killer.join()
            # Detection takes a few liveness intervals, not a timeout.
            assert time.monotonic() - started < delay + 2.0
            child.wait()
        assert child.returncode == -signal.SIGKILL
        acknowledged = int(numpy.fromfile(acks_path, dtype=numpy.uint64)[0])
        assert seen >= acknowledged, f"run {run}: {acknowledged} acknowledged, {seen} seen"
        assert consumer.producer_state() is ring.PeerState.DEAD
        assert not consumer.producer_alive()
        # A new producer can take over the dead one's role.
        with ring.Producer(path) as replacement:
            assert replacement.push(b"after the crash")
        assert consumer.pop(1) == [b"after the crash"]
        consumer.close()
        seen_counts.append(seen)
    # The kills landed at many different points of the stream.
    assert len(set(seen_counts)) > RUNS // 2, seen_counts


@pytest.mark.slow
def test_producer_that_closes_cleanly_gives_a_clean_end(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    acks_path = tmp_path / "acks"
    acks_path.write_bytes(bytes(8))
    ring.create(path, 4096)
    consumer = ring.Consumer(path)
    with start("_producer_child.py", str(path), str(acks_path), "close") as child:
        expected = 0
        for payload in consumer:
            assert check_payload(payload) == expected
            expected += 1
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr.decode()
    assert expected == int(numpy.fromfile(acks_path, dtype=numpy.uint64)[0]) >= 20_000
    assert consumer.is_finished()
    assert consumer.producer_state() is ring.PeerState.CLOSED
    assert consumer.pop(10, timeout=None) == []


@pytest.mark.slow
def test_producer_waiting_on_a_killed_consumer_gets_peer_gone(tmp_path: Path) -> None:
    for run in range(3):
        path = tmp_path / f"ring-{run}"
        ring.create(path, 1024)
        with start("_consumer_child.py", str(path)) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            producer = ring.Producer(path)
            assert producer.consumer_alive()
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            started = time.monotonic()
            assert producer.push(bytes(1000), timeout=5.0)
            with pytest.raises(errors.PeerGone, match=r"consumer \(pid \d+\) has died"):
                producer.push(bytes(1000), timeout=5.0)
            assert time.monotonic() - started < 2.0
            assert producer.consumer_state() is ring.PeerState.DEAD
            producer.close()
