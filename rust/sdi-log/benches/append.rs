//! Criterion benches of the log: appending 100-byte records in batches of
//! 1000, and reading them back.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sdi_log::{batches, FsyncPolicy, Partition, PartitionConfig, Record};

const RECORD_BYTES: usize = 100;
const BATCH_RECORDS: usize = 1000;
const BATCHES: usize = 100;

fn config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: 64 << 20,
        fsync: FsyncPolicy::Never,
        ..PartitionConfig::default()
    }
}

fn bench_log(c: &mut Criterion) {
    let value = vec![7u8; RECORD_BYTES];
    let records: Vec<Record<'_>> = (0..BATCH_RECORDS)
        .map(|_| Record {
            key: b"",
            value: &value,
        })
        .collect();
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Bytes(
        (BATCHES * BATCH_RECORDS * RECORD_BYTES) as u64,
    ));
    group.sample_size(10);
    group.bench_function("append_100b_records_x1000", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let mut partition = Partition::open(dir.path(), config()).expect("open");
                for batch in 0..BATCHES {
                    partition
                        .append_records(&records, batch as i64)
                        .expect("append");
                }
                dir
            },
            criterion::BatchSize::PerIteration,
        );
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    for batch in 0..BATCHES {
        partition
            .append_records(&records, batch as i64)
            .expect("append");
    }
    group.bench_function("read_back_1mb_fetches", |b| {
        let mut buffer = Vec::new();
        b.iter(|| {
            let mut offset = 0;
            let mut values = 0;
            while offset < partition.next_offset() {
                partition
                    .read_into(offset, 1 << 20, &mut buffer)
                    .expect("read");
                for batch in batches(&buffer) {
                    let batch = batch.expect("valid batch");
                    values += batch.records().expect("records").len();
                    offset = batch.header.next_offset();
                }
            }
            assert_eq!(values, BATCHES * BATCH_RECORDS);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
