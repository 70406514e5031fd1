//! Criterion bench of compaction: 20,000 offset commits (Kafka batches of 10
//! records over 1,000 keys, as `__consumer_offsets` holds them) in 64 KiB
//! segments, compacted whole.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sdi_log::kafka::{build_kafka_batch, PlainRecord};
use sdi_log::{FsyncPolicy, Partition, PartitionConfig};

const COMMITS: u64 = 20_000;
const PER_BATCH: u64 = 10;
const KEYS: u64 = 1_000;

fn config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: 64 << 10,
        fsync: FsyncPolicy::Never,
        ..PartitionConfig::default()
    }
}

fn fill(partition: &mut Partition) {
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|n| format!("group-{}\0topic\0{}", n % 10, n).into_bytes())
        .collect();
    let value = [7u8; 13];
    for batch in 0..COMMITS / PER_BATCH {
        let base = partition.next_offset();
        let records: Vec<PlainRecord<'_>> = (0..PER_BATCH)
            .map(|at| {
                let n = (batch * PER_BATCH + at) % KEYS;
                (
                    base + at,
                    batch as i64,
                    Some(keys[n as usize].as_slice()),
                    Some(&value[..]),
                )
            })
            .collect();
        let bytes = build_kafka_batch(&records);
        partition
            .append_payload(&bytes, PER_BATCH as u32, batch as i64, batch as i64)
            .expect("append");
    }
}

fn bench_compact(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(COMMITS));
    group.sample_size(10);
    group.bench_function("compact_20k_commits_1k_keys", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut partition = Partition::open(dir.path(), config()).expect("open");
                fill(&mut partition);
                (dir, partition)
            },
            |(dir, mut partition)| {
                let up_to = partition.next_offset();
                let outcome = partition.compact(up_to, 0, 0).expect("compact");
                assert!(outcome.bytes_after < outcome.bytes_before);
                (dir, partition)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_compact);
criterion_main!(benches);
