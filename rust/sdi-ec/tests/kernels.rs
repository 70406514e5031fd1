//! Every kernel the CPU supports against the scalar reference: every tail
//! length 0..=200, random longer lengths, 1 to 13 output rows (one pass and
//! several groups), and sources that start at odd addresses.

use proptest::prelude::*;
use sdi_ec::testing::{dot_prod, dot_prod_reference};
use sdi_ec::{Codec, Kernel};

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Runs `kernel` over `cols` sources and `rows` outputs of `len` bytes, the
/// sources starting `skew` bytes into their allocations, and compares with
/// the reference. Destinations are pre-filled with garbage.
fn check(kernel: Kernel, rows: usize, cols: usize, len: usize, skew: usize, seed: u64) {
    let coef = bytes(seed ^ 0xC0EF, rows * cols);
    let backing: Vec<Vec<u8>> = (0..cols)
        .map(|j| bytes(seed + j as u64, len + skew))
        .collect();
    let srcs: Vec<&[u8]> = backing.iter().map(|b| &b[skew..]).collect();
    let mut outputs: Vec<Vec<u8>> = (0..rows).map(|_| vec![0xA5; len + skew]).collect();
    let mut dsts: Vec<&mut [u8]> = outputs.iter_mut().map(|o| &mut o[skew..]).collect();
    dot_prod(kernel, &coef, &srcs, &mut dsts).expect("dot_prod");
    let want = dot_prod_reference(&coef, &srcs, len);
    for (r, (got, want)) in dsts.iter().zip(&want).enumerate() {
        assert!(
            **got == want[..],
            "{kernel}: rows={rows} cols={cols} len={len} skew={skew}: row {r} differs"
        );
    }
    // Nothing written before the start (the skew bytes stay as filled).
    for output in &outputs {
        assert!(
            output[..skew].iter().all(|&b| b == 0xA5),
            "{kernel} wrote before its start"
        );
    }
}

#[test]
fn the_scalar_kernel_is_always_supported_and_the_best_is_detected() {
    assert!(Kernel::Scalar.is_supported());
    assert!(Kernel::best().is_supported());
    assert_eq!(Kernel::supported()[0], Kernel::best());
    // A supported kernel that fails its self-test would be skipped in
    // production; here it is a failure.
    for kernel in Kernel::supported() {
        assert!(kernel.passes_self_test(), "{kernel} failed its self-test");
    }
    for kernel in Kernel::ALL {
        if !kernel.is_supported() {
            assert!(!kernel.passes_self_test());
        }
    }
    for kernel in Kernel::ALL {
        assert_eq!(Kernel::from_name(kernel.name()), Some(kernel));
    }
    eprintln!(
        "kernels supported here: {:?}; best: {}",
        Kernel::supported(),
        Kernel::best()
    );
}

#[test]
fn every_kernel_at_every_tail_length() {
    for kernel in Kernel::supported() {
        for len in 0..=200 {
            for (rows, cols) in [(2, 4), (1, 1), (6, 3), (3, 5)] {
                check(kernel, rows, cols, len, len % 3, len as u64);
            }
        }
    }
}

#[test]
fn every_kernel_with_every_row_count() {
    for kernel in Kernel::supported() {
        for rows in 1..=13 {
            for cols in [1, 2, 4, 7] {
                check(
                    kernel,
                    rows,
                    cols,
                    1000 + rows,
                    1,
                    (rows * 31 + cols) as u64,
                );
            }
        }
    }
}

#[test]
fn every_kernel_over_several_column_blocks() {
    // More than six rows go over column blocks of 256 KiB / cols.
    for kernel in Kernel::supported() {
        check(kernel, 9, 8, 70_001, 0, 7);
    }
}

#[test]
fn each_kernel_encodes_as_the_scalar_kernel() {
    let scalar = Codec::with_kernel(10, 4, Kernel::Scalar).unwrap();
    let data: Vec<Vec<u8>> = (0..10).map(|j| bytes(j, 4099)).collect();
    let sources: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut want = vec![vec![0u8; 4099]; 4];
    let mut outputs: Vec<&mut [u8]> = want.iter_mut().map(Vec::as_mut_slice).collect();
    scalar.encode(&sources, &mut outputs).unwrap();
    for kernel in Kernel::supported() {
        let codec = Codec::with_kernel(10, 4, kernel).unwrap();
        let mut got = vec![vec![0u8; 4099]; 4];
        let mut outputs: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&sources, &mut outputs).unwrap();
        assert_eq!(got, want, "{kernel}");
    }
}

#[test]
fn an_unsupported_kernel_is_an_error_not_a_crash() {
    for kernel in Kernel::ALL {
        if !kernel.is_supported() {
            assert!(matches!(
                Codec::with_kernel(4, 2, kernel),
                Err(sdi_ec::Error::KernelUnsupported(..))
            ));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kernels_match_the_reference_at_random_sizes(
        rows in 1usize..=8,
        cols in 1usize..=10,
        len in 0usize..20_000,
        skew in 0usize..64,
        seed in any::<u64>(),
    ) {
        for kernel in Kernel::supported() {
            check(kernel, rows, cols, len, skew, seed);
        }
    }
}
