//! The benchmark's workload on a tiny input, so the benchmark cannot rot.

mod common;
#[path = "../benches/support/mailgen.rs"]
mod mailgen;

use common::{Model, TempDir};
use sdi_lsm::{parse_query, Filter, Index, Op, Options, SyncPolicy};

#[test]
fn generated_mail_indexes_and_queries() {
    let dir = TempDir::new("bench-smoke");
    let options = Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: 64 << 10,
        background_compaction: false,
        ..Options::default()
    };
    let index = Index::open(&dir.0, options).unwrap();
    let mut generator = mailgen::MailGen::new(5, 2000, 3);
    let mut model = Model::default();
    let docs: Vec<_> = (0..600).map(|_| generator.next_doc()).collect();
    for chunk in docs.chunks(64) {
        for doc in chunk {
            model.add(doc);
        }
        index
            .write_batch(&chunk.iter().cloned().map(Op::Add).collect::<Vec<_>>())
            .unwrap();
    }
    while index.compact_step().unwrap() {}
    assert!(index.stats().flushes > 0);
    for _ in 0..50 {
        let text = format!(
            "{} {}* \"{} {}\" OR -{}",
            generator.word(),
            generator.word(),
            generator.word(),
            generator.word(),
            generator.word()
        );
        let query = parse_query(&text).unwrap();
        for user in 0..3 {
            assert_eq!(
                index
                    .search(user, &query, &Filter::default(), 100, None)
                    .unwrap(),
                model.search(user, &query, &Filter::default(), 100, None),
                "{text}"
            );
        }
    }
}
