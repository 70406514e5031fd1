//! The email service's search index (book chapter 8): an LSM-tree inverted
//! index, because every incoming mail is an index write. Pure Rust; the
//! Python bindings and the service build on it.
//!
//! # Model
//!
//! A mail ([`Doc`]) belongs to a user (`u32`, the partition key) and has an
//! id (`u64`) that the caller assigns in arrival order, so "newest first" is
//! descending id. Ids are per user and never reused. Its text comes in
//! fields ([`Field`]: from, to/cc, subject, body, attachment names); its
//! mutable attributes ([`Attrs`]: date, folder, flags such as
//! [`FLAG_READ`]) live apart from the postings in a doc table, so marking a
//! mail read or moving it rewrites no posting list. Deleting a mail leaves a
//! tombstone in the doc table; its postings are skipped by queries and
//! dropped by merges.
//!
//! The [`tokenize`] module splits text into lowercase words with common
//! Latin accents folded (`Réunion` = `reunion`), one position per word per
//! field (for phrases), and indexes each email address whole as well as by
//! its parts.
//!
//! # Write path
//!
//! A write ([`Index::add`], [`Index::delete`], [`Index::set_attrs`], or any
//! mix of them in one [`Index::write_batch`]) is checked, tokenized outside
//! any lock (on [`Options::tokenize_threads`] threads for a large batch),
//! appended to the write-ahead log as one frame, synced if the
//! [`SyncPolicy`] says so (a batch is one write and one `fdatasync`: group
//! commit), then applied to the memtable and the doc table.
//!
//! The memtable keeps every posting as a node in one arena, in arrival
//! order, chained to the previous node of its key; keys live in a byte
//! arena found through an open-addressing table whose 32-byte cells hold
//! the key's first 16 bytes and the head of its chain. An insert appends a
//! node and touches one cell (and, for a term over 11 bytes, the key
//! arena): no allocation per key or per posting. A flush groups the nodes
//! by key with one counting sort and sorts the keys.
//!
//! When the memtable passes `memtable_bytes_max` the writer freezes it,
//! starts a new log and an empty memtable (reusing the last flushed one's
//! allocations), and goes on; the flush thread writes the frozen memtable
//! to a run, then, in one step under the state lock, lists the run in the
//! manifest (whose first log to replay becomes the new log), drops the
//! frozen memtable and deletes its log. Searches read both memtables
//! meanwhile. A writer that fills the new memtable before the flush is
//! done waits for it, so at most two memtables exist. Without background
//! threads ([`Options::background_compaction`] false) the writer flushes.
//!
//! Keys are `user (u32 big-endian) | field (u8) | term (UTF-8)`, so each
//! user's postings form one contiguous key range in every run (the per-user
//! partition) and a prefix query is a range scan.
//!
//! # Files
//!
//! All integers little-endian unless said otherwise.
//!
//! - `wal-<seq>.log`: the log since the last flush; frames of
//!   `payload_bytes u32, crc32c u32, payload`, one per write call (layout in
//!   the `wal` module). Mail text is logged, not tokens: replay tokenizes
//!   again, which is deterministic.
//! - `run-<id>.sst`: a sorted run, written once (by a flush or a merge),
//!   synced, then only read (memory-mapped) until a merge replaces it.
//!
//!   ```text
//!   data blocks   entries (key_len varint, value_len varint, key, value)
//!                 in key order, about 16 KiB, then crc32c u32 of the block
//!   block index   count varint; per block: last_key_len varint, last_key,
//!                 offset varint, length varint (CRC included)
//!   bloom filter  about 10 bits per key in 64-byte blocks: the high bits of
//!                 a 64-bit hash of the full key pick the block (multiply-
//!                 shift), six 9-bit fields of its low bits the bits in it
//!                 (version 1: 10 bits per key, 6 probes by double hashing
//!                 over the whole filter; still read)
//!   doc table     count varint; per doc in (user, doc) order: user u32,
//!                 doc u64, state u8 (0 tombstone, 1 live), and if live
//!                 date i64, folder u32, flags u32
//!   footer        92 bytes: magic "SDILSMR1", version u32, offsets and
//!                 lengths (u64) of index, bloom and doc table, key count
//!                 u64, doc count u64, crc32c u32 of each of the three
//!                 sections, crc32c u32 of the footer before it
//!   ```
//!
//!   A value is a posting list: `count varint, doc_bytes varint`, the doc
//!   ids descending (the first in full, then gaps, varints), then per doc
//!   its positions (count, first, gaps; varints). Doc ids come first as
//!   their own section, so queries that need no positions decode only them.
//!   Opening a run checks the footer, index, bloom and doc table checksums;
//!   every block's checksum is checked each time the block is read. A
//!   mismatch is [`Error::Corrupt`], never a wrong answer.
//! - `MANIFEST`: the live runs (oldest first), the first log to replay and
//!   the next run id, with a CRC-32C; replaced atomically (write
//!   `MANIFEST.tmp`, fsync, rename, fsync the directory).
//!
//! # Recovery
//!
//! [`Index::open`] reads the manifest, deletes files it does not list (a
//! run from a flush or merge that crashed before its manifest, logs already
//! flushed), opens the runs and loads their doc tables oldest to newest
//! (newer records win), then replays every log from the manifest's on into
//! the memtable. A log ends at its first torn or damaged frame, which is cut
//! off: it was a write the process died in, never acknowledged under
//! [`SyncPolicy::Always`]. A damaged frame followed by good ones is not told
//! apart from a torn tail (the log holds only writes since the last flush).
//!
//! # Compaction: size-tiered, and why
//!
//! Runs are merged size-tiered: runs fall into tiers by size (each tier
//! [`constants::TIER_RATIO`] times the one below, starting at half the
//! memtable size), and when `merge_width` runs adjacent in age share a tier
//! they are merged into one. Mail ingest is write-heavy (every delivery is
//! an index write, searches are rarer and per user): size-tiered merging
//! rewrites each posting about once per tier, log(N) times in all, where
//! leveled merging rewrites it about `ratio` times per level. What it costs
//! is read amplification (a query looks at every run) and space during a
//! merge; the bloom filters make an exact-term lookup in a run without the
//! key cost a few hash probes, and `runs_max` bounds the run count by
//! merging the newest runs whatever their sizes. Only runs adjacent in age
//! are merged, so the newest record of a doc always wins. A merge drops the
//! postings of deleted mail whose tombstone is already in a run (one still
//! only in the log could be lost to a power cut under
//! [`SyncPolicy::Never`], and the mail must then come back whole); a merge
//! that includes the oldest run drops the tombstones too, as no older run
//! can hold postings they would hide. Runs hold mail in arrival order, so
//! a key's list in a newer run usually has only higher doc ids than in the
//! older runs: then the merge splices the encoded lists (re-encoding only
//! the first doc id of each) instead of decoding and re-encoding positions.
//! Merges run on a thread the index owns ([`Options::background_compaction`])
//! or when the caller calls [`Index::compact_step`]; [`Index::compact`]
//! merges everything into one run.
//!
//! # Queries
//!
//! [`parse_query`] reads a small language (terms, `pre*`, `"phrases"`,
//! `field:term`, `AND` (or juxtaposition), `OR`, `NOT`/`-term`,
//! parentheses) into a [`Query`]. Exact terms are looked up per source
//! (memtable, then each run through its bloom filter and block index);
//! prefixes scan the key range; phrases intersect the terms' doc lists and
//! check positions. Doc id lists are merged, intersected (galloping through
//! the longer list) and subtracted in descending order; the many lists of a
//! prefix are gathered in a bitmap over the user's id range when the ids
//! are dense (per-user counters), merged pairwise otherwise. Evaluation
//! materializes each operand's doc ids: cost grows with the postings the
//! query touches, not with `limit`. Then the doc table
//! drops deleted mail and applies the [`Filter`] (folder, date range, read,
//! starred), and the first `limit` ids below the `before` cursor come back,
//! newest first. Results are exact: no bloom false positive reaches them
//! (a bloom hit is always confirmed by the key), and prefixes are complete.
//!
//! # Concurrency
//!
//! All methods take `&self`. Writers are serialized by one lock; searches
//! take a read lock on the memtables, run list and doc table, so they run
//! alongside each other and between writes; a flush or a merge holds no
//! lock while it writes its run and swaps it in under the write lock. One process owns a directory at a time (there is no lock file).
//!
//! # Limits
//!
//! Every limit is in [`constants`]; work past one is refused with an error.

mod codec;
pub mod constants;
mod doc;
mod error;
mod index;
mod manifest;
mod memtable;
mod query;
mod run;
pub mod tokenize;
mod wal;

pub use doc::{Attrs, Doc, Field, Filter, Op, FLAG_READ, FLAG_STARRED};
pub use error::{Error, Result};
pub use index::{Index, Options, Stats, SyncPolicy};
pub use query::{parse_query, Query};

/// A fresh directory for a unit test.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sdi-lsm-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
