"""RESP2/RESP3, the Redis protocol: a sans-IO parser and encoders.

The codec is compiled (Cython, ``sdi._resp``); this module is its documented,
typed face. Nothing here does I/O: give the parser the bytes you read, in any
split, and take complete values out; send the bytes the encoders return.

Reading replies (the client side), in any split of the stream:

>>> from sdi import resp
>>> parser = resp.ReplyParser()
>>> parser.feed(b"+OK\\r\\n:42\\r\\n$5\\r\\nhel")
>>> parser.read_all()
[b'OK', 42]
>>> parser.parse(b"lo\\r\\n*2\\r\\n$1\\r\\na\\r\\n$-1\\r\\n-ERR no such key\\r\\n")
[b'hello', [b'a', None], ReplyError('ERR no such key')]

RESP3 types map onto Python types (``docs/internals/resp.md`` has the table):

>>> parser.parse(b"%1\\r\\n$4\\r\\nname\\r\\n,1.5\\r\\n#t\\r\\n_\\r\\n")
[{b'name': 1.5}, True, None]
>>> parser.parse(b">2\\r\\n+message\\r\\n$2\\r\\nhi\\r\\n")
[Push([b'message', b'hi'])]

One value at a time, hiredis style (``not_enough_data``, False by default,
when no complete value is buffered; pass another sentinel for RESP3, where
False is also a value):

>>> parser.feed(b":1\\r\\n")
>>> parser.gets(), parser.gets()
(1, False)

Reading commands (the server side): RESP arrays of bulk strings and inline
commands, each as a list of bytes:

>>> commands = resp.CommandParser()
>>> commands.parse(b"*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\nPING\\r\\n")
[[b'GET', b'k'], [b'PING']]

Malformed input raises :class:`sdi.errors.ProtocolError` and leaves the parser
stopped for good (a server replies ``-ERR Protocol error`` and closes):

>>> resp.ReplyParser().parse(b"$-5\\r\\n")
Traceback (most recent call last):
...
sdi.errors.ProtocolError: bad bulk length -5: only $-1 may be negative at stream offset 0: ...

Encoding commands and replies:

>>> resp.encode_command("SET", b"key", 1)
b'*3\\r\\n$3\\r\\nSET\\r\\n$3\\r\\nkey\\r\\n$1\\r\\n1\\r\\n'
>>> resp.encode_reply(resp.SimpleString(b"OK"))
b'+OK\\r\\n'
>>> resp.encode_reply({b"a": 1.5, b"b": None}, protocol=3)
b'%2\\r\\n$1\\r\\na\\r\\n,1.5\\r\\n$1\\r\\nb\\r\\n_\\r\\n'
>>> resp.encode_reply({b"a": 1.5, b"b": None}, protocol=2)
b'*4\\r\\n$1\\r\\na\\r\\n$3\\r\\n1.5\\r\\n$1\\r\\nb\\r\\n$-1\\r\\n'
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sdi._resp import (
    AGGREGATE_LENGTH_MAX,
    BUFFER_BYTES_MAX,
    BULK_BYTES_MAX,
    DEPTH_MAX,
    INLINE_BYTES_MAX,
    LINE_BYTES_MAX,
    Attributed,
    CommandParser,
    Push,
    ReplyError,
    ReplyParser,
    SimpleString,
    encode_command,
    encode_commands,
    encode_replies,
    encode_reply,
)

__all__ = [
    "AGGREGATE_LENGTH_MAX",
    "BUFFER_BYTES_MAX",
    "BULK_BYTES_MAX",
    "DEPTH_MAX",
    "INLINE_BYTES_MAX",
    "LINE_BYTES_MAX",
    "Argument",
    "Attributed",
    "CommandParser",
    "Push",
    "ReplyError",
    "ReplyParser",
    "SimpleString",
    "Value",
    "encode_command",
    "encode_commands",
    "encode_replies",
    "encode_reply",
]

#: What a parser returns: bytes, int, float, bool, None, list (also ``Push``),
#: dict, :class:`ReplyError`, or :class:`Attributed` with ``keep_attributes``.
#: Typed as ``Any`` because the shape of a reply depends on the command sent.
Value: TypeAlias = Any

#: What ``encode_command`` accepts for one argument.
Argument: TypeAlias = bytes | bytearray | memoryview | str | int | float
