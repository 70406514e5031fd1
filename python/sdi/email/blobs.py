"""Message bodies and attachments on local disk, content-addressed by SHA-256.

A blob is written to a temporary file, fsynced, renamed to
``<root>/<first two hex digits>/<sha256>`` and its directory fsynced, so once
:meth:`BlobStore.put` returns the bytes survive a crash; writing the same
bytes again is a no-op. (The book keeps bodies in an object store; the S3
integration with ``sdi serve s3`` is left for later.)

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     blobs = BlobStore(path)
...     key = blobs.put(b"hello")
...     print(key[:12], blobs.get(key), blobs.put(b"hello") == key, blobs.exists("0" * 64))
2cf24dba5fb0 b'hello' True False
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from sdi.errors import InvalidArgument

__all__ = ["BlobStore"]

_KEY = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    """Immutable blobs under ``root``, named by the SHA-256 of their bytes (thread-safe)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise InvalidArgument(f"not a blob key: {key[:70]!r}")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        """Stores ``data`` durably; its key (the SHA-256 hex digest)."""
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        if target.exists():
            return key
        target.parent.mkdir(exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return key

    def get(self, key: str) -> bytes:
        """The blob's bytes (:class:`FileNotFoundError` when there is none)."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()
