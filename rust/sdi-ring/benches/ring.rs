//! Criterion benchmarks of the ring core, without Python in the way.
//!
//! `same_thread`: push a batch then pop it, one thread (the copy cost).
//! `two_threads`: a producer thread streams fixed-size records to the
//! consumer (this thread), batches of 256, with the sequence checked.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sdi_ring::{pair, Readiness, WaitStrategy};

const BATCH_RECORDS: usize = 256;

fn same_thread(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("same_thread");
    for record_bytes in [8usize, 64, 256] {
        let (mut producer, mut consumer) = pair(1 << 20).unwrap();
        let rows = vec![1u8; record_bytes * BATCH_RECORDS];
        let mut out = vec![0u8; record_bytes * BATCH_RECORDS];
        group.throughput(Throughput::Elements(BATCH_RECORDS as u64));
        group.bench_function(BenchmarkId::from_parameter(record_bytes), |bench| {
            bench.iter(|| {
                let pushed = producer.try_push_rows(&rows, record_bytes).unwrap();
                let popped = consumer.try_pop_rows(&mut out, record_bytes).unwrap();
                assert_eq!(pushed, popped);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn two_threads(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("two_threads");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for record_bytes in [8usize, 64, 256] {
        group.throughput(Throughput::Elements(1 << 20));
        group.bench_function(BenchmarkId::from_parameter(record_bytes), |bench| {
            bench.iter_custom(|iterations| {
                let total = iterations * (1 << 20);
                let (mut producer, mut consumer) = pair(1 << 18).unwrap();
                let started = Instant::now();
                let writer = std::thread::spawn(move || {
                    let mut rows = vec![0u8; record_bytes * BATCH_RECORDS];
                    let mut sequence = 0u64;
                    while sequence < total {
                        let count = (total - sequence).min(BATCH_RECORDS as u64) as usize;
                        for (index, row) in rows.chunks_exact_mut(record_bytes).enumerate() {
                            row[..8].copy_from_slice(&(sequence + index as u64).to_le_bytes());
                        }
                        let mut offset = 0;
                        while offset < count {
                            let slice = &rows[offset * record_bytes..count * record_bytes];
                            offset += producer
                                .push_rows_wait(slice, record_bytes, None, WaitStrategy::Spin)
                                .unwrap()
                                .unwrap();
                        }
                        sequence += count as u64;
                    }
                });
                let mut out = vec![0u8; record_bytes * BATCH_RECORDS];
                let mut expected = 0u64;
                while expected < total {
                    assert_eq!(
                        consumer.wait_for_records(None, WaitStrategy::Spin).unwrap(),
                        Readiness::Ready
                    );
                    let popped = consumer.try_pop_rows(&mut out, record_bytes).unwrap();
                    for row in out.chunks_exact(record_bytes).take(popped) {
                        let sequence = u64::from_le_bytes(row[..8].try_into().unwrap());
                        assert_eq!(sequence, expected);
                        expected += 1;
                    }
                }
                writer.join().unwrap();
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, same_thread, two_threads);
criterion_main!(benches);
