"""The cluster store: objects replicated or erasure-coded over data nodes.

:class:`ClusterStore` is the data store of chapter 9 as the API service sees
it: ``put`` / ``get`` / ``get_range`` / ``delete`` by data id, over a set of
data nodes (:class:`~sdi.objstore.nodes.NodeClient`) and the placement
service (:mod:`sdi.objstore.placement`: the cluster map, rendezvous
placement and the SQLite placement table). Every call blocks and is
thread-safe; pieces go to and come from the nodes in parallel on a thread
pool.

**What a put means.** The object is cut into its pieces (``replicas-n``:
``n`` copies; ``ec-k+m``: ``k`` data shards, the last zero-padded, and
``m`` parity shards) and the CRC-32C of each is computed. The placement row
is committed first in state ``writing``, naming the node of every piece;
then the pieces are written to their nodes in parallel (each node syncs
before it acknowledges); a piece whose node is unavailable is retried on the
next up node in rendezvous order that holds no piece of the object (the row
is pointed at that node *before* the write). When every piece is
acknowledged the row is marked ``stored`` and ``put`` returns: every piece
is then durable on its node and the row is durable in the table. If fewer
than the scheme's write quorum (``k + ceil(m / 2)``) acknowledge, the row
and the written pieces are removed and :class:`NotEnoughNodes` is raised;
with a quorum the object is stored degraded (the pieces that failed are
marked missing) and repair completes it. A crash mid-put leaves a
``writing`` row and some pieces: never readable (reads only see
``stored`` rows), removed by :meth:`ClusterStore.collect_garbage`.

**Reads.** ``get`` of an erasure-coded object fetches the ``k`` data shards
in parallel; each piece is checked against the CRC-32C in the placement row
(the node checks its own too). A shard that is missing (``KeyError``),
rotten (:class:`~sdi.errors.Corrupt`) or on a node that does not answer
(:class:`~sdi.objstore.nodes.NodeUnavailable`, which also marks the node
down) is replaced by a parity shard, one at a time, and the object is
rebuilt from any ``k`` good shards. A replicated object is read from its
replicas in rendezvous order until one is good. Damaged pieces are never
returned; the data id is remembered for repair (:meth:`ClusterStore.damaged`).
With fewer than ``k`` good pieces the read raises ``Corrupt`` (never wrong
bytes). ``get_range`` of an erasure-coded object fetches only the data shards
that cover the range (all ``k`` if one of them is damaged); nodes serve
whole pieces (their checksums cover whole pieces), so a range of a
replicated object reads one whole replica.

**Repair** (:meth:`ClusterStore.repair`) pings every node, lists and scrubs
every up node, then for every stored object finds the pieces that are not
on their node, are rotten there, were never acknowledged, or are on a node
that is down or gone. It rebuilds them from ``k`` good pieces (a good
replica) and writes each onto the same node if that node is up, otherwise
onto the up node of highest rendezvous weight holding no piece of the
object, pointing the row there first. An object with fewer than ``k`` good
pieces is reported lost (its row is kept).

**Garbage** (:meth:`ClusterStore.collect_garbage`): ``writing`` rows older
than the given age are crashed or stuck puts and are dropped; then every
piece on an up node (object ids ``<data id>#<index>``) that no row points
at (no row, or the row says another node for that index) is deleted.
Pieces of ``writing`` rows younger than the age are left alone. Node
objects whose ids are not piece ids are not touched. Data ids are
write-once: reusing a deleted id while a collection runs may cost the new
object a piece (which repair restores), so give every put a fresh id.

>>> import tempfile, os
>>> from sdi.objstore.nodes import LocalNode
>>> from sdi.objstore.placement import Scheme, shard_id
>>> with tempfile.TemporaryDirectory() as path:
...     nodes = {f"node-{n}": LocalNode(f"node-{n}", os.path.join(path, str(n))) for n in range(6)}
...     with ClusterStore(list(nodes.values()), os.path.join(path, "placement.sqlite")) as store:
...         store.put("photo-1", b"hello, erasure coding!", Scheme.parse("ec-4+2"))
...         for index, node in enumerate(store.stat("photo-1").nodes[:2]):
...             _ = nodes[node].delete(shard_id("photo-1", index))  # two shards lost
...         print(store.get("photo-1"), store.get_range("photo-1", 7, 7))
...         print(store.repair().shards_rebuilt, len(set(store.stat("photo-1").nodes)))
b'hello, erasure coding!' b'erasure'
2 6
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from os import PathLike
from types import TracebackType
from typing import TypeVar

from sdi.errors import Closed, Corrupt, InvalidArgument, LimitExceeded, SdiError, Timeout
from sdi.objstore.ec import Codec, checksum
from sdi.objstore.nodes import NodeClient, NodeUnavailable
from sdi.objstore.placement import (
    ClusterMap,
    NotEnoughNodes,
    Placement,
    PlacementTable,
    Scheme,
    check_data_id,
    parse_shard_id,
    rendezvous,
    shard_id,
)

__all__ = ["OBJECT_BYTES_MAX", "ClusterStore", "NotEnoughNodes", "Placement", "RepairReport"]

#: Pieces up to this size on in-process nodes are read in the calling thread.
INLINE_PIECE_BYTES = 256 << 10
#: The largest object a put takes (held in memory whole).
OBJECT_BYTES_MAX = 5 << 30
# What a node call may raise for one piece; the read goes on with other pieces.
_PIECE_ERRORS = (KeyError, SdiError, OSError)
T = TypeVar("T")


@dataclass
class RepairReport:
    """What :meth:`ClusterStore.repair` found and did."""

    objects_checked: int = 0
    objects_repaired: int = 0
    shards_rebuilt: int = 0
    #: Of ``shards_rebuilt``, those written onto another node than before.
    shards_moved: int = 0
    #: Pieces that could not be rebuilt now (no spare node up, or the write failed).
    shards_failed: int = 0
    #: Objects with fewer than ``k`` good pieces: not recoverable.
    lost: list[str] = field(default_factory=list)


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return "missing"
    if isinstance(error, Corrupt):
        return "rotten"
    if isinstance(error, NodeUnavailable):
        return "node down"
    return type(error).__name__


class ClusterStore:
    """Objects over ``nodes`` with the placement table at ``placement_path``.

    ``workers`` threads move pieces to and from nodes (default: two per
    node, at least 8). The store owns the nodes it is given and closes them
    in :meth:`close`. ``retry_after_s`` / ``retry_max_s`` set the back-off
    before a node that failed is tried again (see
    :class:`~sdi.objstore.placement.ClusterMap`).
    """

    def __init__(
        self,
        nodes: Sequence[NodeClient],
        placement_path: str | PathLike[str],
        *,
        workers: int | None = None,
        retry_after_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        if not nodes:
            raise InvalidArgument("a cluster store needs at least one data node")
        if workers is not None and workers < 1:
            raise InvalidArgument(f"workers must be at least 1, not {workers}")
        self.cluster = ClusterMap(nodes, retry_after_s=retry_after_s, retry_max_s=retry_max_s)
        self.table = PlacementTable(placement_path)
        self._pool: futures.ThreadPoolExecutor | None = futures.ThreadPoolExecutor(
            max_workers=workers or max(8, 2 * len(nodes)), thread_name_prefix="sdi-cluster"
        )
        self._codecs: dict[Scheme, Codec] = {}
        self._local = {node.node_id for node in nodes if getattr(node, "in_process", False)}
        self._lock = threading.Lock()
        self._damaged: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Waits for piece transfers, closes the placement table and the nodes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=True)
        self.table.close()
        for client in self.cluster.clients():
            with contextlib.suppress(SdiError, OSError):
                client.close()

    def __enter__(self) -> ClusterStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _submit(self, work: Callable[..., T], *args: object) -> futures.Future[T]:
        pool = self._pool
        if pool is None:
            raise Closed("the cluster store is closed; open a new ClusterStore")
        return pool.submit(work, *args)

    def _codec(self, scheme: Scheme) -> Codec:
        codec = self._codecs.get(scheme)
        if codec is None:
            codec = self._codecs.setdefault(scheme, Codec(scheme.k, scheme.m))
        return codec

    # -- node calls (mark the node down when it does not answer) ----------------------

    def _client(self, node_id: str) -> NodeClient:
        try:
            return self.cluster.client(node_id)
        except KeyError:
            raise NodeUnavailable(f"node {node_id!r} is no longer in the cluster") from None

    def _node_put(self, node_id: str, object_id: str, piece: memoryview) -> None:
        client = self._client(node_id)
        try:
            client.put(object_id, piece)
        except NodeUnavailable:
            self.cluster.mark_down(node_id)
            raise

    def _node_delete(self, node_id: str, object_id: str) -> bool:
        try:
            return self._client(node_id).delete(object_id)
        except NodeUnavailable:
            self.cluster.mark_down(node_id)
            return False
        except (SdiError, OSError):
            return False

    def _fetch(self, placement: Placement, index: int) -> bytes:
        """Piece ``index``, checked against the placement row's CRC-32C."""
        node_id = placement.shards[index].node_id
        if node_id is None:
            raise KeyError(shard_id(placement.data_id, index))
        client = self._client(node_id)
        try:
            data = client.get(shard_id(placement.data_id, index))
        except NodeUnavailable:
            self.cluster.mark_down(node_id)
            raise
        if len(data) != placement.shard_size or checksum(data) != placement.shards[index].crc32c:
            raise Corrupt(
                f"piece {index} of {placement.data_id!r} on node {node_id!r} does not match "
                "its placement row (size or CRC-32C); it is served around and repair rebuilds it"
            )
        return data

    # -- put --------------------------------------------------------------------------

    def _pieces(self, view: memoryview, scheme: Scheme) -> list[memoryview]:
        if scheme.kind == "replicas":
            return [view] * scheme.slots
        codec = self._codec(scheme)
        k, length = scheme.k, scheme.shard_size(len(view))
        body: memoryview
        if len(view) == k * length:
            body = view
        else:
            padded = bytearray(k * length)
            padded[: len(view)] = view
            body = memoryview(padded)
        parity = codec.encode_stripe(body)
        data = [body[i * length : (i + 1) * length] for i in range(k)]
        return [*data, *(memoryview(parity[j]) for j in range(scheme.m))]

    def put(self, data_id: str, data: bytes | bytearray | memoryview, scheme: Scheme) -> None:
        """Stores ``data`` under the fresh ``data_id`` with ``scheme``.

        On return every acknowledged piece is durable on its node (at least
        the write quorum; all of them unless a node failed during the put).
        Raises :class:`NotEnoughNodes` if fewer than the write quorum of
        nodes are up or acknowledge, ``InvalidArgument`` if the id is placed
        already, ``LimitExceeded`` past 5 GiB.
        """
        check_data_id(data_id)
        if not isinstance(scheme, Scheme):
            raise InvalidArgument(
                f"scheme must be a Scheme (Scheme.parse('ec-4+2')), not {scheme!r}"
            )
        view = memoryview(data).cast("B")
        size = len(view)
        if size > OBJECT_BYTES_MAX:
            raise LimitExceeded(
                f"an object holds at most {OBJECT_BYTES_MAX} bytes, not {size}; "
                "upload larger objects in parts"
            )
        chosen = self.cluster.choose(data_id, scheme.slots)
        if len(chosen) < scheme.write_quorum:
            raise NotEnoughNodes(
                f"{len(chosen)} of {len(self.cluster)} data nodes are up; {scheme} needs at least "
                f"{scheme.write_quorum} to accept a put; bring nodes back and retry"
            )
        pieces = self._pieces(view, scheme)
        crcs = [checksum(pieces[0])] * scheme.slots if scheme.kind == "replicas" else []
        if not crcs:
            crcs = [checksum(piece) for piece in pieces]
        slots = [(chosen[i] if i < len(chosen) else None, crcs[i]) for i in range(scheme.slots)]
        self.table.begin_put(data_id, scheme, size, scheme.shard_size(size), slots)
        tried: set[str] = set(chosen)
        try:
            acked = self._write(data_id, pieces, chosen, tried)
            count = sum(node is not None for node in acked)
            if count < scheme.write_quorum:
                raise NotEnoughNodes(
                    f"only {count} data nodes acknowledged {data_id!r}; {scheme} needs at "
                    f"least {scheme.write_quorum}; nothing was stored; bring nodes back and retry"
                )
            if not self.table.finish_put(data_id, [node is not None for node in acked]):
                raise Timeout(
                    f"the put of {data_id!r} was collected as garbage before it finished "
                    "(collect_garbage's older_than_s is shorter than the put took); put again"
                )
        except BaseException:
            self._abandon(data_id, tried)
            raise

    def _write(
        self, data_id: str, pieces: Sequence[memoryview], chosen: Sequence[str], tried: set[str]
    ) -> list[str | None]:
        """Writes the pieces to their nodes in parallel, moving the pieces of nodes
        that fail to spare nodes; the node that acknowledged each piece, or None."""
        acked: list[str | None] = [None] * len(pieces)
        pending = dict(enumerate(chosen))
        while pending:
            jobs = {
                self._submit(self._node_put, node, shard_id(data_id, index), pieces[index]): index
                for index, node in pending.items()
            }
            futures.wait(jobs)
            failed = []
            for job, index in jobs.items():
                error = job.exception()
                if error is None:
                    acked[index] = pending[index]
                elif isinstance(error, NodeUnavailable):
                    failed.append(index)
                else:
                    raise error
            spares = self.cluster.choose(data_id, len(failed), exclude=tried) if failed else []
            pending = {}
            for index, node in zip(failed, spares, strict=False):
                tried.add(node)
                if not self.table.move(data_id, index, node):
                    break  # the row is gone (deleted or collected): finish_put reports it
                pending[index] = node
        return acked

    def _abandon(self, data_id: str, nodes: Iterable[str]) -> None:
        """After a failed put: its row (if still 'writing') and its pieces, best effort."""
        try:
            removed = self.table.remove_if_writing(data_id, created_before_ms=1 << 62)
        except SdiError:
            return
        if removed is None:
            return  # deleted meanwhile, or not ours: leave it
        jobs = []
        for node in nodes:
            for index in range(removed.scheme.slots):
                try:
                    jobs.append(self._submit(self._node_delete, node, shard_id(data_id, index)))
                except Closed:
                    return
        futures.wait(jobs)

    # -- get --------------------------------------------------------------------------

    def _stored(self, data_id: str) -> Placement:
        placement = self.table.get(check_data_id(data_id))
        if placement is None or placement.state != "stored":
            raise KeyError(data_id)
        return placement

    def _gather(
        self,
        placement: Placement,
        wanted: Sequence[int],
        need: int,
        order: Sequence[int] | None = None,
    ) -> tuple[dict[int, bytes], dict[int, str]]:
        """Fetches the pieces ``wanted`` in parallel; once one of them fails,
        others (in ``order``, by default by index) until ``need`` are good. The
        good pieces and why the failed ones failed."""
        shards = placement.shards

        def plausible(index: int) -> bool:
            node = shards[index].node_id
            return (
                shards[index].present and node is not None and self.cluster.is_up(node, probe=False)
            )

        rest = range(len(shards)) if order is None else order
        order = [*wanted, *(i for i in rest if i not in wanted)]
        queue = [i for i in order if plausible(i)]
        queue += [i for i in order if not plausible(i) and shards[i].node_id is not None]
        target = {i for i in wanted if plausible(i)}
        degraded = len(target) < len(wanted)
        good: dict[int, bytes] = {}
        failed: dict[int, str] = {i: "not stored" for i in wanted if shards[i].node_id is None}
        running: dict[futures.Future[bytes], int] = {}
        tried: set[int] = set()
        while True:
            if not degraded and target <= good.keys():
                break
            if len(good) >= need:
                break
            starts = (
                [i for i in target if i not in tried]
                if not degraded
                else [i for i in queue if i not in tried][: max(0, need - len(good) - len(running))]
            )
            if starts and not running and (len(starts) == 1 or self._inline(placement, starts)):
                # One piece, or small pieces on in-process nodes: no hand-off to the pool.
                for index in starts:
                    tried.add(index)
                    try:
                        good[index] = self._fetch(placement, index)
                    except _PIECE_ERRORS as problem:
                        failed[index] = _reason(problem)
                        degraded = True
                continue
            for index in starts:
                tried.add(index)
                running[self._submit(self._fetch, placement, index)] = index
            if not running:
                break
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for job in done:
                index = running.pop(job)
                error = job.exception()
                if error is None:
                    good[index] = job.result()
                elif isinstance(error, _PIECE_ERRORS):
                    failed[index] = _reason(error)
                    degraded = True
                else:
                    raise error
        futures.wait(running)  # pieces still in flight are not needed
        if failed:
            with self._lock:
                self._damaged.add(placement.data_id)
        return good, failed

    def _inline(self, placement: Placement, indexes: Sequence[int]) -> bool:
        """Whether fetching these pieces one after the other here beats the thread pool:
        small pieces on in-process nodes (a read takes microseconds; a hand-off more)."""
        return placement.shard_size <= INLINE_PIECE_BYTES and all(
            placement.shards[index].node_id in self._local for index in indexes
        )

    def _lost(self, placement: Placement, good: int, need: int, failed: dict[int, str]) -> Corrupt:
        detail = ", ".join(f"piece {i}: {why}" for i, why in sorted(failed.items()))
        return Corrupt(
            f"{placement.data_id!r} ({placement.scheme}) cannot be read: {good} good pieces of "
            f"the {need} needed ({detail}); if nodes are down bring them back and retry, "
            "otherwise the object is lost"
        )

    def _replica_order(self, placement: Placement) -> list[int]:
        nodes = {s.node_id: s.index for s in placement.shards if s.node_id is not None}
        ranked = rendezvous(placement.data_id, nodes)
        return [nodes[node] for node in ranked]

    def get(self, data_id: str) -> bytes:
        """The object's bytes; KeyError if not stored, Corrupt if not recoverable."""
        placement = self._stored(data_id)
        scheme = placement.scheme
        if scheme.kind == "replicas":
            order = self._replica_order(placement)
            good, failed = self._gather(placement, order[:1], 1, order)
            if not good:
                raise self._lost(placement, 0, 1, failed)
            return next(iter(good.values()))
        good, failed = self._gather(placement, range(scheme.k), scheme.k)
        if len(good) < scheme.k:
            raise self._lost(placement, len(good), scheme.k, failed)
        shards = [good.get(i) for i in range(scheme.slots)]
        return self._codec(scheme).decode(shards, placement.size)

    def get_range(self, data_id: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (cut at the end of the object)."""
        if start < 0 or length < 0:
            raise InvalidArgument(f"range start {start} and length {length} must not be negative")
        placement = self._stored(data_id)
        scheme, size = placement.scheme, placement.size
        end = min(size, start + length)
        if start >= end:
            return b""
        if scheme.kind == "replicas" or (start == 0 and end == size):
            return self.get(data_id)[start:end]
        unit = placement.shard_size
        covering = list(range(start // unit, (end - 1) // unit + 1))
        good, failed = self._gather(placement, covering, scheme.k)
        if all(i in good for i in covering):
            parts = [
                memoryview(good[i])[max(start - i * unit, 0) : min(end - i * unit, unit)]
                for i in covering
            ]
            return b"".join(parts)
        if len(good) < scheme.k:
            raise self._lost(placement, len(good), scheme.k, failed)
        shards = [good.get(i) for i in range(scheme.slots)]
        return self._codec(scheme).decode(shards, size)[start:end]

    # -- delete, stat, list -----------------------------------------------------------

    def delete(self, data_id: str) -> None:
        """Removes the placement row, then the pieces (best effort: pieces left
        on nodes that are down are garbage, see :meth:`collect_garbage`).
        Deleting an unknown id does nothing."""
        placement = self.table.remove(check_data_id(data_id))
        if placement is None:
            return
        jobs = [
            self._submit(self._node_delete, shard.node_id, shard_id(data_id, shard.index))
            for shard in placement.shards
            if shard.node_id is not None
        ]
        futures.wait(jobs)
        with self._lock:
            self._damaged.discard(data_id)

    def stat(self, data_id: str) -> Placement:
        """Scheme, size and where each piece is; KeyError if not stored."""
        return self._stored(data_id)

    def data_ids(self) -> Iterator[str]:
        """The stored data ids, in order."""
        return self.table.ids("stored")

    def damaged(self) -> set[str]:
        """Data ids whose reads met a missing, rotten or unreachable piece since the last repair."""
        with self._lock:
            return set(self._damaged)

    # -- repair -----------------------------------------------------------------------

    def _inventory(self) -> dict[str, tuple[set[str], set[str]]]:
        """For every node that answers: its piece ids and the rotten ones."""

        def survey(node_id: str) -> tuple[set[str], set[str]]:
            client = self._client(node_id)
            try:
                return set(client.object_ids()), set(client.scrub())
            except NodeUnavailable:
                self.cluster.mark_down(node_id)
                raise

        up = self.cluster.refresh()
        jobs = {self._submit(survey, node): node for node in up}
        futures.wait(jobs)
        inventory = {}
        for job, node in jobs.items():
            error = job.exception()
            if error is None:
                inventory[node] = job.result()
            elif not isinstance(error, NodeUnavailable):
                raise error
        return inventory

    def repair(self, *, progress: Callable[[int, int], None] | None = None) -> RepairReport:
        """Rebuilds every missing or rotten piece of every stored object.

        A piece is rebuilt onto its own node if that node is up, else onto
        the up node of highest rendezvous weight that holds no piece of the
        object. ``progress(done, total)`` is called after each object.
        """
        started_ms = time.time_ns() // 1_000_000
        inventory = self._inventory()
        with self._lock:
            self._damaged.clear()
        report = RepairReport()
        total = self.table.count("stored")
        for done, data_id in enumerate(self.table.ids("stored"), start=1):
            placement = self.table.get(data_id)
            if (
                placement is not None
                and placement.state == "stored"
                and (placement.stored_ms or 0) <= started_ms
            ):
                report.objects_checked += 1
                bad = [
                    shard.index
                    for shard in placement.shards
                    if not (
                        shard.present
                        and shard.node_id in inventory
                        and shard_id(data_id, shard.index) in inventory[shard.node_id][0]
                        and shard_id(data_id, shard.index) not in inventory[shard.node_id][1]
                    )
                ]
                if bad:
                    self._repair_object(placement, bad, report)
            if progress is not None:
                progress(done, max(total, done))
        return report

    def _repair_object(self, placement: Placement, bad: list[int], report: RepairReport) -> None:
        scheme, data_id = placement.scheme, placement.data_id
        healthy = [i for i in range(scheme.slots) if i not in bad]
        need = 1 if scheme.kind == "replicas" else scheme.k
        good, _failed = self._gather(placement, healthy[:need], need)
        if len(good) < need:
            report.lost.append(data_id)
            return
        if scheme.kind == "replicas":
            rebuilt: list[bytes] = [next(iter(good.values()))] * scheme.slots
        else:
            shards = [good.get(i) for i in range(scheme.slots)]
            rebuilt = self._codec(scheme).reconstruct(shards)
        holders = {s.node_id for s in placement.shards if s.node_id is not None}
        jobs = {}
        for index in bad:
            piece = rebuilt[index]
            if checksum(piece) != placement.shards[index].crc32c:
                report.lost.append(data_id)  # the row's checksums disagree with the data
                return
            node = placement.shards[index].node_id
            if node is None or not self.cluster.is_up(node):
                spares = self.cluster.choose(data_id, 1, exclude=holders)
                if not spares:
                    report.shards_failed += 1
                    continue
                node = spares[0]
                holders.add(node)
                if not self.table.move(data_id, index, node):
                    return  # deleted meanwhile
                report.shards_moved += 1
            jobs[self._submit(self._node_put, node, shard_id(data_id, index), piece)] = (
                index,
                node,
            )
        futures.wait(jobs)
        repaired = False
        for job, (index, node) in jobs.items():
            error = job.exception()
            if error is None:
                self.table.mark_present(data_id, index, node)
                report.shards_rebuilt += 1
                repaired = True
            elif isinstance(error, _PIECE_ERRORS):
                report.shards_failed += 1
            else:
                raise error
        if repaired:
            report.objects_repaired += 1

    # -- garbage ----------------------------------------------------------------------

    def collect_garbage(self, *, older_than_s: float) -> int:
        """Drops 'writing' rows older than ``older_than_s`` (crashed puts) and
        deletes every piece on an up node that no row points at; the number of
        rows dropped plus pieces deleted."""
        if older_than_s < 0:
            raise InvalidArgument(f"older_than_s must not be negative, not {older_than_s}")
        cutoff_ms = time.time_ns() // 1_000_000 - int(older_than_s * 1000)
        removed = 0
        for data_id in self.table.writing_before(cutoff_ms):
            if self.table.remove_if_writing(data_id, cutoff_ms) is not None:
                removed += 1

        def sweep(node_id: str) -> int:
            client = self._client(node_id)
            try:
                object_ids = client.object_ids()
            except NodeUnavailable:
                self.cluster.mark_down(node_id)
                return 0
            rows: dict[str, Placement | None] = {}
            deleted = 0
            for object_id in object_ids:
                parsed = parse_shard_id(object_id)
                if parsed is None:
                    continue
                data_id, index = parsed
                if data_id not in rows:
                    rows[data_id] = self.table.get(data_id)
                placement = rows[data_id]
                live = placement is not None and (
                    placement.state == "writing"
                    or (
                        index < len(placement.shards) and placement.shards[index].node_id == node_id
                    )
                )
                if not live and self._node_delete(node_id, object_id):
                    deleted += 1
            return deleted

        jobs = [self._submit(sweep, node) for node in self.cluster.up_nodes()]
        return removed + sum(job.result() for job in jobs)
