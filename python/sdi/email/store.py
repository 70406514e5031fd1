"""The mail metadata store: users, folders, messages, threads and the two queues, in SQLite.

Everything is keyed by user first (the book's partition key): a user's
folders, messages and threads sit together, and no query crosses users.
Folder totals and unread counts are kept denormalised in ``folders`` and
updated in the same transaction as the messages they count. The database
runs in WAL mode with ``synchronous=FULL``: a committed transaction
survives a power cut, which is what the SMTP server's ``250`` promises for
a queued message. (PostgreSQL, sharded by user, is the scale-out option
left for later.)

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

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdi.errors import InvalidArgument

__all__ = [
    "STANDARD_FOLDERS",
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
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\\\"]+@[^\s@<>()\[\],;:\\\"]+\.[^\s@<>()\[\],;:\\\"]+")
_FOLDER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    address TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    user TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, id)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    folder TEXT NOT NULL,
    read INTEGER NOT NULL,
    date INTEGER NOT NULL,
    received REAL NOT NULL,
    message_id TEXT NOT NULL,
    thread_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    snippet TEXT NOT NULL,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL,
    spam_score REAL NOT NULL,
    attachments TEXT NOT NULL,
    search TEXT NOT NULL,
    source TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_by_folder ON messages (user, folder, id);
CREATE INDEX IF NOT EXISTS messages_by_thread ON messages (user, thread_id, id);
CREATE TABLE IF NOT EXISTS thread_refs (
    user TEXT NOT NULL,
    message_id TEXT NOT NULL,
    thread_id INTEGER NOT NULL,
    PRIMARY KEY (user, message_id)
);
CREATE TABLE IF NOT EXISTS incoming (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    data BLOB NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outgoing (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    blob TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outgoing_due ON outgoing (state, next_attempt);
"""


_FOLDER_JOINS = (
    "UPDATE folders SET total = total + 1, unread = unread + ? WHERE user = ? AND id = ?"
)
_FOLDER_LEAVES = (
    "UPDATE folders SET total = total - 1, unread = unread - ? WHERE user = ? AND id = ?"
)


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


_MESSAGE_COLUMNS = (
    "id, user, folder, read, date, received, message_id, thread_id, sender, recipients,"
    " subject, snippet, size, blob, spam_score, attachments"
)


def _message_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [key.strip() for key in _MESSAGE_COLUMNS.split(",")]
    out = dict(zip(keys, row, strict=True))
    out["read"] = bool(out["read"])
    out["attachments"] = json.loads(out["attachments"])
    del out["user"]
    return out


class MailStore:
    """Users, folders, messages and queues in one SQLite file (thread-safe, blocking)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self) -> _Transaction:
        return _Transaction(self)

    # -- users and folders

    def create_user(self, address: str, display_name: str = "") -> None:
        """Adds a user with the standard folders (:class:`InvalidArgument` if taken)."""
        address = check_address(address)
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO users (address, display_name, created) VALUES (?, ?, ?)",
                    (address, display_name.strip()[:200], time.time()),
                )
            except sqlite3.IntegrityError as error:
                raise InvalidArgument(f"there is already a user {address}") from error
            for folder in STANDARD_FOLDERS:
                db.execute(
                    "INSERT INTO folders (user, id, name) VALUES (?, ?, ?)",
                    (address, folder, folder.capitalize()),
                )

    def user(self, address: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT address, display_name, created FROM users WHERE address = ?",
                (address.strip().lower(),),
            ).fetchone()
        if row is None:
            return None
        return {"address": row[0], "display_name": row[1], "created": row[2]}

    def users(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT address FROM users ORDER BY address").fetchall()
        return [str(row[0]) for row in rows]

    def folders(self, user: str) -> list[dict[str, Any]]:
        order = {name: i for i, name in enumerate(STANDARD_FOLDERS)}
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, total, unread FROM folders WHERE user = ?", (user,)
            ).fetchall()
        folders = [{"id": r[0], "name": r[1], "total": r[2], "unread": r[3]} for r in rows]
        return sorted(folders, key=lambda f: (order.get(f["id"], 99), f["id"]))

    def has_folder(self, user: str, folder: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM folders WHERE user = ? AND id = ?", (user, folder)
            ).fetchone()
        return row is not None

    def create_folder(self, user: str, name: str) -> dict[str, Any]:
        folder = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
        if not _FOLDER_ID.fullmatch(folder):
            raise InvalidArgument(f"a folder name needs letters or digits: {name[:60]!r}")
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO folders (user, id, name) VALUES (?, ?, ?)",
                    (user, folder, name.strip()[:100]),
                )
            except sqlite3.IntegrityError as error:
                raise InvalidArgument(f"there is already a folder {folder!r}") from error
        return {"id": folder, "name": name.strip()[:100], "total": 0, "unread": 0}

    # -- the incoming queue

    def enqueue_incoming(self, mail_from: str, rcpts: list[str], data: bytes) -> int:
        """Queues a raw message durably (committed and synced when this returns); its id."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO incoming (mail_from, rcpts, data, received) VALUES (?, ?, ?, ?)",
                (mail_from, json.dumps(rcpts), data, time.time()),
            )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def incoming(self, limit: int = 64, after: int = 0) -> list[IncomingEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, mail_from, rcpts, data, received FROM incoming WHERE id > ?"
                " ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [IncomingEntry(r[0], r[1], json.loads(r[2]), bytes(r[3]), r[4]) for r in rows]

    def incoming_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM incoming").fetchone()[0])

    def deliver(self, entry_id: int | None, messages: list[NewMessage]) -> list[StoredMessage]:
        """Stores ``messages`` and deletes queue entry ``entry_id``, in one transaction.

        Processing an entry twice stores nothing the second time (the entry is
        gone, and each message's source key ``entry:index`` is unique).
        """
        stored: list[StoredMessage] = []
        with self._write() as db:
            if entry_id is not None:
                gone = db.execute("DELETE FROM incoming WHERE id = ?", (entry_id,)).rowcount == 0
                if gone:
                    return []
            for index, message in enumerate(messages):
                source = None if entry_id is None else f"{entry_id}:{index}"
                stored.append(self._insert(db, message, source))
        return stored

    def _insert(self, db: sqlite3.Connection, m: NewMessage, source: str | None) -> StoredMessage:
        folder = m.folder
        if not db.execute(
            "SELECT 1 FROM folders WHERE user = ? AND id = ?", (m.user, folder)
        ).fetchone():
            folder = "inbox"
        thread_id: int | None = None
        for reference in [m.message_id, *m.references]:
            if not reference:
                continue
            row = db.execute(
                "SELECT thread_id FROM thread_refs WHERE user = ? AND message_id = ?",
                (m.user, reference),
            ).fetchone()
            if row is not None:
                thread_id = int(row[0])
                break
        cursor = db.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}, search, source)"
            " VALUES (NULL, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.user, folder, int(m.read), m.date, time.time(), m.message_id, m.sender,
                m.recipients, m.subject, m.snippet, m.size, m.blob, m.spam_score,
                json.dumps(m.attachments), json.dumps(m.search), source,
            ),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        message_id = int(cursor.lastrowid)
        if thread_id is None:
            thread_id = message_id
        db.execute("UPDATE messages SET thread_id = ? WHERE id = ?", (thread_id, message_id))
        for reference in [m.message_id, *m.references]:
            if reference:
                db.execute(
                    "INSERT OR IGNORE INTO thread_refs (user, message_id, thread_id)"
                    " VALUES (?, ?, ?)",
                    (m.user, reference, thread_id),
                )
        db.execute(
            _FOLDER_JOINS,
            (0 if m.read else 1, m.user, folder),
        )
        return StoredMessage(
            message_id, m.user, folder, m.read, m.date, m.sender, m.subject, m.search
        )

    def drop_incoming(self, entry_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM incoming WHERE id = ?", (entry_id,))

    # -- messages

    def list_messages(
        self, user: str, folder: str, limit: int = 50, before: int | None = None
    ) -> list[dict[str, Any]]:
        """A page of a folder, newest first (ids below ``before``)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE user = ? AND folder = ?"
                " AND id < ? ORDER BY id DESC LIMIT ?",
                (user, folder, before if before is not None else 2**62, limit),
            ).fetchall()
        return [_message_dict(row) for row in rows]

    def message(self, user: str, message_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE user = ? AND id = ?",
                (user, message_id),
            ).fetchone()
        return None if row is None else _message_dict(row)

    def messages_of(self, user: str, ids: list[int]) -> list[dict[str, Any]]:
        """The messages with these ids, in the order given (unknown ids left out)."""
        found = {m["id"]: m for m in (self.message(user, i) for i in ids) if m is not None}
        return [found[i] for i in ids if i in found]

    def update_message(
        self, user: str, message_id: int, *, read: bool | None = None, folder: str | None = None
    ) -> dict[str, Any] | None:
        """Marks read/unread or moves; the message after, or None if there is none."""
        with self._write() as db:
            row = db.execute(
                "SELECT folder, read FROM messages WHERE user = ? AND id = ?", (user, message_id)
            ).fetchone()
            if row is None:
                return None
            old_folder, old_read = str(row[0]), bool(row[1])
            new_folder = old_folder if folder is None else folder
            new_read = old_read if read is None else bool(read)
            if (
                new_folder != old_folder
                and not db.execute(
                    "SELECT 1 FROM folders WHERE user = ? AND id = ?", (user, new_folder)
                ).fetchone()
            ):
                raise InvalidArgument(f"there is no folder {new_folder!r}")
            db.execute(
                "UPDATE messages SET folder = ?, read = ? WHERE id = ?",
                (new_folder, int(new_read), message_id),
            )
            db.execute(
                _FOLDER_LEAVES,
                (0 if old_read else 1, user, old_folder),
            )
            db.execute(
                _FOLDER_JOINS,
                (0 if new_read else 1, user, new_folder),
            )
        return self.message(user, message_id)

    def delete_message(self, user: str, message_id: int) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT folder, read FROM messages WHERE user = ? AND id = ?", (user, message_id)
            ).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            db.execute(
                _FOLDER_LEAVES,
                (0 if row[1] else 1, user, row[0]),
            )
        return True

    def thread(self, user: str, thread_id: int) -> list[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM messages WHERE user = ? AND thread_id = ? ORDER BY id",
                (user, thread_id),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def indexable(self, batch: int = 1000) -> Iterator[StoredMessage]:
        """Every stored message with its search text (to build an index from)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, user, folder, read, date, sender, subject, search FROM messages"
                    " WHERE id > ? ORDER BY id LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield StoredMessage(
                    r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], json.loads(r[7])
                )
            last = int(rows[-1][0])

    def max_message_id(self) -> int:
        """The highest message id given so far (0 for none; ids are never reused)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
            ).fetchone()
            top = self._db.execute("SELECT max(id) FROM messages").fetchone()
        return max(int(row[0]) if row else 0, int(top[0] or 0))

    def message_states(
        self, *, after: int = 0, user: str | None = None
    ) -> list[tuple[int, str, str, bool, int]]:
        """``(id, user, folder, read, date)`` of the messages above id ``after``
        (of one user, or all), by id: what a search index is checked against."""
        sql = "SELECT id, user, folder, read, date FROM messages WHERE id > ?"
        args: tuple[Any, ...] = (after,)
        if user is not None:
            sql += " AND user = ?"
            args = (after, user)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4])) for r in rows]

    def search_texts(self, user: str, ids: list[int]) -> dict[int, dict[str, str]]:
        """The search text of these messages of ``user`` (unknown ids left out)."""
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT id, search FROM messages WHERE user = ? AND id IN ({marks})",
                    (user, *chunk),
                ).fetchall()
            out.update((int(r[0]), json.loads(r[1])) for r in rows)
        return out

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
        with self._write() as db:
            stored = None if sent is None else self._insert(db, sent, None)
            entry: int | None = None
            if local is not None:
                cursor = db.execute(
                    "INSERT INTO incoming (mail_from, rcpts, data, received) VALUES (?, ?, ?, ?)",
                    (local[0], json.dumps(local[1]), local[2], now),
                )
                entry = cursor.lastrowid
            ids: list[int] = []
            for user, mail_from, rcpt, blob in remote:
                cursor = db.execute(
                    "INSERT INTO outgoing (user, mail_from, rcpt, blob, state, next_attempt,"
                    " created) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (user, mail_from, rcpt, blob, now, now),
                )
                assert cursor.lastrowid is not None
                ids.append(int(cursor.lastrowid))
        return stored, entry, ids

    def due_outgoing(self, now: float, limit: int = 32) -> list[OutgoingEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, user, mail_from, rcpt, blob, state, attempts, next_attempt,"
                " last_error FROM outgoing WHERE state = 'queued' AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutgoingEntry(*row) for row in rows]

    def next_outgoing_time(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT min(next_attempt) FROM outgoing WHERE state = 'queued'"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def outgoing(self, entry_id: int) -> OutgoingEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, user, mail_from, rcpt, blob, state, attempts, next_attempt,"
                " last_error FROM outgoing WHERE id = ?",
                (entry_id,),
            ).fetchone()
        return None if row is None else OutgoingEntry(*row)

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
        with self._write() as db:
            db.execute(
                "UPDATE outgoing SET state = ?, attempts = ?, next_attempt = ?, last_error = ?"
                " WHERE id = ?",
                (state, attempts, next_attempt, error[:1000], entry_id),
            )
            if bounce is not None:
                db.execute(
                    "INSERT INTO incoming (mail_from, rcpts, data, received) VALUES (?, ?, ?, ?)",
                    (bounce[0], json.dumps(bounce[1]), bounce[2], time.time()),
                )


class _Transaction:
    """``with store._write() as db``: the lock and BEGIN IMMEDIATE ... COMMIT (or ROLLBACK)."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if kind is not None:
                self.store._db.execute("ROLLBACK")
                return
            try:
                self.store._db.execute("COMMIT")
            except BaseException:
                if self.store._db.in_transaction:
                    self.store._db.execute("ROLLBACK")
                raise
        finally:
            self.store._lock.release()
