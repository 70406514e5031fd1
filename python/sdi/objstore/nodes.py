"""Data nodes as the cluster store sees them: one interface, in-process or over the network.

A :class:`NodeClient` is what the placement service and the cluster store
talk to. :class:`LocalNode` wraps a :class:`~sdi.objstore.datanode.DataNode`
in this process (the default of ``sdi serve s3``).

Every method blocks; the cluster store calls them from worker threads. A node
that cannot be reached raises :class:`NodeUnavailable`; an object that is not
there raises ``KeyError``; bytes that fail their checksum raise
:class:`~sdi.errors.Corrupt` and are never returned.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     node = LocalNode("node-0", path)
...     node.put("shard-1", b"bytes")
...     node.get("shard-1")
...     node.close()
b'bytes'
"""

from __future__ import annotations

from os import PathLike
from typing import Protocol

from sdi.errors import PeerGone
from sdi.objstore.datanode import DataNode

__all__ = ["LocalNode", "NodeClient", "NodeUnavailable"]


class NodeUnavailable(PeerGone):
    """A data node did not answer (down, unreachable, or timed out); try another node."""


class NodeClient(Protocol):
    """One data node: puts are durable on return; gets are checksum-checked."""

    @property
    def node_id(self) -> str: ...

    def put(self, object_id: str, data: bytes | bytearray | memoryview) -> None:
        """Stores ``data`` under ``object_id`` (replacing what was there); durable on return."""
        ...

    def get(self, object_id: str) -> bytes:
        """The whole object, its CRC-32C checked; KeyError if absent, Corrupt if rotten."""
        ...

    def delete(self, object_id: str) -> bool:
        """Deletes ``object_id``; True if it was there."""
        ...

    def object_ids(self, prefix: str = "") -> list[str]:
        """Every stored object id starting with ``prefix``, in order."""
        ...

    def scrub(self) -> list[str]:
        """Reads every stored object back; the ids whose bytes fail their checksum."""
        ...

    def ping(self) -> bool:
        """True if the node answers."""
        ...

    def close(self) -> None: ...


class LocalNode:
    """A data node in this process, stored under ``path``."""

    def __init__(self, node_id: str, path: str | PathLike[str], *, sync: bool = True) -> None:
        self._node_id = node_id
        self.store = DataNode(path, sync=sync)

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def in_process(self) -> bool:
        """True: calls are plain function calls (the cluster store reads small pieces inline)."""
        return True

    def __repr__(self) -> str:
        return f"LocalNode({self._node_id!r}, {str(self.store.path)!r})"

    def put(self, object_id: str, data: bytes | bytearray | memoryview) -> None:
        self.store.put(object_id, data)

    def get(self, object_id: str) -> bytes:
        return self.store.get(object_id)

    def delete(self, object_id: str) -> bool:
        return self.store.delete(object_id)

    def object_ids(self, prefix: str = "") -> list[str]:
        return list(self.store.object_ids(prefix))

    def scrub(self) -> list[str]:
        return self.store.scrub()

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.store.close()
