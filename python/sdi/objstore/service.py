"""``sdi serve objects``: the S3 API on one machine, with SigV4 and a dev key pair.

Point boto3, the AWS CLI or any S3 client at it with path-style addressing::

    sdi serve objects --port 8790 --data-dir /tmp/s3
    AWS_ACCESS_KEY_ID=sdi AWS_SECRET_ACCESS_KEY=sdi-secret-key \\
        aws --endpoint-url http://127.0.0.1:8790 s3 mb s3://demo

The access key pair comes from ``$SDI_S3_ACCESS_KEY`` and
``$SDI_S3_SECRET_KEY`` (default ``sdi`` / ``sdi-secret-key``, a development
pair printed at start).

It runs on the runtime's HTTP/1.1 server (``sdi.runtime.http``), which
handles what S3 clients send: ``Expect: 100-continue`` (boto3 sends it with
every PUT body), chunked request bodies, bodies of hundreds of MiB, and HEAD
answers whose ``Content-Length`` is the object's size.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sdi.objstore.s3 import OBJECT_BYTES_MAX, S3Api, S3Request, S3Response, error_response
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.http import HttpServer, Request, Response

__all__ = ["DEV_ACCESS_KEY", "DEV_SECRET_KEY", "ObjectsService", "S3HttpServer", "service"]

DEV_ACCESS_KEY = "sdi"
DEV_SECRET_KEY = "sdi-secret-key"
HEAD_BYTES_MAX = 64 * 1024


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
    return Response(answer.status, answer.body, dict(answer.headers), answer.content_length)


class ObjectsService(Service):
    """The S3 API over one in-process data node and the metadata store."""

    key = "objects"

    def __init__(self, *, access_key: str | None = None, secret_key: str | None = None) -> None:
        self.access_key = access_key or os.environ.get("SDI_S3_ACCESS_KEY") or DEV_ACCESS_KEY
        self.secret_key = secret_key or os.environ.get("SDI_S3_SECRET_KEY") or DEV_SECRET_KEY
        self.api: S3Api | None = None
        self.server: S3HttpServer | None = None
        self.port = 0

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        api = await asyncio.to_thread(S3Api, config.data_dir, {self.access_key: self.secret_key})
        server = S3HttpServer(api)
        try:
            self.port = await server.start(config.host, config.port)
        except BaseException:
            api.close()
            raise
        self.api, self.server = api, server
        url = f"http://{config.host}:{self.port}"
        return [
            Endpoint(
                f"objects (S3 API, access key {self.access_key!r}, secret key {self.secret_key!r})",
                url,
                f"AWS_ACCESS_KEY_ID={self.access_key} AWS_SECRET_ACCESS_KEY={self.secret_key}"
                f" aws --endpoint-url {url} s3 mb s3://demo",
            )
        ]

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.api is not None:
            self.api.close()
            self.api = None


def service(options: dict[str, Any]) -> Service:
    """The S3 service from ``sdi serve objects`` options (its keys come from the environment)."""
    return ObjectsService()
