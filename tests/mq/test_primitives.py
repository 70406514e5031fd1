"""Primitive readers and writers: round trips, exact encodings, malformed input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi.errors import InvalidArgument, ProtocolError
from sdi.mq.protocol import Reader, Writer

short_text = st.text(max_size=40)
blobs = st.binary(max_size=300)

CASES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("int8", st.integers(-(2**7), 2**7 - 1)),
    ("int16", st.integers(-(2**15), 2**15 - 1)),
    ("int32", st.integers(-(2**31), 2**31 - 1)),
    ("uint32", st.integers(0, 2**32 - 1)),
    ("int64", st.integers(-(2**63), 2**63 - 1)),
    ("unsigned_varint", st.integers(0, 2**32 - 1)),
    ("varint", st.integers(-(2**31), 2**31 - 1)),
    ("varlong", st.integers(-(2**63), 2**63 - 1)),
    ("boolean", st.booleans()),
    ("string", short_text),
    ("nullable_string", st.none() | short_text),
    ("bytes_", blobs),
    ("nullable_bytes", st.none() | blobs),
    ("compact_string", short_text),
    ("compact_nullable_string", st.none() | short_text),
    ("compact_bytes", blobs),
    ("compact_nullable_bytes", st.none() | blobs),
]


@pytest.mark.parametrize(("name", "strategy"), CASES, ids=[name for name, _ in CASES])
def test_round_trip(name: str, strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=60)
    @given(st.lists(strategy, max_size=8))
    def check(values: list[Any]) -> None:
        writer = Writer()
        for value in values:
            getattr(writer, name)(value)
        reader = Reader(writer.getvalue())
        assert [getattr(reader, name)() for _ in values] == values
        reader.expect_end()

    check()


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda w: w.varint(0), "00"),
        (lambda w: w.varint(-1), "01"),
        (lambda w: w.varint(1), "02"),
        (lambda w: w.varint(-64), "7f"),
        (lambda w: w.varint(64), "8001"),
        (lambda w: w.varint(-(2**31)), "ffffffff0f"),
        (lambda w: w.unsigned_varint(300), "ac02"),
        (lambda w: w.varlong(-(2**63)), "ffffffffffffffffff01"),
        (lambda w: w.int16(-2), "fffe"),
        (lambda w: w.nullable_string(None), "ffff"),
        (lambda w: w.nullable_bytes(None), "ffffffff"),
        (lambda w: w.compact_nullable_string(None), "00"),
        (lambda w: w.compact_string("ab"), "036162"),
        (lambda w: w.string("é"), "0002c3a9"),
        (lambda w: w.array_length(None), "ffffffff"),
        (lambda w: w.compact_array_length(2), "03"),
        (lambda w: w.empty_tagged_fields(), "00"),
    ],
)
def test_exact_encoding(write: Callable[[Writer], None], expected: str) -> None:
    writer = Writer()
    write(writer)
    assert writer.getvalue().hex() == expected


def test_arrays_and_tagged_fields() -> None:
    reader = Reader(bytes.fromhex("00000002ffffffff03020103aabbcc05000009"))
    assert reader.array_length() == 2
    assert reader.array_length(nullable=True) == -1
    assert reader.compact_array_length() == 2
    assert reader.skip_tagged_fields() == 2
    assert reader.skip_tagged_fields() == 0
    assert reader.rest() == b"\x09"


MALFORMED: list[tuple[str, str, str]] = [
    ("int32", "000000", "truncated int32"),
    ("int64", "", "truncated int64"),
    ("string", "0005616263", "truncated string"),
    ("string", "fffe", "negative string length"),
    ("string", "ffff", "negative string length"),
    ("nullable_string", "ff80", "negative string length"),
    ("string", "0001ff", "not UTF-8"),
    ("bytes_", "ffffffff", "negative bytes length"),
    ("nullable_bytes", "7fffffff00", "truncated bytes"),
    ("compact_string", "00", "null compact string"),
    ("compact_bytes", "0a00", "truncated compact bytes"),
    ("varint", "8080", "truncated varint"),
    ("varint", "ffffffff1f", "longer than 32 bits"),
    ("unsigned_varint", "ffffffffffff", "longer than 32 bits"),
    ("varlong", "ffffffffffffffffff7f", "longer than 64 bits"),
    ("array_length", "fffffffe", "negative array length"),
    ("array_length", "ffffffff", "negative array length"),
    ("array_length", "0000ffff00", "past the end"),
    ("compact_array_length", "00", "null compact array"),
    ("compact_array_length", "ff01", "past the end"),
    ("skip_tagged_fields", "01000a00", "truncated tagged field"),
]


@pytest.mark.parametrize(("method", "data", "message"), MALFORMED)
def test_malformed(method: str, data: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        getattr(Reader(bytes.fromhex(data)), method)()


def test_expect_end_and_out_of_range_writes() -> None:
    with pytest.raises(ProtocolError, match="1 bytes left over"):
        Reader(b"\x00").expect_end()
    with pytest.raises(InvalidArgument, match="int16"):
        Writer().int16(2**15)
    with pytest.raises(InvalidArgument, match="string length"):
        Writer().string("x" * 2**15)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for name, _ in CASES:
        with contextlib.suppress(ProtocolError):
            getattr(Reader(data), name)()
