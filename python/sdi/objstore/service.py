"""``sdi serve s3``: the S3 API on one machine, with SigV4 and a dev key pair.

Point boto3, the AWS CLI or any S3 client at it with path-style addressing::

    sdi serve s3 --port 8790 --data-dir /tmp/s3
    AWS_ACCESS_KEY_ID=sdi AWS_SECRET_ACCESS_KEY=sdi-secret-key \\
        aws --endpoint-url http://127.0.0.1:8790 s3 mb s3://demo

The access key pair comes from ``$SDI_S3_ACCESS_KEY`` and
``$SDI_S3_SECRET_KEY`` (default ``sdi`` / ``sdi-secret-key``, a development
pair printed at start).

**Durability across data nodes.** Bytes go to a cluster of data nodes
through the placement service (:mod:`sdi.objstore.cluster`): six nodes in
this process by default (directories ``node-0`` .. ``node-5`` of the data
directory), or ``--nodes N`` separate node processes
(:mod:`sdi.objstore.nodeserver`, on loopback ports of their own), restarted
if one dies. Each bucket is stored replicated or erasure-coded: the
``x-sdi-durability`` header of CreateBucket chooses (``replicas-3``,
``ec-4+2``, ...); ``--durability`` sets the default (``ec-4+2`` with six
nodes or more, else as many replicas as there are nodes, up to 3).

Metadata lives in ``metadata.sqlite`` in the data directory, or in
PostgreSQL with ``--metadata-url postgresql://...`` (or
``$SDI_S3_METADATA_URL``) so that several API servers can share it.

It runs on the runtime's HTTP/1.1 server (``sdi.runtime.http``), which
handles what S3 clients send: ``Expect: 100-continue`` (boto3 sends it with
every PUT body), chunked request bodies, bodies of hundreds of MiB, and HEAD
answers whose ``Content-Length`` is the object's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path
from typing import Any

from sdi.errors import InvalidArgument
from sdi.objstore.blobs import ClusterBlobs
from sdi.objstore.cluster import ClusterStore
from sdi.objstore.nodes import LocalNode, NodeClient
from sdi.objstore.nodeserver import NodeProcess, spawn_nodes
from sdi.objstore.placement import Scheme
from sdi.objstore.s3 import (
    OBJECT_BYTES_MAX,
    UPLOAD_EXPIRY_S,
    S3Api,
    S3Request,
    S3Response,
    error_response,
)
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.http import HttpServer, Request, Response
from sdi.runtime.service import cancel_and_wait

__all__ = ["DEV_ACCESS_KEY", "DEV_SECRET_KEY", "ObjectsService", "S3HttpServer", "service"]

DEV_ACCESS_KEY = "sdi"
DEV_SECRET_KEY = "sdi-secret-key"
HEAD_BYTES_MAX = 64 * 1024
#: Data nodes in this process when ``--nodes`` is not given (enough for ec-4+2).
DEFAULT_NODES = 6
NODES_MAX = 64
PLACEMENT_FILE = "placement.sqlite"

logger = logging.getLogger(__name__)


#: Refusals the HTTP layer makes that S3 answers with 400 rather than 413/431.
_S3_400 = frozenset({"EntityTooLarge", "RequestHeaderSectionTooLarge", "IncompleteBody"})


class S3HttpServer:
    """The runtime's HTTP/1.1 server in front of :class:`S3Api`; requests run on worker threads."""

    def __init__(self, api: S3Api, *, body_bytes_max: int = OBJECT_BYTES_MAX) -> None:
        self.api = api
        self._http = HttpServer(
            self._handle, body_bytes_max=body_bytes_max, head_bytes_max=HEAD_BYTES_MAX,
            errors=self._refusal,
        )  # fmt: skip

    async def start(self, host: str, port: int) -> int:
        return await self._http.start(host, port)

    async def stop(self) -> None:
        """Stops listening, lets requests in progress finish, closes idle connections."""
        await self._http.stop()

    async def _handle(self, request: Request) -> Response:
        path, _, query = request.target.partition("?")
        s3_request = S3Request(request.method, path, query, request.headers, request.body)
        try:
            answer = await asyncio.to_thread(self.api.handle, s3_request)
        except Exception as error:  # a bug must not kill the server
            answer = error_response(
                "InternalError", f"internal error: {type(error).__name__}", 500, path, "-"
            )
        return _response(answer)

    @staticmethod
    def _refusal(status: int, code: str, message: str) -> Response:
        return _response(error_response(code, message, 400 if code in _S3_400 else status, "", "-"))


def _response(answer: S3Response) -> Response:
    return Response(
        answer.status, answer.body, dict(answer.headers), answer.content_length, answer.chunks
    )


def _keep_freed_memory() -> bool:
    """Lets glibc reuse freed buffers of up to 32 MiB instead of returning them to the kernel.

    Every object body, shard and piece is a fresh buffer of megabytes; by
    default glibc maps each one from the kernel and unmaps it when freed, so
    every byte costs a page fault (slow on VMs). Raising the mmap threshold
    to its maximum (32 MiB on 64-bit) and the trim threshold to 512 MiB (what
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do) keeps them
    for reuse. Process-wide; a no-op where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20)
        )
    except (OSError, AttributeError):
        return False


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class ObjectsService(Service):
    """The S3 API over one in-process data node and the metadata store.

    Every ``maintenance_interval_s`` it collects garbage (unfinished uploads
    older than ``upload_expiry_s``, bytes no row points at) and lets the data
    store compact its files, on a worker thread.
    """

    key = "s3"

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        nodes: int | None = None,
        durability: str | None = None,
        supervise: bool = True,
        sync: bool = True,
        metadata_url: str | None = None,
        upload_expiry_s: float = UPLOAD_EXPIRY_S,
        maintenance_interval_s: float = 600.0,
    ) -> None:
        if nodes is not None and not 1 <= nodes <= NODES_MAX:
            raise InvalidArgument(f"--nodes must be 1 to {NODES_MAX}, not {nodes}")
        if not upload_expiry_s >= 0:
            raise InvalidArgument(
                f"the upload expiry must be a number of days >= 0, not {upload_expiry_s / 86400}"
            )
        self.access_key = access_key or os.environ.get("SDI_S3_ACCESS_KEY") or DEV_ACCESS_KEY
        self.secret_key = secret_key or os.environ.get("SDI_S3_SECRET_KEY") or DEV_SECRET_KEY
        self.nodes = nodes
        count = DEFAULT_NODES if nodes is None else nodes
        self.durability = durability or ("ec-4+2" if count >= 6 else f"replicas-{min(3, count)}")
        if Scheme.parse(self.durability).slots > count:
            raise InvalidArgument(
                f"--durability {self.durability} needs {Scheme.parse(self.durability).slots}"
                f" data nodes and there are {count}; raise --nodes or choose fewer pieces"
            )
        self.supervise = supervise
        self.metadata_url = metadata_url or os.environ.get("SDI_S3_METADATA_URL") or None
        self.sync = sync
        self.upload_expiry_s = upload_expiry_s
        self.maintenance_interval_s = maintenance_interval_s
        self.processes: list[NodeProcess] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.api: S3Api | None = None
        self.server: S3HttpServer | None = None
        self.port = 0
        self._maintenance: asyncio.Task[None] | None = None
        self._round: asyncio.Future[None] | None = None

    def _maintain_once(self, api: S3Api) -> None:
        report = api.collect_garbage(upload_expiry_s=self.upload_expiry_s)
        if report.uploads_expired or report.orphans_deleted:
            logger.info(
                "garbage collected: %d expired uploads (%d parts), %d orphaned pieces",
                report.uploads_expired, report.parts_deleted, report.orphans_deleted,
            )  # fmt: skip
        api.blobs.maintain()

    async def _maintain(self, api: S3Api) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval_s)
            # Shielded, so stop() can wait for a round in progress before closing the stores.
            self._round = asyncio.ensure_future(asyncio.to_thread(self._maintain_once, api))
            try:
                await asyncio.shield(self._round)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "object store maintenance failed; it runs again in %.0f s",
                    self.maintenance_interval_s,
                )

    def _open_blobs(self, root: Path) -> ClusterBlobs:
        """The cluster store over this service's data nodes (started here if they are processes)."""
        if (root / "node-0" / "index.sqlite").exists() and not (root / PLACEMENT_FILE).exists():
            raise InvalidArgument(
                f"{root} holds data from an older sdi that kept every object on one data node;"
                " start with a fresh --data-dir (or move that one away)"
            )
        clients: list[NodeClient]
        if self.nodes is None:
            clients = [
                LocalNode(f"node-{index}", root / f"node-{index}", sync=self.sync)
                for index in range(DEFAULT_NODES)
            ]
        else:
            self.processes = spawn_nodes(
                self.nodes, root, sync=self.sync, args=["--parent-pid", str(os.getpid())]
            )
            clients = [process.client() for process in self.processes]
        try:
            blobs = ClusterBlobs(ClusterStore(clients, root / PLACEMENT_FILE))
            blobs.check_durability(self.durability)
        except BaseException:
            self._stop_processes()
            raise
        return blobs

    def _open(self, root: Path) -> S3Api:
        blobs = self._open_blobs(root)
        try:
            return S3Api(
                root,
                {self.access_key: self.secret_key},
                blobs=blobs,
                durability=self.durability,
                metadata=self.metadata_url,
            )
        except BaseException:
            blobs.close()
            self._stop_processes()
            raise

    def _stop_processes(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stop()
        self.processes = []

    async def _supervise(self) -> None:
        """Restarts a data node process that died (on its port, over its directory)."""
        while True:
            await asyncio.sleep(1.0)
            for process in list(self.processes):
                if process.running:
                    continue
                logger.warning("data node %s is not running; restarting it", process.node_id)
                try:
                    await asyncio.to_thread(process.restart)
                except Exception:
                    logger.exception("data node %s did not restart; trying again", process.node_id)

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        _keep_freed_memory()
        root = Path(config.data_dir)
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        api = await asyncio.to_thread(self._open, root)
        server = S3HttpServer(api)
        try:
            self.port = await server.start(config.host, config.port)
        except BaseException:
            api.close()
            await asyncio.to_thread(self._stop_processes)
            raise
        self.api, self.server = api, server
        self._maintenance = asyncio.create_task(self._maintain(api))
        if self.processes and self.supervise:
            self._supervisor = asyncio.create_task(self._supervise())
        where = (
            f"{len(self.processes)} data node processes"
            if self.processes
            else f"{DEFAULT_NODES} in-process data nodes"
        )
        logger.info("s3: %s under %s; new buckets default to %s", where, root, self.durability)
        url = f"http://{config.host}:{self.port}"
        return [
            Endpoint(
                f"s3 (S3 API, access key {self.access_key!r}, secret key {self.secret_key!r})",
                url,
                f"AWS_ACCESS_KEY_ID={self.access_key} AWS_SECRET_ACCESS_KEY={self.secret_key}"
                f" aws --endpoint-url {url} s3 mb s3://demo",
            )
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._supervisor)
        self._supervisor = None
        await cancel_and_wait(self._maintenance)
        self._maintenance = None
        if self._round is not None:
            with contextlib.suppress(Exception):
                await self._round
            self._round = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.api is not None:
            await asyncio.to_thread(self.api.close)
            self.api = None
        await asyncio.to_thread(self._stop_processes)


def service(options: dict[str, Any]) -> Service:
    """The S3 service from ``sdi serve s3`` options (its keys come from the environment)."""
    return ObjectsService(
        nodes=options.get("nodes"),
        durability=options.get("durability"),
        metadata_url=options.get("metadata_url"),
        upload_expiry_s=float(options.get("upload_expiry_days") or 7.0) * 86400,
    )
