"""The S3 metadata store: bucket rules, object rows, and listings against a model.

Every store test runs on both backends: SQLite and a PostgreSQL server
started once for the module (a fresh database per test, whose default
collation is ICU's en-US so that only ``COLLATE "C"`` gives byte order).
The PostgreSQL-only tests cover several servers sharing one database, the
refusal of NUL in keys, and losing and regaining the database.
"""

from __future__ import annotations

import itertools
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.objstore.metadata import (
    Metadata,
    ObjectRecord,
    Part,
    S3Error,
    check_bucket_name,
    check_key,
)
from sdi.testing.servers import PostgresServer, free_port, missing, require_postgres

#: createdb options for a database whose default collation is not byte order.
_ICU_DATABASE = ("--template=template0", "--locale-provider=icu", "--icu-locale=en-US")

Opener = Callable[[], Metadata]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the module (skipped, or failed under CI=true, if missing)."""
    bindir = require_postgres()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install 'psycopg[binary]')", "driver")
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store keeps its rows: a SQLite file, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return str(tmp_path / "m.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(options=_ICU_DATABASE)


@pytest.fixture
def reopen(target: str) -> Iterator[Opener]:
    """Opens a store on the test's database; each call is a new one (a restart, or a server)."""
    opened: list[Metadata] = []

    def open_store() -> Metadata:
        store = Metadata(target)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> Iterator[Metadata]:
    """One store for the test: SQLite in memory, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        opened = Metadata(":memory:")
    else:
        opened = Metadata(request.getfixturevalue("target"))
    yield opened
    opened.close()


def _record(bucket: str, key: str, data_id: str = "d") -> ObjectRecord:
    return ObjectRecord(bucket, key, 3, "0" * 32, "text/plain", data_id, {"a": "b"})


_BUCKETS = (f"bucket-{n}" for n in itertools.count())


@pytest.mark.parametrize(
    "name", ["abc", "my-bucket", "my.bucket.1", "0-0", "a" * 63, "192.168.1.1a"]
)
def test_valid_bucket_names(name: str) -> None:
    check_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Abc",
        "a_b",
        "-ab",
        "ab-",
        ".ab",
        "a..b",
        "a.-b",
        "a-.b",
        "10.0.0.1",
        "xn--abc",
        "sthree-abc",
        "abc-s3alias",
        "abc--ol-s3",
        "a b",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as error:
        check_bucket_name(name)
    assert (error.value.code, error.value.status) == ("InvalidBucketName", 400)


def test_key_length_is_counted_in_utf8_bytes() -> None:
    check_key("k" * 1024)
    check_key("é" * 512)
    for key in ("k" * 1025, "é" * 513):
        with pytest.raises(S3Error) as error:
            check_key(key)
        assert error.value.code == "KeyTooLongError"


def test_buckets_and_objects_persist(reopen: Opener, backend: str) -> None:
    store = reopen()
    assert store.backend == backend
    store.create_bucket("photos", owner="sdi")
    with pytest.raises(S3Error) as error:
        store.create_bucket("photos", owner="sdi")
    assert error.value.code == "BucketAlreadyOwnedByYou"
    with pytest.raises(S3Error) as error:
        store.create_bucket("photos", owner="someone-else")
    assert error.value.code == "BucketAlreadyExists"
    assert store.put_object(_record("photos", "k", "data-1")).replaced == []
    assert store.put_object(_record("photos", "k", "data-2")).replaced == ["data-1"]
    with pytest.raises(S3Error) as error:
        store.put_object(_record("nope", "k"))
    assert error.value.code == "NoSuchBucket"
    with pytest.raises(S3Error) as error:
        store.set_versioning("nope", "Enabled")
    assert error.value.code == "NoSuchBucket"
    store.close()
    store = reopen()
    record = store.get_object("photos", "k")
    assert (record.data_id, record.user_meta, record.size) == ("data-2", {"a": "b"}, 3)
    assert record.created_ms > 0
    with pytest.raises(S3Error) as error:
        store.delete_bucket("photos")
    assert (error.value.code, error.value.status) == ("BucketNotEmpty", 409)
    assert store.delete_object("photos", "k").data_ids == ["data-2"]
    assert store.delete_object("photos", "k").data_ids == []
    with pytest.raises(S3Error) as error:
        store.get_object("photos", "k")
    assert error.value.code == "NoSuchKey"
    store.delete_bucket("photos")
    with pytest.raises(S3Error) as error:
        store.get_object("photos", "k")
    assert error.value.code == "NoSuchBucket"
    assert store.list_buckets() == []
    store.close()


def test_keys_list_in_utf8_byte_order(store: Metadata) -> None:
    """Byte order, not a language's collation nor UTF-16's (U+FFFF sorts before U+1F600)."""
    keys = ["b", "B", "a-b", "a/b", "ab", "é", "f", "\uffff", "\U0001f600", "z", "Z", "0"]
    keys += ["a/\U0010ffff", "a/\U0010ffffz", "a\U0010ffff", "\U0010ffff"]
    store.create_bucket("bucket", owner="sdi")
    for key in keys:
        store.put_object(_record("bucket", key))
    expected = sorted(keys, key=lambda key: key.encode())
    assert [r.key for r in store.list_objects("bucket").contents] == expected
    assert [r.key for r in store.list_versions("bucket").versions] == expected
    after = expected[expected.index("a/b") + 1 :]
    assert [r.key for r in store.list_objects("bucket", after="a/b").contents] == after
    listing = store.list_objects("bucket", delimiter="/", after="Z", max_keys=2)
    assert ([r.key for r in listing.contents], listing.prefixes) == (["a-b"], ["a/"])
    rolled = [key for key in expected if not key.startswith("a/")]
    listing = store.list_objects("bucket", delimiter="/")
    assert ([r.key for r in listing.contents], listing.prefixes) == (rolled, ["a/"])
    versions = store.list_versions("bucket", delimiter="/")
    assert ([r.key for r in versions.versions], versions.prefixes) == (rolled, ["a/"])
    for key in keys:
        store.create_upload("bucket", key, content_type="", user_meta={})
    assert [u.key for u in store.list_uploads("bucket").uploads] == expected


def _model(keys: list[str], prefix: str, delimiter: str, after: str) -> list[tuple[str, bool]]:
    """Every entry a full listing returns, as (key or common prefix, is_prefix)."""
    entries: list[tuple[str, bool]] = []
    for key in sorted(set(keys)):
        if not key.startswith(prefix) or key <= after:
            continue
        at = key.find(delimiter, len(prefix)) if delimiter else -1
        if at >= 0:
            common = key[: at + len(delimiter)]
            if common <= after:
                continue
            if not entries or entries[-1] != (common, True):
                entries.append((common, True))
        else:
            entries.append((key, False))
    return entries


#: Byte order differs from ICU's (B) and needs all of UTF-8 (U+10FFFF, the last character).
_KEY = st.text(alphabet="ab/-éB\U0010ffff", min_size=1, max_size=6)
#: The model tests make one store per test and a fresh bucket per example.
_MODEL_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings(_MODEL_SETTINGS, max_examples=150)
@given(
    keys=st.lists(_KEY, max_size=30),
    prefix=st.sampled_from(["", "a", "a/", "b/", "é"]),
    delimiter=st.sampled_from(["", "/", "-", "a/"]),
    page=st.integers(1, 7),
)
def test_listing_pages_match_a_model(
    store: Metadata, keys: list[str], prefix: str, delimiter: str, page: int
) -> None:
    bucket = next(_BUCKETS)
    store.create_bucket(bucket, owner="sdi")
    for key in keys:
        store.put_object(_record(bucket, key))
    expected = _model(keys, prefix, delimiter, "")
    seen: list[tuple[str, bool]] = []
    after = ""
    for _ in range(100):
        listing = store.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, max_keys=page, after=after
        )
        got = [(r.key, False) for r in listing.contents] + [(p, True) for p in listing.prefixes]
        assert len(got) <= page
        seen += sorted(got)
        if not listing.truncated:
            break
        assert listing.next_marker is not None
        after = listing.next_marker
    assert seen == expected


_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "drop"]), st.sampled_from(["a", "b/1", "b/2", "c"]),
              st.integers(0, 5)),
    max_size=25,
)  # fmt: skip


@settings(_MODEL_SETTINGS, max_examples=100)
@given(ops=_OPS, page=st.integers(1, 5), suspend_at=st.integers(0, 30))
def test_versions_match_a_model(
    store: Metadata, ops: list[tuple[str, str, int]], page: int, suspend_at: int
) -> None:
    """Puts, deletes and version drops in a versioned bucket against a list-of-versions model."""
    bucket = next(_BUCKETS)
    store.create_bucket(bucket, owner="sdi")
    store.set_versioning(bucket, "Enabled")
    model: dict[
        str, list[tuple[str, bool, str]]
    ] = {}  # key -> [(version, marker, data)] newest first
    counter = 0
    for step, (op, key, pick) in enumerate(ops):
        if step == suspend_at:
            store.set_versioning(bucket, "Suspended")
        suspended = step >= suspend_at
        versions = model.setdefault(key, [])
        if op == "drop" and versions:
            version = versions[pick % len(versions)][0]
            store.delete_object(bucket, key, version)
            versions[:] = [v for v in versions if v[0] != version]
            continue
        if op == "drop":
            continue
        counter += 1
        data = f"d{counter}"
        if op == "put":
            put = store.put_object(_record(bucket, key, data))
            entry = (put.version_id, False, data)
        else:
            deleted = store.delete_object(bucket, key)
            assert deleted.delete_marker
            assert deleted.version_id is not None
            entry = (deleted.version_id, True, "")
        if suspended:
            assert entry[0] == "null"
            versions[:] = [v for v in versions if v[0] != "null"]
        versions.insert(0, entry)
    expected = [
        (key, version, marker) for key in sorted(model) for version, marker, _ in model[key]
    ]
    seen: list[tuple[str, str, bool]] = []
    key_marker = version_marker = ""
    for _ in range(200):
        listing = store.list_versions(
            bucket, max_keys=page, key_marker=key_marker, version_marker=version_marker
        )
        seen += [(r.key, r.version_id, r.delete_marker) for r in listing.versions]
        if not listing.truncated:
            break
        key_marker = listing.next_key_marker or ""
        version_marker = listing.next_version_marker or ""
    assert seen == expected
    for key, versions in model.items():
        if not versions or versions[0][1]:
            with pytest.raises(S3Error) as error:
                store.get_object(bucket, key)
            assert error.value.code == "NoSuchKey"
        else:
            assert store.get_object(bucket, key).data_id == versions[0][2]
        for version, marker, data in versions:
            if not marker:
                assert store.get_object(bucket, key, version).data_id == data


def test_multipart_rows(reopen: Opener) -> None:
    store = reopen()
    store.create_bucket("b-1", owner="sdi")
    upload = store.create_upload("b-1", "k", content_type="text/plain", user_meta={"x": "y"})
    assert store.put_part("b-1", "k", upload.upload_id, Part(1, "p1", 10, "a" * 32, 1)) == []
    assert store.put_part("b-1", "k", upload.upload_id, Part(1, "p1b", 10, "b" * 32, 2)) == ["p1"]
    store.put_part("b-1", "k", upload.upload_id, Part(2, "p2", 4, "c" * 32, 3))
    store.put_part("b-1", "k", upload.upload_id, Part(3, "p3", 4, "d" * 32, 4))
    assert store.referenced_data_ids() == {"p1b", "p2", "p3"}
    _, parts, truncated = store.list_parts("b-1", "k", upload.upload_id, max_parts=2)
    assert ([p.data_id for p in parts], truncated) == (["p1b", "p2"], True)
    record, put = store.complete_upload(
        "b-1", "k", upload.upload_id, [(1, "b" * 32), (3, "d" * 32)], part_bytes_min=10
    )
    assert record.parts == (("p1b", 10), ("p3", 4))
    assert record.size == 14
    assert record.etag.endswith("-2")
    assert put.replaced == ["p2"]  # the part left out
    with pytest.raises(S3Error) as error:
        store.abort_upload("b-1", "k", upload.upload_id)
    assert error.value.code == "NoSuchUpload"
    store.close()
    store = reopen()  # and it persists
    got = store.get_object("b-1", "k")
    assert (got.segments, got.user_meta, got.content_type) == (
        (("p1b", 10), ("p3", 4)),
        {"x": "y"},
        "text/plain",
    )
    assert store.referenced_data_ids() == {"p1b", "p3"}
    assert store.delete_object("b-1", "k").data_ids == ["p1b", "p3"]
    old = store.create_upload("b-1", "old", content_type="", user_meta={})
    store.put_part("b-1", "old", old.upload_id, Part(1, "q", 1, "e" * 32, 1))
    assert store.expire_uploads(old.created_ms) == (0, [])
    assert store.expire_uploads(old.created_ms + 1) == (1, ["q"])
    gone = store.create_upload("b-1", "gone", content_type="", user_meta={})
    store.put_part("b-1", "gone", gone.upload_id, Part(1, "r", 1, "f" * 32, 1))
    assert store.delete_bucket("b-1") == ["r"]  # unfinished uploads go with the bucket
    store.close()


def test_nul_in_keys(store: Metadata, backend: str) -> None:
    """SQLite stores a key holding NUL; PostgreSQL's text cannot, so it is refused."""
    store.create_bucket("bucket", owner="sdi")
    if backend == "sqlite":
        store.put_object(_record("bucket", "a\x00b"))
        assert store.get_object("bucket", "a\x00b").key == "a\x00b"
        return
    calls: list[Callable[[], object]] = [
        lambda: store.put_object(_record("bucket", "a\x00b")),
        lambda: store.get_object("bucket", "a\x00b"),
        lambda: store.delete_object("bucket", "\x00"),
        lambda: store.list_objects("bucket", prefix="a\x00"),
        lambda: store.create_upload("bucket", "a\x00b", content_type="", user_meta={}),
    ]
    for call in calls:
        with pytest.raises(S3Error) as error:
            call()
        assert (error.value.code, error.value.status) == ("InvalidArgument", 400)
        assert "NUL" in error.value.message
    assert store.list_objects("bucket").contents == []
    store.put_object(_record("bucket", "a"))  # the store still works


def test_old_sqlite_files_are_migrated(tmp_path: Path) -> None:
    """A file from before parts, seq and durability: its versions keep their order."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE buckets (name TEXT PRIMARY KEY, owner TEXT NOT NULL,
            created_ms INTEGER NOT NULL, versioning TEXT NOT NULL DEFAULT 'Unversioned');
        CREATE TABLE objects (bucket TEXT NOT NULL, key TEXT NOT NULL, version_id TEXT NOT NULL,
            is_latest INTEGER NOT NULL, delete_marker INTEGER NOT NULL DEFAULT 0,
            size INTEGER NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL,
            user_meta TEXT NOT NULL, created_ms INTEGER NOT NULL, data_id TEXT,
            PRIMARY KEY (bucket, key, version_id));
        INSERT INTO buckets VALUES ('old', 'sdi', 1, 'Enabled');
        INSERT INTO objects VALUES ('old', 'k', '11111111111111111111111111111111', 0, 0, 1,
            'e', 't', '{}', 1, 'd1');
        INSERT INTO objects VALUES ('old', 'k', '22222222222222222222222222222222', 1, 0, 1,
            'e', 't', '{}', 2, 'd2');
        """
    )
    db.close()
    store = Metadata(path)
    assert store.bucket("old").durability == "replicas-1"
    versions = store.list_versions("old").versions
    assert [v.data_id for v in versions] == ["d2", "d1"]
    store.delete_object("old", "k", versions[0].version_id)
    assert store.get_object("old", "k").data_id == "d1"  # the newest left is the latest
    put = store.put_object(_record("old", "k", "d3"))
    assert [v.version_id for v in store.list_versions("old").versions] == [
        put.version_id,
        versions[1].version_id,
    ]
    store.close()


# -- PostgreSQL only ----------------------------------------------------------


def test_postgres_urls_need_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r"pip install 'psycopg\[binary\]'"):
        Metadata("postgresql://postgres@127.0.0.1:1/sdi")


def test_an_unreachable_database_is_service_unavailable() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/sdi"
    with pytest.raises(S3Error) as error:
        Metadata(url, connect_timeout=1)
    assert (error.value.code, error.value.status) == ("ServiceUnavailable", 503)


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh database on the module's PostgreSQL server."""
    return postgres.create_database()


@pytest.fixture
def two_servers(pg_url: str) -> Iterator[tuple[Metadata, Metadata]]:
    """Two stores on one PostgreSQL database, as two S3 API servers sharing it."""
    first = Metadata(pg_url, pool_size=2)
    second = Metadata(pg_url, pool_size=2)
    yield first, second
    first.close()
    second.close()


def _latest_rows_per_key(url: str) -> dict[tuple[str, str], int]:
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT bucket, key, SUM(is_latest) FROM objects GROUP BY bucket, key"
        ).fetchall()
    return {(bucket, key): int(latest) for bucket, key, latest in rows}


def test_servers_sharing_postgres_keep_one_latest_version_per_key(
    pg_url: str, two_servers: tuple[Metadata, Metadata]
) -> None:
    """Two stores (two API servers), four threads writing the same keys at once."""
    servers = list(two_servers)
    servers[0].create_bucket("versioned", owner="sdi")
    servers[0].set_versioning("versioned", "Enabled")
    servers[1].create_bucket("plain", owner="sdi")
    keys = ["k0", "k1", "k2"]
    threads, rounds = 4, 25
    start = threading.Barrier(threads)
    written: Counter[str] = Counter()  # versions written per key

    def work(thread: int) -> tuple[list[str], Counter[str]]:
        store = servers[thread % 2]
        dropped: list[str] = []
        writes: Counter[str] = Counter()
        start.wait()
        for i in range(rounds):
            key = keys[(i + thread) % len(keys)]
            store.put_object(_record("versioned", key, f"t{thread}-{i}"))
            dropped += store.put_object(_record("plain", key, f"t{thread}-{i}")).replaced
            writes[key] += 1
            if i % 5 == 2:
                assert store.delete_object("versioned", key).delete_marker
                writes[key] += 1
        return dropped, writes

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    dropped = [data_id for ids, _ in results for data_id in ids]
    for _, writes in results:
        written.update(writes)
    assert set(_latest_rows_per_key(pg_url).values()) == {1}
    # Unversioned: one row per key, and every other data id reported replaced once.
    current = {r.key: r.data_id for r in servers[1].list_versions("plain").versions}
    assert sorted(current) == keys
    assert len(dropped) == len(set(dropped))
    everything = {f"t{t}-{i}" for t in range(threads) for i in range(rounds)}
    assert set(dropped) | set(current.values()) == everything
    assert not set(dropped) & set(current.values())
    # Versioned: every write kept, newest first, one latest, each thread's in its order.
    versions = servers[0].list_versions("versioned").versions
    assert Counter(v.key for v in versions) == written
    for key in keys:
        mine = [v for v in versions if v.key == key]
        assert [v.is_latest for v in mine] == [True] + [False] * (len(mine) - 1)
        seqs = [int(v.version_id[:12], 16) for v in mine]
        assert seqs == sorted(seqs, reverse=True)
        assert len(set(seqs)) == len(seqs)
        for thread in range(threads):
            order = [
                int(v.data_id.split("-")[1]) for v in mine if v.data_id.startswith(f"t{thread}-")
            ]
            assert order == sorted(order, reverse=True)
        latest = mine[0]
        for store in servers:
            if latest.delete_marker:
                with pytest.raises(S3Error):
                    store.get_object("versioned", key)
            else:
                assert store.get_object("versioned", key).data_id == latest.data_id


def _finish(
    op: str, store: Metadata, key: str, upload_id: str, race: threading.Barrier
) -> tuple[str, list[str]]:
    """Completes or aborts the upload once both racers are ready: who won, and what it dropped."""
    race.wait()
    try:
        if op == "complete":
            return op, store.complete_upload("bucket", key, upload_id, [(1, "a" * 32)])[1].replaced
        return op, store.abort_upload("bucket", key, upload_id)
    except S3Error as error:
        return error.code, []


def test_racing_complete_and_abort_of_one_upload_one_wins(
    pg_url: str, two_servers: tuple[Metadata, Metadata]
) -> None:
    """Of a complete and an abort (or two completes) on two servers, exactly one wins."""
    a, b = two_servers
    a.create_bucket("bucket", owner="sdi")
    with ThreadPoolExecutor(2) as pool:
        for n in range(16):
            key = f"k{n}"
            upload = a.create_upload("bucket", key, content_type="", user_meta={})
            b.put_part("bucket", key, upload.upload_id, Part(1, f"p{n}", 1, "a" * 32, 1))
            race = threading.Barrier(2)
            second = "complete" if n % 4 == 0 else "abort"  # sometimes two completes race
            futures = [
                pool.submit(_finish, op, store, key, upload.upload_id, race)
                for op, store in (("complete", a), (second, b))
            ]
            outcomes = sorted(future.result() for future in futures)
            assert [code for code, _ in outcomes].count("NoSuchUpload") == 1, outcomes
            (winner, dropped), *_ = (o for o in outcomes if o[0] != "NoSuchUpload")
            if winner == "complete":
                assert dropped == []
                assert a.get_object("bucket", key).parts == ((f"p{n}", 1),)
            else:
                assert dropped == [f"p{n}"]
    assert a.list_uploads("bucket").uploads == []
    assert set(_latest_rows_per_key(pg_url).values()) == {1}


def test_losing_and_regaining_postgres(postgres: PostgresServer) -> None:
    """503 while the server is down; pooled connections from before a restart are replaced."""
    store = Metadata(postgres.create_database(), connect_timeout=1)
    try:
        store.create_bucket("bucket", owner="sdi")
        store.put_object(_record("bucket", "k", "d1"))
        postgres.restart()  # the pool's idle connection is dead now: callers do not notice
        assert store.get_object("bucket", "k").data_id == "d1"
        postgres.restart()
        assert store.put_object(_record("bucket", "k", "d2")).replaced == ["d1"]
        postgres.shutdown()
        try:
            calls: list[Callable[[], object]] = [
                lambda: store.get_object("bucket", "k"),
                lambda: store.put_object(_record("bucket", "k", "d3")),
                store.list_buckets,
                lambda: store.list_objects("bucket"),
            ]
            for call in calls:
                with pytest.raises(S3Error) as error:
                    call()
                assert (error.value.code, error.value.status) == ("ServiceUnavailable", 503)
                assert "metadata database is unavailable" in error.value.message
        finally:
            postgres.restart()
        assert store.get_object("bucket", "k").data_id == "d2"
        assert store.put_object(_record("bucket", "k", "d4")).replaced == ["d2"]
    finally:
        store.close()
