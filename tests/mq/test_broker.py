"""The broker in-process: topics, appends, fetches, idempotent producers, restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from sdi.errors import InvalidArgument
from sdi.mq import protocol as p
from sdi.mq.broker import Broker, BrokerConfig
from sdi.mq.partitioner import partition_for_key


def _config(path: Path, **changes: object) -> BrokerConfig:
    config = BrokerConfig(data_dir=path, port=0, group_initial_rebalance_delay_ms=0)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


async def _request(broker: Broker, api_key: int, version: int, body: bytes) -> p.Reader:
    """Sends one request frame through the broker's handler; the response body's reader."""
    writer = p.Writer()
    writer.int16(api_key)
    writer.int16(version)
    writer.int32(7)
    writer.nullable_string("test")
    frame = writer.getvalue() + body
    response = await broker.handle_frame(frame)
    assert response is not None
    assert int.from_bytes(response[4:8], "big") == 7
    return p.Reader(response[8:])


def _produce_body(topic: str, partition: int, records: bytes, acks: int = -1) -> bytes:
    writer = p.Writer()
    writer.nullable_string(None)
    writer.int16(acks)
    writer.int32(5000)
    writer.array_length(1)
    writer.string(topic)
    writer.array_length(1)
    writer.int32(partition)
    writer.nullable_bytes(records)
    return writer.getvalue()


def _produce_answer(reader: p.Reader) -> tuple[int, int]:
    """(error code, base offset) of a one-partition Produce v3 response."""
    assert reader.array_length() == 1
    reader.string()
    assert reader.array_length() == 1
    reader.int32()
    return reader.int16(), reader.int64()


def test_produce_and_fetch_keep_keys_values_headers_and_offsets(tmp_path: Path, run_async) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("orders", partitions=4)
            records = [
                p.Record(f"user-{n}".encode(), f"order {n}".encode(), [("h", b"v")], timestamp=n)
                for n in range(40)
            ]
            placed = await broker.produce_batch("orders", records)
            for record, (partition, _) in zip(records, placed, strict=True):
                assert record.key is not None
                assert partition == partition_for_key(record.key, 4)
            for partition in range(4):
                mine = [r for r, (at, _) in zip(records, placed, strict=True) if at == partition]
                fetched = await broker.fetch("orders", partition, 0)
                assert [(r.key, r.value, r.headers) for r in fetched] == [
                    (r.key, r.value, r.headers) for r in mine
                ]
                assert [r.offset for r in fetched] == list(range(len(mine)))
            # A fetch from the middle of a batch starts at that record.
            partition, offset = placed[-1]
            [last] = await broker.fetch("orders", partition, offset)
            assert last.value == b"order 39"

    run_async(scenario())


def test_fetch_waits_for_data_until_max_wait(tmp_path: Path, run_async) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t")
            started = time.monotonic()
            assert await broker.fetch("t", 0, 0, max_wait_ms=200) == []
            assert time.monotonic() - started >= 0.15
            waiting = asyncio.ensure_future(broker.fetch("t", 0, 0, max_wait_ms=10_000))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            started = time.monotonic()
            await broker.produce("t", b"wake up")
            [record] = await asyncio.wait_for(waiting, 5)
            assert record.value == b"wake up"
            assert time.monotonic() - started < 5

    run_async(scenario())


def test_topics_survive_a_restart_and_deleted_ones_stay_gone(tmp_path: Path, run_async) -> None:
    async def first() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("kept", partitions=2, configs={"retention.ms": "60000"})
            await broker.create_topic("dropped")
            await broker.produce("kept", b"a", partition=1)
            await broker.produce("dropped", b"b")
            await broker.delete_topic("dropped")
            with pytest.raises(FileExistsError):
                await broker.create_topic("kept")
            with pytest.raises(InvalidArgument, match="not valid"):
                await broker.create_topic("bad/name")
            with pytest.raises(InvalidArgument, match="not supported"):
                await broker.create_topic("x", configs={"cleanup.policy": "compact,delete"})

    async def second() -> None:
        async with Broker(_config(tmp_path)) as broker:
            assert broker.topics() == {"kept": 2}
            [record] = await broker.fetch("kept", 1, 0)
            assert record.value == b"a"
            meta = json.loads((tmp_path / "meta" / "topics" / "kept.json").read_text())
            assert meta["config"]["retention_ms"] == 60000
        assert not (tmp_path / "logs" / "dropped-0").exists()

    run_async(first())
    run_async(second())


def test_log_directories_without_a_topic_file_are_removed_on_start(
    tmp_path: Path, run_async
) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)):
            pass
        # A crash between making the log directory and writing the topic file.
        (tmp_path / "logs" / "orphan-0").mkdir()
        async with Broker(_config(tmp_path)) as broker:
            assert broker.topics() == {}
        assert not (tmp_path / "logs" / "orphan-0").exists()

    run_async(scenario())


def test_a_data_directory_belongs_to_one_broker_id(tmp_path: Path, run_async) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)):
            pass
        with pytest.raises(InvalidArgument, match="belongs to broker 0"):
            await Broker(_config(tmp_path, node_id=3)).start(listen=False)

    run_async(scenario())


def _idempotent_batch(producer_id: int, epoch: int, sequence: int, count: int) -> bytes:
    records = [p.Record(None, f"r{sequence + n}".encode(), offset=n) for n in range(count)]
    return p.encode_record_batch(
        records, producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence
    )


def test_idempotent_retries_are_dropped_even_after_a_restart(tmp_path: Path, run_async) -> None:
    async def init_producer(broker: Broker) -> int:
        writer = p.Writer()
        writer.nullable_string(None)
        writer.int32(60_000)
        reader = await _request(broker, p.INIT_PRODUCER_ID, 1, writer.getvalue())
        reader.int32()
        assert reader.int16() == 0
        return reader.int64()

    async def first() -> int:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t")
            producer_id = await init_producer(broker)
            batch = _idempotent_batch(producer_id, 0, 0, 3)
            for _ in range(2):
                reader = await _request(broker, p.PRODUCE, 3, _produce_body("t", 0, batch))
                assert _produce_answer(reader) == (0, 0)
            reader = await _request(
                broker, p.PRODUCE, 3, _produce_body("t", 0, _idempotent_batch(producer_id, 0, 3, 2))
            )
            assert _produce_answer(reader) == (0, 3)
            gap = _idempotent_batch(producer_id, 0, 9, 1)
            reader = await _request(broker, p.PRODUCE, 3, _produce_body("t", 0, gap))
            assert _produce_answer(reader)[0] == p.ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
            assert await init_producer(broker) != producer_id
            return producer_id

    async def second(producer_id: int) -> None:
        # Restarted: the retry of the second batch is still recognised.
        async with Broker(_config(tmp_path)) as broker:
            retry = _idempotent_batch(producer_id, 0, 3, 2)
            reader = await _request(broker, p.PRODUCE, 3, _produce_body("t", 0, retry))
            assert _produce_answer(reader) == (0, 3)
            values = [r.value for r in await broker.fetch("t", 0, 0)]
            assert values == [b"r0", b"r1", b"r2", b"r3", b"r4"]
            # Producer ids are never handed out twice, across restarts too.
            assert await init_producer(broker) > producer_id + 1

    producer_id = run_async(first())
    # Without a snapshot the state is rebuilt from the log itself.
    for snapshot in (tmp_path / "meta" / "producers").glob("*.json"):
        snapshot.unlink()
    run_async(second(producer_id))


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("too large", p.ErrorCode.MESSAGE_TOO_LARGE),
        ("bad crc", p.ErrorCode.CORRUPT_MESSAGE),
        ("two batches", p.ErrorCode.INVALID_RECORD),
        ("unknown topic", p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("bad acks", p.ErrorCode.INVALID_REQUIRED_ACKS),
        ("empty", p.ErrorCode.INVALID_RECORD),
    ],
)
def test_bad_produces_get_their_error_code_and_store_nothing(
    tmp_path: Path, run_async, case: str, code: int
) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t", configs={"max.message.bytes": "200"})
            batch = p.encode_record_batch([p.Record(None, b"x")])
            topic, acks = "t", -1
            if case == "too large":
                batch = p.encode_record_batch([p.Record(None, b"x" * 300)])
            elif case == "bad crc":
                batch = batch[:-1] + bytes([batch[-1] ^ 1])
            elif case == "two batches":
                batch = batch + batch
            elif case == "unknown topic":
                topic = "nope"
            elif case == "bad acks":
                acks = 5
            elif case == "empty":
                batch = b""
            reader = await _request(broker, p.PRODUCE, 3, _produce_body(topic, 0, batch, acks))
            assert _produce_answer(reader)[0] == code
            assert await broker.fetch("t", 0, 0) == []

    run_async(scenario())


def test_acks_zero_gets_no_response_but_is_stored(tmp_path: Path, run_async) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t")
            writer = p.Writer()
            writer.int16(p.PRODUCE)
            writer.int16(3)
            writer.int32(1)
            writer.nullable_string(None)
            batch = p.encode_record_batch([p.Record(None, b"fire and forget")])
            frame = writer.getvalue() + _produce_body("t", 0, batch, acks=0)
            assert await broker.handle_frame(frame) is None
            [record] = await broker.fetch("t", 0, 0)
            assert record.value == b"fire and forget"

    run_async(scenario())


def test_list_offsets_by_time_finds_the_first_record_at_or_after(tmp_path: Path, run_async) -> None:
    async def offset_for(broker: Broker, timestamp: int) -> tuple[int, int]:
        writer = p.Writer()
        writer.int32(-1)
        writer.array_length(1)
        writer.string("t")
        writer.array_length(1)
        writer.int32(0)
        writer.int64(timestamp)
        reader = await _request(broker, p.LIST_OFFSETS, 1, writer.getvalue())
        reader.array_length()
        reader.string()
        reader.array_length()
        reader.int32()
        assert reader.int16() == 0
        return reader.int64(), reader.int64()

    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t")
            for pair in ((10, 20), (30, 40)):
                await broker.produce_batch("t", [p.Record(None, b"v", timestamp=t) for t in pair])
            assert await offset_for(broker, 15) == (20, 1)
            assert await offset_for(broker, 31) == (40, 3)
            assert await offset_for(broker, 41) == (-1, -1)
            assert await offset_for(broker, -2) == (-1, 0)
            assert await offset_for(broker, -1) == (-1, 4)

    run_async(scenario())


def test_a_long_silent_idempotent_producer_is_forgotten(tmp_path: Path, run_async) -> None:
    async def scenario() -> None:
        async with Broker(_config(tmp_path)) as broker:
            await broker.create_topic("t")
            old = p.encode_record_batch(
                [p.Record(None, b"v", timestamp=1_000)], producer_id=7, producer_epoch=0,
                base_sequence=0,
            )  # fmt: skip
            now = int(time.time() * 1000)
            fresh = p.encode_record_batch(
                [p.Record(None, b"v", timestamp=now)], producer_id=8, producer_epoch=0,
                base_sequence=0,
            )  # fmt: skip
            for batch in (old, fresh):
                reader = await _request(broker, p.PRODUCE, 3, _produce_body("t", 0, batch))
                assert _produce_answer(reader)[0] == 0
            await broker._snapshot_producers()
            [state] = broker._topics["t"].partitions
            # The producer last heard from in 1970 is gone; the fresh one stays.
            assert set(state.producers) == {8}
            gone = p.encode_record_batch(
                [p.Record(None, b"w", timestamp=2_000)], producer_id=7, producer_epoch=0,
                base_sequence=1,
            )  # fmt: skip
            reader = await _request(broker, p.PRODUCE, 3, _produce_body("t", 0, gone))
            assert _produce_answer(reader)[0] == p.ErrorCode.UNKNOWN_PRODUCER_ID

    run_async(scenario())


def test_committed_offsets_load_off_the_event_loop_after_a_restart(
    tmp_path: Path, run_async
) -> None:
    """A restarted coordinator reads its commits on a worker thread: group requests answer
    COORDINATOR_LOAD_IN_PROGRESS (retriable) until they are in, then the commits are all there."""
    entries = [(("g", "t", n), (n * 10, 0, None if n % 2 else f"m{n}")) for n in range(3000)]

    async def scenario() -> None:
        broker = Broker(_config(tmp_path))
        await broker.start(listen=False)
        for _ in range(100):
            if broker._offsets_ready() is p.ErrorCode.NONE:
                break
            await asyncio.sleep(0.01)
        await broker.create_topic("t", 1)
        await broker._store_offsets(entries[:1500])
        await broker._store_offsets(entries[1500:])
        await broker._store_offsets([(("g", "t", 7), None)])  # a deletion
        await broker.stop()

        again = Broker(_config(tmp_path))
        await again.start(listen=False)
        seen = set()
        for _ in range(500):
            ready = again._offsets_ready()
            seen.add(ready)
            if ready is p.ErrorCode.NONE:
                break
            assert ready is p.ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            await asyncio.sleep(0.01)
        assert p.ErrorCode.NONE in seen
        assert again.committed("g", "t", 0) == 0
        assert again.committed("g", "t", 2999) == 29990
        assert again.committed("g", "t", 7) is None
        assert len(again._offsets) == 2999
        await again.stop()

    run_async(scenario())
