"""The compiled codec: framing, garbled messages, limits, and simplefix agreement."""

from __future__ import annotations

import pytest
import simplefix  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument, LimitExceeded, ProtocolError
from sdi.exchange import fix

SOH = b"\x01"
HEADER = [(49, b"CLIENT"), (56, b"SDIX"), (34, b"12"), (52, b"20240102-09:30:00.000")]
BODY = [(11, b"order-1"), (55, b"ACME"), (54, b"1"), (38, b"100"), (40, b"2"), (44, b"101.25")]

# Values FIX allows: non-empty, no SOH. Tags avoid the framing ones (8, 9, 10, 35).
VALUES = st.binary(min_size=1, max_size=30).filter(lambda value: SOH not in value)
# simplefix reads the raw-data length tags (90, 95, 348, ...) as lengths, so they are left out.
RAW_LENGTH_TAGS = set(simplefix.FixParser().raw_len_tags)
TAGS = st.integers(min_value=11, max_value=fix.TAG_MAX).filter(
    lambda tag: tag != 35 and tag not in RAW_LENGTH_TAGS
)
MSG_TYPES = st.sampled_from([b"0", b"A", b"D", b"8", b"j", b"AE"])
FIELDS = st.lists(st.tuples(TAGS, VALUES), min_size=1, max_size=20)


def simplefix_bytes(msg_type: bytes, fields: list[tuple[int, bytes]]) -> bytes:
    message = simplefix.FixMessage()
    message.append_pair(8, "FIX.4.4", header=True)
    message.append_pair(35, msg_type, header=True)
    for tag, value in fields:
        message.append_pair(tag, value)
    return bytes(message.encode())


def simplefix_parse(data: bytes) -> list[tuple[int, bytes]]:
    parser = simplefix.FixParser()
    parser.append_buffer(data)
    message = parser.get_message()
    assert message is not None
    assert parser.get_message() is None
    return [(int(tag), value) for tag, value in message.pairs]


@settings(max_examples=200, deadline=None)
@given(MSG_TYPES, FIELDS)
def test_simplefix_messages_parse_in_sdi(msg_type: bytes, fields: list[tuple[int, bytes]]) -> None:
    [message] = fix.FixParser().parse(simplefix_bytes(msg_type, fields))
    assert isinstance(message, fix.Message)
    assert message.msg_type == msg_type
    assert message.fields == fields


@settings(max_examples=200, deadline=None)
@given(MSG_TYPES, FIELDS)
def test_sdi_messages_parse_in_simplefix(msg_type: bytes, fields: list[tuple[int, bytes]]) -> None:
    data = fix.encode(msg_type, fields)
    pairs = simplefix_parse(data)
    assert pairs[0] == (8, b"FIX.4.4")
    assert pairs[1] == (
        9,
        str(len(data) - len(b"8=FIX.4.4\x01") - len(pairs[1][1]) - 3 - 7).encode(),
    )
    assert pairs[2] == (35, msg_type)
    assert pairs[3:-1] == fields
    assert pairs[-1][0] == 10
    assert data == simplefix_bytes(msg_type, fields)


def test_every_split_gives_the_same_messages() -> None:
    one = fix.encode(b"D", HEADER + BODY)
    two = fix.encode(b"0", HEADER)
    stream = one + two + one
    for cut in range(len(stream) + 1):
        parser = fix.FixParser()
        out = parser.parse(stream[:cut]) + parser.parse(stream[cut:])
        assert [m.msg_type for m in out if isinstance(m, fix.Message)] == [b"D", b"0", b"D"], cut
        assert len(out) == 3
        assert parser.buffered_bytes == 0
    parser = fix.FixParser()
    byte_by_byte = [item for i in range(len(stream)) for item in parser.parse(stream[i : i + 1])]
    assert byte_by_byte == fix.FixParser().parse(stream)


def test_message_lookup_and_offsets() -> None:
    one = fix.encode(b"D", HEADER + BODY)
    first, second = fix.FixParser().parse(one + one)
    assert isinstance(first, fix.Message)
    assert isinstance(second, fix.Message)
    assert first.get(44) == b"101.25"
    assert first[55] == b"ACME"
    assert 999 not in first
    assert first.get(999) is None
    with pytest.raises(KeyError):
        first[999]
    assert (first.offset, second.offset) == (0, len(one))
    assert first.duplicate_tag == 0
    assert len(first) == len(HEADER) + len(BODY)


def test_duplicate_tag_is_flagged_and_first_value_wins() -> None:
    [message] = fix.FixParser().parse(fix.encode(b"D", [*HEADER, (58, b"a"), (58, b"b")]))
    assert isinstance(message, fix.Message)
    assert message.duplicate_tag == 58
    assert message.get(58) == b"a"


def test_bad_checksum_is_dropped_and_parsing_continues() -> None:
    good = fix.encode(b"0", HEADER)
    checksum = good[-4:-1]
    bad = good[:-4] + (b"000" if checksum != b"000" else b"001") + SOH
    out = fix.FixParser().parse(good + bad + good)
    assert [type(item) for item in out] == [fix.Message, fix.Garbled, fix.Message]
    assert isinstance(out[1], fix.Garbled)
    assert out[1].reason.startswith("CheckSum")
    assert out[1].offset == len(good)


@pytest.mark.parametrize("delta", [-3, -1, 1, 5])
def test_bad_body_length_is_dropped_and_parsing_resynchronises(delta: int) -> None:
    good = fix.encode(b"0", HEADER)
    length = len(good) - len(b"8=FIX.4.4\x019=52\x01") - 7
    assert good.startswith(b"8=FIX.4.4\x019=%d\x01" % length)
    bad = good.replace(b"9=%d" % length, b"9=%d" % (length + delta), 1)
    out = fix.FixParser().parse(good + bad + good + good)
    kinds = [type(item) for item in out]
    assert kinds == [fix.Message, fix.Garbled, fix.Message, fix.Message]
    assert isinstance(out[1], fix.Garbled)
    assert "BodyLength" in out[1].reason


def test_garbage_between_messages_is_reported_and_skipped() -> None:
    good = fix.encode(b"0", HEADER)
    out = fix.FixParser().parse(b"noise\x01" + good + b"8=FIX" + good + b"8=FIX.4.48" + good)
    kinds = [fix.Garbled, fix.Message, fix.Garbled, fix.Message, fix.Garbled, fix.Message]
    assert [type(item) for item in out] == kinds


def test_msg_type_not_third_is_garbled() -> None:
    body = b"49=A\x0135=0\x01"
    head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    checksum = sum(head) % 256
    data = head + b"10=%03d\x01" % checksum
    out = fix.FixParser().parse(data + fix.encode(b"0", HEADER))
    assert isinstance(out[0], fix.Garbled)
    assert "MsgType" in out[0].reason
    assert isinstance(out[1], fix.Message)


def frame(body: bytes) -> bytes:
    head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    return head + b"10=%03d\x01" % (sum(head) % 256)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"35=0\x01x9=1\x01", "positive decimal"),
        (b"35=0\x0149=\x01", "empty value"),
        (b"35=0\x01049=A\x01", "leading zeros"),
        (b"35=0\x01123456=A\x01", "tag_max"),
        (b"35=0\x01=A\x01", "positive decimal"),
        (b"35=0\x0149A\x01", "positive decimal"),
        (b"35=0\x0110=123\x01", "framing tag"),
    ],
)
def test_malformed_fields_raise_protocol_error(body: bytes, problem: str) -> None:
    parser = fix.FixParser()
    with pytest.raises(ProtocolError, match=problem):
        parser.parse(frame(body))
    assert parser.error is not None
    with pytest.raises(ProtocolError, match="earlier protocol error"):
        parser.parse(fix.encode(b"0", HEADER))


def test_messages_before_an_error_are_returned_then_it_raises() -> None:
    parser = fix.FixParser()
    out = parser.parse(fix.encode(b"0", HEADER) + frame(b"35=0\x0149=\x01"))
    assert [type(item) for item in out] == [fix.Message]
    with pytest.raises(ProtocolError, match="empty value"):
        parser.read_all()


def test_limits_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="fields_max"):
        fix.FixParser(fields_max=3).parse(fix.encode(b"0", HEADER + BODY))
    with pytest.raises(ProtocolError, match="message_bytes_max"):
        fix.FixParser(message_bytes_max=64).parse(b"8=FIX.4.4\x019=1000\x01")
    parser = fix.FixParser(message_bytes_max=64)
    # The garbled report comes first; the next call raises.
    assert [type(item) for item in parser.parse(b"x" * 200)] == [fix.Garbled]
    with pytest.raises(ProtocolError, match="cannot be resynchronised"):
        parser.read_all()
    with pytest.raises(ProtocolError, match=r"is not FIX\.4\.4"):
        fix.FixParser().parse(b"8=FIXT.1.1\x019=5\x01")
    with pytest.raises(ProtocolError, match=r"is not FIX\.4\.4"):
        fix.FixParser().parse(b"8=FIX.4.2\x019=5\x01")
    parser = fix.FixParser(message_bytes_max=64, buffer_bytes_max=100)
    parser.feed(b"8" * 60)
    with pytest.raises(ProtocolError, match="buffer_bytes_max"):
        parser.feed(b"8" * 60)


def test_garbage_within_the_limit_is_waited_out() -> None:
    parser = fix.FixParser(message_bytes_max=64)
    assert [type(item) for item in parser.parse(b"x" * 50)] == [fix.Garbled]
    [message] = parser.parse(fix.encode(b"0", [(49, b"A")]))
    assert isinstance(message, fix.Message)


def test_parser_limits_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        fix.FixParser(message_bytes_max=1)
    with pytest.raises(InvalidArgument):
        fix.FixParser(fields_max="10")  # type: ignore[arg-type]


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        fix.encode(b"0", [(58, b"")])
    with pytest.raises(InvalidArgument, match="SOH"):
        fix.encode(b"0", [(58, b"a\x01b")])
    with pytest.raises(InvalidArgument, match="framing"):
        fix.encode(b"0", [(10, b"123")])
    with pytest.raises(InvalidArgument, match="floats"):
        fix.encode(b"0", [(44, 1.5)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="ASCII"):
        fix.encode(b"0", [(58, "é")])
    with pytest.raises(InvalidArgument, match="tag"):
        fix.encode(b"0", [(0, b"x")])
    with pytest.raises(LimitExceeded):
        fix.encode(b"0", [(58, b"x" * fix.MESSAGE_BYTES_MAX)])


def test_encode_many_is_the_concatenation() -> None:
    messages: list[tuple[bytes, list[tuple[int, bytes | str | int]]]] = [
        (b"8", [(37, str(i)), (17, i), (58, "fill")]) for i in range(50)
    ]
    assert fix.encode_many(messages) == b"".join(fix.encode(t, f) for t, f in messages)
    assert len(fix.FixParser().parse(fix.encode_many(messages))) == 50
    assert fix.encode_many([]) == b""
