//! The codec end to end: encode, lose or rot any <= m shards, get the
//! stripe back; bad input is an error, never a panic.

use proptest::prelude::*;
use sdi_ec::{checksum, checksums, intact, Codec, Error, Kernel};

fn encode_all(codec: &Codec, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let len = data.first().map_or(0, Vec::len);
    let mut parity = vec![vec![0u8; len]; codec.parity_shards()];
    let sources: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
    codec.encode(&sources, &mut outputs).expect("encode");
    data.iter().cloned().chain(parity).collect()
}

fn arb_code() -> impl Strategy<Value = (usize, usize)> {
    (1usize..=8, 0usize..=4)
}

/// A code, its data shards, and a set of at most m shard indices.
fn arb_case() -> impl Strategy<Value = (usize, usize, Vec<Vec<u8>>, Vec<usize>)> {
    (arb_code(), 0usize..300).prop_flat_map(|((k, m), len)| {
        (
            Just(k),
            Just(m),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), len), k),
            proptest::sample::subsequence((0..k + m).collect::<Vec<_>>(), 0..=m),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_m_lost_shards_come_back((k, m, data, lost) in arb_case()) {
        for kernel in Kernel::supported() {
            let codec = Codec::with_kernel(k, m, kernel).unwrap();
            let stripe = encode_all(&codec, &data);
            let views: Vec<&[u8]> = stripe.iter().map(Vec::as_slice).collect();
            prop_assert!(codec.verify(&views).unwrap());

            // Option form.
            let mut shards: Vec<Option<Vec<u8>>> = stripe.iter().cloned().map(Some).collect();
            for &i in &lost {
                shards[i] = None;
            }
            codec.reconstruct(&mut shards).unwrap();
            let rebuilt: Vec<Vec<u8>> = shards.into_iter().map(Option::unwrap).collect();
            prop_assert_eq!(&rebuilt, &stripe);

            // In place, over garbage, in one contiguous buffer.
            let mut flat: Vec<u8> = stripe.concat();
            let len = stripe[0].len();
            let mut present = vec![true; k + m];
            for &i in &lost {
                present[i] = false;
                flat[i * len..(i + 1) * len].fill(0x5A);
            }
            codec.reconstruct_stripe(&mut flat, &present, false).unwrap();
            prop_assert_eq!(&flat, &stripe.concat());

            // Data only: the data comes back, lost parity is left alone.
            let mut shards: Vec<Option<Vec<u8>>> = stripe.iter().cloned().map(Some).collect();
            for &i in &lost {
                shards[i] = None;
            }
            codec.reconstruct_data(&mut shards).unwrap();
            for i in 0..k {
                prop_assert_eq!(shards[i].as_ref(), Some(&stripe[i]));
            }
            for &i in &lost {
                prop_assert_eq!(shards[i].is_none(), i >= k);
            }
        }
    }

    #[test]
    fn a_rotten_shard_is_caught_by_its_checksum_and_rebuilt(
        (k, m, data, rotten) in arb_case(),
        flip in any::<(usize, u8)>(),
    ) {
        prop_assume!(!data[0].is_empty());
        let codec = Codec::new(k, m).unwrap();
        let stripe = encode_all(&codec, &data);
        let views: Vec<&[u8]> = stripe.iter().map(Vec::as_slice).collect();
        let sums = checksums(&views);
        let mut stored = stripe.clone();
        for &i in &rotten {
            let at = flip.0 % stored[i].len();
            stored[i][at] ^= flip.1 | 1;
        }
        let mut stored_views: Vec<&mut [u8]> = stored.iter_mut().map(Vec::as_mut_slice).collect();
        let shared: Vec<&[u8]> = stored_views.iter().map(|s| &**s).collect();
        let present = intact(&shared, &sums).unwrap();
        for (i, &ok) in present.iter().enumerate() {
            prop_assert_eq!(ok, !rotten.contains(&i));
        }
        if !rotten.is_empty() {
            prop_assert!(!codec.verify(&shared).unwrap());
        }
        codec.reconstruct_in_place(&mut stored_views, &present).unwrap();
        prop_assert_eq!(&stored, &stripe);
    }
}

#[test]
fn zero_length_and_one_byte_stripes() {
    let codec = Codec::new(4, 2).unwrap();
    for len in [0usize, 1] {
        let data: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8 + 1; len]).collect();
        let stripe = encode_all(&codec, &data);
        let mut shards: Vec<Option<Vec<u8>>> = stripe.iter().cloned().map(Some).collect();
        shards[0] = None;
        shards[5] = None;
        codec.reconstruct(&mut shards).unwrap();
        assert_eq!(
            shards.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
            stripe
        );
    }
    let mut parity = [];
    assert_eq!(codec.encode_stripe(&[], &mut parity), Ok(0));
    assert_eq!(
        codec.reconstruct_stripe(&mut [], &[true, true, true, false, false, true], false),
        Ok(0)
    );
}

#[test]
fn the_largest_code() {
    let codec = Codec::new(200, 55).unwrap();
    let data: Vec<Vec<u8>> = (0..200).map(|i| vec![(i * 7) as u8; 129]).collect();
    let stripe = encode_all(&codec, &data);
    let mut shards: Vec<Option<Vec<u8>>> = stripe.iter().cloned().map(Some).collect();
    for i in (0..255).step_by(5).take(55) {
        shards[i] = None;
    }
    codec.reconstruct(&mut shards).unwrap();
    assert_eq!(
        shards.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
        stripe
    );
}

#[test]
fn bad_parameters() {
    assert_eq!(
        Codec::new(0, 2).unwrap_err(),
        Error::InvalidParameters { k: 0, m: 2 }
    );
    assert!(matches!(
        Codec::new(200, 56),
        Err(Error::InvalidParameters { .. })
    ));
    assert!(matches!(
        Codec::new(usize::MAX, 2),
        Err(Error::InvalidParameters { .. })
    ));
    assert!(Codec::new(255, 0).is_ok());
    assert!(Codec::new(1, 254).is_ok());
}

#[test]
fn bad_shapes_are_errors() {
    let codec = Codec::new(4, 2).unwrap();
    let a = vec![0u8; 10];
    let short = vec![0u8; 9];
    let mut p0 = vec![0u8; 10];
    let mut p1 = vec![0u8; 10];
    let mut p_short = vec![0u8; 9];
    // Too few data shards.
    assert!(matches!(
        codec.encode(&[&a, &a, &a], &mut [&mut p0, &mut p1]),
        Err(Error::ShardCount {
            expected: 4,
            got: 3,
            ..
        })
    ));
    // Too many parity shards.
    let mut p2 = vec![0u8; 10];
    assert!(matches!(
        codec.encode(&[&a, &a, &a, &a], &mut [&mut p0, &mut p1, &mut p2]),
        Err(Error::ShardCount {
            expected: 2,
            got: 3,
            ..
        })
    ));
    // Mismatched lengths.
    assert!(matches!(
        codec.encode(&[&a, &a, &short, &a], &mut [&mut p0, &mut p1]),
        Err(Error::ShardLength { index: 2, .. })
    ));
    assert!(matches!(
        codec.encode(&[&a, &a, &a, &a], &mut [&mut p0, &mut p_short]),
        Err(Error::ShardLength { index: 1, .. })
    ));
    // Contiguous buffers of the wrong size.
    assert!(matches!(
        codec.encode_stripe(&[0u8; 10], &mut [0u8; 6]),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        codec.encode_stripe(&[0u8; 12], &mut [0u8; 5]),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        codec.reconstruct_stripe(&mut [0u8; 13], &[true; 6], false),
        Err(Error::BufferLength { .. })
    ));
    // Masks of the wrong length, too few shards.
    assert!(matches!(
        codec.reconstruct_stripe(&mut [0u8; 12], &[true; 5], false),
        Err(Error::ShardCount { .. })
    ));
    assert_eq!(
        codec.reconstruct_stripe(
            &mut [0u8; 12],
            &[true, false, true, false, true, false],
            false
        ),
        Err(Error::TooFewShards {
            present: 3,
            needed: 4,
            total: 6
        })
    );
    let mut shards: Vec<Option<Vec<u8>>> = vec![
        Some(vec![0; 3]),
        None,
        None,
        None,
        Some(vec![0; 3]),
        Some(vec![0; 3]),
    ];
    assert!(matches!(
        codec.reconstruct(&mut shards),
        Err(Error::TooFewShards { present: 3, .. })
    ));
    assert_eq!(
        shards.iter().filter(|s| s.is_none()).count(),
        3,
        "nothing created on failure"
    );
    let mut shards: Vec<Option<Vec<u8>>> = vec![
        Some(vec![0; 3]),
        None,
        Some(vec![0; 4]),
        Some(vec![0; 3]),
        Some(vec![0; 3]),
        Some(vec![0; 3]),
    ];
    assert!(matches!(
        codec.reconstruct(&mut shards),
        Err(Error::ShardLength { .. })
    ));
    assert!(shards[1].is_none());
    assert!(matches!(
        codec.verify(&[a.as_slice(); 5]),
        Err(Error::ShardCount { .. })
    ));
    assert!(matches!(
        intact(&[a.as_slice()], &[1, 2]),
        Err(Error::ShardCount { .. })
    ));
    // Every error has a message.
    assert!(Error::TooFewShards {
        present: 3,
        needed: 4,
        total: 6
    }
    .to_string()
    .contains("3 of the 6"));
}

#[test]
fn crc32c_known_answer() {
    // The CRC-32C check value of "123456789" (RFC 3720).
    assert_eq!(checksum(b"123456789"), 0xE306_9283);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn reconstruct_into_rebuilds_any_shard_from_read_only_sources(
        (k, m, data, lost) in arb_case(),
        wanted in proptest::collection::vec(0usize..12, 0..4),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let stripe = encode_all(&codec, &data);
        let sources: Vec<Option<&[u8]>> = stripe
            .iter()
            .enumerate()
            .map(|(i, s)| (!lost.contains(&i)).then_some(s.as_slice()))
            .collect();
        // Lost ones, and any others asked for (present ones included).
        let indices: Vec<usize> = lost
            .iter()
            .copied()
            .chain(wanted.into_iter().filter(|&i| i < k + m))
            .collect();
        let len = stripe[0].len();
        let mut outputs = vec![vec![0xEEu8; len]; indices.len()];
        let mut targets: Vec<(usize, &mut [u8])> = indices
            .iter()
            .copied()
            .zip(outputs.iter_mut().map(Vec::as_mut_slice))
            .collect();
        codec.reconstruct_into(&sources, &mut targets).unwrap();
        for (index, output) in indices.iter().zip(&outputs) {
            prop_assert_eq!(output, &stripe[*index]);
        }
    }
}

#[test]
fn reconstruct_into_refuses_bad_targets() {
    let codec = Codec::new(4, 2).unwrap();
    let shard = [0u8; 8];
    let sources = [
        Some(&shard[..]),
        Some(&shard[..]),
        None,
        Some(&shard[..]),
        Some(&shard[..]),
        None,
    ];
    let mut out = [0u8; 8];
    let mut short = [0u8; 7];
    assert_eq!(
        codec.reconstruct_into(&sources, &mut [(6, &mut out[..])]),
        Err(Error::ShardIndex { index: 6, total: 6 })
    );
    assert!(matches!(
        codec.reconstruct_into(&sources, &mut [(2, &mut short[..])]),
        Err(Error::ShardLength { index: 2, .. })
    ));
    assert!(matches!(
        codec.reconstruct_into(&sources[..5], &mut [(2, &mut out[..])]),
        Err(Error::ShardCount { .. })
    ));
    let three = [
        Some(&shard[..]),
        None,
        None,
        Some(&shard[..]),
        Some(&shard[..]),
        None,
    ];
    assert!(matches!(
        codec.reconstruct_into(&three, &mut [(1, &mut out[..])]),
        Err(Error::TooFewShards { present: 3, .. })
    ));
    assert_eq!(codec.reconstruct_into(&sources, &mut []), Ok(()));
}
