"""sdi.exchange against the plain-Python reference book (sdi.testing.orderbook),
through the public batch API, on random order streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi import errors
from sdi import exchange as ex
from sdi.testing.orderbook import PyBook

SYMBOL = ex.Symbol(tick_size=1, min_price=1, price_levels=64)

command = st.tuples(
    st.sampled_from([ex.Kind.PLACE, ex.Kind.PLACE, ex.Kind.CANCEL, ex.Kind.AMEND]),
    st.integers(1, 20),  # order id
    st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
    st.integers(20, 40),  # price
    st.integers(1, 9),  # quantity
    st.sampled_from([ex.TimeInForce.GTC, ex.TimeInForce.GTC, ex.TimeInForce.IOC]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(command, min_size=1, max_size=120), st.integers(1, 40))
def test_same_trades_and_book_as_the_reference(stream, batch_size) -> None:
    market = ex.Exchange([SYMBOL], accounts=1, orders_resting_max=64, funds=False)
    model = PyBook()
    columns = list(zip(*stream, strict=True))
    batch = ex.commands(
        kind=list(columns[0]),
        order_id=list(columns[1]),
        side=list(columns[2]),
        price=list(columns[3]),
        qty=list(columns[4]),
        time_in_force=list(columns[5]),
    )
    traded = 0
    for start in range(0, len(stream), batch_size):
        events = market.submit(batch[start : start + batch_size])
        traded += int(events["qty"][events["kind"] == ex.EventKind.TRADE].sum())
        for item in stream[start : start + batch_size]:
            model.process(*(int(value) for value in item))
        assert traded == model.traded_qty
        for side in (ex.Side.BUY, ex.Side.SELL):
            assert market.depth(0, side, levels=100) == model.depth(side)
    bid, ask = market.top_of_book(0)
    if bid and ask:
        assert bid[0] < ask[0]


def test_events_are_sequenced_without_gaps() -> None:
    market = ex.Exchange([SYMBOL], accounts=2, funds=False)
    seqs = []
    for start in range(3):
        batch = ex.commands(
            kind=ex.Kind.PLACE,
            order_id=np.arange(10) + 10 * start,
            side=np.arange(10) % 2,
            price=30,
            qty=5,
        )
        events = market.submit(batch)
        seqs.extend(events["seq"].tolist())
        assert set(events["input_seq"].tolist()) == set(range(10 * start + 1, 10 * start + 11))
    assert seqs == list(range(1, len(seqs) + 1))


def test_bad_input_is_a_reject_or_a_clear_error() -> None:
    market = ex.Exchange([SYMBOL], accounts=2, funds=False)
    events = market.submit(
        ex.commands(
            kind=[ex.Kind.PLACE, ex.Kind.PLACE, ex.Kind.PLACE, ex.Kind.CANCEL, 9],
            symbol=[5, 0, 0, 0, 0],
            order_id=[1, 2, 3, 99, 4],
            price=[30, 30, 500, 0, 0],
            qty=[5, 0, 5, 0, 0],
        )
    )
    reasons = [ex.Reason(r) for r in events["reason"]]
    assert reasons == [
        ex.Reason.UNKNOWN_SYMBOL,
        ex.Reason.INVALID_QUANTITY,
        ex.Reason.PRICE_OUT_OF_RANGE,
        ex.Reason.UNKNOWN_ORDER,
        ex.Reason.INVALID_COMMAND,
    ]
    assert (events["kind"] == ex.EventKind.REJECTED).all()
    with pytest.raises(errors.InvalidArgument, match="COMMAND_DTYPE"):
        market.submit(np.zeros(3, dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="never floats"):
        ex.commands(kind=ex.Kind.PLACE, price=[1.5])
    with pytest.raises(errors.InvalidArgument, match="fit"):
        ex.commands(kind=ex.Kind.PLACE, qty=[-1])
    with pytest.raises(errors.InvalidArgument, match="matching lengths"):
        ex.commands(kind=ex.Kind.PLACE, qty=[1, 2], price=[1, 2, 3])


def test_bad_configuration_says_what_to_change(tmp_path) -> None:
    with pytest.raises(errors.InvalidArgument, match="price_levels"):
        ex.Exchange([ex.Symbol(price_levels=1)])
    with pytest.raises(errors.InvalidArgument, match="symbols"):
        ex.Exchange([])
    with pytest.raises(errors.InvalidArgument, match="durability"):
        ex.Exchange([SYMBOL], journal=tmp_path / "j", durability="maybe")  # type: ignore[arg-type]
    (tmp_path / "not-a-journal").write_bytes(b"x" * 100)
    with pytest.raises(errors.Corrupt, match="not an sdi exchange journal"):
        ex.Exchange([SYMBOL], journal=tmp_path / "not-a-journal")


def test_funds_cannot_be_overspent() -> None:
    market = ex.Exchange([SYMBOL], accounts=2)
    market.submit(
        ex.commands(kind=ex.Kind.DEPOSIT, account=[0, 1], symbol=[ex.CASH, 0], qty=[100, 3])
    )
    events = market.submit(
        ex.commands(
            kind=ex.Kind.PLACE,
            account=[0, 0, 1, 1],
            order_id=[1, 2, 3, 4],
            side=[ex.Side.BUY, ex.Side.BUY, ex.Side.SELL, ex.Side.SELL],
            price=[30, 30, 30, 30],
            qty=[3, 1, 4, 3],
        )
    )
    reasons = events["reason"][events["kind"] == ex.EventKind.REJECTED].tolist()
    # 3 x 30 = 90 of 100 locked: one more lot at 30 does not fit; 4 lots of stock are not there.
    assert reasons == [ex.Reason.INSUFFICIENT_FUNDS, ex.Reason.INSUFFICIENT_FUNDS]
    assert market.balance(0, ex.CASH) == (10, 0)
    assert market.balance(0, 0) == (3, 0)
    assert market.balance(1, ex.CASH) == (90, 0)
    assert market.balance(1, 0) == (0, 0)
