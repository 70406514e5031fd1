//! Criterion benches: 4+2 encode and reconstruct (two data shards lost) of
//! 1 MiB stripes (256 KiB shards) and 64 KiB stripes, with every kernel this CPU supports.
//! Throughput is data bytes per second.
//!
//! Beside them, the `reed-solomon-simd` crate (Leopard-style GF(2^16) FFT,
//! not ISA-L compatible) doing the same 4+2 encode and 2-shard decode
//! through its reusable encoder and decoder, as the issue asks: measure it
//! and keep the faster.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use sdi_ec::{Codec, Kernel};

const K: usize = 4;
const M: usize = 2;

fn data(size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn bench_ec(c: &mut Criterion) {
    // 1 MiB stripes (the size; beyond L2 with the parity) and
    // 64 KiB stripes (in L1/L2: the kernels' compute speed).
    for (name, stripe) in [("1MiB", 1 << 20), ("64KiB", 64 << 10)] {
        bench_stripe(c, name, stripe);
    }
}

fn bench_stripe(c: &mut Criterion, name: &str, stripe_bytes: usize) {
    let data = data(stripe_bytes);
    let shard = stripe_bytes / K;
    let mut group = c.benchmark_group(format!("ec_4+2_{name}"));
    group.throughput(Throughput::Bytes(stripe_bytes as u64));
    for kernel in Kernel::supported() {
        let codec = Codec::with_kernel(K, M, kernel).expect("codec");
        let mut parity = vec![0u8; M * shard];
        group.bench_function(format!("encode/{kernel}"), |b| {
            b.iter(|| codec.encode_stripe(&data, &mut parity).expect("encode"));
        });
        let mut stripe = data.clone();
        stripe.extend_from_slice(&parity);
        let mut present = [true; K + M];
        present[0] = false;
        present[1] = false;
        group.bench_function(format!("reconstruct_2_data/{kernel}"), |b| {
            b.iter(|| {
                codec
                    .reconstruct_stripe(&mut stripe, &present, true)
                    .expect("reconstruct")
            });
        });
        assert_eq!(
            &stripe[..stripe_bytes],
            &data[..],
            "{kernel} rebuilt the data"
        );
    }

    let mut encoder = ReedSolomonEncoder::new(K, M, shard).expect("rs-simd encoder");
    group.bench_function("encode/reed-solomon-simd", |b| {
        b.iter(|| {
            for original in data.chunks_exact(shard) {
                encoder.add_original_shard(original).expect("add");
            }
            let result = encoder.encode().expect("encode");
            result.recovery(0).map(|r| r[0])
        });
    });
    let recovery: Vec<Vec<u8>> = {
        for original in data.chunks_exact(shard) {
            encoder.add_original_shard(original).expect("add");
        }
        let result = encoder.encode().expect("encode");
        result.recovery_iter().map(<[u8]>::to_vec).collect()
    };
    let mut decoder = ReedSolomonDecoder::new(K, M, shard).expect("rs-simd decoder");
    group.bench_function("reconstruct_2_data/reed-solomon-simd", |b| {
        b.iter(|| {
            for (index, original) in data.chunks_exact(shard).enumerate().skip(2) {
                decoder.add_original_shard(index, original).expect("add");
            }
            for (index, parity) in recovery.iter().enumerate() {
                decoder.add_recovery_shard(index, parity).expect("add");
            }
            let result = decoder.decode().expect("decode");
            result.restored_original(0).map(|r| r[0])
        });
    });
    group.finish();
}

criterion_group!(benches, bench_ec);
criterion_main!(benches);
