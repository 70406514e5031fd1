"""A replicated cluster's shared metadata in etcd, and the controller that keeps it.

Keys (all under ``/sdi/mq/``, values JSON)::

    brokers/<id>               host, port, incarnation; on a lease (TTL 2 s)
    controller                 the id of the controller broker; on its lease
    topics/<name>              partition count, config, topic id, replica lists
    partitions/<name>/<p>      leader, leader epoch, in-sync replicas
    producer_ids               the next block of producer ids

A broker is alive while its ``brokers`` key is, that is while it keeps its
lease alive (every half second). Every broker campaigns for the
``controller`` key (put-if-absent on its lease); the one holding it runs
:meth:`Controller.step`: for a partition whose leader is dead (or restarted)
it picks the first live replica still in the ISR as the new leader and
raises the leader epoch; dead replicas leave the ISR. A partition with no
live ISR member stays offline (leader -1) until one comes back: no unclean
election, so an acknowledged record is never given up. Every change is a
compare-and-swap on the partition key's revision, so two controllers (one
about to lose its lease) cannot both win. Partition leaders change the ISR
the same way (:meth:`ClusterMetadata.update_partition`), only under the
epoch they lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sdi.errors import InvalidArgument
from sdi.mq.etcd import Etcd, EtcdError
from sdi.mq.topics import TopicMeta
from sdi.runtime.service import cancel_and_wait

__all__ = [
    "BrokerInfo",
    "ClusterMetadata",
    "ClusterView",
    "Controller",
    "PartitionState",
    "TopicAssignment",
    "assign_replicas",
]

log = logging.getLogger("sdi.mq.cluster")

PREFIX = b"/sdi/mq/"
BROKER_TTL_SECONDS = 2
#: etcd refuses a transaction of more than 128 operations.
PARTITIONS_PER_TOPIC_MAX = 120


def _key(*parts: str | int) -> bytes:
    return PREFIX + "/".join(str(part) for part in parts).encode()


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    incarnation: str


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Who leads a partition, under which epoch, and which replicas are in sync."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    replicas: tuple[int, ...]
    mod_revision: int = 0

    def to_json(self) -> bytes:
        return json.dumps(
            {"leader": self.leader, "leader_epoch": self.leader_epoch, "isr": list(self.isr)}
        ).encode()


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    meta: TopicMeta
    replicas: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent read of the whole metadata (one etcd revision)."""

    brokers: Mapping[int, BrokerInfo]
    topics: Mapping[str, TopicAssignment]
    partitions: Mapping[tuple[str, int], PartitionState]
    controller: int | None


def assign_replicas(brokers: list[int], partitions: int, factor: int) -> list[list[int]]:
    """Kafka's round-robin replica placement: partition p on brokers p, p+1, ... (mod n).

    >>> assign_replicas([0, 1, 2], 4, 2)
    [[0, 1], [1, 2], [2, 0], [0, 1]]
    """
    ordered = sorted(brokers)
    if not 1 <= factor <= len(ordered):
        raise InvalidArgument(
            f"replication factor {factor} needs as many live brokers; {len(ordered)} are up"
        )
    return [
        [ordered[(partition + at) % len(ordered)] for at in range(factor)]
        for partition in range(partitions)
    ]


class ClusterMetadata:
    """This broker's handle on the shared metadata."""

    def __init__(self, etcd: Etcd, node_id: int) -> None:
        self.etcd = etcd
        self.node_id = node_id
        self.incarnation = uuid.uuid4().hex
        self._lease = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._info: BrokerInfo | None = None

    # -- membership -----------------------------------------------------------

    async def register(self, host: str, port: int) -> int:
        """Announces this broker (a new incarnation) and keeps its lease alive.

        Returns the etcd revision of the registration: partition states older
        than it were written before this incarnation existed.
        """
        self._info = BrokerInfo(self.node_id, host, port, self.incarnation)
        revision = await self._put_registration()
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        return revision

    async def _put_registration(self) -> int:
        assert self._info is not None
        self._lease = await self.etcd.lease_grant(BROKER_TTL_SECONDS)
        info = self._info
        value = json.dumps(
            {"host": info.host, "port": info.port, "incarnation": info.incarnation}
        ).encode()
        return await self.etcd.put(_key("brokers", self.node_id), value, lease=self._lease)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(BROKER_TTL_SECONDS / 4)
            try:
                if await self.etcd.lease_keepalive(self._lease) == 0:
                    log.warning("broker %d's lease expired; registering again", self.node_id)
                    await self._put_registration()
            except EtcdError as error:
                log.warning("keeping broker %d's lease alive failed: %s", self.node_id, error)

    async def cluster_id(self) -> str:
        """The cluster's id, made by whichever broker asks first."""
        key = _key("cluster_id")
        await self.etcd.txn([(key, 0)], [(key, uuid.uuid4().hex[:22].encode(), 0)])
        found = await self.etcd.get(key)
        if found is None:
            raise EtcdError("the cluster id vanished from etcd")
        return found[0].decode()

    async def campaign(self) -> bool:
        """Takes the controller key if nobody holds it; True when this broker now does."""
        return await self.etcd.txn(
            [(_key("controller"), 0)],
            [(_key("controller"), str(self.node_id).encode(), self._lease)],
        )

    async def close(self) -> None:
        """Stops the keep-alive and gives up the lease (the broker leaves at once)."""
        await cancel_and_wait(self._keepalive)
        self._keepalive = None
        if self._lease:
            with contextlib.suppress(EtcdError):
                await self.etcd.lease_revoke(self._lease)
            self._lease = 0

    # -- reading --------------------------------------------------------------

    async def view(self) -> ClusterView:
        brokers: dict[int, BrokerInfo] = {}
        topics: dict[str, TopicAssignment] = {}
        partitions: dict[tuple[str, int], PartitionState] = {}
        raw_states: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}
        controller: int | None = None
        for key, value, mod_revision in await self.etcd.get_prefix(PREFIX):
            parts = key[len(PREFIX) :].decode().split("/")
            if parts[0] not in ("brokers", "controller", "topics", "partitions"):
                continue  # offsets, producer ids, the cluster id: read where they are used
            data = json.loads(value)
            if parts[0] == "brokers" and len(parts) == 2:
                node = int(parts[1])
                brokers[node] = BrokerInfo(node, data["host"], data["port"], data["incarnation"])
            elif parts[0] == "controller":
                controller = int(data)
            elif parts[0] == "topics" and len(parts) == 2:
                meta = TopicMeta.from_json(data)
                replicas = tuple(tuple(int(r) for r in rs) for rs in data["replicas"])
                topics[meta.name] = TopicAssignment(meta, replicas)
            elif parts[0] == "partitions" and len(parts) == 3:
                raw_states[(parts[1], int(parts[2]))] = (data, mod_revision)
        for (topic, index), (data, mod_revision) in raw_states.items():
            assignment = topics.get(topic)
            if assignment is None or index >= len(assignment.replicas):
                continue  # left over from a deletion in progress
            partitions[(topic, index)] = PartitionState(
                int(data["leader"]),
                int(data["leader_epoch"]),
                tuple(int(r) for r in data["isr"]),
                assignment.replicas[index],
                mod_revision,
            )
        return ClusterView(brokers, topics, partitions, controller)

    # -- writing --------------------------------------------------------------

    async def create_topic(self, meta: TopicMeta, replicas: list[list[int]]) -> None:
        """Creates a topic and its partitions' first states; FileExistsError if it exists."""
        if len(replicas) > PARTITIONS_PER_TOPIC_MAX:
            raise InvalidArgument(
                f"a replicated topic has at most {PARTITIONS_PER_TOPIC_MAX} partitions, "
                f"not {len(replicas)}"
            )
        topic = {**meta.to_json(), "replicas": replicas}
        puts = [(_key("topics", meta.name), json.dumps(topic).encode(), 0)]
        for index, assigned in enumerate(replicas):
            state = PartitionState(assigned[0], 0, tuple(assigned), tuple(assigned))
            puts.append((_key("partitions", meta.name, index), state.to_json(), 0))
        if not await self.etcd.txn([(_key("topics", meta.name), 0)], puts):
            raise FileExistsError(f"topic {meta.name!r} already exists")

    async def delete_topic(self, name: str) -> None:
        """Deletes a topic's keys; KeyError if there is no such topic."""
        found = await self.etcd.get(_key("topics", name))
        if found is None:
            raise KeyError(name)
        if not await self.etcd.txn([(_key("topics", name), found[1])], [], [_key("topics", name)]):
            raise KeyError(name)
        await self.etcd.delete_prefix(_key("partitions", name) + b"/")

    async def update_partition(
        self, topic: str, index: int, expected: PartitionState, new: PartitionState
    ) -> bool:
        """Writes ``new`` if the partition is still at ``expected``'s revision."""
        key = _key("partitions", topic, index)
        return await self.etcd.txn([(key, expected.mod_revision)], [(key, new.to_json(), 0)])

    async def allocate_producer_ids(self, block: int) -> int:
        """Reserves ``block`` producer ids for this broker; the first of them."""
        key = _key("producer_ids")
        while True:
            found = await self.etcd.get(key)
            start, revision = (int(found[0]), found[1]) if found else (0, 0)
            if await self.etcd.txn([(key, revision)], [(key, str(start + block).encode(), 0)]):
                return start


class Controller:
    """Leader election and ISR clean-up, run by whichever broker holds the controller key."""

    def __init__(self, metadata: ClusterMetadata) -> None:
        self.metadata = metadata
        self._incarnations: dict[int, str] = {}

    async def step(self, view: ClusterView) -> int:
        """One pass over every partition; returns how many it changed."""
        restarted = {
            node
            for node, info in view.brokers.items()
            if self._incarnations.get(node, info.incarnation) != info.incarnation
        }
        self._incarnations = {node: info.incarnation for node, info in view.brokers.items()}
        live = set(view.brokers)
        changed = 0
        for (topic, index), state in view.partitions.items():
            new = self._next_state(state, live, restarted)
            if new != state and await self.metadata.update_partition(topic, index, state, new):
                log.info(
                    "%s-%d: leader %d (epoch %d), isr %s",
                    topic, index, new.leader, new.leader_epoch, list(new.isr),
                )  # fmt: skip
                changed += 1
        return changed

    @staticmethod
    def _next_state(state: PartitionState, live: set[int], restarted: set[int]) -> PartitionState:
        # A restarted broker may have lost what it had not synced: it leaves
        # the ISR and catches up again, unless it is the only copy left.
        isr = [r for r in state.isr if r in live and r not in restarted]
        if not isr:
            isr = [r for r in state.isr if r in live]
        leader_ok = state.leader in isr and state.leader not in restarted
        if leader_ok:
            return replace(state, isr=tuple(isr))
        candidates = [r for r in state.replicas if r in isr]
        if not candidates:
            # Offline until an in-sync replica comes back; the ISR is kept as it was.
            if state.leader == -1:
                return state
            return replace(state, leader=-1, leader_epoch=state.leader_epoch + 1)
        return replace(
            state, leader=candidates[0], leader_epoch=state.leader_epoch + 1, isr=tuple(isr)
        )
