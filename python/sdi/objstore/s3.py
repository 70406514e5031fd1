"""The S3 API over the blob store and the metadata store: routing, XML bodies, S3 errors.

Path-style addressing (``http://host:port/bucket/key``). :meth:`S3Api.handle`
takes one parsed request and returns the response; it blocks (SQLite, fsync),
so the service calls it on a worker thread. Every request is checked with
SigV4 first: one that fails gets 403 (or S3's 400 for a malformed one) and
changes nothing.

**What a PUT means.** The bytes go to the blob store under a fresh data id
and are durable there; only then is the metadata row committed, and only
then is the PUT answered. A crash before the commit leaves bytes nobody
points at (never a visible partial object); :meth:`S3Api.collect_garbage`
deletes them later. Bytes of an overwritten or deleted version are deleted
after the commit that stopped pointing at them. Multipart parts are stored
the same way, one data id per part; completing an upload writes one row that
lists its parts (no bytes are copied).

Operations: CreateBucket, ListBuckets, HeadBucket, DeleteBucket,
GetBucketLocation, Get/PutBucketVersioning, PutObject (Content-MD5,
x-amz-checksum-crc32, user metadata, Content-Type), CopyObject (metadata
directive COPY/REPLACE, copy-source conditions), GetObject and HeadObject
(a single Range, partNumber, versionId, If-Match/If-None-Match/
If-Modified-Since/If-Unmodified-Since), DeleteObject (versionId, delete
markers), DeleteObjects, ListObjects (v1) and ListObjectsV2,
ListObjectVersions, and multipart: CreateMultipartUpload, UploadPart,
UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload, ListParts,
ListMultipartUploads. Other subresources answer ``501 NotImplemented``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from sdi.errors import Corrupt, InternalError, InvalidArgument
from sdi.objstore.blobs import Blobs, NodeBlobs, now_ms
from sdi.objstore.ec import checksum as crc32c
from sdi.objstore.metadata import (
    PART_BYTES_MIN,
    PART_NUMBER_MAX,
    Bucket,
    Listing,
    Metadata,
    ObjectRecord,
    Part,
    S3Error,
    check_bucket_name,
    check_key,
)
from sdi.objstore.nodes import NodeUnavailable
from sdi.objstore.sigv4 import SigV4Error, Verifier, check_payload
from sdi.runtime.text import is_decimal

__all__ = ["GarbageReport", "S3Api", "S3Request", "S3Response"]

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: CreateBucket's header choosing how the bucket's bytes are kept (``replicas-3``, ``ec-4+2``);
#: HeadBucket answers with it.
DURABILITY_HEADER = "x-sdi-durability"
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
#: The largest body one request may carry (a PUT, or one part): bodies are held in memory.
OBJECT_BYTES_MAX = 512 << 20
#: Standard headers a PUT may set that S3 stores and returns with the object.
STORED_HEADERS = (
    "cache-control", "content-disposition", "content-encoding", "content-language", "expires",
)  # fmt: skip
#: Headers a GET may override with a ``response-<header>`` query parameter.
RESPONSE_OVERRIDES = frozenset(STORED_HEADERS) | {"content-type"}
#: Bodies from this size on are hashed on other threads while they are stored.
PARALLEL_CHECK_BYTES = 1 << 20
#: GETs of objects up to this size are answered from one read; larger ones are streamed.
WHOLE_READ_BYTES_MAX = 16 << 20
#: Unfinished multipart uploads older than this are aborted by garbage collection.
UPLOAD_EXPIRY_S = 7 * 24 * 3600.0
#: Bytes no row points at are deleted once they are this old (a PUT in flight is younger).
ORPHAN_AGE_S = 3600.0
_UNSUPPORTED_SUBRESOURCES = frozenset(
    {
        "acl",
        "accelerate",
        "analytics",
        "cors",
        "encryption",
        "inventory",
        "lifecycle",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "legal-hold",
        "select",
        "tagging",
        "torrent",
        "website",
        "attributes",
    }
)


@dataclass
class S3Request:
    """One HTTP request: ``raw_path`` and ``raw_query`` as sent, lower-case header names."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]
    body: bytes = b""
    #: Set by :meth:`S3Api.handle` when SigV4's body SHA-256 is still to be checked.
    unchecked_sha256: str | None = None


@dataclass
class S3Response:
    """A response; for HEAD (or a streamed body) ``content_length`` says the body's size."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_length: int | None = None
    #: A body too large to hold at once, read piece by piece as it is sent.
    chunks: Iterator[bytes] | None = None


@dataclass(frozen=True)
class GarbageReport:
    uploads_expired: int
    parts_deleted: int
    orphans_deleted: int


def _xml(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">{inner}</{root}>'
    ).encode()


def _xml_response(root: str, inner: str, status: int = 200) -> S3Response:
    return S3Response(status, {"content-type": "application/xml"}, _xml(root, inner))


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _http_date(ms: int) -> str:
    return formatdate(ms // 1000, usegmt=True)


def _malformed(detail: str = "") -> S3Error:
    message = (
        "The XML you provided was not well-formed or did not validate against our published schema"
    )
    return S3Error("MalformedXML", message + (f" ({detail})" if detail else ""), 400)


def _parse_xml(body: bytes, root_name: str) -> ElementTree.Element:
    """The body's root element, which must be ``root_name``; MalformedXML otherwise."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise _malformed() from error
    if _local(root.tag) != root_name:
        raise _malformed(f"the body must be a {root_name}")
    return root


def error_response(
    code: str, message: str, status: int, resource: str, request_id: str
) -> S3Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    return S3Response(status, {"content-type": "application/xml"}, body)


class S3Api:
    """The S3 operations over a blob store and a metadata store kept under ``data_dir``.

    ``blobs`` is where the bytes go (by default one in-process data node in
    ``data_dir/node-0``); ``durability`` is the default for new buckets.
    ``part_bytes_min`` is S3's 5 MiB minimum for every part but the last.
    ``metadata`` is a PostgreSQL URL to keep the metadata there instead of in
    ``data_dir/metadata.sqlite`` (see :class:`~sdi.objstore.metadata.Metadata`).
    """

    def __init__(
        self,
        data_dir: str | Path,
        keys: Mapping[str, str],
        *,
        region: str = "us-east-1",
        sync: bool = True,
        blobs: Blobs | None = None,
        durability: str = "replicas-1",
        part_bytes_min: int = PART_BYTES_MIN,
        metadata: str | None = None,
    ) -> None:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.verifier = Verifier(keys)
        self.blobs: Blobs = blobs if blobs is not None else NodeBlobs(root / "node-0", sync=sync)
        self.meta = Metadata(metadata or root / "metadata.sqlite")
        self.durability = durability
        self.part_bytes_min = part_bytes_min
        self._pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sdi-s3-check")

    def close(self) -> None:
        self._pool.shutdown()
        self.blobs.close()
        self.meta.close()

    # -- dispatch -------------------------------------------------------------

    def handle(self, request: S3Request, *, now: float | None = None) -> S3Response:
        """Authenticates and serves one request; never raises for a client's mistake."""
        request_id = uuid.uuid4().hex[:16].upper()
        resource = _xml_safe(unquote(request.raw_path))
        try:
            # A large PUT body's SHA-256 is checked beside the other digests and the
            # store (see _store_checked); the signature itself is checked here.
            defer = request.method == "PUT" and len(request.body) >= PARALLEL_CHECK_BYTES
            verified = self.verifier.verify(
                request.method,
                request.raw_path,
                request.raw_query,
                request.headers,
                None if defer else request.body,
                now=time.time() if now is None else now,
            )
            request.unchecked_sha256 = verified.unchecked_sha256
            response = self._route(request, verified.access_key)
        except NodeUnavailable as error:
            response = error_response(
                "ServiceUnavailable",
                f"too few data nodes answer to store or read this object; retry shortly ({error})",
                503,
                resource,
                request_id,
            )
            if request.method == "HEAD":
                response.content_length, response.body = 0, b""
        except Corrupt as error:
            response = error_response(
                "InternalError",
                f"the object's bytes could not be read intact from enough data nodes ({error})",
                500,
                resource,
                request_id,
            )
            if request.method == "HEAD":
                response.content_length, response.body = 0, b""
        except (S3Error, SigV4Error) as error:
            response = error_response(error.code, error.message, error.status, resource, request_id)
            if isinstance(error, S3Error):
                response.headers.update(error.headers)
            if request.method == "HEAD":
                response.content_length = 0
                response.body = b""
        response.headers.setdefault("x-amz-request-id", request_id)
        return response

    def _route(self, request: S3Request, owner: str) -> S3Response:
        path = request.raw_path
        if not path.startswith("/"):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
        bucket_part, _, key_part = path[1:].partition("/")
        bucket = unquote(bucket_part)
        try:
            key = unquote(key_part, errors="strict")
        except UnicodeDecodeError as error:
            raise S3Error("InvalidURI", "the key is not valid UTF-8", 400) from error
        query = dict(parse_qsl(request.raw_query, keep_blank_values=True))
        unsupported = _UNSUPPORTED_SUBRESOURCES & query.keys()
        if unsupported:
            what = ", ".join(sorted(unsupported))
            raise S3Error(
                "NotImplemented", f"{what} is not implemented by sdi's S3 service yet", 501
            )
        method = request.method
        if not bucket:
            if method == "GET":
                return self._list_buckets(owner)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service", 405)
        if not key:
            return self._route_bucket(request, bucket, query, owner)
        check_key(key)
        if "\x00" in key and self.meta.backend == "postgresql":
            raise S3Error(
                "InvalidArgument", "this server keeps its metadata in PostgreSQL, whose text"
                " cannot hold a NUL character: use a key without U+0000", 400,
            )  # fmt: skip
        plain_upload = (
            method == "PUT"
            and "x-amz-copy-source" not in request.headers
            and query.keys() <= {"uploadId", "partNumber"}
        )
        if not plain_upload:
            self._check_payload(request)
        if method == "PUT":
            if "uploadId" in query or "partNumber" in query:
                return self._upload_part(bucket, key, query, request)
            if "x-amz-copy-source" in request.headers:
                return self._copy_object(bucket, key, request)
            return self._put_object(bucket, key, request)
        if method == "POST":
            if "uploads" in query:
                return self._create_upload(bucket, key, request)
            if "uploadId" in query:
                return self._complete_upload(bucket, key, query["uploadId"], request)
            raise S3Error("MethodNotAllowed", "POST on an object needs ?uploads or ?uploadId", 405)
        if method in ("GET", "HEAD"):
            if "uploadId" in query and method == "GET":
                return self._list_parts(bucket, key, query, owner)
            return self._get_object(bucket, key, query, request)
        if method == "DELETE":
            if "uploadId" in query:
                self._drop(self.meta.abort_upload(bucket, key, query["uploadId"]))
                return S3Response(204)
            return self._delete_object(bucket, key, query.get("versionId"))
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on an object", 405)

    def _route_bucket(
        self, request: S3Request, bucket: str, query: dict[str, str], owner: str
    ) -> S3Response:
        method = request.method
        if method == "PUT":
            if "versioning" in query:
                return self._put_versioning(bucket, request.body)
            return self._create_bucket(bucket, owner, request.body, request.headers)
        if method == "HEAD":
            durability = self.meta.bucket(bucket).durability
            return S3Response(
                200, {"x-amz-bucket-region": self.region, DURABILITY_HEADER: durability}
            )
        if method == "DELETE":
            self._drop(self.meta.delete_bucket(bucket))
            return S3Response(204)
        if method == "POST" and "delete" in query:
            return self._delete_objects(bucket, request)
        if method == "GET":
            if "location" in query:
                self.meta.bucket(bucket)
                return _xml_response("LocationConstraint", "")
            if "versioning" in query:
                state = self.meta.bucket(bucket).versioning
                inner = "" if state == "Unversioned" else f"<Status>{state}</Status>"
                return _xml_response("VersioningConfiguration", inner)
            if "versions" in query:
                return self._list_versions(bucket, query)
            if "uploads" in query:
                return self._list_uploads(bucket, query)
            return self._list_objects(bucket, query)
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on a bucket", 405)

    # -- bytes ----------------------------------------------------------------

    def _store(self, bucket: Bucket, data: bytes | memoryview) -> str:
        """Stores ``data`` durably under a fresh data id, as the bucket's durability says."""
        data_id = uuid.uuid4().hex
        self.blobs.put(data_id, data, durability=bucket.durability)
        return data_id

    def _store_checked(self, bucket: Bucket, request: S3Request) -> tuple[bytes, str]:
        """Checks the body's digests and stores it; its MD5 and data id.

        A large body is hashed (SHA-256 for SigV4, MD5 for the ETag, any
        ``x-amz-checksum-*``) on other threads while it is being stored; if a
        check fails, the stored bytes are deleted before the error is raised
        (no row ever pointed at them).
        """
        body = request.body
        if len(body) < PARALLEL_CHECK_BYTES:
            self._check_payload(request)
            digest = _check_digests(body, request.headers)
            return digest, self._store(bucket, body)
        digests = self._pool.submit(_check_digests, body, request.headers)
        checks: list[futures.Future[None]] = []
        if request.unchecked_sha256 is not None:
            checks.append(self._pool.submit(check_payload, body, request.unchecked_sha256))
            request.unchecked_sha256 = None
        data_id: str | None = None
        store_error: BaseException | None = None
        try:
            data_id = self._store(bucket, body)
        except BaseException as error:  # reported after the checks: a bad body comes first
            store_error = error
        try:
            digest = digests.result()
            for check in checks:
                check.result()
        except BaseException:
            if data_id is not None:
                self._drop([data_id])
            raise
        if store_error is not None or data_id is None:
            raise store_error or InternalError("the store returned no data id")
        return digest, data_id

    def _check_payload(self, request: S3Request) -> None:
        """Checks the body against the SHA-256 SigV4 signed, if that was left for later."""
        if request.unchecked_sha256 is not None:
            check_payload(request.body, request.unchecked_sha256)
            request.unchecked_sha256 = None

    def _drop(self, data_ids: list[str]) -> None:
        """Deletes bytes no row points at any more (leftovers are garbage-collected later)."""
        for data_id in data_ids:
            try:
                self.blobs.delete(data_id)
            except Exception:  # best effort: collect_garbage deletes leftovers
                continue

    def _read(self, record: ObjectRecord, start: int, length: int) -> bytes:
        """``length`` bytes of the object from ``start``, read at once."""
        return b"".join(self._pieces(record, start, length))

    def _pieces(self, record: ObjectRecord, start: int, length: int) -> Iterator[bytes]:
        """The object's bytes from ``start``, ``length`` of them, one stored piece at a time."""
        end = start + length
        offset = 0
        for data_id, size in record.segments:
            lo, hi = max(start, offset), min(end, offset + size)
            if lo < hi:
                try:
                    if lo == offset and hi == offset + size:
                        yield self.blobs.get(data_id)
                    else:
                        yield self.blobs.get_range(data_id, lo - offset, hi - lo)
                except KeyError as error:  # deleted between the metadata read and this one
                    raise S3Error("NoSuchKey", "The specified key does not exist.", 404) from error
            offset += size
            if offset >= end:
                return

    # -- buckets --------------------------------------------------------------

    def _create_bucket(
        self, bucket: str, owner: str, body: bytes, headers: Mapping[str, str]
    ) -> S3Response:
        check_bucket_name(bucket)
        if body.strip():
            root = _parse_xml(body, "CreateBucketConfiguration")
            for child in root:
                if _local(child.tag) == "LocationConstraint":
                    wanted = (child.text or "").strip()
                    if wanted and wanted != self.region:
                        raise S3Error(
                            "IllegalLocationConstraintException",
                            f"this endpoint serves region {self.region}, not {wanted}",
                            400,
                        )
        durability = headers.get(DURABILITY_HEADER, self.durability)
        try:
            self.blobs.check_durability(durability)
        except InvalidArgument as error:
            raise S3Error("InvalidArgument", str(error), 400) from error
        self.meta.create_bucket(bucket, owner=owner, durability=durability)
        return S3Response(200, {"location": f"/{bucket}"})

    def _put_versioning(self, bucket: str, body: bytes) -> S3Response:
        root = _parse_xml(body, "VersioningConfiguration")
        status = [(child.text or "").strip() for child in root if _local(child.tag) == "Status"]
        if len(status) != 1:
            raise _malformed("a VersioningConfiguration holds one Status")
        self.meta.set_versioning(bucket, status[0])
        return S3Response(200)

    def _list_buckets(self, owner: str) -> S3Response:
        items = "".join(
            f"<Bucket><Name>{escape(b.name)}</Name>"
            f"<CreationDate>{_iso(b.created_ms)}</CreationDate></Bucket>"
            for b in self.meta.list_buckets()
        )
        inner = f"{_owner(owner)}<Buckets>{items}</Buckets>"
        return _xml_response("ListAllMyBucketsResult", inner)

    def _list_objects(self, bucket: str, query: dict[str, str]) -> S3Response:
        v2 = query.get("list-type") == "2"
        enc = _encoder(query)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_keys = _max_keys(query, "max-keys")
        token = query.get("continuation-token")
        if v2:
            after = query.get("start-after", "")
            if token is not None:
                try:
                    after = max(after, base64.urlsafe_b64decode(token.encode()).decode())
                except (binascii.Error, UnicodeDecodeError, ValueError) as error:
                    raise S3Error(
                        "InvalidArgument", "The continuation token provided is incorrect", 400
                    ) from error
        else:
            after = query.get("marker", "")
        listing = self.meta.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, max_keys=max_keys, after=after
        )
        parts = [
            f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if "encoding-type" in query:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{_bool(listing.truncated)}</IsTruncated>")
        if v2:
            parts.append(f"<KeyCount>{len(listing.contents) + len(listing.prefixes)}</KeyCount>")
            if token is not None:
                parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
            if "start-after" in query:
                parts.append(f"<StartAfter>{enc(query['start-after'])}</StartAfter>")
            if listing.truncated and listing.next_marker is not None:
                next_token = base64.urlsafe_b64encode(listing.next_marker.encode()).decode()
                parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        else:
            parts.append(f"<Marker>{enc(after)}</Marker>")
            if listing.truncated and delimiter and listing.next_marker is not None:
                parts.append(f"<NextMarker>{enc(listing.next_marker)}</NextMarker>")
        parts.extend(self._contents_xml(listing, enc))
        return _xml_response("ListBucketResult", "".join(parts))

    @staticmethod
    def _contents_xml(listing: Listing, enc: Callable[[str], str]) -> list[str]:
        parts = [
            f"<Contents><Key>{enc(item.key)}</Key>"
            f"<LastModified>{_iso(item.created_ms)}</LastModified>"
            f"<ETag>&quot;{item.etag}&quot;</ETag><Size>{item.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for item in listing.contents
        ]
        parts.extend(
            f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>"
            for common in listing.prefixes
        )
        return parts

    def _list_versions(self, bucket: str, query: dict[str, str]) -> S3Response:
        enc = _encoder(query)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_keys = _max_keys(query, "max-keys")
        key_marker = query.get("key-marker", "")
        version_marker = query.get("version-id-marker", "")
        if version_marker and not key_marker:
            raise S3Error(
                "InvalidArgument", "A version-id marker cannot be specified without a key marker.",
                400,
            )  # fmt: skip
        owner = self.meta.bucket(bucket).owner
        listing = self.meta.list_versions(
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            max_keys=max_keys,
            key_marker=key_marker,
            version_marker=version_marker,
        )
        parts = [
            f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<KeyMarker>{enc(key_marker)}</KeyMarker>",
            f"<VersionIdMarker>{escape(version_marker)}</VersionIdMarker>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if "encoding-type" in query:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{_bool(listing.truncated)}</IsTruncated>")
        if listing.truncated and listing.next_key_marker is not None:
            parts.append(f"<NextKeyMarker>{enc(listing.next_key_marker)}</NextKeyMarker>")
            if listing.next_version_marker is not None:
                parts.append(
                    f"<NextVersionIdMarker>{listing.next_version_marker}</NextVersionIdMarker>"
                )
        for item in listing.versions:
            common = (
                f"<Key>{enc(item.key)}</Key><VersionId>{item.version_id}</VersionId>"
                f"<IsLatest>{_bool(item.is_latest)}</IsLatest>"
                f"<LastModified>{_iso(item.created_ms)}</LastModified>{_owner(owner)}"
            )
            if item.delete_marker:
                parts.append(f"<DeleteMarker>{common}</DeleteMarker>")
            else:
                parts.append(
                    f"<Version>{common}<ETag>&quot;{item.etag}&quot;</ETag>"
                    f"<Size>{item.size}</Size><StorageClass>STANDARD</StorageClass></Version>"
                )
        parts.extend(
            f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>"
            for common in listing.prefixes
        )
        return _xml_response("ListVersionsResult", "".join(parts))

    # -- objects --------------------------------------------------------------

    def _put_object(self, bucket: str, key: str, request: S3Request) -> S3Response:
        body = request.body
        headers = request.headers
        _check_size(body)
        target = self.meta.bucket(bucket)  # NoSuchBucket before any bytes are written
        user_meta = _user_meta(headers)
        # Data first (durable on return), metadata last: a crash in between
        # leaves unreferenced bytes, never a visible partial object.
        digest, data_id = self._store_checked(target, request)
        etag = digest.hex()
        record = ObjectRecord(
            bucket,
            key,
            len(body),
            etag,
            headers.get("content-type") or DEFAULT_CONTENT_TYPE,
            data_id,
            user_meta,
        )
        try:
            put = self.meta.put_object(record)
        except BaseException:
            self._drop([data_id])
            raise
        self._drop(put.replaced)
        response_headers = {"etag": f'"{etag}"'}
        if target.versioning != "Unversioned":
            response_headers["x-amz-version-id"] = put.version_id
        response_headers.update(_echo_checksums(headers))
        return S3Response(200, response_headers)

    def _copy_source(self, request: S3Request) -> tuple[ObjectRecord, Bucket]:
        """The version ``x-amz-copy-source`` names, checked against the copy-source conditions."""
        raw = request.headers["x-amz-copy-source"]
        source, _, source_query = raw.partition("?")
        source = unquote(source).lstrip("/")
        source_bucket, _, source_key = source.partition("/")
        if not source_bucket or not source_key:
            raise S3Error(
                "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                400,
            )
        version_id = dict(parse_qsl(source_query)).get("versionId")
        record = self.meta.get_object(source_bucket, source_key, version_id)
        failed = _preconditions(record, request.headers, "x-amz-copy-source-")
        if failed is not None:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                412,
            )
        return record, self.meta.bucket(source_bucket)

    def _copy_object(self, bucket: str, key: str, request: S3Request) -> S3Response:
        headers = request.headers
        source, source_bucket = self._copy_source(request)
        target = self.meta.bucket(bucket)
        directive = headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.", 400)
        same = source.bucket == bucket and source.key == key
        if same and directive == "COPY" and "x-amz-storage-class" not in headers:
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself"
                " without changing the object's metadata, storage class, website redirect"
                " location or encryption attributes.",
                400,
            )
        if directive == "REPLACE":
            content_type = headers.get("content-type") or DEFAULT_CONTENT_TYPE
            user_meta = _user_meta(headers)
        else:
            content_type, user_meta = source.content_type, source.user_meta
        # Copy piece by piece, so a multipart source never has to fit in memory.
        pieces: list[tuple[str, int]] = []
        try:
            for data_id, size in source.segments:
                pieces.append((self._store(target, self.blobs.get(data_id)), size))
        except BaseException:
            self._drop([data_id for data_id, _ in pieces])
            raise
        record = ObjectRecord(
            bucket,
            key,
            source.size,
            source.etag,
            content_type,
            pieces[0][0] if len(pieces) == 1 else "",
            user_meta,
            parts=tuple(pieces) if len(pieces) > 1 else (),
        )
        try:
            put = self.meta.put_object(record)
        except BaseException:
            self._drop([data_id for data_id, _ in pieces])
            raise
        self._drop(put.replaced)
        response_headers = {}
        if source_bucket.versioning != "Unversioned":
            response_headers["x-amz-copy-source-version-id"] = source.version_id
        if target.versioning != "Unversioned":
            response_headers["x-amz-version-id"] = put.version_id
        inner = (
            f"<LastModified>{_iso(now_ms())}</LastModified><ETag>&quot;{source.etag}&quot;</ETag>"
        )
        response = _xml_response("CopyObjectResult", inner)
        response.headers.update(response_headers)
        return response

    def _delete_object(self, bucket: str, key: str, version_id: str | None) -> S3Response:
        result = self.meta.delete_object(bucket, key, version_id)
        self._drop(result.data_ids)
        headers = {}
        if result.delete_marker:
            headers["x-amz-delete-marker"] = "true"
        if result.version_id is not None:
            headers["x-amz-version-id"] = result.version_id
        return S3Response(204, headers)

    def _delete_objects(self, bucket: str, request: S3Request) -> S3Response:
        """DeleteObjects: up to 1000 keys (and versions) in one XML body; per-key results."""
        _check_digests(request.body, request.headers)
        root = _parse_xml(request.body, "Delete")
        quiet = False
        targets: list[tuple[str, str | None]] = []
        for child in root:
            name = _local(child.tag)
            if name == "Quiet":
                quiet = (child.text or "").strip().lower() == "true"
            elif name == "Object":
                keys = [part.text or "" for part in child if _local(part.tag) == "Key"]
                versions = [part.text or "" for part in child if _local(part.tag) == "VersionId"]
                if len(keys) != 1 or len(versions) > 1:
                    raise _malformed("each Object holds one Key and at most one VersionId")
                targets.append((keys[0], versions[0] if versions else None))
        if not 1 <= len(targets) <= 1000:
            raise _malformed("a Delete names between 1 and 1000 objects")
        self.meta.bucket(bucket)
        parts: list[str] = []
        for key, version_id in targets:
            version_xml = (
                "" if version_id is None else f"<VersionId>{escape(version_id)}</VersionId>"
            )
            try:
                result = self.meta.delete_object(bucket, key, version_id)
            except S3Error as error:
                parts.append(
                    f"<Error><Key>{escape(key)}</Key>{version_xml}<Code>{error.code}</Code>"
                    f"<Message>{escape(error.message)}</Message></Error>"
                )
                continue
            self._drop(result.data_ids)
            if quiet:
                continue
            extra = ""
            if result.delete_marker:
                extra = "<DeleteMarker>true</DeleteMarker>"
                if version_id is None and result.version_id is not None:
                    extra += f"<DeleteMarkerVersionId>{result.version_id}</DeleteMarkerVersionId>"
            parts.append(f"<Deleted><Key>{escape(key)}</Key>{version_xml}{extra}</Deleted>")
        return _xml_response("DeleteResult", "".join(parts))

    def _get_object(
        self, bucket: str, key: str, query: dict[str, str], request: S3Request
    ) -> S3Response:
        record = self.meta.get_object(bucket, key, query.get("versionId"))
        headers = {
            "content-type": record.content_type,
            "etag": f'"{record.etag}"',
            "last-modified": _http_date(record.created_ms),
            "accept-ranges": "bytes",
        }
        if self.meta.bucket(bucket).versioning != "Unversioned":
            headers["x-amz-version-id"] = record.version_id
        headers.update(_meta_headers(record.user_meta))
        for name, value in query.items():  # response-content-type=... and the like
            if name.startswith("response-") and name[len("response-") :] in RESPONSE_OVERRIDES:
                headers[name[len("response-") :]] = value
        status = _preconditions(record, request.headers, "")
        if status == 304:
            return S3Response(304, {k: headers[k] for k in ("etag", "last-modified")})
        if status == 412:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                412,
            )
        size = record.size
        head = request.method == "HEAD"
        if "partNumber" in query:
            byte_range: tuple[int, int] | None = _part_range(record, query["partNumber"])
            headers["x-amz-mp-parts-count"] = str(max(1, len(record.parts)))
        else:
            byte_range = _parse_range(request.headers.get("range"), size)
        if byte_range is None:
            return self._body(record, 200, headers, 0, size, head)
        start, end = byte_range
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        return self._body(record, 206, headers, start, end - start + 1, head)

    def _body(
        self,
        record: ObjectRecord,
        status: int,
        headers: dict[str, str],
        start: int,
        length: int,
        head: bool,
    ) -> S3Response:
        if head:
            return S3Response(status, headers, b"", length)
        if length <= WHOLE_READ_BYTES_MAX or len(record.segments) <= 1:
            return S3Response(status, headers, self._read(record, start, length))
        return S3Response(status, headers, b"", length, chunks=self._pieces(record, start, length))

    # -- multipart uploads ----------------------------------------------------

    def _create_upload(self, bucket: str, key: str, request: S3Request) -> S3Response:
        upload = self.meta.create_upload(
            bucket,
            key,
            content_type=request.headers.get("content-type") or DEFAULT_CONTENT_TYPE,
            user_meta=_user_meta(request.headers),
        )
        inner = (
            f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<UploadId>{upload.upload_id}</UploadId>"
        )
        return _xml_response("InitiateMultipartUploadResult", inner)

    def _upload_part(
        self, bucket: str, key: str, query: dict[str, str], request: S3Request
    ) -> S3Response:
        upload_id = query.get("uploadId", "")
        number_text = query.get("partNumber", "")
        if not is_decimal(number_text) or not 1 <= int(number_text) <= PART_NUMBER_MAX:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive",
                400,
            )
        target = self.meta.bucket(bucket)
        self.meta.upload(bucket, key, upload_id)  # NoSuchUpload before any bytes are written
        copy = "x-amz-copy-source" in request.headers
        if copy:
            source, _ = self._copy_source(request)
            first, last = _copy_range(request.headers.get("x-amz-copy-source-range"), source.size)
            body = self._read(source, first, last - first + 1)
            digest = hashlib.md5(body).digest()
            data_id = self._store(target, body)
        else:
            body = request.body
            _check_size(body)
            digest, data_id = self._store_checked(target, request)
        part = Part(int(number_text), data_id, len(body), digest.hex(), now_ms())
        try:
            replaced = self.meta.put_part(bucket, key, upload_id, part)
        except BaseException:
            self._drop([data_id])
            raise
        self._drop(replaced)
        if copy:
            inner = (
                f"<LastModified>{_iso(part.created_ms)}</LastModified>"
                f"<ETag>&quot;{part.etag}&quot;</ETag>"
            )
            return _xml_response("CopyPartResult", inner)
        return S3Response(200, {"etag": f'"{part.etag}"', **_echo_checksums(request.headers)})

    def _complete_upload(
        self, bucket: str, key: str, upload_id: str, request: S3Request
    ) -> S3Response:
        root = _parse_xml(request.body, "CompleteMultipartUpload")
        chosen: list[tuple[int, str]] = []
        for child in root:
            if _local(child.tag) != "Part":
                continue
            fields = {_local(part.tag): (part.text or "").strip() for part in child}
            number, etag = fields.get("PartNumber", ""), fields.get("ETag")
            if not is_decimal(number) or etag is None:
                raise _malformed("each Part holds a PartNumber and an ETag")
            chosen.append((int(number), etag))
        target = self.meta.bucket(bucket)
        record, put = self.meta.complete_upload(
            bucket, key, upload_id, chosen, part_bytes_min=self.part_bytes_min
        )
        self._drop(put.replaced)
        inner = (
            f"<Location>/{escape(bucket)}/{escape(quote(key))}</Location>"
            f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<ETag>&quot;{record.etag}&quot;</ETag>"
        )
        response = _xml_response("CompleteMultipartUploadResult", inner)
        if target.versioning != "Unversioned":
            response.headers["x-amz-version-id"] = put.version_id
        return response

    def _list_parts(self, bucket: str, key: str, query: dict[str, str], owner: str) -> S3Response:
        marker_text = query.get("part-number-marker", "0") or "0"
        if not is_decimal(marker_text):
            raise S3Error("InvalidArgument", "part-number-marker must be an integer", 400)
        max_parts = _max_keys(query, "max-parts")
        upload, parts, truncated = self.meta.list_parts(
            bucket, key, query["uploadId"], after=int(marker_text), max_parts=max_parts
        )
        items = [
            f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>",
            f"<UploadId>{upload.upload_id}</UploadId>",
            f"<Initiator><ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName>"
            f"</Initiator>{_owner(owner)}<StorageClass>STANDARD</StorageClass>",
            f"<PartNumberMarker>{int(marker_text)}</PartNumberMarker>",
        ]
        if parts:
            items.append(f"<NextPartNumberMarker>{parts[-1].number}</NextPartNumberMarker>")
        items.append(
            f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{_bool(truncated)}</IsTruncated>"
        )
        items.extend(
            f"<Part><PartNumber>{part.number}</PartNumber>"
            f"<LastModified>{_iso(part.created_ms)}</LastModified>"
            f"<ETag>&quot;{part.etag}&quot;</ETag><Size>{part.size}</Size></Part>"
            for part in parts
        )
        return _xml_response("ListPartsResult", "".join(items))

    def _list_uploads(self, bucket: str, query: dict[str, str]) -> S3Response:
        enc = _encoder(query)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_uploads = _max_keys(query, "max-uploads")
        key_marker = query.get("key-marker", "")
        upload_marker = query.get("upload-id-marker", "") if key_marker else ""
        owner = self.meta.bucket(bucket).owner
        listing = self.meta.list_uploads(
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            max_uploads=max_uploads,
            key_marker=key_marker,
            upload_marker=upload_marker,
        )
        items = [
            f"<Bucket>{escape(bucket)}</Bucket><KeyMarker>{enc(key_marker)}</KeyMarker>",
            f"<UploadIdMarker>{escape(upload_marker)}</UploadIdMarker>",
        ]
        if listing.truncated:
            items.append(f"<NextKeyMarker>{enc(listing.next_key_marker or '')}</NextKeyMarker>")
            items.append(
                f"<NextUploadIdMarker>{listing.next_upload_marker or ''}</NextUploadIdMarker>"
            )
        items.append(f"<Prefix>{enc(prefix)}</Prefix>")
        if delimiter:
            items.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if "encoding-type" in query:
            items.append("<EncodingType>url</EncodingType>")
        items.append(
            f"<MaxUploads>{max_uploads}</MaxUploads>"
            f"<IsTruncated>{_bool(listing.truncated)}</IsTruncated>"
        )
        items.extend(
            f"<Upload><Key>{enc(upload.key)}</Key><UploadId>{upload.upload_id}</UploadId>"
            f"<Initiator><ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName>"
            f"</Initiator>{_owner(owner)}<StorageClass>STANDARD</StorageClass>"
            f"<Initiated>{_iso(upload.created_ms)}</Initiated></Upload>"
            for upload in listing.uploads
        )
        items.extend(
            f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>"
            for common in listing.prefixes
        )
        return _xml_response("ListMultipartUploadsResult", "".join(items))

    # -- garbage collection ---------------------------------------------------

    def collect_garbage(
        self, *, upload_expiry_s: float = UPLOAD_EXPIRY_S, orphan_age_s: float = ORPHAN_AGE_S
    ) -> GarbageReport:
        """Aborts uploads older than ``upload_expiry_s``; deletes unreferenced bytes.

        Bytes are unreferenced when no version and no unfinished upload's part
        points at them: left by a crash between a store and its commit, or by
        a delete that failed half-way. Only pieces stored more than
        ``orphan_age_s`` ago are considered, so a PUT in flight is never
        touched: its bytes are younger than that until its row commits.
        """
        expired, parts = self.meta.expire_uploads(now_ms() - int(upload_expiry_s * 1000))
        self._drop(parts)
        cutoff = now_ms() - int(orphan_age_s * 1000)
        candidates = list(self.blobs.stored_before(cutoff))
        referenced = self.meta.referenced_data_ids()  # read after the listing
        orphans = [data_id for data_id in candidates if data_id not in referenced]
        self._drop(orphans)
        return GarbageReport(expired, len(parts), len(orphans))


def _xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (NUL and other controls) %-escaped."""
    return _XML_INVALID.sub(lambda match: f"%{ord(match.group()):02X}", text)


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _owner(owner: str) -> str:
    return f"<Owner><ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName></Owner>"


def _encoder(query: Mapping[str, str]) -> Callable[[str], str]:
    """How keys are written in a listing: as they are, or URL-encoded (encoding-type=url)."""
    encoding = query.get("encoding-type")
    if encoding is None:
        return escape
    if encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", 400)
    return lambda text: escape(quote(text, safe="/"))


def _max_keys(query: Mapping[str, str], name: str) -> int:
    text = query.get(name, "1000")
    if not is_decimal(text):
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", 400)
    return min(int(text), 1000)


def _user_meta(headers: Mapping[str, str]) -> dict[str, str]:
    """The object's ``x-amz-meta-*`` headers, and the standard ones S3 keeps with it.

    Standard headers (Cache-Control, ...) are kept in the same mapping under
    their name with a leading ``:``, which no header name can hold.
    """
    user_meta = {
        name[len("x-amz-meta-") :]: value
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }
    if sum(len(k) + len(v) for k, v in user_meta.items()) > 2048:
        raise S3Error(
            "MetadataTooLarge", "Your metadata headers exceed the maximum allowed size.", 400
        )
    for name in STORED_HEADERS:
        if name in headers:
            user_meta[f":{name}"] = headers[name]
    return user_meta


def _meta_headers(user_meta: Mapping[str, str]) -> dict[str, str]:
    """The response headers of an object's stored metadata (see :func:`_user_meta`)."""
    return {
        name[1:] if name.startswith(":") else f"x-amz-meta-{name}": value
        for name, value in user_meta.items()
    }


def _check_size(body: bytes) -> None:
    if len(body) > OBJECT_BYTES_MAX:
        raise S3Error(
            "EntityTooLarge",
            f"Your proposed upload exceeds the maximum allowed size ({OBJECT_BYTES_MAX} bytes"
            " per request); upload larger objects in parts (multipart upload)",
            400,
        )


def _check_digests(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body's MD5; S3's error when Content-MD5 or an ``x-amz-checksum-*`` disagrees."""
    digest = hashlib.md5(body).digest()
    if "content-md5" in headers:
        try:
            claimed = base64.b64decode(headers["content-md5"], validate=True)
        except binascii.Error:
            claimed = b""
        if len(claimed) != 16:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.", 400)
        if claimed != digest:
            raise S3Error(
                "BadDigest", "The Content-MD5 you specified did not match what we received.", 400
            )
    for name, compute in _CHECKSUMS.items():
        claimed_text = headers.get(f"x-amz-checksum-{name}")
        if claimed_text is not None and base64.b64encode(compute(body)).decode() != claimed_text:
            raise S3Error(
                "BadDigest",
                f"The {name.upper()} you specified did not match the calculated checksum.",
                400,
            )
    return digest


#: The ``x-amz-checksum-*`` algorithms checked against a body (S3 echoes them back).
_CHECKSUMS: dict[str, Callable[[bytes], bytes]] = {
    "crc32": lambda body: zlib.crc32(body).to_bytes(4, "big"),
    "crc32c": lambda body: crc32c(body).to_bytes(4, "big"),
    "sha1": lambda body: hashlib.sha1(body).digest(),
    "sha256": lambda body: hashlib.sha256(body).digest(),
}


def _echo_checksums(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        f"x-amz-checksum-{name}": headers[f"x-amz-checksum-{name}"]
        for name in _CHECKSUMS
        if f"x-amz-checksum-{name}" in headers
    }


def _http_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # an unparsable date is ignored, as S3 does


def _etag_matches(header: str, etag: str) -> bool:
    wanted = [item.strip().strip('"') for item in header.split(",")]
    return "*" in wanted or etag in wanted


def _preconditions(record: ObjectRecord, headers: Mapping[str, str], prefix: str) -> int | None:
    """304 or 412 when the If-* headers (or ``x-amz-copy-source-if-*``) say so, else None.

    As S3 (and RFC 9110) order them: If-Match true wins over a failing
    If-Unmodified-Since; If-None-Match false wins over If-Modified-Since.
    """
    modified = record.created_ms // 1000
    match = headers.get(prefix + "if-match")
    none_match = headers.get(prefix + "if-none-match")
    since = _http_time(headers.get(prefix + "if-modified-since"))
    unmodified = _http_time(headers.get(prefix + "if-unmodified-since"))
    if match is not None:
        if not _etag_matches(match, record.etag):
            return 412
    elif unmodified is not None and modified > unmodified:
        return 412
    fail = 412 if prefix else 304  # a copy's conditions all fail with 412
    if none_match is not None:
        if _etag_matches(none_match, record.etag):
            return fail
    elif since is not None and modified <= since:
        return fail
    return None


def _part_range(record: ObjectRecord, text: str) -> tuple[int, int] | None:
    """The byte range of part ``text`` of a multipart object (part 1 of a plain one)."""
    count = max(1, len(record.parts))
    if not is_decimal(text) or not 1 <= int(text) <= PART_NUMBER_MAX:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000", 400)
    number = int(text)
    if number > count:
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
    if not record.parts:
        return None if record.size == 0 else (0, record.size - 1)
    start = sum(size for _, size in record.parts[: number - 1])
    size = record.parts[number - 1][1]
    return (start, start + size - 1) if size else None


def _copy_range(value: str | None, size: int) -> tuple[int, int]:
    """``x-amz-copy-source-range: bytes=first-last`` (both required), or the whole source."""
    if value is None:
        if size == 0:
            return 0, -1
        return 0, size - 1
    first, dash, last = value.removeprefix("bytes=").partition("-")
    if not value.startswith("bytes=") or not dash or not is_decimal(first) or not is_decimal(last):
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last where"
            " first and last are the zero-based offsets of the first and last bytes to copy",
            400,
        )
    start, end = int(first), int(last)
    if end < start or end >= size:
        raise S3Error(
            "InvalidRange",
            f"The requested range {value} is not satisfiable for a source of {size} bytes",
            416,
            {"content-range": f"bytes */{size}"},
        )
    return start, end


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A ``Range: bytes=...`` header as (first, last); None to serve the whole object.

    As S3 does, a header it cannot parse (or one asking for several ranges) is
    ignored, and a satisfiable-looking range past the end is ``InvalidRange``.
    """
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, dash, last = value[len("bytes=") :].strip().partition("-")
    if not dash or not (is_decimal(first) or is_decimal(last)):
        return None
    if first and last and not (is_decimal(first) and is_decimal(last)):
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _invalid_range(size)
        return max(0, size - suffix), size - 1
    if not is_decimal(first) or (last and not is_decimal(last)):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    end = int(last) if last else size - 1
    if start >= size:
        raise _invalid_range(size)
    return start, min(end, size - 1)


def _invalid_range(size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        416,
        {"content-range": f"bytes */{size}"},
    )
