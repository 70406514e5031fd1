//! Unit tests of every operation and Redis edge case, and a property test
//! against a `BTreeSet` + `HashMap` model.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

fn owned<'a>(r: impl Iterator<Item = (f64, &'a [u8])>) -> Vec<(f64, Vec<u8>)> {
    r.map(|(s, m)| (s, m.to_vec())).collect()
}

fn pairs(v: &[(f64, &str)]) -> Vec<(f64, Vec<u8>)> {
    v.iter().map(|(s, m)| (*s, m.as_bytes().to_vec())).collect()
}

fn set(v: &[(f64, &str)]) -> ZSet {
    let mut z = ZSet::new();
    for (s, m) in v {
        z.insert(*s, m.as_bytes()).unwrap();
    }
    z.check_invariants();
    z
}

fn abc() -> ZSet {
    set(&[(1.0, "a"), (2.0, "b"), (3.0, "c"), (4.0, "d"), (5.0, "e")])
}

#[test]
fn empty_set() {
    let mut z = ZSet::new();
    assert_eq!(z.len(), 0);
    assert!(z.is_empty());
    assert_eq!(z.score(b"x"), None);
    assert_eq!(z.rank(b"x"), None);
    assert_eq!(z.rev_rank(b"x"), None);
    assert_eq!(z.get_by_rank(0), None);
    assert_eq!(z.range_by_rank(0, -1, false).count(), 0);
    assert_eq!(z.range_by_rank(0, -1, true).count(), 0);
    assert_eq!(z.range_by_score(&ScoreRange::all(), false, None).count(), 0);
    let lex = LexRange::parse(b"-", b"+").unwrap();
    assert_eq!(z.range_by_lex(&lex, false, None).count(), 0);
    assert_eq!(z.count_by_lex(&lex), 0);
    assert_eq!(z.count_by_score(&ScoreRange::all()), 0);
    assert!(z.pop_min(3).is_empty());
    assert!(z.pop_max(3).is_empty());
    assert_eq!(z.remove(b"x"), None);
    assert_eq!(z.remove_range_by_rank(0, -1), 0);
    assert_eq!(z.remove_range_by_score(&ScoreRange::all()), 0);
    assert_eq!(z.remove_range_by_lex(&lex), 0);
    z.check_invariants();
}

#[test]
fn insert_score_rank() {
    let mut z = abc();
    assert_eq!(z.len(), 5);
    assert_eq!(z.score(b"c"), Some(3.0));
    assert_eq!(z.rank(b"a"), Some(0));
    assert_eq!(z.rank(b"e"), Some(4));
    assert_eq!(z.rev_rank(b"e"), Some(0));
    assert_eq!(z.rank_with_score(b"d"), Some((3, 4.0)));
    assert_eq!(z.rev_rank_with_score(b"d"), Some((1, 4.0)));
    assert_eq!(z.insert(0.5, b"e").unwrap(), Some(5.0));
    assert_eq!(z.rank(b"e"), Some(0));
    assert_eq!(z.get_by_rank(0), Some((0.5, &b"e"[..])));
    assert_eq!(z.get_by_rank(5), None);
    z.check_invariants();
}

#[test]
fn ties_ordered_by_member_bytes() {
    let z = set(&[
        (1.0, "b"),
        (1.0, "a"),
        (1.0, "ab"),
        (1.0, ""),
        (1.0, "B"),
        (0.0, "z"),
    ]);
    let got = owned(z.iter());
    assert_eq!(
        got,
        pairs(&[
            (0.0, "z"),
            (1.0, ""),
            (1.0, "B"),
            (1.0, "a"),
            (1.0, "ab"),
            (1.0, "b")
        ])
    );
    // Bytes compare unsigned: 0xff after 'z'.
    let mut z = ZSet::new();
    z.insert(0.0, &[0xff]).unwrap();
    z.insert(0.0, b"z").unwrap();
    assert_eq!(z.rank(&[0xff]), Some(1));
}

#[test]
fn nan_refused_inf_allowed() {
    let mut z = ZSet::new();
    assert_eq!(z.insert(f64::NAN, b"a"), Err(Error::NotAFloat));
    assert!(z.is_empty());
    z.insert(f64::INFINITY, b"top").unwrap();
    z.insert(f64::NEG_INFINITY, b"bottom").unwrap();
    z.insert(0.0, b"mid").unwrap();
    assert_eq!(z.rank(b"top"), Some(2));
    assert_eq!(z.rank(b"bottom"), Some(0));
    assert_eq!(z.incr(f64::NEG_INFINITY, b"top"), Err(Error::NanResult));
    assert_eq!(z.score(b"top"), Some(f64::INFINITY));
    assert_eq!(z.incr(f64::INFINITY, b"top"), Ok(f64::INFINITY));
    assert_eq!(z.incr(f64::NAN, b"top"), Err(Error::NotAFloat));
    assert_eq!(z.incr(1.0, b"new"), Ok(1.0));
    assert_eq!(z.incr(f64::MAX, b"big"), Ok(f64::MAX));
    assert_eq!(z.incr(f64::MAX, b"big"), Ok(f64::INFINITY));
    z.check_invariants();
}

#[test]
fn negative_zero() {
    // As redis-server 7.0.15 on a small (listpack) set.
    let mut z = ZSet::new();
    z.insert(-0.0, b"a").unwrap();
    z.insert(0.0, b"b").unwrap();
    // Stored as +0 (ZSCORE answers "0").
    assert!(z.score(b"a").unwrap().is_sign_positive());
    // -0 == 0: ties by member.
    assert_eq!(z.rank(b"a"), Some(0));
    assert_eq!(z.rank(b"b"), Some(1));
    let r = z
        .zadd(
            AddFlags {
                ch: true,
                ..AddFlags::default()
            },
            &[-0.0],
            &[b"b"],
        )
        .unwrap();
    assert_eq!(r, AddReply::Count(0));
    // ZINCRBY -0 on 0 answers "0"; ZADD INCR -0 of a new member answers "-0", stores 0.
    assert!(z.incr(-0.0, b"a").unwrap().is_sign_positive());
    let incr = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    match z.zadd(incr, &[-0.0], &[b"n"]).unwrap() {
        AddReply::Score(Some(v)) => assert!(v == 0.0 && v.is_sign_negative()),
        other => panic!("{other:?}"),
    }
    assert!(z.score(b"n").unwrap().is_sign_positive());
    assert_eq!(
        z.count_by_score(&ScoreRange::parse(b"-0", b"0").unwrap()),
        3
    );
    assert_eq!(
        z.count_by_score(&ScoreRange::parse(b"-0", b"(0").unwrap()),
        0
    );
    // A range moved from -1 to -0 through the tree: stored +0.
    z.insert(-1.0, b"m").unwrap();
    z.incr(1.0, b"m").unwrap();
    assert!(z.score(b"m").unwrap().is_sign_positive());
    z.insert(-0.0, b"m").unwrap();
    assert!(z.score(b"m").unwrap().is_sign_positive());
    z.check_invariants();
}

#[test]
fn zadd_flags() {
    let f = AddFlags::default;
    let mut z = ZSet::new();
    assert_eq!(
        z.zadd(f(), &[1.0, 2.0], &[b"a", b"b"]),
        Ok(AddReply::Count(2))
    );
    // Update does not count without CH.
    assert_eq!(
        z.zadd(f(), &[5.0, 3.0], &[b"a", b"c"]),
        Ok(AddReply::Count(1))
    );
    let ch = AddFlags { ch: true, ..f() };
    assert_eq!(
        z.zadd(ch, &[6.0, 3.0, 1.0], &[b"a", b"c", b"d"]),
        Ok(AddReply::Count(2))
    );
    // NX: only new.
    let nx = AddFlags {
        nx: true,
        ch: true,
        ..f()
    };
    assert_eq!(
        z.zadd(nx, &[0.0, 7.0], &[b"a", b"e"]),
        Ok(AddReply::Count(1))
    );
    assert_eq!(z.score(b"a"), Some(6.0));
    // XX: only existing.
    let xx = AddFlags {
        xx: true,
        ch: true,
        ..f()
    };
    assert_eq!(
        z.zadd(xx, &[0.0, 7.0], &[&b"a"[..], b"zz"]),
        Ok(AddReply::Count(1))
    );
    assert_eq!(z.score(b"a"), Some(0.0));
    assert_eq!(z.score(b"zz"), None);
    // GT / LT: updates only in that direction, adds new members.
    let gt = AddFlags {
        gt: true,
        ch: true,
        ..f()
    };
    assert_eq!(
        z.zadd(gt, &[-1.0, 10.0, 4.0], &[b"a", b"b", b"g"]),
        Ok(AddReply::Count(2))
    );
    assert_eq!(z.score(b"a"), Some(0.0));
    assert_eq!(z.score(b"b"), Some(10.0));
    let lt = AddFlags {
        lt: true,
        ch: true,
        ..f()
    };
    assert_eq!(
        z.zadd(lt, &[-1.0, 11.0], &[b"a", b"b"]),
        Ok(AddReply::Count(1))
    );
    assert_eq!(z.score(b"a"), Some(-1.0));
    assert_eq!(z.score(b"b"), Some(10.0));
    // INCR replies the new score or nil.
    let incr = AddFlags { incr: true, ..f() };
    assert_eq!(
        z.zadd(incr, &[2.5], &[b"a"]),
        Ok(AddReply::Score(Some(1.5)))
    );
    assert_eq!(
        z.zadd(incr, &[2.5], &[b"new"]),
        Ok(AddReply::Score(Some(2.5)))
    );
    let incr_nx = AddFlags {
        incr: true,
        nx: true,
        ..f()
    };
    assert_eq!(z.zadd(incr_nx, &[1.0], &[b"a"]), Ok(AddReply::Score(None)));
    let incr_xx = AddFlags {
        incr: true,
        xx: true,
        ..f()
    };
    assert_eq!(
        z.zadd(incr_xx, &[1.0], &[b"nope"]),
        Ok(AddReply::Score(None))
    );
    assert_eq!(z.score(b"nope"), None);
    let incr_gt = AddFlags {
        incr: true,
        gt: true,
        ..f()
    };
    assert_eq!(z.zadd(incr_gt, &[-1.0], &[b"a"]), Ok(AddReply::Score(None)));
    assert_eq!(
        z.zadd(incr_gt, &[1.0], &[b"a"]),
        Ok(AddReply::Score(Some(2.5)))
    );
    let incr_lt = AddFlags {
        incr: true,
        lt: true,
        ..f()
    };
    assert_eq!(z.zadd(incr_lt, &[0.0], &[b"a"]), Ok(AddReply::Score(None)));
    assert_eq!(
        z.zadd(incr, &[0.0], &[b"a"]),
        Ok(AddReply::Score(Some(2.5)))
    );
    // Bad combinations and NaN: nothing applied.
    let before = owned(z.iter());
    assert_eq!(
        z.zadd(
            AddFlags {
                nx: true,
                xx: true,
                ..f()
            },
            &[1.0],
            &[b"q"]
        ),
        Err(Error::NxAndXx)
    );
    assert_eq!(
        z.zadd(
            AddFlags {
                nx: true,
                gt: true,
                ..f()
            },
            &[1.0],
            &[b"q"]
        ),
        Err(Error::GtLtNx)
    );
    assert_eq!(
        z.zadd(
            AddFlags {
                lt: true,
                gt: true,
                ..f()
            },
            &[1.0],
            &[b"q"]
        ),
        Err(Error::GtLtNx)
    );
    assert_eq!(
        z.zadd(incr, &[1.0, 2.0], &[b"q", b"r"]),
        Err(Error::IncrMany)
    );
    assert_eq!(
        z.zadd(f(), &[1.0, f64::NAN], &[b"q", b"r"]),
        Err(Error::NotAFloat)
    );
    assert_eq!(
        z.zadd(f(), &[1.0], &[b"q", b"r"]),
        Err(Error::LengthMismatch {
            scores: 1,
            members: 2
        })
    );
    z.zadd(f(), &[f64::INFINITY], &[b"inf"]).unwrap();
    let before_inf = owned(z.iter());
    assert_eq!(
        z.zadd(incr, &[f64::NEG_INFINITY], &[b"inf"]),
        Err(Error::NanResult)
    );
    assert_eq!(owned(z.iter()), before_inf);
    z.remove(b"inf");
    assert_eq!(owned(z.iter()), before);
    z.check_invariants();
}

#[test]
fn error_messages_are_redis_replies() {
    assert_eq!(Error::NotAFloat.to_string(), "value is not a valid float");
    assert_eq!(
        Error::NanResult.to_string(),
        "resulting score is not a number (NaN)"
    );
    assert_eq!(
        Error::BadScoreBound.to_string(),
        "min or max is not a float"
    );
    assert_eq!(
        Error::BadLexBound.to_string(),
        "min or max not valid string range item"
    );
    assert_eq!(
        Error::NxAndXx.to_string(),
        "XX and NX options at the same time are not compatible"
    );
}

#[test]
fn range_by_rank_redis_indexes() {
    let z = abc();
    let names = |r: Range<'_>| {
        r.map(|(_, m)| String::from_utf8(m.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join("")
    };
    assert_eq!(names(z.range_by_rank(0, -1, false)), "abcde");
    assert_eq!(names(z.range_by_rank(0, -1, true)), "edcba");
    assert_eq!(names(z.range_by_rank(1, 2, false)), "bc");
    assert_eq!(names(z.range_by_rank(1, 2, true)), "dc");
    assert_eq!(names(z.range_by_rank(-2, -1, false)), "de");
    assert_eq!(names(z.range_by_rank(-2, -1, true)), "ba");
    assert_eq!(names(z.range_by_rank(-100, 1, false)), "ab");
    assert_eq!(names(z.range_by_rank(3, 100, false)), "de");
    assert_eq!(names(z.range_by_rank(5, 10, false)), "");
    assert_eq!(names(z.range_by_rank(3, 1, false)), "");
    assert_eq!(names(z.range_by_rank(-1, -2, false)), "");
    assert_eq!(names(z.range_by_rank(0, 0, true)), "e");
    assert_eq!(names(z.range_by_rank(-100, -50, false)), "");
    assert_eq!(z.range_by_rank(0, -1, false).len(), 5);
}

#[test]
fn range_by_score_bounds_and_limit() {
    let z = abc();
    let r = |min: &str, max: &str, rev: bool, limit: Option<Limit>| {
        let range = ScoreRange::parse(min.as_bytes(), max.as_bytes()).unwrap();
        z.range_by_score(&range, rev, limit)
            .map(|(_, m)| String::from_utf8(m.to_vec()).unwrap())
            .collect::<String>()
    };
    assert_eq!(r("-inf", "+inf", false, None), "abcde");
    assert_eq!(r("-inf", "inf", true, None), "edcba");
    assert_eq!(r("2", "4", false, None), "bcd");
    assert_eq!(r("(2", "4", false, None), "cd");
    assert_eq!(r("2", "(4", false, None), "bc");
    assert_eq!(r("(2", "(4", false, None), "c");
    assert_eq!(r("(2", "(3", false, None), "");
    assert_eq!(r("3", "3", false, None), "c");
    assert_eq!(r("(3", "3", false, None), "");
    assert_eq!(r("4", "2", false, None), "");
    assert_eq!(r("2.5", "1e1", true, None), "edc");
    let lim = |offset, count| Some(Limit { offset, count });
    assert_eq!(r("-inf", "+inf", false, lim(1, 2)), "bc");
    assert_eq!(r("-inf", "+inf", true, lim(1, 2)), "dc");
    assert_eq!(r("-inf", "+inf", false, lim(1, -1)), "bcde");
    assert_eq!(r("-inf", "+inf", true, lim(3, -5)), "ba");
    assert_eq!(r("-inf", "+inf", false, lim(-1, 2)), "");
    assert_eq!(r("-inf", "+inf", false, lim(0, 0)), "");
    assert_eq!(r("-inf", "+inf", false, lim(10, 2)), "");
    assert_eq!(r("2", "4", false, lim(2, 10)), "d");
    let count = |min: &str, max: &str| {
        z.count_by_score(&ScoreRange::parse(min.as_bytes(), max.as_bytes()).unwrap())
    };
    assert_eq!(count("-inf", "+inf"), 5);
    assert_eq!(count("(1", "(5"), 3);
    assert_eq!(count("5", "1"), 0);
    assert_eq!(ScoreRange::parse(b"x", b"1"), Err(Error::BadScoreBound));
    assert_eq!(ScoreRange::parse(b"nan", b"1"), Err(Error::BadScoreBound));
    // strtod, as Redis parses bounds: empty is 0, leading spaces skipped.
    assert_eq!(ScoreBound::parse(b"(").unwrap(), ScoreBound::excl(0.0));
    assert_eq!(ScoreBound::parse(b"").unwrap(), ScoreBound::incl(0.0));
    assert_eq!(ScoreBound::parse(b" 2").unwrap(), ScoreBound::incl(2.0));
    assert_eq!(
        ScoreBound::parse(b"1e999").unwrap(),
        ScoreBound::incl(f64::INFINITY)
    );
    assert_eq!(ScoreBound::parse(b"2 "), Err(Error::BadScoreBound));
    assert_eq!(
        ScoreBound::parse(b"(-inf").unwrap(),
        ScoreBound::excl(f64::NEG_INFINITY)
    );
}

#[test]
fn inf_score_bounds() {
    let z = set(&[
        (f64::NEG_INFINITY, "lo"),
        (0.0, "mid"),
        (f64::INFINITY, "hi"),
    ]);
    let c = |a: &[u8], b: &[u8]| z.count_by_score(&ScoreRange::parse(a, b).unwrap());
    assert_eq!(c(b"-inf", b"+inf"), 3);
    assert_eq!(c(b"(-inf", b"(+inf"), 1);
    assert_eq!(c(b"+inf", b"+inf"), 1);
    assert_eq!(c(b"(+inf", b"+inf"), 0);
}

#[test]
fn lex_ranges() {
    let z = set(&[
        (0.0, "a"),
        (0.0, "b"),
        (0.0, "c"),
        (0.0, "d"),
        (0.0, "e"),
        (0.0, "ee"),
    ]);
    let r = |min: &str, max: &str, rev: bool, limit: Option<Limit>| {
        let range = LexRange::parse(min.as_bytes(), max.as_bytes()).unwrap();
        z.range_by_lex(&range, rev, limit)
            .map(|(_, m)| String::from_utf8(m.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(r("-", "+", false, None), "a,b,c,d,e,ee");
    assert_eq!(r("-", "+", true, None), "ee,e,d,c,b,a");
    assert_eq!(r("[b", "[d", false, None), "b,c,d");
    assert_eq!(r("(b", "(d", false, None), "c");
    assert_eq!(r("[e", "+", false, None), "e,ee");
    assert_eq!(r("(e", "+", false, None), "ee");
    assert_eq!(r("-", "(c", true, None), "b,a");
    assert_eq!(r("[aa", "[bb", false, None), "b");
    assert_eq!(r("+", "-", false, None), "");
    assert_eq!(r("-", "-", false, None), "");
    assert_eq!(r("+", "+", false, None), "");
    assert_eq!(r("[c", "(c", false, None), "");
    assert_eq!(r("[c", "[c", false, None), "c");
    assert_eq!(r("[d", "[b", false, None), "");
    assert_eq!(
        r(
            "-",
            "+",
            false,
            Some(Limit {
                offset: 1,
                count: 2
            })
        ),
        "b,c"
    );
    assert_eq!(
        r(
            "-",
            "+",
            true,
            Some(Limit {
                offset: 1,
                count: 2
            })
        ),
        "e,d"
    );
    assert_eq!(
        r(
            "-",
            "+",
            false,
            Some(Limit {
                offset: -1,
                count: 2
            })
        ),
        ""
    );
    let c = |min: &str, max: &str| {
        z.count_by_lex(&LexRange::parse(min.as_bytes(), max.as_bytes()).unwrap())
    };
    assert_eq!(c("-", "+"), 6);
    assert_eq!(c("[b", "(e"), 3);
    assert_eq!(LexRange::parse(b"a", b"+"), Err(Error::BadLexBound));
    assert_eq!(LexRange::parse(b"-", b"++"), Err(Error::BadLexBound));
    assert_eq!(LexRange::parse(b"", b"+"), Err(Error::BadLexBound));
    assert_eq!(LexBound::parse(b"[").unwrap(), LexBound::Inclusive(b""));
}

#[test]
fn lex_with_different_scores_follows_redis_listpack() {
    // Scores order: c(1) a(2) b(3) — members not sorted. Redis (listpack):
    // the first element >= min starts the range only if <= max.
    let z = set(&[(1.0, "c"), (2.0, "a"), (3.0, "b")]);
    let r = |min: &str, max: &str, rev: bool| {
        let range = LexRange::parse(min.as_bytes(), max.as_bytes()).unwrap();
        z.range_by_lex(&range, rev, None)
            .map(|(_, m)| String::from_utf8(m.to_vec()).unwrap())
            .collect::<String>()
    };
    assert_eq!(r("-", "+", false), "cab");
    assert_eq!(r("[a", "[b", false), ""); // first element c > max
    assert_eq!(r("[b", "+", false), "cab");
    assert_eq!(r("-", "[b", true), ""); // first element c > max
    assert_eq!(r("-", "[c", true), "bac"); // from the end: b <= max, then while >= min
    assert_eq!(r("[c", "+", false), ""); // last element b < min
    assert_eq!(z.count_by_lex(&LexRange::parse(b"-", b"+").unwrap()), 3);
}

#[test]
fn pops() {
    let mut z = abc();
    assert_eq!(z.pop_min(2), pairs(&[(1.0, "a"), (2.0, "b")]));
    assert_eq!(z.pop_max(2), pairs(&[(5.0, "e"), (4.0, "d")]));
    assert_eq!(z.pop_max(0), vec![]);
    assert_eq!(z.pop_min(10), pairs(&[(3.0, "c")]));
    assert!(z.is_empty());
    z.check_invariants();
}

#[test]
fn remove_ranges() {
    let mut z = abc();
    assert_eq!(z.remove_range_by_rank(1, -2), 3);
    assert_eq!(owned(z.iter()), pairs(&[(1.0, "a"), (5.0, "e")]));
    let mut z = abc();
    assert_eq!(z.remove_range_by_rank(-100, 0), 1);
    assert_eq!(z.remove_range_by_rank(10, 20), 0);
    assert_eq!(
        z.remove_range_by_score(&ScoreRange::parse(b"(2", b"4").unwrap()),
        2
    );
    assert_eq!(owned(z.iter()), pairs(&[(2.0, "b"), (5.0, "e")]));
    let mut z = set(&[(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d")]);
    assert_eq!(
        z.remove_range_by_lex(&LexRange::parse(b"(a", b"[c").unwrap()),
        2
    );
    assert_eq!(owned(z.iter()), pairs(&[(0.0, "a"), (0.0, "d")]));
    z.check_invariants();
}

#[test]
fn remove_and_reuse() {
    let mut z = abc();
    assert_eq!(z.remove(b"c"), Some(3.0));
    assert_eq!(z.remove(b"c"), None);
    assert_eq!(z.rank(b"d"), Some(2));
    z.insert(3.0, b"c").unwrap();
    assert_eq!(z.rank(b"d"), Some(3));
    z.check_invariants();
}

#[test]
fn batch_forms() {
    let mut z = ZSet::new();
    let members: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| format!("user{i}").into_bytes())
        .collect();
    let scores: Vec<f64> = (0..1000).map(|i| f64::from(i % 97)).collect();
    assert_eq!(z.add_many(&scores, &members), Ok(1000));
    assert_eq!(z.add_many(&scores, &members), Ok(0));
    let deltas = vec![1.0; 1000];
    let new = z.incr_many(&deltas, &members).unwrap();
    assert_eq!(new[5], 6.0);
    let ranks = z.ranks(&members[..3], false);
    let mut out = vec![0i64; 4];
    let with_missing = [
        &members[0][..],
        &members[1][..],
        &members[2][..],
        b"missing",
    ];
    z.ranks_into(&with_missing, false, &mut out);
    assert_eq!(
        &out[..3],
        &ranks.iter().map(|r| r.unwrap() as i64).collect::<Vec<_>>()[..]
    );
    assert_eq!(out[3], -1);
    let mut rev = vec![0i64; 4];
    z.ranks_into(&with_missing, true, &mut rev);
    assert_eq!(rev[0], 999 - out[0]);
    let mut sc = vec![0f64; 4];
    z.scores_into(&with_missing, &mut sc);
    assert_eq!(sc[1], 2.0);
    assert!(sc[3].is_nan());
    assert_eq!(z.scores(&[&b"user3"[..], b"zz"]), vec![Some(4.0), None]);
    let err = z
        .incr_many(&[1.0, f64::NAN], &[b"user1", b"user2"])
        .unwrap_err();
    assert_eq!(err, (1, Error::NotAFloat));
    assert_eq!(z.score(b"user1"), Some(3.0));
    z.check_invariants();
}

#[test]
fn many_members_split_merge_and_ranks() {
    let mut z = ZSet::new();
    let n = 20_000u32;
    let key = |i: u32| (i.wrapping_mul(2_654_435_761) % 1000, format!("m{i:05}"));
    for i in 0..n {
        let (s, m) = key(i);
        z.insert(f64::from(s), m.as_bytes()).unwrap();
    }
    z.check_invariants();
    assert!(z.stats().height >= 2);
    let all = owned(z.iter());
    for (r, (s, m)) in all.iter().enumerate().step_by(97) {
        assert_eq!(z.rank(m), Some(r));
        assert_eq!(z.get_by_rank(r), Some((*s, &m[..])));
    }
    let rev = owned(z.range_by_rank(0, -1, true));
    assert_eq!(rev.iter().rev().cloned().collect::<Vec<_>>(), all);
    // Move everyone, then remove most: merges and height shrinking.
    for i in 0..n {
        let (_, m) = key(i);
        z.incr(f64::from(i % 7) - 3.0, m.as_bytes()).unwrap();
    }
    z.check_invariants();
    for i in (0..n).filter(|i| i % 10 != 0) {
        let (_, m) = key(i);
        assert!(z.remove(m.as_bytes()).is_some());
    }
    z.check_invariants();
    assert_eq!(z.len(), 2000);
    assert_eq!(z.remove_range_by_rank(0, -1), 2000);
    assert_eq!(z.stats().height, 0);
    z.check_invariants();
    z.insert(1.0, b"again").unwrap();
    assert_eq!(z.rank(b"again"), Some(0));
}

#[test]
fn long_members_and_memory() {
    let mut z = ZSet::new();
    let long = vec![7u8; 100_000];
    z.insert(1.0, &long).unwrap();
    z.insert(0.0, b"short").unwrap();
    assert_eq!(z.rank(&long), Some(1));
    assert!(z.memory_bytes() > 100_000);
    assert_eq!(
        z.insert(1.0, &vec![0u8; MEMBER_MAX + 1]),
        Err(Error::MemberTooLong(MEMBER_MAX + 1))
    );
    z.check_invariants();
}

#[test]
fn parse_float_like_redis() {
    assert_eq!(parse_float(b"1.5"), Some(1.5));
    assert_eq!(parse_float(b"-inf"), Some(f64::NEG_INFINITY));
    assert_eq!(parse_float(b"+inf"), Some(f64::INFINITY));
    assert_eq!(parse_float(b"1e3"), Some(1000.0));
    assert!(parse_float(b"-0").unwrap().is_sign_negative());
    assert_eq!(parse_float(b"+1.5"), Some(1.5));
    assert_eq!(parse_float(b".5"), Some(0.5));
    assert_eq!(parse_float(b"nan"), None);
    assert_eq!(parse_float(b"abc"), None);
    assert_eq!(parse_float(b" 1"), None);
    assert_eq!(parse_float(b"1 "), None);
    assert_eq!(parse_float(b""), None);
    assert_eq!(parse_float(b"1e999"), None);
    assert_eq!(parse_float(b"-1e999"), None);
    assert_eq!(parse_float(b"1e-400"), None);
    assert_eq!(parse_float(b"0e-400"), Some(0.0));
    assert_eq!(parse_float(b"Infinity"), Some(f64::INFINITY));
    assert_eq!(parse_float(b"4e-320"), Some(4e-320));
}

// ---- model-based property test -------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Ord64(f64);
impl PartialEq for Ord64 {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for Ord64 {}
impl PartialOrd for Ord64 {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ord64 {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.partial_cmp(&o.0).expect("no NaN")
    }
}

#[derive(Default)]
struct Model {
    set: BTreeSet<(Ord64, Vec<u8>)>,
    map: HashMap<Vec<u8>, f64>,
}

impl Model {
    fn list(&self) -> Vec<(f64, Vec<u8>)> {
        // The stored score (with its sign) comes from the map.
        self.set
            .iter()
            .map(|(_, m)| (self.map[m], m.clone()))
            .collect()
    }
    fn set_score(&mut self, s: f64, m: &[u8]) {
        let s = s + 0.0; // zero stored as +0, as Redis's listpack does
        if let Some(old) = self.map.insert(m.to_vec(), s) {
            self.set.remove(&(Ord64(old), m.to_vec()));
        }
        self.set.insert((Ord64(s), m.to_vec()));
    }
    fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let old = self.map.remove(m)?;
        self.set.remove(&(Ord64(old), m.to_vec()));
        Some(old)
    }
    fn add(&mut self, f: AddFlags, s: f64, m: &[u8]) -> Result<AddOutcome, Error> {
        match self.map.get(m).copied() {
            Some(_) if f.nx => Ok(AddOutcome::Blocked),
            Some(cur) => {
                let new = if f.incr { s + cur } else { s };
                if new.is_nan() {
                    return Err(Error::NanResult);
                }
                if (f.lt && new >= cur) || (f.gt && new <= cur) {
                    return Ok(AddOutcome::Blocked);
                }
                if new == cur {
                    return Ok(AddOutcome::Unchanged(new));
                }
                self.set_score(new, m);
                Ok(AddOutcome::Updated(new))
            }
            None if f.xx => Ok(AddOutcome::Blocked),
            None => {
                self.set_score(s, m);
                Ok(AddOutcome::Added(s))
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(AddFlags, f64, Vec<u8>),
    Remove(Vec<u8>),
    Rank(Vec<u8>),
    RangeRank(i64, i64, bool),
    RangeScore(f64, bool, f64, bool, bool, Option<(i64, i64)>),
    RangeLex(Vec<u8>, Vec<u8>, bool, Option<(i64, i64)>),
    Pop(bool, usize),
    RemRank(i64, i64),
    RemScore(f64, f64),
    RemLex(Vec<u8>, Vec<u8>),
    Many(Vec<(f64, Vec<u8>)>, bool),
}

fn member() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u16..300).prop_map(|i| format!("m{i}").into_bytes()),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xffu8)], 0..4),
    ]
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => (-20i32..20).prop_map(f64::from),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => -1e3f64..1e3,
    ]
}

fn flags() -> impl Strategy<Value = AddFlags> {
    (0u8..64).prop_map(|b| AddFlags {
        nx: b & 1 != 0,
        xx: b & 2 != 0,
        gt: b & 4 != 0,
        lt: b & 8 != 0,
        ch: b & 16 != 0,
        incr: b & 32 != 0,
    })
}

fn lex_bound() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"-".to_vec()),
        Just(b"+".to_vec()),
        member().prop_map(|m| [b"[".to_vec(), m].concat()),
        member().prop_map(|m| [b"(".to_vec(), m].concat()),
    ]
}

fn limit() -> impl Strategy<Value = Option<(i64, i64)>> {
    proptest::option::of((-2i64..20, -2i64..20))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (flags(), score(), member()).prop_map(|(f, s, m)| Op::Add(f, s, m)),
        3 => member().prop_map(Op::Remove),
        3 => member().prop_map(Op::Rank),
        2 => (-30i64..30, -30i64..30, any::<bool>()).prop_map(|(a, b, r)| Op::RangeRank(a, b, r)),
        2 => (score(), any::<bool>(), score(), any::<bool>(), any::<bool>(), limit())
            .prop_map(|(a, ax, b, bx, r, l)| Op::RangeScore(a, ax, b, bx, r, l)),
        2 => (lex_bound(), lex_bound(), any::<bool>(), limit()).prop_map(|(a, b, r, l)| Op::RangeLex(a, b, r, l)),
        1 => (any::<bool>(), 0usize..5).prop_map(|(max, n)| Op::Pop(max, n)),
        1 => (-30i64..30, -30i64..30).prop_map(|(a, b)| Op::RemRank(a, b)),
        1 => (score(), score()).prop_map(|(a, b)| Op::RemScore(a, b)),
        1 => (lex_bound(), lex_bound()).prop_map(|(a, b)| Op::RemLex(a, b)),
        1 => (proptest::collection::vec((score(), member()), 0..200), any::<bool>())
            .prop_map(|(v, ch)| Op::Many(v, ch)),
    ]
}

fn bits(v: Vec<(f64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    v.into_iter().map(|(s, m)| (s.to_bits(), m)).collect()
}

fn model_rank_interval(start: i64, stop: i64, n: usize) -> std::ops::Range<usize> {
    let (a, b) = rank_interval(start, stop, n);
    a..b
}

fn model_lex(model: &Model, range: &LexRange<'_>, rev: bool) -> Vec<(f64, Vec<u8>)> {
    // Redis listpack semantics, written out linearly.
    let list = model.list();
    if list.is_empty() || range.is_empty_spec() {
        return vec![];
    }
    if !range.gte_min(&list[list.len() - 1].1) || !range.lte_max(&list[0].1) {
        return vec![];
    }
    let mut out = vec![];
    if rev {
        let Some(i) = list.iter().rposition(|(_, m)| range.lte_max(m)) else {
            return out;
        };
        for e in list[..=i].iter().rev() {
            if !range.gte_min(&e.1) {
                break;
            }
            out.push(e.clone());
        }
    } else {
        let Some(i) = list.iter().position(|(_, m)| range.gte_min(m)) else {
            return out;
        };
        for e in &list[i..] {
            if !range.lte_max(&e.1) {
                break;
            }
            out.push(e.clone());
        }
    }
    out
}

/// A lex range with LIMIT as Redis's listpack walk gives it: from the
/// range's first element the offset skips elements in set order, in the
/// range or not; then elements are taken while within the far bound.
fn model_lex_walk(
    model: &Model,
    range: &LexRange<'_>,
    rev: bool,
    l: Option<(i64, i64)>,
) -> Vec<(f64, Vec<u8>)> {
    let found = model_lex(model, range, rev);
    let (offset, count) = l.unwrap_or((0, -1));
    if found.is_empty() || offset < 0 || count == 0 {
        return vec![];
    }
    let mut list = model.list();
    if rev {
        list.reverse();
    }
    let start = list.iter().position(|e| e.1 == found[0].1).expect("listed");
    let mut out = vec![];
    for e in list.iter().skip(start + offset as usize) {
        let inside = if rev {
            range.gte_min(&e.1)
        } else {
            range.lte_max(&e.1)
        };
        if !inside || (count >= 0 && out.len() as i64 >= count) {
            break;
        }
        out.push(e.clone());
    }
    out
}

fn apply_limit(v: Vec<(f64, Vec<u8>)>, l: Option<(i64, i64)>) -> Vec<(f64, Vec<u8>)> {
    match l {
        None => v,
        Some((o, _)) if o < 0 => vec![],
        Some((o, c)) => {
            let it = v.into_iter().skip(o as usize);
            if c < 0 {
                it.collect()
            } else {
                it.take(c as usize).collect()
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    let mut z = ZSet::new();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Add(f, s, m) => {
                let got = z.zadd(f, &[s], &[&m]);
                let want = f.validate(1).and_then(|()| model.add(f, s, &m)).map(|o| {
                    let (added, changed, last) = match o {
                        AddOutcome::Added(v) => (1, 0, Some(v)),
                        AddOutcome::Updated(v) => (0, 1, Some(v)),
                        AddOutcome::Unchanged(v) => (0, 0, Some(v)),
                        AddOutcome::Blocked => (0, 0, None),
                    };
                    if f.incr {
                        AddReply::Score(last)
                    } else {
                        AddReply::Count(if f.ch { added + changed } else { added })
                    }
                });
                match (&got, &want) {
                    (Ok(AddReply::Score(Some(a))), Ok(AddReply::Score(Some(b)))) => {
                        assert_eq!(a.to_bits(), b.to_bits())
                    }
                    _ => assert_eq!(got, want),
                }
            }
            Op::Remove(m) => assert_eq!(
                z.remove(&m).map(f64::to_bits),
                model.remove(&m).map(f64::to_bits)
            ),
            Op::Rank(m) => {
                let list = model.list();
                let r = list.iter().position(|(_, x)| *x == m);
                assert_eq!(z.rank(&m), r);
                assert_eq!(z.rev_rank(&m), r.map(|r| list.len() - 1 - r));
                assert_eq!(
                    z.score(&m).map(f64::to_bits),
                    model.map.get(&m).map(|s| s.to_bits())
                );
                if let Some(r) = r {
                    assert_eq!(
                        z.get_by_rank(r).map(|(s, m)| (s.to_bits(), m.to_vec())),
                        Some((list[r].0.to_bits(), list[r].1.clone()))
                    );
                }
            }
            Op::RangeRank(a, b, rev) => {
                let mut list = model.list();
                if rev {
                    list.reverse();
                }
                let want = list[model_rank_interval(a, b, list.len())].to_vec();
                assert_eq!(bits(owned(z.range_by_rank(a, b, rev))), bits(want));
            }
            Op::RangeScore(a, ax, b, bx, rev, l) => {
                let range = ScoreRange {
                    min: ScoreBound {
                        value: a,
                        exclusive: ax,
                    },
                    max: ScoreBound {
                        value: b,
                        exclusive: bx,
                    },
                };
                let mut want: Vec<_> = model
                    .list()
                    .into_iter()
                    .filter(|(s, _)| !range.below_min(*s) && range.le_max(*s))
                    .collect();
                assert_eq!(z.count_by_score(&range), want.len());
                if rev {
                    want.reverse();
                }
                let lim = l.map(|(offset, count)| Limit { offset, count });
                assert_eq!(
                    bits(owned(z.range_by_score(&range, rev, lim))),
                    bits(apply_limit(want, l))
                );
            }
            Op::RangeLex(a, b, rev, l) => {
                let range = LexRange::parse(&a, &b).unwrap();
                let want = model_lex(&model, &range, rev);
                if !rev {
                    assert_eq!(z.count_by_lex(&range), want.len());
                }
                let lim = l.map(|(offset, count)| Limit { offset, count });
                assert_eq!(
                    bits(owned(z.range_by_lex(&range, rev, lim))),
                    bits(model_lex_walk(&model, &range, rev, l))
                );
            }
            Op::Pop(max, n) => {
                let mut list = model.list();
                if max {
                    list.reverse();
                }
                list.truncate(n);
                for (_, m) in &list {
                    model.remove(m);
                }
                let got = if max { z.pop_max(n) } else { z.pop_min(n) };
                assert_eq!(bits(got), bits(list));
            }
            Op::RemRank(a, b) => {
                let list = model.list();
                let gone = &list[model_rank_interval(a, b, list.len())];
                for (_, m) in gone {
                    model.remove(m);
                }
                assert_eq!(z.remove_range_by_rank(a, b), gone.len());
            }
            Op::RemScore(a, b) => {
                let range = ScoreRange {
                    min: ScoreBound::incl(a),
                    max: ScoreBound::excl(b),
                };
                let gone: Vec<_> = model
                    .list()
                    .into_iter()
                    .filter(|(s, _)| !range.below_min(*s) && range.le_max(*s))
                    .collect();
                for (_, m) in &gone {
                    model.remove(m);
                }
                assert_eq!(z.remove_range_by_score(&range), gone.len());
            }
            Op::RemLex(a, b) => {
                let range = LexRange::parse(&a, &b).unwrap();
                let gone = model_lex(&model, &range, false);
                for (_, m) in &gone {
                    model.remove(m);
                }
                assert_eq!(z.remove_range_by_lex(&range), gone.len());
            }
            Op::Many(v, ch) => {
                let scores: Vec<f64> = v.iter().map(|p| p.0).collect();
                let members: Vec<&[u8]> = v.iter().map(|p| &p.1[..]).collect();
                let mut count = 0;
                for (s, m) in &v {
                    match model.add(AddFlags::default(), *s, m) {
                        Ok(AddOutcome::Added(_)) => count += 1,
                        Ok(AddOutcome::Updated(_)) if ch => count += 1,
                        _ => {}
                    }
                }
                let flags = AddFlags {
                    ch,
                    ..AddFlags::default()
                };
                assert_eq!(z.zadd(flags, &scores, &members), Ok(AddReply::Count(count)));
            }
        }
        assert_eq!(z.len(), model.map.len());
        z.check_invariants();
    }
    z.check_invariants();
    let list = model.list();
    assert_eq!(bits(owned(z.iter())), bits(list.clone()));
    // Batch forms: every member (shuffled by reversal) and a missing one.
    let mut queries: Vec<Vec<u8>> = list.iter().rev().map(|(_, m)| m.clone()).collect();
    queries.push(b"missing member".to_vec());
    let n = list.len();
    let want: Vec<Option<usize>> = (0..n).rev().map(Some).chain([None]).collect();
    assert_eq!(z.ranks(&queries, false), want);
    let want_rev: Vec<Option<usize>> = want.iter().map(|r| r.map(|r| n - 1 - r)).collect();
    assert_eq!(z.ranks(&queries, true), want_rev);
    let scores: Vec<Option<u64>> = z
        .scores(&queries)
        .iter()
        .map(|s| s.map(f64::to_bits))
        .collect();
    let want_scores: Vec<Option<u64>> = list
        .iter()
        .rev()
        .map(|(s, _)| Some(s.to_bits()))
        .chain([None])
        .collect();
    assert_eq!(scores, want_scores);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops);
    }
}

#[test]
fn wide_leaves_split_and_merge() {
    // Leaves whose bytes pass 64 KiB switch to 4-byte offsets.
    let mut z = ZSet::new();
    for i in 0..60u32 {
        let mut m = vec![b'x'; 20_000 + i as usize];
        m[0] = (i * 37 % 60) as u8;
        z.insert(f64::from(i % 3), &m).unwrap();
        z.insert(f64::from(i % 3), format!("s{i}").as_bytes())
            .unwrap();
    }
    z.check_invariants();
    let all = owned(z.iter());
    for (r, (_, m)) in all.iter().enumerate() {
        assert_eq!(z.rank(m), Some(r));
    }
    for (_, m) in all.iter().step_by(2) {
        z.remove(m).unwrap();
    }
    z.check_invariants();
    assert_eq!(z.len(), 60);
    z.remove_range_by_rank(0, -1);
    z.check_invariants();
}

/// A deterministic generator for the bulk tests.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sizes around the leaf (7 per bulk-built leaf under test) and inner
/// boundaries, and the production ones.
const BULK_SIZES: &[usize] = &[
    0, 1, 2, 3, 6, 7, 8, 9, 14, 15, 48, 49, 50, 63, 64, 65, 342, 343, 344, 2400, 2401, 2402, 4095,
    4096, 4097, 16807, 16808,
];

/// `n` distinct members (some longer than 8 bytes, some sharing 8-byte
/// prefixes, some empty or short) with scores that tie often.
fn bulk_data(n: usize, rng: &mut Xorshift) -> (Vec<f64>, Vec<Vec<u8>>) {
    let members: Vec<Vec<u8>> = (0..n)
        .map(|i| match i % 5 {
            0 => format!("prefix-shared-{i}").into_bytes(),
            1 => format!("{i}").into_bytes(),
            2 => format!("m{:08}", rng.next() % 1000)
                .into_bytes()
                .into_iter()
                .chain(format!(":{i}").into_bytes())
                .collect(),
            3 => (i as u32).to_be_bytes().to_vec(),
            _ => format!("{:x}", i * 7919).into_bytes(),
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    assert!(
        members.iter().all(|m| seen.insert(m.clone())),
        "distinct members"
    );
    let scores = (0..n)
        .map(|_| match rng.next() % 10 {
            0 => -0.0,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => (rng.next() % 1000) as f64 / 7.0,
            _ => (rng.next() % 20) as f64 - 10.0,
        })
        .collect();
    (scores, members)
}

fn sorted_model(scores: &[f64], members: &[Vec<u8>]) -> Vec<(f64, Vec<u8>)> {
    let mut v: Vec<(f64, Vec<u8>)> = scores
        .iter()
        .map(|s| s + 0.0)
        .zip(members.iter().cloned())
        .collect();
    v.sort_by(|a, b| tree::cmp_key(a.0, &a.1, b.0, &b.1));
    v
}

#[test]
fn bulk_build_sizes_then_random_ops() {
    let mut rng = Xorshift(0x1234_5678_9abc_def1);
    for &n in BULK_SIZES {
        let (scores, members) = bulk_data(n, &mut rng);
        let want = sorted_model(&scores, &members);
        let mut z = ZSet::new();
        assert_eq!(z.add_many(&scores, &members), Ok(n));
        z.check_invariants();
        assert_eq!(bits(owned(z.iter())), bits(want.clone()), "n={n}");
        if n >= BULK_MIN {
            // Built in bulk (not by the fallback): leaves 7/8 full.
            let fill = tree::LEAF_MAX * 7 / 8;
            assert_eq!(z.stats().leaves, n.div_ceil(fill), "n={n}");
        }
        // The snapshot loader builds the same way, at every size.
        let back = ZSet::load(&z.dump()).unwrap();
        back.check_invariants();
        assert_eq!(bits(owned(back.iter())), bits(want.clone()), "load n={n}");
        for (r, (s, m)) in want.iter().enumerate() {
            assert_eq!(z.rank(m), Some(r));
            assert_eq!(z.score(m).map(f64::to_bits), Some(s.to_bits()));
        }
        // Random increments (small and large moves), removes and inserts.
        let mut model: HashMap<Vec<u8>, f64> = want.iter().map(|(s, m)| (m.clone(), *s)).collect();
        for step in 0..(3 * n).clamp(50, 6000) {
            let r = rng.next();
            let m = if n > 0 && r % 7 != 0 {
                members[(rng.next() % n as u64) as usize].clone()
            } else {
                format!("new-{}", rng.next() % 500).into_bytes()
            };
            match r % 10 {
                0 => assert_eq!(z.remove(&m), model.remove(&m)),
                1 => {
                    let s = (rng.next() % 40) as f64 - 20.0;
                    assert_eq!(z.insert(s, &m).unwrap(), model.insert(m.clone(), s));
                }
                _ => {
                    let d = match rng.next() % 4 {
                        0 => 0.5,
                        1 => -1.0,
                        2 => (rng.next() % 30) as f64,
                        _ => -((rng.next() % 300) as f64) / 7.0,
                    };
                    // A new member replies the increment itself (its sign too).
                    let new = model.get(&m).map_or(d, |c| c + d);
                    if new.is_nan() {
                        assert_eq!(z.incr(d, &m), Err(Error::NanResult));
                    } else {
                        assert_eq!(z.incr(d, &m).unwrap().to_bits(), new.to_bits());
                        model.insert(m.clone(), new + 0.0);
                    }
                }
            }
            if step % 97 == 0 {
                z.check_invariants();
            }
        }
        z.check_invariants();
        let mut list: Vec<(f64, Vec<u8>)> = model.into_iter().map(|(m, s)| (s, m)).collect();
        list.sort_by(|a, b| tree::cmp_key(a.0, &a.1, b.0, &b.1));
        assert_eq!(bits(owned(z.iter())), bits(list), "after ops n={n}");
    }
}

#[test]
fn bulk_load_with_duplicates_falls_back() {
    let mut rng = Xorshift(77);
    for &n in &[64usize, 65, 343, 4097] {
        let (mut scores, mut members) = bulk_data(n, &mut rng);
        // A member twice with different scores (the later one wins), and
        // an exact pair twice.
        members[n - 1] = members[3].clone();
        scores[n - 1] = 1234.5;
        members[n - 2] = members[n / 2].clone();
        scores[n - 2] = scores[n / 2];
        let mut model: HashMap<Vec<u8>, f64> = HashMap::new();
        let mut added = 0;
        for (s, m) in scores.iter().zip(&members) {
            if model.insert(m.clone(), s + 0.0).is_none() {
                added += 1;
            }
        }
        let mut z = ZSet::new();
        assert_eq!(z.add_many(&scores, &members), Ok(added));
        z.check_invariants();
        let mut list: Vec<(f64, Vec<u8>)> = model.into_iter().map(|(m, s)| (s, m)).collect();
        list.sort_by(|a, b| tree::cmp_key(a.0, &a.1, b.0, &b.1));
        assert_eq!(bits(owned(z.iter())), bits(list));
        assert_eq!(z.score(&members[3]), Some(1234.5));
    }
}

#[test]
fn moves_within_and_across_leaves() {
    // Dense integer scores: increments land in the same leaf, the next
    // one, or far away; the tree stays consistent.
    let n = 5000;
    let members: Vec<Vec<u8>> = (0..n).map(|i| format!("p{i:010}").into_bytes()).collect();
    let scores: Vec<f64> = (0..n).map(|i| f64::from(i as u32)).collect();
    let mut z = ZSet::new();
    z.add_many(&scores, &members).unwrap();
    let mut model: Vec<f64> = scores.clone();
    let mut rng = Xorshift(5);
    let picks: Vec<usize> = (0..20_000)
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let deltas: Vec<f64> = (0..20_000)
        .map(|k| match k % 4 {
            0 => 1.0,
            1 => -2.5,
            2 => (rng.next() % 40) as f64,
            _ => -((rng.next() % 5000) as f64),
        })
        .collect();
    let batch: Vec<&[u8]> = picks.iter().map(|&i| &members[i][..]).collect();
    let got = z.incr_many(&deltas, &batch).unwrap();
    for (k, &i) in picks.iter().enumerate() {
        model[i] += deltas[k];
        assert_eq!(got[k], model[i]);
    }
    z.check_invariants();
    let want = sorted_model(&model, &members);
    assert_eq!(bits(owned(z.iter())), bits(want));
}
