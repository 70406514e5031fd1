"""What a follower sends its leader: the client side of Fetch and OffsetForLeaderEpoch.

A follower broker replicates a partition the way Kafka's do: it asks the
leader where its last leader epoch ends (OffsetForLeaderEpoch) and cuts its
log back to there, then fetches from its log end, with its broker id as
``replica_id`` so the leader counts the fetch as the follower's position.
This module encodes those two requests and decodes their answers, over one
connection per leader (:class:`LeaderConnection`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sdi.errors import ProtocolError
from sdi.mq import protocol as p

__all__ = ["FetchedPartition", "LeaderConnection"]

FETCH_VERSION = 11
EPOCH_VERSION = 3


@dataclass(slots=True)
class FetchedPartition:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: bytes


class LeaderConnection:
    """One connection to a leader broker; requests go one at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_id: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = p.FrameParser()
        self._pending: list[bytes] = []
        self._client_id = client_id
        self._correlation = 0

    @classmethod
    async def open(
        cls, host: str, port: int, client_id: str, timeout: float = 5.0
    ) -> LeaderConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer, client_id)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def _call(self, api_key: int, version: int, body: bytes, timeout: float) -> p.Reader:
        self._correlation += 1
        header = p.Writer()
        header.int16(api_key)
        header.int16(version)
        header.int32(self._correlation)
        header.nullable_string(self._client_id)
        payload = header.getvalue() + body
        self._writer.write(len(payload).to_bytes(4, "big") + payload)
        await self._writer.drain()
        frame = await asyncio.wait_for(self._next_frame(), timeout)
        if int.from_bytes(frame[:4], "big", signed=True) != self._correlation:
            raise ProtocolError("the leader answered out of order")
        return p.Reader(frame[4:])

    async def _next_frame(self) -> bytes:
        while not self._pending:
            data = await self._reader.read(1 << 20)
            if not data:
                raise ConnectionError("the leader closed the connection")
            self._pending.extend(bytes(frame) for frame in self._frames.feed(data))
        return self._pending.pop(0)

    async def epoch_ends(
        self, replica_id: int, asks: list[tuple[str, int, int, int]], timeout: float = 10.0
    ) -> dict[tuple[str, int], tuple[int, int, int]]:
        """OffsetForLeaderEpoch for (topic, partition, current epoch, epoch asked about).

        Returns ``{(topic, partition): (error code, epoch, end offset)}``.
        """
        by_topic: dict[str, list[tuple[int, int, int]]] = {}
        for topic, partition, current, asked in asks:
            by_topic.setdefault(topic, []).append((partition, current, asked))
        body = p.Writer()
        body.int32(replica_id)
        body.array_length(len(by_topic))
        for topic, partitions in by_topic.items():
            body.string(topic)
            body.array_length(len(partitions))
            for partition, current, asked in partitions:
                body.int32(partition)
                body.int32(current)
                body.int32(asked)
        reader = await self._call(
            p.OFFSET_FOR_LEADER_EPOCH, EPOCH_VERSION, body.getvalue(), timeout
        )
        reader.int32()  # throttle time
        answers: dict[tuple[str, int], tuple[int, int, int]] = {}
        for _ in range(reader.array_length()):
            topic = reader.string()
            for _ in range(reader.array_length()):
                error = reader.int16()
                partition = reader.int32()
                epoch = reader.int32()
                answers[(topic, partition)] = (error, epoch, reader.int64())
        reader.expect_end("OffsetForLeaderEpoch response")
        return answers

    async def fetch(
        self,
        replica_id: int,
        asks: list[tuple[str, int, int, int]],
        *,
        max_wait_ms: int,
        max_bytes: int = 8 << 20,
        partition_max_bytes: int = 1 << 20,
    ) -> list[FetchedPartition]:
        """Fetch v11 for (topic, partition, fetch offset, current leader epoch)."""
        by_topic: dict[str, list[tuple[int, int, int]]] = {}
        for topic, partition, offset, epoch in asks:
            by_topic.setdefault(topic, []).append((partition, offset, epoch))
        body = p.Writer()
        body.int32(replica_id)
        body.int32(max_wait_ms)
        body.int32(1)  # min bytes
        body.int32(max_bytes)
        body.int8(0)  # isolation: read uncommitted
        body.int32(0)  # session id
        body.int32(-1)  # session epoch: no session
        body.array_length(len(by_topic))
        for topic, partitions in by_topic.items():
            body.string(topic)
            body.array_length(len(partitions))
            for partition, offset, epoch in partitions:
                body.int32(partition)
                body.int32(epoch)
                body.int64(offset)
                body.int64(-1)  # log start offset (a follower's; unused)
                body.int32(partition_max_bytes)
        body.array_length(0)  # forgotten topics
        body.string("")  # rack
        reader = await self._call(p.FETCH, FETCH_VERSION, body.getvalue(), max_wait_ms / 1000 + 10)
        reader.int32()  # throttle time
        error = reader.int16()
        reader.int32()  # session id
        if error:
            raise ProtocolError(f"the leader refused the fetch with error {error}")
        fetched = []
        for _ in range(reader.array_length()):
            topic = reader.string()
            for _ in range(reader.array_length()):
                partition = reader.int32()
                code = reader.int16()
                high_watermark = reader.int64()
                reader.int64()  # last stable offset
                log_start_offset = reader.int64()
                for _ in range(max(0, reader.array_length(True))):
                    reader.int64()
                    reader.int64()
                reader.int32()  # preferred read replica
                records = reader.nullable_bytes() or b""
                fetched.append(
                    FetchedPartition(
                        topic, partition, code, high_watermark, log_start_offset, bytes(records)
                    )
                )
        reader.expect_end("Fetch response")
        return fetched
