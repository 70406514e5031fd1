"""The generic RESP server: redis-py (sync, asyncio, RESP3), pipelining, bad input, clean stop."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from sdi.resp import ReplyError, ReplyParser, encode_command
from sdi.runtime.respserver import (
    OK,
    Client,
    Command,
    RespError,
    RespServer,
    parse_float,
    parse_int,
    serve_in_thread,
)
from sdi.testing import servers
from sdi.testing.servers import RedisServer

STORE: dict[bytes, bytes] = {}


def _set(client: Client, argv: list[bytes]) -> Any:
    STORE[argv[1]] = argv[2]
    return OK


def _get(client: Client, argv: list[bytes]) -> Any:
    return STORE.get(argv[1])


def _incrby(client: Client, argv: list[bytes]) -> Any:
    value = parse_int(STORE.get(argv[1], b"0")) + parse_int(argv[2])
    STORE[argv[1]] = str(value).encode()
    return value


def _boom(client: Client, argv: list[bytes]) -> Any:
    raise ValueError("handler bug")


def _wrongtype(client: Client, argv: list[bytes]) -> Any:
    raise RespError("WRONGTYPE Operation against a key holding the wrong kind of value")


async def _slow(client: Client, argv: list[bytes]) -> Any:
    await asyncio.sleep(float(argv[1]))
    return b"slept"


def _proto(client: Client, argv: list[bytes]) -> Any:
    return {b"protocol": client.protocol, b"half": 0.5, b"set": {b"x"}}


def _table() -> dict[str, Command]:
    return {
        "set": Command(_set, 3, ("write",), 1, 1, 1, "string", "Set a value"),
        "get": Command(_get, 2, ("readonly",), 1, 1, 1, "string", "Get a value"),
        "incrby": Command(_incrby, 3, ("write",), 1, 1, 1, "string"),
        "boom": Command(_boom, 1),
        "wrongtype": Command(_wrongtype, 1),
        "slow": Command(_slow, 2),
        "proto": Command(_proto, 1),
    }


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with serve_in_thread(RespServer(_table())) as port:
        yield port


def _raw(port: int, data: bytes, replies: int, timeout: float = 10.0) -> tuple[list[Any], bool]:
    """Sends ``data`` and reads ``replies`` replies; also whether the server then closed."""
    parser = ReplyParser()
    values: list[Any] = []
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(data)
            while len(values) < replies:
                chunk = connection.recv(1 << 16)
                if not chunk:
                    closed = True
                    break
                values += parser.parse(chunk)
            if not closed:
                connection.settimeout(0.5)
                try:
                    closed = connection.recv(1) == b""
                except TimeoutError:
                    closed = False
        except (ConnectionResetError, BrokenPipeError):
            closed = True  # closed with our bytes unread: the kernel resets
    return values, closed


def test_redis_py_sync(server_port: int) -> None:
    client = redis.Redis(port=server_port, client_name="tester", protocol=2)
    assert client.ping() is True
    assert client.echo("hi") == b"hi"
    assert client.set("a", "1") is True
    assert client.get("a") == b"1"
    assert client.incrby("a", 41) == 42
    assert client.client_getname() == "tester"
    assert client.client_setname("other") is True
    assert client.client_getname() == "other"
    assert isinstance(client.client_id(), int)
    info = client.client_info()
    assert info["name"] == "other"
    assert info["db"] == 0
    assert info["lib-name"] == "redis-py"
    assert any(entry["name"] == "other" for entry in client.client_list())
    server_info = client.info()
    assert server_info["redis_version"].startswith("7.")
    assert server_info["arch_bits"] == 64
    assert server_info["cluster_enabled"] == 0
    assert server_info["connected_clients"] >= 1
    assert server_info["used_memory"] > 0
    assert set(client.info("clients")) == {"connected_clients", "blocked_clients"}
    assert client.execute_command("SELECT", 0) in (True, b"OK", "OK")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        client.execute_command("SELECT", 1)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        client.execute_command("GET")
    with pytest.raises(
        redis.ResponseError,
        match=r"unknown command 'FOO', with args beginning with: 'a' 'b' $",
    ):
        client.execute_command("FOO", "a", "b")
    with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
        client.incrby("a", "x")
    with pytest.raises(redis.ResponseError, match=r"^internal error$"):
        client.execute_command("BOOM")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.execute_command("WRONGTYPE")
    assert client.ping() is True  # still usable after every error
    assert client.execute_command("COMMAND COUNT") == 22
    assert client.execute_command("PROTO") == [b"protocol", 2, b"half", b"0.5", b"set", [b"x"]]
    client.close()


def test_handler_failure_is_logged(server_port: int, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(port=server_port)
    with (
        caplog.at_level(logging.ERROR, logger="sdi.runtime.respserver"),
        pytest.raises(redis.ResponseError),
    ):
        client.execute_command("BOOM")
    assert any("handler bug" in (record.exc_text or "") for record in caplog.records)
    client.close()


def test_redis_py_resp3(server_port: int) -> None:
    client = redis.Redis(port=server_port, protocol=3)
    assert client.ping() is True
    assert client.set("r3", "v") is True
    assert client.get("r3") == b"v"
    assert client.execute_command("PROTO") == {b"protocol": 3, b"half": 0.5, b"set": [b"x"]}
    hello = client.execute_command("HELLO", 3)
    assert hello[b"proto"] == 3
    assert hello[b"server"] == b"redis"
    assert set(hello) == {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"}
    assert client.client_info()["resp"] == "3"
    client.close()


def test_hello_switches_protocol_mid_pipeline(server_port: int) -> None:
    data = b"PROTO\r\nHELLO 3 SETNAME n1\r\nPROTO\r\nCLIENT GETNAME\r\nRESET\r\nPROTO\r\n"
    values, _ = _raw(server_port, data, 6)
    assert values[0][:2] == [b"protocol", 2]
    assert values[1][b"proto"] == 3
    assert values[2] == {b"protocol": 3, b"half": 0.5, b"set": [b"x"]}
    assert values[3] == b"n1"
    assert values[4] == b"RESET"
    assert values[5][:2] == [b"protocol", 2]


def test_asyncio_client(run_async: Any) -> None:
    async def scenario() -> None:
        server = RespServer(_table())
        port = await server.start("127.0.0.1", 0)
        client = redis.asyncio.Redis(port=port)
        assert await client.ping() is True
        assert await client.set("x", "1") is True
        results = await asyncio.gather(*(client.incrby("x", 1) for _ in range(50)))
        assert sorted(results) == list(range(2, 52))
        async with client.pipeline(transaction=False) as pipe:
            for i in range(100):
                pipe.echo(str(i))
            assert await pipe.execute() == [str(i).encode() for i in range(100)]
        assert await client.execute_command("SLOW", "0.01") == b"slept"
        await client.aclose()
        await server.stop()

    run_async(scenario())


def test_pipeline_of_10k_commands(server_port: int) -> None:
    client = redis.Redis(port=server_port)
    client.set("n", "0")
    pipe = client.pipeline(transaction=False)
    for _ in range(10_000):
        pipe.incrby("n", 1)
    started = time.perf_counter()
    results = pipe.execute()
    elapsed = time.perf_counter() - started
    assert results == list(range(1, 10_001))
    assert elapsed < 10
    client.close()
    values, closed = _raw(server_port, b"*1\r\n$4\r\nPING\r\n" * 10_000 + b"ECHO x\r\n", 10_001)
    assert values[:-1] == [b"PONG"] * 10_000
    assert values[-1] == b"x"
    assert not closed


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"*2\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-3\r\n", "ERR Protocol error: invalid bulk length"),
        (b'GET "abc\r\n', "ERR Protocol error: unbalanced quotes in request"),
        (b"*1\r\n$1073741824\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*101\r\n", "ERR Protocol error: invalid multibulk length"),
    ],
)
def test_bad_input_gets_an_error_then_a_disconnect(data: bytes, error: str) -> None:
    server = RespServer(_table(), bulk_bytes_max=4096, arguments_max=100)
    with serve_in_thread(server) as port:
        values, closed = _raw(port, b"PING\r\n" + data + b"PING\r\n", 2)
    assert values[0] == b"PONG"
    assert isinstance(values[1], ReplyError)
    assert str(values[1]) == error
    assert closed


def test_buffer_limit_disconnects() -> None:
    server = RespServer(_table(), bulk_bytes_max=1 << 20, buffer_bytes_max=64 * 1024)
    with serve_in_thread(server) as port:
        payload = b"*2\r\n$4\r\nECHO\r\n$1000000\r\n" + b"x" * 200_000
        values, closed = _raw(port, payload, 1)
        assert closed
        assert isinstance(values[0], ReplyError)
        assert str(values[0]).startswith("ERR Protocol error")
        # The server is fine for everyone else, and a large-but-allowed argument works.
        ok, _ = _raw(port, encode_command("ECHO", b"y" * 50_000), 1)
        assert ok == [b"y" * 50_000]


def test_too_many_arguments_are_refused() -> None:
    server = RespServer(_table(), arguments_max=10)
    with serve_in_thread(server) as port:
        values, closed = _raw(port, encode_command("ECHO", *(["a"] * 10)), 1)
        assert str(values[0]) == "ERR Protocol error: invalid multibulk length"
        assert closed
        values, closed = _raw(port, encode_command("ECHO", *(["a"] * 3)), 1)
        assert str(values[0]) == "ERR wrong number of arguments for 'echo' command"
        assert not closed


def test_quit_closes_after_ok(server_port: int) -> None:
    values, closed = _raw(server_port, b"PING\r\nQUIT\r\nPING\r\n", 3)
    assert values == [b"PONG", b"OK"]
    assert closed


def test_clean_stop_with_connections_open(run_async: Any) -> None:
    async def scenario() -> None:
        server = RespServer(_table())
        port = await server.start("127.0.0.1", 0)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"PING\r\n")
        assert await idle_reader.readline() == b"+PONG\r\n"
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(b"SLOW 0.3\r\n")
        await asyncio.sleep(0.1)  # the slow command is running
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 3
        assert await busy_reader.read() == b"$5\r\nslept\r\n"  # finished, then closed
        assert await idle_reader.read() == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        for writer in (idle_writer, busy_writer):
            writer.close()
        assert server.clients == []

    run_async(scenario())


def test_parse_helpers() -> None:
    assert parse_int(b"0") == 0
    assert parse_int(b"9223372036854775807") == 2**63 - 1
    for bad in (b"", b"+1", b"01", b"-0", b"1.0", b" 1", b"9223372036854775808"):
        with pytest.raises(RespError):
            parse_int(bad)
    assert parse_float(b".5") == 0.5
    assert parse_float(b"1e-3") == 0.001
    assert parse_float(b"0x1p3") == 8.0
    assert parse_float(b"-Infinity") == float("-inf")
    for bad in (b"", b"nan", b"1e", b"1_0", b" 1", b"1 ", b"1e999", b"1e-999", b"0x"):
        with pytest.raises(RespError, match="not a valid float"):
            parse_float(bad)


BUILTIN_CASES: list[list[str]] = [
    ["PING"],
    ["PING", "hello"],
    ["PING", "a", "b"],
    ["ECHO"],
    ["ECHO", "x"],
    ["SELECT", "x"],
    ["SELECT", "0"],
    ["HELLO", "4"],
    ["HELLO", "x"],
    ["HELLO", "2", "foo"],
    ["HELLO", "2", "SETNAME"],
    ["HELLO", "2", "AUTH", "bob", "x"],
    ["CLIENT"],
    ["CLIENT", "foo"],
    ["CLIENT", "SETNAME"],
    ["CLIENT", "SETNAME", "a b"],
    ["CLIENT", "SETNAME", "ok"],
    ["CLIENT", "GETNAME"],
    ["CLIENT", "GETNAME", "x"],
    ["AUTH", "x"],
    ["AUTH", "u", "p"],
    ["RESET", "x"],
    ["NOPE"],
    ["NOPE", "a", "b" * 200, "c"],
    ["nope", "a"],
]


def _plain(value: Any) -> Any:
    if isinstance(value, ReplyError):
        return ("error", str(value))
    return value


def test_builtin_replies_match_redis(server_port: int, redis_server: RedisServer) -> None:
    script = b"".join(encode_command(*command) for command in BUILTIN_CASES)
    expected, _ = _raw(redis_server.port, script, len(BUILTIN_CASES))
    got, _ = _raw(server_port, script, len(BUILTIN_CASES))
    for command, mine, theirs in zip(BUILTIN_CASES, got, expected, strict=True):
        assert _plain(mine) == _plain(theirs), command


def test_redis_cli(server_port: int) -> None:
    cli = servers.require_binary("redis-cli")

    def run(*args: str) -> str:
        result = subprocess.run(
            [cli, "-p", str(server_port), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return result.stdout

    assert run("PING").strip() == "PONG"
    info = run("INFO")
    assert "redis_version:" in info
    assert "cluster_enabled:0" in info
    assert run("COMMAND", "COUNT").strip() == "22"
    assert "set" in run("COMMAND", "DOCS", "set")
    assert run("SET", "cli", "v").strip() == "OK"
    assert run("GET", "cli").strip() == "v"


TRANSACTION_CASES = [
    ["EXEC"],
    ["DISCARD"],
    ["MULTI"],
    ["SET", "tx", "1"],
    ["INCRBY", "tx", "41"],
    ["GET", "tx"],
    ["MULTI"],  # nested: refused, the transaction goes on
    ["EXEC"],
    ["MULTI"],
    ["SET", "tx", "oops"],
    ["INCRBY", "tx", "1"],  # fails when run: an error inside EXEC's reply
    ["GET", "tx"],
    ["EXEC"],
    ["MULTI"],
    ["SET", "tx", "2"],
    ["GET"],  # wrong arity: refused now, and EXEC aborts
    ["NOPE", "x"],
    ["EXEC"],
    ["GET", "tx"],
    ["MULTI"],
    ["SET", "tx", "3"],
    ["DISCARD"],
    ["GET", "tx"],
    ["MULTI"],
    ["EXEC"],
    ["MULTI"],
    ["PING"],
    ["ECHO", "hi"],
    ["EXEC"],
]


def test_transactions_match_redis(server_port: int, redis_server: RedisServer) -> None:
    script = b"".join(encode_command(*command) for command in TRANSACTION_CASES)
    expected, _ = _raw(redis_server.port, script, len(TRANSACTION_CASES))
    got, _ = _raw(server_port, script, len(TRANSACTION_CASES))
    for command, mine, theirs in zip(TRANSACTION_CASES, got, expected, strict=True):
        if isinstance(theirs, list):
            assert [_plain(m) for m in mine] == [_plain(t) for t in theirs], command
        else:
            assert _plain(mine) == _plain(theirs), command


def test_redis_py_transactions(server_port: int) -> None:
    client = redis.Redis(port=server_port)
    with client.pipeline(transaction=True) as pipe:
        pipe.set("txp", "5").incrby("txp", 2).get("txp")
        assert pipe.execute() == [True, 7, b"7"]
    with client.pipeline() as pipe, pytest.raises(redis.ResponseError, match="WATCH is not"):
        pipe.watch("txp")
    client.close()
