"""The S3 service in this process for tests and benchmarks, and a boto3 client for it.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path, S3Server(path) as server:
...     client = s3_client(server.url)
...     _ = client.create_bucket(Bucket="demo")
...     [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]
['demo']
"""

from __future__ import annotations

import asyncio
import threading
from os import PathLike
from pathlib import Path
from typing import Any, Self

from sdi.objstore.nodes import LocalNode, NodeUnavailable
from sdi.objstore.service import DEV_ACCESS_KEY, DEV_SECRET_KEY, ObjectsService
from sdi.runtime import ServiceConfig

__all__ = ["S3Server", "SwitchableNode", "error_code", "s3_client"]


class SwitchableNode:
    """A fault injector: a real in-process data node that can be switched off.

    While :attr:`down` is true every call raises
    :class:`~sdi.objstore.nodes.NodeUnavailable`, as a node in another
    process does when it does not answer.
    """

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.down = False

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def in_process(self) -> bool:
        return True

    def _check(self) -> None:
        if self.down:
            raise NodeUnavailable(f"{self.node_id} is switched off")

    def put(self, object_id: str, data: bytes | bytearray | memoryview) -> None:
        self._check()
        self.node.put(object_id, data)

    def get(self, object_id: str) -> bytes:
        self._check()
        return self.node.get(object_id)

    def delete(self, object_id: str) -> bool:
        self._check()
        return self.node.delete(object_id)

    def object_ids(self, prefix: str = "") -> list[str]:
        self._check()
        return self.node.object_ids(prefix)

    def scrub(self) -> list[str]:
        self._check()
        return self.node.scrub()

    def ping(self) -> bool:
        return not self.down

    def close(self) -> None:
        self.node.close()


class S3Server:
    """An :class:`~sdi.objstore.service.ObjectsService` on a free port, on its own thread and loop.

    ``options`` are the service's keyword arguments (``nodes``, ``durability``, ...).
    """

    def __init__(self, data_dir: str | PathLike[str], **options: Any) -> None:
        self.data_dir = Path(data_dir)
        self.options = options
        self.url = ""
        self.service: ObjectsService | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.service = ObjectsService(**self.options)
            endpoints = await self.service.start(ServiceConfig("127.0.0.1", 0, self.data_dir))
        except BaseException as error:
            self._failure = error
            self._ready.set()
            raise
        self.url = endpoints[0].url
        self._ready.set()
        await self._stop.wait()
        await self.service.stop()

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the S3 service did not start within 60 s")
        if self._failure is not None:
            raise RuntimeError(f"the S3 service failed to start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def s3_client(url: str, secret: str = DEV_SECRET_KEY, **config: Any) -> Any:
    """A boto3 S3 client for ``url``: SigV4, path-style, no retries; ``config`` goes to Config."""
    import boto3  # type: ignore[import-untyped]
    from botocore.client import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            **config,
        ),
    )


def error_code(error: BaseException) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a botocore ``ClientError``."""
    response = error.response  # type: ignore[attr-defined]
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]
