"""The broker: topics of partitioned logs served over the Kafka protocol.

One :class:`Broker` owns a data directory::

    meta/cluster.json            the cluster id and this broker's node id
    meta/topics/<topic>.json     each topic: partition count, config, id
    meta/producer_ids.json       the next block of producer ids to hand out
    meta/producers/<t>-<p>.json  idempotent producers' state, as of an offset
    meta/epochs/<t>-<p>.json     where each leader epoch begins in that log
    logs/<topic>-<partition>/    each partition's log (:mod:`sdi.mq.log`)
    logs/__consumer_offsets-0/   committed offsets: an internal topic, one record per commit,
                                 compacted (cleanup.policy=compact, see _compact_logs)

A topic exists once its ``meta/topics`` file does: creation makes the log
directories first and writes that file last; deletion removes it first.
Log directories without a topic file are left-overs of a crash and are
removed on start.

Kafka's record batches are stored as they came (each one an opaque batch of
the log, its base offset and leader epoch rewritten), so a fetch answers with
the stored bytes. Appends to a partition go one at a time; those that sync
every batch run on a worker thread so the fsync does not stall the event loop.

With ``peers`` the broker is one of a replicated cluster (see
:mod:`sdi.mq.cluster`): topics and leaders come from etcd, and the directory
holds only this broker's replicas, plus ``etcd/`` for its etcd member.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from sdi.errors import Corrupt, InvalidArgument, ProtocolError, SdiError
from sdi.mq import protocol as p
from sdi.mq.cluster import (
    ClusterMetadata,
    ClusterView,
    Controller,
    PartitionState,
    assign_replicas,
)
from sdi.mq.etcd import Etcd, EtcdError, EtcdMember
from sdi.mq.group import GroupCoordinator
from sdi.mq.log import Partition
from sdi.mq.partitioner import partition_for_key
from sdi.mq.replica import FetchedPartition, LeaderConnection
from sdi.mq.topics import (
    InvalidPartitionCount,
    InvalidReplicationFactor,
    InvalidTopicConfig,
    InvalidTopicName,
    TopicConfig,
    TopicMeta,
    check_topic_name,
    write_json_atomic,
)
from sdi.runtime.text import is_decimal

__all__ = ["Broker", "BrokerConfig"]

log = logging.getLogger("sdi.mq")

#: Idempotent producers: how many recent batches per producer and partition
#: are remembered to recognise a retried one (Kafka remembers 5, the most a
#: producer may have in flight).
PRODUCER_BATCHES_KEPT = 5
#: An idempotent producer silent this long is forgotten (Kafka's producer.id.expiration.ms).
PRODUCER_EXPIRATION_MS = 24 * 3600 * 1000
#: Producer ids are handed out in blocks; a restart skips the rest of a block.
PRODUCER_ID_BLOCK = 1000
#: An offset commit's metadata string, at most (Kafka's offset.metadata.max.bytes).
OFFSET_METADATA_BYTES_MAX = 4096
#: The internal topic that keeps committed offsets (one partition; its leader coordinates groups).
OFFSETS_TOPIC = "__consumer_offsets"

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
    #: Commits are synced before they are acknowledged (__consumer_offsets: flush.messages=1).
    offsets_fsync: bool = True
    group_initial_rebalance_delay_ms: int = 300
    group_session_timeout_range_ms: tuple[int, int] = (1_000, 1_800_000)
    retention_check_interval_s: float = 300.0
    producer_snapshot_interval_s: float = 30.0
    #: Every broker of a replicated cluster, this one included: node id ->
    #: (host, Kafka port). Each broker also uses its port + 1 and + 2 for its
    #: etcd member (clients, peers). Empty: a single broker, no etcd.
    peers: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: Replicas of an auto-created topic (Kafka's default.replication.factor); at
    #: most the number of live brokers.
    default_replication_factor: int = 3
    #: A follower that has not caught up for this long leaves the ISR.
    replica_lag_time_max_ms: int = 10_000
    #: How long a follower's fetch waits at the leader for new records.
    replica_fetch_wait_max_ms: int = 200
    #: segment.bytes of __consumer_offsets: small, so that compaction has closed
    #: segments to work on (Kafka's offsets.topic.segment.bytes, 100 MiB there).
    offsets_segment_bytes: int = 100 * 1024
    #: delete.retention.ms of __consumer_offsets: how long a deleted offset's
    #: tombstone stays before compaction drops it (Kafka's default, one day).
    offsets_tombstone_retention_ms: int = 86_400_000
    #: How often compacted topics are looked at (Kafka's log.cleaner.backoff.ms).
    compaction_check_interval_s: float = 5.0
    #: A compacted partition is compacted again once this many segments were
    #: closed since its last compaction (or since start)...
    compaction_min_new_segments: int = 2
    #: ... or once any was and this long went by since its last compaction.
    compaction_max_lag_s: float = 300.0


@dataclass(slots=True)
class _Producer:
    epoch: int
    #: (first sequence, last sequence, base offset) of the latest batches.
    batches: deque[tuple[int, int, int]] = field(
        default_factory=lambda: deque(maxlen=PRODUCER_BATCHES_KEPT)
    )
    #: The newest record timestamp this producer wrote here (ms).
    last_ms: int = 0


class _PartitionState:
    """One partition replica on this broker: its log and its part in replication.

    On a single broker it leads under epoch 0 with itself as the only
    in-sync replica, so the high watermark is the log end.
    """

    __slots__ = (
        "caught_up_at",
        "compacted_at",
        "compacted_closed",
        "dirty_since",
        "epochs",
        "hw",
        "hw_waiters",
        "index",
        "is_leader",
        "isr",
        "joining",
        "leader",
        "leader_epoch",
        "leo_at_last_fetch",
        "lock",
        "log",
        "mod_revision",
        "producers",
        "replica_leo",
        "replicas",
        "topic",
        "truncated_for",
        "waiters",
    )

    def __init__(self, topic: str, index: int, log: Partition, node_id: int) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.lock = asyncio.Lock()
        self.producers: dict[int, _Producer] = {}
        self.waiters: set[asyncio.Future[None]] = set()
        #: When the oldest append not yet synced by the broker's timer was made (0: none).
        self.dirty_since = 0.0
        self.leader = node_id
        self.leader_epoch = 0
        self.is_leader = True
        self.isr: tuple[int, ...] = (node_id,)
        self.replicas: tuple[int, ...] = (node_id,)
        #: The metadata revision this state was read at (cluster mode).
        self.mod_revision = 0
        #: Records below the high watermark are on every in-sync replica.
        self.hw = log.next_offset
        #: (leader epoch, first offset written under it), oldest first.
        self.epochs: list[tuple[int, int]] = []
        #: Followers' log ends as their fetches said, and when each last caught up.
        self.replica_leo: dict[int, int] = {}
        self.caught_up_at: dict[int, float] = {}
        self.leo_at_last_fetch: dict[int, int] = {}
        self.hw_waiters: set[asyncio.Future[None]] = set()
        #: The leader epoch a follower last truncated for (-1: must truncate first).
        self.truncated_for = -1
        #: Closed segments after the last compaction, and when it ran (monotonic;
        #: cleanup.policy=compact only). Compaction is due once segments pile up.
        self.compacted_closed = 0
        self.compacted_at = time.monotonic()
        #: Followers this leader has asked to add to the ISR: until the metadata
        #: shows the outcome they count for the high watermark too (KIP-497's
        #: "maximal ISR"), so the stored ISR never holds a replica that lacks a
        #: record below the high watermark.
        self.joining: set[int] = set()

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def wake_hw(self) -> None:
        for waiter in self.hw_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.hw_waiters.clear()

    def advance_hw(self) -> bool:
        """As leader: the high watermark is the smallest log end among the ISR."""
        ends = [self.log.next_offset]
        ends += [
            self.replica_leo.get(node, 0)
            for node in set(self.isr) | self.joining
            if node != self.leader
        ]
        new = min(ends)
        if new > self.hw:
            self.hw = new
            self.wake_hw()
            self.wake()
            return True
        return False

    def local_end(self, epoch: int) -> int:
        """Where ``epoch`` ends in this log: the start of the first later epoch, else the end."""
        for known, start in self.epochs:
            if known > epoch:
                return start
        return self.log.next_offset

    def epoch_end(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, the offset where it ends) in this log; (-1, -1) if none."""
        found = -1
        for at, (known, _start) in enumerate(self.epochs):
            if known > epoch:
                if found < 0:
                    return -1, -1
                return self.epochs[found][0], self.epochs[at][1]
            found = at
        if found < 0:
            return -1, -1
        return self.epochs[found][0], self.log.next_offset


@dataclass(slots=True)
class _Topic:
    meta: TopicMeta
    #: The partitions with a replica on this broker (all of them on a single broker).
    partitions: list[_PartitionState]

    def get(self, index: int) -> _PartitionState | None:
        for state in self.partitions:
            if state.index == index:
                return state
        return None


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
        #: Committed offsets, as the leader of __consumer_offsets-0 has them (see _read_offsets).
        self._offsets: dict[tuple[str, str, int], tuple[int, int, str | None]] = {}
        #: The leader epoch of __consumer_offsets-0 the offsets were loaded under (-1: not).
        self._offsets_epoch = -1
        #: The load of the offsets under way: (leader epoch, task).
        self._offsets_loading: tuple[int, asyncio.Task[None]] | None = None
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._cluster_id = ""
        self._connections: set[asyncio.Task[None]] = set()
        self._housekeeping: list[asyncio.Task[None]] = []
        self._topic_lock = asyncio.Lock()
        self.port = config.port
        # A replicated cluster (config.peers): etcd, the shared view, fetchers.
        self._etcd_member: EtcdMember | None = None
        self._etcd: Etcd | None = None
        self._metadata: ClusterMetadata | None = None
        self._controller: Controller | None = None
        self._view: ClusterView | None = None
        self._fetchers: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changing_isr: set[str] = set()
        self._cleaned_strays = False
        #: The etcd revision this broker's registration was written at.
        self._registered_revision = 0
        #: One reconciliation at a time (the loop's and one after a local change).
        self._reconciling = asyncio.Lock()
        if config.peers:
            own = config.peers.get(config.node_id)
            if own is None:
                raise InvalidArgument(
                    f"--peers must list this broker ({config.node_id}) too: "
                    f"it lists {sorted(config.peers)}"
                )
            if config.port not in (0, own[1]):
                raise InvalidArgument(
                    f"--peers gives broker {config.node_id} port {own[1]}, but it is told "
                    f"to listen on {config.port}"
                )
            self.port = own[1]
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
            p.OFFSET_FOR_LEADER_EPOCH: self._handle_offset_for_leader_epoch,
        }

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    @property
    def clustered(self) -> bool:
        """Whether this broker is one of a replicated cluster (``peers`` given)."""
        return bool(self.config.peers)

    async def start(self, *, listen: bool = True) -> None:
        """Opens the data directory (recovering every log) and, with ``listen``, the port.

        In a cluster it first starts this broker's etcd member and waits until
        the members have a quorum (start the brokers together).
        """
        loop = asyncio.get_running_loop()
        if self.clustered:
            await self._start_etcd()
        await loop.run_in_executor(self._io, self._open)
        if not self.clustered:
            await self._ensure_offsets_topic()
            offsets = self._partition(OFFSETS_TOPIC, 0)
            if offsets is not None and offsets.is_leader:
                self._start_loading_offsets(offsets)
        self._groups.start()
        self._housekeeping = [
            loop.create_task(self._every(self.config.retention_check_interval_s, self._retain)),
            loop.create_task(
                self._every(self.config.compaction_check_interval_s, self._compact_due)
            ),
            loop.create_task(
                self._every(self.config.producer_snapshot_interval_s, self._snapshot_producers)
            ),
            loop.create_task(self._flush_dirty()),
        ]
        if listen:
            self._server = await asyncio.start_server(
                self._serve_connection, self.config.host, self.port, backlog=1024
            )
            self.port = self._server.sockets[0].getsockname()[1]
        if self.clustered:
            assert self._metadata is not None
            self._registered_revision = await self._metadata.register(
                self.advertised_host, self.port
            )
            await self._cluster_step()
            self._spawn(self._cluster_loop())

    async def stop(self) -> None:
        """Stops listening, finishes requests in flight, flushes and closes every log."""
        if self._server is not None:
            self._server.close()
        for task in [*self._tasks, *self._fetchers.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._fetchers.values(), return_exceptions=True)
        self._fetchers.clear()
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
        if self._offsets_loading is not None:
            # A load reads a log on a worker thread: let it finish before the logs close.
            await asyncio.gather(self._offsets_loading[1], return_exceptions=True)
            self._offsets_loading = None
        for topic in self._topics.values():
            for state in topic.partitions:
                async with state.lock:
                    pass
        await asyncio.get_running_loop().run_in_executor(self._io, self._close)
        self._io.shutdown(wait=True)
        if self._metadata is not None:
            await self._metadata.close()
        if self._etcd is not None:
            await self._etcd.close()
        if self._etcd_member is not None:
            await self._etcd_member.stop()

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
        for directory in (
            self._meta("topics"),
            self._meta("producers"),
            self._meta("epochs"),
            self.data_dir / "logs",
        ):
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
        if not self.clustered:
            self._cluster_id = cluster["cluster_id"]
        ids_file = self._meta("producer_ids.json")
        if ids_file.exists():
            self._next_producer_id = json.loads(ids_file.read_text())["next_block"]
        self._producer_id_limit = self._next_producer_id
        if self.clustered:
            # Topics come from the cluster's metadata (see _reconcile).
            return

        names = set()
        for path in sorted(self._meta("topics").glob("*.json")):
            meta = TopicMeta.from_json(json.loads(path.read_text()))
            names.add(meta.name)
            self._topics[meta.name] = self._open_topic(meta)
        for directory in (self.data_dir / "logs").iterdir():
            topic, _, index = directory.name.rpartition("-")
            if topic not in names or not is_decimal(index):
                log.warning("removing %s: it belongs to no topic (a crash mid-create?)", directory)
                shutil.rmtree(directory, ignore_errors=True)

    def _open_topic(self, meta: TopicMeta, hosted: Iterable[int] | None = None) -> _Topic:
        """Opens the logs of ``meta``'s partitions here (``hosted``, else all of them)."""
        states = []
        for index in range(meta.partitions) if hosted is None else hosted:
            path = self.data_dir / "logs" / f"{meta.name}-{index}"
            log_ = Partition(
                path,
                segment_bytes_max=meta.config.segment_bytes,
                fsync=meta.config.fsync,
                fsync_interval_ms=max(1, meta.config.fsync_interval_ms),
                retention_ms=meta.config.retention_ms,
                retention_bytes=meta.config.retention_bytes,
            )
            state = _PartitionState(meta.name, index, log_, self.config.node_id)
            if self.clustered:
                # Nobody leads it for this broker until the cluster's metadata says who
                # does, and nothing is known to be on every in-sync replica yet.
                state.is_leader = False
                state.leader = state.leader_epoch = -1
                state.hw = log_.log_start_offset
            self._load_producers(state)
            self._load_epochs(state)
            states.append(state)
        return _Topic(meta, states)

    def _close(self) -> None:
        for topic in self._topics.values():
            for state in topic.partitions:
                if not state.log.closed:
                    self._write_producer_snapshot(state)
                    state.log.flush()
                    state.log.close()

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except SdiError:
                log.exception("sdi mq housekeeping failed; will retry")

    @staticmethod
    def _compacted(topic: _Topic) -> bool:
        """Whether ``topic`` has cleanup.policy=compact (``__consumer_offsets`` always
        has, also in data directories made before compaction was built)."""
        return topic.meta.name == OFFSETS_TOPIC or topic.meta.config.cleanup_policy == "compact"

    async def _compact_due(self) -> None:
        await self._compact_logs()

    async def _compact_logs(self, *, force: bool = False) -> int:
        """Compacts the replicas here of cleanup.policy=compact topics that are due.

        Each replica, leader or follower, compacts its own log up to its high
        watermark, on a worker thread and under the partition's lock (appends,
        fetches and truncation wait, the event loop does not). Due: at least
        ``compaction_min_new_segments`` segments closed since the last
        compaction, or any and ``compaction_max_lag_s`` gone by (``force``: any).
        Returns how many partitions were compacted.
        """
        compacted = 0
        for topic in list(self._topics.values()):
            if not self._compacted(topic):
                continue
            retention_ms = topic.meta.config.delete_retention_ms
            for state in topic.partitions:
                async with state.lock:
                    if state.log.closed:
                        continue
                    closed = len(state.log.segment_base_offsets()) - 1
                    new = closed - state.compacted_closed
                    late = time.monotonic() - state.compacted_at >= self.config.compaction_max_lag_s
                    due = new >= self.config.compaction_min_new_segments or (new > 0 and late)
                    if new < 0:
                        state.compacted_closed = closed  # a truncation left fewer
                    if not (force or due):
                        continue
                    outcome = await self._run(state.log.compact, state.hw, _now_ms(), retention_ms)
                    state.compacted_closed = len(state.log.segment_base_offsets()) - 1
                    state.compacted_at = time.monotonic()
                    if outcome.segments_before:
                        compacted += 1
                        log.info(
                            "%s: compacted %d segments into %d, %d -> %d bytes "
                            "(%d records, %d tombstones dropped)",
                            state.name, outcome.segments_before, outcome.segments_after,
                            outcome.bytes_before, outcome.bytes_after,
                            outcome.records_removed, outcome.tombstones_removed,
                        )  # fmt: skip
        return compacted

    async def _retain(self) -> None:
        now_ms = int(time.time() * 1000)
        for topic in list(self._topics.values()):
            if self._compacted(topic):
                continue  # compaction, not retention, bounds these logs
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
    # Leader epochs
    # ------------------------------------------------------------------

    def _epochs_path(self, state: _PartitionState) -> Path:
        return self._meta("epochs", f"{state.name}.json")

    def _load_epochs(self, state: _PartitionState) -> None:
        """The epoch cache; entries past the log end (a cut tail) are dropped."""
        path = self._epochs_path(state)
        epochs: list[tuple[int, int]] = []
        if path.exists():
            epochs = [(int(e), int(o)) for e, o in json.loads(path.read_text())]
        end = state.log.next_offset
        kept = [(epoch, start) for epoch, start in epochs if start <= end]
        if not self.clustered and not kept:
            kept = [(0, state.log.log_start_offset)]
        state.epochs = kept
        if kept and not self.clustered:
            state.leader_epoch = kept[-1][0]
        if kept != epochs:
            write_json_atomic(path, [list(entry) for entry in kept])

    def _record_epoch(self, state: _PartitionState, epoch: int, start: int) -> None:
        """Notes that ``epoch`` begins at ``start`` (before anything of it is written)."""
        if state.epochs and state.epochs[-1][0] >= epoch:
            return
        state.epochs.append((epoch, start))
        write_json_atomic(self._epochs_path(state), [list(entry) for entry in state.epochs])

    def _truncate(self, state: _PartitionState, offset: int) -> None:
        """Cuts a follower's log back to ``offset`` and forgets the epochs past it."""
        state.log.truncate_to(offset)
        kept = [(epoch, start) for epoch, start in state.epochs if start <= offset]
        if kept != state.epochs:
            state.epochs = kept
            write_json_atomic(self._epochs_path(state), [list(entry) for entry in kept])
        state.hw = min(state.hw, offset)
        # Producer state may name batches that are gone: rebuild it from the log.
        state.producers.clear()
        self._producer_snapshot_path(state).unlink(missing_ok=True)
        self._load_producers(state)

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
        # Producers silent for longer than Kafka's producer.id.expiration.ms are forgotten.
        oldest = _now_ms() - PRODUCER_EXPIRATION_MS
        for pid in [pid for pid, producer in state.producers.items() if producer.last_ms < oldest]:
            del state.producers[pid]
        snapshot = {
            "offset": state.log.next_offset,
            "producers": {
                str(pid): [producer.epoch, list(producer.batches), producer.last_ms]
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
                for pid, (epoch, batches, *rest) in snapshot["producers"].items():
                    producer = state.producers[int(pid)] = _Producer(epoch)
                    producer.batches.extend(tuple(batch) for batch in batches)
                    producer.last_ms = int(rest[0]) if rest else _now_ms()
        start = max(start, state.log.log_start_offset)
        while start < state.log.next_offset:
            data = state.log.read_payloads(start, 1 << 20)
            if not data:
                break  # only a gap (compacted away or cut) is left
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
        producer.last_ms = max(producer.last_ms, info.max_timestamp)

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

    async def _append_batch(
        self,
        state: _PartitionState,
        records: bytes | None,
        acks: int = -1,
        timeout_ms: int = 30_000,
    ) -> int:
        """Validates and appends one Kafka record batch as leader; its base offset.

        With ``acks=-1`` it returns once every in-sync replica has the batch
        (the high watermark is past it).
        """
        config = self._topics[state.topic].meta.config
        max_bytes = config.max_message_bytes
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
            if not state.is_leader:
                raise _AppendRefusedError(
                    p.ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    f"broker {self.config.node_id} does not lead {state.name} "
                    f"(broker {state.leader} does)",
                )
            if acks == -1 and len(state.isr) < config.min_insync_replicas:
                raise _AppendRefusedError(
                    p.ErrorCode.NOT_ENOUGH_REPLICAS,
                    f"{state.name} has {len(state.isr)} in-sync replicas; acks=all needs "
                    f"{config.min_insync_replicas} (min.insync.replicas)",
                )
            epoch = state.leader_epoch
            retried = self._check_sequence(state, info) if info.producer_id >= 0 else None
            if retried is not None:
                base = retried
            else:
                base = state.log.next_offset
                stored = p.rewrite_base_offset(records, base, epoch)
                arguments = (
                    stored,
                    info.last_offset_delta + 1,
                    info.first_timestamp,
                    info.max_timestamp,
                )
                try:
                    if config.fsync == "every_batch":
                        # An fsync per batch runs on a worker, so the loop serves others.
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
                state.advance_hw()
        state.wake()
        if acks == -1:
            await self._wait_for_replicas(
                state, epoch, base + info.last_offset_delta + 1, timeout_ms
            )
        return base

    async def _wait_for_replicas(
        self, state: _PartitionState, epoch: int, end: int, timeout_ms: int
    ) -> None:
        """Waits until the high watermark reaches ``end`` under the same leadership."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while state.hw < end:
            if not state.is_leader or state.leader_epoch != epoch or state.log.closed:
                raise _AppendRefusedError(
                    p.ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    f"leadership of {state.name} moved before the replicas had the batch",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _AppendRefusedError(
                    p.ErrorCode.REQUEST_TIMED_OUT,
                    f"the in-sync replicas of {state.name} did not all have the batch "
                    f"within {timeout_ms} ms",
                )
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.hw_waiters.add(waiter)
            try:
                await self._until(waiter, time.monotonic() + remaining)
            finally:
                state.hw_waiters.discard(waiter)
        minimum = self._topics[state.topic].meta.config.min_insync_replicas
        if len(state.isr) < minimum:
            raise _AppendRefusedError(
                p.ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                f"the batch is written but {state.name} now has {len(state.isr)} in-sync "
                f"replicas, fewer than min.insync.replicas {minimum}",
            )

    def _partition(self, topic: str, index: int) -> _PartitionState | None:
        found = self._topics.get(topic)
        return None if found is None else found.get(index)

    # ------------------------------------------------------------------
    # Topics
    # ------------------------------------------------------------------

    def topics(self, *, internal: bool = False) -> dict[str, int]:
        """Every topic and its partition count (``__consumer_offsets`` only with ``internal``)."""
        if self.clustered and self._view is not None:
            found = {name: t.meta.partitions for name, t in self._view.topics.items()}
        else:
            found = {name: topic.meta.partitions for name, topic in self._topics.items()}
        if not internal:
            found.pop(OFFSETS_TOPIC, None)
        return found

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        configs: dict[str, str | None] | None = None,
        *,
        replication_factor: int | None = None,
        validate_only: bool = False,
    ) -> TopicMeta:
        """Creates a topic; :class:`InvalidArgument` for a bad name, count or config.

        Raises :class:`FileExistsError` if the topic exists. In a cluster the
        replicas are spread over the live brokers (``replication_factor`` of
        them, by default ``default_replication_factor`` or as many as are up).
        """
        check_topic_name(name)
        count = self.config.num_partitions if partitions in (None, -1) else partitions
        assert count is not None
        if not 1 <= count <= 10_000:
            raise InvalidPartitionCount(f"a topic has 1 to 10000 partitions, not {count}")
        config = self.config.topic_defaults.with_kafka(configs or {})
        if self.clustered:
            return await self._create_replicated(
                name, count, config, replication_factor, validate_only
            )
        if replication_factor not in (None, -1, 1):
            raise InvalidReplicationFactor(
                f"replication factor {replication_factor} is larger than the 1 broker here; "
                "run a cluster (--peers) for more"
            )
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

    async def _create_replicated(
        self,
        name: str,
        count: int,
        config: TopicConfig,
        replication_factor: int | None,
        validate_only: bool,
    ) -> TopicMeta:
        assert self._metadata is not None
        view = await self._metadata.view()
        live = sorted(view.brokers)
        factor = replication_factor
        if factor in (None, -1):
            factor = min(self.config.default_replication_factor, len(live))
        assert factor is not None
        if not 1 <= factor <= len(live):
            raise InvalidReplicationFactor(
                f"replication factor {factor} needs as many live brokers; {len(live)} are up"
            )
        if config.min_insync_replicas > factor:
            raise InvalidTopicConfig(
                f"min.insync.replicas {config.min_insync_replicas} is more than the "
                f"replication factor {factor}"
            )
        if name in view.topics:
            raise FileExistsError(f"topic {name!r} already exists")
        meta = TopicMeta(name, count, config, uuid.uuid4().hex)
        if validate_only:
            return meta
        await self._metadata.create_topic(meta, assign_replicas(live, count, factor))
        await self._refresh()
        log.info("created topic %s: %d partitions, %d replicas each", name, count, factor)
        return meta

    async def delete_topic(self, name: str) -> None:
        """Deletes a topic, its logs and its committed offsets; KeyError if unknown."""
        if name == OFFSETS_TOPIC:
            raise InvalidArgument(f"{OFFSETS_TOPIC} is internal and cannot be deleted")
        if self.clustered:
            assert self._metadata is not None
            await self._metadata.delete_topic(name)
            await self._refresh()
            return
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
            if gone and self._offsets_ready() is p.ErrorCode.NONE:
                with contextlib.suppress(_AppendRefusedError):
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

    async def _ensure_offsets_topic(self) -> None:
        """Creates ``__consumer_offsets`` (one partition) if it is not there yet."""
        if OFFSETS_TOPIC in self.topics(internal=True):
            return
        configs: dict[str, str | None] = {
            "cleanup.policy": "compact",
            "segment.bytes": str(self.config.offsets_segment_bytes),
            "retention.ms": "-1",
            "delete.retention.ms": str(self.config.offsets_tombstone_retention_ms),
        }
        if self.config.offsets_fsync:
            configs["flush.messages"] = "1"
        factor = None
        if self.clustered:
            live = len(self._view.brokers) if self._view is not None else 1
            factor = min(self.config.default_replication_factor, live)
            configs["min.insync.replicas"] = str(min(2, factor))
        with contextlib.suppress(FileExistsError):
            await self.create_topic(OFFSETS_TOPIC, 1, configs, replication_factor=factor)

    @staticmethod
    def _read_offsets(
        state: _PartitionState,
    ) -> dict[tuple[str, str, int], tuple[int, int, str | None]]:
        """Every commit in ``__consumer_offsets-0``, replayed (blocking: on a worker thread)."""
        offsets: dict[tuple[str, str, int], tuple[int, int, str | None]] = {}
        offset = state.log.log_start_offset
        while offset < state.log.next_offset:
            data = state.log.read_payloads(offset, 1 << 20)
            if not data:
                break  # only a gap (compacted away or cut) is left
            for batch in p.decode_record_batches(data):
                for record in batch.records:
                    if record.key is None:
                        continue
                    group, topic, partition = record.key.decode().split("\0")
                    key = (group, topic, int(partition))
                    if not record.value:
                        offsets.pop(key, None)
                        continue
                    committed, epoch, has_metadata = struct.unpack_from(">qi?", record.value)
                    metadata = record.value[13:].decode() if has_metadata else None
                    offsets[key] = (committed, epoch, metadata)
                offset = batch.base_offset + batch.last_offset_delta + 1
        return offsets

    def _start_loading_offsets(self, state: _PartitionState) -> None:
        """Reads the committed offsets on a worker thread, once per leader epoch.

        Until they are in, the group requests answer COORDINATOR_LOAD_IN_PROGRESS
        (as Kafka's coordinator does while it loads), which clients retry; the
        event loop never replays the log itself.
        """
        epoch = state.leader_epoch
        if self._offsets_loading is not None and self._offsets_loading[0] == epoch:
            return

        async def load() -> None:
            try:
                offsets = await self._run(self._read_offsets, state)
            except Exception:
                log.exception("%s: loading the committed offsets failed; will retry", state.name)
                self._offsets_loading = None
                return
            if state.is_leader and state.leader_epoch == epoch:
                self._offsets = offsets
                self._offsets_epoch = epoch
                log.info("%s: %d committed offsets loaded", state.name, len(offsets))

        self._offsets_loading = (epoch, asyncio.get_running_loop().create_task(load()))

    def _offsets_ready(self) -> p.ErrorCode:
        """NONE when this broker coordinates groups now: it leads __consumer_offsets-0 and has
        its commits loaded (COORDINATOR_LOAD_IN_PROGRESS while they load)."""
        state = self._partition(OFFSETS_TOPIC, 0)
        if state is None or not state.is_leader:
            if self.clustered and OFFSETS_TOPIC not in self.topics(internal=True):
                return p.ErrorCode.COORDINATOR_NOT_AVAILABLE
            return p.ErrorCode.NOT_COORDINATOR
        if self._offsets_epoch != state.leader_epoch:
            self._start_loading_offsets(state)
            return p.ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return p.ErrorCode.NONE

    async def _store_offsets(
        self, entries: Sequence[tuple[tuple[str, str, int], tuple[int, int, str | None] | None]]
    ) -> None:
        """Appends commits (None: delete) to __consumer_offsets-0, acknowledged by every ISR."""
        state = self._partition(OFFSETS_TOPIC, 0)
        ready = self._offsets_ready()
        if state is None or ready is not p.ErrorCode.NONE:
            raise _AppendRefusedError(
                p.ErrorCode.NOT_COORDINATOR if state is None else ready,
                "not the group coordinator (or its offsets are still loading)",
            )
        now = _now_ms()
        records = []
        for delta, (key, entry) in enumerate(entries):
            value = None
            if entry is not None:
                committed, epoch, metadata = entry
                encoded = b"" if metadata is None else metadata.encode()
                value = struct.pack(">qi?", committed, epoch, metadata is not None) + encoded
            records.append(p.Record(self._offset_key(*key), value, offset=delta, timestamp=now))
        for start in range(0, len(records), 10_000):
            chunk = [
                p.Record(r.key, r.value, offset=n, timestamp=now)
                for n, r in enumerate(records[start : start + 10_000])
            ]
            await self._append_batch(
                state, p.encode_record_batch(chunk), acks=-1, timeout_ms=10_000
            )
        for key, entry in entries:
            if entry is None:
                self._offsets.pop(key, None)
            else:
                self._offsets[key] = entry

    async def _group_offsets(
        self, group: str
    ) -> dict[tuple[str, int], tuple[int, int, str | None]]:
        """What ``group`` has committed: (topic, partition) -> (offset, leader epoch, metadata)."""
        return {(t, i): entry for (g, t, i), entry in self._offsets.items() if g == group}

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset ``group`` committed for a partition, if any (as the coordinator knows it).

        Blocking: when this broker has just taken the coordinator's place, it
        reads the commits here rather than waiting for the background load.
        """
        state = self._partition(OFFSETS_TOPIC, 0)
        if self._offsets_ready() is p.ErrorCode.COORDINATOR_LOAD_IN_PROGRESS and state is not None:
            self._offsets = self._read_offsets(state)
            self._offsets_epoch = state.leader_epoch
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
                state = found.get(target)
                if state is None:
                    raise InvalidArgument(
                        f"partition {target} of {topic!r} has no replica on this broker"
                    )
                base = await self._append_batch(state, batch)
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
                    data = b""
                    if offset < state.hw:
                        data = _batches_below(state.log.read_payloads(offset, max_bytes), state.hw)
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
    # Replication (a cluster: config.peers)
    # ------------------------------------------------------------------

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a broker task failed", exc_info=task.exception())

    async def _start_etcd(self) -> None:
        peers = self.config.peers
        name = f"broker-{self.config.node_id}"
        members = {
            f"broker-{node}": f"http://{host}:{port + 2}" for node, (host, port) in peers.items()
        }
        host, port = peers[self.config.node_id]
        member = EtcdMember(
            name,
            self.data_dir / "etcd",
            f"http://{host}:{port + 1}",
            members[name],
            members,
            # etcd's own defaults: steadier than the test-speed ones on a loaded machine.
            heartbeat_interval_ms=100,
            election_timeout_ms=1000,
        )
        self._etcd_member = member
        await member.start(timeout=60)
        endpoints = [member.client_url] + [
            f"http://{h}:{p_ + 1}"
            for node, (h, p_) in sorted(peers.items())
            if node != self.config.node_id
        ]
        self._etcd = Etcd(endpoints, timeout=3.0)
        await member.wait_ready(timeout=120)
        self._metadata = ClusterMetadata(self._etcd, self.config.node_id)
        self._controller = Controller(self._metadata)
        self._cluster_id = await self._metadata.cluster_id()

    async def _cluster_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self._cluster_step()
            except (EtcdError, OSError) as error:
                log.warning(
                    "broker %d: cluster metadata unavailable: %s", self.config.node_id, error
                )
            except Exception:
                # A bug of ours must not stop this broker following the cluster.
                log.exception("broker %d: a pass over the metadata failed", self.config.node_id)
                await asyncio.sleep(1)

    async def _cluster_step(self) -> None:
        """One pass: campaign or act as controller, then follow the metadata, then prune ISRs."""
        assert self._metadata is not None
        assert self._controller is not None
        async with self._reconciling:
            view = await self._metadata.view()
            if view.controller is None and await self._metadata.campaign():
                view = await self._metadata.view()
            if view.controller == self.config.node_id and await self._controller.step(view):
                view = await self._metadata.view()
            self._view = view
            await self._reconcile(view)
        await self._shrink_isrs()
        wanted = min(self.config.default_replication_factor, len(self.config.peers))
        if (
            view.controller == self.config.node_id
            and OFFSETS_TOPIC not in view.topics
            and len(view.brokers) >= wanted
        ):
            await self._ensure_offsets_topic()

    async def _refresh(self) -> None:
        """Brings the local view up to date now (after a change this broker made)."""
        assert self._metadata is not None
        async with self._reconciling:
            view = await self._metadata.view()
            self._view = view
            await self._reconcile(view)

    async def _reconcile(self, view: ClusterView) -> None:
        """Opens, drops and re-roles local replicas to match the cluster's metadata."""
        me = self.config.node_id
        for name in list(self._topics):
            wanted = view.topics.get(name)
            if wanted is None or wanted.meta.topic_id != self._topics[name].meta.topic_id:
                await self._drop_local_topic(name)
        for name, assignment in view.topics.items():
            hosted = [i for i, replicas in enumerate(assignment.replicas) if me in replicas]
            if name not in self._topics and hosted:
                self._topics[name] = await self._run(self._open_topic, assignment.meta, hosted)
        if not self._cleaned_strays:
            self._cleaned_strays = True
            await self._run(self._remove_stray_logs)
        for (name, index), wanted_state in view.partitions.items():
            state = self._partition(name, index)
            if state is None:
                continue
            if (
                me in wanted_state.isr
                and wanted_state.mod_revision < self._registered_revision
                and self._metadata is not None
            ):
                # This broker restarted: it leaves the ISRs it was in (and gives up the
                # lead) until it has caught up again, unless it is the only copy left.
                stepped = Controller._next_state(wanted_state, set(view.brokers), {me})
                if stepped != wanted_state and await self._metadata.update_partition(
                    name, index, wanted_state, stepped
                ):
                    log.info("%s: restarted, so out of the isr until caught up", state.name)
                    continue
            self._apply_partition_state(state, wanted_state)
        leaders = {
            state.leader
            for topic in self._topics.values()
            for state in topic.partitions
            if not state.is_leader and state.leader >= 0
        }
        for leader in leaders:
            fetcher = self._fetchers.get(leader)
            if fetcher is None or fetcher.done():
                self._fetchers[leader] = asyncio.ensure_future(self._follow(leader))

    def _remove_stray_logs(self) -> None:
        hosted = {state.name for topic in self._topics.values() for state in topic.partitions}
        for directory in (self.data_dir / "logs").iterdir():
            if directory.name not in hosted:
                log.warning("removing %s: no replica of it is assigned here", directory)
                shutil.rmtree(directory, ignore_errors=True)

    async def _drop_local_topic(self, name: str) -> None:
        topic = self._topics.pop(name)
        for state in topic.partitions:
            async with state.lock:
                await self._run(state.log.close)
            state.is_leader = False
            state.wake()
            state.wake_hw()

        def remove() -> None:
            for state in topic.partitions:
                shutil.rmtree(self.data_dir / "logs" / state.name, ignore_errors=True)
                self._producer_snapshot_path(state).unlink(missing_ok=True)
                self._epochs_path(state).unlink(missing_ok=True)

        await self._run(remove)
        log.info("dropped the local replicas of topic %s", name)

    def _apply_partition_state(self, state: _PartitionState, wanted: PartitionState) -> None:
        me = self.config.node_id
        state.isr = wanted.isr
        state.replicas = wanted.replicas
        state.mod_revision = wanted.mod_revision
        state.joining -= set(wanted.isr)
        if wanted.leader == me and wanted.mod_revision < self._registered_revision:
            # Leadership given to this broker's previous life: it may have lost
            # what it had not synced, so it waits for the controller to elect anew.
            wanted = replace(wanted, leader=-1)
        if wanted.leader == me:
            if not state.is_leader or state.leader_epoch != wanted.leader_epoch:
                log.info("%s: leading under epoch %d", state.name, wanted.leader_epoch)
                self._record_epoch(state, wanted.leader_epoch, state.log.next_offset)
                state.is_leader = True
                state.leader = me
                state.leader_epoch = wanted.leader_epoch
                state.truncated_for = wanted.leader_epoch
                state.joining.clear()
                if state.topic == OFFSETS_TOPIC:
                    self._groups.reset()
                    self._start_loading_offsets(state)
                now = time.monotonic()
                state.replica_leo.clear()
                state.leo_at_last_fetch.clear()
                state.caught_up_at = {node: now for node in wanted.isr}
                state.wake_hw()
                state.wake()
            state.advance_hw()
            return
        if state.is_leader or (state.leader, state.leader_epoch) != (
            wanted.leader,
            wanted.leader_epoch,
        ):
            log.info(
                "%s: following broker %d under epoch %d",
                state.name, wanted.leader, wanted.leader_epoch,
            )  # fmt: skip
            if state.is_leader and state.topic == OFFSETS_TOPIC:
                self._groups.reset()
                self._offsets_epoch = -1
            state.is_leader = False
            state.leader = wanted.leader
            state.leader_epoch = wanted.leader_epoch
            state.truncated_for = -1
            state.joining.clear()
            state.wake_hw()
            state.wake()

    async def _follow(self, leader: int) -> None:
        """Replicates every partition this broker follows on ``leader``, until there are none."""
        me = self.config.node_id
        connection: LeaderConnection | None = None
        try:
            while True:
                following = [
                    state
                    for topic in self._topics.values()
                    for state in topic.partitions
                    if not state.is_leader and state.leader == leader and not state.log.closed
                ]
                if not following:
                    return
                view = self._view
                info = None if view is None else view.brokers.get(leader)
                if info is None:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    if connection is None:
                        connection = await LeaderConnection.open(
                            info.host, info.port, f"sdi-replica-{me}"
                        )
                    await self._truncate_to_leader(connection, following)
                    ready = [s for s in following if s.truncated_for == s.leader_epoch]
                    if not ready:
                        await asyncio.sleep(0.1)
                        continue
                    fetched = await connection.fetch(
                        me,
                        [(s.topic, s.index, s.log.next_offset, s.leader_epoch) for s in ready],
                        max_wait_ms=self.config.replica_fetch_wait_max_ms,
                    )
                    asked = {(s.topic, s.index): (s, s.leader_epoch) for s in ready}
                    for part in fetched:
                        state, epoch = asked.get((part.topic, part.partition), (None, -1))
                        if state is not None:
                            await self._apply_fetched(state, part, leader, epoch)
                except (OSError, ConnectionError, ProtocolError, TimeoutError) as error:
                    log.info("broker %d: fetching from broker %d: %s", me, leader, error)
                    if connection is not None:
                        await connection.close()
                        connection = None
                    await asyncio.sleep(0.2)
                except Exception:
                    # Say so and keep trying: replication must not stop silently.
                    log.exception("broker %d: replicating from broker %d failed", me, leader)
                    if connection is not None:
                        await connection.close()
                        connection = None
                    await asyncio.sleep(1)
        finally:
            if connection is not None:
                await connection.close()

    async def _truncate_to_leader(
        self, connection: LeaderConnection, following: list[_PartitionState]
    ) -> None:
        """Cuts each newly followed log back to where it agrees with the leader's (KIP-101)."""
        due = [s for s in following if s.truncated_for != s.leader_epoch]
        asks = [(s.topic, s.index, s.leader_epoch, s.epochs[-1][0]) for s in due if s.epochs]
        answers = await connection.epoch_ends(self.config.node_id, asks) if asks else {}
        for state in due:
            epoch = state.leader_epoch
            if not state.epochs:
                state.truncated_for = epoch
                continue
            code, leader_epoch, end = answers.get((state.topic, state.index), (-1, -1, -1))
            if code:
                continue  # the leader does not know it leads yet: ask again
            async with state.lock:
                if state.is_leader or state.leader_epoch != epoch or state.log.closed:
                    continue
                # Where the leader's copy of that epoch ends, or ours; when the leader
                # has none of our epochs, only what was committed is kept.
                target = state.hw if leader_epoch < 0 else min(end, state.local_end(leader_epoch))
                target = max(state.log.log_start_offset, target)
                if target < state.log.next_offset:
                    log.info("%s: truncating from %d to %d to match the leader",
                             state.name, state.log.next_offset, target)  # fmt: skip
                    await self._run(
                        self._truncate, state, self._boundary_at_or_below(state, target)
                    )
                state.truncated_for = epoch

    @staticmethod
    def _boundary_at_or_below(state: _PartitionState, offset: int) -> int:
        """Where the batch holding ``offset`` starts (``offset`` itself at the log end)."""
        if offset >= state.log.next_offset or offset <= state.log.log_start_offset:
            return offset
        data = state.log.read_payloads(offset, 1)
        # In a gap left by compaction the read starts at the batch after it.
        return (
            min(offset, int.from_bytes(data[:8], "big", signed=True)) if len(data) >= 8 else offset
        )

    async def _apply_fetched(
        self, state: _PartitionState, part: FetchedPartition, leader: int, epoch: int
    ) -> None:
        if part.error_code == p.ErrorCode.OFFSET_OUT_OF_RANGE:
            state.truncated_for = -1  # agree on the log again before going on
            return
        if part.error_code:
            await asyncio.sleep(0.05)  # not the leader (yet): the metadata will say who is
            return
        async with state.lock:
            if state.is_leader or state.log.closed:
                return
            if (state.leader, state.leader_epoch, state.truncated_for) != (leader, epoch, epoch):
                return  # an answer from a leadership this replica no longer follows
            data = part.records
            if data:
                try:
                    infos = p.validate_record_batches(data)
                except ProtocolError as error:
                    log.error("%s: the leader sent a batch that fails its checks: %s",
                              state.name, error)  # fmt: skip
                    return
                for info in infos:
                    batch = data[info.position : info.position + info.size_bytes]
                    base = int.from_bytes(batch[:8], "big", signed=True)
                    if base < state.log.next_offset:
                        state.truncated_for = -1
                        break
                    epoch = int.from_bytes(batch[12:16], "big", signed=True)
                    if epoch >= 0 and (not state.epochs or epoch > state.epochs[-1][0]):
                        self._record_epoch(state, epoch, base)
                    # Past a gap (the leader compacted its log) the batch keeps its
                    # offsets: a replica's offsets are its leader's.
                    arguments = (
                        base,
                        batch,
                        info.last_offset_delta + 1,
                        info.first_timestamp,
                        info.max_timestamp,
                    )
                    if self._topics[state.topic].meta.config.fsync == "every_batch":
                        await self._run(state.log.append_payload_at, *arguments)
                    else:
                        state.log.append_payload_at(*arguments)
                    if info.producer_id >= 0:
                        self._remember(state, info, base)
                if not state.dirty_since:
                    state.dirty_since = time.monotonic()
            state.hw = max(state.hw, min(part.high_watermark, state.log.next_offset))

    async def _shrink_isrs(self) -> None:
        """As leader: drops followers that have not caught up for too long from the ISR."""
        now = time.monotonic()
        lag = self.config.replica_lag_time_max_ms / 1000
        for topic in list(self._topics.values()):
            for state in topic.partitions:
                if not state.is_leader or len(state.isr) <= 1:
                    continue
                for node in list(state.joining):
                    if now - state.caught_up_at.get(node, now) > lag:
                        state.joining.discard(node)
                behind = [
                    node
                    for node in state.isr
                    if node != self.config.node_id and now - state.caught_up_at.get(node, now) > lag
                ]
                if behind:
                    kept = tuple(node for node in state.isr if node not in behind)
                    await self._change_isr(state, kept)

    async def _change_isr(self, state: _PartitionState, isr: tuple[int, ...]) -> None:
        """Proposes a new ISR under this broker's leadership (compare-and-swap in etcd)."""
        if self._metadata is None or state.name in self._changing_isr:
            return
        self._changing_isr.add(state.name)
        try:
            current = PartitionState(
                state.leader, state.leader_epoch, state.isr, state.replicas, state.mod_revision
            )
            proposed = replace(current, isr=isr)
            if state.is_leader and await self._metadata.update_partition(
                state.topic, state.index, current, proposed
            ):
                log.info("%s: isr %s -> %s", state.name, list(current.isr), list(isr))
                state.isr = isr
                # mod_revision stays the old one: the next change waits for a fresh read.
                if not state.advance_hw():
                    state.wake_hw()
        except (EtcdError, InvalidArgument) as error:
            log.warning("%s: changing the isr failed: %s", state.name, error)
        finally:
            self._changing_isr.discard(state.name)

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
                hosted_elsewhere = state is None and part.index < self.topics(internal=True).get(
                    topic.name, 0
                )
                if request.acks not in (0, 1, -1):
                    answer.error_code = p.ErrorCode.INVALID_REQUIRED_ACKS
                elif request.transactional_id is not None:
                    answer.error_code = p.ErrorCode.INVALID_REQUEST
                    answer.error_message = "transactions are not supported by sdi"
                elif topic.name == OFFSETS_TOPIC:
                    answer.error_code = p.ErrorCode.INVALID_TOPIC_EXCEPTION
                    answer.error_message = f"{OFFSETS_TOPIC} is internal: commit offsets instead"
                elif hosted_elsewhere:
                    answer.error_code = p.ErrorCode.NOT_LEADER_OR_FOLLOWER
                elif state is None:
                    answer.error_code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    try:
                        answer.base_offset = await self._append_batch(
                            state, part.records, request.acks, request.timeout_ms
                        )
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
        replica = request.replica_id >= 0
        size = 0
        waiting: list[_PartitionState] = []
        errors = False
        topics = []
        for topic in request.topics:
            partitions = []
            for part in topic.partitions:
                answer = p.FetchPartitionResponse(part.partition, records=b"")
                state = self._partition(topic.name, part.partition)
                if state is None or state.log.closed:
                    answer.error_code = (
                        p.ErrorCode.NOT_LEADER_OR_FOLLOWER
                        if part.partition < self.topics(internal=True).get(topic.name, 0)
                        else p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    )
                    errors = True
                else:
                    async with state.lock:
                        error = self._fetch_error(state, part.current_leader_epoch)
                        if error:
                            answer.error_code = error
                            errors = True
                        else:
                            if replica:
                                self._follower_fetched(state, request.replica_id, part.fetch_offset)
                            log_ = state.log
                            # Consumers see only what every in-sync replica has.
                            end = log_.next_offset if replica else state.hw
                            answer.high_watermark = answer.last_stable_offset = state.hw
                            answer.log_start_offset = log_.log_start_offset
                            if not log_.log_start_offset <= part.fetch_offset <= log_.next_offset:
                                answer.error_code = p.ErrorCode.OFFSET_OUT_OF_RANGE
                                errors = True
                            elif part.fetch_offset >= end:
                                waiting.append(state)
                            elif budget > 0 or size == 0:
                                limit = min(part.partition_max_bytes, max(budget, 1))
                                data = log_.read_payloads(part.fetch_offset, limit)
                                if end < log_.next_offset:
                                    data = _batches_below(data, end)
                                answer.records = data
                                size += len(data)
                                budget -= len(data)
                    answer.aborted_transactions = []
                partitions.append(answer)
            topics.append(p.FetchTopicResponse(topic.name, partitions))
        return p.FetchResponse(topics), size, [] if errors else waiting

    def _fetch_error(self, state: _PartitionState, current_leader_epoch: int) -> int:
        """Why this broker cannot serve ``state`` to a client that knows that epoch (0: it can)."""
        if not state.is_leader:
            return p.ErrorCode.NOT_LEADER_OR_FOLLOWER
        if current_leader_epoch >= 0 and current_leader_epoch != state.leader_epoch:
            if current_leader_epoch < state.leader_epoch:
                return p.ErrorCode.FENCED_LEADER_EPOCH
            return p.ErrorCode.UNKNOWN_LEADER_EPOCH
        return 0

    def _follower_fetched(self, state: _PartitionState, follower: int, offset: int) -> None:
        """A follower's fetch at ``offset`` says it has everything below it."""
        if follower not in state.replicas or follower == self.config.node_id:
            return
        if offset > state.log.next_offset:
            return  # a diverged follower: it truncates before it counts
        now = time.monotonic()
        state.replica_leo[follower] = offset
        if offset >= state.leo_at_last_fetch.get(follower, 0):
            state.caught_up_at[follower] = now
        state.leo_at_last_fetch[follower] = state.log.next_offset
        state.advance_hw()
        if (
            follower not in state.isr
            and follower not in state.joining
            and offset >= state.hw
            and state.epochs
            and offset >= state.epochs[-1][1]
        ):
            state.joining.add(follower)
            self._spawn(self._change_isr(state, (*state.isr, follower)))

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
                    answer.error_code = (
                        p.ErrorCode.NOT_LEADER_OR_FOLLOWER
                        if part.partition_index < self.topics(internal=True).get(topic.name, 0)
                        else p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    )
                elif error := self._fetch_error(state, part.current_leader_epoch):
                    answer.error_code = error
                elif part.timestamp == -1:  # latest: what consumers may read up to
                    if state.epochs and state.hw < state.epochs[-1][1]:
                        # A new leader whose high watermark has not yet reached its epoch's
                        # start would answer an offset that goes backwards (KIP-207).
                        answer.error_code = p.ErrorCode.OFFSET_NOT_AVAILABLE
                    else:
                        answer.offset = state.hw
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
            names = sorted(self.topics(internal=True))
        else:
            names = request.topics
        topics = []
        for name in names:
            if name not in self.topics(internal=True) and request.allow_auto_topic_creation:
                await self._auto_create(name)
            if name not in self.topics(internal=True):
                code = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                try:
                    check_topic_name(name)
                except InvalidArgument:
                    code = p.ErrorCode.INVALID_TOPIC_EXCEPTION
                topics.append(p.MetadataTopic(name, [], error_code=code))
                continue
            topics.append(
                p.MetadataTopic(
                    name, self._partition_metadata(name), is_internal=name == OFFSETS_TOPIC
                )
            )
        if self.clustered and self._view is not None:
            view = self._view
            brokers = [
                p.MetadataBroker(info.node_id, info.host, info.port)
                for info in sorted(view.brokers.values(), key=lambda info: info.node_id)
            ]
            # Any broker takes admin requests (they go through etcd): while no
            # controller is elected yet, clients are pointed at this one.
            controller = self.config.node_id if view.controller is None else view.controller
        else:
            brokers = [p.MetadataBroker(self.config.node_id, self.advertised_host, self.port)]
            controller = self.config.node_id
        return p.MetadataResponse(
            brokers, topics, cluster_id=self._cluster_id, controller_id=controller
        )

    def _partition_metadata(self, name: str) -> list[p.MetadataPartition]:
        if not self.clustered or self._view is None:
            node = self.config.node_id
            count = self._topics[name].meta.partitions
            return [
                p.MetadataPartition(index, node, [node], [node], leader_epoch=0)
                for index in range(count)
            ]
        view = self._view
        partitions = []
        for index in range(view.topics[name].meta.partitions):
            state = view.partitions.get((name, index))
            if state is None:
                partitions.append(
                    p.MetadataPartition(
                        index, -1, [], [], error_code=p.ErrorCode.LEADER_NOT_AVAILABLE
                    )
                )
                continue
            offline = [node for node in state.replicas if node not in view.brokers]
            partitions.append(
                p.MetadataPartition(
                    index,
                    state.leader,
                    list(state.replicas),
                    list(state.isr),
                    error_code=p.ErrorCode.LEADER_NOT_AVAILABLE if state.leader < 0 else 0,
                    leader_epoch=state.leader_epoch,
                    offline_replicas=offline,
                )
            )
        return partitions

    async def _handle_find_coordinator(
        self, request: p.FindCoordinatorRequest, header: p.RequestHeader
    ) -> p.FindCoordinatorResponse:
        if request.key_type != 0:
            return p.FindCoordinatorResponse(
                p.ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1,
                error_message="transactions are not supported by sdi",
            )  # fmt: skip
        coordinator = self._coordinator()
        if coordinator is None:
            return p.FindCoordinatorResponse(
                p.ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1,
                error_message="__consumer_offsets has no leader yet; ask again",
            )  # fmt: skip
        node, host, port = coordinator
        return p.FindCoordinatorResponse(p.ErrorCode.NONE, node, host, port)

    def _coordinator(self) -> tuple[int, str, int] | None:
        """The broker that coordinates every group: the leader of ``__consumer_offsets-0``.

        Group membership lives in the coordinator's memory (members join again
        when it moves); the committed offsets are that partition's records,
        replicated like any other, so they survive it.
        """
        if not self.clustered:
            return self.config.node_id, self.advertised_host, self.port
        view = self._view
        state = None if view is None else view.partitions.get((OFFSETS_TOPIC, 0))
        if view is None or state is None or state.leader not in view.brokers:
            return None
        info = view.brokers[state.leader]
        return info.node_id, info.host, info.port

    async def _handle_join_group(
        self, request: p.JoinGroupRequest, header: p.RequestHeader
    ) -> p.JoinGroupResponse:
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            return p.JoinGroupResponse(ready, -1, "", "", "", [])
        return await self._groups.join(request, header.client_id or "", header.api_version)

    async def _handle_sync_group(
        self, request: p.SyncGroupRequest, header: p.RequestHeader
    ) -> p.SyncGroupResponse:
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            return p.SyncGroupResponse(ready, b"")
        return await self._groups.sync(request)

    async def _handle_heartbeat(
        self, request: p.HeartbeatRequest, header: p.RequestHeader
    ) -> p.HeartbeatResponse:
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            return p.HeartbeatResponse(ready)
        return self._groups.heartbeat(request.group_id, request.generation_id, request.member_id)

    async def _handle_leave_group(
        self, request: p.LeaveGroupRequest, header: p.RequestHeader
    ) -> p.LeaveGroupResponse:
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            return p.LeaveGroupResponse(ready)
        return self._groups.leave(request, header.api_version)

    async def _handle_offset_commit(
        self, request: p.OffsetCommitRequest, header: p.RequestHeader
    ) -> p.OffsetCommitResponse:
        allowed = self._groups.check_commit(
            request.group_id, request.generation_id, request.member_id
        )
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            allowed = ready
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
                    if (
                        not 0
                        <= part.partition_index
                        < self.topics(internal=True).get(topic.name, 0)
                    ):
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
            except _AppendRefusedError as refused:
                log.warning("storing committed offsets failed: %s", refused)
                # Not stored: NOT_COORDINATOR sends the client to look again, any other
                # failure (timed out, too few in-sync replicas) is retriable as it is.
                code = (
                    p.ErrorCode.NOT_COORDINATOR
                    if refused.code
                    in (p.ErrorCode.NOT_COORDINATOR, p.ErrorCode.NOT_LEADER_OR_FOLLOWER)
                    else p.ErrorCode.COORDINATOR_NOT_AVAILABLE
                )
                answers = [
                    (name, [(index, int(code)) for index, _ in codes]) for name, codes in answers
                ]
        return p.OffsetCommitResponse(answers)

    async def _handle_offset_fetch(
        self, request: p.OffsetFetchRequest, header: p.RequestHeader
    ) -> p.OffsetFetchResponse:
        wanted: list[tuple[str, list[int]]]
        ready = self._offsets_ready()
        if ready is not p.ErrorCode.NONE:
            return p.OffsetFetchResponse([], error_code=ready)
        committed = await self._group_offsets(request.group_id)
        if request.topics is None:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in sorted(committed):
                by_topic.setdefault(topic, []).append(partition)
            wanted = list(by_topic.items())
        else:
            wanted = request.topics
        topics = []
        for name, partitions in wanted:
            answers = []
            for index in partitions:
                entry = committed.get((name, index))
                if entry is None:
                    answers.append(p.OffsetFetchPartitionResponse(index, -1, -1, "", 0))
                else:
                    offset, epoch, metadata = entry
                    answers.append(p.OffsetFetchPartitionResponse(index, offset, epoch, metadata))
            topics.append(p.OffsetFetchTopicResponse(name, answers))
        return p.OffsetFetchResponse(topics)

    async def _handle_create_topics(
        self, request: p.CreateTopicsRequest, header: p.RequestHeader
    ) -> p.CreateTopicsResponse:
        results = []
        for topic in request.topics:
            result = p.CreatableTopicResult(topic.name)
            try:
                if topic.assignments:
                    result.error_code = p.ErrorCode.INVALID_REQUEST
                    result.error_message = "manual replica assignment is not supported"
                else:
                    await self.create_topic(
                        topic.name,
                        topic.num_partitions,
                        dict(topic.configs),
                        replication_factor=topic.replication_factor,
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
                elif isinstance(error, InvalidReplicationFactor):
                    result.error_code = p.ErrorCode.INVALID_REPLICATION_FACTOR
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
            except InvalidArgument:
                responses.append((name, int(p.ErrorCode.INVALID_REQUEST)))
        return p.DeleteTopicsResponse(responses)

    async def _handle_offset_for_leader_epoch(
        self, request: p.OffsetForLeaderEpochRequest, header: p.RequestHeader
    ) -> p.OffsetForLeaderEpochResponse:
        topics = []
        for name, partitions in request.topics:
            answers = []
            for part in partitions:
                state = self._partition(name, part.partition)
                if state is None or state.log.closed:
                    code: int = p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    if part.partition < self.topics(internal=True).get(name, 0):
                        code = p.ErrorCode.NOT_LEADER_OR_FOLLOWER
                    answers.append(p.EpochEndOffset(code, part.partition))
                    continue
                code = self._fetch_error(state, part.current_leader_epoch)
                if code:
                    answers.append(p.EpochEndOffset(code, part.partition))
                    continue
                epoch, end = state.epoch_end(part.leader_epoch)
                answers.append(p.EpochEndOffset(0, part.partition, epoch, end))
            topics.append((name, answers))
        return p.OffsetForLeaderEpochResponse(topics)

    async def _handle_init_producer_id(
        self, request: p.InitProducerIdRequest, header: p.RequestHeader
    ) -> p.InitProducerIdResponse:
        if request.transactional_id is not None:
            # TRANSACTIONAL_ID_AUTHORIZATION_FAILED is what a client without
            # transaction rights sees; sdi has no transactions at all.
            return p.InitProducerIdResponse(p.ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        if self.clustered and self._next_producer_id >= self._producer_id_limit:
            assert self._metadata is not None
            try:
                start = await self._metadata.allocate_producer_ids(PRODUCER_ID_BLOCK)
            except EtcdError as error:
                log.warning("allocating producer ids failed: %s", error)
                return p.InitProducerIdResponse(p.ErrorCode.COORDINATOR_NOT_AVAILABLE)
            self._next_producer_id, self._producer_id_limit = start, start + PRODUCER_ID_BLOCK
        producer_id = self._allocate_producer_id()
        return p.InitProducerIdResponse(p.ErrorCode.NONE, producer_id, 0)


def _batches_below(data: bytes, end: int) -> bytes:
    """The leading whole Kafka record batches of ``data`` whose offsets are all below ``end``."""
    position = 0
    while position + 12 <= len(data):
        base = int.from_bytes(data[position : position + 8], "big", signed=True)
        size = 12 + int.from_bytes(data[position + 8 : position + 12], "big")
        last = base + int.from_bytes(data[position + 23 : position + 27], "big")
        if last >= end or position + size > len(data):
            break
        position += size
    return data[:position]


def _now_ms() -> int:
    return int(time.time() * 1000)
