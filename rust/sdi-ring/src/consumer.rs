//! The consuming end: reads records, publishes the head once per batch.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::constants::{BATCH_RECORDS_MAX, RECORD_HEADER_BYTES};
use crate::error::{corrupt, Error, Result, Role};
use crate::layout::{
    decode_record_header, framed_bytes, CONSUMER_CLOSED_OFFSET, CONSUMER_OWNER_OFFSET,
    HEAD_RECORDS_OFFSET, KIND_DATA, KIND_PADDING, PRODUCER_CLOSED_OFFSET, PRODUCER_OWNER_OFFSET,
    TAIL_RECORDS_OFFSET,
};
use crate::liveness::{
    claim, holder_alive, own_owner_word, owner_pid, peer_state, release, PeerState,
};
use crate::region::{copy_record, record_bytes_max_for, Region};
use crate::wait::{Readiness, WaitStrategy, Waiter};

/// What a visitor wants done with the record it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Consume it and go on to the next.
    Take,
    /// Leave it (and everything after it) in the ring and end the batch.
    Stop,
}

/// The one consumer of a ring.
pub struct Consumer {
    region: Arc<Region>,
    // The next byte to read; equal to the shared head between calls.
    head: u64,
    // The producer's tail as last read; re-read only when records run out.
    tail_cache: u64,
    records_popped: u64,
    record_bytes_max: usize,
    me: u64,
    closed: bool,
}

impl Consumer {
    /// Opens the ring file at `path` and claims its consumer role.
    pub fn attach(path: impl AsRef<Path>) -> Result<Consumer> {
        Consumer::claim(Arc::new(Region::open(path.as_ref())?))
    }

    pub(crate) fn claim(region: Arc<Region>) -> Result<Consumer> {
        let me = own_owner_word()?;
        let owner = region.word(CONSUMER_OWNER_OFFSET);
        let closed = region.word(CONSUMER_CLOSED_OFFSET);
        claim(owner, closed, Role::Consumer, me)?;
        let head = region.head().load(Ordering::Acquire);
        let tail = region.tail().load(Ordering::Acquire);
        if let Err(error) = region.check_span(head, tail) {
            release(owner, closed, me, false);
            return Err(error);
        }
        Ok(Consumer {
            head,
            tail_cache: tail,
            records_popped: region.word(HEAD_RECORDS_OFFSET).load(Ordering::Relaxed),
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
        self.refresh_tail()?;
        Ok(self.tail_cache - self.head)
    }

    /// Records pushed and not yet popped, as the header's counters say now.
    pub fn len_records(&self) -> Result<u64> {
        self.check_open()?;
        let pushed = self
            .region
            .word(TAIL_RECORDS_OFFSET)
            .load(Ordering::Acquire);
        Ok(pushed.saturating_sub(self.records_popped))
    }

    /// The producer's state, read from the header and `/proc`.
    pub fn producer_state(&self) -> PeerState {
        peer_state(
            self.region.word(PRODUCER_OWNER_OFFSET),
            self.region.word(PRODUCER_CLOSED_OFFSET),
        )
        .0
    }

    /// Whether the producer closed cleanly and every record has been popped.
    pub fn is_finished(&mut self) -> Result<bool> {
        self.check_open()?;
        let owner = self
            .region
            .word(PRODUCER_OWNER_OFFSET)
            .load(Ordering::Acquire);
        let closed = self
            .region
            .word(PRODUCER_CLOSED_OFFSET)
            .load(Ordering::Acquire);
        if owner != 0 || closed == 0 {
            return Ok(false);
        }
        // The closed flag was stored after the last tail; this load sees it.
        self.refresh_tail()?;
        Ok(self.tail_cache == self.head)
    }

    /// Shows up to `max_records` records, oldest first, to `visit`, which
    /// reads each payload straight from the shared memory. Records it takes
    /// are consumed; the head is published once, after the last one, so the
    /// producer cannot overwrite a payload while `visit` reads it.
    pub fn pop_with(
        &mut self,
        max_records: usize,
        mut visit: impl FnMut(&[u8]) -> Visit,
    ) -> Result<usize> {
        self.check_open()?;
        if max_records > BATCH_RECORDS_MAX {
            return Err(Error::BatchTooLarge {
                records: max_records,
                max: BATCH_RECORDS_MAX,
            });
        }
        let capacity = self.region.capacity_bytes();
        let data = self.region.data();
        let mut position = self.head;
        let mut popped = 0;
        let mut outcome = Ok(());
        while popped < max_records {
            if position == self.tail_cache {
                if let Err(error) = self.refresh_tail() {
                    outcome = Err(error);
                    break;
                }
                if position == self.tail_cache {
                    break;
                }
            }
            let offset = position & (capacity - 1);
            let available = self.tail_cache - position;
            let (length, kind) =
                decode_record_header(self.region.record_word(offset).load(Ordering::Relaxed));
            let total = framed_bytes(length as usize);
            // Everything below was written by the other process: check it
            // before using it to address memory.
            let bad = |why: &str| {
                corrupt(format!(
                    "record at byte {position} (offset {offset}) has kind {kind:#x} and \
                     length {length}: {why}"
                ))
            };
            match kind {
                KIND_PADDING => {
                    if offset + total != capacity || total > available {
                        outcome = Err(bad("a padding record must end exactly at the wrap"));
                        break;
                    }
                    position += total;
                }
                KIND_DATA => {
                    if length as usize > self.record_bytes_max {
                        outcome = Err(bad("longer than this ring's record_bytes_max"));
                        break;
                    }
                    if offset + total > capacity || total > available {
                        outcome = Err(bad("it runs past the wrap or the published tail"));
                        break;
                    }
                    // SAFETY: offset + total <= capacity was just checked, so
                    // the payload lies inside the data area; it lies before
                    // the tail loaded with acquire ordering, so the producer
                    // finished writing it and will not touch it until the
                    // head passes it, which happens only after this batch.
                    let payload = unsafe {
                        std::slice::from_raw_parts(
                            data.add(offset as usize + RECORD_HEADER_BYTES),
                            length as usize,
                        )
                    };
                    if visit(payload) == Visit::Stop {
                        break;
                    }
                    position += total;
                    popped += 1;
                }
                _ => {
                    outcome = Err(bad("not a known record kind"));
                    break;
                }
            }
        }
        if position != self.head {
            self.head = position;
            self.records_popped += popped as u64;
            self.region
                .word(HEAD_RECORDS_OFFSET)
                .store(self.records_popped, Ordering::Relaxed);
            // Release: our reads of the payloads happen before the producer,
            // which loads this head with acquire, overwrites them.
            self.region.head().store(position, Ordering::Release);
        }
        outcome.map(|()| popped)
    }

    /// Pops up to `max_records` records into owned vectors.
    pub fn try_pop_vec(&mut self, max_records: usize) -> Result<Vec<Vec<u8>>> {
        let mut records = Vec::new();
        self.pop_with(max_records, |payload| {
            records.push(payload.to_vec());
            Visit::Take
        })?;
        Ok(records)
    }

    /// Pops records back to back into `buffer`: record `i` lands in
    /// `buffer[offsets[i]..offsets[i + 1]]` with `offsets[0] = 0`, so at most
    /// `offsets.len() - 1` records are popped. Stops before a record that
    /// does not fit the rest of `buffer`; fails with `InvalidArgument` if
    /// the first one does not fit at all (it stays in the ring).
    pub fn try_pop_into(&mut self, buffer: &mut [u8], offsets: &mut [i64]) -> Result<usize> {
        self.check_open()?;
        let Some((first, ends)) = offsets.split_first_mut() else {
            return Err(Error::InvalidArgument(
                "offsets must hold at least one element (offsets[0] = 0)".to_owned(),
            ));
        };
        *first = 0;
        let mut used = 0usize;
        let mut index = 0usize;
        let mut too_large = None;
        let popped = self.pop_with(ends.len(), |payload| {
            let Some(destination) = buffer.get_mut(used..used + payload.len()) else {
                too_large = Some(payload.len());
                return Visit::Stop;
            };
            destination.copy_from_slice(payload);
            used += payload.len();
            ends[index] = used as i64;
            index += 1;
            Visit::Take
        });
        let popped = popped?;
        if popped == 0 {
            if let Some(length) = too_large {
                return Err(Error::InvalidArgument(format!(
                    "the next record is {length} bytes but the buffer holds {} \
                     (it stays in the ring); pass a buffer of at least record_bytes_max = {} bytes",
                    buffer.len(),
                    self.record_bytes_max
                )));
            }
        }
        Ok(popped)
    }

    /// Pops fixed-size records into `rows`, one per `row_bytes` row. Stops
    /// before a record of another length; fails with `InvalidArgument` if
    /// the first record has another length (it stays in the ring).
    pub fn try_pop_rows(&mut self, rows: &mut [u8], row_bytes: usize) -> Result<usize> {
        self.check_open()?;
        if row_bytes == 0 || rows.len() % row_bytes != 0 {
            return Err(Error::InvalidArgument(format!(
                "rows holds {} bytes, not a whole number of {row_bytes}-byte rows \
                 (row_bytes must be at least 1)",
                rows.len()
            )));
        }
        let row_count = rows.len() / row_bytes;
        let mut chunks = rows.chunks_exact_mut(row_bytes);
        let mut mismatch = None;
        let popped = self.pop_with(row_count, |payload| {
            if payload.len() != row_bytes {
                mismatch = Some(payload.len());
                return Visit::Stop;
            }
            match chunks.next() {
                Some(row) => {
                    // SAFETY: `row` and `payload` are both `row_bytes` long (checked
                    // above) and distinct: one is the caller's buffer, one the mapping.
                    unsafe { copy_record(payload.as_ptr(), row.as_mut_ptr(), row_bytes) };
                    Visit::Take
                }
                None => Visit::Stop,
            }
        })?;
        if popped == 0 {
            if let Some(length) = mismatch {
                return Err(Error::InvalidArgument(format!(
                    "the next record is {length} bytes, not {row_bytes} like the rows \
                     (it stays in the ring); pop it with pop or pop_into"
                )));
            }
        }
        Ok(popped)
    }

    /// Waits until a record may be popped. Returns `Finished` once the
    /// producer closed cleanly and the ring is drained; fails with
    /// `PeerGone` if the producer died and the ring is drained.
    pub fn wait_for_records(
        &mut self,
        deadline: Option<Instant>,
        strategy: WaitStrategy,
    ) -> Result<Readiness> {
        self.check_open()?;
        let mut waiter = Waiter::new(strategy, deadline);
        loop {
            if self.has_records()? {
                return Ok(Readiness::Ready);
            }
            let owner = self
                .region
                .word(PRODUCER_OWNER_OFFSET)
                .load(Ordering::Acquire);
            if owner == 0
                && self
                    .region
                    .word(PRODUCER_CLOSED_OFFSET)
                    .load(Ordering::Acquire)
                    != 0
            {
                // The last tail was stored before the closed flag: look again.
                if self.has_records()? {
                    return Ok(Readiness::Ready);
                }
                return Ok(Readiness::Finished);
            }
            if owner != 0 && waiter.liveness_due() && !holder_alive(owner) {
                // A dead process publishes nothing more: one last look.
                if self.has_records()? {
                    return Ok(Readiness::Ready);
                }
                return Err(Error::PeerGone {
                    role: Role::Producer,
                    pid: owner_pid(owner),
                    detail: " and every record it published has been popped",
                });
            }
            if waiter.expired() {
                return Ok(Readiness::TimedOut);
            }
            waiter.pause();
        }
    }

    /// Releases the consumer role and marks it closed.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            release(
                self.region.word(CONSUMER_OWNER_OFFSET),
                self.region.word(CONSUMER_CLOSED_OFFSET),
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
            return Err(Error::Closed(Role::Consumer));
        }
        Ok(())
    }

    #[inline]
    fn has_records(&mut self) -> Result<bool> {
        if self.tail_cache == self.head {
            self.refresh_tail()?;
        }
        Ok(self.tail_cache != self.head)
    }

    /// Re-reads the producer's tail with acquire ordering; it is untrusted
    /// and checked.
    #[inline]
    fn refresh_tail(&mut self) -> Result<()> {
        let tail = self.region.tail().load(Ordering::Acquire);
        self.region.check_span(self.head, tail)?;
        if tail < self.tail_cache {
            return Err(corrupt(format!(
                "the producer's tail moved backwards from {} to {tail}",
                self.tail_cache
            )));
        }
        self.tail_cache = tail;
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
    }
}
