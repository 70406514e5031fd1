"""SigV4 verification against botocore's own signers (so the test does not mirror our code)."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

import pytest

botocore = pytest.importorskip("botocore")
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from sdi.objstore.sigv4 import SigV4Error, Verifier, canonical_query  # noqa: E402

KEYS = {"sdi": "sdi-secret-key", "other": "another-secret"}
HOST = "127.0.0.1:8790"


def _sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    secret: str = "sdi-secret-key",
    access: str = "sdi",
    payload: str | None = None,
    signer: type[SigV4Auth] = S3SigV4Auth,
    region: str = "us-east-1",
) -> tuple[str, str, str, dict[str, str], bytes]:
    request = AWSRequest(method, url, data=body, headers=headers or {})
    if payload == "UNSIGNED-PAYLOAD":
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    elif payload is not None:
        request.headers["x-amz-content-sha256"] = payload
    signer(Credentials(access, secret), "s3", region).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    sent = {name.lower(): str(value) for name, value in prepared.headers.items()}
    sent.setdefault("host", parts.netloc)
    return method, parts.path, parts.query, sent, body


def _presign(url: str, expires: int, method: str = "GET") -> tuple[str, str, str, dict[str, str]]:
    request = AWSRequest(method, url)
    S3SigV4QueryAuth(Credentials("sdi", "sdi-secret-key"), "s3", "us-east-1", expires).add_auth(
        request
    )
    parts = urlsplit(request.prepare().url)
    return method, parts.path, parts.query, {"host": parts.netloc}


def _error(call: object, *args: object, **kwargs: object) -> tuple[str, int]:
    assert callable(call)
    with pytest.raises(SigV4Error) as error:
        call(*args, **kwargs)
    return error.value.code, error.value.status


@pytest.mark.parametrize(
    "url",
    [
        f"http://{HOST}/",
        f"http://{HOST}/bucket",
        f"http://{HOST}/bucket/plain-key.txt",
        f"http://{HOST}/bucket/a%20b%2Bc/%C3%BC%E2%82%AC~x",
        f"http://{HOST}/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=10",
        f"http://{HOST}/bucket?encoding-type=url&start-after=x%20y&continuation-token=YWI%3D",
    ],
)
def test_header_signatures_from_botocore_verify(url: str) -> None:
    verifier = Verifier(KEYS)
    method, path, query, headers, body = _sign("GET", url)
    assert verifier.verify(method, path, query, headers, body, now=time.time()).access_key == "sdi"


def test_signed_payload_is_checked_against_the_body() -> None:
    verifier = Verifier(KEYS)
    body = b"some object bytes"
    signed = _sign(
        "PUT",
        f"http://{HOST}/b/k",
        body,
        headers={"Content-Type": "text/plain", "x-amz-meta-colour": "  blue   green "},
        payload=hashlib.sha256(body).hexdigest(),
    )
    method, path, query, headers, _ = signed
    result = verifier.verify(method, path, query, headers, body, now=time.time())
    assert result.payload_signed
    assert _error(
        verifier.verify, method, path, query, headers, b"other bytes", now=time.time()
    ) == ("XAmzContentSHA256Mismatch", 400)


def test_unsigned_payload_accepts_any_body() -> None:
    verifier = Verifier(KEYS)
    method, path, query, headers, _ = _sign(
        "PUT", f"http://{HOST}/b/k", b"x", payload="UNSIGNED-PAYLOAD"
    )
    result = verifier.verify(method, path, query, headers, b"anything", now=time.time())
    assert not result.payload_signed


def test_streaming_payloads_are_refused_as_not_implemented() -> None:
    verifier = Verifier(KEYS)
    method, path, query, headers, body = _sign("PUT", f"http://{HOST}/b/k", b"x")
    # botocore only streams over TLS; its header is checked before the signature.
    headers["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    assert _error(verifier.verify, method, path, query, headers, body, now=time.time()) == (
        "NotImplemented",
        501,
    )


def test_wrong_secret_tampering_and_unknown_keys() -> None:
    verifier = Verifier(KEYS)
    now = time.time()
    method, path, query, headers, body = _sign("GET", f"http://{HOST}/b/k", secret="wrong-secret")
    assert _error(verifier.verify, method, path, query, headers, body, now=now) == (
        "SignatureDoesNotMatch",
        403,
    )
    method, path, query, headers, body = _sign("GET", f"http://{HOST}/b/k")
    for bad in [
        ("PUT", path, query, headers),
        (method, "/b/other", query, headers),
        (method, path, "x=1", headers),
        (method, path, query, {**headers, "host": "evil.example"}),
    ]:
        assert _error(verifier.verify, *bad, body, now=now) == ("SignatureDoesNotMatch", 403)
    missing_date = {k: v for k, v in headers.items() if k != "x-amz-date"}
    assert _error(verifier.verify, method, path, query, missing_date, body, now=now)[1] == 403
    method, path, query, headers, body = _sign("GET", f"http://{HOST}/b/k", access="nobody")
    assert _error(verifier.verify, method, path, query, headers, body, now=now) == (
        "InvalidAccessKeyId",
        403,
    )
    assert _error(verifier.verify, "GET", "/b/k", "", {"host": HOST}, b"", now=now) == (
        "AccessDenied",
        403,
    )
    assert _error(
        verifier.verify, "GET", "/", "", {"host": HOST, "authorization": "Bearer x"}, b"", now=now
    ) == ("AuthorizationHeaderMalformed", 400)


def test_other_keys_and_regions_verify() -> None:
    verifier = Verifier(KEYS)
    signed = _sign(
        "GET", f"http://{HOST}/b", access="other", secret="another-secret", region="eu-west-1"
    )
    assert verifier.verify(*signed, now=time.time()).access_key == "other"


def test_clock_skew_over_fifteen_minutes_is_refused() -> None:
    verifier = Verifier(KEYS)
    method, path, query, headers, body = _sign("GET", f"http://{HOST}/b")
    now = time.time()
    verifier.verify(method, path, query, headers, body, now=now + 14 * 60)
    for skewed in (now + 16 * 60, now - 16 * 60):
        assert _error(verifier.verify, method, path, query, headers, body, now=skewed) == (
            "RequestTimeTooSkewed",
            403,
        )


def test_presigned_urls_verify_until_they_expire() -> None:
    verifier = Verifier(KEYS)
    method, path, query, headers = _presign(f"http://{HOST}/bucket/a%20key?versionId=3", 300)
    now = time.time()
    assert verifier.verify(method, path, query, headers, b"", now=now).access_key == "sdi"
    assert verifier.verify(method, path, query, headers, b"", now=now + 290).access_key == "sdi"
    assert _error(verifier.verify, method, path, query, headers, b"", now=now + 310) == (
        "AccessDenied",
        403,
    )
    assert _error(verifier.verify, "PUT", path, query, headers, b"", now=now) == (
        "SignatureDoesNotMatch",
        403,
    )
    tampered = query.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    assert _error(verifier.verify, method, path, tampered, headers, b"", now=now) == (
        "SignatureDoesNotMatch",
        403,
    )
    too_long = query.replace("X-Amz-Expires=300", "X-Amz-Expires=604801")
    assert _error(verifier.verify, method, path, too_long, headers, b"", now=now) == (
        "AuthorizationQueryParametersError",
        400,
    )


def test_canonical_query_encoding() -> None:
    assert canonical_query("b=2&a=1") == "a=1&b=2"
    assert canonical_query("prefix=a%2Fb&delimiter=/") == "delimiter=%2F&prefix=a%2Fb"
    assert canonical_query("k=%7E-_.&x") == "k=~-_.&x="
    assert canonical_query("a=2&a=1") == "a=1&a=2"
    assert canonical_query("X-Amz-Signature=abc&z=1", drop="X-Amz-Signature") == "z=1"
