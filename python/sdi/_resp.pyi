"""Type stubs for the compiled RESP codec (``cython/sdi/_resp.pyx``); see ``sdi.resp``."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from typing_extensions import Buffer, disjoint_base

BULK_BYTES_MAX: int
AGGREGATE_LENGTH_MAX: int
DEPTH_MAX: int
LINE_BYTES_MAX: int
INLINE_BYTES_MAX: int
BUFFER_BYTES_MAX: int

class ReplyError(Exception): ...
class Push(list[Any]): ...

@disjoint_base
class SimpleString(bytes): ...

class Attributed:
    __slots__ = ("attributes", "value")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    value: Any
    attributes: dict[Any, Any]
    def __init__(self, value: Any, attributes: dict[Any, Any]) -> None: ...
    def __eq__(self, other: object) -> bool: ...

@disjoint_base
class _Parser:
    @property
    def buffered_bytes(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    def feed(self, data: Buffer) -> None: ...
    def gets(self) -> Any: ...
    def read_all(self) -> list[Any]: ...
    def parse(self, data: Buffer) -> list[Any]: ...

class ReplyParser(_Parser):
    def __init__(
        self,
        *,
        bulk_bytes_max: int = ...,
        aggregate_length_max: int = ...,
        depth_max: int = ...,
        line_bytes_max: int = ...,
        buffer_bytes_max: int = ...,
        reply_error: Callable[[str], Any] = ...,
        not_enough_data: Any = False,
        keep_attributes: bool = False,
    ) -> None: ...

class CommandParser(_Parser):
    def __init__(
        self,
        *,
        bulk_bytes_max: int = ...,
        aggregate_length_max: int = ...,
        inline_bytes_max: int = ...,
        buffer_bytes_max: int = ...,
        not_enough_data: Any = False,
    ) -> None: ...

def encode_command(*arguments: Buffer | str | int | float) -> bytes: ...
def encode_commands(commands: Iterable[Sequence[Buffer | str | int | float]]) -> bytes: ...
def encode_reply(value: object, protocol: int = 2) -> bytes: ...
def encode_replies(values: Iterable[object], protocol: int = 2) -> bytes: ...
