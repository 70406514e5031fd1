//! The index: write path, flushes, compaction, recovery and search.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::codec::{
    concat_postings, decode_docs, decode_full, difference, encode_postings, first_doc, intersect,
    merge_postings, union_many, PostingList,
};
use crate::constants::{
    BATCH_OPS_MAX, MEMTABLE_BYTES_DEFAULT, MEMTABLE_BYTES_MAX, MEMTABLE_BYTES_MIN,
    MERGE_WIDTH_DEFAULT, MERGE_WIDTH_MAX, PREFIX_TERMS_MAX, RUNS_MAX_DEFAULT, SEARCH_RESULTS_MAX,
    TIER_RATIO, TOKENIZE_OPS_PER_THREAD_MIN, TOKENIZE_THREADS_MAX,
};
use crate::doc::{check_doc, Attrs, Doc, DocState, Field, Filter, Op};
use crate::error::{corrupt, io_error, Error, Result};
use crate::manifest::{sync_dir, Manifest, MANIFEST_TMP_FILE};
use crate::memtable::{make_key, Memtable, Prepared};
use crate::query::Query;
use crate::run::{parse_run_file_name, run_file_name, DocRecord, Run, RunWriter};
use crate::wal::{encode_frame, parse_wal_file_name, read_wal, wal_file_name, WalWriter};

/// When a write is on disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` the log before every write call returns. A
    /// [`Index::write_batch`] is one log write and one sync for all its ops
    /// (group commit): batch to go fast.
    Always,
    /// Leave the log to the OS: a process crash loses nothing, a power cut
    /// may lose the writes since the last flush or [`Index::sync`].
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// Memtable size (estimated bytes) at which a write flushes it to a run.
    pub memtable_bytes_max: usize,
    /// Runs of one size tier merged at once (size-tiered compaction).
    pub merge_width: usize,
    /// Runs beyond which the newest `merge_width` runs are merged whatever
    /// their sizes, to bound the runs a query reads.
    pub runs_max: usize,
    /// Merge on a thread owned by the index. When false, the caller drives
    /// merging with [`Index::compact_step`] or [`Index::compact`].
    pub background_compaction: bool,
    /// Threads that tokenize a large [`Index::write_batch`] (the calling
    /// thread is one of them); 1 tokenizes on the caller alone.
    pub tokenize_threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncPolicy::Always,
            memtable_bytes_max: MEMTABLE_BYTES_DEFAULT,
            merge_width: MERGE_WIDTH_DEFAULT,
            runs_max: RUNS_MAX_DEFAULT,
            background_compaction: true,
            tokenize_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(TOKENIZE_THREADS_MAX),
        }
    }
}

impl Options {
    fn check(&self) -> Result<()> {
        if !(MEMTABLE_BYTES_MIN..=MEMTABLE_BYTES_MAX).contains(&self.memtable_bytes_max) {
            return Err(Error::Config(format!(
                "memtable_bytes_max {} is outside {MEMTABLE_BYTES_MIN}..={MEMTABLE_BYTES_MAX}",
                self.memtable_bytes_max
            )));
        }
        if !(2..=MERGE_WIDTH_MAX).contains(&self.merge_width) {
            return Err(Error::Config(format!(
                "merge_width {} is outside 2..={MERGE_WIDTH_MAX}",
                self.merge_width
            )));
        }
        if !(1..=TOKENIZE_THREADS_MAX).contains(&self.tokenize_threads) {
            return Err(Error::Config(format!(
                "tokenize_threads {} is outside 1..={TOKENIZE_THREADS_MAX}",
                self.tokenize_threads
            )));
        }
        if self.runs_max < self.merge_width {
            return Err(Error::Config(format!(
                "runs_max {} is below merge_width {}",
                self.runs_max, self.merge_width
            )));
        }
        Ok(())
    }
}

/// Counters and sizes, for monitoring and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Run sizes in bytes, oldest first.
    pub run_bytes: Vec<u64>,
    pub memtable_bytes: usize,
    pub memtable_keys: usize,
    pub live_docs: u64,
    /// Tombstones the index still holds.
    pub dead_docs: u64,
    pub wal_seq: u64,
    /// Bytes in the log being written (the writes since the last flush).
    pub wal_bytes: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// The last error of a flush started by a write, or of the background
    /// merge thread.
    pub background_error: Option<String>,
}

/// Every doc id the index knows, per user: live with attributes, or dead.
#[derive(Default)]
struct DocTable {
    users: HashMap<u32, BTreeMap<u64, DocState>>,
    dead: HashSet<(u32, u64)>,
    live: u64,
}

impl DocTable {
    fn get(&self, user: u32, doc: u64) -> Option<DocState> {
        self.users.get(&user)?.get(&doc).copied()
    }

    fn set(&mut self, user: u32, doc: u64, state: DocState) {
        let previous = self.users.entry(user).or_default().insert(doc, state);
        match previous {
            Some(DocState::Live(_)) => self.live -= 1,
            Some(DocState::Dead) => {
                self.dead.remove(&(user, doc));
            }
            None => {}
        }
        match state {
            DocState::Live(_) => self.live += 1,
            DocState::Dead => {
                self.dead.insert((user, doc));
            }
        }
    }
}

struct State {
    memtable: Memtable,
    /// The previous memtable while a flush writes it to a run; searches
    /// read it until the run takes its place.
    frozen: Option<Arc<Memtable>>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
    docs: DocTable,
}

impl State {
    /// The memtable and, during a flush, the frozen one.
    fn memtables(&self) -> impl Iterator<Item = &Memtable> {
        std::iter::once(&self.memtable).chain(self.frozen.as_deref())
    }

    /// Applies one checked op. `prepared` is the tokenized doc of an add.
    fn apply(&mut self, op: &Op, prepared: Option<&Prepared>) {
        match op {
            Op::Add(doc) => {
                if self.docs.get(doc.user, doc.id).is_some() {
                    return;
                }
                match prepared {
                    Some(prepared) => self.memtable.insert(prepared),
                    None => self.memtable.insert(&Prepared::new(doc)),
                }
                let state = DocState::Live(doc.attrs);
                self.docs.set(doc.user, doc.id, state);
                self.memtable.set_doc(doc.user, doc.id, state);
            }
            Op::Delete { user, doc } => {
                if let Some(DocState::Live(_)) = self.docs.get(*user, *doc) {
                    self.docs.set(*user, *doc, DocState::Dead);
                    self.memtable.set_doc(*user, *doc, DocState::Dead);
                }
            }
            Op::SetAttrs { user, doc, attrs } => {
                if let Some(DocState::Live(_)) = self.docs.get(*user, *doc) {
                    self.docs.set(*user, *doc, DocState::Live(*attrs));
                    self.memtable.set_doc(*user, *doc, DocState::Live(*attrs));
                }
            }
        }
    }
}

struct Writer {
    wal: WalWriter,
    poisoned: Option<String>,
    frame: Vec<u8>,
}

#[derive(Default)]
struct Background {
    pending: bool,
    shutdown: bool,
    error: Option<String>,
}

struct Shared {
    dir: PathBuf,
    options: Options,
    /// Serializes writers; held across a flush. Lock order: writer, then
    /// compaction, then manifest, then state.
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Guards manifest writes; holds the first log sequence to replay.
    manifest: Mutex<u64>,
    /// One merge at a time.
    compaction: Mutex<()>,
    next_run_id: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    background: Mutex<Background>,
    wake: Condvar,
    /// The flush waiting for or being written by the flush thread. Lock
    /// order: taken alone, or before `background`.
    flush_slot: Mutex<FlushSlot>,
    /// Wakes the flush thread and the writers waiting for a flush.
    flush_changed: Condvar,
    /// A flushed memtable, emptied, whose allocations the next one reuses.
    spare: Mutex<Option<Memtable>>,
}

/// A frozen memtable's flush: the log that holds its writes, and the log
/// that follows it (the first one a recovery must replay once the run is
/// written).
#[derive(Clone)]
struct FlushJob {
    wal_path: PathBuf,
    next_wal_seq: u64,
}

#[derive(Default)]
struct FlushSlot {
    job: Option<FlushJob>,
    running: bool,
    /// The job's last try failed; the next writer that needs the slot tries
    /// again.
    failed: bool,
    shutdown: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves data we never half-update in
    // place (files are replaced whole), so carry on with it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An LSM-tree inverted index over mail, partitioned by user. See the crate
/// docs. All methods take `&self`: searches run concurrently with writes.
pub struct Index {
    shared: Arc<Shared>,
    /// The merge thread and the flush thread.
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn run_path(&self, id: u64) -> PathBuf {
        self.dir.join(run_file_name(id))
    }

    fn write_manifest(&self, wal_start: u64, runs: &[Arc<Run>]) -> Result<()> {
        Manifest {
            wal_start,
            next_run: self.next_run_id.load(Ordering::SeqCst),
            runs: runs.iter().map(|r| r.id).collect(),
        }
        .write(&self.dir)
    }

    /// Moves the memtable aside for a flush and starts a new log. The
    /// caller holds the writer lock and has waited for the previous flush.
    /// `Ok(false)` when the memtable is empty.
    fn freeze(&self, writer: &mut Writer) -> Result<bool> {
        if self.read().memtable.is_empty() {
            return Ok(false);
        }
        let new_wal = WalWriter::open(&self.dir, writer.wal.seq + 1, 0)?;
        sync_dir(&self.dir)?;
        let fresh = lock(&self.spare).take().unwrap_or_default();
        {
            let mut state = self.write();
            let table = std::mem::replace(&mut state.memtable, fresh);
            state.frozen = Some(Arc::new(table));
        }
        let old = std::mem::replace(&mut writer.wal, new_wal);
        lock(&self.flush_slot).job = Some(FlushJob {
            wal_path: old.path.clone(),
            next_wal_seq: writer.wal.seq,
        });
        self.flush_changed.notify_all();
        Ok(true)
    }

    /// Runs the pending flush here unless there is none or another thread
    /// is running it; `Ok(true)` when it ran and succeeded.
    fn run_flush_job(&self) -> Result<bool> {
        let job = {
            let mut slot = lock(&self.flush_slot);
            match (slot.job.clone(), slot.running) {
                (Some(job), false) => {
                    slot.running = true;
                    job
                }
                _ => return Ok(false),
            }
        };
        let result = self.flush_frozen(&job);
        {
            let mut slot = lock(&self.flush_slot);
            slot.running = false;
            slot.failed = result.is_err();
            match &result {
                Ok(()) => slot.job = None,
                Err(e) => lock(&self.background).error = Some(format!("flush: {e}")),
            }
        }
        self.flush_changed.notify_all();
        result.map(|()| true)
    }

    /// Returns once no flush is pending, running a pending one on this
    /// thread when no other thread is running it.
    fn wait_flushed(&self) -> Result<()> {
        loop {
            {
                let mut slot = lock(&self.flush_slot);
                while slot.running {
                    slot = self
                        .flush_changed
                        .wait(slot)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if slot.job.is_none() {
                    return Ok(());
                }
            }
            self.run_flush_job()?;
        }
    }

    /// Writes the frozen memtable to a run, puts the run in its place and
    /// drops the log it came from.
    fn flush_frozen(&self, job: &FlushJob) -> Result<()> {
        let Some(table) = self.read().frozen.clone() else {
            return Ok(());
        };
        let run_id = self.next_run_id.fetch_add(1, Ordering::SeqCst);
        let path = self.run_path(run_id);
        let written = write_run(&path, &table).and_then(|()| Run::open(&path, run_id));
        let run = match written {
            Ok(run) => run,
            Err(e) => {
                // Unlisted, so a restart would remove it anyway.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        {
            let mut wal_start = lock(&self.manifest);
            let mut runs = self.read().runs.clone();
            runs.push(Arc::new(run));
            self.write_manifest(job.next_wal_seq, &runs)?;
            *wal_start = job.next_wal_seq;
            let mut state = self.write();
            state.runs = runs;
            state.frozen = None;
        }
        if let Ok(mut table) = Arc::try_unwrap(table) {
            table.clear();
            *lock(&self.spare) = Some(table);
        }
        std::fs::remove_file(&job.wal_path).map_err(io_error(&job.wal_path))?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.signal();
        Ok(())
    }

    fn signal(&self) {
        if self.options.background_compaction {
            lock(&self.background).pending = true;
            self.wake.notify_one();
        }
    }

    /// Merges the runs that `pick` chooses; `Ok(false)` when it picks none.
    fn compact_with(
        &self,
        pick: impl FnOnce(&[Arc<Run>], &DocTable) -> Option<Range<usize>>,
    ) -> Result<bool> {
        let _one_at_a_time = lock(&self.compaction);
        let (window, includes_oldest, dead) = {
            let state = self.read();
            let Some(range) = pick(&state.runs, &state.docs) else {
                return Ok(false);
            };
            // Only deletions already flushed to a run may drop postings: one
            // still in the memtable lives only in the log, which a power
            // cut may shorten under `SyncPolicy::Never`, and the merged run
            // must not lose the postings of a mail that comes back.
            let memtable = &state.memtable.docs;
            let frozen = state.frozen.as_ref().map(|table| &table.docs);
            let durable_dead: HashSet<(u32, u64)> = state
                .docs
                .dead
                .iter()
                .filter(|key| {
                    !memtable.contains_key(key) && !frozen.is_some_and(|f| f.contains_key(key))
                })
                .copied()
                .collect();
            (
                state.runs[range.clone()].to_vec(),
                range.start == 0,
                durable_dead,
            )
        };
        let merged = self.merge(&window, includes_oldest, &dead)?;
        {
            let wal_start = lock(&self.manifest);
            let mut runs = self.read().runs.clone();
            let first = runs
                .iter()
                .position(|r| r.id == window[0].id)
                .ok_or_else(|| corrupt(&self.dir, "a run being merged left the run list"))?;
            let replaced = first..first + window.len();
            debug_assert!(runs[replaced.clone()]
                .iter()
                .zip(&window)
                .all(|(a, b)| a.id == b.id));
            runs.splice(replaced, merged.into_iter().map(Arc::new));
            self.write_manifest(*wal_start, &runs)?;
            self.write().runs = runs;
        }
        for run in &window {
            std::fs::remove_file(&run.path).map_err(io_error(&run.path))?;
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Merges `runs` (contiguous in age, oldest first) into one run, or
    /// into none when nothing is left. Postings of dead docs are dropped;
    /// tombstones are dropped too when the oldest run is among those merged,
    /// since no older run can hold postings they hide.
    fn merge(
        &self,
        runs: &[Arc<Run>],
        drop_tombstones: bool,
        dead: &HashSet<(u32, u64)>,
    ) -> Result<Option<Run>> {
        let run_id = self.next_run_id.fetch_add(1, Ordering::SeqCst);
        let path = self.run_path(run_id);
        let mut out = RunWriter::create(&path)?;
        let mut cursors: Vec<_> = runs.iter().map(|r| r.cursor()).collect();
        let mut heads = Vec::with_capacity(cursors.len());
        for cursor in &mut cursors {
            heads.push(cursor.next()?);
        }
        let mut value = Vec::new();
        let mut docs_buf = Vec::new();
        let mut same = Vec::new();
        let mut ends: Vec<(&[u8], u64, u64)> = Vec::new();
        while let Some(key) = heads.iter().flatten().map(|(k, _)| *k).min() {
            same.clear();
            same.extend((0..heads.len()).filter(|&i| heads[i].is_some_and(|(k, _)| k == key)));
            let user = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
            let bad = |i: usize| corrupt(&runs[i].path, "malformed posting list");
            let mut copied = false;
            if same.len() == 1 && dead.is_empty() {
                let (_, v) = heads[same[0]].unwrap_or_default();
                out.add(key, v)?;
                copied = true;
            } else {
                // Runs hold mail in arrival order, so the newest run's docs
                // are usually all above the older runs': then the lists are
                // spliced without decoding their positions.
                ends.clear();
                let mut alive = true;
                for &i in same.iter().rev() {
                    let (_, v) = heads[i].unwrap_or_default();
                    docs_buf.clear();
                    decode_docs(v, &mut docs_buf).ok_or_else(|| bad(i))?;
                    alive &= !docs_buf.iter().any(|&d| dead.contains(&(user, d)));
                    if let (Some(&first), Some(&last)) = (docs_buf.first(), docs_buf.last()) {
                        ends.push((v, first, last));
                    }
                }
                if alive && ends.len() == same.len() {
                    value.clear();
                    if concat_postings(&mut value, &ends).is_some() {
                        out.add(key, &value)?;
                        copied = true;
                    }
                }
            }
            if !copied {
                let mut merged = PostingList::default();
                for &i in &same {
                    let (_, v) = heads[i].unwrap_or_default();
                    let mut list = PostingList::default();
                    decode_full(v, &mut list).ok_or_else(|| bad(i))?;
                    merged = merge_postings(&merged, &list);
                }
                let keep: Vec<usize> = (0..merged.docs.len())
                    .filter(|&i| !dead.contains(&(user, merged.docs[i])))
                    .collect();
                if !keep.is_empty() {
                    value.clear();
                    encode_postings(
                        &mut value,
                        keep.iter()
                            .map(|&i| (merged.docs[i], merged.positions_of(i))),
                        keep.len(),
                    );
                    out.add(key, &value)?;
                }
            }
            for &i in &same {
                heads[i] = cursors[i].next()?;
            }
        }
        let mut docs: BTreeMap<(u32, u64), DocState> = BTreeMap::new();
        for run in runs {
            for (user, doc, state) in run.doc_records()? {
                docs.insert((user, doc), state);
            }
        }
        let records: Vec<DocRecord> = docs
            .into_iter()
            .filter(|(_, state)| !(drop_tombstones && *state == DocState::Dead))
            .map(|((user, doc), state)| (user, doc, state))
            .collect();
        out.finish(&records)?;
        sync_dir(&self.dir)?;
        let run = Run::open(&path, run_id)?;
        if run.key_count == 0 && run.doc_count == 0 {
            drop(run);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            return Ok(None);
        }
        Ok(Some(run))
    }
}

/// Writes a memtable's postings and doc states to a new run at `path`.
/// Postings of mail deleted while the memtable was current are left out.
fn write_run(path: &Path, table: &Memtable) -> Result<()> {
    let mut out = RunWriter::create(path)?;
    let dead: HashSet<(u32, u64)> = table
        .docs
        .iter()
        .filter(|(_, state)| **state == DocState::Dead)
        .map(|(&key, _)| key)
        .collect();
    let mut value = Vec::new();
    let mut live: Vec<crate::memtable::Entry> = Vec::new();
    let mut result = Ok(());
    table.sorted().for_each(|key, entries| {
        if result.is_err() {
            return;
        }
        let user = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        live.clear();
        live.extend(
            entries
                .iter()
                .rev()
                .filter(|e| dead.is_empty() || !dead.contains(&(user, e.doc)))
                .copied(),
        );
        if live.is_empty() {
            return;
        }
        value.clear();
        encode_postings(
            &mut value,
            live.iter().map(|e| (e.doc, table.entry_positions(e))),
            live.len(),
        );
        result = out.add(key, &value);
    });
    result?;
    let mut docs: Vec<DocRecord> = table
        .docs
        .iter()
        .map(|(&(user, doc), &state)| (user, doc, state))
        .collect();
    docs.sort_unstable_by_key(|&(user, doc, _)| (user, doc));
    out.finish(&docs)?;
    Ok(())
}

/// Size-tiered choice: the newest group of at least `width` adjacent runs in
/// one size tier (tiers grow by [`TIER_RATIO`] from `base` bytes), at most
/// [`MERGE_WIDTH_MAX`] of them; failing that, when there are more than
/// `runs_max` runs, the newest `width`.
pub(crate) fn pick_size_tiered(
    sizes: &[u64],
    width: usize,
    runs_max: usize,
    base: u64,
) -> Option<Range<usize>> {
    let tier = |size: u64| {
        let mut limit = base.max(1);
        let mut tier = 0u32;
        while size > limit {
            limit = limit.saturating_mul(TIER_RATIO);
            tier += 1;
        }
        tier
    };
    let mut end = sizes.len();
    while end > 0 {
        let t = tier(sizes[end - 1]);
        let mut start = end - 1;
        while start > 0 && tier(sizes[start - 1]) == t {
            start -= 1;
        }
        if end - start >= width {
            return Some(end.saturating_sub(MERGE_WIDTH_MAX).max(start)..end);
        }
        end = start;
    }
    (sizes.len() > runs_max).then(|| sizes.len() - width..sizes.len())
}

fn background_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut bg = lock(&shared.background);
            while !bg.pending && !bg.shutdown {
                bg = shared
                    .wake
                    .wait_timeout(bg, Duration::from_secs(1))
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if bg.shutdown {
                return;
            }
            bg.pending = false;
        }
        loop {
            if lock(&shared.background).shutdown {
                return;
            }
            match compact_step(&shared) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    lock(&shared.background).error = Some(e.to_string());
                    break;
                }
            }
        }
    }
}

/// What a background thread runs.
type ThreadBody = fn(Arc<Shared>);

/// The flush thread: writes each frozen memtable to a run. A failed flush
/// waits for the next writer that needs the slot, which tries it again.
fn flush_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut slot = lock(&shared.flush_slot);
            while !slot.shutdown && (slot.job.is_none() || slot.running || slot.failed) {
                slot = shared
                    .flush_changed
                    .wait(slot)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if slot.shutdown {
                return;
            }
        }
        // Errors are recorded in the slot and in `Stats`.
        let _ = shared.run_flush_job();
    }
}

fn compact_step(shared: &Shared) -> Result<bool> {
    let base = (shared.options.memtable_bytes_max / 2) as u64;
    shared.compact_with(|runs, _| {
        let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
        pick_size_tiered(
            &sizes,
            shared.options.merge_width,
            shared.options.runs_max,
            base,
        )
    })
}

/// The union of many doc id lists (a prefix's terms). When the user's ids
/// are dense (ids per user counting up, as IMAP UIDs do), a bitmap over
/// the user's id range takes each list without allocating or merging;
/// otherwise the lists are kept and merged at the end.
enum DocUnion {
    Bitmap { low: u64, high: u64, bits: Vec<u64> },
    Lists(Vec<Vec<u64>>),
}

impl DocUnion {
    fn new(docs: &BTreeMap<u64, DocState>) -> DocUnion {
        let (Some((&low, _)), Some((&high, _))) = (docs.first_key_value(), docs.last_key_value())
        else {
            return DocUnion::Lists(Vec::new());
        };
        let words = (high - low) / 64 + 1;
        // At most 16 bytes of bitmap per mail of the user.
        if words <= docs.len() as u64 * 2 + 64 {
            DocUnion::Bitmap {
                low,
                high,
                bits: vec![0; words as usize],
            }
        } else {
            DocUnion::Lists(Vec::new())
        }
    }

    /// Takes the ids in `list` (descending), leaving it empty or moved.
    fn add(&mut self, list: &mut Vec<u64>) {
        match self {
            DocUnion::Bitmap { low, high, bits } => {
                for &doc in list.iter() {
                    // Ids outside the doc table are mail it no longer knows.
                    if doc >= *low && doc <= *high {
                        let offset = doc - *low;
                        bits[(offset / 64) as usize] |= 1 << (offset % 64);
                    }
                }
            }
            DocUnion::Lists(lists) => lists.push(std::mem::take(list)),
        }
    }

    fn finish(self) -> Vec<u64> {
        match self {
            DocUnion::Bitmap { low, bits, .. } => {
                let mut out = Vec::new();
                for (i, &word) in bits.iter().enumerate().rev() {
                    let mut word = word;
                    while word != 0 {
                        let bit = 63 - u64::from(word.leading_zeros());
                        out.push(low + i as u64 * 64 + bit);
                        word &= !(1 << bit);
                    }
                }
                out
            }
            DocUnion::Lists(lists) => union_many(lists),
        }
    }
}

/// What a search reads: one consistent view under the state's read lock.
struct Searcher<'a> {
    user: u32,
    state: &'a State,
    docs: &'a BTreeMap<u64, DocState>,
}

impl Searcher<'_> {
    fn fields(field: Option<Field>) -> &'static [Field] {
        match field {
            None => &Field::ALL,
            Some(f) => &Field::ALL[f as usize..f as usize + 1],
        }
    }

    fn all(&self) -> Vec<u64> {
        self.docs
            .iter()
            .rev()
            .filter(|(_, s)| matches!(s, DocState::Live(_)))
            .map(|(&d, _)| d)
            .collect()
    }

    fn term(&self, field: Option<Field>, term: &str) -> Result<Vec<u64>> {
        let mut lists = Vec::new();
        let mut key = Vec::new();
        for &f in Self::fields(field) {
            make_key(&mut key, self.user, f, term.as_bytes());
            let mut list = Vec::new();
            for table in self.state.memtables() {
                table.docs_of(&key, &mut list);
                lists.push(std::mem::take(&mut list));
            }
            for run in &self.state.runs {
                if let Some(value) = run.get(&key)? {
                    let mut list = Vec::new();
                    decode_docs(value, &mut list)
                        .ok_or_else(|| corrupt(&run.path, "malformed posting list"))?;
                    lists.push(list);
                }
            }
        }
        Ok(union_many(lists))
    }

    fn prefix(&self, field: Option<Field>, prefix: &str) -> Result<Vec<u64>> {
        let mut docs = DocUnion::new(self.docs);
        let mut scratch = Vec::new();
        let mut key = Vec::new();
        let too_broad =
            || Error::QueryTooBroad(format!("'{prefix}*' matches over {PREFIX_TERMS_MAX} terms"));
        for &f in Self::fields(field) {
            make_key(&mut key, self.user, f, prefix.as_bytes());
            for table in self.state.memtables() {
                let mut terms = 0usize;
                table.for_each_prefix(&key, |_, list| {
                    terms += 1;
                    if terms > PREFIX_TERMS_MAX {
                        return Err(too_broad());
                    }
                    docs.add(list);
                    Ok(())
                })?;
            }
            for run in &self.state.runs {
                let mut terms = 0usize;
                run.scan_prefix(&key, |_, value| {
                    terms += 1;
                    if terms > PREFIX_TERMS_MAX {
                        return Err(too_broad());
                    }
                    scratch.clear();
                    decode_docs(value, &mut scratch)
                        .ok_or_else(|| corrupt(&run.path, "malformed posting list"))?;
                    docs.add(&mut scratch);
                    Ok(())
                })?;
            }
        }
        Ok(docs.finish())
    }

    /// A key's postings over every source. Sources are read newest first
    /// (memtables, then runs from the newest); mail arrives in id order, so
    /// each source's ids are usually all below the ones before it and its
    /// list is decoded straight onto the end of the result. A source that
    /// overlaps is merged in afterwards.
    fn postings(&self, key: &[u8]) -> Result<PostingList> {
        let mut out = PostingList::default();
        let mut overlapping = Vec::new();
        for table in self.state.memtables() {
            let mut list = PostingList::default();
            table.postings_of(key, &mut list);
            match (out.docs.last(), list.docs.first()) {
                (_, None) => {}
                (None, Some(_)) => out = list,
                (Some(&last), Some(&first)) if last > first => {
                    for i in 0..list.docs.len() {
                        out.push(list.docs[i], list.positions_of(i));
                    }
                }
                _ => overlapping.push(list),
            }
        }
        for run in self.state.runs.iter().rev() {
            let Some(value) = run.get(key)? else {
                continue;
            };
            let bad = || corrupt(&run.path, "malformed posting list");
            let first = first_doc(value).ok_or_else(bad)?;
            if out.docs.last().is_none_or(|&last| last > first) {
                decode_full(value, &mut out).ok_or_else(bad)?;
            } else {
                let mut list = PostingList::default();
                decode_full(value, &mut list).ok_or_else(bad)?;
                overlapping.push(list);
            }
        }
        for list in overlapping {
            out = merge_postings(&out, &list);
        }
        Ok(out)
    }

    fn phrase(&self, field: Option<Field>, terms: &[String]) -> Result<Vec<u64>> {
        let mut per_field = Vec::new();
        let mut key = Vec::new();
        for &f in Self::fields(field) {
            let mut lists = Vec::with_capacity(terms.len());
            for term in terms {
                make_key(&mut key, self.user, f, term.as_bytes());
                let list = self.postings(&key)?;
                if list.docs.is_empty() {
                    break;
                }
                lists.push(list);
            }
            if lists.len() < terms.len() {
                continue;
            }
            let mut candidates = lists[0].docs.clone();
            for list in &lists[1..] {
                candidates = intersect(&candidates, &list.docs);
            }
            fn find(list: &PostingList, doc: u64) -> Option<&[u32]> {
                list.docs
                    .binary_search_by(|probe| doc.cmp(probe))
                    .ok()
                    .map(|i| list.positions_of(i))
            }
            let mut hits = Vec::new();
            'docs: for doc in candidates {
                let positions: Vec<&[u32]> = lists.iter().filter_map(|l| find(l, doc)).collect();
                if positions.len() != lists.len() {
                    continue;
                }
                for &start in positions[0] {
                    let all = positions[1..].iter().enumerate().all(|(i, p)| {
                        start
                            .checked_add(i as u32 + 1)
                            .is_some_and(|want| p.binary_search(&want).is_ok())
                    });
                    if all {
                        hits.push(doc);
                        continue 'docs;
                    }
                }
            }
            per_field.push(hits);
        }
        Ok(union_many(per_field))
    }

    fn eval(&self, query: &Query) -> Result<Vec<u64>> {
        match query {
            Query::All => Ok(self.all()),
            Query::Term { field, term } => self.term(*field, term),
            Query::Prefix { field, prefix } => self.prefix(*field, prefix),
            Query::Phrase { field, terms } => match terms.len() {
                0 => Ok(Vec::new()),
                1 => self.term(*field, &terms[0]),
                _ => self.phrase(*field, terms),
            },
            Query::Or(items) => Ok(union_many(
                items
                    .iter()
                    .map(|q| self.eval(q))
                    .collect::<Result<Vec<_>>>()?,
            )),
            Query::Not(inner) => Ok(difference(&self.all(), &self.eval(inner)?)),
            Query::And(items) => {
                let mut positives = Vec::new();
                let mut negatives = Vec::new();
                for item in items {
                    match item {
                        Query::Not(inner) => negatives.push(&**inner),
                        other => positives.push(self.eval(other)?),
                    }
                }
                let mut result = if positives.is_empty() {
                    self.all()
                } else {
                    positives.sort_unstable_by_key(Vec::len);
                    let mut iter = positives.into_iter();
                    let mut result = iter.next().unwrap_or_default();
                    for list in iter {
                        if result.is_empty() {
                            break;
                        }
                        result = intersect(&result, &list);
                    }
                    result
                };
                for negative in negatives {
                    if result.is_empty() {
                        break;
                    }
                    result = difference(&result, &self.eval(negative)?);
                }
                Ok(result)
            }
        }
    }
}

/// Tokenizes the adds of a batch before any lock is taken, on up to
/// `threads` threads when the batch is large enough to pay for them.
fn prepare(ops: &[Op], threads: usize) -> Vec<Option<Prepared>> {
    let one = |op: &Op| match op {
        Op::Add(doc) => Some(Prepared::new(doc)),
        _ => None,
    };
    let threads = threads.min(ops.len() / TOKENIZE_OPS_PER_THREAD_MIN).max(1);
    if threads == 1 {
        return ops.iter().map(one).collect();
    }
    let chunk = ops.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = ops
            .chunks(chunk)
            .skip(1)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        let mut out: Vec<Option<Prepared>> = ops[..chunk.min(ops.len())].iter().map(one).collect();
        for handle in handles {
            // Tokenizing does not panic on any input; if it ever did, the
            // panic belongs to the caller.
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

impl Index {
    /// Opens the index in `dir`, creating it if needed, and recovers: the
    /// runs the manifest lists are opened and checked, files it does not
    /// list are removed (left by a crash during a flush or merge), and the
    /// log is replayed into the memtable, dropping a torn last frame.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Index> {
        options.check()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let manifest = Manifest::read(&dir)?.unwrap_or(Manifest {
            wal_start: 1,
            next_run: 1,
            runs: Vec::new(),
        });
        let mut wal_seqs = Vec::new();
        let mut next_run = manifest.next_run;
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale = if let Some(id) = parse_run_file_name(&name) {
                next_run = next_run.max(id + 1);
                !manifest.runs.contains(&id)
            } else if let Some(seq) = parse_wal_file_name(&name) {
                if seq >= manifest.wal_start {
                    wal_seqs.push(seq);
                }
                seq < manifest.wal_start
            } else {
                name == MANIFEST_TMP_FILE
            };
            if stale {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        wal_seqs.sort_unstable();

        let mut state = State {
            memtable: Memtable::default(),
            frozen: None,
            runs: Vec::new(),
            docs: DocTable::default(),
        };
        for &id in &manifest.runs {
            let run = Run::open(&dir.join(run_file_name(id)), id)?;
            for (user, doc, doc_state) in run.doc_records()? {
                state.docs.set(user, doc, doc_state);
            }
            state.runs.push(Arc::new(run));
        }
        let mut last = (manifest.wal_start, 0u64);
        for &seq in &wal_seqs {
            let (ops, valid_bytes) = read_wal(&dir.join(wal_file_name(seq)))?;
            for op in &ops {
                state.apply(op, None);
            }
            last = (seq, valid_bytes);
        }
        // Appends go to the newest log; older ones (left by a crash between
        // starting a log and writing the manifest) stay until the next flush.
        let wal = WalWriter::open(&dir, last.0, last.1)?;
        sync_dir(&dir)?;
        let shared = Arc::new(Shared {
            dir,
            writer: Mutex::new(Writer {
                wal,
                poisoned: None,
                frame: Vec::new(),
            }),
            state: RwLock::new(state),
            manifest: Mutex::new(manifest.wal_start),
            compaction: Mutex::new(()),
            next_run_id: AtomicU64::new(next_run),
            flushes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            background: Mutex::new(Background {
                pending: true,
                ..Background::default()
            }),
            wake: Condvar::new(),
            flush_slot: Mutex::new(FlushSlot::default()),
            flush_changed: Condvar::new(),
            spare: Mutex::new(None),
            options,
        });
        let mut index = Index {
            shared,
            threads: Vec::new(),
        };
        if index.shared.options.background_compaction {
            let loops: [(&str, ThreadBody); 2] = [
                ("sdi-lsm-merge", background_loop),
                ("sdi-lsm-flush", flush_loop),
            ];
            for (name, body) in loops {
                let shared = Arc::clone(&index.shared);
                let thread = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || body(shared))
                    .map_err(io_error(&PathBuf::from("<thread>")))?;
                // On an error above, dropping `index` stops the threads
                // already started.
                index.threads.push(thread);
            }
        }
        Ok(index)
    }

    /// Indexes one mail. Fails with [`Error::DuplicateDoc`] if the user
    /// already has (or had) a mail with this id.
    pub fn add(&self, doc: &Doc) -> Result<()> {
        self.write_batch(std::slice::from_ref(&Op::Add(doc.clone())))
    }

    /// Marks a mail deleted (a tombstone). Unknown or deleted mail: no-op.
    pub fn delete(&self, user: u32, doc: u64) -> Result<()> {
        self.write_batch(&[Op::Delete { user, doc }])
    }

    /// Replaces a mail's attributes (folder, flags, date); no posting list
    /// is touched. Unknown or deleted mail: no-op.
    pub fn set_attrs(&self, user: u32, doc: u64, attrs: Attrs) -> Result<()> {
        self.write_batch(&[Op::SetAttrs { user, doc, attrs }])
    }

    /// Applies `ops` in order as one log frame and (under
    /// [`SyncPolicy::Always`]) one sync: all or none of them survive a
    /// crash. Every op is checked first; on an error nothing is applied.
    pub fn write_batch(&self, ops: &[Op]) -> Result<()> {
        if ops.len() > BATCH_OPS_MAX {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} ops, over the limit of {BATCH_OPS_MAX}; split it",
                ops.len()
            )));
        }
        for op in ops {
            if let Op::Add(doc) = op {
                check_doc(doc)?;
            }
        }
        let shared = &*self.shared;
        let prepared = prepare(ops, shared.options.tokenize_threads);
        let mut writer = lock(&shared.writer);
        if let Some(reason) = &writer.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        // Check against the doc table and the batch's own earlier ops; keep
        // the ops that change something.
        let mut effective = Vec::with_capacity(ops.len());
        {
            let state = shared.read();
            let mut overlay: HashMap<(u32, u64), bool> = HashMap::new();
            for (i, op) in ops.iter().enumerate() {
                let (user, doc) = match op {
                    Op::Add(d) => (d.user, d.id),
                    Op::Delete { user, doc } | Op::SetAttrs { user, doc, .. } => (*user, *doc),
                };
                let known = overlay
                    .get(&(user, doc))
                    .copied()
                    .map(Some)
                    .unwrap_or_else(|| {
                        state
                            .docs
                            .get(user, doc)
                            .map(|s| matches!(s, DocState::Live(_)))
                    });
                match op {
                    Op::Add(_) => {
                        if known.is_some() {
                            return Err(Error::DuplicateDoc { user, doc });
                        }
                        overlay.insert((user, doc), true);
                        effective.push(i);
                    }
                    Op::Delete { .. } => {
                        if known == Some(true) {
                            overlay.insert((user, doc), false);
                            effective.push(i);
                        }
                    }
                    Op::SetAttrs { .. } => {
                        if known == Some(true) {
                            effective.push(i);
                        }
                    }
                }
            }
        }
        if effective.is_empty() {
            return Ok(());
        }
        let writer = &mut *writer;
        writer.frame.clear();
        let refs: Vec<&Op> = effective.iter().map(|&i| &ops[i]).collect();
        encode_frame(&mut writer.frame, &refs)?;
        let sync = shared.options.sync == SyncPolicy::Always;
        if let Err(e) = writer.wal.append(&writer.frame, sync) {
            writer.poisoned = Some(e.to_string());
            return Err(e);
        }
        {
            let mut state = shared.write();
            for &i in &effective {
                state.apply(&ops[i], prepared[i].as_ref());
            }
            if state.memtable.bytes < shared.options.memtable_bytes_max {
                return Ok(());
            }
        }
        // The memtable is full: freeze it and start a new one. The flush
        // thread writes the frozen one to a run while writes go on; a write
        // that fills the new one before that is done waits for it, so at
        // most two memtables exist. Without background threads the flush
        // runs here.
        //
        // The write is logged and applied, so it succeeded whatever the
        // flush does. A failed flush is reported through `Stats` and tried
        // again by the next write that fills the memtable.
        let flushed = shared.wait_flushed().and_then(|()| {
            if shared.freeze(writer)? && !shared.options.background_compaction {
                shared.wait_flushed()?;
            }
            Ok(())
        });
        if let Err(e) = flushed {
            lock(&shared.background).error = Some(format!("flush: {e}"));
        }
        Ok(())
    }

    /// Mail ids of `user` matching `query` and `filter`, newest (highest id)
    /// first, at most `limit`, all below `before` when given (pass the last
    /// id of a page to get the next page).
    pub fn search(
        &self,
        user: u32,
        query: &Query,
        filter: &Filter,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<u64>> {
        if limit > SEARCH_RESULTS_MAX {
            return Err(Error::InvalidArgument(format!(
                "limit {limit} is over {SEARCH_RESULTS_MAX}; page with `before`"
            )));
        }
        let state = self.shared.read();
        let Some(docs) = state.docs.users.get(&user) else {
            return Ok(Vec::new());
        };
        let bound = before.unwrap_or(u64::MAX);
        let accept = |doc: u64| match docs.get(&doc) {
            Some(DocState::Live(attrs)) => filter.matches(attrs),
            _ => false,
        };
        if *query == Query::All {
            return Ok(docs
                .range(..bound)
                .rev()
                .filter(|(_, s)| matches!(s, DocState::Live(a) if filter.matches(a)))
                .map(|(&d, _)| d)
                .take(limit)
                .collect());
        }
        let searcher = Searcher {
            user,
            state: &state,
            docs,
        };
        let matched = searcher.eval(query)?;
        let start = if before.is_some() {
            matched.partition_point(|&d| d >= bound)
        } else {
            0
        };
        Ok(matched[start..]
            .iter()
            .copied()
            .filter(|&d| accept(d))
            .take(limit)
            .collect())
    }

    /// The attributes of a live mail.
    pub fn attrs(&self, user: u32, doc: u64) -> Option<Attrs> {
        match self.shared.read().docs.get(user, doc)? {
            DocState::Live(attrs) => Some(attrs),
            DocState::Dead => None,
        }
    }

    /// Whether the index has ever seen mail `doc` of `user` (live or
    /// deleted): an id it knows cannot be added again.
    pub fn contains(&self, user: u32, doc: u64) -> bool {
        self.shared.read().docs.get(user, doc).is_some()
    }

    /// Every mail id of `user` the index knows, ascending, with its
    /// attributes (`None` for deleted mail): for checking the index
    /// against the mail store.
    pub fn docs_of(&self, user: u32) -> Vec<(u64, Option<Attrs>)> {
        let state = self.shared.read();
        let Some(docs) = state.docs.users.get(&user) else {
            return Vec::new();
        };
        docs.iter()
            .map(|(&doc, state)| match state {
                DocState::Live(attrs) => (doc, Some(*attrs)),
                DocState::Dead => (doc, None),
            })
            .collect()
    }

    /// Writes the memtable to a run now (a no-op when it is empty), after
    /// any flush in progress; on return every write so far is in a run.
    pub fn flush(&self) -> Result<()> {
        let mut writer = lock(&self.shared.writer);
        self.shared.wait_flushed()?;
        if self.shared.freeze(&mut writer)? {
            self.shared.wait_flushed()?;
        }
        Ok(())
    }

    /// Syncs the log, making every write so far survive a power cut.
    pub fn sync(&self) -> Result<()> {
        lock(&self.shared.writer).wal.sync()
    }

    /// One size-tiered merge if one is due; `Ok(false)` when none is.
    pub fn compact_step(&self) -> Result<bool> {
        compact_step(&self.shared)
    }

    /// Flushes, then merges every run into one, dropping deleted mail and
    /// tombstones.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        self.shared.compact_with(|runs, docs| {
            (runs.len() > 1 || (runs.len() == 1 && !docs.dead.is_empty())).then_some(0..runs.len())
        })?;
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let (wal_seq, wal_bytes) = {
            let writer = lock(&shared.writer);
            (writer.wal.seq, writer.wal.bytes)
        };
        let state = shared.read();
        Stats {
            run_bytes: state.runs.iter().map(|r| r.bytes).collect(),
            memtable_bytes: state.memtable.bytes,
            memtable_keys: state.memtable.key_count(),
            live_docs: state.docs.live,
            dead_docs: state.docs.dead.len() as u64,
            wal_seq,
            wal_bytes,
            flushes: shared.flushes.load(Ordering::Relaxed),
            compactions: shared.compactions.load(Ordering::Relaxed),
            background_error: lock(&shared.background).error.clone(),
        }
    }

    fn stop_background(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        lock(&self.shared.background).shutdown = true;
        self.shared.wake.notify_all();
        lock(&self.shared.flush_slot).shutdown = true;
        self.shared.flush_changed.notify_all();
        for thread in self.threads.drain(..) {
            // The threads only return or store their errors; a panic in one
            // has nothing left to clean up.
            let _ = thread.join();
        }
    }

    /// Stops the background threads, flushes the memtable (and a frozen
    /// one not yet written) and syncs: the next open replays nothing.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.flush()?;
        self.sync()
    }
}

impl Drop for Index {
    /// Stops the background threads (a merge or flush in progress finishes
    /// first). Nothing more is flushed or synced: dropping without [`Index::close`] is what a
    /// crash looks like to the files, and recovery handles it.
    fn drop(&mut self) {
        self.stop_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_tiered_picks() {
        let base = 100;
        assert_eq!(pick_size_tiered(&[50, 60, 70], 4, 24, base), None);
        assert_eq!(pick_size_tiered(&[50, 60, 70, 80], 4, 24, base), Some(0..4));
        assert_eq!(
            pick_size_tiered(&[5000, 50, 60, 70, 80], 4, 24, base),
            Some(1..5)
        );
        assert_eq!(
            pick_size_tiered(&[300, 300, 300, 300, 50, 60], 4, 24, base),
            Some(0..4)
        );
        let many: Vec<u64> = (0..30).map(|i| 1 << (i % 20)).collect();
        assert!(pick_size_tiered(&many, 4, 24, 1).is_some());
    }
}
