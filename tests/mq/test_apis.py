"""API codecs against kafka-python's own encoders and decoders, without a network."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.protocol.consumer.fetch import FetchRequest as KFetchRequest
from kafka.protocol.consumer.fetch import FetchResponse as KFetchResponse
from kafka.protocol.consumer.offsets import ListOffsetsRequest as KListOffsetsRequest
from kafka.protocol.consumer.offsets import ListOffsetsResponse as KListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest as KApiVersionsRequest
from kafka.protocol.metadata.api_versions import ApiVersionsResponse as KApiVersionsResponse
from kafka.protocol.metadata.metadata import MetadataRequest as KMetadataRequest
from kafka.protocol.metadata.metadata import MetadataResponse as KMetadataResponse
from kafka.protocol.producer.produce import ProduceRequest as KProduceRequest
from kafka.protocol.producer.produce import ProduceResponse as KProduceResponse
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from sdi.errors import ProtocolError
from sdi.mq import protocol as p


def through_sdi(message: Any, correlation_id: int = 11) -> p.RequestHeader:
    """Frames a kafka-python request with its header and parses it back with sdi."""
    message.with_header(correlation_id=correlation_id, client_id="kp")
    wire = bytes(message.encode(header=True, framed=True))
    [frame] = p.FrameParser().feed(wire)
    header = p.parse_request_header(frame)
    assert (header.correlation_id, header.client_id) == (correlation_id, "kp")
    assert header.api_version == message.API_VERSION
    return header


def response_body(frame: bytes, correlation_id: int, header_version: int = 0) -> bytes:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert int.from_bytes(frame[4:8], "big") == correlation_id
    return frame[8 + header_version :]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_api_versions(version: int) -> None:
    header = through_sdi(KApiVersionsRequest[version]())
    assert p.decode_request(header) == p.ApiVersionsRequest()
    theirs = KApiVersionsResponse[version].decode(
        response_body(p.api_versions_response_frame(header), 11)
    )
    assert theirs.error_code == 0
    ranges = {k.api_key: (k.min_version, k.max_version) for k in theirs.api_keys}
    assert ranges == p.SUPPORTED_VERSIONS


def test_api_versions_v3_gets_unsupported_version_with_ranges() -> None:
    header = through_sdi(
        KApiVersionsRequest[3](client_software_name="x", client_software_version="1")
    )
    with pytest.raises(ProtocolError, match="not supported"):
        p.decode_request(header)
    theirs = KApiVersionsResponse[0].decode(
        response_body(p.api_versions_response_frame(header), 11)
    )
    assert theirs.error_code == p.UNSUPPORTED_VERSION == 35
    assert {
        k.api_key: (k.min_version, k.max_version) for k in theirs.api_keys
    } == p.SUPPORTED_VERSIONS


@pytest.mark.parametrize("version", range(9))
def test_metadata(version: int) -> None:
    request = KMetadataRequest[version]
    topics = [request.MetadataRequestTopic(name=name) for name in ("a", "bb")]
    kwargs: dict[str, Any] = {"topics": topics}
    if version >= 4:
        kwargs["allow_auto_topic_creation"] = False
    if version >= 8:
        kwargs["include_topic_authorized_operations"] = True
    decoded = p.decode_request(through_sdi(request(**kwargs)))
    assert isinstance(decoded, p.MetadataRequest)
    assert decoded.topics == ["a", "bb"]
    assert decoded.allow_auto_topic_creation is (version < 4)
    assert decoded.include_topic_authorized_operations is (version >= 8)
    if version >= 1:
        everything = p.decode_request(through_sdi(request(topics=None)))
        assert isinstance(everything, p.MetadataRequest)
        assert everything.topics is None

    response = p.MetadataResponse(
        brokers=[p.MetadataBroker(1, "host-1", 9092, "r1"), p.MetadataBroker(2, "h2", 9093)],
        topics=[
            p.MetadataTopic(
                "a",
                [p.MetadataPartition(0, 1, [1, 2], [1], leader_epoch=4, offline_replicas=[2])],
                is_internal=True,
                topic_authorized_operations=8,
            ),
            p.MetadataTopic("bb", [], error_code=3),
        ],
        cluster_id="cluster",
        controller_id=2,
        throttle_time_ms=5,
    )
    theirs = KMetadataResponse[version].decode(p.encode_response_body(response, version))
    assert [(b.node_id, b.host, b.port) for b in theirs.brokers] == [
        (1, "host-1", 9092),
        (2, "h2", 9093),
    ]
    [a, bb] = theirs.topics
    assert (a.name, a.error_code, bb.name, bb.error_code) == ("a", 0, "bb", 3)
    [partition] = a.partitions
    assert (partition.partition_index, partition.leader_id) == (0, 1)
    assert (list(partition.replica_nodes), list(partition.isr_nodes)) == ([1, 2], [1])
    if version >= 1:
        assert theirs.brokers[0].rack == "r1"
        assert theirs.controller_id == 2
        assert a.is_internal
    if version >= 2:
        assert theirs.cluster_id == "cluster"
    if version >= 3:
        assert theirs.throttle_time_ms == 5
    if version >= 5:
        assert list(partition.offline_replicas) == [2]
    if version >= 7:
        assert partition.leader_epoch == 4
    if version >= 8:
        assert a.authorized_operations == {3}  # kafka-python turns the bit field into bit numbers


@pytest.mark.parametrize("version", range(3, 9))
def test_produce(version: int) -> None:
    batch = p.encode_record_batch([p.Record(b"k", b"v", [], 0, 123)])
    request = KProduceRequest[version]
    topic = request.TopicProduceData
    message = request(
        transactional_id=None,
        acks=-1,
        timeout_ms=1500,
        topic_data=[
            topic(name="t", partition_data=[topic.PartitionProduceData(index=2, records=batch)])
        ],
    )
    decoded = p.decode_request(through_sdi(message))
    assert decoded == p.ProduceRequest(
        None, -1, 1500, [p.ProduceTopic("t", [p.ProducePartition(2, batch)])]
    )
    response = p.ProduceResponse(
        [p.ProduceTopicResponse("t", [p.ProducePartitionResponse(2, 0, 41, -1, 7, None)])],
        throttle_time_ms=9,
    )
    theirs = KProduceResponse[version].decode(p.encode_response_body(response, version))
    [[partition]] = [t.partition_responses for t in theirs.responses]
    assert (partition.index, partition.error_code, partition.base_offset) == (2, 0, 41)
    assert theirs.throttle_time_ms == 9
    if version >= 5:
        assert partition.log_start_offset == 7


@pytest.mark.parametrize("transactional", [False, True])
def test_batch_info_reads_the_producer_header(transactional: bool) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=transactional,
        producer_id=1 << 40,
        producer_epoch=3,
        base_sequence=17,
        batch_size=1 << 20,
    )
    for offset, timestamp in [(0, 1000), (1, 1500), (2, 1200)]:
        builder.append(offset, timestamp, b"k", b"v", [])
    batch = bytes(builder.build())
    theirs = DefaultRecordBatch(batch)
    [info] = p.validate_record_batches(batch)
    assert info == p.BatchInfo(
        position=0,
        size_bytes=len(batch),
        last_offset_delta=2,
        records_count=3,
        attributes=theirs.attributes,
        first_timestamp=1000,
        max_timestamp=1500,
        producer_id=1 << 40,
        producer_epoch=3,
        base_sequence=17,
    )
    assert bool(info.attributes & 0x10) is transactional
    [plain] = p.validate_record_batches(p.encode_record_batch([p.Record(value=b"x")]))
    assert (plain.producer_id, plain.producer_epoch, plain.base_sequence) == (-1, -1, -1)


@pytest.mark.parametrize("version", range(4, 12))
def test_fetch(version: int) -> None:
    request = KFetchRequest[version]
    fetch_topic = request.FetchTopic
    kwargs: dict[str, Any] = {
        "replica_id": -1,
        "max_wait_ms": 500,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "isolation_level": 1,
        "topics": [
            fetch_topic(
                topic="t",
                partitions=[
                    fetch_topic.FetchPartition(
                        partition=3,
                        current_leader_epoch=2,
                        fetch_offset=77,
                        log_start_offset=-1,
                        partition_max_bytes=4096,
                    )
                ],
            )
        ],
    }
    if version >= 7:
        kwargs.update(session_id=0, session_epoch=-1, forgotten_topics_data=[])
    if version >= 11:
        kwargs["rack_id"] = "rack"
    decoded = p.decode_request(through_sdi(request(**kwargs)))
    assert isinstance(decoded, p.FetchRequest)
    assert (decoded.max_wait_ms, decoded.min_bytes, decoded.isolation_level) == (500, 1, 1)
    [[partition]] = [t.partitions for t in decoded.topics]
    assert (partition.partition, partition.fetch_offset, partition.partition_max_bytes) == (
        3,
        77,
        4096,
    )
    assert partition.current_leader_epoch == (2 if version >= 9 else -1)
    assert decoded.rack_id == ("rack" if version >= 11 else "")

    batch = p.encode_record_batch([p.Record(b"k", b"v", [("h", b"x")], 77, 1000)], base_offset=77)
    response = p.FetchResponse(
        [
            p.FetchTopicResponse(
                "t",
                [p.FetchPartitionResponse(3, 0, 78, 78, 0, [(5, 70)], records=batch)],
            )
        ],
        throttle_time_ms=1,
    )
    theirs = KFetchResponse[version].decode(p.encode_response_body(response, version))
    [[their_partition]] = [t.partitions for t in theirs.responses]
    assert (their_partition.partition_index, their_partition.high_watermark) == (3, 78)
    assert [(a.producer_id, a.first_offset) for a in their_partition.aborted_transactions] == [
        (5, 70)
    ]
    assert bytes(their_partition.records) == batch


@pytest.mark.parametrize("version", range(1, 6))
def test_list_offsets(version: int) -> None:
    request = KListOffsetsRequest[version]
    topic = request.ListOffsetsTopic
    kwargs: dict[str, Any] = {
        "replica_id": -1,
        "topics": [
            topic(
                name="t",
                partitions=[
                    topic.ListOffsetsPartition(
                        partition_index=1, current_leader_epoch=6, timestamp=-2
                    )
                ],
            )
        ],
    }
    if version >= 2:
        kwargs["isolation_level"] = 1
    decoded = p.decode_request(through_sdi(request(**kwargs)))
    assert decoded == p.ListOffsetsRequest(
        -1,
        [p.ListOffsetsTopic("t", [p.ListOffsetsPartition(1, -2, 6 if version >= 4 else -1)])],
        1 if version >= 2 else 0,
    )
    response = p.ListOffsetsResponse(
        [p.ListOffsetsTopicResponse("t", [p.ListOffsetsPartitionResponse(1, 0, -1, 55, 6)])],
        throttle_time_ms=4,
    )
    theirs = KListOffsetsResponse[version].decode(p.encode_response_body(response, version))
    [[partition]] = [t.partitions for t in theirs.topics]
    assert (partition.partition_index, partition.offset) == (1, 55)
    if version >= 4:
        assert partition.leader_epoch == 6


@pytest.mark.parametrize(
    ("api_key", "version", "body", "message"),
    [
        (3, 9, b"", "version 9 is not supported"),
        (99, 0, b"", "API key 99 is not supported"),
        (0, 2, b"", "version 2 is not supported"),
        (3, 1, b"\x00\x00\x00\x01\x00\x01a\x00", "left over"),
        (3, 1, b"\x00\x00\x00\x02\x00\x01a", "truncated int16"),
        (0, 3, b"\xff\xff\xff\xff", "truncated int32"),
    ],
)
def test_malformed_requests(api_key: int, version: int, body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        p.decode_request(p.RequestHeader(api_key, version, 1, None, body))
