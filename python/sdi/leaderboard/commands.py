"""Redis's sorted-set and keyspace commands over a :class:`Keyspace`, for ``RespServer``.

:func:`zset_commands` gives the command table: ``ZADD`` (NX, XX, GT, LT, CH,
INCR), ``ZINCRBY``, ``ZREM``, ``ZSCORE``, ``ZMSCORE``, ``ZCARD``, ``ZCOUNT``,
``ZLEXCOUNT``, ``ZRANK``/``ZREVRANK`` (WITHSCORE, as Redis 7.2), ``ZRANGE``
(BYSCORE, BYLEX, REV, LIMIT, WITHSCORES), ``ZREVRANGE``,
``ZRANGEBYSCORE``, ``ZREVRANGEBYSCORE``, ``ZRANGEBYLEX``, ``ZREVRANGEBYLEX``,
``ZREMRANGEBYRANK``/``SCORE``/``LEX``, ``ZPOPMIN``, ``ZPOPMAX``,
``ZMPOP``, ``ZRANDMEMBER``, ``ZUNION``, ``ZINTER``, ``ZDIFF``,
``ZINTERCARD``, ``ZUNIONSTORE``, ``ZINTERSTORE``, ``ZDIFFSTORE``,
``ZRANGESTORE``, ``ZSCAN``; and over the keys ``DEL``, ``UNLINK``,
``EXISTS``, ``TYPE``, ``KEYS``, ``SCAN``,
``EXPIRE``/``PEXPIRE``/``EXPIREAT``/``PEXPIREAT`` (NX, XX, GT, LT), ``TTL``,
``PTTL``, ``EXPIRETIME``, ``PEXPIRETIME``, ``PERSIST``, ``RENAME``,
``RENAMENX``, ``FLUSHDB``, ``FLUSHALL``, ``DBSIZE``.

Replies and error messages are redis-server 7.0's (the tests compare them
command by command), in RESP2 and RESP3: scores are bulk strings written
as Redis writes them (:func:`format_score`) in RESP2 and doubles in RESP3,
``WITHSCORES`` replies are flat in RESP2 and pairs in RESP3. Only sorted sets
are stored, so ``WRONGTYPE`` never happens and the commands of other types
are unknown. Expired keys vanish on access and by the server's sweep. The
blocking ``BZPOPMIN``, ``BZPOPMAX`` and ``BZMPOP`` wait on the connection
(:meth:`sdi.runtime.respserver.RespServer.block`): clients blocked on a key
are woken in arrival order when it gets members, inside ``MULTI`` they do
not wait, and one that disconnects while it waits takes nothing. One
byte-level difference clients do not see: a ``ZMPOP`` or blocking pop that
finds nothing replies ``$-1`` in RESP2 where Redis sends ``*-1`` (both are
nil). One
deliberate difference: ``ZRANDMEMBER`` with a negative count (members may
repeat) returns at most :data:`RANDMEMBER_REPLY_MAX` members and refuses
more, where Redis would build a reply of any size.

Every command that changes the keyspace hands its effect to ``propagate``
as a command line to append to the log: the command as sent, except that
the ``EXPIRE`` family becomes ``PEXPIREAT`` with the absolute deadline (or
``DEL`` when the deadline has passed) and ``ZMPOP`` the ``ZPOPMIN`` or
``ZPOPMAX`` of the key it popped, so that replaying the log rebuilds the
same keyspace whenever it is replayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

from sdi.errors import InvalidArgument, LimitExceeded
from sdi.leaderboard.keyspace import Keyspace, glob_match
from sdi.resp import SimpleString
from sdi.runtime.respserver import (
    OK,
    SYNTAX_ERROR,
    Client,
    Command,
    Reply,
    RespError,
    parse_float,
    parse_int,
)
from sdi.zset import MEMBER_MAX, ZSet

__all__ = ["LISTPACK_ENTRIES", "ZSetCommands", "format_score", "keyspace_info", "zset_commands"]

#: Redis keeps a sorted set of at most this many members (each at most
#: ``LISTPACK_VALUE`` bytes) in one listpack: ``ZSCAN`` returns it whole.
LISTPACK_ENTRIES = 128
LISTPACK_VALUE = 64
_LONG_MAX = (1 << 63) - 1
#: The most members a ZRANDMEMBER with a negative count (repetition allowed) returns,
#: so that one command cannot make the server build an unbounded reply.
RANDMEMBER_REPLY_MAX = 1 << 22
_EMPTY_SCAN: list[Reply] = [b"0", []]
_ZSET = SimpleString(b"zset")
_NONE = SimpleString(b"none")
_SCAN_BATCH = 10


def format_score(score: float) -> bytes:
    """A score as Redis 7.0 writes it (``d2string``): an integer when it is one below 2^52.

    >>> format_score(1.0), format_score(0.1), format_score(-math.inf), format_score(-0.0)
    (b'1', b'0.10000000000000001', b'-inf', b'-0')
    """
    if math.isinf(score):
        return b"inf" if score > 0 else b"-inf"
    if score == 0:
        return b"-0" if math.copysign(1.0, score) < 0 else b"0"
    if -4503599627370495.0 < score < 4503599627370496.0 and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score


def _score(score: float, protocol: int) -> bytes | float:
    return score if protocol == 3 else format_score(score)


def _with_scores(pairs: Sequence[tuple[bytes, float]], protocol: int) -> list[Reply]:
    if protocol == 3:
        return [[member, score] for member, score in pairs]
    flat: list[Reply] = []
    for member, score in pairs:
        flat.append(member)
        flat.append(format_score(score))
    return flat


def _error(error: InvalidArgument | LimitExceeded) -> RespError:
    """The core's message (Redis's words without the prefix) as an error reply."""
    return RespError(f"ERR {error}")


def _name(argv: list[bytes]) -> str:
    return argv[0].decode("utf-8", "replace").lower()


def _timeout(argument: bytes) -> float:
    """A blocking command's timeout in seconds, checked with Redis's messages (0: none)."""
    value = parse_float(argument, "ERR timeout is not a float or out of range")
    # Redis turns the seconds into a millisecond count; one past the 64-bit range
    # wraps, and 7.0 then calls it negative.
    if value < 0 or value * 1000 > 2**63 - 1:
        raise RespError("ERR timeout is negative")
    return value


def _positive(argument: bytes) -> int:
    message = "ERR value is out of range, must be positive"
    value = parse_int(argument, message)
    if value < 0:
        raise RespError(message)
    return value


def _cursor(argument: bytes) -> int:
    """A SCAN cursor as Redis's ``strtoul`` reads it (a leading ``-`` wraps around)."""
    text = argument
    negative = text.startswith(b"-")
    if negative or text.startswith(b"+"):
        text = text[1:]
    if not text or not text.isdigit():
        raise RespError("ERR invalid cursor")
    value = int(text)
    if value >= 1 << 64:
        raise RespError("ERR invalid cursor")
    return (-value) % (1 << 64) if negative else value


_STRTOD = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan(?:\([0-9a-z_]*\))?"
    rb"|0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?)",
    re.IGNORECASE,
)


def _strtod(text: bytes) -> float | None:
    """C's ``strtod`` over the whole of ``text`` (leading white space allowed), or None."""
    if not text:
        return 0.0  # strtod converts nothing and stops at the end: Redis takes it as 0
    text = text.lstrip(b" \t\n\v\f\r")
    if _STRTOD.fullmatch(text) is None:
        return None
    body = text.lstrip(b"+-")
    if body[:2].lower() == b"0x":
        try:
            value = float.fromhex(body.decode())
        except OverflowError:
            value = math.inf
        return -value if text.startswith(b"-") else value
    if body[:3].lower() == b"nan":
        return math.nan
    return float(text)


def _score_bound(bound: bytes) -> bytes:
    """A ZRANGEBYSCORE bound as Redis reads it (``strtod``), written for the core."""
    exclusive = bound.startswith(b"(")
    value = _strtod(bound[1:] if exclusive else bound)
    if value is None or math.isnan(value):
        raise RespError("ERR min or max is not a float")
    return (b"(" if exclusive else b"") + repr(value).encode()


def _order_bits(score: float) -> int:
    """A ZSCAN cursor for a score: an order-keeping 64-bit integer, never 0."""
    raw = int.from_bytes(struct.pack(">d", score), "big")
    return (~raw & 0xFFFFFFFFFFFFFFFF) if raw >> 63 else raw | (1 << 63)


def _score_of_cursor(cursor: int) -> float | None:
    """The score :func:`_order_bits` gave ``cursor``; None for a cursor it cannot give."""
    if not 0 < cursor < 1 << 64:
        return None
    raw = (cursor & ~(1 << 63)) if cursor >> 63 else (~cursor & 0xFFFFFFFFFFFFFFFF)
    value: float = struct.unpack(">d", raw.to_bytes(8, "big"))[0]
    return None if math.isnan(value) else value


class ZSetCommands:
    """The handlers, over ``keyspace``; ``propagate`` gets each change as a command line."""

    def __init__(
        self,
        keyspace: Keyspace,
        propagate: Callable[[list[bytes]], None] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.propagate: Callable[[list[bytes]], None] = propagate or (lambda argv: None)
        self.random = rng or random.Random()
        #: A set that is never changed: bounds are checked against it for missing keys.
        self._empty = ZSet()
        #: Clients blocked on each key (BZPOPMIN, BZPOPMAX, BZMPOP), in arrival order.
        self._blocked: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        keyspace.on_ready = self.key_ready

    def key_ready(self, key: bytes) -> None:
        """Wakes the first client blocked on ``key`` (it pops, then wakes the next if
        anything is left)."""
        for waiter in self._blocked.get(key, ()):
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- writes -------------------------------------------------------------------------

    def zadd(self, client: Client, argv: list[bytes]) -> Reply:
        reply = self._zadd_command(argv)
        return _score(reply, client.protocol) if isinstance(reply, float) else reply

    def _zadd_command(self, argv: list[bytes]) -> Reply:
        flags = {"nx": False, "xx": False, "gt": False, "lt": False, "ch": False, "incr": False}
        index = 2
        while index < len(argv):
            option = argv[index].lower().decode("latin-1")
            if option not in flags:
                break
            flags[option] = True
            index += 1
        elements = len(argv) - index
        if elements == 0 or elements % 2:
            raise RespError(SYNTAX_ERROR)
        # Redis checks the flags before it parses a score.
        if flags["nx"] and flags["xx"]:
            raise RespError("ERR XX and NX options at the same time are not compatible")
        if flags["gt"] + flags["lt"] + flags["nx"] > 1:
            raise RespError("ERR GT, LT, and/or NX options at the same time are not compatible")
        if flags["incr"] and elements > 2:
            raise RespError("ERR INCR option supports a single increment-element pair")
        scores = [parse_float(score) for score in argv[index::2]]
        return self._zadd(argv, scores, argv[index + 1 :: 2], flags)

    def _zadd(
        self, argv: list[bytes], scores: list[float], members: list[bytes], flags: dict[str, bool]
    ) -> Reply:
        longest = max(len(member) for member in members)
        if longest > MEMBER_MAX:  # refused before anything changes
            raise RespError(
                f"ERR member of {longest} bytes is longer than the {MEMBER_MAX} bytes allowed"
            )
        key = argv[1]
        keyspace = self.keyspace
        zset = keyspace.get(key)
        fresh = zset is None
        target = ZSet() if zset is None else zset
        try:
            reply: Reply = target.zadd(scores, members, **flags)
        except (InvalidArgument, LimitExceeded) as error:
            raise _error(error) from None
        if fresh and len(target):
            keyspace.store(key, target)
        if len(target):
            self.propagate(argv)
        return reply

    def zincrby(self, client: Client, argv: list[bytes]) -> Reply:
        flags = {"nx": False, "xx": False, "gt": False, "lt": False, "ch": False, "incr": True}
        score = self._zadd(argv, [parse_float(argv[2])], [argv[3]], flags)
        return _score(score, client.protocol)

    def zrem(self, client: Client, argv: list[bytes]) -> Reply:
        key = argv[1]
        zset = self.keyspace.get(key)
        if zset is None:
            return 0
        removed = zset.remove(argv[2:])
        if removed:
            self.keyspace.drop_if_empty(key, zset)
            self.propagate(argv)
        return removed

    def _remove_range(self, argv: list[bytes], kind: str) -> Reply:
        key = argv[1]
        start = stop = 0
        low, high = argv[2], argv[3]
        if kind == "rank":
            start, stop = parse_int(low), parse_int(high)
        else:
            low, high = self._check_range(kind, low, high)
        zset = self.keyspace.get(key)
        if zset is None:
            return 0
        try:
            if kind == "rank":
                removed = zset.remove_range_by_rank(start, stop)
            elif kind == "score":
                removed = zset.remove_range_by_score(low, high)
            else:
                removed = zset.remove_range_by_lex(low, high)
        except InvalidArgument as error:
            raise _error(error) from None
        if removed:
            self.keyspace.drop_if_empty(key, zset)
            self.propagate(argv)
        return removed

    def zremrangebyrank(self, client: Client, argv: list[bytes]) -> Reply:
        return self._remove_range(argv, "rank")

    def zremrangebyscore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._remove_range(argv, "score")

    def zremrangebylex(self, client: Client, argv: list[bytes]) -> Reply:
        return self._remove_range(argv, "lex")

    def _pop(self, client: Client, argv: list[bytes], highest: bool) -> Reply:
        if len(argv) > 3:
            raise RespError(SYNTAX_ERROR)
        count = _positive(argv[2]) if len(argv) == 3 else 1
        key = argv[1]
        zset = self.keyspace.get(key)
        if zset is None or count == 0:
            return []
        popped = zset.pop(count, max=highest)
        self.keyspace.drop_if_empty(key, zset)
        self.propagate(argv)
        if len(argv) == 2:
            member, score = popped[0]
            return [member, _score(score, client.protocol)]
        return _with_scores(popped, client.protocol)

    def zpopmin(self, client: Client, argv: list[bytes]) -> Reply:
        return self._pop(client, argv, False)

    def zpopmax(self, client: Client, argv: list[bytes]) -> Reply:
        return self._pop(client, argv, True)

    def _set_operation(
        self, client: Client, argv: list[bytes], op: str, *, store: bool, card: bool = False
    ) -> Reply:
        """Redis's ``zunionInterDiffGenericCommand``: ``op`` is union, inter or diff.

        ``store``: the destination is ``argv[1]`` and numkeys ``argv[2]``
        (``Z*STORE``), else numkeys is ``argv[1]`` and the result is the
        reply (``WITHSCORES`` allowed); ``card``: ``ZINTERCARD`` (``LIMIT``).
        """
        numkeys_at = 2 if store else 1
        numkeys = parse_int(argv[numkeys_at])
        if numkeys < 1:
            raise RespError(f"ERR at least 1 input key is needed for '{_name(argv)}' command")
        if numkeys > len(argv) - numkeys_at - 1:
            raise RespError(SYNTAX_ERROR)
        keys = argv[numkeys_at + 1 : numkeys_at + 1 + numkeys]
        sources = [self.keyspace.get(key) for key in keys]
        weights = [1.0] * numkeys
        aggregate = b"sum"
        with_scores = False
        limit = 0
        weighted = op != "diff" and not card
        index = numkeys_at + 1 + numkeys
        while index < len(argv):
            remaining = len(argv) - index
            option = argv[index].lower()
            if weighted and option == b"weights" and remaining >= numkeys + 1:
                for i in range(numkeys):
                    weights[i] = parse_float(argv[index + 1 + i], "ERR weight value is not a float")
                index += numkeys + 1
            elif weighted and option == b"aggregate" and remaining >= 2:
                aggregate = argv[index + 1].lower()
                if aggregate not in (b"sum", b"min", b"max"):
                    raise RespError(SYNTAX_ERROR)
                index += 2
            elif not store and not card and option == b"withscores":
                with_scores = True
                index += 1
            elif card and option == b"limit" and remaining >= 2:
                limit = parse_int(argv[index + 1], "ERR LIMIT can't be negative")
                if limit < 0:
                    raise RespError("ERR LIMIT can't be negative")
                index += 2
            else:
                raise RespError(SYNTAX_ERROR)
        if op == "union":
            result = _union(sources, weights, _AGGREGATES[aggregate])
        elif op == "inter":
            result = _intersection(sources, weights, _AGGREGATES[aggregate], limit if card else 0)
        else:
            result = _difference(sources)
        if card:
            return len(result)
        if not store:
            pairs = sorted(((member, score) for member, score in result.items()), key=_by_score)
            if with_scores:
                return _with_scores(pairs, client.protocol)
            return [member for member, _ in pairs]
        return self._store_result(argv, argv[1], result)

    def _store_result(
        self, argv: list[bytes], destination: bytes, result: dict[bytes, float]
    ) -> int:
        """Puts ``result`` at ``destination`` (deletes it when empty); its size.

        ``argv`` goes to the log when that changed anything.
        """
        existed = self.keyspace.get(destination) is not None
        if result:
            stored = ZSet()
            stored.zadd(list(result.values()), list(result))
            self.keyspace.store(destination, stored)
        else:
            self.keyspace.delete(destination)
        if result or existed:
            self.propagate(argv)
        return len(result)

    def zunionstore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "union", store=True)

    def zinterstore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "inter", store=True)

    def zdiffstore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "diff", store=True)

    def zunion(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "union", store=False)

    def zinter(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "inter", store=False)

    def zdiff(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "diff", store=False)

    def zintercard(self, client: Client, argv: list[bytes]) -> Reply:
        return self._set_operation(client, argv, "inter", store=False, card=True)

    def zmpop(self, client: Client, argv: list[bytes]) -> Reply:
        """``ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]``: pops from the first non-empty key.

        Logged as ``ZPOPMIN``/``ZPOPMAX key count``, as Redis propagates it.
        """
        numkeys = parse_int(argv[1], "ERR numkeys should be greater than 0")
        if numkeys < 1:
            raise RespError("ERR numkeys should be greater than 0")
        where_at = 1 + numkeys + 1
        if where_at >= len(argv):
            raise RespError(SYNTAX_ERROR)
        where = argv[where_at].lower()
        if where not in (b"min", b"max"):
            raise RespError(SYNTAX_ERROR)
        count = -1
        index = where_at + 1
        while index < len(argv):
            if count == -1 and argv[index].lower() == b"count" and index + 1 < len(argv):
                count = parse_int(argv[index + 1], "ERR count should be greater than 0")
                if count < 1:
                    raise RespError("ERR count should be greater than 0")
                index += 2
            else:
                raise RespError(SYNTAX_ERROR)
        count = max(count, 1)
        for key in argv[2:where_at]:
            zset = self.keyspace.get(key)
            if zset is None:
                continue
            popped = zset.pop(count, max=where == b"max")
            self.keyspace.drop_if_empty(key, zset)
            name = b"ZPOPMAX" if where == b"max" else b"ZPOPMIN"
            self.propagate([name, key, b"%d" % count])
            protocol = client.protocol
            return [key, [[member, _score(score, protocol)] for member, score in popped]]
        return None

    # --- blocking pops --------------------------------------------------------------------

    async def bzpopmin(self, client: Client, argv: list[bytes]) -> Reply:
        return await self._blocking_pop(client, argv, highest=False)

    async def bzpopmax(self, client: Client, argv: list[bytes]) -> Reply:
        return await self._blocking_pop(client, argv, highest=True)

    async def _blocking_pop(self, client: Client, argv: list[bytes], *, highest: bool) -> Reply:
        """``BZPOPMIN|BZPOPMAX key [key ...] timeout``: ``[key, member, score]`` from the first
        non-empty key, waiting up to ``timeout`` seconds (0: for ever) for one; nil on
        timeout. Logged as ``ZPOPMIN|ZPOPMAX key``, as Redis propagates it."""
        timeout = _timeout(argv[-1])
        keys = argv[1:-1]
        name = b"ZPOPMAX" if highest else b"ZPOPMIN"

        def attempt() -> Reply:
            for key in keys:
                zset = self.keyspace.get(key)
                if zset is None:
                    continue
                member, score = zset.pop(1, max=highest)[0]
                self.keyspace.drop_if_empty(key, zset)
                self.propagate([name, key])
                if key in self.keyspace.data:
                    self.key_ready(key)
                return [key, member, _score(score, client.protocol)]
            return None

        return await self._block(client, keys, timeout, attempt)

    async def bzmpop(self, client: Client, argv: list[bytes]) -> Reply:
        """``BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]``: ZMPOP, waiting up
        to ``timeout`` seconds (0: for ever) for a non-empty key; nil on timeout."""
        timeout = _timeout(argv[1])
        inner = [b"ZMPOP", *argv[2:]]
        first = self.zmpop(client, inner)  # checks the arguments before any wait
        if first is not None:
            return first
        numkeys = parse_int(argv[2])
        return await self._block(
            client, argv[3 : 3 + numkeys], timeout, lambda: self.zmpop(client, inner)
        )

    async def _block(
        self, client: Client, keys: list[bytes], timeout: float, attempt: Callable[[], Reply]
    ) -> Reply:
        """``attempt()`` now, then each time a key is ready, until it answers or the time
        is up (nil). Inside MULTI/EXEC, or for a client not on a connection, it does not
        wait (as Redis does not)."""
        reply = attempt()
        if reply is not None or client.executing or client.reader is None:
            return reply
        loop = asyncio.get_running_loop()
        deadline = None if timeout == 0 else loop.time() + timeout
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            for key in keys:
                self._blocked.setdefault(key, collections.deque()).append(waiter)
            answered = False
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                if not await client.server.block(client, waiter, remaining):
                    return None
                reply = attempt()
                answered = reply is not None
            finally:
                for key in keys:
                    waiters = self._blocked.get(key)
                    if waiters is not None:
                        with contextlib.suppress(ValueError):
                            waiters.remove(waiter)
                        if not waiters:
                            del self._blocked[key]
                if waiter.done() and not answered:
                    # Woken but gone, or too late: pass the wake-up on.
                    for key in keys:
                        if key in self.keyspace.data:
                            self.key_ready(key)
            if answered:
                return reply

    # --- reads --------------------------------------------------------------------------

    def zscore(self, client: Client, argv: list[bytes]) -> Reply:
        zset = self.keyspace.get(argv[1])
        score = None if zset is None else zset.score(argv[2])
        return None if score is None else _score(score, client.protocol)

    def zmscore(self, client: Client, argv: list[bytes]) -> Reply:
        zset = self.keyspace.get(argv[1])
        if zset is None:
            return [None] * (len(argv) - 2)
        protocol = client.protocol
        return [
            None if score is None else _score(score, protocol) for score in zset.mscore(argv[2:])
        ]

    def zcard(self, client: Client, argv: list[bytes]) -> Reply:
        zset = self.keyspace.get(argv[1])
        return 0 if zset is None else len(zset)

    def _check_range(self, kind: str, low: bytes, high: bytes) -> tuple[bytes, bytes]:
        """The bounds, checked as Redis checks them (before it looks the key up)."""
        if kind == "score":
            return _score_bound(low), _score_bound(high)
        try:
            self._empty.count_by_lex(low, high)
        except InvalidArgument as error:
            raise _error(error) from None
        return low, high

    def zcount(self, client: Client, argv: list[bytes]) -> Reply:
        low, high = self._check_range("score", argv[2], argv[3])
        zset = self.keyspace.get(argv[1])
        return 0 if zset is None else zset.count_by_score(low, high)

    def zlexcount(self, client: Client, argv: list[bytes]) -> Reply:
        low, high = self._check_range("lex", argv[2], argv[3])
        zset = self.keyspace.get(argv[1])
        return 0 if zset is None else zset.count_by_lex(low, high)

    def _rank(self, client: Client, argv: list[bytes], rev: bool) -> Reply:
        with_score = False
        if len(argv) > 4:
            raise RespError(SYNTAX_ERROR)
        if len(argv) == 4:
            if argv[3].lower() != b"withscore":
                raise RespError(SYNTAX_ERROR)
            with_score = True
        zset = self.keyspace.get(argv[1])
        found = None if zset is None else zset.rank(argv[2], rev)
        if found is None:
            return None
        rank, score = found
        return [rank, _score(score, client.protocol)] if with_score else rank

    def zrank(self, client: Client, argv: list[bytes]) -> Reply:
        return self._rank(client, argv, False)

    def zrevrank(self, client: Client, argv: list[bytes]) -> Reply:
        return self._rank(client, argv, True)

    def _range(
        self,
        client: Client,
        argv: list[bytes],
        kind: str | None,
        rev: bool | None,
        *,
        store: bool = False,
    ) -> Reply:
        """Redis's ``zrangeGenericCommand``: ``kind`` rank/score/lex, None for ZRANGE's choice.

        ``store``: ``ZRANGESTORE dst src min max ...``, the range replaces
        ``dst`` and the reply is its size; else ``argv[1]`` is the source.
        """
        at = 2 if store else 1  # the source key; its bounds follow it
        with_scores = False
        offset, limit = 0, -1
        index = at + 3
        while index < len(argv):
            option = argv[index].lower()
            remaining = len(argv) - index - 1
            if not store and option == b"withscores":
                with_scores = True
            elif option == b"limit" and remaining >= 2:
                offset = parse_int(argv[index + 1])
                limit = parse_int(argv[index + 2])
                index += 2
            elif rev is None and option == b"rev":
                rev = True
            elif kind is None and option == b"bylex":
                kind = "lex"
            elif kind is None and option == b"byscore":
                kind = "score"
            else:
                raise RespError(SYNTAX_ERROR)
            index += 1
        rev = bool(rev)
        kind = kind or "rank"
        if limit != -1 and kind == "rank":
            raise RespError(
                "ERR syntax error, LIMIT is only supported in combination with either BYSCORE"
                " or BYLEX"
            )
        if with_scores and kind == "lex":
            raise RespError("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
        low, high = argv[at + 1], argv[at + 2]
        if rev and kind != "rank":
            low, high = high, low
        start = stop = 0
        if kind == "rank":
            start, stop = parse_int(low), parse_int(high)
        else:
            low, high = self._check_range(kind, low, high)
        zset = self.keyspace.get(argv[at])
        pairs: list[tuple[bytes, float]]
        if zset is None:
            pairs = []
        elif kind == "lex":
            if offset < 0:
                members = []
            else:
                members = zset.range_by_lex(low, high, rev, offset, limit if limit >= 0 else -1)
            if not store:
                return members
            # Members of one lex range share their score (else the range is unspecified).
            scores = zset.mscore(members)
            pairs = [
                (member, score)
                for member, score in zip(members, scores, strict=True)
                if score is not None
            ]
        elif kind == "rank":
            pairs = zset.range_by_rank(start, stop, rev)
        elif offset < 0:
            pairs = []
        else:
            pairs = zset.range_by_score(low, high, rev, offset, limit if limit >= 0 else -1)
        if store:
            return self._store_result(argv, argv[1], dict(pairs))
        if with_scores:
            return _with_scores(pairs, client.protocol)
        return [member for member, _ in pairs]

    def zrange(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, None, None)

    def zrangestore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, None, None, store=True)

    def zrevrange(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, "rank", True)

    def zrangebyscore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, "score", False)

    def zrevrangebyscore(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, "score", True)

    def zrangebylex(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, "lex", False)

    def zrevrangebylex(self, client: Client, argv: list[bytes]) -> Reply:
        return self._range(client, argv, "lex", True)

    def zrandmember(self, client: Client, argv: list[bytes]) -> Reply:
        if len(argv) == 2:
            zset = self.keyspace.get(argv[1])
            if zset is None or not len(zset):
                return None
            found = zset.get_by_rank(self.random.randrange(len(zset)))
            return None if found is None else found[0]
        count = parse_int(argv[2])
        if count < -_LONG_MAX:
            raise RespError(
                "ERR value is out of range, value must between -9223372036854775807 and"
                " 9223372036854775807"
            )
        if len(argv) > 4 or (len(argv) == 4 and argv[3].lower() != b"withscores"):
            raise RespError(SYNTAX_ERROR)
        with_scores = len(argv) == 4
        if with_scores and not -_LONG_MAX // 2 <= count <= _LONG_MAX // 2:
            raise RespError("ERR value is out of range")
        zset = self.keyspace.get(argv[1])
        if zset is None or count == 0:
            return []
        size = len(zset)
        picks: list[tuple[bytes, float]]
        if count < -RANDMEMBER_REPLY_MAX:
            # Redis would build the reply (and its memory) whatever the size.
            raise RespError(
                f"ERR count is too large: at most {RANDMEMBER_REPLY_MAX} members with"
                " repetition in one ZRANDMEMBER reply"
            )
        if count < 0:
            ranks = [self.random.randrange(size) for _ in range(-count)]
        elif count >= size:
            picks = zset.items()  # the whole set, in order, as Redis gives it
            ranks = []
        else:
            ranks = self.random.sample(range(size), count)
        if ranks:
            picks = []
            for rank in ranks:
                found = zset.get_by_rank(rank)
                if found is not None:
                    picks.append(found)
        if with_scores:
            return _with_scores(picks, client.protocol)
        return [member for member, _ in picks]

    def zscan(self, client: Client, argv: list[bytes]) -> Reply:
        cursor = _cursor(argv[2])
        zset = self.keyspace.get(argv[1])
        if zset is None:
            return _EMPTY_SCAN
        count, pattern, _ = _scan_options(argv, 3, allow_type=False)
        if len(zset) <= LISTPACK_ENTRIES:
            pairs = zset.items()
            if all(len(member) <= LISTPACK_VALUE for member, _ in pairs):
                # Redis returns a small (listpack) set whole, whatever the cursor.
                return [b"0", _flat_strings(pairs, pattern)]
        pairs, next_cursor = _zscan_step(zset, cursor, count)
        return [b"%d" % next_cursor, _flat_strings(pairs, pattern)]

    # --- keys ---------------------------------------------------------------------------

    def delete(self, client: Client, argv: list[bytes]) -> Reply:
        keyspace = self.keyspace
        removed: list[bytes] = []
        for key in argv[1:]:  # one at a time: DEL k k removes k once
            if keyspace.get(key) is not None:
                keyspace.delete(key)
                removed.append(key)
        if removed:
            # Only the keys that were there: the log and WATCH see what changed.
            self.propagate([argv[0], *removed])
        return len(removed)

    def exists(self, client: Client, argv: list[bytes]) -> Reply:
        get = self.keyspace.get
        return sum(get(key) is not None for key in argv[1:])

    def type(self, client: Client, argv: list[bytes]) -> Reply:
        return _ZSET if self.keyspace.get(argv[1]) is not None else _NONE

    def keys(self, client: Client, argv: list[bytes]) -> Reply:
        pattern = argv[1]
        if pattern == b"*":
            return list(self.keyspace.live_keys())
        return [key for key in self.keyspace.live_keys() if glob_match(pattern, key)]

    def scan(self, client: Client, argv: list[bytes]) -> Reply:
        cursor = _cursor(argv[1])
        count, pattern, type_name = _scan_options(argv, 2, allow_type=True)
        next_cursor, keys = self.keyspace.scan(cursor, count)
        found = []
        for key in keys:
            if pattern is not None and not glob_match(pattern, key):
                continue
            if type_name is not None and type_name.lower() != b"zset":
                continue
            if self.keyspace.get(key) is None:
                continue
            found.append(key)
        return [b"%d" % next_cursor, found]

    def dbsize(self, client: Client, argv: list[bytes]) -> Reply:
        return len(self.keyspace)

    def flushall(self, client: Client, argv: list[bytes]) -> Reply:
        if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"async", b"sync")):
            raise RespError(SYNTAX_ERROR)
        self.keyspace.clear()
        self.propagate(argv)
        return OK

    def rename(self, client: Client, argv: list[bytes]) -> Reply:
        return self._rename(argv, nx=False)

    def renamenx(self, client: Client, argv: list[bytes]) -> Reply:
        return self._rename(argv, nx=True)

    def _rename(self, argv: list[bytes], nx: bool) -> Reply:
        source, target = argv[1], argv[2]
        keyspace = self.keyspace
        zset = keyspace.get(source)
        if zset is None:
            raise RespError("ERR no such key")
        if source == target:
            return 0 if nx else OK
        if nx and keyspace.get(target) is not None:
            return 0
        deadline = keyspace.expires.get(source)
        keyspace.delete(source)
        keyspace.store(target, zset)
        if deadline is not None:
            keyspace.expires[target] = deadline
        self.propagate(argv)
        return 1 if nx else OK

    # --- expiry -------------------------------------------------------------------------

    def _expire(self, argv: list[bytes], base: int, unit: int) -> Reply:
        nx = xx = gt = lt = False
        for option in argv[3:]:
            lowered = option.lower()
            if lowered == b"nx":
                nx = True
            elif lowered == b"xx":
                xx = True
            elif lowered == b"gt":
                gt = True
            elif lowered == b"lt":
                lt = True
            else:
                text = option.split(b"\0", 1)[0].decode("utf-8", "replace")
                raise RespError(f"ERR Unsupported option {text}")
        if nx and (xx or gt or lt):
            raise RespError("ERR NX and XX, GT or LT options at the same time are not compatible")
        if gt and lt:
            raise RespError("ERR GT and LT options at the same time are not compatible")
        when = parse_int(argv[2])
        invalid = f"ERR invalid expire time in '{_name(argv)}' command"
        if unit == 1000:
            if when > _LONG_MAX // 1000 or when < -(_LONG_MAX // 1000) - 1:
                raise RespError(invalid)
            when *= 1000
        if when > _LONG_MAX - base:
            raise RespError(invalid)
        when += base
        key = argv[1]
        keyspace = self.keyspace
        if keyspace.get(key) is None:
            return 0
        current = keyspace.expires.get(key)
        if nx and current is not None:
            return 0
        if xx and current is None:
            return 0
        if gt and (current is None or when <= current):
            return 0
        if lt and current is not None and when >= current:
            return 0
        if when <= keyspace.clock() and not keyspace.loading:
            keyspace.delete(key)
            self.propagate([b"DEL", key])
            return 1
        keyspace.expires[key] = when
        self.propagate([b"PEXPIREAT", key, b"%d" % when])
        return 1

    def expire(self, client: Client, argv: list[bytes]) -> Reply:
        return self._expire(argv, self.keyspace.clock(), 1000)

    def pexpire(self, client: Client, argv: list[bytes]) -> Reply:
        return self._expire(argv, self.keyspace.clock(), 1)

    def expireat(self, client: Client, argv: list[bytes]) -> Reply:
        return self._expire(argv, 0, 1000)

    def pexpireat(self, client: Client, argv: list[bytes]) -> Reply:
        return self._expire(argv, 0, 1)

    def _ttl(self, argv: list[bytes], milliseconds: bool, absolute: bool) -> Reply:
        key = argv[1]
        if self.keyspace.get(key) is None:
            return -2
        when = self.keyspace.expires.get(key)
        if when is None:
            return -1
        if absolute:
            return when if milliseconds else (when + 500) // 1000
        left = max(0, when - self.keyspace.clock())
        return left if milliseconds else (left + 500) // 1000

    def ttl(self, client: Client, argv: list[bytes]) -> Reply:
        return self._ttl(argv, False, False)

    def pttl(self, client: Client, argv: list[bytes]) -> Reply:
        return self._ttl(argv, True, False)

    def expiretime(self, client: Client, argv: list[bytes]) -> Reply:
        return self._ttl(argv, False, True)

    def pexpiretime(self, client: Client, argv: list[bytes]) -> Reply:
        return self._ttl(argv, True, True)

    def persist(self, client: Client, argv: list[bytes]) -> Reply:
        key = argv[1]
        if self.keyspace.get(key) is None or self.keyspace.expires.pop(key, None) is None:
            return 0
        self.propagate(argv)
        return 1


def _weighted(weight: float, score: float) -> float:
    value = weight * score
    return 0.0 if math.isnan(value) else value


def _sum(a: float, b: float) -> float:
    value = a + b
    return 0.0 if math.isnan(value) else value


def _by_score(pair: tuple[bytes, float]) -> tuple[float, bytes]:
    return pair[1], pair[0]


def _union(
    sources: list[ZSet | None], weights: list[float], combine: Callable[[float, float], float]
) -> dict[bytes, float]:
    # Redis walks the sources from the smallest (a stable sort), which
    # fixes the order of the floating-point sums.
    result: dict[bytes, float] = {}
    for i in sorted(range(len(sources)), key=lambda i: _size(sources[i])):
        source = sources[i]
        if source is None:
            continue
        weight = weights[i]
        for member, score in source.items():
            value = _weighted(weight, score)
            old = result.get(member)
            result[member] = value if old is None else combine(old, value)
    return result


def _intersection(
    sources: list[ZSet | None],
    weights: list[float],
    combine: Callable[[float, float], float],
    limit: int = 0,
) -> dict[bytes, float]:
    """The members in every source, from the smallest; stops at ``limit`` members (0: all)."""
    result: dict[bytes, float] = {}
    if any(source is None for source in sources):
        return result
    order = sorted(range(len(sources)), key=lambda i: _size(sources[i]))
    first = sources[order[0]]
    assert first is not None
    others = [(sources[i], weights[i]) for i in order[1:]]
    for member, score in first.items():
        value = _weighted(weights[order[0]], score)
        for source, weight in others:
            assert source is not None
            other = source.score(member)
            if other is None:
                break
            value = combine(value, _weighted(weight, other))
        else:
            result[member] = value
            if limit and len(result) >= limit:
                break
    return result


def _difference(sources: list[ZSet | None]) -> dict[bytes, float]:
    """The members of the first source in none of the others, with their scores."""
    first = sources[0]
    if first is None:
        return {}
    others = [source for source in sources[1:] if source is not None]
    return {
        member: score
        for member, score in first.items()
        if all(other.score(member) is None for other in others)
    }


def _size(source: ZSet | None) -> int:
    return 0 if source is None else len(source)


_AGGREGATES: dict[bytes, Callable[[float, float], float]] = {
    b"sum": _sum,
    b"min": lambda a, b: b if b < a else a,
    b"max": lambda a, b: b if b > a else a,
}


def _scan_options(
    argv: list[bytes], index: int, *, allow_type: bool
) -> tuple[int, bytes | None, bytes | None]:
    count = _SCAN_BATCH
    pattern: bytes | None = None
    type_name: bytes | None = None
    while index < len(argv):
        option = argv[index].lower()
        remaining = len(argv) - index
        if option == b"count" and remaining >= 2:
            count = parse_int(argv[index + 1])
            if count < 1:
                raise RespError(SYNTAX_ERROR)
        elif option == b"match" and remaining >= 2:
            pattern = None if argv[index + 1] == b"*" else argv[index + 1]
        elif option == b"type" and allow_type and remaining >= 2:
            type_name = argv[index + 1]
        else:
            raise RespError(SYNTAX_ERROR)
        index += 2
    return count, pattern, type_name


def _flat_strings(pairs: Sequence[tuple[bytes, float]], pattern: bytes | None) -> list[Reply]:
    flat: list[Reply] = []
    for member, score in pairs:
        if pattern is None or glob_match(pattern, member):
            flat.append(member)
            flat.append(format_score(score))
    return flat


def _zscan_step(zset: ZSet, cursor: int, count: int) -> tuple[list[tuple[bytes, float]], int]:
    """About ``count`` members from the score the cursor names, whole ties at the end.

    The cursor is the next score to return as an order-keeping integer, so
    a member whose score stays the same through the iteration is returned
    exactly once, whatever else is added or removed.
    """
    start = _score_of_cursor(cursor) if cursor else -math.inf
    if start is None:
        return [], 0
    low = b"-inf" if start == -math.inf else repr(start).encode()
    pairs = zset.range_by_score(low, b"+inf", False, 0, count)
    if not pairs:
        return [], 0
    last = pairs[-1][1]
    bound = repr(last).encode()
    ties = zset.range_by_score(bound, bound)
    seen = {member for member, score in pairs if score == last}
    pairs.extend(pair for pair in ties if pair[0] not in seen)
    after = zset.range_by_score(b"(" + bound, b"+inf", False, 0, 1)
    return pairs, (_order_bits(after[0][1]) if after else 0)


def _command_table(handlers: ZSetCommands) -> dict[str, Command]:
    z = "sortedset"
    k = "keyspace"
    read = ("readonly",)
    fast_read = ("readonly", "fast")
    write = ("write", "denyoom")
    # Commands whose keys follow a numkeys argument (``COMMAND`` shows no fixed positions).
    movable_read = ("readonly", "movablekeys")
    movable_write = ("write", "denyoom", "movablekeys")
    fast_write = ("write", "denyoom", "fast")
    return {
        "zadd": Command(handlers.zadd, -4, fast_write, 1, 1, 1, z, "Add members or scores"),
        "zincrby": Command(handlers.zincrby, 4, fast_write, 1, 1, 1, z, "Add to a score"),
        "zrem": Command(handlers.zrem, -3, ("write", "fast"), 1, 1, 1, z, "Remove members"),
        "zscore": Command(handlers.zscore, 3, fast_read, 1, 1, 1, z, "Score of a member"),
        "zmscore": Command(handlers.zmscore, -3, fast_read, 1, 1, 1, z, "Scores of members"),
        "zcard": Command(handlers.zcard, 2, fast_read, 1, 1, 1, z, "Number of members"),
        "zcount": Command(handlers.zcount, 4, fast_read, 1, 1, 1, z, "Count in a score range"),
        "zlexcount": Command(handlers.zlexcount, 4, fast_read, 1, 1, 1, z, "Count in lex range"),
        "zrank": Command(handlers.zrank, -3, fast_read, 1, 1, 1, z, "Rank of a member"),
        "zrevrank": Command(handlers.zrevrank, -3, fast_read, 1, 1, 1, z, "Reverse rank"),
        "zrange": Command(handlers.zrange, -4, read, 1, 1, 1, z, "Members in a range"),
        "zrevrange": Command(
            handlers.zrevrange, -4, read, 1, 1, 1, z, "Members by rank, high first"
        ),
        "zrangebyscore": Command(handlers.zrangebyscore, -4, read, 1, 1, 1, z, "By score"),
        "zrevrangebyscore": Command(handlers.zrevrangebyscore, -4, read, 1, 1, 1, z, "By score"),
        "zrangebylex": Command(handlers.zrangebylex, -4, read, 1, 1, 1, z, "By member"),
        "zrevrangebylex": Command(handlers.zrevrangebylex, -4, read, 1, 1, 1, z, "By member"),
        "zremrangebyrank": Command(handlers.zremrangebyrank, 4, ("write",), 1, 1, 1, z, "Trim"),
        "zremrangebyscore": Command(handlers.zremrangebyscore, 4, ("write",), 1, 1, 1, z, "Trim"),
        "zremrangebylex": Command(handlers.zremrangebylex, 4, ("write",), 1, 1, 1, z, "Trim"),
        "zpopmin": Command(handlers.zpopmin, -2, ("write", "fast"), 1, 1, 1, z, "Pop lowest"),
        "zpopmax": Command(handlers.zpopmax, -2, ("write", "fast"), 1, 1, 1, z, "Pop highest"),
        "zrandmember": Command(handlers.zrandmember, -2, read, 1, 1, 1, z, "Random members"),
        "zunionstore": Command(
            handlers.zunionstore, -4, movable_write, 1, 1, 1, z, "Store a union"
        ),
        "zinterstore": Command(
            handlers.zinterstore, -4, movable_write, 1, 1, 1, z, "Store an intersection"
        ),
        "zdiffstore": Command(
            handlers.zdiffstore, -4, movable_write, 1, 1, 1, z, "Store a difference"
        ),
        "zunion": Command(handlers.zunion, -3, movable_read, 0, 0, 0, z, "Union of sets"),
        "zinter": Command(handlers.zinter, -3, movable_read, 0, 0, 0, z, "Intersection"),
        "zdiff": Command(handlers.zdiff, -3, movable_read, 0, 0, 0, z, "Difference of sets"),
        "zintercard": Command(
            handlers.zintercard, -3, movable_read, 0, 0, 0, z, "Intersection size"
        ),
        "zrangestore": Command(handlers.zrangestore, -5, write, 1, 2, 1, z, "Store a range"),
        "zmpop": Command(
            handlers.zmpop, -4, ("write", "movablekeys"), 0, 0, 0, z, "Pop from the first set"
        ),
        "bzpopmin": Command(
            handlers.bzpopmin, -3, ("write", "blocking", "fast"), 1, -2, 1, z, "Pop or wait"
        ),
        "bzpopmax": Command(
            handlers.bzpopmax, -3, ("write", "blocking", "fast"), 1, -2, 1, z, "Pop or wait"
        ),
        "bzmpop": Command(
            handlers.bzmpop, -5, ("write", "blocking", "movablekeys"), 0, 0, 0, z, "ZMPOP or wait"
        ),
        "zscan": Command(handlers.zscan, -3, read, 1, 1, 1, z, "Iterate members"),
        "del": Command(handlers.delete, -2, ("write",), 1, -1, 1, k, "Delete keys"),
        "unlink": Command(handlers.delete, -2, ("write", "fast"), 1, -1, 1, k, "Delete keys"),
        "exists": Command(handlers.exists, -2, fast_read, 1, -1, 1, k, "Count existing keys"),
        "type": Command(handlers.type, 2, fast_read, 1, 1, 1, k, "Type of a key"),
        "keys": Command(handlers.keys, 2, read, 0, 0, 0, k, "Keys matching a glob"),
        "scan": Command(handlers.scan, -2, read, 0, 0, 0, k, "Iterate keys"),
        "expire": Command(handlers.expire, -3, ("write", "fast"), 1, 1, 1, k, "Set a TTL (s)"),
        "pexpire": Command(handlers.pexpire, -3, ("write", "fast"), 1, 1, 1, k, "Set a TTL (ms)"),
        "expireat": Command(handlers.expireat, -3, ("write", "fast"), 1, 1, 1, k, "Deadline (s)"),
        "pexpireat": Command(handlers.pexpireat, -3, ("write", "fast"), 1, 1, 1, k, "Deadline"),
        "ttl": Command(handlers.ttl, 2, fast_read, 1, 1, 1, k, "Time to live (s)"),
        "pttl": Command(handlers.pttl, 2, fast_read, 1, 1, 1, k, "Time to live (ms)"),
        "expiretime": Command(handlers.expiretime, 2, fast_read, 1, 1, 1, k, "Deadline (s)"),
        "pexpiretime": Command(handlers.pexpiretime, 2, fast_read, 1, 1, 1, k, "Deadline (ms)"),
        "persist": Command(handlers.persist, 2, ("write", "fast"), 1, 1, 1, k, "Remove the TTL"),
        "rename": Command(handlers.rename, 3, ("write",), 1, 2, 1, k, "Rename a key"),
        "renamenx": Command(handlers.renamenx, 3, ("write", "fast"), 1, 2, 1, k, "Rename if new"),
        "dbsize": Command(handlers.dbsize, 1, fast_read, 0, 0, 0, "server", "Number of keys"),
        "flushdb": Command(handlers.flushall, -1, ("write",), 0, 0, 0, "server", "Delete all"),
        "flushall": Command(handlers.flushall, -1, ("write",), 0, 0, 0, "server", "Delete all"),
    }


def zset_commands(
    keyspace: Keyspace,
    propagate: Callable[[list[bytes]], None] | None = None,
    *,
    rng: random.Random | None = None,
) -> dict[str, Command]:
    """The command table for :class:`sdi.runtime.respserver.RespServer`, over ``keyspace``.

    ``propagate`` gets the command line of every change (for the log);
    ``rng`` draws ZRANDMEMBER's picks.
    """
    return _command_table(ZSetCommands(keyspace, propagate, rng=rng))


def keyspace_info(keyspace: Keyspace) -> dict[str, Any]:
    """The ``# Keyspace`` section of INFO (database 0), empty when there are no keys."""
    if not len(keyspace):
        return {}
    return {"db0": f"keys={len(keyspace)},expires={len(keyspace.expires)},avg_ttl=0"}
