//! A lock-free single-producer single-consumer ring buffer over a shared
//! memory map, for two threads or two processes.
//!
//! The ring lives in a file (usually under `/dev/shm`) made of a 4096-byte
//! header and a power-of-two data area. The producer appends variable-length
//! records (an 8-byte header, the payload, padding to 8 bytes) and publishes
//! its tail once per batch with release ordering; the consumer reads up to
//! the tail it loaded with acquire ordering and publishes its head once per
//! batch. Each side caches the other's index and re-reads it only when it
//! runs out of records or space, so the fast path makes no syscalls and
//! takes no locks. See `docs/internals/ring.md` for the format and the
//! argument for why a torn record is never visible.
//!
//! ```
//! let directory = std::env::temp_dir().join(format!("sdi-ring-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&directory).unwrap();
//! let path = directory.join("ring");
//! sdi_ring::create(&path, 4096, true).unwrap();
//! let mut producer = sdi_ring::Producer::attach(&path).unwrap();
//! let mut consumer = sdi_ring::Consumer::attach(&path).unwrap();
//! assert_eq!(producer.try_push_many(&[b"hello", b"ring"]).unwrap(), 2);
//! assert_eq!(consumer.try_pop_vec(10).unwrap(), vec![b"hello".to_vec(), b"ring".to_vec()]);
//! std::fs::remove_dir_all(&directory).unwrap();
//! ```

pub mod constants;
mod consumer;
mod error;
pub mod layout;
mod liveness;
mod producer;
mod region;
mod wait;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use consumer::{Consumer, Visit};
pub use error::{Error, Result, Role};
pub use liveness::PeerState;
pub use producer::Producer;
pub use wait::{Readiness, WaitStrategy};

use layout::{
    CONSUMER_CLOSED_OFFSET, CONSUMER_OWNER_OFFSET, HEAD_RECORDS_OFFSET, PRODUCER_CLOSED_OFFSET,
    PRODUCER_OWNER_OFFSET, TAIL_RECORDS_OFFSET,
};
use region::Region;

/// Creates a ring file of `capacity_bytes` (a power of two) at `path`. Fails
/// if the file exists, unless `overwrite` is set.
pub fn create(path: impl AsRef<Path>, capacity_bytes: u64, overwrite: bool) -> Result<()> {
    Region::create(path.as_ref(), capacity_bytes, overwrite).map(drop)
}

/// A producer and a consumer over one anonymous mapping, for two threads of
/// one process.
pub fn pair(capacity_bytes: u64) -> Result<(Producer, Consumer)> {
    let region = Arc::new(Region::anonymous(capacity_bytes)?);
    let producer = Producer::claim(Arc::clone(&region))?;
    let consumer = Consumer::claim(region)?;
    Ok((producer, consumer))
}

/// What a ring's header says, read without claiming a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// The size of the data area.
    pub capacity_bytes: u64,
    /// Bytes published and not yet popped.
    pub used_bytes: u64,
    /// Records published and not yet popped.
    pub len_records: u64,
    /// The producer's state.
    pub producer: PeerState,
    /// The consumer's state.
    pub consumer: PeerState,
}

/// Opens the ring file at `path`, checks its header and reports its state.
pub fn inspect(path: impl AsRef<Path>) -> Result<RingInfo> {
    let region = Region::open(path.as_ref())?;
    let head = region.head().load(Ordering::Acquire);
    let tail = region.tail().load(Ordering::Acquire);
    region.check_span(head, tail)?;
    let pushed = region.word(TAIL_RECORDS_OFFSET).load(Ordering::Acquire);
    let popped = region.word(HEAD_RECORDS_OFFSET).load(Ordering::Acquire);
    Ok(RingInfo {
        capacity_bytes: region.capacity_bytes(),
        used_bytes: tail - head,
        len_records: pushed.saturating_sub(popped),
        producer: liveness::peer_state(
            region.word(PRODUCER_OWNER_OFFSET),
            region.word(PRODUCER_CLOSED_OFFSET),
        )
        .0,
        consumer: liveness::peer_state(
            region.word(CONSUMER_OWNER_OFFSET),
            region.word(CONSUMER_CLOSED_OFFSET),
        )
        .0,
    })
}
