"""The encoders: commands for a client, replies (RESP2 and RESP3) for a server."""

from __future__ import annotations

from typing import Any

import pytest

from sdi import resp
from sdi.errors import InvalidArgument, LimitExceeded


def test_encode_command_argument_types() -> None:
    assert resp.encode_command("SET", b"k", bytearray(b"v"), memoryview(b"m"), 7, -1, 2.5) == (
        b"*7\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\nm\r\n$1\r\n7\r\n$2\r\n-1\r\n$3\r\n2.5\r\n"
    )
    assert resp.encode_command("ECHO", "é") == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    assert resp.encode_command("INCRBY", b"k", 2**64) == (
        b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$20\r\n18446744073709551616\r\n"
    )
    assert resp.encode_command("X", -(2**63)) == b"*2\r\n$1\r\nX\r\n$20\r\n-9223372036854775808\r\n"


@pytest.mark.parametrize("argument", [True, None, object(), [b"x"], "\ud800"])
def test_encode_command_refuses_ambiguous_arguments(argument: Any) -> None:
    with pytest.raises(InvalidArgument):
        resp.encode_command("SET", argument)


def test_encode_command_needs_a_name() -> None:
    with pytest.raises(InvalidArgument, match="at least one argument"):
        resp.encode_command()


def test_encode_commands_is_the_concatenation() -> None:
    commands = [("GET", "a"), ["SET", b"a", 1], ("PING",)]
    assert resp.encode_commands(commands) == b"".join(resp.encode_command(*c) for c in commands)
    assert resp.encode_commands([]) == b""
    with pytest.raises(InvalidArgument, match="bare bytes or str"):
        resp.encode_commands([b"GET"])


@pytest.mark.parametrize(
    ("value", "resp2", "resp3"),
    [
        (None, b"$-1\r\n", b"_\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (False, b":0\r\n", b"#f\r\n"),
        (7, b":7\r\n", b":7\r\n"),
        (2**64, b"$20\r\n18446744073709551616\r\n", b"(18446744073709551616\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n"),
        (float("-inf"), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (b"ab", b"$2\r\nab\r\n", b"$2\r\nab\r\n"),
        ("é", b"$2\r\n\xc3\xa9\r\n", b"$2\r\n\xc3\xa9\r\n"),
        (resp.SimpleString(b"OK"), b"+OK\r\n", b"+OK\r\n"),
        (resp.ReplyError("ERR no"), b"-ERR no\r\n", b"-ERR no\r\n"),
        ([1, (b"x",)], b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n", b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
        ({b"k": 1}, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
        ({b"m"}, b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (resp.Push([b"p"]), b"*1\r\n$1\r\np\r\n", b">1\r\n$1\r\np\r\n"),
        (resp.Attributed(1, {b"a": 2}), b":1\r\n", b"|1\r\n$1\r\na\r\n:2\r\n:1\r\n"),
    ],
)
def test_encode_reply_in_both_protocols(value: Any, resp2: bytes, resp3: bytes) -> None:
    assert resp.encode_reply(value) == resp2
    assert resp.encode_reply(value, protocol=2) == resp2
    assert resp.encode_reply(value, protocol=3) == resp3


def test_multi_line_errors_become_bulk_errors_in_resp3_only() -> None:
    error = resp.ReplyError("ERR a\nb")
    assert resp.encode_reply(error, protocol=3) == b"!7\r\nERR a\nb\r\n"
    with pytest.raises(InvalidArgument, match="cannot contain CR or LF"):
        resp.encode_reply(error, protocol=2)


def test_simple_strings_cannot_hold_line_breaks() -> None:
    with pytest.raises(InvalidArgument, match="cannot contain CR or LF"):
        resp.encode_reply(resp.SimpleString(b"a\r\nb"))


def test_encode_replies_is_the_concatenation() -> None:
    values = [resp.SimpleString(b"OK"), 1, None, [b"x"]]
    assert resp.encode_replies(values, protocol=3) == b"".join(
        resp.encode_reply(value, protocol=3) for value in values
    )


def test_encode_reply_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(InvalidArgument, match="cannot encode a object"):
        resp.encode_reply(object())
    with pytest.raises(InvalidArgument, match="protocol must be 2 or 3"):
        resp.encode_reply(1, protocol=4)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(LimitExceeded, match="nests deeper"):
        resp.encode_reply(looped)
