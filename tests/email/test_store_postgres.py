"""The mail store on SQLite and on a real PostgreSQL: the same behaviour, concurrent writers,
exactly-once delivery, and the service running over PostgreSQL (``--database-url``)."""

from __future__ import annotations

import contextlib
import random
import smtplib
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sdi.email.service import DATABASE_FILE, EmailService, create_token, create_user, service
from sdi.email.store import MailStore, NewMessage
from sdi.errors import InvalidArgument
from sdi.runtime import sql
from sdi.testing import servers
from sdi.testing.email import wait_for
from sdi.testing.running import RunningService, request
from sdi.testing.servers import PostgresServer

ANN = "ann@sdi.local"
BOB = "bob@sdi.local"


@pytest.fixture
def store(opener: Callable[[], MailStore]) -> MailStore:
    made = opener()
    made.create_user(ANN, "Ann")
    made.create_user(BOB, "Bob")
    return made


def new(
    user: str = ANN,
    subject: str = "hi",
    message_id: str = "",
    references: tuple[str, ...] = (),
    folder: str = "inbox",
    read: bool = False,
    blob: str = "0" * 64,
) -> NewMessage:
    return NewMessage(
        user, folder, 1_700_000_000, message_id, list(references), "carol@x.org", user,
        subject, f"about {subject}", 100, blob, 0.5, [{"filename": "a.txt", "size": 3}],
        {"subject": subject, "body": "yo"}, read,
    )  # fmt: skip


def counters(store: MailStore, user: str) -> dict[str, tuple[int, int]]:
    return {f["id"]: (f["total"], f["unread"]) for f in store.folders(user)}


def recount(store: MailStore, user: str) -> dict[str, tuple[int, int]]:
    """The counters as the messages say they should be."""
    out = {folder: (0, 0) for folder in counters(store, user)}
    for _id, _user, folder, read, _date in store.message_states(user=user):
        total, unread = out[folder]
        out[folder] = (total + 1, unread + (0 if read else 1))
    return out


def test_backend_is_chosen_by_url(store: MailStore, where: str) -> None:
    assert store.backend == ("postgresql" if where.startswith("postgresql://") else "sqlite")


def test_users_and_folders(store: MailStore) -> None:
    assert store.users() == [ANN, BOB]
    with pytest.raises(InvalidArgument, match="already a user"):
        store.create_user("ANN@sdi.local")
    with pytest.raises(InvalidArgument):
        store.create_user("not an address")
    user = store.user(" Ann@SDI.local ")
    assert user is not None
    assert (user["address"], user["display_name"]) == (ANN, "Ann")
    assert isinstance(user["created"], float)
    assert store.user("ghost@sdi.local") is None
    assert [f["id"] for f in store.folders(ANN)] == ["inbox", "sent", "drafts", "spam", "trash"]
    assert store.create_folder(ANN, " Work Stuff ") == {
        "id": "work-stuff", "name": "Work Stuff", "total": 0, "unread": 0,
    }  # fmt: skip
    with pytest.raises(InvalidArgument, match="already a folder"):
        store.create_folder(ANN, "work stuff")
    with pytest.raises(InvalidArgument):
        store.create_folder(ANN, "!!!")
    assert store.has_folder(ANN, "work-stuff")
    assert not store.has_folder(BOB, "work-stuff")  # folders are per user
    # the store is still usable after a refused write (PostgreSQL rolled it back)
    store.create_folder(BOB, "work stuff")
    assert store.has_folder(BOB, "work-stuff")


def test_messages_threads_and_counters(store: MailStore) -> None:
    first, second, third = store.deliver(
        None,
        [
            new(subject="one", message_id="<1@x>"),
            new(subject="two", message_id="<2@x>", references=("<1@x>",)),
            new(subject="other", message_id="<3@x>", folder="no-such-folder", read=True),
        ],
    )
    assert [first.id, second.id, third.id] == sorted([first.id, second.id, third.id])
    assert third.folder == "inbox"  # an unknown folder is the inbox
    assert counters(store, ANN)["inbox"] == (3, 2)
    # threads: by Message-ID and References, per user
    assert store.thread(ANN, first.id) == [first.id, second.id]
    assert store.thread(ANN, third.id) == [third.id]
    [reply] = store.deliver(None, [new(message_id="<4@x>", references=("<2@x>",))])
    assert store.thread(ANN, first.id) == [first.id, second.id, reply.id]
    [bobs] = store.deliver(None, [new(BOB, message_id="<5@x>", references=("<1@x>",))])
    assert store.thread(BOB, bobs.id) == [bobs.id]  # no thread crosses users
    # reading a message back
    got = store.message(ANN, first.id)
    assert got is not None
    assert (got["subject"], got["read"], got["thread_id"], got["folder"]) == (
        "one", False, first.id, "inbox",
    )  # fmt: skip
    assert got["attachments"] == [{"filename": "a.txt", "size": 3}]
    assert isinstance(got["received"], float)
    assert isinstance(got["spam_score"], float)
    assert "user" not in got
    assert store.message(BOB, first.id) is None
    page = store.list_messages(ANN, "inbox", limit=2)
    assert [m["id"] for m in page] == [reply.id, third.id]
    assert [m["id"] for m in store.list_messages(ANN, "inbox", before=third.id)] == [
        second.id, first.id,
    ]  # fmt: skip
    assert [m["id"] for m in store.messages_of(ANN, [second.id, 999_999, first.id])] == [
        second.id, first.id,
    ]  # fmt: skip
    # read/unread and moves keep the counters, in the same transaction
    assert counters(store, ANN)["inbox"] == (4, 3)
    updated = store.update_message(ANN, first.id, read=True)
    assert updated is not None
    assert updated["read"] is True
    assert counters(store, ANN)["inbox"] == (4, 2)
    store.update_message(ANN, first.id, read=True)  # no change: counted once
    assert counters(store, ANN)["inbox"] == (4, 2)
    store.update_message(ANN, second.id, folder="trash")
    assert counters(store, ANN)["inbox"] == (3, 1)
    assert counters(store, ANN)["trash"] == (1, 1)
    store.update_message(ANN, second.id, folder="inbox", read=True)
    assert counters(store, ANN)["trash"] == (0, 0)
    with pytest.raises(InvalidArgument, match="no folder"):
        store.update_message(ANN, second.id, folder="nowhere")
    assert store.update_message(BOB, second.id, read=False) is None
    assert counters(store, ANN) == recount(store, ANN)
    # deleting
    assert store.delete_message(ANN, reply.id)
    assert not store.delete_message(ANN, reply.id)
    assert not store.delete_message(BOB, first.id)
    assert counters(store, ANN) == recount(store, ANN)
    assert store.max_message_id() == bobs.id  # the highest given, deleted or not
    store.delete_message(BOB, bobs.id)
    assert store.max_message_id() == bobs.id


def test_scans_for_the_search_index_and_blob_gc(store: MailStore) -> None:
    assert store.max_message_id() == 0
    stored = store.deliver(
        None,
        [new(subject=f"s{i}", user=ANN if i % 2 else BOB, blob=f"{i:064x}") for i in range(7)],
    )
    ids = [m.id for m in stored]
    assert [m.id for m in store.indexable(batch=3)] == ids
    assert next(iter(store.indexable())).search == {"subject": "s0", "body": "yo"}
    states = store.message_states(after=ids[2])
    assert [s[0] for s in states] == ids[3:]
    assert states[0] == (ids[3], ANN, "inbox", False, 1_700_000_000)
    assert {s[1] for s in store.message_states(user=BOB)} == {BOB}
    texts = store.search_texts(ANN, [*ids, 10**9])
    assert sorted(texts) == [m.id for m in stored if m.user == ANN]
    assert texts[ids[1]] == {"subject": "s1", "body": "yo"}
    store.submit(None, None, [(ANN, ANN, "x@far.example", "f" * 64)])
    assert store.blob_keys_in_use() == {f"{i:064x}" for i in range(7)} | {"f" * 64}
    assert store.max_message_id() == ids[-1]


def test_incoming_queue_is_delivered_exactly_once(store: MailStore) -> None:
    raw = b"Subject: hi\r\n\r\nyo\x00\xff\r\n"
    entry = store.enqueue_incoming("carol@x.org", [ANN, BOB], raw)
    other = store.enqueue_incoming("", [BOB], b"x")
    assert store.incoming_count() == 2
    queued = store.incoming()
    assert [(e.id, e.mail_from, e.rcpts, e.data) for e in queued] == [
        (entry, "carol@x.org", [ANN, BOB], raw), (other, "", [BOB], b"x"),
    ]  # fmt: skip
    assert [e.id for e in store.incoming(after=entry)] == [other]
    delivered = store.deliver(entry, [new(ANN), new(BOB)])
    assert [m.user for m in delivered] == [ANN, BOB]
    assert store.deliver(entry, [new(ANN), new(BOB)]) == []
    assert counters(store, ANN)["inbox"] == (1, 1)
    assert store.incoming_count() == 1
    store.drop_incoming(other)
    assert store.incoming() == []


def test_claims_and_leases(where: str, opener: Callable[[], MailStore]) -> None:
    one = opener()
    # Processes sharing PostgreSQL claim through the database; a SQLite file has one
    # process, whose store keeps its claims in memory, so there the claimers share it.
    two = opener() if where.startswith("postgresql") else one
    ids = [one.enqueue_incoming("", [ANN], b"m%d" % i) for i in range(6)]
    first = one.claim_incoming(4)
    second = two.claim_incoming(4)
    assert [e.id for e in first] == ids[:4]
    assert [e.id for e in second] == ids[4:]  # another claimer gets the rest
    assert one.claim_incoming() == []
    two.release_incoming(ids[1])
    assert [e.id for e in two.claim_incoming()] == [ids[1]]
    assert one.claim_incoming(lease_s=0.0) == []  # every entry is held by a 60 s lease
    assert one.deliver(ids[0], []) == []  # a delivered entry is gone
    assert one.release_all_incoming() == 5
    assert [e.id for e in two.claim_incoming(lease_s=0.0)] == ids[1:]
    # a lease that ran out (here at once): the entries are claimed again
    assert [e.id for e in one.claim_incoming(lease_s=0.0)] == ids[1:]
    # the outgoing queue: due rows, claimed with a lease
    sender = one.submit(None, None, [(ANN, ANN, f"r{i}@far.example", "b" * 64) for i in range(3)])
    out = sender[2]
    now = 2e9
    assert [e.id for e in one.due_outgoing(now)] == out  # without a lease: a plain read
    assert [e.id for e in one.due_outgoing(now, 2, lease_s=30)] == out[:2]
    assert [e.id for e in two.due_outgoing(now, lease_s=30)] == out[2:]
    assert one.due_outgoing(now, lease_s=30) == []
    assert one.due_outgoing(now + 31) != []
    row = one.outgoing(out[0])
    assert row is not None
    assert row.next_attempt == now + 30
    assert row.state == "queued"


def test_outgoing_queue_and_bounces(store: MailStore) -> None:
    sent, entry, ids = store.submit(
        new(ANN, folder="sent", read=True, message_id="<s@sdi.local>"),
        (ANN, [BOB], b"Subject: s\r\n\r\nbody\r\n"),
        [(ANN, ANN, "x@far.example", "a" * 64), (ANN, ANN, "y@far.example", "a" * 64)],
    )
    assert sent is not None
    assert sent.folder == "sent"
    assert counters(store, ANN)["sent"] == (1, 0)
    assert entry is not None
    assert [e.id for e in store.incoming()] == [entry]
    assert len(ids) == 2
    due = store.due_outgoing(2e9)
    assert [(e.id, e.rcpt, e.state, e.attempts) for e in due] == [
        (ids[0], "x@far.example", "queued", 0), (ids[1], "y@far.example", "queued", 0),
    ]  # fmt: skip
    next_time = store.next_outgoing_time()
    assert next_time is not None
    assert next_time == due[0].next_attempt
    store.set_outgoing(ids[0], "queued", 1, 3e9, "421 later")
    store.set_outgoing(ids[1], "bounced", 1, 0, "550 no", ("", [ANN], b"DSN"))
    row = store.outgoing(ids[0])
    assert row is not None
    assert (row.state, row.attempts, row.next_attempt, row.last_error) == (
        "queued", 1, 3e9, "421 later",
    )  # fmt: skip
    assert store.next_outgoing_time() == 3e9
    assert [e.data for e in store.incoming()] == [b"Subject: s\r\n\r\nbody\r\n", b"DSN"]
    assert store.outgoing(10**9) is None
    store.set_outgoing(ids[0], "sent", 2, 0, "")
    assert store.next_outgoing_time() is None


def test_text_with_nul(store: MailStore) -> None:
    [stored] = store.deliver(None, [new(subject="a\x00b", message_id="<n\x00@x>")])
    got = store.message(ANN, stored.id)
    assert got is not None
    expected = "a\ufffdb" if store.backend == "postgresql" else "a\x00b"
    assert got["subject"] == expected


def test_counters_stay_right_under_concurrent_writers(opener: Callable[[], MailStore]) -> None:
    setup = opener()
    setup.create_user(ANN)
    setup.create_folder(ANN, "work")
    seeded = setup.deliver(None, [new(subject=f"m{i}") for i in range(12)])
    ids = [m.id for m in seeded]
    folders = ["inbox", "work", "trash", "spam"]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def writer(seed: int) -> None:
        store = opener()  # each writer its own connection(s)
        rng = random.Random(seed)
        try:
            start.wait()
            for step in range(60):
                action = rng.random()
                message = rng.choice(ids)
                if action < 0.45:
                    store.update_message(ANN, message, read=rng.random() < 0.5)
                elif action < 0.8:
                    store.update_message(
                        ANN, message, folder=rng.choice(folders), read=rng.random() < 0.5
                    )
                elif action < 0.9:
                    store.deliver(None, [new(subject=f"w{seed}-{step}", folder="work")])
                else:
                    entry = store.enqueue_incoming("", [ANN], b"x")
                    store.deliver(entry, [new(subject=f"q{seed}-{step}")])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert counters(setup, ANN) == recount(setup, ANN)
    assert sum(total for total, _ in counters(setup, ANN).values()) == len(
        setup.message_states(user=ANN)
    )
    # deleting concurrently: each message is counted out once
    targets = [m[0] for m in setup.message_states(user=ANN)]
    deleted: list[bool] = []
    lock = threading.Lock()

    def deleter() -> None:
        store = opener()
        try:
            for message in targets:
                done = store.delete_message(ANN, message)
                with lock:
                    deleted.append(done)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deleter) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert deleted.count(True) == len(targets)
    assert all(counts == (0, 0) for counts in counters(setup, ANN).values())


def test_an_entry_claimed_by_two_workers_is_delivered_once(
    where: str, opener: Callable[[], MailStore]
) -> None:
    setup = opener()
    setup.create_user(ANN)
    setup.create_user(BOB)
    workers = [opener(), opener()]
    entries = [setup.enqueue_incoming("", [ANN, BOB], b"m%d" % i) for i in range(20)]
    results: dict[int, list[list[int]]] = {entry: [] for entry in entries}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(store: MailStore, barrier: threading.Barrier, entry: int) -> None:
        try:
            barrier.wait()  # both hold the entry (its lease ran out, say) and deliver at once
            stored = store.deliver(entry, [new(ANN, message_id=f"<{entry}@x>"), new(BOB)])
            with lock:
                results[entry].append([m.id for m in stored])
        except BaseException as error:
            errors.append(error)

    for entry in entries:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=work, args=(w, barrier, entry)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    for entry in entries:
        outcomes = sorted(results[entry], key=len)
        assert len(outcomes) == 2
        assert outcomes[0] == [], (entry, outcomes)
        assert len(outcomes[1]) == 2, (entry, outcomes)
    assert setup.incoming_count() == 0
    assert counters(setup, ANN)["inbox"] == (20, 20)
    assert counters(setup, BOB)["inbox"] == (20, 20)
    assert len(setup.message_states()) == 40
    # and with claims two workers never even get the same entry (on SQLite, whose
    # file one process owns, the claims live in the store: the workers share one)
    more = [setup.enqueue_incoming("", [ANN], b"n%d" % i) for i in range(30)]
    got: list[list[int]] = [[], []]
    claimers = workers if where.startswith("postgresql") else [setup, setup]

    def claim(index: int) -> None:
        try:
            while batch := claimers[index].claim_incoming(3):
                got[index] += [e.id for e in batch]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(got[0] + got[1]) == more
    assert not set(got[0]) & set(got[1])


def test_the_sqlite_url_form(tmp_path: Path) -> None:
    store = MailStore(f"sqlite:///{tmp_path}/mail.sqlite")
    try:
        store.create_user(ANN)
        assert store.backend == "sqlite"
    finally:
        store.close()
    assert (tmp_path / "mail.sqlite").exists()
    assert MailStore(tmp_path / "mail.sqlite").users() == [ANN]


def test_a_file_from_before_claims_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute(
            "CREATE TABLE incoming (id INTEGER PRIMARY KEY AUTOINCREMENT, mail_from TEXT NOT NULL,"
            " rcpts TEXT NOT NULL, data BLOB NOT NULL, received REAL NOT NULL)"
        )
        old.execute(
            "INSERT INTO incoming (mail_from, rcpts, data, received) VALUES ('', '[]', x'00', 1)"
        )
        old.commit()
    store = MailStore(path)
    try:
        assert [e.id for e in store.claim_incoming()] == [1]
        assert store.claim_incoming() == []
    finally:
        store.close()


def test_postgresql_without_the_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg fails
    with pytest.raises(sql.DriverMissingError, match=r"sdi\[postgres\]"):
        MailStore("postgresql://postgres@127.0.0.1:1/nothing")


def test_an_unreachable_database_says_so() -> None:
    port = servers.free_port()
    with pytest.raises(sql.DatabaseUnavailableError, match="unavailable"):
        MailStore(f"postgresql://postgres@127.0.0.1:{port}/nothing", connect_timeout=1)


def test_the_database_url_option_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="postgresql://"):
        service({"database_url": "mysql://x"})
    email = service({"database_url": "postgresql://u@h:1/db"})
    assert isinstance(email, EmailService)
    assert email.database_url == "postgresql://u@h:1/db"


def _send(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(
            "carol@x.org", [rcpt], f"From: carol@x.org\r\nSubject: {subject}\r\n\r\nhello\r\n"
        )


def test_the_service_over_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    """Two service processes' worth (two services, two data directories) on one database:
    mail accepted over SMTP by either is stored once and shows over HTTP on both."""
    url = postgres.create_database()
    dirs = [tmp_path / "a", tmp_path / "b"]
    create_user(dirs[0], ANN, "Ann", database_url=url)
    with pytest.raises(InvalidArgument):
        create_user(dirs[1], ANN, database_url=url)  # the users are shared
    tokens = [create_token(d, ANN, database_url=url) for d in dirs]  # tokens are per directory
    running = [
        RunningService(service({"database_url": url, "workers": 2}), d)
        for d in dirs  # `sdi serve email --database-url URL`
    ]
    try:
        ports = [r.service.ports["smtp"] for r in running if isinstance(r.service, EmailService)]
        assert len(ports) == 2
        subjects = [f"hello {i}" for i in range(10)]
        for i, subject in enumerate(subjects):
            _send(ports[i % 2], ANN, subject)

        def inbox(index: int) -> list[str] | None:
            status, page = request(
                running[index].port,
                "GET",
                "/v1/folders/inbox/messages?limit=100",
                token=tokens[index],
            )
            assert status == 200, page
            found = [m["subject"] for m in page["messages"]]
            return found if len(found) >= len(subjects) else None

        for index in (0, 1):
            assert sorted(wait_for(lambda index=index: inbox(index), 30, "the mail")) == sorted(
                subjects
            )
        status, folders = request(running[1].port, "GET", "/v1/folders", token=tokens[1])
        assert status == 200
        assert folders["folders"][0]["total"] == len(subjects)
    finally:
        for one in running:
            one.stop()
    assert not (dirs[0] / DATABASE_FILE).exists()
    check = MailStore(url)
    try:
        assert check.incoming_count() == 0
        assert len(check.message_states()) == len(subjects)
        assert check.users() == [ANN]  # there were users: no demo user
    finally:
        check.close()
