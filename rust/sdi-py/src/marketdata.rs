//! `sdi._rust.marketdata`: the bindings of `sdi_exchange::marketdata`.
//!
//! Events go in as the flat bytes of 80-byte records (an `EVENT_DTYPE` array
//! viewed as `uint8`); packets come out as `bytes`, or as one buffer plus
//! the offsets where each packet ends. `sdi.exchange.marketdata` is the
//! documented API on top.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{core_err, run_core, CoreError, Kind};
use sdi_exchange::marketdata::{
    decode_packet, Candle, Error, Message, Outcome, Packets, Publisher, PublisherConfig,
    Subscriber, SubscriberConfig, CANDLE_INTERVALS_NS, HEADER_BYTES, PACKET_BYTES_DEFAULT,
    PACKET_BYTES_MAX, PACKET_BYTES_MIN, RECOVERY_DELTAS_MAX, SYMBOLS_MAX,
};
use sdi_exchange::types::EVENT_BYTES;
use sdi_exchange::{Event, Side};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::Corrupt(_) => Kind::Corrupt,
        }
    }
}

const _: () = assert!(PACKET_BYTES_DEFAULT == 1400);

/// Most events one `publish` call takes.
const BATCH_EVENTS_MAX: usize = 1 << 24;

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    core_err(py, Error::InvalidArgument(message.into()))
}

/// Reads a flat buffer of 80-byte event records into `out` (cleared first).
fn read_events(
    py: Python<'_>,
    events: &PyReadonlyArray1<'_, u8>,
    out: &mut Vec<Event>,
) -> PyResult<()> {
    let bytes = events
        .as_slice()
        .map_err(|_| invalid(py, "the event buffer must be C-contiguous"))?;
    if bytes.len() % EVENT_BYTES != 0 {
        return Err(invalid(
            py,
            format!(
                "the event buffer is {} bytes, not a whole number of {EVENT_BYTES}-byte events; \
                 pass what Exchange.submit returned",
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / EVENT_BYTES;
    if count > BATCH_EVENTS_MAX {
        return Err(invalid(
            py,
            format!("{count} events in one batch; publish at most {BATCH_EVENTS_MAX} per call"),
        ));
    }
    out.clear();
    out.extend(
        bytes
            .chunks_exact(EVENT_BYTES)
            .map(|record| Event::from_bytes(record.try_into().expect("chunks are exact"))),
    );
    Ok(())
}

fn packets_to_list<'py>(py: Python<'py>, packets: &Packets) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, packets.iter().map(|packet| PyBytes::new(py, packet)))
}

fn side_from(py: Python<'_>, side: u8) -> PyResult<Side> {
    Side::from_u8(side)
        .ok_or_else(|| invalid(py, format!("side must be 0 (buy) or 1 (sell), not {side}")))
}

fn interval_index(py: Python<'_>, interval_ns: u64) -> PyResult<usize> {
    CANDLE_INTERVALS_NS
        .iter()
        .position(|&interval| interval == interval_ns)
        .ok_or_else(|| {
            invalid(
                py,
                format!("interval_ns must be one of {CANDLE_INTERVALS_NS:?}, not {interval_ns}"),
            )
        })
}

type Level = (i64, u64);
/// `(flags, channel, seq, send_time_ns)` of a decoded packet.
type HeaderTuple = (u16, u32, u64, u64);
/// Every packet in one buffer, and where each one ends.
type PacketBuffer<'py> = (Bound<'py, PyArray1<u8>>, Bound<'py, PyArray1<u64>>);
type CandleTuple = (u64, u64, i64, i64, i64, i64, u64, u32);

fn candle_tuple(candle: &Candle) -> CandleTuple {
    (
        candle.interval_ns,
        candle.bucket_start_ns,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.trades,
    )
}

/// Turns engine event batches into market data packets (see `sdi.exchange.marketdata.Publisher`).
#[pyclass(module = "sdi._rust.marketdata", name = "Publisher")]
pub struct PyPublisher {
    inner: Publisher,
    /// Buffers kept from call to call, so that publishing allocates nothing once warm.
    events: Vec<Event>,
    packets: Packets,
}

impl PyPublisher {
    fn run<F>(&mut self, py: Python<'_>, work: F) -> PyResult<()>
    where
        F: FnOnce(&mut Publisher, &[Event], &mut Packets) -> Result<(), Error> + Send,
    {
        let (publisher, events, packets) = (&mut self.inner, &self.events, &mut self.packets);
        packets.clear();
        run_core(py, move || work(publisher, events, packets))
    }
}

#[pymethods]
impl PyPublisher {
    #[new]
    // The default is written out so that Python's signature shows it; the assertion
    // below keeps it equal to the core's constant.
    #[pyo3(signature = (channel, symbols, packet_bytes_max = 1400))]
    fn new(py: Python<'_>, channel: u32, symbols: u32, packet_bytes_max: usize) -> PyResult<Self> {
        let config = PublisherConfig {
            channel,
            symbols,
            packet_bytes_max,
        };
        let inner = Publisher::new(config).map_err(|error| core_err(py, error))?;
        Ok(Self {
            inner,
            events: Vec::new(),
            packets: Packets::new(),
        })
    }

    /// Publishes a batch of events stamped `now_ns`; returns its packets.
    fn publish<'py>(
        &mut self,
        py: Python<'py>,
        events: PyReadonlyArray1<'py, u8>,
        now_ns: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        read_events(py, &events, &mut self.events)?;
        self.run(py, |publisher, events, packets| {
            publisher.publish(events, now_ns, packets)
        })?;
        packets_to_list(py, &self.packets)
    }

    /// Like `publish`, but returns `(bytes, ends)`: every packet in one
    /// buffer, packet `i` ending at `ends[i]`.
    fn publish_buffer<'py>(
        &mut self,
        py: Python<'py>,
        events: PyReadonlyArray1<'py, u8>,
        now_ns: u64,
    ) -> PyResult<PacketBuffer<'py>> {
        read_events(py, &events, &mut self.events)?;
        self.run(py, |publisher, events, packets| {
            publisher.publish(events, now_ns, packets)
        })?;
        let ends: Vec<u64> = self.packets.ends.iter().map(|&end| end as u64).collect();
        Ok((
            PyArray1::from_slice(py, &self.packets.bytes),
            PyArray1::from_vec(py, ends),
        ))
    }

    /// Publishes a batch and returns `(packets, bytes, nanoseconds in the core)`,
    /// keeping the packets to itself: the benchmark's figure.
    fn publish_timed<'py>(
        &mut self,
        py: Python<'py>,
        events: PyReadonlyArray1<'py, u8>,
        now_ns: u64,
    ) -> PyResult<(usize, usize, u64)> {
        read_events(py, &events, &mut self.events)?;
        let mut elapsed_ns = 0u64;
        let elapsed = &mut elapsed_ns;
        self.run(py, move |publisher, events, packets| {
            let started = std::time::Instant::now();
            let outcome = publisher.publish(events, now_ns, packets);
            *elapsed = started.elapsed().as_nanos() as u64;
            outcome
        })?;
        Ok((self.packets.len(), self.packets.bytes.len(), elapsed_ns))
    }

    /// Snapshot packets of one symbol, or of every symbol when `symbol` is None.
    #[pyo3(signature = (symbol = None, now_ns = 0))]
    fn snapshot<'py>(
        &mut self,
        py: Python<'py>,
        symbol: Option<u32>,
        now_ns: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        self.events.clear();
        self.run(py, move |publisher, _, packets| match symbol {
            Some(symbol) => publisher.snapshot(symbol, now_ns, packets),
            None => {
                publisher.snapshot_all(now_ns, packets);
                Ok(())
            }
        })?;
        packets_to_list(py, &self.packets)
    }

    /// Closes every open candle and returns the packets that carry them.
    fn flush<'py>(&mut self, py: Python<'py>, now_ns: u64) -> PyResult<Bound<'py, PyList>> {
        self.run(py, move |publisher, _, packets| {
            publisher.flush(now_ns, packets);
            Ok(())
        })?;
        packets_to_list(py, &self.packets)
    }

    /// A heartbeat packet carrying the last sequence number sent.
    fn heartbeat<'py>(&mut self, py: Python<'py>, now_ns: u64) -> PyResult<Bound<'py, PyBytes>> {
        self.packets.clear();
        self.inner.heartbeat(now_ns, &mut self.packets);
        Ok(PyBytes::new(py, self.packets.get(0)))
    }

    #[getter]
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    #[getter]
    fn channel(&self) -> u32 {
        self.inner.config().channel
    }

    #[getter]
    fn symbols(&self) -> u32 {
        self.inner.config().symbols
    }

    #[getter]
    fn packet_bytes_max(&self) -> usize {
        self.inner.config().packet_bytes_max
    }

    #[pyo3(signature = (symbol, side, levels = 10))]
    fn depth(&self, py: Python<'_>, symbol: u32, side: u8, levels: usize) -> PyResult<Vec<Level>> {
        let side = side_from(py, side)?;
        let book = self
            .inner
            .book(symbol)
            .ok_or_else(|| invalid(py, format!("no symbol {symbol}")))?;
        Ok(book.depth(side, levels))
    }
}

/// Rebuilds books from packets (see `sdi.exchange.marketdata.Subscriber`).
#[pyclass(module = "sdi._rust.marketdata", name = "Subscriber")]
pub struct PySubscriber {
    inner: Subscriber,
}

#[pymethods]
impl PySubscriber {
    #[new]
    #[pyo3(signature = (channel, symbols, trades_kept = 64, candles_kept = 64))]
    fn new(
        py: Python<'_>,
        channel: u32,
        symbols: u32,
        trades_kept: usize,
        candles_kept: usize,
    ) -> PyResult<Self> {
        let config = SubscriberConfig {
            channel,
            symbols,
            trades_kept,
            candles_kept,
        };
        let inner = Subscriber::new(config).map_err(|error| core_err(py, error))?;
        Ok(Self { inner })
    }

    /// Validates and applies one packet; returns what it did:
    /// "applied", "gap", "duplicate", "snapshot" or "heartbeat".
    fn apply(&mut self, py: Python<'_>, packet: &[u8]) -> PyResult<&'static str> {
        let subscriber = &mut self.inner;
        let outcome = run_core(py, move || subscriber.apply(packet))?;
        Ok(match outcome {
            Outcome::Applied => "applied",
            Outcome::Gap => "gap",
            Outcome::Duplicate => "duplicate",
            Outcome::Snapshot { .. } => "snapshot",
            Outcome::Heartbeat => "heartbeat",
        })
    }

    #[getter]
    fn needs_snapshot(&self) -> bool {
        self.inner.needs_snapshot()
    }

    #[getter]
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    #[getter]
    fn channel(&self) -> u32 {
        self.inner.config().channel
    }

    #[getter]
    fn symbols(&self) -> u32 {
        self.inner.config().symbols
    }

    fn stale_symbols(&self) -> Vec<u32> {
        self.inner.stale_symbols()
    }

    /// The counters, by name.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        let stats = self.inner.stats();
        vec![
            ("packets", stats.packets),
            ("gaps", stats.gaps),
            ("packets_lost", stats.packets_lost),
            ("duplicates", stats.duplicates),
            ("snapshots_installed", stats.snapshots_installed),
            ("snapshots_discarded", stats.snapshots_discarded),
            ("top_mismatches", stats.top_mismatches),
            ("last_send_time_ns", stats.last_send_time_ns),
        ]
    }

    #[pyo3(signature = (symbol, side, levels = 10))]
    fn depth(&self, py: Python<'_>, symbol: u32, side: u8, levels: usize) -> PyResult<Vec<Level>> {
        let side = side_from(py, side)?;
        let book = self
            .inner
            .book(symbol)
            .ok_or_else(|| invalid(py, format!("no symbol {symbol}")))?;
        Ok(book.depth(side, levels))
    }

    fn top_of_book(&self, py: Python<'_>, symbol: u32) -> PyResult<(Option<Level>, Option<Level>)> {
        let book = self
            .inner
            .book(symbol)
            .ok_or_else(|| invalid(py, format!("no symbol {symbol}")))?;
        let top = book.top();
        Ok((top.bid, top.ask))
    }

    /// Recent trades, oldest first: `(trade_id, price, qty, aggressor side)`.
    fn trades(&self, py: Python<'_>, symbol: u32) -> PyResult<Vec<(u64, i64, u64, u8)>> {
        if symbol >= self.inner.config().symbols {
            return Err(invalid(py, format!("no symbol {symbol}")));
        }
        Ok(self
            .inner
            .trades(symbol)
            .iter()
            .map(|trade| {
                (
                    trade.trade_id,
                    trade.price,
                    trade.qty,
                    trade.aggressor as u8,
                )
            })
            .collect())
    }

    /// Closed candles, oldest first.
    fn candles(&self, py: Python<'_>, symbol: u32, interval_ns: u64) -> PyResult<Vec<CandleTuple>> {
        if symbol >= self.inner.config().symbols {
            return Err(invalid(py, format!("no symbol {symbol}")));
        }
        let index = interval_index(py, interval_ns)?;
        Ok(self
            .inner
            .candles(symbol, index)
            .iter()
            .map(candle_tuple)
            .collect())
    }
}

/// A decoded packet: `(flags, channel, seq, send_time_ns)` and its messages,
/// each a tuple headed by its kind (see the stub for the shapes).
#[pyfunction]
fn decode<'py>(
    py: Python<'py>,
    packet: &[u8],
    symbols: u32,
) -> PyResult<(HeaderTuple, Bound<'py, PyList>)> {
    let (header, messages) = decode_packet(packet, symbols).map_err(|error| core_err(py, error))?;
    let list = PyList::empty(py);
    for message in messages {
        let message = message.map_err(|error| core_err(py, error))?;
        let item = match message {
            Message::Delta {
                symbol,
                side,
                price,
                qty,
            } => ("delta", symbol, side as u8, price, qty).into_pyobject(py)?,
            Message::Trade { symbol, trade } => (
                "trade",
                symbol,
                trade.aggressor as u8,
                trade.price,
                trade.qty,
                trade.trade_id,
            )
                .into_pyobject(py)?,
            Message::Top { symbol, top } => ("top", symbol, top.bid, top.ask).into_pyobject(py)?,
            Message::Candle { symbol, candle } => {
                ("candle", symbol, candle_tuple(&candle)).into_pyobject(py)?
            }
            Message::Snapshot {
                symbol,
                valid_at,
                part,
                last,
                bids,
                asks,
            } => (
                "snapshot",
                symbol,
                valid_at,
                part,
                last,
                bids.iter().collect::<Vec<_>>(),
                asks.iter().collect::<Vec<_>>(),
            )
                .into_pyobject(py)?,
        };
        list.append(item)?;
    }
    Ok((
        (
            header.flags,
            header.channel,
            header.seq,
            header.send_time_ns,
        ),
        list,
    ))
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "marketdata")?;
    module.add_class::<PyPublisher>()?;
    module.add_class::<PySubscriber>()?;
    module.add_function(wrap_pyfunction!(decode, &module)?)?;
    module.add("PACKET_BYTES_DEFAULT", PACKET_BYTES_DEFAULT)?;
    module.add("PACKET_BYTES_MIN", PACKET_BYTES_MIN)?;
    module.add("PACKET_BYTES_MAX", PACKET_BYTES_MAX)?;
    module.add("HEADER_BYTES", HEADER_BYTES)?;
    module.add("SYMBOLS_MAX", SYMBOLS_MAX)?;
    module.add("RECOVERY_DELTAS_MAX", RECOVERY_DELTAS_MAX)?;
    module.add("BATCH_EVENTS_MAX", BATCH_EVENTS_MAX)?;
    module.add(
        "CANDLE_INTERVALS_NS",
        (CANDLE_INTERVALS_NS[0], CANDLE_INTERVALS_NS[1]),
    )?;
    module.setattr("__name__", "sdi._rust.marketdata")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.marketdata", &module)?;
    Ok(())
}
