"""The S3 metadata store: bucket rules, object rows, and listings against a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi.objstore.metadata import (
    Metadata,
    ObjectRecord,
    S3Error,
    check_bucket_name,
    check_key,
)


def _record(bucket: str, key: str, data_id: str = "d") -> ObjectRecord:
    return ObjectRecord(bucket, key, 3, "0" * 32, "text/plain", data_id, {"a": "b"})


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


def test_buckets_and_objects_persist(tmp_path: Path) -> None:
    store = Metadata(tmp_path / "m.sqlite")
    store.create_bucket("photos", owner="sdi")
    with pytest.raises(S3Error) as error:
        store.create_bucket("photos", owner="sdi")
    assert error.value.code == "BucketAlreadyOwnedByYou"
    with pytest.raises(S3Error) as error:
        store.create_bucket("photos", owner="someone-else")
    assert error.value.code == "BucketAlreadyExists"
    assert store.put_object(_record("photos", "k", "data-1")) == []
    assert store.put_object(_record("photos", "k", "data-2")) == ["data-1"]
    with pytest.raises(S3Error) as error:
        store.put_object(_record("nope", "k"))
    assert error.value.code == "NoSuchBucket"
    store.close()
    store = Metadata(tmp_path / "m.sqlite")
    record = store.get_object("photos", "k")
    assert (record.data_id, record.user_meta, record.size) == ("data-2", {"a": "b"}, 3)
    assert record.created_ms > 0
    with pytest.raises(S3Error) as error:
        store.delete_bucket("photos")
    assert (error.value.code, error.value.status) == ("BucketNotEmpty", 409)
    assert store.delete_object("photos", "k") == ["data-2"]
    assert store.delete_object("photos", "k") == []
    with pytest.raises(S3Error) as error:
        store.get_object("photos", "k")
    assert error.value.code == "NoSuchKey"
    store.delete_bucket("photos")
    with pytest.raises(S3Error) as error:
        store.get_object("photos", "k")
    assert error.value.code == "NoSuchBucket"
    assert store.list_buckets() == []
    store.close()


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


_KEY = st.text(alphabet="ab/-é", min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(_KEY, max_size=30),
    prefix=st.sampled_from(["", "a", "a/", "b/", "é"]),
    delimiter=st.sampled_from(["", "/", "-", "a/"]),
    page=st.integers(1, 7),
)
def test_listing_pages_match_a_model(
    keys: list[str], prefix: str, delimiter: str, page: int
) -> None:
    store = Metadata(":memory:")
    store.create_bucket("bucket", owner="sdi")
    for key in keys:
        store.put_object(_record("bucket", key))
    expected = _model(keys, prefix, delimiter, "")
    seen: list[tuple[str, bool]] = []
    after = ""
    for _ in range(100):
        listing = store.list_objects(
            "bucket", prefix=prefix, delimiter=delimiter, max_keys=page, after=after
        )
        got = [(r.key, False) for r in listing.contents] + [(p, True) for p in listing.prefixes]
        assert len(got) <= page
        seen += sorted(got)
        if not listing.truncated:
            break
        assert listing.next_marker is not None
        after = listing.next_marker
    assert seen == expected
    store.close()
