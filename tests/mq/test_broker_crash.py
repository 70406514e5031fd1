"""kill -9 of the broker in a produce storm: every acknowledged record is there once, in order."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from sdi.testing.broker import BrokerProcess, read_partitions

RECORDS = 30_000
KILLS = 3


@pytest.mark.parametrize("fsync", ["interval", "every_batch"])
def test_acknowledged_records_survive_sigkill_exactly_once_in_order(
    tmp_path: Path, fsync: str
) -> None:
    broker = BrokerProcess(tmp_path / "data", args=["--fsync", fsync, "--partitions", "2"]).start()
    acked: list[tuple[int, int, int]] = []  # (partition, offset, number)
    failed: list[str] = []
    lock = threading.Lock()

    def delivered(error: KafkaError | None, message: object) -> None:
        with lock:
            if error is not None:
                failed.append(str(error))
            else:
                acked.append((message.partition(), message.offset(), int(message.value())))  # type: ignore[attr-defined]

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 60_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "partitioner": "murmur2_random",
        }
    )
    rng = random.Random(7)
    kill_at = sorted(rng.sample(range(RECORDS // 10, RECORDS), KILLS))
    try:
        for number in range(RECORDS):
            if kill_at and number == kill_at[0]:
                kill_at.pop(0)
                producer.poll(0.05)  # let some batches be in flight when it dies
                broker.kill()
                broker.restart()
            while True:
                try:
                    producer.produce(
                        "storm",
                        str(number).encode(),
                        key=str(number % 17).encode(),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        assert producer.flush(60) == 0
        assert failed == []
        assert len(acked) == RECORDS

        # Read everything back from a fresh broker process.
        broker.kill()
        broker.restart()
        stored = {
            index: [(offset, int(value)) for offset, value in records]
            for index, records in read_partitions(broker.bootstrap, "storm", 2).items()
        }
        for partition in range(2):
            mine = sorted((offset, number) for p, offset, number in acked if p == partition)
            got = stored[partition]
            # Exactly the acknowledged records, at the offsets they were acknowledged with.
            assert got == mine
            # Per key, the order they were sent in (the producer keeps order per partition).
            numbers = [number for _, number in got]
            for key in range(17):
                sent = [n for n in numbers if n % 17 == key]
                assert sent == sorted(sent)
    finally:
        broker.kill()
