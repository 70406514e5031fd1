"""Publisher and Subscriber through the public API: random order streams run
through a real Exchange with book deltas; a subscriber that gets every packet
holds the exchange's book, one that loses packets notices and heals from a
snapshot. Bad packets and bad arguments raise the sdi.errors classes."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi import errors
from sdi import exchange as ex
from sdi.exchange import marketdata as md

SYMBOLS = 2
SECOND_NS = 1_000_000_000

order = st.tuples(
    st.sampled_from([ex.Kind.PLACE, ex.Kind.PLACE, ex.Kind.PLACE, ex.Kind.CANCEL, ex.Kind.AMEND]),
    st.integers(0, SYMBOLS - 1),
    st.integers(1, 30),  # order id
    st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
    st.integers(40, 60),  # price
    st.integers(1, 9),  # quantity
    st.sampled_from([ex.TimeInForce.GTC, ex.TimeInForce.GTC, ex.TimeInForce.IOC]),
)


def new_market() -> ex.Exchange:
    return ex.Exchange(
        [ex.Symbol(price_levels=200)] * SYMBOLS,
        accounts=1,
        orders_resting_max=256,
        funds=False,
        book_deltas=True,
    )


def batches(stream: list[tuple[int, ...]], batch_size: int) -> list[np.ndarray]:
    out = []
    for start in range(0, len(stream), batch_size):
        columns = list(zip(*stream[start : start + batch_size], strict=True))
        out.append(
            ex.commands(
                kind=list(columns[0]),
                symbol=list(columns[1]),
                order_id=list(columns[2]),
                side=list(columns[3]),
                price=list(columns[4]),
                qty=list(columns[5]),
                time_in_force=list(columns[6]),
            )
        )
    return out


def assert_same_book(market: ex.Exchange, subscriber: md.Subscriber) -> None:
    for symbol in range(SYMBOLS):
        for side in (ex.Side.BUY, ex.Side.SELL):
            assert subscriber.depth(symbol, side, 1000) == market.depth(symbol, side, 1000)
        assert subscriber.top_of_book(symbol) == market.top_of_book(symbol)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(order, min_size=1, max_size=150),
    st.integers(1, 25),
    st.integers(md.PACKET_BYTES_MIN, 1400),
)
def test_every_packet_gives_the_exchange_book(stream, batch_size, packet_bytes_max) -> None:
    market = new_market()
    publisher = md.Publisher(symbols=SYMBOLS, packet_bytes_max=packet_bytes_max)
    subscriber = md.Subscriber(symbols=SYMBOLS, trades_kept=1000)
    traded = 0
    for index, batch in enumerate(batches(stream, batch_size)):
        now_ns = index * SECOND_NS // 3
        events = market.submit(batch, now_ns=now_ns)
        traded += int(np.count_nonzero(events["kind"] == ex.EventKind.TRADE))
        # The bytes of a batch work as well as the array.
        packets = publisher.publish(events.tobytes() if index % 2 else events, now_ns=now_ns)
        for packet in packets:
            assert len(packet) <= packet_bytes_max
            assert subscriber.apply(packet) == "applied"
        assert_same_book(market, subscriber)
    assert not subscriber.gap_detected
    assert subscriber.stats()["top_mismatches"] == 0
    assert len(subscriber.trades(0)) + len(subscriber.trades(1)) == traded


@settings(max_examples=60, deadline=None)
@given(
    st.lists(order, min_size=1, max_size=150),
    st.integers(1, 25),
    st.integers(md.PACKET_BYTES_MIN, 600),
    st.integers(0, 2**32),
)
def test_lost_packets_are_noticed_and_a_snapshot_heals(
    stream, batch_size, packet_bytes_max, seed
) -> None:
    chance = random.Random(seed)
    market = new_market()
    publisher = md.Publisher(symbols=SYMBOLS, packet_bytes_max=packet_bytes_max)
    subscriber = md.Subscriber(symbols=SYMBOLS)
    lost = 0
    for index, batch in enumerate(batches(stream, batch_size)):
        for packet in publisher.publish(market.submit(batch, now_ns=index), now_ns=index):
            if chance.random() < 0.2:
                lost += 1
            else:
                subscriber.apply(packet)
        if subscriber.needs_snapshot and chance.random() < 0.5:
            for packet in publisher.snapshot():
                subscriber.apply(packet)
            assert not subscriber.needs_snapshot
            assert_same_book(market, subscriber)
    subscriber.apply(publisher.heartbeat())
    assert subscriber.gap_detected == (lost > 0)
    for packet in publisher.snapshot():
        subscriber.apply(packet)
    assert not subscriber.needs_snapshot
    assert_same_book(market, subscriber)


def test_a_late_snapshot_is_brought_up_to_date_with_buffered_deltas() -> None:
    market = new_market()
    publisher = md.Publisher(symbols=SYMBOLS)
    subscriber = md.Subscriber(symbols=SYMBOLS)
    stream = batches([(1, 0, i, i % 2, 50 + (i % 7) - 3 * (i % 2), 3, 0) for i in range(1, 30)], 3)
    first = publisher.publish(market.submit(stream[0], now_ns=0), now_ns=0)
    del first  # Lost: the subscriber joins late.
    snapshot = publisher.snapshot()  # Taken now, delivered after later packets.
    for batch in stream[1:]:
        for packet in publisher.publish(market.submit(batch, now_ns=0), now_ns=0):
            subscriber.apply(packet)
    assert subscriber.needs_snapshot
    assert subscriber.stale_symbols() == [0, 1]
    for packet in snapshot:
        assert subscriber.apply(packet) == "snapshot"
    assert not subscriber.needs_snapshot
    assert_same_book(market, subscriber)


def test_candles_close_when_the_next_second_starts_and_on_flush() -> None:
    market = new_market()
    publisher = md.Publisher(symbols=SYMBOLS)
    subscriber = md.Subscriber(symbols=SYMBOLS)
    sell = ex.commands(kind=ex.Kind.PLACE, order_id=1, side=ex.Side.SELL, price=50, qty=100)
    buys = [(10, 2), (30, 7), (5, 1)]

    def buy(order_id: int, qty: int) -> np.ndarray:
        return ex.commands(kind=ex.Kind.PLACE, order_id=order_id, price=50, qty=qty)

    for packet in publisher.publish(market.submit(sell, now_ns=0), now_ns=0):
        subscriber.apply(packet)
    for index, (order_id, qty) in enumerate(buys):
        now_ns = index * SECOND_NS // 2  # 0, 0.5 s, 1 s
        for packet in publisher.publish(market.submit(buy(order_id, qty), now_ns), now_ns):
            subscriber.apply(packet)
    [candle] = subscriber.candles(0)
    assert (candle.bucket_start_ns, candle.open, candle.close) == (0, 50, 50)
    assert (candle.volume, candle.trades) == (9, 2)
    assert subscriber.candles(0, md.CANDLE_INTERVALS_NS[1]) == []
    for packet in publisher.flush(now_ns=2 * SECOND_NS):
        subscriber.apply(packet)
    assert [c.volume for c in subscriber.candles(0)] == [9, 1]
    assert subscriber.candles(0, md.CANDLE_INTERVALS_NS[1])[0].volume == 10


def test_publish_buffer_holds_the_same_packets() -> None:
    events = new_market().submit(batches([(1, 0, 1, 0, 50, 3, 0), (1, 1, 2, 1, 55, 4, 0)], 2)[0])
    first, second = md.Publisher(symbols=SYMBOLS), md.Publisher(symbols=SYMBOLS)
    packets = first.publish(events, now_ns=7)
    buffer, ends = second.publish_buffer(events, now_ns=7)
    starts = [0, *ends[:-1].tolist()]
    assert [buffer[a:b].tobytes() for a, b in zip(starts, ends.tolist(), strict=True)] == packets


def test_bad_packets_raise_corrupt_and_change_nothing() -> None:
    publisher = md.Publisher(symbols=SYMBOLS)
    events = new_market().submit(batches([(1, 0, 1, 0, 50, 3, 0)], 1)[0])
    [packet] = publisher.publish(events, now_ns=0)
    subscriber = md.Subscriber(symbols=SYMBOLS)
    mangled = [
        b"",
        packet[:20],
        packet[:-1],
        b"XXXX" + packet[4:],
        packet[:4] + b"\x09\x00" + packet[6:],
        packet + b"\x00",
    ]
    for bad in mangled:
        with pytest.raises(errors.Corrupt):
            subscriber.apply(bad)
    with pytest.raises(errors.Corrupt, match="channel"):
        md.Subscriber(symbols=SYMBOLS, channel=2).apply(packet)
    with pytest.raises(errors.Corrupt, match="symbol"):
        md.Subscriber(symbols=1).apply(md.Publisher(symbols=2).snapshot(1)[0])
    assert subscriber.stats()["packets"] == 0
    assert subscriber.apply(bytearray(packet)) == "applied"


def test_bad_arguments_raise_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match="packet_bytes_max"):
        md.Publisher(symbols=1, packet_bytes_max=md.PACKET_BYTES_MIN - 1)
    with pytest.raises(errors.InvalidArgument, match="symbols"):
        md.Subscriber(symbols=0)
    publisher = md.Publisher(symbols=1)
    with pytest.raises(errors.InvalidArgument, match="80-byte"):
        publisher.publish(b"\x00" * 81)
    with pytest.raises(errors.InvalidArgument, match="EVENT_DTYPE"):
        publisher.publish(np.zeros(3, dtype=ex.COMMAND_DTYPE))
    with pytest.raises(errors.InvalidArgument, match="no symbol"):
        publisher.snapshot(5)
    events = np.zeros(1, dtype=ex.EVENT_DTYPE)
    events[0] = (1, 1, ex.EventKind.BOOK_DELTA, 0, 0, 0, 3, 0, 0, 0, 0, 10, 1, 0, 0)
    with pytest.raises(errors.InvalidArgument, match="symbol 3"):
        publisher.publish(events)
    with pytest.raises(errors.InvalidArgument, match="interval_ns"):
        md.Subscriber(symbols=1).candles(0, 5)


def test_the_publisher_core_is_timed_on_a_tiny_batch() -> None:
    """The benchmark's path, on a tiny input so that it cannot rot."""
    from sdi._rust import exchange as native_exchange

    market = ex.Exchange(
        [ex.Symbol(price_levels=100_000)], accounts=1000, funds=False, book_deltas=True
    )
    workload = native_exchange.mixed_workload(2_000, 1).view(ex.COMMAND_DTYPE)
    events = market.submit(workload, now_ns=0)
    packets, size, elapsed_ns = md.Publisher(symbols=1).publish_timed(events, now_ns=0)
    assert packets > 0
    assert size > 0
    assert elapsed_ns > 0
