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
    "MatcherStage",
    "Standby",
    "funding_commands",
    "mixed_workload",
]

BATCH_COMMANDS_MAX: int
CASH: int
COMMAND_BYTES: int
EVENT_BYTES: int

_Level = tuple[int, int]

_Config = tuple[list[tuple[int, int, int, int, int, int]], int, int, bool, int, bool]

@final
class Exchange:
    def __new__(
        cls,
        config: _Config,
        journal: str | os.PathLike[str] | None = None,
        durability: str = "sync",
        keep_replayed: bool = False,
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
    @property
    def max_order_id(self) -> int: ...
    def state_hash(self) -> int: ...
    def top_of_book(self, symbol: int) -> tuple[_Level | None, _Level | None]: ...
    def depth(self, symbol: int, side: int, levels: int = 10) -> list[_Level]: ...
    def order(self, order_id: int) -> tuple[int, int, int, int, int] | None: ...
    def balance(self, account: int, symbol: int) -> tuple[int, int]: ...
    def last_trade(self, symbol: int) -> int: ...

@final
class Standby:
    def __new__(cls, config: _Config, journal: str | os.PathLike[str]) -> Standby: ...
    def poll(self) -> npt.NDArray[np.uint8]: ...
    def try_take_over(
        self, durability: str = "sync"
    ) -> tuple[Exchange, npt.NDArray[np.uint8]] | None: ...
    def try_take_over_as_stage(
        self,
        command_ring: str | os.PathLike[str],
        event_ring: str | os.PathLike[str],
        durability: str = "sync",
        batch_records_max: int = 4096,
        wait: str = "spin_then_yield",
        cpu: int | None = None,
    ) -> tuple[MatcherStage, npt.NDArray[np.uint8]] | None: ...
    @property
    def next_input_seq(self) -> int: ...
    @property
    def max_order_id(self) -> int: ...
    def state_hash(self) -> int: ...

@final
class MatcherStage:
    def __new__(
        cls,
        config: _Config,
        command_ring: str | os.PathLike[str],
        event_ring: str | os.PathLike[str],
        journal: str | os.PathLike[str] | None = None,
        durability: str = "sync",
        batch_records_max: int = 4096,
        wait: str = "spin_then_yield",
        cpu: int | None = None,
    ) -> MatcherStage: ...
    def counters(self) -> tuple[int, int, int]: ...
    def is_finished(self) -> bool: ...
    def stop(self) -> tuple[int, int, int, int, int]: ...

def mixed_workload(count: int, seed: int) -> npt.NDArray[np.uint8]: ...
def funding_commands() -> npt.NDArray[np.uint8]: ...
