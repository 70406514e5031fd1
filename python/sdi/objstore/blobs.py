"""Where the S3 layer keeps object bytes: one interface over a data node or the cluster store.

The S3 layer names every stored piece of bytes (a whole object, or one part
of a multipart object) by a fresh *data id* and never overwrites one, so a
reader holding a data id reads consistent bytes until the piece is deleted.
:class:`NodeBlobs` keeps them on a single in-process data node;
:class:`ClusterBlobs` on the cluster store (:mod:`sdi.objstore.cluster`),
replicated or erasure-coded across data nodes as each bucket's durability
says.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     blobs = NodeBlobs(path)
...     blobs.put("d1", b"hello", durability="replicas-1")
...     blobs.get_range("d1", 1, 3)
...     blobs.close()
b'ell'
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from os import PathLike
from typing import Protocol

from sdi.errors import InvalidArgument
from sdi.objstore.cluster import ClusterStore
from sdi.objstore.datanode import DataNode
from sdi.objstore.nodes import LocalNode
from sdi.objstore.placement import Scheme

__all__ = ["Blobs", "ClusterBlobs", "NodeBlobs"]


class Blobs(Protocol):
    """Immutable byte pieces by data id; every method blocks (call from worker threads)."""

    def check_durability(self, durability: str) -> None:
        """Raises ``InvalidArgument`` (saying what is possible) unless this store can do it."""
        ...

    def put(self, data_id: str, data: bytes | memoryview, *, durability: str) -> None:
        """Stores ``data`` under a fresh ``data_id``; durable on return."""
        ...

    def get(self, data_id: str) -> bytes:
        """The piece, checksum-checked; KeyError if unknown, Corrupt if it cannot be read intact."""
        ...

    def get_range(self, data_id: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (cut at the end)."""
        ...

    def delete(self, data_id: str) -> None:
        """Deletes the piece (absent is fine)."""
        ...

    def stored_before(self, ms: int) -> Iterator[str]:
        """The data ids of pieces stored before ``ms`` (epoch milliseconds), for GC."""
        ...

    def maintain(self) -> None:
        """Periodic upkeep (compaction of mostly-dead data files, repair); may take a while."""
        ...

    def close(self) -> None: ...


class NodeBlobs:
    """Every piece on one in-process :class:`~sdi.objstore.datanode.DataNode` under ``path``.

    There is one copy, so ``durability`` can only be ``replicas-1``; run the
    cluster store for replication or erasure coding.
    """

    durabilities = ("replicas-1",)

    def __init__(self, path: str | PathLike[str], *, sync: bool = True) -> None:
        self.node = DataNode(path, sync=sync)

    def check_durability(self, durability: str) -> None:
        if durability not in self.durabilities:
            raise InvalidArgument(
                f"durability {durability!r} needs the cluster store: this service keeps one copy"
                " on one data node (replicas-1); start it with --nodes 6 for replicas-3 or ec-4+2"
            )

    def put(self, data_id: str, data: bytes | memoryview, *, durability: str) -> None:
        self.check_durability(durability)
        self.node.put(data_id, data)

    def get(self, data_id: str) -> bytes:
        return self.node.get(data_id)

    def get_range(self, data_id: str, start: int, length: int) -> bytes:
        return self.node.get_range(data_id, start, length)

    def delete(self, data_id: str) -> None:
        self.node.delete(data_id)

    def stored_before(self, ms: int) -> Iterator[str]:
        for data_id in list(self.node.object_ids()):
            try:
                if self.node.stat(data_id).stored_ms < ms:
                    yield data_id
            except KeyError:
                continue

    def maintain(self) -> None:
        self.node.compact()

    def close(self) -> None:
        self.node.close()


class ClusterBlobs:
    """Every piece on the cluster store: replicated or erasure-coded over data nodes.

    :meth:`maintain` repairs missing or rotten shards, deletes pieces no
    placement row points at (and puts a crash cut short, once they are
    ``garbage_age_s`` old), and compacts the data files of in-process nodes
    (a node in its own process compacts its own).
    """

    def __init__(self, store: ClusterStore, *, garbage_age_s: float = 3600.0) -> None:
        self.store = store
        self.garbage_age_s = garbage_age_s

    @property
    def node_count(self) -> int:
        return len(self.store.cluster.node_ids())

    def check_durability(self, durability: str) -> None:
        scheme = Scheme.parse(durability)
        if scheme.slots > self.node_count:
            raise InvalidArgument(
                f"durability {durability} spreads {scheme.slots} pieces over as many nodes, and"
                f" this cluster has {self.node_count}; choose a scheme of at most that many"
                " pieces or start more data nodes (--nodes)"
            )

    def put(self, data_id: str, data: bytes | memoryview, *, durability: str) -> None:
        self.store.put(data_id, data, Scheme.parse(durability))

    def get(self, data_id: str) -> bytes:
        return self.store.get(data_id)

    def get_range(self, data_id: str, start: int, length: int) -> bytes:
        return self.store.get_range(data_id, start, length)

    def delete(self, data_id: str) -> None:
        self.store.delete(data_id)

    def stored_before(self, ms: int) -> Iterator[str]:
        for data_id in list(self.store.data_ids()):
            try:
                placement = self.store.stat(data_id)
            except KeyError:
                continue
            if (placement.stored_ms or placement.created_ms) < ms:
                yield data_id

    def maintain(self) -> None:
        self.store.repair()
        self.store.collect_garbage(older_than_s=self.garbage_age_s)
        for node in self.store.cluster.clients():
            if isinstance(node, LocalNode):
                node.store.compact()

    def close(self) -> None:
        self.store.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000
