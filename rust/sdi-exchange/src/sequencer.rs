//! The sequencer in front of the engine: stamps, journals, then matches.

use std::path::Path;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::Error;
use crate::journal::{Durability, Journal};
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
