//! One batch on disk: a 40-byte header and a payload. See the crate docs for
//! the layout; this module is the only code that knows it.

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, RECORD_LENGTH_PREFIX_BYTES,
};
use crate::error::Error;

/// The batch format version this build writes and reads.
pub const BATCH_VERSION: u8 = 1;

/// Where the checksum sits in the header; it covers every other byte of the batch.
const CRC_RANGE: std::ops::Range<usize> = 36..40;

/// What a batch's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PayloadKind {
    /// Records in this crate's own encoding (see [`Record`]), readable with
    /// [`BatchView::records`].
    Records = 0,
    /// Bytes the log does not interpret (the broker stores Kafka record
    /// batches this way); the caller told the log how many records they hold.
    Opaque = 1,
}

impl PayloadKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Records),
            1 => Some(Self::Opaque),
            _ => None,
        }
    }
}

/// One record to append: a key (possibly empty) and a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The fixed fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the batch's first record; its records hold
    /// `base_offset..base_offset + record_count`.
    pub base_offset: u64,
    /// Bytes of the whole batch, header included.
    pub batch_bytes: u32,
    pub kind: PayloadKind,
    pub record_count: u32,
    /// Milliseconds since the Unix epoch, as the appender gave them.
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

impl BatchHeader {
    /// One past the batch's last offset.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Parses and sanity-checks a header (not the checksum: that needs the
    /// whole batch). `None` when the bytes cannot be a header this build wrote.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; BATCH_HEADER_BYTES] = bytes.get(..BATCH_HEADER_BYTES)?.try_into().ok()?;
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        if bytes[12] != BATCH_VERSION || bytes[14] != 0 || bytes[15] != 0 {
            return None;
        }
        let header = Self {
            base_offset: u64_at(0),
            batch_bytes: u32_at(8),
            kind: PayloadKind::from_byte(bytes[13])?,
            record_count: u32_at(16),
            first_timestamp_ms: u64_at(20) as i64,
            max_timestamp_ms: u64_at(28) as i64,
        };
        let plausible = (BATCH_HEADER_BYTES..=BATCH_BYTES_MAX)
            .contains(&(header.batch_bytes as usize))
            && (1..=BATCH_RECORDS_MAX).contains(&header.record_count)
            && header.max_timestamp_ms >= header.first_timestamp_ms;
        plausible.then_some(header)
    }

    fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.batch_bytes.to_le_bytes());
        out[12] = BATCH_VERSION;
        out[13] = self.kind as u8;
        out[14..16].fill(0);
        out[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        out[20..28].copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        out[28..36].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
    }
}

/// The checksum of a whole batch: CRC-32C of every byte but the checksum's own four.
fn batch_crc(batch: &[u8]) -> u32 {
    let head = crc32c::crc32c(&batch[..CRC_RANGE.start]);
    crc32c::crc32c_append(head, &batch[CRC_RANGE.end..])
}

/// Whether `batch` (exactly one batch's bytes) carries a matching checksum.
pub fn checksum_holds(batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_BYTES
        && u32::from_le_bytes([batch[36], batch[37], batch[38], batch[39]]) == batch_crc(batch)
}

/// Bytes the records take in the [`PayloadKind::Records`] encoding.
pub fn records_payload_bytes(records: &[Record<'_>]) -> usize {
    records
        .iter()
        .map(|record| 2 * RECORD_LENGTH_PREFIX_BYTES + record.key.len() + record.value.len())
        .sum()
}

/// Checks a batch's size and count against the limits before anything is built.
pub fn check_limits(payload_bytes: usize, record_count: u32) -> Result<(), Error> {
    let batch_bytes = payload_bytes.saturating_add(BATCH_HEADER_BYTES);
    if batch_bytes > BATCH_BYTES_MAX {
        return Err(Error::BatchTooLarge {
            batch_bytes,
            limit_bytes: BATCH_BYTES_MAX,
        });
    }
    if record_count == 0 || record_count > BATCH_RECORDS_MAX {
        return Err(Error::InvalidArgument(format!(
            "a batch holds 1..={BATCH_RECORDS_MAX} records, not {record_count}; \
             split larger batches"
        )));
    }
    Ok(())
}

/// Appends the records' encoding to `out`: per record, key length u32, key,
/// value length u32, value.
pub fn encode_records(records: &[Record<'_>], out: &mut Vec<u8>) {
    for record in records {
        out.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
        out.extend_from_slice(record.key);
        out.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        out.extend_from_slice(record.value);
    }
}

/// Fills in the header of the batch in `batch` (whose payload is already in
/// place after [`BATCH_HEADER_BYTES`] bytes) and its checksum.
pub fn seal(batch: &mut [u8], header: &BatchHeader) {
    debug_assert_eq!(batch.len(), header.batch_bytes as usize);
    header.write(&mut batch[..BATCH_HEADER_BYTES]);
    let crc = batch_crc(batch);
    batch[CRC_RANGE].copy_from_slice(&crc.to_le_bytes());
}

/// One batch read back from the log, borrowing the bytes it was read into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    /// The payload: encoded records, or the opaque bytes as appended.
    pub payload: &'a [u8],
    /// The whole batch as it sits on disk, header included.
    pub bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The records of a [`PayloadKind::Records`] batch; an error for an
    /// opaque batch or an encoding that does not add up.
    pub fn records(&self) -> Result<Vec<Record<'a>>, Error> {
        if self.header.kind != PayloadKind::Records {
            return Err(Error::InvalidArgument(format!(
                "the batch at offset {} holds an opaque payload; read it as bytes",
                self.header.base_offset
            )));
        }
        let mut records = Vec::with_capacity(self.header.record_count as usize);
        let mut rest = self.payload;
        let take = |rest: &mut &'a [u8]| -> Option<&'a [u8]> {
            let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let field = rest.get(4..4 + length)?;
            *rest = &rest[4 + length..];
            Some(field)
        };
        let malformed = || {
            Error::InvalidArgument(format!(
                "the records of the batch at offset {} do not decode; \
                 its payload was not written by append_records",
                self.header.base_offset
            ))
        };
        for _ in 0..self.header.record_count {
            let key = take(&mut rest).ok_or_else(malformed)?;
            let value = take(&mut rest).ok_or_else(malformed)?;
            records.push(Record { key, value });
        }
        if !rest.is_empty() {
            return Err(malformed());
        }
        Ok(records)
    }
}

/// Iterates over the whole batches in bytes returned by a read, checking each
/// one's checksum again (the bytes may have travelled since).
pub struct Batches<'a> {
    rest: &'a [u8],
}

/// The batches in `bytes` (as returned by `Partition::read`).
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches { rest: bytes }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchView<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let bad = |message: &str| {
            Some(Err(Error::InvalidArgument(format!(
                "these bytes do not hold whole, valid log batches: {message}"
            ))))
        };
        let Some(header) = BatchHeader::parse(self.rest) else {
            self.rest = &[];
            return bad("a batch header does not parse");
        };
        let Some(bytes) = self.rest.get(..header.batch_bytes as usize) else {
            self.rest = &[];
            return bad("the last batch is cut short");
        };
        if !checksum_holds(bytes) {
            self.rest = &[];
            return bad("a batch's checksum does not match");
        }
        self.rest = &self.rest[bytes.len()..];
        Some(Ok(BatchView {
            header,
            payload: &bytes[BATCH_HEADER_BYTES..],
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(records: &[Record<'_>], base_offset: u64) -> Vec<u8> {
        let mut batch = vec![0u8; BATCH_HEADER_BYTES];
        encode_records(records, &mut batch);
        let header = BatchHeader {
            base_offset,
            batch_bytes: batch.len() as u32,
            kind: PayloadKind::Records,
            record_count: records.len() as u32,
            first_timestamp_ms: 5,
            max_timestamp_ms: 9,
        };
        seal(&mut batch, &header);
        batch
    }

    #[test]
    fn a_sealed_batch_round_trips() {
        let records = [
            Record {
                key: b"k",
                value: b"value",
            },
            Record {
                key: b"",
                value: b"",
            },
        ];
        let batch = build(&records, 77);
        assert_eq!(
            batch.len(),
            BATCH_HEADER_BYTES + records_payload_bytes(&records)
        );
        let views: Vec<_> = batches(&batch).collect::<Result<_, _>>().expect("valid");
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].header.base_offset, 77);
        assert_eq!(views[0].header.next_offset(), 79);
        assert_eq!(views[0].records().expect("records"), records.to_vec());
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let batch = build(
            &[Record {
                key: b"key",
                value: b"some value",
            }],
            3,
        );
        for at in 0..batch.len() {
            let mut damaged = batch.clone();
            damaged[at] ^= 0x40;
            let valid = BatchHeader::parse(&damaged)
                .filter(|header| header.batch_bytes as usize == damaged.len())
                .is_some()
                && checksum_holds(&damaged);
            assert!(!valid, "a flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn limits_are_refused() {
        assert!(matches!(
            check_limits(BATCH_BYTES_MAX, 1),
            Err(Error::BatchTooLarge { .. })
        ));
        assert!(check_limits(10, 0).is_err());
        assert!(check_limits(10, BATCH_RECORDS_MAX + 1).is_err());
        assert!(check_limits(10, BATCH_RECORDS_MAX).is_ok());
    }
}
