"""Multipart uploads, CopyObject, versioning and conditional requests, end to end with boto3."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from sdi.testing.s3 import S3Server, error_code, s3_client  # noqa: E402

MiB = 1 << 20


def _code(error: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return error_code(error.value)


def _multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


# -- multipart ---------------------------------------------------------------


def test_multipart_upload_complete_list_and_read_back(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key="big/file.bin", ContentType="video/mp4", Metadata={"camera": "a7"}
    )
    upload_id = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("big/file.bin", upload_id)]
    etags = []
    # Parts uploaded out of order, one of them twice (the second upload wins).
    s3.upload_part(Bucket=bucket, Key="big/file.bin", UploadId=upload_id, PartNumber=2, Body=b"x")
    for number in (3, 1, 2):
        answer = s3.upload_part(
            Bucket=bucket,
            Key="big/file.bin",
            UploadId=upload_id,
            PartNumber=number,
            Body=parts[number - 1],
        )
        assert answer["ETag"] == f'"{hashlib.md5(parts[number - 1]).hexdigest()}"'
        etags.append((number, answer["ETag"]))
    listing = s3.list_parts(Bucket=bucket, Key="big/file.bin", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in listing["Parts"]] == [
        (1, 5 * MiB),
        (2, 5 * MiB),
        (3, 1234),
    ]
    page = s3.list_parts(Bucket=bucket, Key="big/file.bin", UploadId=upload_id, MaxParts=2)
    assert page["IsTruncated"]
    assert page["NextPartNumberMarker"] == 2
    rest = s3.list_parts(Bucket=bucket, Key="big/file.bin", UploadId=upload_id, PartNumberMarker=2)
    assert [p["PartNumber"] for p in rest["Parts"]] == [3]
    # Not visible before completion.
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert _code(error) == ("404", 404)
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big/file.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in sorted(etags)]},
    )
    assert done["ETag"] == _multipart_etag(parts)
    whole = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="big/file.bin")
    assert got["ContentLength"] == len(whole)
    assert got["ContentType"] == "video/mp4"
    assert got["Metadata"] == {"camera": "a7"}
    assert got["ETag"] == _multipart_etag(parts)
    assert got["Body"].read() == whole
    # Ranges across part boundaries, and a part by number.
    start = 5 * MiB - 10
    ranged = s3.get_object(
        Bucket=bucket, Key="big/file.bin", Range=f"bytes={start}-{start + 5 * MiB + 20}"
    )
    assert ranged["Body"].read() == whole[start : start + 5 * MiB + 21]
    part3 = s3.get_object(Bucket=bucket, Key="big/file.bin", PartNumber=3)
    assert part3["PartsCount"] == 3
    assert part3["Body"].read() == parts[2]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    listed_objects = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed_objects] == [
        ("big/file.bin", len(whole), _multipart_etag(parts))
    ]


def test_multipart_errors_change_nothing(s3: Any, bucket: str) -> None:
    key = "k"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    small = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"a")
    last = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"b")

    def complete(parts: list[dict[str, Any]]) -> None:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    with pytest.raises(ClientError) as error:  # every part but the last needs 5 MiB
        complete(
            [{"PartNumber": 1, "ETag": small["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}]
        )
    assert _code(error) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as error:
        complete(
            [{"PartNumber": 2, "ETag": last["ETag"]}, {"PartNumber": 1, "ETag": small["ETag"]}]
        )
    assert _code(error) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as error:
        complete([{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}])
    assert _code(error) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as error:
        complete([{"PartNumber": 7, "ETag": small["ETag"]}])
    assert _code(error) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as error:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=10001, Body=b"x")
    assert _code(error) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as error:
        s3.upload_part(Bucket=bucket, Key=key, UploadId="f" * 32, PartNumber=1, Body=b"x")
    assert _code(error) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as error:
        s3.upload_part(Bucket=bucket, Key="other", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert _code(error) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as error:
        s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=3,
            Body=b"x",
            ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==",
        )
    assert _code(error) == ("BadDigest", 400)
    # The upload is untouched by all of that; a one-part upload completes.
    assert [
        p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    ] == [1, 2]
    complete([{"PartNumber": 2, "ETag": last["ETag"]}])
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"b"
    with pytest.raises(ClientError) as error:  # completed: gone
        s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert _code(error) == ("NoSuchUpload", 404)


def test_abort_and_list_uploads_with_prefixes(s3: Any, bucket: str) -> None:
    ids = {}
    for key in ("a/1", "a/2", "b", "c/x/y"):
        ids[key] = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    second = s3.create_multipart_upload(Bucket=bucket, Key="b")["UploadId"]
    listing = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in listing["Uploads"]] == ["b", "b"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/", "c/"]
    assert sorted(u["UploadId"] for u in listing["Uploads"]) == sorted([ids["b"], second])
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2)
    assert page["IsTruncated"]
    assert [u["Key"] for u in page["Uploads"]] == ["a/1", "a/2"]
    rest = s3.list_multipart_uploads(
        Bucket=bucket, KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"]
    )
    assert [u["Key"] for u in rest["Uploads"]] == ["b", "b", "c/x/y"]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")["Uploads"]] == [
        "a/1",
        "a/2",
    ]
    s3.upload_part(Bucket=bucket, Key="b", UploadId=second, PartNumber=1, Body=b"data")
    s3.abort_multipart_upload(Bucket=bucket, Key="b", UploadId=second)
    with pytest.raises(ClientError) as error:
        s3.abort_multipart_upload(Bucket=bucket, Key="b", UploadId=second)
    assert _code(error) == ("NoSuchUpload", 404)
    keys = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]]
    assert keys == ["a/1", "a/2", "b", "c/x/y"]
    # Deleting the bucket takes its unfinished uploads with it.
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as error:
        s3.list_multipart_uploads(Bucket=bucket)
    assert _code(error) == ("NoSuchBucket", 404)


def test_boto3_transfer_manager_uses_multipart(s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(13 * MiB + 7)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    config = TransferConfig(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=3
    )
    s3.upload_file(str(source), bucket, "movie.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="movie.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')
    target = tmp_path / "back.bin"
    s3.download_file(bucket, "movie.bin", str(target), Config=config)
    assert target.read_bytes() == data
    # A server-side copy of a multipart object by the transfer manager (UploadPartCopy).
    s3.copy({"Bucket": bucket, "Key": "movie.bin"}, bucket, "copy.bin", Config=config)
    assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == data


def test_upload_part_copy_with_ranges(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )  # fmt: skip
    second = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=100-199",
    )  # fmt: skip
    with pytest.raises(ClientError) as error:
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{6 * MiB}",
        )  # fmt: skip
    assert _code(error) == ("InvalidRange", 416)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
            ]
        },
    )
    assert (
        s3.get_object(Bucket=bucket, Key="dst")["Body"].read()
        == source[: 5 * MiB] + source[100:200]
    )


# -- copy ------------------------------------------------------------------------


def test_copy_object_keeps_or_replaces_metadata(s3: Any, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket, Key="src", Body=b"payload", ContentType="text/plain", Metadata={"a": "1"}
    )
    other = f"{bucket}-other"
    s3.create_bucket(Bucket=other)
    answer = s3.copy_object(Bucket=other, Key="copy", CopySource={"Bucket": bucket, "Key": "src"})
    assert answer["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    copied = s3.get_object(Bucket=other, Key="copy")
    assert (copied["Body"].read(), copied["ContentType"], copied["Metadata"]) == (
        b"payload",
        "text/plain",
        {"a": "1"},
    )
    s3.copy_object(
        Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE", ContentType="application/json", Metadata={"b": "2"},
    )  # fmt: skip
    replaced = s3.head_object(Bucket=bucket, Key="src")
    assert (replaced["ContentType"], replaced["Metadata"]) == ("application/json", {"b": "2"})
    with pytest.raises(ClientError) as error:  # onto itself without a change
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert _code(error) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as error:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert _code(error) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as error:
        s3.copy_object(
            Bucket=bucket,
            Key="x",
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceIfMatch='"nope"',
        )
    assert _code(error) == ("PreconditionFailed", 412)
    s3.copy_object(
        Bucket=bucket, Key="y", CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceIfNoneMatch='"nope"',
    )  # fmt: skip
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["src", "y"]
    # Deleting the source leaves the copy whole (bytes are copied, not shared).
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=other, Key="copy")["Body"].read() == b"payload"


def test_conditional_gets(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    etag = put["ETag"]
    assert s3.get_object(Bucket=bucket, Key="k", IfMatch=etag)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", IfMatch='"other"')
    assert _code(error) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag)
    assert _code(error)[1] == 304
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", IfModifiedSince=modified)
    assert _code(error)[1] == 304
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", IfUnmodifiedSince=modified.replace(year=2000))
    assert _code(error) == ("PreconditionFailed", 412)
    assert (
        s3.get_object(Bucket=bucket, Key="k", IfModifiedSince=modified.replace(year=2000))[
            "Body"
        ].read()
        == b"v1"
    )


# -- versioning ------------------------------------------------------------------


def test_versioning_keeps_every_version_and_delete_markers(s3: Any, bucket: str) -> None:
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="doc", Body=b"before versioning")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert v1 != v2
    assert "null" not in (v1, v2)
    got = s3.get_object(Bucket=bucket, Key="doc")
    assert (got["Body"].read(), got["VersionId"]) == (b"two", v2)
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)["Body"].read() == b"one"
    assert (
        s3.get_object(Bucket=bucket, Key="doc", VersionId="null")["Body"].read()
        == b"before versioning"
    )
    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc")
    assert _code(error) == ("NoSuchKey", 404)
    assert error.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert _code(error)[1] == 405
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    versions = s3.list_object_versions(Bucket=bucket)
    assert [(v["VersionId"], v["IsLatest"], v["Size"]) for v in versions["Versions"]] == [
        (v2, False, 3),
        (v1, False, 3),
        ("null", False, len(b"before versioning")),
    ]
    assert [(m["VersionId"], m["IsLatest"]) for m in versions["DeleteMarkers"]] == [(marker, True)]
    # Removing the delete marker brings the object back; removing a version is permanent.
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"one"
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=v2)
    assert _code(error) == ("NoSuchVersion", 404)
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="not-a-version")
    assert _code(error) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as error:  # versions left: not empty
        s3.delete_bucket(Bucket=bucket)
    assert _code(error) == ("BucketNotEmpty", 409)


def test_suspended_versioning_overwrites_the_null_version(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"n1")["VersionId"] == "null"
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"n2")["VersionId"] == "null"
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [("null", True), (kept, False)]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert (deleted["DeleteMarker"], deleted["VersionId"]) == (True, "null")
    listing = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listing["Versions"]] == [kept]
    assert [m["VersionId"] for m in listing["DeleteMarkers"]] == ["null"]


def test_list_object_versions_pages(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    expected = []
    for key in ("a", "b/1", "b/2", "c"):
        ids = [
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())["VersionId"] for _ in range(3)
        ]
        expected += [(key, version) for version in reversed(ids)]
    seen = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 4}
    ):
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    assert seen == expected
    rolled = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["b/"]
    assert {v["Key"] for v in rolled["Versions"]} == {"a", "c"}
    batch = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "a", "VersionId": expected[0][1]}, {"Key": "c"}]},
    )
    assert {(d["Key"], d.get("DeleteMarker", False)) for d in batch["Deleted"]} == {
        ("a", False),
        ("c", True),
    }
    assert s3.get_object(Bucket=bucket, Key="a")["VersionId"] == expected[1][1]


def test_versioning_configuration_is_checked(server: S3Server, s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as error:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Sometimes"})  # type: ignore[typeddict-item]
    assert _code(error) == ("MalformedXML", 400)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


# -- garbage ---------------------------------------------------------------------


def test_garbage_collection_aborts_old_uploads_and_removes_orphans(tmp_path: Path) -> None:
    with S3Server(tmp_path) as server:
        s3 = s3_client(server.url)
        s3.create_bucket(Bucket="gc-bucket")
        s3.put_object(Bucket="gc-bucket", Key="live", Body=b"live bytes")
        upload_id = s3.create_multipart_upload(Bucket="gc-bucket", Key="stale")["UploadId"]
        s3.upload_part(Bucket="gc-bucket", Key="stale", UploadId=upload_id, PartNumber=1, Body=b"p")
        assert server.service is not None
        assert server.service.api is not None
        api = server.service.api
        # Bytes stored with no row pointing at them: a crash between store and commit.
        api.blobs.put("orphan-data-id", b"orphan", durability="replicas-1")
        time.sleep(0.01)
        report = api.collect_garbage(upload_expiry_s=0, orphan_age_s=0)
        assert (report.uploads_expired, report.parts_deleted, report.orphans_deleted) == (1, 1, 1)
        assert s3.list_multipart_uploads(Bucket="gc-bucket").get("Uploads", []) == []
        assert s3.get_object(Bucket="gc-bucket", Key="live")["Body"].read() == b"live bytes"
        with pytest.raises(KeyError):
            api.blobs.get("orphan-data-id")
        assert api.collect_garbage(upload_expiry_s=0, orphan_age_s=0).orphans_deleted == 0


# -- crashes ---------------------------------------------------------------------


def test_sigkill_during_multipart_and_versioned_puts_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """kill -9 mid-storm: every completed upload and every acknowledged version reads back."""
    from sdi.testing.broker import ServiceProcess

    service = ServiceProcess("s3", tmp_path).start()
    url = f"http://127.0.0.1:{service.port}"
    client = s3_client(url, connect_timeout=5, read_timeout=10)
    client.create_bucket(Bucket="uploads")
    client.create_bucket(Bucket="versions")
    client.put_bucket_versioning(Bucket="versions", VersioningConfiguration={"Status": "Enabled"})
    big = os.urandom(5 * MiB)
    completed: dict[str, bytes] = {}
    parts_acked: dict[tuple[str, str], int] = {}
    versions: dict[str, bytes] = {}
    stop = threading.Event()

    def uploader(worker: int) -> None:
        n = 0
        while not stop.is_set():
            key = f"w{worker}/{n}"
            tail = os.urandom(100 + n)
            try:
                upload_id = client.create_multipart_upload(Bucket="uploads", Key=key)["UploadId"]
                etags = []
                for number, body in ((1, big), (2, tail)):
                    answer = client.upload_part(
                        Bucket="uploads", Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                    etags.append({"PartNumber": number, "ETag": answer["ETag"]})
                    parts_acked[(key, upload_id)] = number
                client.complete_multipart_upload(
                    Bucket="uploads", Key=key, UploadId=upload_id, MultipartUpload={"Parts": etags}
                )
            except Exception:
                return  # the server is gone
            completed[key] = big + tail
            n += 1

    def versioner() -> None:
        n = 0
        while not stop.is_set():
            body = os.urandom(50 + n)
            try:
                version = client.put_object(Bucket="versions", Key="doc", Body=body)["VersionId"]
            except Exception:
                return
            versions[version] = body
            n += 1

    threads = [threading.Thread(target=uploader, args=(w,)) for w in range(2)]
    threads.append(threading.Thread(target=versioner))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while (len(completed) < 6 or len(versions) < 20) and time.monotonic() < deadline:
        time.sleep(0.05)
    service.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(completed) >= 6
    assert len(versions) >= 20
    service.restart()
    try:
        client = s3_client(url)
        for key, data in completed.items():
            got = client.get_object(Bucket="uploads", Key=key)
            assert got["Body"].read() == data
            assert got["ETag"] == _multipart_etag([big, data[len(big) :]])
        # An upload cut off mid-way still lists every part it was told was stored.
        unfinished = {
            (u["Key"], u["UploadId"])
            for u in client.list_multipart_uploads(Bucket="uploads").get("Uploads", [])
        }
        for key, upload_id in unfinished:
            listed = client.list_parts(Bucket="uploads", Key=key, UploadId=upload_id)
            numbers = [p["PartNumber"] for p in listed.get("Parts", [])]
            assert numbers[: parts_acked.get((key, upload_id), 0)] == list(
                range(1, parts_acked.get((key, upload_id), 0) + 1)
            )
        listed_versions = {
            v["VersionId"] for v in client.list_object_versions(Bucket="versions")["Versions"]
        }
        assert set(versions) <= listed_versions
        for version, body in versions.items():
            assert (
                client.get_object(Bucket="versions", Key="doc", VersionId=version)["Body"].read()
                == body
            )
    finally:
        service.stop()
