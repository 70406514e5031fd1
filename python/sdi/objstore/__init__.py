"""The S3-like object store (book chapter 9): ``sdi serve s3``.

- :mod:`sdi.objstore.s3` and :mod:`sdi.objstore.service`: the S3 API over
  HTTP with SigV4 (:mod:`sdi.objstore.sigv4`): buckets, objects, versions,
  multipart uploads, copies.
- :mod:`sdi.objstore.metadata`: buckets, versions and uploads in SQLite.
- :mod:`sdi.objstore.cluster` and :mod:`sdi.objstore.placement`: the data
  store: the cluster map, where each piece goes, 3x replication or 4+2
  erasure coding per bucket, reconstructing reads, repair and garbage
  collection; :mod:`sdi.objstore.blobs` is the S3 layer's view of it.
- :mod:`sdi.objstore.nodes` and :mod:`sdi.objstore.nodeserver`: data nodes
  in this process or as processes of their own over HTTP.
- :mod:`sdi.objstore.datanode`: a data node's storage: objects packed into
  append-only data files with a SQLite index, tombstones and compaction.
- :mod:`sdi.objstore.ec`: Reed-Solomon erasure coding (compiled, ISA-L
  compatible) with a CRC-32C per shard.
"""

from __future__ import annotations

__all__ = ["blobs", "cluster", "datanode", "ec", "metadata", "nodes", "placement"]

from sdi.objstore import blobs, cluster, datanode, ec, metadata, nodes, placement
