"""One timed hot call per core, against the installed build, for asv's history.

These are regression trackers, not the side-by-side comparisons: those are
``benchmarks/run.py``. Each ``time_*`` runs one batch call of the core.
"""

from __future__ import annotations

import numpy as np

from sdi import exchange, resp, ring
from sdi._rust import exchange as native_exchange

RECORDS = 4096
RECORD_BYTES = 64


class RingBatch:
    """A batch of 64-byte records through an in-process ring: push_many, pop_rows_into."""

    def setup(self) -> None:
        self.producer, self.consumer = ring.pair(1 << 20)
        self.rows = np.zeros((RECORDS, RECORD_BYTES), dtype=np.uint8)
        self.out = np.zeros_like(self.rows)

    def teardown(self) -> None:
        self.producer.close()
        self.consumer.close()

    def time_push_pop_4096(self) -> None:
        pushed = self.producer.push_many(self.rows)
        popped = 0
        while popped < pushed:
            popped += self.consumer.pop_rows_into(self.out[popped:pushed])


class RespParse:
    """Parsing 10,000 mixed replies in 64 KiB chunks."""

    def setup(self) -> None:
        replies = [
            b"+OK\r\n",
            b":12345\r\n",
            b"$11\r\nhello world\r\n",
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
        ]
        stream = b"".join(replies[i % 4] for i in range(10_000))
        self.chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]

    def time_parse_10000_replies(self) -> None:
        parser = resp.ReplyParser()
        for chunk in self.chunks:
            parser.parse(chunk)


class ExchangeMix:
    """100,000 commands of exchange-core's mix through one submit call."""

    def setup(self) -> None:
        self.commands = native_exchange.mixed_workload(100_000, 42).view(exchange.COMMAND_DTYPE)

    def time_submit_100000(self) -> None:
        market = exchange.Exchange(
            [exchange.Symbol(price_levels=100_000)],
            accounts=1_000,
            orders_resting_max=1 << 16,
            funds=False,
        )
        market.submit(self.commands, now_ns=1)
