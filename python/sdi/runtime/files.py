"""Small file-system helpers the stores share.

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as path:
...     (Path(path) / "new").write_bytes(b"x")
...     fsync_directory(Path(path))  # the new name is now durable
1
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(directory: Path) -> None:
    """Makes creations, renames and deletions of names in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
