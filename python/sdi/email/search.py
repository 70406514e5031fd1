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
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sdi.email.query import Document, document, matches, parse

__all__ = ["Indexed", "ScanIndex", "SearchIndex", "apply_changes", "change_ops"]

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


class _LoggedChange(Protocol):
    """What :func:`change_ops` reads of a change-log row (:class:`sdi.email.store.Change`)."""

    @property
    def op(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def message_id(self) -> int: ...

    @property
    def folder(self) -> str: ...

    @property
    def read(self) -> bool: ...

    @property
    def date(self) -> int: ...


class _TextSource(Protocol):
    def search_texts(self, user: str, ids: list[int]) -> dict[int, dict[str, str]]: ...


def change_ops(
    changes: Sequence[_LoggedChange],
    store: _TextSource,
    texts: MutableMapping[int, Mapping[str, str]] | None = None,
) -> list[tuple[Any, ...]]:
    """The index writes that apply change-log rows, in order: ``("add", user, id, fields,
    date, folder, read)``, ``("set_attrs", user, id, folder, read)``, ``("delete", user, id)``.

    A stored message's text comes from ``texts`` (by id) when there, else from the
    store; a message the store no longer has is left out (a later row deletes it).
    """
    texts = {} if texts is None else texts
    wanted: dict[str, list[int]] = {}
    for change in changes:
        if change.op == "stored" and change.message_id not in texts:
            wanted.setdefault(change.user, []).append(change.message_id)
    fetched: dict[int, Mapping[str, str]] = {}
    for user, ids in wanted.items():
        fetched.update(store.search_texts(user, ids))
    ops: list[tuple[Any, ...]] = []
    for change in changes:
        if change.op == "stored":
            fields = texts.get(change.message_id) or fetched.get(change.message_id)
            if fields is not None:
                ops.append(
                    ("add", change.user, change.message_id, fields, change.date, change.folder,
                     change.read)
                )  # fmt: skip
        elif change.op == "updated":
            ops.append(("set_attrs", change.user, change.message_id, change.folder, change.read))
        elif change.op == "deleted":
            ops.append(("delete", change.user, change.message_id))
    return ops


def apply_changes(index: SearchIndex, ops: Sequence[tuple[Any, ...]]) -> None:
    """Applies :func:`change_ops` output to ``index``: as one write when it has ``apply``
    (:meth:`sdi.email.lsmindex.LsmSearchIndex.apply`), else one call each. Applying rows
    again is harmless: an add of a known id replaces its attributes (the text of an id
    never changes) and the later rows run after it."""
    apply = getattr(index, "apply", None)
    if apply is not None:
        apply(ops)
        return
    for op in ops:
        if op[0] == "add":
            index.add(*op[1:])
        elif op[0] == "set_attrs":
            index.set_attrs(op[1], op[2], folder=op[3], read=op[4])
        else:
            index.delete(op[1], op[2])
