"""Real Kafka clients against a real ``sdi serve mq`` process.

kafka-python, confluent-kafka (librdkafka), aiokafka and kcat produce,
consume, commit and administer topics over the network; a raw socket checks
what the broker does with bad input, idempotent retries and long-polled
fetches. Most tests share one broker (each on topics and groups of its own);
the restart tests start their own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka import errors as kafka_errors
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.protocol.consumer.fetch import FetchRequest as KFetchRequest
from kafka.protocol.consumer.fetch import FetchResponse as KFetchResponse
from kafka.protocol.consumer.group import OffsetCommitRequest as KOffsetCommitRequest
from kafka.protocol.consumer.group import OffsetCommitResponse as KOffsetCommitResponse
from kafka.protocol.consumer.group import OffsetFetchRequest as KOffsetFetchRequest
from kafka.protocol.consumer.group import OffsetFetchResponse as KOffsetFetchResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest as KApiVersionsRequest
from kafka.protocol.metadata.api_versions import ApiVersionsResponse as KApiVersionsResponse
from kafka.protocol.metadata.metadata import MetadataRequest as KMetadataRequest
from kafka.protocol.metadata.metadata import MetadataResponse as KMetadataResponse
from kafka.protocol.producer.produce import ProduceRequest as KProduceRequest
from kafka.protocol.producer.produce import ProduceResponse as KProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest as KInitProducerIdRequest
from kafka.protocol.producer.transaction import InitProducerIdResponse as KInitProducerIdResponse
from kafka.record.default_records import DefaultRecordBatchBuilder

from sdi.mq import protocol as p
from sdi.mq.partitioner import partition_for_key
from sdi.testing import servers
from sdi.testing.broker import BrokerProcess

#: Client settings that keep group membership quick to settle in tests.
SESSION_MS = 6000
HEARTBEAT_MS = 500


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("mq-clients")).start()
    try:
        yield process
    finally:
        code = process.stop()
    assert code == 0, "".join(process.output[-40:])


@pytest.fixture
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("mq-restart")).start()
    try:
        yield process
    finally:
        process.kill()


def admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(
    broker: BrokerProcess, name: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    client = admin(broker)  # referenced until the answer is in: its futures need it
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
    )
    futures[name].result(10)


def confluent_consumer(broker: BrokerProcess, group: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            # Requests queue behind a long-polled fetch on the same connection, as on Kafka.
            "fetch.wait.max.ms": 100,
            **extra,
        }
    )


def confluent_drain(consumer: Consumer, count: int, timeout: float = 20.0) -> list[Any]:
    """Polls until ``count`` records arrived; fails on a client error."""
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        message = consumer.poll(0.2)
        if message is None:
            continue
        assert message.error() is None, message.error()
        records.append(message)
    return records


def kafka_python_drain(consumer: KafkaConsumer, count: int, timeout: float = 20.0) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


# ---------------------------------------------------------------------------
# 1. kafka-python
# ---------------------------------------------------------------------------


def kafka_python_consumer(broker: BrokerProcess, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )


def test_kafka_python_produce_group_consume_commit_resume(broker: BrokerProcess) -> None:
    topic, group = unique("kp"), unique("kp-group")
    create_topic(broker, topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    assert producer.config["enable_idempotence"]
    sent = [(f"key-{i % 5}".encode(), f"value-{i}".encode()) for i in range(40)]
    metadata = [producer.send(topic, key=k, value=v).get(timeout=10) for k, v in sent]
    producer.flush()
    # Every record went where Kafka's partitioner puts its key, at consecutive offsets.
    expected: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: []}
    for (key, value), meta in zip(sent, metadata, strict=True):
        assert meta.partition == partition_for_key(key, 2)
        assert meta.offset == len(expected[meta.partition])
        expected[meta.partition].append((key, value))

    consumer = kafka_python_consumer(broker, topic, group)
    try:
        records = kafka_python_drain(consumer, len(sent))
        got: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: []}
        for record in records:  # in order within each partition
            assert record.offset == len(got[record.partition])
            got[record.partition].append((record.key, record.value))
        assert got == expected
        consumer.commit()
        for partition in (0, 1):
            committed = consumer.committed(KTopicPartition(topic, partition))
            assert committed == len(expected[partition])
    finally:
        consumer.close()

    more = [(f"key-{i % 5}".encode(), f"more-{i}".encode()) for i in range(10)]
    try:
        new_meta = [producer.send(topic, key=k, value=v).get(timeout=10) for k, v in more]
    finally:
        producer.close()
    resumed = kafka_python_consumer(broker, topic, group)
    try:
        again = kafka_python_drain(resumed, len(more))
        # Nothing more arrives: the group resumed at its committed offsets.
        assert not resumed.poll(timeout_ms=300)
    finally:
        resumed.close()
    assert sorted((r.partition, r.offset, r.value) for r in again) == sorted(
        (m.partition, m.offset, v) for m, (_, v) in zip(new_meta, more, strict=True)
    )
    for record in again:
        assert record.offset >= len(expected[record.partition])


# ---------------------------------------------------------------------------
# 2. confluent-kafka
# ---------------------------------------------------------------------------


def test_confluent_keyed_produce_matches_partitioner_and_commits(broker: BrokerProcess) -> None:
    topic, group = unique("ck"), unique("ck-group")
    create_topic(broker, topic, partitions=3)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
    )
    delivered: list[tuple[bytes, int, int]] = []

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        assert error is None, error
        delivered.append((message.key(), message.partition(), message.offset()))

    keys = [f"user-{i}".encode() for i in range(60)]
    for key in keys:
        producer.produce(topic, key=key, value=key[::-1], on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(delivered) == len(keys)
    for key, partition, _ in delivered:
        assert partition == partition_for_key(key, 3), key
    counts = {index: sum(1 for _, at, _ in delivered if at == index) for index in range(3)}
    assert all(counts.values()), counts
    for index in range(3):
        assert sorted(o for _, at, o in delivered if at == index) == list(range(counts[index]))

    consumer = confluent_consumer(broker, group)
    consumer.subscribe([topic])
    try:
        records = confluent_drain(consumer, len(keys))
        assert sorted((m.key(), m.partition(), m.offset()) for m in records) == sorted(delivered)
        for message in records:
            assert message.value() == message.key()[::-1]
        consumer.commit(asynchronous=False)
        committed = consumer.committed([CTopicPartition(topic, i) for i in range(3)], timeout=10)
        assert {(tp.partition, tp.offset) for tp in committed} == set(counts.items())
        assert all(tp.error is None for tp in committed)
        for index in range(3):  # ListOffsets: earliest and latest
            watermarks = consumer.get_watermark_offsets(CTopicPartition(topic, index), 10)
            assert watermarks == (0, counts[index])
        by_time = consumer.offsets_for_times(
            [CTopicPartition(topic, index, 0) for index in range(3)], 10
        )
        assert [(tp.partition, tp.offset, tp.error) for tp in by_time] == [
            (0, 0, None),
            (1, 0, None),
            (2, 0, None),
        ]
        future = int(time.time() * 1000) + 3_600_000
        [after_all] = consumer.offsets_for_times([CTopicPartition(topic, 0, future)], 10)
        assert (after_all.offset, after_all.error) == (-1, None)  # no record that late
    finally:
        consumer.close()


# ---------------------------------------------------------------------------
# 3. aiokafka
# ---------------------------------------------------------------------------


def test_aiokafka_headers_tombstones_and_commit(broker: BrokerProcess) -> None:
    topic, group = unique("aio"), unique("aio-group")
    create_topic(broker, topic, partitions=1)
    sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (b"k1", b"v1", [("trace", b"abc"), ("empty", b"")]),
        (None, b"no key", []),
        (b"k1", None, [("reason", b"deleted")]),  # a tombstone
        (b"", b"", []),  # empty, not null
        (b"k2", b"v2", [("dup", b"1"), ("dup", b"2")]),
    ]

    async def scenario() -> tuple[list[Any], list[Any], int | None]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            offsets = []
            for key, value, headers in sent:
                meta = await producer.send_and_wait(topic, value, key=key, headers=headers)
                offsets.append(meta.offset)
        finally:
            await producer.stop()
        assert offsets == list(range(len(sent)))
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        await consumer.start()
        try:
            records: list[Any] = []
            deadline = time.monotonic() + 20
            while len(records) < len(sent) and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
            await consumer.commit()
            committed = await consumer.committed(AioTopicPartition(topic, 0))
        finally:
            await consumer.stop()
        return offsets, records, committed

    offsets, records, committed = asyncio.run(scenario())
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in records] == [
        (offset, key, value, headers)
        for offset, (key, value, headers) in zip(offsets, sent, strict=True)
    ]
    assert committed == len(sent)


# ---------------------------------------------------------------------------
# 4. kcat
# ---------------------------------------------------------------------------


def kcat(broker: BrokerProcess, *args: str, stdin: str | None = None) -> str:
    binary = servers.require_binary("kcat")
    result = subprocess.run(
        [binary, "-b", broker.bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kcat_produce_consume_keys_and_list(broker: BrokerProcess) -> None:
    topic = unique("kcat")
    # The topic does not exist yet: kcat's metadata request auto-creates it.
    kcat(broker, "-P", "-t", topic, stdin="first\nsecond\nthird\n")
    kcat(broker, "-P", "-t", topic, "-K:", stdin="alpha:one\nbeta:two\n")
    lines = kcat(broker, "-C", "-t", topic, "-e", "-f", "%o|%k|%s\n").splitlines()
    assert lines == ["0||first", "1||second", "2||third", "3|alpha|one", "4|beta|two"]
    listing = kcat(broker, "-L", "-t", topic)
    assert f'topic "{topic}" with 1 partitions:' in listing
    assert "partition 0, leader 0" in listing
    everything = kcat(broker, "-L")
    assert f'topic "{topic}"' in everything
    assert "1 brokers:" in everything


# ---------------------------------------------------------------------------
# 5. Group rebalancing
# ---------------------------------------------------------------------------


class Member:
    """A group member polling on a thread of its own.

    ``assignor`` is a kafka-python assignor class, or the name of a
    confluent-kafka ``partition.assignment.strategy``.
    """

    def __init__(self, broker: BrokerProcess, topic: str, group: str, assignor: Any) -> None:
        self._confluent = isinstance(assignor, str)
        self.consumer: Any
        if self._confluent:
            self.consumer = confluent_consumer(
                broker, group, **{"partition.assignment.strategy": assignor}
            )
        else:
            self.consumer = KafkaConsumer(
                bootstrap_servers=broker.bootstrap,
                group_id=group,
                partition_assignment_strategy=[assignor],
                session_timeout_ms=SESSION_MS,
                heartbeat_interval_ms=HEARTBEAT_MS,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
        self.consumer.subscribe([topic])
        self.topic = topic
        self.assigned: frozenset[int] = frozenset()
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._confluent:
                    message = self.consumer.poll(0.1)
                    assert message is None or message.error() is None, message.error()
                else:
                    self.consumer.poll(timeout_ms=100)
                self.assigned = frozenset(
                    tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic
                )
        except BaseException as error:  # reported by close()
            self.failure = error
        finally:
            self.consumer.close()

    def close(self) -> None:
        """Stops polling and closes the consumer (which leaves the group); idempotent."""
        self._stop.set()
        self._thread.join(20)
        assert not self._thread.is_alive()
        if self.failure is not None:
            raise self.failure


ALL = frozenset(range(4))


@pytest.mark.parametrize(
    ("assignor", "split"),
    [
        (RangePartitionAssignor, {frozenset({0, 1}), frozenset({2, 3})}),
        (RoundRobinPartitionAssignor, {frozenset({0, 2}), frozenset({1, 3})}),
    ],
    ids=["range", "roundrobin"],
)
def test_rebalance_join_and_leave(
    broker: BrokerProcess, assignor: Any, split: set[frozenset[int]]
) -> None:
    topic, group = unique("rb"), unique("rb-group")
    create_topic(broker, topic, partitions=4)
    a = Member(broker, topic, group, assignor)
    try:
        wait_until(lambda: a.assigned == ALL, 20, "A to own all 4 partitions")
        b = Member(broker, topic, group, assignor)
        try:
            wait_until(
                lambda: {a.assigned, b.assigned} == split, 20, f"A and B to split as {split}"
            )
        finally:
            b.close()  # a clean close sends LeaveGroup
        started = time.monotonic()
        wait_until(lambda: a.assigned == ALL, 20, "A to own all 4 again")
        # A LeaveGroup rebalances at once, not after B's session time-out.
        assert time.monotonic() - started < SESSION_MS / 1000
        # Now the leader (A, the first member) leaves: C, joined since, takes over.
        c = Member(broker, topic, group, assignor)
        try:
            wait_until(lambda: {a.assigned, c.assigned} == split, 20, "A and C to split")
            a.close()
            started = time.monotonic()
            wait_until(lambda: c.assigned == ALL, 20, "C to own all 4 after the leader left")
            assert time.monotonic() - started < SESSION_MS / 1000
        finally:
            c.close()
    finally:
        a.close()


def test_confluent_cooperative_sticky_rebalance(broker: BrokerProcess) -> None:
    # Incremental (cooperative) rebalancing runs over the classic protocol: two rounds.
    topic, group = unique("coop"), unique("coop-group")
    create_topic(broker, topic, partitions=4)
    a = Member(broker, topic, group, "cooperative-sticky")
    try:
        wait_until(lambda: a.assigned == ALL, 20, "A to own all 4 partitions")
        b = Member(broker, topic, group, "cooperative-sticky")
        try:
            wait_until(
                lambda: len(a.assigned) == len(b.assigned) == 2 and a.assigned | b.assigned == ALL,
                20,
                "A and B to own 2 partitions each",
            )
        finally:
            b.close()
        wait_until(lambda: a.assigned == ALL, 20, "A to own all 4 again")
    finally:
        a.close()


KILLED_MEMBER = """
import sys
from confluent_kafka import Consumer

bootstrap, topic, group, session_ms = sys.argv[1:5]
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "session.timeout.ms": int(session_ms),
    "heartbeat.interval.ms": 300,
    "partition.assignment.strategy": "range",
    "enable.auto.commit": False,
})

def on_assign(consumer, partitions):
    print("assigned", ",".join(str(p.partition) for p in partitions), flush=True)

consumer.subscribe([topic], on_assign=on_assign)
while True:
    consumer.poll(0.1)
"""


def test_killed_member_is_removed_after_its_session_timeout(broker: BrokerProcess) -> None:
    topic, group = unique("kill"), unique("kill-group")
    create_topic(broker, topic, partitions=4)
    session_ms = 3000
    a = Member(broker, topic, group, RangePartitionAssignor)
    child: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    assignments: list[frozenset[int]] = []

    def read_assignments(stdout: Any) -> None:
        for line in stdout:
            word, _, partitions = line.strip().partition(" ")
            if word == "assigned":
                assignments.append(frozenset(int(x) for x in partitions.split(",") if x))

    try:
        wait_until(lambda: a.assigned == ALL, 20, "A to own all 4 partitions")
        # A confluent-kafka consumer in a child process joins, with a short session.
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_MEMBER, broker.bootstrap, topic, group, str(session_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        reader = threading.Thread(target=read_assignments, args=(child.stdout,), daemon=True)
        reader.start()
        wait_until(
            lambda: len(a.assigned) == 2 and bool(assignments) and len(assignments[-1]) == 2,
            30,
            "the child consumer to take 2 of the 4 partitions",
        )
        assert assignments[-1] | a.assigned == ALL
        assert not assignments[-1] & a.assigned
        # Killed, it never leaves: the broker must notice its heartbeats stopped.
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        wait_until(lambda: a.assigned == ALL, session_ms / 1000 + 15, "A to take over")
        elapsed = time.monotonic() - killed
        # Not before the dead member's session ran out (less a heartbeat it may just have sent).
        assert elapsed >= session_ms / 1000 - 0.5, elapsed
    finally:
        if child is not None:
            child.kill()
            child.wait()
            if reader is not None:
                reader.join(10)
            assert child.stdout is not None
            child.stdout.close()
        a.close()


# ---------------------------------------------------------------------------
# 6. Committed offsets across restarts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_committed_offsets_and_records_survive_restart(
    fresh_broker: BrokerProcess, how: str
) -> None:
    broker = fresh_broker
    topic, group = unique("restart"), unique("restart-group")
    create_topic(broker, topic, partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        }
    )
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        if error is not None:
            failures.append(error)

    def produce(values: list[bytes]) -> None:
        for value in values:
            at = int(value.split(b"-")[1])
            producer.produce(topic, value=value, partition=at % 2, on_delivery=on_delivery)
        assert producer.flush(15) == 0
        assert not failures

    # Record i goes to partition i % 2 at offset i // 2.
    values = [f"record-{i}".encode() for i in range(30)]
    produce(values[:20])
    consumer = confluent_consumer(broker, group)
    consumer.subscribe([topic])
    try:
        confluent_drain(consumer, 20)
        to_commit = [CTopicPartition(topic, 0, 4), CTopicPartition(topic, 1, 7)]
        consumer.commit(offsets=to_commit, asynchronous=False)
    finally:
        consumer.close()
    # Acknowledged just before the broker goes down: these must survive a SIGKILL too.
    produce(values[20:26])

    if how == "stop":
        assert broker.stop() == 0
    else:
        broker.kill()
    broker.restart()
    # The same idempotent producer carries on (its sequence numbers continue).
    produce(values[26:])

    fetcher = confluent_consumer(broker, group)
    try:
        committed = fetcher.committed([CTopicPartition(topic, 0), CTopicPartition(topic, 1)], 10)
        assert [(tp.partition, tp.offset) for tp in committed] == [(0, 4), (1, 7)]
        fetcher.subscribe([topic])
        rest = confluent_drain(fetcher, 15 - 4 + 15 - 7)
        assert sorted((m.partition(), m.offset()) for m in rest) == [
            *((0, o) for o in range(4, 15)),
            *((1, o) for o in range(7, 15)),
        ]
    finally:
        fetcher.close()
    reader = confluent_consumer(broker, unique("restart-all"))
    reader.assign([CTopicPartition(topic, 0, 0), CTopicPartition(topic, 1, 0)])
    try:
        everything = confluent_drain(reader, len(values))
        for partition in (0, 1):  # nothing twice, nothing lost
            assert reader.get_watermark_offsets(CTopicPartition(topic, partition), 10) == (0, 15)
    finally:
        reader.close()
    assert sorted(m.value() for m in everything) == sorted(values)
    for message in everything:
        assert message.value() == values[message.offset() * 2 + message.partition()]


def test_live_clients_ride_through_a_broker_crash(fresh_broker: BrokerProcess) -> None:
    broker = fresh_broker
    topic, group = unique("live"), unique("live-group")
    create_topic(broker, topic, partitions=2)
    quick = {"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200}
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, **quick}
    )
    consumer = confluent_consumer(broker, group, **quick)
    consumer.subscribe([topic])
    try:
        for at in range(10):
            producer.produce(topic, value=f"before-{at}".encode(), partition=at % 2)
        assert producer.flush(15) == 0
        before = confluent_drain(consumer, 10)
        consumer.commit(asynchronous=False)
        broker.kill()
        broker.restart()
        # The group is gone with the process: the member joins again, resumes where it
        # committed and gets exactly the records produced since.
        for at in range(10):
            producer.produce(topic, value=f"after-{at}".encode(), partition=at % 2)
        assert producer.flush(15) == 0
        after = confluent_drain(consumer, 10)
        assert sorted((m.partition(), m.offset()) for m in before + after) == [
            (partition, offset) for partition in (0, 1) for offset in range(10)
        ]
        assert sorted(m.value() for m in after) == sorted(
            f"after-{at}".encode() for at in range(10)
        )
        consumer.commit(asynchronous=False)
        committed = consumer.committed([CTopicPartition(topic, 0), CTopicPartition(topic, 1)], 10)
        assert [(tp.partition, tp.offset) for tp in committed] == [(0, 10), (1, 10)]
    finally:
        consumer.close()


# ---------------------------------------------------------------------------
# 7. Admin
# ---------------------------------------------------------------------------


def topic_file(broker: BrokerProcess, name: str) -> Path:
    """Where the broker keeps a topic's settings (``sdi serve`` puts mq's data in ``mq/``)."""
    return broker.data_dir / "mq" / "meta" / "topics" / f"{name}.json"


def topic_meta(broker: BrokerProcess, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(topic_file(broker, name).read_text())
    return meta


def confluent_create_error(client: AdminClient, topic: NewTopic) -> int:
    future = client.create_topics([topic], operation_timeout=10)[topic.topic]
    with pytest.raises(KafkaException) as raised:
        future.result(10)
    code: int = raised.value.args[0].code()
    return code


def test_confluent_admin_create_and_delete(broker: BrokerProcess) -> None:
    client = admin(broker)
    name = unique("admin-ck")
    futures = client.create_topics(
        [
            NewTopic(
                name,
                num_partitions=3,
                replication_factor=1,
                config={"retention.ms": "60000", "flush.messages": "1"},
            )
        ],
        operation_timeout=10,
    )
    assert futures[name].result(10) is None
    listed = client.list_topics(timeout=10).topics
    assert sorted(listed[name].partitions) == [0, 1, 2]
    config = topic_meta(broker, name)["config"]
    assert (config["retention_ms"], config["fsync"]) == (60000, "every_batch")

    assert confluent_create_error(client, NewTopic(name, 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    invalid_name = confluent_create_error(client, NewTopic("no spaces allowed", 1, 1))
    assert invalid_name == KafkaError.TOPIC_EXCEPTION == p.ErrorCode.INVALID_TOPIC_EXCEPTION
    assert (
        confluent_create_error(client, NewTopic(unique("rf"), 1, 3))
        == KafkaError.INVALID_REPLICATION_FACTOR
    )
    assert (
        confluent_create_error(client, NewTopic(unique("none"), 0, 1))
        == KafkaError.INVALID_PARTITIONS
    )

    assert client.delete_topics([name], operation_timeout=10)[name].result(10) is None
    assert name not in client.list_topics(timeout=10).topics
    assert not topic_file(broker, name).exists()
    never = unique("never")
    with pytest.raises(KafkaException) as raised:
        client.delete_topics([never], operation_timeout=10)[never].result(10)
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin_create_and_delete(broker: BrokerProcess) -> None:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        name = unique("admin-kp")
        result = client.create_topics(
            {
                name: {
                    "num_partitions": 2,
                    "replication_factor": 1,
                    "configs": {"retention.ms": "5000"},
                }
            }
        )
        assert [(t["name"], t["error_code"]) for t in result["topics"]] == [(name, 0)]
        assert topic_meta(broker, name)["partitions"] == 2
        assert topic_meta(broker, name)["config"]["retention_ms"] == 5000
        assert name in client.list_topics()

        def create_error(topic: str, **options: Any) -> int:
            options.setdefault("num_partitions", 1)
            options.setdefault("replication_factor", 1)
            answer = client.create_topics({topic: options}, raise_errors=False)
            [entry] = answer["topics"]
            code: int = entry["error_code"]
            return code

        assert create_error(name) == kafka_errors.TopicAlreadyExistsError.errno
        assert create_error("bad/name") == kafka_errors.InvalidTopicError.errno
        assert create_error(unique("rf"), replication_factor=3) == (
            kafka_errors.InvalidReplicationFactorError.errno
        )
        assert create_error(unique("none"), num_partitions=0) == (
            kafka_errors.InvalidPartitionsError.errno
        )
        dry_run = unique("dry-run")
        checked = client.create_topics(
            {dry_run: {"num_partitions": 1, "replication_factor": 1}}, validate_only=True
        )
        assert [(t["name"], t["error_code"]) for t in checked["topics"]] == [(dry_run, 0)]
        assert dry_run not in client.list_topics()
        assert not topic_file(broker, dry_run).exists()

        deleted = client.delete_topics([name])
        assert [(t["name"], t["error_code"]) for t in deleted["topics"]] == [(name, 0)]
        assert name not in client.list_topics()
        unknown = client.delete_topics([unique("never")], raise_errors=False)
        assert [t["error_code"] for t in unknown["topics"]] == [
            kafka_errors.UnknownTopicOrPartitionError.errno
        ]
    finally:
        client.close()


BAD_CONFIGS = [
    {"no.such.setting": "1"},  # unknown
    {"retention.ms": "soon"},  # not a number
    {"max.message.bytes": "10"},  # out of range
    {"cleanup.policy": "compact,delete"},  # not built
    {"num.partitions": "3"},  # a broker setting, not a topic's
]


@pytest.mark.parametrize("configs", BAD_CONFIGS, ids="-".join)
def test_confluent_bad_config_gives_invalid_config(
    broker: BrokerProcess, configs: dict[str, str]
) -> None:
    client = admin(broker)
    topic = NewTopic(unique("cfg"), 1, 1, config=configs)
    assert confluent_create_error(client, topic) == KafkaError.INVALID_CONFIG == 40
    assert topic.topic not in client.list_topics(timeout=10).topics


def test_kafka_python_bad_config_gives_invalid_config(broker: BrokerProcess) -> None:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        for configs in BAD_CONFIGS:
            name = unique("cfg")
            answer = client.create_topics(
                {name: {"num_partitions": 1, "replication_factor": 1, "configs": configs}},
                raise_errors=False,
            )
            assert [(t["name"], t["error_code"]) for t in answer["topics"]] == [
                (name, kafka_errors.InvalidConfigurationError.errno)
            ]
            assert name not in client.list_topics()
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Raw connections
# ---------------------------------------------------------------------------


class Raw:
    """One connection speaking Kafka requests built by kafka-python's codecs."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=10)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: Any) -> int:
        self.correlation_id += 1
        message.with_header(correlation_id=self.correlation_id, client_id="raw")
        self.sock.sendall(bytes(message.encode(header=True, framed=True)))
        return self.correlation_id

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def receive(self, correlation_id: int) -> bytes:
        size = int.from_bytes(self._exactly(4), "big")
        frame = self._exactly(size)
        assert int.from_bytes(frame[:4], "big") == correlation_id
        return frame[4:]  # header v0: every version sdi serves is non-flexible

    def call(self, message: Any, response_class: Any) -> Any:
        body = self.receive(self.send(message))
        return response_class[message.API_VERSION].decode(body)

    def closed_by_broker(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1 << 16) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    # -- requests -----------------------------------------------------------

    def metadata(self, *topics: str, auto_create: bool = False) -> Any:
        """Metadata v4 for ``topics``, or for every topic when none are named."""
        request = KMetadataRequest[4]
        return self.call(
            request(
                topics=[request.MetadataRequestTopic(name=name) for name in topics] or None,
                allow_auto_topic_creation=auto_create,
            ),
            KMetadataResponse,
        )

    def produce(
        self,
        topic: str,
        partition: int,
        records: bytes | None,
        acks: int = -1,
        transactional_id: str | None = None,
    ) -> tuple[int, int]:
        """(error code, base offset) of one partition's produce; (0, -1) for acks=0."""
        request = KProduceRequest[7]
        data = request.TopicProduceData
        message = request(
            transactional_id=transactional_id,
            acks=acks,
            timeout_ms=5000,
            topic_data=[
                data(
                    name=topic,
                    partition_data=[data.PartitionProduceData(index=partition, records=records)],
                )
            ],
        )
        if acks == 0:
            self.send(message)  # no answer comes
            return 0, -1
        response = self.call(message, KProduceResponse)
        [[answer]] = [t.partition_responses for t in response.responses]
        assert answer.index == partition
        return answer.error_code, answer.base_offset

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        max_bytes: int = 1 << 20,
    ) -> tuple[int, int, list[p.Record]]:
        """(error code, high watermark, records) of one partition's fetch."""
        request = KFetchRequest[11]
        fetch_topic = request.FetchTopic
        response = self.call(
            request(
                replica_id=-1,
                max_wait_ms=max_wait_ms,
                min_bytes=min_bytes,
                max_bytes=max_bytes,
                isolation_level=0,
                session_id=0,
                session_epoch=-1,
                topics=[
                    fetch_topic(
                        topic=topic,
                        partitions=[
                            fetch_topic.FetchPartition(
                                partition=partition,
                                current_leader_epoch=-1,
                                fetch_offset=offset,
                                log_start_offset=-1,
                                partition_max_bytes=max_bytes,
                            )
                        ],
                    )
                ],
                forgotten_topics_data=[],
                rack_id="",
            ),
            KFetchResponse,
        )
        [[answer]] = [t.partitions for t in response.responses]
        data = bytes(answer.records or b"")
        records = [
            record
            for batch in (p.decode_record_batches(data) if data else [])
            for record in batch.records
            if record.offset >= offset
        ]
        return answer.error_code, answer.high_watermark, records

    def commit(self, group: str, topic: str, offsets: dict[int, tuple[int, str | None]]) -> Any:
        """A commit outside group management (generation -1); {partition: error code}."""
        request = KOffsetCommitRequest[2]
        topic_class = request.OffsetCommitRequestTopic
        response = self.call(
            request(
                group_id=group,
                generation_id_or_member_epoch=-1,
                member_id="",
                retention_time_ms=-1,
                topics=[
                    topic_class(
                        name=topic,
                        partitions=[
                            topic_class.OffsetCommitRequestPartition(
                                partition_index=index,
                                committed_offset=offset,
                                committed_metadata=metadata,
                            )
                            for index, (offset, metadata) in offsets.items()
                        ],
                    )
                ],
            ),
            KOffsetCommitResponse,
        )
        [answer] = response.topics
        return {q.partition_index: q.error_code for q in answer.partitions}

    def committed(self, group: str, topic: str, *partitions: int) -> dict[int, tuple[int, Any]]:
        """{partition: (committed offset, metadata)}, -1 where nothing is committed."""
        request = KOffsetFetchRequest[3]
        response = self.call(
            request(
                group_id=group,
                topics=[
                    request.OffsetFetchRequestTopic(name=topic, partition_indexes=list(partitions))
                ],
            ),
            KOffsetFetchResponse,
        )
        assert [t.name for t in response.topics] == [topic]
        return self._offsets(response)

    def all_committed(self, group: str) -> dict[str, dict[int, tuple[int, Any]]]:
        """Everything ``group`` committed (OffsetFetch with null topics), by topic."""
        response = self.call(
            KOffsetFetchRequest[3](group_id=group, topics=None), KOffsetFetchResponse
        )
        return {t.name: self._offsets(response, t.name) for t in response.topics}

    @staticmethod
    def _offsets(response: Any, name: str | None = None) -> dict[int, tuple[int, Any]]:
        assert response.error_code == 0
        [answer] = [t for t in response.topics if name in (None, t.name)]
        assert all(q.error_code == 0 for q in answer.partitions)
        return {q.partition_index: (q.committed_offset, q.metadata) for q in answer.partitions}

    def init_producer_id(self) -> tuple[int, int]:
        response = self.call(
            KInitProducerIdRequest[1](transactional_id=None, transaction_timeout_ms=60000),
            KInitProducerIdResponse,
        )
        assert response.error_code == 0
        return response.producer_id, response.producer_epoch


def batch(*values: bytes, **producer: int) -> bytes:
    now = int(time.time() * 1000)
    return p.encode_record_batch(
        [p.Record(None, value, [], at, now) for at, value in enumerate(values)], **producer
    )


# ---------------------------------------------------------------------------
# 8. Bad input
# ---------------------------------------------------------------------------


def frame(api_key: int, version: int, body: bytes) -> bytes:
    """A request frame with a v1 header (client id "c") around ``body``."""
    payload = api_key.to_bytes(2, "big") + version.to_bytes(2, "big") + b"\x00\x00\x00\x07"
    payload += b"\x00\x01c" + body
    return len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(b"\x00\x00\x00\x08" + b"\xff" * 8, id="garbage-header"),
        # Metadata v1 whose topic array announces 2 topics but carries one.
        pytest.param(frame(3, 1, b"\x00\x00\x00\x02\x00\x01t"), id="truncated-body"),
        pytest.param(frame(99, 0, b""), id="unknown-api-key"),
        pytest.param(frame(3, 9, b"\xff\xff\xff\xff"), id="unsupported-version"),
        pytest.param((p.FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"\x00" * 64, id="too-large"),
        pytest.param(b"\xff\xff\xff\xfe" + b"\x00" * 8, id="negative-size"),
        pytest.param(b"\x00\x00\x00\x00", id="empty-frame"),
    ],
)
def test_bad_input_closes_only_that_connection(broker: BrokerProcess, wire: bytes) -> None:
    with Raw(broker) as bystander, Raw(broker) as bad:
        assert bystander.metadata().brokers[0].port == broker.port
        bad.sock.sendall(wire)
        assert bad.closed_by_broker(), "the broker kept a connection that sent garbage"
        # The other connection, opened before, still works.
        answer = bystander.metadata()
        assert [(b.node_id, b.port) for b in answer.brokers] == [(0, broker.port)]
    with Raw(broker) as after:
        assert after.metadata().brokers[0].port == broker.port


def kafka_python_batch(value: bytes, **options: Any) -> bytes:
    """One record batch built by kafka-python (compressed or transactional if asked)."""
    settings = {
        "magic": 2,
        "compression_type": 0,
        "is_transactional": False,
        "producer_id": -1,
        "producer_epoch": -1,
        "base_sequence": -1,
        "batch_size": 1 << 20,
        **options,
    }
    builder = DefaultRecordBatchBuilder(**settings)
    builder.append(0, int(time.time() * 1000), None, value, [])
    return bytes(builder.build())


def test_produce_errors_keep_the_connection(broker: BrokerProcess) -> None:
    topic, small = unique("errors"), unique("small")
    create_topic(broker, topic)
    create_topic(broker, small, config={"max.message.bytes": "1000"})
    with Raw(broker) as raw:
        good = batch(b"hello", b"world")
        corrupt = bytearray(good)
        corrupt[-3] ^= 0xFF  # inside the last record: the CRC no longer matches
        assert raw.produce(topic, 0, bytes(corrupt))[0] == p.ErrorCode.CORRUPT_MESSAGE
        assert raw.produce(small, 0, batch(b"x" * 2000))[0] == p.ErrorCode.MESSAGE_TOO_LARGE
        assert raw.produce(small, 0, batch(b"x" * 500)) == (0, 0)
        assert raw.produce(topic, 0, good, acks=5)[0] == p.ErrorCode.INVALID_REQUIRED_ACKS
        missing = unique("missing")
        assert raw.produce(missing, 0, good)[0] == p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert raw.produce(topic, 7, good)[0] == p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        # A produce does not create topics (only a Metadata request may).
        [listed] = raw.metadata(missing).topics
        assert listed.error_code == p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

        assert raw.produce(topic, 0, good + good)[0] == p.ErrorCode.INVALID_RECORD
        assert raw.produce(topic, 0, None)[0] == p.ErrorCode.INVALID_RECORD
        gzipped = kafka_python_batch(b"z" * 100, compression_type=1)
        assert raw.produce(topic, 0, gzipped)[0] == p.ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
        transactional = kafka_python_batch(
            b"t", is_transactional=True, producer_id=1, producer_epoch=0, base_sequence=0
        )
        assert raw.produce(topic, 0, transactional)[0] == p.ErrorCode.INVALID_RECORD
        assert raw.produce(topic, 0, good, transactional_id="txn")[0] == (
            p.ErrorCode.INVALID_REQUEST
        )

        # None of the refused batches was stored; the same connection still appends.
        assert raw.produce(topic, 0, good) == (0, 0)
        # acks=0 takes no answer; the next request's answer is still matched up.
        assert raw.produce(topic, 0, batch(b"fire", b"forget"), acks=0) == (0, -1)
        error, high_watermark, records = raw.fetch(topic, 0, 0)
        assert (error, high_watermark) == (0, 4)
        assert [r.value for r in records] == [b"hello", b"world", b"fire", b"forget"]
        assert [r.offset for r in records] == [0, 1, 2, 3]
        # Past the end: OFFSET_OUT_OF_RANGE at once, however long the fetch may wait.
        started = time.monotonic()
        assert raw.fetch(topic, 0, 5, max_wait_ms=5000) == (p.ErrorCode.OFFSET_OUT_OF_RANGE, 4, [])
        assert time.monotonic() - started < 2


def test_metadata_auto_creates_valid_names_only(broker: BrokerProcess) -> None:
    with Raw(broker) as raw:
        name = unique("auto")
        [unknown] = raw.metadata(name).topics
        assert unknown.error_code == p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        [created] = raw.metadata(name, auto_create=True).topics
        assert (created.name, created.error_code) == (name, 0)
        assert [q.partition_index for q in created.partitions] == [0]
        assert topic_meta(broker, name)["partitions"] == 1
        [invalid] = raw.metadata("not/valid", auto_create=True).topics
        assert invalid.error_code == p.ErrorCode.INVALID_TOPIC_EXCEPTION
        assert name in {t.name for t in raw.metadata().topics}
        assert "not/valid" not in {t.name for t in raw.metadata().topics}


def test_simple_commits_and_topic_deletion_over_a_raw_socket(broker: BrokerProcess) -> None:
    topic, other, group = unique("commits"), unique("other"), unique("commits-group")
    create_topic(broker, topic, partitions=2)
    create_topic(broker, other)
    with Raw(broker) as raw:
        assert raw.committed(group, topic, 0, 1) == {0: (-1, ""), 1: (-1, "")}
        assert raw.commit(group, topic, {0: (5, "checkpoint"), 1: (9, None)}) == {0: 0, 1: 0}
        assert raw.committed(group, topic, 0, 1) == {0: (5, "checkpoint"), 1: (9, None)}
        assert raw.commit(group, other, {0: (2, "")}) == {0: 0}
        assert raw.all_committed(group) == {
            topic: {0: (5, "checkpoint"), 1: (9, None)},
            other: {0: (2, "")},
        }
        assert raw.commit(group, topic, {7: (1, None)}) == {
            7: p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        }
        assert raw.commit("", topic, {0: (1, None)}) == {0: p.ErrorCode.INVALID_GROUP_ID}
        # Deleting the topic drops what was committed for it; a new topic of that name starts clean.
        client = admin(broker)
        assert client.delete_topics([topic])[topic].result(10) is None
        create_topic(broker, topic, partitions=2)
        assert raw.committed(group, topic, 0, 1) == {0: (-1, ""), 1: (-1, "")}
        assert raw.all_committed(group) == {other: {0: (2, "")}}


def test_commit_with_oversize_metadata_gives_offset_metadata_too_large(
    broker: BrokerProcess,
) -> None:
    topic, group = unique("meta"), unique("meta-group")
    create_topic(broker, topic)
    with Raw(broker) as raw:
        answer = raw.commit(group, topic, {0: (3, "m" * 5000)})
        assert answer == {0: 12}  # OFFSET_METADATA_TOO_LARGE
        assert raw.committed(group, topic, 0) == {0: (-1, "")}


def test_api_versions_v3_gets_error_35_with_ranges(broker: BrokerProcess) -> None:
    with Raw(broker) as raw:
        correlation_id = raw.send(
            KApiVersionsRequest[3](client_software_name="raw", client_software_version="1")
        )
        answer = KApiVersionsResponse[0].decode(raw.receive(correlation_id))
        assert answer.error_code == p.UNSUPPORTED_VERSION == 35
        ranges = {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys}
        assert ranges == p.SUPPORTED_VERSIONS
        # The client may now ask again at a version both sides speak.
        again = raw.call(KApiVersionsRequest[2](), KApiVersionsResponse)
        assert again.error_code == 0
        assert {k.api_key for k in again.api_keys} == set(p.SUPPORTED_VERSIONS)


# ---------------------------------------------------------------------------
# 9. Idempotent producer
# ---------------------------------------------------------------------------


def test_idempotent_produce_over_a_raw_socket(broker: BrokerProcess) -> None:
    topic = unique("idem")
    create_topic(broker, topic)
    with Raw(broker) as raw:
        producer_id, epoch = raw.init_producer_id()
        assert producer_id >= 0
        assert epoch == 0
        assert raw.init_producer_id()[0] != producer_id
        first = batch(b"a", b"b", b"c", producer_id=producer_id, producer_epoch=0, base_sequence=0)
        assert raw.produce(topic, 0, first) == (0, 0)
        assert raw.produce(topic, 0, first) == (0, 0)  # a retry: the same offset, stored once
        second = batch(b"d", producer_id=producer_id, producer_epoch=0, base_sequence=3)
        assert raw.produce(topic, 0, second) == (0, 3)
        assert raw.produce(topic, 0, first) == (0, 0)  # an older retry is still recognised
        gap = batch(b"e", producer_id=producer_id, producer_epoch=0, base_sequence=7)
        assert raw.produce(topic, 0, gap)[0] == p.ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        error, high_watermark, records = raw.fetch(topic, 0, 0)
        assert (error, high_watermark) == (0, 4)
        assert [r.value for r in records] == [b"a", b"b", b"c", b"d"]

        # A newer epoch starts over at sequence 0; the older one is then fenced.
        bumped = batch(b"f", producer_id=producer_id, producer_epoch=1, base_sequence=0)
        assert raw.produce(topic, 0, bumped) == (0, 4)
        stale = batch(b"g", producer_id=producer_id, producer_epoch=0, base_sequence=4)
        assert raw.produce(topic, 0, stale)[0] == p.ErrorCode.INVALID_PRODUCER_EPOCH
        # A producer id this partition never saw must start at sequence 0.
        other, _ = raw.init_producer_id()
        late = batch(b"h", producer_id=other, producer_epoch=0, base_sequence=5)
        assert raw.produce(topic, 0, late)[0] == p.ErrorCode.UNKNOWN_PRODUCER_ID
        assert raw.fetch(topic, 0, 0)[1] == 5


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_idempotent_producer_state_survives_restart(fresh_broker: BrokerProcess, how: str) -> None:
    broker = fresh_broker
    topic = unique("idem-restart")
    create_topic(broker, topic)
    with Raw(broker) as raw:
        producer_id, _ = raw.init_producer_id()
        first = batch(b"a", b"b", b"c", producer_id=producer_id, producer_epoch=0, base_sequence=0)
        second = batch(b"d", producer_id=producer_id, producer_epoch=0, base_sequence=3)
        assert raw.produce(topic, 0, first) == (0, 0)
        assert raw.produce(topic, 0, second) == (0, 3)
    if how == "stop":
        assert broker.stop() == 0
    else:
        broker.kill()
    broker.restart()
    with Raw(broker) as raw:
        # Retries of batches appended before the restart are still recognised.
        assert raw.produce(topic, 0, first) == (0, 0)
        assert raw.produce(topic, 0, second) == (0, 3)
        after = batch(b"e", producer_id=producer_id, producer_epoch=0, base_sequence=4)
        assert raw.produce(topic, 0, after) == (0, 4)
        gap = batch(b"f", producer_id=producer_id, producer_epoch=0, base_sequence=9)
        assert raw.produce(topic, 0, gap)[0] == p.ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert [r.value for r in raw.fetch(topic, 0, 0)[2]] == [b"a", b"b", b"c", b"d", b"e"]
        # Producer ids are never handed out twice, across restarts too.
        assert raw.init_producer_id()[0] > producer_id


# ---------------------------------------------------------------------------
# 10. Fetch: sizes, pipelining, long-polls
# ---------------------------------------------------------------------------


def test_fetch_returns_a_whole_first_batch_larger_than_max_bytes(broker: BrokerProcess) -> None:
    topic = unique("big")
    create_topic(broker, topic)
    with Raw(broker) as raw:
        for name in (b"a", b"b", b"c"):
            assert raw.produce(topic, 0, batch(name * 3000))[0] == 0
        # Kafka returns the first batch even when it exceeds the limits, so consumers progress.
        error, _, records = raw.fetch(topic, 0, 0, max_bytes=100)
        assert (error, [r.value for r in records]) == (0, [b"a" * 3000])
        error, _, records = raw.fetch(topic, 0, 1, max_bytes=100)
        assert (error, [r.value for r in records]) == (0, [b"b" * 3000])
        error, _, records = raw.fetch(topic, 0, 0, max_bytes=1 << 20)
        assert [r.offset for r in records] == [0, 1, 2]


def test_pipelined_requests_are_answered_in_order(broker: BrokerProcess) -> None:
    topic = unique("pipeline")
    create_topic(broker, topic)
    with Raw(broker) as raw:
        request = KProduceRequest[7]
        data = request.TopicProduceData
        ids = []
        for value in (b"one", b"two", b"three"):
            produce = request(
                transactional_id=None,
                acks=1,
                timeout_ms=5000,
                topic_data=[
                    data(
                        name=topic,
                        partition_data=[data.PartitionProduceData(index=0, records=batch(value))],
                    )
                ],
            )
            ids.append(raw.send(produce))
        metadata = KMetadataRequest[1](topics=None)
        ids.append(raw.send(metadata))
        offsets = []
        for correlation_id in ids[:3]:
            answer = KProduceResponse[7].decode(raw.receive(correlation_id))
            [[partition]] = [t.partition_responses for t in answer.responses]
            offsets.append((partition.error_code, partition.base_offset))
        assert offsets == [(0, 0), (0, 1), (0, 2)]
        listing = KMetadataResponse[1].decode(raw.receive(ids[3]))
        assert topic in {t.name for t in listing.topics}


def test_deleting_a_topic_ends_a_long_poll_on_it(broker: BrokerProcess) -> None:
    topic = unique("doomed")
    create_topic(broker, topic)
    client = admin(broker)
    with Raw(broker) as waiting:
        timer = threading.Timer(0.3, lambda: client.delete_topics([topic])[topic].result(10))
        started = time.monotonic()
        timer.start()
        try:
            error, _, records = waiting.fetch(topic, 0, 0, max_wait_ms=5000)
        finally:
            timer.join()
        assert (error, records) == (p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, [])
        assert time.monotonic() - started < 3


def test_fetch_long_poll_wakes_on_produce_and_times_out(broker: BrokerProcess) -> None:
    topic = unique("poll")
    create_topic(broker, topic)
    with Raw(broker) as waiting, Raw(broker) as writer:

        def produce_later() -> None:
            time.sleep(0.3)
            writer.produce(topic, 0, batch(b"wake up"))

        thread = threading.Thread(target=produce_later)
        started = time.monotonic()
        thread.start()
        error, high_watermark, records = waiting.fetch(topic, 0, 0, max_wait_ms=2000)
        elapsed = time.monotonic() - started
        thread.join()
        assert (error, high_watermark) == (0, 1)
        assert [r.value for r in records] == [b"wake up"]
        assert 0.25 <= elapsed < 1.5, elapsed

        started = time.monotonic()
        error, high_watermark, records = waiting.fetch(topic, 0, 1, max_wait_ms=1000)
        elapsed = time.monotonic() - started
        assert (error, high_watermark, records) == (0, 1, [])
        assert 0.8 <= elapsed < 10, elapsed
