"""The mail metadata store: users, folders, messages, threads and the two queues.

Everything is keyed by user first (the book's partition key): a user's
folders, messages and threads sit together, and no query crosses users
(except the service-wide scans: the queues, :meth:`MailStore.indexable`,
:meth:`MailStore.blob_keys_in_use`). Folder totals and unread counts are
kept denormalised in ``folders`` and updated in the same transaction as the
messages they count.

**Backends.** ``MailStore(path)`` (or a ``sqlite:`` URL) is one SQLite file,
the default: WAL mode with ``synchronous=FULL``, so a committed transaction
survives a power cut, which is what the SMTP server's ``250`` promises for
a queued message; one process per file. ``MailStore("postgresql://user@host:port/db")``
is PostgreSQL (the ``sdi[postgres]`` extra), the scale-out option: several
service processes share one database. Both run the same SQL through
:mod:`sdi.runtime.sql` and behave the same, with one exception: PostgreSQL
text cannot hold the NUL character, so there a NUL in a message's headers
is stored as U+FFFD. Between processes sharing PostgreSQL:

* counters: every change to a message first locks its row (``FOR UPDATE``),
  so two processes marking the same message read (or deleting it) change
  ``unread`` once; counter updates are increments (``total = total + 1``)
  applied at the end of the transaction in (user, folder) order, so writers
  do not deadlock on folder rows (one that loses a deadlock anyway is run
  again);
* the incoming queue: :meth:`MailStore.deliver` deletes the entry first,
  so a second process delivering the same entry waits for the first one's
  row lock and then finds the entry gone (nothing stored twice);
  :meth:`MailStore.claim_incoming` hands entries out with ``FOR UPDATE SKIP
  LOCKED`` and a lease, so processes do not even parse the same entry twice;
* the outgoing queue: :meth:`MailStore.due_outgoing` with a ``lease`` claims
  the rows it returns the same way;
* the change log: each process has its own search index, so every change to
  a message (stored, marked read or unread, moved, deleted) also appends a
  row to ``message_changes`` in the same transaction, and each process
  follows that log (:meth:`MailStore.changes_since`) to apply the changes
  made through the others. The row is appended last, under a
  transaction-scoped advisory lock held until the commit, so ``seq``
  follows commit order: a follower that saw ``seq`` 7 has seen every change
  committed before it (a rolled-back writer leaves a gap, never a late row).
  Rows older than a retention are dropped (:meth:`MailStore.trim_changes`);
  a follower still behind them gets :class:`ChangeLogTrimmedError` and checks its
  whole index against the store instead. On SQLite one process owns the
  file and indexes every change it makes, so the log is off there by
  default (``change_log=True`` turns it on, with the same behaviour).

**Sharding by user** (not built): since every per-user query names the
user, a router would map ``hash(user) -> shard`` (one PostgreSQL database
per shard, each with this schema) and send each call to its user's shard;
:meth:`MailStore.deliver` and :meth:`MailStore.submit` store one message per
recipient, so a router would split their message lists by shard (the queue
entry deleted on the shard that holds the queue: a queue shard of its own,
or the sender's), and the service-wide scans would visit every shard.
Message ids come from each shard's own sequence, so a global id would be
``(shard, id)``.

The incoming queue holds raw messages accepted over SMTP; a processing
worker turns an entry into one message per local recipient and deletes the
entry in one transaction (:meth:`MailStore.deliver`), so a crash at any
point leaves either the entry (processed again after a restart) or the
messages, never both. The outgoing queue holds one row per remote
recipient with its delivery state (:mod:`sdi.email.outgoing`).

>>> store = MailStore(":memory:")
>>> store.create_user("ann@sdi.local", "Ann")
>>> raw = b"Subject: hi\\r\\n\\r\\nyo\\r\\n"
>>> entry = store.enqueue_incoming("bob@x.org", ["ann@sdi.local"], raw)
>>> new = NewMessage("ann@sdi.local", "inbox", 0, "<1@x>", [], "bob@x.org", "ann", "hi", "yo",
...                  23, "0" * 64, 0.0, [], {"subject": "hi"})
>>> [m.id for m in store.deliver(entry, [new])], store.deliver(entry, [new])
([1], [])
>>> [(f["id"], f["total"], f["unread"]) for f in store.folders("ann@sdi.local")][:2]
[('inbox', 1, 1), ('sent', 0, 0)]
>>> store.update_message("ann@sdi.local", 1, read=True)["read"]
True
>>> store.folders("ann@sdi.local")[0]["unread"]
0
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdi.errors import InvalidArgument, SdiError
from sdi.runtime import sql
from sdi.runtime.sql import Connection, ConstraintError

__all__ = [
    "STANDARD_FOLDERS",
    "Change",
    "ChangeLogTrimmedError",
    "IncomingEntry",
    "MailStore",
    "NewMessage",
    "OutgoingEntry",
    "StoredMessage",
    "check_address",
]

#: Every user's folders (ids), created with the user.
STANDARD_FOLDERS = ("inbox", "sent", "drafts", "spam", "trash")
ADDRESS_CHARS_MAX = 254
#: How long :meth:`MailStore.claim_incoming` keeps an entry from other claimers (seconds).
INCOMING_LEASE_S = 60.0
#: Changes one :meth:`MailStore.changes_since` call returns at most.
CHANGES_LIMIT = 1000
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\\\"]+@[^\s@<>()\[\],;:\\\"]+\.[^\s@<>()\[\],;:\\\"]+")
_FOLDER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

#: The schema for either dialect (:mod:`sdi.runtime.sql`: ``{serial}`` and the other
#: types). ``user`` is quoted everywhere: it is a reserved word in PostgreSQL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    address TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    "user" TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    total {int64} NOT NULL DEFAULT 0,
    unread {int64} NOT NULL DEFAULT 0,
    PRIMARY KEY ("user", id)
);
CREATE TABLE IF NOT EXISTS messages (
    id {serial},
    "user" TEXT NOT NULL,
    folder TEXT NOT NULL,
    read INTEGER NOT NULL,
    date {int64} NOT NULL,
    received {real} NOT NULL,
    message_id TEXT NOT NULL,
    thread_id {int64} NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    snippet TEXT NOT NULL,
    size {int64} NOT NULL,
    blob TEXT NOT NULL,
    spam_score {real} NOT NULL,
    attachments TEXT NOT NULL,
    search TEXT NOT NULL,
    source TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_by_folder ON messages ("user", folder, id);
CREATE INDEX IF NOT EXISTS messages_by_thread ON messages ("user", thread_id, id);
CREATE TABLE IF NOT EXISTS thread_refs (
    "user" TEXT NOT NULL,
    message_id TEXT NOT NULL,
    thread_id {int64} NOT NULL,
    PRIMARY KEY ("user", message_id)
);
CREATE TABLE IF NOT EXISTS incoming (
    id {serial},
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    data {blob} NOT NULL,
    received {real} NOT NULL,
    claimed_until {real} NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outgoing (
    id {serial},
    "user" TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    blob TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt {real} NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS outgoing_due ON outgoing (state, next_attempt);
CREATE TABLE IF NOT EXISTS message_changes (
    seq {serial},
    op TEXT NOT NULL,
    "user" TEXT NOT NULL,
    message_id {int64} NOT NULL,
    folder TEXT NOT NULL,
    read INTEGER NOT NULL,
    date {int64} NOT NULL,
    at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS message_changes_by_time ON message_changes (at);
CREATE TABLE IF NOT EXISTS message_changes_trimmed (
    id INTEGER PRIMARY KEY,
    upto {int64} NOT NULL
);
"""
#: Columns later versions added, with their definitions (for SQLite files made before).
_ADDED_COLUMNS = {"incoming": {"claimed_until": "REAL NOT NULL DEFAULT 0"}}


def check_address(address: str) -> str:
    """The address, lower-cased; :class:`~sdi.errors.InvalidArgument` if it is not one."""
    address = address.strip().lower()
    if len(address) > ADDRESS_CHARS_MAX or not _ADDRESS.fullmatch(address):
        raise InvalidArgument(f"not an email address: {address[:80]!r}")
    return address


@dataclass(frozen=True)
class NewMessage:
    """A message to store for one user (what the pipeline produces)."""

    user: str
    folder: str
    date: int
    message_id: str
    references: list[str]
    sender: str
    recipients: str
    subject: str
    snippet: str
    size: int
    blob: str
    spam_score: float
    attachments: list[dict[str, Any]]
    search: dict[str, str]
    read: bool = False


@dataclass(frozen=True)
class StoredMessage:
    id: int
    user: str
    folder: str
    read: bool
    date: int
    sender: str
    subject: str
    search: dict[str, str]


@dataclass(frozen=True)
class Change:
    """One row of the change log: message ``message_id`` of ``user`` was ``op``
    (``"stored"``, ``"updated"``: marked read or unread or moved, or ``"deleted"``);
    ``folder``, ``read`` and ``date`` are the message's after the change (empty,
    false and 0 for a delete)."""

    seq: int
    op: str
    user: str
    message_id: int
    folder: str
    read: bool
    date: int


class ChangeLogTrimmedError(SdiError):
    """:meth:`MailStore.changes_since` was asked for changes the log no longer has."""

    def __init__(self, seq: int, trimmed: int) -> None:
        super().__init__(f"the change log was trimmed up to {trimmed}, past {seq}")
        self.seq, self.trimmed = seq, trimmed


@dataclass(frozen=True)
class IncomingEntry:
    id: int
    mail_from: str
    rcpts: list[str]
    data: bytes
    received: float


@dataclass(frozen=True)
class OutgoingEntry:
    id: int
    user: str
    mail_from: str
    rcpt: str
    blob: str
    state: str
    attempts: int
    next_attempt: float
    last_error: str


_MESSAGE_KEYS = (
    "id", "user", "folder", "read", "date", "received", "message_id", "thread_id", "sender",
    "recipients", "subject", "snippet", "size", "blob", "spam_score", "attachments",
)  # fmt: skip
_MESSAGE_COLUMNS = ", ".join('"user"' if key == "user" else key for key in _MESSAGE_KEYS)
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS.removeprefix('id, ')}, search, source)"
    f" VALUES ({', '.join('?' * (len(_MESSAGE_KEYS) + 1))})"
)
_INCOMING_COLUMNS = "id, mail_from, rcpts, data, received"
_OUTGOING_COLUMNS = 'id, "user", mail_from, rcpt, blob, state, attempts, next_attempt, last_error'
_INSERT_INCOMING = "INSERT INTO incoming (mail_from, rcpts, data, received) VALUES (?, ?, ?, ?)"
_FOLDER_EXISTS = 'SELECT 1 FROM folders WHERE "user" = ? AND id = ?'
_COUNT = 'UPDATE folders SET total = total + ?, unread = unread + ? WHERE "user" = ? AND id = ?'
_CHANGE_COLUMNS = 'op, "user", message_id, folder, read, date'
#: The advisory lock a PostgreSQL writer takes just before appending to the change log.
_CHANGES_LOCK = sql.lock_id("sdi-email-changes")


def _rows(query: str, args: tuple[Any, ...], db: Connection) -> list[tuple[Any, ...]]:
    return db.rows(query, args)


def _message_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_MESSAGE_KEYS, row, strict=True))
    out["read"] = bool(out["read"])
    out["attachments"] = json.loads(out["attachments"])
    del out["user"]
    return out


def _incoming(row: tuple[Any, ...]) -> IncomingEntry:
    return IncomingEntry(int(row[0]), row[1], json.loads(row[2]), bytes(row[3]), float(row[4]))


def _outgoing(row: tuple[Any, ...]) -> OutgoingEntry:
    return OutgoingEntry(
        int(row[0]), row[1], row[2], row[3], row[4], row[5], int(row[6]), float(row[7]), row[8]
    )


def _claim(
    query: str, args: tuple[Any, ...], table: str, column: str, until: float, db: Connection
) -> list[tuple[Any, ...]]:
    """The rows ``query`` selects (their ``id`` first) that no other transaction holds
    (``SKIP LOCKED`` on PostgreSQL), each marked taken until ``until`` in ``column``."""
    rows = db.rows(query + db.dialect.skip_locked, args)
    if rows:
        marks = ", ".join("?" * len(rows))
        db.run(
            f"UPDATE {table} SET {column} = ? WHERE id IN ({marks})",
            (until, *(row[0] for row in rows)),
        )
    return rows


class _Counts:
    """A transaction's changes to folder counters, applied together in (user, folder) order
    (so two writers lock folder rows in the same order and cannot deadlock on them)."""

    def __init__(self) -> None:
        self._deltas: dict[tuple[str, str], list[int]] = {}

    def add(self, user: str, folder: str, total: int, read: bool) -> None:
        delta = self._deltas.setdefault((user, folder), [0, 0])
        delta[0] += total
        delta[1] += 0 if read else total

    def apply(self, db: Connection) -> None:
        for (user, folder), (total, unread) in sorted(self._deltas.items()):
            if total or unread:
                db.run(_COUNT, (total, unread, user, folder))


class MailStore:
    """Users, folders, messages and queues in SQLite or PostgreSQL (thread-safe, blocking).

    ``path`` is a SQLite file (or ``":memory:"``, or a ``sqlite:`` URL) unless
    it is a ``postgresql://`` URL; the module docs say how the two compare.
    ``pool_size`` and ``connect_timeout`` (seconds) are PostgreSQL's. On
    PostgreSQL a call that cannot reach the server raises
    :class:`~sdi.runtime.sql.DatabaseUnavailableError`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        change_log: bool | None = None,
    ) -> None:
        self.path = path
        #: SQLite only: incoming entries claimed by this process, with their lease ends.
        self._claims: dict[int, float] = {}
        self._claims_lock = threading.Lock()
        self._db = sql.connect(
            path,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            application_name="sdi-email",
            nul="\ufffd",
        )
        #: Whether message changes are logged (:meth:`changes_since`): by default on
        #: PostgreSQL only (processes sharing it follow the log; see the module docs).
        self.change_log = self._db.dialect is not sql.SQLITE if change_log is None else change_log
        try:
            self._db.setup(_SCHEMA, lock="sdi-email-schema")
            if self._db.dialect is sql.SQLITE:
                self._db.write(self._migrate)
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _migrate(db: Connection) -> None:
        """Adds the columns SQLite files written by older versions lack."""
        for table, added in _ADDED_COLUMNS.items():
            columns = {row[1] for row in db.rows(f"PRAGMA table_info({table})")}
            for name, definition in added.items():
                if name not in columns:
                    db.run(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect.name

    def close(self) -> None:
        self._db.close()

    # -- users and folders

    def create_user(self, address: str, display_name: str = "") -> None:
        """Adds a user with the standard folders (:class:`InvalidArgument` if taken)."""
        address = check_address(address)

        def create(db: Connection) -> None:
            try:
                db.run(
                    "INSERT INTO users (address, display_name, created) VALUES (?, ?, ?)",
                    (address, display_name.strip()[:200], time.time()),
                )
            except ConstraintError as error:
                raise InvalidArgument(f"there is already a user {address}") from error
            for folder in STANDARD_FOLDERS:
                db.run(
                    'INSERT INTO folders ("user", id, name) VALUES (?, ?, ?)',
                    (address, folder, folder.capitalize()),
                )

        self._db.write(create)

    def user(self, address: str) -> dict[str, Any] | None:
        row = self._db.read(
            lambda db: db.row(
                "SELECT address, display_name, created FROM users WHERE address = ?",
                (address.strip().lower(),),
            )
        )
        if row is None:
            return None
        return {"address": row[0], "display_name": row[1], "created": row[2]}

    def users(self) -> list[str]:
        rows = self._db.read(lambda db: db.rows("SELECT address FROM users ORDER BY address"))
        return [str(row[0]) for row in rows]

    def folders(self, user: str) -> list[dict[str, Any]]:
        order = {name: i for i, name in enumerate(STANDARD_FOLDERS)}
        rows = self._db.read(
            lambda db: db.rows(
                'SELECT id, name, total, unread FROM folders WHERE "user" = ?', (user,)
            )
        )
        folders = [
            {"id": r[0], "name": r[1], "total": int(r[2]), "unread": int(r[3])} for r in rows
        ]
        return sorted(folders, key=lambda f: (order.get(f["id"], 99), f["id"]))

    def has_folder(self, user: str, folder: str) -> bool:
        return self._db.read(lambda db: db.row(_FOLDER_EXISTS, (user, folder))) is not None

    def create_folder(self, user: str, name: str) -> dict[str, Any]:
        folder = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
        if not _FOLDER_ID.fullmatch(folder):
            raise InvalidArgument(f"a folder name needs letters or digits: {name[:60]!r}")

        def create(db: Connection) -> None:
            try:
                db.run(
                    'INSERT INTO folders ("user", id, name) VALUES (?, ?, ?)',
                    (user, folder, name.strip()[:100]),
                )
            except ConstraintError as error:
                raise InvalidArgument(f"there is already a folder {folder!r}") from error

        self._db.write(create)
        return {"id": folder, "name": name.strip()[:100], "total": 0, "unread": 0}

    # -- the incoming queue

    def enqueue_incoming(self, mail_from: str, rcpts: list[str], data: bytes) -> int:
        """Queues a raw message durably (committed and synced when this returns); its id."""
        args = (mail_from, json.dumps(rcpts), data, time.time())
        return self._db.write(lambda db: db.insert_id(_INSERT_INCOMING, args))

    def incoming(self, limit: int = 64, after: int = 0) -> list[IncomingEntry]:
        rows = self._db.read(
            lambda db: db.rows(
                f"SELECT {_INCOMING_COLUMNS} FROM incoming WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
        )
        return [_incoming(r) for r in rows]

    def claim_incoming(
        self, limit: int = 64, lease_s: float = INCOMING_LEASE_S
    ) -> list[IncomingEntry]:
        """Up to ``limit`` queue entries no one else holds, oldest first, each held for
        ``lease_s`` seconds (or until :meth:`deliver` or :meth:`release_incoming`).

        Several processes claiming at once get different entries (``FOR UPDATE
        SKIP LOCKED`` on PostgreSQL; a SQLite file belongs to one process, and
        this store keeps its claims in memory). An entry whose
        claimer died is claimed again once its lease runs out, and one delivered
        late by a claimer whose lease ran out is still stored only once
        (:meth:`deliver`).
        """
        now = time.time()
        if self._db.dialect is sql.SQLITE:
            # One process owns a SQLite file, so its claims are kept in memory:
            # a claim costs a read, not a write and an fsync per batch.
            with self._claims_lock:
                held = {i for i, until in self._claims.items() if until > now}
                rows = self._db.read(
                    lambda db: db.rows(
                        f"SELECT {_INCOMING_COLUMNS} FROM incoming ORDER BY id LIMIT ?",
                        (limit + len(held),),
                    )
                )
                rows = [row for row in rows if int(row[0]) not in held][:limit]
                for row in rows:
                    self._claims[int(row[0])] = now + lease_s
            return [_incoming(r) for r in rows]

        query = (
            f"SELECT {_INCOMING_COLUMNS} FROM incoming WHERE claimed_until <= ? ORDER BY id LIMIT ?"
        )
        claim = functools.partial(
            _claim, query, (now, limit), "incoming", "claimed_until", now + lease_s
        )
        return [_incoming(r) for r in self._db.write(claim)]

    def release_incoming(self, entry_id: int) -> None:
        """Gives up a claim (:meth:`claim_incoming`): the entry can be claimed again now."""
        with self._claims_lock:
            self._claims.pop(entry_id, None)
        if self._db.dialect is sql.SQLITE:
            return
        self._db.write(
            lambda db: db.run("UPDATE incoming SET claimed_until = 0 WHERE id = ?", (entry_id,))
        )

    def release_all_incoming(self) -> int:
        """Ends every claim (for a store no other process uses, after a restart); how many."""
        with self._claims_lock:
            held = len(self._claims)
            self._claims.clear()
        if self._db.dialect is sql.SQLITE:
            # Claims are in memory; files written before that may still hold some.
            return held + self._db.write(
                lambda db: db.run("UPDATE incoming SET claimed_until = 0 WHERE claimed_until > 0")
            )
        return self._db.write(
            lambda db: db.run("UPDATE incoming SET claimed_until = 0 WHERE claimed_until > 0")
        )

    def incoming_count(self) -> int:
        return int(self._db.read(lambda db: db.value("SELECT count(*) FROM incoming")))

    def deliver(self, entry_id: int | None, messages: list[NewMessage]) -> list[StoredMessage]:
        """Stores ``messages`` and deletes queue entry ``entry_id``, in one transaction.

        Processing an entry twice stores nothing the second time (the entry is
        gone, and each message's source key ``entry:index`` is unique). The
        entry is deleted first: a concurrent delivery of the same entry (another
        process, on PostgreSQL) waits for that row lock, then finds it gone.
        """

        def deliver(db: Connection) -> list[StoredMessage]:
            gone = entry_id is not None and not db.run(
                "DELETE FROM incoming WHERE id = ?", (entry_id,)
            )
            if gone:
                return []
            counts = _Counts()
            stored = [
                self._insert(db, message, None if entry_id is None else f"{entry_id}:{i}", counts)
                for i, message in enumerate(messages)
            ]
            counts.apply(db)
            self._log(db, [("stored", m.user, m.id, m.folder, m.read, m.date) for m in stored])
            return stored

        stored = self._db.write(deliver)
        if entry_id is not None:
            with self._claims_lock:
                self._claims.pop(entry_id, None)
        return stored

    def _insert(
        self, db: Connection, m: NewMessage, source: str | None, counts: _Counts
    ) -> StoredMessage:
        folder = m.folder if db.row(_FOLDER_EXISTS, (m.user, m.folder)) else "inbox"
        thread_id: int | None = None
        for reference in [m.message_id, *m.references]:
            if not reference:
                continue
            found = db.value(
                'SELECT thread_id FROM thread_refs WHERE "user" = ? AND message_id = ?',
                (m.user, reference),
            )
            if found is not None:
                thread_id = int(found)
                break
        message_id = db.insert_id(
            _INSERT_MESSAGE,
            (
                m.user, folder, int(m.read), m.date, time.time(), m.message_id, 0, m.sender,
                m.recipients, m.subject, m.snippet, m.size, m.blob, m.spam_score,
                json.dumps(m.attachments), json.dumps(m.search), source,
            ),
        )  # fmt: skip
        if thread_id is None:
            thread_id = message_id
        db.run("UPDATE messages SET thread_id = ? WHERE id = ?", (thread_id, message_id))
        for reference in [m.message_id, *m.references]:
            if reference:
                db.run(
                    'INSERT INTO thread_refs ("user", message_id, thread_id) VALUES (?, ?, ?)'
                    " ON CONFLICT DO NOTHING",
                    (m.user, reference, thread_id),
                )
        counts.add(m.user, folder, 1, m.read)
        return StoredMessage(
            message_id, m.user, folder, m.read, m.date, m.sender, m.subject, m.search
        )

    def drop_incoming(self, entry_id: int) -> None:
        self._db.write(lambda db: db.run("DELETE FROM incoming WHERE id = ?", (entry_id,)))
        with self._claims_lock:
            self._claims.pop(entry_id, None)

    # -- messages

    def list_messages(
        self, user: str, folder: str, limit: int = 50, before: int | None = None
    ) -> list[dict[str, Any]]:
        """A page of a folder, newest first (ids below ``before``)."""
        rows = self._db.read(
            lambda db: db.rows(
                f'SELECT {_MESSAGE_COLUMNS} FROM messages WHERE "user" = ? AND folder = ?'
                " AND id < ? ORDER BY id DESC LIMIT ?",
                (user, folder, before if before is not None else 2**62, limit),
            )
        )
        return [_message_dict(row) for row in rows]

    def message(self, user: str, message_id: int) -> dict[str, Any] | None:
        row = self._db.read(
            lambda db: db.row(
                f'SELECT {_MESSAGE_COLUMNS} FROM messages WHERE "user" = ? AND id = ?',
                (user, message_id),
            )
        )
        return None if row is None else _message_dict(row)

    def messages_of(self, user: str, ids: list[int]) -> list[dict[str, Any]]:
        """The messages with these ids, in the order given (unknown ids left out)."""
        found = {m["id"]: m for m in (self.message(user, i) for i in ids) if m is not None}
        return [found[i] for i in ids if i in found]

    def update_message(
        self, user: str, message_id: int, *, read: bool | None = None, folder: str | None = None
    ) -> dict[str, Any] | None:
        """Marks read/unread or moves; the message after, or None if there is none."""

        def update(db: Connection) -> bool:
            row = db.row(
                f'SELECT folder, read, date FROM messages WHERE "user" = ? AND id = ?'
                f"{db.dialect.for_update}",
                (user, message_id),
            )
            if row is None:
                return False
            old_folder, old_read, date = str(row[0]), bool(row[1]), int(row[2])
            new_folder = old_folder if folder is None else folder
            new_read = old_read if read is None else bool(read)
            if new_folder != old_folder and not db.row(_FOLDER_EXISTS, (user, new_folder)):
                raise InvalidArgument(f"there is no folder {new_folder!r}")
            db.run(
                "UPDATE messages SET folder = ?, read = ? WHERE id = ?",
                (new_folder, int(new_read), message_id),
            )
            counts = _Counts()
            counts.add(user, old_folder, -1, old_read)
            counts.add(user, new_folder, 1, new_read)
            counts.apply(db)
            if (new_folder, new_read) != (old_folder, old_read):
                self._log(db, [("updated", user, message_id, new_folder, new_read, date)])
            return True

        if not self._db.write(update):
            return None
        return self.message(user, message_id)

    def delete_message(self, user: str, message_id: int) -> bool:
        def delete(db: Connection) -> bool:
            row = db.row(
                f'SELECT folder, read FROM messages WHERE "user" = ? AND id = ?'
                f"{db.dialect.for_update}",
                (user, message_id),
            )
            if row is None:
                return False
            db.run("DELETE FROM messages WHERE id = ?", (message_id,))
            counts = _Counts()
            counts.add(user, str(row[0]), -1, bool(row[1]))
            counts.apply(db)
            self._log(db, [("deleted", user, message_id, "", False, 0)])
            return True

        return self._db.write(delete)

    def thread(self, user: str, thread_id: int) -> list[int]:
        rows = self._db.read(
            lambda db: db.rows(
                'SELECT id FROM messages WHERE "user" = ? AND thread_id = ? ORDER BY id',
                (user, thread_id),
            )
        )
        return [int(r[0]) for r in rows]

    def indexable(self, batch: int = 1000) -> Iterator[StoredMessage]:
        """Every stored message with its search text (to build an index from)."""
        last = 0
        while True:
            rows = self._db.read(functools.partial(self._indexable_batch, last, batch))
            if not rows:
                return
            for r in rows:
                yield StoredMessage(
                    int(r[0]), r[1], r[2], bool(r[3]), int(r[4]), r[5], r[6], json.loads(r[7])
                )
            last = int(rows[-1][0])

    @staticmethod
    def _indexable_batch(after: int, batch: int, db: Connection) -> list[tuple[Any, ...]]:
        return db.rows(
            'SELECT id, "user", folder, read, date, sender, subject, search FROM messages'
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, batch),
        )

    def max_message_id(self) -> int:
        """The highest message id given so far (0 for none; ids are never reused)."""

        def top(db: Connection) -> tuple[Any, Any]:
            if db.dialect is sql.SQLITE:
                given = db.value("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
            else:  # the identity column's sequence (NULL until it gave a value)
                given = db.value(
                    "SELECT pg_sequence_last_value(pg_get_serial_sequence('messages', 'id'))"
                )
            return given, db.value("SELECT max(id) FROM messages")

        given, stored = self._db.read(top)
        return max(int(given or 0), int(stored or 0))

    def message_states(
        self, *, after: int = 0, user: str | None = None
    ) -> list[tuple[int, str, str, bool, int]]:
        """``(id, user, folder, read, date)`` of the messages above id ``after``
        (of one user, or all), by id: what a search index is checked against."""
        text = 'SELECT id, "user", folder, read, date FROM messages WHERE id > ?'
        args: tuple[Any, ...] = (after,)
        if user is not None:
            text += ' AND "user" = ?'
            args = (after, user)
        rows = self._db.read(lambda db: db.rows(text + " ORDER BY id", args))
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4])) for r in rows]

    def blob_keys_in_use(self) -> set[str]:
        """Every blob key a stored message or an outgoing queue row refers to
        (what blob garbage collection must keep)."""
        rows = self._db.read(
            lambda db: db.rows("SELECT blob FROM messages UNION SELECT blob FROM outgoing")
        )
        return {str(r[0]) for r in rows}

    def search_texts(self, user: str, ids: list[int]) -> dict[int, dict[str, str]]:
        """The search text of these messages of ``user`` (unknown ids left out)."""
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = (
                'SELECT id, search FROM messages WHERE "user" = ?'
                f" AND id IN ({','.join('?' * len(chunk))})"
            )
            rows = self._db.read(functools.partial(_rows, query, (user, *chunk)))
            out.update((int(r[0]), json.loads(r[1])) for r in rows)
        return out

    # -- the change log

    def _log(self, db: Connection, changes: list[tuple[str, str, int, str, bool, int]]) -> None:
        """Appends ``(op, user, message_id, folder, read, date)`` rows to the change log, as
        the last statements of the writer's transaction (see the module docs)."""
        if not self.change_log or not changes:
            return
        if db.dialect is not sql.SQLITE:  # held until the commit: seqs follow commit order
            db.run("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", (_CHANGES_LOCK,))
        now = time.time()
        for op, user, message_id, folder, read, date in changes:
            db.run(
                f"INSERT INTO message_changes ({_CHANGE_COLUMNS}, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (op, user, message_id, folder, int(read), date, now),
            )

    def last_change_seq(self) -> int:
        """The ``seq`` of the latest committed change (0 for none): an index checked
        against the store after this call has seen every change up to it."""

        def last(db: Connection) -> int:
            top = db.value("SELECT max(seq) FROM message_changes")
            trimmed = db.value("SELECT upto FROM message_changes_trimmed WHERE id = 1")
            return max(int(top or 0), int(trimmed or 0))

        return self._db.read(last)

    def changes_since(self, seq: int, limit: int = CHANGES_LIMIT) -> list[Change]:
        """The changes after ``seq``, oldest first, at most ``limit`` of them;
        :class:`ChangeLogTrimmedError` if some of them were trimmed away."""

        def read(db: Connection) -> tuple[list[tuple[Any, ...]], Any]:
            rows = db.rows(
                f"SELECT seq, {_CHANGE_COLUMNS} FROM message_changes WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            # Read after the rows: a trim in between is seen (and at worst makes the
            # caller check its whole index for nothing), never missed.
            return rows, db.value("SELECT upto FROM message_changes_trimmed WHERE id = 1")

        rows, trimmed = self._db.read(read)
        if trimmed is not None and int(trimmed) > seq:
            raise ChangeLogTrimmedError(seq, int(trimmed))
        return [Change(int(r[0]), r[1], r[2], int(r[3]), r[4], bool(r[5]), int(r[6])) for r in rows]

    def trim_changes(self, before: float) -> int:
        """Drops the changes logged before time ``before`` (Unix seconds); how many.
        A follower behind them gets :class:`ChangeLogTrimmedError` from :meth:`changes_since`."""

        def trim(db: Connection) -> int:
            upto = db.value("SELECT max(seq) FROM message_changes WHERE at < ?", (before,))
            if upto is None:
                return 0
            dropped = db.run("DELETE FROM message_changes WHERE seq <= ?", (upto,))
            db.run(
                "INSERT INTO message_changes_trimmed (id, upto) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET upto = CASE WHEN excluded.upto >"
                " message_changes_trimmed.upto THEN excluded.upto"
                " ELSE message_changes_trimmed.upto END",
                (int(upto),),
            )
            return dropped

        return self._db.write(trim)

    def change_count(self) -> int:
        """How many rows the change log holds."""
        return int(self._db.read(lambda db: db.value("SELECT count(*) FROM message_changes")))

    # -- sending and the outgoing queue

    def submit(
        self,
        sent: NewMessage | None,
        local: tuple[str, list[str], bytes] | None,
        remote: list[tuple[str, str, str, str]],
    ) -> tuple[StoredMessage | None, int | None, list[int]]:
        """Records a send in one transaction: the sender's copy in ``sent``, an
        incoming-queue entry ``(mail_from, rcpts, data)`` for local recipients, and
        outgoing rows ``(user, mail_from, rcpt, blob)`` for remote ones."""
        now = time.time()

        def record(db: Connection) -> tuple[StoredMessage | None, int | None, list[int]]:
            counts = _Counts()
            stored = None if sent is None else self._insert(db, sent, None, counts)
            entry: int | None = None
            if local is not None:
                entry = db.insert_id(
                    _INSERT_INCOMING, (local[0], json.dumps(local[1]), local[2], now)
                )
            ids = [
                db.insert_id(
                    'INSERT INTO outgoing ("user", mail_from, rcpt, blob, state, next_attempt,'
                    " created) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (user, mail_from, rcpt, blob, now, now),
                )
                for user, mail_from, rcpt, blob in remote
            ]
            counts.apply(db)
            if stored is not None:
                logged = (stored.user, stored.id, stored.folder, stored.read, stored.date)
                self._log(db, [("stored", *logged)])
            return stored, entry, ids

        return self._db.write(record)

    def due_outgoing(
        self, now: float, limit: int = 32, *, lease_s: float = 0.0
    ) -> list[OutgoingEntry]:
        """The queued rows due at ``now``, soonest first.

        With ``lease_s`` they are also claimed: their ``next_attempt`` moves
        ``lease_s`` seconds past ``now`` (until :meth:`set_outgoing` records the
        attempt), and processes claiming at once get different rows (``FOR
        UPDATE SKIP LOCKED`` on PostgreSQL), so a row is not sent twice by two
        processes sharing the database; one whose sender died is due again
        when the lease runs out.
        """
        query = (
            f"SELECT {_OUTGOING_COLUMNS} FROM outgoing WHERE state = 'queued'"
            " AND next_attempt <= ? ORDER BY next_attempt LIMIT ?"
        )
        if lease_s <= 0:
            return [_outgoing(r) for r in self._db.read(lambda db: db.rows(query, (now, limit)))]

        claim = functools.partial(
            _claim, query, (now, limit), "outgoing", "next_attempt", now + lease_s
        )
        return [_outgoing(r) for r in self._db.write(claim)]

    def next_outgoing_time(self) -> float | None:
        found = self._db.read(
            lambda db: db.value("SELECT min(next_attempt) FROM outgoing WHERE state = 'queued'")
        )
        return None if found is None else float(found)

    def outgoing(self, entry_id: int) -> OutgoingEntry | None:
        row = self._db.read(
            lambda db: db.row(f"SELECT {_OUTGOING_COLUMNS} FROM outgoing WHERE id = ?", (entry_id,))
        )
        return None if row is None else _outgoing(row)

    def set_outgoing(
        self,
        entry_id: int,
        state: str,
        attempts: int,
        next_attempt: float,
        error: str,
        bounce: tuple[str, list[str], bytes] | None = None,
    ) -> None:
        """Records an attempt's outcome; with ``bounce``, queues the DSN in the same transaction."""

        def record(db: Connection) -> None:
            db.run(
                "UPDATE outgoing SET state = ?, attempts = ?, next_attempt = ?, last_error = ?"
                " WHERE id = ?",
                (state, attempts, next_attempt, error[:1000], entry_id),
            )
            if bounce is not None:
                db.insert_id(
                    _INSERT_INCOMING, (bounce[0], json.dumps(bounce[1]), bounce[2], time.time())
                )

        self._db.write(record)
