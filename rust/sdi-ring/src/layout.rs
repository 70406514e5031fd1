//! The byte layout of a ring file: header fields and record framing.
//!
//! ```text
//! offset  size  field                       written by
//!      0     8  magic "SDIRING\x01"         creator (last, with release)
//!      8     4  format version              creator
//!     12     4  record alignment (8)        creator
//!     16     8  capacity_bytes              creator
//!     24     8  header_bytes (4096)         creator
//!    128     8  tail: bytes ever pushed     producer (release, once per batch)
//!    136     8  records ever pushed         producer
//!    256     8  head: bytes ever popped     consumer (release, once per batch)
//!    264     8  records ever popped         consumer
//!    384     8  producer owner word         producer claim (CAS)
//!    392     8  producer closed flag        producer
//!    512     8  consumer owner word         consumer claim (CAS)
//!    520     8  consumer closed flag        consumer
//!   4096     -  data area, capacity_bytes long
//! ```
//!
//! A record is an 8-byte header (u32 payload length, u32 kind), the payload,
//! then zero to seven bytes of padding so the next record is 8-byte aligned.
//! A padding record (kind [`KIND_PADDING`]) fills the end of the data area
//! when the next record does not fit before the wrap.

use crate::constants::{CACHE_LINE_PAD_BYTES, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES};

/// Offset of the magic number.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the format version (u32).
pub const VERSION_OFFSET: usize = 8;
/// Offset of the record alignment (u32).
pub const RECORD_ALIGN_OFFSET: usize = 12;
/// Offset of the data area's size in bytes.
pub const CAPACITY_OFFSET: usize = 16;
/// Offset of the header size, where the data area starts.
pub const HEADER_BYTES_OFFSET: usize = 24;
/// Offset of the tail (bytes ever pushed), on the producer's line.
pub const TAIL_OFFSET: usize = CACHE_LINE_PAD_BYTES;
/// Offset of the count of records ever pushed.
pub const TAIL_RECORDS_OFFSET: usize = TAIL_OFFSET + 8;
/// Offset of the head (bytes ever popped), on the consumer's line.
pub const HEAD_OFFSET: usize = 2 * CACHE_LINE_PAD_BYTES;
/// Offset of the count of records ever popped.
pub const HEAD_RECORDS_OFFSET: usize = HEAD_OFFSET + 8;
/// Offset of the producer's owner word (pid and start time, 0 when free).
pub const PRODUCER_OWNER_OFFSET: usize = 3 * CACHE_LINE_PAD_BYTES;
/// Offset of the producer's closed flag (1 after a clean close).
pub const PRODUCER_CLOSED_OFFSET: usize = PRODUCER_OWNER_OFFSET + 8;
/// Offset of the consumer's owner word.
pub const CONSUMER_OWNER_OFFSET: usize = 4 * CACHE_LINE_PAD_BYTES;
/// Offset of the consumer's closed flag.
pub const CONSUMER_CLOSED_OFFSET: usize = CONSUMER_OWNER_OFFSET + 8;

// The creator's fields end before the producer's line, and every shared
// field lies inside the header: checked when the crate compiles.
const _: () = assert!(HEADER_BYTES_OFFSET + 8 <= TAIL_OFFSET);
const _: () = assert!(CONSUMER_CLOSED_OFFSET + 8 <= crate::constants::HEADER_BYTES);

/// The kind of a record carrying a payload. Kinds are distinctive values so
/// that a zeroed or overwritten header is caught as corruption.
pub const KIND_DATA: u32 = 0x5244_0001;
/// The kind of the padding record that fills the data area up to the wrap.
pub const KIND_PADDING: u32 = 0x5244_0002;

/// The aligned size of a record with `payload_bytes` of payload, header included.
#[inline]
pub fn framed_bytes(payload_bytes: usize) -> u64 {
    let unaligned = (RECORD_HEADER_BYTES + payload_bytes) as u64;
    (unaligned + RECORD_ALIGN_BYTES as u64 - 1) & !(RECORD_ALIGN_BYTES as u64 - 1)
}

/// Packs a record header into the u64 stored in the ring.
#[inline]
pub fn encode_record_header(payload_bytes: u32, kind: u32) -> u64 {
    u64::from(payload_bytes) | (u64::from(kind) << 32)
}

/// Splits a stored record header into (payload length, kind).
#[inline]
pub fn decode_record_header(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_size_rounds_up_to_the_alignment() {
        assert_eq!(framed_bytes(0), 8);
        assert_eq!(framed_bytes(1), 16);
        assert_eq!(framed_bytes(8), 16);
        assert_eq!(framed_bytes(9), 24);
        assert_eq!(framed_bytes(64), 72);
    }

    #[test]
    fn record_header_round_trips() {
        let word = encode_record_header(12345, KIND_DATA);
        assert_eq!(decode_record_header(word), (12345, KIND_DATA));
        assert_ne!(encode_record_header(0, KIND_PADDING), 0);
    }

    #[test]
    fn writer_fields_sit_on_separate_padded_lines() {
        let lines = [
            TAIL_OFFSET,
            HEAD_OFFSET,
            PRODUCER_OWNER_OFFSET,
            CONSUMER_OWNER_OFFSET,
        ];
        for pair in lines.windows(2) {
            assert!(pair[1] - pair[0] >= CACHE_LINE_PAD_BYTES);
        }
    }
}
