"""Durability schemes: 4+2 erasure coding beside 3x replication and a plain file.

The trade-off of chapter 9, measured on the same bytes in one run. Two
cluster stores (:class:`sdi.objstore.cluster.ClusterStore`) each over six
in-process data nodes (:class:`sdi.objstore.nodes.LocalNode`, ``sync`` on,
as ``sdi serve s3`` runs them) in one temporary directory, so every
node shares one disk: one stores every object ``ec-4+2``, the other
``replicas-3``. The baseline is a plain file per object in the same
directory. One client thread, one object a call, a fresh id each; the
figures are data bytes per second (the object's bytes, not what is
written), medians of rounds in which the candidates take turns.

* **PUT**: ``ClusterStore.put`` (returns once every piece is synced on its
  node and the placement row is committed twice, 'writing' then 'stored'),
  beside ``open``/``write``/``fsync``/``close`` of a new file.
* **GET**: ``ClusterStore.get`` of each object just put (the pieces most
  likely in the page cache), beside ``open``/``read`` of each file. Every
  first GET must return exactly the bytes put, or the run fails.
* **GET, 2 of 6 nodes down**: the same GETs with two nodes switched off (a
  wrapper raising ``NodeUnavailable``, as a remote node that does not answer;
  the cluster map knows them down after the first failure): erasure-coded
  reads rebuild two data shards from parity, replicated reads skip to a
  live replica. Beside the same store's healthy GET.
* **bytes stored per byte of data**: the sizes of every node's data files
  after the first PUT round (record headers included) over the bytes put,
  beside the plain files' sizes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale  # noqa: E402
from sdi.objstore.cluster import ClusterStore  # noqa: E402
from sdi.objstore.nodes import LocalNode  # noqa: E402
from sdi.objstore.placement import Scheme  # noqa: E402
from sdi.testing.s3 import SwitchableNode  # noqa: E402

MB = 1e6
NODES = 6
DOWN = ("node-0", "node-1")

SIZES: dict[str, list[tuple[int, int]]] = {
    # scale: [(object bytes, objects per round)], rounds below
    "tiny": [(256 << 10, 2), (16 << 10, 4)],
    "quick": [(4 << 20, 12), (64 << 10, 80)],
    "full": [(4 << 20, 24), (64 << 10, 200)],
}
ROUNDS = {"tiny": 1, "quick": 5, "full": 9}


class Cluster:
    def __init__(self, root: Path, scheme: str) -> None:
        self.root = root
        self.scheme = Scheme.parse(scheme)
        self.nodes = [
            SwitchableNode(LocalNode(f"node-{n}", root / f"node-{n}")) for n in range(NODES)
        ]
        self.store = ClusterStore(self.nodes, root / "placement.sqlite", retry_after_s=3600)

    def put(self, data_id: str, data: bytes) -> None:
        self.store.put(data_id, data, self.scheme)

    def outage(self, down: bool) -> None:
        for node in self.nodes:
            if node.node_id in DOWN:
                node.down = down
                if not down:
                    self.store.cluster.mark_up(node.node_id)

    def stored_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.root.glob("node-*/data/*.dat"))


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()

    def put(self, name: str, data: bytes) -> None:
        descriptor = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def get(self, name: str) -> bytes:
        with open(self.root / name, "rb") as file:
            return file.read()

    def stored_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.root.iterdir())


def _put_all(put: Callable[[str, bytes], object], ids: list[str], objects: list[bytes]) -> float:
    """Seconds to put every object, one after the other."""
    start = time.perf_counter()
    for object_id, data in zip(ids, objects, strict=True):
        put(object_id, data)
    return time.perf_counter() - start


def _get_all(get: Callable[[str], bytes], ids: list[str]) -> float:
    """Seconds to get every object, one after the other."""
    start = time.perf_counter()
    for object_id in ids:
        get(object_id)
    return time.perf_counter() - start


def run(scale: Scale, progress: Progress) -> list[Result]:
    rounds = ROUNDS[scale]
    root = Path(tempfile.mkdtemp(prefix="sdi-bench-durability-"))
    ec = Cluster(root / "ec", "ec-4+2")
    r3 = Cluster(root / "r3", "replicas-3")
    files = Files(root / "files")
    rng = numpy.random.default_rng(11)
    results: list[Result] = []
    try:
        for size, count in SIZES[scale]:
            label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            objects = [
                rng.integers(0, 256, size, dtype=numpy.uint8).tobytes() for _ in range(count)
            ]
            total = size * count
            samples: dict[str, list[float]] = {
                name: []
                for name in [
                    "put ec",
                    "put r3",
                    "put file",
                    "get ec",
                    "get r3",
                    "get file",
                    "degraded ec",
                    "degraded r3",
                ]
            }
            stored: dict[str, float] = {}

            for round_ in range(rounds):
                progress(f"{label} objects, round {round_ + 1} of {rounds}")
                ids = [f"{label.replace(' ', '')}-{round_}-{n}" for n in range(count)]
                before = {"ec": ec.stored_bytes(), "r3": r3.stored_bytes()}
                before["file"] = files.stored_bytes()
                for name, cluster in [("ec", ec), ("r3", r3)]:
                    seconds = _put_all(cluster.put, ids, objects)
                    samples[f"put {name}"].append(total / seconds / MB)
                samples["put file"].append(total / _put_all(files.put, ids, objects) / MB)
                if round_ == 0:
                    stored["ec"] = (ec.stored_bytes() - before["ec"]) / total
                    stored["r3"] = (r3.stored_bytes() - before["r3"]) / total
                    stored["file"] = (files.stored_bytes() - before["file"]) / total
                    for i, o in zip(ids, objects, strict=True):
                        if ec.store.get(i) != o or r3.store.get(i) != o or files.get(i) != o:
                            raise AssertionError(f"object {i} did not read back as written")
                for name, cluster in [("ec", ec), ("r3", r3)]:
                    samples[f"get {name}"].append(total / _get_all(cluster.store.get, ids) / MB)
                samples["get file"].append(total / _get_all(files.get, ids) / MB)
                for name, cluster in [("ec", ec), ("r3", r3)]:
                    cluster.outage(True)
                    try:
                        if round_ == 0 and cluster.store.get(ids[0]) != objects[0]:
                            raise AssertionError("a degraded read returned other bytes")
                        seconds = _get_all(cluster.store.get, ids)
                        samples[f"degraded {name}"].append(total / seconds / MB)
                    finally:
                        cluster.outage(False)
            median = {name: statistics.median(values) for name, values in samples.items()}
            setting = f"{count} objects of {label} a round, {rounds} rounds, one client thread"
            results += [
                Result(
                    f"PUT {label} objects",
                    "MB/s",
                    True,
                    median["put ec"],
                    {"replicas-3": median["put r3"], "file+fsync": median["put file"]},
                    note=f"sdi = ec-4+2 over {NODES} LocalNodes, sync on; {setting}",
                ),
                Result(
                    f"GET {label} objects",
                    "MB/s",
                    True,
                    median["get ec"],
                    {"replicas-3": median["get r3"], "file read": median["get file"]},
                ),
                Result(
                    f"GET {label} objects, 2 of 6 nodes down",
                    "MB/s",
                    True,
                    median["degraded ec"],
                    {
                        "replicas-3, 2 down": median["degraded r3"],
                        "ec-4+2, all up": median["get ec"],
                    },
                    note="ec-4+2 rebuilds 2 data shards from parity on every GET",
                ),
            ]
            if size == SIZES[scale][0][0]:
                results.append(
                    Result(
                        f"bytes stored per byte of data, {label} objects",
                        "ratio",
                        False,
                        stored["ec"],
                        {"replicas-3": stored["r3"], "file": stored["file"]},
                        note="sizes of the nodes' data files (record headers included)",
                    )
                )
    finally:
        ec.store.close()
        r3.store.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":  # pragma: no cover
    for result in run("quick", Progress("durability")):
        print(result)
