//! Criterion benches of the leaderboard operations on a set of 1M members
//! (8-16 byte members, integer scores as points): building it with batch
//! adds, ZINCRBY, ZRANK, ZREVRANK, ZSCORE and the top 10 (ZREVRANGE 0 9),
//! one at a time and in batches (1000 members: cache-warm across
//! iterations; 100k members: mostly cold). Short runs: 10 samples, 2 s each.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sdi_zset::ZSet;

const N: usize = 1_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` distinct members of 8 to 16 bytes and scores in 0..100_000.
fn data(n: usize) -> (Vec<Vec<u8>>, Vec<f64>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let members = (0..n)
        .map(|i| {
            let len = 8 + (rng.next() % 9) as usize;
            let mut m = format!("{i:x}:").into_bytes();
            while m.len() < len {
                m.push(b'a' + (rng.next() % 26) as u8);
            }
            m
        })
        .collect();
    let scores = (0..n).map(|_| (rng.next() % 100_000) as f64).collect();
    (members, scores)
}

fn bench(c: &mut Criterion) {
    let (members, scores) = data(N);
    let mut g = c.benchmark_group("zset_1M");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));

    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("add_many_1M", |b| {
        b.iter_batched(
            ZSet::new,
            |mut z| {
                z.add_many(&scores, &members).expect("add");
                z
            },
            BatchSize::PerIteration,
        );
    });

    let mut z = ZSet::new();
    z.add_many(&scores, &members).expect("add");
    let mut rng = Rng(42);
    g.throughput(Throughput::Elements(1));
    g.bench_function("zincrby", |b| {
        b.iter(|| {
            let m = &members[rng.next() as usize % N];
            z.incr((rng.next() % 100) as f64, m).expect("incr")
        });
    });
    g.bench_function("zscore", |b| {
        b.iter(|| z.score(&members[rng.next() as usize % N]));
    });
    g.bench_function("zrank", |b| {
        b.iter(|| z.rank(&members[rng.next() as usize % N]));
    });
    g.bench_function("zrevrank", |b| {
        b.iter(|| z.rev_rank(&members[rng.next() as usize % N]));
    });
    g.bench_function("zrevrange_top10", |b| {
        b.iter(|| {
            z.range_by_rank(0, 9, true)
                .map(|(s, m)| s as usize + m.len())
                .sum::<usize>()
        });
    });
    g.bench_function("get_by_rank", |b| {
        b.iter(|| z.get_by_rank(rng.next() as usize % N).map(|(s, _)| s));
    });
    let batch: Vec<&[u8]> = (0..1000)
        .map(|_| &members[rng.next() as usize % N][..])
        .collect();
    let mut out = vec![0i64; batch.len()];
    let mut scores_out = vec![0f64; batch.len()];
    let deltas = vec![1.0; batch.len()];
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("batch_zrevrank_1000", |b| {
        b.iter(|| z.ranks_into(&batch, true, &mut out));
    });
    let big: Vec<&[u8]> = (0..100_000)
        .map(|_| &members[rng.next() as usize % N][..])
        .collect();
    let mut big_out = vec![0i64; big.len()];
    g.throughput(Throughput::Elements(big.len() as u64));
    g.bench_function("batch_zrevrank_100k", |b| {
        b.iter(|| z.ranks_into(&big, true, &mut big_out));
    });
    let mut big_scores = vec![0f64; big.len()];
    g.bench_function("batch_zscore_100k", |b| {
        b.iter(|| z.scores_into(&big, &mut big_scores));
    });
    let big_deltas = vec![1.0; big.len()];
    g.bench_function("batch_zincrby_100k", |b| {
        b.iter(|| z.incr_many(&big_deltas, &big).expect("incr"));
    });
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("batch_zscore_1000", |b| {
        b.iter(|| z.scores_into(&batch, &mut scores_out));
    });
    g.bench_function("batch_zincrby_1000", |b| {
        b.iter(|| z.incr_many(&deltas, &batch).expect("incr"));
    });
    g.finish();
    println!(
        "1M set: {:?}, overhead {:.2} bytes/member",
        z.stats(),
        overhead(&z, &members)
    );
}

fn overhead(z: &ZSet, members: &[Vec<u8>]) -> f64 {
    let payload: usize = members.iter().map(|m| m.len() + 8).sum();
    (z.memory_bytes() as f64 - payload as f64) / z.len() as f64
}

criterion_group!(benches, bench);
criterion_main!(benches);
