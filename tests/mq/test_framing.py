"""Frame splitting, request headers and response frames."""

from __future__ import annotations

import pytest

from sdi.errors import ProtocolError
from sdi.mq import protocol
from sdi.mq.protocol import FrameParser, Writer


def request(
    api_key: int, version: int, correlation_id: int, client_id: str | None, body: bytes
) -> bytes:
    writer = Writer()
    writer.int16(api_key)
    writer.int16(version)
    writer.int32(correlation_id)
    writer.nullable_string(client_id)
    if protocol.request_header_version(api_key, version) == 2:
        writer.raw(bytes.fromhex("010502abcd"))  # one tagged field, skipped
    writer.raw(body)
    frame = writer.getvalue()
    return len(frame).to_bytes(4, "big") + frame


STREAM = (
    request(18, 0, 1, "a", b"")
    + request(3, 8, 2, None, b"\xff\xff\xff\xff\x01\x00\x00")
    + request(18, 3, 3, "client", b"\x00\x00\x00")
    + (0).to_bytes(4, "big")
)


def test_every_split_point_gives_the_same_frames() -> None:
    whole = FrameParser().feed(STREAM)
    assert len(whole) == 4
    assert whole[-1] == b""
    for cut in range(len(STREAM) + 1):
        parser = FrameParser()
        frames = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert frames == whole, cut
        assert parser.buffered_bytes == 0
    for second in range(0, len(STREAM), 7):
        parser = FrameParser()
        frames = []
        for start in range(0, len(STREAM), 1 + second % 5):
            frames += parser.feed(STREAM[start : start + 1 + second % 5])
        assert frames == whole


def test_headers_v1_and_v2() -> None:
    frames = FrameParser().feed(STREAM)
    first = protocol.parse_request_header(frames[0])
    assert (first.api_key, first.api_version, first.correlation_id, first.client_id) == (
        18,
        0,
        1,
        "a",
    )
    assert first.body == b""
    second = protocol.parse_request_header(frames[1])
    assert second.client_id is None
    assert second.body == b"\xff\xff\xff\xff\x01\x00\x00"
    third = protocol.parse_request_header(frames[2])
    assert (third.api_version, third.client_id, third.body) == (3, "client", b"\x00\x00\x00")


def test_size_limit_and_negative_size_stop_the_parser() -> None:
    parser = FrameParser(frame_bytes_max=16)
    assert parser.feed((16).to_bytes(4, "big") + bytes(16)) == [bytes(16)]
    with pytest.raises(ProtocolError, match="larger than frame_bytes_max"):
        parser.feed((17).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="larger than frame_bytes_max"):
        parser.feed(b"")
    assert parser.error is not None
    with pytest.raises(ProtocolError, match="negative frame size"):
        FrameParser().feed(b"\xff\xff\xff\xfe")
    assert FrameParser().frame_bytes_max == protocol.FRAME_BYTES_MAX == 100 * 1024 * 1024


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("0003", "shorter than a header"),
        ("00030001000000010005616263", "truncated string"),
        ("000300010000000180006162", "negative string length"),
        ("0003000900000001ffff", "truncated varint"),
        ("0003000900000001ffff0105", "truncated varint"),
    ],
)
def test_malformed_headers(frame: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol.parse_request_header(bytes.fromhex(frame))


def test_response_frames() -> None:
    assert protocol.encode_response(9, b"\x01").hex() == "000000050000000901"
    assert protocol.encode_response(-1, b"", 1).hex() == "00000005ffffffff00"


def test_frames_before_a_bad_size_are_returned_first() -> None:
    parser = FrameParser(frame_bytes_max=8)
    good = (1).to_bytes(4, "big") + b"x"
    assert parser.feed(good + (9).to_bytes(4, "big")) == [b"x"]
    with pytest.raises(ProtocolError, match="larger than frame_bytes_max"):
        parser.feed(b"")
