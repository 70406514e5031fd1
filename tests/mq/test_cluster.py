"""The cluster metadata in a real etcd, and the controller's election rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdi.errors import InvalidArgument
from sdi.mq.cluster import (
    ClusterMetadata,
    ClusterView,
    Controller,
    PartitionState,
    assign_replicas,
)
from sdi.mq.etcd import Etcd, EtcdMember
from sdi.mq.topics import TopicConfig, TopicMeta
from sdi.testing import servers

ELECT = Controller._next_state


def test_a_dead_leader_is_replaced_by_the_first_live_in_sync_replica() -> None:
    state = PartitionState(0, 4, (0, 1, 2), (0, 1, 2))
    new = ELECT(state, live={1, 2}, restarted=set())
    assert (new.leader, new.leader_epoch, new.isr) == (1, 5, (1, 2))
    # A live leader keeps its epoch; dead followers leave the ISR.
    same = ELECT(state, live={0, 2}, restarted=set())
    assert (same.leader, same.leader_epoch, same.isr) == (0, 4, (0, 2))
    assert ELECT(state, live={0, 1, 2}, restarted=set()) == state


def test_no_live_in_sync_replica_means_offline_not_an_unclean_leader() -> None:
    state = PartitionState(0, 1, (0,), (0, 1, 2))
    offline = ELECT(state, live={1, 2}, restarted=set())
    assert (offline.leader, offline.leader_epoch, offline.isr) == (-1, 2, (0,))
    assert ELECT(offline, live={1, 2}, restarted=set()) == offline
    # The last in-sync replica coming back leads again.
    back = ELECT(offline, live={0, 1, 2}, restarted=set())
    assert (back.leader, back.leader_epoch, back.isr) == (0, 3, (0,))


def test_a_restarted_broker_leaves_the_isr_unless_it_is_the_only_copy() -> None:
    state = PartitionState(0, 2, (0, 1), (0, 1))
    moved = ELECT(state, live={0, 1}, restarted={0})
    assert (moved.leader, moved.leader_epoch, moved.isr) == (1, 3, (1,))
    alone = PartitionState(0, 2, (0,), (0, 1))
    kept = ELECT(alone, live={0, 1}, restarted={0})
    assert (kept.leader, kept.isr) == (0, (0,))


def test_replicas_are_spread_round_robin() -> None:
    assert assign_replicas([2, 0, 1], 3, 3) == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    with pytest.raises(InvalidArgument, match="needs as many live brokers"):
        assign_replicas([0, 1], 1, 3)


def test_metadata_in_etcd(tmp_path: Path, run_async) -> None:
    servers.require_binary("etcd")
    client_port, peer_port = servers.free_port(), servers.free_port()
    member = EtcdMember(
        "m0",
        tmp_path / "etcd",
        f"http://127.0.0.1:{client_port}",
        f"http://127.0.0.1:{peer_port}",
        {"m0": f"http://127.0.0.1:{peer_port}"},
    )

    async def scenario() -> None:
        await member.start()
        try:
            async with Etcd([member.client_url]) as etcd:
                first, second = ClusterMetadata(etcd, 0), ClusterMetadata(etcd, 1)
                await first.register("127.0.0.1", 9000)
                await second.register("127.0.0.1", 9010)
                assert await first.campaign()
                assert not await second.campaign()  # one controller at a time
                assert await first.cluster_id() == await second.cluster_id()

                meta = TopicMeta("t", 2, TopicConfig(), "id-1")
                await first.create_topic(meta, [[0, 1], [1, 0]])
                with pytest.raises(FileExistsError):
                    await second.create_topic(meta, [[0, 1], [1, 0]])
                view: ClusterView = await first.view()
                assert set(view.brokers) == {0, 1}
                assert view.controller == 0
                state = view.partitions[("t", 1)]
                assert (state.leader, state.leader_epoch, state.isr) == (1, 0, (1, 0))

                # Compare-and-swap: a stale writer loses.
                shrunk = PartitionState(1, 0, (1,), state.replicas, state.mod_revision)
                assert await first.update_partition("t", 1, state, shrunk)
                assert not await second.update_partition("t", 1, state, shrunk)

                # The controller elects when the leader's broker leaves.
                await second.close()
                view = await first.view()
                assert set(view.brokers) == {0}
                assert await Controller(first).step(view) == 2
                view = await first.view()
                assert view.partitions[("t", 0)].isr == (0,)
                assert view.partitions[("t", 1)].leader == -1  # its only in-sync copy is gone

                blocks = [await first.allocate_producer_ids(1000) for _ in range(2)]
                assert blocks == [0, 1000]
                await first.delete_topic("t")
                assert (await first.view()).topics == {}
                with pytest.raises(KeyError):
                    await first.delete_topic("t")
                await first.close()
        finally:
            await member.stop()

    run_async(scenario())
