"""The feed over real sockets on 127.0.0.1: UDP multicast on loopback (when
the host allows it), the unicast fallback, and the WebSocket fan-out with a
real websockets client that joins late. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from sdi import exchange as ex
from sdi._rust import exchange as native_exchange
from sdi.exchange import marketdata as md

TIMEOUT_S = 5.0


def workload_batches(count: int, batch_size: int) -> list[Any]:
    commands = native_exchange.mixed_workload(count, 7).view(ex.COMMAND_DTYPE)
    return [commands[start : start + batch_size] for start in range(0, count, batch_size)]


def new_market() -> ex.Exchange:
    return ex.Exchange(
        [ex.Symbol(price_levels=100_000)], accounts=1000, funds=False, book_deltas=True
    )


def assert_same_book(market: ex.Exchange, subscriber: md.Subscriber) -> None:
    for side in (ex.Side.BUY, ex.Side.SELL):
        assert subscriber.depth(0, side, 100_000) == market.depth(0, side, 100_000)


async def deliver_until(receiver: md.UdpReceiver, subscriber: md.Subscriber, seq: int) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while subscriber.next_seq <= seq:
            await receiver.recv(TIMEOUT_S)


async def feed_over_udp(mode: str) -> None:
    market = new_market()
    publisher = md.Publisher(symbols=1)
    early = md.Subscriber(symbols=1)
    late = md.Subscriber(symbols=1)
    # The first receiver picks a free port; in multicast mode later ones share it.
    first = await md.UdpReceiver.open(mode=mode, port=0, subscriber=early)  # type: ignore[arg-type]
    port = first.address[1] if mode == "multicast" else 0
    fallback = [first.address] if mode == "unicast" else []
    feed = await md.UdpFeed.open(port=port, fallback=fallback, mode=mode)  # type: ignore[arg-type]
    assert feed.mode == mode
    second: md.UdpReceiver | None = None
    try:
        batches = workload_batches(4000, 100)
        for index, batch in enumerate(batches):
            if index == len(batches) // 2:
                # A subscriber joins late: it sees a gap, then gets a snapshot.
                second = await md.UdpReceiver.open(
                    mode=mode,  # type: ignore[arg-type]
                    port=port,
                    subscriber=late,
                )
                if mode == "unicast":
                    feed.add_subscriber(second.address)
            feed.send(publisher.publish(market.submit(batch, now_ns=index), now_ns=index))
            # Let the receivers keep up: the loopback socket buffer is finite.
            await deliver_until(first, early, publisher.next_seq - 1)
            if second is not None:
                await deliver_until(second, late, publisher.next_seq - 1)
                if late.needs_snapshot:
                    feed.send(publisher.snapshot())
        assert second is not None
        assert_same_book(market, early)
        assert not early.gap_detected
        assert first.corrupt == 0
        assert late.gap_detected
        assert not late.needs_snapshot
        assert late.stats()["snapshots_installed"] >= 1
        assert_same_book(market, late)
    finally:
        feed.close()
        first.close()
        if second is not None:
            second.close()


def test_unicast_fallback_carries_the_feed(run_async) -> None:
    run_async(feed_over_udp("unicast"))


def test_multicast_on_loopback_carries_the_feed(run_async) -> None:
    if not run_async(md.multicast_works()):
        pytest.skip("this host has no multicast on loopback; the unicast test covers the feed")
    run_async(feed_over_udp("multicast"))


def test_auto_mode_says_which_mode_it_chose(run_async) -> None:
    async def open_auto() -> tuple[str, bool]:
        feed = await md.UdpFeed.open(port=9, fallback=[("127.0.0.1", 9)])
        feed.close()
        return feed.mode, await md.multicast_works()

    mode, works = run_async(open_auto())
    assert mode == ("multicast" if works else "unicast")


def test_a_stranger_datagram_is_counted_not_raised(run_async) -> None:
    async def scenario() -> md.UdpReceiver:
        subscriber = md.Subscriber(symbols=1)
        receiver = await md.UdpReceiver.open(mode="unicast", subscriber=subscriber)
        feed = await md.UdpFeed.open(port=0, fallback=[receiver.address], mode="unicast")
        feed.send([b"not a market data packet"])
        await receiver.recv(TIMEOUT_S)
        feed.close()
        receiver.close()
        return receiver

    receiver = run_async(scenario())
    assert (receiver.received, receiver.corrupt) == (1, 1)


def apply_json(book: dict[str, dict[int, int]], message: dict[str, Any]) -> None:
    side = book["bids" if message["side"] == "buy" else "asks"]
    if message["qty"] == 0:
        side.pop(message["price"], None)
    else:
        side[message["price"]] = message["qty"]


async def websocket_late_joiner() -> None:
    market = new_market()
    publisher = md.Publisher(symbols=1)
    fanout = md.WebSocketFanout(symbols=1)
    server = await fanout.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1] if server.sockets else 0
    batches = workload_batches(3000, 50)
    try:
        for index, batch in enumerate(batches[: len(batches) // 2]):
            fanout.feed(publisher.publish(market.submit(batch, now_ns=index), now_ns=index))
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            await client.send(json.dumps({"op": "subscribe", "symbols": [0]}))
            snapshot = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT_S))
            assert snapshot["type"] == "snapshot"
            assert snapshot["seq"] == publisher.next_seq - 1
            book = {
                "bids": {price: qty for price, qty in snapshot["bids"]},
                "asks": {price: qty for price, qty in snapshot["asks"]},
            }
            seq = snapshot["seq"]
            for index, batch in enumerate(batches[len(batches) // 2 :]):
                now_ns = 10_000 + index
                fanout.feed(publisher.publish(market.submit(batch, now_ns=now_ns), now_ns=now_ns))
                await asyncio.sleep(0)
            last = publisher.next_seq - 1
            async with asyncio.timeout(TIMEOUT_S):
                while seq < last:
                    update = json.loads(await client.recv())
                    assert update["type"] == "update"
                    assert update["seq"] > seq
                    seq = update["seq"]
                    for message in update["messages"]:
                        if message["type"] == "delta":
                            apply_json(book, message)
            assert sorted(book["bids"].items(), reverse=True) == market.depth(
                0, ex.Side.BUY, 100_000
            )
            assert sorted(book["asks"].items()) == market.depth(0, ex.Side.SELL, 100_000)
            assert fanout.clients == 1
        async with asyncio.timeout(TIMEOUT_S):
            while fanout.clients:
                await asyncio.sleep(0.01)
    finally:
        await fanout.aclose()
        server.close()
        await server.wait_closed()


def test_a_late_websocket_client_gets_a_snapshot_then_deltas(run_async) -> None:
    run_async(websocket_late_joiner())


async def bad_subscribe() -> dict[str, Any]:
    fanout = md.WebSocketFanout(symbols=1)
    server = await fanout.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1] if server.sockets else 0
    try:
        async with connect(f"ws://127.0.0.1:{port}") as client:
            await client.send(json.dumps({"op": "subscribe", "symbols": [5]}))
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT_S))
            return reply
    finally:
        server.close()
        await server.wait_closed()


def test_a_bad_subscribe_request_gets_an_error(run_async) -> None:
    reply = run_async(bad_subscribe())
    assert reply["type"] == "error"
    assert "symbols" in reply["message"]
