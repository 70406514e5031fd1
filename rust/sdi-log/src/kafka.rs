//! Kafka record batches (magic 2), as far as compaction needs them: take an
//! uncompressed batch apart into records and build one back from the records
//! that survive. The broker stores such batches as opaque payloads; nothing
//! else in the crate looks inside them.
//!
//! ```text
//! 0..8    baseOffset i64          8..12  batchLength i32 (bytes after this field)
//! 12..16  partitionLeaderEpoch    16     magic i8 = 2
//! 17..21  crc u32: CRC-32C of bytes 21..end
//! 21..23  attributes i16 (bits 0-2 compression, 4 transactional, 5 control)
//! 23..27  lastOffsetDelta i32     27..35 baseTimestamp i64   35..43 maxTimestamp i64
//! 43..51  producerId i64          51..53 producerEpoch i16   53..57 baseSequence i32
//! 57..61  recordCount i32, then the records:
//!   length varint, attributes i8, timestampDelta varlong, offsetDelta varint,
//!   keyLength varint (-1: null), key, valueLength varint (-1: null), value,
//!   headerCount varint, headers
//! ```
//!
//! Integers in the header are big-endian; varints are zigzag-encoded.

/// Bytes of a Kafka v2 batch header, up to and including the record count.
pub const KAFKA_BATCH_HEADER_BYTES: usize = 61;

/// One record of a Kafka batch, borrowing the batch's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KafkaRecord<'a> {
    /// Absolute offset: the batch's base offset plus the record's offset delta.
    pub offset: u64,
    /// Absolute timestamp: the batch's base timestamp plus the record's delta.
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone: it deletes the key under compaction.
    pub value: Option<&'a [u8]>,
    /// The header count and the headers, as encoded (copied through untouched).
    pub headers: &'a [u8],
}

/// An uncompressed, non-control Kafka batch taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaBatch<'a> {
    pub base_offset: u64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<KafkaRecord<'a>>,
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

fn write_varint(value: i64, out: &mut Vec<u8>) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(word)
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Takes `bytes` (exactly one Kafka batch) apart; `None` when it is not one
/// whole, valid, uncompressed, non-control magic-2 batch, or its CRC fails.
/// Compaction keeps such batches as they are.
pub fn parse_kafka_batch(bytes: &[u8]) -> Option<KafkaBatch<'_>> {
    if bytes.len() < KAFKA_BATCH_HEADER_BYTES || bytes[16] != 2 {
        return None;
    }
    let length = usize::try_from(be_i32(bytes, 8)).ok()?;
    if length + 12 != bytes.len() {
        return None;
    }
    let crc = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
    if crc32c::crc32c(&bytes[21..]) != crc {
        return None;
    }
    let attributes = be_i16(bytes, 21);
    if attributes & 0x07 != 0 || attributes & 0x20 != 0 {
        return None;
    }
    let base_offset = u64::try_from(be_i64(bytes, 0)).ok()?;
    let base_timestamp = be_i64(bytes, 27);
    let count = usize::try_from(be_i32(bytes, 57)).ok()?;
    let mut records = Vec::with_capacity(count.min(bytes.len()));
    let mut at = KAFKA_BATCH_HEADER_BYTES;
    for _ in 0..count {
        let length = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
        let end = at.checked_add(length)?;
        let record = bytes.get(at..end)?;
        let mut inner = 1; // the record's attributes byte
        let timestamp_delta = read_varint(record, &mut inner)?;
        let offset_delta = u64::try_from(read_varint(record, &mut inner)?).ok()?;
        let field = |inner: &mut usize| -> Option<Option<&[u8]>> {
            let length = read_varint(record, inner)?;
            if length < 0 {
                return Some(None);
            }
            let start = *inner;
            *inner = start.checked_add(usize::try_from(length).ok()?)?;
            Some(Some(record.get(start..*inner)?))
        };
        let key = field(&mut inner)?;
        let value = field(&mut inner)?;
        let headers = record.get(inner..)?;
        let offset = base_offset.checked_add(offset_delta)?;
        if records
            .last()
            .is_some_and(|last: &KafkaRecord<'_>| last.offset >= offset)
        {
            return None; // offsets within a batch only grow
        }
        records.push(KafkaRecord {
            offset,
            timestamp_ms: base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        });
        at = end;
    }
    if at != bytes.len() {
        return None;
    }
    Some(KafkaBatch {
        base_offset,
        partition_leader_epoch: be_i32(bytes, 12),
        attributes,
        producer_id: be_i64(bytes, 43),
        producer_epoch: be_i16(bytes, 51),
        base_sequence: be_i32(bytes, 53),
        records,
    })
}

/// Builds a Kafka batch of `records` (non-empty, offsets increasing) with the
/// producer fields and attributes of `template`: its base offset is the first
/// record's offset, its base timestamp the first record's timestamp, and
/// every record keeps its own offset and timestamp (as deltas from those).
/// The base sequence moves forward by as many offsets as the first record
/// moved from the template's base, as Kafka's sequences follow offsets.
pub fn encode_kafka_batch(template: &KafkaBatch<'_>, records: &[KafkaRecord<'_>]) -> Vec<u8> {
    let first = records.first().expect("a batch holds at least one record");
    let last = records.last().expect("a batch holds at least one record");
    let base_offset = first.offset;
    let base_timestamp = first.timestamp_ms;
    let max_timestamp = records
        .iter()
        .map(|record| record.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp);
    let base_sequence = if template.base_sequence >= 0 {
        let moved = (base_offset - template.base_offset) as i64;
        ((i64::from(template.base_sequence) + moved) % (i64::from(i32::MAX) + 1)) as i32
    } else {
        template.base_sequence
    };
    let mut out = Vec::with_capacity(KAFKA_BATCH_HEADER_BYTES + records.len() * 32);
    out.extend_from_slice(&(base_offset as i64).to_be_bytes());
    out.extend_from_slice(&[0; 4]); // batch length, filled in below
    out.extend_from_slice(&template.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&template.attributes.to_be_bytes());
    out.extend_from_slice(&((last.offset - base_offset) as i32).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&template.producer_id.to_be_bytes());
    out.extend_from_slice(&template.producer_epoch.to_be_bytes());
    out.extend_from_slice(&base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    let mut body = Vec::new();
    for record in records {
        body.clear();
        body.push(0); // record attributes: unused
        write_varint(record.timestamp_ms.wrapping_sub(base_timestamp), &mut body);
        write_varint((record.offset - base_offset) as i64, &mut body);
        for field in [record.key, record.value] {
            match field {
                Some(bytes) => {
                    write_varint(bytes.len() as i64, &mut body);
                    body.extend_from_slice(bytes);
                }
                None => write_varint(-1, &mut body),
            }
        }
        body.extend_from_slice(record.headers);
        write_varint(body.len() as i64, &mut out);
        out.extend_from_slice(&body);
    }
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A record for [`build_kafka_batch`]: offset, timestamp, key, value.
pub type PlainRecord<'a> = (u64, i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// A Kafka batch of `records` (offset, timestamp, key, value) with no
/// producer and no headers: for tests and benchmarks that need the bytes the
/// broker would store.
pub fn build_kafka_batch(records: &[PlainRecord<'_>]) -> Vec<u8> {
    let template = KafkaBatch {
        base_offset: records.first().map_or(0, |record| record.0),
        partition_leader_epoch: 0,
        attributes: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: Vec::new(),
    };
    const NO_HEADERS: &[u8] = &[0];
    let records: Vec<KafkaRecord<'_>> = records
        .iter()
        .map(|&(offset, timestamp_ms, key, value)| KafkaRecord {
            offset,
            timestamp_ms,
            key,
            value,
            headers: NO_HEADERS,
        })
        .collect();
    encode_kafka_batch(&template, &records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_varint(value, &mut out);
            let mut at = 0;
            assert_eq!(read_varint(&out, &mut at), Some(value));
            assert_eq!(at, out.len());
        }
    }

    #[test]
    fn a_batch_round_trips_with_gaps() {
        let bytes = build_kafka_batch(&[
            (10, 1000, Some(b"a"), Some(b"1")),
            (13, 990, None, Some(b"2")),
            (20, 1500, Some(b"b"), None),
        ]);
        let batch = parse_kafka_batch(&bytes).expect("valid");
        assert_eq!(batch.base_offset, 10);
        let seen: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp_ms, r.key, r.value))
            .collect();
        assert_eq!(
            seen,
            [
                (10, 1000, Some(&b"a"[..]), Some(&b"1"[..])),
                (13, 990, None, Some(&b"2"[..])),
                (20, 1500, Some(&b"b"[..]), None),
            ]
        );
        assert_eq!(be_i32(&bytes, 23), 10, "lastOffsetDelta spans the gaps");
        assert_eq!(be_i64(&bytes, 35), 1500, "maxTimestamp");
        // Re-encoding a subset keeps offsets and timestamps.
        let again = encode_kafka_batch(&batch, &batch.records[1..]);
        let parsed = parse_kafka_batch(&again).expect("valid");
        assert_eq!(parsed.base_offset, 13);
        assert_eq!(parsed.records[1].offset, 20);
        assert_eq!(parsed.records[0].timestamp_ms, 990);
    }

    #[test]
    fn damaged_or_compressed_batches_are_refused() {
        let bytes = build_kafka_batch(&[(0, 1, Some(b"k"), Some(b"v"))]);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_kafka_batch(&flipped).is_none());
        let mut compressed = bytes.clone();
        compressed[22] |= 1;
        let crc = crc32c::crc32c(&compressed[21..]);
        compressed[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(parse_kafka_batch(&compressed).is_none());
        assert!(parse_kafka_batch(&bytes[..40]).is_none());
    }
}
