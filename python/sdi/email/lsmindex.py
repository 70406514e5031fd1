"""The email service's search index on the compiled LSM index (``rust/sdi-lsm``).

:class:`LsmSearchIndex` implements :class:`~sdi.email.search.SearchIndex`
over :class:`sdi._rust.lsm.LsmIndex`. Its directory holds

* ``lsm/``: the core's files (write-ahead log, sorted runs, ``MANIFEST``);
* ``names.jsonl``: the table that gives each user address and each folder
  name its ``u32`` id in the core (one JSON line per new name, appended and
  fsynced before the first write that uses the id, so an id is never given
  to two names, even across a crash);
* ``state.json``: the recovery record, ``{"clean": bool, "mark": int}``.

Queries go to the core's parser and tokenizer; :class:`~sdi.email.search.ScanIndex`
(the brute-force oracle of the tests) implements the same language in
Python (:mod:`sdi.email.query`). Dates: the service's ``date_to`` is
inclusive, the core's exclusive, so ``date_to + 1`` is passed.

Recovery (:meth:`LsmSearchIndex.recover`, at service start). The mail
store commits first and the index is written after, so a crash in between
leaves a stored message that the index lacks (or a move, a read flag or a
delete that the index missed). The rule:

* ``mark`` is the highest message id of the store when the index was last
  opened and checked; every message at or below it was indexed then.
  Message ids come from SQLite's ``AUTOINCREMENT``: later mail always gets
  a higher id, so mail that arrived while the index was open has an id
  above ``mark``, whatever order concurrent deliveries reached the index in.
* ``clean`` is written true only by :meth:`close` when no index write of the
  session failed; it is set false (on disk) as soon as the index is opened.
* At start: no ``state.json`` (a new or deleted index directory) or
  ``clean`` false (a crash, or a failed write) means a full check: every
  stored message is compared with what the index knows (ids and
  attributes, no text): missing ones are added with their text from the
  store, stale attributes are set, mail the store no longer has is
  deleted. ``clean`` true means only the messages above ``mark`` are
  checked and the missing ones added: the cost is the mail of the last
  session (ids only), not the mailbox.
* Then the index is synced and ``{"clean": false, "mark": <store's max id>}``
  is written (atomically: temp file, fsync, rename).

With a store that keeps a change log (PostgreSQL shared by several service
processes: :meth:`~sdi.email.store.MailStore.changes_since`), the record also
holds ``seq``, the last change of the log the index has applied
(:attr:`LsmSearchIndex.log_seq`, advanced by the service's follower). After
a clean close the changes since ``seq`` (made through other processes while
this one was down, to old mail as well as new) are replayed from the log;
when the log was trimmed past ``seq`` (the process was down longer than the
log's retention), or the record has no ``seq``, the full check runs
instead. Either way :attr:`LsmSearchIndex.log_seq` is then the log position
the index is current to, where following the log resumes.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     index = LsmSearchIndex(path)
...     index.add("a@x", 1, {"subject": "Lunch on Friday", "from": "b@y"}, 100, "inbox", False)
...     index.add("a@x", 2, {"subject": "Friday report"}, 200, "inbox", True)
...     found = index.search("a@x", "friday"), index.search("a@x", "fri*", read=False)
...     index.close()
>>> found
([2, 1], [1])
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from sdi._rust.lsm import FLAG_READ, LsmIndex, check_query
from sdi.email.query import FIELDS
from sdi.email.search import change_ops
from sdi.email.store import Change, ChangeLogTrimmedError
from sdi.errors import Closed, InvalidArgument
from sdi.runtime.files import fsync_directory

__all__ = ["LsmSearchIndex"]

logger = logging.getLogger(__name__)

SEARCH_LIMIT_MAX = 500
#: Ops per core write while recovering.
RECOVERY_BATCH = 1000
_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
STATE_FILE = "state.json"
NAMES_FILE = "names.jsonl"
CORE_DIR = "lsm"


class RecoverableStore(Protocol):
    """What :meth:`LsmSearchIndex.recover` reads from the mail store."""

    def users(self) -> list[str]: ...

    def max_message_id(self) -> int: ...

    def message_states(
        self, *, after: int = 0, user: str | None = None
    ) -> list[tuple[int, str, str, bool, int]]: ...

    def search_texts(self, user: str, ids: list[int]) -> dict[int, dict[str, str]]: ...


class LoggedStore(RecoverableStore, Protocol):
    """A store with a change log (``change_log`` true): recovery replays it."""

    change_log: bool

    def last_change_seq(self) -> int: ...

    def changes_since(self, seq: int, limit: int = ...) -> list[Change]: ...


class _Names:
    """Names (user addresses, folder names) to ``u32`` ids, kept in an append-only file."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, dict[str, int]] = {"user": {}, "folder": {}}
        data = path.read_bytes() if path.exists() else b""
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: it was never used (fsync comes first)
            with open(path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        for line in data[:end].splitlines():
            kind, name, ident = json.loads(line)
            self._ids[kind][name] = int(ident)
        # A raw descriptor: a handle left open by a crash (or a test of one) warns of nothing.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if end == 0:
            fsync_directory(path.parent)

    def get(self, kind: str, name: str) -> int | None:
        return self._ids[kind].get(name)

    def id(self, kind: str, name: str) -> int:
        """The id of ``name``, given (and made durable) on first use."""
        known = self._ids[kind].get(name)
        if known is not None:
            return known
        with self._lock:
            known = self._ids[kind].get(name)
            if known is not None:
                return known
            ident = len(self._ids[kind]) + 1
            if ident > 0xFFFF_FFFF:
                raise InvalidArgument(f"the index has no {kind} ids left")
            if self._fd is None:
                raise Closed("the search index was closed")
            os.write(self._fd, json.dumps([kind, name, ident]).encode() + b"\n")
            os.fsync(self._fd)
            self._ids[kind][name] = ident
            return ident

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _core_fields(fields: Mapping[str, str]) -> list[tuple[str, str]]:
    """The service's fields as the core's; text of an unknown field goes to the body."""
    return [(name if name in FIELDS else "body", str(text)) for name, text in fields.items()]


class LsmSearchIndex:
    """:class:`~sdi.email.search.SearchIndex` on the compiled LSM index in directory ``path``.

    ``sync`` is ``"always"`` (every write is on disk when it returns) or
    ``"never"`` (the OS writes the log back; a power cut can lose recent
    writes, which :meth:`recover` puts back from the store).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sync: str = "always",
        background_merge: bool = True,
        memtable_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._names = _Names(self.path / NAMES_FILE)
        self._core = LsmIndex(
            self.path / CORE_DIR,
            sync=sync,
            background_merge=background_merge,
            memtable_bytes=memtable_bytes,
        )
        self._attrs_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._failed = False
        self._closed = False
        # What the last session left; from now until a clean close the record says
        # "not clean", so a crash at any point after this is caught at the next start.
        self._previous = self._read_state()
        previous_mark = (self._previous or {}).get("mark")
        self._mark = previous_mark if isinstance(previous_mark, int) else 0
        previous_seq = (self._previous or {}).get("seq")
        #: The last change-log ``seq`` applied (see the module docs); None without a log.
        self.log_seq: int | None = previous_seq if isinstance(previous_seq, int) else None
        self._write_state(False)

    # -- the state file

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads((self.path / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("email: %s is damaged; checking the whole index", STATE_FILE)
            return None
        if not isinstance(state, dict):
            return None
        return state

    def _write_state(self, clean: bool) -> None:
        with self._state_lock:
            temp = self.path / (STATE_FILE + ".tmp")
            with open(temp, "w") as handle:
                state: dict[str, Any] = {"clean": clean, "mark": self._mark}
                if self.log_seq is not None:
                    state["seq"] = self.log_seq
                json.dump(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path / STATE_FILE)
            fsync_directory(self.path)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write; a failure marks the session unclean (a full check at next start)."""
        try:
            yield
        except BaseException:
            if not self._failed:
                self._failed = True
                if self._closed:  # the state file already says clean: take it back
                    self._write_state(False)
            raise

    # -- SearchIndex

    def add(
        self,
        user: str,
        doc_id: int,
        fields: Mapping[str, str],
        date: int,
        folder: str,
        read: bool,
    ) -> None:
        with self._writing():
            self._core.add(
                self._names.id("user", user), int(doc_id), _core_fields(fields), date=int(date),
                folder=self._names.id("folder", folder), flags=FLAG_READ if read else 0,
                exist_ok=True,
            )  # fmt: skip

    def add_many(
        self, messages: Iterable[tuple[str, int, Mapping[str, str], int, str, bool]]
    ) -> None:
        """Several :meth:`add` calls as one core write (one log write, one sync):
        ``(user, doc_id, fields, date, folder, read)`` each."""
        with self._writing():
            ops = [
                ("add", self._names.id("user", user), int(doc_id), _core_fields(fields),
                 int(date), self._names.id("folder", folder), FLAG_READ if read else 0)
                for user, doc_id, fields, date, folder, read in messages
            ]  # fmt: skip
            if ops:
                self._core.write_batch(ops, exist_ok=True)

    def delete(self, user: str, doc_id: int) -> None:
        uid = self._names.get("user", user)
        if uid is None or not 0 <= int(doc_id) <= _U64_MAX:
            return
        with self._writing():
            self._core.delete(uid, int(doc_id))

    def apply(self, ops: Iterable[tuple[Any, ...]]) -> None:
        """Several writes as one core write (one log write, one sync), in order:
        ``("add", user, id, fields, date, folder, read)`` (of an id the index knows:
        only its attributes change), ``("set_attrs", user, id, folder, read)`` (None
        leaves one as it is) and ``("delete", user, id)``."""
        with self._writing(), self._attrs_lock:  # read-modify-write of attributes
            batch = self._batch(ops)
            if batch:
                self._core.write_batch([tuple(op) for op in batch], exist_ok=True)

    def _batch(self, ops: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
        batch: list[list[Any]] = []
        last: dict[tuple[int, int], int] = {}  # (user, doc) -> its latest op in the batch
        for op in ops:
            kind, user, doc_id = op[0], op[1], int(op[2])
            if not 0 <= doc_id <= _U64_MAX:
                continue
            if kind == "add":
                _, _, _, fields, date, folder, read = op
                uid = self._names.id("user", user)
                last[uid, doc_id] = len(batch)
                batch.append(
                    ["add", uid, doc_id, _core_fields(fields), int(date),
                     self._names.id("folder", folder), FLAG_READ if read else 0]
                )  # fmt: skip
                continue
            found = self._names.get("user", user)
            if found is None:
                continue
            key = (found, doc_id)
            if kind == "delete":
                last[key] = len(batch)
                batch.append(["delete", found, doc_id])
                continue
            folder, read = op[3], op[4]
            fid = None if folder is None else self._names.id("folder", folder)
            at = last.get(key)
            if at is not None:  # fold into this batch's add or set_attrs of the mail
                earlier = batch[at]
                if earlier[0] == "delete":
                    continue
                target = earlier
            else:
                current = self._core.attrs(found, doc_id)
                if current is None:
                    continue
                target = ["set_attrs", found, doc_id, *current]
                last[key] = len(batch)
                batch.append(target)
            flags_at = 6 if target[0] == "add" else 5
            if fid is not None:
                target[flags_at - 1] = fid
            if read is not None:
                flags = target[flags_at]
                target[flags_at] = flags | FLAG_READ if read else flags & ~FLAG_READ
        return batch

    def set_attrs(
        self, user: str, doc_id: int, *, folder: str | None = None, read: bool | None = None
    ) -> None:
        uid = self._names.get("user", user)
        if uid is None or not 0 <= int(doc_id) <= _U64_MAX:
            return
        with self._writing(), self._attrs_lock:  # read-modify-write of one mail's attributes
            fid = None if folder is None else self._names.id("folder", folder)
            current = self._core.attrs(uid, int(doc_id))
            if current is None:
                return
            date, old_folder, flags = current
            if read is not None:
                flags = flags | FLAG_READ if read else flags & ~FLAG_READ
            self._core.set_attrs(
                uid, int(doc_id), date=date, folder=old_folder if fid is None else fid,
                flags=flags,
            )  # fmt: skip

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
        if not query.strip():
            raise InvalidArgument("the query has no words to search for")
        limit = max(0, min(int(limit), SEARCH_LIMIT_MAX))
        uid = self._names.get("user", user)
        fid = None if folder is None else self._names.get("folder", folder)
        if date_from is not None and date_from <= _I64_MIN:
            date_from = None
        end = None if date_to is None or date_to >= _I64_MAX else int(date_to) + 1
        if before is not None and before > _U64_MAX:
            before = None
        nothing = (
            uid is None
            or limit == 0
            or (folder is not None and fid is None)
            or (before is not None and before <= 0)
            or (date_from is not None and date_from > _I64_MAX)
            or (end is not None and end <= _I64_MIN)
        )
        if nothing:
            check_query(query)  # a bad query is an error whatever the filters
            return []
        assert uid is not None
        return self._core.search(
            uid, query, folder=fid, date_from=date_from, date_to=end, read=read, limit=limit,
            before=before,
        )  # fmt: skip

    # -- upkeep

    def stats(self) -> dict[str, Any]:
        return self._core.stats()

    def flush(self) -> None:
        self._core.flush()

    def compact(self) -> None:
        self._core.compact()

    def close(self) -> None:
        """Flushes and syncs the index; records a clean close unless a write failed."""
        if self._closed:
            return
        self._core.close()
        self._closed = True
        self._names.close()
        if not self._failed:
            self._write_state(True)

    # -- recovery

    def recover(self, store: RecoverableStore) -> dict[str, int]:
        """Makes the index agree with the mail store (see the module docs); what it did."""
        state = self._previous
        logged = bool(getattr(store, "change_log", False))
        # Read before the store is: a change committed after this is in the log past it.
        log_start = cast("LoggedStore", store).last_change_seq() if logged else None
        mark = store.max_message_id()
        done = {"added": 0, "updated": 0, "deleted": 0, "checked": 0}
        if logged:
            done["replayed"] = 0
        clean = (
            state is not None and state.get("clean") is True and isinstance(state.get("mark"), int)
        )
        if clean and logged:
            assert state is not None
            seq = state.get("seq")
            clean = isinstance(seq, int) and self._replay(store, seq, done)
        if clean:
            assert state is not None
            rows = store.message_states(after=int(state["mark"]))
            by_user: dict[str, list[tuple[int, str, str, bool, int]]] = {}
            for row in rows:
                by_user.setdefault(row[1], []).append(row)
            for user, user_rows in by_user.items():
                self._check_user(store, user, user_rows, full=False, done=done)
        else:
            self.log_seq = log_start
            for user in store.users():
                self._check_user(store, user, store.message_states(user=user), full=True, done=done)
        self._core.sync()
        self._mark = mark
        self._failed = False
        self._write_state(False)
        if done["added"] or done["updated"] or done["deleted"] or done.get("replayed"):
            logger.info(
                "email: search index recovered: %d added, %d updated, %d deleted"
                " (%d checked), %d logged change(s) replayed",
                done["added"], done["updated"], done["deleted"], done["checked"],
                done.get("replayed", 0),
            )  # fmt: skip
        return done

    def _replay(self, store: RecoverableStore, seq: int, done: dict[str, int]) -> bool:
        """Applies the store's logged changes after ``seq``; False if the log no longer
        has them all (trimmed), which calls for the full check."""
        changes_since = cast("LoggedStore", store).changes_since
        while True:
            try:
                changes = changes_since(seq, RECOVERY_BATCH)
            except ChangeLogTrimmedError:
                logger.info("email: the change log was trimmed past %d; checking the index", seq)
                return False
            if not changes:
                self.log_seq = seq
                return True
            self.apply(change_ops(changes, store))
            done["replayed"] += len(changes)
            seq = changes[-1].seq

    def resync(self, store: RecoverableStore) -> dict[str, int]:
        """The full check of :meth:`recover` (for a follower that fell behind the change
        log's retention while running); what it did. :attr:`log_seq` is then current."""
        self._previous = None
        return self.recover(store)

    def _check_user(
        self,
        store: RecoverableStore,
        user: str,
        rows: list[tuple[int, str, str, bool, int]],
        *,
        full: bool,
        done: dict[str, int],
    ) -> None:
        uid = self._names.id("user", user)
        # The full check compares every stored message with the index's doc table; the
        # incremental one only asks about the few new ids.
        known = dict(self._core.docs_of(uid)) if full else {}
        ops: list[tuple[Any, ...]] = []
        missing: list[tuple[int, str, bool, int]] = []
        stored_ids = set()
        for doc_id, _, folder, read, date in rows:
            done["checked"] += 1
            stored_ids.add(doc_id)
            fid = self._names.id("folder", folder)
            flags = FLAG_READ if read else 0
            if (doc_id not in known) if full else not self._core.contains(uid, doc_id):
                missing.append((doc_id, folder, read, date))
                continue
            attrs = known.get(doc_id)
            if full and attrs is not None and (attrs[1], attrs[2] & FLAG_READ) != (fid, flags):
                ops.append(
                    ("set_attrs", uid, doc_id, attrs[0], fid, (attrs[2] & ~FLAG_READ) | flags)
                )
                done["updated"] += 1
        if full:
            for doc_id, attrs in known.items():
                if attrs is not None and doc_id not in stored_ids:
                    ops.append(("delete", uid, doc_id))
                    done["deleted"] += 1
        self._apply(ops)
        for start in range(0, len(missing), RECOVERY_BATCH):
            chunk = missing[start : start + RECOVERY_BATCH]
            texts = store.search_texts(user, [m[0] for m in chunk])
            adds: list[tuple[Any, ...]] = []
            for doc_id, folder, read, date in chunk:
                if doc_id not in texts:  # deleted meanwhile
                    continue
                adds.append(
                    ("add", uid, doc_id, _core_fields(texts[doc_id]), int(date),
                     self._names.id("folder", folder), FLAG_READ if read else 0)
                )  # fmt: skip
            self._core.write_batch(adds, exist_ok=True)
            done["added"] += len(adds)

    def _apply(self, ops: Iterable[tuple[Any, ...]]) -> None:
        batch: list[tuple[Any, ...]] = []
        for op in ops:
            batch.append(op)
            if len(batch) >= RECOVERY_BATCH:
                self._core.write_batch(batch)
                batch = []
        if batch:
            self._core.write_batch(batch)
