//! Log compaction (Kafka's `cleanup.policy=compact`): closed segments are
//! rewritten keeping, per key, only the record with the highest offset, and
//! tombstones (a null value) only until they are older than a retention time.
//! See the crate docs for the format of compacted segments and the
//! crash-safety scheme; this module is the only code that knows the latter.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{batches, seal, BatchHeader, BatchView, PayloadKind};
use crate::constants::{BATCH_HEADER_BYTES, SEGMENT_OFFSETS_MAX};
use crate::error::{corrupt, io_error, Error};
use crate::kafka::{encode_kafka_batch, parse_kafka_batch, KafkaBatch, KafkaRecord};
use crate::partition::{open_closed_segment, sync_dir, Partition};
use crate::segment::{segment_paths, IndexState};

/// The marker whose presence commits a compaction: it names the segments
/// the cleaned files replace. Written whole (via a temporary name and a
/// rename) before any old file is touched; removed when the swap is done.
pub const SWAP_MARKER_NAME: &str = "compaction.swap";
const SWAP_MARKER_TMP_NAME: &str = "compaction.swap.tmp";
/// Suffix of a cleaned segment's files until the swap renames them into place.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Closed segments read (0: nothing was due, nothing was written).
    pub segments_before: usize,
    /// Segments they were rewritten into.
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records dropped because a later record has the same key.
    pub records_removed: u64,
    /// Tombstones dropped because they were older than the retention time.
    pub tombstones_removed: u64,
}

/// A cleaned segment, built in memory before it is written.
struct Cleaned {
    base_offset: u64,
    data: Vec<u8>,
}

fn cleaned_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(path)(error)),
    }
}

fn unreadable(path: &Path, error: Error) -> Error {
    corrupt(path, format!("a batch does not read back whole: {error}"))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// What a committed swap does: which segments the cleaned files install and
/// which old segments go.
#[derive(Debug, PartialEq, Eq)]
struct Swap {
    install: Vec<u64>,
    remove: Vec<u64>,
}

impl Swap {
    fn encode(&self) -> String {
        let mut text = String::from("sdi-log compaction swap v1\n");
        for base in &self.install {
            text.push_str(&format!("install {base}\n"));
        }
        for base in &self.remove {
            text.push_str(&format!("remove {base}\n"));
        }
        text.push_str("end\n");
        text
    }

    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != "sdi-log compaction swap v1" {
            return None;
        }
        let mut swap = Swap {
            install: Vec::new(),
            remove: Vec::new(),
        };
        for line in lines {
            if line == "end" {
                return Some(swap);
            }
            let (verb, base) = line.split_once(' ')?;
            let base: u64 = base.parse().ok()?;
            match verb {
                "install" => swap.install.push(base),
                "remove" => swap.remove.push(base),
                _ => return None,
            }
        }
        None
    }
}

/// Counts the steps of a compaction and, in crash tests, stops it after a
/// given number as a crash would (leaving the files as they are).
struct Steps {
    done: u32,
    crash_after: Option<u32>,
}

impl Steps {
    fn step(&mut self) -> Result<(), Error> {
        self.done += 1;
        if self.crash_after.is_some_and(|limit| self.done >= limit) {
            return Err(Error::InvalidArgument(format!(
                "simulated crash after {} compaction steps",
                self.done
            )));
        }
        Ok(())
    }
}

/// Renames the cleaned files into place and deletes the replaced segments,
/// then the marker. Every step can be repeated, so recovery runs it again
/// after a crash at any point.
fn finish_swap(dir: &Path, swap: &Swap, steps: &mut Steps) -> Result<(), Error> {
    for &base in &swap.install {
        let paths = segment_paths(dir, base);
        // Indexes first, the data file last.
        for path in [&paths[1], &paths[2], &paths[0]] {
            let from = cleaned_path(path);
            if from.exists() {
                std::fs::rename(&from, path).map_err(io_error(&from))?;
                steps.step()?;
            }
        }
    }
    for &base in &swap.remove {
        let paths = segment_paths(dir, base);
        // Indexes first, the data file last (a data file left alone gets its
        // indexes rebuilt); the marker stays until every file is gone.
        for path in [&paths[1], &paths[2], &paths[0]] {
            if remove_if_present(path)? {
                steps.step()?;
            }
        }
    }
    sync_dir(dir)?;
    steps.step()?;
    remove_if_present(&dir.join(SWAP_MARKER_NAME))?;
    sync_dir(dir)
}

/// Run by `Partition::open` before it lists the segments: a committed swap
/// (its marker is there) is finished; an uncommitted one (cleaned files
/// without a marker) is undone by deleting the cleaned files, which leaves
/// the old segments exactly as they were.
pub(crate) fn recover(dir: &Path) -> Result<(), Error> {
    let marker = dir.join(SWAP_MARKER_NAME);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let swap = Swap::decode(&text).ok_or_else(|| {
                corrupt(
                    &marker,
                    "the compaction swap marker does not parse".to_owned(),
                )
            })?;
            finish_swap(
                dir,
                &swap,
                &mut Steps {
                    done: 0,
                    crash_after: None,
                },
            )?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&marker)(error)),
    }
    let mut removed = remove_if_present(&dir.join(SWAP_MARKER_TMP_NAME))?;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(CLEANED_SUFFIX))
        {
            removed |= remove_if_present(&entry.path())?;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The Kafka batch in a log batch's payload, when there is one compaction
/// can look into: magic 2, uncompressed, not control, with its records'
/// offsets within the offsets the log batch spans.
fn kafka_records<'a>(view: &BatchView<'a>) -> Option<KafkaBatch<'a>> {
    if view.header.kind != PayloadKind::Opaque {
        return None;
    }
    let kafka = parse_kafka_batch(view.payload)?;
    let within = kafka.base_offset == view.header.base_offset
        && kafka
            .records
            .last()
            .is_none_or(|last| last.offset < view.header.next_offset());
    (within && !kafka.records.is_empty()).then_some(kafka)
}

/// Appends to `out` the batch `bytes` with only `survivors` of its Kafka
/// records, or nothing when none survive.
fn rewrite_batch(out: &mut Vec<u8>, template: &KafkaBatch<'_>, survivors: &[KafkaRecord<'_>]) {
    let (Some(first), Some(last)) = (survivors.first(), survivors.last()) else {
        return;
    };
    let kafka = encode_kafka_batch(template, survivors);
    let max_timestamp_ms = survivors
        .iter()
        .map(|record| record.timestamp_ms)
        .max()
        .unwrap_or(first.timestamp_ms);
    let start = out.len();
    out.resize(start + BATCH_HEADER_BYTES, 0);
    out.extend_from_slice(&kafka);
    let header = BatchHeader {
        base_offset: first.offset,
        batch_bytes: (BATCH_HEADER_BYTES + kafka.len()) as u32,
        kind: PayloadKind::Opaque,
        // The batch spans its first to its last offset, gaps included.
        record_count: (last.offset - first.offset + 1) as u32,
        first_timestamp_ms: first.timestamp_ms.min(max_timestamp_ms),
        max_timestamp_ms,
    };
    seal(&mut out[start..], &header);
}

impl Partition {
    /// Compacts the closed segments that lie wholly below `up_to` (the high
    /// watermark, say; the active segment is never touched): per key, only
    /// the record with the highest offset among those segments is kept;
    /// records without a key are all kept; a tombstone (null value) that is
    /// the latest of its key is kept until it is more than
    /// `tombstone_retention_ms` older than `now_ms`, then dropped. Offsets
    /// and timestamps are kept, so compacted segments have gaps.
    ///
    /// Only Kafka record batches (magic 2, uncompressed, not control) stored
    /// with [`Partition::append_payload`] are looked into; any other batch is
    /// kept whole. The rewrite is crash-safe: see the crate docs.
    pub fn compact(
        &mut self,
        up_to: u64,
        now_ms: i64,
        tombstone_retention_ms: u64,
    ) -> Result<CompactionOutcome, Error> {
        self.compact_inner(up_to, now_ms, tombstone_retention_ms, None)
    }

    /// [`Partition::compact`] stopped after `steps` file operations, as a
    /// crash would stop it; the handle refuses writes afterwards and must be
    /// dropped and the directory reopened. For crash tests only.
    #[doc(hidden)]
    pub fn compact_crashing_after(
        &mut self,
        up_to: u64,
        now_ms: i64,
        tombstone_retention_ms: u64,
        steps: u32,
    ) -> Result<CompactionOutcome, Error> {
        let result = self.compact_inner(up_to, now_ms, tombstone_retention_ms, Some(steps));
        self.poisoned = Some("a simulated crash stopped a compaction".to_owned());
        result
    }

    fn compact_inner(
        &mut self,
        up_to: u64,
        now_ms: i64,
        tombstone_retention_ms: u64,
        crash_after: Option<u32>,
    ) -> Result<CompactionOutcome, Error> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                path: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        let mut steps = Steps {
            done: 0,
            crash_after,
        };
        // The closed segments wholly below `up_to`: a closed segment ends where the next begins.
        let count = self.segments[1..]
            .iter()
            .take_while(|next| next.base_offset <= up_to)
            .count();
        let mut outcome = CompactionOutcome::default();
        if count == 0 {
            return Ok(outcome);
        }
        let mut data = Vec::with_capacity(count);
        for segment in &self.segments[..count] {
            let mut bytes = vec![0u8; segment.size_bytes as usize];
            segment
                .log
                .read_exact_at(&mut bytes, 0)
                .map_err(io_error(&segment.paths[0]))?;
            data.push(bytes);
        }

        // Pass 1: the highest offset of every key.
        let mut latest: HashMap<&[u8], u64> = HashMap::new();
        for (segment, bytes) in self.segments[..count].iter().zip(&data) {
            for view in batches(bytes) {
                let view = view.map_err(|error| unreadable(&segment.paths[0], error))?;
                let Some(kafka) = kafka_records(&view) else {
                    continue;
                };
                for record in &kafka.records {
                    if let Some(key) = record.key {
                        latest.insert(key, record.offset);
                    }
                }
            }
        }

        // Pass 2: each segment's surviving batches, then segments grouped so
        // that a cleaned segment stays within the size and offset limits.
        let retention = i64::try_from(tombstone_retention_ms).unwrap_or(i64::MAX);
        let mut cleaned: Vec<Cleaned> = Vec::new();
        for (at, (segment, bytes)) in self.segments[..count].iter().zip(&data).enumerate() {
            let mut out = Vec::with_capacity(bytes.len());
            for view in batches(bytes) {
                let view = view.map_err(|error| unreadable(&segment.paths[0], error))?;
                let parsed = kafka_records(&view);
                let Some(kafka) = parsed else {
                    out.extend_from_slice(view.bytes);
                    continue;
                };
                let mut survivors = Vec::with_capacity(kafka.records.len());
                for record in &kafka.records {
                    let Some(key) = record.key else {
                        survivors.push(*record);
                        continue;
                    };
                    if latest.get(key) != Some(&record.offset) {
                        outcome.records_removed += 1;
                    } else if record.value.is_none()
                        && now_ms.saturating_sub(record.timestamp_ms) > retention
                    {
                        outcome.tombstones_removed += 1;
                    } else {
                        survivors.push(*record);
                    }
                }
                if survivors.len() == kafka.records.len() {
                    out.extend_from_slice(view.bytes);
                } else {
                    rewrite_batch(&mut out, &kafka, &survivors);
                }
            }
            let next_base = self.segments[at + 1].base_offset;
            match cleaned.last_mut() {
                Some(group)
                    if (group.data.len() + out.len()) as u64 <= self.config.segment_bytes_max
                        && next_base - group.base_offset <= SEGMENT_OFFSETS_MAX =>
                {
                    group.data.extend_from_slice(&out);
                }
                _ => cleaned.push(Cleaned {
                    base_offset: segment.base_offset,
                    data: out,
                }),
            }
        }
        drop(latest);
        outcome.segments_before = count;
        outcome.segments_after = cleaned.len();
        outcome.bytes_before = self.segments[..count]
            .iter()
            .map(|segment| segment.size_bytes)
            .sum();
        outcome.bytes_after = cleaned.iter().map(|group| group.data.len() as u64).sum();

        // Write the cleaned segments beside the old ones, synced.
        let written = self.write_cleaned(&cleaned, &mut steps);
        if let Err(error) = written {
            if crash_after.is_none() {
                let _ = recover(&self.dir);
            }
            return Err(error);
        }
        // Commit: the marker names what the swap installs and removes.
        let installed: Vec<u64> = cleaned.iter().map(|group| group.base_offset).collect();
        let swap = Swap {
            remove: self.segments[..count]
                .iter()
                .map(|segment| segment.base_offset)
                .filter(|base| !installed.contains(base))
                .collect(),
            install: installed,
        };
        let committed = (|| {
            let tmp = self.dir.join(SWAP_MARKER_TMP_NAME);
            write_synced(&tmp, swap.encode().as_bytes())?;
            steps.step()?;
            let marker = self.dir.join(SWAP_MARKER_NAME);
            std::fs::rename(&tmp, &marker).map_err(io_error(&marker))?;
            sync_dir(&self.dir)
        })();
        if let Err(error) = committed {
            if crash_after.is_none() {
                let _ = recover(&self.dir);
            }
            return Err(error);
        }
        steps.step()?;
        // Past the commit point: a failure now is finished by the next open.
        let swapped = finish_swap(&self.dir, &swap, &mut steps).and_then(|()| {
            let following = self.segments[count].base_offset;
            drop(self.segments.drain(..count));
            let mut reopened = Vec::with_capacity(cleaned.len());
            for (at, group) in cleaned.iter().enumerate() {
                let next = cleaned
                    .get(at + 1)
                    .map_or(following, |next| next.base_offset);
                reopened.push(open_closed_segment(
                    &self.dir,
                    group.base_offset,
                    next,
                    self.config.index_interval_bytes,
                )?);
            }
            self.segments.splice(0..0, reopened);
            Ok(())
        });
        if let Err(error) = swapped {
            self.poisoned = Some(format!(
                "a compaction failed after it was committed ({error}); reopening finishes it"
            ));
            return Err(error);
        }
        Ok(outcome)
    }

    fn write_cleaned(&self, cleaned: &[Cleaned], steps: &mut Steps) -> Result<(), Error> {
        let interval_bytes = self.config.index_interval_bytes;
        for group in cleaned {
            let mut index = IndexState::default();
            for view in batches(&group.data) {
                let view = view?;
                let position = view.bytes.as_ptr() as usize - group.data.as_ptr() as usize;
                index.observe(
                    position as u32,
                    (view.header.base_offset - group.base_offset) as u32,
                    view.header.batch_bytes,
                    view.header.max_timestamp_ms,
                    interval_bytes,
                );
            }
            index.close();
            let paths = segment_paths(&self.dir, group.base_offset);
            write_synced(&cleaned_path(&paths[0]), &group.data)?;
            steps.step()?;
            write_synced(&cleaned_path(&paths[1]), &index.offset_index_bytes())?;
            write_synced(&cleaned_path(&paths[2]), &index.time_index_bytes())?;
            steps.step()?;
        }
        sync_dir(&self.dir)?;
        steps.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swap_marker_round_trips_and_refuses_a_torn_one() {
        let swap = Swap {
            install: vec![0, 40],
            remove: vec![10, 20],
        };
        let text = swap.encode();
        assert_eq!(Swap::decode(&text), Some(swap));
        assert_eq!(Swap::decode(&text[..text.len() - 4]), None);
        assert_eq!(Swap::decode("something else\nend\n"), None);
    }
}
