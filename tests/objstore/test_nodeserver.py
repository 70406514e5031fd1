"""Data nodes as processes: the HTTP API, RemoteNode, NodeProcess, crashes and clean stops.

Every test runs real node server processes on loopback; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from sdi._kafka import crc32c
from sdi.errors import Corrupt, InvalidArgument, LimitExceeded
from sdi.objstore.nodes import NodeUnavailable
from sdi.objstore.nodeserver import NodeProcess, RemoteNode, spawn_nodes

LIMIT = 1 << 20  # the test nodes' --object-bytes-max


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """One node server process, no fsync, bodies up to 1 MiB; must exit 0 unless killed."""
    with NodeProcess(
        "node-0", tmp_path / "node-0", sync=False, args=["--object-bytes-max", str(LIMIT)]
    ) as process:
        yield process


def _content(object_id: str, size: int) -> bytes:
    """Bytes that only ``object_id`` has: a torn or swapped object cannot pass for it."""
    seed = hashlib.sha256(object_id.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _http(
    port: int,
    method: str,
    target: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        connection.close()


def _raw(port: int, data: bytes) -> tuple[int, bytes]:
    """Sends raw bytes; the status and body of the answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _crc(data: bytes) -> str:
    return f"{crc32c(data):08x}"


ODD_IDS = [
    "plain",
    "photos/cat.jpg#0",
    "with space & ?query=1;x",
    "newline\nand\ttab",
    "ünïcødé/ß/日本",
    "%41 already%20encoded+plus",
    "../../etc/passwd",
    "x" * 1024,
]


def test_put_get_delete_list_scrub_and_health_through_a_remote_node(node: NodeProcess) -> None:
    with node.client() as remote:
        assert remote.ping()
        stored = {object_id: _content(object_id, 10 + n) for n, object_id in enumerate(ODD_IDS)}
        stored["empty"] = b""
        stored["largest"] = _content("largest", LIMIT)
        for object_id, data in stored.items():
            remote.put(object_id, data)
        remote.put("from-bytearray", bytearray(b"abc"))
        remote.put("from-view", memoryview(b"0123456789")[2:5])
        stored |= {"from-bytearray": b"abc", "from-view": b"234"}
        for object_id, data in stored.items():
            assert remote.get(object_id) == data
        remote.put("plain", b"replaced")
        stored["plain"] = b"replaced"
        assert remote.get("plain") == b"replaced"

        assert remote.object_ids() == sorted(stored)
        assert remote.object_ids("photos/") == ["photos/cat.jpg#0"]
        assert remote.object_ids("ünïcødé/") == ["ünïcødé/ß/日本"]
        assert remote.object_ids("nothing-here") == []
        assert list(remote.iter_object_ids(page_size=2)) == sorted(stored)
        assert list(remote.iter_object_ids("f", page_size=1)) == ["from-bytearray", "from-view"]

        with pytest.raises(KeyError):
            remote.get("missing")
        assert remote.delete("plain") is True
        assert remote.delete("plain") is False
        del stored["plain"]
        with pytest.raises(KeyError):
            remote.get("plain")

        with pytest.raises(InvalidArgument, match="non-empty"):
            remote.put("", b"x")
        with pytest.raises(InvalidArgument, match="at most 1024 bytes"):
            remote.get("x" * 1025)
        with pytest.raises(LimitExceeded, match="object-bytes-max"):
            remote.put("too-big", bytes(LIMIT + 1))  # refused before the body is sent
        with pytest.raises(KeyError):
            remote.get("too-big")

        health = remote.health()
        assert health["node_id"] == "node-0"
        assert health["objects"] == len(stored)
        assert health["live_bytes"] == sum(len(data) for data in stored.values())
        assert health["files"] >= 1
        assert health["bytes"] > health["live_bytes"]
        assert health["sync"] is False
        assert remote.scrub() == []

        # Rot one object's bytes in its data file: the node refuses to serve it.
        victim = b"the victim's bytes, unlike any other" * 4
        remote.put("victim", victim)
        for path in (node.data_dir / "data").glob("*.dat"):
            contents = path.read_bytes()
            if (at := contents.find(victim)) >= 0:
                with path.open("r+b") as file:
                    file.seek(at + 7)
                    file.write(b"X")
                break
        else:
            pytest.fail("the victim's bytes are in no data file")
        with pytest.raises(Corrupt, match="CRC-32C"):
            remote.get("victim")
        assert remote.scrub() == ["victim"]
        assert remote.get("photos/cat.jpg#0") == stored["photos/cat.jpg#0"]
        assert remote.connections_opened <= 2  # keep-alive: one connection did (almost) all


def test_a_client_for_another_node_id_is_refused(node: NodeProcess) -> None:
    with RemoteNode("node-9", node.host, node.port, connect_timeout=1) as wrong:
        with pytest.raises(NodeUnavailable, match=r"answered as data node 'node-0'"):
            wrong.get("anything")
        assert wrong.ping() is False
    with pytest.raises(InvalidArgument, match="node id"):
        RemoteNode("bad id\r\n", node.host, node.port)


def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(node: NodeProcess) -> None:
    port = node.port
    data = b"some bytes"

    def code_of(status: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        assert headers["x-sdi-node-id"] == "node-0"
        answer = json.loads(body)
        assert answer["code"] == headers["x-sdi-error"]
        assert answer["error"]
        return status, answer["code"]

    bad_crc = {"x-sdi-crc32c": f"{crc32c(data) ^ 1:08x}"}
    assert code_of(*_http(port, "PUT", "/objects/k", data, bad_crc)) == (400, "BadChecksum")
    assert _http(port, "GET", "/objects/k")[0] == 404  # nothing was stored
    assert code_of(*_http(port, "PUT", "/objects/k", data)) == (400, "MissingChecksum")
    for garbage in ["xyz", "1234567", "123456789", "0x123456", "12345678,12345678"]:
        headers = {"x-sdi-crc32c": garbage}
        assert code_of(*_http(port, "PUT", "/objects/k", data, headers)) == (
            400,
            "BadChecksumHeader",
        )
    good = {"x-sdi-crc32c": _crc(data)}
    for target in [
        "/objects/",
        "/objects/%zz",
        "/objects/%ff%fe",
        "/objects/a%2",
        "/objects/a?b=1",
    ]:
        assert code_of(*_http(port, "PUT", target, data, good)) == (400, "InvalidArgument")
    long_id = "/objects/" + "x" * 1025
    assert code_of(*_http(port, "GET", long_id)) == (400, "InvalidArgument")
    assert code_of(*_http(port, "GET", "/objects/" + "%C3%BC" * 600)) == (400, "InvalidArgument")
    assert _http(port, "GET", "/objects/" + "x" * 20_000)[0] == 431  # past the head limit
    assert code_of(*_http(port, "GET", "/nope")) == (404, "NoSuchPath")
    assert code_of(*_http(port, "GET", "/")) == (404, "NoSuchPath")
    status, headers, body = _http(port, "POST", "/objects/k", data)
    assert code_of(status, headers, body) == (405, "MethodNotAllowed")
    assert headers["allow"] == "GET, PUT, DELETE"
    assert code_of(*_http(port, "DELETE", "/health")) == (405, "MethodNotAllowed")
    assert code_of(*_http(port, "GET", "/scrub")) == (405, "MethodNotAllowed")
    for query in ["limit=abc", "limit=0", "limit=100001", "bogus=1", "prefix=a&prefix=b"]:
        assert code_of(*_http(port, "GET", f"/objects?{query}")) == (400, "InvalidArgument")
    assert code_of(*_http(port, "GET", "/objects?prefix=%ff")) == (400, "InvalidArgument")
    assert code_of(*_http(port, "GET", "/health?x=1")) == (400, "InvalidArgument")

    # Bodies past the limit, by Content-Length alone (nothing sent) and by chunks.
    head = f"PUT /objects/k HTTP/1.1\r\nx-sdi-crc32c: 00000000\r\ncontent-length: {LIMIT + 1}\r\n"
    assert _raw(port, head.encode() + b"\r\n")[0] == 413
    status, body = _raw(
        port,
        b"PUT /objects/k HTTP/1.1\r\ntransfer-encoding: chunked\r\nx-sdi-crc32c: 00000000\r\n\r\n"
        + f"{LIMIT:x}\r\n".encode()
        + bytes(LIMIT)
        + b"\r\n1\r\n",  # one byte too many: refused before it is sent
    )
    assert status == 413
    assert json.loads(body)["code"] == "EntityTooLarge"
    # Broken HTTP.
    assert _raw(port, b"garbage\r\n\r\n")[0] == 400
    assert _raw(port, b"GET /ping HTTP/1.1\r\nno colon here\r\n\r\n")[0] == 400
    assert _raw(port, b"PUT /objects/k HTTP/1.1\r\ncontent-length: -5\r\n\r\n")[0] == 400
    assert _raw(port, b"PUT /objects/k HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n")[0] == 501
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PUT /objects/k HTTP/1.1\r\ncontent-length: 100\r\n\r\nonly part")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # connects and leaves

    # A chunked PUT with the right CRC is fine; the server is alive and well.
    assert _http(port, "PUT", "/objects/k", iter([b"some ", b"bytes"]), good)[0] == 200
    assert node.running
    with node.client() as remote:
        assert remote.ping()
        assert remote.get("k") == data
        assert remote.object_ids() == ["k"]


def test_many_threads_share_one_remote_node(node: NodeProcess) -> None:
    threads, per_thread = 16, 40
    errors: list[BaseException] = []
    with node.client(pool_size=4) as remote:

        def work(worker: int) -> None:
            try:
                for n in range(per_thread):
                    object_id = f"t{worker:02d}/{n:03d}"
                    data = _content(object_id, (worker * 977 + n * 131) % 5000)
                    remote.put(object_id, data)
                    assert remote.get(object_id) == data
                    if n % 3 == 0:
                        assert remote.delete(object_id) is True
                        with pytest.raises(KeyError):
                            remote.get(object_id)
            except BaseException as error:
                errors.append(error)

        workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        assert errors == []
        expected = sorted(
            f"t{worker:02d}/{n:03d}"
            for worker in range(threads)
            for n in range(per_thread)
            if n % 3 != 0
        )
        assert remote.object_ids() == expected
        assert list(remote.iter_object_ids(page_size=50)) == expected
        assert list(remote.iter_object_ids("t07/", page_size=5)) == [
            object_id for object_id in expected if object_id.startswith("t07/")
        ]
        for object_id in expected[::25]:
            assert remote.get(object_id) == _content(object_id, len(remote.get(object_id)))
        assert remote.connections_opened <= 4


def test_kill_9_makes_calls_fail_fast_and_a_restart_serves_every_acknowledged_put(
    node: NodeProcess,
) -> None:
    with node.client(connect_timeout=1.0, read_timeout=5.0) as remote:
        for n in range(50):
            remote.put(f"k{n}", _content(f"k{n}", n * 50))
        port = node.port
        node.kill()
        for call in (lambda: remote.get("k1"), lambda: remote.put("k1", b"x"), remote.scrub):
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match=rf"node-0 at 127.0.0.1:{port}.*another node"):
                call()
            assert time.monotonic() - started < 1.0
        assert remote.ping() is False

        node.restart()
        assert node.port == port
        # The pooled connections died with the node: the same client just goes on.
        for n in range(50):
            assert remote.get(f"k{n}") == _content(f"k{n}", n * 50)
        assert remote.ping()


def test_a_hung_node_times_out(node: NodeProcess) -> None:
    with node.client(connect_timeout=0.5, read_timeout=0.5) as remote:
        remote.put("k", b"v")
        assert node.pid is not None
        os.kill(node.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match=r"did not answer GET .* within 0.5 s"):
                remote.get("k")
            assert 0.4 < time.monotonic() - started < 2.0
            assert remote.ping() is False
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert remote.get("k") == b"v"


def test_sigkill_during_a_put_storm_loses_no_acknowledged_put(tmp_path: Path) -> None:
    with NodeProcess("node-0", tmp_path / "node", sync=True) as node:
        acknowledged: list[str] = []
        unexpected: list[BaseException] = []
        stop = threading.Event()
        with node.client(read_timeout=10) as remote:

            def storm(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    object_id = f"w{worker}/{n:05d}"
                    try:
                        remote.put(object_id, _content(object_id, 100 + (n * 997) % 30_000))
                    except NodeUnavailable:
                        return
                    except BaseException as error:
                        unexpected.append(error)
                        return
                    acknowledged.append(object_id)
                    n += 1

            workers = [threading.Thread(target=storm, args=(index,)) for index in range(6)]
            for thread in workers:
                thread.start()
            time.sleep(0.6)
            node.kill()
            stop.set()
            for thread in workers:
                thread.join()
            assert unexpected == []
            assert len(acknowledged) > 20

            node.restart()
            for object_id in acknowledged:
                data = remote.get(object_id)
                assert data == _content(object_id, len(data)), object_id
                assert len(data) == 100 + (int(object_id.split("/")[1]) * 997) % 30_000
            # Puts in flight at the kill are there whole or not at all.
            stored = remote.object_ids()
            assert set(acknowledged) <= set(stored)
            assert len(stored) <= len(acknowledged) + 6
            for object_id in set(stored) - set(acknowledged):
                data = remote.get(object_id)
                assert len(data) == 100 + (int(object_id.split("/")[1]) * 997) % 30_000
                assert data == _content(object_id, len(data))
            assert remote.scrub() == []


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    node = NodeProcess("node-0", tmp_path / "node", sync=False).start()
    try:
        body = _content("in-flight", 200_000)
        head = (
            f"PUT /objects/in-flight HTTP/1.1\r\ncontent-length: {len(body)}\r\n"
            f"x-sdi-crc32c: {_crc(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(head.encode() + body[:1000])
            time.sleep(0.3)  # the node has the head: the request is in flight
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert node.running  # waiting for the rest of the body
            sock.sendall(body[1000:])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert node.stop() == 0
        output = "".join(node.output)
        assert output.count("listening on") == 1
        assert f"listening on http://127.0.0.1:{node.port}" in output
        assert "stopped cleanly" in output
        node.restart()
        with node.client() as remote:
            assert remote.get("in-flight") == body
        assert node.stop() == 0
    finally:
        node.kill()


def test_spawn_nodes_starts_a_cluster_in_parallel(tmp_path: Path) -> None:
    nodes = spawn_nodes(3, tmp_path, sync=False)
    try:
        assert [node.node_id for node in nodes] == ["node-0", "node-1", "node-2"]
        assert len({node.port for node in nodes}) == 3
        for node in nodes:
            assert node.data_dir == tmp_path / node.node_id
            with node.client() as remote:
                remote.put("where", node.node_id.encode())
        for node in nodes:
            with node.client() as remote:
                assert remote.get("where") == node.node_id.encode()
                assert remote.health()["node_id"] == node.node_id
        with RemoteNode("node-1", "127.0.0.1", nodes[0].port) as confused:
            assert confused.ping() is False
    finally:
        assert [node.stop() for node in nodes] == [0, 0, 0]


def test_start_failures_say_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 1.*cannot serve"):
        NodeProcess("node-0", blocker, sync=False).start()
    with NodeProcess("node-0", tmp_path / "one", sync=False) as first:
        taken = NodeProcess("node-1", tmp_path / "two", port=first.port)
        with pytest.raises(RuntimeError, match=r"(?s)node-1.*address already in use"):
            taken.start()
    with pytest.raises(InvalidArgument, match="node id"):
        NodeProcess("no spaces", tmp_path)
    help_text = subprocess.run(
        [sys.executable, "-m", "sdi.objstore.nodeserver", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--node-id" in help_text
    assert "--no-sync" in help_text
    refused = subprocess.run(
        [sys.executable, "-m", "sdi.objstore.nodeserver", "--node-id", "a b", "--data-dir", "x"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "node id" in refused.stderr


def test_a_node_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sdi.objstore.nodeserver import NodeProcess\n"
            f"node = NodeProcess('node-0', {str(tmp_path)!r}, sync=False).start()\n"
            "print(node.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    with parent.stdout:
        pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait()

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        return state == "Z"

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not gone():
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the node outlived the process that started it")
