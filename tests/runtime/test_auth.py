"""API tokens: the token store, the authenticator, the first-start token file and ``sdi token``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sdi.errors import InvalidArgument
from sdi.runtime.auth import (
    FIRST_TOKEN_FILE,
    TOKENS_FILE,
    Authenticator,
    TokenStore,
    bearer_token,
    service_authenticator,
    token_id,
)

SDI = [sys.executable, "-m", "sdi.cli"]


def test_the_store_keeps_digests_verifies_and_revokes(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / TOKENS_FILE)
    alice, bob = store.issue("alice"), store.issue("bob")
    assert alice != bob
    assert len(alice) > 40
    assert store.verify(alice) == "alice"
    assert store.verify(bob) == "bob"
    for forged in ["", "sdi_", alice[:-1], alice + "x", alice.upper(), "Bearer " + alice]:
        assert store.verify(forged) is None, forged
    # The file never holds a token itself.
    raw = (tmp_path / TOKENS_FILE).read_bytes()
    assert alice.encode() not in raw
    assert alice[4:].encode() not in raw
    assert [info.subject for info in store.list()] == ["alice", "bob"]
    assert store.revoke(token_id(alice)) is True
    assert store.revoke(token_id(alice)) is False
    assert store.verify(alice) is None
    assert store.verify(bob) == "bob"
    assert store.revoke(bob) is True  # the token itself works too
    assert len(store) == 0
    store.close()
    # Tokens survive a reopen.
    again = TokenStore(tmp_path / TOKENS_FILE)
    carol = again.issue("carol")
    again.close()
    assert TokenStore(tmp_path / TOKENS_FILE).verify(carol) == "carol"


@pytest.mark.parametrize("subject", ["", "   ", "x" * 201, "a\nb"])
def test_a_bad_subject_is_refused(tmp_path: Path, subject: str) -> None:
    store = TokenStore(tmp_path / TOKENS_FILE)
    with pytest.raises(InvalidArgument, match="subject"):
        store.issue(subject)
    assert len(store) == 0


def test_bearer_headers() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"authorization": "bearer   abc  "}) == "abc"
    assert bearer_token({"authorization": "Basic abc"}) is None
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({}) is None


def test_the_authenticator_takes_fixed_and_stored_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / TOKENS_FILE)
    issued = store.issue("ci")
    auth = Authenticator("proximity", store=store, fixed=["sdi_fixed", ""])
    assert auth.subject({"authorization": "Bearer sdi_fixed"}) == "token from the settings"
    assert auth.subject({"authorization": f"Bearer {issued}"}) == "ci"
    assert auth.refusal({"authorization": f"Bearer {issued}"}) is None
    missing = auth.refusal({})
    assert missing is not None
    assert "needs an API token" in missing
    wrong = auth.refusal({"authorization": "Bearer sdi_nope"})
    assert wrong is not None
    assert "not valid" in wrong
    assert "sdi token create proximity" in wrong
    # An empty fixed token is ignored, never a key that opens everything.
    assert auth.subject({"authorization": "Bearer "}) is None
    auth.close()


def test_a_first_start_writes_an_admin_token_once(tmp_path: Path) -> None:
    auth, path = service_authenticator("proximity", tmp_path)
    assert path == tmp_path / FIRST_TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    assert auth.subject({"authorization": f"Bearer {token}"}) == "admin"
    auth.close()
    again, path_again = service_authenticator("proximity", tmp_path)
    assert path_again == path
    assert path.read_text().strip() == token
    assert again.store is not None
    assert len(again.store) == 1
    again.close()
    # With a fixed token no file is written.
    fixed, none = service_authenticator("proximity", tmp_path / "other", ["sdi_x"])
    assert none is None
    assert not (tmp_path / "other" / FIRST_TOKEN_FILE).exists()
    fixed.close()


def test_the_token_command(tmp_path: Path) -> None:
    def sdi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SDI, "token", *args, "--data-dir", str(tmp_path)], capture_output=True, text=True
        )

    empty = sdi("list", "proximity")
    assert empty.returncode == 0
    assert "no tokens" in empty.stdout
    created = sdi("create", "proximity", "--subject", "deploy bot")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    store = TokenStore(tmp_path / "proximity" / TOKENS_FILE)
    assert store.verify(token) == "deploy bot"
    listed = sdi("list", "proximity")
    assert token_id(token) in listed.stdout
    assert "deploy bot" in listed.stdout
    assert token not in listed.stdout
    assert sdi("revoke", "proximity", "nosuchid").returncode == 1
    assert sdi("revoke", "proximity").returncode == 2
    revoked = sdi("revoke", "proximity", token_id(token))
    assert revoked.returncode == 0
    assert store.verify(token) is None
    store.close()
    assert (
        "--subject"
        in subprocess.run(
            [*SDI, "token", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )
