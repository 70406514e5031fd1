"""Log compaction of ``__consumer_offsets`` (cleanup.policy=compact).

The log binding first, then the broker in-process (many commits, restart,
tombstones past their retention), then ``sdi serve mq`` processes driven by
confluent-kafka: committed() and a resuming consumer after compaction, kill -9
while compaction runs, and a three-broker cluster whose follower catches up
from a compacted leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sdi.errors import Closed, InvalidArgument
from sdi.mq import protocol as p
from sdi.mq.broker import OFFSETS_TOPIC, Broker, BrokerConfig
from sdi.mq.log import Partition
from sdi.testing import servers
from sdi.testing.broker import BrokerProcess

#: Environment that makes `sdi serve mq` compact __consumer_offsets often, in small segments.
FAST_COMPACTION = {
    "SDI_MQ_OFFSETS_SEGMENT_BYTES": "2048",
    "SDI_MQ_COMPACTION_CHECK_INTERVAL_S": "0.2",
    "SDI_MQ_COMPACTION_MIN_NEW_SEGMENTS": "1",
}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _offsets_dir(data_dir: Path) -> Path:
    """Where ``sdi serve mq --data-dir data_dir`` keeps ``__consumer_offsets-0``."""
    return data_dir / "mq" / "logs" / f"{OFFSETS_TOPIC}-0"


def _log_bytes(directory: Path) -> int:
    """Bytes of the segment data files in a partition directory."""
    assert directory.is_dir(), f"{directory} is not there"
    total = 0
    for path in directory.glob("*.log"):
        with contextlib.suppress(FileNotFoundError):  # swapped away while we looked
            total += path.stat().st_size
    return total


# ----------------------------------------------------------------------
# The binding
# ----------------------------------------------------------------------


def _append(log_: Partition, records: list[tuple[bytes | None, bytes | None]], ts: int) -> int:
    base = log_.next_offset
    batch = p.encode_record_batch(
        [
            p.Record(key, value, offset=base + n, timestamp=ts)
            for n, (key, value) in enumerate(records)
        ],
        base_offset=base,
    )
    return log_.append_payload(batch, len(records), ts, ts)


def _records(log_: Partition) -> list[tuple[int, bytes | None, bytes | None]]:
    out: list[tuple[int, bytes | None, bytes | None]] = []
    offset = log_.log_start_offset
    while offset < log_.next_offset:
        data = log_.read_payloads(offset, 1 << 16)
        if not data:
            break
        for batch in p.decode_record_batches(data):
            out.extend((r.offset, r.key, r.value) for r in batch.records)
            offset = batch.base_offset + batch.last_offset_delta + 1
    return out


def test_the_binding_compacts_kafka_batches_and_keeps_offsets(tmp_path: Path) -> None:
    with Partition(tmp_path / "p", segment_bytes_max=1024, fsync="never") as log_:
        for n in range(200):
            _append(log_, [(b"k%d" % (n % 5), b"v%d" % n), (None, b"u%d" % n)], 1_000 + n)
        before = log_.size_bytes
        outcome = log_.compact(log_.next_offset, now_ms=10_000, tombstone_retention_ms=60_000)
        assert outcome.segments_before == len(log_.segment_base_offsets()) - 1 > 5
        assert outcome.records_removed > 0
        assert outcome.tombstones_removed == 0
        assert log_.size_bytes < before
        records = _records(log_)
        offsets = [offset for offset, _, _ in records]
        assert offsets == sorted(set(offsets)), "offsets strictly increase"
        assert [v for _, k, v in records if k is None] == [b"u%d" % n for n in range(200)]
        latest = {k: v for _, k, v in records if k is not None}
        assert latest == {b"k%d" % m: b"v%d" % (195 + m) for m in range(5)}
        # Each record kept its offset: key k{m}'s value v{n} was at offset 2n.
        assert all(offset == 2 * int(v[1:]) for offset, k, v in records if k is not None)
        with pytest.raises(InvalidArgument, match="only grow"):
            log_.append_payload_at(3, b"x" * 70, 1, 0, 0)
    with pytest.raises(Closed):
        log_.compact(0, 0, 0)


# ----------------------------------------------------------------------
# The broker in-process
# ----------------------------------------------------------------------


def _config(path: Path, **changes: object) -> BrokerConfig:
    config = BrokerConfig(
        data_dir=path,
        port=0,
        group_initial_rebalance_delay_ms=0,
        offsets_segment_bytes=4096,
        compaction_check_interval_s=3600.0,  # the tests compact when they choose to
    )
    for name, value in changes.items():
        setattr(config, name, value)
    return config


async def _ready(broker: Broker) -> None:
    for _ in range(500):
        if broker._offsets_ready() is p.ErrorCode.NONE:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the coordinator never finished loading")


def test_many_commits_compact_and_read_back_the_same_after_restart(
    tmp_path: Path, run_async
) -> None:
    rounds, partitions = 60, 30
    want = {("g", "t", i): ((rounds - 1) * 100 + i, 0, f"m{i}") for i in range(partitions)}

    async def scenario() -> None:
        broker = Broker(_config(tmp_path))
        await broker.start(listen=False)
        await _ready(broker)
        await broker.create_topic("t", 1)
        for round_ in range(rounds):
            await broker._store_offsets(
                [(("g", "t", i), (round_ * 100 + i, 0, f"m{i}")) for i in range(partitions)]
            )
        state = broker._partition(OFFSETS_TOPIC, 0)
        assert state is not None
        before = state.log.size_bytes
        segments = len(state.log.segment_base_offsets())
        assert segments > 10
        assert await broker._compact_logs() == 1
        assert state.log.size_bytes < before / 5, (before, state.log.size_bytes)
        assert len(state.log.segment_base_offsets()) < segments
        assert broker._read_offsets(state) == want
        assert await broker._compact_logs() == 0, "nothing new to compact"
        await broker.stop()

        again = Broker(_config(tmp_path))
        await again.start(listen=False)
        await _ready(again)
        assert again._offsets == want
        for i in range(partitions):
            assert again.committed("g", "t", i) == (rounds - 1) * 100 + i
        await again.stop()

    run_async(scenario())


def test_a_tombstoned_groups_offsets_are_gone_after_retention(tmp_path: Path, run_async) -> None:
    def keys_in_log(broker: Broker, group: str) -> list[bytes | None]:
        state = broker._partition(OFFSETS_TOPIC, 0)
        assert state is not None
        prefix = f"{group}\0".encode()
        return [v for _, k, v in _records(state.log) if k is not None and k.startswith(prefix)]

    async def scenario() -> None:
        broker = Broker(_config(tmp_path, offsets_tombstone_retention_ms=500))
        await broker.start(listen=False)
        await _ready(broker)
        gone = [("gone", "t", i) for i in range(10)]
        kept = [("kept", "t", i) for i in range(10)]
        for round_ in range(5):
            await broker._store_offsets([(key, (round_, 0, None)) for key in gone + kept])
        await broker._store_offsets([(key, None) for key in gone])  # the group is deleted
        # More commits, so that the tombstones lie in closed segments.
        for round_ in range(5, 40):
            await broker._store_offsets([(key, (round_, 0, None)) for key in kept])
        assert await broker._compact_logs(force=True) == 1
        # Within their retention the tombstones stay, and the values they delete are gone.
        assert keys_in_log(broker, "gone") == [None] * 10
        deadline = time.monotonic() + 10
        while keys_in_log(broker, "gone"):
            assert time.monotonic() < deadline, "the tombstones outlived their retention"
            await asyncio.sleep(0.2)
            await broker._compact_logs(force=True)
        assert all(broker.committed("gone", "t", i) is None for i in range(10))
        assert all(broker.committed("kept", "t", i) == 39 for i in range(10))
        await broker.stop()

        again = Broker(_config(tmp_path))
        await again.start(listen=False)
        await _ready(again)
        assert {key for key in again._offsets if key[0] == "gone"} == set()
        assert {key: entry[0] for key, entry in again._offsets.items()} == dict.fromkeys(kept, 39)
        await again.stop()

    run_async(scenario())


# ----------------------------------------------------------------------
# `sdi serve mq` processes and confluent-kafka
# ----------------------------------------------------------------------


@pytest.fixture
def fast_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_COMPACTION.items():
        monkeypatch.setenv(name, value)


def _consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            **extra,
        }
    )


def _create_and_fill(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions)], operation_timeout=30)
    futures[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for partition in range(partitions):
        for n in range(per_partition):
            producer.produce(topic, value=b"%d-%d" % (partition, n), partition=partition)
    assert producer.flush(30) == 0


def _commit(consumer: Consumer, topic: str, offsets: dict[int, int], timeout: float = 60) -> None:
    """Commits synchronously, retrying while the coordinator is away (a restart, an election)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            consumer.commit(
                offsets=[CTopicPartition(topic, i, o) for i, o in offsets.items()],
                asynchronous=False,
            )
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """What ``group`` committed, as confluent-kafka's committed() reads it."""
    consumer = _consumer(bootstrap, group)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = consumer.committed(
                    [CTopicPartition(topic, i) for i in range(partitions)], timeout=10
                )
                return {tp.partition: tp.offset for tp in answer}
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def test_confluent_committed_and_a_resuming_consumer_see_the_same_after_compaction(
    tmp_path: Path, fast_compaction: None
) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic, group, partitions = f"t-{uuid.uuid4().hex[:6]}", "resumer", 3
        _create_and_fill(broker.bootstrap, topic, partitions, 50)
        committer = _consumer(broker.bootstrap, group)
        try:
            for round_ in range(300):
                _commit(committer, topic, {i: (round_ + i) % 40 for i in range(partitions)})
            final = {i: 40 + i for i in range(partitions)}
            _commit(committer, topic, final)
        finally:
            committer.close()
        written = 301 * 200  # about 200 bytes a commit of three partitions
        directory = _offsets_dir(tmp_path / "data")
        wait_until(
            lambda: _log_bytes(directory) < written / 5, 60, "the offsets log to be compacted"
        )
        assert _committed(broker.bootstrap, group, topic, partitions) == final
        # A consumer of the group resumes at the committed offsets.
        resumer = _consumer(broker.bootstrap, group)
        resumer.subscribe([topic])
        try:
            got: dict[int, int] = {}
            deadline = time.monotonic() + 30
            while len(got) < partitions:
                assert time.monotonic() < deadline, f"resumed only {got}"
                message = resumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                got.setdefault(message.partition(), message.offset())  # type: ignore[arg-type]
            assert got == final
        finally:
            resumer.close()
        # And after a restart, which replays only the compacted log.
        broker.kill()
        broker.restart()
        assert _committed(broker.bootstrap, group, topic, partitions) == final
    finally:
        broker.kill()


def test_kill_9_during_compaction_loses_no_committed_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDI_MQ_OFFSETS_SEGMENT_BYTES", "1024")
    monkeypatch.setenv("SDI_MQ_COMPACTION_CHECK_INTERVAL_S", "0.02")
    monkeypatch.setenv("SDI_MQ_COMPACTION_MIN_NEW_SEGMENTS", "1")
    broker = BrokerProcess(tmp_path / "data").start()
    topic, group, partitions = f"t-{uuid.uuid4().hex[:6]}", "survivor", 4
    rng = random.Random(11)
    try:
        _create_and_fill(broker.bootstrap, topic, partitions, 10)
        acknowledged: dict[int, int] = {}
        rounds = [0]  # commits acknowledged, over all the runs
        stop = threading.Event()
        errors: list[BaseException] = []

        def commit_forever() -> None:
            consumer = _consumer(broker.bootstrap, group)
            try:
                round_ = max(acknowledged.values(), default=0) // 10
                while not stop.is_set():
                    round_ += 1
                    offsets = {i: round_ * 10 + i for i in range(partitions)}
                    try:
                        consumer.commit(
                            offsets=[CTopicPartition(topic, i, o) for i, o in offsets.items()],
                            asynchronous=False,
                        )
                    except KafkaException:
                        time.sleep(0.05)  # the broker is away; the loop stops once it is killed
                        continue
                    acknowledged.update(offsets)
                    rounds[0] += 1
            except BaseException as error:  # reported by the test thread
                errors.append(error)
            finally:
                consumer.close()

        directory = _offsets_dir(tmp_path / "data")
        for _kill in range(3):
            thread = threading.Thread(target=commit_forever)
            thread.start()
            # Let the log grow and compactions run, then kill at a random moment.
            start = rounds[0]
            wait_until(
                lambda start=start: rounds[0] >= start + 150,  # type: ignore[misc]
                120,
                "commits to be acknowledged",
            )
            time.sleep(rng.uniform(0.5, 2.0))  # a random kill point, not a synchronisation
            broker.kill()
            stop.set()
            broker.restart()
            # The committer finishes the commit it had in flight (against the restarted
            # broker) and stops: then everything it was told is acknowledged must be there.
            thread.join(180)
            assert not thread.is_alive()
            assert not errors, errors
            committed = _committed(broker.bootstrap, group, topic, partitions)
            last = dict(acknowledged)
            # Every acknowledged commit survived (a commit that failed may also have landed).
            assert all(committed[i] >= last[i] for i in range(partitions)), (committed, last)
            assert all(committed[i] % 10 == i for i in range(partitions))
            stop.clear()
        # The restarted broker replays a compacted log: it stayed small through the kills
        # (each commit of four partitions takes over 200 bytes, uncompacted).
        assert rounds[0] * 200 > 80 * 1024
        assert _log_bytes(directory) < 40 * 1024
    finally:
        broker.kill()


# ----------------------------------------------------------------------
# Three brokers
# ----------------------------------------------------------------------


@pytest.fixture
def compacting_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[BrokerProcess]]:
    servers.require_binary("etcd")
    for name, value in FAST_COMPACTION.items():
        monkeypatch.setenv(name, value)
    taken: set[int] = set()
    ports = [servers.free_port_block(taken) for _ in range(3)]
    peers = ",".join(f"{node}@127.0.0.1:{port}" for node, port in enumerate(ports))
    brokers = [
        BrokerProcess(
            tmp_path / f"broker-{node}",
            port=port,
            args=["--broker-id", str(node), "--peers", peers],
        )
        for node, port in enumerate(ports)
    ]
    for broker in brokers:
        broker.launch()
    try:
        for broker in brokers:
            broker.wait_listening(120)
        yield brokers
    finally:
        for node, broker in enumerate(brokers):
            broker.kill()
            (tmp_path / f"broker-{node}.out").write_text("".join(broker.output))


def test_a_cluster_compacts_every_replica_and_a_lagging_follower_converges(
    tmp_path: Path, compacting_cluster: list[BrokerProcess]
) -> None:
    brokers = compacting_cluster
    bootstrap = ",".join(broker.bootstrap for broker in brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=10).brokers) == 3, 60, "three brokers")
    topic, group, partitions = "cluster-t", "cluster-group", 3
    _create_and_fill(bootstrap, topic, partitions, 60)
    committer = _consumer(bootstrap, group)
    try:
        _commit(committer, topic, dict.fromkeys(range(partitions), 1))

        def offsets_leader() -> int:
            metadata = admin.list_topics(OFFSETS_TOPIC, timeout=10)
            return metadata.topics[OFFSETS_TOPIC].partitions[0].leader

        wait_until(lambda: offsets_leader() >= 0, 60, "a leader of __consumer_offsets")
        leader = offsets_leader()
        lagging = next(node for node in range(3) if node != leader)
        # A follower goes away while the leader's log grows and is compacted.
        brokers[lagging].kill()
        for round_ in range(200):
            _commit(committer, topic, {i: (round_ + i) % 50 for i in range(partitions)})
        leader_dir = _offsets_dir(tmp_path / f"broker-{leader}")
        wait_until(lambda: _log_bytes(leader_dir) < 200 * 200 / 5, 60, "the leader to compact")
        brokers[lagging].restart(120)
        for round_ in range(200, 300):
            _commit(committer, topic, {i: (round_ + i) % 50 for i in range(partitions)})
        final = {i: 50 + i for i in range(partitions)}
        _commit(committer, topic, final)
    finally:
        committer.close()
    # Every replica, the one that caught up from a compacted leader included, compacts its own
    # copy; the lagging one has all the commits once its log end reaches the leader's.
    for node in range(3):
        directory = _offsets_dir(tmp_path / f"broker-{node}")
        wait_until(
            lambda directory=directory: _log_bytes(directory) < 300 * 200 / 5,  # type: ignore[misc]
            90,
            f"broker {node} to compact its replica",
        )
    assert _committed(bootstrap, group, topic, partitions) == final
    # Every replica's own (compacted) copy replays to the same commits, the lagging one's too.
    for broker in brokers:
        broker.kill()
    replayed = []
    for node in range(3):
        with Partition(_offsets_dir(tmp_path / f"broker-{node}")) as log_:
            latest: dict[bytes, bytes | None] = {}
            for _, key, value in _records(log_):
                assert key is not None
                latest[key] = value
        replayed.append(
            {
                int(key.split(b"\0")[2]): int.from_bytes(value[:8], "big")
                for key, value in latest.items()
                if key.startswith(f"{group}\0{topic}\0".encode()) and value
            }
        )
    assert replayed == [final] * 3
