"""The service contract: first start's demo user and token, options, users and tokens API."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdi.email.service import EmailService, create_token, create_user, list_users, service
from sdi.errors import InvalidArgument
from sdi.testing.running import RunningService, request


def test_first_start_makes_a_demo_user_with_a_token_file(tmp_path: Path) -> None:
    running = RunningService(EmailService(), tmp_path)
    try:
        token = (tmp_path / "api-token").read_text().strip()
        assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
        status, me = request(running.port, "GET", "/v1/me", token=token)
        assert (status, me["address"]) == (200, "demo@sdi.local")
        assert [e.url.split(":")[0] for e in running.endpoints] == ["http", "smtp", "smtp", "ws"]
        # a user made while the service runs can log in at once
        create_user(tmp_path, "Late@SDI.local", "Late")
        late = create_token(tmp_path, "late@sdi.local")
        status, folders = request(running.port, "GET", "/v1/folders", token=late)
        assert status == 200
        assert len(folders["folders"]) == 5
    finally:
        running.stop()
    assert list_users(tmp_path) == ["demo@sdi.local", "late@sdi.local"]
    # a second start keeps the users and makes no new demo token
    before = (tmp_path / "api-token").read_text()
    running = RunningService(EmailService(), tmp_path)
    running.stop()
    assert (tmp_path / "api-token").read_text() == before


def test_users_and_tokens_refuse_bad_input(tmp_path: Path) -> None:
    create_user(tmp_path, "ann@sdi.local")
    with pytest.raises(InvalidArgument):
        create_user(tmp_path, "ann@sdi.local")
    with pytest.raises(InvalidArgument):
        create_user(tmp_path, "not an address")
    with pytest.raises(InvalidArgument):
        create_token(tmp_path, "ghost@sdi.local")


def test_options() -> None:
    email = service(
        {"domains": "a.example,b.example", "routes": ["far.example=127.0.0.1:2525"],
         "smtp_port": None, "workers": 3}
    )  # fmt: skip
    assert isinstance(email, EmailService)
    assert email.domains == frozenset({"a.example", "b.example"})
    assert email.routes == {"far.example": ("127.0.0.1", 2525)}
    assert email.workers == 3
    with pytest.raises(InvalidArgument):
        service({"routes": {"far.example": "nowhere"}})
    with pytest.raises(InvalidArgument):
        service({"tls_cert": "/x.pem"})
    with pytest.raises(InvalidArgument):
        service({"smtp_port": 70000})


def test_blob_and_retry_options(monkeypatch: pytest.MonkeyPatch) -> None:
    # as `sdi serve email --blob-url ... --blob-gc-interval 0 --blob-gc-grace 5` passes them
    email = service(
        {"blob_url": "s3://mail/p/?endpoint=http://127.0.0.1:9", "blob_access_key": "k",
         "blob_secret_key": "s", "blob_gc_interval": 0.0, "blob_gc_grace": 5.0}
    )  # fmt: skip
    assert isinstance(email, EmailService)
    assert email.blob_url == "s3://mail/p/?endpoint=http://127.0.0.1:9"
    assert (email.blob_gc_interval_s, email.blob_gc_grace_s) == (0.0, 5.0)
    defaults = service({"blob_gc_interval": None, "blob_gc_grace": None})
    assert isinstance(defaults, EmailService)
    assert (defaults.blob_url, defaults.blob_gc_interval_s, defaults.blob_gc_grace_s) == (
        None, 600.0, 3600.0,
    )  # fmt: skip
    assert (defaults.process_retry_base_s, defaults.process_retry_cap_s) == (1.0, 60.0)
    # refused before anything starts: a malformed URL, no credentials, negative times
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(InvalidArgument, match="--blob-url"):
        service({"blob_url": "ftp://x"})
    with pytest.raises(InvalidArgument, match="AWS_ACCESS_KEY_ID"):
        service({"blob_url": "s3://mail"})
    with pytest.raises(InvalidArgument, match="negative"):
        service({"blob_gc_grace": -1})
    with pytest.raises(InvalidArgument):
        EmailService(process_retry_base_s=2.0, process_retry_cap_s=1.0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert isinstance(service({"blob_url": "s3://mail"}), EmailService)
