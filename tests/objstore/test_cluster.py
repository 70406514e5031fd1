"""The cluster store over real data nodes: round trips, lost and rotten pieces,
repair, garbage collection, concurrency, and how placement spreads."""

from __future__ import annotations

import hashlib
import itertools
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.errors import Closed, Corrupt, InvalidArgument
from sdi.objstore.cluster import ClusterStore
from sdi.objstore.nodes import LocalNode
from sdi.objstore.placement import (
    ClusterMap,
    NotEnoughNodes,
    Scheme,
    parse_shard_id,
    rendezvous,
    shard_id,
)
from sdi.testing.s3 import SwitchableNode

EC = Scheme.parse("ec-4+2")
R3 = Scheme.parse("replicas-3")


class Cluster:
    """n switchable nodes and a store over them, in a directory."""

    def __init__(self, root: Path, n: int = 6, *, workers: int | None = None) -> None:
        self.root = root
        self.nodes = {
            f"node-{i}": SwitchableNode(LocalNode(f"node-{i}", root / f"node-{i}", sync=False))
            for i in range(n)
        }
        self.store = ClusterStore(
            list(self.nodes.values()), root / "placement.sqlite", workers=workers, retry_after_s=0
        )

    def add(self, node_id: str) -> SwitchableNode:
        node = SwitchableNode(LocalNode(node_id, self.root / node_id, sync=False))
        self.nodes[node_id] = node
        self.store.cluster.add(node)
        return node

    def holder(self, data_id: str, index: int) -> SwitchableNode:
        node_id = self.store.stat(data_id).shards[index].node_id
        assert node_id is not None
        return self.nodes[node_id]

    def rot(self, data_id: str, index: int) -> None:
        """Flips a byte of the piece inside its node's data file (or deletes an empty one)."""
        node = self.holder(data_id, index).node
        object_id = shard_id(data_id, index)
        info = node.store.stat(object_id)
        if info.size == 0:
            node.delete(object_id)
            return
        path = node.store.path / "data" / f"{info.file_id:08d}.dat"
        with open(path, "r+b") as file:
            file.seek(info.offset + info.size // 2)
            byte = file.read(1)
            file.seek(info.offset + info.size // 2)
            file.write(bytes([byte[0] ^ 0x5A]))

    def lose(self, data_id: str, index: int, how: str) -> None:
        if how == "down":
            self.holder(data_id, index).down = True
        elif how == "rot":
            self.rot(data_id, index)
        else:
            assert self.holder(data_id, index).node.delete(shard_id(data_id, index))

    def all_up(self) -> None:
        for node in self.nodes.values():
            node.down = False

    def check_consistent(self) -> None:
        """Every node holds (intact) what the placement says, and nothing else."""
        expected: dict[str, set[str]] = {node_id: set() for node_id in self.nodes}
        for data_id in self.store.data_ids():
            placement = self.store.stat(data_id)
            nodes = [shard.node_id for shard in placement.shards]
            assert None not in nodes
            assert len(set(nodes)) == len(nodes), "two pieces of one object on one node"
            for shard in placement.shards:
                assert shard.present
                assert shard.node_id is not None
                expected[shard.node_id].add(shard_id(data_id, shard.index))
        for node_id, node in self.nodes.items():
            if node_id not in self.store.cluster:
                continue
            assert node.scrub() == []
            assert set(node.object_ids()) == expected[node_id]

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    yield made
    made.close()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- schemes ---------------------------------------------------------------------------


def test_schemes_parse_and_print_back() -> None:
    for text in ["replicas-1", "replicas-2", "replicas-3", "ec-4+2", "ec-10+4", "ec-1+1"]:
        assert str(Scheme.parse(text)) == text
    assert Scheme.parse("ec-4+2") == Scheme("ec", 4, 2)
    assert Scheme.parse("replicas-3") == Scheme("replicas", 1, 2)
    assert (R3.slots, R3.tolerates, R3.write_quorum) == (3, 2, 2)
    assert (EC.slots, EC.tolerates, EC.write_quorum) == (6, 2, 5)
    assert Scheme.parse("replicas-1").write_quorum == 1
    assert EC.shard_size(10) == 3
    assert R3.shard_size(10) == 10
    bad = ["", "raid5", "replicas-0", "replicas-10", "ec-0+2", "ec-4+0", "ec-30+3", "ec-4-2"]
    for text in bad:
        with pytest.raises(InvalidArgument, match=r"replicas-N .* ec-K\+M"):
            Scheme.parse(text)
    with pytest.raises(InvalidArgument):
        Scheme("ec", 4, 0)


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["replicas-1", "replicas-2", "replicas-3", "ec-4+2", "ec-3+1"])
@pytest.mark.parametrize("size", [0, 1, 1001, (1 << 20) + 3])
def test_round_trip(cluster: Cluster, scheme: str, size: int) -> None:
    data = payload(size, size)
    store = cluster.store
    store.put("obj", data, Scheme.parse(scheme))
    assert store.get("obj") == data
    placement = store.stat("obj")
    assert (str(placement.scheme), placement.size, placement.state) == (scheme, size, "stored")
    assert len(set(placement.nodes)) == Scheme.parse(scheme).slots
    for first, length in [(0, size), (0, 1), (size // 3, size // 2 + 7), (size - 1, 9), (size, 5)]:
        start = max(first, 0)
        assert store.get_range("obj", start, length) == data[start : start + length]
    assert list(store.data_ids()) == ["obj"]
    store.delete("obj")
    with pytest.raises(KeyError):
        store.get("obj")
    assert all(node.object_ids() == [] for node in cluster.nodes.values())


def test_memoryview_input_and_reopen(tmp_path: Path) -> None:
    made = Cluster(tmp_path)
    data = bytearray(payload(300_001, 3))
    made.store.put("a", memoryview(data)[1:], EC)
    made.store.put("b", bytes(data), R3)
    made.close()
    again = Cluster(tmp_path)
    try:
        assert again.store.get("a") == bytes(data[1:])
        assert again.store.get("b") == bytes(data)
        assert sorted(again.store.data_ids()) == ["a", "b"]
    finally:
        again.close()


def test_misuse_raises_sdi_errors(cluster: Cluster) -> None:
    store = cluster.store
    store.put("x", b"abc", EC)
    with pytest.raises(InvalidArgument, match="write-once"):
        store.put("x", b"abd", EC)
    with pytest.raises(InvalidArgument, match="Scheme"):
        store.put("y", b"abc", "ec-4+2")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="non-empty"):
        store.put("", b"abc", EC)
    with pytest.raises(InvalidArgument, match="negative"):
        store.get_range("x", -1, 2)
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store.stat("nope")
    store.delete("nope")  # nothing to do
    with pytest.raises(InvalidArgument):
        ClusterStore([], cluster.root / "other.sqlite")
    store.close()
    with pytest.raises(Closed):
        store.get("x")


# --- lost and rotten pieces ------------------------------------------------------------

HOW = st.sampled_from(["down", "rot", "missing"])
COUNTER = itertools.count()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(min_size=0, max_size=3000),
    lost=st.dictionaries(st.integers(0, 5), HOW, max_size=3),
    window=st.tuples(st.integers(0, 3100), st.integers(0, 3100)),
)
def test_erasure_coded_reads_survive_m_losses_and_never_serve_wrong_bytes(
    cluster: Cluster, data: bytes, lost: dict[int, str], window: tuple[int, int]
) -> None:
    store = cluster.store
    data_id = f"obj-{next(COUNTER)}"
    store.put(data_id, data, EC)
    for index, how in lost.items():
        cluster.lose(data_id, index, how)
    start, length = window
    expected = data[start : start + length]
    if len(lost) <= EC.tolerates:
        assert store.get(data_id) == data
        assert store.get_range(data_id, start, length) == expected
        if any(index < EC.k for index in lost):
            assert data_id in store.damaged()
    else:
        with pytest.raises(Corrupt, match="cannot be read"):
            store.get(data_id)
        try:
            got = store.get_range(data_id, start, length)
        except Corrupt:
            pass
        else:  # the range lies in intact data shards
            assert got == expected
    cluster.all_up()
    report = store.repair()
    if sum(how != "down" for how in lost.values()) <= EC.tolerates:
        assert report.lost == []
        cluster.check_consistent()
        assert store.get(data_id) == data
    else:
        assert report.lost == [data_id]
        store.delete(data_id)
        cluster.check_consistent()


def test_a_range_reads_only_the_data_shards_that_cover_it(cluster: Cluster) -> None:
    data = payload(4000, 9)  # shards of 1000 bytes
    cluster.store.put("obj", data, EC)
    for index in [1, 2, 3]:  # more than m lost: the whole object is gone...
        cluster.lose("obj", index, "missing")
    with pytest.raises(Corrupt):
        cluster.store.get("obj")
    # ...but shard 0 alone still serves the ranges inside it, without reconstruction.
    assert cluster.store.get_range("obj", 10, 900) == data[10:910]
    with pytest.raises(Corrupt):
        cluster.store.get_range("obj", 990, 20)
    cluster.store.put("other", data, EC)
    cluster.lose("other", 0, "rot")
    assert cluster.store.get_range("other", 10, 900) == data[10:910]  # rebuilt from parity
    assert cluster.store.damaged() == {"obj", "other"}
    report = cluster.store.repair()
    assert (report.lost, report.shards_rebuilt) == (["obj"], 1)
    assert cluster.store.damaged() == set()


@pytest.mark.parametrize("how", ["down", "rot", "missing"])
def test_replicas_survive_any_two_of_three_lost(tmp_path: Path, how: str) -> None:
    made = Cluster(tmp_path)
    try:
        data = payload(5000, 1)
        for n, lost in enumerate(itertools.combinations(range(3), 2)):
            data_id = f"r{n}"
            made.store.put(data_id, data, R3)
            for index in lost:
                made.lose(data_id, index, how)
            assert made.store.get(data_id) == data
            assert made.store.get_range(data_id, 4990, 100) == data[4990:]
            made.all_up()
        made.store.put("all-gone", data, R3)
        for index in range(3):
            made.lose("all-gone", index, how)
        with pytest.raises(Corrupt, match="0 good pieces of the 1 needed"):
            made.store.get("all-gone")
    finally:
        made.close()


def test_a_read_skips_a_down_node_and_uses_it_again_once_it_answers(cluster: Cluster) -> None:
    data = payload(10_000, 2)
    cluster.store.put("obj", data, EC)
    node = cluster.holder("obj", 0)
    node.down = True
    assert cluster.store.get("obj") == data
    assert not cluster.store.cluster.is_up(node.node_id)
    node.down = False
    assert cluster.store.get("obj") == data
    assert cluster.store.cluster.is_up(node.node_id)


def test_cluster_map_backs_off_before_pinging_a_failed_node_again() -> None:
    now = [100.0]
    alive = [False]

    class Pinged:
        node_id = "n0"
        pings = 0

        def ping(self) -> bool:
            Pinged.pings += 1
            return alive[0]

    cluster = ClusterMap([Pinged()], retry_after_s=1.0, retry_max_s=4.0, clock=lambda: now[0])  # type: ignore[list-item]
    cluster.mark_down("n0")
    assert not cluster.is_up("n0")
    assert Pinged.pings == 0  # still backing off
    now[0] += 1.0
    assert not cluster.is_up("n0")  # pinged, no answer: backs off 2 s now
    assert Pinged.pings == 1
    state = cluster.states()[0]
    assert (state.up, state.failures, state.retry_at) == (False, 2, 103.0)
    assert state.last_failure is not None
    now[0] += 1.5
    assert not cluster.is_up("n0")
    assert Pinged.pings == 1
    alive[0] = True
    now[0] += 0.5
    assert cluster.is_up("n0")
    assert cluster.states()[0].failures == 0


# --- placement when nodes are down -----------------------------------------------------


def test_fewer_nodes_than_a_write_quorum_refuse_and_write_nothing(cluster: Cluster) -> None:
    for node_id in ["node-0", "node-1"]:
        cluster.nodes[node_id].down = True
    with pytest.raises(NotEnoughNodes, match="needs at least 5"):
        cluster.store.put("obj", b"data", EC)
    assert cluster.store.table.get("obj") is None
    cluster.store.put("r", b"data", R3)  # replicas-3 needs 2
    assert cluster.store.get("r") == b"data"
    for node_id in ["node-2", "node-3", "node-4"]:
        cluster.nodes[node_id].down = True
    with pytest.raises(NotEnoughNodes, match="needs at least 2"):
        cluster.store.put("r2", b"data", R3)
    cluster.all_up()
    assert [i for i in cluster.store.data_ids()] == ["r"]
    assert sum(len(node.object_ids()) for node in cluster.nodes.values()) == 3


def test_with_a_quorum_a_put_is_degraded_and_repair_completes_it(cluster: Cluster) -> None:
    cluster.nodes["node-4"].down = True
    data = payload(9999, 4)
    cluster.store.put("obj", data, EC)
    placement = cluster.store.stat("obj")
    missing = [shard for shard in placement.shards if not shard.present]
    assert len(missing) == 1
    assert missing[0].node_id == "node-4"  # found down by the put: left for repair
    assert cluster.store.get("obj") == data
    cluster.store.put("obj2", data, EC)  # known down now: not placed at all
    missing = [shard for shard in cluster.store.stat("obj2").shards if not shard.present]
    assert len(missing) == 1
    assert missing[0].node_id is None
    assert "node-4" not in cluster.store.stat("obj2").nodes
    assert cluster.store.get("obj") == data
    cluster.all_up()
    report = cluster.store.repair()
    assert (report.shards_rebuilt, report.lost) == (2, [])
    assert "node-4" in cluster.store.stat("obj").nodes
    assert "node-4" in cluster.store.stat("obj2").nodes
    assert cluster.store.get("obj2") == data
    cluster.check_consistent()


def test_a_node_failing_during_a_put_is_replaced_by_a_spare(tmp_path: Path) -> None:
    made = Cluster(tmp_path, n=8)
    try:
        chosen = made.store.cluster.choose("obj", 6)
        victim = made.nodes[chosen[2]]
        calls = victim.put

        def fail(object_id: str, data: bytes | bytearray | memoryview) -> None:
            victim.down = True  # answers pings until the put, then dies
            calls(object_id, data)

        victim.put = fail  # type: ignore[method-assign]
        data = payload(70_000, 5)
        made.store.put("obj", data, EC)
        placement = made.store.stat("obj")
        assert victim.node_id not in placement.nodes
        assert all(shard.present for shard in placement.shards)
        assert len(set(placement.nodes)) == 6
        assert made.store.get("obj") == data
    finally:
        made.close()


# --- repair ----------------------------------------------------------------------------


def test_repair_restores_missing_and_rotten_pieces_in_place(cluster: Cluster) -> None:
    objects = {f"o{n}": payload(1000 + 37 * n, n) for n in range(12)}
    for n, (data_id, data) in enumerate(objects.items()):
        cluster.store.put(data_id, data, EC if n % 2 else R3)
    rng = random.Random(7)
    damaged = 0
    for n, data_id in enumerate(objects):
        slots = 6 if n % 2 else 3
        for index in rng.sample(range(slots), 2):
            cluster.lose(data_id, index, rng.choice(["rot", "missing"]))
            damaged += 1
    seen: list[tuple[int, int]] = []
    report = cluster.store.repair(progress=lambda done, total: seen.append((done, total)))
    assert report.lost == []
    assert report.shards_rebuilt == damaged
    assert report.shards_moved == 0
    assert report.objects_checked == report.objects_repaired == len(objects)
    assert seen[-1] == (12, 12)
    cluster.check_consistent()
    for data_id, data in objects.items():
        assert cluster.store.get(data_id) == data
    assert cluster.store.repair().shards_rebuilt == 0


def test_repair_moves_pieces_off_a_permanently_gone_node(tmp_path: Path) -> None:
    made = Cluster(tmp_path, n=6)
    try:
        objects = {f"o{n}": payload(5000 + n, n) for n in range(10)}
        for n, (data_id, data) in enumerate(objects.items()):
            made.store.put(data_id, data, EC if n % 2 else R3)
        gone = made.nodes["node-3"]
        gone.down = True
        made.store.cluster.remove("node-3")
        made.add("node-6")  # the replacement
        report = made.store.repair()
        assert report.lost == []
        assert report.shards_moved > 0
        for data_id, data in objects.items():
            assert "node-3" not in made.store.stat(data_id).nodes
            assert made.store.get(data_id) == data
        for n, data_id in enumerate(objects):
            if n % 2:  # ec-4+2 over six nodes: the replacement holds a shard of each
                assert "node-6" in made.store.stat(data_id).nodes
        made.check_consistent()
    finally:
        made.close()


def test_repair_onto_another_node_while_one_is_down(tmp_path: Path) -> None:
    made = Cluster(tmp_path, n=7)
    try:
        data = payload(40_000, 8)
        made.store.put("obj", data, EC)
        down = made.holder("obj", 1)
        down.down = True
        report = made.store.repair()
        assert (report.shards_rebuilt, report.shards_moved) == (1, 1)
        placement = made.store.stat("obj")
        assert down.node_id not in placement.nodes
        assert len(set(placement.nodes)) == 6
        down.down = False
        # The old piece on the node that came back is garbage now.
        assert made.store.collect_garbage(older_than_s=60) == 1
        made.check_consistent()
        assert made.store.get("obj") == data
    finally:
        made.close()


# --- garbage ---------------------------------------------------------------------------


def test_collect_garbage_removes_orphans_and_crashed_puts_and_nothing_live(
    cluster: Cluster,
) -> None:
    store = cluster.store
    live = {f"live{n}": payload(3000 + n, n) for n in range(6)}
    for n, (data_id, data) in enumerate(live.items()):
        store.put(data_id, data, EC if n % 2 else R3)
    nodes = list(cluster.nodes.values())
    # Orphans: pieces of an unknown id, and a stray copy of a live piece on a wrong node.
    nodes[0].put(shard_id("ghost", 0), b"boo")
    nodes[1].put(shard_id("ghost", 3), b"boo")
    wrong = next(n for n in nodes if n.node_id not in store.stat("live0").nodes)
    wrong.put(shard_id("live0", 0), b"stray")
    # A crash mid-put an hour ago: its row says 'writing' and two pieces made it.
    old_ms = time.time_ns() // 1_000_000 - 3_600_000
    store.table.begin_put(
        "crashed", EC, 8, 2, [("node-0", 0), ("node-1", 0), *[(None, 0)] * 4], now_ms=old_ms
    )
    nodes[0].put(shard_id("crashed", 0), b"ab")
    nodes[1].put(shard_id("crashed", 1), b"cd")
    # A put in flight right now: young 'writing' row, one piece written. Kept.
    store.table.begin_put("inflight", R3, 2, 2, [("node-2", 0), (None, 0), (None, 0)])
    nodes[2].put(shard_id("inflight", 0), b"ok")
    # Not a piece id: not ours, never touched.
    nodes[3].put("someone-elses", b"x")
    with pytest.raises(KeyError):
        store.get("crashed")
    assert "crashed" not in list(store.data_ids())

    removed = store.collect_garbage(older_than_s=600)
    assert removed == 1 + 2 + 1 + 2  # the crashed row, ghost pieces, stray copy, crashed pieces
    assert store.table.get("crashed") is None
    assert store.table.get("inflight") is not None
    assert nodes[2].get(shard_id("inflight", 0)) == b"ok"
    assert nodes[3].get("someone-elses") == b"x"
    for data_id, data in live.items():
        assert store.get(data_id) == data
    assert store.collect_garbage(older_than_s=600) == 0
    # Once the in-flight put is older than the age, it goes too.
    assert store.collect_garbage(older_than_s=0) == 2
    nodes[3].delete("someone-elses")
    cluster.check_consistent()


def test_delete_with_a_node_down_leaves_garbage_that_gc_removes(cluster: Cluster) -> None:
    cluster.store.put("obj", payload(4000), EC)
    down = cluster.holder("obj", 2)
    down.down = True
    cluster.store.delete("obj")
    with pytest.raises(KeyError):
        cluster.store.get("obj")
    down.down = False
    assert down.object_ids() == [shard_id("obj", 2)]
    assert cluster.store.collect_garbage(older_than_s=60) == 1
    assert all(node.object_ids() == [] for node in cluster.nodes.values())


# --- crashes ---------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from sdi.objstore.cluster import ClusterStore
    from sdi.objstore.nodes import LocalNode
    from sdi.objstore.placement import Scheme
    root = Path(sys.argv[1])
    nodes = [LocalNode(f"node-{i}", root / f"node-{i}", sync=False) for i in range(6)]
    store = ClusterStore(nodes, root / "placement.sqlite")
    n = 0
    while True:
        data = hashlib.sha256(b"%d" % n).digest() * (1 + n % 700)
        store.put(f"obj-{n}", data, Scheme.parse("ec-4+2" if n % 2 else "replicas-3"))
        print(n, flush=True)
        n += 1
    """
)


def written(n: int) -> bytes:
    return hashlib.sha256(b"%d" % n).digest() * (1 + n % 700)


def test_sigkill_during_puts_leaves_acknowledged_objects_and_only_garbage(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    acked: set[int] = set()
    deadline = time.monotonic() + 1.0
    for line in process.stdout:
        acked.add(int(line))
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    acked.update(int(line) for line in process.stdout.read().split())
    process.stdout.close()
    assert acked
    made = Cluster(tmp_path)
    try:
        stored = set(made.store.data_ids())
        assert {f"obj-{n}" for n in acked} <= stored
        for data_id in stored:  # every stored object reads back whole
            assert made.store.get(data_id) == written(int(data_id[4:]))
        made.store.collect_garbage(older_than_s=0)  # the put cut short, if any
        assert made.store.table.count("writing") == 0
        assert set(made.store.data_ids()) == stored
        made.check_consistent()
    finally:
        made.close()


# --- concurrency -----------------------------------------------------------------------


def test_threads_put_get_and_delete_at_once(cluster: Cluster) -> None:
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            mine = {}
            for n in range(15):
                data_id = f"t{t}-{n}"
                data = payload(1 + 997 * n + t, t * 100 + n)
                cluster.store.put(data_id, data, EC if (t + n) % 2 else R3)
                mine[data_id] = data
                assert cluster.store.get(data_id) == data
                if n % 5 == 4:
                    cluster.store.delete(data_id)
                    del mine[data_id]
            for data_id, data in mine.items():
                assert cluster.store.get_range(data_id, 1, 500) == data[1:501]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    gc = threading.Thread(target=lambda: cluster.store.collect_garbage(older_than_s=600))
    gc.start()
    for thread in [*threads, gc]:
        thread.join()
    assert errors == []
    assert len(list(cluster.store.data_ids())) == 8 * 12
    cluster.check_consistent()


# --- how placement spreads -------------------------------------------------------------


def test_placement_spreads_evenly_over_nodes() -> None:
    nodes = [f"node-{n}" for n in range(10)]
    cluster = ClusterMap.of_ids(nodes)
    rng = random.Random(42)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(6000)]
    for slots in [1, 3, 6]:
        counts = Counter(node for data_id in ids for node in cluster.choose(data_id, slots))
        expected = len(ids) * slots / len(nodes)
        chi_square = sum((counts[node] - expected) ** 2 / expected for node in nodes)
        # 9 degrees of freedom: P(chi2 > 27.9) = 0.001 for a truly uniform choice.
        assert chi_square < 27.9, (slots, counts)
    for data_id in ids[:200]:
        chosen = cluster.choose(data_id, 6)
        assert len(set(chosen)) == 6
        assert chosen == rendezvous(data_id, reversed(nodes))[:6]


@pytest.mark.parametrize("slots", [1, 3, 6])
def test_adding_a_node_moves_about_one_in_n_pieces_all_to_it(slots: int) -> None:
    before = ClusterMap.of_ids([f"node-{n}" for n in range(10)])
    after = ClusterMap.of_ids([f"node-{n}" for n in range(11)])
    rng = random.Random(1)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(5000)]
    moved = 0
    for data_id in ids:
        old, new = set(before.choose(data_id, slots)), set(after.choose(data_id, slots))
        assert new - old <= {"node-10"}
        moved += len(new - old)
    fraction = moved / (len(ids) * slots)
    assert abs(fraction - 1 / 11) < 0.02, fraction


def test_shard_ids_map_back_to_data_ids() -> None:
    assert parse_shard_id(shard_id("a#b", 12)) == ("a#b", 12)
    for bad in ["plain", "#1", "x#", "x#01", "x#-1", "x#a"]:
        assert parse_shard_id(bad) is None
