"""The broker: topics of partitioned logs served over the Kafka protocol.

One :class:`Broker` owns a data directory::

    meta/cluster.json            the cluster id and this broker's node id
    meta/topics/<topic>.json     each topic: partition count, config, id
    meta/producer_ids.json       the next block of producer ids to hand out
    meta/producers/<t>-<p>.json  idempotent producers' state, as of an offset
    logs/<topic>-<partition>/    each partition's log (:mod:`sdi.mq.log`)
    logs/__consumer_offsets/     committed offsets, one record per commit

A topic exists once its ``meta/topics`` file does: creation makes the log
directories first and writes that file last; deletion removes it first.
Log directories without a topic file are left-overs of a crash and are
removed on start.

Kafka's record batches are stored as they came (each one an opaque batch of
the log, its base offset rewritten to the offset the log gave it), so a
fetch answers with the stored bytes. Appends run on a worker thread, one at
a time per partition, so an fsync never stalls the event loop.

Embed one in-process:

>>> import asyncio, tempfile
>>> from sdi.mq.broker import Broker, BrokerConfig
>>> async def demo(path):
...     async with Broker(BrokerConfig(data_dir=path, port=0)) as broker:
...         await broker.create_topic("greetings", partitions=2)
...         partition, offset = await broker.produce("greetings", b"hello", key=b"k")
...         records = await broker.fetch("greetings", partition, offset)
...         return [(r.key, r.value) for r in records]
>>> with tempfile.TemporaryDirectory() as path:
...     asyncio.run(demo(path))
[(b'k', b'hello')]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sdi.errors import Corrupt, InvalidArgument, ProtocolError, SdiError
from sdi.mq import protocol as p
from sdi.mq.group import GroupCoordinator
from sdi.mq.log import Partition
from sdi.mq.partitioner import partition_for_key
from sdi.mq.topics import (
    InvalidPartitionCount,
    InvalidTopicConfig,
    InvalidTopicName,
    TopicConfig,
    TopicMeta,
    check_topic_name,
    write_json_atomic,
)

__all__ = ["Broker", "BrokerConfig"]

log = logging.getLogger("sdi.mq")

#: Idempotent producers: how many recent batches per producer and partition
#: are remembered to recognise a retried one (Kafka remembers 5, the most a
#: producer may have in flight).
PRODUCER_BATCHES_KEPT = 5
#: Producer ids are handed out in blocks; a restart skips the rest of a block.
PRODUCER_ID_BLOCK = 1000
#: An offset commit's metadata string, at most (Kafka's offset.metadata.max.bytes).
OFFSET_METADATA_BYTES_MAX = 4096
OFFSETS_DIR = "__consumer_offsets"

_PRODUCER_FIELDS = struct.Struct(">qhi")  # producer id, epoch, base sequence at byte 43


@dataclass
class BrokerConfig:
    """How a broker runs; every field has a working default.

    ``port=0`` picks a free port (read it back from :attr:`Broker.port`).
    ``topic_defaults`` applies to topics created without a setting of their
    own, auto-created ones included; ``num_partitions`` is their partition
    count (Kafka's ``num.partitions``).
    """

    data_dir: Path | str
    host: str = "127.0.0.1"
    port: int = 9092
    node_id: int = 0
    advertised_host: str | None = None
    num_partitions: int = 1
    auto_create_topics: bool = True
    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    #: Committed offsets are synced before the commit is acknowledged.
    offsets_fsync: bool = True
    group_initial_rebalance_delay_ms: int = 300
    group_session_timeout_range_ms: tuple[int, int] = (1_000, 1_800_000)
    retention_check_interval_s: float = 300.0
    producer_snapshot_interval_s: float = 30.0


@dataclass(slots=True)
class _Producer:
    epoch: int
    #: (first sequence, last sequence, base offset) of the latest batches.
    batches: deque[tuple[int, int, int]] = field(
        default_factory=lambda: deque(maxlen=PRODUCER_BATCHES_KEPT)
    )


class _PartitionState:
    __slots__ = ("dirty_since", "index", "lock", "log", "producers", "topic", "waiters")

    def __init__(self, topic: str, index: int, log: Partition) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.lock = asyncio.Lock()
        self.producers: dict[int, _Producer] = {}
        self.waiters: set[asyncio.Future[None]] = set()
        #: When the oldest append not yet synced by the broker's timer was made (0: none).
        self.dirty_since = 0.0

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


@dataclass(slots=True)
class _Topic:
    meta: TopicMeta
    partitions: list[_PartitionState]


class _AppendRefusedError(Exception):
    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _sequence_after(last: int, count: int) -> int:
    """The sequence ``count`` after ``last``, wrapping at 2^31 as Kafka's do."""
    return (last + count) % (1 << 31)


class Broker:
    """A Kafka-protocol broker over a data directory; an async context manager.

    :meth:`start` opens every topic and listens; :meth:`stop` stops
    listening, lets requests in flight finish and flushes every log.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self._topics: dict[str, _Topic] = {}
        self._server: asyncio.Server | None = None
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sdi-mq-io")
        self._groups = GroupCoordinator(
            session_timeout_range_ms=config.group_session_timeout_range_ms,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        )
        self._offsets: dict[tuple[str, str, int], tuple[int, int, str | None]] = {}
        self._offsets_log: Partition | None = None
        self._offsets_lock = asyncio.Lock()
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._cluster_id = ""
        self._connections: set[asyncio.Task[None]] = set()
        self._housekeeping: list[asyncio.Task[None]] = []
        self._topic_lock = asyncio.Lock()
        self.port = config.port
        self._handlers: dict[int, Callable[[Any, p.RequestHeader], Awaitable[Any]]] = {
            p.PRODUCE: self._handle_produce,
            p.FETCH: self._handle_fetch,
            p.LIST_OFFSETS: self._handle_list_offsets,
            p.METADATA: self._handle_metadata,
            p.OFFSET_COMMIT: self._handle_offset_commit,
            p.OFFSET_FETCH: self._handle_offset_fetch,
            p.FIND_COORDINATOR: self._handle_find_coordinator,
            p.JOIN_GROUP: self._handle_join_group,
            p.HEARTBEAT: self._handle_heartbeat,
            p.LEAVE_GROUP: self._handle_leave_group,
            p.SYNC_GROUP: self._handle_sync_group,
            p.CREATE_TOPICS: self._handle_create_topics,
            p.DELETE_TOPICS: self._handle_delete_topics,
            p.INIT_PRODUCER_ID: self._handle_init_producer_id,
        }

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Opens the data directory (recovering every log) and, with ``listen``, the port."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._open)
        self._groups.start()
        self._housekeeping = [
            loop.create_task(self._every(self.config.retention_check_interval_s, self._retain)),
            loop.create_task(
                self._every(self.config.producer_snapshot_interval_s, self._snapshot_producers)
            ),
            loop.create_task(self._flush_dirty()),
        ]
        if listen:
            self._server = await asyncio.start_server(
                self._serve_connection, self.config.host, self.config.port, backlog=1024
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops listening, finishes requests in flight, flushes and closes every log."""
        if self._server is not None:
            self._server.close()
        await self._groups.stop()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for task in self._housekeeping:
            task.cancel()
        await asyncio.gather(*self._housekeeping, return_exceptions=True)
        self._housekeeping = []
        for topic in self._topics.values():
            for state in topic.partitions:
                async with state.lock:
                    pass
        await asyncio.get_running_loop().run_in_executor(self._io, self._close)
        self._io.shutdown(wait=True)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def advertised_host(self) -> str:
        return self.config.advertised_host or self.config.host

    def _meta(self, *parts: str) -> Path:
        return self.data_dir.joinpath("meta", *parts)

    def _open(self) -> None:
        for directory in (self._meta("topics"), self._meta("producers"), self.data_dir / "logs"):
            directory.mkdir(parents=True, exist_ok=True)
        cluster_file = self._meta("cluster.json")
        if cluster_file.exists():
            cluster = json.loads(cluster_file.read_text())
            if cluster.get("node_id") != self.config.node_id:
                raise InvalidArgument(
                    f"{self.data_dir} belongs to broker {cluster.get('node_id')}, not "
                    f"{self.config.node_id}; give each broker a data directory of its own"
                )
        else:
            cluster = {"cluster_id": uuid.uuid4().hex[:22], "node_id": self.config.node_id}
            write_json_atomic(cluster_file, cluster)
        self._cluster_id = cluster["cluster_id"]
        ids_file = self._meta("producer_ids.json")
        if ids_file.exists():
            self._next_producer_id = json.loads(ids_file.read_text())["next_block"]
        self._producer_id_limit = self._next_producer_id

        names = set()
        for path in sorted(self._meta("topics").glob("*.json")):
            meta = TopicMeta.from_json(json.loads(path.read_text()))
            names.add(meta.name)
            self._topics[meta.name] = self._open_topic(meta)
        for directory in (self.data_dir / "logs").iterdir():
            topic, _, index = directory.name.rpartition("-")
            if directory.name == OFFSETS_DIR:
                continue
            if topic not in names or not index.isdigit():
                log.warning("removing %s: it belongs to no topic (a crash mid-create?)", directory)
                shutil.rmtree(directory, ignore_errors=True)
        self._offsets_log = Partition(
            self.data_dir / "logs" / OFFSETS_DIR,
            fsync="every_batch" if self.config.offsets_fsync else "never",
        )
        self._load_offsets()

    def _open_topic(self, meta: TopicMeta) -> _Topic:
        states = []
        for index in range(meta.partitions):
            path = self.data_dir / "logs" / f"{meta.name}-{index}"
            log_ = Partition(
                path,
                segment_bytes_max=meta.config.segment_bytes,
                fsync=meta.config.fsync,
                fsync_interval_ms=max(1, meta.config.fsync_interval_ms),
                retention_ms=meta.config.retention_ms,
                retention_bytes=meta.config.retention_bytes,
            )
            state = _PartitionState(meta.name, index, log_)
            self._load_producers(state)
            states.append(state)
        return _Topic(meta, states)

    def _close(self) -> None:
        for topic in self._topics.values():
            for state in topic.partitions:
                if not state.log.closed:
                    self._write_producer_snapshot(state)
                    state.log.flush()
                    state.log.close()
        if self._offsets_log is not None and not self._offsets_log.closed:
            self._offsets_log.flush()
            self._offsets_log.close()

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except SdiError:
                log.exception("sdi mq housekeeping failed; will retry")

    async def _retain(self) -> None:
        now_ms = int(time.time() * 1000)
        for topic in list(self._topics.values()):
            for state in topic.partitions:
                async with state.lock:
                    if state.log.closed:
                        continue
                    await self._run(state.log.apply_retention, now_ms)

    async def _snapshot_producers(self) -> None:
        for topic in list(self._topics.values()):
            for state in topic.partitions:
                async with state.lock:
                    if not state.log.closed:
                        await self._run(self._write_producer_snapshot, state)

    async def _flush_dirty(self) -> None:
        """Syncs ``interval`` partitions that went quiet with appends not yet synced.

        A busy partition is synced by its appends once the interval has gone
        by; this bounds what a quiet one may lose on a power cut to one interval.
        """
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for topic in list(self._topics.values()):
                config = topic.meta.config
                if config.fsync != "interval":
                    continue
                for state in topic.partitions:
                    due = (
                        state.dirty_since
                        and now - state.dirty_since >= config.fsync_interval_ms / 1000
                    )
                    if due and not state.log.closed:
                        state.dirty_since = 0.0
                        async with state.lock:
                            await self._run(state.log.flush)

    def _run(self, work: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._io, work, *args)

    # ------------------------------------------------------------------
    # Idempotent producers
    # ------------------------------------------------------------------

    def _allocate_producer_id(self) -> int:
        if self._next_producer_id >= self._producer_id_limit:
            self._producer_id_limit = self._next_producer_id + PRODUCER_ID_BLOCK
            write_json_atomic(
                self._meta("producer_ids.json"), {"next_block": self._producer_id_limit}
            )
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    def _producer_snapshot_path(self, state: _PartitionState) -> Path:
        return self._meta("producers", f"{state.name}.json")

    def _write_producer_snapshot(self, state: _PartitionState) -> None:
        snapshot = {
            "offset": state.log.next_offset,
            "producers": {
                str(pid): [producer.epoch, list(producer.batches)]
                for pid, producer in state.producers.items()
            },
        }
        write_json_atomic(self._producer_snapshot_path(state), snapshot)

    def _load_producers(self, state: _PartitionState) -> None:
        """Rebuilds producer state: the last snapshot, then the batches appended after it."""
        start = state.log.segment_base_offsets()[-1]
        path = self._producer_snapshot_path(state)
        if path.exists():
            snapshot = json.loads(path.read_text())
            if state.log.log_start_offset <= snapshot["offset"] <= state.log.next_offset:
                start = snapshot["offset"]
                for pid, (epoch, batches) in snapshot["producers"].items():
                    producer = state.producers[int(pid)] = _Producer(epoch)
                    producer.batches.extend(tuple(batch) for batch in batches)
        start = max(start, state.log.log_start_offset)
        while start < state.log.next_offset:
            data = state.log.read_payloads(start, 1 << 20)
            try:
                infos = p.validate_record_batches(data)
            except ProtocolError as error:
                raise Corrupt(
                    f"partition {state.name}: a stored batch is not valid: {error}"
                ) from None
            for info in infos:
                base = int.from_bytes(data[info.position : info.position + 8], "big")
                if info.producer_id >= 0:
                    self._remember(state, info, base)
                start = base + info.last_offset_delta + 1

    def _remember(self, state: _PartitionState, info: p.BatchInfo, base_offset: int) -> None:
        producer = state.producers.get(info.producer_id)
        if producer is None or producer.epoch != info.producer_epoch:
            producer = state.producers[info.producer_id] = _Producer(info.producer_epoch)
        last = _sequence_after(info.base_sequence, info.last_offset_delta)
        producer.batches.append((info.base_sequence, last, base_offset))

    def _check_sequence(self, state: _PartitionState, info: p.BatchInfo) -> int | None:
        """Kafka's sequence rule; the base offset of a retried batch, or None for a new one."""
        producer = state.producers.get(info.producer_id)
        first = info.base_sequence
        if producer is None:
            if first != 0:
                raise _AppendRefusedError(
                    p.ErrorCode.UNKNOWN_PRODUCER_ID,
                    f"producer {info.producer_id} is not known on {state.name} "
                    f"and its first sequence is {first}, not 0",
                )
            return None
        if info.producer_epoch < producer.epoch:
            raise _AppendRefusedError(
                p.ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer epoch {info.producer_epoch} is older than {producer.epoch}",
            )
        if info.producer_epoch > producer.epoch:
            if first != 0:
                raise _AppendRefusedError(
                    p.ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"a new producer epoch must start at sequence 0, not {first}",
                )
            return None
        last = _sequence_after(first, info.last_offset_delta)
        for seen_first, seen_last, base_offset in producer.batches:
            if (seen_first, seen_last) == (first, last):
                return base_offset
        expected = _sequence_after(producer.batches[-1][1], 1) if producer.batches else 0
        if first != expected:
            raise _AppendRefusedError(
                p.ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"sequence {first} on {state.name}; expected {expected}",
            )
        return None

    # ------------------------------------------------------------------
    # Appends and reads
    # ------------------------------------------------------------------

    async def _append_batch(self, state: _PartitionState, records: bytes | None) -> int:
        """Validates and appends one Kafka record batch; its base offset."""
        max_bytes = self._topics[state.topic].meta.config.max_message_bytes
        if not records:
            raise _AppendRefusedError(p.ErrorCode.INVALID_RECORD, "the produce carried no records")
        if len(records) > max_bytes:
            raise _AppendRefusedError(
                p.ErrorCode.MESSAGE_TOO_LARGE,
                f"the batch is {len(records)} bytes; this topic takes at most {max_bytes} "
                "(max.message.bytes)",
            )
        try:
            infos = p.validate_record_batches(records)
        except ProtocolError as error:
            code = (
                p.ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
                if "compression" in str(error)
                else p.ErrorCode.CORRUPT_MESSAGE
            )
            raise _AppendRefusedError(code, str(error)) from None
        if len(infos) != 1:
            raise _AppendRefusedError(
                p.ErrorCode.INVALID_RECORD,
                f"a produce must carry exactly one record batch per partition, not {len(infos)}",
            )
        [info] = infos
        if info.attributes & 0x30:
            raise _AppendRefusedError(
                p.ErrorCode.INVALID_RECORD, "transactional and control batches are not supported"
            )
        if info.max_timestamp < info.first_timestamp:
            raise _AppendRefusedError(
                p.ErrorCode.INVALID_RECORD,
                f"max timestamp {info.max_timestamp} is before first {info.first_timestamp}",
            )
        async with state.lock:
            if state.log.closed:
                raise _AppendRefusedError(
                    p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{state.name} was deleted"
                )
            if info.producer_id >= 0:
                retried = self._check_sequence(state, info)
                if retried is not None:
                    return retried
            base = state.log.next_offset
            stored = p.rewrite_base_offset(records, base)
            arguments = (
                stored,
                info.last_offset_delta + 1,
                info.first_timestamp,
                info.max_timestamp,
            )
            try:
                if self._topics[state.topic].meta.config.fsync == "every_batch":
                    # An fsync per batch runs on a worker, so the loop serves others meanwhile.
                    await self._run(state.log.append_payload, *arguments)
                else:
                    state.log.append_payload(*arguments)
            except SdiError as error:
                log.error("append to %s failed: %s", state.name, error)
                raise _AppendRefusedError(p.ErrorCode.KAFKA_STORAGE_ERROR, str(error)) from None
            if info.producer_id >= 0:
                self._remember(state, info, base)
            if not state.dirty_since:
                state.dirty_since = time.monotonic()
        state.wake()
        return base

    def _partition(self, topic: str, index: int) -> _PartitionState | None:
        found = self._topics.get(topic)
        if found is None or not 0 <= index < len(found.partitions):
            return None
        return found.partitions[index]

    # ------------------------------------------------------------------
    # Topics
    # ------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """Every topic and its partition count."""
        return {name: topic.meta.partitions for name, topic in self._topics.items()}

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        configs: dict[str, str | None] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        """Creates a topic; :class:`InvalidArgument` for a bad name, count or config.

        Raises :class:`FileExistsError` if the topic exists.
        """
        check_topic_name(name)
        count = self.config.num_partitions if partitions in (None, -1) else partitions
        assert count is not None
        if not 1 <= count <= 10_000:
            raise InvalidPartitionCount(f"a topic has 1 to 10000 partitions, not {count}")
        config = self.config.topic_defaults.with_kafka(configs or {})
        async with self._topic_lock:
            if name in self._topics:
                raise FileExistsError(f"topic {name!r} already exists")
            meta = TopicMeta(name, count, config, uuid.uuid4().hex)
            if validate_only:
                return meta

            def create() -> _Topic:
                topic = self._open_topic(meta)
                write_json_atomic(self._meta("topics", f"{name}.json"), meta.to_json())
                return topic

            self._topics[name] = await self._run(create)
            log.info("created topic %s with %d partitions", name, count)
            return meta

    async def delete_topic(self, name: str) -> None:
        """Deletes a topic, its logs and its committed offsets; KeyError if unknown."""
        async with self._topic_lock:
            topic = self._topics.pop(name)
            self._meta("topics", f"{name}.json").unlink()
            for state in topic.partitions:
                async with state.lock:
                    await self._run(state.log.close)
                state.wake()

            def remove() -> None:
                for state in topic.partitions:
                    shutil.rmtree(self.data_dir / "logs" / state.name, ignore_errors=True)
                    self._producer_snapshot_path(state).unlink(missing_ok=True)

            await self._run(remove)
            gone = [key for key in self._offsets if key[1] == name]
            if gone:
                await self._store_offsets([(key, None) for key in gone])
            log.info("deleted topic %s", name)

    async def _auto_create(self, name: str) -> bool:
        if not self.config.auto_create_topics:
            return False
        try:
            await self.create_topic(name)
        except FileExistsError:
            pass
        except InvalidArgument:
            return False
        return True

    # ------------------------------------------------------------------
    # Committed offsets
    # ------------------------------------------------------------------

    @staticmethod
    def _offset_key(group: str, topic: str, partition: int) -> bytes:
        return f"{group}\0{topic}\0{partition}".encode()

    def _load_offsets(self) -> None:
        assert self._offsets_log is not None
        offset = self._offsets_log.log_start_offset
        while offset < self._offsets_log.next_offset:
            records = self._offsets_log.read_records(offset, 1 << 20)
            for record in records:
                group, topic, partition = record.key.decode().split("\0")
                key = (group, topic, int(partition))
                if not record.value:
                    self._offsets.pop(key, None)
                    continue
                committed, epoch, has_metadata = struct.unpack_from(">qi?", record.value)
                metadata = record.value[13:].decode() if has_metadata else None
                self._offsets[key] = (committed, epoch, metadata)
            offset = records[-1].offset + 1

    async def _store_offsets(
        self, entries: Sequence[tuple[tuple[str, str, int], tuple[int, int, str | None] | None]]
    ) -> None:
        keys = [self._offset_key(*key) for key, _ in entries]
        values = []
        for _, entry in entries:
            if entry is None:
                values.append(b"")
                continue
            committed, epoch, metadata = entry
            encoded = b"" if metadata is None else metadata.encode()
            values.append(struct.pack(">qi?", committed, epoch, metadata is not None) + encoded)
        assert self._offsets_log is not None
        async with self._offsets_lock:
            await self._run(self._offsets_log.append_records, keys, values, int(time.time() * 1000))
        for key, entry in entries:
            if entry is None:
                self._offsets.pop(key, None)
            else:
                self._offsets[key] = entry

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset ``group`` committed for a partition, if any."""
        entry = self._offsets.get((group, topic, partition))
        return None if entry is None else entry[0]

    # ------------------------------------------------------------------
    # In-process produce and fetch
    # ------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Appends one record; returns ``(partition, offset)``.

        Without ``partition``, a keyed record goes where Kafka's default
        partitioner would put it and an unkeyed one to partition 0.
        """
        [placed] = await self.produce_batch(
            topic,
            [p.Record(key, value, list(headers), timestamp=timestamp_ms or _now_ms())],
            partition=partition,
        )
        return placed

    async def produce_batch(
        self, topic: str, records: Sequence[p.Record], *, partition: int | None = None
    ) -> list[tuple[int, int]]:
        """Appends records (one batch per partition); ``(partition, offset)`` of each."""
        found = self._topics.get(topic)
        if found is None:
            if not await self._auto_create(topic):
                raise InvalidArgument(f"topic {topic!r} does not exist; create it first")
            found = self._topics[topic]
        count = found.meta.partitions
        if partition is not None and not 0 <= partition < count:
            raise InvalidArgument(f"topic {topic!r} has partitions 0 to {count - 1}")
        placed: dict[int, list[int]] = {}
        for at, record in enumerate(records):
            target = partition
            if target is None:
                target = 0 if record.key is None else partition_for_key(record.key, count)
            placed.setdefault(target, []).append(at)
        result: list[tuple[int, int]] = [(0, 0)] * len(records)
        for target, indexes in placed.items():
            batch = p.encode_record_batch(
                [
                    p.Record(r.key, r.value, r.headers, offset=delta, timestamp=r.timestamp)
                    for delta, r in enumerate(records[at] for at in indexes)
                ]
            )
            try:
                base = await self._append_batch(found.partitions[target], batch)
            except _AppendRefusedError as refused:
                raise InvalidArgument(f"{refused.code.name}: {refused}") from None
            for delta, at in enumerate(indexes):
                result[at] = (target, base + delta)
        return result

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1 << 20,
        max_wait_ms: int = 0,
    ) -> list[p.Record]:
        """Records from ``offset`` on (waiting up to ``max_wait_ms`` for the first)."""
        state = self._partition(topic, partition)
        if state is None:
            raise InvalidArgument(f"no partition {partition} of topic {topic!r}")
        deadline = time.monotonic() + max_wait_ms / 1000
        while True:
            with self._listening([state]) as arrived:
                async with state.lock:
                    data = state.log.read_payloads(offset, max_bytes)
                if data or time.monotonic() >= deadline:
                    break
                await self._until(arrived, deadline)
        if not data:
            return []
        return [
            record
            for batch in p.decode_record_batches(data)
            for record in batch.records
            if record.offset >= offset
        ]

    @contextlib.contextmanager
    def _listening(self, states: Sequence[_PartitionState]) -> Iterator[asyncio.Future[None]]:
        """A future that the next append to any of ``states`` completes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for state in states:
            state.waiters.add(waiter)
        try:
            yield waiter
        finally:
            for state in states:
                state.waiters.discard(waiter)

    @staticmethod
    async def _until(waiter: asyncio.Future[None], deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------
    # The network side
    # ------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        frames = p.FrameParser()
        try:
            while data := await reader.read(1 << 18):
                for frame in frames.feed(data):
                    response = await self.handle_frame(frame)
                    if response is not None:
                        writer.write(response)
                await writer.drain()
        except ProtocolError as error:
            # Kafka closes a connection whose request it cannot parse.
            log.info("closing the connection from %s: %s", peer, error)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            # A bug of ours: say so, drop this connection, keep serving the others.
            log.exception("closing the connection from %s after an unexpected error", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle_frame(self, frame: bytes) -> bytes | None:
        """One request frame (without its size prefix) in, its response frame out.

        ``None`` when the request takes no response (a produce with acks=0).
        Raises :class:`ProtocolError` when the request cannot be parsed; the
        connection is then closed, as Kafka closes it.
        """
        header = p.parse_request_header(frame)
        if header.api_key == p.API_VERSIONS:
            return p.api_versions_response_frame(header)
        request = p.decode_request(header)
        response = await self._handlers[header.api_key](request, header)
        if response is None:
            return None
        body = p.encode_response_body(response, header.api_version)
        return p.encode_response(header.correlation_id, body, 0)

    # ------------------------------------------------------------------
    # Request handlers
    # ------------------------------------------------------------------

    async def _handle_produce(
        self, request: p.ProduceRequest, header: p.RequestHeader
    ) -> p.ProduceResponse | None:
        topics = []
        for topic in request.topics:
            partitions = []
            for part in topic.partitions:
                answer = p.ProducePartitionResponse(part.index)
                state = self._partition(topic.name, part.index)
                if request.acks not in (0, 1, -1):
                    answer.error_code = p.ErrorCode.INVALID_REQUIRED_ACKS
                elif request.transactional_id is not None:
                    answer.error_code = p.ErrorCode.INVALID_REQUEST
                    answer.error_message = "transactions are not supported by sdi"
                elif state is None:
                    answer.error_code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    try:
                        answer.base_offset = await self._append_batch(state, part.records)
                        answer.log_start_offset = state.log.log_start_offset
                    except _AppendRefusedError as refused:
                        answer.error_code = refused.code
                        answer.error_message = str(refused)
                partitions.append(answer)
            topics.append(p.ProduceTopicResponse(topic.name, partitions))
        if request.acks == 0:
            return None
        return p.ProduceResponse(topics)

    async def _handle_fetch(
        self, request: p.FetchRequest, header: p.RequestHeader
    ) -> p.FetchResponse:
        if request.session_epoch > 0 or request.session_id != 0:
            # Every fetch here is a full one (no sessions are handed out).
            return p.FetchResponse([], error_code=p.ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
        deadline = time.monotonic() + max(0, request.max_wait_ms) / 1000
        asked = [
            state
            for topic in request.topics
            for part in topic.partitions
            if (state := self._partition(topic.name, part.partition)) is not None
        ]
        while True:
            # Listen before reading, so an append between the two is not missed.
            with self._listening(asked) as arrived:
                response, size, waiting = await self._fetch_once(request)
                if size >= max(1, request.min_bytes) or time.monotonic() >= deadline:
                    return response
                if not waiting:
                    return response
                await self._until(arrived, deadline)

    async def _fetch_once(
        self, request: p.FetchRequest
    ) -> tuple[p.FetchResponse, int, list[_PartitionState]]:
        budget = request.max_bytes if request.max_bytes > 0 else 1 << 30
        size = 0
        waiting: list[_PartitionState] = []
        errors = False
        topics = []
        for topic in request.topics:
            partitions = []
            for part in topic.partitions:
                answer = p.FetchPartitionResponse(part.partition)
                state = self._partition(topic.name, part.partition)
                if state is None or state.log.closed:
                    answer.error_code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    errors = True
                else:
                    async with state.lock:
                        log_ = state.log
                        answer.high_watermark = answer.last_stable_offset = log_.next_offset
                        answer.log_start_offset = log_.log_start_offset
                        if not log_.log_start_offset <= part.fetch_offset <= log_.next_offset:
                            answer.error_code = p.ErrorCode.OFFSET_OUT_OF_RANGE
                            errors = True
                        elif budget > 0 or size == 0:
                            limit = min(part.partition_max_bytes, max(budget, 1))
                            data = log_.read_payloads(part.fetch_offset, limit)
                            answer.records = data
                            size += len(data)
                            budget -= len(data)
                            if not data:
                                waiting.append(state)
                    answer.aborted_transactions = []
                partitions.append(answer)
            topics.append(p.FetchTopicResponse(topic.name, partitions))
        return p.FetchResponse(topics), size, [] if errors else waiting

    async def _handle_list_offsets(
        self, request: p.ListOffsetsRequest, header: p.RequestHeader
    ) -> p.ListOffsetsResponse:
        topics = []
        for topic in request.topics:
            partitions = []
            for part in topic.partitions:
                answer = p.ListOffsetsPartitionResponse(part.partition_index)
                state = self._partition(topic.name, part.partition_index)
                if state is None or state.log.closed:
                    answer.error_code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif part.timestamp == -1:  # latest
                    answer.offset = state.log.next_offset
                elif part.timestamp == -2:  # earliest
                    answer.offset = state.log.log_start_offset
                elif part.timestamp < 0:
                    answer.error_code = p.ErrorCode.INVALID_REQUEST
                else:
                    async with state.lock:
                        found = self._offset_for_time(state, part.timestamp)
                    if found is not None:
                        answer.offset, answer.timestamp = found
                partitions.append(answer)
            topics.append(p.ListOffsetsTopicResponse(topic.name, partitions))
        return p.ListOffsetsResponse(topics)

    @staticmethod
    def _offset_for_time(state: _PartitionState, timestamp: int) -> tuple[int, int] | None:
        """The first record at or after ``timestamp``: ``(offset, its timestamp)``."""
        offset = state.log.offset_for_time(timestamp)
        while offset is not None and offset < state.log.next_offset:
            data = state.log.read_payloads(offset, 1 << 16)
            for batch in p.decode_record_batches(data):
                for record in batch.records:
                    if record.timestamp >= timestamp:
                        return record.offset, record.timestamp
                offset = batch.base_offset + batch.last_offset_delta + 1
        return None

    async def _handle_metadata(
        self, request: p.MetadataRequest, header: p.RequestHeader
    ) -> p.MetadataResponse:
        names: Iterable[str]
        if request.topics is None or (header.api_version == 0 and not request.topics):
            names = sorted(self._topics)
        else:
            names = request.topics
        topics = []
        for name in names:
            if name not in self._topics and request.allow_auto_topic_creation:
                await self._auto_create(name)
            found = self._topics.get(name)
            if found is None:
                code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                try:
                    check_topic_name(name)
                except InvalidArgument:
                    code = p.ErrorCode.INVALID_TOPIC_EXCEPTION
                topics.append(p.MetadataTopic(name, [], error_code=code))
                continue
            node = self.config.node_id
            partitions = [
                p.MetadataPartition(index, node, [node], [node], leader_epoch=0)
                for index in range(found.meta.partitions)
            ]
            topics.append(p.MetadataTopic(name, partitions))
        broker = p.MetadataBroker(self.config.node_id, self.advertised_host, self.port)
        return p.MetadataResponse(
            [broker], topics, cluster_id=self._cluster_id, controller_id=self.config.node_id
        )

    async def _handle_find_coordinator(
        self, request: p.FindCoordinatorRequest, header: p.RequestHeader
    ) -> p.FindCoordinatorResponse:
        if request.key_type != 0:
            return p.FindCoordinatorResponse(
                p.ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1,
                error_message="transactions are not supported by sdi",
            )  # fmt: skip
        return p.FindCoordinatorResponse(
            p.ErrorCode.NONE, self.config.node_id, self.advertised_host, self.port
        )

    async def _handle_join_group(
        self, request: p.JoinGroupRequest, header: p.RequestHeader
    ) -> p.JoinGroupResponse:
        return await self._groups.join(request, header.client_id or "", header.api_version)

    async def _handle_sync_group(
        self, request: p.SyncGroupRequest, header: p.RequestHeader
    ) -> p.SyncGroupResponse:
        return await self._groups.sync(request)

    async def _handle_heartbeat(
        self, request: p.HeartbeatRequest, header: p.RequestHeader
    ) -> p.HeartbeatResponse:
        return self._groups.heartbeat(request.group_id, request.generation_id, request.member_id)

    async def _handle_leave_group(
        self, request: p.LeaveGroupRequest, header: p.RequestHeader
    ) -> p.LeaveGroupResponse:
        return self._groups.leave(request, header.api_version)

    async def _handle_offset_commit(
        self, request: p.OffsetCommitRequest, header: p.RequestHeader
    ) -> p.OffsetCommitResponse:
        allowed = self._groups.check_commit(
            request.group_id, request.generation_id, request.member_id
        )
        entries: list[tuple[tuple[str, str, int], tuple[int, int, str | None] | None]] = []
        answers: list[tuple[str, list[tuple[int, int]]]] = []
        for topic in request.topics:
            codes = []
            for part in topic.partitions:
                code = allowed
                if not request.group_id:
                    code = p.ErrorCode.INVALID_GROUP_ID
                elif code is p.ErrorCode.NONE:
                    metadata = part.committed_metadata
                    if self._partition(topic.name, part.partition_index) is None:
                        code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    elif metadata is not None and len(metadata) > OFFSET_METADATA_BYTES_MAX:
                        code = p.ErrorCode.OFFSET_METADATA_TOO_LARGE
                    else:
                        key = (request.group_id, topic.name, part.partition_index)
                        value = (part.committed_offset, part.committed_leader_epoch, metadata)
                        entries.append((key, value))
                codes.append((part.partition_index, int(code)))
            answers.append((topic.name, codes))
        if entries:
            try:
                await self._store_offsets(entries)
            except SdiError as error:
                log.error("storing committed offsets failed: %s", error)
                answers = [
                    (name, [(index, int(p.ErrorCode.UNKNOWN_SERVER_ERROR)) for index, _ in codes])
                    for name, codes in answers
                ]
        return p.OffsetCommitResponse(answers)

    async def _handle_offset_fetch(
        self, request: p.OffsetFetchRequest, header: p.RequestHeader
    ) -> p.OffsetFetchResponse:
        wanted: list[tuple[str, list[int]]]
        if request.topics is None:
            by_topic: dict[str, list[int]] = {}
            for group, topic, partition in sorted(self._offsets):
                if group == request.group_id:
                    by_topic.setdefault(topic, []).append(partition)
            wanted = list(by_topic.items())
        else:
            wanted = request.topics
        topics = []
        for name, partitions in wanted:
            answers = []
            for index in partitions:
                entry = self._offsets.get((request.group_id, name, index))
                if entry is None:
                    answers.append(p.OffsetFetchPartitionResponse(index, -1, -1, "", 0))
                else:
                    committed, epoch, metadata = entry
                    answers.append(
                        p.OffsetFetchPartitionResponse(index, committed, epoch, metadata)
                    )
            topics.append(p.OffsetFetchTopicResponse(name, answers))
        return p.OffsetFetchResponse(topics)

    async def _handle_create_topics(
        self, request: p.CreateTopicsRequest, header: p.RequestHeader
    ) -> p.CreateTopicsResponse:
        results = []
        for topic in request.topics:
            result = p.CreatableTopicResult(topic.name)
            try:
                if topic.replication_factor not in (-1, 1):
                    result.error_code = p.ErrorCode.INVALID_REPLICATION_FACTOR
                    result.error_message = (
                        f"replication factor {topic.replication_factor} is larger than the "
                        "1 broker in this cluster"
                    )
                elif topic.assignments:
                    result.error_code = p.ErrorCode.INVALID_REQUEST
                    result.error_message = "manual replica assignment is not supported"
                else:
                    await self.create_topic(
                        topic.name,
                        topic.num_partitions,
                        dict(topic.configs),
                        validate_only=request.validate_only,
                    )
            except FileExistsError as error:
                result.error_code = p.ErrorCode.TOPIC_ALREADY_EXISTS
                result.error_message = str(error)
            except InvalidArgument as error:
                if isinstance(error, InvalidTopicName):
                    result.error_code = p.ErrorCode.INVALID_TOPIC_EXCEPTION
                elif isinstance(error, InvalidPartitionCount):
                    result.error_code = p.ErrorCode.INVALID_PARTITIONS
                elif isinstance(error, InvalidTopicConfig):
                    result.error_code = p.ErrorCode.INVALID_CONFIG
                else:
                    result.error_code = p.ErrorCode.INVALID_REQUEST
                result.error_message = str(error)
            results.append(result)
        return p.CreateTopicsResponse(results)

    async def _handle_delete_topics(
        self, request: p.DeleteTopicsRequest, header: p.RequestHeader
    ) -> p.DeleteTopicsResponse:
        responses = []
        for name in request.topic_names:
            try:
                await self.delete_topic(name)
                responses.append((name, int(p.ErrorCode.NONE)))
            except KeyError:
                responses.append((name, int(p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
        return p.DeleteTopicsResponse(responses)

    async def _handle_init_producer_id(
        self, request: p.InitProducerIdRequest, header: p.RequestHeader
    ) -> p.InitProducerIdResponse:
        if request.transactional_id is not None:
            # TRANSACTIONAL_ID_AUTHORIZATION_FAILED is what a client without
            # transaction rights sees; sdi has no transactions at all.
            return p.InitProducerIdResponse(p.ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        producer_id = self._allocate_producer_id()
        return p.InitProducerIdResponse(p.ErrorCode.NONE, producer_id, 0)


def _now_ms() -> int:
    return int(time.time() * 1000)
