//! Scenario tests through the public API.

mod common;

use common::{make_doc, Model, TempDir};
use sdi_lsm::{
    parse_query, Attrs, Doc, Error, Field, Filter, Index, Op, Options, SyncPolicy, FLAG_READ,
};

fn quiet() -> Options {
    Options {
        background_compaction: false,
        ..Options::default()
    }
}

fn mail(id: u64, from: &str, to: &str, subject: &str, body: &str, attachments: &[&str]) -> Doc {
    let mut fields = vec![
        (Field::From, from.to_string()),
        (Field::To, to.to_string()),
        (Field::Subject, subject.to_string()),
        (Field::Body, body.to_string()),
    ];
    for name in attachments {
        fields.push((Field::Attachment, name.to_string()));
    }
    Doc {
        user: 1,
        id,
        attrs: Attrs {
            date: id as i64 * 100,
            folder: (id % 2) as u32,
            flags: if id % 3 == 0 { FLAG_READ } else { 0 },
        },
        fields,
    }
}

fn corpus() -> Vec<Doc> {
    vec![
        mail(
            1,
            "Alice <alice@example.com>",
            "bob@corp.org",
            "Quarterly budget",
            "Please review the Q3 budget draft.",
            &["budget-q3.xlsx"],
        ),
        mail(
            2,
            "Bob <bob@corp.org>",
            "alice@example.com",
            "Re: Quarterly budget",
            "Looks good. Meeting at the Café Réunion?",
            &[],
        ),
        mail(
            3,
            "carol@example.com",
            "alice@example.com, bob@corp.org",
            "Invoice 4471",
            "Invoice attached, budget line 7.",
            &["invoice-4471.pdf", "terms.pdf"],
        ),
        mail(
            4,
            "Alice <alice@example.com>",
            "carol@example.com",
            "Lunch",
            "Meeting moved; the budget review is tomorrow.",
            &[],
        ),
        mail(
            5,
            "news@list.example.com",
            "alice@example.com",
            "Weekly digest",
            "Quarterly results and budgeting tips.",
            &[],
        ),
    ]
}

fn ids(index: &Index, q: &str) -> Vec<u64> {
    index
        .search(1, &parse_query(q).unwrap(), &Filter::default(), 100, None)
        .unwrap()
}

fn check_corpus_queries(index: &Index) {
    assert_eq!(ids(index, "budget"), [4, 3, 2, 1]);
    assert_eq!(ids(index, "budget*"), [5, 4, 3, 2, 1]);
    assert_eq!(ids(index, "subject:budget"), [2, 1]);
    assert_eq!(ids(index, "from:alice"), [4, 1]);
    assert_eq!(ids(index, "alice@example.com"), [5, 4, 3, 2, 1]);
    assert_eq!(ids(index, "to:alice@example.com"), [5, 3, 2]);
    assert_eq!(ids(index, "from:alice@ex*"), [4, 1]);
    assert_eq!(ids(index, "\"budget review\""), [4]);
    assert_eq!(ids(index, "\"review budget\""), Vec::<u64>::new());
    assert_eq!(ids(index, "reunion"), [2]);
    assert_eq!(ids(index, "CAFE"), [2]);
    assert_eq!(ids(index, "attachment:pdf"), [3]);
    assert_eq!(ids(index, "attachment:\"invoice 4471 pdf\""), [3]);
    // Two attachments never form one phrase.
    assert_eq!(ids(index, "attachment:\"pdf terms\""), Vec::<u64>::new());
    assert_eq!(ids(index, "budget -meeting"), [3, 1]);
    assert_eq!(ids(index, "budget AND NOT from:alice"), [3, 2]);
    assert_eq!(ids(index, "invoice OR lunch"), [4, 3]);
    assert_eq!(ids(index, "(invoice OR lunch) meeting"), [4]);
    assert_eq!(ids(index, "-budget"), [5]);
    assert_eq!(ids(index, ""), [5, 4, 3, 2, 1]);
    assert_eq!(ids(index, "nothing"), Vec::<u64>::new());
    assert_eq!(ids(index, "e-mail"), Vec::<u64>::new());
}

#[test]
fn queries_over_memtable_runs_and_merges() {
    let dir = TempDir::new("queries");
    let index = Index::open(&dir.0, quiet()).unwrap();
    for doc in &corpus()[..2] {
        index.add(doc).unwrap();
    }
    index.flush().unwrap();
    index.add(&corpus()[2]).unwrap();
    index.flush().unwrap();
    index
        .write_batch(
            &corpus()[3..]
                .iter()
                .cloned()
                .map(Op::Add)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    check_corpus_queries(&index);
    assert_eq!(index.stats().run_bytes.len(), 2);
    index.compact().unwrap();
    assert_eq!(index.stats().run_bytes.len(), 1);
    check_corpus_queries(&index);
    index.close().unwrap();
    let index = Index::open(&dir.0, quiet()).unwrap();
    check_corpus_queries(&index);
    assert_eq!(ids(&index, "budget"), [4, 3, 2, 1]);
    // Another user sees nothing of user 1's mail.
    let q = parse_query("budget").unwrap();
    assert!(index
        .search(2, &q, &Filter::default(), 10, None)
        .unwrap()
        .is_empty());
}

#[test]
fn filters_paging_attrs_and_deletes() {
    let dir = TempDir::new("filters");
    let index = Index::open(&dir.0, quiet()).unwrap();
    for doc in corpus() {
        index.add(&doc).unwrap();
    }
    let all = parse_query("").unwrap();
    let budget = parse_query("budget*").unwrap();
    let f = |folder, read| Filter {
        folder,
        read,
        ..Filter::default()
    };
    assert_eq!(
        index
            .search(1, &budget, &f(Some(1), None), 10, None)
            .unwrap(),
        [5, 3, 1]
    );
    assert_eq!(
        index
            .search(1, &budget, &f(None, Some(true)), 10, None)
            .unwrap(),
        [3]
    );
    assert_eq!(
        index
            .search(1, &budget, &f(None, Some(false)), 10, None)
            .unwrap(),
        [5, 4, 2, 1]
    );
    let dates = Filter {
        date_from: Some(200),
        date_to: Some(400),
        ..Filter::default()
    };
    assert_eq!(index.search(1, &all, &dates, 10, None).unwrap(), [3, 2]);
    // Paging: two at a time with the last id as the cursor.
    assert_eq!(
        index
            .search(1, &budget, &Filter::default(), 2, None)
            .unwrap(),
        [5, 4]
    );
    assert_eq!(
        index
            .search(1, &budget, &Filter::default(), 2, Some(4))
            .unwrap(),
        [3, 2]
    );
    assert_eq!(
        index
            .search(1, &budget, &Filter::default(), 2, Some(2))
            .unwrap(),
        [1]
    );
    assert_eq!(
        index
            .search(1, &all, &Filter::default(), 2, Some(3))
            .unwrap(),
        [2, 1]
    );
    // Marking read and moving rewrites no postings.
    index.flush().unwrap();
    let keys = index.stats().memtable_keys;
    index
        .set_attrs(
            1,
            5,
            Attrs {
                date: 500,
                folder: 9,
                flags: FLAG_READ,
            },
        )
        .unwrap();
    assert_eq!(index.stats().memtable_keys, keys);
    assert_eq!(
        index
            .search(1, &budget, &f(Some(9), Some(true)), 10, None)
            .unwrap(),
        [5]
    );
    index.delete(1, 3).unwrap();
    index.delete(1, 3).unwrap();
    index.delete(1, 999).unwrap();
    assert_eq!(ids(&index, "invoice"), Vec::<u64>::new());
    assert_eq!(ids(&index, ""), [5, 4, 2, 1]);
    assert_eq!(index.stats().dead_docs, 1);
    assert!(matches!(
        index.add(&corpus()[2]),
        Err(Error::DuplicateDoc { user: 1, doc: 3 })
    ));
    let before = index.stats().run_bytes[0];
    index.compact().unwrap();
    assert!(index.stats().run_bytes[0] < before);
    index.close().unwrap();
    let index = Index::open(&dir.0, quiet()).unwrap();
    assert_eq!(
        index.stats().dead_docs,
        0,
        "the full merge dropped the tombstone"
    );
    assert_eq!(ids(&index, "invoice"), Vec::<u64>::new());
    assert_eq!(index.attrs(1, 5).unwrap().folder, 9);
    assert_eq!(index.attrs(1, 3), None);
    assert!(matches!(
        index.search(1, &all, &Filter::default(), 1_000_000, None),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn options_are_checked() {
    let dir = TempDir::new("options");
    let bad = Options {
        memtable_bytes_max: 10,
        ..quiet()
    };
    assert!(matches!(Index::open(&dir.0, bad), Err(Error::Config(_))));
    let bad = Options {
        merge_width: 1,
        ..quiet()
    };
    assert!(matches!(Index::open(&dir.0, bad), Err(Error::Config(_))));
}

/// Flipping any byte of a run makes opening or reading fail; no search
/// ever returns a wrong answer.
#[test]
fn corrupted_runs_give_errors_not_wrong_answers() {
    let dir = TempDir::new("corrupt");
    let index = Index::open(&dir.0, quiet()).unwrap();
    let mut model = Model::default();
    for id in 0..200u64 {
        let doc = make_doc(
            1,
            id,
            Attrs::default(),
            id as usize,
            &[id as usize, 3],
            &[id as usize * 7, 1, 2, id as usize],
            id % 3 == 0,
        );
        model.add(&doc);
        index.add(&doc).unwrap();
    }
    index.close().unwrap();
    let run = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .unwrap();
    let good = std::fs::read(&run).unwrap();
    let queries: Vec<_> = [
        "alpha",
        "al*",
        "\"beta gamma\"",
        "from:bob",
        "-zeta",
        "",
        "q3 OR invoice",
        "e*",
    ]
    .iter()
    .map(|q| parse_query(q).unwrap())
    .collect();
    let mut errors = 0;
    let step = (good.len() / 97).max(1);
    for at in (0..good.len()).step_by(step) {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&run, &bad).unwrap();
        let Ok(index) = Index::open(&dir.0, quiet()) else {
            errors += 1;
            continue;
        };
        for query in &queries {
            match index.search(1, query, &Filter::default(), 1000, None) {
                Ok(got) => assert_eq!(
                    got,
                    model.search(1, query, &Filter::default(), 1000, None),
                    "byte {at}"
                ),
                Err(Error::Corrupt { .. }) => errors += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    assert!(errors > 0);
    std::fs::write(&run, &good).unwrap();
    let index = Index::open(&dir.0, quiet()).unwrap();
    assert_eq!(index.stats().live_docs, 200);
    // A run the manifest lists but that is gone is an error too.
    drop(index);
    std::fs::remove_file(&run).unwrap();
    assert!(Index::open(&dir.0, quiet()).is_err());
}

#[test]
fn background_merges_with_concurrent_searches() {
    let dir = TempDir::new("background");
    let options = Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: 16 << 10,
        merge_width: 3,
        runs_max: 8,
        background_compaction: true,
        tokenize_threads: 2,
    };
    let index = std::sync::Arc::new(Index::open(&dir.0, options.clone()).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let index = index.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let q = parse_query("alpha OR beta*").unwrap();
            let mut last = 0;
            let mut searches = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = index
                    .search(7, &q, &Filter::default(), 10_000, None)
                    .unwrap();
                // Results only grow while mail is only added.
                assert!(got.len() >= last);
                assert!(got.windows(2).all(|w| w[0] > w[1]));
                last = got.len();
                searches += 1;
                // Leave the two cores to the writer and the background
                // threads now and then; the test is about interleaving.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            assert!(searches > 0);
        })
    };
    let mut model = Model::default();
    for id in 0..600u64 {
        let doc = make_doc(
            7,
            id,
            Attrs::default(),
            id as usize,
            &[id as usize % 5],
            &[id as usize, id as usize / 3, 8],
            false,
        );
        model.add(&doc);
        index.add(&doc).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let stats = index.stats();
    assert!(stats.flushes > 5, "{stats:?}");
    assert_eq!(stats.background_error, None);
    let q = parse_query("alpha OR beta*").unwrap();
    let want = model.search(7, &q, &Filter::default(), 10_000, None);
    assert_eq!(
        index
            .search(7, &q, &Filter::default(), 10_000, None)
            .unwrap(),
        want
    );
    let index = std::sync::Arc::into_inner(index).unwrap();
    index.close().unwrap();
    let index = Index::open(&dir.0, options).unwrap();
    assert!(index.stats().compactions == 0 || index.stats().run_bytes.len() <= 8);
    assert_eq!(
        index
            .search(7, &q, &Filter::default(), 10_000, None)
            .unwrap(),
        want
    );
}

#[test]
fn synced_writes_survive_a_dropped_index() {
    let dir = TempDir::new("sync");
    let index = Index::open(&dir.0, quiet()).unwrap();
    for doc in corpus() {
        index.add(&doc).unwrap();
    }
    index.delete(1, 2).unwrap();
    drop(index);
    let index = Index::open(&dir.0, quiet()).unwrap();
    assert_eq!(ids(&index, ""), [5, 4, 3, 1]);
    assert_eq!(index.stats().flushes, 0);
}

/// A merge must not drop the postings of a mail whose deletion is only in
/// the log: if the log loses the deletion (a power cut under
/// `SyncPolicy::Never`), the mail comes back, and must come back whole.
#[test]
fn merge_keeps_postings_of_deletions_not_yet_flushed() {
    let dir = TempDir::new("unflushed-delete");
    let options = Options {
        sync: SyncPolicy::Never,
        merge_width: 2,
        ..quiet()
    };
    let index = Index::open(&dir.0, options.clone()).unwrap();
    let docs = corpus();
    index.add(&docs[0]).unwrap();
    index.flush().unwrap();
    index.add(&docs[1]).unwrap();
    index.flush().unwrap();
    index.delete(1, 1).unwrap();
    assert!(index.compact_step().unwrap());
    assert_eq!(ids(&index, "budget"), [2]);
    let wal = dir.0.join(format!("wal-{:020}.log", index.stats().wal_seq));
    drop(index);
    // The power cut: the log loses the deletion.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(0)
        .unwrap();
    let index = Index::open(&dir.0, options).unwrap();
    assert_eq!(ids(&index, ""), [2, 1]);
    assert_eq!(ids(&index, "budget"), [2, 1]);
    assert_eq!(ids(&index, "attachment:xlsx"), [1]);
}

/// Prefix unions over sparse ids (far apart, unlike per-user counters) take
/// the list-merging path; dense ids take the bitmap path. Both agree with
/// the model.
#[test]
fn prefix_union_over_sparse_and_dense_ids() {
    let dir = TempDir::new("sparse");
    let index = Index::open(&dir.0, quiet()).unwrap();
    let mut model = Model::default();
    for (user, ids) in [
        (1u32, vec![3u64, 1 << 40, 1 << 50, u64::MAX - 1]),
        (2, (0..200).collect()),
    ] {
        for (n, &id) in ids.iter().enumerate() {
            let doc = make_doc(
                user,
                id,
                Attrs::default(),
                n,
                &[n, n + 3],
                &[n * 5, n + 1],
                n % 2 == 0,
            );
            model.add(&doc);
            index.add(&doc).unwrap();
        }
        if user == 1 {
            index.flush().unwrap();
        }
    }
    for q in ["a*", "de*", "e*", "b* OR g*", "from:ali*"] {
        let query = parse_query(q).unwrap();
        for user in [1, 2] {
            assert_eq!(
                index
                    .search(user, &query, &Filter::default(), 1000, None)
                    .unwrap(),
                model.search(user, &query, &Filter::default(), 1000, None),
                "{q} user {user}"
            );
        }
    }
}

#[test]
fn contains_and_docs_of_report_live_and_deleted_mail() {
    let dir = TempDir::new("docs-of");
    let index = Index::open(&dir.0, quiet()).unwrap();
    for id in [3, 5, 8] {
        index
            .add(&mail(id, "a@x.org", "b@y.org", "s", "b", &[]))
            .unwrap();
    }
    index.delete(1, 5).unwrap();
    assert!(index.contains(1, 3) && index.contains(1, 5) && !index.contains(1, 4));
    assert!(!index.contains(2, 3));
    let attrs = |id: u64| mail(id, "", "", "", "", &[]).attrs;
    let want = vec![(3, Some(attrs(3))), (5, None), (8, Some(attrs(8)))];
    assert_eq!(index.docs_of(1), want);
    index.flush().unwrap();
    assert_eq!(index.docs_of(1), want);
    assert!(index.docs_of(2).is_empty());
}
