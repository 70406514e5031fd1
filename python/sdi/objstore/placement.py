"""The placement service: the cluster map and the placement table of the data store.

**Schemes.** A bucket's durability is a :class:`Scheme`: ``replicas-n``
(``n`` whole copies on ``n`` nodes, any ``n - 1`` of which may be lost) or
``ec-k+m`` (Reed-Solomon: ``k`` data and ``m`` parity shards on ``k + m``
nodes, any ``m`` of which may be lost). Either way an object becomes
``slots`` pieces numbered ``0 .. slots - 1`` (replica or shard index), stored
on the nodes under the node object id ``"<data id>#<index>"``
(:func:`shard_id`), so that a node's object list maps back to data ids and
indexes (:func:`parse_shard_id`) for repair and garbage collection.

**The cluster map** (:class:`ClusterMap`) knows every data node and whether
it is up. A call that raises :class:`~sdi.objstore.nodes.NodeUnavailable`
marks its node down with the time of the failure; a down node is not used
for new placements and is pinged again after a back-off that doubles with
each failure in a row (``retry_after_s`` up to ``retry_max_s``); a ping that
answers marks it up again.

**Choosing nodes** is rendezvous (highest random weight) hashing: every
node gets the weight ``blake2b(node id, data id)`` for a data id and the
object goes to the up nodes of highest weight, slot ``i`` on the ``i``-th.
Each node is thus equally likely to hold any slot (placement spreads
evenly) and adding or removing a node only changes the choice for the
objects that gain or lose that node (about ``1 / nodes`` of the pieces).
Placement is recorded, not recomputed: an object stays where it was put
until repair moves a piece off a node that is down.

**Fewer nodes than slots.** A put needs a write quorum of up nodes,
``k + ceil(m / 2)`` (``replicas-3``: 2, ``ec-4+2``: 5, with ``replicas-n``
counted as ``k = 1, m = n - 1``); with fewer it is refused with
:class:`NotEnoughNodes` (nothing is written). With a quorum but fewer than
``slots`` up nodes the object is placed degraded: every up node gets one
piece and the rest are recorded as missing (no node), which repair fills
in when nodes come back; an object is never put twice on one node.

**The placement table** (:class:`PlacementTable`, SQLite in WAL mode with
``synchronous=FULL``, so every commit is on disk when it returns) holds one
row per data id: scheme, size, shard size, state (``writing`` while a put
is in flight, ``stored`` once every placed piece was acknowledged), when it
was created and stored; and one row per slot: the node that holds (or is
to hold) it, its CRC-32C and whether it was acknowledged.

>>> import tempfile, os
>>> Scheme.parse("ec-4+2"), str(Scheme.parse("replicas-3"))
(Scheme(kind='ec', k=4, m=2), 'replicas-3')
>>> Scheme.parse("ec-4+2").slots, Scheme.parse("ec-4+2").write_quorum
(6, 5)
>>> cluster = ClusterMap.of_ids([f"node-{n}" for n in range(8)])
>>> chosen = cluster.choose("photo-1", 6)
>>> len(set(chosen)), chosen == cluster.choose("photo-1", 6)
(6, True)
>>> with tempfile.TemporaryDirectory() as path:
...     table = PlacementTable(os.path.join(path, "placement.sqlite"))
...     table.begin_put("photo-1", Scheme.parse("replicas-2"), 5, 5,
...                     [("node-1", 0x1234), ("node-2", 0x1234)])
...     table.finish_put("photo-1", [True, True])
...     row = table.get("photo-1")
...     table.close()
True
>>> row.state, [shard.node_id for shard in row.shards]
('stored', ['node-1', 'node-2'])
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Literal

from sdi.errors import Closed, InvalidArgument
from sdi.objstore.nodes import NodeClient, NodeUnavailable
from sdi.runtime.text import is_decimal

__all__ = [
    "ClusterMap",
    "NodeState",
    "NotEnoughNodes",
    "Placement",
    "PlacementTable",
    "Scheme",
    "ShardPlacement",
    "parse_shard_id",
    "shard_id",
]

#: The most replicas a ``replicas-n`` scheme may ask for.
REPLICAS_MAX = 9
#: The most pieces (``k + m``) an ``ec-k+m`` scheme may have.
EC_SHARDS_MAX = 32
_SCHEME = re.compile(r"(?:replicas-(\d{1,3})|ec-(\d{1,3})\+(\d{1,3}))")
_FORMS = (
    f"replicas-N (1 <= N <= {REPLICAS_MAX}, e.g. replicas-3) or ec-K+M "
    f"(K >= 1, M >= 1, K + M <= {EC_SHARDS_MAX}, e.g. ec-4+2)"
)
#: The longest data id (a shard id adds ``#<index>``; a node takes 1024 bytes).
DATA_ID_BYTES_MAX = 1000


class NotEnoughNodes(NodeUnavailable):
    """Too few data nodes are up to place an object safely; bring nodes back and retry."""


@dataclass(frozen=True, slots=True)
class Scheme:
    """How an object is made durable: ``replicas-n`` or ``ec-k+m``.

    ``replicas-n`` is described as ``k = 1, m = n - 1``: one piece of data,
    ``n - 1`` spare pieces.

    >>> Scheme.parse("ec-10+4").slots, Scheme.parse("replicas-3").tolerates
    (14, 2)
    >>> Scheme.parse("raid5")
    Traceback (most recent call last):
    ...
    sdi.errors.InvalidArgument: unknown durability scheme 'raid5'; use replicas-N ...
    """

    kind: Literal["replicas", "ec"]
    k: int
    m: int

    def __post_init__(self) -> None:
        kind: str = self.kind
        if kind == "replicas":
            ok = self.k == 1 and 0 <= self.m < REPLICAS_MAX
        else:
            ok = kind == "ec" and self.k >= 1 and self.m >= 1 and self.k + self.m <= EC_SHARDS_MAX
        if not ok:
            raise InvalidArgument(
                f"unsupported durability scheme {self.kind} k={self.k} m={self.m}; use {_FORMS}"
            )

    @classmethod
    def parse(cls, text: str) -> Scheme:
        """``replicas-N`` or ``ec-K+M``; anything else raises InvalidArgument."""
        match = _SCHEME.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidArgument(f"unknown durability scheme {text!r}; use {_FORMS}")
        if match.group(1) is not None:
            replicas = int(match.group(1))
            if not 1 <= replicas <= REPLICAS_MAX:
                raise InvalidArgument(f"{text!r} has {replicas} replicas; use {_FORMS}")
            return cls("replicas", 1, replicas - 1)
        k, m = int(match.group(2)), int(match.group(3))
        if k < 1 or m < 1 or k + m > EC_SHARDS_MAX:
            raise InvalidArgument(f"{text!r} is out of range; use {_FORMS}")
        return cls("ec", k, m)

    def __str__(self) -> str:
        if self.kind == "replicas":
            return f"replicas-{self.k + self.m}"
        return f"ec-{self.k}+{self.m}"

    @property
    def slots(self) -> int:
        """Pieces per object (replicas or shards), each on its own node."""
        return self.k + self.m

    @property
    def tolerates(self) -> int:
        """How many pieces may be lost with the object still readable."""
        return self.m

    @property
    def write_quorum(self) -> int:
        """The fewest acknowledged pieces for a put to succeed: ``k + ceil(m / 2)``."""
        return self.k + math.ceil(self.m / 2)

    def shard_size(self, size: int) -> int:
        """The bytes of each piece of an object of ``size`` bytes."""
        return size if self.kind == "replicas" else -(-size // self.k)


def shard_id(data_id: str, index: int) -> str:
    """The node object id of piece ``index`` of ``data_id``.

    >>> shard_id("3f2a", 4), parse_shard_id("3f2a#4"), parse_shard_id("not-a-shard")
    ('3f2a#4', ('3f2a', 4), None)
    """
    return f"{data_id}#{index}"


def parse_shard_id(object_id: str) -> tuple[str, int] | None:
    """``(data id, index)`` of a node object id made by :func:`shard_id`, else None."""
    data_id, sep, index = object_id.rpartition("#")
    if not sep or not data_id or not is_decimal(index) or str(int(index)) != index:
        return None
    return data_id, int(index)


def check_data_id(data_id: str) -> str:
    """``data_id`` if it is a usable data id, else InvalidArgument."""
    if not isinstance(data_id, str) or not data_id:
        raise InvalidArgument(f"a data id is a non-empty string, not {data_id!r}")
    if len(data_id.encode()) > DATA_ID_BYTES_MAX:
        raise InvalidArgument(f"a data id is at most {DATA_ID_BYTES_MAX} bytes; use a uuid")
    return data_id


def _weight(node_id: str, data_id: str) -> int:
    digest = hashlib.blake2b(
        f"{node_id}\x00{data_id}".encode(), digest_size=8, person=b"sdi-hrw"
    ).digest()
    return int.from_bytes(digest, "big")


def rendezvous(data_id: str, node_ids: Iterable[str]) -> list[str]:
    """``node_ids`` in rendezvous order for ``data_id``: highest weight first.

    >>> rendezvous("a", ["n1", "n2", "n3"]) == rendezvous("a", ["n3", "n1", "n2"])
    True
    """
    return sorted(node_ids, key=lambda node_id: (_weight(node_id, data_id), node_id), reverse=True)


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as the cluster map sees it. ``last_failure`` is wall-clock seconds."""

    node_id: str
    up: bool
    failures: int
    last_failure: float | None
    retry_at: float | None


@dataclass(slots=True)
class _Entry:
    client: NodeClient | None
    up: bool = True
    failures: int = 0
    last_failure: float | None = None
    retry_at: float = 0.0


class ClusterMap:
    """The data nodes and whether each is up; thread-safe.

    ``retry_after_s`` is the first back-off after a failure, doubled per
    failure in a row up to ``retry_max_s``; ``clock`` (monotonic seconds)
    is for tests.
    """

    def __init__(
        self,
        nodes: Sequence[NodeClient],
        *,
        retry_after_s: float = 1.0,
        retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_after_s = retry_after_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, _Entry] = {}
        for node in nodes:
            self.add(node)

    @classmethod
    def of_ids(cls, node_ids: Iterable[str]) -> ClusterMap:
        """A map of node ids without clients (to compute placements only)."""
        cluster = cls([])
        for node_id in node_ids:
            if node_id in cluster._nodes:
                raise InvalidArgument(f"node id {node_id!r} is given twice; node ids are unique")
            cluster._nodes[node_id] = _Entry(None)
        return cluster

    def add(self, node: NodeClient) -> None:
        """Adds a node (up); new placements may use it at once."""
        with self._lock:
            if node.node_id in self._nodes:
                raise InvalidArgument(
                    f"node id {node.node_id!r} is already in the cluster; node ids are unique"
                )
            self._nodes[node.node_id] = _Entry(node)

    def remove(self, node_id: str) -> NodeClient | None:
        """Takes a node out of the map (its pieces count as lost; repair moves them)."""
        with self._lock:
            entry = self._nodes.pop(node_id, None)
        return None if entry is None else entry.client

    def node_ids(self) -> list[str]:
        with self._lock:
            return list(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def client(self, node_id: str) -> NodeClient:
        """The node's client; KeyError if the node is not in the map."""
        entry = self._nodes[node_id]
        if entry.client is None:
            raise KeyError(node_id)
        return entry.client

    def clients(self) -> list[NodeClient]:
        with self._lock:
            return [entry.client for entry in self._nodes.values() if entry.client is not None]

    def mark_down(self, node_id: str) -> None:
        """Records a failure: the node is skipped until its back-off has passed."""
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is None:
                return
            entry.up = False
            entry.failures += 1
            entry.last_failure = time.time()
            backoff = min(self.retry_max_s, self.retry_after_s * 2 ** min(entry.failures - 1, 30))
            entry.retry_at = self._clock() + backoff

    def mark_up(self, node_id: str) -> None:
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is not None:
                entry.up, entry.failures, entry.retry_at = True, 0, 0.0

    def is_up(self, node_id: str, *, probe: bool = True) -> bool:
        """Whether the node is up; a down node past its back-off is pinged first
        (with ``probe``; ``probe=False`` only reads the map)."""
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is None:
                return False
            if entry.up:
                return True
            due = probe and entry.client is not None and self._clock() >= entry.retry_at
            client = entry.client
        if not due or client is None:
            return False
        return self.ping(node_id, client)

    def ping(self, node_id: str, client: NodeClient | None = None) -> bool:
        """Pings the node now and records the answer."""
        if client is None:
            try:
                client = self.client(node_id)
            except KeyError:
                return False
        try:
            answered = client.ping()
        except NodeUnavailable:
            answered = False
        if answered:
            self.mark_up(node_id)
        else:
            self.mark_down(node_id)
        return answered

    def refresh(self) -> list[str]:
        """Pings every down node now (not waiting for back-offs); the up node ids."""
        for node_id in self.node_ids():
            if not self.is_up(node_id, probe=False):
                self.ping(node_id)
        return self.up_nodes(probe=False)

    def up_nodes(self, *, probe: bool = True) -> list[str]:
        return [node_id for node_id in self.node_ids() if self.is_up(node_id, probe=probe)]

    def states(self) -> list[NodeState]:
        with self._lock:
            return [
                NodeState(
                    node_id,
                    entry.up,
                    entry.failures,
                    entry.last_failure,
                    None if entry.up else entry.retry_at,
                )
                for node_id, entry in self._nodes.items()
            ]

    def choose(self, data_id: str, count: int, *, exclude: Iterable[str] = ()) -> list[str]:
        """Up to ``count`` distinct up nodes for ``data_id`` in rendezvous order,
        skipping ``exclude`` (nodes that already hold a piece of it)."""
        excluded = set(exclude)
        candidates = [n for n in self.node_ids() if n not in excluded]
        ranked = rendezvous(data_id, candidates)
        chosen: list[str] = []
        for node_id in ranked:
            if len(chosen) == count:
                break
            if self.is_up(node_id):
                chosen.append(node_id)
        return chosen


@dataclass(frozen=True, slots=True)
class ShardPlacement:
    """Where one piece of an object is: ``node_id`` None means not placed yet."""

    index: int
    node_id: str | None
    crc32c: int
    present: bool


@dataclass(frozen=True, slots=True)
class Placement:
    """One data id's row: its scheme, sizes, state and pieces."""

    data_id: str
    scheme: Scheme
    size: int
    shard_size: int
    state: Literal["writing", "stored"]
    created_ms: int
    stored_ms: int | None
    shards: tuple[ShardPlacement, ...]

    @property
    def nodes(self) -> list[str | None]:
        """The node of each piece, by index."""
        return [shard.node_id for shard in self.shards]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    data_id TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    size INTEGER NOT NULL,
    shard_size INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('writing', 'stored')),
    created_ms INTEGER NOT NULL,
    stored_ms INTEGER
);
CREATE INDEX IF NOT EXISTS objects_by_state ON objects (state, created_ms);
CREATE TABLE IF NOT EXISTS shards (
    data_id TEXT NOT NULL REFERENCES objects (data_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    node_id TEXT,
    crc INTEGER NOT NULL,
    present INTEGER NOT NULL,
    PRIMARY KEY (data_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shards_by_node ON shards (node_id);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PlacementTable:
    """The placement rows in SQLite at ``path``; thread-safe (calls are serialised)."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise Closed("the placement table is closed; open a new one")
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _transaction(self, work: Callable[[sqlite3.Connection], object]) -> object:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

    def begin_put(
        self,
        data_id: str,
        scheme: Scheme,
        size: int,
        shard_size: int,
        slots: Sequence[tuple[str | None, int]],
        *,
        now_ms: int | None = None,
    ) -> None:
        """Records a put in flight ('writing'): slot ``i`` goes to ``slots[i]``'s
        node with that CRC-32C. InvalidArgument if the data id has a row."""
        created = _now_ms() if now_ms is None else now_ms

        def work(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM objects WHERE data_id = ?", (data_id,)).fetchone():
                raise InvalidArgument(
                    f"data id {data_id!r} is already placed; data ids are write-once: "
                    "put under a fresh id (or delete it first)"
                )
            db.execute(
                "INSERT INTO objects (data_id, scheme, size, shard_size, state, created_ms)"
                " VALUES (?, ?, ?, ?, 'writing', ?)",
                (data_id, str(scheme), size, shard_size, created),
            )
            db.executemany(
                "INSERT INTO shards (data_id, idx, node_id, crc, present) VALUES (?, ?, ?, ?, 0)",
                [(data_id, index, node, crc) for index, (node, crc) in enumerate(slots)],
            )

        self._transaction(work)

    def move(self, data_id: str, index: int, node_id: str) -> bool:
        """Points slot ``index`` at ``node_id`` (not yet acknowledged there)."""
        return bool(
            self._transaction(
                lambda db: (
                    db.execute(
                        "UPDATE shards SET node_id = ?, present = 0 WHERE data_id = ? AND idx = ?",
                        (node_id, data_id, index),
                    ).rowcount
                )
            )
        )

    def mark_present(self, data_id: str, index: int, node_id: str) -> bool:
        """Slot ``index`` was acknowledged by ``node_id`` (if the row still points there)."""
        return bool(
            self._transaction(
                lambda db: (
                    db.execute(
                        "UPDATE shards SET present = 1"
                        " WHERE data_id = ? AND idx = ? AND node_id = ?",
                        (data_id, index, node_id),
                    ).rowcount
                )
            )
        )

    def finish_put(
        self, data_id: str, present: Sequence[bool], *, now_ms: int | None = None
    ) -> bool:
        """Marks the put stored with which slots were acknowledged; False if the
        row is gone (collected as garbage meanwhile) or not 'writing'."""
        stored = _now_ms() if now_ms is None else now_ms

        def work(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE objects SET state = 'stored', stored_ms = ?"
                " WHERE data_id = ? AND state = 'writing'",
                (stored, data_id),
            ).rowcount
            if not changed:
                return False
            db.executemany(
                "UPDATE shards SET present = ? WHERE data_id = ? AND idx = ?",
                [(int(flag), data_id, index) for index, flag in enumerate(present)],
            )
            return True

        return bool(self._transaction(work))

    def get(self, data_id: str) -> Placement | None:
        """The row of ``data_id`` in any state, or None."""
        with self._lock:
            return self._get(self._conn(), data_id)

    @staticmethod
    def _get(db: sqlite3.Connection, data_id: str) -> Placement | None:
        row = db.execute(
            "SELECT scheme, size, shard_size, state, created_ms, stored_ms FROM objects"
            " WHERE data_id = ?",
            (data_id,),
        ).fetchone()
        if row is None:
            return None
        shards = tuple(
            ShardPlacement(index, node, crc, bool(present))
            for index, node, crc, present in db.execute(
                "SELECT idx, node_id, crc, present FROM shards WHERE data_id = ? ORDER BY idx",
                (data_id,),
            )
        )
        scheme, size, shard_size, state, created_ms, stored_ms = row
        return Placement(
            data_id, Scheme.parse(scheme), size, shard_size, state, created_ms, stored_ms, shards
        )

    def remove(self, data_id: str) -> Placement | None:
        """Deletes the row of ``data_id``; what it was, or None."""

        def work(db: sqlite3.Connection) -> Placement | None:
            placement = self._get(db, data_id)
            if placement is not None:
                db.execute("DELETE FROM shards WHERE data_id = ?", (data_id,))
                db.execute("DELETE FROM objects WHERE data_id = ?", (data_id,))
            return placement

        result = self._transaction(work)
        assert result is None or isinstance(result, Placement)
        return result

    def remove_if_writing(self, data_id: str, created_before_ms: int) -> Placement | None:
        """Deletes the row if it is still 'writing' and older than the cut-off."""

        def work(db: sqlite3.Connection) -> Placement | None:
            placement = self._get(db, data_id)
            if (
                placement is None
                or placement.state != "writing"
                or placement.created_ms >= created_before_ms
            ):
                return None
            db.execute("DELETE FROM shards WHERE data_id = ?", (data_id,))
            db.execute("DELETE FROM objects WHERE data_id = ?", (data_id,))
            return placement

        result = self._transaction(work)
        assert result is None or isinstance(result, Placement)
        return result

    def ids(self, state: str = "stored", *, page: int = 1000) -> Iterator[str]:
        """The data ids in ``state``, in order, read a page at a time."""
        after = ""
        while True:
            with self._lock:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT data_id FROM objects WHERE state = ? AND data_id > ?"
                        " ORDER BY data_id LIMIT ?",
                        (state, after, page),
                    )
                    .fetchall()
                )
            for (data_id,) in rows:
                yield data_id
            if len(rows) < page:
                return
            after = rows[-1][0]

    def writing_before(self, created_before_ms: int) -> list[str]:
        """The 'writing' data ids created before the cut-off (crashed or stuck puts)."""
        with self._lock:
            return [
                data_id
                for (data_id,) in self._conn().execute(
                    "SELECT data_id FROM objects WHERE state = 'writing' AND created_ms < ?",
                    (created_before_ms,),
                )
            ]

    def count(self, state: str = "stored") -> int:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT COUNT(*) FROM objects WHERE state = ?", (state,))
                .fetchone()
            )
        return int(row[0])
