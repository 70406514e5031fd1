"""Encode then parse: nested values come back, whatever the split of the bytes."""

from __future__ import annotations

import math
from typing import Any

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi import resp

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)
ERRORS = LINE_TEXT.map(lambda text: resp.ReplyError("ERR " + text))

RESP2_LEAVES = st.one_of(st.binary(max_size=40), INT64, st.none(), ERRORS)
RESP2_VALUES = st.recursive(RESP2_LEAVES, lambda inner: st.lists(inner, max_size=5), max_leaves=20)

KEYS = st.one_of(st.binary(max_size=10), INT64)
RESP3_LEAVES = st.one_of(
    st.binary(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    ERRORS,
)
RESP3_VALUES = st.recursive(
    RESP3_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(KEYS, inner, max_size=4),
        st.lists(inner, max_size=4).map(resp.Push),
        st.sets(KEYS, max_size=4),
    ),
    max_leaves=20,
)


def same(left: Any, right: Any) -> bool:
    """Equality where nan equals nan, errors compare by class and message,
    and a set compares with the list it was parsed into."""
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    if isinstance(left, BaseException) or isinstance(right, BaseException):
        return type(left) is type(right) and str(left) == str(right)
    if isinstance(left, set | frozenset):
        return isinstance(right, list) and same(list(left), right)
    if isinstance(left, list) and isinstance(right, list):
        if isinstance(left, resp.Push) != isinstance(right, resp.Push):
            return False
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


def parse_in_chunks(data: bytes, cuts: list[int]) -> list[Any]:
    parser = resp.ReplyParser()
    values: list[Any] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        values += parser.parse(data[previous:cut])
        previous = cut
    assert parser.buffered_bytes == 0
    return values


@given(RESP2_VALUES)
def test_resp2_round_trip(value: Any) -> None:
    assert same(value, resp.ReplyParser().parse(resp.encode_reply(value, protocol=2))[0])


@given(RESP3_VALUES)
def test_resp3_round_trip(value: Any) -> None:
    assert same(value, resp.ReplyParser().parse(resp.encode_reply(value, protocol=3))[0])


@given(st.lists(RESP3_VALUES, min_size=1, max_size=4), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_chunking_gives_the_same_values(values: list[Any], data: st.DataObject) -> None:
    encoded = resp.encode_replies(values, protocol=3)
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=10))
    parsed = parse_in_chunks(encoded, cuts)
    assert len(parsed) == len(values)
    assert all(map(same, values, parsed))


@given(RESP3_VALUES)
@settings(max_examples=40)
def test_split_at_every_byte_position(value: Any) -> None:
    encoded = resp.encode_reply(value, protocol=3)
    for cut in range(len(encoded) + 1):
        parsed = parse_in_chunks(encoded, [cut])
        assert len(parsed) == 1
        assert same(value, parsed[0]), cut


@given(RESP3_VALUES)
@settings(max_examples=40)
def test_one_byte_at_a_time_through_feed_and_gets(value: Any) -> None:
    encoded = resp.encode_reply(value, protocol=3)
    nothing = object()
    parser = resp.ReplyParser(not_enough_data=nothing)
    results = []
    for index in range(len(encoded)):
        parser.feed(bytearray(encoded[index : index + 1]))
        result = parser.gets()
        if result is not nothing:
            results.append(result)
    assert len(results) == 1
    assert same(value, results[0])


@given(st.lists(st.lists(st.binary(max_size=30), min_size=1, max_size=6), max_size=6), st.data())
def test_commands_round_trip_in_any_chunking(
    commands: list[list[bytes]], data: st.DataObject
) -> None:
    encoded = resp.encode_commands(commands)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=8)))
    parser = resp.CommandParser()
    parsed: list[Any] = []
    previous = 0
    for cut in [*cuts, len(encoded)]:
        parsed += parser.parse(encoded[previous:cut])
        previous = cut
    assert parsed == commands


# -- against hiredis ---------------------------------------------------------

# The values on which hiredis and sdi agree value for value: hiredis returns
# big numbers as bytes and has no bulk errors, so neither is generated here.
HIREDIS_LEAVES = st.one_of(
    st.binary(max_size=40),
    INT64,
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    ERRORS,
)
HIREDIS_VALUES = st.recursive(
    HIREDIS_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.binary(max_size=8), inner, max_size=4),
        st.sets(st.binary(max_size=8), max_size=4),
    ),
    max_leaves=20,
)


def normal(value: Any) -> Any:
    """hiredis' and sdi's error classes differ; compare errors by message."""
    if isinstance(value, Exception):
        return ("error", str(value))
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, dict):
        return {key: normal(item) for key, item in value.items()}
    return value


@given(st.lists(HIREDIS_VALUES, min_size=1, max_size=8), st.sampled_from([2, 3]), st.data())
def test_same_values_as_hiredis(values: list[Any], protocol: int, data: st.DataObject) -> None:
    encoded = resp.encode_replies(values, protocol=protocol)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=6)))
    nothing = object()
    reader = hiredis.Reader(notEnoughData=nothing)
    theirs: list[Any] = []
    previous = 0
    for cut in [*cuts, len(encoded)]:
        reader.feed(encoded[previous:cut])
        previous = cut
        while (reply := reader.gets()) is not nothing:
            theirs.append(reply)
    ours = parse_in_chunks(encoded, cuts)
    assert normal(ours) == normal(theirs)


@pytest.mark.parametrize(
    "stream",
    [
        b"+OK\r\n-ERR unknown command\r\n:-7\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n",
        b"%1\r\n+key\r\n~2\r\n:1\r\n:2\r\n>2\r\n+pubsub\r\n$1\r\nx\r\n",
        b",1.5\r\n,inf\r\n,-inf\r\n,1e3\r\n#t\r\n#f\r\n_\r\n=8\r\ntxt:abcd\r\n",
    ],
)
def test_hand_written_streams_match_hiredis(stream: bytes) -> None:
    nothing = object()
    reader = hiredis.Reader(notEnoughData=nothing)
    reader.feed(stream)
    theirs = []
    while (reply := reader.gets()) is not nothing:
        theirs.append(reply)
    assert normal(resp.ReplyParser().parse(stream)) == normal(theirs)
