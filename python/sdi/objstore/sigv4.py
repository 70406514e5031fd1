"""AWS Signature Version 4, checked on the server side of the S3 API.

Two forms are accepted, as S3 accepts them:

- the ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
  Signature=...`` header, with ``x-amz-date`` and ``x-amz-content-sha256``
  (``UNSIGNED-PAYLOAD`` or the hex SHA-256 of the body, which is checked
  against the body that arrived);
- presigned URLs: ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders`` and ``X-Amz-Signature`` in the
  query string, refused once expired;
- and, for older tools (``s3cmd signurl``), SigV2 presigned URLs
  (``AWSAccessKeyId``, ``Expires``, ``Signature``; HMAC-SHA1). SigV2 in the
  Authorization header is refused.

The canonical request follows the AWS documentation: the path as the client
sent it (S3 does not normalise it), the query pairs URI-encoded and sorted,
the signed headers lower-case with their values trimmed and inner runs of
spaces folded. Any region in the credential scope is accepted (one machine,
one region); the service must be ``s3``.

>>> verifier = Verifier({"sdi": "sdi-secret-key"})
>>> try:
...     verifier.verify("GET", "/", "", {"host": "h"}, b"", now=0.0)
... except SigV4Error as error:
...     print(error.status, error.code)
403 AccessDenied
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

from sdi.runtime.text import is_decimal

__all__ = [
    "ALGORITHM",
    "UNSIGNED_PAYLOAD",
    "SigV4Error",
    "Verified",
    "Verifier",
    "canonical_query",
    "check_payload",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SKEW_SECONDS_MAX = 15 * 60
PRESIGNED_EXPIRES_MAX = 7 * 24 * 3600
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
#: The query parameters a SigV2 signature covers (S3's sub-resources and response overrides).
_V2_SUBRESOURCES = frozenset(
    {
        "acl", "delete", "lifecycle", "location", "logging", "notification", "partNumber",
        "policy", "requestPayment", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "response-content-language", "response-content-type",
        "response-expires", "tagging", "torrent", "uploadId", "uploads", "versionId",
        "versioning", "versions", "website",
    }
)  # fmt: skip


class SigV4Error(Exception):
    """A request that fails authentication: S3's error code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Verified:
    """Who signed a request, and whether its payload hash was checked."""

    access_key: str
    payload_signed: bool
    #: The body's SHA-256 the signature vouches for, when the caller passed no body to check
    #: (it then checks the body itself with :func:`check_payload`, e.g. beside other work).
    unchecked_sha256: str | None = None


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(raw_query: str, *, drop: str | None = None) -> str:
    """The sorted, URI-encoded query string of a canonical request.

    >>> canonical_query("b=2&a=x y&list-type=2&prefix")
    'a=x%20y&b=2&list-type=2&prefix='
    """
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        name, value = unquote(name), unquote(value)
        if name == drop:
            continue
        pairs.append((_uri_encode(name), _uri_encode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def check_payload(body: bytes | memoryview, sha256_hex: str) -> None:
    """Raises ``XAmzContentSHA256Mismatch`` unless ``body`` hashes to ``sha256_hex``."""
    if hashlib.sha256(body).hexdigest() != sha256_hex:
        raise SigV4Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            400,
        )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The key derived from ``secret`` for one day, region and service."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _parse_time(amz_date: str) -> float:
    try:
        when = dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.UTC)
    except ValueError as error:
        raise SigV4Error(
            "AccessDenied", f"X-Amz-Date {amz_date!r} is not of the form 20260101T000000Z"
        ) from error
    return when.timestamp()


class Verifier:
    """Checks requests against the access keys in ``keys`` (access key id -> secret)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def verify(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        now: float,
    ) -> Verified:
        """Who signed the request; raises :class:`SigV4Error` if it is not signed right.

        ``headers`` have lower-case names; ``raw_path`` and ``raw_query`` are as sent.
        With ``body`` None the signature is checked but not the body's SHA-256:
        :attr:`Verified.unchecked_sha256` is then what the caller must check.
        """
        authorization = headers.get("authorization")
        if authorization is not None:
            return self._verify_header(
                method, raw_path, raw_query, headers, body, authorization, now
            )
        if "X-Amz-Signature=" in raw_query or "X-Amz-Algorithm=" in raw_query:
            return self._verify_presigned(method, raw_path, raw_query, headers, now)
        if "Signature=" in raw_query and "AWSAccessKeyId=" in raw_query:
            return self._verify_presigned_v2(method, raw_path, raw_query, headers, now)
        raise SigV4Error("AccessDenied", "Anonymous access is not allowed; sign with SigV4")

    def _verify_presigned_v2(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        now: float,
    ) -> Verified:
        """A SigV2 query-string URL (``s3cmd signurl``): AWSAccessKeyId, Expires, Signature.

        The string signed is the method, Content-MD5, Content-Type, the
        expiry, the ``x-amz-*`` headers and the resource with its
        sub-resources, HMAC-SHA1 with the secret key.
        """
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        access_key = params.get("AWSAccessKeyId", "")
        expires_text = params.get("Expires", "")
        signature = params.get("Signature", "")
        if not is_decimal(expires_text):
            raise SigV4Error(
                "AuthorizationQueryParametersError",
                "a SigV2 presigned URL needs Expires as seconds since the epoch",
                400,
            )
        if now > int(expires_text):
            raise SigV4Error("AccessDenied", "Request has expired")
        secret = self._keys.get(access_key)
        if secret is None:
            raise SigV4Error(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        amz = "".join(
            f"{name}:{' '.join(value.split())}\n"
            for name, value in sorted(headers.items())
            if name.startswith("x-amz-")
        )
        subresources = "&".join(
            name if value == "" else f"{name}={value}"
            for name, value in sorted(params.items())
            if name in _V2_SUBRESOURCES
        )
        for path in dict.fromkeys([raw_path or "/", unquote(raw_path or "/")]):
            resource = path + (f"?{subresources}" if subresources else "")
            to_sign = "\n".join(
                [
                    method,
                    headers.get("content-md5", ""),
                    headers.get("content-type", ""),
                    expires_text,
                    amz + resource,
                ]
            )
            expected = base64.b64encode(
                hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()
            ).decode()
            if hmac.compare_digest(expected, signature):
                return Verified(access_key, False)
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided."
            " Check your key and signing method.",
        )

    # -- the two forms --------------------------------------------------------

    def _verify_header(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes | None,
        authorization: str,
        now: float,
    ) -> Verified:
        algorithm, _, rest = authorization.partition(" ")
        if algorithm != ALGORITHM:
            raise SigV4Error(
                "AccessDenied" if algorithm == "AWS" else "AuthorizationHeaderMalformed",
                f"the authorization algorithm must be {ALGORITHM}, not {algorithm!r}",
                403 if algorithm == "AWS" else 400,
            )
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, eq, value = part.strip().partition("=")
            if eq:
                fields[name] = value
        if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
            raise SigV4Error(
                "AuthorizationHeaderMalformed",
                "the Authorization header needs Credential, SignedHeaders and Signature",
                400,
            )
        amz_date = headers.get("x-amz-date")
        if amz_date is None:
            raise SigV4Error("AccessDenied", "a signed request needs an x-amz-date header")
        when = _parse_time(amz_date)
        if abs(now - when) > SKEW_SECONDS_MAX:
            raise SigV4Error(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            )
        payload = headers.get("x-amz-content-sha256")
        if payload is None:
            raise SigV4Error(
                "InvalidRequest", "a signed request needs an x-amz-content-sha256 header", 400
            )
        payload_signed = payload != UNSIGNED_PAYLOAD
        if payload_signed:
            if not _HEX64.match(payload):
                raise SigV4Error(
                    "NotImplemented",
                    f"x-amz-content-sha256 {payload!r} (streaming uploads) is not supported;"
                    " send the body's SHA-256 or UNSIGNED-PAYLOAD",
                    501,
                )
            if body is not None:
                check_payload(body, payload)
        access_key, scope = self._credential(fields["Credential"], amz_date)
        signed_headers = fields["SignedHeaders"]
        self._check_signature(
            method,
            raw_path,
            canonical_query(raw_query),
            headers,
            signed_headers,
            payload,
            amz_date,
            access_key,
            scope,
            fields["Signature"],
        )
        unchecked = payload if payload_signed and body is None else None
        return Verified(access_key, payload_signed, unchecked)

    def _verify_presigned(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        now: float,
    ) -> Verified:
        params: dict[str, str] = {}
        for item in raw_query.split("&"):
            name, _, value = item.partition("=")
            params[unquote(name)] = unquote(value)
        needed = (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        missing = [name for name in needed if name not in params]
        if missing:
            raise SigV4Error(
                "AuthorizationQueryParametersError",
                f"a presigned URL needs {', '.join(missing)}",
                400,
            )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise SigV4Error(
                "AuthorizationQueryParametersError",
                f"X-Amz-Algorithm must be {ALGORITHM}",
                400,
            )
        amz_date = params["X-Amz-Date"]
        when = _parse_time(amz_date)
        expires_text = params["X-Amz-Expires"]
        if not is_decimal(expires_text) or not 1 <= int(expires_text) <= PRESIGNED_EXPIRES_MAX:
            raise SigV4Error(
                "AuthorizationQueryParametersError",
                f"X-Amz-Expires must be a number of seconds from 1 to {PRESIGNED_EXPIRES_MAX}",
                400,
            )
        if when - now > SKEW_SECONDS_MAX:
            raise SigV4Error("AccessDenied", "Request is not valid yet")
        if now > when + int(expires_text):
            raise SigV4Error("AccessDenied", "Request has expired")
        access_key, scope = self._credential(params["X-Amz-Credential"], amz_date)
        self._check_signature(
            method,
            raw_path,
            canonical_query(raw_query, drop="X-Amz-Signature"),
            headers,
            params["X-Amz-SignedHeaders"],
            params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD),
            amz_date,
            access_key,
            scope,
            params["X-Amz-Signature"],
        )
        return Verified(access_key, False)

    # -- shared steps ---------------------------------------------------------

    def _credential(self, credential: str, amz_date: str) -> tuple[str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise SigV4Error(
                "AuthorizationHeaderMalformed",
                f"credential {credential!r} is not <key>/<date>/<region>/s3/aws4_request",
                400,
            )
        access_key, date, _region, service, _ = parts
        if access_key not in self._keys:
            raise SigV4Error(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        if service != "s3":
            raise SigV4Error(
                "AuthorizationHeaderMalformed",
                f"the credential's service must be s3, not {service!r}",
                400,
            )
        if date != amz_date[:8]:
            raise SigV4Error(
                "AuthorizationHeaderMalformed",
                f"the credential's date {date} is not the request's date {amz_date[:8]}",
                400,
            )
        return access_key, "/".join(parts[1:])

    def _check_signature(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: Mapping[str, str],
        signed_headers: str,
        payload: str,
        amz_date: str,
        access_key: str,
        scope: str,
        signature: str,
    ) -> None:
        names = signed_headers.split(";")
        if "host" not in names:
            raise SigV4Error("AccessDenied", "the host header must be signed")
        lines = []
        for name in names:
            value = headers.get(name)
            if value is None:
                raise SigV4Error("AccessDenied", f"signed header {name!r} is not in the request")
            lines.append(f"{name}:{' '.join(value.split())}\n")
        canonical_headers = "".join(lines)
        date, region, service, _ = scope.split("/")
        key = signing_key(self._keys[access_key], date, region, service)
        # The path as sent; failing that, as AWS's rules would encode it (for
        # clients that send characters S3 clients usually escape).
        paths = [raw_path or "/"]
        reencoded = quote(unquote(raw_path or "/"), safe="/-_.~")
        if reencoded != paths[0]:
            paths.append(reencoded)
        for path in paths:
            canonical = "\n".join([method, path, query, canonical_headers, signed_headers, payload])
            to_sign = "\n".join(
                [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
            )
            expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, signature):
                return
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided."
            " Check your key and signing method.",
        )
