"""Kill the sequencer's writer mid-stream; every acknowledged batch survives,
nothing torn is served, and replay rebuilds exactly the state it had."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import _journal_writer as writer
import numpy as np
import pytest

from sdi import errors
from sdi import exchange as ex

BATCHES, BATCH_SIZE = 400, 50
WRITER = [sys.executable, str(Path(writer.__file__))]


def _state_after(commands: np.ndarray, count: int) -> int:
    """The state of a journal-less exchange fed the first ``count`` commands."""
    fresh = ex.Exchange([writer.SYMBOL], accounts=1_000, orders_resting_max=1 << 16)
    for start in range(0, count, BATCH_SIZE):
        fresh.submit(commands[start : min(count, start + BATCH_SIZE)], now_ns=start)
    return fresh.state_hash()


@pytest.mark.slow
def test_killed_writer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    commands = writer.workload(BATCHES * BATCH_SIZE)
    journal = tmp_path / "journal"
    acknowledged = 0
    for run in range(6):
        with subprocess.Popen(
            [*WRITER, str(journal), str(BATCHES), str(BATCH_SIZE)],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            wanted = rng.randint(1, 25)
            for acks, line in enumerate(child.stdout, start=1):
                acknowledged = max(acknowledged, int(line))
                if acks >= wanted:
                    break
            # Let it run into the middle of a later batch, then kill it.
            time.sleep(rng.random() * 0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            for line in child.stdout:  # acknowledgements printed before the kill landed
                acknowledged = max(acknowledged, int(line))

        reopened = writer.open_exchange(str(journal))
        recovered = reopened.next_input_seq - 1
        assert recovered >= acknowledged, f"run {run}: lost acknowledged commands"
        assert reopened.state_hash() == _state_after(commands, recovered), f"run {run}"
        del reopened
    assert acknowledged > 0


def test_reopen_replays_the_same_events(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    commands = writer.workload(2_000)
    first = writer.open_exchange(str(journal))
    live = np.concatenate(
        [first.submit(commands[i : i + 500], now_ns=i) for i in range(0, len(commands), 500)]
    )
    state = first.state_hash()
    del first
    again = ex.Exchange(
        [writer.SYMBOL],
        accounts=1_000,
        orders_resting_max=1 << 16,
        journal=journal,
        keep_replayed=True,
    )
    assert again.state_hash() == state
    replayed = again.replayed_events()
    assert np.array_equal(replayed, live)
    assert len(again.replayed_events()) == 0  # handed out once


def test_a_damaged_journal_is_refused_not_truncated(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    market = writer.open_exchange(str(journal))
    market.submit(writer.workload(1_000), now_ns=1)
    del market
    data = bytearray(journal.read_bytes())
    data[64 + 64 * 5 + 10] ^= 0xFF
    journal.write_bytes(bytes(data))
    with pytest.raises(errors.Corrupt, match="corruption"):
        writer.open_exchange(str(journal))
    assert journal.stat().st_size == len(data)
