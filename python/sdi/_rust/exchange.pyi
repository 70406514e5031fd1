"""Type stubs for ``sdi._rust.exchange`` (built from ``rust/sdi-py/src/exchange.rs``).

The documented API is ``sdi.exchange``; these are its native halves. Commands
and events cross as flat ``uint8`` arrays of 48- and 80-byte records.
"""

import os
from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BATCH_COMMANDS_MAX",
    "CASH",
    "COMMAND_BYTES",
    "EVENT_BYTES",
    "Exchange",
    "funding_commands",
    "mixed_workload",
]

BATCH_COMMANDS_MAX: int
CASH: int
COMMAND_BYTES: int
EVENT_BYTES: int

_Level = tuple[int, int]

@final
class Exchange:
    def __new__(
        cls,
        symbols: list[tuple[int, int, int, int, int, int]],
        accounts: int,
        orders_resting_max: int,
        funds: bool = True,
        daily_notional_max: int = 0,
        book_deltas: bool = False,
        journal: str | os.PathLike[str] | None = None,
        durability: str = "sync",
    ) -> Exchange: ...
    def submit(self, commands: npt.NDArray[np.uint8], now_ns: int) -> npt.NDArray[np.uint8]: ...
    def submit_timed(self, commands: npt.NDArray[np.uint8], now_ns: int) -> tuple[int, int]: ...
    def measure_latencies(self, commands: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]: ...
    def take_replayed(self) -> npt.NDArray[np.uint8]: ...
    @property
    def next_input_seq(self) -> int: ...
    @property
    def next_event_seq(self) -> int: ...
    @property
    def resting_orders(self) -> int: ...
    def state_hash(self) -> int: ...
    def top_of_book(self, symbol: int) -> tuple[_Level | None, _Level | None]: ...
    def depth(self, symbol: int, side: int, levels: int = 10) -> list[_Level]: ...
    def order(self, order_id: int) -> tuple[int, int, int, int, int] | None: ...
    def balance(self, account: int, symbol: int) -> tuple[int, int]: ...
    def last_trade(self, symbol: int) -> int: ...

def mixed_workload(count: int, seed: int) -> npt.NDArray[np.uint8]: ...
def funding_commands() -> npt.NDArray[np.uint8]: ...
