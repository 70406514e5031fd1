"""The parsers: type mapping, malformed input, limits, the error state, commands."""

from __future__ import annotations

import gc
import math
import tracemalloc
from typing import Any

import pytest

from sdi import resp
from sdi.errors import InvalidArgument, ProtocolError


def parse(data: bytes, **limits: Any) -> list[Any]:
    return resp.ReplyParser(**limits).parse(data)


def test_mapping_of_every_reply_type() -> None:
    values = parse(
        b"+OK\r\n-ERR bad\r\n:-12\r\n$3\r\na\x00c\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n$0\r\n\r\n"
        b"_\r\n#t\r\n#f\r\n,2.5\r\n,-inf\r\n,nan\r\n(-123456789012345678901234567890\r\n"
        b"!8\r\nERR a\r\nb\r\n=8\r\nmkd:# hi\r\n%1\r\n$1\r\nk\r\n:1\r\n~1\r\n+m\r\n>1\r\n+p\r\n"
    )
    assert values[:7] == [b"OK", values[1], -12, b"a\x00c", None, None, [1, b""]]
    assert isinstance(values[1], resp.ReplyError)
    assert str(values[1]) == "ERR bad"
    assert values[7:12] == [None, True, False, 2.5, -math.inf]
    assert values[7] is None
    assert values[8] is True
    assert values[9] is False
    assert math.isnan(values[12])
    assert values[13] == -123456789012345678901234567890
    assert isinstance(values[14], resp.ReplyError)
    assert str(values[14]) == "ERR a\r\nb"
    assert values[15:] == [b"# hi", {b"k": 1}, [b"m"], [b"p"]]
    assert type(values[18]) is resp.Push
    assert type(values[17]) is list


def test_common_replies_are_shared_objects() -> None:
    first, second = parse(b"+OK\r\n+OK\r\n")
    assert first is second
    small = parse(b":1000\r\n:1000\r\n")
    assert small[0] is small[1]


def test_attributes_are_dropped_or_kept() -> None:
    stream = b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n*2\r\n|1\r\n+a\r\n+b\r\n:5\r\n:6\r\n"
    assert parse(stream) == [b"v", [5, 6]]
    kept = parse(stream, keep_attributes=True)
    assert kept == [
        resp.Attributed(b"v", {b"ttl": 3}),
        [resp.Attributed(5, {b"a": b"b"}), 6],
    ]
    assert resp.ReplyParser(keep_attributes=True).parse(resp.encode_reply(kept[0], protocol=3)) == [
        kept[0]
    ]


def test_gets_one_at_a_time_with_a_sentinel() -> None:
    parser = resp.ReplyParser()
    parser.feed(b"#f\r\n:1")
    assert parser.gets() is False  # the value, not "no data": hence the sentinel option
    assert parser.gets() is False
    nothing = object()
    parser = resp.ReplyParser(not_enough_data=nothing)
    parser.feed(b"#f\r\n:1")
    assert parser.gets() is False
    assert parser.gets() is nothing
    parser.feed(b"\r\n")
    assert parser.gets() == 1


def test_custom_reply_error_class() -> None:
    class CustomError(Exception):
        pass

    (value,) = resp.ReplyParser(reply_error=CustomError).parse(b"-WRONGTYPE no\r\n")
    assert type(value) is CustomError
    assert str(value) == "WRONGTYPE no"


def test_invalid_utf8_in_an_error_is_replaced() -> None:
    (value,) = parse(b"-ERR \xff\r\n")
    assert str(value) == "ERR \ufffd"


def test_bytes_are_parsed_in_place_and_other_buffers_copied() -> None:
    parser = resp.ReplyParser()
    parser.feed(b"$5\r\nhel")
    assert parser.buffered_bytes == 7
    assert parser.read_all() == []
    reused = bytearray(b"lo\r\n:1\r\n")
    parser.feed(reused)
    reused[:] = b"XXXXXXXXX"  # the caller reuses its receive buffer
    assert parser.read_all() == [b"hello", 1]
    assert parser.buffered_bytes == 0
    assert parser.parse(memoryview(b"+x\r\n")) == [b"x"]


def test_a_large_bulk_in_small_chunks() -> None:
    payload = bytes(range(256)) * 4096
    data = b"$%d\r\n%s\r\n" % (len(payload), payload)
    parser = resp.ReplyParser()
    out: list[Any] = []
    for start in range(0, len(data), 4000):
        out += parser.parse(data[start : start + 4000])
    assert out == [payload]


def test_a_long_array_in_small_chunks() -> None:
    data = resp.encode_reply([b"x%d" % i for i in range(20000)])
    parser = resp.ReplyParser()
    out: list[Any] = []
    for start in range(0, len(data), 1000):
        out += parser.parse(data[start : start + 1000])
    assert out == [[b"x%d" % i for i in range(20000)]]


MALFORMED = [
    (b"?\r\n", "unknown reply type byte b'\\?'"),
    (b"$abc\r\n", "bad bulk length: the length is not a decimal integer"),
    (b"$\r\n", "bad bulk length: the length is not a decimal integer"),
    (b"$-2\r\n", r"bad bulk length -2: only \$-1 may be negative"),
    (b"$3\r\nabcXY", "not followed by CRLF"),
    (b"$1\rX", "CR that is not followed by LF"),
    (b"$99999999999999999999\r\n", "outside the signed 64-bit range"),
    (b"*-2\r\n", r"bad aggregate length -2: only \*-1 may be negative"),
    (b"%-1\r\n", "bad aggregate length -1"),
    (b"*x\r\n", "bad aggregate length: the length is not a decimal integer"),
    (b":12a\r\n", "bad integer reply: the value is not a decimal integer"),
    (b":+5\r\n", "bad integer reply"),
    (b":\r\n", "bad integer reply"),
    (b":1\r:", "bad integer reply: the value has a CR that is not followed by LF"),
    (b":9223372036854775808\r\n", "outside the signed 64-bit range"),
    (b"+a\nb\r\n", "a simple string contains LF"),
    (b"-a\nb\r\n", "an error reply contains LF"),
    (b"+OK\rX", "a CR is not followed by LF"),
    (b"#x\r\n", "a RESP3 boolean must be #t or #f"),
    (b"#tt\r\n", "a RESP3 boolean must be #t or #f"),
    (b"_x\r\n", "a RESP3 null must be '_' then CRLF"),
    (b",abc\r\n", "bad double"),
    (b", 1\r\n", "bad double"),
    (b",\r\n", "bad double"),
    (b"(12x\r\n", "bad big number: not a decimal integer"),
    (b"(-\r\n", "bad big number: no digits"),
    (b"=3\r\ntxt\r\n", "a verbatim string must start with a 3-byte format and ':'"),
    (b"=5\r\ntxt-a\r\n", "a verbatim string must start"),
    (b"%1\r\n*1\r\n:1\r\n:2\r\n", "map key of type list is not hashable"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_input_raises_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse(data)


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_input_fed_byte_by_byte_raises_too(data: bytes, message: str) -> None:
    parser = resp.ReplyParser()
    with pytest.raises(ProtocolError, match=message):  # noqa: PT012
        for index in range(len(data)):
            parser.parse(data[index : index + 1])


def test_the_error_state_is_final() -> None:
    parser = resp.ReplyParser()
    assert parser.error is None
    assert parser.parse(b"+fine\r\n") == [b"fine"]
    with pytest.raises(ProtocolError, match="at stream offset 7"):
        parser.parse(b"$-3\r\n")
    assert parser.error is not None
    assert "bad bulk length -3" in parser.error
    for call in (lambda: parser.feed(b"+OK\r\n"), parser.read_all, parser.gets):
        with pytest.raises(ProtocolError, match="stopped at an earlier protocol error"):
            call()


def test_an_exception_in_the_reply_error_callback_stops_the_parser() -> None:
    def broken(message: str) -> Exception:
        raise RuntimeError("callback failed")

    parser = resp.ReplyParser(reply_error=broken)
    with pytest.raises(RuntimeError, match="callback failed"):
        parser.parse(b"*2\r\n-ERR x\r\n:1\r\n")
    with pytest.raises(ProtocolError, match="callback failed"):
        parser.parse(b":1\r\n")


def test_reentering_the_parser_from_a_callback_is_refused() -> None:
    parser: resp.ReplyParser

    def sneaky(message: str) -> Exception:
        parser.feed(b"+more\r\n")
        return resp.ReplyError(message)

    parser = resp.ReplyParser(reply_error=sneaky)
    with pytest.raises(InvalidArgument, match="called again while it was parsing"):
        parser.parse(b"-ERR x\r\n")


# -- limits ----------------------------------------------------------------


def test_default_limits() -> None:
    assert resp.BULK_BYTES_MAX == 512 * 1024 * 1024
    assert resp.DEPTH_MAX == 64
    with pytest.raises(ProtocolError, match="past bulk_bytes_max=536870912"):
        parse(b"$536870913\r\n")
    assert parse(b"$536870912\r\n") == []  # allowed, and only waits for the payload


@pytest.mark.parametrize(
    ("limits", "good", "bad", "message"),
    [
        ({"bulk_bytes_max": 3}, b"$3\r\nabc\r\n", b"$4\r\nabcd\r\n", "bulk_bytes_max=3"),
        ({"bulk_bytes_max": 7}, b"=7\r\ntxt:abc\r\n", b"!8\r\nabcdefgh\r\n", "bulk_bytes_max=7"),
        ({"aggregate_length_max": 2}, b"*2\r\n:1\r\n:2\r\n", b"*3\r\n", "aggregate_length_max=2"),
        ({"aggregate_length_max": 1}, b"%1\r\n:1\r\n:2\r\n", b"%2\r\n", "aggregate_length_max=1"),
        ({"depth_max": 2}, b"*1\r\n*1\r\n:1\r\n", b"*1\r\n*1\r\n*1\r\n", "depth_max=2"),
        ({"depth_max": 1}, b"%1\r\n:1\r\n:2\r\n", b"*1\r\n>1\r\n", "depth_max=1"),
        ({"line_bytes_max": 4}, b"+abcd\r\n", b"+abcde\r\n", "line_bytes_max=4"),
        ({"line_bytes_max": 4}, b"-abcd\r\n", b"-abcdefgh", "line_bytes_max=4"),
        ({"buffer_bytes_max": 10}, b"$4\r\nabcd\r\n", b"$5\r\nabcde\r\n", "buffer_bytes_max=10"),
    ],
)
def test_configured_limits(limits: dict[str, int], good: bytes, bad: bytes, message: str) -> None:
    assert len(parse(good, **limits)) == 1
    with pytest.raises(ProtocolError, match=message):
        parse(bad, **limits)


def test_buffer_limit_counts_the_value_being_built() -> None:
    parser = resp.ReplyParser(buffer_bytes_max=40)
    parser.parse(b"*100\r\n" + b":1\r\n" * 8)
    with pytest.raises(ProtocolError, match="buffer_bytes_max=40"):
        parser.parse(b":1\r\n" * 2)


@pytest.mark.parametrize(
    "limits",
    [
        {"depth_max": 0},
        {"depth_max": 5000},
        {"bulk_bytes_max": -1},
        {"aggregate_length_max": 2**31},
        {"line_bytes_max": "10"},
        {"buffer_bytes_max": True},
    ],
)
def test_bad_limits_are_invalid_arguments(limits: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        resp.ReplyParser(**limits)


def test_a_declared_huge_count_allocates_nothing_up_front() -> None:
    tracemalloc.start()
    try:
        parser = resp.ReplyParser()
        before = tracemalloc.get_traced_memory()[0]
        parser.parse(b"*2147483647\r\n:1\r\n")
        parser.parse(b"%2147483647\r\n")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_feed_rejects_non_buffers() -> None:
    with pytest.raises(InvalidArgument, match="bytes-like"):
        resp.ReplyParser().feed("text")  # type: ignore[arg-type]


# -- commands ----------------------------------------------------------------


def test_command_parser_reads_arrays_and_inline_commands() -> None:
    parser = resp.CommandParser()
    stream = (
        b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n"
        b"PING\r\n"
        b"\r\n"
        b"  get   key  \n"
        b"set \"a b\\x41\\n\" 'it\\'s'\r\n"
        b"*0\r\n*-1\r\n"
        b"ECHO x\r\n"
    )
    assert parser.parse(stream) == [
        [b"SET", b"key", b""],
        [b"PING"],
        [b"get", b"key"],
        [b"set", b"a bA\n", b"it's"],
        [b"ECHO", b"x"],
    ]


def test_command_parser_one_byte_at_a_time() -> None:
    stream = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n"
    parser = resp.CommandParser()
    out: list[Any] = []
    for index in range(len(stream)):
        out += parser.parse(stream[index : index + 1])
    assert out == [[b"GET", b"k"], [b"PING"]]


@pytest.mark.parametrize(
    ("data", "message", "limits"),
    [
        (b"*1\r\n:1\r\n", "expected '\\$' for a command argument, got b':'", {}),
        (b"*1\r\n*1\r\n", "expected '\\$'", {}),
        (b"*1\r\n$-1\r\n", "the length is negative", {}),
        (b"*-2\r\n", "bad command length -2", {}),
        (b"*x\r\n", "bad command length", {}),
        (b'set "abc\r\n', "unbalanced quotes", {}),
        (b'set "a"b\r\n', "unbalanced quotes", {}),
        (b"set 'abc\r\n", "unbalanced quotes", {}),
        (b"PING" * 10, "inline_bytes_max=16", {"inline_bytes_max": 16}),
        (b"*3\r\n", "aggregate_length_max=2", {"aggregate_length_max": 2}),
        (b"*1\r\n$4\r\nabcd\r\n", "bulk_bytes_max=3", {"bulk_bytes_max": 3}),
        (b"*1\r\n$4\r\nabcdXY", "not followed by CRLF", {}),
    ],
)
def test_malformed_commands(data: bytes, message: str, limits: dict[str, int]) -> None:
    with pytest.raises(ProtocolError, match=message):
        resp.CommandParser(**limits).parse(data)


def test_values_before_an_error_come_out_first() -> None:
    parser = resp.CommandParser()
    assert parser.parse(b"PING\r\n*1\r\n:1\r\n") == [[b"PING"]]
    assert parser.error is not None
    assert "expected '$'" in parser.error
    with pytest.raises(ProtocolError, match=r"earlier protocol error .expected '\$'"):
        parser.read_all()


def test_the_garbage_collector_state_is_restored() -> None:
    assert gc.isenabled()
    resp.ReplyParser().parse(b"*2\r\n:1\r\n:2\r\n")
    assert gc.isenabled()
    with pytest.raises(ProtocolError):
        resp.ReplyParser().parse(b"*2\r\n?")
    assert gc.isenabled()
    gc.disable()
    try:
        resp.ReplyParser().parse(b"*1\r\n:1\r\n")
        assert not gc.isenabled()
    finally:
        gc.enable()
