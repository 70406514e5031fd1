//! The producing end: writes records, publishes the tail once per batch.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::constants::{BATCH_RECORDS_MAX, RECORD_HEADER_BYTES};
use crate::error::{Error, Result, Role};
use crate::layout::{
    encode_record_header, framed_bytes, CONSUMER_CLOSED_OFFSET, CONSUMER_OWNER_OFFSET,
    HEAD_RECORDS_OFFSET, KIND_DATA, KIND_PADDING, PRODUCER_CLOSED_OFFSET, PRODUCER_OWNER_OFFSET,
    TAIL_RECORDS_OFFSET,
};
use crate::liveness::{
    claim, holder_alive, own_owner_word, owner_pid, peer_state, release, PeerState,
};
use crate::region::{copy_record, record_bytes_max_for, Region};
use crate::wait::{Readiness, WaitStrategy, Waiter};

/// The one producer of a ring.
///
/// Records are written after the published tail and become visible to the
/// consumer only when a batch call ends by storing the new tail with release
/// ordering, so a producer killed mid-write leaves nothing torn behind.
pub struct Producer {
    region: Arc<Region>,
    // The next byte to write; ahead of `published_tail` only inside a call.
    tail: u64,
    published_tail: u64,
    // The consumer's head as last read; re-read only when space runs short.
    head_cache: u64,
    records_pushed: u64,
    record_bytes_max: usize,
    me: u64,
    closed: bool,
}

impl Producer {
    /// Opens the ring file at `path` and claims its producer role.
    pub fn attach(path: impl AsRef<Path>) -> Result<Producer> {
        Producer::claim(Arc::new(Region::open(path.as_ref())?))
    }

    pub(crate) fn claim(region: Arc<Region>) -> Result<Producer> {
        let me = own_owner_word()?;
        let owner = region.word(PRODUCER_OWNER_OFFSET);
        let closed = region.word(PRODUCER_CLOSED_OFFSET);
        claim(owner, closed, Role::Producer, me)?;
        let tail = region.tail().load(Ordering::Acquire);
        let head = region.head().load(Ordering::Acquire);
        if let Err(error) = region.check_span(head, tail) {
            release(owner, closed, me, false);
            return Err(error);
        }
        Ok(Producer {
            tail,
            published_tail: tail,
            head_cache: head,
            records_pushed: region.word(TAIL_RECORDS_OFFSET).load(Ordering::Relaxed),
            record_bytes_max: record_bytes_max_for(region.capacity_bytes()),
            region,
            me,
            closed: false,
        })
    }

    /// The size of the data area.
    pub fn capacity_bytes(&self) -> u64 {
        self.region.capacity_bytes()
    }

    /// The largest payload one record may carry in this ring.
    pub fn record_bytes_max(&self) -> usize {
        self.record_bytes_max
    }

    /// Bytes in the ring not yet popped (record headers and padding included).
    pub fn used_bytes(&mut self) -> Result<u64> {
        self.check_open()?;
        self.refresh_head()?;
        Ok(self.tail - self.head_cache)
    }

    /// Bytes free for new records (some may go to padding at the wrap).
    pub fn free_bytes(&mut self) -> Result<u64> {
        Ok(self.capacity_bytes() - self.used_bytes()?)
    }

    /// Records pushed and not yet popped, as the two counters in the header
    /// say at this moment.
    pub fn len_records(&self) -> Result<u64> {
        self.check_open()?;
        let popped = self
            .region
            .word(HEAD_RECORDS_OFFSET)
            .load(Ordering::Acquire);
        Ok(self.records_pushed.saturating_sub(popped))
    }

    /// The consumer's state, read from the header and `/proc`.
    pub fn consumer_state(&self) -> PeerState {
        peer_state(
            self.region.word(CONSUMER_OWNER_OFFSET),
            self.region.word(CONSUMER_CLOSED_OFFSET),
        )
        .0
    }

    /// Pushes one record if it fits now; `Ok(false)` if the ring is too full.
    pub fn try_push(&mut self, payload: &[u8]) -> Result<bool> {
        Ok(self.try_push_many(&[payload])? == 1)
    }

    /// Pushes the longest prefix of `records` that fits now and returns its
    /// length. Never writes part of a record. A record over
    /// [`record_bytes_max`](Self::record_bytes_max) fails the whole call with
    /// `RecordTooLarge` before anything is written.
    pub fn try_push_many(&mut self, records: &[&[u8]]) -> Result<usize> {
        self.check_open()?;
        self.check_batch(records.len())?;
        if let Some((index, record)) = records
            .iter()
            .enumerate()
            .find(|(_, record)| record.len() > self.record_bytes_max)
        {
            return Err(self.too_large(index, record.len()));
        }
        self.push_records(records.iter().copied())
    }

    /// Pushes the longest prefix of the fixed-size records packed in `rows`
    /// (`rows.len()` must be a multiple of `row_bytes`) that fits now.
    pub fn try_push_rows(&mut self, rows: &[u8], row_bytes: usize) -> Result<usize> {
        self.check_open()?;
        self.check_rows(rows, row_bytes)?;
        self.push_records(rows.chunks_exact(row_bytes))
    }

    /// Like [`try_push_many`](Self::try_push_many), but first waits until at
    /// least the first record fits. Returns `None` if `deadline` passed first.
    pub fn push_many_wait(
        &mut self,
        records: &[&[u8]],
        deadline: Option<Instant>,
        strategy: WaitStrategy,
    ) -> Result<Option<usize>> {
        let first = records.first().map_or(0, |record| record.len());
        self.push_wait(first, deadline, strategy, |producer| {
            producer.try_push_many(records)
        })
    }

    /// Like [`try_push_rows`](Self::try_push_rows), but first waits until at
    /// least one row fits. Returns `None` if `deadline` passed first.
    pub fn push_rows_wait(
        &mut self,
        rows: &[u8],
        row_bytes: usize,
        deadline: Option<Instant>,
        strategy: WaitStrategy,
    ) -> Result<Option<usize>> {
        self.check_open()?;
        self.check_rows(rows, row_bytes)?;
        self.push_wait(row_bytes, deadline, strategy, |producer| {
            producer.try_push_rows(rows, row_bytes)
        })
    }

    fn push_wait(
        &mut self,
        first_payload_bytes: usize,
        deadline: Option<Instant>,
        strategy: WaitStrategy,
        mut attempt: impl FnMut(&mut Producer) -> Result<usize>,
    ) -> Result<Option<usize>> {
        let pushed = attempt(self)?;
        if pushed > 0 {
            return Ok(Some(pushed));
        }
        if first_payload_bytes > self.record_bytes_max {
            return Err(self.too_large(0, first_payload_bytes));
        }
        loop {
            match self.wait_for_space(first_payload_bytes, deadline, strategy)? {
                Readiness::Ready => {
                    let pushed = attempt(self)?;
                    if pushed > 0 {
                        return Ok(Some(pushed));
                    }
                }
                Readiness::TimedOut | Readiness::Finished => return Ok(None),
            }
        }
    }

    /// Waits until a record with `payload_bytes` of payload fits. Fails with
    /// `PeerGone` if the consumer died, and `PeerClosed` if it closed, while
    /// the ring stayed too full.
    pub fn wait_for_space(
        &mut self,
        payload_bytes: usize,
        deadline: Option<Instant>,
        strategy: WaitStrategy,
    ) -> Result<Readiness> {
        self.check_open()?;
        if payload_bytes > self.record_bytes_max {
            return Err(self.too_large(0, payload_bytes));
        }
        let total = framed_bytes(payload_bytes);
        let mut waiter = Waiter::new(strategy, deadline);
        loop {
            let room = self.make_room(total);
            self.publish();
            if room? {
                return Ok(Readiness::Ready);
            }
            let owner = self
                .region
                .word(CONSUMER_OWNER_OFFSET)
                .load(Ordering::Acquire);
            if owner == 0
                && self
                    .region
                    .word(CONSUMER_CLOSED_OFFSET)
                    .load(Ordering::Acquire)
                    != 0
            {
                return Err(Error::PeerClosed(Role::Consumer));
            }
            if owner != 0 && waiter.liveness_due() && !holder_alive(owner) {
                if self.make_room(total)? {
                    self.publish();
                    return Ok(Readiness::Ready);
                }
                return Err(Error::PeerGone {
                    role: Role::Consumer,
                    pid: owner_pid(owner),
                    detail: " and left the ring too full for this record",
                });
            }
            if waiter.expired() {
                return Ok(Readiness::TimedOut);
            }
            waiter.pause();
        }
    }

    /// Publishes, marks the producer closed and releases the role. The
    /// consumer reads what is left, then sees a clean end.
    pub fn close(&mut self) {
        if !self.closed {
            self.publish();
            self.closed = true;
            release(
                self.region.word(PRODUCER_OWNER_OFFSET),
                self.region.word(PRODUCER_CLOSED_OFFSET),
                self.me,
                true,
            );
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed(Role::Producer));
        }
        Ok(())
    }

    fn check_batch(&self, records: usize) -> Result<()> {
        if records > BATCH_RECORDS_MAX {
            return Err(Error::BatchTooLarge {
                records,
                max: BATCH_RECORDS_MAX,
            });
        }
        Ok(())
    }

    fn check_rows(&self, rows: &[u8], row_bytes: usize) -> Result<()> {
        if row_bytes > self.record_bytes_max {
            return Err(self.too_large(0, row_bytes));
        }
        if row_bytes == 0 {
            if !rows.is_empty() {
                return Err(Error::InvalidArgument(
                    "row_bytes is 0 but rows is not empty".to_owned(),
                ));
            }
            return Ok(());
        }
        if rows.len() % row_bytes != 0 {
            return Err(Error::InvalidArgument(format!(
                "rows holds {} bytes, not a whole number of {row_bytes}-byte rows",
                rows.len()
            )));
        }
        self.check_batch(rows.len() / row_bytes)
    }

    fn too_large(&self, index: usize, bytes: usize) -> Error {
        Error::RecordTooLarge {
            index,
            bytes,
            max: self.record_bytes_max,
        }
    }

    /// The hot loop: copies records in while they fit, then publishes once.
    /// Every length was checked against `record_bytes_max` by the caller.
    #[inline]
    fn push_records<'a>(&mut self, records: impl Iterator<Item = &'a [u8]>) -> Result<usize> {
        let mut pushed = 0;
        let mut outcome = Ok(());
        for payload in records {
            let total = framed_bytes(payload.len());
            match self.make_room(total) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
            self.write_record(payload, total);
            pushed += 1;
        }
        self.records_pushed += pushed as u64;
        self.publish();
        outcome.map(|()| pushed)
    }

    /// Makes the next `total` bytes writable without a wrap inside them:
    /// writes a padding record up to the end of the data area when the
    /// record would straddle it. Returns whether the record fits now. The
    /// padding is written even when the record then does not fit, so that a
    /// record as large as the ring can always go in once the ring drains.
    #[inline]
    fn make_room(&mut self, total: u64) -> Result<bool> {
        let capacity = self.region.capacity_bytes();
        let offset = self.tail & (capacity - 1);
        let contiguous = capacity - offset;
        let needed = if total > contiguous {
            contiguous + total
        } else {
            total
        };
        let mut free = capacity - (self.tail - self.head_cache);
        if free < needed {
            self.refresh_head()?;
            free = capacity - (self.tail - self.head_cache);
        }
        if total > contiguous && free >= contiguous {
            self.write_padding(offset, contiguous);
            free -= contiguous;
        }
        // After any padding the record starts at the wrap, where `total` bytes
        // are contiguous; without padding it fits before the wrap.
        Ok(free >= total)
    }

    #[inline]
    fn write_padding(&mut self, offset: u64, bytes: u64) {
        let payload = (bytes - RECORD_HEADER_BYTES as u64) as u32;
        self.region.record_word(offset).store(
            encode_record_header(payload, KIND_PADDING),
            Ordering::Relaxed,
        );
        self.tail += bytes;
    }

    #[inline]
    fn write_record(&mut self, payload: &[u8], total: u64) {
        let capacity = self.region.capacity_bytes();
        let offset = self.tail & (capacity - 1);
        assert!(offset + total <= capacity, "record would straddle the wrap");
        self.region.record_word(offset).store(
            encode_record_header(payload.len() as u32, KIND_DATA),
            Ordering::Relaxed,
        );
        // SAFETY: make_room established offset + total <= capacity and that
        // these bytes lie after the published tail, so the consumer does not
        // read them until the release store in `publish`; the source is a
        // caller's slice, which cannot overlap the mapping we own.
        unsafe {
            copy_record(
                payload.as_ptr(),
                self.region
                    .data()
                    .add(offset as usize + RECORD_HEADER_BYTES),
                payload.len(),
            );
        }
        self.tail += total;
    }

    /// Stores the tail with release ordering: every byte written before it
    /// is visible to a consumer that loads this tail with acquire ordering.
    #[inline]
    fn publish(&mut self) {
        if self.tail != self.published_tail {
            self.region
                .word(TAIL_RECORDS_OFFSET)
                .store(self.records_pushed, Ordering::Relaxed);
            self.region.tail().store(self.tail, Ordering::Release);
            self.published_tail = self.tail;
        }
    }

    /// Re-reads the consumer's head; it is untrusted and checked.
    #[inline]
    fn refresh_head(&mut self) -> Result<()> {
        let head = self.region.head().load(Ordering::Acquire);
        self.region.check_span(head, self.tail)?;
        if head < self.head_cache {
            return Err(crate::error::corrupt(format!(
                "the consumer's head moved backwards from {} to {head}",
                self.head_cache
            )));
        }
        self.head_cache = head;
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
    }
}
