"""Three brokers, replicated topics: kill -9 a leader during a produce storm and lose nothing.

Each broker is a separate `sdi serve mq --peers ...` process with its own
directory and its own etcd member; the clients are confluent-kafka's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sdi.testing import servers
from sdi.testing.broker import BrokerProcess, read_partitions

BROKERS = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    servers.require_binary("etcd")
    taken: set[int] = set()
    ports = [servers.free_port_block(taken) for _ in range(BROKERS)]
    peers = ",".join(f"{node}@127.0.0.1:{port}" for node, port in enumerate(ports))
    brokers = [
        BrokerProcess(
            tmp_path / f"broker-{node}",
            port=port,
            args=["--broker-id", str(node), "--peers", peers, "--partitions", "3"],
        )
        for node, port in enumerate(ports)
    ]
    for broker in brokers:
        broker.launch()
    try:
        for broker in brokers:
            broker.wait_listening(120)
        admin = AdminClient({"bootstrap.servers": _bootstrap(brokers)})
        _wait_for(
            "every broker registered", lambda: len(admin.list_topics(timeout=10).brokers) == 3
        )
        yield brokers
    finally:
        for broker in brokers:
            broker.kill()
            (tmp_path / f"broker-{brokers.index(broker)}.out").write_text("".join(broker.output))


def _bootstrap(brokers: list[BrokerProcess]) -> str:
    return ",".join(broker.bootstrap for broker in brokers)


def _partitions(admin: AdminClient, topic: str) -> dict[int, tuple[int, list[int]]]:
    """Partition -> (leader, isr) as the cluster reports it."""
    metadata = admin.list_topics(topic, timeout=10)
    return {
        index: (partition.leader, sorted(partition.isrs))
        for index, partition in metadata.topics[topic].partitions.items()
    }


def _wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _produce(
    bootstrap: str, topic: str, numbers: range, kill: BrokerProcess | None, kill_at: int
) -> list[tuple[int, int, int]]:
    """Produces ``numbers`` with acks=all (idempotent); (partition, offset, number) acknowledged."""
    acked: list[tuple[int, int, int]] = []
    failed: list[str] = []

    def delivered(error: KafkaError | None, message: object) -> None:
        if error is not None:
            failed.append(str(error))
        else:
            acked.append((message.partition(), message.offset(), int(message.value())))  # type: ignore[attr-defined]

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 60_000,
        }
    )
    for number in numbers:
        if kill is not None and number == kill_at:
            producer.poll(0.05)  # batches in flight when the leader dies
            kill.kill()
        while True:
            try:
                producer.produce(topic, str(number).encode(), key=str(number).encode(),
                                 on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(90) == 0
    assert failed == []
    return acked


def _stored(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, int]]]:
    records = read_partitions(bootstrap, topic, partitions)
    return {
        index: [(offset, int(value)) for offset, value in got] for index, got in records.items()
    }


def _check(acked: list[tuple[int, int, int]], stored: dict[int, list[tuple[int, int]]]) -> None:
    for partition, records in stored.items():
        mine = sorted((offset, number) for p, offset, number in acked if p == partition)
        # Every acknowledged record at the offset it was acknowledged with, nothing twice.
        assert set(mine) <= set(records)
        numbers = [number for _, number in records]
        assert len(numbers) == len(set(numbers))
        assert [offset for offset, _ in records] == list(range(len(records)))


def test_killing_leaders_loses_no_acknowledged_record(cluster: list[BrokerProcess]) -> None:
    bootstrap = _bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic("orders", num_partitions=3, replication_factor=3,
                   config={"min.insync.replicas": "2"})  # fmt: skip
    admin.create_topics([new])["orders"].result(30)
    _wait_for(
        "leaders",
        lambda: all(leader >= 0 for leader, _ in _partitions(admin, "orders").values()),
    )
    leaders = _partitions(admin, "orders")
    assert all(isr == [0, 1, 2] for _, isr in leaders.values())

    # 1. The leader of partition 0 dies a third of the way in.
    first = cluster[leaders[0][0]]
    acked = _produce(bootstrap, "orders", range(0, 6000), first, 2000)
    assert len(acked) == 6000
    after = _partitions(admin, "orders")
    assert after[0][0] != leaders[0][0]
    assert all(leaders[0][0] not in isr for _, isr in after.values())
    _check(acked, _stored(bootstrap, "orders", 3))

    # 2. It comes back, catches up and rejoins every ISR.
    first.restart(120)
    _wait_for(
        "the restarted broker back in sync",
        lambda: all(isr == [0, 1, 2] for _, isr in _partitions(admin, "orders").values()),
        60,
    )

    # 3. Now kill the new leader of partition 0: the rejoined replica must be whole.
    second = cluster[_partitions(admin, "orders")[0][0]]
    acked += _produce(bootstrap, "orders", range(6000, 9000), second, 7000)
    assert len(acked) == 9000
    _check(acked, _stored(bootstrap, "orders", 3))

    # 4. A leader killed and restarted at once, within its lease: it must not lead on
    # under its old epoch, but step aside until it has caught up.
    second.restart(120)
    _wait_for(
        "every replica back in sync",
        lambda: all(isr == [0, 1, 2] for _, isr in _partitions(admin, "orders").values()),
        60,
    )
    third = cluster[_partitions(admin, "orders")[1][0]]
    third.kill()
    third.restart(120)
    acked += _produce(bootstrap, "orders", range(9000, 11000), None, -1)
    assert len(acked) == 11000
    _check(acked, _stored(bootstrap, "orders", 3))
    _wait_for(
        "the quick restarter back in sync",
        lambda: all(isr == [0, 1, 2] for _, isr in _partitions(admin, "orders").values()),
        60,
    )


def test_committed_offsets_survive_the_coordinator(cluster: list[BrokerProcess]) -> None:
    bootstrap = _bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("events", num_partitions=2, replication_factor=3)])[
        "events"
    ].result(30)
    _produce(bootstrap, "events", range(100), None, -1)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "g",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["events"])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 100 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == 100
    consumer.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition("events", 0), TopicPartition("events", 1)], timeout=10)}  # fmt: skip
    consumer.close()
    assert sum(committed.values()) == 100

    # The coordinator leads __consumer_offsets-0, where the commits are: kill it.
    [(coordinator, isr)] = _partitions(admin, "__consumer_offsets").values()
    assert len(isr) == 3
    cluster[coordinator].kill()
    survivors = [broker for node, broker in enumerate(cluster) if node != coordinator]
    later = Consumer({"bootstrap.servers": _bootstrap(survivors), "group.id": "g"})
    deadline = time.monotonic() + 30
    while True:
        # While leadership moves a broker may answer NOT_COORDINATOR, which a client
        # retries (librdkafka's committed() hands it back instead).
        try:
            found = later.committed(
                [TopicPartition("events", 0), TopicPartition("events", 1)], timeout=30
            )
            break
        except KafkaException as error:
            if error.args[0].code() != KafkaError.NOT_COORDINATOR or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    again = {tp.partition: tp.offset for tp in found}
    later.close()
    assert again == committed
