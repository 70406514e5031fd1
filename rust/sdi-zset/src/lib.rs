//! An order-statistic sorted set with Redis ZSET semantics, for the
//! real-time leaderboard of chapter 10 (issue 8). Pure Rust; the RESP
//! server, persistence and Python bindings build on it.
//!
//! # Order and scores
//!
//! Elements are (score, member) pairs, a member at most once. They are
//! ordered by score, ties by member bytes (unsigned, shorter prefix first),
//! exactly as Redis orders them. Scores are `f64`; NaN is refused
//! ([`Error::NotAFloat`]), `+inf` and `-inf` are allowed.
//!
//! `-0.0` and `0.0` compare equal (ties broken by member) and a zero score
//! is stored as `+0.0`, as Redis does for sets of up to 128 members (its
//! listpack encoding; checked against redis-server 7.0.15): `ZADD z -0 a`
//! then `ZSCORE z a` answers `"0"`. Replies that carry a computed score keep
//! its sign, as in Redis: `ZADD z INCR -0 new` answers `"-0"`
//! ([`AddOutcome::Added`] carries `-0.0`) and stores `0`. Redis's skiplist
//! encoding (larger sets) keeps the sign of a stored `-0` and answers
//! `"-0"`; that is the one difference. Setting `0` over a stored `0` (or
//! `-0`) is not a change, as Redis only updates when `new != old`.
//!
//! # Structure
//!
//! A B+tree keyed by (score, member): leaves of up to 64 elements hold the
//! scores in one vector and the member bytes back to back in another (a
//! member's bytes are stored once, there), inner nodes of up to 64 children
//! keep the number of elements under each child, so rank and access by rank
//! are O(log n). The member -> position map is an open-addressing table of
//! 4-byte slots (leaf id and a 7-bit hash tag); the score of a member is read
//! from its leaf. See `tree.rs` for the details and [`ZSet::memory_bytes`]
//! for the accounting.
//!
//! # Memory
//!
//! Measured with `cargo run --release -p sdi-zset --example memory --
//! 1000000 25000000` (8-16 byte members, random scores), bytes held beyond
//! the member bytes and the 8-byte score, from [`ZSet::memory_bytes`]:
//! 12.9 per member at 1M and 13.8 at 25M after random inserts one by one,
//! 14.2 and 15.3 after a further n/4 ZINCRBY of random members (leaves left
//! less full), 9.8 at 1M and 5M when loaded by one [`ZSet::add_many`] into
//! an empty set (a bulk build, leaves 7/8 full). With the 11-byte members of
//! `benchmarks/cores/zset.py` (`--example batch`): 9.8 after the bulk load
//! at 1M, 5M and 25M, 13.6-13.7 after a further n/4 ZINCRBY. Per member: 2
//! bytes of end offset, about 5.3-5.5 of index slot (load 0.72-0.75), the
//! rest leaf headers, leaf capacity slack and inner nodes.
//! The allocator's per-allocation headers (3 allocations per leaf) come on
//! top and show in the process's RSS.
//!
//! # Lexicographic ranges
//!
//! Redis documents BYLEX ranges only for sets whose scores are all equal.
//! When they are, the answer here is the members within the bounds, found
//! in O(log n). When they are not, this crate answers what Redis answers on
//! its compact (listpack) encoding, which scans in set order: the range
//! starts at the first element at or past the lower bound if that element
//! is also within the upper bound, and stops at the first element past the
//! upper bound (mirrored for REV); that case costs O(n). Redis's skiplist
//! encoding (sets over 128 members) answers by a descent whose result
//! depends on random node levels, so no implementation can match it.
//!
//! ```
//! use sdi_zset::{ZSet, ScoreRange};
//!
//! let mut board = ZSet::new();
//! board.insert(10.0, b"alice").unwrap();
//! board.insert(30.0, b"bob").unwrap();
//! board.incr(25.0, b"alice").unwrap();
//! assert_eq!(board.rev_rank(b"alice"), Some(0));
//! let top: Vec<_> = board.range_by_rank(0, 9, true).collect();
//! assert_eq!(top, vec![(35.0, &b"alice"[..]), (30.0, &b"bob"[..])]);
//! assert_eq!(board.count_by_score(&ScoreRange::parse(b"(30", b"+inf").unwrap()), 1);
//! ```

mod dump;
mod tree;

pub use dump::{DumpError, DUMP_MAGIC, DUMP_VERSION};
use std::cmp::Ordering;
use tree::{cmp_key, Path, Tree};

/// Plain ZADDs of at least this many pairs into an empty set are sorted and
/// built in bulk.
const BULK_MIN: usize = 64;

/// Longest member accepted (a leaf's offsets are 32-bit).
pub const MEMBER_MAX: usize = 32 << 20;

/// What a sorted-set call can fail with. The `Display` text is the Redis
/// error reply (without the `ERR ` prefix where Redis has one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A score (or bound) is NaN or not a number.
    #[error("value is not a valid float")]
    NotAFloat,
    /// An increment would give NaN (`+inf` plus `-inf`); nothing changed.
    #[error("resulting score is not a number (NaN)")]
    NanResult,
    /// A score range bound is not a float or `(float`.
    #[error("min or max is not a float")]
    BadScoreBound,
    /// A lex range bound is not `-`, `+`, `[member` or `(member`.
    #[error("min or max not valid string range item")]
    BadLexBound,
    /// NX with XX.
    #[error("XX and NX options at the same time are not compatible")]
    NxAndXx,
    /// GT, LT and NX combined.
    #[error("GT, LT, and/or NX options at the same time are not compatible")]
    GtLtNx,
    /// INCR with more than one score-member pair.
    #[error("INCR option supports a single increment-element pair")]
    IncrMany,
    /// Scores and members of a batch differ in length.
    #[error("{scores} scores for {members} members")]
    LengthMismatch {
        /// Number of scores given.
        scores: usize,
        /// Number of members given.
        members: usize,
    },
    /// A member longer than [`MEMBER_MAX`].
    #[error("member of {0} bytes is longer than the {MEMBER_MAX} bytes allowed")]
    MemberTooLong(usize),
    /// The set has as many leaves as the member index can address.
    #[error("sorted set is full")]
    Full,
}

/// The ZADD options. `Default` is a plain ZADD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members.
    pub xx: bool,
    /// Only update when the new score is greater.
    pub gt: bool,
    /// Only update when the new score is less.
    pub lt: bool,
    /// Reply with added plus changed instead of added.
    pub ch: bool,
    /// The score is an increment (ZINCRBY); one pair only.
    pub incr: bool,
}

impl AddFlags {
    /// Redis's checks of the combination, in Redis's order.
    pub fn validate(&self, pairs: usize) -> Result<(), Error> {
        if self.nx && self.xx {
            return Err(Error::NxAndXx);
        }
        if [self.gt, self.lt, self.nx].iter().filter(|&&b| b).count() > 1 {
            return Err(Error::GtLtNx);
        }
        if self.incr && pairs > 1 {
            return Err(Error::IncrMany);
        }
        Ok(())
    }
}

/// What ZADD replies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddReply {
    /// Without INCR: members added (with CH: added plus changed).
    Count(usize),
    /// With INCR: the new score, or `None` (nil) when NX/XX/GT/LT blocked it.
    Score(Option<f64>),
}

/// What one ZADD element did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddOutcome {
    /// A new member with this score.
    Added(f64),
    /// An existing member whose score changed to this.
    Updated(f64),
    /// Processed but the stored score compares equal to this one, which
    /// INCR replies (the stored score keeps its sign, as in Redis).
    Unchanged(f64),
    /// NX, XX, GT or LT blocked it.
    Blocked,
}

/// One end of a score range: a value, inclusive or exclusive (`(1.5`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    /// The score (may be infinite, never NaN).
    pub value: f64,
    /// `(value`: the value itself is out of the range.
    pub exclusive: bool,
}

impl ScoreBound {
    /// An inclusive bound.
    pub fn incl(value: f64) -> Self {
        ScoreBound {
            value,
            exclusive: false,
        }
    }
    /// An exclusive bound.
    pub fn excl(value: f64) -> Self {
        ScoreBound {
            value,
            exclusive: true,
        }
    }
    /// Parses Redis's syntax: `1.5`, `(1.5`, `-inf`, `+inf`, `inf`; as in
    /// Redis an empty number is 0 (`(` is "above 0").
    pub fn parse(s: &[u8]) -> Result<Self, Error> {
        let (exclusive, rest) = match s.first() {
            Some(b'(') => (true, &s[1..]),
            _ => (false, s),
        };
        let value = parse_bound_value(rest).ok_or(Error::BadScoreBound)?;
        Ok(ScoreBound { value, exclusive })
    }
}

/// `strtod` over the whole text (Rust's float syntax, which is strtod's
/// decimal syntax with `inf`/`infinity`/`nan`; hexadecimal floats are not
/// accepted). Also says whether the value overflowed or underflowed.
fn strtod_all(s: &[u8]) -> Option<(f64, bool)> {
    let t = std::str::from_utf8(s).ok()?;
    let v: f64 = t.parse().ok()?;
    let lower = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
    let overflow = v.is_infinite() && lower != "inf" && lower != "infinity";
    let underflow = v == 0.0
        && lower
            .split(['e', 'E'])
            .next()
            .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)));
    Some((v, overflow || underflow))
}

/// Parses a score or increment as ZADD and ZINCRBY do (Redis's
/// `getDoubleFromObject`): the whole text must be a float, no leading
/// space, not empty, not NaN, and not out of the range of a double (`1e999`
/// is refused; `inf` is accepted).
pub fn parse_float(s: &[u8]) -> Option<f64> {
    if s.first().is_none_or(|c| c.is_ascii_whitespace()) {
        return None;
    }
    match strtod_all(s)? {
        (v, false) if !v.is_nan() => Some(v),
        _ => None,
    }
}

/// Parses a range bound's number as ZRANGEBYSCORE does (Redis's
/// `zslParseRange`, plain `strtod`): leading spaces are skipped, empty text
/// is 0, overflow gives an infinity; only trailing junk and NaN fail.
fn parse_bound_value(s: &[u8]) -> Option<f64> {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let s = &s[start..];
    if s.is_empty() {
        return Some(0.0);
    }
    let (v, _) = strtod_all(s)?;
    (!v.is_nan()).then_some(v)
}

/// A score range `min..max` with inclusive or exclusive ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreRange {
    /// Lower end.
    pub min: ScoreBound,
    /// Upper end.
    pub max: ScoreBound,
}

impl ScoreRange {
    /// Parses two Redis bounds (min first, as ZRANGEBYSCORE takes them).
    pub fn parse(min: &[u8], max: &[u8]) -> Result<Self, Error> {
        Ok(ScoreRange {
            min: ScoreBound::parse(min)?,
            max: ScoreBound::parse(max)?,
        })
    }
    /// `-inf..+inf`.
    pub fn all() -> Self {
        ScoreRange {
            min: ScoreBound::incl(f64::NEG_INFINITY),
            max: ScoreBound::incl(f64::INFINITY),
        }
    }
    /// Redis's test for ranges that are always empty.
    pub fn is_empty_spec(&self) -> bool {
        self.min.value > self.max.value
            || (self.min.value == self.max.value && (self.min.exclusive || self.max.exclusive))
    }
    fn below_min(&self, s: f64) -> bool {
        if self.min.exclusive {
            s <= self.min.value
        } else {
            s < self.min.value
        }
    }
    fn le_max(&self, s: f64) -> bool {
        if self.max.exclusive {
            s < self.max.value
        } else {
            s <= self.max.value
        }
    }
}

/// One end of a lexicographic range (ZRANGEBYLEX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LexBound<'a> {
    /// `-`: below every member.
    Min,
    /// `+`: above every member.
    Max,
    /// `[member`.
    Inclusive(&'a [u8]),
    /// `(member`.
    Exclusive(&'a [u8]),
}

impl<'a> LexBound<'a> {
    /// Parses `-`, `+`, `[member` or `(member`.
    pub fn parse(s: &'a [u8]) -> Result<Self, Error> {
        match s {
            b"-" => Ok(LexBound::Min),
            b"+" => Ok(LexBound::Max),
            [b'[', rest @ ..] => Ok(LexBound::Inclusive(rest)),
            [b'(', rest @ ..] => Ok(LexBound::Exclusive(rest)),
            _ => Err(Error::BadLexBound),
        }
    }
    fn exclusive(&self) -> bool {
        matches!(self, LexBound::Exclusive(_))
    }
    /// Redis's `sdscmplex` between two bounds.
    fn cmp_bound(&self, other: &LexBound<'_>) -> Ordering {
        use LexBound::*;
        match (self, other) {
            (Min, Min) | (Max, Max) => Ordering::Equal,
            (Min, _) | (_, Max) => Ordering::Less,
            (Max, _) | (_, Min) => Ordering::Greater,
            (Inclusive(a) | Exclusive(a), Inclusive(b) | Exclusive(b)) => a.cmp(b),
        }
    }
}

/// A lexicographic range of members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LexRange<'a> {
    /// Lower end.
    pub min: LexBound<'a>,
    /// Upper end.
    pub max: LexBound<'a>,
}

impl<'a> LexRange<'a> {
    /// Parses two Redis lex bounds (min first).
    pub fn parse(min: &'a [u8], max: &'a [u8]) -> Result<Self, Error> {
        Ok(LexRange {
            min: LexBound::parse(min)?,
            max: LexBound::parse(max)?,
        })
    }
    fn is_empty_spec(&self) -> bool {
        match self.min.cmp_bound(&self.max) {
            Ordering::Greater => true,
            Ordering::Equal => self.min.exclusive() || self.max.exclusive(),
            Ordering::Less => false,
        }
    }
    fn gte_min(&self, m: &[u8]) -> bool {
        match self.min {
            LexBound::Min => true,
            LexBound::Max => false,
            LexBound::Inclusive(x) => m >= x,
            LexBound::Exclusive(x) => m > x,
        }
    }
    fn lte_max(&self, m: &[u8]) -> bool {
        match self.max {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Inclusive(x) => m <= x,
            LexBound::Exclusive(x) => m < x,
        }
    }
}

/// LIMIT offset count of the BYSCORE and BYLEX ranges, as Redis reads it: a
/// negative offset gives nothing, a negative count means all the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Elements skipped first.
    pub offset: i64,
    /// Most elements returned; negative: no limit.
    pub count: i64,
}

impl Limit {
    /// (skipped, taken) out of `n` elements.
    fn apply(limit: Option<Limit>, n: usize) -> (usize, usize) {
        match limit {
            None => (0, n),
            Some(l) if l.offset < 0 => (0, 0),
            Some(l) => {
                let skip = (l.offset as u64).min(n as u64) as usize;
                let rest = n - skip;
                let take = if l.count < 0 {
                    rest
                } else {
                    (l.count as u64).min(rest as u64) as usize
                };
                (skip, take)
            }
        }
    }
}

/// Elements in order (or reverse order) from some rank: `(score, member)`.
pub struct Range<'a> {
    tree: &'a Tree,
    leaf: u32,
    /// Forward: next position to yield. Reverse: one past it.
    pos: usize,
    remaining: usize,
    rev: bool,
}

impl<'a> Iterator for Range<'a> {
    type Item = (f64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if self.rev {
            while self.pos == 0 {
                self.leaf = self.tree.prev_leaf(self.leaf);
                self.pos = self.tree.leaf(self.leaf).len();
            }
            self.pos -= 1;
        } else {
            while self.pos >= self.tree.leaf(self.leaf).len() {
                self.leaf = self.tree.next_leaf(self.leaf);
                self.pos = 0;
            }
            self.pos += 1;
        }
        let tree: &'a Tree = self.tree;
        let l = tree.leaf(self.leaf);
        let i = if self.rev { self.pos } else { self.pos - 1 };
        Some((l.score(i), l.member(i)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Range<'_> {}

/// A score as an integer that orders as the score does (not NaN, not -0.0).
#[inline]
fn score_key(s: f64) -> u64 {
    let b = s.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// A member's first 8 bytes, zero-padded, as a big-endian integer.
#[inline]
fn prefix_key(m: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = m.len().min(8);
    b[..n].copy_from_slice(&m[..n]);
    u64::from_be_bytes(b)
}

/// The sorted set. See the crate documentation.
pub struct ZSet {
    tree: Tree,
}

impl Default for ZSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ZSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZSet").field("len", &self.len()).finish()
    }
}

/// Redis's normalisation of `start stop` ranks: the rank interval `[a, b)`.
fn rank_interval(start: i64, stop: i64, len: usize) -> (usize, usize) {
    let n = len as i64;
    let (mut s, mut e) = (start, stop);
    if s < 0 {
        s += n;
    }
    if e < 0 {
        e += n;
    }
    if s < 0 {
        s = 0;
    }
    if s > e || s >= n {
        return (0, 0);
    }
    if e >= n {
        e = n - 1;
    }
    (s as usize, e as usize + 1)
}

impl ZSet {
    /// An empty set.
    pub fn new() -> Self {
        ZSet { tree: Tree::new() }
    }

    /// Number of members (ZCARD).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The score of a member (ZSCORE).
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.score_hashed(member, self.tree.hash(member))
    }

    fn score_hashed(&self, member: &[u8], h: u64) -> Option<f64> {
        self.tree
            .find(member, h)
            .map(|(leaf, pos)| self.tree.leaf(leaf).score(pos))
    }

    /// Whether the member is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.score(member).is_some()
    }

    fn check(score: f64, member: &[u8]) -> Result<(), Error> {
        if score.is_nan() {
            return Err(Error::NotAFloat);
        }
        if member.len() > MEMBER_MAX {
            return Err(Error::MemberTooLong(member.len()));
        }
        Ok(())
    }

    /// Sets a member's score (plain ZADD of one pair); the previous score.
    pub fn insert(&mut self, score: f64, member: &[u8]) -> Result<Option<f64>, Error> {
        Self::check(score, member)?;
        let h = self.tree.hash(member);
        match self.tree.find(member, h) {
            Some((leaf, pos)) => {
                let old = self.tree.leaf(leaf).score(pos);
                self.set_score(leaf, pos, old, score, member, h)?;
                Ok(Some(old))
            }
            None => {
                self.insert_new(score, member, h)?;
                Ok(None)
            }
        }
    }

    fn insert_new(&mut self, score: f64, member: &[u8], h: u64) -> Result<(), Error> {
        if !self.tree.has_room() {
            return Err(Error::Full);
        }
        // +0.0 for -0.0 (see the crate documentation), nothing else changes.
        self.tree.insert(score + 0.0, member, h);
        Ok(())
    }

    /// Moves an existing member from `old` to `new` (no-op when equal).
    fn set_score(
        &mut self,
        leaf: u32,
        pos: usize,
        old: f64,
        new: f64,
        member: &[u8],
        h: u64,
    ) -> Result<(), Error> {
        #[allow(clippy::float_cmp)]
        if new == old {
            return Ok(());
        }
        let new = new + 0.0;
        if self.tree.update_in_place(leaf, pos, new, member) {
            return Ok(());
        }
        if !self.tree.has_room() {
            return Err(Error::Full);
        }
        self.tree.move_key(leaf, pos, old, new, member, h);
        Ok(())
    }

    /// One element of ZADD with its flags (Redis's `zsetAdd`). A NaN score
    /// is [`Error::NotAFloat`]; an INCR that gives NaN is
    /// [`Error::NanResult`] and changes nothing.
    pub fn add(&mut self, flags: AddFlags, score: f64, member: &[u8]) -> Result<AddOutcome, Error> {
        Self::check(score, member)?;
        self.add_hashed(flags, score, member, self.tree.hash(member))
    }

    fn add_hashed(
        &mut self,
        flags: AddFlags,
        score: f64,
        member: &[u8],
        h: u64,
    ) -> Result<AddOutcome, Error> {
        match self.tree.find(member, h) {
            Some((leaf, pos)) => {
                if flags.nx {
                    return Ok(AddOutcome::Blocked);
                }
                let cur = self.tree.leaf(leaf).score(pos);
                let mut new = score;
                if flags.incr {
                    new += cur;
                    if new.is_nan() {
                        return Err(Error::NanResult);
                    }
                }
                if (flags.lt && new >= cur) || (flags.gt && new <= cur) {
                    return Ok(AddOutcome::Blocked);
                }
                #[allow(clippy::float_cmp)]
                if new == cur {
                    // Redis replies the computed score (0 over a stored -0).
                    return Ok(AddOutcome::Unchanged(new));
                }
                self.set_score(leaf, pos, cur, new, member, h)?;
                Ok(AddOutcome::Updated(new))
            }
            None if flags.xx => Ok(AddOutcome::Blocked),
            None => {
                self.insert_new(score, member, h)?;
                Ok(AddOutcome::Added(score))
            }
        }
    }

    /// ZADD with flags over pairs: every score is checked first (a NaN
    /// changes nothing), then the pairs are applied in order. The reply is
    /// what Redis replies. Also the batch form for arrays of scores: lookups
    /// are prefetched a few members ahead, and a plain ZADD of 64 pairs or
    /// more into an empty set whose members are distinct is sorted and built
    /// in bulk (same result, much faster).
    pub fn zadd<M: AsRef<[u8]>>(
        &mut self,
        flags: AddFlags,
        scores: &[f64],
        members: &[M],
    ) -> Result<AddReply, Error> {
        if scores.len() != members.len() {
            return Err(Error::LengthMismatch {
                scores: scores.len(),
                members: members.len(),
            });
        }
        flags.validate(scores.len())?;
        for (&s, m) in scores.iter().zip(members) {
            Self::check(s, m.as_ref())?;
        }
        let plain = !(flags.nx || flags.xx || flags.gt || flags.lt || flags.incr);
        if plain && self.is_empty() && scores.len() >= BULK_MIN {
            if let Some(added) = self.bulk_load(scores, members) {
                return Ok(AddReply::Count(added));
            }
        }
        let (mut added, mut changed) = (0, 0);
        let mut last = None;
        let hashes = self.hashes(members);
        for (i, (&s, m)) in scores.iter().zip(members).enumerate() {
            self.prefetch_ahead(&hashes, i);
            match self.add_hashed(flags, s, m.as_ref(), hashes[i])? {
                AddOutcome::Added(v) => {
                    added += 1;
                    last = Some(v);
                }
                AddOutcome::Updated(v) => {
                    changed += 1;
                    last = Some(v);
                }
                AddOutcome::Unchanged(v) => last = Some(v),
                AddOutcome::Blocked => last = None,
            }
        }
        Ok(if flags.incr {
            AddReply::Score(last)
        } else {
            AddReply::Count(if flags.ch { added + changed } else { added })
        })
    }

    /// A plain ZADD into an empty set: the pairs are sorted (by score as an
    /// integer key and the members' first 8 bytes, then runs that tie on
    /// both by member) and the tree is built bottom-up in one pass, leaves
    /// 7/8 full, then the member index in one pass over the leaves (see
    /// `Tree::build_sorted`). `None` (and the set left empty) when a member
    /// occurs twice in the batch: the caller then applies the pairs in order.
    fn bulk_load<M: AsRef<[u8]>>(&mut self, scores: &[f64], members: &[M]) -> Option<usize> {
        let n = scores.len();
        let index = u32::try_from(n).ok()?;
        let m = |i: u32| members[i as usize].as_ref();
        // Sort by score as an integer key (exact for non-NaN scores once
        // -0.0 is +0.0), then runs of equal scores by member.
        // The member's first 8 bytes (zero-padded, big-endian) order as the
        // member does, except between members equal on them.
        let mut order: Vec<(u64, u64, u32)> = scores
            .iter()
            .zip(0..index)
            .map(|(&s, i)| (score_key(s + 0.0), prefix_key(m(i)), i))
            .collect();
        order.sort_unstable();
        let mut a = 0;
        while a < n {
            let mut b = a + 1;
            while b < n && order[b].0 == order[a].0 && order[b].1 == order[a].1 {
                b += 1;
            }
            if b - a > 1 {
                order[a..b].sort_unstable_by(|x, y| m(x.2).cmp(m(y.2)));
            }
            a = b;
        }
        let built = self.tree.build_sorted(
            n,
            |k| {
                let i = order[k].2;
                (scores[i as usize] + 0.0, m(i))
            },
            |k| {
                if let Some(&(_, _, i)) = order.get(k) {
                    tree::prefetch(m(i).as_ptr());
                }
                if let Some(&(_, _, i)) = order.get(k + 8) {
                    tree::prefetch(&members[i as usize]);
                }
            },
        );
        if built.is_err() {
            *self = ZSet::new();
            return None;
        }
        Some(n)
    }

    /// Adds or sets many pairs (plain ZADD); the number of members added.
    pub fn add_many<M: AsRef<[u8]>>(
        &mut self,
        scores: &[f64],
        members: &[M],
    ) -> Result<usize, Error> {
        match self.zadd(AddFlags::default(), scores, members)? {
            AddReply::Count(n) => Ok(n),
            AddReply::Score(_) => unreachable!("no INCR"),
        }
    }

    /// ZINCRBY: adds `delta` to the member's score (0 when absent); the new
    /// score. A NaN result (`inf` plus `-inf`) is [`Error::NanResult`] and
    /// changes nothing.
    pub fn incr(&mut self, delta: f64, member: &[u8]) -> Result<f64, Error> {
        let flags = AddFlags {
            incr: true,
            ..AddFlags::default()
        };
        match self.add(flags, delta, member)? {
            AddOutcome::Added(v) | AddOutcome::Updated(v) | AddOutcome::Unchanged(v) => Ok(v),
            AddOutcome::Blocked => unreachable!("no condition"),
        }
    }

    /// ZINCRBY over arrays, applied in order like a pipeline of ZINCRBY: the
    /// new scores. On an error (NaN delta or result) the increments before it
    /// stay applied; the error says which index in `Err((index, error))`.
    pub fn incr_many<M: AsRef<[u8]>>(
        &mut self,
        deltas: &[f64],
        members: &[M],
    ) -> Result<Vec<f64>, (usize, Error)> {
        if deltas.len() != members.len() {
            return Err((
                0,
                Error::LengthMismatch {
                    scores: deltas.len(),
                    members: members.len(),
                },
            ));
        }
        let flags = AddFlags {
            incr: true,
            ..AddFlags::default()
        };
        let hashes = self.hashes(members);
        let mut out = Vec::with_capacity(deltas.len());
        for (i, (&d, m)) in deltas.iter().zip(members).enumerate() {
            self.prefetch_ahead(&hashes, i);
            let m = m.as_ref();
            let outcome = Self::check(d, m).and_then(|()| self.add_hashed(flags, d, m, hashes[i]));
            match outcome.map_err(|e| (i, e))? {
                AddOutcome::Added(v) | AddOutcome::Updated(v) | AddOutcome::Unchanged(v) => {
                    out.push(v)
                }
                AddOutcome::Blocked => unreachable!("no condition"),
            }
        }
        Ok(out)
    }

    /// ZREM of one member: its score when it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let h = self.tree.hash(member);
        let (leaf, pos) = self.tree.find(member, h)?;
        let score = self.tree.leaf(leaf).score(pos);
        let mut path = Path::new();
        let (l, p, _) = self.tree.descend(
            |s, m| cmp_key(s, m, score, member) != Ordering::Greater,
            &mut path,
        );
        debug_assert_eq!((l, p), (leaf, pos + 1));
        self.tree.remove_at(l, p - 1, &path, h);
        Some(score)
    }

    /// ZRANK: 0 for the lowest score.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        self.rank_with_score(member).map(|(r, _)| r)
    }

    /// ZRANK WITHSCORE.
    pub fn rank_with_score(&self, member: &[u8]) -> Option<(usize, f64)> {
        self.rank_hashed(member, self.tree.hash(member))
    }

    fn rank_hashed(&self, member: &[u8], h: u64) -> Option<(usize, f64)> {
        let score = self.score_hashed(member, h)?;
        Some((
            self.tree
                .partition(|s, m| cmp_key(s, m, score, member) == Ordering::Less),
            score,
        ))
    }

    /// ZREVRANK: 0 for the highest score.
    pub fn rev_rank(&self, member: &[u8]) -> Option<usize> {
        self.rank(member).map(|r| self.len() - 1 - r)
    }

    /// ZREVRANK WITHSCORE.
    pub fn rev_rank_with_score(&self, member: &[u8]) -> Option<(usize, f64)> {
        self.rank_with_score(member)
            .map(|(r, s)| (self.len() - 1 - r, s))
    }

    /// The element of rank `rank` (0 is the lowest); for ZRANDMEMBER.
    pub fn get_by_rank(&self, rank: usize) -> Option<(f64, &[u8])> {
        if rank >= self.len() {
            return None;
        }
        let mut path = Path::new();
        let (leaf, pos) = self.tree.descend_rank(rank, &mut path);
        let l = self.tree.leaf(leaf);
        Some((l.score(pos), l.member(pos)))
    }

    /// Elements of ranks `[a, b)`, forward from `a` or backward from `b - 1`.
    fn interval(&self, a: usize, b: usize, rev: bool) -> Range<'_> {
        let n = b.saturating_sub(a);
        if n == 0 {
            return Range {
                tree: &self.tree,
                leaf: 0,
                pos: 0,
                remaining: 0,
                rev,
            };
        }
        let mut path = Path::new();
        let (leaf, pos) = self
            .tree
            .descend_rank(if rev { b - 1 } else { a }, &mut path);
        Range {
            tree: &self.tree,
            leaf,
            pos: if rev { pos + 1 } else { pos },
            remaining: n,
            rev,
        }
    }

    /// All elements in order.
    pub fn iter(&self) -> Range<'_> {
        self.interval(0, self.len(), false)
    }

    /// ZRANGE start stop `[REV]`: ranks as Redis reads them (negative from
    /// the end, clamped); with `rev`, rank 0 is the highest score.
    pub fn range_by_rank(&self, start: i64, stop: i64, rev: bool) -> Range<'_> {
        let (a, b) = rank_interval(start, stop, self.len());
        if rev {
            let n = self.len();
            self.interval(n - b.max(a), n - a, true)
        } else {
            self.interval(a, b, false)
        }
    }

    /// The ranks `[a, b)` of the elements in a score range.
    fn score_interval(&self, range: &ScoreRange) -> (usize, usize) {
        if range.is_empty_spec() || self.is_empty() {
            return (0, 0);
        }
        let a = self.tree.partition(|s, _| range.below_min(s));
        let b = self.tree.partition(|s, _| range.le_max(s));
        (a, b.max(a))
    }

    /// ZRANGE BYSCORE `[REV]` [LIMIT offset count]: `rev` walks from the
    /// highest score down (the offset counts from there).
    pub fn range_by_score(&self, range: &ScoreRange, rev: bool, limit: Option<Limit>) -> Range<'_> {
        let (a, b) = self.score_interval(range);
        self.limited(a, b, rev, limit)
    }

    fn limited(&self, a: usize, b: usize, rev: bool, limit: Option<Limit>) -> Range<'_> {
        let (skip, take) = Limit::apply(limit, b - a);
        if rev {
            self.interval(b - skip - take, b - skip, true)
        } else {
            self.interval(a + skip, a + skip + take, false)
        }
    }

    /// ZCOUNT.
    pub fn count_by_score(&self, range: &ScoreRange) -> usize {
        let (a, b) = self.score_interval(range);
        b - a
    }

    /// Whether every score is equal (then member order is the set order).
    fn one_score(&self) -> bool {
        match (
            self.get_by_rank(0),
            self.get_by_rank(self.len().wrapping_sub(1)),
        ) {
            (Some((a, _)), Some((b, _))) => a == b,
            _ => true,
        }
    }

    /// The ranks `[a, b)` a lex range covers, walking forward (`rev` false)
    /// or backward, as Redis does on its listpack encoding: the first
    /// element (from that end) on the near side of the far bound starts the
    /// range if it is within the other bound, the range stops at the first
    /// element out of it. With equal scores (the documented use) this is the
    /// members within the bounds, found in O(log n); with different scores
    /// it is Redis's unspecified answer, found in O(n).
    fn lex_interval(&self, range: &LexRange<'_>, rev: bool) -> (usize, usize) {
        let n = self.len();
        if range.is_empty_spec() || n == 0 {
            return (0, 0);
        }
        let (first, last) = (
            self.get_by_rank(0).expect("non-empty").1,
            self.get_by_rank(n - 1).expect("non-empty").1,
        );
        if !range.gte_min(last) || !range.lte_max(first) {
            return (0, 0);
        }
        if self.one_score() {
            let a = self.tree.partition(|_, m| !range.gte_min(m));
            let b = self.tree.partition(|_, m| range.lte_max(m));
            return (a, b.max(a));
        }
        let members: Vec<&[u8]> = self.iter().map(|(_, m)| m).collect();
        if rev {
            let Some(hi) = members.iter().rposition(|m| range.lte_max(m)) else {
                return (0, 0);
            };
            if !range.gte_min(members[hi]) {
                return (0, 0);
            }
            let mut lo = hi;
            while lo > 0 && range.gte_min(members[lo - 1]) {
                lo -= 1;
            }
            (lo, hi + 1)
        } else {
            let Some(lo) = members.iter().position(|m| range.gte_min(m)) else {
                return (0, 0);
            };
            if !range.lte_max(members[lo]) {
                return (0, 0);
            }
            let mut hi = lo + 1;
            while hi < n && range.lte_max(members[hi]) {
                hi += 1;
            }
            (lo, hi)
        }
    }

    /// ZRANGE BYLEX `[REV]` [LIMIT offset count] (ZRANGEBYLEX, ZREVRANGEBYLEX).
    pub fn range_by_lex(&self, range: &LexRange<'_>, rev: bool, limit: Option<Limit>) -> Range<'_> {
        let (a, b) = self.lex_interval(range, rev);
        match limit {
            Some(l) if l.offset > 0 && a < b && !self.one_score() => {
                self.lex_skipping(range, rev, if rev { b - 1 } else { a }, l)
            }
            _ => self.limited(a, b, rev, limit),
        }
    }

    /// A lex range with an offset over different scores, as Redis's listpack
    /// walk gives it: from the range's first element (`start`), the offset
    /// skips elements whether or not they are in the range, then elements
    /// are taken until one is out of it (a rare case, O(n)).
    fn lex_skipping(
        &self,
        range: &LexRange<'_>,
        rev: bool,
        start: usize,
        limit: Limit,
    ) -> Range<'_> {
        let n = self.len();
        let offset = usize::try_from(limit.offset).unwrap_or(usize::MAX);
        let first = if rev {
            start.checked_sub(offset)
        } else {
            start.checked_add(offset).filter(|&i| i < n)
        };
        let Some(first) = first else {
            return self.interval(0, 0, rev);
        };
        let wanted = usize::try_from(limit.count).unwrap_or(usize::MAX);
        let mut taken = 0;
        let inside = |i: usize| {
            let (_, m) = self.get_by_rank(i).expect("in bounds");
            if rev {
                range.gte_min(m)
            } else {
                range.lte_max(m)
            }
        };
        while taken < wanted && inside(if rev { first - taken } else { first + taken }) {
            taken += 1;
            if (rev && taken > first) || (!rev && first + taken >= n) {
                break;
            }
        }
        if rev {
            self.interval(first + 1 - taken, first + 1, true)
        } else {
            self.interval(first, first + taken, false)
        }
    }

    /// ZLEXCOUNT.
    pub fn count_by_lex(&self, range: &LexRange<'_>) -> usize {
        let (a, b) = self.lex_interval(range, false);
        b - a
    }

    /// Removes the element of rank `rank` (< len); returns it.
    fn remove_rank(&mut self, rank: usize) -> (f64, Vec<u8>) {
        let mut path = Path::new();
        let (leaf, pos) = self.tree.descend_rank(rank, &mut path);
        let l = self.tree.leaf(leaf);
        let (score, member) = (l.score(pos), l.member(pos).to_vec());
        let h = self.tree.hash(&member);
        self.tree.remove_at(leaf, pos, &path, h);
        (score, member)
    }

    fn remove_interval(&mut self, a: usize, b: usize) -> usize {
        for _ in a..b {
            self.remove_rank(a);
        }
        b - a
    }

    /// ZPOPMIN count: up to `count` lowest elements, lowest first.
    pub fn pop_min(&mut self, count: usize) -> Vec<(f64, Vec<u8>)> {
        let n = count.min(self.len());
        (0..n).map(|_| self.remove_rank(0)).collect()
    }

    /// ZPOPMAX count: up to `count` highest elements, highest first.
    pub fn pop_max(&mut self, count: usize) -> Vec<(f64, Vec<u8>)> {
        let n = count.min(self.len());
        (0..n).map(|_| self.remove_rank(self.len() - 1)).collect()
    }

    /// ZREMRANGEBYRANK start stop; the number removed.
    pub fn remove_range_by_rank(&mut self, start: i64, stop: i64) -> usize {
        let (a, b) = rank_interval(start, stop, self.len());
        self.remove_interval(a, b)
    }

    /// ZREMRANGEBYSCORE; the number removed.
    pub fn remove_range_by_score(&mut self, range: &ScoreRange) -> usize {
        let (a, b) = self.score_interval(range);
        self.remove_interval(a, b)
    }

    /// ZREMRANGEBYLEX; the number removed.
    pub fn remove_range_by_lex(&mut self, range: &LexRange<'_>) -> usize {
        let (a, b) = self.lex_interval(range, false);
        self.remove_interval(a, b)
    }

    /// The hashes of a batch of members.
    fn hashes<M: AsRef<[u8]>>(&self, members: &[M]) -> Vec<u64> {
        members.iter().map(|m| self.tree.hash(m.as_ref())).collect()
    }

    /// Batch pipelining: before handling member `i`, prefetch the index
    /// slot, leaf header and leaf arrays of members a few steps ahead, so
    /// that the cache misses of several members overlap.
    #[inline]
    fn prefetch_ahead(&self, hashes: &[u64], i: usize) {
        const SLOT: usize = 12;
        const LEAF: usize = 8;
        const ARRAYS: usize = 4;
        if let Some(&h) = hashes.get(i + SLOT) {
            self.tree.prefetch_slot(h);
        }
        if let Some(&h) = hashes.get(i + LEAF) {
            self.tree.prefetch_leaf(h);
        }
        if let Some(&h) = hashes.get(i + ARRAYS) {
            self.tree.prefetch_arrays(h);
        }
    }

    /// ZMSCORE / batch scores: the score of each member.
    pub fn scores<M: AsRef<[u8]>>(&self, members: &[M]) -> Vec<Option<f64>> {
        let mut out = vec![0.0; members.len()];
        self.scores_into(members, &mut out);
        out.into_iter()
            .map(|s| (!s.is_nan()).then_some(s))
            .collect()
    }

    /// Batch scores into a slice (for arrays): NaN for a missing member.
    /// Panics when the lengths differ.
    pub fn scores_into<M: AsRef<[u8]>>(&self, members: &[M], out: &mut [f64]) {
        assert_eq!(members.len(), out.len(), "one output per member");
        let hashes = self.hashes(members);
        for (i, (m, o)) in members.iter().zip(out).enumerate() {
            self.prefetch_ahead(&hashes, i);
            *o = self.score_hashed(m.as_ref(), hashes[i]).unwrap_or(f64::NAN);
        }
    }

    /// Batch ranks (reverse ranks with `rev`).
    pub fn ranks<M: AsRef<[u8]>>(&self, members: &[M], rev: bool) -> Vec<Option<usize>> {
        let mut out = vec![0; members.len()];
        self.ranks_into(members, rev, &mut out);
        out.into_iter().map(|r| usize::try_from(r).ok()).collect()
    }

    /// Batch ranks into a slice (for arrays): -1 for a missing member.
    /// Panics when the lengths differ.
    pub fn ranks_into<M: AsRef<[u8]>>(&self, members: &[M], rev: bool, out: &mut [i64]) {
        assert_eq!(members.len(), out.len(), "one output per member");
        let hashes = self.hashes(members);
        let last = self.len().wrapping_sub(1);
        for (i, (m, o)) in members.iter().zip(out).enumerate() {
            self.prefetch_ahead(&hashes, i);
            *o = match self.rank_hashed(m.as_ref(), hashes[i]) {
                Some((r, _)) if rev => (last - r) as i64,
                Some((r, _)) => r as i64,
                None => -1,
            };
        }
    }

    /// Heap bytes held by the set, summed from the capacity of every
    /// allocation (leaf vectors, inner nodes, separator keys, the node
    /// arrays and the member index) plus the set itself. The allocator's
    /// own per-allocation headers and rounding are not included.
    pub fn memory_bytes(&self) -> usize {
        self.tree.memory_bytes()
    }

    /// The member bytes stored (the sum of the members' lengths), so that
    /// `memory_bytes() - member_bytes() - 8 * len()` is the overhead.
    pub fn member_bytes(&self) -> usize {
        self.tree.member_bytes()
    }

    /// The shape of the tree, for reports.
    pub fn stats(&self) -> Stats {
        let (leaves, inner_nodes, height, index_slots) = self.tree.shape();
        Stats {
            len: self.len(),
            leaves,
            inner_nodes,
            height,
            index_slots,
            memory_bytes: self.memory_bytes(),
        }
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        self.tree.check();
    }
}

/// The shape of a set ([`ZSet::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Members.
    pub len: usize,
    /// Leaves in use.
    pub leaves: usize,
    /// Inner nodes in use.
    pub inner_nodes: usize,
    /// Levels of inner nodes above the leaves.
    pub height: usize,
    /// Slots of the member index.
    pub index_slots: usize,
    /// [`ZSet::memory_bytes`].
    pub memory_bytes: usize,
}

#[cfg(test)]
mod tests;
