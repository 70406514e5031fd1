//! Two threads through one ring: every record arrives once, in order, intact.

mod common;

use std::time::{Duration, Instant};

use common::{check_payload, sequenced_payload, TempDir};
use sdi_ring::{Consumer, Producer, Readiness, Visit, WaitStrategy};

const RECORDS: u64 = 200_000;

fn length_of(sequence: u64) -> usize {
    // Lengths from 16 to 300 bytes, so records wrap at every offset.
    16 + (sequence.wrapping_mul(2_654_435_761) % 285) as usize
}

fn run_stress(mut producer: Producer, mut consumer: Consumer, strategy: WaitStrategy) {
    let deadline = || Some(Instant::now() + Duration::from_secs(20));
    let writer = std::thread::spawn(move || {
        let mut sequence = 0u64;
        while sequence < RECORDS {
            let batch: Vec<Vec<u8>> = (sequence..(sequence + 37).min(RECORDS))
                .map(|s| sequenced_payload(s, length_of(s)))
                .collect();
            let mut slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            while !slices.is_empty() {
                let pushed = producer
                    .push_many_wait(&slices, deadline(), strategy)
                    .expect("push succeeds")
                    .expect("the consumer keeps up within the deadline");
                assert!(pushed >= 1);
                slices.drain(..pushed);
                sequence += pushed as u64;
            }
        }
        producer.close();
    });
    let mut expected = 0u64;
    loop {
        match consumer.wait_for_records(deadline(), strategy).unwrap() {
            Readiness::Ready => {}
            Readiness::Finished => break,
            Readiness::TimedOut => panic!("no record for 20 s after {expected}"),
        }
        consumer
            .pop_with(64, |payload| {
                assert_eq!(payload.len(), length_of(expected));
                assert_eq!(
                    check_payload(payload),
                    expected,
                    "out of order or duplicated"
                );
                expected += 1;
                Visit::Take
            })
            .unwrap();
    }
    writer.join().expect("the producer thread succeeds");
    assert_eq!(expected, RECORDS);
    assert!(consumer.is_finished().unwrap());
}

#[test]
fn two_threads_over_an_anonymous_mapping_spin() {
    let (producer, consumer) = sdi_ring::pair(4096).unwrap();
    run_stress(producer, consumer, WaitStrategy::Spin);
}

#[test]
fn two_threads_over_a_file_yield() {
    let directory = TempDir::new();
    let path = directory.ring(8192);
    let producer = Producer::attach(&path).unwrap();
    let consumer = Consumer::attach(&path).unwrap();
    run_stress(producer, consumer, WaitStrategy::SpinThenYield);
}

#[test]
fn two_threads_sleep_strategy_small_ring() {
    let (producer, consumer) = sdi_ring::pair(1024).unwrap();
    run_stress(producer, consumer, WaitStrategy::Sleep);
}
