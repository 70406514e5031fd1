"""Group, offset, admin and producer-id API codecs against kafka-python, without a network.

Each request is encoded by kafka-python (with its header) and decoded by sdi;
each sdi response body is decoded by kafka-python, which must also re-encode
it to the same bytes (kafka-python ignores trailing bytes, so this is what
pins the layout down to the byte).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from sdi.errors import ProtocolError
from sdi.mq import protocol as p

from .test_apis import through_sdi

with warnings.catch_warnings():
    # kafka-python loads its JSON schemas through a deprecated importlib.resources call.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.admin.topics import CreateTopicsRequest as KCreateTopicsRequest
    from kafka.protocol.admin.topics import CreateTopicsResponse as KCreateTopicsResponse
    from kafka.protocol.admin.topics import DeleteTopicsRequest as KDeleteTopicsRequest
    from kafka.protocol.admin.topics import DeleteTopicsResponse as KDeleteTopicsResponse
    from kafka.protocol.consumer.group import HeartbeatRequest as KHeartbeatRequest
    from kafka.protocol.consumer.group import HeartbeatResponse as KHeartbeatResponse
    from kafka.protocol.consumer.group import JoinGroupRequest as KJoinGroupRequest
    from kafka.protocol.consumer.group import JoinGroupResponse as KJoinGroupResponse
    from kafka.protocol.consumer.group import LeaveGroupRequest as KLeaveGroupRequest
    from kafka.protocol.consumer.group import LeaveGroupResponse as KLeaveGroupResponse
    from kafka.protocol.consumer.group import OffsetCommitRequest as KOffsetCommitRequest
    from kafka.protocol.consumer.group import OffsetCommitResponse as KOffsetCommitResponse
    from kafka.protocol.consumer.group import OffsetFetchRequest as KOffsetFetchRequest
    from kafka.protocol.consumer.group import OffsetFetchResponse as KOffsetFetchResponse
    from kafka.protocol.consumer.group import SyncGroupRequest as KSyncGroupRequest
    from kafka.protocol.consumer.group import SyncGroupResponse as KSyncGroupResponse
    from kafka.protocol.metadata.find_coordinator import (
        FindCoordinatorRequest as KFindCoordinatorRequest,
    )
    from kafka.protocol.metadata.find_coordinator import (
        FindCoordinatorResponse as KFindCoordinatorResponse,
    )
    from kafka.protocol.producer.transaction import (
        InitProducerIdRequest as KInitProducerIdRequest,
    )
    from kafka.protocol.producer.transaction import (
        InitProducerIdResponse as KInitProducerIdResponse,
    )

#: Every API this file covers, with its sdi key, kafka-python classes and served versions.
APIS: dict[str, tuple[int, Any, Any, tuple[int, int]]] = {
    "OffsetCommit": (p.OFFSET_COMMIT, KOffsetCommitRequest, KOffsetCommitResponse, (0, 7)),
    "OffsetFetch": (p.OFFSET_FETCH, KOffsetFetchRequest, KOffsetFetchResponse, (0, 5)),
    "FindCoordinator": (
        p.FIND_COORDINATOR,
        KFindCoordinatorRequest,
        KFindCoordinatorResponse,
        (0, 2),
    ),
    "JoinGroup": (p.JOIN_GROUP, KJoinGroupRequest, KJoinGroupResponse, (0, 5)),
    "Heartbeat": (p.HEARTBEAT, KHeartbeatRequest, KHeartbeatResponse, (0, 3)),
    "LeaveGroup": (p.LEAVE_GROUP, KLeaveGroupRequest, KLeaveGroupResponse, (0, 3)),
    "SyncGroup": (p.SYNC_GROUP, KSyncGroupRequest, KSyncGroupResponse, (0, 3)),
    "CreateTopics": (p.CREATE_TOPICS, KCreateTopicsRequest, KCreateTopicsResponse, (0, 4)),
    "DeleteTopics": (p.DELETE_TOPICS, KDeleteTopicsRequest, KDeleteTopicsResponse, (0, 3)),
    "InitProducerId": (
        p.INIT_PRODUCER_ID,
        KInitProducerIdRequest,
        KInitProducerIdResponse,
        (0, 1),
    ),
}


def kafka_decode(response_class: Any, version: int, response: p.Response) -> Any:
    """sdi's response body at ``version``, decoded by kafka-python and checked byte for byte."""
    body = p.encode_response_body(response, version)
    theirs = response_class[version].decode(body)
    assert version == theirs.API_VERSION
    assert bytes(theirs.encode()) == body
    return theirs


def decode(message: Any) -> Any:
    return p.decode_request(through_sdi(message))


@pytest.mark.parametrize("name", sorted(APIS))
def test_keys_versions_and_header_versions(name: str) -> None:
    api_key, request_class, response_class, versions = APIS[name]
    assert request_class.API_KEY == response_class.API_KEY == api_key
    assert p.SUPPORTED_VERSIONS[api_key] == versions
    # Every served version is below the first flexible one, and the request
    # header version follows kafka-python's flexibleVersions up to its newest.
    assert not request_class.flexible_version_q(versions[1])
    assert request_class.flexible_version_q(versions[1] + 1)
    for version in range(request_class.max_version + 1):
        expected = 2 if request_class.flexible_version_q(version) else 1
        assert p.request_header_version(api_key, version) == expected


def test_error_codes_match_kafka_python() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import errors

    for code in p.ErrorCode:
        assert errors.for_code(int(code)).errno == code, code.name
    assert p.ErrorCode.UNSUPPORTED_VERSION == p.UNSUPPORTED_VERSION == 35
    assert errors.for_code(6).__name__ == "NotLeaderForPartitionError"
    assert errors.for_code(82).__name__ == "FencedInstanceIdError"


@pytest.mark.parametrize("version", range(3))
def test_find_coordinator(version: int) -> None:
    request = KFindCoordinatorRequest[version]
    kwargs: dict[str, Any] = {"key": "txn-1"}
    if version >= 1:
        kwargs["key_type"] = 1
    assert decode(request(**kwargs)) == p.FindCoordinatorRequest("txn-1", 1 if version >= 1 else 0)
    response = p.FindCoordinatorResponse(
        p.ErrorCode.COORDINATOR_NOT_AVAILABLE, 3, "broker-3", 9094, "loading", 6
    )
    theirs = kafka_decode(KFindCoordinatorResponse, version, response)
    assert (theirs.error_code, theirs.node_id, theirs.host, theirs.port) == (
        15,
        3,
        "broker-3",
        9094,
    )
    if version >= 1:
        assert (theirs.throttle_time_ms, theirs.error_message) == (6, "loading")
    ok = kafka_decode(KFindCoordinatorResponse, version, p.FindCoordinatorResponse(0, 1, "h", 1))
    assert ok.error_code == 0
    if version >= 1:
        assert ok.error_message is None


@pytest.mark.parametrize("version", range(6))
def test_join_group(version: int) -> None:
    request = KJoinGroupRequest[version]
    protocol = request.JoinGroupRequestProtocol
    kwargs: dict[str, Any] = {
        "group_id": "g",
        "session_timeout_ms": 10000,
        "member_id": "",
        "protocol_type": "consumer",
        "protocols": [
            protocol(name="range", metadata=b"\x00\x01"),
            protocol(name="roundrobin", metadata=b""),
        ],
    }
    if version >= 1:
        kwargs["rebalance_timeout_ms"] = 30000
    if version >= 5:
        kwargs["group_instance_id"] = "instance-1"
    assert decode(request(**kwargs)) == p.JoinGroupRequest(
        "g",
        10000,
        30000 if version >= 1 else 10000,
        "",
        "instance-1" if version >= 5 else None,
        "consumer",
        [("range", b"\x00\x01"), ("roundrobin", b"")],
    )
    if version >= 5:
        kwargs["group_instance_id"] = None
        decoded = decode(request(**kwargs))
        assert isinstance(decoded, p.JoinGroupRequest)
        assert decoded.group_instance_id is None

    response = p.JoinGroupResponse(
        0,
        4,
        "range",
        "m-1",
        "m-2",
        [p.JoinGroupMember("m-1", "instance-1", b"meta-1"), p.JoinGroupMember("m-2", None, b"")],
        throttle_time_ms=7,
    )
    theirs = kafka_decode(KJoinGroupResponse, version, response)
    assert (theirs.error_code, theirs.generation_id, theirs.protocol_name) == (0, 4, "range")
    assert (theirs.leader, theirs.member_id) == ("m-1", "m-2")
    assert [(m.member_id, bytes(m.metadata)) for m in theirs.members] == [
        ("m-1", b"meta-1"),
        ("m-2", b""),
    ]
    if version >= 2:
        assert theirs.throttle_time_ms == 7
    if version >= 5:
        assert [m.group_instance_id for m in theirs.members] == ["instance-1", None]


@pytest.mark.parametrize("version", range(4))
def test_heartbeat(version: int) -> None:
    request = KHeartbeatRequest[version]
    kwargs: dict[str, Any] = {"group_id": "g", "generation_id": 3, "member_id": "m-1"}
    if version >= 3:
        kwargs["group_instance_id"] = "i-1"
    assert decode(request(**kwargs)) == p.HeartbeatRequest(
        "g", 3, "m-1", "i-1" if version >= 3 else None
    )
    response = p.HeartbeatResponse(p.ErrorCode.REBALANCE_IN_PROGRESS, throttle_time_ms=2)
    theirs = kafka_decode(KHeartbeatResponse, version, response)
    assert theirs.error_code == 27
    if version >= 1:
        assert theirs.throttle_time_ms == 2


@pytest.mark.parametrize("version", range(4))
def test_leave_group(version: int) -> None:
    request = KLeaveGroupRequest[version]
    if version >= 3:
        identity = request.MemberIdentity
        message = request(
            group_id="g",
            members=[
                identity(member_id="m-1", group_instance_id="i-1"),
                identity(member_id="m-2", group_instance_id=None),
            ],
        )
        expected = p.LeaveGroupRequest("g", [("m-1", "i-1"), ("m-2", None)])
    else:
        message = request(group_id="g", member_id="m-1")
        expected = p.LeaveGroupRequest("g", [("m-1", None)])
    assert decode(message) == expected

    response = p.LeaveGroupResponse(
        0, [("m-1", "i-1", 0), ("m-2", None, p.ErrorCode.UNKNOWN_MEMBER_ID)], throttle_time_ms=8
    )
    theirs = kafka_decode(KLeaveGroupResponse, version, response)
    assert theirs.error_code == 0
    if version >= 1:
        assert theirs.throttle_time_ms == 8
    if version >= 3:
        assert [(m.member_id, m.group_instance_id, m.error_code) for m in theirs.members] == [
            ("m-1", "i-1", 0),
            ("m-2", None, 25),
        ]
    bare = kafka_decode(KLeaveGroupResponse, version, p.LeaveGroupResponse(25))
    assert bare.error_code == 25
    if version >= 3:
        assert list(bare.members) == []


@pytest.mark.parametrize("version", range(4))
def test_sync_group(version: int) -> None:
    request = KSyncGroupRequest[version]
    assignment = request.SyncGroupRequestAssignment
    kwargs: dict[str, Any] = {
        "group_id": "g",
        "generation_id": 2,
        "member_id": "m-1",
        "assignments": [
            assignment(member_id="m-1", assignment=b"a1"),
            assignment(member_id="m-2", assignment=b""),
        ],
    }
    if version >= 3:
        kwargs["group_instance_id"] = "i-1"
    assert decode(request(**kwargs)) == p.SyncGroupRequest(
        "g", 2, "m-1", "i-1" if version >= 3 else None, [("m-1", b"a1"), ("m-2", b"")]
    )
    kwargs["assignments"] = []
    follower = decode(request(**kwargs))
    assert isinstance(follower, p.SyncGroupRequest)
    assert follower.assignments == []

    theirs = kafka_decode(KSyncGroupResponse, version, p.SyncGroupResponse(0, b"\x00\x01xyz", 3))
    assert (theirs.error_code, bytes(theirs.assignment)) == (0, b"\x00\x01xyz")
    if version >= 1:
        assert theirs.throttle_time_ms == 3


@pytest.mark.parametrize("version", range(8))
def test_offset_commit(version: int) -> None:
    request = KOffsetCommitRequest[version]
    topic = request.OffsetCommitRequestTopic
    partition = topic.OffsetCommitRequestPartition
    kwargs: dict[str, Any] = {
        "group_id": "g",
        "topics": [
            topic(
                name="t",
                partitions=[
                    partition(
                        partition_index=0,
                        committed_offset=42,
                        committed_leader_epoch=5,
                        commit_timestamp=1700,
                        committed_metadata="meta",
                    ),
                    partition(partition_index=3, committed_offset=-1, committed_metadata=None),
                ],
            ),
            topic(name="u", partitions=[]),
        ],
    }
    if version >= 1:
        kwargs.update(generation_id_or_member_epoch=9, member_id="m-1")
    if 2 <= version <= 4:
        kwargs["retention_time_ms"] = 86400000
    if version >= 7:
        kwargs["group_instance_id"] = "i-1"
    assert decode(request(**kwargs)) == p.OffsetCommitRequest(
        "g",
        9 if version >= 1 else -1,
        "m-1" if version >= 1 else "",
        "i-1" if version >= 7 else None,
        86400000 if 2 <= version <= 4 else -1,
        [
            p.OffsetCommitTopic(
                "t",
                [
                    p.OffsetCommitPartition(
                        0,
                        42,
                        5 if version >= 6 else -1,
                        1700 if version == 1 else -1,
                        "meta",
                    ),
                    p.OffsetCommitPartition(3, -1, committed_metadata=None),
                ],
            ),
            p.OffsetCommitTopic("u", []),
        ],
    )

    response = p.OffsetCommitResponse(
        [("t", [(0, 0), (3, p.ErrorCode.OFFSET_OUT_OF_RANGE)]), ("u", [])], throttle_time_ms=4
    )
    theirs = kafka_decode(KOffsetCommitResponse, version, response)
    assert [
        (t.name, [(q.partition_index, q.error_code) for q in t.partitions]) for t in theirs.topics
    ] == [("t", [(0, 0), (3, 1)]), ("u", [])]
    if version >= 3:
        assert theirs.throttle_time_ms == 4


@pytest.mark.parametrize("version", range(6))
def test_offset_fetch(version: int) -> None:
    request = KOffsetFetchRequest[version]
    topic = request.OffsetFetchRequestTopic
    message = request(
        group_id="g",
        topics=[topic(name="t", partition_indexes=[0, 2]), topic(name="u", partition_indexes=[])],
    )
    assert decode(message) == p.OffsetFetchRequest("g", [("t", [0, 2]), ("u", [])])
    if version >= 2:
        assert decode(request(group_id="g", topics=None)) == p.OffsetFetchRequest("g", None)

    response = p.OffsetFetchResponse(
        [
            p.OffsetFetchTopicResponse(
                "t",
                [
                    p.OffsetFetchPartitionResponse(0, 42, 5, "meta"),
                    p.OffsetFetchPartitionResponse(2, -1, metadata=None),
                    p.OffsetFetchPartitionResponse(
                        7, -1, error_code=p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    ),
                ],
            )
        ],
        error_code=p.ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        throttle_time_ms=3,
    )
    theirs = kafka_decode(KOffsetFetchResponse, version, response)
    [their_topic] = theirs.topics
    assert their_topic.name == "t"
    assert [
        (q.partition_index, q.committed_offset, q.metadata, q.error_code)
        for q in their_topic.partitions
    ] == [(0, 42, "meta", 0), (2, -1, None, 0), (7, -1, "", 3)]
    if version >= 2:
        assert theirs.error_code == 14
    if version >= 3:
        assert theirs.throttle_time_ms == 3
    if version >= 5:
        assert [q.committed_leader_epoch for q in their_topic.partitions] == [5, -1, -1]


@pytest.mark.parametrize("version", range(5))
def test_create_topics(version: int) -> None:
    request = KCreateTopicsRequest[version]
    creatable = request.CreatableTopic
    kwargs: dict[str, Any] = {
        "topics": [
            creatable(
                name="t",
                num_partitions=3,
                replication_factor=1,
                assignments=[],
                configs=[
                    creatable.CreatableTopicConfig(name="retention.ms", value="1000"),
                    creatable.CreatableTopicConfig(name="cleanup.policy", value=None),
                ],
            ),
            creatable(
                name="u",
                num_partitions=-1,
                replication_factor=-1,
                assignments=[
                    creatable.CreatableReplicaAssignment(partition_index=0, broker_ids=[1, 2]),
                    creatable.CreatableReplicaAssignment(partition_index=1, broker_ids=[2]),
                ],
                configs=[],
            ),
        ],
        "timeout_ms": 5000,
    }
    if version >= 1:
        kwargs["validate_only"] = True
    assert decode(request(**kwargs)) == p.CreateTopicsRequest(
        [
            p.CreatableTopic("t", 3, 1, [], [("retention.ms", "1000"), ("cleanup.policy", None)]),
            p.CreatableTopic("u", -1, -1, [(0, [1, 2]), (1, [2])], []),
        ],
        5000,
        version >= 1,
    )

    response = p.CreateTopicsResponse(
        [
            p.CreatableTopicResult("t"),
            p.CreatableTopicResult("u", p.ErrorCode.TOPIC_ALREADY_EXISTS, "topic u exists"),
        ],
        throttle_time_ms=5,
    )
    theirs = kafka_decode(KCreateTopicsResponse, version, response)
    assert [(t.name, t.error_code) for t in theirs.topics] == [("t", 0), ("u", 36)]
    if version >= 1:
        assert [t.error_message for t in theirs.topics] == [None, "topic u exists"]
    if version >= 2:
        assert theirs.throttle_time_ms == 5


@pytest.mark.parametrize("version", range(4))
def test_delete_topics(version: int) -> None:
    message = KDeleteTopicsRequest[version](topic_names=["t", "u"], timeout_ms=3000)
    assert decode(message) == p.DeleteTopicsRequest(["t", "u"], 3000)
    response = p.DeleteTopicsResponse(
        [("t", 0), ("u", p.ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)], throttle_time_ms=9
    )
    theirs = kafka_decode(KDeleteTopicsResponse, version, response)
    assert [(r.name, r.error_code) for r in theirs.responses] == [("t", 0), ("u", 3)]
    if version >= 1:
        assert theirs.throttle_time_ms == 9


@pytest.mark.parametrize("version", range(2))
def test_init_producer_id(version: int) -> None:
    request = KInitProducerIdRequest[version]
    idempotent = request(transactional_id=None, transaction_timeout_ms=60000)
    assert decode(idempotent) == p.InitProducerIdRequest(None, 60000)
    transactional = request(transactional_id="txn", transaction_timeout_ms=1000)
    assert decode(transactional) == p.InitProducerIdRequest("txn", 1000)

    response = p.InitProducerIdResponse(0, 1 << 40, 3, throttle_time_ms=1)
    theirs = kafka_decode(KInitProducerIdResponse, version, response)
    assert (theirs.throttle_time_ms, theirs.error_code) == (1, 0)
    assert (theirs.producer_id, theirs.producer_epoch) == (1 << 40, 3)
    failed = kafka_decode(KInitProducerIdResponse, version, p.InitProducerIdResponse(15))
    assert (failed.error_code, failed.producer_id, failed.producer_epoch) == (15, -1, -1)


@pytest.mark.parametrize("name", sorted(APIS))
def test_flexible_versions_are_refused(name: str) -> None:
    api_key, _, response_class, (_, newest) = APIS[name]
    with pytest.raises(ProtocolError, match=f"version {newest + 1} is not supported"):
        p.decode_request(p.RequestHeader(api_key, newest + 1, 1, None, b""))
    sdi_response = {
        p.OFFSET_COMMIT: p.OffsetCommitResponse([]),
        p.OFFSET_FETCH: p.OffsetFetchResponse([]),
        p.FIND_COORDINATOR: p.FindCoordinatorResponse(0, 1, "h", 1),
        p.JOIN_GROUP: p.JoinGroupResponse(0, 1, "range", "m", "m", []),
        p.HEARTBEAT: p.HeartbeatResponse(0),
        p.LEAVE_GROUP: p.LeaveGroupResponse(0),
        p.SYNC_GROUP: p.SyncGroupResponse(0, b""),
        p.CREATE_TOPICS: p.CreateTopicsResponse([]),
        p.DELETE_TOPICS: p.DeleteTopicsResponse([]),
        p.INIT_PRODUCER_ID: p.InitProducerIdResponse(0),
    }[api_key]
    assert api_key == response_class.API_KEY
    with pytest.raises(ProtocolError, match="not supported"):
        p.encode_response_body(sdi_response, newest + 1)


def _header(api_key: int, version: int, body: bytes) -> p.RequestHeader:
    return p.RequestHeader(api_key, version, 1, "c", body)


@pytest.mark.parametrize(
    ("api_key", "version", "body", "message"),
    [
        # FindCoordinator v1 without its key type.
        (p.FIND_COORDINATOR, 1, b"\x00\x01g", "truncated int8"),
        # JoinGroup v1 cut off in the rebalance timeout.
        (p.JOIN_GROUP, 1, b"\x00\x01g\x00\x00\x27\x10\x00\x00", "truncated int32"),
        # Heartbeat v0 with a string length past the end.
        (p.HEARTBEAT, 0, b"\x00\x01g\x00\x00\x00\x01\x00\x09m", "truncated string"),
        # Heartbeat v3 with a trailing byte.
        (p.HEARTBEAT, 3, b"\x00\x01g\x00\x00\x00\x01\x00\x01m\xff\xff\x00", "left over"),
        # LeaveGroup v3 with a member count larger than the body.
        (p.LEAVE_GROUP, 3, b"\x00\x01g\x00\x00\x10\x00", "past the end"),
        # LeaveGroup v3 with a null members array.
        (p.LEAVE_GROUP, 3, b"\x00\x01g\xff\xff\xff\xff", "negative array length"),
        # SyncGroup v0 with an assignment longer than what follows.
        (
            p.SYNC_GROUP,
            0,
            b"\x00\x01g\x00\x00\x00\x01\x00\x01m\x00\x00\x00\x01\x00\x01m\x00\x00\x00\x09ab",
            "truncated bytes",
        ),
        # OffsetFetch v1 with a null topics array (only v2+ may ask for all).
        (p.OFFSET_FETCH, 1, b"\x00\x01g\xff\xff\xff\xff", "negative array length"),
        # OffsetCommit v2 without its retention time.
        (p.OFFSET_COMMIT, 2, b"\x00\x01g\x00\x00\x00\x01\x00\x01m\x00\x00\x00\x00", "int64"),
        # CreateTopics v0 with a negative string length for the topic name.
        (p.CREATE_TOPICS, 0, b"\x00\x00\x00\x01\xff\xfe", "negative string length"),
        # DeleteTopics v0 with a topic name that is not UTF-8.
        (p.DELETE_TOPICS, 0, b"\x00\x00\x00\x01\x00\x01\xff\x00\x00\x00\x01", "not UTF-8"),
        # InitProducerId v0 with no timeout.
        (p.INIT_PRODUCER_ID, 0, b"\xff\xff", "truncated int32"),
        # An empty body anywhere.
        (p.OFFSET_COMMIT, 0, b"", "truncated int16"),
    ],
)
def test_malformed_requests(api_key: int, version: int, body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        p.decode_request(_header(api_key, version, body))


@pytest.mark.parametrize("name", sorted(APIS))
def test_every_truncation_raises_protocol_error(name: str) -> None:
    """Every strict prefix of a valid request body, at the newest served version, is refused."""
    api_key, request_class, _, (_, newest) = APIS[name]
    body = through_sdi(_full_request(request_class, newest)).body
    assert p.decode_request(_header(api_key, newest, body)) is not None
    for end in range(len(body)):
        with pytest.raises(ProtocolError):
            p.decode_request(_header(api_key, newest, body[:end]))


def _full_request(request_class: Any, version: int) -> Any:
    k = request_class[version]
    name = request_class.__name__
    if name == "OffsetCommitRequest":
        topic = k.OffsetCommitRequestTopic
        part = topic.OffsetCommitRequestPartition
        return k(
            group_id="g",
            generation_id_or_member_epoch=1,
            member_id="m",
            group_instance_id="i",
            topics=[
                topic(
                    name="t",
                    partitions=[part(partition_index=0, committed_offset=1, committed_metadata="")],
                )
            ],
        )
    if name == "OffsetFetchRequest":
        return k(group_id="g", topics=[k.OffsetFetchRequestTopic(name="t", partition_indexes=[0])])
    if name == "FindCoordinatorRequest":
        return k(key="g", key_type=0)
    if name == "JoinGroupRequest":
        protocol = k.JoinGroupRequestProtocol
        return k(
            group_id="g",
            session_timeout_ms=1,
            rebalance_timeout_ms=1,
            member_id="m",
            group_instance_id="i",
            protocol_type="consumer",
            protocols=[protocol(name="range", metadata=b"x")],
        )
    if name == "HeartbeatRequest":
        return k(group_id="g", generation_id=1, member_id="m", group_instance_id="i")
    if name == "LeaveGroupRequest":
        return k(group_id="g", members=[k.MemberIdentity(member_id="m", group_instance_id="i")])
    if name == "SyncGroupRequest":
        assignment = k.SyncGroupRequestAssignment(member_id="m", assignment=b"a")
        return k(
            group_id="g",
            generation_id=1,
            member_id="m",
            group_instance_id="i",
            assignments=[assignment],
        )
    if name == "CreateTopicsRequest":
        creatable = k.CreatableTopic
        return k(
            topics=[
                creatable(
                    name="t",
                    num_partitions=1,
                    replication_factor=1,
                    assignments=[
                        creatable.CreatableReplicaAssignment(partition_index=0, broker_ids=[1])
                    ],
                    configs=[creatable.CreatableTopicConfig(name="a", value="b")],
                )
            ],
            timeout_ms=1,
            validate_only=False,
        )
    if name == "DeleteTopicsRequest":
        return k(topic_names=["t"], timeout_ms=1)
    assert name == "InitProducerIdRequest"
    return k(transactional_id="x", transaction_timeout_ms=1)
