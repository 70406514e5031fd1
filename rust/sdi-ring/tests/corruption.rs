//! Every value read from the shared file is untrusted: a damaged header,
//! index or record length gives `Corrupt`, never a panic or a wild read.

mod common;

use common::{peek_u64, poke_u64, TempDir};
use sdi_ring::constants::HEADER_BYTES;
use sdi_ring::layout::*;
use sdi_ring::{Consumer, Error, Producer};

fn expect_corrupt<T>(outcome: Result<T, Error>, needle: &str) {
    match outcome {
        Err(Error::Corrupt(detail)) => {
            assert!(
                detail.contains(needle),
                "{detail:?} does not mention {needle:?}"
            )
        }
        Err(other) => panic!("expected Corrupt({needle}), got {other}"),
        Ok(_) => panic!("expected Corrupt({needle}), got success"),
    }
}

#[test]
fn header_damage_is_caught_on_open() {
    let cases: [(usize, u64, &str); 5] = [
        (MAGIC_OFFSET, 0, "bad magic"),
        (VERSION_OFFSET, 0x0000_0008_0000_0063, "format version 99"),
        (VERSION_OFFSET, 0x0000_0010_0000_0001, "record alignment 16"),
        (CAPACITY_OFFSET, 3000, "not a power of two"),
        (CAPACITY_OFFSET, 8192, "header says"),
    ];
    for (offset, value, needle) in cases {
        let directory = TempDir::new();
        let path = directory.ring(4096);
        poke_u64(&path, offset as u64, value);
        expect_corrupt(Consumer::attach(&path), needle);
        expect_corrupt(Producer::attach(&path), needle);
        expect_corrupt(sdi_ring::inspect(&path), needle);
    }
}

#[test]
fn a_short_or_resized_file_is_caught_on_open() {
    let directory = TempDir::new();
    let path = directory.ring(4096);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(100).unwrap();
    expect_corrupt(Consumer::attach(&path), "shorter than");
    file.set_len(HEADER_BYTES as u64 + 4096 + 8).unwrap();
    poke_u64(&path, MAGIC_OFFSET as u64, 0);
    expect_corrupt(Consumer::attach(&path), "bad magic");
    let path = directory.path().join("grown");
    sdi_ring::create(&path, 4096, false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(HEADER_BYTES as u64 + 8192)
        .unwrap();
    expect_corrupt(Producer::attach(&path), "header says");
    let empty = directory.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    expect_corrupt(Consumer::attach(&empty), "shorter than");
}

#[test]
fn impossible_head_and_tail_are_caught_on_open() {
    for (head, tail) in [(16, 8), (0, 4096 + 8), (0, 12), (3, 8)] {
        let directory = TempDir::new();
        let path = directory.ring(4096);
        poke_u64(&path, HEAD_OFFSET as u64, head);
        poke_u64(&path, TAIL_OFFSET as u64, tail);
        expect_corrupt(Consumer::attach(&path), "do not describe");
        expect_corrupt(Producer::attach(&path), "do not describe");
    }
}

#[test]
fn a_tail_damaged_after_attach_is_caught_on_pop() {
    let directory = TempDir::new();
    let path = directory.ring(4096);
    let mut consumer = Consumer::attach(&path).unwrap();
    poke_u64(&path, TAIL_OFFSET as u64, 1 << 40);
    expect_corrupt(consumer.try_pop_vec(10), "do not describe");
    poke_u64(&path, TAIL_OFFSET as u64, 16);
    // The tail now claims a record nobody wrote: the zeroed header is no known kind.
    expect_corrupt(consumer.try_pop_vec(10), "not a known record kind");
}

#[test]
fn a_head_damaged_after_attach_is_caught_on_push() {
    let directory = TempDir::new();
    let path = directory.ring(128);
    let mut producer = Producer::attach(&path).unwrap();
    let record = [1u8; 50];
    assert!(producer.try_push(&record).unwrap());
    assert!(producer.try_push(&record).unwrap());
    // A full ring makes the producer re-read the head, which now lies past the tail.
    poke_u64(&path, HEAD_OFFSET as u64, 1 << 20);
    expect_corrupt(producer.try_push(&record), "do not describe");
}

#[test]
fn damaged_record_headers_are_caught_on_pop() {
    let data = HEADER_BYTES as u64;
    let cases: [(u64, &str); 4] = [
        (encode_record_header(1 << 31, KIND_DATA), "record_bytes_max"),
        (
            encode_record_header(200, KIND_DATA),
            "past the wrap or the published tail",
        ),
        (
            encode_record_header(8, KIND_PADDING),
            "end exactly at the wrap",
        ),
        (encode_record_header(8, 0xdead), "not a known record kind"),
    ];
    for (word, needle) in cases {
        let directory = TempDir::new();
        let path = directory.ring(4096);
        let mut producer = Producer::attach(&path).unwrap();
        let mut consumer = Consumer::attach(&path).unwrap();
        assert!(producer.try_push(&[5u8; 16]).unwrap());
        assert_eq!(peek_u64(&path, data), encode_record_header(16, KIND_DATA));
        poke_u64(&path, data, word);
        expect_corrupt(consumer.try_pop_vec(10), needle);
        // Nothing was consumed: the head did not move.
        assert_eq!(peek_u64(&path, HEAD_OFFSET as u64), 0);
    }
}

#[test]
fn random_garbage_in_the_data_area_never_panics() {
    // Fill the published span with pseudo-random words: every pop either
    // returns records that lie inside the ring or reports Corrupt.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let directory = TempDir::new();
        let path = directory.ring(256);
        let mut consumer = Consumer::attach(&path).unwrap();
        for word in 0..32u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = if state % 3 == 0 {
                encode_record_header((state >> 8) as u32 % 300, KIND_DATA)
            } else if state % 3 == 1 {
                encode_record_header((state >> 8) as u32 % 300, KIND_PADDING)
            } else {
                state
            };
            poke_u64(&path, HEADER_BYTES as u64 + word * 8, value);
        }
        poke_u64(&path, TAIL_OFFSET as u64, 256);
        match consumer.try_pop_vec(100) {
            Ok(records) => assert!(records.iter().all(|record| record.len() <= 248)),
            Err(Error::Corrupt(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}
