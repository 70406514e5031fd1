"""A hot standby follows a primary that is killed with SIGKILL, takes over,
and goes on with no sequence number lost or given twice."""

from __future__ import annotations

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

BATCHES, BATCH_SIZE = 2_000, 50


def _standby(journal: Path) -> ex.Standby:
    return ex.Standby(journal, [writer.SYMBOL], accounts=1_000, orders_resting_max=1 << 16)


@pytest.mark.slow
def test_standby_takes_over_from_a_killed_primary(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    commands = writer.workload(BATCHES * BATCH_SIZE)
    with subprocess.Popen(
        [sys.executable, writer.__file__, str(journal), str(BATCHES), str(BATCH_SIZE)],
        stdout=subprocess.PIPE,
        text=True,
    ) as primary:
        assert primary.stdout is not None
        acknowledged = int(primary.stdout.readline())
        standby = _standby(journal)
        # A second primary is refused while the first holds the journal.
        with pytest.raises(errors.InvalidArgument, match="held by another process"):
            writer.open_exchange(str(journal))
        followed: list[np.ndarray] = [standby.poll()]
        for _ in range(20):
            acknowledged = int(primary.stdout.readline())
            followed.append(standby.poll())
            assert standby.try_take_over() is None, "took over from a live primary"
        primary.send_signal(signal.SIGKILL)
        primary.wait(timeout=30)
        for line in primary.stdout:
            acknowledged = max(acknowledged, int(line))

    deadline = time.monotonic() + 10
    outcome = None
    while outcome is None:
        assert time.monotonic() < deadline, "the standby never got the journal"
        followed.append(standby.poll())
        outcome = standby.try_take_over()
    promoted, replayed = outcome
    followed.append(replayed)

    recovered = promoted.next_input_seq - 1
    assert recovered >= acknowledged, "an acknowledged batch was lost"
    events = np.concatenate(followed)
    # Every event the primary produced, once, in order: output sequence 1..n, no gap.
    assert events["seq"].tolist() == list(range(1, len(events) + 1))
    assert promoted.next_event_seq == len(events) + 1
    inputs = np.unique(events["input_seq"])
    assert inputs[0] == 1
    assert inputs[-1] == recovered

    # The promoted exchange goes on where the primary stopped.
    more = promoted.submit(commands[recovered : recovered + 500], now_ns=recovered)
    assert more["seq"][0] == len(events) + 1
    assert more["input_seq"][0] == recovered + 1
    fresh = ex.Exchange([writer.SYMBOL], accounts=1_000, orders_resting_max=1 << 16)
    fresh.submit(commands[: recovered + 500], now_ns=0)
    assert promoted.state_hash() == fresh.state_hash()


def test_a_used_up_standby_says_what_to_use_instead(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    primary = writer.open_exchange(str(journal))
    primary.submit(writer.workload(100), now_ns=1)
    standby = _standby(journal)
    assert standby.next_input_seq == 1
    standby.poll()
    assert standby.next_input_seq == primary.next_input_seq
    assert standby.state_hash() == primary.state_hash()
    del primary
    outcome = standby.try_take_over()
    assert outcome is not None
    with pytest.raises(errors.InvalidArgument, match="taken over"):
        standby.poll()
