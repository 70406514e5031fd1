"""The matcher stage between two rings, driven from Python as a gateway would."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sdi import exchange as ex
from sdi import ring
from sdi._rust import exchange as native

SYMBOL = ex.Symbol(price_levels=100_000)


def test_stage_between_rings_gives_the_engines_events(tmp_path: Path) -> None:
    command_ring, event_ring = tmp_path / "commands", tmp_path / "events"
    ring.create(command_ring, 1 << 16)
    ring.create(event_ring, 1 << 18)
    commands = np.concatenate(
        [
            native.funding_commands().view(ex.COMMAND_DTYPE),
            native.mixed_workload(20_000, 8).view(ex.COMMAND_DTYPE),
        ]
    )
    direct = ex.Exchange([SYMBOL], accounts=1_000)
    expected = direct.submit(commands.copy())

    stage = ex.MatcherStage(
        [SYMBOL],
        accounts=1_000,
        command_ring=command_ring,
        event_ring=event_ring,
        journal=tmp_path / "journal",
        durability="buffered",
        batch_records_max=1024,
    )
    gateway = ring.Producer(command_ring)
    reader = ring.Consumer(event_ring)
    rows = commands.view(np.uint8).reshape(len(commands), ex.COMMAND_DTYPE.itemsize)
    out = np.zeros((len(expected) + 16, ex.EVENT_DTYPE.itemsize), dtype=np.uint8)
    pushed = received = 0
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the pipeline stalled"
        if pushed < len(rows):
            pushed += gateway.push_many(rows[pushed : pushed + 4096])
            if pushed == len(rows):
                gateway.close()
        got = reader.pop_rows_into(out[received:], timeout=0.01 if pushed == len(rows) else 0)
        if got == 0 and pushed == len(rows) and reader.is_finished():
            break
        received += got
    events = out[:received].reshape(-1).view(ex.EVENT_DTYPE)
    assert np.array_equal(events, expected)
    report = stage.stop()
    assert report.commands == len(commands)
    assert report.events == len(expected)
    assert report.next_input_seq == len(commands) + 1
    # The journal the stage wrote replays into the same book.
    replayed = ex.Exchange([SYMBOL], accounts=1_000, journal=tmp_path / "journal")
    assert replayed.next_input_seq == len(commands) + 1
    assert replayed.depth(0, ex.Side.BUY, 50) == direct.depth(0, ex.Side.BUY, 50)
    assert replayed.depth(0, ex.Side.SELL, 50) == direct.depth(0, ex.Side.SELL, 50)
