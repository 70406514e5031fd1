"""The ring against a ``collections.deque`` model, driven by hypothesis."""

from __future__ import annotations

from collections import deque

import numpy
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sdi import errors, ring

HEADER_BYTES = 8


def framed(length: int) -> int:
    return (HEADER_BYTES + length + 7) // 8 * 8


class RingMachine(RuleBasedStateMachine):
    """Random pushes and pops, single and batched, at small capacities."""

    def __init__(self) -> None:
        super().__init__()
        self.model: deque[bytes] = deque()

    @initialize(capacity=st.sampled_from([64, 128, 256, 1024, 4096]))
    def open_ring(self, capacity: int) -> None:
        self.producer, self.consumer = ring.pair(capacity)
        self.max = capacity - HEADER_BYTES

    @rule(record=st.binary(max_size=300))
    def push(self, record: bytes) -> None:
        if len(record) > self.max:
            with pytest.raises(errors.LimitExceeded, match="split it or create a larger ring"):
                self.producer.push(record)
            return
        free = self.producer.free_bytes()
        if self.producer.push(record):
            assert free >= framed(len(record))
            self.model.append(record)
        else:
            assert self.producer.free_bytes() < framed(len(record))

    @rule(records=st.lists(st.binary(max_size=60), max_size=12))
    def push_many(self, records: list[bytes]) -> None:
        if any(len(record) > self.max for record in records):
            with pytest.raises(errors.LimitExceeded):
                self.producer.push_many(records)
            return
        pushed = self.producer.push_many(records)
        assert 0 <= pushed <= len(records)
        self.model.extend(records[:pushed])
        if pushed < len(records):
            assert self.producer.free_bytes() < framed(len(records[pushed]))

    @rule(width=st.integers(1, 24), count=st.integers(0, 8), fill=st.integers(0, 255))
    def push_rows(self, width: int, count: int, fill: int) -> None:
        rows = (numpy.arange(width * count, dtype=numpy.uint8) ^ fill).reshape(count, width)
        pushed = self.producer.push_many(rows)
        assert 0 <= pushed <= count
        self.model.extend(bytes(row) for row in rows[:pushed])

    @rule(max_records=st.integers(0, 12))
    def pop(self, max_records: int) -> None:
        expected = [self.model.popleft() for _ in range(min(max_records, len(self.model)))]
        assert self.consumer.pop(max_records) == expected

    @rule(buffer_bytes=st.integers(0, 300), max_records=st.integers(1, 10))
    def pop_into(self, buffer_bytes: int, max_records: int) -> None:
        buffer = numpy.zeros(buffer_bytes, dtype=numpy.uint8)
        offsets = numpy.full(max_records + 1, -1, dtype=numpy.int64)
        if self.model and len(self.model[0]) > buffer_bytes:
            with pytest.raises(errors.InvalidArgument, match="stays in the ring"):
                self.consumer.pop_into(buffer, offsets)
            return
        count = self.consumer.pop_into(buffer, offsets)
        assert offsets[0] == 0
        for index in range(count):
            expected = self.model.popleft()
            assert bytes(buffer[offsets[index] : offsets[index + 1]]) == expected
        if count < max_records and self.model:
            assert offsets[count] + len(self.model[0]) > buffer_bytes

    @precondition(lambda self: bool(self.model))
    @rule(count=st.integers(1, 8))
    def pop_rows_into(self, count: int) -> None:
        width = max(1, len(self.model[0]))
        rows = numpy.zeros((count, width), dtype=numpy.uint8)
        if len(self.model[0]) != width:
            with pytest.raises(errors.InvalidArgument, match="not 1 like the rows"):
                self.consumer.pop_rows_into(rows)
            return
        popped = self.consumer.pop_rows_into(rows)
        assert popped >= 1
        for row in rows[:popped]:
            assert bytes(row) == self.model.popleft()

    @invariant()
    def lengths_agree(self) -> None:
        if hasattr(self, "consumer"):
            assert len(self.consumer) == len(self.model) == len(self.producer)
            framed_total = sum(framed(len(record)) for record in self.model)
            used = self.consumer.used_bytes()
            # The records plus at most one padding record at the wrap.
            assert framed_total <= used < framed_total + self.consumer.capacity_bytes


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestRing = RingMachine.TestCase
