"""The S3 API over one data node and the metadata store: routing, XML bodies, S3 errors.

Path-style addressing (``http://host:port/bucket/key``). :meth:`S3Api.handle`
takes one parsed request and returns the response; it blocks (SQLite, fsync),
so the service calls it on a worker thread. Every request is checked with
SigV4 first: one that fails gets 403 (or S3's 400 for a malformed one) and
changes nothing.

**What a PUT means.** The bytes go to the data node under a fresh id and are
synced there; only then is the metadata row committed, and only then is the
PUT answered. A crash before the commit leaves bytes nobody points at (never
a visible partial object); the bytes of an overwritten or deleted object are
deleted from the data node after the commit that stopped pointing at them.

Operations: CreateBucket, ListBuckets, HeadBucket, DeleteBucket, PutObject
(Content-MD5, x-amz-checksum-crc32, user metadata, Content-Type), GetObject
(with a single Range), HeadObject, DeleteObject, ListObjects (v1) and
ListObjectsV2, DeleteObjects. Anything else answers ``501 NotImplemented``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from sdi.objstore.datanode import DataNode
from sdi.objstore.metadata import (
    Listing,
    Metadata,
    ObjectRecord,
    S3Error,
    check_bucket_name,
    check_key,
)
from sdi.objstore.sigv4 import SigV4Error, Verifier

__all__ = ["S3Api", "S3Request", "S3Response"]

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
OBJECT_BYTES_MAX = 512 << 20  # bodies are held in memory in this slice
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
        "uploadId",
        "uploads",
        "versioning",
        "versions",
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


@dataclass
class S3Response:
    """A response; for HEAD, ``content_length`` says what a GET's body would hold."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_length: int | None = None


def _xml(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">{inner}</{root}>'
    ).encode()


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _http_date(ms: int) -> str:
    return formatdate(ms // 1000, usegmt=True)


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
    """The S3 operations over a data node and a metadata store kept under ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        keys: Mapping[str, str],
        *,
        region: str = "us-east-1",
        sync: bool = True,
    ) -> None:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.verifier = Verifier(keys)
        self.node = DataNode(root / "node-0", sync=sync)
        self.meta = Metadata(root / "metadata.sqlite")

    def close(self) -> None:
        self.node.close()
        self.meta.close()

    # -- dispatch -------------------------------------------------------------

    def handle(self, request: S3Request, *, now: float | None = None) -> S3Response:
        """Authenticates and serves one request; never raises for a client's mistake."""
        request_id = uuid.uuid4().hex[:16].upper()
        resource = unquote(request.raw_path)
        try:
            verified = self.verifier.verify(
                request.method,
                request.raw_path,
                request.raw_query,
                request.headers,
                request.body,
                now=time.time() if now is None else now,
            )
            response = self._route(request, verified.access_key)
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
        if unsupported or "x-amz-copy-source" in request.headers:
            what = ", ".join(sorted(unsupported)) or "CopyObject"
            raise S3Error(
                "NotImplemented", f"{what} is not implemented by sdi's S3 service yet", 501
            )
        method = request.method
        if not bucket:
            if method == "GET":
                return self._list_buckets(owner)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service", 405)
        if not key:
            if method == "PUT":
                return self._create_bucket(bucket, owner, request.body)
            if method == "HEAD":
                self.meta.bucket(bucket)
                return S3Response(200, {"x-amz-bucket-region": self.region})
            if method == "DELETE":
                self.meta.delete_bucket(bucket)
                return S3Response(204)
            if method == "POST" and "delete" in query:
                return self._delete_objects(bucket, request)
            if method == "GET":
                if "location" in query:
                    self.meta.bucket(bucket)
                    return S3Response(
                        200,
                        {"content-type": "application/xml"},
                        _xml("LocationConstraint", ""),
                    )
                return self._list_objects(bucket, query)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on a bucket", 405)
        check_key(key)
        if method == "PUT":
            return self._put_object(bucket, key, request)
        if method in ("GET", "HEAD"):
            return self._get_object(bucket, key, request)
        if method == "DELETE":
            for data_id in self.meta.delete_object(bucket, key):
                self.node.delete(data_id)
            return S3Response(204)
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on an object", 405)

    # -- buckets --------------------------------------------------------------

    def _create_bucket(self, bucket: str, owner: str, body: bytes) -> S3Response:
        check_bucket_name(bucket)
        if body.strip():
            try:
                root = ElementTree.fromstring(body)
            except ElementTree.ParseError as error:
                raise S3Error(
                    "MalformedXML",
                    "The XML you provided was not well-formed or did not validate"
                    " against our published schema",
                    400,
                ) from error
            if root.tag.rsplit("}", 1)[-1] != "CreateBucketConfiguration":
                raise S3Error("MalformedXML", "the body must be a CreateBucketConfiguration", 400)
            for child in root:
                if child.tag.rsplit("}", 1)[-1] == "LocationConstraint":
                    wanted = (child.text or "").strip()
                    if wanted and wanted != self.region:
                        raise S3Error(
                            "IllegalLocationConstraintException",
                            f"this endpoint serves region {self.region}, not {wanted}",
                            400,
                        )
        self.meta.create_bucket(bucket, owner=owner)
        return S3Response(200, {"location": f"/{bucket}"})

    def _list_buckets(self, owner: str) -> S3Response:
        items = "".join(
            f"<Bucket><Name>{escape(b.name)}</Name>"
            f"<CreationDate>{_iso(b.created_ms)}</CreationDate></Bucket>"
            for b in self.meta.list_buckets()
        )
        inner = (
            f"<Owner><ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName></Owner>"
            f"<Buckets>{items}</Buckets>"
        )
        return S3Response(
            200, {"content-type": "application/xml"}, _xml("ListAllMyBucketsResult", inner)
        )

    def _list_objects(self, bucket: str, query: dict[str, str]) -> S3Response:
        v2 = query.get("list-type") == "2"
        url = query.get("encoding-type") == "url"
        if "encoding-type" in query and not url:
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", 400)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_text = query.get("max-keys", "1000")
        if not max_text.isdigit():
            raise S3Error("InvalidArgument", "max-keys must be a non-negative integer", 400)
        max_keys = min(int(max_text), 1000)
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

        def enc(text: str) -> str:
            return escape(quote(text, safe="/") if url else text)

        parts = [
            f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>")
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
        return S3Response(
            200, {"content-type": "application/xml"}, _xml("ListBucketResult", "".join(parts))
        )

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

    # -- objects --------------------------------------------------------------

    def _put_object(self, bucket: str, key: str, request: S3Request) -> S3Response:
        body = request.body
        headers = request.headers
        if len(body) > OBJECT_BYTES_MAX:
            raise S3Error(
                "EntityTooLarge",
                f"Your proposed upload exceeds the maximum allowed size ({OBJECT_BYTES_MAX} bytes)",
                400,
            )
        digest = _check_digests(body, headers)
        self.meta.bucket(bucket)  # NoSuchBucket before any bytes are written
        user_meta = {
            name[len("x-amz-meta-") :]: value
            for name, value in headers.items()
            if name.startswith("x-amz-meta-")
        }
        if sum(len(k) + len(v) for k, v in user_meta.items()) > 2048:
            raise S3Error(
                "MetadataTooLarge", "Your metadata headers exceed the maximum allowed size.", 400
            )
        etag = digest.hex()
        data_id = uuid.uuid4().hex
        # Data first (durable on return), metadata last: a crash in between
        # leaves unreferenced bytes, never a visible partial object.
        self.node.put(data_id, body)
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
            replaced = self.meta.put_object(record)
        except BaseException:
            self.node.delete(data_id)
            raise
        for old in replaced:
            if old != data_id:
                self.node.delete(old)
        response_headers = {"etag": f'"{etag}"'}
        if "x-amz-checksum-crc32" in headers:
            response_headers["x-amz-checksum-crc32"] = headers["x-amz-checksum-crc32"]
        return S3Response(200, response_headers)

    def _delete_objects(self, bucket: str, request: S3Request) -> S3Response:
        """DeleteObjects: up to 1000 keys in one XML body; per-key results."""
        _check_digests(request.body, request.headers)
        malformed = S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate"
            " against our published schema",
            400,
        )
        try:
            root = ElementTree.fromstring(request.body)
        except ElementTree.ParseError as error:
            raise malformed from error
        if _local(root.tag) != "Delete":
            raise malformed
        quiet = False
        keys: list[str] = []
        for child in root:
            name = _local(child.tag)
            if name == "Quiet":
                quiet = (child.text or "").strip().lower() == "true"
            elif name == "Object":
                found = [part.text or "" for part in child if _local(part.tag) == "Key"]
                if len(found) != 1:
                    raise malformed
                keys.append(found[0])
        if not 1 <= len(keys) <= 1000:
            raise malformed
        self.meta.bucket(bucket)
        parts: list[str] = []
        for key in keys:
            try:
                check_key(key)
                for data_id in self.meta.delete_object(bucket, key):
                    self.node.delete(data_id)
            except S3Error as error:
                parts.append(
                    f"<Error><Key>{escape(key)}</Key><Code>{error.code}</Code>"
                    f"<Message>{escape(error.message)}</Message></Error>"
                )
                continue
            if not quiet:
                parts.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
        return S3Response(
            200, {"content-type": "application/xml"}, _xml("DeleteResult", "".join(parts))
        )

    def _get_object(self, bucket: str, key: str, request: S3Request) -> S3Response:
        record = self.meta.get_object(bucket, key)
        headers = {
            "content-type": record.content_type,
            "etag": f'"{record.etag}"',
            "last-modified": _http_date(record.created_ms),
            "accept-ranges": "bytes",
        }
        for name, value in record.user_meta.items():
            headers[f"x-amz-meta-{name}"] = value
        size = record.size
        byte_range = _parse_range(request.headers.get("range"), size)
        head = request.method == "HEAD"
        if byte_range is None:
            body = b"" if head else self._read(record, 0, size)
            return S3Response(200, headers, body, size if head else None)
        start, end = byte_range
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        body = b"" if head else self._read(record, start, length)
        return S3Response(206, headers, body, length if head else None)

    def _read(self, record: ObjectRecord, start: int, length: int) -> bytes:
        try:
            if start == 0 and length == record.size:
                return self.node.get(record.data_id)
            return self.node.get_range(record.data_id, start, length)
        except KeyError as error:  # deleted between the metadata read and this one
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404) from error


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _check_digests(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body's MD5; S3's error when Content-MD5 or x-amz-checksum-crc32 disagree."""
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
    if "x-amz-checksum-crc32" in headers:
        crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        if crc != headers["x-amz-checksum-crc32"]:
            raise S3Error(
                "BadDigest", "The CRC32 you specified did not match the calculated checksum.", 400
            )
    return digest


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A ``Range: bytes=...`` header as (first, last); None to serve the whole object.

    As S3 does, a header it cannot parse (or one asking for several ranges) is
    ignored, and a satisfiable-looking range past the end is ``InvalidRange``.
    """
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, dash, last = value[len("bytes=") :].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if first and last and not (first.isdigit() and last.isdigit()):
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _invalid_range(size)
        return max(0, size - suffix), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        return None
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
