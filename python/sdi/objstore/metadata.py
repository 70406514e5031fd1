"""The S3 service's metadata: buckets and objects in one SQLite file.

A PUT writes the object's bytes to a data node first and commits the row
here last, so a crash in between leaves unreferenced bytes on the data node,
never a row pointing at missing or partial data. The row names the data
node's object id (a fresh one per stored version), so overwriting a key
never touches the bytes a reader may still be using until the new row has
committed.

The schema already has the columns versioning needs (version id, delete
marker, the latest flag, the bucket's versioning state); this slice only
writes unversioned objects (version id ``"null"``).

>>> store = Metadata(":memory:")
>>> store.create_bucket("photos", owner="sdi")
>>> [bucket.name for bucket in store.list_buckets()]
['photos']
>>> try:
...     check_bucket_name("Photos")
... except S3Error as error:
...     print(error.status, error.code)
400 InvalidBucketName
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from os import PathLike

from sdi.errors import SdiError

__all__ = [
    "KEY_BYTES_MAX",
    "Bucket",
    "Listing",
    "Metadata",
    "ObjectRecord",
    "S3Error",
    "check_bucket_name",
    "check_key",
]

KEY_BYTES_MAX = 1024
NULL_VERSION = "null"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    versioning TEXT NOT NULL DEFAULT 'Unversioned'
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version_id TEXT NOT NULL,
    is_latest INTEGER NOT NULL,
    delete_marker INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    user_meta TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    data_id TEXT,
    PRIMARY KEY (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS objects_latest ON objects (bucket, is_latest, key);
"""

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class S3Error(SdiError):
    """An S3 error: its code (``NoSuchKey``), message and HTTP status."""

    def __init__(
        self, code: str, message: str, status: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


def check_bucket_name(name: str) -> None:
    """Raises ``InvalidBucketName`` unless ``name`` follows S3's bucket naming rules."""
    bad = (
        not _BUCKET_NAME.match(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IP_ADDRESS.match(name) is not None
        or name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        or name.endswith(("-s3alias", "--ol-s3", "--x-s3"))
    )
    if bad:
        raise S3Error(
            "InvalidBucketName",
            f"The specified bucket is not valid: {name!r} (3-63 characters: lower-case letters,"
            " digits, dots and hyphens, starting and ending with a letter or digit)",
            400,
        )


def check_key(key: str) -> None:
    """Raises ``KeyTooLongError`` past 1024 bytes of UTF-8 (and refuses an empty key)."""
    if not key:
        raise S3Error("InvalidArgument", "An object key must not be empty", 400)
    if len(key.encode("utf-8", "surrogatepass")) > KEY_BYTES_MAX:
        raise S3Error("KeyTooLongError", "Your key is too long (at most 1024 bytes)", 400)


@dataclass(frozen=True)
class Bucket:
    name: str
    owner: str
    created_ms: int
    versioning: str = "Unversioned"


@dataclass(frozen=True)
class ObjectRecord:
    """One stored object (one version of a key) and where its bytes are."""

    bucket: str
    key: str
    size: int
    etag: str  # hex MD5, unquoted
    content_type: str
    data_id: str
    user_meta: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    version_id: str = NULL_VERSION
    delete_marker: bool = False


@dataclass
class Listing:
    """One page of a listing: objects, common prefixes, and where the next page starts."""

    contents: list[ObjectRecord]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None  # the last key or common prefix returned, when truncated


_OBJECT_COLUMNS = (
    "bucket, key, size, etag, content_type, data_id, user_meta, created_ms,"
    " version_id, delete_marker"
)


def _record(row: tuple[object, ...]) -> ObjectRecord:
    bucket, key, size, etag, content_type, data_id, meta, created, version, marker = row
    return ObjectRecord(
        str(bucket),
        str(key),
        int(size),  # type: ignore[call-overload]
        str(etag),
        str(content_type),
        str(data_id),
        json.loads(str(meta)),
        int(created),  # type: ignore[call-overload]
        str(version),
        bool(marker),
    )


class Metadata:
    """Buckets and objects in the SQLite file ``path``; calls from threads are serialised."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- buckets --------------------------------------------------------------

    def create_bucket(self, name: str, *, owner: str) -> None:
        """Creates ``name``; BucketAlreadyOwnedByYou / BucketAlreadyExists if it is taken."""
        check_bucket_name(name)
        with self._lock:
            row = self._db.execute("SELECT owner FROM buckets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row[0] == owner:
                    raise S3Error(
                        "BucketAlreadyOwnedByYou",
                        "Your previous request to create the named bucket succeeded"
                        " and you already own it.",
                        409,
                    )
                raise S3Error(
                    "BucketAlreadyExists",
                    "The requested bucket name is not available; choose another name.",
                    409,
                )
            self._db.execute(
                "INSERT INTO buckets (name, owner, created_ms) VALUES (?, ?, ?)",
                (name, owner, _now_ms()),
            )

    def list_buckets(self) -> list[Bucket]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, owner, created_ms, versioning FROM buckets ORDER BY name"
            ).fetchall()
        return [Bucket(*row) for row in rows]

    def bucket(self, name: str) -> Bucket:
        """The bucket ``name``; NoSuchBucket if there is none."""
        with self._lock:
            return self._bucket(name)

    def _bucket(self, name: str) -> Bucket:
        row = self._db.execute(
            "SELECT name, owner, created_ms, versioning FROM buckets WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404)
        return Bucket(*row)

    def delete_bucket(self, name: str) -> None:
        """Deletes an empty bucket; NoSuchBucket, or BucketNotEmpty if it holds objects."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._bucket(name)
                if self._db.execute(
                    "SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)
                ).fetchone():
                    raise S3Error(
                        "BucketNotEmpty", "The bucket you tried to delete is not empty", 409
                    )
                self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- objects --------------------------------------------------------------

    def put_object(self, record: ObjectRecord) -> list[str]:
        """Commits ``record`` as the key's current object; the data ids it replaced.

        Call it only once the bytes under ``record.data_id`` are durable; the
        caller deletes the returned data ids afterwards.
        """
        check_key(record.key)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._bucket(record.bucket)
                replaced = [
                    str(row[0])
                    for row in self._db.execute(
                        "SELECT data_id FROM objects WHERE bucket = ? AND key = ?"
                        " AND version_id = ? AND data_id IS NOT NULL",
                        (record.bucket, record.key, NULL_VERSION),
                    )
                ]
                self._db.execute(
                    "INSERT OR REPLACE INTO objects (bucket, key, version_id, is_latest,"
                    " delete_marker, size, etag, content_type, user_meta, created_ms, data_id)"
                    " VALUES (?, ?, ?, 1, 0, ?, ?, ?, ?, ?, ?)",
                    (
                        record.bucket,
                        record.key,
                        NULL_VERSION,
                        record.size,
                        record.etag,
                        record.content_type,
                        json.dumps(record.user_meta),
                        record.created_ms or _now_ms(),
                        record.data_id,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return replaced

    def get_object(self, bucket: str, key: str) -> ObjectRecord:
        """The key's current object; NoSuchBucket or NoSuchKey."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?"
                " AND is_latest = 1 AND delete_marker = 0",
                (bucket, key),
            ).fetchone()
            if row is None:
                self._bucket(bucket)
                raise S3Error("NoSuchKey", "The specified key does not exist.", 404)
        return _record(row)

    def delete_object(self, bucket: str, key: str) -> list[str]:
        """Removes the key's current object (absent keys are fine); the data ids to delete."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._bucket(bucket)
                data_ids = [
                    str(row[0])
                    for row in self._db.execute(
                        "SELECT data_id FROM objects WHERE bucket = ? AND key = ?"
                        " AND version_id = ? AND data_id IS NOT NULL",
                        (bucket, key, NULL_VERSION),
                    )
                ]
                self._db.execute(
                    "DELETE FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
                    (bucket, key, NULL_VERSION),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return data_ids

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        after: str = "",
    ) -> Listing:
        """Keys after ``after`` starting with ``prefix``, in UTF-8 byte order.

        With a ``delimiter``, keys that hold it past the prefix are rolled up
        into one common prefix each (counted against ``max_keys`` like a key).
        """
        contents: list[ObjectRecord] = []
        prefixes: list[str] = []
        last: str | None = None
        with self._lock:
            self._bucket(bucket)
            if max_keys <= 0:
                return Listing([], [], False, None)
            cursor = after
            while True:
                rows = self._db.execute(
                    f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND is_latest = 1"
                    " AND delete_marker = 0 AND key > ? AND key >= ? ORDER BY key LIMIT 1000",
                    (bucket, cursor, prefix),
                ).fetchall()
                if not rows:
                    return Listing(contents, prefixes, False, None)
                reseek = False
                for row in rows:
                    key = str(row[1])
                    if not key.startswith(prefix):
                        return Listing(contents, prefixes, False, None)
                    common = None
                    if delimiter:
                        at = key.find(delimiter, len(prefix))
                        if at >= 0:
                            common = key[: at + len(delimiter)]
                    if common is not None and common <= after:
                        # A prefix an earlier page already returned: seek past it.
                        cursor = common + "\U0010ffff"
                        reseek = True
                        break
                    if len(contents) + len(prefixes) == max_keys:
                        return Listing(contents, prefixes, True, last)
                    if common is not None:
                        prefixes.append(common)
                        last = common
                        # Skip every other key under this prefix in one seek.
                        cursor = common + "\U0010ffff"
                        reseek = True
                        break
                    contents.append(_record(row))
                    last = cursor = key
                if not reseek and len(rows) < 1000:
                    return Listing(contents, prefixes, False, None)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
