"""The S3 service end to end with boto3: every operation, presigned URLs, bad input."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from sdi.objstore.service import DEV_ACCESS_KEY, DEV_SECRET_KEY  # noqa: E402
from sdi.testing.s3 import S3Server, error_code, s3_client  # noqa: E402


def _code(error: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return error_code(error.value)


def test_buckets_create_list_head_delete(s3: Any) -> None:
    s3.create_bucket(Bucket="alpha")
    s3.create_bucket(Bucket="beta.two")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert {"alpha", "beta.two"} <= set(names)
    assert names == sorted(names)
    assert s3.head_bucket(Bucket="alpha")["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as error:
        s3.create_bucket(Bucket="alpha")
    assert _code(error) == ("BucketAlreadyOwnedByYou", 409)
    s3.put_object(Bucket="alpha", Key="k", Body=b"x")
    with pytest.raises(ClientError) as error:
        s3.delete_bucket(Bucket="alpha")
    assert _code(error) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="alpha", Key="k")
    s3.delete_bucket(Bucket="alpha")
    with pytest.raises(ClientError) as error:
        s3.head_bucket(Bucket="alpha")
    assert _code(error) == ("404", 404)
    with pytest.raises(ClientError) as error:
        s3.delete_bucket(Bucket="alpha")
    assert _code(error) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as error:
        s3.list_objects_v2(Bucket="alpha")
    assert _code(error) == ("NoSuchBucket", 404)
    s3.create_bucket(Bucket="gamma", CreateBucketConfiguration={"LocationConstraint": "us-east-1"})


@pytest.mark.parametrize("name", ["ab", "UPPER", "a_b", "-ab", "a..b", "192.168.1.1", "x" * 64])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    with pytest.raises(ClientError) as error:
        s3.create_bucket(Bucket=name)
    assert _code(error) == ("InvalidBucketName", 400)


def test_malformed_create_bucket_xml(server: S3Server) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b"<CreateBucketConfiguration><LocationConstraint>"
    request = AWSRequest("PUT", f"{server.url}/broken-xml", data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(
        prepared.url, data=body, headers=dict(prepared.headers), method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(http_request, timeout=10)
    assert error.value.code == 400
    assert b"<Code>MalformedXML</Code>" in error.value.read()
    with pytest.raises(ClientError):
        s3_client(server.url).head_bucket(Bucket="broken-xml")


def test_put_get_head_delete_object(s3: Any, bucket: str) -> None:
    body = b"hello, object storage"
    put = s3.put_object(
        Bucket=bucket,
        Key="dir/hello.txt",
        Body=body,
        ContentType="text/plain",
        Metadata={"colour": "blue", "owner": "ada"},
    )
    etag = f'"{hashlib.md5(body).hexdigest()}"'
    assert put["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == body
    assert got["ETag"] == etag
    assert got["ContentType"] == "text/plain"
    assert got["ContentLength"] == len(body)
    assert got["Metadata"] == {"colour": "blue", "owner": "ada"}
    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == etag
    assert head["Metadata"] == {"colour": "blue", "owner": "ada"}
    # Overwrite, then delete.
    s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"v2")
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"v2"
    assert got["ContentType"] == "binary/octet-stream"
    assert got["Metadata"] == {}
    deleted = s3.delete_object(Bucket=bucket, Key="dir/hello.txt")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert _code(error) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert _code(error) == ("404", 404)
    # Deleting a missing key is not an error; a missing bucket is.
    s3.delete_object(Bucket=bucket, Key="never-there")
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    assert _code(error) == ("NoSuchBucket", 404)


def test_odd_keys_and_empty_objects(s3: Any, bucket: str) -> None:
    keys = ["a b+c", "ünïcödé/ключ", "100%", "q?x=1&y", "tilde~/~", "sp  aces ", "a/../b"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted([*keys, "empty"], key=lambda k: k.encode())
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert _code(error) == ("KeyTooLongError", 400)
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")


def test_content_md5_bad_digest_stores_nothing(s3: Any, bucket: str) -> None:
    body = b"checked bytes"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="good", Body=body, ContentMD5=good)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ContentMD5=wrong)
    assert _code(error) == ("BadDigest", 400)
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ContentMD5="not-base64!")
    assert _code(error) == ("InvalidDigest", 400)
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ChecksumCRC32="AAAAAA==")
    assert _code(error) == ("BadDigest", 400)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["good"]


def test_ranges(s3: Any, bucket: str) -> None:
    body = bytes(range(256)) * 4
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == "bytes 10-19/1024"
    assert got["Body"].read() == body[10:20]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=1000-")["Body"].read() == body[1000:]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == body[-5:]
    assert (
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=1020-5000")["Body"].read()
        == (body[1020:])
    )
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=1024-2000")
    assert _code(error) == ("InvalidRange", 416)
    head = s3.head_object(Bucket=bucket, Key="r", Range="bytes=0-99")
    assert head["ContentLength"] == 100


def test_list_objects_v2_prefix_delimiter_pages(s3: Any, bucket: str) -> None:
    keys = [f"photos/2026/{n:03d}.jpg" for n in range(25)]
    keys += [f"photos/2025/{n}.jpg" for n in range(3)]
    keys += ["photos/readme", "videos/a.mp4", "videos/b.mp4", "top.txt"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys)
    assert everything["KeyCount"] == len(keys)
    assert everything["IsTruncated"] is False
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["photos/", "videos/"]
    assert [o["Key"] for o in top["Contents"]] == ["top.txt"]
    inner = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["photos/2025/", "photos/2026/"]
    assert [o["Key"] for o in inner["Contents"]] == ["photos/readme"]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="photos/2026/", MaxKeys=10)
    assert page["IsTruncated"] is True
    assert page["KeyCount"] == 10
    after = s3.list_objects_v2(
        Bucket=bucket, Prefix="photos/2026/", ContinuationToken=page["NextContinuationToken"]
    )
    assert [o["Key"] for o in page["Contents"] + after["Contents"]] == sorted(keys[:25])
    started = s3.list_objects_v2(Bucket=bucket, StartAfter="videos/a.mp4")
    assert [o["Key"] for o in started["Contents"]] == ["videos/b.mp4"]
    paginator = s3.get_paginator("list_objects_v2")
    seen: list[str] = []
    prefixes: list[str] = []
    pages = 0
    for one in paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 4}):
        pages += 1
        seen += [o["Key"] for o in one.get("Contents", [])]
    assert seen == sorted(keys)
    assert pages == 8
    for one in paginator.paginate(
        Bucket=bucket, Delimiter="/", Prefix="photos/", PaginationConfig={"PageSize": 1}
    ):
        prefixes += [p["Prefix"] for p in one.get("CommonPrefixes", [])]
        seen += [o["Key"] for o in one.get("Contents", [])]
    assert prefixes == ["photos/2025/", "photos/2026/"]
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=0)["KeyCount"] == 0
    v1 = s3.list_objects(Bucket=bucket, Prefix="videos/", Marker="videos/a.mp4")
    assert [o["Key"] for o in v1["Contents"]] == ["videos/b.mp4"]


def test_five_mib_round_trip(s3: Any, bucket: str) -> None:
    body = os.urandom(5 << 20)
    put = s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == body
    tail = s3.get_object(Bucket=bucket, Key="big.bin", Range=f"bytes={(5 << 20) - 100}-")
    assert tail["Body"].read() == body[-100:]


def test_upload_fileobj_and_download(s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(300_000))
    s3.upload_file(str(source), bucket, "file.bin")
    s3.download_file(bucket, "file.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()


def test_presigned_urls(server: S3Server, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="shared/file.txt", Body=b"shared bytes")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/file.txt"}, ExpiresIn=60
    )
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"shared bytes"
    tampered = url.replace("shared/file.txt", "shared/other.txt")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(tampered, timeout=10)
    assert error.value.code == 403
    assert b"SignatureDoesNotMatch" in error.value.read()
    expired = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/file.txt"}, ExpiresIn=1
    )
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(expired, timeout=10)
    assert error.value.code == 403
    assert b"<Code>AccessDenied</Code>" in error.value.read()
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "uploaded"}, ExpiresIn=60
    )
    request = urllib.request.Request(put_url, data=b"via presigned put", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert s3.get_object(Bucket=bucket, Key="uploaded")["Body"].read() == b"via presigned put"


def test_wrong_secret_and_anonymous_change_nothing(server: S3Server, s3: Any, bucket: str) -> None:
    wrong = s3_client(server.url, secret="not-the-secret")
    with pytest.raises(ClientError) as error:
        wrong.put_object(Bucket=bucket, Key="intruder", Body=b"x")
    assert _code(error) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as error:
        wrong.create_bucket(Bucket="intruder-bucket")
    assert _code(error) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as error:
        wrong.delete_bucket(Bucket=bucket)
    assert _code(error) == ("SignatureDoesNotMatch", 403)
    unknown = boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id="nobody",
        aws_secret_access_key=DEV_SECRET_KEY,
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as error:
        unknown.list_buckets()
    assert _code(error) == ("InvalidAccessKeyId", 403)
    request = urllib.request.Request(f"{server.url}/{bucket}/anon", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=10)
    assert http_error.value.code == 403
    assert b"<Code>AccessDenied</Code>" in http_error.value.read()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert "intruder-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("size", [11, 3 << 20], ids=["small", "large"])
def test_payload_hash_mismatch_is_refused(
    server: S3Server, s3: Any, bucket: str, size: int
) -> None:
    """A body that is not the one signed: 400, nothing listed, no bytes left in the store.

    Large bodies are hashed while they are stored, so this also checks they are removed.
    """
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    assert server.service is not None
    assert server.service.api is not None
    blobs = server.service.api.blobs
    before = set(blobs.stored_before(2**62))
    signed, sent = os.urandom(size), os.urandom(size)
    for path, extra in ((f"{bucket}/swapped", {}), (f"{bucket}/bad-md5", {"md5": True})):
        body = signed if extra else sent
        request = AWSRequest("PUT", f"{server.url}/{path}", data=signed)
        request.headers["x-amz-content-sha256"] = hashlib.sha256(signed).hexdigest()
        if extra:  # the body is the signed one, but its Content-MD5 is wrong
            request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(sent).digest()).decode()
        S3SigV4Auth(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", "us-east-1").add_auth(
            request
        )
        prepared = request.prepare()
        swapped = urllib.request.Request(
            prepared.url, data=body, headers=dict(prepared.headers), method="PUT"
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(swapped, timeout=30)
        assert error.value.code == 400
        expected = b"BadDigest" if extra else b"XAmzContentSHA256Mismatch"
        assert expected in error.value.read()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert set(blobs.stored_before(2**62)) == before


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with S3Server(tmp_path) as first:
        client = s3_client(first.url)
        client.create_bucket(Bucket="kept")
        client.put_object(Bucket="kept", Key="a", Body=b"durable")
    with S3Server(tmp_path) as second:
        client = s3_client(second.url)
        assert client.get_object(Bucket="kept", Key="a")["Body"].read() == b"durable"


SDI_SERVE_S3 = [sys.executable, "-m", "sdi.cli", "serve", "s3", "--port", "0"]


def _spawn(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    """Starts ``sdi serve s3``; returns the process, its URL and what it printed."""
    process = subprocess.Popen(
        [*SDI_SERVE_S3, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    printed = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        printed.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            printed.append(process.stdout.readline())
            return process, match.group(1), "".join(printed)
    process.kill()
    raise AssertionError(f"sdi serve s3 never listened: {''.join(printed)}")


def test_sdi_serve_s3_subprocess(tmp_path: Path) -> None:
    process, url, printed = _spawn(tmp_path)
    try:
        assert DEV_ACCESS_KEY in printed
        assert DEV_SECRET_KEY in printed
        client = s3_client(url)
        client.create_bucket(Bucket="from-cli")
        client.put_object(Bucket="from-cli", Key="k", Body=b"v")
        assert client.get_object(Bucket="from-cli", Key="k")["Body"].read() == b"v"
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "stopped cleanly" in out


def test_sigkill_during_puts_keeps_acknowledged_objects_and_shows_no_partial_ones(
    tmp_path: Path,
) -> None:
    process, url, _ = _spawn(tmp_path)
    client = s3_client(url, connect_timeout=5, read_timeout=5)
    client.create_bucket(Bucket="storm")
    acked: dict[str, bytes] = {}
    stop = threading.Event()

    def writer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            key = f"w{worker}/{n:05d}"
            body = os.urandom(1000 + 97 * n % 200_000)
            try:
                client.put_object(Bucket="storm", Key=key, Body=body)
            except Exception:
                return  # the server is gone
            acked[key] = body
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    stop.set()
    for thread in threads:
        thread.join(30)
    process.stdout.close()  # type: ignore[union-attr]
    assert len(acked) >= 150
    process, url, _ = _spawn(tmp_path)
    try:
        client = s3_client(url)
        listed = {
            item["Key"]: item
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="storm")
            for item in page.get("Contents", [])
        }
        assert set(acked) <= set(listed)
        for key, item in listed.items():
            body = client.get_object(Bucket="storm", Key=key)["Body"].read()
            assert len(body) == item["Size"]
            assert f'"{hashlib.md5(body).hexdigest()}"' == item["ETag"]
            if key in acked:
                assert body == acked[key]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_subresources_not_built_answer_not_implemented(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as error:
        s3.put_object_tagging(
            Bucket=bucket, Key="src", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
        )
    assert _code(error) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as error:
        s3.get_bucket_acl(Bucket=bucket)
    assert _code(error) == ("NotImplemented", 501)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["src"]


def test_delete_objects_in_one_request(server: S3Server, s3: Any, bucket: str) -> None:
    for name in ("a", "b", "c/d", "keep"):
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode())
    answer = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "a"}, {"Key": "c/d"}, {"Key": "never-there"}, {"Key": "b"}]},
    )
    # Deleting an absent key succeeds, as in S3.
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["a", "b", "c/d", "never-there"]
    assert "Errors" not in answer
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep"}], "Quiet": True})
    assert "Deleted" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    too_long = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k" * 1025}]})
    assert [e["Code"] for e in too_long["Errors"]] == ["KeyTooLongError"]
    with pytest.raises(ClientError) as error:
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": f"k{n}"} for n in range(1001)]}
        )
    assert _code(error) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as error:
        s3.delete_objects(Bucket="no-such-bucket-here", Delete={"Objects": [{"Key": "x"}]})
    assert _code(error) == ("NoSuchBucket", 404)
