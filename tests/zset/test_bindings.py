"""sdi.zset.ZSet from Python: random operation sequences against a pure-Python model
(every method, flags, bounds, limits, negative ranks, pops, dump/load, batch forms beside
single forms), the error cases with their exact messages, and threads sharing one set."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _zset_model import (
    BAD_LEX_BOUND,
    BAD_SCORE_BOUND,
    GT_LT_NX,
    INCR_MANY,
    NAN_RESULT,
    NOT_FLOAT,
    NX_XX,
    Model,
    ModelError,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sdi.errors import Corrupt, InvalidArgument, LimitExceeded
from sdi.zset import MEMBER_MAX, ZSet

INF = math.inf
# Few members, so that adds hit existing members; some end in NUL (stripped in S arrays).
MEMBERS = [b"", b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\x00", b"a\x00", b"\xff", b"zz"]
member = st.one_of(st.sampled_from(MEMBERS), st.binary(max_size=3))
members = st.lists(member, min_size=0, max_size=6)
SCORE_VALUES = [0.0, -0.0, 1.0, -1.0, 2.5, 3.0, -7.25, 1e300, -1e300, INF, -INF]
score = st.one_of(st.sampled_from(SCORE_VALUES), st.integers(-4, 4).map(float))


def as_text(value: float) -> bytes:
    """A float in Redis's syntax (``inf``, ``-inf``, ``2.5``, ``1e+300``)."""
    return repr(value).encode()


# A score as the API takes it: a float, or bytes in Redis's float syntax.
score_arg = st.one_of(score, score.map(as_text))
score_bound = st.one_of(
    st.sampled_from([b"-inf", b"+inf", b"inf", b"(-inf", b"(+inf", b"(inf"]),
    score.map(as_text),
    score.map(lambda s: b"(" + as_text(s)),
)
lex_bound = st.one_of(
    st.sampled_from([b"-", b"+", b"[", b"("]),
    member.map(lambda m: b"[" + m),
    member.map(lambda m: b"(" + m),
)
rank_index = st.integers(-9, 9)
offset = st.integers(-1, 4)
count = st.integers(-2, 4)


def parsed(value: bytes | float) -> float:
    return float(value) if isinstance(value, bytes) else value


def check(real: Callable[[], Any], model: Callable[[], Any]) -> Any:
    """Both succeed with equal answers, or both fail with the same message."""
    try:
        want = model()
    except ModelError as error:
        message = str(error)
    else:
        assert real() == want
        return want
    with pytest.raises(InvalidArgument) as info:
        real()
    assert str(info.value) == message
    return None


def s_array(values: list[bytes]) -> np.ndarray:
    """A numpy S<n> array of the members (n at least 1)."""
    return np.array(values, dtype=f"S{max([1, *map(len, values)])}")


class ZSetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.real = ZSet()
        self.model = Model()

    @rule(
        pairs=st.lists(st.tuples(score_arg, member), min_size=1, max_size=4),
        flags=st.fixed_dictionaries(
            {k: st.booleans() for k in ("nx", "xx", "gt", "lt", "ch", "incr")}
        ),
    )
    def zadd(self, pairs: list[tuple[bytes | float, bytes]], flags: dict[str, bool]) -> None:
        scores = [s for s, _ in pairs]
        names = [m for _, m in pairs]
        check(
            lambda: self.real.zadd(scores, names, **flags),
            lambda: self.model.zadd([parsed(s) for s in scores], names, **flags),
        )

    @rule(
        value=score_arg,
        name=member,
        flags=st.fixed_dictionaries({k: st.booleans() for k in ("xx", "gt", "lt", "ch", "incr")}),
    )
    def zadd_one(self, value: bytes | float, name: bytes, flags: dict[str, bool]) -> None:
        """One pair with conditions, mostly on a member that is there (nil replies, CH)."""
        if self.model.scores and not flags["xx"]:
            name = sorted(self.model.scores)[len(name) % len(self.model.scores)]
        check(
            lambda: self.real.zadd([value], [name], **flags),
            lambda: self.model.zadd([parsed(value)], [name], **flags),
        )

    @rule(delta=score_arg, name=member)
    def incr(self, delta: bytes | float, name: bytes) -> None:
        check(lambda: self.real.incr(delta, name), lambda: self.model.incr(parsed(delta), name))

    @rule(names=members)
    def remove(self, names: list[bytes]) -> None:
        check(lambda: self.real.remove(names), lambda: self.model.remove(names))

    @rule(name=member, rev=st.booleans())
    def rank(self, name: bytes, rev: bool) -> None:
        check(lambda: self.real.rank(name, rev), lambda: self.model.rank(name, rev))

    @rule(names=members)
    def scores(self, names: list[bytes]) -> None:
        want = [self.model.scores.get(m) for m in names]
        assert self.real.mscore(names) == want
        assert [self.real.score(m) for m in names] == want
        assert [m in self.real for m in names] == [m in self.model.scores for m in names]
        batch = self.real.scores(names)
        assert batch.dtype == np.float64
        assert [None if math.isnan(x) else x for x in batch.tolist()] == want

    @rule(names=members, rev=st.booleans(), fixed=st.booleans())
    def ranks(self, names: list[bytes], rev: bool, fixed: bool) -> None:
        arg: Any = s_array(names) if fixed else names
        if fixed:
            names = [m.rstrip(b"\x00") for m in names]
        want = [(-1 if r is None else r[0]) for r in (self.model.rank(m, rev) for m in names)]
        got = self.real.ranks(arg, rev=rev)
        assert got.dtype == np.int64
        assert got.tolist() == want

    @rule(start=rank_index, stop=rank_index, rev=st.booleans())
    def range_by_rank(self, start: int, stop: int, rev: bool) -> None:
        check(
            lambda: self.real.range_by_rank(start, stop, rev),
            lambda: self.model.range_by_rank(start, stop, rev),
        )

    @rule(low=score_bound, high=score_bound, rev=st.booleans(), off=offset, cnt=count)
    def range_by_score(self, low: bytes, high: bytes, rev: bool, off: int, cnt: int) -> None:
        check(
            lambda: self.real.range_by_score(low, high, rev, off, cnt),
            lambda: self.model.range_by_score(low, high, rev, off, cnt),
        )
        check(
            lambda: self.real.count_by_score(low, high),
            lambda: self.model.count_by_score(low, high),
        )

    @rule(low=lex_bound, high=lex_bound, rev=st.booleans(), off=offset, cnt=count)
    def range_by_lex(self, low: bytes, high: bytes, rev: bool, off: int, cnt: int) -> None:
        check(
            lambda: self.real.range_by_lex(low, high, rev, off, cnt),
            lambda: self.model.range_by_lex(low, high, rev, off, cnt),
        )
        check(lambda: self.real.count_by_lex(low, high), lambda: self.model.count_by_lex(low, high))

    @rule(n=st.integers(0, 3), maximum=st.booleans())
    def pop(self, n: int, maximum: bool) -> None:
        check(lambda: self.real.pop(n, maximum), lambda: self.model.pop(n, maximum))

    @rule(start=rank_index, stop=rank_index)
    def remove_range_by_rank(self, start: int, stop: int) -> None:
        check(
            lambda: self.real.remove_range_by_rank(start, stop),
            lambda: self.model.remove_range_by_rank(start, stop),
        )

    @rule(low=score_bound, high=score_bound)
    def remove_range_by_score(self, low: bytes, high: bytes) -> None:
        check(
            lambda: self.real.remove_range_by_score(low, high),
            lambda: self.model.remove_range_by_score(low, high),
        )

    @rule(low=lex_bound, high=lex_bound)
    def remove_range_by_lex(self, low: bytes, high: bytes) -> None:
        check(
            lambda: self.real.remove_range_by_lex(low, high),
            lambda: self.model.remove_range_by_lex(low, high),
        )

    @rule(rank=st.integers(-2, 12))
    def get_by_rank(self, rank: int) -> None:
        assert self.real.get_by_rank(rank) == self.model.get_by_rank(rank)

    @rule(
        pairs=st.lists(st.tuples(score, member), max_size=8),
        fixed=st.booleans(),
        fresh=st.booleans(),
    )
    def add_many(self, pairs: list[tuple[float, bytes]], fixed: bool, fresh: bool) -> None:
        if fresh:  # into an empty set (the sorted bulk path when there are enough pairs)
            self.real, self.model = ZSet(), Model()
        scores = np.array([s for s, _ in pairs], dtype=np.float64)
        names = [m for _, m in pairs]
        arg: Any = s_array(names) if fixed else names
        if fixed:
            names = [m.rstrip(b"\x00") for m in names]
        check(
            lambda: self.real.add_many(scores, arg),
            lambda: self.model.zadd(scores.tolist(), names),
        )

    @rule(pairs=st.lists(st.tuples(score, member), max_size=6), fixed=st.booleans())
    def incr_many(self, pairs: list[tuple[float, bytes]], fixed: bool) -> None:
        deltas = np.array([s for s, _ in pairs], dtype=np.float64)
        names = [m for _, m in pairs]
        arg: Any = s_array(names) if fixed else names
        if fixed:
            names = [m.rstrip(b"\x00") for m in names]
        want: list[float] = []
        failed: tuple[int, str] | None = None
        for i, (d, m) in enumerate(zip(deltas.tolist(), names, strict=True)):
            try:
                want.append(self.model.incr(d, m))
            except ModelError as error:
                failed = (i, str(error))
                break
        if failed is None:
            got = self.real.incr_many(deltas, arg)
            assert got.dtype == np.float64
            assert got.tolist() == want
        else:
            with pytest.raises(InvalidArgument) as info:
                self.real.incr_many(deltas, arg)
            assert (info.value.index, str(info.value)) == failed  # type: ignore[attr-defined]

    @rule()
    def dump_and_load(self) -> None:
        data = self.real.dump()
        assert data[:8] == b"SDIZSET\x01"
        loaded = ZSet.load(data)
        assert loaded.items() == self.real.items()
        assert loaded.dump() == data
        self.real = loaded

    @invariant()
    def same_elements(self) -> None:
        items = self.real.items()
        assert items == self.model.items()
        assert len(self.real) == len(self.model)
        assert self.real.stats()["len"] == len(self.model)
        # A zero score is stored as +0.0, as Redis's listpack stores it.
        assert all(math.copysign(1, s) > 0 for _, s in items if s == 0)


ZSetMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestZSetAgainstModel = ZSetMachine.TestCase


# Equal scores: the documented BYLEX use, where the answer is the members in the bounds.
@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(member, max_size=40, unique=True),
    low=lex_bound,
    high=lex_bound,
    rev=st.booleans(),
    off=offset,
    cnt=count,
)
def test_lex_ranges_with_equal_scores(
    names: list[bytes], low: bytes, high: bytes, rev: bool, off: int, cnt: int
) -> None:
    real, model = ZSet(), Model()
    assert real.zadd([0.0] * len(names), names) == model.zadd([0.0] * len(names), names)
    got = check(
        lambda: real.range_by_lex(low, high, rev, off, cnt),
        lambda: model.range_by_lex(low, high, rev, off, cnt),
    )
    if got is not None and off == 0 and cnt < 0:
        lo, hi = low[1:], high[1:]
        inside = [
            m
            for m in sorted(names)
            if (low == b"-" or (low != b"+" and (m > lo if low[0:1] == b"(" else m >= lo)))
            and (high == b"+" or (high != b"-" and (m < hi if high[0:1] == b"(" else m <= hi)))
        ]
        assert got == (inside[::-1] if rev else inside)
    assert real.count_by_lex(low, high) == model.count_by_lex(low, high)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.floats(allow_nan=False), st.binary(max_size=12)), max_size=300),
    extra=st.lists(st.binary(max_size=12), max_size=20),
    fixed=st.booleans(),
)
def test_batch_forms_equal_single_forms(
    pairs: list[tuple[float, bytes]], extra: list[bytes], fixed: bool
) -> None:
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    names = [m for _, m in pairs]
    if fixed:
        names = [m.rstrip(b"\x00") for m in names]
    batch, single = ZSet(), ZSet()
    added = batch.add_many(scores, s_array(names) if fixed else names)
    singles = [single.zadd([s], [m]) for s, m in zip(scores.tolist(), names, strict=True)]
    assert added == sum(singles)  # type: ignore[arg-type]
    assert batch.items() == single.items()
    probe = names + extra
    want_scores = [single.score(m) for m in probe]
    assert [None if math.isnan(x) else x for x in batch.scores(probe).tolist()] == want_scores
    assert batch.mscore(probe) == want_scores
    for rev in (False, True):
        want = [(-1 if r is None else r[0]) for r in (single.rank(m, rev) for m in probe)]
        assert batch.ranks(probe, rev=rev).tolist() == want
    deltas = np.linspace(-3, 3, len(probe))
    want_new = [single.incr(d, m) for d, m in zip(deltas.tolist(), probe, strict=True)]
    assert batch.incr_many(deltas, probe).tolist() == want_new
    assert batch.items() == single.items()
    assert ZSet.load(batch.dump()).items() == single.items()


def test_a_large_bulk_load_ranks_and_round_trips() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    names = np.array([b"m%07d" % i for i in rng.permutation(n)])
    scores = rng.integers(0, 1000, n).astype(np.float64)
    z = ZSet()
    assert z.add_many(scores, names) == n
    order = sorted(zip(scores.tolist(), names.tolist(), strict=True))
    assert z.items() == [(m, s) for s, m in order]
    ranks = z.ranks(names)
    expected = {m: i for i, (_, m) in enumerate(order)}
    assert ranks.tolist() == [expected[m] for m in names.tolist()]
    assert z.ranks(names, rev=True).tolist() == [n - 1 - expected[m] for m in names.tolist()]
    stats = z.stats()
    assert stats["len"] == n
    assert stats["member_bytes"] == 8 * n
    assert stats["memory_bytes"] == z.memory_bytes()
    assert 0 < stats["overhead_per_member"] < 16
    data = z.dump()
    back = ZSet.load(data)
    assert back.items() == z.items()
    assert back.get_by_rank(0) == z.range_by_rank(0, 0)[0]
    assert back.get_by_rank(n - 1) == z.range_by_rank(-1, -1)[0]
    assert back.get_by_rank(n) is None


# -- Redis's exact replies for the corner cases ------------------------------------------


def test_zadd_replies_and_flags() -> None:
    z = ZSet()
    assert z.zadd([1, 2], [b"a", b"b"]) == 2
    assert z.zadd([5, 6], [b"a", b"c"], ch=True) == 2  # one changed, one added
    assert z.zadd([9], [b"a"], nx=True) == 0
    assert z.zadd([9], [b"new"], xx=True) == 0
    assert z.zadd([1], [b"a"], gt=True, ch=True) == 0
    assert z.zadd([10], [b"a"], gt=True, ch=True) == 1
    assert z.zadd([b"1"], [b"a"], incr=True) == 11.0
    assert z.zadd([1], [b"a"], incr=True, lt=True) is None  # blocked: nil
    assert z.zadd([1], [b"zz"], incr=True, xx=True) is None
    assert z.zadd([0], [b"a"], incr=True, lt=True) is None  # equal is not less
    assert z.zadd([0], [b"a"], incr=True, gt=True) is None
    assert z.zadd([0], [b"a"], incr=True) == 11.0  # unchanged: the score, not nil
    assert z.zadd([11], [b"a"], ch=True) == 0
    assert z.score(b"zz") is None
    reply = z.zadd([b"-0"], [b"zero"], incr=True)
    assert reply == 0.0
    assert math.copysign(1, reply) < 0  # type: ignore[arg-type]
    assert math.copysign(1, z.score(b"zero") or 1.0) > 0  # stored as +0
    assert z.zadd([], []) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"nx": True, "xx": True}, NX_XX),
        ({"nx": True, "gt": True}, GT_LT_NX),
        ({"gt": True, "lt": True}, GT_LT_NX),
        ({"nx": True, "xx": True, "gt": True}, NX_XX),
    ],
)
def test_flag_conflicts(flags: dict[str, bool], message: str) -> None:
    z = ZSet()
    with pytest.raises(InvalidArgument) as info:
        z.zadd([1], [b"a"], **flags)
    assert str(info.value) == message
    assert len(z) == 0


def test_incr_takes_one_pair() -> None:
    z = ZSet()
    with pytest.raises(InvalidArgument, match=r"^INCR option supports") as info:
        z.zadd([1, 2], [b"a", b"b"], incr=True)
    assert str(info.value) == INCR_MANY
    assert len(z) == 0


@pytest.mark.parametrize(
    "text", [b"", b" 1", b"1 ", b"abc", b"nan", b"NaN", b"1e999", b"-1e999", b"0x10", b"1.5.2"]
)
def test_bad_float_text_is_refused_before_anything_changes(text: bytes) -> None:
    z = ZSet()
    with pytest.raises(InvalidArgument) as info:
        z.zadd([b"1", text], [b"a", b"b"])
    assert str(info.value) == NOT_FLOAT
    assert len(z) == 0
    with pytest.raises(InvalidArgument, match=f"^{NOT_FLOAT}$"):
        z.incr(text, b"a")
    assert len(z) == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [(b"inf", INF), (b"+inf", INF), (b"-inf", -INF), (b"1e3", 1000.0), (b"-.5", -0.5)],
)
def test_redis_float_syntax(text: bytes, value: float) -> None:
    z = ZSet()
    z.zadd([text], [b"a"])
    assert z.score(b"a") == value


def test_nan_scores_are_refused() -> None:
    z = ZSet()
    z.zadd([1], [b"a"])
    with pytest.raises(InvalidArgument, match=f"^{NOT_FLOAT}$"):
        z.zadd([2, math.nan], [b"a", b"b"])
    with pytest.raises(InvalidArgument, match=f"^{NOT_FLOAT}$"):
        z.incr(math.nan, b"a")
    with pytest.raises(InvalidArgument, match=f"^{NOT_FLOAT}$"):
        z.add_many(np.array([2.0, math.nan]), [b"a", b"b"])
    with pytest.raises(InvalidArgument, match=f"^{NOT_FLOAT}$") as info:
        z.incr_many(np.array([1.0, math.nan]), [b"a", b"a"])
    assert info.value.index == 1  # type: ignore[attr-defined]
    assert z.items() == [(b"a", 1.0)]  # nothing changed


def test_nan_results_are_refused() -> None:
    z = ZSet()
    z.zadd([INF], [b"a"])
    with pytest.raises(InvalidArgument) as info:
        z.incr(-INF, b"a")
    assert str(info.value) == NAN_RESULT
    with pytest.raises(InvalidArgument, match=r"^resulting score is not a number \(NaN\)$"):
        z.zadd([b"-inf"], [b"a"], incr=True)
    with pytest.raises(InvalidArgument) as info:
        z.incr_many(np.array([1.0, -INF, 1.0]), [b"b", b"a", b"c"])
    assert (info.value.index, str(info.value)) == (1, NAN_RESULT)  # type: ignore[attr-defined]
    assert z.items() == [(b"b", 1.0), (b"a", INF)]  # the one before it stays applied


@pytest.mark.parametrize("bound", [b"x", b"((1", b"1x", b"nan", b"(nan", b"[1", b"1 2"])
def test_bad_score_bounds(bound: bytes) -> None:
    z = ZSet()
    z.zadd([1], [b"a"])
    for call in (
        lambda: z.range_by_score(bound, b"+inf"),
        lambda: z.range_by_score(b"-inf", bound, rev=True),
        lambda: z.count_by_score(bound, b"1"),
        lambda: z.remove_range_by_score(b"1", bound),
    ):
        with pytest.raises(InvalidArgument) as info:
            call()
        assert str(info.value) == BAD_SCORE_BOUND
    assert len(z) == 1


def test_score_bounds_as_redis_reads_them() -> None:
    z = ZSet()
    z.zadd([0, 1, 2], [b"a", b"b", b"c"])
    assert z.count_by_score(b"(", b"+inf") == 2  # an empty number is 0
    assert z.count_by_score(b" 1", b"1") == 1  # leading spaces skipped
    assert z.count_by_score(b"-1e999", b"1e999") == 3  # overflow is infinite
    assert z.range_by_score(b"(0", b"(2") == [(b"b", 1.0)]
    assert z.range_by_score(b"2", b"0") == []
    assert z.range_by_score(b"0", b"2", rev=True, offset=1, count=1) == [(b"b", 1.0)]
    assert z.range_by_score(b"0", b"2", offset=-1) == []


@pytest.mark.parametrize("bound", [b"a", b"", b"*", b"]a", b"-a", b"+a"])
def test_bad_lex_bounds(bound: bytes) -> None:
    z = ZSet()
    z.zadd([0], [b"a"])
    for call in (
        lambda: z.range_by_lex(bound, b"+"),
        lambda: z.range_by_lex(b"-", bound, rev=True),
        lambda: z.count_by_lex(bound, b"+"),
        lambda: z.remove_range_by_lex(b"-", bound),
    ):
        with pytest.raises(InvalidArgument) as info:
            call()
        assert str(info.value) == BAD_LEX_BOUND
    assert len(z) == 1


def test_lengths_must_match() -> None:
    z = ZSet()
    with pytest.raises(InvalidArgument, match=r"^2 scores for 1 members$"):
        z.zadd([1, 2], [b"a"])
    with pytest.raises(InvalidArgument, match=r"^1 scores for 2 members$"):
        z.add_many(np.array([1.0]), [b"a", b"b"])
    with pytest.raises(InvalidArgument, match=r"^2 scores for 1 members$"):
        z.incr_many(np.array([1.0, 2.0]), np.array([b"a"]))
    assert len(z) == 0


def test_members_too_long_are_refused() -> None:
    z = ZSet()
    huge = b"x" * (MEMBER_MAX + 1)
    message = f"^member of {MEMBER_MAX + 1} bytes is longer than the {MEMBER_MAX} bytes allowed$"
    with pytest.raises(LimitExceeded, match=message):
        z.zadd([1, 2], [b"ok", huge])
    with pytest.raises(LimitExceeded, match=message):
        z.incr(1, huge)
    with pytest.raises(LimitExceeded, match=message):
        z.add_many(np.array([1.0]), [huge])
    assert len(z) == 0
    assert huge not in z
    assert z.score(huge) is None
    z.zadd([1], [huge[:-1]])  # exactly the limit is fine
    assert z.score(huge[:-1]) == 1.0


def test_members_must_be_bytes() -> None:
    z = ZSet()
    with pytest.raises(TypeError, match="members must be bytes, not str"):
        z.zadd([1], ["a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one bytes or str"):
        z.remove(b"abc")
    with pytest.raises(TypeError):
        z.score("a")  # type: ignore[arg-type]
    assert "a" not in z
    assert len(z) == 0


def test_pop_count_must_not_be_negative() -> None:
    z = ZSet()
    z.zadd([1], [b"a"])
    with pytest.raises(InvalidArgument, match=r"^value is out of range, must be positive$"):
        z.pop(-1)
    assert z.pop(0) == []
    assert z.pop(5, max=True) == [(b"a", 1.0)]


def test_numpy_fixed_width_members_lose_trailing_nuls() -> None:
    z = ZSet()
    names = np.array([b"a", b"bb\x00", b"\x00c", b""], dtype="S4")
    assert z.add_many(np.array([1.0, 2.0, 3.0, 4.0]), names) == 4
    assert sorted(m for m, _ in z.items()) == [b"", b"\x00c", b"a", b"bb"]
    # A non-contiguous array, and a list of the same members, read the same.
    assert z.scores(names[::2]).tolist() == [1.0, 3.0]
    assert z.ranks([b"a", b"bb", b"\x00c", b""]).tolist() == z.ranks(names).tolist()
    assert z.mscore(np.array([b"a", b"zz"])) == [1.0, None]
    assert z.remove(np.array([b"a", b"bb"])) == 2


def test_scores_take_any_float_array() -> None:
    z = ZSet()
    assert z.add_many([1, 2, 3], [b"a", b"b", b"c"]) == 3  # a list of ints
    assert z.add_many(np.arange(6, dtype=np.float64)[::2], [b"x", b"y", b"z"]) == 3
    assert z.incr_many(np.array([1], dtype=np.int32), [b"a"]).tolist() == [2.0]
    assert z.score(b"z") == 4.0


# -- dump and load -------------------------------------------------------------------------


def sample() -> ZSet:
    z = ZSet()
    z.zadd(
        [1, -INF, INF, 0, 2.5, 2.5, 1e-300],
        [b"a", b"low", b"high", b"zero", b"\x00x", b"long" * 40, b"tiny"],
    )
    return z


def test_empty_round_trip() -> None:
    data = ZSet().dump()
    assert len(data) == 20
    assert len(ZSet.load(data)) == 0


def test_every_truncation_is_corrupt() -> None:
    data = sample().dump()
    for cut in range(len(data)):
        with pytest.raises(Corrupt):
            ZSet.load(data[:cut])


def test_every_flipped_bit_is_corrupt() -> None:
    data = sample().dump()
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(Corrupt):
                ZSet.load(bytes(damaged))


def test_corrupt_messages_say_what_is_wrong() -> None:
    data = sample().dump()
    with pytest.raises(Corrupt, match="truncated: 3 bytes"):
        ZSet.load(data[:3])
    with pytest.raises(Corrupt, match="bad magic"):
        ZSet.load(b"REDIS" + data[5:])
    with pytest.raises(Corrupt, match="version 2 is not supported"):
        ZSet.load(data[:7] + b"\x02" + data[8:])
    with pytest.raises(Corrupt, match="checksum mismatch"):
        ZSet.load(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(Corrupt, match="checksum mismatch"):
        ZSet.load(data + b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_are_corrupt(data: bytes) -> None:
    with pytest.raises(Corrupt):
        ZSet.load(data)


# -- threads ---------------------------------------------------------------------------------


def test_threads_share_one_set_without_deadlock() -> None:
    z = ZSet()
    n = 20_000
    names = np.array([b"p%06d" % i for i in range(n)])
    z.add_many(np.zeros(n), names)
    errors: list[BaseException] = []
    stop = threading.Event()

    def batch_writer() -> None:
        try:
            for _ in range(20):
                z.incr_many(np.ones(n), names)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def single_writer(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for i in rng.integers(0, n, 3_000).tolist():
                z.incr(1.0, b"p%06d" % i)
                z.zadd([1.0], [b"extra%d" % seed], incr=True)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    def reader() -> None:
        try:
            while not stop.is_set():
                top = z.range_by_rank(0, 9, rev=True)
                assert len(top) == 10
                assert all(a[1] >= b[1] for a, b in itertools.pairwise(top))
                assert z.ranks(names[:100]).min() >= 0
                z.dump()
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    writers = [threading.Thread(target=batch_writer)] + [
        threading.Thread(target=single_writer, args=(seed,)) for seed in range(3)
    ]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a writer is stuck (deadlock?)"
    stop.set()
    for thread in readers:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a reader is stuck (deadlock?)"
    assert not errors, errors
    # Every increment landed: 20 batch rounds on each member plus 9,000 single ones.
    total = float(z.scores(names).sum())
    assert total == 20 * n + 9_000
    assert [z.score(b"extra%d" % seed) for seed in range(3)] == [3_000.0] * 3
    assert len(z) == n + 3


def test_a_batch_releases_the_gil() -> None:
    """While one thread runs a long batch, the other thread's Python code keeps running."""
    z = ZSet()
    n = 1_000_000
    names = np.array([b"m%07d" % i for i in range(n)])
    z.add_many(np.arange(n, dtype=np.float64), names)
    took: list[float] = []

    def work() -> None:
        start = time.perf_counter()
        z.incr_many(np.full(n, 0.5), names)
        took.append(time.perf_counter() - start)

    worker = threading.Thread(target=work)
    stamps = [time.perf_counter()]
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    gaps = np.diff(stamps)
    # Holding the GIL would stall this loop for the whole call.
    assert took
    assert took[0] > 0.05
    assert gaps.max() < took[0] / 2, (gaps.max(), took[0])
    assert z.score(b"m0000007") == 7.5
