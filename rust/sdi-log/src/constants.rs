//! Every limit of the log core, in one place. Units are last in each name.

/// Bytes of a batch header on disk (see the crate docs for its layout).
pub const BATCH_HEADER_BYTES: usize = 40;
/// Bytes of the length prefix in front of a record's key and of its value.
pub const RECORD_LENGTH_PREFIX_BYTES: usize = 4;
/// Largest batch, header included. A batch is written, checked and read whole.
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Most records one batch may carry.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;
/// Largest segment a configuration may ask for. Index entries store file
/// positions as `u32`, so a segment must stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Smallest segment a configuration may ask for (small segments are for tests).
pub const SEGMENT_BYTES_MIN: u64 = 256;
/// Segment size when the configuration does not say.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Bytes of log between two offset index entries when the configuration does not say.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Largest index interval a configuration may ask for.
pub const INDEX_INTERVAL_BYTES_MAX: u32 = 1 << 26;
/// Most offsets one segment may span: index entries store offsets relative
/// to the segment's base as `u32`.
pub const SEGMENT_OFFSETS_MAX: u64 = u32::MAX as u64;
/// Largest offset the log hands out (Kafka's offsets are signed 64-bit).
pub const OFFSET_MAX: u64 = i64::MAX as u64;
/// Longest fsync interval a configuration may ask for: one hour.
pub const FSYNC_INTERVAL_MS_MAX: u64 = 3_600_000;
/// Bytes of one offset index entry: relative offset u32, file position u32.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry: timestamp i64, relative offset u32.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
