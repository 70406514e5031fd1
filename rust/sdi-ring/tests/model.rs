//! Property tests: the ring against a `VecDeque<Vec<u8>>` model, over random
//! sequences of pushes and pops at many capacities, wrap-around included.

mod common;

use std::collections::VecDeque;

use proptest::prelude::*;
use sdi_ring::layout::framed_bytes;
use sdi_ring::{pair, Error};

#[derive(Clone, Debug)]
enum Op {
    Push(Vec<u8>),
    PushMany(Vec<Vec<u8>>),
    PushRows {
        row_bytes: usize,
        rows: usize,
        fill: u8,
    },
    Pop(usize),
    PopInto {
        buffer_bytes: usize,
        max_records: usize,
    },
    PopRows {
        row_bytes: usize,
        rows: usize,
    },
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..=24),
        2 => prop::collection::vec(any::<u8>(), 0..=max),
        1 => prop::collection::vec(any::<u8>(), max.saturating_sub(8)..=max + 16),
    ]
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => payload(max).prop_map(Op::Push),
        3 => prop::collection::vec(payload(max), 0..12).prop_map(Op::PushMany),
        1 => (1usize..=16, 0usize..8, any::<u8>())
            .prop_map(|(row_bytes, rows, fill)| Op::PushRows { row_bytes, rows, fill }),
        3 => (0usize..12).prop_map(Op::Pop),
        2 => (0usize..=max + 8, 1usize..10)
            .prop_map(|(buffer_bytes, max_records)| Op::PopInto { buffer_bytes, max_records }),
        1 => (1usize..=16, 0usize..8).prop_map(|(row_bytes, rows)| Op::PopRows { row_bytes, rows }),
    ]
}

fn capacity_and_ops() -> impl Strategy<Value = (u64, Vec<Op>)> {
    prop::sample::select(vec![64u64, 128, 256, 512, 1024, 4096]).prop_flat_map(|capacity| {
        let max = capacity as usize - 8;
        (Just(capacity), prop::collection::vec(op(max), 1..120))
    })
}

/// Pushes `records` and checks the result against the model: a prefix goes
/// in, a refusal means the ring really was nearly full, and an oversize
/// record refuses the whole batch.
fn push_and_check(
    producer: &mut sdi_ring::Producer,
    model: &mut VecDeque<Vec<u8>>,
    records: &[&[u8]],
) -> Result<(), TestCaseError> {
    let max = producer.record_bytes_max();
    let free_before = producer.free_bytes().unwrap();
    let outcome = producer.try_push_many(records);
    if records.iter().any(|record| record.len() > max) {
        let refused = matches!(outcome, Err(Error::RecordTooLarge { .. }));
        prop_assert!(refused, "an oversize record was not refused");
        return Ok(());
    }
    let pushed = outcome.unwrap();
    prop_assert!(pushed <= records.len());
    let free_after = producer.free_bytes().unwrap();
    let framed: u64 = records[..pushed]
        .iter()
        .map(|record| framed_bytes(record.len()))
        .sum();
    prop_assert!(
        free_before - free_after >= framed,
        "pushed records into too little space"
    );
    model.extend(records[..pushed].iter().map(|record| record.to_vec()));
    if let Some(refused) = records.get(pushed) {
        // A refusal means the record did not fit, even after any padding
        // up to the wrap was written.
        let total = framed_bytes(refused.len());
        prop_assert!(
            free_after < total,
            "refused a {total}-byte record with {free_after} free"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn ring_behaves_like_a_fifo((capacity, ops) in capacity_and_ops()) {
        let (mut producer, mut consumer) = pair(capacity).unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(record) => push_and_check(&mut producer, &mut model, &[&record])?,
                Op::PushMany(records) => {
                    let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                    push_and_check(&mut producer, &mut model, &slices)?;
                }
                Op::PushRows { row_bytes, rows, fill } => {
                    let data: Vec<u8> = (0..row_bytes * rows).map(|i| fill ^ i as u8).collect();
                    let pushed = producer.try_push_rows(&data, row_bytes).unwrap();
                    prop_assert!(pushed <= rows);
                    for row in data.chunks_exact(row_bytes).take(pushed) {
                        model.push_back(row.to_vec());
                    }
                }
                Op::Pop(max_records) => {
                    let popped = consumer.try_pop_vec(max_records).unwrap();
                    let expected: Vec<Vec<u8>> =
                        model.drain(..max_records.min(model.len())).collect();
                    prop_assert_eq!(popped, expected);
                }
                Op::PopInto { buffer_bytes, max_records } => {
                    let mut buffer = vec![0u8; buffer_bytes];
                    let mut offsets = vec![-1i64; max_records + 1];
                    let outcome = consumer.try_pop_into(&mut buffer, &mut offsets);
                    match model.front() {
                        Some(first) if first.len() > buffer_bytes => {
                            let refused = matches!(outcome, Err(Error::InvalidArgument(_)));
                            prop_assert!(refused, "a record larger than the buffer was not refused");
                        }
                        _ => {
                            let popped = outcome.unwrap();
                            prop_assert!(popped <= max_records);
                            prop_assert_eq!(offsets[0], 0);
                            for index in 0..popped {
                                let expected = model.pop_front().unwrap();
                                let start = offsets[index] as usize;
                                let end = offsets[index + 1] as usize;
                                prop_assert_eq!(&buffer[start..end], expected.as_slice());
                            }
                            // It stopped early only because the buffer was full.
                            if popped < max_records {
                                if let Some(next) = model.front() {
                                    let used = offsets[popped] as usize;
                                    prop_assert!(used + next.len() > buffer_bytes);
                                }
                            }
                        }
                    }
                }
                Op::PopRows { row_bytes, rows } => {
                    let mut data = vec![0u8; row_bytes * rows];
                    let outcome = consumer.try_pop_rows(&mut data, row_bytes);
                    match model.front() {
                        Some(first) if rows > 0 && first.len() != row_bytes => {
                            let refused = matches!(outcome, Err(Error::InvalidArgument(_)));
                            prop_assert!(refused, "a record of another length was not refused");
                        }
                        _ => {
                            let popped = outcome.unwrap();
                            for row in data.chunks_exact(row_bytes).take(popped) {
                                let expected = model.pop_front().unwrap();
                                prop_assert_eq!(row, expected.as_slice());
                            }
                            if popped < rows {
                                prop_assert!(model.front().is_none_or(|next| next.len() != row_bytes));
                            }
                        }
                    }
                }
            }
            prop_assert_eq!(consumer.len_records().unwrap(), model.len() as u64);
            prop_assert_eq!(producer.len_records().unwrap(), model.len() as u64);
            let used = consumer.used_bytes().unwrap();
            let framed: u64 = model.iter().map(|record| framed_bytes(record.len())).sum();
            // Used space is the records plus at most one padding record.
            prop_assert!(used >= framed && used < framed + capacity, "used {used}, framed {framed}");
        }
        // Draining returns exactly what the model still holds.
        let rest = consumer.try_pop_vec(usize::MAX >> 40).unwrap();
        prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_record_as_large_as_the_ring_goes_in_once_the_ring_drains(
        capacity in prop::sample::select(vec![64u64, 128, 1024]),
        prefix in prop::collection::vec(0usize..40, 0..6),
    ) {
        let (mut producer, mut consumer) = pair(capacity).unwrap();
        for length in prefix {
            let record = vec![7u8; length];
            if producer.try_push(&record).unwrap() {
                prop_assert_eq!(consumer.try_pop_vec(1).unwrap(), vec![record]);
            }
        }
        let largest = vec![9u8; producer.record_bytes_max()];
        // At most one refusal: the first attempt may only write the padding.
        let mut attempts = 0;
        while !producer.try_push(&largest).unwrap() {
            attempts += 1;
            prop_assert!(attempts < 2, "a drained ring refused its largest record twice");
            prop_assert!(consumer.try_pop_vec(1).unwrap().is_empty());
        }
        prop_assert_eq!(consumer.try_pop_vec(2).unwrap(), vec![largest]);
    }
}
