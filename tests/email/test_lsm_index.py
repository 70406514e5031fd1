"""The compiled LSM search index: the binding, ScanIndex as the oracle, recovery from the store."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi._rust.lsm import FLAG_READ, SEARCH_RESULTS_MAX, LsmIndex, check_query
from sdi.email.lsmindex import NAMES_FILE, STATE_FILE, LsmSearchIndex
from sdi.email.search import ScanIndex
from sdi.email.service import SEARCH_DIR
from sdi.email.store import MailStore, NewMessage
from sdi.errors import Closed, InvalidArgument
from sdi.testing.email import ANN, start_mail

WORDS = ["alpha", "alphabet", "beta", "gamma", "delta", "émile", "straße", "x1", "zeta", "zz"]
ADDRESSES = ["olga@far.example", "piet@near.example", "ann@sdi.local", "émile@x.org"]
FIELDS = ["from", "to", "subject", "body", "attachment"]
FOLDERS = ["inbox", "archive", "spam"]
USERS = ["ann@sdi.local", "bob@sdi.local"]

# -- the binding


def test_binding_basics(tmp_path: Path) -> None:
    index = LsmIndex(tmp_path, sync="never", background_merge=False)
    index.add(1, 10, {"subject": "Réunion lundi", "from": "Olga <olga@far.example>"}, date=5)
    index.write_batch(
        [
            ("add", 1, 11, [("body", "alpha beta"), ("to", "x@y.org")], 6, 2, FLAG_READ),
            ("add", 2, 11, {"body": "alpha"}, 6, 2, 0),
            ("set_attrs", 1, 10, 5, 3, 0),
            ("delete", 2, 11),
        ]
    )
    assert index.search(1, "reunion") == [10]
    assert index.search(1, "from:olga@far.example OR alpha") == [11, 10]
    assert index.search(1, "alpha", read=True) == [11]
    assert index.search(1, "", folder=3) == [10]
    assert index.search(2, "alpha") == []
    assert index.attrs(1, 10) == (5, 3, 0)
    assert index.contains(2, 11)
    assert index.attrs(2, 11) is None
    assert index.docs_of(1) == [(10, (5, 3, 0)), (11, (6, 2, FLAG_READ))]
    with pytest.raises(InvalidArgument, match="query syntax error at byte"):
        index.search(1, "(alpha")
    with pytest.raises(InvalidArgument, match="never reused"):
        index.add(1, 10, {"body": "again"})
    index.add(1, 10, {"body": "again"}, date=5, folder=4, exist_ok=True)  # attributes only
    assert index.attrs(1, 10) == (5, 4, 0)
    assert index.search(1, "again") == []
    with pytest.raises(InvalidArgument, match="unknown field"):
        index.add(1, 12, {"nope": "x"})
    with pytest.raises(InvalidArgument):
        index.write_batch([("frobnicate", 1, 2)])
    with pytest.raises(TypeError):
        index.add(1, 12, "body text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        index.search(1, "alpha", limit=SEARCH_RESULTS_MAX + 1)
    with pytest.raises(InvalidArgument):
        check_query("a OR")
    index.flush()
    index.compact()
    stats = index.stats()
    assert stats["live_docs"] == 2
    assert len(stats["run_bytes"]) == 1
    assert index.search(1, "alpha OR reunion") == [11, 10]
    index.close()
    index.close()
    assert index.closed
    with pytest.raises(Closed):
        index.search(1, "alpha")
    reopened = LsmIndex(tmp_path)
    assert reopened.search(1, "alpha OR reunion") == [11, 10]
    reopened.close()


def test_binding_concurrent_writers_and_searchers(tmp_path: Path) -> None:
    index = LsmIndex(tmp_path, sync="never", memtable_bytes=4096)
    errors: list[BaseException] = []

    def write(user: int) -> None:
        try:
            for start in range(0, 400, 20):
                index.write_batch(
                    [("add", user, d, {"body": f"w{d % 7} common"}, d, 1, 0)
                     for d in range(start + 1, start + 21)]
                )  # fmt: skip
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def search() -> None:
        try:
            for _ in range(200):
                found = index.search(1, "common", limit=1000)
                assert found == sorted(found, reverse=True)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(u,)) for u in (1, 2)]
    threads += [threading.Thread(target=search) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert index.search(1, "common", limit=1000) == list(range(400, 0, -1))
    assert index.search(2, "w3", limit=1000) == [d for d in range(400, 0, -1) if d % 7 == 3]
    index.close()


# -- LsmSearchIndex against ScanIndex


@dataclass(frozen=True)
class Add:
    user: str
    fields: dict[str, str]
    date: int
    folder: str
    read: bool


@dataclass(frozen=True)
class Change:
    pick: int
    folder: str | None
    read: bool | None


@dataclass(frozen=True)
class Delete:
    pick: int


_text = st.lists(st.sampled_from(WORDS + ADDRESSES), max_size=6).map(" ".join)
_fields = st.dictionaries(st.sampled_from(FIELDS), _text, min_size=1)
_add = st.builds(
    Add, st.sampled_from(USERS), _fields, st.integers(0, 9), st.sampled_from(FOLDERS),
    st.booleans(),
)  # fmt: skip
_op = st.one_of(
    _add,
    _add,
    _add,
    st.builds(
        Change,
        st.integers(0, 1000),
        st.one_of(st.none(), st.sampled_from(FOLDERS)),
        st.one_of(st.none(), st.booleans()),
    ),
    st.builds(Delete, st.integers(0, 1000)),
)

_scope = st.sampled_from(["", "", "", *[f + ":" for f in FIELDS]])
_word = st.sampled_from([*WORDS, "Alpha", "ÉMILE", "e-mail", "nothing"])
_leaf = st.one_of(
    st.builds(lambda s, w: s + w, _scope, _word),
    st.builds(lambda s, w: s + w, _scope, st.sampled_from(ADDRESSES)),
    st.builds(lambda s, w, n: s + w[:n] + "*", _scope, st.sampled_from(WORDS), st.integers(1, 4)),
    st.builds(
        lambda s, ws: s + '"' + " ".join(ws) + '"',
        _scope,
        st.lists(st.sampled_from([*WORDS, "olga", "far", "example"]), min_size=2, max_size=3),
    ),
)
queries = st.recursive(
    st.one_of(_leaf, _leaf.map(lambda q: "-" + q)),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda q: "(" + " ".join(q) + ")"),
        st.lists(inner, min_size=2, max_size=3).map(lambda q: "(" + " AND ".join(q) + ")"),
        st.lists(inner, min_size=2, max_size=3).map(lambda q: "(" + " OR ".join(q) + ")"),
        inner.map(lambda q: "NOT " + q),
    ),
    max_leaves=5,
)


@dataclass(frozen=True)
class Search:
    user: str
    query: str
    folder: str | None
    read: bool | None
    dates: tuple[int | None, int | None]
    limit: int
    before: int | None


_search = st.builds(
    Search,
    st.sampled_from(USERS),
    queries,
    st.one_of(st.none(), st.sampled_from([*FOLDERS, "nowhere"])),
    st.one_of(st.none(), st.booleans()),
    st.tuples(st.one_of(st.none(), st.integers(0, 9)), st.one_of(st.none(), st.integers(0, 9))),
    st.integers(1, 30),
    st.one_of(st.none(), st.integers(0, 60)),
)


def _apply(
    indexes: list[ScanIndex | LsmSearchIndex], ops: list[object], live: list[tuple[str, int]],
    next_id: list[int],
) -> None:  # fmt: skip
    for op in ops:
        if isinstance(op, Add):
            next_id[0] += 1
            live.append((op.user, next_id[0]))
            for index in indexes:
                index.add(op.user, next_id[0], op.fields, op.date, op.folder, op.read)
        elif live and isinstance(op, Change):
            user, doc_id = live[op.pick % len(live)]
            for index in indexes:
                index.set_attrs(user, doc_id, folder=op.folder, read=op.read)
        elif live and isinstance(op, Delete):
            user, doc_id = live.pop(op.pick % len(live))
            for index in indexes:
                index.delete(user, doc_id)


def _search_both(scan: ScanIndex, lsm: LsmSearchIndex, search: Search) -> None:
    options = {
        "folder": search.folder, "read": search.read, "date_from": search.dates[0],
        "date_to": search.dates[1], "limit": search.limit, "before": search.before,
    }  # fmt: skip
    expected = scan.search(search.user, search.query, **options)  # type: ignore[arg-type]
    found = lsm.search(search.user, search.query, **options)  # type: ignore[arg-type]
    assert found == expected, (search, options)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(_op, max_size=40),
    searches=st.lists(_search, min_size=1, max_size=8),
    flush=st.booleans(),
    reopen=st.booleans(),
)
def test_lsm_index_answers_as_the_scan_index(
    ops: list[object], searches: list[Search], flush: bool, reopen: bool
) -> None:
    with tempfile.TemporaryDirectory() as path:
        scan = ScanIndex()
        lsm = LsmSearchIndex(path, sync="never", memtable_bytes=4096)
        live: list[tuple[str, int]] = []
        next_id = [0]
        half = len(ops) // 2
        _apply([scan, lsm], ops[:half], live, next_id)
        if flush:
            lsm.flush()
        if reopen:
            lsm.close()
            lsm = LsmSearchIndex(path, sync="never", memtable_bytes=4096)
        _apply([scan, lsm], ops[half:], live, next_id)
        if flush:
            lsm.compact()
        for search in searches:
            _search_both(scan, lsm, search)
        # Paging: the pages of a query, one after the other, are the whole answer.
        search = searches[0]
        pages: list[int] = []
        before: int | None = None
        while True:
            page = lsm.search(search.user, search.query, limit=3, before=before)
            pages.extend(page)
            if len(page) < 3:
                break
            before = page[-1]
        assert pages == scan.search(search.user, search.query, limit=500)
        lsm.close()


def test_lsm_search_index_edges(tmp_path: Path) -> None:
    index = LsmSearchIndex(tmp_path)
    index.add(ANN, 5, {"subject": "alpha", "x-extra": "hidden"}, 100, "inbox", False)
    for bad in ["", "   ", "(", "a OR"]:
        with pytest.raises(InvalidArgument):
            index.search(ANN, bad)
    with pytest.raises(InvalidArgument):
        index.search("nobody@x.org", "(")  # checked even when nothing can match
    assert index.search("nobody@x.org", "alpha") == []
    assert index.search(ANN, "alpha", folder="nowhere") == []
    assert index.search(ANN, "alpha", limit=0) == []
    assert index.search(ANN, "alpha", before=0) == []
    assert index.search(ANN, "alpha", before=2**70) == [5]
    assert index.search(ANN, "alpha", date_from=-(2**70), date_to=2**70) == [5]
    assert index.search(ANN, "alpha", date_from=100, date_to=100) == [5]
    assert index.search(ANN, "alpha", date_to=99) == []
    assert index.search(ANN, "hidden") == [5]  # unknown fields are searched as the body
    index.delete("nobody@x.org", 5)
    index.set_attrs(ANN, 99, folder="inbox")
    index.set_attrs(ANN, 5, read=True)
    assert index.search(ANN, "alpha", read=True, folder="inbox") == [5]
    index.set_attrs(ANN, 5, folder="archive")
    assert index.search(ANN, "alpha", read=True, folder="archive") == [5]
    index.add_many(
        [(ANN, 6, {"body": "alpha"}, 1, "inbox", True), ("z@x.org", 7, {}, 1, "a", False)]
    )
    assert index.search(ANN, "alpha") == [6, 5]
    index.close()
    assert json.loads((tmp_path / STATE_FILE).read_text())["clean"] is True
    with pytest.raises(Closed):  # a write after the close: the next start checks everything
        index.add(ANN, 8, {"body": "late"}, 1, "new-folder", False)
    assert json.loads((tmp_path / STATE_FILE).read_text())["clean"] is False


def test_names_table_survives_a_torn_line(tmp_path: Path) -> None:
    index = LsmSearchIndex(tmp_path)
    index.add("a@x.org", 1, {"body": "one"}, 0, "inbox", False)
    index.close()
    with open(tmp_path / NAMES_FILE, "ab") as handle:
        handle.write(b'["user", "torn')
    index = LsmSearchIndex(tmp_path)
    index.add("b@x.org", 2, {"body": "two"}, 0, "inbox", False)
    assert index.search("a@x.org", "one OR two") == [1]
    assert index.search("b@x.org", "one OR two") == [2]
    index.close()
    assert (tmp_path / NAMES_FILE).read_bytes().endswith(b"\n")


# -- recovery from the mail store


def _store_with_mail(path: Path, count: int) -> MailStore:
    store = MailStore(path)
    for user in USERS:
        store.create_user(user)
    for i in range(count):
        user = USERS[i % 2]
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        new = NewMessage(
            user, "inbox", 1000 + i, f"<m{i}@x>", [], "olga@far.example", user, words, words,
            10, "0" * 64, 0.0, [], {"subject": words, "from": "Olga <olga@far.example>"},
        )  # fmt: skip
        store.deliver(None, [new])
    return store


def _oracle(store: MailStore) -> ScanIndex:
    scan = ScanIndex()
    for m in store.indexable():
        scan.add(m.user, m.id, m.search, m.date, m.folder, m.read)
    return scan


def _same(store: MailStore, index: LsmSearchIndex) -> None:
    scan = _oracle(store)
    for user in USERS:
        for query in ["alpha", "beta OR zeta", "olga -gamma", '"alpha alphabet"', "x*"]:
            for folder in [None, "inbox", "trash"]:
                for read in [None, True, False]:
                    expected = scan.search(user, query, folder=folder, read=read, limit=500)
                    found = index.search(user, query, folder=folder, read=read, limit=500)
                    assert found == expected, (user, query, folder, read)


def test_recovery_after_a_crash_between_store_and_index(tmp_path: Path) -> None:
    store = _store_with_mail(tmp_path / "mail.sqlite", 30)
    index = LsmSearchIndex(tmp_path / "search")
    assert index.recover(store)["added"] == 30
    _same(store, index)
    index.close()
    # The store moves on while the index is closed: mail arrives, is moved, read, deleted.
    index = LsmSearchIndex(tmp_path / "search")
    done = index.recover(store)  # clean close: only the mail above the mark is looked at
    assert done == {"added": 0, "updated": 0, "deleted": 0, "checked": 0}
    for i in range(6):
        new = NewMessage(
            USERS[0], "inbox", 5000 + i, f"<n{i}@x>", [], "piet@near.example", USERS[0],
            "late alpha", "", 1, "0" * 64, 0.0, [], {"subject": "late alpha"},
        )  # fmt: skip
        [stored] = store.deliver(None, [new])
        if i % 2 == 0:  # indexed; the others are "lost in the crash"
            index.add(stored.user, stored.id, stored.search, stored.date, stored.folder, False)
    store.update_message(USERS[0], 1, folder="trash")  # not told to the index
    store.update_message(USERS[0], 3, read=True)
    store.delete_message(USERS[0], 5)
    del index  # a crash: no close, the state file says "not clean"
    index = LsmSearchIndex(tmp_path / "search")
    done = index.recover(store)
    assert done["added"] == 3
    assert done["updated"] == 2
    assert done["deleted"] == 1
    _same(store, index)
    assert index.search(USERS[0], "late", limit=500) == sorted(
        (m.id for m in store.indexable() if "late" in m.search["subject"]), reverse=True
    )
    index.close()
    # A clean close, then mail stored while the index was closed: only that is checked.
    new = NewMessage(
        USERS[1], "inbox", 9000, "<z@x>", [], "piet@near.example", USERS[1], "zz top", "",
        1, "0" * 64, 0.0, [], {"subject": "zz top"},
    )  # fmt: skip
    store.deliver(None, [new])
    index = LsmSearchIndex(tmp_path / "search")
    done = index.recover(store)
    assert done["added"] == 1
    assert done["checked"] == 1
    _same(store, index)
    index.close()
    store.close()


def test_recovery_rebuilds_a_deleted_index(tmp_path: Path) -> None:
    store = _store_with_mail(tmp_path / "mail.sqlite", 25)
    index = LsmSearchIndex(tmp_path / "search")
    index.recover(store)
    index.close()
    shutil.rmtree(tmp_path / "search")
    index = LsmSearchIndex(tmp_path / "search")
    assert index.recover(store)["added"] == 25
    _same(store, index)
    index.close()
    store.close()


def test_the_service_keeps_its_index_across_restarts(tmp_path: Path) -> None:
    import smtplib
    from email.message import EmailMessage

    def send(mail_port: int, subject: str) -> None:
        message = EmailMessage()
        message["From"] = "Olga <olga@far.example>"
        message["To"] = ANN
        message["Subject"] = subject
        message.set_content("body words\n")
        with smtplib.SMTP("127.0.0.1", mail_port) as client:
            client.send_message(message, "olga@far.example", [ANN])

    def found(mail: object, query: str) -> list[int]:
        status, page = mail.api("GET", "/v1/search?q=" + query)  # type: ignore[attr-defined]
        assert status == 200, page
        return [m["id"] for m in page["messages"]]

    mail = start_mail(tmp_path)
    try:
        assert isinstance(mail.service.index, LsmSearchIndex)
        send(mail.smtp, "first quokka")
        [one] = mail.wait_messages(1)
        assert found(mail, "quokka") == [one["id"]]
    finally:
        mail.running.stop()
    assert (tmp_path / SEARCH_DIR / STATE_FILE).exists()
    mail = start_mail(tmp_path)  # index files kept
    try:
        send(mail.smtp, "second quokka")
        messages = mail.wait_messages(2)
        assert found(mail, "quokka") == [m["id"] for m in messages]
        status, _ = mail.api("PUT", f"/v1/messages/{one['id']}", {"folder": "trash"})
        assert status == 200
        assert found(mail, "quokka&folder=trash") == [one["id"]]
    finally:
        mail.running.stop()
    shutil.rmtree(tmp_path / SEARCH_DIR)
    mail = start_mail(tmp_path)  # index deleted: rebuilt from the store
    try:
        assert found(mail, "quokka&folder=trash") == [one["id"]]
        assert len(found(mail, "quokka")) == 2
    finally:
        mail.running.stop()
