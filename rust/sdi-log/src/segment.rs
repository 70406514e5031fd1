//! One segment: its data file, its two sparse indexes, and the scan that
//! checks a data file and rebuilds the indexes from it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{checksum_holds, BatchHeader};
use crate::constants::{
    BATCH_HEADER_BYTES, OFFSET_INDEX_ENTRY_BYTES, SEGMENT_OFFSETS_MAX, TIME_INDEX_ENTRY_BYTES,
};
use crate::error::{corrupt, io_error, Error};

/// Offset index entry: the batch starting at `relative_offset` (from the
/// segment's base) begins at byte `position` of the data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Time index entry: the largest timestamp among the segment's batches up to
/// and including the one at `relative_offset` is `timestamp_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// The file names of the segment with `base_offset` in `dir`.
pub fn segment_paths(dir: &Path, base_offset: u64) -> [PathBuf; 3] {
    [
        dir.join(format!("{base_offset:020}.log")),
        dir.join(format!("{base_offset:020}.index")),
        dir.join(format!("{base_offset:020}.timeindex")),
    ]
}

/// What the indexes hold and what decides their next entries. Appends and
/// rebuilds go through the same [`IndexState::observe`], so a rebuilt index
/// equals the one written while appending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexState {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Bytes appended since the last offset index entry.
    pub bytes_since_entry: u64,
    pub max_timestamp_ms: Option<i64>,
    /// Relative offset of the last batch, for the closing time entry.
    pub last_batch_relative: Option<u32>,
}

impl IndexState {
    /// Takes note of a batch at `position`; returns the entries to append to
    /// the index files. An offset entry is due once `interval_bytes` of log
    /// went by since the last one; a time entry goes with it when the
    /// largest timestamp grew.
    pub fn observe(
        &mut self,
        position: u32,
        relative_offset: u32,
        batch_bytes: u32,
        max_timestamp_ms: i64,
        interval_bytes: u32,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let max_so_far = self
            .max_timestamp_ms
            .map_or(max_timestamp_ms, |m| m.max(max_timestamp_ms));
        self.max_timestamp_ms = Some(max_so_far);
        self.last_batch_relative = Some(relative_offset);
        let mut added = (None, None);
        if self.bytes_since_entry >= u64::from(interval_bytes) {
            let entry = OffsetEntry {
                relative_offset,
                position,
            };
            self.offsets.push(entry);
            self.bytes_since_entry = 0;
            added.0 = Some(entry);
            added.1 = self.time_entry_if_grown();
        }
        self.bytes_since_entry += u64::from(batch_bytes);
        added
    }

    /// The time entry that records the segment's largest timestamp, if the
    /// last entry does not already: written when a segment stops being active,
    /// so that a closed segment's largest timestamp is in its time index.
    pub fn close(&mut self) -> Option<TimeEntry> {
        self.time_entry_if_grown()
    }

    fn time_entry_if_grown(&mut self) -> Option<TimeEntry> {
        let (Some(max), Some(relative_offset)) = (self.max_timestamp_ms, self.last_batch_relative)
        else {
            return None;
        };
        if self
            .times
            .last()
            .is_some_and(|last| last.timestamp_ms >= max)
        {
            return None;
        }
        let entry = TimeEntry {
            timestamp_ms: max,
            relative_offset,
        };
        self.times.push(entry);
        Some(entry)
    }

    /// Position of the last indexed batch at or before `relative_offset`
    /// (the start of the file when none is).
    pub fn position_at_or_before(&self, relative_offset: u32) -> u64 {
        let after = self
            .offsets
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after
            .checked_sub(1)
            .map_or(0, |at| u64::from(self.offsets[at].position))
    }

    pub fn offset_index_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.offsets.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in &self.offsets {
            bytes.extend_from_slice(&offset_entry_bytes(entry));
        }
        bytes
    }

    pub fn time_index_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in &self.times {
            bytes.extend_from_slice(&time_entry_bytes(entry));
        }
        bytes
    }
}

pub fn offset_entry_bytes(entry: &OffsetEntry) -> [u8; OFFSET_INDEX_ENTRY_BYTES] {
    let mut bytes = [0u8; OFFSET_INDEX_ENTRY_BYTES];
    bytes[0..4].copy_from_slice(&entry.relative_offset.to_le_bytes());
    bytes[4..8].copy_from_slice(&entry.position.to_le_bytes());
    bytes
}

pub fn time_entry_bytes(entry: &TimeEntry) -> [u8; TIME_INDEX_ENTRY_BYTES] {
    let mut bytes = [0u8; TIME_INDEX_ENTRY_BYTES];
    bytes[0..8].copy_from_slice(&entry.timestamp_ms.to_le_bytes());
    bytes[8..12].copy_from_slice(&entry.relative_offset.to_le_bytes());
    bytes
}

/// The header of the batch at `position`, if one is there and parses.
pub fn read_header_at(
    file: &File,
    path: &Path,
    position: u64,
) -> Result<Option<BatchHeader>, Error> {
    let mut bytes = [0u8; BATCH_HEADER_BYTES];
    match file.read_exact_at(&mut bytes, position) {
        Ok(()) => Ok(BatchHeader::parse(&bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// What a scan of a data file found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// End of the last valid batch: everything before it is whole and checked.
    pub valid_bytes: u64,
    pub next_offset: u64,
    pub index: IndexState,
    /// Where the first damaged or torn batch begins, if one does.
    pub damaged_at: Option<u64>,
}

/// Reads every batch of a data file, checks its header, checksum and offset
/// (each batch must begin at or after where the previous ended: compaction
/// leaves gaps), and rebuilds the index
/// state. Stops at the first batch that fails; if any valid batch starts
/// anywhere after that point, the damage is corruption and this is an error.
pub fn scan(
    file: &File,
    path: &Path,
    base_offset: u64,
    interval_bytes: u32,
) -> Result<ScanOutcome, Error> {
    let length = file.metadata().map_err(io_error(path))?.len();
    let mut outcome = ScanOutcome {
        valid_bytes: 0,
        next_offset: base_offset,
        index: IndexState::default(),
        damaged_at: None,
    };
    let mut batch = Vec::new();
    while outcome.valid_bytes < length {
        let position = outcome.valid_bytes;
        match read_checked_batch(
            file,
            path,
            base_offset,
            position,
            length,
            outcome.next_offset,
            &mut batch,
        )? {
            Some(header) => {
                let relative = (header.base_offset - base_offset) as u32;
                outcome.index.observe(
                    position as u32,
                    relative,
                    header.batch_bytes,
                    header.max_timestamp_ms,
                    interval_bytes,
                );
                outcome.valid_bytes += u64::from(header.batch_bytes);
                outcome.next_offset = header.next_offset();
            }
            None => {
                outcome.damaged_at = Some(position);
                break;
            }
        }
    }
    if let Some(damaged_at) = outcome.damaged_at {
        if let Some((at, header)) =
            find_valid_batch_after(file, path, damaged_at, length, outcome.next_offset)?
        {
            return Err(corrupt(
                path,
                format!(
                    "the batch at byte {damaged_at} is damaged but a valid batch \
                     (offset {}) follows it at byte {at}; this is corruption, not a torn write",
                    header.base_offset
                ),
            ));
        }
    }
    Ok(outcome)
}

/// The batch at `position` if it is whole, its checksum holds and it starts
/// at or after `expected_offset` (within the segment's offset span); its
/// bytes are left in `batch`.
fn read_checked_batch(
    file: &File,
    path: &Path,
    segment_base: u64,
    position: u64,
    length: u64,
    expected_offset: u64,
    batch: &mut Vec<u8>,
) -> Result<Option<BatchHeader>, Error> {
    let Some(header) = read_header_at(file, path, position)? else {
        return Ok(None);
    };
    // Offsets only grow; a compacted segment (or a replica that copied one)
    // has gaps between batches, so a batch may start past `expected_offset`.
    if header.base_offset < expected_offset
        || header.next_offset() - segment_base > SEGMENT_OFFSETS_MAX
        || position + u64::from(header.batch_bytes) > length
    {
        return Ok(None);
    }
    batch.resize(header.batch_bytes as usize, 0);
    file.read_exact_at(batch, position)
        .map_err(io_error(path))?;
    Ok(checksum_holds(batch).then_some(header))
}

/// Looks at every byte position after `damaged_at` for a valid batch with an
/// offset at or past `expected_offset`. Only runs when a scan found damage.
fn find_valid_batch_after(
    file: &File,
    path: &Path,
    damaged_at: u64,
    length: u64,
    expected_offset: u64,
) -> Result<Option<(u64, BatchHeader)>, Error> {
    let start = damaged_at + 1;
    if start >= length {
        return Ok(None);
    }
    let mut rest = vec![0u8; (length - start) as usize];
    file.read_exact_at(&mut rest, start)
        .map_err(io_error(path))?;
    for at in 0..rest.len() {
        let Some(header) = BatchHeader::parse(&rest[at..]) else {
            continue;
        };
        let end = at + header.batch_bytes as usize;
        if header.base_offset >= expected_offset
            && end <= rest.len()
            && checksum_holds(&rest[at..end])
        {
            return Ok(Some((start + at as u64, header)));
        }
    }
    Ok(None)
}

/// Loads an index file written by an earlier run and checks it against the
/// data file; `None` when it is missing or does not hold up (it is then
/// rebuilt from the data file).
pub fn load_index(
    log: &File,
    log_path: &Path,
    paths: &[PathBuf; 3],
    log_bytes: u64,
    offsets_spanned: u64,
) -> Result<Option<IndexState>, Error> {
    let (Ok(offset_bytes), Ok(time_bytes)) = (std::fs::read(&paths[1]), std::fs::read(&paths[2]))
    else {
        return Ok(None);
    };
    if offset_bytes.len() % OFFSET_INDEX_ENTRY_BYTES != 0
        || time_bytes.len() % TIME_INDEX_ENTRY_BYTES != 0
    {
        return Ok(None);
    }
    let mut index = IndexState::default();
    for chunk in offset_bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
        let entry = OffsetEntry {
            relative_offset: u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            position: u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        };
        let in_order = index.offsets.last().is_none_or(|last| {
            last.relative_offset < entry.relative_offset && last.position < entry.position
        });
        if !in_order
            || u64::from(entry.position) >= log_bytes
            || u64::from(entry.relative_offset) >= offsets_spanned
        {
            return Ok(None);
        }
        // Every entry must point at the header of the batch it names.
        let header = read_header_at(log, log_path, u64::from(entry.position))?;
        let base_offset = paths_base_offset(paths);
        if header.is_none_or(|header| {
            header.base_offset != base_offset + u64::from(entry.relative_offset)
        }) {
            return Ok(None);
        }
        index.offsets.push(entry);
    }
    for chunk in time_bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&chunk[0..8]);
        let entry = TimeEntry {
            timestamp_ms: i64::from_le_bytes(timestamp),
            relative_offset: u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
        };
        let in_order = index.times.last().is_none_or(|last| {
            last.timestamp_ms < entry.timestamp_ms && last.relative_offset <= entry.relative_offset
        });
        if !in_order || u64::from(entry.relative_offset) >= offsets_spanned {
            return Ok(None);
        }
        index.times.push(entry);
    }
    // A closed segment is never empty, and its time index ends with its largest timestamp.
    let Some(last_time) = index.times.last() else {
        return Ok(None);
    };
    index.max_timestamp_ms = Some(last_time.timestamp_ms);
    index.last_batch_relative = Some(last_time.relative_offset);
    Ok(Some(index))
}

fn paths_base_offset(paths: &[PathBuf; 3]) -> u64 {
    paths[0]
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Opens (creating if absent) a file of a segment for reading and writing.
pub fn open_file(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))
}

/// Replaces an index file's contents with `bytes`.
pub fn rewrite_file(file: &File, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    file.set_len(0).map_err(io_error(path))?;
    file.write_all_at(bytes, 0).map_err(io_error(path))
}

/// One open segment.
pub struct Segment {
    pub base_offset: u64,
    /// One past the last offset in the segment (`base_offset` while empty).
    pub next_offset: u64,
    /// Bytes of whole, valid batches in the data file.
    pub size_bytes: u64,
    pub log: File,
    pub offset_index_file: File,
    pub time_index_file: File,
    /// Data file, offset index, time index.
    pub paths: [PathBuf; 3],
    pub index: IndexState,
}

impl Segment {
    /// Syncs the data file and both indexes to disk.
    pub fn sync(&self) -> Result<(), Error> {
        self.log.sync_data().map_err(io_error(&self.paths[0]))?;
        self.offset_index_file
            .sync_data()
            .map_err(io_error(&self.paths[1]))?;
        self.time_index_file
            .sync_data()
            .map_err(io_error(&self.paths[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_follow_the_interval_and_the_growing_timestamp() {
        let mut index = IndexState::default();
        // Batches of 50 bytes with an interval of 100: an entry for every batch that
        // follows 100 bytes of unindexed log, so batches 2, 4 and 6.
        let timestamps = [10, 30, 20, 40, 35, 35, 50];
        for (batch, &timestamp) in timestamps.iter().enumerate() {
            index.observe(batch as u32 * 50, batch as u32 * 2, 50, timestamp, 100);
        }
        let offsets: Vec<(u32, u32)> = index
            .offsets
            .iter()
            .map(|entry| (entry.relative_offset, entry.position))
            .collect();
        assert_eq!(offsets, [(4, 100), (8, 200), (12, 300)]);
        let times: Vec<(i64, u32)> = index
            .times
            .iter()
            .map(|entry| (entry.timestamp_ms, entry.relative_offset))
            .collect();
        assert_eq!(times, [(30, 4), (40, 8), (50, 12)]);
        assert_eq!(
            index.close(),
            None,
            "the newest timestamp is already the last entry"
        );
        assert_eq!(index.position_at_or_before(3), 0);
        assert_eq!(index.position_at_or_before(4), 100);
        assert_eq!(index.position_at_or_before(9), 200);
        assert_eq!(index.position_at_or_before(u32::MAX), 300);
    }

    #[test]
    fn closing_records_the_largest_timestamp() {
        let mut index = IndexState::default();
        index.observe(0, 0, 50, 7, 1000);
        index.observe(50, 1, 50, 9, 1000);
        assert!(index.times.is_empty());
        assert_eq!(
            index.close(),
            Some(TimeEntry {
                timestamp_ms: 9,
                relative_offset: 1
            })
        );
        assert_eq!(index.close(), None);
    }
}
