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
``blobs/`` (raw messages by SHA-256; :mod:`sdi.email.blobs`) and
``tokens.sqlite`` (API tokens; the subject of a user's token is the user's
address) and ``search/`` (the search index). On a first start (no users)
the service creates the demo user ``demo@<first domain>`` and writes its
token to ``api-token``.

Search runs on :class:`~sdi.email.lsmindex.LsmSearchIndex` (the compiled
LSM index of ``rust/sdi-lsm``, in ``search/``), checked against the store
at start so that mail stored just before a crash is indexed; pass
``index=ScanIndex()`` for the brute-force scan (rebuilt from the store at
start). Both implement :class:`~sdi.email.search.SearchIndex`.

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
from pathlib import Path
from typing import Any

from sdi.email.api import BODY_BYTES_MAX, EmailApi
from sdi.email.blobs import BlobStore
from sdi.email.lsmindex import LsmSearchIndex
from sdi.email.outgoing import OutgoingWorkers, RetryPolicy
from sdi.email.pipeline import ATTACHMENT_BYTES_MAX, Pipeline
from sdi.email.push import PushHub
from sdi.email.search import ScanIndex, SearchIndex
from sdi.email.smtp import HEADER_BYTES_MAX, MESSAGE_BYTES_MAX, SmtpServer
from sdi.email.store import IncomingEntry, MailStore, check_address
from sdi.errors import InvalidArgument
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.auth import FIRST_TOKEN_FILE, TOKENS_FILE, Authenticator, TokenStore
from sdi.runtime.http import HttpServer
from sdi.runtime.service import cancel_and_wait
from sdi.runtime.text import is_decimal

__all__ = [
    "DATABASE_FILE",
    "EmailService",
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
#: How many times a failing queue entry is retried before it waits for a restart.
PROCESS_ATTEMPTS_MAX = 5


def create_user(data_dir: Path, address: str, display_name: str = "") -> str:
    """Adds a user to the service whose data directory is ``data_dir`` (running or not);
    the normalised address. :class:`~sdi.errors.InvalidArgument` if taken or malformed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = MailStore(data_dir / DATABASE_FILE)
    try:
        address = check_address(address)
        store.create_user(address, display_name)
        return address
    finally:
        store.close()


def create_token(data_dir: Path, address: str) -> str:
    """A new API token for the user ``address`` (also the SMTP submission password)."""
    store = MailStore(data_dir / DATABASE_FILE)
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


def list_users(data_dir: Path) -> list[str]:
    """The users' addresses."""
    if not (data_dir / DATABASE_FILE).exists():
        return []
    store = MailStore(data_dir / DATABASE_FILE)
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


def _derived(port: int, offset: int, given: int | None) -> int:
    if given is not None:
        return given
    return port + offset if port else 0


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

    def _open(self, root: Path) -> tuple[MailStore, TokenStore, BlobStore]:
        root.mkdir(parents=True, exist_ok=True)
        store = MailStore(root / DATABASE_FILE)
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
        blobs = BlobStore(root / BLOBS_DIR)
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
        self.store, self.tokens = store, tokens
        auth = Authenticator("email", store=tokens)
        endpoints: list[Endpoint] = []
        try:
            hub = PushHub(tokens.verify) if self.push_on else None
            self.hub = hub
            self.pipeline = Pipeline(
                store, blobs, self.index,
                attachment_bytes_max=self.attachment_bytes_max,
                on_stored=hub.publish if hub is not None else None,
                bounce_from=f"mailer-daemon@{self.hostname}",
            )  # fmt: skip
            api = EmailApi(store, blobs, self.index, auth, self.domains, on_sent=self.wake)
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
                    on_queued=self._wake_now, index=self.index,
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
        except BaseException:
            await self.stop()
            raise
        for endpoint in endpoints:
            logger.info("email: %s on %s", endpoint.name, endpoint.url)
        return endpoints

    async def _dispatch(self) -> None:
        """Feeds incoming-queue entries to ``workers`` processing tasks."""
        assert self.store is not None
        assert self._wake is not None
        queue: asyncio.Queue[IncomingEntry] = asyncio.Queue(self.workers * 2)
        claimed: set[int] = set()
        failures: dict[int, int] = {}
        workers = [
            asyncio.create_task(self._work(queue, claimed, failures)) for _ in range(self.workers)
        ]
        try:
            while True:
                self._wake.clear()
                entries = await asyncio.to_thread(self.store.incoming, len(claimed) + 64)
                fresh = [
                    e
                    for e in entries
                    if e.id not in claimed and failures.get(e.id, 0) < PROCESS_ATTEMPTS_MAX
                ]
                for entry in fresh:
                    claimed.add(entry.id)
                    await queue.put(entry)
                if not fresh:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(
        self, queue: asyncio.Queue[IncomingEntry], claimed: set[int], failures: dict[int, int]
    ) -> None:
        assert self.pipeline is not None
        while True:
            entry = await queue.get()
            self._processing += 1
            future = asyncio.ensure_future(asyncio.to_thread(self.pipeline.process, entry))
            try:
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await future  # an entry being stored is finished before stopping
                    raise
            except Exception:
                failures[entry.id] = failures.get(entry.id, 0) + 1
                logger.exception("email: processing queue entry %d failed", entry.id)
            finally:
                self._processing -= 1
                claimed.discard(entry.id)

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop()
        self._servers.clear()
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
        await cancel_and_wait(self._dispatcher)
        self._dispatcher = None
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
    )
