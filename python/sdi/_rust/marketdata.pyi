"""Type stubs for ``sdi._rust.marketdata`` (built from ``rust/sdi-py/src/marketdata.rs``).

The documented API is ``sdi.exchange.marketdata``; these are its native halves.
Events cross as flat ``uint8`` arrays of 80-byte records, packets as ``bytes``.
"""

from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BATCH_EVENTS_MAX",
    "CANDLE_INTERVALS_NS",
    "HEADER_BYTES",
    "PACKET_BYTES_DEFAULT",
    "PACKET_BYTES_MAX",
    "PACKET_BYTES_MIN",
    "RECOVERY_DELTAS_MAX",
    "SYMBOLS_MAX",
    "Publisher",
    "Subscriber",
    "decode",
]

BATCH_EVENTS_MAX: int
CANDLE_INTERVALS_NS: tuple[int, int]
HEADER_BYTES: int
PACKET_BYTES_DEFAULT: int
PACKET_BYTES_MAX: int
PACKET_BYTES_MIN: int
RECOVERY_DELTAS_MAX: int
SYMBOLS_MAX: int

_Level = tuple[int, int]
_Candle = tuple[int, int, int, int, int, int, int, int]
_Delta = tuple[str, int, int, int, int]
_Trade = tuple[str, int, int, int, int, int]
_Top = tuple[str, int, _Level | None, _Level | None]
_CandleMessage = tuple[str, int, _Candle]
_Snapshot = tuple[str, int, int, int, bool, list[_Level], list[_Level]]
_Message = _Delta | _Trade | _Top | _CandleMessage | _Snapshot

@final
class Publisher:
    def __new__(cls, channel: int, symbols: int, packet_bytes_max: int = 1400) -> Publisher: ...
    def publish(self, events: npt.NDArray[np.uint8], now_ns: int) -> list[bytes]: ...
    def publish_buffer(
        self, events: npt.NDArray[np.uint8], now_ns: int
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64]]: ...
    def publish_timed(self, events: npt.NDArray[np.uint8], now_ns: int) -> tuple[int, int, int]: ...
    def snapshot(self, symbol: int | None = None, now_ns: int = 0) -> list[bytes]: ...
    def flush(self, now_ns: int) -> list[bytes]: ...
    def heartbeat(self, now_ns: int) -> bytes: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def channel(self) -> int: ...
    @property
    def symbols(self) -> int: ...
    @property
    def packet_bytes_max(self) -> int: ...
    def depth(self, symbol: int, side: int, levels: int = 10) -> list[_Level]: ...

@final
class Subscriber:
    def __new__(
        cls, channel: int, symbols: int, trades_kept: int = 64, candles_kept: int = 64
    ) -> Subscriber: ...
    def apply(self, packet: bytes) -> str: ...
    @property
    def needs_snapshot(self) -> bool: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def channel(self) -> int: ...
    @property
    def symbols(self) -> int: ...
    def stale_symbols(self) -> list[int]: ...
    def stats(self) -> list[tuple[str, int]]: ...
    def depth(self, symbol: int, side: int, levels: int = 10) -> list[_Level]: ...
    def top_of_book(self, symbol: int) -> tuple[_Level | None, _Level | None]: ...
    def trades(self, symbol: int) -> list[tuple[int, int, int, int]]: ...
    def candles(self, symbol: int, interval_ns: int) -> list[_Candle]: ...

def decode(packet: bytes, symbols: int) -> tuple[tuple[int, int, int, int], list[_Message]]: ...
