"""Self-checking payloads shared by the ring tests and their child processes.

A payload is its sequence number (8 bytes, little-endian), a body derived
from the sequence number, and a CRC-32 of both (4 bytes). Lengths vary with
the sequence number, so records wrap around the ring at every offset.
"""

from __future__ import annotations

import zlib


def payload_length(sequence: int) -> int:
    """Between 12 and 211 bytes, spread over the sequence numbers."""
    return 12 + (sequence * 2654435761) % 200


PATTERN = bytes(range(256)) * 2


def make_payload(sequence: int) -> bytes:
    """The one payload the producer sends for ``sequence``."""
    body_bytes = payload_length(sequence) - 12
    head = sequence.to_bytes(8, "little")
    start = (sequence * 31) & 0xFF
    body = PATTERN[start : start + body_bytes]
    return head + body + zlib.crc32(head + body).to_bytes(4, "little")


def check_payload(payload: bytes) -> int:
    """Check a payload's checksum and content; return its sequence number."""
    assert len(payload) >= 12, f"payload of {len(payload)} bytes"
    checksum = int.from_bytes(payload[-4:], "little")
    assert zlib.crc32(payload[:-4]) == checksum, "checksum mismatch: a torn record"
    sequence = int.from_bytes(payload[:8], "little")
    assert payload == make_payload(sequence), f"record {sequence} has the wrong content"
    return sequence
