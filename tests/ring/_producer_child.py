"""A producer process for the crash tests: ``python _producer_child.py RING ACKS MODE``.

Pushes self-checking payloads (see ``_ring_payloads.py``) in batches forever, or
until it has pushed 20,000 in mode ``close`` (then closes cleanly). After
each batch it stores how many records were acknowledged (``push_many``
returned) in the 8-byte file ACKS, so the test can check that every
acknowledged record reached the consumer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ring_payloads import make_payload

from sdi import ring


def main() -> None:
    ring_path, acks_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    acks = numpy.memmap(acks_path, dtype=numpy.uint64, mode="r+", shape=(1,))
    producer = ring.Producer(ring_path)
    sequence = 0
    while mode != "close" or sequence < 20_000:
        batch = [make_payload(s) for s in range(sequence, sequence + 1 + sequence % 17)]
        while batch:
            pushed = producer.push_many(batch, timeout=None, wait="spin_then_yield")
            del batch[:pushed]
            sequence += pushed
            acks[0] = sequence
    producer.close()


if __name__ == "__main__":
    main()
