"""The group coordinator's state machine and the range and round-robin assignors."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given
from hypothesis import strategies as st

from sdi.mq.group import GroupCoordinator, GroupState, assign_range, assign_round_robin
from sdi.mq.protocol import (
    ErrorCode,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    SyncGroupRequest,
)


def _join(
    member_id: str = "", session_ms: int = 10_000, protocols: str = "range"
) -> JoinGroupRequest:
    return JoinGroupRequest(
        "g", session_ms, 5_000, member_id, None, "consumer",
        [(name, name.encode()) for name in protocols.split(",")],
    )  # fmt: skip


async def _joined(coordinator: GroupCoordinator, client: str, **options: object) -> str:
    """A new member's id, after the MEMBER_ID_REQUIRED round trip of JoinGroup v4+."""
    first = await coordinator.join(_join(**options), client, 5)  # type: ignore[arg-type]
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
    assert first.member_id.startswith(client)
    return first.member_id


def test_two_members_share_a_generation_and_the_leader_assigns(run_async) -> None:
    async def scenario() -> None:
        coordinator = GroupCoordinator(initial_rebalance_delay_ms=100)
        coordinator.start()
        a = await _joined(coordinator, "a")
        b = await _joined(coordinator, "b", protocols="roundrobin,range")
        answers = await asyncio.gather(
            coordinator.join(_join(a), "a", 5),
            coordinator.join(_join(b, protocols="roundrobin,range"), "b", 5),
        )
        assert {answer.error_code for answer in answers} == {0}
        assert {answer.generation_id for answer in answers} == {1}
        # Only "range" is common to both.
        assert {answer.protocol_name for answer in answers} == {"range"}
        leader = answers[0].leader
        assert leader in (a, b)
        leader_answer = next(x for x in answers if x.member_id == leader)
        assert sorted(m.member_id for m in leader_answer.members) == sorted([a, b])
        assert next(x for x in answers if x.member_id != leader).members == []
        assert coordinator.state("g") is GroupState.COMPLETING_REBALANCE

        follower = b if leader == a else a
        follower_sync = asyncio.ensure_future(
            coordinator.sync(SyncGroupRequest("g", 1, follower, None, []))
        )
        await asyncio.sleep(0.01)
        assert not follower_sync.done()
        leader_sync = await coordinator.sync(
            SyncGroupRequest("g", 1, leader, None, [(a, b"for a"), (b, b"for b")])
        )
        assert leader_sync.assignment == (b"for a" if leader == a else b"for b")
        assert (await follower_sync).assignment == (b"for b" if leader == a else b"for a")
        assert coordinator.state("g") is GroupState.STABLE
        assert coordinator.heartbeat("g", 1, a).error_code == 0
        assert coordinator.heartbeat("g", 0, a).error_code == ErrorCode.ILLEGAL_GENERATION
        assert coordinator.heartbeat("g", 1, "stranger").error_code == ErrorCode.UNKNOWN_MEMBER_ID
        await coordinator.stop()

    run_async(scenario())


def test_a_leave_rebalances_and_heartbeats_say_so(run_async) -> None:
    async def scenario() -> None:
        coordinator = GroupCoordinator(initial_rebalance_delay_ms=100)
        coordinator.start()
        a = await _joined(coordinator, "a")
        b = await _joined(coordinator, "b")
        first = await asyncio.gather(
            coordinator.join(_join(a), "a", 5), coordinator.join(_join(b), "b", 5)
        )
        generation = first[0].generation_id
        assert first[0].leader == a
        # The follower waits for the leader's assignment, which never comes.
        waiting = asyncio.ensure_future(
            coordinator.sync(SyncGroupRequest("g", generation, b, None, []))
        )
        await asyncio.sleep(0.01)
        leave = coordinator.leave(LeaveGroupRequest("g", [(b, None)]), 3)
        assert leave.members == [(b, None, 0)]
        assert coordinator.state("g") is GroupState.PREPARING_REBALANCE
        assert (
            coordinator.heartbeat("g", generation, a).error_code == ErrorCode.REBALANCE_IN_PROGRESS
        )
        again = await coordinator.join(_join(a), "a", 5)
        assert (again.generation_id, again.leader, again.error_code) == (generation + 1, a, 0)
        assert coordinator.members("g") == [a]
        # The sync b was waiting in ended when it left.
        assert (await waiting).error_code == ErrorCode.UNKNOWN_MEMBER_ID
        # Leaving twice: the member is not known any more.
        assert coordinator.leave(LeaveGroupRequest("g", [(b, None)]), 1).error_code == 25
        await coordinator.stop()

    run_async(scenario())


def test_a_silent_member_is_removed_after_its_session_timeout(run_async) -> None:
    async def scenario() -> None:
        coordinator = GroupCoordinator(initial_rebalance_delay_ms=100)
        a = await _joined(coordinator, "a", session_ms=1_000)
        b = await _joined(coordinator, "b", session_ms=1_000)
        await asyncio.gather(
            coordinator.join(_join(a, session_ms=1_000), "a", 5),
            coordinator.join(_join(b, session_ms=1_000), "b", 5),
        )
        joined = time.monotonic()
        assert coordinator.expire(joined + 0.5) == []
        await asyncio.sleep(0.3)
        coordinator.heartbeat("g", 1, a)
        # Only b stayed silent past its second.
        assert coordinator.expire(joined + 1.15) == [b]
        assert coordinator.members("g") == [a]
        assert coordinator.state("g") is GroupState.PREPARING_REBALANCE
        await coordinator.stop()

    run_async(scenario())


def test_join_errors(run_async) -> None:
    async def scenario() -> None:
        coordinator = GroupCoordinator(session_timeout_range_ms=(1_000, 60_000))

        def code(answer: JoinGroupResponse) -> int:
            return answer.error_code

        assert code(await coordinator.join(_join(session_ms=10), "c", 5)) == 26
        assert code(await coordinator.join(_join("never-issued"), "c", 5)) == 25
        bad = JoinGroupRequest("", 10_000, 5_000, "", None, "consumer", [("range", b"")])
        assert code(await coordinator.join(bad, "c", 5)) == 24
        # v3 and older get an id at once, without the extra round trip.
        coordinator_old = GroupCoordinator(initial_rebalance_delay_ms=100)
        answer = await coordinator_old.join(_join(), "c", 3)
        assert (answer.error_code, answer.generation_id) == (0, 1)
        # A member whose protocols share nothing with the group's is refused.
        other = await coordinator_old.join(_join(protocols="sticky"), "d", 3)
        assert code(other) == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        await coordinator.stop()
        await coordinator_old.stop()

    run_async(scenario())


subscriptions = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.sets(st.sampled_from(["t", "u", "v"]), min_size=1),
    min_size=1,
    max_size=6,
)
partition_counts = st.fixed_dictionaries(
    {"t": st.integers(0, 12), "u": st.integers(0, 12), "v": st.integers(0, 12)}
)


@given(subscriptions, partition_counts)
def test_assignors_give_each_subscribed_partition_to_exactly_one_subscriber(
    members: dict[str, set[str]], counts: dict[str, int]
) -> None:
    for assign in (assign_range, assign_round_robin):
        result = assign(members, counts)
        assert set(result) == set(members)
        owners: dict[tuple[str, int], str] = {}
        for member, topics in result.items():
            for topic, partitions in topics.items():
                assert topic in members[member]
                for partition in partitions:
                    assert (topic, partition) not in owners
                    owners[(topic, partition)] = member
        wanted = {topic for topics in members.values() for topic in topics}
        assert set(owners) == {(t, n) for t in wanted for n in range(counts[t])}
        if assign is assign_range:
            # Per topic, shares differ by at most one.
            for topic in wanted:
                shares = [len(result[m].get(topic, [])) for m in members if topic in members[m]]
                assert max(shares) - min(shares) <= 1


def test_reset_fails_waiting_joins_with_not_coordinator(run_async) -> None:
    async def scenario() -> None:
        coordinator = GroupCoordinator(initial_rebalance_delay_ms=10_000)
        a = await _joined(coordinator, "a")
        waiting = asyncio.ensure_future(coordinator.join(_join(a), "a", 5))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        coordinator.reset()
        assert (await waiting).error_code == ErrorCode.NOT_COORDINATOR
        assert coordinator.groups() == []
        await coordinator.stop()

    run_async(scenario())
