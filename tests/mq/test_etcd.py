"""The etcd client and member against real etcd processes (and a few fake servers).

Skipped where etcd is not installed, except under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from sdi import errors
from sdi.mq.etcd import Etcd, EtcdError, EtcdMember
from sdi.testing import servers

pytestmark = pytest.mark.needs_server

#: The ``run_async`` fixture of tests/conftest.py.
AsyncRunner = Callable[[Coroutine[Any, Any, Any]], Any]


def _url() -> str:
    return f"http://127.0.0.1:{servers.free_port()}"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def etcd_binary() -> str:
    return servers.require_binary("etcd")


@pytest.fixture(scope="module")
def member(etcd_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """One single-member etcd cluster shared by the module's tests (each uses its own keys)."""
    peer = _url()
    single = EtcdMember(
        "solo",
        tmp_path_factory.mktemp("etcd") / "solo",
        _url(),
        peer,
        {"solo": peer},
        binary=etcd_binary,
    )
    asyncio.run(single.start())
    try:
        yield single
    finally:
        asyncio.run(single.stop())


# -- a single member ---------------------------------------------------------


def test_single_member_starts_and_logs(member: EtcdMember) -> None:
    assert member.pid is not None
    assert _alive(member.pid)
    assert member.log_path == member.data_dir / "etcd.log"
    assert "--initial-cluster" in member.command()
    assert "starting" in member.log_path.read_text(errors="replace")
    assert (member.data_dir / "member").is_dir()


def test_put_get_delete(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            await etcd.delete_prefix(b"/kv/")
            first = await etcd.put(b"/kv/a", b"1")
            assert await etcd.get(b"/kv/a") == (b"1", first)
            assert await etcd.get(b"/kv/missing") is None
            second = await etcd.put(b"/kv/a", b"2")
            assert second > first
            assert await etcd.get(b"/kv/a") == (b"2", second)
            empty = await etcd.put(b"/kv/empty", b"")
            assert await etcd.get(b"/kv/empty") == (b"", empty)
            binary = bytes(range(256))
            third = await etcd.put(b"/kv/\xff\x00bin", binary)
            assert await etcd.get(b"/kv/\xff\x00bin") == (binary, third)
            await etcd.put(b"/kv/c", b"3")
            await etcd.put(b"/kv/b", b"2")
            await etcd.put(b"/kw", b"outside")
            listing = await etcd.get_prefix(b"/kv/")
            assert [key for key, _, _ in listing] == [
                b"/kv/a",
                b"/kv/b",
                b"/kv/c",
                b"/kv/empty",
                b"/kv/\xff\x00bin",
            ]
            assert listing[0] == (b"/kv/a", b"2", second)
            assert await etcd.get_prefix(b"/kv/nothing/") == []
            assert await etcd.delete(b"/kv/b") == 1
            assert await etcd.delete(b"/kv/b") == 0
            assert await etcd.get(b"/kv/b") is None
            assert await etcd.delete_prefix(b"/kv/") == 4
            assert await etcd.get_prefix(b"/kv/") == []
            assert await etcd.get(b"/kw") is not None
            assert await etcd.delete(b"/kw") == 1

    run_async(main())


def test_prefix_of_ff_bytes(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            await etcd.put(b"\xff\xff/x", b"1")
            await etcd.put(b"\xff\xff", b"0")
            assert [key for key, _, _ in await etcd.get_prefix(b"\xff\xff")] == [
                b"\xff\xff",
                b"\xff\xff/x",
            ]
            assert await etcd.delete_prefix(b"\xff\xff") == 2

    run_async(main())


def test_revision_increases(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            before = await etcd.revision()
            written = await etcd.put(b"/rev/k", b"v")
            assert written == before + 1
            assert await etcd.revision() == written
            await etcd.delete(b"/rev/k")
            assert await etcd.revision() == written + 1
            await etcd.delete(b"/rev/k")  # deleting nothing writes nothing
            assert await etcd.revision() == written + 1

    run_async(main())


def test_txn(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            await etcd.delete_prefix(b"/txn/")
            # Must not exist: applies once, then fails.
            assert await etcd.txn([(b"/txn/leader", 0)], [(b"/txn/leader", b"b0", 0)])
            got = await etcd.get(b"/txn/leader")
            assert got is not None
            value, revision = got
            assert value == b"b0"
            assert not await etcd.txn([(b"/txn/leader", 0)], [(b"/txn/leader", b"b1", 0)])
            assert await etcd.get(b"/txn/leader") == (b"b0", revision)
            # Wrong revision: nothing written, not even the other keys.
            assert not await etcd.txn(
                [(b"/txn/leader", revision + 100)],
                [(b"/txn/leader", b"b2", 0), (b"/txn/epoch", b"2", 0)],
            )
            assert await etcd.get(b"/txn/epoch") is None
            # Right revision: all writes in one new revision.
            await etcd.put(b"/txn/stale", b"x")
            assert await etcd.txn(
                [(b"/txn/leader", revision), (b"/txn/epoch", 0)],
                [(b"/txn/leader", b"b2", 0), (b"/txn/epoch", b"2", 0)],
                [b"/txn/stale"],
            )
            leader = await etcd.get(b"/txn/leader")
            epoch = await etcd.get(b"/txn/epoch")
            assert leader is not None
            assert epoch is not None
            assert leader[0] == b"b2"
            assert epoch[0] == b"2"
            assert leader[1] == epoch[1] == await etcd.revision()
            assert await etcd.get(b"/txn/stale") is None
            # No compares: unconditional.
            assert await etcd.txn([], [(b"/txn/free", b"1", 0)])
            # etcd refuses a key written twice in one txn.
            with pytest.raises(EtcdError, match="duplicate key") as refused:
                await etcd.txn([], [(b"/txn/dup", b"1", 0), (b"/txn/dup", b"2", 0)])
            assert refused.value.code == 3
            await etcd.delete_prefix(b"/txn/")

    run_async(main())


def test_leases(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            loop = asyncio.get_running_loop()
            dropped = await etcd.lease_grant(1)
            kept = await etcd.lease_grant(1)
            assert dropped != kept
            await etcd.put(b"/lease/dropped", b"x", lease=dropped)
            await etcd.put(b"/lease/kept", b"y", lease=kept)
            assert await etcd.txn([], [(b"/lease/txn", b"z", kept)])
            started = loop.time()
            while await etcd.get(b"/lease/dropped") is not None:
                assert loop.time() - started < 5.0, "the key outlived its lease"
                assert await etcd.lease_keepalive(kept) >= 1
                await asyncio.sleep(0.2)
            assert loop.time() - started >= 0.5
            assert await etcd.lease_keepalive(dropped) == 0
            # The kept-alive lease's keys outlive a further TTL and more.
            until = loop.time() + 1.5
            while loop.time() < until:
                assert await etcd.lease_keepalive(kept) >= 1
                await asyncio.sleep(0.25)
            assert await etcd.get(b"/lease/kept") is not None
            assert await etcd.get(b"/lease/txn") is not None
            await etcd.lease_revoke(kept)
            assert await etcd.get(b"/lease/kept") is None
            assert await etcd.get(b"/lease/txn") is None
            assert await etcd.lease_keepalive(kept) == 0
            await etcd.lease_revoke(kept)  # gone already: fine
            with pytest.raises(EtcdError, match="lease not found") as missing:
                await etcd.put(b"/lease/none", b"x", lease=kept)
            assert missing.value.code == 5

    run_async(main())


def test_concurrent_calls_and_reuse(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def main() -> None:
        async with Etcd([member.client_url]) as etcd:
            revisions = await asyncio.gather(
                *(etcd.put(f"/many/{i:03}".encode(), str(i).encode()) for i in range(50))
            )
            assert len(set(revisions)) == 50
            listing = await etcd.get_prefix(b"/many/")
            assert [value for _, value, _ in listing] == [str(i).encode() for i in range(50)]
            assert len(etcd._open) <= 50  # the idle ones are reused below
            for _ in range(20):
                await etcd.get(b"/many/000")
            assert await etcd.delete_prefix(b"/many/") == 50

    run_async(main())


def test_arguments_and_closed(member: EtcdMember, run_async: AsyncRunner) -> None:
    with pytest.raises(errors.InvalidArgument):
        Etcd([])
    with pytest.raises(errors.InvalidArgument):
        Etcd(["https://127.0.0.1:2379"])
    with pytest.raises(errors.InvalidArgument):
        Etcd(["http://127.0.0.1"])
    with pytest.raises(errors.InvalidArgument):
        Etcd([member.client_url], timeout=0)
    with pytest.raises(errors.InvalidArgument):
        EtcdMember("a", Path("x"), _url(), "http://127.0.0.1:1", {"b": "http://127.0.0.1:1"})
    assert Etcd(["127.0.0.1:2379"]).endpoints == ["127.0.0.1:2379"]

    async def main() -> None:
        etcd = Etcd([member.client_url])
        with pytest.raises(errors.InvalidArgument):
            await etcd.get(b"")
        with pytest.raises(errors.InvalidArgument):
            await etcd.put(b"k", "text")  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgument):
            await etcd.lease_grant(0)
        with pytest.raises(errors.InvalidArgument):
            await etcd.txn([(b"k", -1)], [])
        await etcd.get(b"/closed")
        await etcd.close()
        with pytest.raises(errors.Closed):
            await etcd.get(b"/closed")
        await etcd.close()

    run_async(main())


def test_member_start_failures(etcd_binary: str, tmp_path: Path) -> None:
    async def main() -> None:
        peer = _url()
        missing = EtcdMember("a", tmp_path / "a", _url(), peer, {"a": peer}, binary="/no/etcd")
        with pytest.raises(EtcdError, match="not found"):
            await missing.start()
        # A bad flag: etcd exits at once, and the error quotes its log.
        broken = EtcdMember(
            "b",
            tmp_path / "b",
            _url(),
            peer,
            {"b": peer},
            binary=etcd_binary,
            extra_args=["--nope"],
        )
        with pytest.raises(EtcdError, match="exited") as exited:
            await broken.start(timeout=10)
        assert "nope" in str(exited.value)
        assert broken.pid is None
        await broken.stop()

    asyncio.run(main())


# -- the HTTP client against fake servers ------------------------------------

Responder = Callable[[str, bytes], Awaitable[bytes | None]]


def _response(status: int, body: bytes, *, chunked: bool = False, extra: str = "") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
    head = f"HTTP/1.1 {status} {reason.get(status, 'X')}\r\nContent-Type: application/json\r\n"
    head += extra
    if not chunked:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + framed + b"0\r\nX-T: 1\r\n\r\n"


class FakeServer:
    """An HTTP/1.1 server on a free port answering each request with ``respond(path, body)``.

    ``respond`` returning None closes the connection without an answer;
    the connections accepted are counted.
    """

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.connections = 0
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length")
                )
                body = await reader.readexactly(length)
                self.requests.append(path)
                answer = await self.respond(path, body)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


HEADER = {"header": {"revision": "7"}}


def test_http_keep_alive_and_chunked(run_async: AsyncRunner) -> None:
    async def respond(path: str, body: bytes) -> bytes:
        request = json.loads(body)
        if path == "/v3/kv/range":
            kvs = [{"key": request["key"], "value": "dmFs", "mod_revision": "5"}]
            return _response(200, json.dumps({**HEADER, "kvs": kvs}).encode(), chunked=True)
        return _response(200, json.dumps(HEADER).encode())

    async def main() -> None:
        async with FakeServer(respond) as server, Etcd([server.url]) as etcd:
            for _ in range(5):
                assert await etcd.get(b"key") == (b"val", 5)
                assert await etcd.put(b"key", b"v") == 7
                assert await etcd.delete(b"key") == 0
            assert server.connections == 1
            assert len(server.requests) == 15

    run_async(main())


def test_http_stale_keep_alive_is_retried(run_async: AsyncRunner) -> None:
    async def respond(path: str, body: bytes) -> bytes:
        # Says nothing about closing, and closes after every answer.
        return _response(200, json.dumps(HEADER).encode(), extra="X-Close: soon\r\n")

    calls = 0

    async def respond_once(path: str, body: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        answer = await respond(path, body)
        return answer if calls % 2 else None

    async def main() -> None:
        async with FakeServer(respond_once) as server, Etcd([server.url], timeout=2) as etcd:
            for _ in range(4):
                assert await etcd.put(b"k", b"v") == 7
            # Each close was met by one fresh retry, not by a failover round.
            assert server.connections == 4
            assert len(server.requests) == 7

    run_async(main())


def test_http_bad_replies(run_async: AsyncRunner) -> None:
    replies = {
        "/v3/kv/put": _response(200, b"<html>not json</html>"),
        "/v3/kv/range": _response(200, b'{"kvs": []}'),
        "/v3/kv/deleterange": _response(200, b'{"header": {"revision": "x"}}'),
        "/v3/kv/txn": _response(400, b'{"error": "bad", "message": "bad compare", "code": 3}'),
        "/v3/lease/grant": _response(200, b'{"header": {"revision": "1"}, "ID": "0"}'),
        "/v3/lease/keepalive": _response(200, b'{"error": {"grpc_code": 9, "message": "nope"}}'),
    }

    async def respond(path: str, body: bytes) -> bytes:
        return replies[path]

    async def main() -> None:
        async with FakeServer(respond) as server, Etcd([server.url]) as etcd:
            with pytest.raises(EtcdError, match="not JSON: <html>not json</html>"):
                await etcd.put(b"k", b"v")
            with pytest.raises(EtcdError, match="'header' is missing"):
                await etcd.get(b"k")
            with pytest.raises(EtcdError, match="'revision' is not an integer"):
                await etcd.delete(b"k")
            with pytest.raises(EtcdError, match="bad compare") as refused:
                await etcd.txn([(b"k", 1)], [])
            assert refused.value.code == 3
            with pytest.raises(EtcdError, match="lease id 0"):
                await etcd.lease_grant(5)
            with pytest.raises(EtcdError, match="nope") as stream_error:
                await etcd.lease_keepalive(5)
            assert stream_error.value.code == 9
            assert server.requests.count("/v3/kv/put") == 1  # errors are not retried

    run_async(main())


def test_failover_between_endpoints(member: EtcdMember, run_async: AsyncRunner) -> None:
    async def hang(path: str, body: bytes) -> bytes | None:
        await asyncio.sleep(30)
        return None

    async def unavailable(path: str, body: bytes) -> bytes:
        error = {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14}
        return _response(503, json.dumps(error).encode())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        refused = _url()
        async with FakeServer(hang) as hung, FakeServer(unavailable) as leaderless:
            endpoints = [refused, leaderless.url, hung.url, member.client_url]
            async with Etcd(endpoints, timeout=0.5) as etcd:
                started = loop.time()
                await etcd.put(b"/failover", b"1")
                assert 0.4 < loop.time() - started < 2.0
                assert leaderless.requests == ["/v3/kv/put"]
                started = loop.time()
                assert await etcd.get(b"/failover") is not None  # straight to the good one
                assert loop.time() - started < 0.4
                assert await etcd.delete(b"/failover") == 1
            async with Etcd([refused, leaderless.url, hung.url], timeout=0.3) as nowhere:
                started = loop.time()
                with pytest.raises(EtcdError, match="no etcd endpoint answered") as failed:
                    await nowhere.get(b"/failover")
                assert loop.time() - started < 2.0
                message = str(failed.value)
                assert refused in message
                assert "no leader" in message
                assert "no answer within 0.3 s" in message

    run_async(main())


# -- clusters and process lifetime -------------------------------------------


def _status(url: str) -> Any:
    """The member's ``/v3/maintenance/status`` (its id and its leader's id)."""
    request = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)


def test_three_member_cluster_survives_a_kill(etcd_binary: str, tmp_path: Path) -> None:
    async def main() -> None:
        peers = {f"m{i}": _url() for i in range(3)}
        members = [
            EtcdMember(name, tmp_path / name, _url(), peer, peers, binary=etcd_binary)
            for name, peer in peers.items()
        ]
        try:
            await asyncio.gather(*(m.start() for m in members))
            await asyncio.gather(*(m.wait_ready(20) for m in members))
            # Kill the leader, and make it the first endpoint the client tries.
            statuses = [_status(m.client_url) for m in members]
            leader_id = statuses[0]["leader"]
            leader = next(
                m
                for m, s in zip(members, statuses, strict=True)
                if s["header"]["member_id"] == leader_id
            )
            others = [m for m in members if m is not leader]
            endpoints = [leader.client_url] + [m.client_url for m in others]
            async with Etcd(endpoints, timeout=2.0) as etcd:
                before = await etcd.put(b"/c/before", b"1")
                lease = await etcd.lease_grant(5)
                assert leader.pid is not None
                os.kill(leader.pid, signal.SIGKILL)
                for i in range(20):
                    await etcd.put(f"/c/during/{i:02}".encode(), b"x", lease=lease)
                assert await etcd.get(b"/c/before") == (b"1", before)
                assert len(await etcd.get_prefix(b"/c/during/")) == 20
                assert await etcd.lease_keepalive(lease) >= 1
                assert await etcd.txn([(b"/c/new", 0)], [(b"/c/new", b"1", 0)])
                assert leader.pid is None  # exited (collected)

                # Restarted on its data directory, it rejoins and catches up.
                await leader.start()
                await leader.wait_ready(20)
                async with Etcd([leader.client_url]) as alone:
                    assert await alone.get(b"/c/new") is not None
                    assert len(await alone.get_prefix(b"/c/during/")) == 20
                    await alone.put(b"/c/after", b"2")
                assert await etcd.get(b"/c/after") is not None

                # Two of three gone: no quorum, and calls give up in bounded time.
                for victim in others:
                    assert victim.pid is not None
                    os.kill(victim.pid, signal.SIGKILL)
                async with Etcd([m.client_url for m in members], timeout=0.5) as starved:
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    with pytest.raises(EtcdError, match="no etcd endpoint answered"):
                        await starved.get(b"/c/before")
                    assert loop.time() - started < 3.0
        finally:
            await asyncio.gather(*(m.stop() for m in members))
        assert all(m.pid is None for m in members)

    asyncio.run(main())


ORPHAN = """
import asyncio, sys, time
from pathlib import Path
from sdi.mq.etcd import EtcdMember
data_dir, client, peer, binary = sys.argv[1:]
member = EtcdMember("orphan", Path(data_dir), client, peer, {"orphan": peer}, binary=binary)
asyncio.run(member.start())
print(member.pid, flush=True)
time.sleep(120)
"""


def test_member_dies_with_its_parent(etcd_binary: str, tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path / "orphan"), _url(), _url(), etcd_binary],
        stdout=subprocess.PIPE,
    )
    child = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent printed {line!r}"
        child = int(line)
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5.0
        while _alive(child):
            assert time.monotonic() < deadline, "etcd outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
