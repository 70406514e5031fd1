//! Indexing throughput on generated mail, without Python in the way: for
//! profiling the write path (`perf record target/release/examples/ingest`).
//!
//! ```text
//! cargo run -p sdi-lsm --release --example ingest -- [DOCS] [MEMTABLE_MIB] [TOKENIZE_THREADS]
//! ```
//!
//! Writes `DOCS` (default 100,000) generated mails for 100 users in batches
//! of 5,000, as `benchmarks/run.py search` does, then flushes, and prints
//! the rate and the index's stats. The Python benchmark is the one that
//! compares with SQLite FTS5 and tantivy.

#[path = "../benches/support/mailgen.rs"]
mod mailgen;

use std::time::Instant;

use sdi_lsm::{Index, Op, Options, SyncPolicy};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().expect("arguments are whole numbers"))
        .unwrap_or(default)
}

fn main() {
    let docs = arg(1, 100_000);
    let options = Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: arg(2, 64) << 20,
        tokenize_threads: arg(3, Options::default().tokenize_threads),
        ..Options::default()
    };
    let mut generator = mailgen::MailGen::new(1, 30_000, 100);
    let batches: Vec<Vec<Op>> = (0..docs)
        .map(|_| Op::Add(generator.next_doc()))
        .collect::<Vec<_>>()
        .chunks(5_000)
        .map(<[Op]>::to_vec)
        .collect();
    let dir = std::env::temp_dir().join(format!("sdi-lsm-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = Index::open(&dir, options).expect("open the index");
    let start = Instant::now();
    for batch in &batches {
        index.write_batch(batch).expect("write a batch");
    }
    index.flush().expect("flush");
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{docs} docs in {seconds:.2} s: {:.0} docs/s\n{:?}",
        docs as f64 / seconds,
        index.stats()
    );
    index.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
