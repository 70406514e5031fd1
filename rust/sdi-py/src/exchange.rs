//! `sdi._rust.exchange`: the bindings of the `sdi-exchange` core.
//!
//! Commands go in and events come out as flat byte buffers of fixed-size
//! `repr(C)` records (48 and 80 bytes); `sdi.exchange` views them as numpy
//! structured arrays. One call crosses into Rust per batch, with the GIL
//! released for the whole batch.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::{core_err, run_core, CoreError, Kind};
use sdi_exchange::pipeline::{MatcherStage, StageConfig};
use sdi_exchange::{
    Command, Durability, EngineConfig, Error, Event, Exchange, Side, Standby, SymbolConfig,
};
use sdi_ring::WaitStrategy;

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Config(_) | Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::Corrupt { .. } => Kind::Corrupt,
            Error::Io { .. } | Error::Poisoned { .. } => Kind::Io,
            Error::Locked { .. } => Kind::InvalidArgument,
            Error::Internal(_) => Kind::Internal,
            Error::Ring(inner) => inner.kind(),
        }
    }
}

/// Most commands one `submit` call takes.
const BATCH_COMMANDS_MAX: usize = 1 << 24;
const COMMAND_BYTES: usize = sdi_exchange::types::COMMAND_BYTES;
const EVENT_BYTES: usize = sdi_exchange::types::EVENT_BYTES;

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    core_err(py, Error::InvalidArgument(message.into()))
}

/// Reads a flat buffer of 48-byte command records into `out` (cleared first).
fn read_commands(py: Python<'_>, bytes: &[u8], out: &mut Vec<Command>) -> PyResult<()> {
    if bytes.len() % COMMAND_BYTES != 0 {
        return Err(invalid(
            py,
            format!(
                "the command buffer is {} bytes, not a whole number of {COMMAND_BYTES}-byte commands; \
                 build it with sdi.exchange.commands()",
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / COMMAND_BYTES;
    if count > BATCH_COMMANDS_MAX {
        return Err(core_err(
            py,
            Error::InvalidArgument(format!(
                "{count} commands in one batch; send at most {BATCH_COMMANDS_MAX} per call"
            )),
        ));
    }
    out.clear();
    out.extend(bytes.chunks_exact(COMMAND_BYTES).map(|chunk| {
        let record: &[u8; COMMAND_BYTES] = chunk.try_into().expect("chunks are exact");
        Command::from_bytes(record)
    }));
    Ok(())
}

/// The events as one flat byte array (80 bytes per event).
fn events_to_array<'py>(py: Python<'py>, events: &[Event]) -> Bound<'py, PyArray1<u8>> {
    let mut bytes = Vec::new();
    sdi_exchange::pipeline::encode_events(events, &mut bytes);
    PyArray1::from_vec(py, bytes)
}

fn readonly_bytes<'py>(
    py: Python<'py>,
    array: &'py PyReadonlyArray1<'py, u8>,
) -> PyResult<&'py [u8]> {
    array
        .as_slice()
        .map_err(|_| invalid(py, "the command buffer must be C-contiguous"))
}

fn side_from(py: Python<'_>, side: u8) -> PyResult<Side> {
    Side::from_u8(side)
        .ok_or_else(|| invalid(py, format!("side must be 0 (buy) or 1 (sell), not {side}")))
}

/// A price level as Python sees it: `(price, total quantity)`.
type Level = (i64, u64);

/// The engine's settings as `sdi.exchange` passes them: `(symbols, accounts,
/// orders_resting_max, funds, daily_notional_max, book_deltas)`.
type ConfigTuple = (Vec<SymbolTuple>, u32, u32, bool, i64, bool);

fn engine_config(
    (symbols, accounts, orders_resting_max, funds, daily_notional_max, book_deltas): ConfigTuple,
) -> EngineConfig {
    EngineConfig {
        symbols: symbols
            .into_iter()
            .map(
                |(tick_size, min_price, price_levels, reference_price, band_bps, order_qty_max)| {
                    SymbolConfig {
                        tick_size,
                        min_price,
                        price_levels,
                        reference_price,
                        band_bps,
                        order_qty_max,
                    }
                },
            )
            .collect(),
        accounts,
        orders_resting_max,
        funds,
        daily_notional_max,
        book_deltas,
    }
}

fn parse_durability(py: Python<'_>, durability: &str) -> PyResult<Durability> {
    match durability {
        "sync" => Ok(Durability::Sync),
        "buffered" => Ok(Durability::Buffered),
        other => Err(invalid(
            py,
            format!("durability must be 'sync' or 'buffered', not {other:?}"),
        )),
    }
}

/// Symbol settings as `sdi.exchange.Symbol` passes them:
/// `(tick_size, min_price, price_levels, reference_price, band_bps, order_qty_max)`.
type SymbolTuple = (i64, i64, u32, i64, u32, u64);

/// Sequencer + journal + matching engine (see `sdi.exchange.Exchange`).
#[pyclass(module = "sdi._rust.exchange", name = "Exchange")]
pub struct PyExchange {
    inner: Exchange,
    replayed: Vec<Event>,
    /// Buffers kept from call to call, so that their pages stay mapped.
    commands: Vec<Command>,
    events: Vec<Event>,
}

#[pymethods]
impl PyExchange {
    #[new]
    #[pyo3(signature = (config, journal = None, durability = "sync", keep_replayed = false))]
    fn new(
        py: Python<'_>,
        config: ConfigTuple,
        journal: Option<PathBuf>,
        durability: &str,
        keep_replayed: bool,
    ) -> PyResult<Self> {
        let durability = parse_durability(py, durability)?;
        let config = engine_config(config);
        run_core(py, move || {
            let mut replayed = Vec::new();
            let inner = match journal {
                None => Exchange::in_memory(config)?,
                Some(path) => Exchange::open(config, &path, durability, |events| {
                    // Only when asked: a long journal's events would fill memory.
                    if keep_replayed {
                        replayed.extend_from_slice(events);
                    }
                })?,
            };
            Ok::<_, Error>(PyExchange {
                inner,
                replayed,
                commands: Vec::new(),
                events: Vec::new(),
            })
        })
    }

    /// Sequences, journals and processes a batch; returns the events as bytes.
    #[pyo3(signature = (commands, now_ns))]
    fn submit<'py>(
        &mut self,
        py: Python<'py>,
        commands: PyReadonlyArray1<'py, u8>,
        now_ns: u64,
    ) -> PyResult<Bound<'py, PyArray1<u8>>> {
        self.run_batch(py, &commands, now_ns)?;
        Ok(events_to_array(py, &self.events))
    }

    /// Like `submit`, but returns `(events, nanoseconds spent in Rust)` and
    /// keeps the events to itself: the benchmark's in-engine figure.
    #[pyo3(signature = (commands, now_ns))]
    fn submit_timed<'py>(
        &mut self,
        py: Python<'py>,
        commands: PyReadonlyArray1<'py, u8>,
        now_ns: u64,
    ) -> PyResult<(usize, u64)> {
        let elapsed_ns = self.run_batch(py, &commands, now_ns)?;
        Ok((self.events.len(), elapsed_ns))
    }

    /// Processes `commands` one at a time on the in-memory engine and returns
    /// each one's processing time in nanoseconds (for the latency benchmark).
    /// The commands are applied but not journalled, so use a throwaway exchange.
    fn measure_latencies<'py>(
        &mut self,
        py: Python<'py>,
        commands: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let mut commands_read = Vec::new();
        read_commands(py, readonly_bytes(py, &commands)?, &mut commands_read)?;
        let commands = commands_read;
        if self.inner.next_input_seq() != 1 || self.inner_has_journal() {
            return Err(invalid(
                py,
                "measure_latencies runs on a fresh in-memory exchange only (no journal, nothing submitted)",
            ));
        }
        let exchange = &mut self.inner;
        let latencies = run_core(py, move || {
            let mut latencies = vec![0u64; commands.len()];
            exchange.measure_latencies(&commands, &mut latencies);
            Ok::<_, Error>(latencies)
        })?;
        Ok(PyArray1::from_vec(py, latencies))
    }

    /// The events the journal replay produced when this exchange was opened, as bytes.
    fn take_replayed<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyArray1<u8>> {
        let events = std::mem::take(&mut self.replayed);
        events_to_array(py, &events)
    }

    #[getter]
    fn next_input_seq(&self) -> u64 {
        self.inner.next_input_seq()
    }

    #[getter]
    fn next_event_seq(&self) -> u64 {
        self.inner.engine().next_event_seq()
    }

    #[getter]
    fn resting_orders(&self) -> u32 {
        self.inner.engine().resting_orders()
    }

    #[getter]
    fn max_order_id(&self) -> u64 {
        self.inner.engine().max_order_id()
    }

    fn state_hash(&self, py: Python<'_>) -> PyResult<u64> {
        let exchange = &self.inner;
        run_core(py, move || Ok::<_, Error>(exchange.engine().state_hash()))
    }

    fn top_of_book(&self, py: Python<'_>, symbol: u32) -> PyResult<(Option<Level>, Option<Level>)> {
        let top = self
            .inner
            .engine()
            .top_of_book(symbol)
            .ok_or_else(|| invalid(py, format!("no symbol {symbol}")))?;
        Ok((top.bid, top.ask))
    }

    #[pyo3(signature = (symbol, side, levels = 10))]
    fn depth(
        &self,
        py: Python<'_>,
        symbol: u32,
        side: u8,
        levels: usize,
    ) -> PyResult<Vec<(i64, u64)>> {
        let side = side_from(py, side)?;
        if self.inner.engine().top_of_book(symbol).is_none() {
            return Err(invalid(py, format!("no symbol {symbol}")));
        }
        Ok(self.inner.engine().depth(symbol, side, levels))
    }

    /// `(account, symbol, side, price, qty)` of a resting order, or None.
    fn order(&self, order_id: u64) -> Option<(u32, u32, u8, i64, u64)> {
        self.inner
            .engine()
            .order(order_id)
            .map(|o| (o.account, o.symbol, o.side as u8, o.price, o.qty))
    }

    /// `(total, locked)` of an account's cash (`symbol == CASH`) or asset.
    fn balance(&self, py: Python<'_>, account: u32, symbol: u32) -> PyResult<(i64, i64)> {
        self.inner
            .engine()
            .balance(account, symbol)
            .map(|b| (b.total, b.locked))
            .ok_or_else(|| {
                invalid(
                    py,
                    format!("no balance for account {account}, symbol {symbol}"),
                )
            })
    }

    fn last_trade(&self, py: Python<'_>, symbol: u32) -> PyResult<i64> {
        self.inner
            .engine()
            .last_trade(symbol)
            .ok_or_else(|| invalid(py, format!("no symbol {symbol}")))
    }
}

impl PyExchange {
    fn inner_has_journal(&self) -> bool {
        self.inner.has_journal()
    }

    /// Reads the batch, then sequences, journals and processes it with the GIL
    /// released, leaving the events in `self.events`. Returns the nanoseconds
    /// the core took (reading and event conversion excluded).
    fn run_batch(
        &mut self,
        py: Python<'_>,
        commands: &PyReadonlyArray1<'_, u8>,
        now_ns: u64,
    ) -> PyResult<u64> {
        read_commands(py, readonly_bytes(py, commands)?, &mut self.commands)?;
        let (exchange, commands, events) = (&mut self.inner, &mut self.commands, &mut self.events);
        events.clear();
        run_core(py, move || {
            let started = std::time::Instant::now();
            exchange.submit(commands, now_ns, events)?;
            Ok::<_, Error>(started.elapsed().as_nanos() as u64)
        })
    }
}

/// A hot standby following a primary's journal (see `sdi.exchange.Standby`).
#[pyclass(module = "sdi._rust.exchange", name = "Standby")]
pub struct PyStandby {
    inner: Option<Standby>,
    events: Vec<Event>,
}

impl PyStandby {
    fn standby(&self, py: Python<'_>) -> PyResult<&Standby> {
        self.inner.as_ref().ok_or_else(|| {
            invalid(
                py,
                "this standby has taken over; use the Exchange it returned",
            )
        })
    }
}

#[pymethods]
impl PyStandby {
    #[new]
    fn new(py: Python<'_>, config: ConfigTuple, journal: PathBuf) -> PyResult<Self> {
        let config = engine_config(config);
        let standby = run_core(py, move || Standby::follow(config, &journal))?;
        Ok(Self {
            inner: Some(standby),
            events: Vec::new(),
        })
    }

    /// Applies what the primary appended since the last poll; returns its events as bytes.
    fn poll<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let Some(standby) = self.inner.as_mut() else {
            return Err(invalid(
                py,
                "this standby has taken over; use the Exchange it returned",
            ));
        };
        let events = &mut self.events;
        events.clear();
        run_core(py, move || {
            standby.poll(|batch| events.extend_from_slice(batch))?;
            Ok::<_, Error>(())
        })?;
        Ok(events_to_array(py, &self.events))
    }

    /// Takes over if the primary is gone: returns `(Exchange, events replayed on the way)`,
    /// or None while the primary holds the journal.
    #[pyo3(signature = (durability = "sync"))]
    fn try_take_over<'py>(
        &mut self,
        py: Python<'py>,
        durability: &str,
    ) -> PyResult<Option<(PyExchange, Bound<'py, PyArray1<u8>>)>> {
        let durability = parse_durability(py, durability)?;
        let Some(standby) = self.inner.take() else {
            return Err(invalid(py, "this standby has taken over already"));
        };
        let (outcome, replayed) = run_core(py, move || {
            let mut replayed = Vec::new();
            let outcome =
                standby.try_take_over(durability, |batch| replayed.extend_from_slice(batch))?;
            Ok::<_, Error>((outcome, replayed))
        })?;
        match outcome {
            Ok(exchange) => Ok(Some((
                PyExchange {
                    inner: exchange,
                    replayed: Vec::new(),
                    commands: Vec::new(),
                    events: Vec::new(),
                },
                events_to_array(py, &replayed),
            ))),
            Err(standby) => {
                self.inner = Some(standby);
                Ok(None)
            }
        }
    }

    /// Like `try_take_over`, but starts a matcher stage between the two rings
    /// with the promoted exchange: `(stage, events replayed on the way)`, or None.
    #[pyo3(signature = (command_ring, event_ring, durability = "sync", batch_records_max = 4096, wait = "spin_then_yield", cpu = None))]
    #[allow(clippy::too_many_arguments)]
    fn try_take_over_as_stage<'py>(
        &mut self,
        py: Python<'py>,
        command_ring: PathBuf,
        event_ring: PathBuf,
        durability: &str,
        batch_records_max: usize,
        wait: &str,
        cpu: Option<usize>,
    ) -> PyResult<Option<(PyMatcherStage, Bound<'py, PyArray1<u8>>)>> {
        let durability = parse_durability(py, durability)?;
        let wait =
            WaitStrategy::from_name(wait).map_err(|error| core_err(py, Error::from(error)))?;
        let config = StageConfig {
            batch_records_max,
            wait,
            cpu,
        };
        // Everything that can fail for a reason of its own comes first, so that
        // a refusal leaves the standby as it was.
        MatcherStage::check_config(&config).map_err(|error| core_err(py, error))?;
        self.standby(py)?;
        let (commands_in, events_out) = run_core(py, move || {
            let commands_in = sdi_ring::Consumer::attach(&command_ring)?;
            let events_out = sdi_ring::Producer::attach(&event_ring)?;
            Ok::<_, Error>((commands_in, events_out))
        })?;
        let Some(standby) = self.inner.take() else {
            return Err(invalid(py, "this standby has taken over already"));
        };
        let (outcome, replayed) = run_core(py, move || {
            let mut replayed = Vec::new();
            let outcome =
                standby.try_take_over(durability, |batch| replayed.extend_from_slice(batch))?;
            Ok::<_, Error>((outcome, replayed))
        })?;
        let exchange = match outcome {
            Ok(exchange) => exchange,
            Err(standby) => {
                // The primary is alive: let go of the rings and go on following.
                self.inner = Some(standby);
                return Ok(None);
            }
        };
        let stage = run_core(py, move || {
            MatcherStage::start_attached(exchange, commands_in, events_out, config)
        })?;
        Ok(Some((
            PyMatcherStage { inner: Some(stage) },
            events_to_array(py, &replayed),
        )))
    }

    #[getter]
    fn next_input_seq(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.standby(py)?.next_input_seq())
    }

    #[getter]
    fn max_order_id(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.standby(py)?.engine().max_order_id())
    }

    fn state_hash(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.standby(py)?.engine().state_hash())
    }
}

/// The matcher stage between two rings, on its own thread (see `sdi.exchange.MatcherStage`).
#[pyclass(module = "sdi._rust.exchange", name = "MatcherStage")]
pub struct PyMatcherStage {
    inner: Option<MatcherStage>,
}

#[pymethods]
impl PyMatcherStage {
    #[new]
    #[pyo3(signature = (config, command_ring, event_ring, journal = None, durability = "sync", batch_records_max = 4096, wait = "spin_then_yield", cpu = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config: ConfigTuple,
        command_ring: PathBuf,
        event_ring: PathBuf,
        journal: Option<PathBuf>,
        durability: &str,
        batch_records_max: usize,
        wait: &str,
        cpu: Option<usize>,
    ) -> PyResult<Self> {
        let durability = parse_durability(py, durability)?;
        let wait =
            WaitStrategy::from_name(wait).map_err(|error| core_err(py, Error::from(error)))?;
        let config = engine_config(config);
        let stage = run_core(py, move || {
            let exchange = match journal {
                None => Exchange::in_memory(config)?,
                Some(path) => Exchange::open(config, &path, durability, |_| {})?,
            };
            MatcherStage::start(
                exchange,
                &command_ring,
                &event_ring,
                StageConfig {
                    batch_records_max,
                    wait,
                    cpu,
                },
            )
        })?;
        Ok(Self { inner: Some(stage) })
    }

    /// `(commands, events, batches)` processed so far.
    fn counters(&self) -> (u64, u64, u64) {
        self.inner.as_ref().map_or((0, 0, 0), |stage| {
            let counters = stage.counters();
            (
                counters.commands.load(Ordering::Relaxed),
                counters.events.load(Ordering::Relaxed),
                counters.batches.load(Ordering::Relaxed),
            )
        })
    }

    /// Whether the stage's thread has ended (clean end of input or an error).
    fn is_finished(&self) -> bool {
        self.inner.as_ref().is_none_or(MatcherStage::is_finished)
    }

    /// Stops the stage and returns `(commands, events, batches, state_hash, next_input_seq)`.
    fn stop(&mut self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64, u64)> {
        let Some(stage) = self.inner.take() else {
            return Err(invalid(py, "the stage was already stopped"));
        };
        let report = run_core(py, move || stage.stop())?;
        Ok((
            report.commands,
            report.events,
            report.batches,
            report.state_hash,
            report.next_input_seq,
        ))
    }
}

/// The exchange-core-like benchmark mix: `count` commands from `seed`, as bytes.
#[pyfunction]
fn mixed_workload<'py>(
    py: Python<'py>,
    count: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    if count > BATCH_COMMANDS_MAX {
        return Err(invalid(
            py,
            format!("count must be at most {BATCH_COMMANDS_MAX}"),
        ));
    }
    let commands = run_core(py, move || {
        Ok::<_, Error>(sdi_exchange::workload::mixed_workload(count, seed))
    })?;
    Ok(commands_to_array(py, &commands))
}

/// Deposits funding every account of the benchmark mix, as bytes.
#[pyfunction]
fn funding_commands<'py>(py: Python<'py>) -> Bound<'py, PyArray1<u8>> {
    commands_to_array(py, &sdi_exchange::workload::funding_commands())
}

fn commands_to_array<'py>(py: Python<'py>, commands: &[Command]) -> Bound<'py, PyArray1<u8>> {
    let mut bytes = Vec::with_capacity(commands.len() * COMMAND_BYTES);
    for command in commands {
        bytes.extend_from_slice(&command.to_bytes());
    }
    PyArray1::from_vec(py, bytes)
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "exchange")?;
    module.add_class::<PyExchange>()?;
    module.add_class::<PyStandby>()?;
    module.add_class::<PyMatcherStage>()?;
    module.add_function(wrap_pyfunction!(mixed_workload, &module)?)?;
    module.add_function(wrap_pyfunction!(funding_commands, &module)?)?;
    module.add("COMMAND_BYTES", COMMAND_BYTES)?;
    module.add("EVENT_BYTES", EVENT_BYTES)?;
    module.add("CASH", sdi_exchange::CASH)?;
    module.add("BATCH_COMMANDS_MAX", BATCH_COMMANDS_MAX)?;
    module.setattr("__name__", "sdi._rust.exchange")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.exchange", &module)?;
    Ok(())
}
