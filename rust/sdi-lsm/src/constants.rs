//! Every limit of the index core, in one place. Units are last in each name.

/// Longest token kept, in bytes of its normalized form. Longer words (base64
/// runs, URLs without separators) are skipped but still take a position, so
/// phrases around them stay honest.
pub const TOKEN_BYTES_MAX: usize = 64;
/// Longest email address indexed as a whole token, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 254;
/// Largest text of one document (all fields together), in bytes.
pub const DOC_TEXT_BYTES_MAX: usize = 16 << 20;
/// Most fields (entries of [`crate::Doc::fields`]) one document may carry.
pub const DOC_FIELDS_MAX: usize = 4096;
/// Most operations one [`crate::Index::write_batch`] call may carry.
pub const BATCH_OPS_MAX: usize = 1 << 16;
/// Largest write-ahead log frame (one batch), payload only.
pub const WAL_FRAME_BYTES_MAX: usize = 256 << 20;
/// Bytes in front of each write-ahead log frame: payload length u32, CRC-32C u32.
pub const WAL_FRAME_HEADER_BYTES: usize = 8;
/// Memtable size at which a flush starts when the options do not say.
pub const MEMTABLE_BYTES_DEFAULT: usize = 64 << 20;
/// Smallest memtable limit the options may ask for (small ones are for tests).
pub const MEMTABLE_BYTES_MIN: usize = 4 << 10;
/// Largest memtable limit the options may ask for; positions in the memtable
/// are addressed by `u32`.
pub const MEMTABLE_BYTES_MAX: usize = 1 << 30;
/// Target size of a data block in a run, before its CRC.
pub const BLOCK_BYTES_TARGET: usize = 16 << 10;
/// Bloom filter bits per key (about 0.8% false positives with 6 probes).
pub const BLOOM_BITS_PER_KEY: usize = 10;
/// Probes per bloom filter lookup.
pub const BLOOM_PROBES: u32 = 6;
/// Runs merged at once by size-tiered compaction when the options do not say.
pub const MERGE_WIDTH_DEFAULT: usize = 4;
/// Most runs merged at once.
pub const MERGE_WIDTH_MAX: usize = 32;
/// Size ratio between tiers: runs whose sizes are within this factor of one
/// another are in the same tier.
pub const TIER_RATIO: u64 = 4;
/// Runs at which compaction merges the newest runs whatever their sizes, to
/// bound the number of runs a query reads.
pub const RUNS_MAX_DEFAULT: usize = 24;
/// Most threads that tokenize one batch.
pub const TOKENIZE_THREADS_MAX: usize = 16;
/// Ops per tokenizing thread below which a batch is not split (a thread
/// costs tens of microseconds; a mail takes tens to tokenize).
pub const TOKENIZE_OPS_PER_THREAD_MIN: usize = 32;
/// Most results one search may return.
pub const SEARCH_RESULTS_MAX: usize = 10_000;
/// Most distinct terms a prefix may expand to in one field of one source.
pub const PREFIX_TERMS_MAX: usize = 20_000;
/// Most nodes in a parsed query.
pub const QUERY_NODES_MAX: usize = 256;
/// Longest query string, in bytes.
pub const QUERY_BYTES_MAX: usize = 4096;
/// Deepest nesting of parentheses in a query.
pub const QUERY_DEPTH_MAX: usize = 32;
/// Most terms in one phrase.
pub const PHRASE_TERMS_MAX: usize = 32;
/// Magic bytes at the start of a run's footer.
pub const RUN_MAGIC: &[u8; 8] = b"SDILSMR1";
/// Version of the run format written: 2 has the blocked bloom filter.
/// Version 1 runs (a bloom filter over the whole run) are still read, and
/// merges rewrite them as version 2.
pub const RUN_VERSION: u32 = 2;
/// Bytes of one block of a version 2 bloom filter: one cache line, which
/// holds all of a key's probes.
pub const BLOOM_BLOCK_BYTES: usize = 64;
/// Bytes of a run's footer (see the crate docs for its layout).
pub const RUN_FOOTER_BYTES: usize = 8 + 4 + 8 * 8 + 4 * 3 + 4;
