"""Type stubs for ``sdi._rust.lsm`` (built from ``rust/sdi-py/src/lsm.rs``).

The email service's inverted index (``rust/sdi-lsm``); the service's
wrapper is :class:`sdi.email.lsmindex.LsmSearchIndex`. Users are ``u32``,
mail ids ``u64`` (increasing with arrival, never reused), folders ``u32``.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, final

__all__ = [
    "BATCH_OPS_MAX",
    "FLAG_READ",
    "FLAG_STARRED",
    "SEARCH_RESULTS_MAX",
    "LsmIndex",
    "check_query",
]

BATCH_OPS_MAX: int
FLAG_READ: int
FLAG_STARRED: int
SEARCH_RESULTS_MAX: int

_Fields = Mapping[str, str] | Sequence[tuple[str, str]]

@final
class LsmIndex:
    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        sync: str = "always",
        background_merge: bool = True,
        memtable_bytes: int | None = None,
        merge_width: int | None = None,
        runs_max: int | None = None,
        tokenize_threads: int | None = None,
    ) -> LsmIndex: ...
    @property
    def path(self) -> Path: ...
    def add(
        self,
        user: int,
        doc: int,
        fields: _Fields,
        *,
        date: int = 0,
        folder: int = 0,
        flags: int = 0,
        exist_ok: bool = False,
    ) -> None: ...
    def delete(self, user: int, doc: int) -> None: ...
    def set_attrs(self, user: int, doc: int, *, date: int, folder: int, flags: int) -> None: ...
    def write_batch(self, ops: list[tuple[Any, ...]], *, exist_ok: bool = False) -> None: ...
    def search(
        self,
        user: int,
        query: str,
        *,
        folder: int | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
        read: bool | None = None,
        starred: bool | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[int]: ...
    def attrs(self, user: int, doc: int) -> tuple[int, int, int] | None: ...
    def contains(self, user: int, doc: int) -> bool: ...
    def docs_of(self, user: int) -> list[tuple[int, tuple[int, int, int] | None]]: ...
    def flush(self) -> None: ...
    def sync(self) -> None: ...
    def compact_step(self) -> bool: ...
    def compact(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...

def check_query(query: str) -> None: ...
