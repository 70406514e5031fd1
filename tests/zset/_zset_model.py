"""A tiny pure-Python model of a Redis sorted set, to check ``sdi.zset.ZSet`` against.

A dict member -> score; the order is ``sorted`` by ``(score, member bytes)``.
Errors are raised as ``ModelError`` carrying the message the real set must
give (Redis's wording without ``ERR``). Lex ranges follow the core's stated
behaviour: on equal scores the members within the bounds; on mixed scores
Redis's listpack scan (first element at or past the near bound starts the
range if it is within the far bound, the first element past the far bound
stops it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class ModelError(Exception):
    """The call must fail with this message (InvalidArgument)."""


NX_XX = "XX and NX options at the same time are not compatible"
GT_LT_NX = "GT, LT, and/or NX options at the same time are not compatible"
INCR_MANY = "INCR option supports a single increment-element pair"
NOT_FLOAT = "value is not a valid float"
NAN_RESULT = "resulting score is not a number (NaN)"
BAD_SCORE_BOUND = "min or max is not a float"
BAD_LEX_BOUND = "min or max not valid string range item"


def parse_score_bound(text: bytes) -> tuple[float, bool]:
    """``(value, exclusive)`` for the bounds the tests generate (no spaces, no empties)."""
    exclusive = text.startswith(b"(")
    body = text[1:] if exclusive else text
    try:
        value = float(body)
    except ValueError:
        raise ModelError(BAD_SCORE_BOUND) from None
    if math.isnan(value):
        raise ModelError(BAD_SCORE_BOUND)
    return value, exclusive


LexBound = tuple[int, bytes, bool]  # (0 min | 1 member | 2 max, member, exclusive)


def parse_lex_bound(text: bytes) -> LexBound:
    if text == b"-":
        return (0, b"", False)
    if text == b"+":
        return (2, b"", False)
    if text[:1] == b"[":
        return (1, text[1:], False)
    if text[:1] == b"(":
        return (1, text[1:], True)
    raise ModelError(BAD_LEX_BOUND)


def _gte_min(bound: LexBound, member: bytes) -> bool:
    kind, value, exclusive = bound
    if kind != 1:
        return kind == 0
    return member > value if exclusive else member >= value


def _lte_max(bound: LexBound, member: bytes) -> bool:
    kind, value, exclusive = bound
    if kind != 1:
        return kind == 2
    return member < value if exclusive else member <= value


def rank_interval(start: int, stop: int, n: int) -> tuple[int, int]:
    """Redis's normalisation of ``start stop`` to ranks ``[a, b)``."""
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    start = max(start, 0)
    if start > stop or start >= n:
        return 0, 0
    return start, min(stop, n - 1) + 1


def limit(items: list[object], offset: int, count: int) -> list[object]:
    if offset < 0:
        return []
    rest = items[offset:]
    return rest if count < 0 else rest[:count]


class Model:
    def __init__(self) -> None:
        self.scores: dict[bytes, float] = {}

    def items(self) -> list[tuple[bytes, float]]:
        return sorted(self.scores.items(), key=lambda kv: (kv[1], kv[0]))

    def __len__(self) -> int:
        return len(self.scores)

    def zadd(
        self,
        scores: Sequence[float],
        members: Sequence[bytes],
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
        ch: bool = False,
        incr: bool = False,
    ) -> int | float | None:
        if len(scores) != len(members):
            raise ModelError(f"{len(scores)} scores for {len(members)} members")
        if nx and xx:
            raise ModelError(NX_XX)
        if gt + lt + nx > 1:
            raise ModelError(GT_LT_NX)
        if incr and len(scores) > 1:
            raise ModelError(INCR_MANY)
        if any(math.isnan(s) for s in scores):
            raise ModelError(NOT_FLOAT)
        added = changed = 0
        last: float | None = None
        for score, member in zip(scores, members, strict=True):
            if member in self.scores:
                if nx:
                    last = None
                    continue
                current = self.scores[member]
                new = score + current if incr else score
                if math.isnan(new):
                    raise ModelError(NAN_RESULT)
                if (lt and new >= current) or (gt and new <= current):
                    last = None
                    continue
                last = new
                if new != current:
                    self.scores[member] = new + 0.0
                    changed += 1
            elif xx:
                last = None
            else:
                self.scores[member] = score + 0.0
                added += 1
                last = score
        if incr:
            return last
        return added + changed if ch else added

    def incr(self, delta: float, member: bytes) -> float:
        result = self.zadd([delta], [member], incr=True)
        assert isinstance(result, float)
        return result

    def remove(self, members: Sequence[bytes]) -> int:
        removed = 0
        for member in members:
            if self.scores.pop(member, None) is not None:
                removed += 1
        return removed

    def rank(self, member: bytes, rev: bool = False) -> tuple[int, float] | None:
        if member not in self.scores:
            return None
        items = self.items()
        rank = items.index((member, self.scores[member]))
        return (len(items) - 1 - rank if rev else rank), self.scores[member]

    def range_by_rank(self, start: int, stop: int, rev: bool = False) -> list[tuple[bytes, float]]:
        items = self.items()
        if rev:
            items.reverse()
        a, b = rank_interval(start, stop, len(items))
        return items[a:b]

    def _in_score_range(self, score: float, low: bytes, high: bytes) -> bool:
        lo, lo_ex = parse_score_bound(low)
        hi, hi_ex = parse_score_bound(high)
        above = score > lo if lo_ex else score >= lo
        below = score < hi if hi_ex else score <= hi
        return above and below

    def range_by_score(
        self, low: bytes, high: bytes, rev: bool = False, offset: int = 0, count: int = -1
    ) -> list[tuple[bytes, float]]:
        parse_score_bound(low), parse_score_bound(high)
        items = self.items()
        if rev:
            items.reverse()
        inside = [kv for kv in items if self._in_score_range(kv[1], low, high)]
        return limit(inside, offset, count)  # type: ignore[return-value]

    def count_by_score(self, low: bytes, high: bytes) -> int:
        return len(self.range_by_score(low, high))

    def _lex_interval(self, low: bytes, high: bytes, rev: bool) -> tuple[int, int]:
        lo, hi = parse_lex_bound(low), parse_lex_bound(high)
        members = [m for m, _ in self.items()]
        n = len(members)
        key_lo, key_hi = (lo[0], lo[1]), (hi[0], hi[1])
        if n == 0 or key_lo > key_hi or (key_lo == key_hi and (lo[2] or hi[2])):
            return 0, 0
        if not _gte_min(lo, members[-1]) or not _lte_max(hi, members[0]):
            return 0, 0
        if rev:
            inside = [i for i in range(n) if _lte_max(hi, members[i])]
            if not inside or not _gte_min(lo, members[inside[-1]]):
                return 0, 0
            top = inside[-1]
            bottom = top
            while bottom > 0 and _gte_min(lo, members[bottom - 1]):
                bottom -= 1
            return bottom, top + 1
        inside = [i for i in range(n) if _gte_min(lo, members[i])]
        if not inside or not _lte_max(hi, members[inside[0]]):
            return 0, 0
        bottom = inside[0]
        top = bottom + 1
        while top < n and _lte_max(hi, members[top]):
            top += 1
        return bottom, top

    def range_by_lex(
        self, low: bytes, high: bytes, rev: bool = False, offset: int = 0, count: int = -1
    ) -> list[bytes]:
        # Redis's walk (its listpack encoding): from the range's first element
        # the offset skips elements in set order whatever they are, then
        # elements are taken while they are within the far bound.
        a, b = self._lex_interval(low, high, rev)
        if a == b or offset < 0 or count == 0:
            return []
        lo, hi = parse_lex_bound(low), parse_lex_bound(high)
        members = [m for m, _ in self.items()]
        step = -1 if rev else 1
        position = (b - 1 if rev else a) + step * offset
        taken: list[bytes] = []
        while 0 <= position < len(members) and (count < 0 or len(taken) < count):
            member = members[position]
            if not (_gte_min(lo, member) if rev else _lte_max(hi, member)):
                break
            taken.append(member)
            position += step
        return taken

    def count_by_lex(self, low: bytes, high: bytes) -> int:
        a, b = self._lex_interval(low, high, False)
        return b - a

    def pop(self, count: int = 1, maximum: bool = False) -> list[tuple[bytes, float]]:
        items = self.items()
        if maximum:
            items.reverse()
        taken = items[:count]
        for member, _ in taken:
            del self.scores[member]
        return taken

    def _remove_items(self, items: list[tuple[bytes, float]]) -> int:
        for member, _ in items:
            del self.scores[member]
        return len(items)

    def remove_range_by_rank(self, start: int, stop: int) -> int:
        return self._remove_items(self.range_by_rank(start, stop))

    def remove_range_by_score(self, low: bytes, high: bytes) -> int:
        return self._remove_items(self.range_by_score(low, high))

    def remove_range_by_lex(self, low: bytes, high: bytes) -> int:
        a, b = self._lex_interval(low, high, False)
        return self._remove_items(self.items()[a:b])

    def get_by_rank(self, rank: int) -> tuple[bytes, float] | None:
        items = self.items()
        return items[rank] if 0 <= rank < len(items) else None
