"""The blob stores (local files and S3 on ``sdi serve s3``), their garbage collection, and the
service keeping its blobs in an S3 bucket."""

from __future__ import annotations

import hashlib
import itertools
import os
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdi.email.blobs import (
    Blobs,
    BlobStore,
    S3BlobStore,
    S3Client,
    collect_garbage,
    open_blobs,
)
from sdi.errors import InvalidArgument, StorageError
from sdi.objstore.service import DEV_ACCESS_KEY, DEV_SECRET_KEY
from sdi.objstore.sigv4 import SigV4Error, Verifier
from sdi.testing.email import ANN, BOB, start_mail, wait_for
from sdi.testing.s3 import S3Server, s3_client

_buckets = itertools.count()
#: The garbage collection grace period of the service tests (seconds).
GRACE_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as running:
        yield running


@pytest.fixture(scope="module")
def s3(server: S3Server) -> Any:
    return s3_client(server.url)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"mail-{next(_buckets)}"
    s3.create_bucket(Bucket=name)
    return name


def _s3_store(server: S3Server, bucket: str, **options: Any) -> S3BlobStore:
    client = S3Client(server.url, DEV_ACCESS_KEY, DEV_SECRET_KEY)
    return S3BlobStore(client, bucket, "mail blobs/é/", **options)


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    """Each backend, empty: files in a directory, then a fresh bucket of ``sdi serve s3``."""
    store: Blobs
    if request.param == "local":
        store = BlobStore(tmp_path / "blobs")
    else:
        server = request.getfixturevalue("server")
        store = _s3_store(server, request.getfixturevalue("bucket"), refresh_s=0.0)
    yield store
    store.close()


def test_put_get_exists_and_a_second_put_is_a_no_op(blobs: Blobs) -> None:
    key = blobs.put(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert blobs.get(key) == b"hello"
    assert blobs.exists(key)
    assert blobs.put(b"hello") == key
    assert [k for k, _ in blobs.scan()] == [key]
    empty = blobs.put(b"")
    assert blobs.get(empty) == b""
    assert sorted(k for k, _ in blobs.scan()) == sorted([key, empty])


def test_get_of_a_missing_key(blobs: Blobs) -> None:
    with pytest.raises(FileNotFoundError):
        blobs.get("0" * 64)
    assert not blobs.exists("0" * 64)
    with pytest.raises(InvalidArgument):
        blobs.get("../etc/passwd")


def test_delete(blobs: Blobs) -> None:
    key = blobs.put(b"bye")
    assert blobs.delete(key)
    assert not blobs.exists(key)
    assert list(blobs.scan()) == []


def test_gc_keeps_blobs_in_use_and_young_ones_and_removes_old_orphans(blobs: Blobs) -> None:
    used = blobs.put(b"a message someone has")
    orphans = [blobs.put(b"orphan %d" % i) for i in range(3)]
    time.sleep(1.1)
    young = blobs.put(b"put just now, its row not committed yet")
    report = collect_garbage(blobs, lambda: {used}, grace_s=1.0)
    assert (report.scanned, report.in_use, report.young, report.removed) == (5, 1, 1, 3)
    assert sorted(k for k, _ in blobs.scan()) == sorted([used, young])
    for key in orphans:
        assert not blobs.exists(key)
    assert blobs.get(used) == b"a message someone has"
    # the young one goes once it is old and still unreferenced
    time.sleep(1.1)
    assert collect_garbage(blobs, set, grace_s=1.0).removed == 2
    assert list(blobs.scan()) == []


def test_gc_spares_an_old_blob_put_again_while_it_runs(blobs: Blobs) -> None:
    """A put of bytes already stored between the GC's listing and its sweep (a message whose
    row is about to be committed) is not undone by the sweep."""
    key = blobs.put(b"stored long ago, then delivered again")
    time.sleep(1.1)

    def mark() -> set[str]:
        assert blobs.put(b"stored long ago, then delivered again") == key
        return set()  # its row is not committed yet

    report = collect_garbage(blobs, mark, grace_s=1.0)
    assert (report.removed, report.skipped) == (0, 1)
    assert blobs.get(key) == b"stored long ago, then delivered again"


def _another_process(blobs: Blobs) -> Blobs:
    """The same store as another process sees it: no memory of this one's puts."""
    if isinstance(blobs, BlobStore):
        return BlobStore(blobs.root)
    assert isinstance(blobs, S3BlobStore)
    return S3BlobStore(blobs.client, blobs.bucket, blobs.prefix, refresh_s=0.0)


def test_gc_put_of_an_old_blob_makes_it_young_for_other_processes(blobs: Blobs) -> None:
    key = blobs.put(b"shared bytes")
    time.sleep(1.1)
    blobs.put(b"shared bytes")  # refreshes its age (touch, or an S3 self-copy)
    report = collect_garbage(_another_process(blobs), set, grace_s=1.0)
    assert (report.young, report.removed) == (1, 0)
    assert blobs.exists(key)


def test_gc_spares_an_old_blob_another_process_puts_again_while_it_runs(blobs: Blobs) -> None:
    """The sweep reads a candidate's age again just before deleting it."""
    key = blobs.put(b"old bytes, delivered again elsewhere")
    time.sleep(1.1)
    other = _another_process(blobs)

    def mark() -> set[str]:
        assert other.put(b"old bytes, delivered again elsewhere") == key
        return set()

    report = collect_garbage(blobs, mark, grace_s=1.0)
    assert (report.removed, report.skipped) == (0, 1)
    assert blobs.exists(key)


def test_local_gc_reads_file_ages_and_ignores_temporary_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    old = store.put(b"old")
    past = time.time() - 7200
    os.utime(store.path(old), (past, past))
    (store.path(old).parent / ".tmp-leftover").write_bytes(b"x")
    (tmp_path / "README").write_text("not a blob")
    fresh = BlobStore(tmp_path)  # nothing remembered: only the file ages count
    assert [(k, round(age / 100)) for k, age in fresh.scan()] == [(old, 72)]
    assert collect_garbage(fresh, set, grace_s=3600).removed == 1
    assert not store.path(old).exists()
    assert (store.path(old).parent / ".tmp-leftover").exists()


def test_s3_put_of_an_existing_blob_uploads_nothing(server: S3Server, bucket: str) -> None:
    store = _s3_store(server, bucket)  # refresh_s 600: a young blob is left as it is
    calls: list[tuple[str, int]] = []
    request = store.client.request

    def spy(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, len(kwargs.get("body", b""))))
        return request(method, *args, **kwargs)

    store.client.request = spy  # type: ignore[method-assign]
    store.put(b"x" * 1000)
    assert calls == [("HEAD", 0), ("PUT", 1000)]
    calls.clear()
    store.put(b"x" * 1000)
    assert calls == [("HEAD", 0)]


def test_s3_objects_are_prefix_and_sha256_and_scan_follows_continuation_tokens(
    server: S3Server, s3: Any, bucket: str
) -> None:
    store = _s3_store(server, bucket, page_keys=2)
    keys = sorted(store.put(b"blob %d" % i) for i in range(5))
    s3.put_object(Bucket=bucket, Key="mail blobs/é/not-a-blob", Body=b"x")
    s3.put_object(Bucket=bucket, Key="elsewhere/" + keys[0], Body=b"x")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="mail blobs/é/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(
        ["mail blobs/é/not-a-blob"] + ["mail blobs/é/" + k for k in keys]
    )
    body = s3.get_object(Bucket=bucket, Key="mail blobs/é/" + keys[0])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == keys[0]
    assert sorted(k for k, _ in store.scan()) == keys


def test_s3_signing_is_what_sdis_server_checks(server: S3Server) -> None:
    client = S3Client("http://127.0.0.1:8790", DEV_ACCESS_KEY, DEV_SECRET_KEY)
    body = b"payload"
    digest = hashlib.sha256(body).hexdigest()
    path, query = "/bucket/a%20key/%C3%A9", "list-type=2&prefix=a%2Fb"
    now = time.time()
    headers = client.sign("PUT", path, query, {"x-amz-meta-a": " x  y "}, digest, now=now)
    verifier = Verifier({DEV_ACCESS_KEY: DEV_SECRET_KEY})
    verified = verifier.verify("PUT", path, query, headers, body, now=now)
    assert (verified.access_key, verified.payload_signed) == (DEV_ACCESS_KEY, True)
    wrong = S3Client("http://127.0.0.1:8790", DEV_ACCESS_KEY, "not-the-secret")
    forged = wrong.sign("PUT", path, query, {}, digest, now=now)
    with pytest.raises(SigV4Error) as refused:
        verifier.verify("PUT", path, query, forged, body, now=now)
    assert refused.value.code == "SignatureDoesNotMatch"
    with pytest.raises(SigV4Error) as tampered:
        verifier.verify("PUT", path, query, headers, b"other bytes", now=now)
    assert tampered.value.code == "XAmzContentSHA256Mismatch"


def test_s3_wrong_secret_is_refused_with_what_to_fix(server: S3Server, bucket: str) -> None:
    client = S3Client(server.url, DEV_ACCESS_KEY, "not-the-secret")
    store = S3BlobStore(client, bucket)
    with pytest.raises(StorageError, match="blob-secret-key"):
        store.check()
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        store.scan().__next__()
    with pytest.raises(StorageError, match="refused the credentials"):
        store.put(b"x")


def test_s3_missing_bucket_and_endpoint_down(server: S3Server) -> None:
    store = S3BlobStore(S3Client(server.url, DEV_ACCESS_KEY, DEV_SECRET_KEY), "no-such-bucket")
    with pytest.raises(StorageError, match=r"does not exist.*s3 mb s3://no-such-bucket"):
        store.check()
    with pytest.raises(StorageError, match="does not exist"):
        store.put(b"x")
    down = S3BlobStore(S3Client("http://127.0.0.1:9", "a", "b"), "mail")
    with pytest.raises(StorageError, match=r"cannot reach the object store.*sdi serve s3"):
        down.check()


def test_open_blobs_reads_the_url_and_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_blobs(None, tmp_path / "a"), BlobStore)
    local = open_blobs(f"file://{tmp_path / 'b'}", tmp_path / "a")
    assert isinstance(local, BlobStore)
    assert local.root == tmp_path / "b"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(InvalidArgument, match="AWS_ACCESS_KEY_ID"):
        open_blobs("s3://mail", tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    store = open_blobs("s3://mail/p/?endpoint=https://s3.example:9000&region=eu-1", tmp_path)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.client.endpoint) == (
        "mail", "p/", "https://s3.example:9000",
    )  # fmt: skip
    assert (store.client.access_key, store.client.region) == ("id", "eu-1")
    given = open_blobs("s3://mail", tmp_path, access_key="k", secret_key="s")
    assert isinstance(given, S3BlobStore)
    assert given.client.endpoint == "http://127.0.0.1:8790"
    assert given.client.secret_key == "s"
    for bad in ("ftp://x", "s3://", "s3://b?endpointt=x", "s3://b?endpoint=nowhere"):
        with pytest.raises(InvalidArgument):
            open_blobs(bad, tmp_path, access_key="k", secret_key="s")


# -- the service ------------------------------------------------------------------


def _send(port: int, rcpts: list[str], subject: str) -> None:
    data = (
        f"From: Carol <carol@far.example>\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@far.example>\r\n\r\nHello there.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port) as client:
        assert client.sendmail("carol@far.example", rcpts, data.encode()) == {}


def _objects(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_mail_over_smtp_lands_in_the_bucket_and_is_freed_after_its_messages_go(
    server: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    mail = start_mail(
        tmp_path / "mail",
        blob_url=f"s3://{bucket}/mail/?endpoint={server.url}",
        blob_access_key=DEV_ACCESS_KEY,
        blob_secret_key=DEV_SECRET_KEY,
        blob_gc_interval_s=0.2,
        # Well over a put-to-commit on a loaded machine: a shorter grace period
        # collects a blob whose message is still being stored (the GC's premise).
        blob_gc_grace_s=GRACE_S,
    )
    try:
        _send(mail.smtp, [ANN, BOB], "to both")
        ann = mail.wait_messages(1)
        bob = mail.wait_messages(1, user=BOB)
        objects = _objects(s3, bucket)
        assert len(objects) == 1  # one raw message, two recipients: one blob
        ((name, data),) = objects.items()
        assert name == "mail/" + hashlib.sha256(data).hexdigest()
        assert mail.raw(ann[0]["id"]) == data
        assert mail.raw(bob[0]["id"], user=BOB) == data
        status, message = mail.api("GET", f"/v1/messages/{ann[0]['id']}")
        assert (status, message["body"].strip()) == (200, "Hello there.")
        assert not any((tmp_path / "mail" / "blobs").rglob("*"))  # nothing on local disk
        # deleting one message keeps the blob (the other still names it) ...
        assert mail.api("DELETE", f"/v1/messages/{ann[0]['id']}")[0] == 204
        time.sleep(GRACE_S + 0.5)
        assert len(_objects(s3, bucket)) == 1
        assert mail.raw(bob[0]["id"], user=BOB) == data
        # ... deleting the last one frees it
        assert mail.api("DELETE", f"/v1/messages/{bob[0]['id']}", user=BOB)[0] == 204
        wait_for(lambda: not _objects(s3, bucket), 10, "the blob to be collected")
        wait_for(lambda: mail.service.blob_gc_removed == 1, 10, "the GC's report")
        assert mail.service.blob_gc_last is not None
    finally:
        mail.running.stop()


def test_a_local_blob_is_freed_once_its_message_is_deleted(tmp_path: Path) -> None:
    mail = start_mail(tmp_path / "mail", blob_gc_interval_s=0.2, blob_gc_grace_s=GRACE_S)
    try:
        _send(mail.smtp, [ANN], "just ann")
        (message,) = mail.wait_messages(1)
        files: Callable[[], list[Path]] = lambda: [  # noqa: E731
            p for p in (tmp_path / "mail" / "blobs").rglob("*") if p.is_file()
        ]
        assert len(files()) == 1
        time.sleep(GRACE_S + 0.5)
        assert len(files()) == 1  # in use: kept however old
        assert mail.api("DELETE", f"/v1/messages/{message['id']}")[0] == 204
        wait_for(lambda: not files(), 10, "the blob file to be collected")
    finally:
        mail.running.stop()


def test_the_service_refuses_to_start_on_a_missing_bucket(server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        start_mail(
            tmp_path / "mail",
            blob_url=f"s3://absent/?endpoint={server.url}",
            blob_access_key=DEV_ACCESS_KEY,
            blob_secret_key=DEV_SECRET_KEY,
        )


def test_reads_answer_503_with_what_to_do_while_the_object_store_is_down(
    tmp_path: Path,
) -> None:
    own = S3Server(tmp_path / "s3").__enter__()
    running = True
    try:
        s3_client(own.url).create_bucket(Bucket="mail")
        mail = start_mail(
            tmp_path / "mail",
            blob_url=f"s3://mail/?endpoint={own.url}",
            blob_access_key=DEV_ACCESS_KEY,
            blob_secret_key=DEV_SECRET_KEY,
        )
        try:
            _send(mail.smtp, [ANN], "before the outage")
            (message,) = mail.wait_messages(1)
            own.__exit__()
            running = False
            status, body = mail.api("GET", f"/v1/messages/{message['id']}")
            assert status == 503
            assert "cannot reach the object store" in body["error"]
        finally:
            mail.running.stop()
    finally:
        if running:
            own.__exit__()
