"""The small HTTP/1.1 server: requests, limits, bad input, and a clean stop."""

from __future__ import annotations

import asyncio
import json

from sdi.runtime.http import HttpServer, Request, Response


async def _echo(request: Request) -> Response:
    if request.path == "/slow":
        await asyncio.sleep(0.3)
        return Response.text("slow done")
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    return Response.json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": request.body.decode(),
        }
    )


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


def _status_and_body(reply: bytes) -> tuple[int, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_get_with_query_and_body(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo)
        port = await server.start("127.0.0.1", 0)
        reply = await _exchange(
            port,
            b"POST /a/b?x=1&x=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            b"Connection: close\r\n\r\nhello",
        )
        status, body = _status_and_body(reply)
        assert status == 200
        assert json.loads(body) == {
            "method": "POST",
            "path": "/a/b",
            "query": {"x": ["1", "2"]},
            "body": "hello",
        }
        await server.stop()

    run_async(scenario())


def test_keep_alive_serves_two_requests_on_one_connection(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/one", "/two"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"connection: keep-alive" in head
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            assert json.loads(body)["path"] == path
        writer.close()
        await writer.wait_closed()
        await server.stop()

    run_async(scenario())


def test_bad_requests_get_their_status_and_the_server_keeps_serving(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo, body_bytes_max=10, head_bytes_max=1024)
        port = await server.start("127.0.0.1", 0)
        cases = [
            (b"NONSENSE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            # Digits int() refuses (superscript two, Arabic-Indic five, in Latin-1 and UTF-8).
            (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: \u0665\r\n\r\n".encode(), 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" + b"x" * 11, 413),
            (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", 431),
            (b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n", 500),
        ]
        for raw, expected in cases:
            status, _ = _status_and_body(await _exchange(port, raw))
            assert status == expected, raw[:30]
        status, _ = _status_and_body(
            await _exchange(port, b"GET /fine HTTP/1.1\r\nConnection: close\r\n\r\n")
        )
        assert status == 200
        await server.stop()

    run_async(scenario())


def test_head_sends_no_body(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo)
        port = await server.start("127.0.0.1", 0)
        reply = await _exchange(port, b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"200 OK" in head
        assert b"content-length: " in head
        assert body == b""
        await server.stop()

    run_async(scenario())


def test_stop_lets_a_request_in_flight_finish(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo)
        port = await server.start("127.0.0.1", 0)
        in_flight = asyncio.create_task(
            _exchange(port, b"GET /slow HTTP/1.1\r\nConnection: close\r\n\r\n")
        )
        await asyncio.sleep(0.1)
        await server.stop()
        status, body = _status_and_body(await in_flight)
        assert (status, body) == (200, b"slow done")
        # After stop the port no longer accepts connections.
        try:
            await _exchange(port, b"GET / HTTP/1.1\r\n\r\n")
        except OSError:
            pass
        else:
            raise AssertionError("the server still accepted a connection after stop()")

    run_async(scenario())


def test_chunked_bodies_and_expect_100_continue(run_async) -> None:
    async def scenario() -> None:
        server = HttpServer(_echo)
        port = await server.start("127.0.0.1", 0)
        reply = await _exchange(
            port,
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
        assert b"hello world" in reply
        await server.stop()

    run_async(scenario())
