"""The S3 service's metadata: buckets, object versions and multipart uploads.

A PUT writes the object's bytes to the data store first and commits the row
here last, so a crash in between leaves unreferenced bytes in the data store,
never a row pointing at missing or partial data. A row names the data
store's ids of its bytes (a fresh id per stored version, one per part for a
multipart object), so overwriting a key never touches the bytes a reader
may still be using until the new row has committed. Every method that stops
pointing at bytes returns their data ids; the caller deletes them after the
commit.

**Versions.** A bucket is ``Unversioned`` until versioning is turned on, then
``Enabled`` or ``Suspended`` (never back to unversioned, as in S3). Every row
is one version of a key; ``seq`` orders them (newest highest) and exactly
one per key is the latest. With versioning enabled a PUT adds a version with
a fresh id and a DELETE adds a *delete marker*; unversioned and suspended
buckets write the version ``"null"``, replacing the previous null version.
Deleting a version by id removes it for good and makes the newest remaining
one the latest.

**Multipart uploads** have a row in ``uploads`` and one row per part in
``parts``; completing one turns the chosen parts into an object whose
``parts`` column lists their data ids and sizes in order (nothing is copied)
and returns the data ids of the parts it left out.

**Backends.** ``Metadata(path)`` keeps everything in one SQLite file (the
default: WAL, ``synchronous=FULL``, one process per file).
``Metadata("postgresql://user@host:port/dbname")`` keeps it in PostgreSQL
instead, which several S3 API servers can share (the scale-out option; it
needs the driver: ``pip install 'psycopg[binary]'``). Both run the same SQL
through :mod:`sdi.runtime.sql` (placeholders, locking clauses, schema types,
pooled connections, retried deadlocks) and behave the same, with one
exception: PostgreSQL text cannot hold the NUL character, so there a key (or
prefix, marker, ...) holding ``"\\x00"`` is refused with ``InvalidArgument``
(400). :class:`Metadata` says how concurrent servers stay consistent and
what a caller sees when the database is unreachable (``ServiceUnavailable``,
503).

>>> store = Metadata(":memory:")
>>> store.create_bucket("photos", owner="sdi")
>>> [bucket.name for bucket in store.list_buckets()]
['photos']
>>> store.put_object(ObjectRecord("photos", "cat.jpg", 3, "0" * 32, "image/jpeg", "d1")).version_id
'null'
>>> try:
...     check_bucket_name("Photos")
... except S3Error as error:
...     print(error.status, error.code)
400 InvalidBucketName
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from typing import Any, TypeVar

from sdi.errors import SdiError
from sdi.runtime import sql
from sdi.runtime.sql import POSTGRES_URL_SCHEMES, Connection

__all__ = [
    "KEY_BYTES_MAX",
    "NULL_VERSION",
    "POSTGRES_URL_SCHEMES",
    "Bucket",
    "DeleteResult",
    "Listing",
    "Metadata",
    "ObjectRecord",
    "Part",
    "PutResult",
    "S3Error",
    "Upload",
    "UploadListing",
    "VersionListing",
    "check_bucket_name",
    "check_key",
]

KEY_BYTES_MAX = 1024
NULL_VERSION = "null"
#: S3's limits on multipart uploads.
PART_NUMBER_MAX = 10_000
PART_BYTES_MIN = 5 << 20

#: The schema, for either dialect (:mod:`sdi.runtime.sql`): ``{key}`` is a text
#: column compared in UTF-8 byte order (SQLite's TEXT does that; PostgreSQL needs
#: ``COLLATE "C"``), ``{int64}`` a 64-bit integer (SQLite's INTEGER; PostgreSQL's BIGINT).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name {key} PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms {int64} NOT NULL,
    versioning TEXT NOT NULL DEFAULT 'Unversioned',
    durability TEXT NOT NULL DEFAULT 'replicas-1'
);
CREATE TABLE IF NOT EXISTS objects (
    bucket {key} NOT NULL,
    key {key} NOT NULL,
    version_id {key} NOT NULL,
    is_latest INTEGER NOT NULL,
    delete_marker INTEGER NOT NULL DEFAULT 0,
    size {int64} NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    user_meta TEXT NOT NULL,
    created_ms {int64} NOT NULL,
    data_id TEXT,
    parts TEXT,
    seq {int64} NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS objects_latest ON objects (bucket, is_latest, key);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id {key} PRIMARY KEY,
    bucket {key} NOT NULL,
    key {key} NOT NULL,
    content_type TEXT NOT NULL,
    user_meta TEXT NOT NULL,
    created_ms {int64} NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts (
    upload_id {key} NOT NULL,
    part_number INTEGER NOT NULL,
    data_id TEXT NOT NULL,
    size {int64} NOT NULL,
    etag TEXT NOT NULL,
    created_ms {int64} NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
"""
#: Columns later versions of the schema added, with their definitions (for old files).
_ADDED_COLUMNS = {
    "objects": {"parts": "TEXT", "seq": "{int64} NOT NULL DEFAULT 0"},
    "buckets": {"durability": "TEXT NOT NULL DEFAULT 'replicas-1'"},
}
_VERSIONS_INDEX = "CREATE INDEX IF NOT EXISTS objects_versions ON objects (bucket, key, seq)"
#: PostgreSQL only: where version order comes from when several servers write,
#: and the one-latest-row-per-key rule as a constraint (the key locks keep it).
_POSTGRES_EXTRA = (
    "CREATE SEQUENCE IF NOT EXISTS objects_seq AS BIGINT",
    "CREATE UNIQUE INDEX IF NOT EXISTS objects_one_latest ON objects (bucket, key)"
    " WHERE is_latest = 1",
)
#: PostgreSQL's whole schema, created or updated in one transaction.
_POSTGRES_SCHEMA = ";\n".join(
    [
        _SCHEMA,
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {definition}"
            for table, added in _ADDED_COLUMNS.items()
            for name, definition in added.items()
        ),
        _VERSIONS_INDEX,
        *_POSTGRES_EXTRA,
    ]
)
#: After the latest version of a key is deleted: the newest remaining one becomes the latest.
_PROMOTE_NEWEST = (
    "UPDATE objects SET is_latest = 1 WHERE bucket = ? AND key = ? AND version_id ="
    " (SELECT version_id FROM objects WHERE bucket = ? AND key = ?"
    " ORDER BY seq DESC, version_id DESC LIMIT 1)"
)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_VERSION_ID = re.compile(r"^[0-9a-f]{32}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


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
    durability: str = "replicas-1"


@dataclass(frozen=True)
class ObjectRecord:
    """One version of a key and where its bytes are.

    The bytes are either one data id (``data_id``) or, for a multipart
    object, the parts in order (``parts``: data id and size of each).
    A delete marker has no bytes.
    """

    bucket: str
    key: str
    size: int
    etag: str  # hex MD5 (or MD5-of-MD5s "-N" for multipart), unquoted
    content_type: str
    data_id: str
    user_meta: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    version_id: str = NULL_VERSION
    delete_marker: bool = False
    parts: tuple[tuple[str, int], ...] = ()
    is_latest: bool = True

    @property
    def segments(self) -> tuple[tuple[str, int], ...]:
        """(data id, size) of each piece of the object's bytes, in order."""
        if self.parts:
            return self.parts
        if self.delete_marker or not self.data_id:
            return ()
        return ((self.data_id, self.size),)


@dataclass(frozen=True)
class PutResult:
    version_id: str
    replaced: list[str]  # data ids no row points at any more


@dataclass(frozen=True)
class DeleteResult:
    version_id: str | None  # the version removed, or the delete marker's version
    delete_marker: bool  # a delete marker was added, or the version removed was one
    data_ids: list[str]  # data ids no row points at any more


@dataclass
class Listing:
    """One page of a listing: objects, common prefixes, and where the next page starts."""

    contents: list[ObjectRecord]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None  # the last key or common prefix returned, when truncated


@dataclass
class VersionListing:
    """One page of ListObjectVersions: versions and delete markers, newest first per key."""

    versions: list[ObjectRecord]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str | None
    next_version_marker: str | None


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    content_type: str
    user_meta: dict[str, str]
    created_ms: int


@dataclass(frozen=True)
class Part:
    number: int
    data_id: str
    size: int
    etag: str
    created_ms: int


@dataclass
class UploadListing:
    uploads: list[Upload]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str | None
    next_upload_marker: str | None


_OBJECT_COLUMNS = (
    "bucket, key, size, etag, content_type, data_id, user_meta, created_ms,"
    " version_id, delete_marker, parts, is_latest"
)


def _record(row: Sequence[object]) -> ObjectRecord:
    (
        bucket,
        key,
        size,
        etag,
        content_type,
        data_id,
        meta,
        created,
        version,
        marker,
        parts,
        latest,
    ) = row
    return ObjectRecord(
        str(bucket),
        str(key),
        int(size),  # type: ignore[call-overload]
        str(etag),
        str(content_type),
        "" if data_id is None else str(data_id),
        json.loads(str(meta)),
        int(created),  # type: ignore[call-overload]
        str(version),
        bool(marker),
        tuple((str(d), int(n)) for d, n in json.loads(str(parts))) if parts else (),
        bool(latest),
    )


def _malformed(detail: str = "") -> S3Error:
    message = (
        "The XML you provided was not well-formed or did not validate against our published schema"
    )
    return S3Error("MalformedXML", message + (f" ({detail})" if detail else ""), 400)


def check_version_id(version_id: str) -> None:
    """Raises S3's ``InvalidArgument`` unless ``version_id`` could be one of ours."""
    if version_id != NULL_VERSION and not _VERSION_ID.match(version_id):
        raise S3Error("InvalidArgument", "Invalid version id specified", 400)


def _no_such_version() -> S3Error:
    return S3Error("NoSuchVersion", "The specified version does not exist.", 404)


def _no_such_key(delete_marker: bool = False) -> S3Error:
    headers = {"x-amz-delete-marker": "true"} if delete_marker else {}
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, headers)


def _no_such_upload() -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload"
        " may have been aborted or completed.",
        404,
    )


_T = TypeVar("_T")


def _unavailable(reason: str) -> S3Error:
    """The error every call raises while the metadata database cannot be used."""
    return S3Error(
        "ServiceUnavailable",
        f"The metadata database is unavailable, please retry: {reason}",
        503,
    )


def _nul_refused() -> S3Error:
    return S3Error(
        "InvalidArgument",
        "Object keys, prefixes and markers must not contain the NUL character (U+0000):"
        " this store keeps its metadata in PostgreSQL, whose text cannot hold it",
        400,
    )


@contextlib.contextmanager
def _s3_errors() -> Iterator[None]:
    """The database layer's errors as S3 answers: 503 unavailable, 400 for NUL in text."""
    try:
        yield
    except sql.DatabaseUnavailableError as error:
        raise _unavailable(error.reason) from error
    except sql.NulTextError as error:
        raise _nul_refused() from error


def _lock_id(text: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock id for ``text`` (collisions only serialise)."""
    return sql.lock_id(text, namespace=b"sdi-meta")


_SCHEMA_LOCK = _lock_id("schema")
_MAX_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM objects"


class Metadata:
    """Buckets, versions and uploads in the SQLite file ``path`` or a PostgreSQL database.

    ``path`` is a SQLite file (or ``":memory:"``), unless it is a string
    starting with ``postgresql://`` or ``postgres://``: then it is the URL
    of a PostgreSQL database (``postgresql://user@host:port/dbname``) whose
    schema is created or updated here. The public methods are the same
    and thread-safe on both; :attr:`backend` says which one is in use.

    **SQLite** (the default): one connection, calls serialised by a lock,
    every write in ``BEGIN IMMEDIATE``; the version order ``seq`` is a
    counter in memory. One process per file.

    **PostgreSQL** (several API servers on one database): each call takes a
    connection from a pool of at most ``pool_size`` (autocommit, explicit
    ``BEGIN``/``COMMIT``, READ COMMITTED) and gives it back, so concurrent
    calls run in parallel. Consistency between servers:

    * Every write to a key's versions (put, delete, delete marker, complete
      upload) first takes a transaction-scoped advisory lock on a 64-bit
      hash of bucket and key (``pg_advisory_xact_lock``), then draws
      ``seq`` from the sequence ``objects_seq``. Row locks cannot do this:
      the first PUT of a new key has no row to lock, so two of them would
      both insert a latest row, and locking the bucket's row instead would
      serialise every write in the bucket. Drawing ``seq`` under the lock
      makes a key's version order its commit order. A hash collision only
      serialises two unrelated keys. A partial unique index (one
      ``is_latest`` row per key) guards the rule the locks keep.
    * Uploads: putting a part, completing and aborting lock the upload's
      row (``FOR UPDATE``), so of a complete and an abort (or two
      completes) of one upload exactly one wins; the other then finds no
      upload (NoSuchUpload).
    * Writes into a bucket hold ``FOR KEY SHARE`` on its row and deleting
      the bucket takes ``FOR UPDATE``: no version or upload can appear in
      a bucket being deleted. Locks are taken bucket, then upload, then
      key, so writers do not deadlock; a transaction that loses a deadlock
      or serialisation race anyway is run again (up to five times).

    **An unreachable database** (PostgreSQL) is an ``S3Error``
    ``ServiceUnavailable`` (503) from the call, whose message says why;
    the next call connects again. A pooled connection that broke while idle
    (the server restarted) is replaced without the caller noticing, and
    when one breaks the other idle ones are dropped too. A write whose
    connection broke was rolled back, except when it broke during
    ``COMMIT``: then, as with any database client, it may have committed
    (for a PUT, the bytes are then either referenced or garbage).
    ``connect_timeout`` (seconds) bounds each connection attempt.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
    ) -> None:
        self._db = sql.connect(
            path,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            application_name="sdi-objstore",
        )
        #: SQLite: the last version order number handed out (PostgreSQL: ``objects_seq``).
        self._seq = 0
        try:
            with _s3_errors():
                if self._db.dialect is sql.POSTGRES:
                    self._db.setup(_POSTGRES_SCHEMA, lock=_SCHEMA_LOCK)
                else:
                    self._db.setup(_SCHEMA)
                    self._db.write(self._migrate_sqlite)
                    self._seq = int(self._db.read(lambda db: db.value(_MAX_SEQ)))
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _migrate_sqlite(db: Connection) -> None:
        """Adds the columns files written by older versions lack."""
        for table, added in _ADDED_COLUMNS.items():
            columns = {row[1] for row in db.rows(f"PRAGMA table_info({table})")}
            for name, definition in added.items():
                if name not in columns:
                    typed = definition.format(**sql.SQLITE.types)
                    db.run(f"ALTER TABLE {table} ADD COLUMN {name} {typed}")
                    if (table, name) == ("objects", "seq"):
                        # Versions written before seq existed: insertion order.
                        db.run("UPDATE objects SET seq = rowid")
        db.run(_VERSIONS_INDEX)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect.name

    def close(self) -> None:
        self._db.close()

    def _read(self, fn: Callable[[Connection], _T]) -> _T:
        with _s3_errors():
            return self._db.read(fn)

    def _write(self, fn: Callable[[Connection], _T]) -> _T:
        with _s3_errors():
            return self._db.write(fn)

    def _next_seq(self, db: Connection) -> int:
        """Inside a write: the next version order number (called under the key's lock)."""
        if db.dialect is sql.POSTGRES:
            return int(db.value("SELECT nextval('objects_seq')"))
        self._seq += 1  # SQLite: one process, its writers take turns
        return self._seq

    @staticmethod
    def _lock_key(db: Connection, bucket: str, key: str) -> None:
        """Inside a write: no other writer changes ``bucket``/``key``'s versions until commit."""
        db.lock(_lock_id(f"{bucket}/{key}"))

    def _new_version_id(self, seq: int) -> str:
        return f"{seq:012x}{secrets.token_hex(10)}"

    # -- buckets --------------------------------------------------------------

    def create_bucket(self, name: str, *, owner: str, durability: str = "replicas-1") -> None:
        """Creates ``name``; BucketAlreadyOwnedByYou / BucketAlreadyExists if it is taken.

        ``durability`` is how the bucket's bytes are stored (``replicas-3``,
        ``ec-4+2``, ...); the caller checks the data store can do it.
        """
        check_bucket_name(name)

        def create(db: Connection) -> None:
            if db.run(
                "INSERT INTO buckets (name, owner, created_ms, durability) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, owner, _now_ms(), durability),
            ):
                return
            row = db.row("SELECT owner FROM buckets WHERE name = ?", (name,))
            if row is None:  # deleted between the two statements
                raise S3Error(
                    "OperationAborted",
                    "A conflicting conditional operation is currently in progress against"
                    " this resource. Try again.",
                    409,
                )
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

        self._write(create)

    def list_buckets(self) -> list[Bucket]:
        rows = self._read(
            lambda db: db.rows(
                "SELECT name, owner, created_ms, versioning, durability FROM buckets ORDER BY name"
            )
        )
        return [Bucket(*row) for row in rows]

    def bucket(self, name: str) -> Bucket:
        """The bucket ``name``; NoSuchBucket if there is none."""
        return self._read(lambda db: self._bucket(db, name))

    def _bucket(self, db: Connection, name: str, lock: str = "") -> Bucket:
        row = db.row(
            "SELECT name, owner, created_ms, versioning, durability FROM buckets WHERE name = ?"
            + lock,
            (name,),
        )
        if row is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404)
        return Bucket(*row)

    def set_versioning(self, name: str, status: str) -> None:
        """Turns versioning ``Enabled`` or ``Suspended`` (there is no way back to unversioned)."""
        if status not in ("Enabled", "Suspended"):
            raise _malformed(f"versioning Status must be Enabled or Suspended, not {status!r}")

        def update(db: Connection) -> None:
            if not db.run("UPDATE buckets SET versioning = ? WHERE name = ?", (status, name)):
                self._bucket(db, name)  # NoSuchBucket

        self._write(update)

    def delete_bucket(self, name: str) -> list[str]:
        """Deletes an empty bucket and its unfinished uploads; the data ids of their parts.

        NoSuchBucket, or BucketNotEmpty while any version or delete marker is left.
        """

        def delete(db: Connection) -> list[str]:
            self._bucket(db, name, db.dialect.for_update)
            if db.row("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)):
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409)
            if db.dialect.for_update:  # lock the uploads before their parts, as writers do
                db.rows(
                    "SELECT upload_id FROM uploads WHERE bucket = ?" + db.dialect.for_update,
                    (name,),
                )
            data_ids = [
                str(row[0])
                for row in db.rows(
                    "SELECT data_id FROM parts WHERE upload_id IN"
                    " (SELECT upload_id FROM uploads WHERE bucket = ?)",
                    (name,),
                )
            ]
            db.run(
                "DELETE FROM parts WHERE upload_id IN"
                " (SELECT upload_id FROM uploads WHERE bucket = ?)",
                (name,),
            )
            db.run("DELETE FROM uploads WHERE bucket = ?", (name,))
            db.run("DELETE FROM buckets WHERE name = ?", (name,))
            return data_ids

        return self._write(delete)

    # -- objects --------------------------------------------------------------

    def put_object(self, record: ObjectRecord) -> PutResult:
        """Commits ``record`` as the key's latest version; its version id and replaced data ids.

        Call it only once the record's bytes are durable; the caller deletes
        the replaced data ids afterwards.
        """
        check_key(record.key)
        return self._write(lambda db: self._put(db, record))

    def _put(self, db: Connection, record: ObjectRecord) -> PutResult:
        """Inside a transaction: ``record`` becomes the latest version (see the module doc)."""
        bucket = self._bucket(db, record.bucket, db.dialect.share_lock)
        self._lock_key(db, record.bucket, record.key)
        seq = self._next_seq(db)
        replaced: list[str] = []
        if bucket.versioning == "Enabled":
            version_id = self._new_version_id(seq)
        else:
            version_id = NULL_VERSION
            replaced = self._drop_version(db, record.bucket, record.key, NULL_VERSION)
        db.run(
            "UPDATE objects SET is_latest = 0 WHERE bucket = ? AND key = ? AND is_latest = 1",
            (record.bucket, record.key),
        )
        db.run(
            "INSERT INTO objects (bucket, key, version_id, is_latest, delete_marker, size, etag,"
            " content_type, user_meta, created_ms, data_id, parts, seq)"
            " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.bucket,
                record.key,
                version_id,
                int(record.delete_marker),
                record.size,
                record.etag,
                record.content_type,
                json.dumps(record.user_meta),
                record.created_ms or _now_ms(),
                record.data_id or None,
                json.dumps([list(part) for part in record.parts]) if record.parts else None,
                seq,
            ),
        )
        return PutResult(version_id, replaced)

    def _drop_version(self, db: Connection, bucket: str, key: str, version_id: str) -> list[str]:
        """Inside a transaction: deletes one version row; the data ids it held."""
        row = db.row(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?"
            " AND version_id = ?",
            (bucket, key, version_id),
        )
        if row is None:
            return []
        db.run(
            "DELETE FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key, version_id),
        )
        return [data_id for data_id, _ in _record(row).segments]

    def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord:
        """The key's latest version, or the version ``version_id``.

        NoSuchBucket; NoSuchKey (with ``x-amz-delete-marker`` when the latest
        is a delete marker); NoSuchVersion; MethodNotAllowed (405) for a
        version that is a delete marker.
        """
        if version_id is not None:
            check_version_id(version_id)

        def get(db: Connection) -> tuple[Any, ...]:
            if version_id is None:
                row = db.row(
                    f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?"
                    " AND is_latest = 1",
                    (bucket, key),
                )
            else:
                row = db.row(
                    f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?"
                    " AND version_id = ?",
                    (bucket, key, version_id),
                )
            if row is None:
                self._bucket(db, bucket)
                raise _no_such_key() if version_id is None else _no_such_version()
            return row

        record = _record(self._read(get))
        if record.delete_marker:
            if version_id is None:
                raise _no_such_key(delete_marker=True)
            raise S3Error(
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                405,
                {"x-amz-delete-marker": "true", "x-amz-version-id": record.version_id},
            )
        return record

    def delete_object(self, bucket: str, key: str, version_id: str | None = None) -> DeleteResult:
        """DeleteObject as S3 does it in the bucket's versioning state (see the module doc)."""
        if version_id is not None:
            check_version_id(version_id)
        check_key(key)
        return self._write(lambda db: self._delete(db, bucket, key, version_id))

    def _delete(
        self, db: Connection, bucket_name: str, key: str, version_id: str | None
    ) -> DeleteResult:
        bucket = self._bucket(db, bucket_name, db.dialect.share_lock)
        self._lock_key(db, bucket_name, key)
        if version_id is not None:
            row = db.row(
                "SELECT delete_marker, is_latest FROM objects WHERE bucket = ? AND key = ?"
                " AND version_id = ?",
                (bucket_name, key, version_id),
            )
            if row is None:
                return DeleteResult(version_id, False, [])
            data_ids = self._drop_version(db, bucket_name, key, version_id)
            if row[1]:
                db.run(_PROMOTE_NEWEST, (bucket_name, key, bucket_name, key))
            return DeleteResult(version_id, bool(row[0]), data_ids)
        if bucket.versioning == "Unversioned":
            return DeleteResult(None, False, self._drop_version(db, bucket_name, key, NULL_VERSION))
        marker = ObjectRecord(bucket_name, key, 0, "", "", "", delete_marker=True)
        put = self._put(db, marker)
        return DeleteResult(put.version_id, True, put.replaced)

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
        Only latest versions that are not delete markers are listed.
        """

        def listing(db: Connection) -> Listing:
            contents: list[ObjectRecord] = []
            prefixes: list[str] = []
            last: str | None = None
            self._bucket(db, bucket)
            if max_keys <= 0:
                return Listing([], [], False, None)
            cursor, floor = after, prefix  # keys past cursor, from floor on
            while True:
                rows = db.rows(
                    f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND is_latest = 1"
                    " AND delete_marker = 0 AND key > ? AND key >= ? ORDER BY key LIMIT 1000",
                    (bucket, cursor, floor),
                )
                if not rows:
                    return Listing(contents, prefixes, False, None)
                reseek = False
                for row in rows:
                    key = str(row[1])
                    if not key.startswith(prefix):
                        return Listing(contents, prefixes, False, None)
                    common = _common_prefix(key, prefix, delimiter)
                    if common is not None and common <= after:
                        # A prefix an earlier page already returned: seek past it.
                        skip = _past_prefix(common)
                        if skip is None:
                            return Listing(contents, prefixes, False, None)
                        floor = skip
                        reseek = True
                        break
                    if len(contents) + len(prefixes) == max_keys:
                        return Listing(contents, prefixes, True, last)
                    if common is not None:
                        prefixes.append(common)
                        last = common
                        # Skip every other key under this prefix in one seek.
                        skip = _past_prefix(common)
                        if skip is None:
                            return Listing(contents, prefixes, False, None)
                        floor = skip
                        reseek = True
                        break
                    contents.append(_record(row))
                    last = cursor = key
                if not reseek and len(rows) < 1000:
                    return Listing(contents, prefixes, False, None)

        return self._read(listing)

    def list_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        key_marker: str = "",
        version_marker: str = "",
    ) -> VersionListing:
        """Versions and delete markers by key, newest first per key, after the markers.

        ``version_marker`` (with ``key_marker``) resumes inside a key's
        versions; a common prefix counts once against ``max_keys``.
        """

        def listing(db: Connection) -> VersionListing:
            versions: list[ObjectRecord] = []
            prefixes: list[str] = []
            last_key: str | None = None
            last_version: str | None = None
            self._bucket(db, bucket)
            if max_keys <= 0:
                return VersionListing([], [], False, None, None)
            # Where to resume: after (key_marker, version_marker), or after every
            # version of key_marker when no version marker is given.
            cursor_key, cursor_seq = key_marker, -1
            if key_marker and version_marker:
                row = db.row(
                    "SELECT seq FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
                    (bucket, key_marker, version_marker),
                )
                if row is None:
                    raise S3Error(
                        "InvalidArgument",
                        "Invalid version id specified (the version-id-marker names no version"
                        " of the key-marker)",
                        400,
                    )
                cursor_seq = int(row[0])
            while True:
                rows = db.rows(
                    f"SELECT {_OBJECT_COLUMNS}, seq FROM objects WHERE bucket = ?"
                    " AND key >= ? AND ((key = ? AND seq < ?) OR key > ?)"
                    " ORDER BY key, seq DESC LIMIT 1000",
                    (bucket, max(prefix, cursor_key), cursor_key, cursor_seq, cursor_key),
                )
                if not rows:
                    return VersionListing(versions, prefixes, False, None, None)
                reseek = False
                for row in rows:
                    key = str(row[1])
                    if not key.startswith(prefix):
                        return VersionListing(versions, prefixes, False, None, None)
                    common = _common_prefix(key, prefix, delimiter)
                    if common is not None and common <= key_marker:
                        skip = _past_prefix(common)
                        if skip is None:
                            return VersionListing(versions, prefixes, False, None, None)
                        # Every version of skip and of the keys after it.
                        cursor_key, cursor_seq = skip, _SEQ_PAST_ALL
                        reseek = True
                        break
                    if len(versions) + len(prefixes) == max_keys:
                        return VersionListing(versions, prefixes, True, last_key, last_version)
                    if common is not None:
                        prefixes.append(common)
                        last_key, last_version = common, None
                        skip = _past_prefix(common)
                        if skip is None:
                            return VersionListing(versions, prefixes, False, None, None)
                        cursor_key, cursor_seq = skip, _SEQ_PAST_ALL
                        reseek = True
                        break
                    record = _record(row[:-1])
                    versions.append(record)
                    last_key, last_version = key, record.version_id
                    cursor_key, cursor_seq = key, int(row[-1])
                if not reseek and len(rows) < 1000:
                    return VersionListing(versions, prefixes, False, None, None)

        return self._read(listing)

    # -- multipart uploads ----------------------------------------------------

    def create_upload(
        self, bucket: str, key: str, *, content_type: str, user_meta: dict[str, str]
    ) -> Upload:
        """Starts a multipart upload of ``key``."""
        check_key(key)
        upload = Upload(uuid.uuid4().hex, bucket, key, content_type, user_meta, _now_ms())

        def create(db: Connection) -> None:
            self._bucket(db, bucket, db.dialect.share_lock)
            db.run(
                "INSERT INTO uploads (upload_id, bucket, key, content_type, user_meta, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    bucket,
                    key,
                    content_type,
                    json.dumps(user_meta),
                    upload.created_ms,
                ),
            )

        self._write(create)
        return upload

    def upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        """The upload ``upload_id`` of ``bucket``/``key``; NoSuchBucket or NoSuchUpload."""
        return self._read(lambda db: self._upload(db, bucket, key, upload_id))

    def _upload(
        self, db: Connection, bucket: str, key: str, upload_id: str, lock: str = ""
    ) -> Upload:
        if not _UPLOAD_ID.match(upload_id):
            self._bucket(db, bucket)
            raise _no_such_upload()
        row = db.row(
            "SELECT content_type, user_meta, created_ms FROM uploads"
            " WHERE upload_id = ? AND bucket = ? AND key = ?" + lock,
            (upload_id, bucket, key),
        )
        if row is None:
            self._bucket(db, bucket)
            raise _no_such_upload()
        return Upload(upload_id, bucket, key, str(row[0]), json.loads(str(row[1])), int(row[2]))

    def _lock_upload(self, db: Connection, bucket: str, key: str, upload_id: str) -> Upload:
        """Inside a write: the upload, locked against other writers of it until commit."""
        self._bucket(db, bucket, db.dialect.share_lock)
        return self._upload(db, bucket, key, upload_id, db.dialect.for_update)

    def put_part(self, bucket: str, key: str, upload_id: str, part: Part) -> list[str]:
        """Records a part (replacing one with the same number); the data ids it replaced."""
        if not 1 <= part.number <= PART_NUMBER_MAX:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive",
                400,
            )

        def put(db: Connection) -> list[str]:
            self._lock_upload(db, bucket, key, upload_id)
            replaced = [
                str(row[0])
                for row in db.rows(
                    "SELECT data_id FROM parts WHERE upload_id = ? AND part_number = ?",
                    (upload_id, part.number),
                )
            ]
            db.run(
                "INSERT INTO parts (upload_id, part_number, data_id, size, etag, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (upload_id, part_number) DO UPDATE"
                " SET data_id = excluded.data_id, size = excluded.size, etag = excluded.etag,"
                " created_ms = excluded.created_ms",
                (upload_id, part.number, part.data_id, part.size, part.etag, part.created_ms),
            )
            return replaced

        return self._write(put)

    def list_parts(
        self, bucket: str, key: str, upload_id: str, *, after: int = 0, max_parts: int = 1000
    ) -> tuple[Upload, list[Part], bool]:
        """Parts numbered above ``after``, at most ``max_parts``; and whether more follow."""

        def read(db: Connection) -> tuple[Upload, list[tuple[Any, ...]]]:
            upload = self._upload(db, bucket, key, upload_id)
            rows = db.rows(
                "SELECT part_number, data_id, size, etag, created_ms FROM parts"
                " WHERE upload_id = ? AND part_number > ? ORDER BY part_number LIMIT ?",
                (upload_id, after, max_parts + 1),
            )
            return upload, rows

        upload, rows = self._read(read)
        parts = [Part(int(n), str(d), int(s), str(e), int(c)) for n, d, s, e, c in rows]
        return upload, parts[:max_parts], len(parts) > max_parts

    def complete_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        chosen: Sequence[tuple[int, str]],
        *,
        part_bytes_min: int = PART_BYTES_MIN,
    ) -> tuple[ObjectRecord, PutResult]:
        """Turns the ``chosen`` (part number, ETag) parts into the key's latest version.

        Returns the object and the put's result, whose ``replaced`` also holds
        the data ids of the parts left out. InvalidPartOrder, InvalidPart
        (unknown number or ETag mismatch), EntityTooSmall (a part but the
        last under ``part_bytes_min``): nothing changes.
        """
        if not chosen:
            raise _malformed("a CompleteMultipartUpload names at least one part")
        numbers = [number for number, _ in chosen]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by"
                " part number.",
                400,
            )

        def complete(db: Connection) -> tuple[ObjectRecord, PutResult]:
            upload = self._lock_upload(db, bucket, key, upload_id)
            stored = {
                int(n): (str(d), int(s), str(e))
                for n, d, s, e in db.rows(
                    "SELECT part_number, data_id, size, etag FROM parts WHERE upload_id = ?",
                    (upload_id,),
                )
            }
            pieces: list[tuple[str, int]] = []
            digests = b""
            for index, (number, etag) in enumerate(chosen):
                found = stored.get(number)
                if found is None or found[2] != etag.strip('"').lower():
                    raise S3Error(
                        "InvalidPart",
                        f"One or more of the specified parts could not be found (part"
                        f" {number}): the part may not have been uploaded, or the"
                        " specified ETag may not match the part's ETag.",
                        400,
                    )
                if index < len(chosen) - 1 and found[1] < part_bytes_min:
                    raise S3Error(
                        "EntityTooSmall",
                        f"Your proposed upload is smaller than the minimum allowed size:"
                        f" part {number} holds {found[1]} bytes, and every part but the"
                        f" last must hold at least {part_bytes_min}",
                        400,
                    )
                pieces.append((found[0], found[1]))
                digests += bytes.fromhex(found[2])
            etag = f"{hashlib.md5(digests).hexdigest()}-{len(chosen)}"
            record = ObjectRecord(
                bucket,
                key,
                sum(size for _, size in pieces),
                etag,
                upload.content_type,
                "",
                upload.user_meta,
                parts=tuple(pieces),
            )
            put = self._put(db, record)
            used = {data_id for data_id, _ in pieces}
            left_out = [d for d, _, _ in stored.values() if d not in used]
            db.run("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.run("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            record = replace(record, version_id=put.version_id)
            return record, PutResult(put.version_id, put.replaced + left_out)

        return self._write(complete)

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> list[str]:
        """Forgets the upload and its parts; the parts' data ids. NoSuchUpload if unknown."""

        def abort(db: Connection) -> list[str]:
            self._lock_upload(db, bucket, key, upload_id)
            return self._drop_upload(db, upload_id)

        return self._write(abort)

    def _drop_upload(self, db: Connection, upload_id: str) -> list[str]:
        data_ids = [
            str(row[0])
            for row in db.rows("SELECT data_id FROM parts WHERE upload_id = ?", (upload_id,))
        ]
        db.run("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
        db.run("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        return data_ids

    def list_uploads(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        max_uploads: int = 1000,
        key_marker: str = "",
        upload_marker: str = "",
    ) -> UploadListing:
        """Unfinished uploads by key (then upload id), after the markers."""

        def read(db: Connection) -> list[tuple[Any, ...]]:
            self._bucket(db, bucket)
            return db.rows(
                "SELECT upload_id, bucket, key, content_type, user_meta, created_ms FROM uploads"
                " WHERE bucket = ? AND key >= ? AND ((key = ? AND upload_id > ?) OR key > ?)"
                " ORDER BY key, upload_id",
                (bucket, prefix, key_marker, upload_marker if upload_marker else "~", key_marker),
            )

        rows = self._read(read)
        uploads: list[Upload] = []
        prefixes: list[str] = []
        last_key: str | None = None
        last_upload: str | None = None
        for upload_id, _, key, content_type, meta, created in rows:
            if not key.startswith(prefix):
                break
            common = _common_prefix(key, prefix, delimiter)
            if common is not None and (
                common <= key_marker or (prefixes and prefixes[-1] == common)
            ):
                continue
            if len(uploads) + len(prefixes) == max_uploads:
                return UploadListing(uploads, prefixes, True, last_key, last_upload)
            if common is not None:
                prefixes.append(common)
                last_key, last_upload = common, None
                continue
            uploads.append(
                Upload(upload_id, bucket, key, content_type, json.loads(meta), int(created))
            )
            last_key, last_upload = key, upload_id
        return UploadListing(uploads, prefixes, False, None, None)

    def expire_uploads(self, older_than_ms: int) -> tuple[int, list[str]]:
        """Aborts uploads started before ``older_than_ms``: how many, and their parts' data ids.

        On PostgreSQL an upload another server is completing or aborting
        right now is left to it.
        """

        def expire(db: Connection) -> tuple[int, list[str]]:
            data_ids: list[str] = []
            expired = db.rows(
                "SELECT upload_id FROM uploads WHERE created_ms < ?" + db.dialect.skip_locked,
                (older_than_ms,),
            )
            for (upload_id,) in expired:
                data_ids += self._drop_upload(db, str(upload_id))
            return len(expired), data_ids

        return self._write(expire)

    def referenced_data_ids(self) -> set[str]:
        """Every data id a version or an unfinished upload's part points at."""

        def read(db: Connection) -> set[str]:
            found: set[str] = set()
            for data_id, parts in db.rows("SELECT data_id, parts FROM objects"):
                if data_id:
                    found.add(str(data_id))
                if parts:
                    found.update(str(piece[0]) for piece in json.loads(str(parts)))
            found.update(str(row[0]) for row in db.rows("SELECT data_id FROM parts"))
            return found

        return self._read(read)

    def iter_objects(self) -> Iterator[ObjectRecord]:
        """Every version of every key (for repair and audits), in no particular order."""
        rows = self._read(lambda db: db.rows(f"SELECT {_OBJECT_COLUMNS} FROM objects"))
        for row in rows:
            yield _record(row)


#: Above every ``seq``: a version cursor at (key, this) takes in all of key's versions.
_SEQ_PAST_ALL = (1 << 63) - 1


def _past_prefix(prefix: str) -> str | None:
    r"""The first string after every string that starts with ``prefix``, in UTF-8 byte order.

    None when there is none (``prefix`` is all U+10FFFF). A listing seeks
    there to skip a common prefix's keys in one query, whatever characters
    follow the prefix in them:

    >>> _past_prefix("photos/"), _past_prefix("a\U0010ffff"), _past_prefix("\ud7ff")
    ('photos0', 'b', '\ue000')
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters of UTF-8 text
        following = 0xE000
    return stem[:-1] + chr(following)


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into under ``delimiter``, or None."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return key[: at + len(delimiter)] if at >= 0 else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
