"""Type stubs for ``sdi._rust.log`` (built from ``rust/sdi-py/src/log.rs``).

The documented API is ``sdi.mq.log``; these are its native halves. Reads
return whole stored batches as ``bytes``; ``batches`` and ``decode`` take
them apart.
"""

import os
from collections.abc import Sequence
from typing import final

__all__ = [
    "BATCH_BYTES_MAX",
    "BATCH_HEADER_BYTES",
    "BATCH_RECORDS_MAX",
    "INDEX_INTERVAL_BYTES_DEFAULT",
    "SEGMENT_BYTES_DEFAULT",
    "Partition",
    "batches",
    "decode",
]

BATCH_BYTES_MAX: int
BATCH_HEADER_BYTES: int
BATCH_RECORDS_MAX: int
INDEX_INTERVAL_BYTES_DEFAULT: int
SEGMENT_BYTES_DEFAULT: int

@final
class Partition:
    def __new__(
        cls,
        path: str | os.PathLike[str],
        segment_bytes_max: int = ...,
        index_interval_bytes: int = ...,
        fsync: str = "every_batch",
        fsync_interval_ms: int = 1000,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> Partition: ...
    def append_records(
        self,
        keys: Sequence[bytes | None] | None,
        values: Sequence[bytes],
        timestamp_ms: int,
    ) -> int: ...
    def append_payload(
        self, payload: bytes, record_count: int, first_timestamp_ms: int, max_timestamp_ms: int
    ) -> int: ...
    def append_payload_at(
        self,
        base_offset: int,
        payload: bytes,
        record_count: int,
        first_timestamp_ms: int,
        max_timestamp_ms: int,
    ) -> int: ...
    def compact(
        self, up_to: int, now_ms: int, tombstone_retention_ms: int
    ) -> tuple[int, int, int, int, int, int]: ...
    def read(self, offset: int, max_bytes: int) -> bytes: ...
    def read_payloads(self, offset: int, max_bytes: int) -> bytes: ...
    def truncate_to(self, offset: int) -> None: ...
    def offset_for_time(self, timestamp_ms: int) -> int | None: ...
    def flush(self) -> None: ...
    def apply_retention(self, now_ms: int) -> tuple[int, int]: ...
    def segment_base_offsets(self) -> list[int]: ...
    @property
    def log_start_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...

def batches(data: bytes) -> list[tuple[int, int, int, int, int, bytes]]: ...
def decode(data: bytes) -> list[tuple[int, int, bytes, bytes]]: ...
