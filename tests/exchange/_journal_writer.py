"""A child process for the crash test: submits the benchmark mix to a journal in
small batches with durability "sync" and prints each acknowledged sequence number.

    python _journal_writer.py JOURNAL BATCHES BATCH_SIZE
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

from sdi import exchange as ex
from sdi._rust import exchange as native

SYMBOL = ex.Symbol(tick_size=1, min_price=1, price_levels=100_000)


def open_exchange(path: str) -> ex.Exchange:
    return ex.Exchange(
        [SYMBOL], accounts=1_000, orders_resting_max=1 << 16, journal=path, durability="sync"
    )


def workload(count: int) -> npt.NDArray[np.void]:
    commands = native.mixed_workload(count, 11).view(ex.COMMAND_DTYPE)
    funding = native.funding_commands().view(ex.COMMAND_DTYPE)
    return np.concatenate([funding, commands])


def main() -> None:
    path, batches, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    market = open_exchange(path)
    commands = workload(batches * batch_size)
    done = market.next_input_seq - 1
    for start in range(done, len(commands), batch_size):
        market.submit(commands[start : start + batch_size], now_ns=start)
        # Acknowledged: the batch is in the journal and fsynced.
        print(market.next_input_seq - 1, flush=True)


if __name__ == "__main__":
    main()
