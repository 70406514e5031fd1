"""``sdi serve email``: the email service of chapter 8 (SMTP in and out, HTTP API, WebSocket push).

::

    sdi serve email --port 8780 --data-dir /tmp/email
    curl -H "Authorization: Bearer $(cat /tmp/email/api-token)" http://127.0.0.1:8780/v1/folders

Ports (each ``None`` turns that server off; with ``--port 0`` every one is
picked free): HTTP API on ``port``; inbound SMTP on ``smtp_port`` (default
``port + 1``); submission with AUTH on ``submission_port`` (``port + 2``);
WebSocket push on ``ws_port`` (``port + 3``).

The data directory holds ``mail.sqlite`` (users, folders, messages,
threads, the incoming and outgoing queues; :mod:`sdi.email.store`),
``blobs/`` (raw messages by SHA-256; :mod:`sdi.email.blobs`; with
``blob_url="s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:8790"`` they are
objects in that bucket instead, e.g. of ``sdi serve s3``, with the key pair
of ``blob_access_key``/``blob_secret_key`` or ``$AWS_ACCESS_KEY_ID``/
``$AWS_SECRET_ACCESS_KEY``) and
``tokens.sqlite`` (API tokens; the subject of a user's token is the user's
address) and ``search/`` (the search index). On a first start (no users)
the service creates the demo user ``demo@<first domain>`` and writes its
token to ``api-token``.

With ``database_url`` (``--database-url postgresql://user@host:port/db`` or
``$SDI_EMAIL_DATABASE_URL``) the metadata that ``mail.sqlite`` holds lives in
that PostgreSQL database instead, which several service processes can share
(:mod:`sdi.email.store`; they take incoming-queue entries and outgoing rows
with leased claims, each entry is stored once and each row sent by one
process at a time, :mod:`sdi.email.outgoing`); the tokens and the search
index stay in each process's data directory: a token works on the process
whose directory issued it. Each process keeps its index current by
following the store's change log (:class:`IndexFollower`): every
``follow_interval_s`` (0.1 s) it applies the changes logged since its last
position, whichever process made them (new mail indexed with its stored
search text, read flags and moves, deletes), so a search through any
process sees a change made through any other within about a second. Its
own writes apply the log up to their change at once (read-your-writes, and
every index applies changes in commit order). A restarted process replays
what it missed from the log (or checks its whole index when the log was
trimmed past its position: rows are kept ``change_retention_s``, a day).
New-mail push stays per process: a WebSocket client hears of the mail that
its process stores.

An incoming-queue entry whose processing fails (the blob store unreachable,
say) is retried after ``process_retry_base_s`` (1 s), the wait doubling up to
``process_retry_cap_s`` (60 s), for as long as it fails; the other entries
are processed meanwhile. Mail accepted over SMTP while the blob store is down
is therefore delivered once it is back, without a restart.

Search runs on :class:`~sdi.email.lsmindex.LsmSearchIndex` (the compiled
LSM index of ``rust/sdi-lsm``, in ``search/``), checked against the store
at start so that mail stored just before a crash is indexed; pass
``index=ScanIndex()`` for the brute-force scan (rebuilt from the store at
start). Both implement :class:`~sdi.email.search.SearchIndex`.

Blobs no message refers to any more (a deleted message's, or one put just
before a crash) are collected every ``blob_gc_interval_s`` (default 10
minutes; 0 turns it off) once older than ``blob_gc_grace_s`` (default an
hour), on a worker thread; :attr:`EmailService.blob_gc_last` holds the last
report and the log says what was removed.

User and token management for the CLI: :func:`create_user`,
:func:`create_token`, :func:`list_users`.

>>> import asyncio, tempfile
>>> from pathlib import Path
>>> from sdi.runtime import ServiceConfig
>>> async def demo(path: str) -> list[str]:
...     service = EmailService()
...     endpoints = await service.start(ServiceConfig("127.0.0.1", 0, Path(path)))
...     await service.stop()
...     return [e.name.split(" (")[0] for e in endpoints] + list_users(Path(path))
>>> with tempfile.TemporaryDirectory() as path:
...     asyncio.run(demo(path))
['email HTTP API', 'email SMTP', 'email submission', 'email push', 'demo@sdi.local']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sdi.email.api import BODY_BYTES_MAX, EmailApi
from sdi.email.blobs import GC_GRACE_S, GC_INTERVAL_S, Blobs, GcReport, collect_garbage, open_blobs
from sdi.email.lsmindex import LsmSearchIndex
from sdi.email.outgoing import OutgoingWorkers, RetryPolicy, back_off, backoff
from sdi.email.pipeline import ATTACHMENT_BYTES_MAX, Pipeline
from sdi.email.push import PushHub
from sdi.email.search import ScanIndex, SearchIndex, apply_changes, change_ops
from sdi.email.smtp import HEADER_BYTES_MAX, MESSAGE_BYTES_MAX, SmtpServer
from sdi.email.store import (
    CHANGES_LIMIT,
    ChangeLogTrimmedError,
    IncomingEntry,
    MailStore,
    check_address,
)
from sdi.errors import InvalidArgument
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.auth import FIRST_TOKEN_FILE, TOKENS_FILE, Authenticator, TokenStore
from sdi.runtime.http import HttpServer
from sdi.runtime.service import cancel_and_wait
from sdi.runtime.sql import is_postgres_url
from sdi.runtime.text import is_decimal

__all__ = [
    "DATABASE_FILE",
    "DATABASE_URL_ENV",
    "EmailService",
    "IndexFollower",
    "create_token",
    "create_user",
    "list_users",
    "service",
]

logger = logging.getLogger(__name__)

DATABASE_FILE = "mail.sqlite"
BLOBS_DIR = "blobs"
#: The search index's directory (:class:`~sdi.email.lsmindex.LsmSearchIndex`).
SEARCH_DIR = "search"
#: The back-off of a queue entry whose processing fails (the blob store is down, say):
#: retried after 1 s, then 2 s, 4 s ... at most a minute apart, for as long as it fails.
PROCESS_RETRY_BASE_S = 1.0
PROCESS_RETRY_CAP_S = 60.0
#: How often a process reads the change log of a shared store (seconds).
FOLLOW_INTERVAL_S = 0.1
#: How long the change log keeps a change, and how often a process trims it (seconds).
CHANGE_RETENTION_S = 24 * 3600.0
CHANGE_TRIM_INTERVAL_S = 60.0


#: Where ``database_url`` comes from when it is not given (``--database-url``).
DATABASE_URL_ENV = "SDI_EMAIL_DATABASE_URL"


def _database_url(given: str | None) -> str | None:
    """``given``, else ``$SDI_EMAIL_DATABASE_URL``, checked: a postgresql:// URL or None."""
    url = given or os.environ.get(DATABASE_URL_ENV) or None
    if url is not None and not is_postgres_url(url):
        raise InvalidArgument(
            f"--database-url must be a postgresql:// URL, not {url[:60]!r}"
            " (without it the mail metadata lives in SQLite in --data-dir)"
        )
    return url


def _metadata(data_dir: Path, database_url: str | None) -> MailStore:
    url = _database_url(database_url)
    return MailStore(url if url is not None else data_dir / DATABASE_FILE)


def create_user(
    data_dir: Path, address: str, display_name: str = "", *, database_url: str | None = None
) -> str:
    """Adds a user to the service whose data directory is ``data_dir`` (running or not);
    the normalised address. :class:`~sdi.errors.InvalidArgument` if taken or malformed.
    ``database_url``: the service's PostgreSQL database (default ``$SDI_EMAIL_DATABASE_URL``,
    else SQLite in ``data_dir``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = _metadata(data_dir, database_url)
    try:
        address = check_address(address)
        store.create_user(address, display_name)
        return address
    finally:
        store.close()


def create_token(data_dir: Path, address: str, *, database_url: str | None = None) -> str:
    """A new API token for the user ``address`` (also the SMTP submission password)."""
    store = _metadata(data_dir, database_url)
    try:
        address = check_address(address)
        if store.user(address) is None:
            raise InvalidArgument(f"there is no user {address}; create it first")
    finally:
        store.close()
    tokens = TokenStore(data_dir / TOKENS_FILE)
    try:
        return tokens.issue(address)
    finally:
        tokens.close()


def list_users(data_dir: Path, *, database_url: str | None = None) -> list[str]:
    """The users' addresses."""
    if _database_url(database_url) is None and not (data_dir / DATABASE_FILE).exists():
        return []
    store = _metadata(data_dir, database_url)
    try:
        return store.users()
    finally:
        store.close()


def _parse_routes(routes: dict[str, str] | None) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for domain, target in (routes or {}).items():
        host, _, port = str(target).rpartition(":")
        if not host or not is_decimal(port) or not 0 < int(port) < 65536:
            raise InvalidArgument(f"a route is domain -> host:port, not {domain}={target!r}")
        out[domain.lower()] = (host, int(port))
    return out


def _seconds(value: object, default: float) -> float:
    return default if value is None or value == "" else float(str(value))


def _derived(port: int, offset: int, given: int | None) -> int:
    if given is not None:
        return given
    return port + offset if port else 0


class IndexFollower:
    """Keeps a process's search index current with a shared store's change log.

    :meth:`catch_up` (blocking; the service calls it on a worker thread every
    ``follow_interval_s``, and after each of its own writes) applies the
    changes logged after :attr:`seq`, in order, whichever process made them.
    Applying a change twice is harmless (:func:`~sdi.email.search.apply_changes`),
    so a position lost in a crash only means some changes are applied again.
    A follower the log was trimmed past checks its whole index against the
    store (:meth:`~sdi.email.lsmindex.LsmSearchIndex.resync`).
    """

    def __init__(self, store: MailStore, index: SearchIndex, seq: int) -> None:
        self.store, self.index = store, index
        #: The last change applied.
        self.seq = seq
        #: Search text of mail this process is storing, by id (saves reading it back).
        self.texts: dict[int, Mapping[str, str]] = {}
        #: Changes applied, and full checks run, since the start.
        self.applied = 0
        self.resyncs = 0
        self._lock = threading.Lock()

    def catch_up(self) -> int:
        """Applies every change logged after :attr:`seq`; how many."""
        with self._lock:
            applied = 0
            while True:
                try:
                    changes = self.store.changes_since(self.seq, CHANGES_LIMIT)
                except ChangeLogTrimmedError as trimmed:
                    self._resync(trimmed)
                    continue
                if not changes:
                    break
                apply_changes(self.index, change_ops(changes, self.store, self.texts))
                self.seq = changes[-1].seq
                if isinstance(self.index, LsmSearchIndex):
                    self.index.log_seq = self.seq  # kept in its state file at a clean close
                applied += len(changes)
                if len(changes) < CHANGES_LIMIT:
                    break
            self.applied += applied
            return applied

    def _resync(self, trimmed: ChangeLogTrimmedError) -> None:
        logger.warning(
            "email: fell behind the change log (%s); checking the whole search index", trimmed
        )
        self.resyncs += 1
        if isinstance(self.index, LsmSearchIndex):
            self.index.resync(self.store)
            assert self.index.log_seq is not None
            self.seq = self.index.log_seq
            return
        seq = self.store.last_change_seq()
        for message in self.store.indexable():  # a scan index: messages deleted meanwhile stay
            self.index.add(
                message.user, message.id, message.search, message.date, message.folder,
                message.read,
            )  # fmt: skip
        self.seq = seq


class _FollowedIndex:
    """The index as the service's writers use it when the store keeps a change log: a
    write after a store change applies the log up to and including that change
    (:meth:`IndexFollower.catch_up`), so every index applies changes in commit order
    whichever process made them. If the log cannot be read, the write goes to the
    index directly (the follower applies the change again later)."""

    def __init__(self, follower: IndexFollower) -> None:
        self._follower = follower
        self._index = follower.index

    def add(
        self,
        user: str,
        doc_id: int,
        fields: Mapping[str, str],
        date: int,
        folder: str,
        read: bool,
    ) -> None:
        self.add_many([(user, doc_id, fields, date, folder, read)])

    def add_many(
        self, messages: Iterable[tuple[str, int, Mapping[str, str], int, str, bool]]
    ) -> None:
        messages = list(messages)
        texts = self._follower.texts
        for message in messages:
            texts[int(message[1])] = message[2]
        try:
            if self._caught_up():
                return
            for message in messages:
                self._index.add(*message)
        finally:
            for message in messages:
                texts.pop(int(message[1]), None)

    def set_attrs(
        self, user: str, doc_id: int, *, folder: str | None = None, read: bool | None = None
    ) -> None:
        if not self._caught_up():
            self._index.set_attrs(user, doc_id, folder=folder, read=read)

    def delete(self, user: str, doc_id: int) -> None:
        if not self._caught_up():
            self._index.delete(user, doc_id)

    def _caught_up(self) -> bool:
        try:
            self._follower.catch_up()
        except Exception as error:
            logger.warning("email: cannot follow the change log (%s); indexing directly", error)
            return False
        return True

    def search(
        self,
        user: str,
        query: str,
        *,
        folder: str | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
        read: bool | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[int]:
        return self._index.search(
            user, query, folder=folder, date_from=date_from, date_to=date_to, read=read,
            limit=limit, before=before,
        )  # fmt: skip


class EmailService(Service):
    """SMTP in, submission, the pipeline, outgoing delivery, HTTP API and push in one process."""

    key = "email"

    def __init__(
        self,
        *,
        domains: list[str] | None = None,
        smtp_port: int | None = None,
        submission_port: int | None = None,
        ws_port: int | None = None,
        smtp: bool = True,
        submission: bool = True,
        push: bool = True,
        routes: dict[str, str] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        message_bytes_max: int = MESSAGE_BYTES_MAX,
        header_bytes_max: int = HEADER_BYTES_MAX,
        attachment_bytes_max: int = ATTACHMENT_BYTES_MAX,
        workers: int = 2,
        retry: RetryPolicy | None = None,
        demo_user: bool = True,
        index: SearchIndex | None = None,
        database_url: str | None = None,
        blob_url: str | None = None,
        blob_access_key: str | None = None,
        blob_secret_key: str | None = None,
        blob_gc_interval_s: float = GC_INTERVAL_S,
        blob_gc_grace_s: float = GC_GRACE_S,
        process_retry_base_s: float = PROCESS_RETRY_BASE_S,
        process_retry_cap_s: float = PROCESS_RETRY_CAP_S,
        follow_interval_s: float = FOLLOW_INTERVAL_S,
        change_retention_s: float = CHANGE_RETENTION_S,
        change_trim_interval_s: float = CHANGE_TRIM_INTERVAL_S,
    ) -> None:
        self.domains = frozenset(d.strip().lower() for d in (domains or ["sdi.local"]))
        if not self.domains or not all(self.domains):
            raise InvalidArgument("the service needs at least one mail domain")
        for port in (smtp_port, submission_port, ws_port):
            if port is not None and not 0 <= port <= 65535:
                raise InvalidArgument(f"a port is between 0 and 65535, not {port}")
        if (tls_cert is None) != (tls_key is None):
            raise InvalidArgument("STARTTLS needs both tls_cert and tls_key")
        self.smtp_port, self.submission_port, self.ws_port = smtp_port, submission_port, ws_port
        self.smtp_on, self.submission_on, self.push_on = smtp, submission, push
        self.routes = _parse_routes(routes)
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.message_bytes_max = message_bytes_max
        self.header_bytes_max = header_bytes_max
        self.attachment_bytes_max = attachment_bytes_max
        self.workers = max(1, workers)
        self.retry = retry or RetryPolicy()
        self.demo_user = demo_user
        #: The PostgreSQL database of the mail metadata (None: SQLite in the data directory).
        self.database_url = _database_url(database_url)
        self._index_given = index is not None
        self.index: SearchIndex = index if index is not None else ScanIndex()
        self.hostname = sorted(self.domains)[0]
        self.store: MailStore | None = None
        self.tokens: TokenStore | None = None
        self.pipeline: Pipeline | None = None
        self.outgoing: OutgoingWorkers | None = None
        self.hub: PushHub | None = None
        self.ports: dict[str, int] = {}
        self.token_file: Path | None = None
        self._servers: list[SmtpServer | HttpServer] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._processing = 0
        if not 0 < process_retry_base_s <= process_retry_cap_s:
            raise InvalidArgument("the processing retry needs 0 < base <= cap seconds")
        self.process_retry_base_s = process_retry_base_s
        self.process_retry_cap_s = process_retry_cap_s
        if follow_interval_s <= 0 or change_retention_s < 0 or change_trim_interval_s <= 0:
            raise InvalidArgument("the change log's follow and trim intervals must be positive")
        self.follow_interval_s = follow_interval_s
        self.change_retention_s = change_retention_s
        self.change_trim_interval_s = change_trim_interval_s
        #: Follows the store's change log (a shared PostgreSQL store only).
        self.follower: IndexFollower | None = None
        self._follow: asyncio.Task[None] | None = None
        self._log_start = 0
        # Blobs: local files in the data directory unless blob_url names an S3 bucket.
        if blob_gc_interval_s < 0 or blob_gc_grace_s < 0:
            raise InvalidArgument("the blob GC interval and grace period cannot be negative")
        self.blob_url = blob_url or None
        self._blob_keys = (blob_access_key, blob_secret_key)
        if self.blob_url is not None and urlsplit(self.blob_url).scheme != "file":
            # Checked now (no I/O), so that a malformed URL or missing credentials are
            # refused before the service starts; file: URLs are directories made at start.
            open_blobs(
                self.blob_url, Path("."), access_key=blob_access_key,
                secret_key=blob_secret_key, grace_s=blob_gc_grace_s,
            ).close()  # fmt: skip
        self.blob_gc_interval_s, self.blob_gc_grace_s = blob_gc_interval_s, blob_gc_grace_s
        self.blobs: Blobs | None = None
        #: The last blob collection's report, and the blobs removed since the start.
        self.blob_gc_last: GcReport | None = None
        self.blob_gc_removed = 0
        self._blob_gc: asyncio.Task[None] | None = None

    def _open(self, root: Path) -> tuple[MailStore, TokenStore, Blobs]:
        root.mkdir(parents=True, exist_ok=True)
        access_key, secret_key = self._blob_keys
        blobs = open_blobs(
            self.blob_url, root / BLOBS_DIR, access_key=access_key, secret_key=secret_key,
            grace_s=self.blob_gc_grace_s,
        )  # fmt: skip
        blobs.check()
        store = MailStore(self.database_url or root / DATABASE_FILE)
        if self.database_url is None:  # one process per SQLite file: no one else holds claims
            store.release_all_incoming()
        tokens = TokenStore(root / TOKENS_FILE)
        if self.demo_user and not store.users():
            demo = f"demo@{self.hostname}"
            store.create_user(demo, "Demo User")
            token = tokens.issue(demo)
            descriptor = os.open(
                root / FIRST_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
            )
            with os.fdopen(descriptor, "w") as handle:
                handle.write(token + "\n")
        first = root / FIRST_TOKEN_FILE
        self.token_file = first if first.exists() else None
        if not self._index_given:
            index = LsmSearchIndex(root / SEARCH_DIR)
            try:
                index.recover(store)
            except BaseException:
                index.close()
                raise
            self.index = index
        elif isinstance(self.index, LsmSearchIndex):
            self.index.recover(store)
        else:
            self._log_start = store.last_change_seq() if store.change_log else 0
            for message in store.indexable():
                self.index.add(
                    message.user, message.id, message.search, message.date, message.folder,
                    message.read,
                )  # fmt: skip
        return store, tokens, blobs

    def _tls(self) -> ssl.SSLContext | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def wake(self) -> None:
        """Wakes the pipeline and the outgoing workers (any thread)."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._wake_now)

    def _wake_now(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self.outgoing is not None:
            self.outgoing.wake()

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        root = Path(config.data_dir)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        tls = await asyncio.to_thread(self._tls)
        store, tokens, blobs = await asyncio.to_thread(self._open, root)
        self.store, self.tokens, self.blobs = store, tokens, blobs
        auth = Authenticator("email", store=tokens)
        endpoints: list[Endpoint] = []
        writes: SearchIndex = self.index
        if store.change_log:
            seq = self.index.log_seq if isinstance(self.index, LsmSearchIndex) else None
            start = self._log_start if seq is None else seq
            self.follower = IndexFollower(store, self.index, start)
            writes = _FollowedIndex(self.follower)
        try:
            hub = PushHub(tokens.verify) if self.push_on else None
            self.hub = hub
            self.pipeline = Pipeline(
                store, blobs, writes,
                attachment_bytes_max=self.attachment_bytes_max,
                on_stored=hub.publish if hub is not None else None,
                bounce_from=f"mailer-daemon@{self.hostname}",
            )  # fmt: skip
            api = EmailApi(store, blobs, writes, auth, self.domains, on_sent=self.wake)
            http = HttpServer(api.handle, body_bytes_max=BODY_BYTES_MAX)
            self._servers.append(http)
            port = await http.start(config.host, config.port)
            self.ports["http"] = port
            url = f"http://{config.host}:{port}"
            where = f"the token of {self.token_file}" if self.token_file else "a user's token"
            endpoints.append(
                Endpoint(
                    f"email HTTP API (JSON; every route needs {where})",
                    url,
                    f'curl -H "Authorization: Bearer $(cat {root / FIRST_TOKEN_FILE})"'
                    f" {url}/v1/folders",
                )
            )
            if self.smtp_on:
                mx = SmtpServer(
                    store, self.domains, tls=tls, message_bytes_max=self.message_bytes_max,
                    header_bytes_max=self.header_bytes_max, hostname=self.hostname,
                    on_queued=self._wake_now,
                )  # fmt: skip
                self._servers.append(mx)
                smtp_port = await mx.start(config.host, _derived(config.port, 1, self.smtp_port))
                self.ports["smtp"] = smtp_port
                endpoints.append(
                    Endpoint(
                        "email SMTP (inbound mail for " + ", ".join(sorted(self.domains)) + ")",
                        f"smtp://{config.host}:{smtp_port}",
                        f"swaks --server {config.host}:{smtp_port} --to demo@{self.hostname}",
                    )
                )
            if self.submission_on:
                sub = SmtpServer(
                    store, self.domains, mode="submission", tokens=tokens, blobs=blobs, tls=tls,
                    message_bytes_max=self.message_bytes_max,
                    header_bytes_max=self.header_bytes_max, hostname=self.hostname,
                    on_queued=self._wake_now, index=writes,
                )  # fmt: skip
                self._servers.append(sub)
                sub_port = await sub.start(
                    config.host, _derived(config.port, 2, self.submission_port)
                )
                self.ports["submission"] = sub_port
                endpoints.append(
                    Endpoint(
                        "email submission (SMTP AUTH: the address and an API token)",
                        f"smtp://{config.host}:{sub_port}",
                        f"swaks --server {config.host}:{sub_port} --auth PLAIN"
                        f' --auth-user demo@{self.hostname} --auth-password "$(cat'
                        f' {root / FIRST_TOKEN_FILE})" --from demo@{self.hostname}'
                        f" --to demo@{self.hostname}",
                    )
                )
            if hub is not None:
                ws_port = await hub.start(config.host, _derived(config.port, 3, self.ws_port))
                self.ports["ws"] = ws_port
                endpoints.append(
                    Endpoint(
                        "email push (WebSocket: new-mail events; send the token first)",
                        f"ws://{config.host}:{ws_port}",
                        f"python -m websockets ws://{config.host}:{ws_port}"
                        f'  # then type {{"token": "<token>"}}',
                    )
                )
            self.outgoing = OutgoingWorkers(
                store, blobs, self.routes, policy=self.retry, hostname=self.hostname,
                bounce_from=f"mailer-daemon@{self.hostname}", on_bounce=self._wake_now,
            )  # fmt: skip
            self.outgoing.start()
            self._dispatcher = asyncio.create_task(self._dispatch())
            if self.blob_gc_interval_s > 0:
                self._blob_gc = asyncio.create_task(self._collect_blobs())
            if self.follower is not None:
                self._follow = asyncio.create_task(self._follow_log(self.follower))
        except BaseException:
            await self.stop()
            raise
        for endpoint in endpoints:
            logger.info("email: %s on %s", endpoint.name, endpoint.url)
        logger.info("email: blobs are %s", blobs.describe())
        return endpoints

    async def _dispatch(self) -> None:
        """Feeds incoming-queue entries to ``workers`` processing tasks.

        Entries are claimed (with a lease, so processes sharing a PostgreSQL store
        take turns) only as fast as the workers take them. An entry whose processing
        fails (the blob store is unreachable, say) waits, claimed, for its retry:
        ``process_retry_base_s`` doubling up to ``process_retry_cap_s`` after each
        failure, for as long as it fails, while other entries go on being processed.
        """
        assert self.store is not None
        assert self._wake is not None
        capacity = self.workers * 2
        queue: asyncio.Queue[IncomingEntry] = asyncio.Queue(capacity)
        ours: set[int] = set()  # claimed by this process: queued, being processed or waiting
        waiting: dict[int, tuple[float, IncomingEntry]] = {}  # failed: (retry time, entry)
        failures: dict[int, int] = {}
        workers = [
            asyncio.create_task(self._work(queue, ours, waiting, failures))
            for _ in range(self.workers)
        ]
        store_failures = 0
        try:
            while True:
                self._wake.clear()
                room = capacity - queue.qsize()
                entries: list[IncomingEntry] = []
                if room > 0:
                    try:
                        # A claim of an entry this process already holds (waiting for its
                        # retry, its lease run out) renews the lease.
                        entries = await asyncio.to_thread(self.store.claim_incoming, room)
                        store_failures = 0
                    except Exception as error:  # the database is down: try again later
                        store_failures += 1
                        await back_off(store_failures, "claim incoming mail", error)
                        continue
                fresh = [e for e in entries if e.id not in ours]
                now = time.monotonic()
                due = [entry for when, entry in waiting.values() if when <= now]
                for entry in due:
                    del waiting[entry.id]
                for entry in fresh:
                    ours.add(entry.id)
                for entry in [*due, *fresh]:
                    await queue.put(entry)
                if fresh or due:
                    continue
                wait = 1.0
                if waiting:
                    soonest = min(when for when, _ in waiting.values())
                    wait = min(wait, max(0.01, soonest - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for entry_id in list(ours):  # claimed but not processed: free for others now
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.store.release_incoming, entry_id)

    async def _work(
        self,
        queue: asyncio.Queue[IncomingEntry],
        ours: set[int],
        waiting: dict[int, tuple[float, IncomingEntry]],
        failures: dict[int, int],
    ) -> None:
        assert self.pipeline is not None
        while True:
            entry = await queue.get()
            self._processing += 1
            finished = True
            future = asyncio.ensure_future(asyncio.to_thread(self.pipeline.process, entry))
            try:
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await future  # an entry being stored is finished before stopping
                    raise
                failures.pop(entry.id, None)
            except Exception as error:
                count = failures[entry.id] = failures.get(entry.id, 0) + 1
                delay = backoff(count, self.process_retry_base_s, self.process_retry_cap_s)
                waiting[entry.id] = (time.monotonic() + delay, entry)
                finished = False
                if count == 1:
                    logger.exception(
                        "email: processing queue entry %d failed; retrying in %.1f s",
                        entry.id, delay,
                    )  # fmt: skip
                else:
                    logger.warning(
                        "email: processing queue entry %d failed again (%d times: %s);"
                        " retrying in %.1f s", entry.id, count, error, delay,
                    )  # fmt: skip
            finally:
                self._processing -= 1
                if finished:
                    ours.discard(entry.id)
                if self._wake is not None and (not finished or queue.qsize() < self.workers):
                    self._wake.set()  # a retry to schedule, or room for more entries

    def collect_blobs(self) -> GcReport:
        """One blob garbage collection (blocking): deletes the blobs no message or outgoing
        row names that are older than the grace period
        (:func:`~sdi.email.blobs.collect_garbage`)."""
        store, blobs = self.store, self.blobs
        if store is None or blobs is None:
            raise InvalidArgument("the email service is not running")
        report = collect_garbage(blobs, store.blob_keys_in_use, grace_s=self.blob_gc_grace_s)
        self.blob_gc_last = report
        self.blob_gc_removed += report.removed
        if report.removed or report.stopped_early:
            logger.info(
                "email: blob GC removed %d unreferenced blob(s) of %d in %s (%d in use, %d young)"
                "%s", report.removed, report.scanned, blobs.describe(), report.in_use,
                report.young, "; stopped early, the rest next time" if report.stopped_early else "",
            )  # fmt: skip
        return report

    async def _collect_blobs(self) -> None:
        """Collects blob garbage every ``blob_gc_interval_s``, on a worker thread."""
        while True:
            await asyncio.sleep(self.blob_gc_interval_s)
            future = asyncio.ensure_future(asyncio.to_thread(self.collect_blobs))
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await future  # a collection in progress finishes before the stores close
                raise
            except Exception:
                logger.exception("email: blob garbage collection failed; retrying next time")

    async def _follow_log(self, follower: IndexFollower) -> None:
        """Applies the change log to the index every ``follow_interval_s`` and trims it every
        ``change_trim_interval_s``, on worker threads."""
        assert self.store is not None
        store = self.store
        failures = 0
        next_trim = time.monotonic()

        def step(trim: bool) -> None:
            follower.catch_up()
            if trim:
                dropped = store.trim_changes(time.time() - self.change_retention_s)
                if dropped:
                    logger.info("email: trimmed %d change(s) from the change log", dropped)

        while True:
            trim = time.monotonic() >= next_trim
            future = asyncio.ensure_future(asyncio.to_thread(step, trim))
            try:
                await asyncio.shield(future)
                failures = 0
                if trim:
                    next_trim = time.monotonic() + self.change_trim_interval_s
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await future  # a batch being applied finishes before the index closes
                raise
            except Exception as error:
                failures += 1
                await back_off(failures, "follow the change log", error, 0.5, 10.0)
                continue
            await asyncio.sleep(self.follow_interval_s)

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop()
        self._servers.clear()
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
        await cancel_and_wait(self._dispatcher)
        self._dispatcher = None
        await cancel_and_wait(self._blob_gc)
        self._blob_gc = None
        await cancel_and_wait(self._follow)
        self._follow = None
        for _ in range(200):  # entries being stored finish (they run on threads)
            if self._processing <= 0:
                break
            await asyncio.sleep(0.05)
        if self.outgoing is not None:
            await self.outgoing.stop()
            self.outgoing = None
        if isinstance(self.index, LsmSearchIndex) and not self._index_given:
            await asyncio.to_thread(self.index.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None
        if self.tokens is not None:
            await asyncio.to_thread(self.tokens.close)
            self.tokens = None
        if self.blobs is not None:
            self.blobs.close()
            self.blobs = None


def service(options: dict[str, Any]) -> Service:
    """The email service from ``sdi serve email`` options (``sdi up`` passes none)."""
    routes = options.get("routes")
    if isinstance(routes, list):  # ["domain=host:port", ...] from the command line
        for item in routes:
            if "=" not in str(item):
                raise InvalidArgument(f"--route takes domain=host:port, not {item!r}")
        routes = dict(str(item).split("=", 1) for item in routes)
    domains = options.get("domains")
    if isinstance(domains, str):
        domains = [d for d in domains.split(",") if d.strip()]
    return EmailService(
        domains=domains,
        smtp_port=options.get("smtp_port"),
        submission_port=options.get("submission_port"),
        ws_port=options.get("ws_port"),
        routes=routes,
        tls_cert=options.get("tls_cert"),
        tls_key=options.get("tls_key"),
        message_bytes_max=int(options.get("message_bytes_max") or MESSAGE_BYTES_MAX),
        workers=int(options.get("workers") or 2),
        database_url=options.get("database_url"),
        blob_url=options.get("blob_url"),
        blob_access_key=options.get("blob_access_key"),
        blob_secret_key=options.get("blob_secret_key"),
        blob_gc_interval_s=_seconds(options.get("blob_gc_interval"), GC_INTERVAL_S),
        blob_gc_grace_s=_seconds(options.get("blob_gc_grace"), GC_GRACE_S),
    )
