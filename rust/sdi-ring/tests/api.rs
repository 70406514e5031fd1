//! The contract of the public API: limits, roles, closing and liveness.

mod common;

use std::time::{Duration, Instant};

use common::{poke_u64, TempDir};
use sdi_ring::constants::{BATCH_RECORDS_MAX, CAPACITY_BYTES_MIN, OWNER_PID_BITS};
use sdi_ring::layout::{CONSUMER_OWNER_OFFSET, PRODUCER_OWNER_OFFSET};
use sdi_ring::{Consumer, Error, PeerState, Producer, Readiness, Role, WaitStrategy};

fn soon(millis: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(millis))
}

/// The owner word of a process that has exited and been reaped.
fn dead_owner_word() -> u64 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    u64::from(pid) | (12345 << OWNER_PID_BITS)
}

#[test]
fn capacity_must_be_a_power_of_two_in_range() {
    let directory = TempDir::new();
    let path = directory.path().join("ring");
    for capacity in [0, 32, 1000, 4097, 1 << 41] {
        match sdi_ring::create(&path, capacity, true) {
            Err(error @ Error::BadCapacity { .. }) => {
                assert!(error.to_string().contains("power of two"));
            }
            other => panic!("capacity {capacity}: {other:?}"),
        }
    }
    let error = sdi_ring::create(&path, 1000, true).unwrap_err().to_string();
    assert!(error.contains("try 1024"), "{error}");
    sdi_ring::create(&path, CAPACITY_BYTES_MIN, false).unwrap();
    assert!(matches!(
        sdi_ring::create(&path, 4096, false),
        Err(Error::Io { .. })
    ));
    sdi_ring::create(&path, 4096, true).unwrap();
    assert_eq!(sdi_ring::inspect(&path).unwrap().capacity_bytes, 4096);
}

#[test]
fn oversize_records_and_batches_are_refused_before_anything_is_written() {
    let (mut producer, mut consumer) = sdi_ring::pair(256).unwrap();
    assert_eq!(producer.record_bytes_max(), 248);
    let fits = vec![1u8; 248];
    let too_large = vec![2u8; 249];
    match producer.try_push_many(&[&fits, &too_large]) {
        Err(Error::RecordTooLarge { index, bytes, max }) => {
            assert_eq!((index, bytes, max), (1, 249, 248));
        }
        other => panic!("{other:?}"),
    }
    assert!(consumer.try_pop_vec(10).unwrap().is_empty());
    let rows = vec![0u8; 4 * (BATCH_RECORDS_MAX + 1)];
    assert!(matches!(
        producer.try_push_rows(&rows, 4),
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(matches!(
        producer.try_push_rows(&[0u8; 10], 4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        consumer.try_pop_vec(BATCH_RECORDS_MAX + 1),
        Err(Error::BatchTooLarge { .. })
    ));
}

#[test]
fn non_blocking_push_reports_how_many_fit() {
    let (mut producer, mut consumer) = sdi_ring::pair(128).unwrap();
    let record = [7u8; 24]; // 32 bytes framed: four fit in 128.
    let batch = [&record[..]; 6];
    assert_eq!(producer.try_push_many(&batch).unwrap(), 4);
    assert_eq!(producer.free_bytes().unwrap(), 0);
    assert!(!producer.try_push(&record).unwrap());
    assert_eq!(consumer.len_records().unwrap(), 4);
    assert_eq!(consumer.try_pop_vec(1).unwrap(), vec![record.to_vec()]);
    assert_eq!(producer.try_push_many(&batch).unwrap(), 1);
    assert_eq!(consumer.try_pop_vec(10).unwrap().len(), 4);
}

#[test]
fn a_second_producer_or_consumer_is_refused_while_the_first_lives() {
    let directory = TempDir::new();
    let path = directory.ring(4096);
    let mut producer = Producer::attach(&path).unwrap();
    let consumer = Consumer::attach(&path).unwrap();
    match Producer::attach(&path) {
        Err(Error::RoleTaken { role, pid }) => {
            assert_eq!((role, pid), (Role::Producer, std::process::id()));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(matches!(
        Consumer::attach(&path),
        Err(Error::RoleTaken {
            role: Role::Consumer,
            ..
        })
    ));
    assert_eq!(consumer.producer_state(), PeerState::Alive);
    producer.close();
    assert_eq!(consumer.producer_state(), PeerState::Closed);
    // Once released, the role can be claimed again.
    let again = Producer::attach(&path).unwrap();
    assert_eq!(consumer.producer_state(), PeerState::Alive);
    drop(again);
}

#[test]
fn a_dead_holder_is_replaced() {
    let directory = TempDir::new();
    let path = directory.ring(4096);
    poke_u64(&path, PRODUCER_OWNER_OFFSET as u64, dead_owner_word());
    poke_u64(&path, CONSUMER_OWNER_OFFSET as u64, dead_owner_word());
    let info = sdi_ring::inspect(&path).unwrap();
    assert_eq!(
        (info.producer, info.consumer),
        (PeerState::Dead, PeerState::Dead)
    );
    let _producer = Producer::attach(&path).unwrap();
    let _consumer = Consumer::attach(&path).unwrap();
    let info = sdi_ring::inspect(&path).unwrap();
    assert_eq!(
        (info.producer, info.consumer),
        (PeerState::Alive, PeerState::Alive)
    );
}

#[test]
fn a_consumer_waiting_on_a_dead_producer_gets_peer_gone_after_draining() {
    let directory = TempDir::new();
    let path = directory.ring(4096);
    let mut consumer = Consumer::attach(&path).unwrap();
    let mut producer = Producer::attach(&path).unwrap();
    assert!(producer.try_push(b"last words").unwrap());
    // Forget the producer without closing it, then mark its role as held
    // by a dead process, as a SIGKILL would leave it.
    std::mem::forget(producer);
    poke_u64(&path, PRODUCER_OWNER_OFFSET as u64, dead_owner_word());
    assert_eq!(consumer.producer_state(), PeerState::Dead);
    assert_eq!(
        consumer
            .wait_for_records(soon(1000), WaitStrategy::Spin)
            .unwrap(),
        Readiness::Ready
    );
    assert_eq!(
        consumer.try_pop_vec(10).unwrap(),
        vec![b"last words".to_vec()]
    );
    let started = Instant::now();
    match consumer.wait_for_records(soon(5000), WaitStrategy::SpinThenYield) {
        Err(
            error @ Error::PeerGone {
                role: Role::Producer,
                ..
            },
        ) => {
            assert!(error.to_string().contains("has died"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_producer_waiting_on_a_dead_consumer_gets_peer_gone() {
    let directory = TempDir::new();
    let path = directory.ring(64);
    let mut producer = Producer::attach(&path).unwrap();
    poke_u64(&path, CONSUMER_OWNER_OFFSET as u64, dead_owner_word());
    assert!(producer.try_push(&[0u8; 56]).unwrap());
    assert_eq!(producer.consumer_state(), PeerState::Dead);
    assert!(matches!(
        producer.push_many_wait(&[b"more"], soon(5000), WaitStrategy::Sleep),
        Err(Error::PeerGone {
            role: Role::Consumer,
            ..
        })
    ));
}

#[test]
fn a_clean_close_gives_the_consumer_a_clean_end_after_draining() {
    let (mut producer, mut consumer) = sdi_ring::pair(4096).unwrap();
    assert!(producer.try_push(b"one").unwrap());
    producer.close();
    assert!(matches!(
        producer.try_push(b"two"),
        Err(Error::Closed(Role::Producer))
    ));
    assert!(!consumer.is_finished().unwrap());
    assert_eq!(
        consumer.wait_for_records(None, WaitStrategy::Spin).unwrap(),
        Readiness::Ready
    );
    assert_eq!(consumer.try_pop_vec(10).unwrap(), vec![b"one".to_vec()]);
    assert_eq!(
        consumer.wait_for_records(None, WaitStrategy::Spin).unwrap(),
        Readiness::Finished
    );
    assert!(consumer.is_finished().unwrap());
    consumer.close();
    assert!(matches!(
        consumer.try_pop_vec(1),
        Err(Error::Closed(Role::Consumer))
    ));
}

#[test]
fn a_producer_waiting_on_a_closed_consumer_is_told_so() {
    let (mut producer, mut consumer) = sdi_ring::pair(64).unwrap();
    assert!(producer.try_push(&[0u8; 56]).unwrap());
    consumer.close();
    assert!(matches!(
        producer.push_many_wait(&[b"x"], None, WaitStrategy::Spin),
        Err(Error::PeerClosed(Role::Consumer))
    ));
}

#[test]
fn waits_time_out_when_nothing_happens() {
    let (mut producer, mut consumer) = sdi_ring::pair(64).unwrap();
    let started = Instant::now();
    assert_eq!(
        consumer
            .wait_for_records(soon(30), WaitStrategy::Sleep)
            .unwrap(),
        Readiness::TimedOut
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(producer.try_push(&[0u8; 56]).unwrap());
    assert_eq!(
        producer
            .push_many_wait(&[b"x"], soon(30), WaitStrategy::SpinThenYield)
            .unwrap(),
        None
    );
}
