"""Service processes sharing one PostgreSQL store keep their search indexes current by
following the store's change log: the log itself, the follower, and two services."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from sdi.email.lsmindex import LsmSearchIndex
from sdi.email.search import ScanIndex
from sdi.email.service import EmailService, IndexFollower, create_token, create_user
from sdi.email.store import ChangeLogTrimmedError, MailStore, NewMessage
from sdi.testing.email import wait_for
from sdi.testing.running import RunningService, request
from sdi.testing.servers import PostgresServer

ANN = "ann@sdi.local"
BOB = "bob@sdi.local"


def new(user: str = ANN, subject: str = "hi", folder: str = "inbox") -> NewMessage:
    return NewMessage(
        user, folder, 1_700_000_000, "", [], "carol@x.org", user, subject, subject, 100,
        "0" * 64, 0.0, [], {"subject": subject, "body": "yo"},
    )  # fmt: skip


@pytest.fixture
def logged(where: str) -> Iterator[Callable[[], MailStore]]:
    """Opens stores with the change log on (on SQLite too: the same behaviour)."""
    opened: list[MailStore] = []

    def open_store() -> MailStore:
        store = MailStore(where, change_log=True)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


# -- the change log


def test_each_message_change_is_logged_in_order(logged: Callable[[], MailStore]) -> None:
    store = logged()
    store.create_user(ANN)
    assert (store.last_change_seq(), store.changes_since(0)) == (0, [])
    first, second = store.deliver(None, [new(subject="one"), new(subject="two")])
    store.create_folder(ANN, "work")
    store.update_message(ANN, first.id, read=True)
    store.update_message(ANN, first.id, read=True)  # no change: nothing logged
    store.update_message(ANN, second.id, folder="work")
    assert store.delete_message(ANN, first.id)
    assert not store.delete_message(ANN, first.id)
    sent, _, _ = store.submit(new(subject="sent", folder="sent"), None, [])
    assert sent is not None
    changes = store.changes_since(0)
    assert [(c.op, c.message_id, c.folder, c.read) for c in changes] == [
        ("stored", first.id, "inbox", False),
        ("stored", second.id, "inbox", False),
        ("updated", first.id, "inbox", True),
        ("updated", second.id, "work", False),
        ("deleted", first.id, "", False),
        ("stored", sent.id, "sent", False),
    ]
    assert all(c.user == ANN for c in changes)
    assert changes[0].date == 1_700_000_000
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs)
    assert store.last_change_seq() == seqs[-1]
    assert store.changes_since(seqs[1], limit=2) == changes[2:4]
    # trimming: only changes older than the cutoff go; a reader behind them is told
    assert store.trim_changes(before=time.time() - 3600) == 0
    assert store.change_count() == 6
    assert store.trim_changes(before=time.time() + 1) == 6
    assert store.change_count() == 0
    assert store.last_change_seq() == seqs[-1]  # the position survives the trim
    with pytest.raises(ChangeLogTrimmedError):
        store.changes_since(seqs[2])
    assert store.changes_since(seqs[-1]) == []
    [third] = store.deliver(None, [new(subject="three")])
    assert [c.message_id for c in store.changes_since(seqs[-1])] == [third.id]


def test_sqlite_logs_nothing_by_default(tmp_path: Path) -> None:
    """One process owns a SQLite file and indexes every change it makes: no log needed."""
    store = MailStore(tmp_path / "mail.sqlite")
    try:
        store.create_user(ANN)
        assert not store.change_log
        [message] = store.deliver(None, [new()])
        store.update_message(ANN, message.id, read=True)
        assert (store.change_count(), store.changes_since(0), store.last_change_seq()) == (0, [], 0)
    finally:
        store.close()


def test_a_follower_misses_nothing_under_concurrent_writers(
    logged: Callable[[], MailStore], where: str
) -> None:
    """Writers on separate connections commit in any order; a follower polling meanwhile
    sees every change once (seqs follow commit order), and its index ends as the store."""
    setup = logged()
    setup.create_user(ANN)
    writers = [logged() for _ in range(3)]
    index = ScanIndex()
    follower = IndexFollower(logged(), index, 0)
    done = threading.Event()
    errors: list[BaseException] = []

    def write(store: MailStore, n: int) -> None:
        try:
            for i in range(15):
                [message] = store.deliver(None, [new(subject=f"w{n} m{i}")])
                if i % 3 == 0:
                    store.update_message(ANN, message.id, read=True)
                if i % 5 == 0:
                    store.delete_message(ANN, message.id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(writers)]

    def follow() -> None:
        while not done.is_set():
            follower.catch_up()
            time.sleep(0.001)

    reader = threading.Thread(target=follow)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    reader.join(60)
    assert not errors
    follower.catch_up()
    expected = {m[0]: (m[2], m[3]) for m in setup.message_states()}
    assert len(expected) == 3 * 12
    assert follower.applied == setup.change_count() == 3 * (15 + 5 + 3)
    found = index.search(ANN, "yo", limit=500)
    assert sorted(found) == sorted(expected)
    assert sorted(index.search(ANN, "yo", read=True, limit=500)) == sorted(
        i for i, (_, read) in expected.items() if read
    )


def test_a_follower_behind_a_trim_checks_its_whole_index(
    logged: Callable[[], MailStore], tmp_path: Path
) -> None:
    store = logged()
    store.create_user(ANN)
    kept, gone = store.deliver(None, [new(subject="kept"), new(subject="gone")])
    index = LsmSearchIndex(tmp_path / "search")
    try:
        index.recover(store)
        follower = IndexFollower(store, index, index.log_seq or 0)
        assert follower.seq == store.last_change_seq()
        store.update_message(ANN, kept.id, read=True)
        store.delete_message(ANN, gone.id)
        [late] = store.deliver(None, [new(subject="late")])
        assert store.trim_changes(before=time.time() + 1) == 5
        assert follower.catch_up() == 0
        assert follower.resyncs == 1
        assert follower.seq == store.last_change_seq()
        assert index.search(ANN, "yo") == [late.id, kept.id]
        assert index.search(ANN, "yo", read=True) == [kept.id]
    finally:
        index.close()


def test_the_lsm_index_applies_a_batch_in_order(tmp_path: Path) -> None:
    index = LsmSearchIndex(tmp_path / "search")
    try:
        index.add(ANN, 1, {"subject": "one"}, 10, "inbox", False)
        index.apply(
            [
                ("add", ANN, 2, {"subject": "two"}, 20, "inbox", False),
                ("set_attrs", ANN, 2, "work", None),  # folded into the add above
                ("set_attrs", ANN, 2, None, True),
                ("set_attrs", ANN, 1, None, True),
                ("set_attrs", ANN, 99, "work", True),  # an id the index lacks: nothing
                ("set_attrs", BOB, 1, "work", True),  # a user it does not know: nothing
                ("add", ANN, 3, {"subject": "three"}, 30, "inbox", False),
                ("delete", ANN, 3),
                ("set_attrs", ANN, 3, "work", False),  # deleted above: nothing
                ("delete", BOB, 4),
            ]
        )
        query = "one OR two OR three"
        assert index.search(ANN, query) == [2, 1]
        assert index.search(ANN, query, folder="work") == [2]
        assert index.search(ANN, query, folder="inbox", read=True) == [1]
        assert index.search(ANN, query, read=False) == []
        assert index.search(BOB, query) == []
        index.apply([("add", ANN, 3, {"subject": "three"}, 30, "inbox", False)])
        assert index.search(ANN, "three") == []  # a deleted id stays deleted (never reused)
    finally:
        index.close()


# -- services sharing a database


def _send(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(
            "carol@x.org", [rcpt], f"From: carol@x.org\r\nSubject: {subject}\r\n\r\nhello\r\n"
        )


class Node:
    """One service process's worth: a service on its own data directory and token."""

    def __init__(self, url: str, data_dir: Path, **options: Any) -> None:
        self.url, self.data_dir, self.options = url, data_dir, options
        self.token = create_token(data_dir, ANN, database_url=url)
        self.running: RunningService | None = None
        self.start()

    def start(self) -> None:
        service = EmailService(database_url=self.url, demo_user=False, **self.options)
        self.running = RunningService(service, self.data_dir)

    @property
    def service(self) -> EmailService:
        assert self.running is not None
        assert isinstance(self.running.service, EmailService)
        return self.running.service

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def api(self, method: str, path: str, body: object = None) -> Any:
        assert self.running is not None
        status, answer = request(self.running.port, method, path, body, token=self.token)
        assert status < 300, (status, answer)
        return answer

    def search(self, query: str, **filters: str) -> list[str]:
        extra = "".join(f"&{name}={value}" for name, value in filters.items())
        found = self.api("GET", f"/v1/search?q={quote(query)}{extra}&limit=100")
        return sorted(m["subject"] for m in found["messages"])


@pytest.fixture
def nodes(postgres: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    url = postgres.create_database()
    create_user(tmp_path / "a", ANN, "Ann", database_url=url)
    made: list[Node] = []

    def make(name: str, **options: Any) -> Node:
        node = Node(url, tmp_path / name, **options)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def _ids(node: Node) -> dict[str, int]:
    page = node.api("GET", "/v1/folders/inbox/messages?limit=100")
    return {m["subject"]: m["id"] for m in page["messages"]}


def test_mail_and_changes_through_one_process_are_searchable_on_another(
    nodes: Callable[..., Node],
) -> None:
    a, b = nodes("a"), nodes("b")
    subjects = ["alpha report", "beta report", "gamma report"]
    for subject in subjects:
        _send(a.service.ports["smtp"], ANN, subject)
    # stored and indexed by A; B indexes it from the log
    wait_for(lambda: a.search("report") == subjects, 15, "A's own mail in A's search")
    wait_for(lambda: b.search("report") == subjects, 5, "A's mail in B's search")
    ids = _ids(a)
    # read, move and delete through A show in B's filters
    a.api("PUT", f"/v1/messages/{ids['alpha report']}", {"read": True})
    a.api("POST", "/v1/folders", {"name": "Archive"})
    a.api("PUT", f"/v1/messages/{ids['beta report']}", {"folder": "archive"})
    a.api("DELETE", f"/v1/messages/{ids['gamma report']}")
    # A's own writes are in its index when the request returns
    assert a.search("report", read="true") == ["alpha report"]
    assert a.search("report", folder="archive") == ["beta report"]
    assert a.search("gamma") == []
    wait_for(lambda: b.search("report", read="true") == ["alpha report"], 5, "the read flag")
    wait_for(lambda: b.search("report", folder="archive") == ["beta report"], 5, "the move")
    wait_for(lambda: b.search("report") == ["alpha report", "beta report"], 5, "the delete")
    assert b.search("report", read="false", folder="inbox") == []
    # and the other way round: B's change shows on A
    b.api("PUT", f"/v1/messages/{ids['alpha report']}", {"read": False})
    assert b.search("report", read="false") == ["alpha report", "beta report"]
    wait_for(lambda: a.search("report", read="false") == ["alpha report", "beta report"], 5, "it")
    assert a.service.follower is not None
    assert a.service.follower.applied >= 1


def test_a_restarted_process_catches_up(nodes: Callable[..., Node]) -> None:
    a, b = nodes("a"), nodes("b")
    _send(a.service.ports["smtp"], ANN, "old news")
    wait_for(lambda: b.search("news") == ["old news"], 15, "the mail on B")
    b.stop()  # a clean stop: B's index records the log position it reached
    old = _ids(a)["old news"]
    a.api("PUT", f"/v1/messages/{old}", {"read": True})
    _send(a.service.ports["smtp"], ANN, "fresh news")
    wait_for(lambda: a.search("news") == ["fresh news", "old news"], 15, "the mail on A")
    b.start()  # replays the log from its position before serving
    assert b.search("news") == ["fresh news", "old news"]
    assert b.search("news", read="true") == ["old news"]
    # a change to old mail while B was down, after the log was trimmed past B's position
    b.stop()
    a.api("DELETE", f"/v1/messages/{old}")
    assert a.service.store is not None
    assert a.service.store.trim_changes(before=time.time() + 1) > 0
    b.start()  # the log cannot say what B missed: it checks its whole index
    assert b.search("news") == ["fresh news"]


def test_the_change_log_is_trimmed(nodes: Callable[..., Node]) -> None:
    a = nodes("a", change_retention_s=0.0, change_trim_interval_s=0.05)
    b = nodes("b")
    _send(a.service.ports["smtp"], ANN, "short lived")
    wait_for(lambda: b.search("short") == ["short lived"], 15, "the mail on B")
    store = a.service.store
    assert store is not None
    wait_for(lambda: store.change_count() == 0, 10, "the trim")
    assert store.last_change_seq() > 0
