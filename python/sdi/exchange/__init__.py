"""The stock exchange's core (book chapter 13): sequencer, journal, order books, matching.

Commands go in and events come out as numpy structured arrays, one call per
batch; nothing per order crosses between Python and Rust.

>>> from sdi import exchange as ex
>>> market = ex.Exchange([ex.Symbol(tick_size=1, min_price=1, price_levels=1000)], accounts=2)
>>> funding = ex.commands(
...     kind=ex.Kind.DEPOSIT, account=[0, 1, 1], symbol=[ex.CASH, ex.CASH, 0], qty=[10_000, 0, 50]
... )
>>> events = market.submit(funding)
>>> [ex.EventKind(k).name for k in events["kind"]]
['DEPOSITED', 'REJECTED', 'DEPOSITED']
>>> ex.Reason(events["reason"][1]).name
'INVALID_QUANTITY'
>>> orders = ex.commands(
...     kind=ex.Kind.PLACE, account=[1, 0], order_id=[1, 2],
...     side=[ex.Side.SELL, ex.Side.BUY], price=[100, 101], qty=[30, 10],
... )
>>> events = market.submit(orders)
>>> trade = events[events["kind"] == ex.EventKind.TRADE][0]
>>> int(trade["price"]), int(trade["qty"]), int(trade["maker_order_id"])
(100, 10, 1)
>>> market.top_of_book(0)
(None, (100, 20))
>>> market.balance(0, ex.CASH)
(9000, 0)
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from os import PathLike
from typing import Literal

import numpy as np
import numpy.typing as npt

from sdi._rust import exchange as _native
from sdi.errors import InvalidArgument

__all__ = [
    "CASH",
    "COMMAND_DTYPE",
    "EVENT_DTYPE",
    "EventKind",
    "Exchange",
    "Kind",
    "MatcherStage",
    "OrderType",
    "Reason",
    "Side",
    "StageReport",
    "Standby",
    "Symbol",
    "TimeInForce",
    "commands",
]

#: The ``symbol`` a deposit uses for cash rather than an asset.
CASH: int = _native.CASH

#: One inbound command (48 bytes), the layout of ``sdi_exchange::Command``.
COMMAND_DTYPE = np.dtype(
    [
        ("kind", "u1"),
        ("side", "u1"),
        ("order_type", "u1"),
        ("time_in_force", "u1"),
        ("symbol", "<u4"),
        ("account", "<u4"),
        ("reserved", "<u4"),
        ("order_id", "<u8"),
        ("price", "<i8"),
        ("qty", "<u8"),
        ("timestamp_ns", "<u8"),
    ]
)

#: One outbound event (80 bytes), the layout of ``sdi_exchange::Event``.
EVENT_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("input_seq", "<u8"),
        ("kind", "u1"),
        ("side", "u1"),
        ("reason", "u1"),
        ("reserved", "u1"),
        ("symbol", "<u4"),
        ("account", "<u4"),
        ("maker_account", "<u4"),
        ("order_id", "<u8"),
        ("maker_order_id", "<u8"),
        ("price", "<i8"),
        ("qty", "<u8"),
        ("leaves", "<u8"),
        ("maker_leaves", "<u8"),
    ]
)
assert COMMAND_DTYPE.itemsize == _native.COMMAND_BYTES
assert EVENT_DTYPE.itemsize == _native.EVENT_BYTES


class Kind(enum.IntEnum):
    """What a command asks for."""

    PLACE = 1
    CANCEL = 2
    AMEND = 3
    DEPOSIT = 4


class Side(enum.IntEnum):
    BUY = 0
    SELL = 1


class OrderType(enum.IntEnum):
    LIMIT = 0
    MARKET = 1


class TimeInForce(enum.IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2


class EventKind(enum.IntEnum):
    """What an event reports (see ``docs/internals/exchange.md``)."""

    ACCEPTED = 1
    REJECTED = 2
    TRADE = 3
    CANCELLED = 4
    EXPIRED = 5
    AMENDED = 6
    BOOK_DELTA = 7
    DEPOSITED = 8


class Reason(enum.IntEnum):
    """Why a command was rejected or an order expired."""

    NONE = 0
    UNKNOWN_SYMBOL = 1
    INVALID_QUANTITY = 2
    PRICE_OFF_TICK_GRID = 3
    PRICE_OUTSIDE_BAND = 4
    UNKNOWN_ORDER = 5
    DUPLICATE_ORDER_ID = 6
    INSUFFICIENT_FUNDS = 7
    QUANTITY_OVER_LIMIT = 8
    DAILY_NOTIONAL_OVER_LIMIT = 9
    NO_REFERENCE_PRICE = 10
    BOOK_FULL = 11
    INVALID_COMMAND = 12
    UNKNOWN_ACCOUNT = 13
    BALANCE_OVER_LIMIT = 14
    PRICE_OUT_OF_RANGE = 15
    IMMEDIATE_OR_CANCEL = 20
    FILL_OR_KILL = 21


@dataclass(frozen=True)
class Symbol:
    """One tradable symbol. Prices are integers in price units; quantities are lots.

    The book holds ``price_levels`` ticks of ``tick_size`` from ``min_price``.
    With ``band_bps`` > 0, orders must lie within that many basis points of the
    reference price (the last trade, or ``reference_price`` before the first).
    """

    tick_size: int = 1
    min_price: int = 1
    price_levels: int = 65_536
    reference_price: int = 0
    band_bps: int = 0
    order_qty_max: int = 1 << 32

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.tick_size,
            self.min_price,
            self.price_levels,
            self.reference_price,
            self.band_bps,
            self.order_qty_max,
        )


_ColumnValue = int | npt.ArrayLike


def commands(
    *,
    kind: _ColumnValue,
    account: _ColumnValue = 0,
    symbol: _ColumnValue = 0,
    order_id: _ColumnValue = 0,
    side: _ColumnValue = Side.BUY,
    price: _ColumnValue = 0,
    qty: _ColumnValue = 0,
    order_type: _ColumnValue = OrderType.LIMIT,
    time_in_force: _ColumnValue = TimeInForce.GTC,
) -> npt.NDArray[np.void]:
    """A batch of commands from columns (scalars broadcast against arrays).

    >>> batch = commands(kind=Kind.CANCEL, account=3, order_id=[7, 8])
    >>> batch["order_id"].tolist(), batch["account"].tolist()
    ([7, 8], [3, 3])
    """
    columns = {
        "kind": kind,
        "account": account,
        "symbol": symbol,
        "order_id": order_id,
        "side": side,
        "price": price,
        "qty": qty,
        "order_type": order_type,
        "time_in_force": time_in_force,
    }
    arrays = {
        name: np.asarray(value)
        for name, value in columns.items()
        if not isinstance(value, int)  # Python ints (and IntEnums) stay scalars: cheaper.
    }
    try:
        shape = np.broadcast_shapes(*(array.shape for array in arrays.values()))
    except ValueError as error:
        raise InvalidArgument(f"command columns do not have matching lengths: {error}") from None
    if len(shape) > 1:
        raise InvalidArgument(f"command columns must be scalars or 1-D, not of shape {shape}")
    out = np.zeros(shape[0] if shape else 1, dtype=COMMAND_DTYPE)
    for name, value in columns.items():
        limits = np.iinfo(out.dtype[name])
        if isinstance(value, int):
            if not limits.min <= value <= limits.max:
                raise InvalidArgument(f"column {name!r} value {value} does not fit {limits.dtype}")
            out[name] = value
            continue
        array = arrays[name]
        if array.size and (
            not np.issubdtype(array.dtype, np.integer)
            or array.min() < limits.min
            or array.max() > limits.max
        ):
            raise InvalidArgument(
                f"column {name!r} must hold integers that fit {limits.dtype}; prices are integer "
                "price units and quantities integer lots, never floats"
            )
        out[name] = array
    return out


_ConfigTuple = tuple[list[tuple[int, int, int, int, int, int]], int, int, bool, int, bool]


def _config(
    symbols: list[Symbol],
    accounts: int,
    orders_resting_max: int,
    funds: bool,
    daily_notional_max: int,
    book_deltas: bool,
) -> _ConfigTuple:
    return (
        [symbol.as_tuple() for symbol in symbols],
        accounts,
        orders_resting_max,
        funds,
        daily_notional_max,
        book_deltas,
    )


def _as_command_bytes(batch: npt.NDArray[np.void]) -> npt.NDArray[np.uint8]:
    if not isinstance(batch, np.ndarray) or batch.dtype != COMMAND_DTYPE or batch.ndim != 1:
        raise InvalidArgument(
            "commands must be a 1-D numpy array of sdi.exchange.COMMAND_DTYPE; "
            "build one with sdi.exchange.commands()"
        )
    return np.ascontiguousarray(batch).view(np.uint8)


class Exchange:
    """Sequencer + journal + matching engine, driven in batches.

    Every command gets a gap-free input sequence number and a timestamp, is
    written to the journal (when ``journal`` is given) before it is acted on,
    and yields events with gap-free output sequence numbers. Opening an
    exchange on an existing journal replays it: the state and the event
    sequence are exactly as before. ``durability="sync"`` fsyncs each batch
    (group commit); ``"buffered"`` leaves it to the OS (survives a killed
    process, not a power cut).

    Memory for ``orders_resting_max`` orders and every symbol's price levels is
    allocated up front (about 70 bytes per order slot and 48 per price level),
    so that processing allocates nothing.
    """

    def __init__(
        self,
        symbols: list[Symbol],
        *,
        accounts: int = 1024,
        orders_resting_max: int = 1 << 16,
        funds: bool = True,
        daily_notional_max: int = 0,
        book_deltas: bool = False,
        journal: str | PathLike[str] | None = None,
        durability: Literal["sync", "buffered"] = "sync",
        keep_replayed: bool = False,
    ) -> None:
        self._native = _native.Exchange(
            _config(symbols, accounts, orders_resting_max, funds, daily_notional_max, book_deltas),
            journal=None if journal is None else str(journal),
            durability=durability,
            keep_replayed=keep_replayed,
        )

    @classmethod
    def _wrap(cls, native: _native.Exchange) -> Exchange:
        exchange = cls.__new__(cls)
        exchange._native = native
        return exchange

    def submit(
        self, batch: npt.NDArray[np.void], now_ns: int | None = None
    ) -> npt.NDArray[np.void]:
        """Sequences, journals and processes ``batch``; returns its events (``EVENT_DTYPE``)."""
        stamp = time.time_ns() if now_ns is None else now_ns
        raw = self._native.submit(_as_command_bytes(batch), stamp)
        return raw.view(EVENT_DTYPE)

    def submit_timed(
        self, batch: npt.NDArray[np.void], now_ns: int | None = None
    ) -> tuple[int, int]:
        """Like ``submit`` but returns ``(number of events, nanoseconds spent in the core)``.

        The events are produced and discarded; this is for measuring the core.
        """
        stamp = time.time_ns() if now_ns is None else now_ns
        return self._native.submit_timed(_as_command_bytes(batch), stamp)

    def replayed_events(self) -> npt.NDArray[np.void]:
        """The events the journal replay produced when this exchange was opened
        (once; kept only with ``keep_replayed=True``, since a long journal's
        events would fill memory)."""
        return self._native.take_replayed().view(EVENT_DTYPE)

    def measure_latencies(self, batch: npt.NDArray[np.void]) -> npt.NDArray[np.uint64]:
        """Processes ``batch`` one command at a time, timing each (ns). Fresh, journal-less only."""
        return self._native.measure_latencies(_as_command_bytes(batch))

    @property
    def next_input_seq(self) -> int:
        return self._native.next_input_seq

    @property
    def next_event_seq(self) -> int:
        return self._native.next_event_seq

    @property
    def resting_orders(self) -> int:
        return self._native.resting_orders

    @property
    def max_order_id(self) -> int:
        """The largest order id any place command carried (0 before any)."""
        return self._native.max_order_id

    def state_hash(self) -> int:
        """A fingerprint of books and balances; equal for equal command streams."""
        return self._native.state_hash()

    def top_of_book(self, symbol: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """``(bid, ask)``, each ``(price, total quantity)`` or None."""
        return self._native.top_of_book(symbol)

    def depth(self, symbol: int, side: Side, levels: int = 10) -> list[tuple[int, int]]:
        """Up to ``levels`` ``(price, total quantity)`` levels of one side, best first."""
        return self._native.depth(symbol, int(side), levels)

    def order(self, order_id: int) -> tuple[int, int, int, int, int] | None:
        """``(account, symbol, side, price, qty)`` of a resting order, or None."""
        return self._native.order(order_id)

    def balance(self, account: int, symbol: int) -> tuple[int, int]:
        """``(total, locked)`` of an account's cash (``symbol=CASH``) or asset."""
        return self._native.balance(account, symbol)

    def last_trade(self, symbol: int) -> int:
        """The last trade price (0 before the first trade)."""
        return self._native.last_trade(symbol)


class Standby:
    """A hot standby: follows a primary's journal and takes over when it stops.

    Give it the same symbols and settings as the primary (the journal refuses
    another configuration). ``poll`` applies what the primary appended since
    the last call (the first call catches up from the start) and returns those
    events; ``try_take_over`` returns an
    :class:`Exchange` that goes on from the next sequence number once the
    primary is gone (its lock on the journal is released by the kernel when it
    dies, however it dies), or None while it is alive.
    """

    def __init__(
        self,
        journal: str | PathLike[str],
        symbols: list[Symbol],
        *,
        accounts: int = 1024,
        orders_resting_max: int = 1 << 16,
        funds: bool = True,
        daily_notional_max: int = 0,
        book_deltas: bool = False,
    ) -> None:
        self._native = _native.Standby(
            _config(symbols, accounts, orders_resting_max, funds, daily_notional_max, book_deltas),
            str(journal),
        )

    def poll(self) -> npt.NDArray[np.void]:
        """Applies the primary's new records; returns their events (``EVENT_DTYPE``)."""
        return self._native.poll().view(EVENT_DTYPE)

    def try_take_over(
        self, durability: Literal["sync", "buffered"] = "sync"
    ) -> tuple[Exchange, npt.NDArray[np.void]] | None:
        """``(exchange, events of the records replayed on the way)`` once the primary is gone."""
        outcome = self._native.try_take_over(durability)
        if outcome is None:
            return None
        native, replayed = outcome
        return Exchange._wrap(native), replayed.view(EVENT_DTYPE)

    def try_take_over_as_stage(
        self,
        *,
        command_ring: str | PathLike[str],
        event_ring: str | PathLike[str],
        durability: Literal["sync", "buffered"] = "sync",
        batch_records_max: int = 4096,
        wait: Literal["spin", "spin_then_yield", "sleep"] = "spin_then_yield",
        cpu: int | None = None,
    ) -> tuple[MatcherStage, npt.NDArray[np.void]] | None:
        """Like :meth:`try_take_over`, but goes straight on as a :class:`MatcherStage`
        between the two rings: ``(stage, events replayed on the way)``, or None."""
        outcome = self._native.try_take_over_as_stage(
            str(command_ring),
            str(event_ring),
            durability=durability,
            batch_records_max=batch_records_max,
            wait=wait,
            cpu=cpu,
        )
        if outcome is None:
            return None
        native, replayed = outcome
        return MatcherStage._wrap(native), replayed.view(EVENT_DTYPE)

    @property
    def next_input_seq(self) -> int:
        return self._native.next_input_seq

    @property
    def max_order_id(self) -> int:
        """The largest order id any place command in the journal carried, so far."""
        return self._native.max_order_id

    def state_hash(self) -> int:
        return self._native.state_hash()


@dataclass(frozen=True)
class StageReport:
    """What a matcher stage did before it stopped."""

    commands: int
    events: int
    batches: int
    state_hash: int
    next_input_seq: int


class MatcherStage:
    """The sequencer, journal, order manager and matcher on a thread of their own,
    between two SPSC rings (``sdi.ring``): 48-byte commands in, 80-byte events out.

    No Python runs on the way from one ring to the other. The stage stops when
    :meth:`stop` is called, or by itself once the command ring's producer
    closes cleanly and every command has been processed. ``cpu`` pins its
    thread; ``wait`` is how it waits for commands (``"spin"`` for the lowest
    latency on a core of its own).
    """

    def __init__(
        self,
        symbols: list[Symbol],
        *,
        command_ring: str | PathLike[str],
        event_ring: str | PathLike[str],
        accounts: int = 1024,
        orders_resting_max: int = 1 << 16,
        funds: bool = True,
        daily_notional_max: int = 0,
        book_deltas: bool = False,
        journal: str | PathLike[str] | None = None,
        durability: Literal["sync", "buffered"] = "sync",
        batch_records_max: int = 4096,
        wait: Literal["spin", "spin_then_yield", "sleep"] = "spin_then_yield",
        cpu: int | None = None,
    ) -> None:
        self._native = _native.MatcherStage(
            _config(symbols, accounts, orders_resting_max, funds, daily_notional_max, book_deltas),
            str(command_ring),
            str(event_ring),
            journal=None if journal is None else str(journal),
            durability=durability,
            batch_records_max=batch_records_max,
            wait=wait,
            cpu=cpu,
        )

    @classmethod
    def _wrap(cls, native: _native.MatcherStage) -> MatcherStage:
        stage = cls.__new__(cls)
        stage._native = native
        return stage

    def counters(self) -> tuple[int, int, int]:
        """``(commands, events, batches)`` so far."""
        return self._native.counters()

    def is_finished(self) -> bool:
        """Whether the stage's thread has ended."""
        return self._native.is_finished()

    def stop(self) -> StageReport:
        """Stops the stage after the batch it is on, and reports.

        Commands still in the command ring stay unprocessed (they are not in
        the journal, so not acknowledged). To process everything first, close
        the command ring's producer and wait for :meth:`is_finished`.
        """
        return StageReport(*self._native.stop())
