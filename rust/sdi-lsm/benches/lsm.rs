//! Indexing throughput and query latency on generated mail.
//!
//! `cargo bench -p sdi-lsm` runs it in about a minute. Besides criterion's
//! means it prints p50/p99 latencies per query kind, since the goal is a
//! p99 under 5 ms.

#[path = "support/mailgen.rs"]
mod mailgen;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailgen::MailGen;
use sdi_lsm::{parse_query, Filter, Index, Op, Options, Query, SyncPolicy};

const INDEX_DOCS: usize = 20_000;
const QUERY_DOCS: usize = 100_000;
const USERS: u32 = 10;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdi-lsm-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options() -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: 32 << 20,
        ..Options::default()
    }
}

fn build(dir: &std::path::Path, docs: &[sdi_lsm::Doc]) -> Index {
    let index = Index::open(dir, options()).unwrap();
    for chunk in docs.chunks(256) {
        let ops: Vec<Op> = chunk.iter().cloned().map(Op::Add).collect();
        index.write_batch(&ops).unwrap();
    }
    index
}

fn indexing(c: &mut Criterion) {
    let mut generator = MailGen::new(1, 30_000, USERS);
    let docs: Vec<_> = (0..INDEX_DOCS).map(|_| generator.next_doc()).collect();
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(INDEX_DOCS as u64));
    group.bench_function("batches_of_256_no_sync", |b| {
        b.iter(|| {
            let dir = temp_dir("index");
            let index = build(&dir, &docs);
            index.close().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        })
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn queries(c: &mut Criterion) {
    if std::env::var_os("SDI_LSM_BENCH_INDEX_ONLY").is_some() {
        return;
    }
    let dir = temp_dir("query");
    let mut generator = MailGen::new(2, 30_000, USERS);
    let docs: Vec<_> = (0..QUERY_DOCS).map(|_| generator.next_doc()).collect();
    let start = Instant::now();
    let index = build(&dir, &docs);
    index.flush().unwrap();
    while index.compact_step().unwrap() {}
    eprintln!(
        "built {QUERY_DOCS} docs in {:.2?}; runs {:?}",
        start.elapsed(),
        index.stats().run_bytes
    );
    let mut words = MailGen::new(3, 30_000, USERS);
    let kinds: Vec<(&str, Vec<Query>)> = vec![
        (
            "term",
            (0..200)
                .map(|_| parse_query(&words.word()).unwrap())
                .collect(),
        ),
        (
            "and2",
            (0..200)
                .map(|_| parse_query(&format!("{} {}", words.word(), words.word())).unwrap())
                .collect(),
        ),
        (
            "prefix",
            (0..200)
                .map(|_| {
                    let word = words.word();
                    parse_query(&format!("{}*", &word[..word.len().min(3)])).unwrap()
                })
                .collect(),
        ),
        (
            "phrase",
            (0..200)
                .map(|_| parse_query(&format!("\"{} {}\"", words.word(), words.word())).unwrap())
                .collect(),
        ),
        (
            "field_or_not",
            (0..200)
                .map(|_| {
                    parse_query(&format!(
                        "subject:{} OR ({} -{})",
                        words.word(),
                        words.word(),
                        words.word()
                    ))
                    .unwrap()
                })
                .collect(),
        ),
        ("folder_unread", vec![Query::All]),
    ];
    let unread = Filter {
        folder: Some(1),
        read: Some(false),
        ..Filter::default()
    };
    for (name, list) in &kinds {
        let filter = if *name == "folder_unread" {
            unread
        } else {
            Filter::default()
        };
        for (i, q) in list.iter().enumerate() {
            // Warm-up: the first touch of each run's pages faults them in.
            std::hint::black_box(
                index
                    .search(i as u32 % USERS, q, &filter, 50, None)
                    .unwrap(),
            );
        }
        let mut times = Vec::new();
        for round in 0..5 {
            for (i, q) in list.iter().enumerate() {
                let t = Instant::now();
                let got = index
                    .search((i as u32 + round) % USERS, q, &filter, 50, None)
                    .unwrap();
                times.push(t.elapsed());
                std::hint::black_box(got);
            }
        }
        times.sort_unstable();
        eprintln!(
            "query {name:>14}: p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?} ({} queries, {} docs per user)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            times.len(),
            QUERY_DOCS / USERS as usize
        );
    }
    let mut group = c.benchmark_group("query");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for (name, list) in &kinds {
        let filter = if *name == "folder_unread" {
            unread
        } else {
            Filter::default()
        };
        let mut i = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i += 1;
                index
                    .search(i as u32 % USERS, &list[i % list.len()], &filter, 50, None)
                    .unwrap()
            })
        });
    }
    group.finish();
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, indexing, queries);
criterion_main!(benches);
