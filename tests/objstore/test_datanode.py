"""A data node's packed data files and SQLite index: model tests, crashes, compaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.errors import Corrupt, InvalidArgument
from sdi.objstore.datanode import DataNode


def test_objects_pack_into_files_that_seal_at_the_size_limit(tmp_path: Path) -> None:
    with DataNode(tmp_path, file_bytes_max=4096, sync=False) as node:
        for n in range(20):
            node.put(f"obj-{n:02d}", bytes([n]) * 700)
        files = node.files()
        assert len(files) > 3
        assert [f.state for f in files[:-1]] == ["sealed"] * (len(files) - 1)
        assert files[-1].state == "active"
        assert all(f.size <= 4096 for f in files)
        for n in range(20):
            assert node.get(f"obj-{n:02d}") == bytes([n]) * 700
        assert list(node.object_ids("obj-1")) == [f"obj-1{n}" for n in range(10)]
        assert node.get_range("obj-05", 690, 100) == bytes([5]) * 10
        assert node.get_range("obj-05", 700, 10) == b""


def test_overwrite_delete_and_bad_input(tmp_path: Path) -> None:
    with DataNode(tmp_path) as node:
        node.put("k", b"one")
        node.put("k", b"two!")
        assert node.get("k") == b"two!"
        assert node.files()[-1].live_bytes == 4
        assert node.delete("k")
        assert not node.delete("k")
        with pytest.raises(KeyError):
            node.get("k")
        with pytest.raises(InvalidArgument, match="non-empty"):
            node.put("", b"x")
        with pytest.raises(InvalidArgument, match="at most 1024 bytes"):
            node.put("x" * 1025, b"x")
        node.put("empty", b"")
        assert node.get("empty") == b""


def test_a_rotten_object_is_detected_not_served(tmp_path: Path) -> None:
    with DataNode(tmp_path) as node:
        info = node.put("victim", b"precious data")
    path = tmp_path / "data" / f"{info.file_id:08d}.dat"
    with open(path, "r+b") as file:
        file.seek(info.offset + 3)
        file.write(b"X")
    with DataNode(tmp_path) as node:
        with pytest.raises(Corrupt, match="CRC-32C"):
            node.get("victim")
        node.put("healthy", b"fine")
        assert node.scrub() == ["victim"]
        node.put("victim", b"rebuilt")
        assert node.scrub() == []


def test_compaction_reclaims_dead_files_and_keeps_live_objects(tmp_path: Path) -> None:
    with DataNode(tmp_path, file_bytes_max=4096, sync=False) as node:
        for n in range(30):
            node.put(f"o{n}", bytes([n]) * 500)
        for n in range(30):
            if n % 4:
                node.delete(f"o{n}")
        before = node.files()
        report = node.compact()
        assert report.files_removed > 0
        assert report.bytes_freed > 0
        after = node.files()
        assert sum(f.size for f in after) < sum(f.size for f in before)
        for n in range(0, 30, 4):
            assert node.get(f"o{n}") == bytes([n]) * 500
        assert list(node.object_ids()) == sorted(f"o{n}" for n in range(0, 30, 4))
    assert len(list((tmp_path / "data").glob("*.dat"))) == len(after)


@pytest.mark.parametrize("step", ["copied", "synced", "committed"])
def test_compaction_interrupted_at_any_step_loses_nothing(tmp_path: Path, step: str) -> None:
    with DataNode(tmp_path, file_bytes_max=4096, sync=False) as node:
        for n in range(30):
            node.put(f"o{n}", bytes([n]) * 500)
        for n in range(30):
            if n % 3:
                node.delete(f"o{n}")

        def crash(at: str) -> None:
            if at == step:
                raise RuntimeError("power cut")

        with pytest.raises(RuntimeError, match="power cut"):
            node.compact(_crash_at=crash)
    with DataNode(tmp_path, file_bytes_max=4096, sync=False) as node:
        assert list(node.object_ids()) == sorted(f"o{n}" for n in range(0, 30, 3))
        for n in range(0, 30, 3):
            assert node.get(f"o{n}") == bytes([n]) * 500
        node.compact()
        node.put("after", b"still works")
        assert node.get("after") == b"still works"
        for n in range(0, 30, 3):
            assert node.get(f"o{n}") == bytes([n]) * 500


WRITER = textwrap.dedent(
    """
    import sys
    from sdi.objstore.datanode import DataNode
    node = DataNode(sys.argv[1], file_bytes_max=1 << 16)
    n = 0
    while True:
        node.put(f"obj-{n:06d}", (b"%06d" % n) * 50)
        print(n, flush=True)
        n += 1
        if n % 7 == 0:
            print(f"deleting {n - 3}", flush=True)
            node.delete(f"obj-{n - 3:06d}")
            print(f"deleted {n - 3}", flush=True)
        if n % 50 == 0:
            node.compact(live_ratio_below=0.99)
    """
)


def _take(line: str, acked: set[int], deleted: set[int], deleting: set[int]) -> None:
    """Sorts one line the writer printed into the set it belongs to."""
    if line.startswith("deleting"):
        deleting.add(int(line.split()[1]))
    elif line.startswith("deleted"):
        deleted.add(int(line.split()[1]))
    elif line.strip():
        acked.add(int(line))


def test_sigkill_during_a_put_storm_keeps_every_acknowledged_object(tmp_path: Path) -> None:
    for round_ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        acked: set[int] = set()
        deleted: set[int] = set()
        deleting: set[int] = set()  # a kill between the delete and its "deleted": either way
        deadline = time.monotonic() + 0.6 + 0.3 * round_

        for line in process.stdout:
            _take(line, acked, deleted, deleting)
            if time.monotonic() > deadline:
                break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # What it printed before it died is in the pipe still: a delete may be among it.
        for line in process.stdout.read().splitlines():
            if line.startswith("deleting"):
                _take(line, acked, deleted, deleting)
        process.stdout.close()
        with DataNode(tmp_path, file_bytes_max=1 << 16) as node:
            for n in acked - deleting:
                assert node.get(f"obj-{n:06d}") == (b"%06d" % n) * 50
            for n in deleted:
                assert not node.exists(f"obj-{n:06d}")
        # The next round's writer starts over from 0: clear the directory.
        for entry in sorted(tmp_path.rglob("*"), reverse=True):
            entry.unlink() if entry.is_file() else entry.rmdir()
        assert acked


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 9), st.binary(max_size=700)),
        st.tuples(st.just("delete"), st.integers(0, 9), st.just(b"")),
        st.tuples(st.just("compact"), st.just(0), st.just(b"")),
        st.tuples(st.just("reopen"), st.just(0), st.just(b"")),
    ),
    max_size=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_matches_a_dictionary(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    path = tmp_path_factory.mktemp("node")
    model: dict[str, bytes] = {}
    node = DataNode(path, file_bytes_max=4096, sync=False)
    try:
        for op, key, data in ops:
            name = f"k{key}"
            if op == "put":
                node.put(name, data)
                model[name] = data
            elif op == "delete":
                assert node.delete(name) == (name in model)
                model.pop(name, None)
            elif op == "compact":
                node.compact(live_ratio_below=0.9)
            else:
                node.close()
                node = DataNode(path, file_bytes_max=4096, sync=False)
            assert list(node.object_ids()) == sorted(model)
        for name, data in model.items():
            assert node.get(name) == data
        live = sum(f.live_bytes for f in node.files())
        assert live == sum(len(data) for data in model.values())
    finally:
        node.close()
