"""Consumer groups: the coordinator of Kafka's classic group protocol, and the assignors.

Members join a group (JoinGroup), the coordinator waits until every known
member has joined or the rebalance time-out has passed, then starts a new
generation: it picks the protocol (assignor) all members support, names a
leader and sends the leader every member's subscription. The leader computes
the assignment (clients do this: :func:`assign_range` and
:func:`assign_round_robin` are what sdi's own consumer uses) and sends it in
its SyncGroup; every member gets its share in the SyncGroup answer.
Heartbeats keep a member in the group; one that misses its session time-out
is removed and the others rebalance. Heartbeats during a rebalance answer
REBALANCE_IN_PROGRESS, which tells a member to join again.

States, as Kafka names them: ``Empty`` (no members), ``PreparingRebalance``
(waiting for joins), ``CompletingRebalance`` (waiting for the leader's
assignment), ``Stable``.

>>> assign_range({"a": ["t"], "b": ["t"]}, {"t": 3})
{'a': {'t': [0, 1]}, 'b': {'t': [2]}}
>>> assign_round_robin({"a": ["t", "u"], "b": ["t", "u"]}, {"t": 2, "u": 1})
{'a': {'t': [0], 'u': [0]}, 'b': {'t': [1]}}
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sdi.mq.protocol import (
    ErrorCode,
    HeartbeatResponse,
    JoinGroupMember,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from sdi.runtime.service import cancel_and_wait

__all__ = [
    "GroupCoordinator",
    "GroupState",
    "assign_range",
    "assign_round_robin",
]


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"


@dataclass(slots=True)
class _Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_heartbeat: float = field(default_factory=time.monotonic)
    join: asyncio.Future[JoinGroupResponse] | None = None
    sync: asyncio.Future[SyncGroupResponse] | None = None
    assignment: bytes = b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        return next(data for name, data in self.protocols if name == protocol)


@dataclass(slots=True)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    #: Member ids handed out with MEMBER_ID_REQUIRED, waiting for their join.
    pending: dict[str, float] = field(default_factory=dict)
    rebalance_timer: asyncio.TimerHandle | None = None
    rebalance_deadline: float = 0.0
    #: A rebalance of an empty group completes no sooner than this (the initial delay).
    hold_until: float = 0.0


class GroupCoordinator:
    """Every consumer group this broker coordinates (all of them, on one broker).

    ``session_timeout_range_ms`` bounds the session time-outs members may ask
    for (Kafka's ``group.min/max.session.timeout.ms``);
    ``initial_rebalance_delay_ms`` holds the first rebalance of an empty
    group back so that members starting together land in one generation
    (Kafka's ``group.initial.rebalance.delay.ms``). ``on_change`` is called
    with the group id whenever a group's generation or members change.
    """

    def __init__(
        self,
        *,
        session_timeout_range_ms: tuple[int, int] = (1_000, 1_800_000),
        initial_rebalance_delay_ms: int = 300,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._groups: dict[str, _Group] = {}
        self._session_range = session_timeout_range_ms
        self._initial_delay = initial_rebalance_delay_ms / 1000
        self._on_change = on_change
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Starts the task that removes members whose session expired."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def stop(self) -> None:
        """Stops the reaper and fails every join and sync still waiting."""
        await cancel_and_wait(self._reaper)
        self._reaper = None
        for group in self._groups.values():
            if group.rebalance_timer is not None:
                group.rebalance_timer.cancel()
            for member in group.members.values():
                self._fail_waiters(group, member, ErrorCode.COORDINATOR_NOT_AVAILABLE)

    def reset(self) -> None:
        """Forgets every group (this broker stopped or started coordinating).

        Joins and syncs still waiting get NOT_COORDINATOR, so their clients
        look for the coordinator again.
        """
        for group in self._groups.values():
            if group.rebalance_timer is not None:
                group.rebalance_timer.cancel()
            for member in group.members.values():
                self._fail_waiters(group, member, ErrorCode.NOT_COORDINATOR)
        self._groups.clear()

    # -- queries ------------------------------------------------------------

    def state(self, group_id: str) -> GroupState | None:
        """The group's state, or ``None`` for a group this coordinator does not know."""
        group = self._groups.get(group_id)
        return None if group is None else group.state

    def generation(self, group_id: str) -> int:
        group = self._groups.get(group_id)
        return -1 if group is None else group.generation_id

    def members(self, group_id: str) -> list[str]:
        group = self._groups.get(group_id)
        return [] if group is None else list(group.members)

    def groups(self) -> list[str]:
        return list(self._groups)

    def check_commit(self, group_id: str, generation_id: int, member_id: str) -> ErrorCode:
        """Whether a member may commit offsets now (OffsetCommit's checks)."""
        group = self._groups.get(group_id)
        if generation_id < 0 and not member_id:
            # A consumer outside group management (assign(), not subscribe()).
            if group is None or group.state is GroupState.EMPTY:
                return ErrorCode.NONE
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group is None or member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.state in (GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE):
            return ErrorCode.REBALANCE_IN_PROGRESS
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        group.members[member_id].last_heartbeat = time.monotonic()
        return ErrorCode.NONE

    # -- JoinGroup ----------------------------------------------------------

    async def join(
        self, request: JoinGroupRequest, client_id: str, version: int
    ) -> JoinGroupResponse:
        """Handles one JoinGroup; returns when the next generation starts (or at once on error)."""

        def error(code: ErrorCode, member_id: str = "") -> JoinGroupResponse:
            return JoinGroupResponse(int(code), -1, "", "", member_id, [])

        if not request.group_id:
            return error(ErrorCode.INVALID_GROUP_ID)
        low, high = self._session_range
        if not low <= request.session_timeout_ms <= high:
            return error(ErrorCode.INVALID_SESSION_TIMEOUT)
        if not request.protocols or not request.protocol_type:
            return error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        group = self._groups.get(request.group_id)
        if group is None:
            group = self._groups[request.group_id] = _Group(request.group_id)
        if group.members and (
            request.protocol_type != group.protocol_type
            or not self._common_protocols(group, request.protocols)
        ):
            return error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)

        member_id = request.member_id
        if not member_id:
            member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            if version >= 4:
                # KIP-394: the client must come back with the id we hand it.
                group.pending[member_id] = time.monotonic() + request.session_timeout_ms / 1000
                return error(ErrorCode.MEMBER_ID_REQUIRED, member_id)
        elif member_id not in group.members and member_id not in group.pending:
            return error(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        group.pending.pop(member_id, None)

        loop = asyncio.get_running_loop()
        member = group.members.get(member_id)
        if member is None:
            member = _Member(
                member_id,
                request.group_instance_id,
                client_id,
                request.session_timeout_ms,
                request.rebalance_timeout_ms,
                request.protocol_type,
                list(request.protocols),
            )
            group.members[member_id] = member
            if group.protocol_type is None:
                group.protocol_type = request.protocol_type
        else:
            unchanged = member.protocols == list(request.protocols)
            member.protocols = list(request.protocols)
            member.session_timeout_ms = request.session_timeout_ms
            member.rebalance_timeout_ms = request.rebalance_timeout_ms
            member.last_heartbeat = time.monotonic()
            if (
                unchanged
                and group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE)
                and member_id != group.leader_id
            ):
                # Nothing changed for a follower: it gets the current generation again.
                return self._join_response(group, member)
            if member.join is not None and not member.join.done():
                # A retried join replaces the one still waiting.
                member.join.set_result(error(ErrorCode.REBALANCE_IN_PROGRESS, member_id))
        waiting: asyncio.Future[JoinGroupResponse] = loop.create_future()
        member.join = waiting
        self._prepare_rebalance(group)
        self._maybe_complete_join(group)
        return await waiting

    def _common_protocols(self, group: _Group, protocols: Iterable[tuple[str, bytes]]) -> set[str]:
        names = {name for name, _ in protocols}
        for member in group.members.values():
            names &= set(member.protocol_names())
        return names

    def _prepare_rebalance(self, group: _Group) -> None:
        if group.state is GroupState.PREPARING_REBALANCE:
            return
        for member in group.members.values():
            if member.sync is not None and not member.sync.done():
                member.sync.set_result(SyncGroupResponse(int(ErrorCode.REBALANCE_IN_PROGRESS), b""))
            member.sync = None
        was_empty = group.state is GroupState.EMPTY
        group.state = GroupState.PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0) / 1000
        if was_empty:
            # Hold the first generation back a little so members starting together share it.
            timeout = min(timeout, self._initial_delay) if timeout else self._initial_delay
        group.rebalance_deadline = time.monotonic() + timeout
        group.hold_until = group.rebalance_deadline if was_empty else 0.0
        loop = asyncio.get_running_loop()
        if group.rebalance_timer is not None:
            group.rebalance_timer.cancel()
        group.rebalance_timer = loop.call_later(timeout, self._rebalance_deadline, group)
        self._changed(group)

    def _rebalance_deadline(self, group: _Group) -> None:
        group.rebalance_timer = None
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        # Members that did not join again in time are out.
        for member_id, member in list(group.members.items()):
            if member.join is None:
                del group.members[member_id]
        self._complete_join(group)

    def _maybe_complete_join(self, group: _Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        if any(member.join is None for member in group.members.values()):
            return
        if time.monotonic() < group.hold_until:
            # A group that was empty waits out the initial delay (the timer completes it).
            return
        if group.rebalance_timer is not None:
            group.rebalance_timer.cancel()
            group.rebalance_timer = None
        self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        group.generation_id += 1
        if not group.members:
            group.state = GroupState.EMPTY
            group.protocol_type = group.protocol_name = group.leader_id = None
            self._changed(group)
            return
        group.protocol_name = self._choose_protocol(group)
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.state = GroupState.COMPLETING_REBALANCE
        now = time.monotonic()
        for member in group.members.values():
            member.last_heartbeat = now
            member.assignment = b""
            join, member.join = member.join, None
            if join is not None and not join.done():
                join.set_result(self._join_response(group, member))
        self._changed(group)

    @staticmethod
    def _choose_protocol(group: _Group) -> str:
        members = list(group.members.values())
        candidates = set(members[0].protocol_names())
        for member in members[1:]:
            candidates &= set(member.protocol_names())
        votes: dict[str, int] = {}
        for member in members:
            vote = next(name for name in member.protocol_names() if name in candidates)
            votes[vote] = votes.get(vote, 0) + 1
        order = members[0].protocol_names()
        return max(votes, key=lambda name: (votes[name], -order.index(name)))

    def _join_response(self, group: _Group, member: _Member) -> JoinGroupResponse:
        assert group.protocol_name is not None
        assert group.leader_id is not None
        members = []
        if member.member_id == group.leader_id:
            members = [
                JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                for m in group.members.values()
            ]
        return JoinGroupResponse(
            int(ErrorCode.NONE),
            group.generation_id,
            group.protocol_name,
            group.leader_id,
            member.member_id,
            members,
        )

    # -- SyncGroup ----------------------------------------------------------

    async def sync(self, request: SyncGroupRequest) -> SyncGroupResponse:
        """Handles one SyncGroup: the leader's carries the assignment; everyone gets theirs."""
        group = self._groups.get(request.group_id)
        if group is None or request.member_id not in group.members:
            return SyncGroupResponse(int(ErrorCode.UNKNOWN_MEMBER_ID), b"")
        if request.generation_id != group.generation_id:
            return SyncGroupResponse(int(ErrorCode.ILLEGAL_GENERATION), b"")
        member = group.members[request.member_id]
        member.last_heartbeat = time.monotonic()
        if group.state is GroupState.PREPARING_REBALANCE:
            return SyncGroupResponse(int(ErrorCode.REBALANCE_IN_PROGRESS), b"")
        if group.state is GroupState.STABLE:
            return SyncGroupResponse(int(ErrorCode.NONE), member.assignment)
        # CompletingRebalance: wait for the leader's assignment.
        member.sync = asyncio.get_running_loop().create_future()
        waiting = member.sync
        if request.member_id == group.leader_id:
            assignments = dict(request.assignments)
            for other in group.members.values():
                other.assignment = assignments.get(other.member_id, b"")
            group.state = GroupState.STABLE
            for other in group.members.values():
                if other.sync is not None and not other.sync.done():
                    other.sync.set_result(SyncGroupResponse(int(ErrorCode.NONE), other.assignment))
                other.sync = None
            self._changed(group)
        return await waiting

    # -- Heartbeat and LeaveGroup -------------------------------------------

    def heartbeat(self, group_id: str, generation_id: int, member_id: str) -> HeartbeatResponse:
        group = self._groups.get(group_id)
        if group is None or member_id not in group.members:
            return HeartbeatResponse(int(ErrorCode.UNKNOWN_MEMBER_ID))
        member = group.members[member_id]
        member.last_heartbeat = time.monotonic()
        if group.state is GroupState.PREPARING_REBALANCE:
            return HeartbeatResponse(int(ErrorCode.REBALANCE_IN_PROGRESS))
        if generation_id != group.generation_id:
            return HeartbeatResponse(int(ErrorCode.ILLEGAL_GENERATION))
        return HeartbeatResponse(int(ErrorCode.NONE))

    def leave(self, request: LeaveGroupRequest, version: int) -> LeaveGroupResponse:
        group = self._groups.get(request.group_id)
        results: list[tuple[str, str | None, int]] = []
        left = False
        for member_id, instance_id in request.members:
            member = None if group is None else group.members.get(member_id)
            if group is None or member is None:
                results.append((member_id, instance_id, int(ErrorCode.UNKNOWN_MEMBER_ID)))
                continue
            self._fail_waiters(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
            del group.members[member_id]
            results.append((member_id, instance_id, int(ErrorCode.NONE)))
            left = True
        if group is not None and left:
            self._members_gone(group)
        if version >= 3:
            return LeaveGroupResponse(int(ErrorCode.NONE), results)
        code = results[0][2] if results else int(ErrorCode.NONE)
        return LeaveGroupResponse(code)

    def _members_gone(self, group: _Group) -> None:
        if group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        elif not group.members:
            group.state = GroupState.EMPTY
            group.generation_id += 1
            group.protocol_type = group.protocol_name = group.leader_id = None
            self._changed(group)
        else:
            self._prepare_rebalance(group)
            self._maybe_complete_join(group)

    def _fail_waiters(self, group: _Group, member: _Member, code: ErrorCode) -> None:
        if member.join is not None and not member.join.done():
            member.join.set_result(JoinGroupResponse(int(code), -1, "", "", member.member_id, []))
        if member.sync is not None and not member.sync.done():
            member.sync.set_result(SyncGroupResponse(int(code), b""))
        member.join = member.sync = None

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.expire(time.monotonic())

    def expire(self, now: float) -> list[str]:
        """Removes members whose session ran out at ``now``; returns their ids."""
        gone: list[str] = []
        for group in self._groups.values():
            for pending_id, deadline in list(group.pending.items()):
                if now > deadline:
                    del group.pending[pending_id]
            expired = [
                member
                for member in group.members.values()
                if member.join is None
                and now > member.last_heartbeat + member.session_timeout_ms / 1000
            ]
            for member in expired:
                self._fail_waiters(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
                del group.members[member.member_id]
                gone.append(member.member_id)
            if expired:
                self._members_gone(group)
        return gone

    def _changed(self, group: _Group) -> None:
        if self._on_change is not None:
            self._on_change(group.group_id)


# -- assignors (what a group leader computes) --------------------------------


def assign_range(
    subscriptions: Mapping[str, Iterable[str]], partitions: Mapping[str, int]
) -> dict[str, dict[str, list[int]]]:
    """Kafka's ``range`` assignor: per topic, consecutive partitions to members in id order.

    The first ``partitions % members`` members get one partition more.
    """
    result: dict[str, dict[str, list[int]]] = {member: {} for member in subscriptions}
    topics = sorted({topic for topics in subscriptions.values() for topic in topics})
    for topic in topics:
        members = sorted(m for m, subscribed in subscriptions.items() if topic in subscribed)
        count = partitions.get(topic, 0)
        share, extra = divmod(count, len(members))
        start = 0
        for at, member in enumerate(members):
            size = share + (1 if at < extra else 0)
            if size:
                result[member][topic] = list(range(start, start + size))
            start += size
    return result


def assign_round_robin(
    subscriptions: Mapping[str, Iterable[str]], partitions: Mapping[str, int]
) -> dict[str, dict[str, list[int]]]:
    """Kafka's ``roundrobin`` assignor: all topic-partitions, sorted, dealt to members in turn.

    A member is skipped for a partition of a topic it does not subscribe to.
    """
    result: dict[str, dict[str, list[int]]] = {member: {} for member in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return result
    subscribed = {member: set(topics) for member, topics in subscriptions.items()}
    turn = 0
    for topic in sorted({topic for topics in subscribed.values() for topic in topics}):
        for partition in range(partitions.get(topic, 0)):
            for _ in range(len(members)):
                member = members[turn % len(members)]
                turn += 1
                if topic in subscribed[member]:
                    result[member].setdefault(topic, []).append(partition)
                    break
    return result
