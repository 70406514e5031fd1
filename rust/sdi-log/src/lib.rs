//! The message queue's storage core (book chapter 4): a partition is an
//! append-only log of record batches, split into segments, with sparse
//! indexes by offset and by time. Pure Rust; the broker and the Python
//! bindings build on it.
//!
//! # Files on disk
//!
//! A partition is one directory holding `partition.lock` (an exclusive
//! `flock` is held on it while a [`Partition`] is open, so a second writer
//! fails with [`Error::Locked`]) and, per segment, three files named by the
//! segment's base offset in 20 decimal digits:
//!
//! - `<base>.log`, the data file: batches back to back, nothing else. A new
//!   segment starts when the next batch would take the active one past
//!   `segment_bytes_max` (or past 2^32 offsets).
//! - `<base>.index`, the sparse offset index: 8-byte entries, relative offset
//!   `u32` (from the base) then file position `u32`, one for the first batch
//!   written after every `index_interval_bytes` of log. Lookups start from the
//!   last entry at or before the wanted offset and walk batch headers.
//! - `<base>.timeindex`, the time index: 12-byte entries, timestamp `i64`
//!   (milliseconds) then relative offset `u32`: "the largest timestamp among
//!   the batches up to and including this one". An entry is written with each
//!   offset index entry when the largest timestamp grew, and once more when a
//!   segment is closed, so a closed segment's largest timestamp is its last entry.
//!
//! All integers are little-endian.
//!
//! # A batch
//!
//! ```text
//! header, 40 bytes:
//!   0..8    base_offset u64        offset of the first record
//!   8..12   batch_bytes u32        the whole batch, header included
//!   12      version u8 = 1
//!   13      kind u8                0 = records (below), 1 = opaque payload
//!   14..16  zeros
//!   16..20  record_count u32       1..=BATCH_RECORDS_MAX; the batch holds
//!                                  offsets base_offset..base_offset+record_count
//!   20..28  first_timestamp_ms i64
//!   28..36  max_timestamp_ms i64   >= first_timestamp_ms
//!   36..40  crc32c u32             CRC-32C of bytes 0..36 then 40..batch_bytes
//! payload, batch_bytes - 40 bytes:
//!   kind 0: per record, key_bytes u32, key, value_bytes u32, value
//!   kind 1: opaque bytes, as given to `append_payload`
//! ```
//!
//! The log assigns offsets: [`Partition::append_records`] and
//! [`Partition::append_payload`] return the base offset they gave the batch.
//! The broker stores Kafka record batches as opaque payloads.
//!
//! # Recovery
//!
//! On open, the active (last) segment is read whole: every batch must parse,
//! carry a matching checksum, start at or after the offset the previous one
//! ended at (compaction and replicas of compacted logs leave gaps), and lie
//! within the file. The first batch that fails ends the valid log.
//! If no valid batch starts anywhere after it, it is a torn tail (a write the
//! process or machine died in) and is cut off; it was never acknowledged
//! under `EveryBatch`. If a valid batch does follow, the damage is
//! corruption and opening fails with [`Error::Corrupt`]; nothing is cut, so
//! that acknowledged data is never dropped silently. The active segment's
//! indexes are always rebuilt from that scan. A closed segment's indexes are
//! checked (sizes, order, each offset entry pointing at the header of the
//! batch it names) and rebuilt from the data file when missing or damaged;
//! damage in a closed segment's data file is [`Error::Corrupt`].
//!
//! # What an acknowledged append means
//!
//! - [`FsyncPolicy::EveryBatch`]: `append` returns after `fdatasync` of the
//!   data file; the batch survives a process crash and a power cut.
//! - [`FsyncPolicy::Interval`]: the batch is in the page cache, so it survives
//!   a process crash. The data file is synced by an `append` that finds the
//!   interval elapsed since the last sync (that append included), at every
//!   segment roll, and at [`Partition::flush`]. A power cut loses at most what
//!   was appended since the last sync, which is more than one interval if the
//!   partition went quiet: call `flush` from a timer to bound it.
//! - [`FsyncPolicy::Never`]: only `flush` syncs. A process crash loses
//!   nothing; a power cut may lose anything not flushed, and may leave a
//!   closed segment shorter than the next one's base, which opening then
//!   refuses as corruption.
//!
//! Under `EveryBatch` and `Interval` a segment is synced whole (data and
//! indexes) when it is closed, before the next segment's files are created
//! and the directory synced. Retention deletes a segment's indexes before its
//! data file, so a crash between the steps leaves a data file whose indexes
//! are rebuilt on open. Open does not re-read closed segments' data files
//! (only their indexes), so damage there shows when it is read, as
//! [`Error::Corrupt`].
//!
//! # Retention
//!
//! [`Partition::apply_retention`] deletes whole closed segments from the
//! front: those whose newest batch is older than `retention_ms`, then the
//! oldest while the partition is larger than `retention_bytes`. The active
//! segment is never deleted, so [`Partition::log_start_offset`] is always a
//! segment's base offset.
//!
//! # Compaction
//!
//! [`Partition::compact`] rewrites the closed segments that lie wholly below
//! a given offset (the high watermark), never the active one. It looks into
//! opaque payloads that are Kafka record batches (magic 2, uncompressed, not
//! control; see [`kafka`]) and keeps, per key, only the record with the
//! highest offset among those segments; records without a key all stay; a
//! tombstone (null value) stays until its timestamp is older than the
//! retention given, then goes. Any other batch is kept whole.
//!
//! A batch losing some records is re-encoded as a Kafka batch whose base
//! offset is its first surviving record's and whose `lastOffsetDelta`
//! reaches its last one (records keep their offsets and timestamps as
//! deltas); its log header spans the same offsets (`record_count` is the
//! span, not the number of records left). A batch losing all records goes.
//! So compacted segments have gaps: between batches, inside a batch, and at
//! the end of a segment (a closed segment may end before the next begins).
//! Scans and reads accept a batch that starts past where the previous one
//! ended; a read at an offset that was compacted away returns the next batch
//! after it. Consecutive segments are merged while their cleaned size fits
//! `segment_bytes_max`; each cleaned segment keeps the base offset of the
//! first segment it replaces (so the log start offset does not move, even if
//! it ends up empty).
//!
//! Crash safety: the cleaned segments are written beside the old ones as
//! `<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned` and synced,
//! with the directory. Then the marker `compaction.swap` (written as
//! `compaction.swap.tmp`, synced, renamed) commits the swap: it lists the
//! bases installed and the old bases removed. The swap renames each cleaned
//! file over its final name (indexes first) and deletes the replaced
//! segments (indexes first), syncs the directory and removes the marker. On
//! open, a marker means the swap is finished (every step can be repeated);
//! no marker means the compaction never committed, and the `.cleaned` files
//! and a `compaction.swap.tmp` are deleted, leaving the old segments. So a
//! crash leaves the old segments or the new ones, never a mix.
//!
//! A replica copying a compacted leader appends batches past a gap with
//! [`Partition::append_payload_at`], keeping the leader's offsets.

mod batch;
mod compact;
pub mod constants;
mod error;
pub mod kafka;
mod partition;
mod segment;

pub use batch::{batches, BatchHeader, BatchView, Batches, PayloadKind, Record};
pub use compact::{CompactionOutcome, CLEANED_SUFFIX, SWAP_MARKER_NAME};
pub use error::Error;
pub use partition::{FsyncPolicy, Partition, PartitionConfig, RetentionOutcome, LOCK_FILE_NAME};
