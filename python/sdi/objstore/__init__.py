"""The S3-like object store (book chapter 9), being built (issue 5).

So far its cores:

- :mod:`sdi.objstore.ec` splits an object into ``k`` data shards and ``m``
  parity shards (4+2 by default) and gets it back from any ``k`` of them,
  with a CRC-32C per shard so a rotten shard is rebuilt rather than served.
- :mod:`sdi.objstore.datanode` is a data node's storage: objects packed into
  append-only data files with a SQLite index, tombstones and compaction.
"""

from __future__ import annotations

__all__ = ["datanode", "ec"]

from sdi.objstore import datanode, ec
