"""A sorted set with Redis ZSET semantics, compiled: the leaderboard's core.

The core is ``rust/sdi-zset`` (bound as ``sdi._rust.zset``): an
order-statistic B+tree keyed by ``(score, member)``, so that rank, access by
rank and ranges are O(log n), with each member's bytes stored once in the
leaves and a compact member index. :class:`ZSet` is that class, re-exported.

Members are ``bytes``; scores are floats (``+inf`` and ``-inf`` allowed, NaN
refused). Elements are ordered by score, ties by member bytes, exactly as
Redis orders a ZSET. Each method is one Redis command: :meth:`ZSet.zadd`
(ZADD with NX/XX/GT/LT/CH/INCR), :meth:`ZSet.incr` (ZINCRBY),
:meth:`ZSet.rank` (ZRANK/ZREVRANK WITHSCORE), :meth:`ZSet.range_by_rank`,
:meth:`ZSet.range_by_score`, :meth:`ZSet.range_by_lex` (ZRANGE with BYSCORE
or BYLEX, REV and LIMIT), the counts, pops and range removals. Score bounds
take Redis's syntax (``b"1.5"``, ``b"(1.5"``, ``b"-inf"``, ``b"+inf"``), lex
bounds ``b"-"``, ``b"+"``, ``b"[a"``, ``b"(a"``, always min first (also with
``rev=True``); ``offset`` and ``count`` are LIMIT's (a negative count means
all, a negative offset gives nothing).

>>> board = ZSet()
>>> board.zadd([10, 30, b"20.5"], [b"alice", b"bob", b"carol"])
3
>>> board.incr(25, b"alice")
35.0
>>> board.range_by_rank(0, 1, rev=True)
[(b'alice', 35.0), (b'bob', 30.0)]
>>> board.rank(b"carol", rev=True)
(2, 20.5)
>>> board.range_by_score(b"(20.5", b"+inf")
[(b'bob', 30.0), (b'alice', 35.0)]
>>> board.zadd([b"40"], [b"bob"], xx=True, gt=True, ch=True)
1
>>> ZSet.load(board.dump()).items() == board.items()
True

Batches run with the GIL released and no Python work per member: scores as
a float64 array, members as a list of bytes (copied once into one buffer) or
a numpy ``S<n>`` array, read in place. numpy's convention applies to ``S<n>``
items: trailing NUL bytes are padding and are stripped, so a member that
ends in ``b"\\x00"`` must be passed in a list.

>>> import numpy as np
>>> big = ZSet()
>>> big.add_many(np.arange(5.0), np.array([b"a", b"b", b"c", b"d", b"e"]))
5
>>> big.ranks([b"e", b"zz"], rev=True).tolist()
[0, -1]
>>> big.incr_many(np.array([1.5, 1.5]), [b"a", b"a"]).tolist()
[1.5, 3.0]

Errors: :class:`sdi.errors.InvalidArgument` whose message is Redis's error
text without ``ERR`` (``value is not a valid float``, ``min or max is not a
float``, ``min or max not valid string range item``, ``resulting score is
not a number (NaN)``, the flag conflicts); :class:`sdi.errors.LimitExceeded`
for a member longer than :data:`MEMBER_MAX`; :class:`sdi.errors.Corrupt` for
a snapshot that fails its checks in :meth:`ZSet.load`.

A ``ZSet`` may be shared by threads: each call holds the set's lock for
its duration, and waits for the lock with the GIL released.
"""

from __future__ import annotations

from sdi._rust import zset as _zset
from sdi._rust.zset import ZSet

__all__ = ["MEMBER_MAX", "ZSet"]

#: The longest member accepted, in bytes (32 MiB).
MEMBER_MAX: int = _zset.MEMBER_MAX
