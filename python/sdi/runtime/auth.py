"""API tokens for sdi's HTTP APIs: ``Authorization: Bearer <token>``.

A :class:`TokenStore` keeps a service's tokens in a SQLite file of its data
directory. A token is 32 random bytes, shown once when it is issued
(``sdi_`` then URL-safe base64); the file keeps only its SHA-256 digest,
the subject it was issued to (a user, a tool, ``admin``) and when, so a
copy of the file lets nobody in. Revoking deletes the row; the next
request with that token is refused.

Services build on :func:`bearer_token` and :meth:`TokenStore.verify` (or a
fixed token from a setting, compared with :func:`tokens_equal`), and answer
401 with :func:`unauthorized_message`'s wording, which tells the user how to
get a token (``sdi token create <system>``).

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as path:
...     store = TokenStore(Path(path) / "tokens.sqlite")
...     token = store.issue("alice")
...     print(token.startswith("sdi_"), store.verify(token), store.verify("sdi_forged"))
...     print([info.subject for info in store.list()])
...     print(store.revoke(token_id(token)), store.verify(token))
...     store.close()
True alice None
['alice']
True None
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sdi.errors import InvalidArgument

__all__ = [
    "FIRST_TOKEN_FILE",
    "TOKENS_FILE",
    "TOKEN_PREFIX",
    "Authenticator",
    "TokenInfo",
    "TokenStore",
    "bearer_token",
    "new_token",
    "service_authenticator",
    "token_id",
    "tokens_equal",
    "unauthorized_message",
]

TOKEN_PREFIX = "sdi_"
#: The characters of a token's id: the first ones after the prefix, shown by ``sdi token list``.
ID_CHARS = 8
SUBJECT_CHARS_MAX = 200
#: The files a service keeps its tokens in, in its data directory.
TOKENS_FILE = "tokens.sqlite"
FIRST_TOKEN_FILE = "api-token"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def new_token() -> str:
    """A fresh random token (256 bits)."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return TOKEN_PREFIX + raw


def token_id(token: str) -> str:
    """The short public id of a token (what ``list`` shows and ``revoke`` takes)."""
    return token.removeprefix(TOKEN_PREFIX)[:ID_CHARS]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def tokens_equal(given: str, expected: str) -> bool:
    """Compares two tokens in time that does not depend on where they differ."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (lower-case header names), or None."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized_message(system: str, given: str | None) -> str:
    """What a 401 says: why, and how to get a token."""
    if given is None:
        return (
            "this request needs an API token: send 'Authorization: Bearer <token>'"
            f" (the service printed where its token is; `sdi token create {system}` makes another)"
        )
    return (
        "the API token is not valid (revoked, mistyped or from another data directory);"
        f" `sdi token create {system}` makes a new one"
    )


@dataclass(frozen=True)
class TokenInfo:
    """A stored token, without the secret."""

    id: str
    subject: str
    created: float


class TokenStore:
    """A service's API tokens in a SQLite file (only their SHA-256 digests are kept)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def issue(self, subject: str) -> str:
        """A new token for ``subject``; the only time the token itself is seen."""
        subject = subject.strip()
        if not subject or len(subject) > SUBJECT_CHARS_MAX or not subject.isprintable():
            raise InvalidArgument(
                f"a token's subject must be 1 to {SUBJECT_CHARS_MAX} printable characters,"
                f" not {subject[:40]!r}"
            )
        while True:
            token = new_token()
            try:
                with self._lock:
                    self._db.execute(
                        "INSERT INTO tokens (id, digest, subject, created) VALUES (?, ?, ?, ?)",
                        (token_id(token), _digest(token), subject, time.time()),
                    )
            except sqlite3.IntegrityError:
                continue  # an id prefix already taken (1 in 2**48): draw again
            return token

    def verify(self, token: str) -> str | None:
        """The subject a valid token was issued to, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT subject FROM tokens WHERE digest = ?", (_digest(token),)
            ).fetchone()
        return None if row is None else str(row[0])

    def revoke(self, id_or_token: str) -> bool:
        """Deletes a token given by its id (or itself); whether there was one."""
        key = token_id(id_or_token) if id_or_token.startswith(TOKEN_PREFIX) else id_or_token
        with self._lock:
            cursor = self._db.execute("DELETE FROM tokens WHERE id = ?", (key,))
        return cursor.rowcount > 0

    def list(self) -> list[TokenInfo]:
        """Every stored token, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, subject, created FROM tokens ORDER BY created, id"
            ).fetchall()
        return [TokenInfo(str(i), str(s), float(c)) for i, s, c in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM tokens").fetchone()[0])


class Authenticator:
    """Checks a request's bearer token against fixed tokens and a :class:`TokenStore`.

    >>> auth = Authenticator("proximity", fixed=["sdi_test"])
    >>> auth.subject({"authorization": "Bearer sdi_test"})
    'token from the settings'
    >>> auth.refusal({}) is not None, auth.refusal({"authorization": "Bearer sdi_test"})
    (True, None)
    """

    def __init__(
        self, system: str, *, store: TokenStore | None = None, fixed: list[str] | None = None
    ) -> None:
        self.system = system
        self.store = store
        self.fixed = [token for token in fixed or [] if token]

    def subject(self, headers: dict[str, str]) -> str | None:
        """Who the request's token belongs to, or None when it has no valid token."""
        token = bearer_token(headers)
        if token is None:
            return None
        if any(tokens_equal(token, fixed) for fixed in self.fixed):
            return "token from the settings"
        return self.store.verify(token) if self.store is not None else None

    def refusal(self, headers: dict[str, str]) -> str | None:
        """None when the request may go on, else the 401 message."""
        if self.subject(headers) is not None:
            return None
        return unauthorized_message(self.system, bearer_token(headers))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401."""
        return f'Bearer realm="sdi {self.system}"'


def service_authenticator(
    system: str, data_dir: Path, fixed: list[str] | None = None
) -> tuple[Authenticator, Path | None]:
    """A service's authenticator over ``data_dir/tokens.sqlite`` (blocking; call on a thread).

    When no fixed token is set and the store is empty (a first start), an
    ``admin`` token is issued and written to ``data_dir/api-token`` (mode
    0600), whose path is returned so the service can say where it is;
    otherwise the path is None (or the existing file's, while it is there).
    """
    store = TokenStore(data_dir / TOKENS_FILE)
    auth = Authenticator(system, store=store, fixed=fixed)
    first = data_dir / FIRST_TOKEN_FILE
    if not auth.fixed and len(store) == 0:
        token = store.issue("admin")
        descriptor = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token + "\n")
    return auth, first if first.exists() and not auth.fixed else None
