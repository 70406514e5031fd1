"""Record batch v2: round trips, kafka-python interop, validation and malformed batches."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from sdi.errors import ProtocolError
from sdi.mq import protocol
from sdi.mq.protocol import Record

maybe_bytes = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(max_size=8), maybe_bytes), max_size=3)
records = st.lists(
    st.builds(
        Record,
        key=maybe_bytes,
        value=maybe_bytes,
        headers=headers,
        offset=st.integers(0, 1000),
        timestamp=st.integers(0, 2**41),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda record: record.offset,
)


def test_crc32c_matches_known_values_and_kafka_python() -> None:
    from kafka.record._crc32c import crc as reference

    assert protocol.crc32c(b"123456789") == 0xE3069283
    assert protocol.crc32c(b"") == 0
    data = bytes(range(256)) * 5
    for length in (1, 7, 8, 9, 63, 1280):
        assert protocol.crc32c(data[:length]) == reference(data[:length])
    assert protocol.crc32c(data[9:], protocol.crc32c(data[:9])) == reference(data)


@settings(max_examples=150)
@given(records, st.integers(0, 2**40), st.integers(-1, 2**20))
def test_round_trip(batch_records: list[Record], base_offset: int, producer_id: int) -> None:
    batch_records = sorted(batch_records, key=lambda record: record.offset)
    shifted = [
        Record(r.key, r.value, r.headers, r.offset + base_offset, r.timestamp)
        for r in batch_records
    ]
    data = protocol.encode_record_batch(shifted, base_offset=base_offset, producer_id=producer_id)
    decoded = protocol.decode_record_batch(data)
    assert decoded.records == shifted
    assert decoded.base_offset == base_offset
    assert decoded.producer_id == producer_id
    assert decoded.max_timestamp == max(r.timestamp for r in batch_records)
    assert decoded.size_bytes == len(data)
    [info] = protocol.validate_record_batches(data)
    assert (info.size_bytes, info.records_count) == (len(data), len(batch_records))
    assert info.last_offset_delta == batch_records[-1].offset
    moved = protocol.rewrite_base_offset(data, 7)
    assert protocol.validate_record_batches(moved) == [info]
    assert protocol.decode_record_batch(moved).records[0].offset == 7 + batch_records[0].offset
    # kafka-python reads what sdi wrote.
    theirs = DefaultRecordBatch(moved)
    assert theirs.validate_crc()
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in theirs] == [
        (7 + r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch_records
    ]


@settings(max_examples=100)
@given(records)
def test_kafka_python_builder_output_decodes(batch_records: list[Record]) -> None:
    batch_records = [r for r in batch_records if r.key is not None or r.value is not None]
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=5, producer_epoch=1, base_sequence=3, batch_size=1 << 20,
    )  # fmt: skip
    for index, record in enumerate(batch_records):
        builder.append(index, record.timestamp, record.key, record.value, record.headers)
    if not batch_records:
        return
    data = bytes(builder.build())
    decoded = protocol.decode_record_batch(data)
    assert (decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (5, 1, 3)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decoded.records] == [
        (index, r.timestamp, r.key, r.value, r.headers) for index, r in enumerate(batch_records)
    ]
    assert protocol.validate_record_batches(data + data)[1].position == len(data)
    assert len(protocol.decode_record_batches(data + data)) == 2


def good_batch() -> bytes:
    return protocol.encode_record_batch(
        [Record(b"k", b"v", [("h", b"1")], 0, 10), Record(None, b"w", [], 1, 11)]
    )


def with_crc(data: bytearray) -> bytes:
    """Recomputes the CRC so that a test reaches the check after it."""
    struct.pack_into(">I", data, 17, protocol.crc32c(bytes(data[21:])))
    return bytes(data)


def corrupt(offset: int, value: bytes, fix_crc: bool = True) -> bytes:
    data = bytearray(good_batch())
    data[offset : offset + len(value)] = value
    return with_crc(data) if fix_crc else bytes(data)


MALFORMED = [
    ("empty", b"", "empty record set"),
    ("truncated header", good_batch()[:40], "truncated record batch"),
    ("truncated body", good_batch()[:-1], "only .* bytes follow"),
    ("batch length too small", corrupt(8, b"\x00\x00\x00\x05"), "too small"),
    ("negative batch length", corrupt(8, b"\xff\xff\xff\xff"), "too small"),
    ("bad crc", corrupt(70, b"\x00", fix_crc=False), "fails its CRC"),
    ("wrong magic", corrupt(16, b"\x01"), "magic 1"),
    ("gzip", corrupt(22, b"\x01"), "compression gzip, which is not supported"),
    ("zstd", corrupt(22, b"\x04"), "compression zstd"),
    ("unknown codec", corrupt(22, b"\x07"), "unknown"),
    ("negative count", corrupt(57, b"\xff\xff\xff\xff"), "negative record count"),
    ("count too high", corrupt(57, b"\x00\x00\x00\x03"), "record 2"),
    ("count too low", corrupt(57, b"\x00\x00\x00\x01"), "bytes after its 1 records"),
    ("record length past end", corrupt(61, b"\x7e"), "past the end of the batch"),
    ("negative record length", corrupt(61, b"\x01"), "record 0"),
]


@pytest.mark.parametrize(
    ("data", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_batches(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol.validate_record_batches(data)
    if data:
        with pytest.raises(ProtocolError):
            protocol.decode_record_batch(data)


def test_record_fields_disagreeing_with_record_length() -> None:
    data = bytearray(good_batch())
    # The first record's key length 1 becomes 2: the record length no longer adds up.
    assert data[65] == 2
    data[65] = 4
    with pytest.raises(ProtocolError, match="record 0"):
        protocol.decode_record_batch(with_crc(data))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for check in (protocol.validate_record_batches, protocol.decode_record_batch):
        with contextlib.suppress(ProtocolError):
            check(data)
