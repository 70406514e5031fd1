"""Full-text search over a user's mail: the :class:`SearchIndex` interface and :class:`ScanIndex`.

The service talks to its index only through :class:`SearchIndex`; it runs
on :class:`sdi.email.lsmindex.LsmSearchIndex`, the compiled inverted index
of ``rust/sdi-lsm`` (an LSM tree, keys partitioned by user).
:class:`ScanIndex` is a brute-force scan that tokenizes every stored
message and evaluates the query (:func:`sdi.email.query.matches`) on each
of the user's messages. It is the oracle the LSM index is compared with in
the tests: its answers define what a search returns.

Results are document ids (the message ids of the store), newest first, i.e.
by descending id; ``before`` pages (ids below it only).

>>> index = ScanIndex()
>>> index.add("a@x", 1, {"subject": "Lunch on Friday", "from": "b@y"}, 100, "inbox", False)
>>> index.add("a@x", 2, {"subject": "Friday report", "body": "numbers"}, 200, "inbox", True)
>>> index.add("c@x", 3, {"subject": "Friday"}, 300, "inbox", False)
>>> index.search("a@x", "friday"), index.search("a@x", "friday", read=False)
([2, 1], [1])
>>> index.set_attrs("a@x", 2, folder="archive")
>>> index.search("a@x", "fri*", folder="archive"), index.search("a@x", "from:b@y OR numbers")
([2], [2, 1])
>>> index.delete("a@x", 1); index.search("a@x", "friday", before=3)
[2]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sdi.email.query import Document, document, matches, parse

__all__ = ["Indexed", "ScanIndex", "SearchIndex"]

SEARCH_LIMIT_MAX = 500


class SearchIndex(Protocol):
    """What the service needs from a search index (thread-safe; called from worker threads)."""

    def add(
        self,
        user: str,
        doc_id: int,
        fields: Mapping[str, str],
        date: int,
        folder: str,
        read: bool,
    ) -> None:
        """Indexes a message (adding an id that is there replaces it)."""

    def delete(self, user: str, doc_id: int) -> None:
        """Forgets a message (an unknown id is fine)."""

    def set_attrs(
        self, user: str, doc_id: int, *, folder: str | None = None, read: bool | None = None
    ) -> None:
        """Changes a message's folder or read flag (the filters, not the text)."""

    def search(
        self,
        user: str,
        query: str,
        *,
        folder: str | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
        read: bool | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[int]:
        """Ids of the user's messages matching ``query`` and the filters, newest first.

        ``date_from`` and ``date_to`` bound the date (Unix seconds, both
        inclusive); raises :class:`~sdi.errors.InvalidArgument` for a bad query.
        """


@dataclass
class Indexed:
    """One message as :class:`ScanIndex` keeps it."""

    doc: Document
    date: int
    folder: str
    read: bool


class ScanIndex:
    """The brute-force index: every search evaluates the query on each of the user's messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, dict[int, Indexed]] = {}

    def add(
        self,
        user: str,
        doc_id: int,
        fields: Mapping[str, str],
        date: int,
        folder: str,
        read: bool,
    ) -> None:
        entry = Indexed(document(fields), int(date), folder, bool(read))
        with self._lock:
            self._users.setdefault(user, {})[int(doc_id)] = entry

    def delete(self, user: str, doc_id: int) -> None:
        with self._lock:
            self._users.get(user, {}).pop(int(doc_id), None)

    def set_attrs(
        self, user: str, doc_id: int, *, folder: str | None = None, read: bool | None = None
    ) -> None:
        with self._lock:
            entry = self._users.get(user, {}).get(int(doc_id))
            if entry is None:
                return
            if folder is not None:
                entry.folder = folder
            if read is not None:
                entry.read = bool(read)

    def search(
        self,
        user: str,
        query: str,
        *,
        folder: str | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
        read: bool | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[int]:
        node = parse(query)
        limit = max(0, min(int(limit), SEARCH_LIMIT_MAX))
        with self._lock:
            entries = sorted(self._users.get(user, {}).items(), reverse=True)
        found: list[int] = []
        for doc_id, entry in entries:
            if len(found) >= limit:
                break
            if before is not None and doc_id >= before:
                continue
            if folder is not None and entry.folder != folder:
                continue
            if read is not None and entry.read != read:
                continue
            if date_from is not None and entry.date < date_from:
                continue
            if date_to is not None and entry.date > date_to:
                continue
            if matches(node, entry.doc):
                found.append(doc_id)
        return found

    def __len__(self) -> int:
        with self._lock:
            return sum(len(docs) for docs in self._users.values())
