//! The matcher stage of the exchange's pipeline: commands in from one SPSC
//! ring, events out to another, on a thread of its own (pinned to a core if
//! asked), with no Python anywhere on the way.
//!
//! ```text
//! gateway --(command ring, 48-byte records)--> [sequencer + journal + order manager + matcher]
//!         <--(event ring, 80-byte records)---- (this stage, one thread)
//! ```
//!
//! The stage pops up to `batch_records_max` commands at a time, sequences,
//! journals and processes them as one batch (one `fdatasync` per batch with
//! `Durability::Sync`), and pushes the batch's events in order, waiting for
//! space when the event ring is full (back-pressure reaches the gateway
//! through the command ring). It stops when asked (after its current batch),
//! when the gateway closes the command ring cleanly and it is drained, or on
//! an error.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sdi_ring::{Consumer, Producer, Readiness, WaitStrategy};

use crate::error::Error;
use crate::sequencer::Exchange;
use crate::types::{Command, Event, COMMAND_BYTES, EVENT_BYTES};

/// How often a waiting stage looks at its stop flag.
const STOP_CHECK_INTERVAL_MILLIS: u64 = 20;
/// How long a stopping stage waits for a live reader that takes no events.
const STOP_GRACE_MILLIS: u64 = 5_000;

/// How the stage runs.
#[derive(Clone, Debug)]
pub struct StageConfig {
    /// Most commands taken from the ring per batch.
    pub batch_records_max: usize,
    /// How the stage waits for commands and for room for events.
    pub wait: WaitStrategy,
    /// Pin the stage's thread to this CPU.
    pub cpu: Option<usize>,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            batch_records_max: 4096,
            wait: WaitStrategy::SpinThenYield,
            cpu: None,
        }
    }
}

/// What the stage did, when it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReport {
    pub commands: u64,
    pub events: u64,
    pub batches: u64,
    /// The engine's state hash at the end (see `Engine::state_hash`).
    pub state_hash: u64,
    /// The sequence number the next command would have got.
    pub next_input_seq: u64,
}

/// Counters the stage updates as it runs, readable from any thread.
#[derive(Debug, Default)]
pub struct StageCounters {
    pub commands: AtomicU64,
    pub events: AtomicU64,
    pub batches: AtomicU64,
}

/// A running matcher stage.
pub struct MatcherStage {
    stop: Arc<AtomicBool>,
    counters: Arc<StageCounters>,
    thread: Option<JoinHandle<Result<StageReport, Error>>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

fn pin_to(cpu: usize) -> Result<(), Error> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it and
    // sched_setaffinity reads it for the calling thread only.
    let status = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if status != 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot pin the matcher stage to CPU {cpu}: {}; pick one of the CPUs this process may use",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Writes `events` as 80-byte little-endian records into `out` (resized).
pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
    out.resize(events.len() * EVENT_BYTES, 0);
    for (event, chunk) in events.iter().zip(out.chunks_exact_mut(EVENT_BYTES)) {
        chunk.copy_from_slice(&event.to_bytes());
    }
}

struct Worker {
    exchange: Exchange,
    commands_in: Consumer,
    events_out: Producer,
    config: StageConfig,
    stop: Arc<AtomicBool>,
    counters: Arc<StageCounters>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(
        mut self,
        started: std::sync::mpsc::Sender<Result<(), Error>>,
    ) -> Result<StageReport, Error> {
        if let Some(cpu) = self.config.cpu {
            if let Err(error) = pin_to(cpu) {
                let _ = started.send(Err(error));
                return Err(Error::InvalidArgument(format!("cannot pin to CPU {cpu}")));
            }
        }
        let _ = started.send(Ok(()));
        let batch = self.config.batch_records_max.max(1);
        let mut rows = vec![0u8; batch * COMMAND_BYTES];
        let mut commands: Vec<Command> = Vec::with_capacity(batch);
        let mut events: Vec<Event> = Vec::with_capacity(batch * 4);
        let mut encoded: Vec<u8> = Vec::new();
        let mut report = StageReport {
            commands: 0,
            events: 0,
            batches: 0,
            state_hash: 0,
            next_input_seq: 0,
        };
        loop {
            let deadline = Instant::now() + Duration::from_millis(STOP_CHECK_INTERVAL_MILLIS);
            match self
                .commands_in
                .wait_for_records(Some(deadline), self.config.wait)
            {
                Ok(Readiness::Ready) => {}
                Ok(Readiness::TimedOut) => {
                    if self.stopping() {
                        break;
                    }
                    continue;
                }
                Ok(Readiness::Finished) => break,
                // The gateway died: keep serving, a new one may attach.
                Err(sdi_ring::Error::PeerGone { .. }) => {
                    if self.stopping() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(STOP_CHECK_INTERVAL_MILLIS));
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            let count = self.commands_in.try_pop_rows(&mut rows, COMMAND_BYTES)?;
            if count == 0 {
                continue;
            }
            commands.clear();
            commands.extend(
                rows[..count * COMMAND_BYTES]
                    .chunks_exact(COMMAND_BYTES)
                    .map(|row| Command::from_bytes(row.try_into().expect("rows are exact"))),
            );
            events.clear();
            self.exchange.submit(&mut commands, now_ns(), &mut events)?;
            encode_events(&events, &mut encoded);
            let mut sent = 0;
            let mut stalled_since: Option<Instant> = None;
            while sent < events.len() {
                let remaining = &encoded[sent * EVENT_BYTES..];
                let deadline = Instant::now() + Duration::from_millis(STOP_CHECK_INTERVAL_MILLIS);
                match self.events_out.push_rows_wait(
                    remaining,
                    EVENT_BYTES,
                    Some(deadline),
                    self.config.wait,
                )? {
                    Some(pushed) => {
                        sent += pushed;
                        stalled_since = None;
                    }
                    // Asked to stop while the reader, alive, takes nothing: give
                    // it a grace period, then leave. The journal has the batch,
                    // so no command is lost, only events a reader can rebuild
                    // by replaying the journal.
                    None if self.stopping() => {
                        let since = *stalled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_millis(STOP_GRACE_MILLIS) {
                            break;
                        }
                    }
                    None => {}
                }
            }
            report.commands += count as u64;
            report.events += sent as u64;
            report.batches += 1;
            self.counters
                .commands
                .fetch_add(count as u64, Ordering::Relaxed);
            self.counters
                .events
                .fetch_add(sent as u64, Ordering::Relaxed);
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.events_out.close();
        report.state_hash = self.exchange.engine().state_hash();
        report.next_input_seq = self.exchange.next_input_seq();
        Ok(report)
    }
}

impl MatcherStage {
    /// Attaches to both rings (as the command ring's consumer and the event
    /// ring's producer) and starts the stage's thread with `exchange`.
    pub fn start(
        exchange: Exchange,
        command_ring: &Path,
        event_ring: &Path,
        config: StageConfig,
    ) -> Result<Self, Error> {
        let commands_in = Consumer::attach(command_ring)?;
        let events_out = Producer::attach(event_ring)?;
        Self::start_attached(exchange, commands_in, events_out, config)
    }

    /// Checks the settings a stage would start with, without starting it.
    pub fn check_config(config: &StageConfig) -> Result<(), Error> {
        let max = sdi_ring::constants::BATCH_RECORDS_MAX;
        if config.batch_records_max == 0 || config.batch_records_max > max {
            return Err(Error::InvalidArgument(format!(
                "batch_records_max must be between 1 and {max}"
            )));
        }
        Ok(())
    }

    /// Like [`start`](Self::start), with the rings already attached (so that a
    /// caller can attach them before it commits to anything else).
    pub fn start_attached(
        exchange: Exchange,
        commands_in: Consumer,
        events_out: Producer,
        config: StageConfig,
    ) -> Result<Self, Error> {
        Self::check_config(&config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(StageCounters::default());
        let worker = Worker {
            exchange,
            commands_in,
            events_out,
            config,
            stop: Arc::clone(&stop),
            counters: Arc::clone(&counters),
        };
        let (started, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sdi-matcher".into())
            .spawn(move || worker.run(started))
            .map_err(|error| {
                Error::Internal(format!("cannot start the matcher thread: {error}"))
            })?;
        // The thread reports whether it could set itself up (pin to its CPU)
        // before `start` returns, so a bad setting fails here, not later.
        match ready.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                counters,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Internal(
                    "the matcher thread ended before it started".into(),
                ))
            }
        }
    }

    /// The live counters.
    pub fn counters(&self) -> &StageCounters {
        &self.counters
    }

    /// Whether the thread has ended (by a clean end of input or an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the stage to stop after the batch it is on, and waits for it.
    /// Commands still in the command ring stay there unprocessed (they are not
    /// in the journal, so not acknowledged). To process everything first,
    /// close the command ring's producer and wait for [`is_finished`](Self::is_finished).
    pub fn stop(mut self) -> Result<StageReport, Error> {
        self.stop.store(true, Ordering::Release);
        self.join()
    }

    fn join(&mut self) -> Result<StageReport, Error> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|payload| {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(Error::Internal(format!(
                    "the matcher thread panicked ({message})"
                )))
            }),
            None => Err(Error::InvalidArgument(
                "the stage was already stopped".into(),
            )),
        }
    }
}

impl Drop for MatcherStage {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::Release);
            let _ = self.join();
        }
    }
}
