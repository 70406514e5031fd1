"""The Kafka wire protocol, sans-IO: framing, record batches and the APIs a broker serves.

The hot paths are compiled (Cython, ``sdi._kafka``); this module is their
documented, typed face. Nothing here does I/O: feed the bytes a connection
read to a :class:`FrameParser`, decode each frame, and send the bytes the
encoders return. Malformed input raises :class:`sdi.errors.ProtocolError`,
after which a server closes the connection.

A Metadata v1 request for topic ``t`` from client ``c``, split anywhere:

>>> from sdi.mq import protocol
>>> frames = protocol.FrameParser()
>>> wire = bytes.fromhex("00000012" "0003" "0001" "00000007" "0001" "63" "00000001" "0001" "74")
>>> frames.feed(wire[:5])
[]
>>> [frame] = frames.feed(wire[5:])
>>> header = protocol.parse_request_header(frame)
>>> header.api_key, header.api_version, header.correlation_id, header.client_id
(3, 1, 7, 'c')
>>> protocol.decode_request(header)
MetadataRequest(topics=['t'], allow_auto_topic_creation=True, ...)

Record batches (magic 2) are encoded with a valid CRC-32C, validated without
decoding, and re-based without touching the CRC:

>>> batch = protocol.encode_record_batch([protocol.Record(b"k", b"v", timestamp=5)])
>>> protocol.validate_record_batches(batch)
[BatchInfo(position=0, size_bytes=70, last_offset_delta=0, records_count=1, attributes=0,
           first_timestamp=5, max_timestamp=5, producer_id=-1, producer_epoch=-1,
           base_sequence=-1)]
>>> protocol.decode_record_batch(protocol.rewrite_base_offset(batch, 42)).records
[Record(key=b'k', value=b'v', headers=[], offset=42, timestamp=5)]
>>> protocol.crc32c(b"123456789") == 0xE3069283
True
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from typing_extensions import Buffer

from sdi import _kafka
from sdi._kafka import (
    BATCH_HEADER_BYTES,
    FRAME_BYTES_MAX,
    FrameParser,
    Reader,
    Writer,
    crc32c,
    request_header_version,
)
from sdi.errors import InvalidArgument, ProtocolError

__all__ = [
    "API_VERSIONS",
    "BATCH_HEADER_BYTES",
    "CREATE_TOPICS",
    "DELETE_TOPICS",
    "FETCH",
    "FIND_COORDINATOR",
    "FRAME_BYTES_MAX",
    "HEARTBEAT",
    "INIT_PRODUCER_ID",
    "JOIN_GROUP",
    "LEAVE_GROUP",
    "LIST_OFFSETS",
    "METADATA",
    "OFFSET_COMMIT",
    "OFFSET_FETCH",
    "OFFSET_FOR_LEADER_EPOCH",
    "PRODUCE",
    "SUPPORTED_VERSIONS",
    "SYNC_GROUP",
    "UNSUPPORTED_VERSION",
    "ApiVersionsRequest",
    "ApiVersionsResponse",
    "BatchInfo",
    "CreatableTopic",
    "CreatableTopicResult",
    "CreateTopicsRequest",
    "CreateTopicsResponse",
    "DeleteTopicsRequest",
    "DeleteTopicsResponse",
    "EpochEndOffset",
    "ErrorCode",
    "FetchPartition",
    "FetchPartitionResponse",
    "FetchRequest",
    "FetchResponse",
    "FetchTopic",
    "FetchTopicResponse",
    "FindCoordinatorRequest",
    "FindCoordinatorResponse",
    "FrameParser",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "InitProducerIdRequest",
    "InitProducerIdResponse",
    "JoinGroupMember",
    "JoinGroupRequest",
    "JoinGroupResponse",
    "LeaveGroupRequest",
    "LeaveGroupResponse",
    "ListOffsetsPartition",
    "ListOffsetsPartitionResponse",
    "ListOffsetsRequest",
    "ListOffsetsResponse",
    "ListOffsetsTopic",
    "ListOffsetsTopicResponse",
    "MetadataBroker",
    "MetadataPartition",
    "MetadataRequest",
    "MetadataResponse",
    "MetadataTopic",
    "OffsetCommitPartition",
    "OffsetCommitRequest",
    "OffsetCommitResponse",
    "OffsetCommitTopic",
    "OffsetFetchPartitionResponse",
    "OffsetFetchRequest",
    "OffsetFetchResponse",
    "OffsetFetchTopicResponse",
    "OffsetForLeaderEpochPartition",
    "OffsetForLeaderEpochRequest",
    "OffsetForLeaderEpochResponse",
    "ProducePartition",
    "ProducePartitionResponse",
    "ProduceRequest",
    "ProduceResponse",
    "ProduceTopic",
    "ProduceTopicResponse",
    "Reader",
    "Record",
    "RecordBatch",
    "RequestHeader",
    "SyncGroupRequest",
    "SyncGroupResponse",
    "Writer",
    "api_versions_response_frame",
    "crc32c",
    "decode_record_batch",
    "decode_record_batches",
    "decode_request",
    "encode_record_batch",
    "encode_response",
    "encode_response_body",
    "parse_request_header",
    "request_header_version",
    "rewrite_base_offset",
    "validate_record_batches",
]

#: API keys served.
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23

#: Supported (min, max) versions per API key: all below each API's first flexible version.
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    PRODUCE: (3, 8),
    FETCH: (4, 11),
    LIST_OFFSETS: (1, 5),
    METADATA: (0, 8),
    OFFSET_COMMIT: (0, 7),
    OFFSET_FETCH: (0, 5),
    FIND_COORDINATOR: (0, 2),
    JOIN_GROUP: (0, 5),
    HEARTBEAT: (0, 3),
    LEAVE_GROUP: (0, 3),
    SYNC_GROUP: (0, 3),
    API_VERSIONS: (0, 2),
    CREATE_TOPICS: (0, 4),
    DELETE_TOPICS: (0, 3),
    INIT_PRODUCER_ID: (0, 1),
    OFFSET_FOR_LEADER_EPOCH: (2, 3),
}


class ErrorCode(enum.IntEnum):
    """The Kafka error codes a broker answers with (a response's ``error_code`` fields).

    >>> ErrorCode(3).name, int(ErrorCode.NOT_COORDINATOR)
    ('UNKNOWN_TOPIC_OR_PARTITION', 16)
    """

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    UNSUPPORTED_COMPRESSION_TYPE = 76
    OFFSET_NOT_AVAILABLE = 78
    MEMBER_ID_REQUIRED = 79
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87


#: The error code for a version the broker does not serve.
UNSUPPORTED_VERSION = 35

T = TypeVar("T")


# ---------------------------------------------------------------------------
# Framing and headers.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """A request header (v1 or v2) with the body left undecoded."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: bytes


def parse_request_header(frame: Buffer) -> RequestHeader:
    """Splits one frame (without its size) into its header and body.

    >>> parse_request_header(bytes.fromhex("0012000000000001ffff")).client_id is None
    True
    """
    return RequestHeader(*_kafka.parse_request_header(frame))


def encode_response(correlation_id: int, body: Buffer, header_version: int = 0) -> bytes:
    """A response frame: size, correlation id (and empty tagged fields for header v1), body.

    >>> encode_response(7, b"\\x00\\x00").hex()
    '00000006000000070000'
    """
    return bytes(_kafka.encode_response(correlation_id, body, header_version))


# ---------------------------------------------------------------------------
# Record batches.
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One record; ``offset`` and ``timestamp`` are absolute (batch base + delta)."""

    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    offset: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class RecordBatch:
    """A decoded record batch v2 (magic 2), uncompressed."""

    base_offset: int
    partition_leader_epoch: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[Record]
    size_bytes: int


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Where one batch of a record set is, as checked by :func:`validate_record_batches`.

    The fields after ``records_count`` are read from the batch header as it
    is: ``first_timestamp`` is its baseTimestamp, and ``producer_id``,
    ``producer_epoch`` and ``base_sequence`` are -1 for a non-idempotent producer.
    """

    position: int
    size_bytes: int
    last_offset_delta: int
    records_count: int
    attributes: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int


def decode_record_batch(data: Buffer) -> RecordBatch:
    """Decodes the first batch of ``data`` after checking its CRC and lengths."""
    header, raw_records, size = _kafka.decode_record_batch(data)
    base_offset, base_timestamp = header[0], header[4]
    records = [
        Record(key, value, headers, base_offset + offset_delta, base_timestamp + timestamp_delta)
        for offset_delta, timestamp_delta, key, value, headers in raw_records
    ]
    return RecordBatch(*header, records=records, size_bytes=size)


def decode_record_batches(data: Buffer) -> list[RecordBatch]:
    """Decodes every batch of a record set (batches back to back)."""
    raw = bytes(data)
    batches = []
    for info in validate_record_batches(raw):
        batches.append(decode_record_batch(raw[info.position : info.position + info.size_bytes]))
    return batches


def validate_record_batches(data: Buffer) -> list[BatchInfo]:
    """Checks a produced record set as a broker stores it, without decoding values.

    Every batch's magic, CRC-32C, compression and lengths are checked and its
    records are walked by their length prefixes; raises ProtocolError on the
    first fault.
    """
    return [BatchInfo(*info) for info in _kafka.validate_record_batches(data)]


def rewrite_base_offset(
    batch: Buffer, base_offset: int, partition_leader_epoch: int | None = None
) -> bytes:
    """The batch with its baseOffset (and partitionLeaderEpoch) replaced, in one copy.

    Kafka's CRC covers neither field, so it stays valid.
    """
    return _kafka.rewrite_base_offset(batch, base_offset, partition_leader_epoch)


def encode_record_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    base_timestamp: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encodes records into one uncompressed batch with a valid CRC-32C.

    Offsets are taken relative to ``base_offset`` and timestamps relative to
    ``base_timestamp`` (the smallest record timestamp when not given).

    >>> len(encode_record_batch([Record(value=b"x")]))
    69
    """
    if not records:
        raise InvalidArgument("a record batch needs at least one record")
    if base_timestamp is None:
        base_timestamp = min(record.timestamp for record in records)
    rows = [
        (
            record.offset - base_offset,
            record.timestamp - base_timestamp,
            record.key,
            record.value,
            record.headers,
        )
        for record in records
    ]
    for row in rows:
        if row[0] < 0:
            raise InvalidArgument(f"record offset {row[0] + base_offset} is below the base offset")
    return bytes(
        _kafka.encode_record_batch(
            rows,
            base_offset,
            base_timestamp,
            -1,
            producer_id,
            producer_epoch,
            base_sequence,
            partition_leader_epoch,
        )
    )


# ---------------------------------------------------------------------------
# API messages.
# ---------------------------------------------------------------------------


def _array(reader: Reader, item: Callable[[], T]) -> list[T]:
    return [item() for _ in range(reader.array_length())]


def _nullable_array(reader: Reader, item: Callable[[], T]) -> list[T] | None:
    count = reader.array_length(True)
    return None if count < 0 else [item() for _ in range(count)]


def _int32_array(reader: Reader) -> list[int]:
    return _array(reader, reader.int32)


def _write_int32_array(writer: Writer, values: Sequence[int]) -> None:
    writer.array_length(len(values))
    for value in values:
        writer.int32(value)


@dataclass(slots=True)
class ApiVersionsRequest:
    """ApiVersions v0-v2 has an empty body."""


@dataclass(slots=True)
class ApiVersionsResponse:
    error_code: int = 0
    api_keys: dict[int, tuple[int, int]] = field(default_factory=lambda: dict(SUPPORTED_VERSIONS))
    throttle_time_ms: int = 0


@dataclass(slots=True)
class MetadataRequest:
    topics: list[str] | None = None
    allow_auto_topic_creation: bool = True
    include_cluster_authorized_operations: bool = False
    include_topic_authorized_operations: bool = False


@dataclass(slots=True)
class MetadataBroker:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(slots=True)
class MetadataPartition:
    partition_index: int
    leader_id: int
    replica_nodes: list[int]
    isr_nodes: list[int]
    error_code: int = 0
    leader_epoch: int = -1
    offline_replicas: list[int] = field(default_factory=list)


@dataclass(slots=True)
class MetadataTopic:
    name: str
    partitions: list[MetadataPartition]
    error_code: int = 0
    is_internal: bool = False
    topic_authorized_operations: int = -2147483648


@dataclass(slots=True)
class MetadataResponse:
    brokers: list[MetadataBroker]
    topics: list[MetadataTopic]
    cluster_id: str | None = None
    controller_id: int = -1
    throttle_time_ms: int = 0
    cluster_authorized_operations: int = -2147483648


@dataclass(slots=True)
class ProducePartition:
    index: int
    records: bytes | None


@dataclass(slots=True)
class ProduceTopic:
    name: str
    partitions: list[ProducePartition]


@dataclass(slots=True)
class ProduceRequest:
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic]


@dataclass(slots=True)
class ProducePartitionResponse:
    index: int
    error_code: int = 0
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None


@dataclass(slots=True)
class ProduceTopicResponse:
    name: str
    partitions: list[ProducePartitionResponse]


@dataclass(slots=True)
class ProduceResponse:
    topics: list[ProduceTopicResponse]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class FetchPartition:
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    log_start_offset: int = -1


@dataclass(slots=True)
class FetchTopic:
    name: str
    partitions: list[FetchPartition]


@dataclass(slots=True)
class FetchRequest:
    replica_id: int
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    isolation_level: int
    topics: list[FetchTopic]
    session_id: int = 0
    session_epoch: int = -1
    forgotten_topics: list[tuple[str, list[int]]] = field(default_factory=list)
    rack_id: str = ""


@dataclass(slots=True)
class FetchPartitionResponse:
    partition_index: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    aborted_transactions: list[tuple[int, int]] | None = None
    preferred_read_replica: int = -1
    records: bytes | None = None


@dataclass(slots=True)
class FetchTopicResponse:
    name: str
    partitions: list[FetchPartitionResponse]


@dataclass(slots=True)
class FetchResponse:
    topics: list[FetchTopicResponse]
    throttle_time_ms: int = 0
    error_code: int = 0
    session_id: int = 0


@dataclass(slots=True)
class ListOffsetsPartition:
    partition_index: int
    timestamp: int
    current_leader_epoch: int = -1


@dataclass(slots=True)
class ListOffsetsTopic:
    name: str
    partitions: list[ListOffsetsPartition]


@dataclass(slots=True)
class ListOffsetsRequest:
    replica_id: int
    topics: list[ListOffsetsTopic]
    isolation_level: int = 0


@dataclass(slots=True)
class ListOffsetsPartitionResponse:
    partition_index: int
    error_code: int = 0
    timestamp: int = -1
    offset: int = -1
    leader_epoch: int = -1


@dataclass(slots=True)
class ListOffsetsTopicResponse:
    name: str
    partitions: list[ListOffsetsPartitionResponse]


@dataclass(slots=True)
class ListOffsetsResponse:
    topics: list[ListOffsetsTopicResponse]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class OffsetCommitPartition:
    partition_index: int
    committed_offset: int
    committed_leader_epoch: int = -1
    commit_timestamp: int = -1
    committed_metadata: str | None = None


@dataclass(slots=True)
class OffsetCommitTopic:
    name: str
    partitions: list[OffsetCommitPartition]


@dataclass(slots=True)
class OffsetCommitRequest:
    """OffsetCommit v0-v7; fields a version lacks hold their defaults (see each field)."""

    group_id: str
    generation_id: int  # -1 in v0
    member_id: str  # "" in v0
    group_instance_id: str | None  # v7+
    retention_time_ms: int  # v2-v4, else -1
    topics: list[OffsetCommitTopic]


@dataclass(slots=True)
class OffsetCommitResponse:
    """Per topic name, the (partition_index, error_code) pairs."""

    topics: list[tuple[str, list[tuple[int, int]]]]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class OffsetFetchRequest:
    """``topics`` of None (v2+) asks for every committed offset of the group."""

    group_id: str
    topics: list[tuple[str, list[int]]] | None


@dataclass(slots=True)
class OffsetFetchPartitionResponse:
    partition_index: int
    committed_offset: int
    committed_leader_epoch: int = -1
    metadata: str | None = ""
    error_code: int = 0


@dataclass(slots=True)
class OffsetFetchTopicResponse:
    name: str
    partitions: list[OffsetFetchPartitionResponse]


@dataclass(slots=True)
class OffsetFetchResponse:
    topics: list[OffsetFetchTopicResponse]
    error_code: int = 0
    throttle_time_ms: int = 0


@dataclass(slots=True)
class FindCoordinatorRequest:
    """``key_type`` 0 is a group, 1 a transactional id (v1+)."""

    key: str
    key_type: int = 0


@dataclass(slots=True)
class FindCoordinatorResponse:
    error_code: int
    node_id: int
    host: str
    port: int
    error_message: str | None = None
    throttle_time_ms: int = 0


@dataclass(slots=True)
class JoinGroupRequest:
    """JoinGroup v0-v5: v0 has no rebalance timeout (it is the session timeout)."""

    group_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    member_id: str
    group_instance_id: str | None  # v5+
    protocol_type: str
    protocols: list[tuple[str, bytes]]


@dataclass(slots=True)
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(slots=True)
class JoinGroupResponse:
    error_code: int
    generation_id: int
    protocol_name: str
    leader: str
    member_id: str
    members: list[JoinGroupMember]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class HeartbeatRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(slots=True)
class HeartbeatResponse:
    error_code: int
    throttle_time_ms: int = 0


@dataclass(slots=True)
class LeaveGroupRequest:
    """(member_id, group_instance_id) per leaving member; v0-v2 carry one, without instance id."""

    group_id: str
    members: list[tuple[str, str | None]]


@dataclass(slots=True)
class LeaveGroupResponse:
    """``members`` (v3+) holds (member_id, group_instance_id, error_code) per member."""

    error_code: int
    members: list[tuple[str, str | None, int]] = field(default_factory=list)
    throttle_time_ms: int = 0


@dataclass(slots=True)
class SyncGroupRequest:
    """``assignments`` holds (member_id, assignment); only the leader sends any."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None  # v3+
    assignments: list[tuple[str, bytes]]


@dataclass(slots=True)
class SyncGroupResponse:
    error_code: int
    assignment: bytes
    throttle_time_ms: int = 0


@dataclass(slots=True)
class CreatableTopic:
    """``num_partitions`` and ``replication_factor`` are -1 when ``assignments`` gives them."""

    name: str
    num_partitions: int
    replication_factor: int
    assignments: list[tuple[int, list[int]]]
    configs: list[tuple[str, str | None]]


@dataclass(slots=True)
class CreateTopicsRequest:
    topics: list[CreatableTopic]
    timeout_ms: int
    validate_only: bool = False


@dataclass(slots=True)
class CreatableTopicResult:
    name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class CreateTopicsResponse:
    topics: list[CreatableTopicResult]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class DeleteTopicsRequest:
    topic_names: list[str]
    timeout_ms: int


@dataclass(slots=True)
class DeleteTopicsResponse:
    """(name, error_code) per topic."""

    responses: list[tuple[str, int]]
    throttle_time_ms: int = 0


@dataclass(slots=True)
class InitProducerIdRequest:
    transactional_id: str | None
    transaction_timeout_ms: int


@dataclass(slots=True)
class InitProducerIdResponse:
    error_code: int
    producer_id: int = -1
    producer_epoch: int = -1
    throttle_time_ms: int = 0


@dataclass(slots=True)
class OffsetForLeaderEpochPartition:
    partition: int
    current_leader_epoch: int
    leader_epoch: int


@dataclass(slots=True)
class OffsetForLeaderEpochRequest:
    """OffsetForLeaderEpoch v2-v3: where each asked epoch ends in the leader's log."""

    replica_id: int  # v3+; -1 (a consumer) before
    topics: list[tuple[str, list[OffsetForLeaderEpochPartition]]]


@dataclass(slots=True)
class EpochEndOffset:
    error_code: int
    partition: int
    leader_epoch: int = -1
    end_offset: int = -1


@dataclass(slots=True)
class OffsetForLeaderEpochResponse:
    topics: list[tuple[str, list[EpochEndOffset]]]
    throttle_time_ms: int = 0


Request = (
    ApiVersionsRequest
    | MetadataRequest
    | ProduceRequest
    | FetchRequest
    | ListOffsetsRequest
    | OffsetCommitRequest
    | OffsetFetchRequest
    | FindCoordinatorRequest
    | JoinGroupRequest
    | HeartbeatRequest
    | LeaveGroupRequest
    | SyncGroupRequest
    | CreateTopicsRequest
    | DeleteTopicsRequest
    | InitProducerIdRequest
    | OffsetForLeaderEpochRequest
)
Response = (
    ApiVersionsResponse
    | MetadataResponse
    | ProduceResponse
    | FetchResponse
    | ListOffsetsResponse
    | OffsetCommitResponse
    | OffsetFetchResponse
    | FindCoordinatorResponse
    | JoinGroupResponse
    | HeartbeatResponse
    | LeaveGroupResponse
    | SyncGroupResponse
    | CreateTopicsResponse
    | DeleteTopicsResponse
    | InitProducerIdResponse
    | OffsetForLeaderEpochResponse
)


def _check_version(api_key: int, version: int) -> None:
    supported = SUPPORTED_VERSIONS.get(api_key)
    if supported is None:
        raise ProtocolError(f"API key {api_key} is not supported")
    if not supported[0] <= version <= supported[1]:
        raise ProtocolError(
            f"API key {api_key} version {version} is not supported "
            f"(supported: {supported[0]}-{supported[1]})"
        )


def _decode_metadata(reader: Reader, version: int) -> MetadataRequest:
    if version == 0:
        topics: list[str] | None = _array(reader, reader.string)
    else:
        topics = _nullable_array(reader, reader.string)
    request = MetadataRequest(topics)
    if version >= 4:
        request.allow_auto_topic_creation = reader.boolean()
    if version >= 8:
        request.include_cluster_authorized_operations = reader.boolean()
        request.include_topic_authorized_operations = reader.boolean()
    return request


def _decode_produce(reader: Reader, version: int) -> ProduceRequest:
    transactional_id = reader.nullable_string()
    acks = reader.int16()
    timeout_ms = reader.int32()

    def partition() -> ProducePartition:
        return ProducePartition(reader.int32(), reader.nullable_bytes())

    def topic() -> ProduceTopic:
        return ProduceTopic(reader.string(), _array(reader, partition))

    return ProduceRequest(transactional_id, acks, timeout_ms, _array(reader, topic))


def _decode_fetch(reader: Reader, version: int) -> FetchRequest:
    replica_id = reader.int32()
    max_wait_ms = reader.int32()
    min_bytes = reader.int32()
    max_bytes = reader.int32()
    isolation_level = reader.int8()
    session_id, session_epoch = (reader.int32(), reader.int32()) if version >= 7 else (0, -1)

    def partition() -> FetchPartition:
        index = reader.int32()
        leader_epoch = reader.int32() if version >= 9 else -1
        fetch_offset = reader.int64()
        log_start_offset = reader.int64() if version >= 5 else -1
        return FetchPartition(index, fetch_offset, reader.int32(), leader_epoch, log_start_offset)

    def topic() -> FetchTopic:
        return FetchTopic(reader.string(), _array(reader, partition))

    topics = _array(reader, topic)
    request = FetchRequest(
        replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, topics,
        session_id, session_epoch,
    )  # fmt: skip
    if version >= 7:
        request.forgotten_topics = _array(reader, lambda: (reader.string(), _int32_array(reader)))
    if version >= 11:
        request.rack_id = reader.string()
    return request


def _decode_list_offsets(reader: Reader, version: int) -> ListOffsetsRequest:
    replica_id = reader.int32()
    isolation_level = reader.int8() if version >= 2 else 0

    def partition() -> ListOffsetsPartition:
        index = reader.int32()
        leader_epoch = reader.int32() if version >= 4 else -1
        return ListOffsetsPartition(index, reader.int64(), leader_epoch)

    def topic() -> ListOffsetsTopic:
        return ListOffsetsTopic(reader.string(), _array(reader, partition))

    return ListOffsetsRequest(replica_id, _array(reader, topic), isolation_level)


def _decode_offset_commit(reader: Reader, version: int) -> OffsetCommitRequest:
    group_id = reader.string()
    generation_id, member_id = (reader.int32(), reader.string()) if version >= 1 else (-1, "")
    group_instance_id = reader.nullable_string() if version >= 7 else None
    retention_time_ms = reader.int64() if 2 <= version <= 4 else -1

    def partition() -> OffsetCommitPartition:
        index = reader.int32()
        offset = reader.int64()
        leader_epoch = reader.int32() if version >= 6 else -1
        timestamp = reader.int64() if version == 1 else -1
        return OffsetCommitPartition(
            index, offset, leader_epoch, timestamp, reader.nullable_string()
        )

    def topic() -> OffsetCommitTopic:
        return OffsetCommitTopic(reader.string(), _array(reader, partition))

    topics = _array(reader, topic)
    return OffsetCommitRequest(
        group_id, generation_id, member_id, group_instance_id, retention_time_ms, topics
    )


def _decode_offset_fetch(reader: Reader, version: int) -> OffsetFetchRequest:
    group_id = reader.string()

    def topic() -> tuple[str, list[int]]:
        return reader.string(), _int32_array(reader)

    if version >= 2:
        return OffsetFetchRequest(group_id, _nullable_array(reader, topic))
    return OffsetFetchRequest(group_id, _array(reader, topic))


def _decode_find_coordinator(reader: Reader, version: int) -> FindCoordinatorRequest:
    key = reader.string()
    return FindCoordinatorRequest(key, reader.int8() if version >= 1 else 0)


def _decode_join_group(reader: Reader, version: int) -> JoinGroupRequest:
    group_id = reader.string()
    session_timeout_ms = reader.int32()
    rebalance_timeout_ms = reader.int32() if version >= 1 else session_timeout_ms
    member_id = reader.string()
    group_instance_id = reader.nullable_string() if version >= 5 else None
    protocol_type = reader.string()
    protocols = _array(reader, lambda: (reader.string(), reader.bytes_()))
    return JoinGroupRequest(
        group_id, session_timeout_ms, rebalance_timeout_ms, member_id, group_instance_id,
        protocol_type, protocols,
    )  # fmt: skip


def _decode_heartbeat(reader: Reader, version: int) -> HeartbeatRequest:
    group_id = reader.string()
    generation_id = reader.int32()
    member_id = reader.string()
    group_instance_id = reader.nullable_string() if version >= 3 else None
    return HeartbeatRequest(group_id, generation_id, member_id, group_instance_id)


def _decode_leave_group(reader: Reader, version: int) -> LeaveGroupRequest:
    group_id = reader.string()
    if version >= 3:
        members = _array(reader, lambda: (reader.string(), reader.nullable_string()))
    else:
        members = [(reader.string(), None)]
    return LeaveGroupRequest(group_id, members)


def _decode_sync_group(reader: Reader, version: int) -> SyncGroupRequest:
    group_id = reader.string()
    generation_id = reader.int32()
    member_id = reader.string()
    group_instance_id = reader.nullable_string() if version >= 3 else None
    assignments = _array(reader, lambda: (reader.string(), reader.bytes_()))
    return SyncGroupRequest(group_id, generation_id, member_id, group_instance_id, assignments)


def _decode_create_topics(reader: Reader, version: int) -> CreateTopicsRequest:
    def topic() -> CreatableTopic:
        name = reader.string()
        num_partitions = reader.int32()
        replication_factor = reader.int16()
        assignments = _array(reader, lambda: (reader.int32(), _int32_array(reader)))
        configs = _array(reader, lambda: (reader.string(), reader.nullable_string()))
        return CreatableTopic(name, num_partitions, replication_factor, assignments, configs)

    topics = _array(reader, topic)
    timeout_ms = reader.int32()
    return CreateTopicsRequest(topics, timeout_ms, reader.boolean() if version >= 1 else False)


def _decode_delete_topics(reader: Reader, version: int) -> DeleteTopicsRequest:
    topic_names = _array(reader, reader.string)
    return DeleteTopicsRequest(topic_names, reader.int32())


def _decode_init_producer_id(reader: Reader, version: int) -> InitProducerIdRequest:
    transactional_id = reader.nullable_string()
    return InitProducerIdRequest(transactional_id, reader.int32())


def _decode_offset_for_leader_epoch(reader: Reader, version: int) -> OffsetForLeaderEpochRequest:
    replica_id = reader.int32() if version >= 3 else -1

    def partition() -> OffsetForLeaderEpochPartition:
        return OffsetForLeaderEpochPartition(reader.int32(), reader.int32(), reader.int32())

    def topic() -> tuple[str, list[OffsetForLeaderEpochPartition]]:
        return reader.string(), _array(reader, partition)

    return OffsetForLeaderEpochRequest(replica_id, _array(reader, topic))


_DECODERS: dict[int, Callable[[Reader, int], Any]] = {
    API_VERSIONS: lambda reader, version: ApiVersionsRequest(),
    METADATA: _decode_metadata,
    PRODUCE: _decode_produce,
    FETCH: _decode_fetch,
    LIST_OFFSETS: _decode_list_offsets,
    OFFSET_COMMIT: _decode_offset_commit,
    OFFSET_FETCH: _decode_offset_fetch,
    FIND_COORDINATOR: _decode_find_coordinator,
    JOIN_GROUP: _decode_join_group,
    HEARTBEAT: _decode_heartbeat,
    LEAVE_GROUP: _decode_leave_group,
    SYNC_GROUP: _decode_sync_group,
    CREATE_TOPICS: _decode_create_topics,
    DELETE_TOPICS: _decode_delete_topics,
    INIT_PRODUCER_ID: _decode_init_producer_id,
    OFFSET_FOR_LEADER_EPOCH: _decode_offset_for_leader_epoch,
}


def decode_request(header: RequestHeader) -> Request:
    """Decodes a request body; raises ProtocolError for an unsupported key or version.

    For an ApiVersions request at an unsupported version, answer with
    :func:`api_versions_response_frame` instead, as Kafka does.
    """
    _check_version(header.api_key, header.api_version)
    reader = Reader(header.body)
    request: Request = _DECODERS[header.api_key](reader, header.api_version)
    reader.expect_end(f"request body (API key {header.api_key} v{header.api_version})")
    return request


def api_versions_response_frame(header: RequestHeader) -> bytes:
    """The ApiVersions response frame for any ApiVersions request, even a newer version.

    An unsupported version gets error 35 (UNSUPPORTED_VERSION) with the
    supported ranges in a v0 body, so the client can pick a version it shares.

    >>> frame = api_versions_response_frame(RequestHeader(18, 3, 1, "c", b""))
    >>> frame[8:10].hex()
    '0023'
    """
    low, high = SUPPORTED_VERSIONS[API_VERSIONS]
    if low <= header.api_version <= high:
        body = encode_response_body(ApiVersionsResponse(), header.api_version)
    else:
        body = encode_response_body(ApiVersionsResponse(error_code=UNSUPPORTED_VERSION), 0)
    # ApiVersions responses always use header v0, so old clients can read them.
    return encode_response(header.correlation_id, body, 0)


def _encode_api_versions(writer: Writer, response: ApiVersionsResponse, version: int) -> None:
    writer.int16(response.error_code)
    writer.array_length(len(response.api_keys))
    for api_key, (low, high) in sorted(response.api_keys.items()):
        writer.int16(api_key)
        writer.int16(low)
        writer.int16(high)
    if version >= 1:
        writer.int32(response.throttle_time_ms)


def _encode_metadata(writer: Writer, response: MetadataResponse, version: int) -> None:
    if version >= 3:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.brokers))
    for broker in response.brokers:
        writer.int32(broker.node_id)
        writer.string(broker.host)
        writer.int32(broker.port)
        if version >= 1:
            writer.nullable_string(broker.rack)
    if version >= 2:
        writer.nullable_string(response.cluster_id)
    if version >= 1:
        writer.int32(response.controller_id)
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.int16(topic.error_code)
        writer.string(topic.name)
        if version >= 1:
            writer.boolean(topic.is_internal)
        writer.array_length(len(topic.partitions))
        for partition in topic.partitions:
            writer.int16(partition.error_code)
            writer.int32(partition.partition_index)
            writer.int32(partition.leader_id)
            if version >= 7:
                writer.int32(partition.leader_epoch)
            _write_int32_array(writer, partition.replica_nodes)
            _write_int32_array(writer, partition.isr_nodes)
            if version >= 5:
                _write_int32_array(writer, partition.offline_replicas)
        if version >= 8:
            writer.int32(topic.topic_authorized_operations)
    if version >= 8:
        writer.int32(response.cluster_authorized_operations)


def _encode_produce(writer: Writer, response: ProduceResponse, version: int) -> None:
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.string(topic.name)
        writer.array_length(len(topic.partitions))
        for partition in topic.partitions:
            writer.int32(partition.index)
            writer.int16(partition.error_code)
            writer.int64(partition.base_offset)
            writer.int64(partition.log_append_time_ms)
            if version >= 5:
                writer.int64(partition.log_start_offset)
            if version >= 8:
                writer.array_length(0)
                writer.nullable_string(partition.error_message)
    writer.int32(response.throttle_time_ms)


def _encode_fetch(writer: Writer, response: FetchResponse, version: int) -> None:
    writer.int32(response.throttle_time_ms)
    if version >= 7:
        writer.int16(response.error_code)
        writer.int32(response.session_id)
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.string(topic.name)
        writer.array_length(len(topic.partitions))
        for partition in topic.partitions:
            writer.int32(partition.partition_index)
            writer.int16(partition.error_code)
            writer.int64(partition.high_watermark)
            writer.int64(partition.last_stable_offset)
            if version >= 5:
                writer.int64(partition.log_start_offset)
            aborted = partition.aborted_transactions
            writer.array_length(None if aborted is None else len(aborted))
            for producer_id, first_offset in aborted or ():
                writer.int64(producer_id)
                writer.int64(first_offset)
            if version >= 11:
                writer.int32(partition.preferred_read_replica)
            writer.nullable_bytes(partition.records)


def _encode_list_offsets(writer: Writer, response: ListOffsetsResponse, version: int) -> None:
    if version >= 2:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.string(topic.name)
        writer.array_length(len(topic.partitions))
        for partition in topic.partitions:
            writer.int32(partition.partition_index)
            writer.int16(partition.error_code)
            writer.int64(partition.timestamp)
            writer.int64(partition.offset)
            if version >= 4:
                writer.int32(partition.leader_epoch)


def _encode_offset_commit(writer: Writer, response: OffsetCommitResponse, version: int) -> None:
    if version >= 3:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.topics))
    for name, partitions in response.topics:
        writer.string(name)
        writer.array_length(len(partitions))
        for partition_index, error_code in partitions:
            writer.int32(partition_index)
            writer.int16(error_code)


def _encode_offset_fetch(writer: Writer, response: OffsetFetchResponse, version: int) -> None:
    if version >= 3:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.string(topic.name)
        writer.array_length(len(topic.partitions))
        for partition in topic.partitions:
            writer.int32(partition.partition_index)
            writer.int64(partition.committed_offset)
            if version >= 5:
                writer.int32(partition.committed_leader_epoch)
            writer.nullable_string(partition.metadata)
            writer.int16(partition.error_code)
    if version >= 2:
        writer.int16(response.error_code)


def _encode_find_coordinator(
    writer: Writer, response: FindCoordinatorResponse, version: int
) -> None:
    if version >= 1:
        writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)
    if version >= 1:
        writer.nullable_string(response.error_message)
    writer.int32(response.node_id)
    writer.string(response.host)
    writer.int32(response.port)


def _encode_join_group(writer: Writer, response: JoinGroupResponse, version: int) -> None:
    if version >= 2:
        writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)
    writer.int32(response.generation_id)
    writer.string(response.protocol_name)
    writer.string(response.leader)
    writer.string(response.member_id)
    writer.array_length(len(response.members))
    for member in response.members:
        writer.string(member.member_id)
        if version >= 5:
            writer.nullable_string(member.group_instance_id)
        writer.bytes_(member.metadata)


def _encode_heartbeat(writer: Writer, response: HeartbeatResponse, version: int) -> None:
    if version >= 1:
        writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)


def _encode_leave_group(writer: Writer, response: LeaveGroupResponse, version: int) -> None:
    if version >= 1:
        writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)
    if version >= 3:
        writer.array_length(len(response.members))
        for member_id, group_instance_id, error_code in response.members:
            writer.string(member_id)
            writer.nullable_string(group_instance_id)
            writer.int16(error_code)


def _encode_sync_group(writer: Writer, response: SyncGroupResponse, version: int) -> None:
    if version >= 1:
        writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)
    writer.bytes_(response.assignment)


def _encode_create_topics(writer: Writer, response: CreateTopicsResponse, version: int) -> None:
    if version >= 2:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.topics))
    for topic in response.topics:
        writer.string(topic.name)
        writer.int16(topic.error_code)
        if version >= 1:
            writer.nullable_string(topic.error_message)


def _encode_delete_topics(writer: Writer, response: DeleteTopicsResponse, version: int) -> None:
    if version >= 1:
        writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.responses))
    for name, error_code in response.responses:
        writer.string(name)
        writer.int16(error_code)


def _encode_init_producer_id(
    writer: Writer, response: InitProducerIdResponse, version: int
) -> None:
    writer.int32(response.throttle_time_ms)
    writer.int16(response.error_code)
    writer.int64(response.producer_id)
    writer.int16(response.producer_epoch)


def _encode_offset_for_leader_epoch(
    writer: Writer, response: OffsetForLeaderEpochResponse, version: int
) -> None:
    writer.int32(response.throttle_time_ms)
    writer.array_length(len(response.topics))
    for name, partitions in response.topics:
        writer.string(name)
        writer.array_length(len(partitions))
        for partition in partitions:
            writer.int16(partition.error_code)
            writer.int32(partition.partition)
            writer.int32(partition.leader_epoch)
            writer.int64(partition.end_offset)


_ENCODERS: dict[type[Any], tuple[int, Callable[[Writer, Any, int], None]]] = {
    ApiVersionsResponse: (API_VERSIONS, _encode_api_versions),
    MetadataResponse: (METADATA, _encode_metadata),
    ProduceResponse: (PRODUCE, _encode_produce),
    FetchResponse: (FETCH, _encode_fetch),
    ListOffsetsResponse: (LIST_OFFSETS, _encode_list_offsets),
    OffsetCommitResponse: (OFFSET_COMMIT, _encode_offset_commit),
    OffsetFetchResponse: (OFFSET_FETCH, _encode_offset_fetch),
    FindCoordinatorResponse: (FIND_COORDINATOR, _encode_find_coordinator),
    JoinGroupResponse: (JOIN_GROUP, _encode_join_group),
    HeartbeatResponse: (HEARTBEAT, _encode_heartbeat),
    LeaveGroupResponse: (LEAVE_GROUP, _encode_leave_group),
    SyncGroupResponse: (SYNC_GROUP, _encode_sync_group),
    CreateTopicsResponse: (CREATE_TOPICS, _encode_create_topics),
    DeleteTopicsResponse: (DELETE_TOPICS, _encode_delete_topics),
    InitProducerIdResponse: (INIT_PRODUCER_ID, _encode_init_producer_id),
    OffsetForLeaderEpochResponse: (OFFSET_FOR_LEADER_EPOCH, _encode_offset_for_leader_epoch),
}


def encode_response_body(response: Response, version: int) -> bytes:
    """The body of a response at ``version`` (frame it with :func:`encode_response`).

    >>> encode_response_body(ListOffsetsResponse([]), 2).hex()
    '0000000000000000'
    """
    api_key, encode = _ENCODERS[type(response)]
    _check_version(api_key, version)
    writer = Writer()
    encode(writer, response, version)
    return writer.getvalue()
