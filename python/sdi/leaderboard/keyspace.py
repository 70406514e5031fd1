"""The leaderboard's keyspace: keys holding sorted sets, with expiry as Redis does it.

A :class:`Keyspace` maps keys (bytes) to :class:`sdi.zset.ZSet` values and
keeps each key's deadline, if any, as an absolute time in milliseconds
since the Unix epoch (what ``PEXPIREAT`` takes, so the append-only file can
carry it). A key past its deadline is gone for every command that looks at
it (lazy expiry, :meth:`Keyspace.get`), and :meth:`Keyspace.sweep`, run
periodically by the server, removes the ones nobody looks at. Each removal
by expiry is reported to ``on_expire`` (the server logs it as a ``DEL``),
which is how replaying the log gives the same keys: while ``loading`` is set
nothing expires, as in Redis.

>>> from sdi.zset import ZSet
>>> now = [1_000]
>>> keyspace = Keyspace(clock=lambda: now[0])
>>> board = keyspace.create(b"board")
>>> board.zadd([b"10"], [b"alice"])
1
>>> keyspace.expires[b"board"] = 1_500
>>> keyspace.get(b"board") is board
True
>>> now[0] = 1_500
>>> keyspace.get(b"board") is None, len(keyspace)
(True, 0)

:func:`glob_match` (from :mod:`sdi.runtime.glob`) is Redis's
``stringmatchlen`` (``KEYS``, ``SCAN MATCH``, ``ZSCAN MATCH``) and
:meth:`Keyspace.scan` a ``SCAN`` whose cursor survives keys being added and
removed between calls.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable, Iterator

from sdi.runtime.glob import glob_match
from sdi.zset import ZSet

__all__ = ["Keyspace", "glob_match", "key_hash", "now_ms"]


def now_ms() -> int:
    """The wall clock in milliseconds since the Unix epoch (what Redis's ``mstime()`` gives)."""
    return time.time_ns() // 1_000_000


def key_hash(key: bytes) -> int:
    """A key's place in :meth:`Keyspace.scan`'s order: a stable hash in ``[1, 2**63]``."""
    return (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1) + 1


class Keyspace:
    """Database 0: ``key -> ZSet`` plus deadlines; Python calls and RESP commands share it.

    ``clock`` gives the time in milliseconds (for tests); ``on_expire`` is
    called with each key removed because its deadline passed.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] = now_ms,
        on_expire: Callable[[bytes], None] | None = None,
    ) -> None:
        self.data: dict[bytes, ZSet] = {}
        #: ``key -> deadline`` (ms since the epoch) for keys with a time to live.
        self.expires: dict[bytes, int] = {}
        self.clock = clock
        self.on_expire = on_expire
        #: Called with a key that now holds a set (clients blocked on it may pop).
        self.on_ready: Callable[[bytes], None] | None = None
        #: While set (replaying the log) nothing expires.
        self.loading = False
        #: Keys removed by expiry since start (INFO's ``expired_keys``).
        self.expired_keys = 0
        self._version = 0
        self._scan_version = -1
        self._scan_hashes: list[int] = []
        self._scan_keys: list[bytes] = []
        self._sweep_keys: list[bytes] = []
        self._sweep_at = 0

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    # --- lookups and changes --------------------------------------------------------------

    def expired(self, key: bytes) -> bool:
        """Whether ``key`` has a deadline that has passed (never while loading)."""
        when = self.expires.get(key)
        return when is not None and not self.loading and when <= self.clock()

    def get(self, key: bytes) -> ZSet | None:
        """The set at ``key``, or None; a key past its deadline is removed first."""
        zset = self.data.get(key)
        if zset is not None and self.expires and self.expired(key):
            self._expire(key)
            return None
        return zset

    def create(self, key: bytes) -> ZSet:
        """A new empty set stored at ``key`` (the caller checked there was none)."""
        zset = ZSet()
        self.data[key] = zset
        self._version += 1
        if self.on_ready is not None:
            self.on_ready(key)  # the waiters run later, once the caller has filled it
        return zset

    def store(self, key: bytes, zset: ZSet) -> None:
        """Puts ``zset`` at ``key``, replacing what was there and its deadline."""
        if key not in self.data:
            self._version += 1
        self.data[key] = zset
        self.expires.pop(key, None)
        if self.on_ready is not None:
            self.on_ready(key)

    def delete(self, key: bytes) -> bool:
        """Removes ``key`` (expired or not); whether it was there."""
        if self.data.pop(key, None) is None:
            return False
        self.expires.pop(key, None)
        self._version += 1
        return True

    def drop_if_empty(self, key: bytes, zset: ZSet) -> bool:
        """Removes ``key`` when its set is empty, as Redis never keeps an empty set."""
        if len(zset) == 0 and self.data.get(key) is zset:
            return self.delete(key)
        return False

    def clear(self) -> None:
        """Removes every key."""
        self.data.clear()
        self.expires.clear()
        self._version += 1

    def _expire(self, key: bytes) -> None:
        self.delete(key)
        self.expired_keys += 1
        if self.on_expire is not None:
            self.on_expire(key)

    def sweep(self, budget: int = 1000) -> int:
        """Removes keys past their deadline, looking at up to ``budget`` of them; how many.

        Successive calls walk the keys with a deadline round robin, so every
        such key is looked at within ``len(expires) / budget`` calls.
        """
        if not self.expires or self.loading:
            return 0
        if self._sweep_at >= len(self._sweep_keys):
            self._sweep_keys = list(self.expires)
            self._sweep_at = 0
        end = min(len(self._sweep_keys), self._sweep_at + budget)
        batch = self._sweep_keys[self._sweep_at : end]
        self._sweep_at = end
        now = self.clock()
        removed = 0
        for key in batch:
            when = self.expires.get(key)
            if when is not None and when <= now:
                self._expire(key)
                removed += 1
        return removed

    # --- listing ------------------------------------------------------------------------

    def live_keys(self) -> Iterator[bytes]:
        """The keys not past their deadline (nothing is removed on the way, as KEYS does)."""
        if not self.expires or self.loading:
            yield from list(self.data)
            return
        now = self.clock()
        expires = self.expires
        for key in list(self.data):
            when = expires.get(key)
            if when is None or when > now:
                yield key

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN`` step: ``(next cursor, keys)``, about ``count`` keys from ``cursor``.

        Keys are visited in the order of :func:`key_hash`, and the cursor is
        the hash to go on from (0: start, and done), so a key present for
        the whole iteration is returned exactly once however keys come and go.
        """
        if self._scan_version != self._version:
            pairs = sorted((key_hash(key), key) for key in self.data)
            self._scan_hashes = [pair[0] for pair in pairs]
            self._scan_keys = [pair[1] for pair in pairs]
            self._scan_version = self._version
        hashes = self._scan_hashes
        start = bisect.bisect_left(hashes, cursor)
        end = min(len(hashes), start + max(1, count))
        # Keys of one hash go out together, so the cursor can point past them.
        while 0 < end < len(hashes) and hashes[end] == hashes[end - 1]:
            end += 1
        keys = self._scan_keys[start:end]
        return (hashes[end] if end < len(hashes) else 0), keys
