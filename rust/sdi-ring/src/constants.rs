//! Every limit and fixed size of the ring, in one place.
//!
//! Names carry their unit last (`record_bytes_max` is a byte count, the
//! maximum). The file format constants are part of the on-disk contract:
//! changing one means bumping [`FORMAT_VERSION`].

/// The first eight bytes of every ring file: `b"SDIRING\x01"` read as a little-endian u64.
pub const FORMAT_MAGIC: u64 = u64::from_le_bytes(*b"SDIRING\x01");

/// The version of the file layout described in `docs/internals/ring.md`.
pub const FORMAT_VERSION: u32 = 1;

/// The padding between fields written by different sides. Zen and recent
/// Intel cores prefetch cache lines in adjacent pairs, so 128 bytes (not 64)
/// keeps the producer's and consumer's lines from sharing a prefetch pair.
pub const CACHE_LINE_PAD_BYTES: usize = 128;

/// The size of the header at the start of the file; the data area follows it.
/// One page, so that the data area starts page aligned.
pub const HEADER_BYTES: usize = 4096;

/// Every record (header plus payload) starts and ends on this alignment.
pub const RECORD_ALIGN_BYTES: usize = 8;

/// The size of a record's header: a u32 payload length and a u32 kind.
pub const RECORD_HEADER_BYTES: usize = 8;

/// The smallest data area a ring may have.
pub const CAPACITY_BYTES_MIN: u64 = 64;

/// The largest data area a ring may have (1 TiB).
pub const CAPACITY_BYTES_MAX: u64 = 1 << 40;

/// The largest payload of one record (1 GiB). A record must also fit the
/// ring: its payload is at most `capacity_bytes - RECORD_HEADER_BYTES`.
pub const RECORD_BYTES_MAX: usize = 1 << 30;

/// The most records one batch call may push or pop.
pub const BATCH_RECORDS_MAX: usize = 1 << 24;

/// How often a waiting side reads `/proc` to check that its peer is alive.
/// Reading `/proc/<pid>/stat` costs a few microseconds, so it is kept off
/// the fast path and done at this interval while waiting.
pub const LIVENESS_CHECK_INTERVAL_MICROS: u64 = 2_000;

/// Busy-spin rounds before the spin-then-yield strategy starts yielding.
pub const SPIN_BEFORE_YIELD_ROUNDS: u32 = 4_096;

/// Busy-spin rounds before the sleep strategy starts sleeping.
pub const SPIN_BEFORE_SLEEP_ROUNDS: u32 = 64;

/// The first sleep of the sleep strategy; each next sleep doubles.
pub const SLEEP_MICROS_MIN: u64 = 10;

/// The longest single sleep of the sleep strategy.
pub const SLEEP_MICROS_MAX: u64 = 1_000;

/// Bits of the owner word that hold the process id. Linux caps pids at
/// 2^22 (`PID_MAX_LIMIT`), so a pid always fits.
pub const OWNER_PID_BITS: u32 = 22;

/// Bits of the owner word that hold the process start time, in clock ticks
/// since boot (at 100 Hz, 2^42 ticks is over a thousand years).
pub const OWNER_START_TICKS_BITS: u32 = 64 - OWNER_PID_BITS;
