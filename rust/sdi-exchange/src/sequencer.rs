//! The sequencer in front of the engine: stamps, journals, then matches.

use std::path::Path;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::Error;
use crate::journal::{Durability, Follower, Journal};
use crate::types::{Command, Event};

/// Sequencer + journal + engine: the deterministic heart of the exchange.
///
/// Every command gets a gap-free input sequence number and a timestamp (never
/// earlier than the previous one), goes to the journal, and only then to the
/// engine. Opening an exchange on an existing journal replays it, so the
/// engine's state (and its event sequence) is exactly what it was.
pub struct Exchange {
    engine: Engine,
    journal: Option<Journal>,
    next_input_seq: u64,
    last_timestamp_ns: u64,
}

impl Exchange {
    /// An exchange with no journal (nothing survives the process).
    pub fn in_memory(config: EngineConfig) -> Result<Self, Error> {
        Ok(Self {
            engine: Engine::new(config)?,
            journal: None,
            next_input_seq: 1,
            last_timestamp_ns: 0,
        })
    }

    /// Opens (or creates) the journal at `path` and replays it into a fresh engine.
    /// `replayed` receives every event the replay produces, in order.
    pub fn open(
        config: EngineConfig,
        path: &Path,
        durability: Durability,
        mut replayed: impl FnMut(&[Event]),
    ) -> Result<Self, Error> {
        let fingerprint = config.fingerprint();
        let mut engine = Engine::new(config)?;
        let mut events = Vec::new();
        let mut last_timestamp_ns = 0;
        let journal = Journal::open(path, fingerprint, durability, |record| {
            events.clear();
            engine.process(&record.command, record.seq, &mut events);
            last_timestamp_ns = record.command.timestamp_ns;
            replayed(&events);
        })?;
        Ok(Self {
            next_input_seq: journal.next_seq(),
            engine,
            journal: Some(journal),
            last_timestamp_ns,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether commands go to a journal before the engine.
    pub fn has_journal(&self) -> bool {
        self.journal.is_some()
    }

    /// Processes `commands` one by one with no journal and no stamping, timing
    /// each (see [`crate::workload::measure_latencies`]). Refuses to run on an
    /// exchange with a journal, whose state must only change through `submit`.
    pub fn measure_latencies(&mut self, commands: &[Command], latencies_ns: &mut [u64]) {
        if self.journal.is_some() {
            return;
        }
        crate::workload::measure_latencies(&mut self.engine, commands, latencies_ns);
        self.next_input_seq += commands.len() as u64;
    }

    /// The sequence number the next command will get.
    pub fn next_input_seq(&self) -> u64 {
        self.next_input_seq
    }

    /// Sequences `commands` at `now_ns` (stamping each one's `timestamp_ns` in
    /// place), journals them, then processes them, appending their events to
    /// `out`. Returns the first command's sequence number.
    ///
    /// If the journal write fails nothing is processed and the error is returned:
    /// a command the engine acted on is always in the journal.
    pub fn submit(
        &mut self,
        commands: &mut [Command],
        now_ns: u64,
        out: &mut Vec<Event>,
    ) -> Result<u64, Error> {
        let timestamp_ns = now_ns.max(self.last_timestamp_ns);
        for command in commands.iter_mut() {
            command.timestamp_ns = timestamp_ns;
        }
        let first = self.next_input_seq;
        if let Some(journal) = self.journal.as_mut() {
            let written = journal.append(commands)?;
            debug_assert_eq!(written, first);
        }
        for (index, command) in commands.iter().enumerate() {
            self.engine.process(command, first + index as u64, out);
        }
        self.next_input_seq += commands.len() as u64;
        self.last_timestamp_ns = timestamp_ns;
        Ok(first)
    }
}

/// A hot standby: an engine that follows the primary's journal record by
/// record and takes over when the primary is gone.
///
/// The primary holds the journal's lock; the kernel drops it when the
/// primary dies, however it dies. [`Standby::try_take_over`] takes the lock,
/// replays what the primary wrote last, cuts a torn tail and becomes an
/// [`Exchange`] that goes on with the next sequence number: no sequence number
/// is lost or given twice, and the state is what the primary's was.
pub struct Standby {
    engine: Engine,
    follower: Follower,
    last_timestamp_ns: u64,
    events: Vec<Event>,
}

impl Standby {
    /// Starts following the journal at `path` (the primary must have created
    /// it). Nothing is replayed yet: the first [`poll`](Self::poll) catches up.
    pub fn follow(config: EngineConfig, path: &Path) -> Result<Self, Error> {
        let follower = Follower::open(path, config.fingerprint())?;
        Ok(Self {
            engine: Engine::new(config)?,
            follower,
            last_timestamp_ns: 0,
            events: Vec::new(),
        })
    }

    /// Applies the records the primary appended since the last poll, passing
    /// each one's events to `replayed`. Returns how many records were applied.
    pub fn poll(&mut self, mut replayed: impl FnMut(&[Event])) -> Result<u64, Error> {
        let Self {
            engine,
            follower,
            last_timestamp_ns,
            events,
        } = self;
        follower.poll(|record| {
            events.clear();
            engine.process(&record.command, record.seq, events);
            *last_timestamp_ns = record.command.timestamp_ns;
            replayed(events);
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The sequence number of the next record the standby expects.
    pub fn next_input_seq(&self) -> u64 {
        self.follower.next_seq()
    }

    /// Becomes the primary if the journal's writer is gone; otherwise hands
    /// the standby back unchanged.
    pub fn try_take_over(
        self,
        durability: Durability,
        mut replayed: impl FnMut(&[Event]),
    ) -> Result<Result<Exchange, Standby>, Error> {
        let Self {
            mut engine,
            follower,
            mut last_timestamp_ns,
            mut events,
        } = self;
        let promoted = follower.try_promote(durability, |record| {
            events.clear();
            engine.process(&record.command, record.seq, &mut events);
            last_timestamp_ns = record.command.timestamp_ns;
            replayed(&events);
        })?;
        Ok(match promoted {
            Ok(journal) => Ok(Exchange {
                next_input_seq: journal.next_seq(),
                engine,
                journal: Some(journal),
                last_timestamp_ns,
            }),
            Err(follower) => Err(Standby {
                engine,
                follower,
                last_timestamp_ns,
                events,
            }),
        })
    }
}
