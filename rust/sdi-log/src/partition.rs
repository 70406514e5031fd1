//! A partition: a directory of segments, appended to at the end, read
//! anywhere, trimmed at the front by retention.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::batch::{
    check_limits, checksum_holds, encode_records, records_payload_bytes, seal, BatchHeader,
    PayloadKind, Record,
};
use crate::constants::{
    BATCH_HEADER_BYTES, FSYNC_INTERVAL_MS_MAX, INDEX_INTERVAL_BYTES_DEFAULT,
    INDEX_INTERVAL_BYTES_MAX, OFFSET_INDEX_ENTRY_BYTES, OFFSET_MAX, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_OFFSETS_MAX, TIME_INDEX_ENTRY_BYTES,
};
use crate::error::{corrupt, io_error, Error};
use crate::segment::{
    load_index, offset_entry_bytes, open_file, read_header_at, rewrite_file, scan, segment_paths,
    time_entry_bytes, Segment,
};

/// The name of the lock file inside a partition directory.
pub const LOCK_FILE_NAME: &str = "partition.lock";

/// When appended batches are forced to disk. See the crate docs for what an
/// acknowledged append survives under each policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` of the data file before `append` returns.
    EveryBatch,
    /// `fdatasync` during an `append` when at least this long went by since the
    /// last one (and at every [`Partition::flush`]).
    Interval { interval_ms: u64 },
    /// Only [`Partition::flush`] syncs; otherwise the kernel writes back when it likes.
    Never,
}

/// How a partition lays out and keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    /// A new segment starts when the next batch would take the active one past this size.
    pub segment_bytes_max: u64,
    /// Bytes of log between two entries of the sparse offset index.
    pub index_interval_bytes: u32,
    pub fsync: FsyncPolicy,
    /// Retention deletes closed segments whose newest batch is older than this.
    pub retention_ms: Option<u64>,
    /// Retention deletes the oldest closed segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            fsync: FsyncPolicy::EveryBatch,
            retention_ms: None,
            retention_bytes: None,
        }
    }
}

impl PartitionConfig {
    fn validate(&self) -> Result<(), Error> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes_max) {
            return Err(Error::Config(format!(
                "segment_bytes_max is {}; choose a value in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes_max
            )));
        }
        if self.index_interval_bytes > INDEX_INTERVAL_BYTES_MAX {
            return Err(Error::Config(format!(
                "index_interval_bytes is {}; choose at most {INDEX_INTERVAL_BYTES_MAX}",
                self.index_interval_bytes
            )));
        }
        if let FsyncPolicy::Interval { interval_ms } = self.fsync {
            if !(1..=FSYNC_INTERVAL_MS_MAX).contains(&interval_ms) {
                return Err(Error::Config(format!(
                    "the fsync interval is {interval_ms} ms; choose 1..={FSYNC_INTERVAL_MS_MAX} \
                     (or FsyncPolicy::EveryBatch / Never)"
                )));
            }
        }
        Ok(())
    }
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// An open partition, holding its directory's lock until dropped.
pub struct Partition {
    pub(crate) dir: PathBuf,
    pub(crate) config: PartitionConfig,
    /// Held for its `flock`; the kernel releases it when the file closes.
    _lock: File,
    /// Oldest first; the last one is the active segment, the only one appended to.
    pub(crate) segments: Vec<Segment>,
    last_sync: Instant,
    /// Set when a failed write could not be undone: no more appends.
    pub(crate) poisoned: Option<String>,
    buffer: Vec<u8>,
}

/// Takes the exclusive lock of `file` without waiting.
fn try_lock(file: &File, path: &Path) -> Result<bool, Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a file descriptor we own for the duration of the call.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(io_error(path)(error))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// The base offsets of the segments in `dir`, sorted.
fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()) {
            bases.push(stem.parse().map_err(|_| {
                corrupt(
                    dir,
                    format!("segment file name {stem}.log is not a valid offset"),
                )
            })?);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn create_segment(dir: &Path, base_offset: u64) -> Result<Segment, Error> {
    let paths = segment_paths(dir, base_offset);
    let open_new = |path: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_error(path))
    };
    // Indexes first: a data file never exists without its indexes being made.
    let offset_index_file = open_new(&paths[1])?;
    let time_index_file = open_new(&paths[2])?;
    let log = open_new(&paths[0])?;
    Ok(Segment {
        base_offset,
        next_offset: base_offset,
        size_bytes: 0,
        log,
        offset_index_file,
        time_index_file,
        paths,
        index: Default::default(),
    })
}

/// Opens a closed segment, whose offsets end where the next segment begins.
pub(crate) fn open_closed_segment(
    dir: &Path,
    base_offset: u64,
    next_offset: u64,
    interval_bytes: u32,
) -> Result<Segment, Error> {
    let paths = segment_paths(dir, base_offset);
    let log = open_file(&paths[0])?;
    let size_bytes = log.metadata().map_err(io_error(&paths[0]))?.len();
    let loaded = load_index(
        &log,
        &paths[0],
        &paths,
        size_bytes,
        next_offset - base_offset,
    )?;
    let offset_index_file = open_file(&paths[1])?;
    let time_index_file = open_file(&paths[2])?;
    let index = match loaded {
        Some(index) => index,
        None => {
            // Missing or damaged indexes: the data file is the truth; rebuild them from it.
            let outcome = scan(&log, &paths[0], base_offset, interval_bytes)?;
            if let Some(at) = outcome.damaged_at {
                return Err(corrupt(
                    &paths[0],
                    format!("the closed segment is damaged at byte {at}"),
                ));
            }
            // A compacted segment may end before the next begins (its last
            // records were cleaned away), never after.
            if outcome.next_offset > next_offset {
                return Err(corrupt(
                    &paths[0],
                    format!(
                        "the closed segment ends at offset {}, past where the next segment begins ({next_offset})",
                        outcome.next_offset
                    ),
                ));
            }
            let mut index = outcome.index;
            index.close();
            rewrite_file(&offset_index_file, &paths[1], &index.offset_index_bytes())?;
            rewrite_file(&time_index_file, &paths[2], &index.time_index_bytes())?;
            index
        }
    };
    Ok(Segment {
        base_offset,
        next_offset,
        size_bytes,
        log,
        offset_index_file,
        time_index_file,
        paths,
        index,
    })
}

/// Opens the active segment: scans it whole, cuts a torn tail, rebuilds its indexes.
fn open_active_segment(
    dir: &Path,
    base_offset: u64,
    interval_bytes: u32,
) -> Result<Segment, Error> {
    let paths = segment_paths(dir, base_offset);
    let log = open_file(&paths[0])?;
    let outcome = scan(&log, &paths[0], base_offset, interval_bytes)?;
    if outcome.damaged_at.is_some() {
        log.set_len(outcome.valid_bytes)
            .map_err(io_error(&paths[0]))?;
        log.sync_all().map_err(io_error(&paths[0]))?;
    }
    let offset_index_file = open_file(&paths[1])?;
    let time_index_file = open_file(&paths[2])?;
    rewrite_file(
        &offset_index_file,
        &paths[1],
        &outcome.index.offset_index_bytes(),
    )?;
    rewrite_file(
        &time_index_file,
        &paths[2],
        &outcome.index.time_index_bytes(),
    )?;
    Ok(Segment {
        base_offset,
        next_offset: outcome.next_offset,
        size_bytes: outcome.valid_bytes,
        log,
        offset_index_file,
        time_index_file,
        paths,
        index: outcome.index,
    })
}

/// A batch's newest timestamp may not be older than its first.
fn check_timestamps(first_timestamp_ms: i64, max_timestamp_ms: i64) -> Result<(), Error> {
    if max_timestamp_ms < first_timestamp_ms {
        return Err(Error::InvalidArgument(format!(
            "max_timestamp_ms {max_timestamp_ms} is before first_timestamp_ms {first_timestamp_ms}"
        )));
    }
    Ok(())
}

impl Partition {
    /// Opens the partition in `dir` (creating the directory and a first,
    /// empty segment if needed) and takes its exclusive lock; fails with
    /// [`Error::Locked`] while another handle holds it.
    ///
    /// Recovery: the active (last) segment is read whole and checked; a torn
    /// or damaged tail is cut off, while damage followed by a valid batch
    /// fails with [`Error::Corrupt`]. Closed segments' indexes are checked and
    /// rebuilt from the data file when missing or damaged.
    pub fn open(dir: &Path, config: PartitionConfig) -> Result<Self, Error> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = open_file(&lock_path)?;
        if !try_lock(&lock, &lock_path)? {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        // A compaction cut short by a crash is finished or undone first.
        crate::compact::recover(dir)?;
        let bases = list_segments(dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for pair in bases.windows(2) {
            segments.push(open_closed_segment(
                dir,
                pair[0],
                pair[1],
                config.index_interval_bytes,
            )?);
        }
        match bases.last() {
            Some(&base) => {
                segments.push(open_active_segment(dir, base, config.index_interval_bytes)?)
            }
            None => {
                segments.push(create_segment(dir, 0)?);
                sync_dir(dir)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            _lock: lock,
            segments,
            last_sync: Instant::now(),
            poisoned: None,
            buffer: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// The first offset still in the log (retention moves it forward).
    pub fn log_start_offset(&self) -> u64 {
        self.segments[0].base_offset
    }

    /// The offset the next appended record gets: one past the last written.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    /// The base offsets of the segments, oldest first; the last is the active one.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.segments
            .iter()
            .map(|segment| segment.base_offset)
            .collect()
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition always has an active segment")
    }

    /// Appends one batch of `records`, all stamped `timestamp_ms`; returns the
    /// offset of the first record (the others follow it).
    pub fn append_records(
        &mut self,
        records: &[Record<'_>],
        timestamp_ms: i64,
    ) -> Result<u64, Error> {
        let record_count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        self.append_batch(
            None,
            PayloadKind::Records,
            records_payload_bytes(records),
            record_count,
            (timestamp_ms, timestamp_ms),
            |out| encode_records(records, out),
        )
    }

    /// Appends `payload` as one batch of `record_count` records the log does
    /// not look into (a Kafka record batch, say); returns the offset assigned
    /// to its first record. The timestamps are those of its first record and
    /// its newest record.
    pub fn append_payload(
        &mut self,
        payload: &[u8],
        record_count: u32,
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    ) -> Result<u64, Error> {
        check_timestamps(first_timestamp_ms, max_timestamp_ms)?;
        self.append_batch(
            None,
            PayloadKind::Opaque,
            payload.len(),
            record_count,
            (first_timestamp_ms, max_timestamp_ms),
            |out| out.extend_from_slice(payload),
        )
    }

    /// [`Partition::append_payload`] at a given base offset, at or past
    /// [`Partition::next_offset`]: a replica copying a leader whose log was
    /// compacted receives batches with gaps between them, and keeps each
    /// batch's offsets. The offsets skipped hold nothing.
    pub fn append_payload_at(
        &mut self,
        base_offset: u64,
        payload: &[u8],
        record_count: u32,
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    ) -> Result<u64, Error> {
        check_timestamps(first_timestamp_ms, max_timestamp_ms)?;
        if base_offset < self.next_offset() {
            return Err(Error::InvalidArgument(format!(
                "base offset {base_offset} is below the next offset {}; offsets only grow",
                self.next_offset()
            )));
        }
        self.append_batch(
            Some(base_offset),
            PayloadKind::Opaque,
            payload.len(),
            record_count,
            (first_timestamp_ms, max_timestamp_ms),
            |out| out.extend_from_slice(payload),
        )
    }

    fn append_batch(
        &mut self,
        at: Option<u64>,
        kind: PayloadKind,
        payload_bytes: usize,
        record_count: u32,
        (first_timestamp_ms, max_timestamp_ms): (i64, i64),
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64, Error> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                path: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        check_limits(payload_bytes, record_count)?;
        let batch_bytes = BATCH_HEADER_BYTES + payload_bytes;
        if batch_bytes as u64 > self.config.segment_bytes_max {
            return Err(Error::BatchTooLarge {
                batch_bytes,
                limit_bytes: self.config.segment_bytes_max as usize,
            });
        }
        let base_offset = at.unwrap_or_else(|| self.next_offset());
        if base_offset.saturating_add(u64::from(record_count)) > OFFSET_MAX {
            return Err(Error::InvalidArgument(format!(
                "the partition has handed out offsets up to {OFFSET_MAX}, the largest there is"
            )));
        }
        let active = self.active();
        let full = active.size_bytes + batch_bytes as u64 > self.config.segment_bytes_max
            || base_offset + u64::from(record_count) - active.base_offset > SEGMENT_OFFSETS_MAX;
        if full && active.size_bytes > 0 {
            self.roll(base_offset)?;
        } else if full {
            return Err(Error::InvalidArgument(format!(
                "base offset {base_offset} is too far past the active segment's base {}",
                active.base_offset
            )));
        }
        let header = BatchHeader {
            base_offset,
            batch_bytes: batch_bytes as u32,
            kind,
            record_count,
            first_timestamp_ms,
            max_timestamp_ms,
        };
        self.buffer.clear();
        self.buffer.resize(BATCH_HEADER_BYTES, 0);
        fill(&mut self.buffer);
        if self.buffer.len() != batch_bytes {
            return Err(Error::InvalidArgument(format!(
                "the batch encoded to {} bytes where {batch_bytes} were expected",
                self.buffer.len()
            )));
        }
        seal(&mut self.buffer, &header);

        let interval_bytes = self.config.index_interval_bytes;
        let sync_now = match self.config.fsync {
            FsyncPolicy::EveryBatch => true,
            FsyncPolicy::Interval { interval_ms } => {
                self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
            }
            FsyncPolicy::Never => false,
        };
        let segment = self
            .segments
            .last_mut()
            .expect("a partition always has an active segment");
        let position = segment.size_bytes;
        let relative = (base_offset - segment.base_offset) as u32;
        let (offset_entry, time_entry) = segment.index.observe(
            position as u32,
            relative,
            batch_bytes as u32,
            max_timestamp_ms,
            interval_bytes,
        );
        let written = segment
            .log
            .write_all_at(&self.buffer, position)
            .map_err(io_error(&segment.paths[0]))
            .and_then(|()| match offset_entry {
                Some(entry) => segment
                    .offset_index_file
                    .write_all_at(
                        &offset_entry_bytes(&entry),
                        ((segment.index.offsets.len() - 1) * OFFSET_INDEX_ENTRY_BYTES) as u64,
                    )
                    .map_err(io_error(&segment.paths[1])),
                None => Ok(()),
            })
            .and_then(|()| match time_entry {
                Some(entry) => segment
                    .time_index_file
                    .write_all_at(
                        &time_entry_bytes(&entry),
                        ((segment.index.times.len() - 1) * TIME_INDEX_ENTRY_BYTES) as u64,
                    )
                    .map_err(io_error(&segment.paths[2])),
                None => Ok(()),
            })
            .and_then(|()| {
                if sync_now {
                    segment.log.sync_data().map_err(io_error(&segment.paths[0]))
                } else {
                    Ok(())
                }
            });
        if let Err(error) = written {
            // Cut whatever part of the batch reached the file, and refuse
            // further appends: after a failed write or sync the state of the
            // file is the kernel's guess, so the partition must be reopened.
            let _ = segment.log.set_len(position);
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        segment.size_bytes += batch_bytes as u64;
        segment.next_offset = base_offset + u64::from(record_count);
        if sync_now {
            self.last_sync = Instant::now();
        }
        Ok(base_offset)
    }

    /// Closes the active segment and starts a new one at `next_base` (the
    /// next offset, or the base of a batch appended past a gap).
    fn roll(&mut self, next_base: u64) -> Result<(), Error> {
        let syncing = self.config.fsync != FsyncPolicy::Never;
        let segment = self
            .segments
            .last_mut()
            .expect("a partition always has an active segment");
        if let Some(entry) = segment.index.close() {
            segment
                .time_index_file
                .write_all_at(
                    &time_entry_bytes(&entry),
                    ((segment.index.times.len() - 1) * TIME_INDEX_ENTRY_BYTES) as u64,
                )
                .map_err(io_error(&segment.paths[2]))?;
        }
        if syncing {
            // A closed segment is whole on disk before anything goes to the next one.
            segment.sync()?;
        }
        let next = create_segment(&self.dir, next_base.max(segment.next_offset))?;
        self.segments.push(next);
        if syncing {
            sync_dir(&self.dir)?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Forces everything appended so far to disk, whatever the fsync policy.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.active().sync()?;
        sync_dir(&self.dir)?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`: that
    /// batch always (even if larger than `max_bytes`), then as many following
    /// batches of the same segment as fit in `max_bytes`. Empty at
    /// `next_offset`. Decode the bytes with [`crate::batches`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.read_into(offset, max_bytes, &mut out)?;
        Ok(out)
    }

    /// [`Partition::read`] into a caller's buffer (cleared first), so that a
    /// fetch loop allocates nothing once its buffer has grown.
    pub fn read_into(&self, offset: u64, max_bytes: usize, out: &mut Vec<u8>) -> Result<(), Error> {
        out.clear();
        let next_offset = self.next_offset();
        if offset < self.log_start_offset() || offset > next_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                next_offset,
            });
        }
        if offset == next_offset {
            return Ok(());
        }
        // The batch holding `offset`, or (when compaction removed it) the
        // first batch after it, which may be in a later segment.
        let Some((segment, mut position, first)) = self.batch_at_or_after(offset)? else {
            return Ok(());
        };
        let want = (first.batch_bytes as usize)
            .max(max_bytes.min((segment.size_bytes - position) as usize));
        out.resize(want, 0);
        segment
            .log
            .read_exact_at(out, position)
            .map_err(io_error(&segment.paths[0]))?;
        // Keep the whole batches, each checked again now that it is read.
        let mut kept = 0;
        let mut expected = first.base_offset;
        while kept < out.len() {
            let header = BatchHeader::parse(&out[kept..]);
            let Some(header) =
                header.filter(|header| kept + header.batch_bytes as usize <= out.len())
            else {
                break;
            };
            let batch = &out[kept..kept + header.batch_bytes as usize];
            if header.base_offset < expected || !checksum_holds(batch) {
                return Err(corrupt(
                    &segment.paths[0],
                    format!("the batch at byte {position} does not read back whole"),
                ));
            }
            expected = header.next_offset();
            kept += batch.len();
            position += batch.len() as u64;
        }
        out.truncate(kept);
        Ok(())
    }

    /// [`Partition::read_into`] with each batch's header dropped, so that
    /// `out` holds the payloads back to back: for the broker, whose opaque
    /// payloads are Kafka record batches, the bytes a fetch answers with.
    /// The checksums are checked as `read_into` checks them.
    pub fn read_payloads_into(
        &self,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.read_into(offset, max_bytes, out)?;
        let (mut read, mut write) = (0, 0);
        while let Some(header) = BatchHeader::parse(&out[read..]) {
            let end = read + header.batch_bytes as usize;
            out.copy_within(read + BATCH_HEADER_BYTES..end, write);
            write += end - read - BATCH_HEADER_BYTES;
            read = end;
        }
        debug_assert_eq!(read, out.len(), "read_into returns whole batches");
        out.truncate(write);
        Ok(())
    }

    /// The segment, position and header of the batch holding `offset`, or of
    /// the first batch after it when `offset` falls in a gap left by
    /// compaction; `None` when no batch holds or follows it.
    fn batch_at_or_after(
        &self,
        offset: u64,
    ) -> Result<Option<(&Segment, u64, BatchHeader)>, Error> {
        let at = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset)
            .max(1)
            - 1;
        for (nth, segment) in self.segments[at..].iter().enumerate() {
            let start = if nth == 0 {
                let relative = offset.saturating_sub(segment.base_offset);
                segment
                    .index
                    .position_at_or_before(u32::try_from(relative).unwrap_or(u32::MAX))
            } else {
                0
            };
            if let Some((position, header)) =
                self.find_batch(segment, start, |header| header.next_offset() > offset)?
            {
                return Ok(Some((segment, position, header)));
            }
        }
        Ok(None)
    }

    /// Walks batch headers from `position` to the first for which `found`
    /// holds; its position and header.
    fn find_batch(
        &self,
        segment: &Segment,
        mut position: u64,
        found: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, Error> {
        while position < segment.size_bytes {
            let header =
                read_header_at(&segment.log, &segment.paths[0], position)?.ok_or_else(|| {
                    corrupt(
                        &segment.paths[0],
                        format!("no batch header at byte {position}"),
                    )
                })?;
            if found(&header) {
                return Ok(Some((position, header)));
            }
            position += u64::from(header.batch_bytes);
        }
        Ok(None)
    }

    /// The base offset of the first batch whose newest record is at or after
    /// `timestamp_ms`; `None` when every batch is older.
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<u64>, Error> {
        for segment in &self.segments {
            if segment
                .index
                .max_timestamp_ms
                .is_none_or(|max| max < timestamp_ms)
            {
                continue;
            }
            // The last time entry below the target names a batch that is
            // still too old, so the answer lies after it.
            let times = &segment.index.times;
            let below = times.partition_point(|entry| entry.timestamp_ms < timestamp_ms);
            let start = below.checked_sub(1).map_or(0, |at| {
                segment
                    .index
                    .position_at_or_before(times[at].relative_offset)
            });
            if let Some((_, header)) = self.find_batch(segment, start, |header| {
                header.max_timestamp_ms >= timestamp_ms
            })? {
                return Ok(Some(header.base_offset));
            }
        }
        Ok(None)
    }

    /// Cuts the log back so that `offset` is the next offset: every batch at
    /// or after it is removed (a replica drops a tail its leader does not
    /// have). `offset` must be a batch boundary between the log start and
    /// [`Partition::next_offset`]. Later segments are deleted (data file first,
    /// so a crash leaves a shorter log, never a hole), the data file holding
    /// `offset` is cut and synced, and the last segment left is reopened as
    /// the active one, its indexes rebuilt.
    ///
    /// `offset` may also lie in a gap left by compaction: the cut is then at
    /// the next batch, and `offset` is the next offset of this handle. (The
    /// log keeps no end marker, so after a reopen the next offset is the end
    /// of the last batch, at or below `offset`; offsets still only grow.)
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), Error> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                path: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        let next_offset = self.next_offset();
        if offset == next_offset {
            return Ok(());
        }
        if offset < self.log_start_offset() || offset > next_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                next_offset,
            });
        }
        let at = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset)
            - 1;
        let segment = &self.segments[at];
        let relative = (offset - segment.base_offset) as u32;
        // In a gap left by compaction, the cut goes where the next batch starts
        // (or at the end of the segment when none follows in it).
        let position = match self.find_batch(
            segment,
            segment.index.position_at_or_before(relative),
            |header| header.next_offset() > offset,
        )? {
            Some((_, header)) if header.base_offset < offset => {
                return Err(Error::InvalidArgument(format!(
                    "offset {offset} is inside the batch at offset {}; truncate at a batch boundary",
                    header.base_offset
                )));
            }
            Some((position, _)) => position,
            None => segment.size_bytes,
        };
        let result = self.cut(at, position);
        if let Err(error) = &result {
            self.poisoned = Some(format!("truncation failed: {error}"));
            return result;
        }
        // The active segment's batches may end before `offset` (a gap): the
        // next offset is `offset` all the same, so offsets keep growing.
        let active = self
            .segments
            .last_mut()
            .expect("a partition always has an active segment");
        active.next_offset = active.next_offset.max(offset);
        result
    }

    fn cut(&mut self, at: usize, position: u64) -> Result<(), Error> {
        // A segment that would be left empty goes too, unless it is the first.
        let keep = if position == 0 && at > 0 { at - 1 } else { at };
        while self.segments.len() > keep + 1 {
            let segment = self.segments.pop().expect("more segments than kept");
            for path in &segment.paths {
                std::fs::remove_file(path).map_err(io_error(path))?;
            }
        }
        let last = self.segments.pop().expect("a kept segment");
        if keep == at {
            last.log
                .set_len(position)
                .map_err(io_error(&last.paths[0]))?;
            last.log.sync_all().map_err(io_error(&last.paths[0]))?;
        }
        let base_offset = last.base_offset;
        drop(last);
        let active = open_active_segment(&self.dir, base_offset, self.config.index_interval_bytes)?;
        self.segments.push(active);
        sync_dir(&self.dir)?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Deletes whole closed segments from the front of the log: those whose
    /// newest batch is older than `retention_ms` at `now_ms`, then the oldest
    /// while the partition is over `retention_bytes`. The active segment stays.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, Error> {
        let mut outcome = RetentionOutcome::default();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired = self.config.retention_ms.is_some_and(|retention_ms| {
                oldest
                    .index
                    .max_timestamp_ms
                    .is_some_and(|max| now_ms.saturating_sub(max) > retention_ms as i64)
            });
            let over_size = self
                .config
                .retention_bytes
                .is_some_and(|retention_bytes| self.size_bytes() > retention_bytes);
            if !expired && !over_size {
                break;
            }
            let segment = self.segments.remove(0);
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size_bytes;
            // Indexes first, the data file last: a data file left alone by a
            // crash here gets its indexes rebuilt on open.
            for path in [&segment.paths[1], &segment.paths[2], &segment.paths[0]] {
                std::fs::remove_file(path).map_err(io_error(path))?;
            }
        }
        if outcome.segments_deleted > 0 && self.config.fsync != FsyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(outcome)
    }
}
