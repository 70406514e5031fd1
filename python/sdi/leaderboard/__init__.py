"""The real-time leaderboard of chapter 10: a Redis sorted-set server (issue 8).

- :mod:`sdi.leaderboard.keyspace`: keys holding :class:`sdi.zset.ZSet`
  sorted sets, with Redis's expiry (lazy on access plus a periodic sweep)
  and glob matching.
- :mod:`sdi.leaderboard.commands`: the Redis commands (``ZADD`` ...
  ``ZSCAN``, ``DEL`` ... ``SCAN``, the ``EXPIRE`` family) as a command table
  for :class:`sdi.runtime.respserver.RespServer`, with redis-server 7.0's
  replies and errors in RESP2 and RESP3.
- :mod:`sdi.leaderboard.persistence`: the append-only log of write commands
  and the checksummed snapshots, and recovery from them.
- :mod:`sdi.leaderboard.server`: :class:`LeaderboardServer`, the three
  together on asyncio (``fsync`` ``always``, ``everysec`` or ``no``).

redis-py, redis-cli and any Redis client talk to it as to redis-server::

    server = LeaderboardServer("/var/lib/sdi/leaderboard", fsync="always")
    port = await server.start("127.0.0.1", 6379)
    ...
    await server.stop()
"""

from __future__ import annotations

from sdi.leaderboard.commands import ZSetCommands, format_score, keyspace_info, zset_commands
from sdi.leaderboard.keyspace import Keyspace, glob_match, now_ms
from sdi.leaderboard.persistence import FSYNC_POLICIES, AppendOnlyFile, read_aof, read_snapshot
from sdi.leaderboard.server import LeaderboardServer

__all__ = [
    "FSYNC_POLICIES",
    "AppendOnlyFile",
    "Keyspace",
    "LeaderboardServer",
    "ZSetCommands",
    "format_score",
    "glob_match",
    "keyspace_info",
    "now_ms",
    "read_aof",
    "read_snapshot",
    "zset_commands",
]
