//! Property test: random writes, flushes, merges, reopens and crashes
//! (the log cut at a random byte) against a brute-force model.

mod common;

use common::{make_doc, Model, TempDir, WORDS};
use proptest::prelude::*;
use sdi_lsm::{Attrs, Field, Filter, Index, Options, Query, SyncPolicy, FLAG_READ};

#[derive(Debug, Clone)]
enum Step {
    Add {
        user: u32,
        id: u64,
        attrs: Attrs,
        from: usize,
        subject: Vec<usize>,
        body: Vec<usize>,
        attachment: bool,
    },
    Batch(Vec<(u32, u64, usize)>),
    Delete(u32, u64),
    SetAttrs(u32, u64, Attrs),
    Flush,
    Merge,
    Compact,
    Reopen,
    Crash(u64),
    Search(u32, Query, Filter, usize, Option<u64>),
}

fn attrs() -> impl Strategy<Value = Attrs> {
    (0i64..100, 0u32..3, 0u32..4).prop_map(|(date, folder, flags)| Attrs {
        date,
        folder,
        flags,
    })
}

fn field() -> impl Strategy<Value = Option<Field>> {
    prop_oneof![
        3 => Just(None),
        1 => prop::sample::select(Field::ALL.to_vec()).prop_map(Some),
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS.to_vec()).prop_map(|w| w.to_string())
}

fn query() -> impl Strategy<Value = Query> {
    let leaf = prop_oneof![
        3 => (field(), word()).prop_filter_map("no term", |(f, w)| Query::word(f, &w)),
        2 => (field(), word(), 1usize..4)
            .prop_filter_map("no prefix", |(f, w, n)| Query::prefix(f, &w.chars().take(n).collect::<String>())),
        1 => (field(), word(), word()).prop_filter_map("no phrase", |(f, a, b)| Query::phrase(f, &format!("{a} {b}"))),
        1 => (field(), prop::sample::select(common::NAMES.to_vec()))
            .prop_map(|(f, n)| Query::word(f, &format!("{n}@example.com")).unwrap()),
        1 => Just(Query::All),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Query::And),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Query::Or),
            inner.prop_map(|q| Query::Not(Box::new(q))),
        ]
    })
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        prop::option::weighted(0.3, 0u32..3),
        prop::option::weighted(0.3, 0i64..100),
        prop::option::weighted(0.3, 0i64..100),
        prop::option::weighted(0.3, any::<bool>()),
    )
        .prop_map(|(folder, date_from, date_to, read)| Filter {
            folder,
            date_from,
            date_to,
            read,
            starred: None,
        })
}

fn step() -> impl Strategy<Value = Step> {
    let ids = 0u64..120;
    prop_oneof![
        12 => (0u32..3, ids.clone(), attrs(), 0usize..4,
              prop::collection::vec(0usize..40, 1..4),
              prop::collection::vec(0usize..40, 0..12), any::<bool>())
            .prop_map(|(user, id, attrs, from, subject, body, attachment)| Step::Add {
                user, id, attrs, from, subject, body, attachment,
            }),
        2 => prop::collection::vec((0u32..3, ids.clone(), 0usize..40), 1..6).prop_map(Step::Batch),
        3 => (0u32..3, ids.clone()).prop_map(|(u, i)| Step::Delete(u, i)),
        2 => (0u32..3, ids.clone(), attrs()).prop_map(|(u, i, a)| Step::SetAttrs(u, i, a)),
        1 => Just(Step::Flush),
        1 => Just(Step::Merge),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
        1 => any::<u64>().prop_map(Step::Crash),
        6 => (0u32..3, query(), filter(), 1usize..30, prop::option::weighted(0.3, 0u64..130))
            .prop_map(|(u, q, f, l, b)| Step::Search(u, q, f, l, b)),
    ]
}

/// With `background`, flushes and merges run on the index's threads, at
/// times the test does not control: the model must hold whenever they run.
/// A crash then may find a frozen memtable not yet flushed; its log is whole
/// (only the newest log is cut), so the model's rule holds: a new log means
/// everything before it is safe.
fn options(small_memtable: bool, background: bool) -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: if small_memtable { 4096 } else { 1 << 20 },
        merge_width: 2,
        runs_max: 6,
        background_compaction: background,
        tokenize_threads: 1,
    }
}

fn check_all(index: &Index, model: &Model) {
    for user in 0..3 {
        for q in [
            "",
            "alpha",
            "al*",
            "\"beta gamma\"",
            "from:bob -zeta",
            "reunion OR q3",
        ] {
            let query = sdi_lsm::parse_query(q).unwrap();
            let filter = Filter::default();
            let got = index.search(user, &query, &filter, 1000, None).unwrap();
            assert_eq!(
                got,
                model.search(user, &query, &filter, 1000, None),
                "query {q}"
            );
        }
    }
    assert_eq!(index.stats().live_docs, model.live_count());
}

proptest! {
    // PROPTEST_CASES in the environment runs more (or fewer) cases.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn index_matches_model(
        steps in prop::collection::vec(step(), 1..80),
        small in any::<bool>(),
        background in any::<bool>(),
    ) {
        let dir = TempDir::new("model");
        let opts = options(small, background);
        let mut index = Some(Index::open(&dir.0, opts.clone()).unwrap());
        let mut model = Model::default();
        // The model as of the last flush, and after each write since, with
        // the log length then: a crash keeps the writes whose frames are
        // wholly before the cut.
        let mut committed = model.clone();
        let mut pending: Vec<(u64, Model)> = Vec::new();
        let mut wal_seq = index.as_ref().unwrap().stats().wal_seq;
        for step in steps {
            let ix = index.as_ref().unwrap();
            let mut wrote = false;
            match step {
                // Ids of deleted mail are never reused by callers; the index
                // refuses them while it holds their tombstone and forgets
                // them after a full merge, so the model skips such adds.
                Step::Add { user, id, .. } if model.is_dead(user, id) => {}
                Step::Batch(items) if items.iter().any(|&(u, id, _)| model.is_dead(u, id)) => {}
                Step::Add { user, id, attrs, from, subject, body, attachment } => {
                    let doc = make_doc(user, id, attrs, from, &subject, &body, attachment);
                    let fresh = model.add(&doc);
                    let result = ix.add(&doc);
                    prop_assert_eq!(result.is_ok(), fresh, "{:?}", result.err());
                    wrote = true;
                }
                Step::Batch(items) => {
                    let docs: Vec<_> = items.iter().map(|&(u, id, w)| {
                        make_doc(u, id, Attrs { date: w as i64, folder: (w % 3) as u32, flags: FLAG_READ * (w % 2) as u32 },
                                 w, &[w, w + 1], &[w + 2, w, w + 3], w % 2 == 0)
                    }).collect();
                    let mut trial = model.clone();
                    let fresh = docs.iter().all(|d| trial.add(d));
                    let ops: Vec<_> = docs.into_iter().map(sdi_lsm::Op::Add).collect();
                    let result = ix.write_batch(&ops);
                    prop_assert_eq!(result.is_ok(), fresh);
                    if fresh {
                        model = trial;
                    }
                    wrote = true;
                }
                Step::Delete(user, id) => {
                    ix.delete(user, id).unwrap();
                    model.delete(user, id);
                    wrote = true;
                }
                Step::SetAttrs(user, id, attrs) => {
                    ix.set_attrs(user, id, attrs).unwrap();
                    model.set_attrs(user, id, attrs);
                    wrote = true;
                }
                Step::Flush => ix.flush().unwrap(),
                Step::Merge => { ix.compact_step().unwrap(); }
                Step::Compact => ix.compact().unwrap(),
                Step::Reopen => {
                    index.take().unwrap().close().unwrap();
                    index = Some(Index::open(&dir.0, opts.clone()).unwrap());
                }
                Step::Crash(cut) => {
                    let stats = ix.stats();
                    drop(index.take());
                    let wal = dir.0.join(format!("wal-{:020}.log", stats.wal_seq));
                    let len = std::fs::metadata(&wal).unwrap().len();
                    prop_assert_eq!(len, stats.wal_bytes);
                    let cut = cut % (len + 1);
                    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(cut).unwrap();
                    pending.retain(|(bytes, _)| *bytes <= cut);
                    model = pending.last().map_or_else(|| committed.clone(), |(_, m)| m.clone());
                    index = Some(Index::open(&dir.0, opts.clone()).unwrap());
                    prop_assert_eq!(index.as_ref().unwrap().stats().wal_bytes,
                                    pending.last().map_or(0, |(b, _)| *b));
                }
                Step::Search(user, query, filter, limit, before) => {
                    let got = ix.search(user, &query, &filter, limit, before).unwrap();
                    let want = model.search(user, &query, &filter, limit, before);
                    prop_assert_eq!(got, want, "query {:?} filter {:?}", query, filter);
                }
            }
            let stats = index.as_ref().unwrap().stats();
            if stats.wal_seq != wal_seq || stats.wal_bytes == 0 {
                // A flush (explicit, by size, or at close) made everything durable.
                wal_seq = stats.wal_seq;
                committed = model.clone();
                pending.clear();
            } else if wrote {
                pending.push((stats.wal_bytes, model.clone()));
            }
        }
        check_all(index.as_ref().unwrap(), &model);
        index.take().unwrap().close().unwrap();
        let index = Index::open(&dir.0, opts).unwrap();
        check_all(&index, &model);
    }
}
