"""Message bodies and attachments, content-addressed by SHA-256: local files or an S3 bucket.

A blob is immutable and named by the SHA-256 hex digest of its bytes, so one
raw message delivered to several local users is one blob, and writing the
same bytes again stores nothing new. Two backends implement :class:`Blobs`:

- :class:`BlobStore` (the default): files under a directory. A blob is
  written to a temporary file, fsynced, renamed to
  ``<root>/<first two hex digits>/<sha256>`` and its directory fsynced, so
  once :meth:`BlobStore.put` returns the bytes survive a crash.
- :class:`S3BlobStore`: objects ``<prefix><sha256>`` in a bucket of any
  S3-compatible endpoint, ``sdi serve s3`` first (:mod:`sdi.objstore`),
  through :class:`S3Client`, a small SigV4 client over :mod:`http.client`
  (boto3 is not needed at run time).

:func:`open_blobs` picks one from a URL (``--blob-url``); :func:`collect_garbage`
deletes the blobs no message refers to any more.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     blobs = BlobStore(path)
...     key = blobs.put(b"hello")
...     print(key[:12], blobs.get(key), blobs.put(b"hello") == key, blobs.exists("0" * 64))
2cf24dba5fb0 b'hello' True False

**Garbage collection.** Blobs are shared (content addressed) and a crash
between putting a blob and committing the row that names it leaves a blob
nobody names, so blobs are freed by mark and sweep rather than by reference
counts: see :func:`collect_garbage` for why a blob that is being stored is
never taken.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlsplit
from xml.etree import ElementTree

from sdi.errors import Corrupt, InvalidArgument, ProtocolError, StorageError, Timeout

__all__ = [
    "GC_GRACE_S",
    "GC_INTERVAL_S",
    "BlobStore",
    "Blobs",
    "GcReport",
    "S3BlobStore",
    "S3Client",
    "collect_garbage",
    "open_blobs",
]

_KEY = re.compile(r"[0-9a-f]{64}")
#: Unreferenced blobs younger than this are kept (see :func:`collect_garbage`).
GC_GRACE_S = 3600.0
#: How often the email service collects blob garbage by default.
GC_INTERVAL_S = 600.0
#: ``sdi serve s3``'s default address: ``--blob-url s3://BUCKET`` without ``endpoint=``.
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:8790"
#: An existing object older than this is refreshed by a put of the same bytes (S3 backend).
S3_REFRESH_S = 600.0
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise InvalidArgument(f"not a blob key: {key[:70]!r}")
    return key


class Blobs(Protocol):
    """What the email service needs of a blob store (thread-safe, blocking)."""

    #: How long (seconds) the store remembers the keys this process put
    #: (:meth:`delete`'s ``unless_put_after``); at least twice the GC grace.
    remember_s: float

    def put(self, data: bytes) -> str:
        """Stores ``data`` durably; its key (the SHA-256 hex digest). Putting bytes that
        are already stored uploads nothing but makes the blob young again for GC."""
        ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; :class:`FileNotFoundError` when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(
        self, key: str, *, unless_put_after: float | None = None, older_than: float | None = None
    ) -> bool:
        """Deletes the blob unless this process put it after ``unless_put_after``
        (a :func:`time.monotonic` time) or, read just before deleting, it is younger
        than ``older_than`` seconds; whether it was deleted."""
        ...

    def scan(self) -> Iterator[tuple[str, float]]:
        """Every stored blob as ``(key, seconds since it was last put)``."""
        ...

    def check(self) -> None:
        """Raises an :mod:`sdi.errors` exception saying what to fix if the store is unusable."""
        ...

    def describe(self) -> str:
        """Where the blobs are, for logs."""
        ...

    def close(self) -> None: ...


class _Recent:
    """The keys this process put lately, with when (monotonic): what GC must not take.

    :meth:`guard` holds the lock a delete runs under, so a put in this
    process either pins its key before the delete looks (and the delete
    skips it) or checks for the blob after the delete (and stores it anew).
    """

    def __init__(self, remember_s: float) -> None:
        self.remember_s = remember_s
        self.lock = threading.Lock()
        self._puts: OrderedDict[str, float] = OrderedDict()

    def pin(self, key: str) -> None:
        now = time.monotonic()
        with self.lock:
            self._puts[key] = now
            self._puts.move_to_end(key)
            while self._puts:
                oldest, when = next(iter(self._puts.items()))
                if now - when <= self.remember_s:
                    break
                del self._puts[oldest]

    def put_after(self, key: str, when: float | None) -> bool:
        """Whether ``key`` was put after ``when`` (call with :attr:`lock` held)."""
        if when is None:
            return False
        put = self._puts.get(key)
        return put is not None and put > when


class _PinsPuts:
    """What both stores share: the keys this process put lately (:class:`_Recent`)."""

    _recent: _Recent

    @property
    def remember_s(self) -> float:
        """How long (seconds) a put keeps its key from this process's GC."""
        return self._recent.remember_s

    @remember_s.setter
    def remember_s(self, value: float) -> None:
        self._recent.remember_s = value


class BlobStore(_PinsPuts):
    """Immutable blobs under ``root``, named by the SHA-256 of their bytes (thread-safe)."""

    def __init__(self, root: Path | str, *, remember_s: float = 2 * GC_GRACE_S) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._recent = _Recent(remember_s)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)[:2] / key

    def put(self, data: bytes) -> str:
        """Stores ``data`` durably; its key (the SHA-256 hex digest)."""
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        self._recent.pin(key)
        if target.exists():
            try:  # young again, so that GC in another process leaves it alone
                os.utime(target)
                return key
            except FileNotFoundError:  # collected just now: store it again
                pass
        target.parent.mkdir(exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return key

    def get(self, key: str) -> bytes:
        """The blob's bytes (:class:`FileNotFoundError` when there is none)."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(
        self, key: str, *, unless_put_after: float | None = None, older_than: float | None = None
    ) -> bool:
        target = self.path(key)
        with self._recent.lock:
            if self._recent.put_after(key, unless_put_after):
                return False
            try:
                if older_than is not None and time.time() - target.stat().st_mtime < older_than:
                    return False  # put again (touched) by another process since it was listed
                target.unlink()
            except FileNotFoundError:
                return False
        return True

    def scan(self) -> Iterator[tuple[str, float]]:
        """Every blob with its age (from its mtime; a put of the same bytes touches it)."""
        for directory in sorted(self.root.iterdir()):
            if len(directory.name) != 2 or not directory.is_dir():
                continue
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not _KEY.fullmatch(entry.name) or entry.name[:2] != directory.name:
                        continue
                    try:
                        modified = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    yield entry.name, max(0.0, time.time() - modified)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write blobs to {self.root}: fix its permissions")

    def describe(self) -> str:
        return f"files in {self.root}"

    def close(self) -> None:
        pass


# -- S3 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> tuple[str, str]:
        """S3's ``<Code>`` and ``<Message>`` of an error answer (empty when there is none)."""
        try:
            root = ElementTree.fromstring(self.body)
        except ElementTree.ParseError:
            return "", ""
        return (root.findtext("Code") or ""), (root.findtext("Message") or "")


def _uri_encode(text: str, *, slash: bool = False) -> str:
    return quote(text, safe="/-_.~" if slash else "-_.~")


class S3Client:
    """A minimal S3 client: path-style requests signed with AWS Signature Version 4.

    Object PUT, GET, HEAD, DELETE, CopyObject and ListObjectsV2, over
    :mod:`http.client` (one connection per request). Every request signs
    ``host``, ``x-amz-date``, ``x-amz-content-sha256`` (the body's SHA-256,
    so the server checks the bytes that arrived) and any ``x-amz-*`` header
    it carries. Failures to reach the endpoint become
    :class:`~sdi.errors.StorageError` (or :class:`~sdi.errors.Timeout`);
    HTTP error answers are returned for the caller to judge.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"an S3 endpoint is http(s)://host[:port], not {endpoint!r}")
        if parts.path not in ("", "/") or parts.username is not None:
            raise InvalidArgument(
                f"an S3 endpoint has no path or user (keys go in options): {endpoint!r}"
            )
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.netloc = parts.netloc
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.timeout = timeout

    def signing_key(self, date: str) -> bytes:
        key = hmac.new(f"AWS4{self.secret_key}".encode(), date.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def sign(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload_sha256: str,
        *,
        now: float | None = None,
    ) -> dict[str, str]:
        """``headers`` plus host, date, payload hash and Authorization for this request.

        ``path`` and ``query`` are as they will be sent (already URI-encoded,
        the query's pairs sorted).
        """
        when = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
        signed["host"] = self.netloc
        signed["x-amz-date"] = amz_date
        signed["x-amz-content-sha256"] = payload_sha256
        names = sorted(n for n in signed if n in ("host", "content-type") or n.startswith("x-amz-"))
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(
            self.signing_key(amz_date[:8]), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return signed

    def request(
        self,
        method: str,
        bucket: str,
        key: str = "",
        *,
        query: Iterable[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        payload_sha256: str | None = None,
    ) -> S3Answer:
        """One signed request to ``/<bucket>/<key>``; the answer, whatever its status."""
        path = "/" + _uri_encode(bucket) + ("/" + _uri_encode(key, slash=True) if key else "")
        query_text = "&".join(
            f"{name}={value}"
            for name, value in sorted((_uri_encode(n), _uri_encode(v)) for n, v in query)
        )
        digest = payload_sha256 or (hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256)
        signed = self.sign(method, path, query_text, headers or {}, digest)
        target = path + (f"?{query_text}" if query_text else "")
        connection: http.client.HTTPConnection
        if self.https:
            connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(
                method, target, body=body if body or method in ("PUT", "POST") else None,
                headers=signed,
            )  # fmt: skip
            response = connection.getresponse()
            data = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            return S3Answer(response.status, answer_headers, data)
        except TimeoutError as error:
            raise Timeout(
                f"the object store at {self.endpoint} did not answer {method} within "
                f"{self.timeout:g} s; check that it is up and not overloaded"
            ) from error
        except (OSError, http.client.HTTPException) as error:
            raise StorageError(
                f"cannot reach the object store at {self.endpoint} ({error}); start it "
                "(`sdi serve s3`) or fix the endpoint in --blob-url"
            ) from error
        finally:
            connection.close()


def _parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _server_now(answer: S3Answer) -> float:
    """The server's clock from the answer's Date header (our own when it sends none)."""
    date = answer.headers.get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


def _age(head: S3Answer) -> float:
    """Seconds since a HEAD answer's Last-Modified, by the server's clock; 0 if unreadable
    (an age not known is young: garbage collection keeps the blob)."""
    try:
        modified = email.utils.parsedate_to_datetime(head.headers.get("last-modified", ""))
    except (TypeError, ValueError, IndexError):
        return 0.0
    return _server_now(head) - modified.timestamp()


class S3BlobStore(_PinsPuts):
    """Blobs as objects ``<prefix><sha256>`` in ``bucket`` of an S3-compatible endpoint.

    **Durable** means what the endpoint promises when it answers a PUT with
    200: ``sdi serve s3`` answers after the bytes are fsynced on its data
    nodes (replicated or erasure-coded) and the metadata row is committed;
    AWS S3 answers after storing the object redundantly across availability
    zones; other servers (MinIO, Ceph RGW, ...) as configured (MinIO with
    its default settings fsyncs too). The email service relies on that
    answer alone: :meth:`put` returns only after a 200.

    A put asks first (HEAD) and uploads nothing when the object exists; an
    existing object older than ``refresh_s`` is copied onto itself on the
    server (CopyObject, no bytes sent) so that its Last-Modified, the age
    garbage collection reads, is recent again (so the GC grace period must
    be well over ``refresh_s``; :func:`open_blobs` makes it a quarter). Every body is sent with its
    SHA-256 signed, so the server refuses bytes damaged on the way, and
    :meth:`get` checks the bytes against the key. Use an unversioned bucket
    (in a versioned one, deleted blobs stay as noncurrent versions).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        refresh_s: float = S3_REFRESH_S,
        remember_s: float = 2 * GC_GRACE_S,
        page_keys: int = 1000,
    ) -> None:
        if not bucket:
            raise InvalidArgument("an S3 blob store needs a bucket")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.refresh_s = refresh_s
        #: ListObjectsV2's max-keys: how many keys one page of :meth:`scan` asks for.
        self.page_keys = page_keys
        self._recent = _Recent(remember_s)

    def object_key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.client.endpoint}"

    def _fail(self, answer: S3Answer, action: str) -> StorageError:
        code, message = answer.error_code()
        where = f"{self.client.endpoint}, bucket {self.bucket!r}"
        if code == "NoSuchBucket" or (answer.status == 404 and action == "check"):
            hint = (
                f"the bucket {self.bucket!r} does not exist at {self.client.endpoint}; create it "
                f"(aws --endpoint-url {self.client.endpoint} s3 mb s3://{self.bucket})"
            )
        elif answer.status == 403 or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            hint = (
                f"the object store at {where} refused the credentials ({code or answer.status}:"
                f" {message or 'access denied'}); check --blob-access-key/--blob-secret-key or"
                " $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY"
            )
            if code == "RequestTimeTooSkewed":
                hint += ", and this machine's clock"
        elif answer.status >= 500:
            hint = (
                f"the object store at {where} failed to {action} "
                f"({answer.status} {code}: {message}); retry later or look at its log"
            )
        else:
            hint = (
                f"the object store at {where} refused to {action} "
                f"({answer.status} {code}: {message})"
            )
        return StorageError(hint)

    def check(self) -> None:
        """HeadBucket: raises with what to fix if the bucket cannot be used."""
        answer = self.client.request("HEAD", self.bucket)
        if answer.status != 200:
            raise self._fail(answer, "check")

    def _head(self, key: str) -> S3Answer | None:
        answer = self.client.request("HEAD", self.bucket, self.object_key(key))
        if answer.status == 200:
            return answer
        if answer.status == 404:
            return None
        raise self._fail(answer, "look up a blob")

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        name = self.object_key(key)
        self._recent.pin(key)
        existing = self._head(key)
        if existing is not None:
            if _age(existing) <= self.refresh_s:
                return key
            copied = self.client.request(
                "PUT", self.bucket, name,
                headers={
                    "x-amz-copy-source": "/" + _uri_encode(self.bucket)
                    + "/" + _uri_encode(name, slash=True),
                    "x-amz-metadata-directive": "REPLACE",
                    "content-type": "application/octet-stream",
                },
            )  # fmt: skip
            if copied.status == 200:
                return key
            if copied.status != 404:  # 404: deleted in between; upload it again
                raise self._fail(copied, "refresh a blob")
        answer = self.client.request(
            "PUT", self.bucket, name, body=data, payload_sha256=key,
            headers={"content-type": "application/octet-stream"},
        )  # fmt: skip
        if answer.status != 200:
            raise self._fail(answer, "store a blob")
        return key

    def get(self, key: str) -> bytes:
        answer = self.client.request("GET", self.bucket, self.object_key(key))
        if answer.status == 404 and answer.error_code()[0] in ("NoSuchKey", ""):
            raise FileNotFoundError(f"there is no blob {key} in {self.describe()}")
        if answer.status != 200:
            raise self._fail(answer, "read a blob")
        if hashlib.sha256(answer.body).hexdigest() != key:
            raise Corrupt(f"the blob {key} read from {self.describe()} does not hash to its key")
        return answer.body

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def delete(
        self, key: str, *, unless_put_after: float | None = None, older_than: float | None = None
    ) -> bool:
        name = self.object_key(key)
        with self._recent.lock:
            if self._recent.put_after(key, unless_put_after):
                return False
            if older_than is not None:
                current = self._head(key)
                if current is None:
                    return False
                if _age(current) < older_than:
                    return False  # refreshed by a put in another process since it was listed
            answer = self.client.request("DELETE", self.bucket, name)
        if answer.status not in (200, 204):
            raise self._fail(answer, "delete a blob")
        return True

    def scan(self) -> Iterator[tuple[str, float]]:
        """ListObjectsV2 under the prefix, page by page; ages by the server's clock."""
        token: str | None = None
        while True:
            query = [("list-type", "2"), ("prefix", self.prefix), ("max-keys", str(self.page_keys))]
            if token is not None:
                query.append(("continuation-token", token))
            answer = self.client.request("GET", self.bucket, query=query)
            if answer.status != 200:
                raise self._fail(answer, "list blobs")
            now = _server_now(answer)
            try:
                root = ElementTree.fromstring(answer.body)
            except ElementTree.ParseError as error:
                raise ProtocolError(
                    f"the object store at {self.client.endpoint} answered ListObjectsV2 "
                    f"with malformed XML ({error})"
                ) from error
            for item in root.iterfind("{*}Contents"):
                name = item.findtext("{*}Key") or ""
                key = name[len(self.prefix) :]
                if not name.startswith(self.prefix) or not _KEY.fullmatch(key):
                    continue
                try:
                    modified = _parse_iso(item.findtext("{*}LastModified") or "")
                except ValueError:
                    modified = now
                yield key, max(0.0, now - modified)
            truncated = (root.findtext("{*}IsTruncated") or "").lower() == "true"
            token = root.findtext("{*}NextContinuationToken")
            if not truncated or not token:
                return

    def close(self) -> None:
        pass


def open_blobs(
    url: str | None,
    local_dir: Path,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    grace_s: float = GC_GRACE_S,
) -> Blobs:
    """The blob store a URL names: ``None`` or ``file:`` gives files in ``local_dir`` (or the
    ``file://`` path); ``s3://BUCKET/PREFIX?endpoint=http://host:port&region=...`` an
    :class:`S3BlobStore` (endpoint default ``sdi serve s3``'s, 127.0.0.1:8790).

    S3 credentials: ``access_key``/``secret_key``, else ``$AWS_ACCESS_KEY_ID`` and
    ``$AWS_SECRET_ACCESS_KEY``. ``grace_s`` is the GC grace period the store is used
    with: it remembers this process's puts twice that long, and an S3 store refreshes
    an existing object's age on a put once it is a quarter of that old.

    >>> store = open_blobs("s3://mail/blobs/?endpoint=http://127.0.0.1:9", Path("."),
    ...                    access_key="a", secret_key="s")
    >>> store.describe()
    's3://mail/blobs/ at http://127.0.0.1:9'
    """
    remember_s = 2 * grace_s
    if url is None or url in ("", "file:"):
        return BlobStore(local_dir, remember_s=remember_s)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return BlobStore(parts.path or local_dir, remember_s=remember_s)
    if parts.scheme != "s3":
        raise InvalidArgument(
            "--blob-url is s3://BUCKET/PREFIX?endpoint=http://host:port or file:///dir,"
            f" not {url!r}"
        )
    bucket = parts.netloc
    if not bucket:
        raise InvalidArgument(f"--blob-url {url!r} names no bucket: s3://BUCKET/PREFIX")
    prefix = parts.path[1:] if parts.path.startswith("/") else parts.path
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"endpoint", "region"}
    if unknown:
        raise InvalidArgument(
            f"--blob-url takes endpoint= and region=, not {', '.join(sorted(unknown))}"
        )
    access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        raise InvalidArgument(
            "an s3:// --blob-url needs credentials: --blob-access-key and --blob-secret-key, "
            "or $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY"
        )
    client = S3Client(
        options.get("endpoint", DEFAULT_S3_ENDPOINT), access_key, secret_key,
        region=options.get("region", "us-east-1"),
    )  # fmt: skip
    refresh_s = min(S3_REFRESH_S, grace_s / 4)
    return S3BlobStore(client, bucket, prefix, refresh_s=refresh_s, remember_s=remember_s)


# -- garbage collection -----------------------------------------------------------


@dataclass(frozen=True)
class GcReport:
    """What one collection saw and did."""

    scanned: int
    in_use: int
    young: int
    removed: int
    #: Unreferenced old blobs left because this process put them lately.
    skipped: int
    seconds: float
    #: True when the sweep stopped early (it ran longer than the store remembers puts).
    stopped_early: bool = False


def collect_garbage(
    blobs: Blobs,
    keys_in_use: Callable[[], Iterable[str]],
    *,
    grace_s: float = GC_GRACE_S,
) -> GcReport:
    """Mark and sweep: deletes the blobs that no row names and that are older than ``grace_s``.

    ``keys_in_use`` is the mark (:meth:`sdi.email.store.MailStore.blob_keys_in_use`:
    every key a message or an outgoing-queue row names). The order of the
    steps is what makes it safe against a message being stored meanwhile,
    which puts its blob (time ``p``) and then commits its row (time ``c``),
    ``c - p`` taking far less than ``grace_s``:

    1. **list** the blobs with their ages, at time ``L``;
    2. **mark**: read the keys in use, at ``M > L``;
    3. **sweep**: delete each listed blob that is not marked and was older
       than ``grace_s`` when listed.

    A blob deleted in step 3 was last put before ``L - grace_s`` (a put of
    bytes already stored makes the blob young again: the local store
    touches the file; the S3 store refreshes Last-Modified once it is over
    ``refresh_s`` old, a quarter of the grace period, which ``c - p`` must
    then stay under three quarters of), so a row that names it was
    committed by ``p + grace_s < L < M`` and the mark saw it.
    That covers puts in any process sharing the store, and a crash between a
    put and its commit: that blob is an orphan, taken once it is old.

    A put that starts after the listing, of bytes already stored (an old
    orphan, or a blob whose last message is being deleted), would find the
    blob and upload nothing; if the sweep deleted it next, its new row would
    name nothing. In this process that cannot happen: a put pins its key
    first, and :meth:`Blobs.delete` skips a key pinned after ``L - grace_s``,
    under the same lock, so the put either is seen by the delete or looks
    for the blob after it is gone and stores it again. Puts in *other*
    processes sharing the store (several services on one PostgreSQL
    database and one bucket) are not pinned here; for them the sweep reads
    each candidate's age again just before deleting it and spares one that
    has been put again since the listing. What remains is the instant
    between that read and the delete (S3 has no conditional delete to close
    it): a put of those very bytes in another process in that instant,
    whose message is then committed, names a deleted blob. That takes bytes
    identical to an hour-old unreferenced blob arriving again in that very
    instant; ruling it out too would need a lock shared by the processes
    (or an endpoint with conditional deletes).

    A blob whose last message was deleted is freed by the first collection
    that runs ``grace_s`` after its last put.
    """
    if grace_s < 0:
        raise InvalidArgument("the GC grace period cannot be negative")
    blobs.remember_s = max(blobs.remember_s, 2 * grace_s)
    started = time.monotonic()
    listed = list(blobs.scan())
    in_use = set(keys_in_use())
    young = removed = skipped = used = 0
    stopped = False
    for key, age in listed:
        if key in in_use:
            used += 1
            continue
        if age < grace_s:
            young += 1
            continue
        if time.monotonic() - started > blobs.remember_s - grace_s:
            stopped = True  # pins older than that are forgotten: finish next time
            break
        if blobs.delete(key, unless_put_after=started - grace_s, older_than=grace_s):
            removed += 1
        else:
            skipped += 1
    return GcReport(len(listed), used, young, removed, skipped, time.monotonic() - started, stopped)
