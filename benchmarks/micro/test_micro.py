"""Micro-benchmarks (pytest-benchmark): off in ``make test`` (each runs once, so
none can rot), on in ``make bench``."""

from __future__ import annotations

from typing import Any

import numpy as np

from sdi import exchange, resp, ring
from sdi._rust import exchange as native_exchange


def test_ring_push_then_pop_one_record(benchmark: Any) -> None:
    producer, consumer = ring.pair(1 << 16)
    record = bytes(64)

    def round_trip() -> list[bytes]:
        producer.push(record)
        return consumer.pop(1)

    assert benchmark(round_trip) == [record]
    producer.close()
    consumer.close()


def test_resp_parse_one_command(benchmark: Any) -> None:
    data = resp.encode_command("ZADD", "board", 12.5, "player:42")
    parser = resp.CommandParser()
    assert benchmark(parser.parse, data) == [[b"ZADD", b"board", b"12.5", b"player:42"]]


def test_resp_encode_one_reply(benchmark: Any) -> None:
    value = [b"player:1", b"100", b"player:2", b"99"]
    assert benchmark(resp.encode_reply, value).startswith(b"*4\r\n")


def test_exchange_submit_one_order(benchmark: Any) -> None:
    market = exchange.Exchange([exchange.Symbol(price_levels=1_000)], accounts=1, funds=False)
    ids = iter(range(1, 10**9))

    def place() -> np.ndarray:
        batch = exchange.commands(kind=exchange.Kind.PLACE, order_id=next(ids), price=500, qty=1)
        return market.submit(batch, now_ns=1)

    events = benchmark(place)
    assert events["kind"][0] == exchange.EventKind.ACCEPTED


def test_exchange_submit_10000_mixed(benchmark: Any) -> None:
    commands = native_exchange.mixed_workload(10_000, 5).view(exchange.COMMAND_DTYPE)

    def run() -> int:
        market = exchange.Exchange(
            [exchange.Symbol(price_levels=100_000)],
            accounts=1_000,
            orders_resting_max=1 << 16,
            funds=False,
        )
        return len(market.submit(commands, now_ns=1))

    assert benchmark(run) >= len(commands)
