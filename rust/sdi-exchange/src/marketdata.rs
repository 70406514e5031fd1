//! Market data (book chapter 13: market data that reaches everyone at once).
//!
//! - [`Publisher`] consumes the engine's event batches and keeps, per symbol,
//!   the L2 book (from `BookDelta` events), the top of book and 1 s / 1 min
//!   candles. It writes market data messages into packets no bigger than one
//!   UDP datagram, each with a gap-free packet sequence number, and produces
//!   snapshot packets of a symbol's whole L2 book on demand.
//! - [`Subscriber`] validates and applies packets to a local L2 book, detects
//!   a gap in the sequence numbers, marks what it can no longer trust as
//!   stale, and rebuilds a stale symbol from a snapshot plus the deltas after
//!   it (which it buffers while it waits).
//!
//! The wire format is documented in `docs/internals/marketdata.md`; every
//! integer is little-endian. This module knows nothing of sockets: the
//! transports (UDP multicast, WebSocket) live in `sdi.exchange.marketdata`.

use std::collections::VecDeque;

use crate::types::{Event, EventKind, Price, Qty, Side, SymbolId};

// ---------------------------------------------------------------------------
// Limits and wire constants. Units are last in each name.
// ---------------------------------------------------------------------------

/// The packet size a publisher uses unless told otherwise: fits an Ethernet
/// frame's 1500-byte MTU with room for the IP and UDP headers.
pub const PACKET_BYTES_DEFAULT: usize = 1400;
/// The smallest packet size a publisher accepts: a header plus the largest message.
pub const PACKET_BYTES_MIN: usize = 128;
/// The largest packet size: the most a UDP datagram over IPv4 can carry.
pub const PACKET_BYTES_MAX: usize = 65_507;
/// Most symbols one feed carries (the engine's own limit).
pub const SYMBOLS_MAX: usize = crate::constants::SYMBOLS_MAX;
/// Most price levels a subscriber holds per side of one symbol (the engine's own limit).
pub const BOOK_LEVELS_MAX: usize = crate::constants::PRICE_LEVELS_MAX;
/// Most recent trades a subscriber may be asked to keep per symbol.
pub const TRADES_KEPT_MAX: usize = 1 << 16;
/// Most closed candles a subscriber may be asked to keep per symbol and interval.
pub const CANDLES_KEPT_MAX: usize = 1 << 16;
/// Most deltas a stale subscriber buffers while it waits for a snapshot.
/// Past it the buffer restarts, and only a later snapshot can be used.
pub const RECOVERY_DELTAS_MAX: usize = 1 << 20;
/// The candle intervals, in nanoseconds: 1 second and 1 minute.
pub const CANDLE_INTERVALS_NS: [u64; 2] = [1_000_000_000, 60_000_000_000];

/// The first four bytes of every packet.
pub const MAGIC: [u8; 4] = *b"SDMD";
/// The wire format's version.
pub const VERSION: u16 = 1;
/// Bytes of the packet header.
pub const HEADER_BYTES: usize = 32;
/// Header flag: the packet carries snapshot messages (its own sequence space).
pub const FLAG_SNAPSHOT: u16 = 1;
/// Header flag: a heartbeat; no messages, `seq` is the last incremental packet sent.
pub const FLAG_HEARTBEAT: u16 = 2;

/// Message kinds.
pub const KIND_DELTA: u8 = 1;
pub const KIND_TRADE: u8 = 2;
pub const KIND_TOP: u8 = 3;
pub const KIND_CANDLE: u8 = 4;
pub const KIND_SNAPSHOT: u8 = 5;

/// Bytes of each message (a snapshot's is its head; 16 bytes follow per level).
pub const MESSAGE_HEAD_BYTES: usize = 8;
pub const DELTA_BYTES: usize = 24;
pub const TRADE_BYTES: usize = 32;
pub const TOP_BYTES: usize = 40;
pub const CANDLE_BYTES: usize = 72;
pub const SNAPSHOT_HEAD_BYTES: usize = 24;
pub const LEVEL_BYTES: usize = 16;

const _: () = assert!(HEADER_BYTES + CANDLE_BYTES <= PACKET_BYTES_MIN);
const _: () = assert!(HEADER_BYTES + SNAPSHOT_HEAD_BYTES + LEVEL_BYTES <= PACKET_BYTES_MIN);
const _: () = assert!(PACKET_BYTES_MAX <= u16::MAX as usize);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What can go wrong in market data. A lost packet is not an error: it is a
/// gap, which the subscriber reports and recovers from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("corrupt market data packet: {0}")]
    Corrupt(String),
}

fn corrupt<T>(message: String) -> Result<T, Error> {
    Err(Error::Corrupt(message))
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// The best level of each side, `(price, total quantity)`, or `None` when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Top {
    pub bid: Option<(Price, Qty)>,
    pub ask: Option<(Price, Qty)>,
}

/// One candlestick. `trades == 0` means no candle is open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candle {
    pub interval_ns: u64,
    pub bucket_start_ns: u64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Qty,
    pub trades: u32,
}

impl Candle {
    fn add(&mut self, interval_ns: u64, bucket_start_ns: u64, price: Price, qty: Qty) {
        if self.trades == 0 {
            *self = Candle {
                interval_ns,
                bucket_start_ns,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: 0,
                trades: 0,
            };
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume = self.volume.saturating_add(qty);
        self.trades = self.trades.saturating_add(1);
    }
}

/// One trade as the feed reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// The engine's event sequence number of the trade: unique and increasing.
    pub trade_id: u64,
    pub price: Price,
    pub qty: Qty,
    /// The taker's side.
    pub aggressor: Side,
}

/// The L2 book of one symbol: price levels and their total quantity.
///
/// Each side is a vector sorted so that the best level is last (bids
/// ascending, asks descending): the busiest levels sit at the end, where
/// inserting and removing moves least, and a cleared book keeps its capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelBook {
    bids: Vec<(Price, Qty)>,
    asks: Vec<(Price, Qty)>,
}

impl LevelBook {
    fn side(&self, side: Side) -> &Vec<(Price, Qty)> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn find(levels: &[(Price, Qty)], side: Side, price: Price) -> Result<usize, usize> {
        match side {
            Side::Buy => levels.binary_search_by(|level| level.0.cmp(&price)),
            Side::Sell => levels.binary_search_by(|level| price.cmp(&level.0)),
        }
    }

    /// Sets a level's total (0 removes it). Returns false, changing nothing,
    /// when a new level would take the side past `levels_max`.
    pub fn set(&mut self, side: Side, price: Price, qty: Qty, levels_max: usize) -> bool {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        match (Self::find(levels, side, price), qty) {
            (Ok(at), 0) => {
                levels.remove(at);
            }
            (Ok(at), _) => levels[at].1 = qty,
            (Err(_), 0) => {}
            (Err(at), _) => {
                if levels.len() >= levels_max {
                    return false;
                }
                levels.insert(at, (price, qty));
            }
        }
        true
    }

    /// The best level of each side.
    pub fn top(&self) -> Top {
        Top {
            bid: self.bids.last().copied(),
            ask: self.asks.last().copied(),
        }
    }

    /// Up to `levels` levels of one side, best first.
    pub fn depth(&self, side: Side, levels: usize) -> Vec<(Price, Qty)> {
        self.side(side).iter().rev().take(levels).copied().collect()
    }

    /// Levels on one side.
    pub fn len(&self, side: Side) -> usize {
        self.side(side).len()
    }

    /// True when both sides are empty.
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// The level `rank` places from the best, counting bids then asks.
    fn level_best_first(&self, rank: usize) -> (Price, Qty) {
        let bids = self.bids.len();
        if rank < bids {
            self.bids[bids - 1 - rank]
        } else {
            self.asks[self.asks.len() - 1 - (rank - bids)]
        }
    }
}

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

/// Packets written by a [`Publisher`]: one byte buffer plus where each packet
/// ends. The caller keeps it across calls; `clear` keeps its capacity, so a
/// warmed-up publisher allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Packets {
    pub bytes: Vec<u8>,
    /// `ends[i]` is the offset just past packet `i`.
    pub ends: Vec<usize>,
}

impl Packets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Packet `index`.
    pub fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |index| self.get(index))
    }
}

/// A packet's header, as [`decode_header`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    pub flags: u16,
    pub channel: u32,
    pub packet_bytes: u16,
    pub message_count: u16,
    /// Incremental packets: gap-free from 1. Snapshot packets: their own
    /// counter. Heartbeats: the last incremental packet sent (0 for none).
    pub seq: u64,
    pub send_time_ns: u64,
}

impl PacketHeader {
    pub fn is_snapshot(&self) -> bool {
        self.flags & FLAG_SNAPSHOT != 0
    }

    pub fn is_heartbeat(&self) -> bool {
        self.flags & FLAG_HEARTBEAT != 0
    }
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}
fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn message_head(out: &mut Vec<u8>, bytes: usize, kind: u8, aux: u8, symbol: SymbolId) {
    debug_assert!(bytes <= u16::MAX as usize);
    put_u16(out, bytes as u16);
    out.push(kind);
    out.push(aux);
    put_u32(out, symbol);
}

/// Opens, fills and closes packets in a [`Packets`] buffer.
#[derive(Clone, Debug)]
struct PacketWriter {
    channel: u32,
    packet_bytes_max: usize,
    open: bool,
    start: usize,
    count: u16,
    flags: u16,
    /// The next incremental packet's sequence number.
    next_seq: u64,
    next_snapshot_seq: u64,
}

impl PacketWriter {
    /// Makes room for one message of `bytes` in a packet with `flags`,
    /// closing the open packet first if it is full or of another kind.
    fn make_room(&mut self, out: &mut Packets, bytes: usize, flags: u16, now_ns: u64) {
        assert!(HEADER_BYTES + bytes <= self.packet_bytes_max);
        if self.open
            && (self.flags != flags
                || out.bytes.len() - self.start + bytes > self.packet_bytes_max
                || self.count == u16::MAX)
        {
            self.close(out);
        }
        if !self.open {
            self.begin(out, flags, now_ns);
        }
        self.count += 1;
    }

    fn room(&self, out: &Packets) -> usize {
        self.packet_bytes_max - (out.bytes.len() - self.start)
    }

    fn begin(&mut self, out: &mut Packets, flags: u16, now_ns: u64) {
        let seq = if flags & FLAG_HEARTBEAT != 0 {
            self.next_seq - 1
        } else if flags & FLAG_SNAPSHOT != 0 {
            self.next_snapshot_seq += 1;
            self.next_snapshot_seq - 1
        } else {
            self.next_seq += 1;
            self.next_seq - 1
        };
        self.open = true;
        self.start = out.bytes.len();
        self.count = 0;
        self.flags = flags;
        out.bytes.extend_from_slice(&MAGIC);
        put_u16(&mut out.bytes, VERSION);
        put_u16(&mut out.bytes, flags);
        put_u32(&mut out.bytes, self.channel);
        put_u16(&mut out.bytes, 0); // packet bytes, patched on close
        put_u16(&mut out.bytes, 0); // message count, patched on close
        put_u64(&mut out.bytes, seq);
        put_u64(&mut out.bytes, now_ns);
    }

    fn close(&mut self, out: &mut Packets) {
        if !self.open {
            return;
        }
        let bytes = out.bytes.len() - self.start;
        assert!(bytes <= self.packet_bytes_max && bytes >= HEADER_BYTES);
        let at = self.start;
        out.bytes[at + 12..at + 14].copy_from_slice(&(bytes as u16).to_le_bytes());
        out.bytes[at + 14..at + 16].copy_from_slice(&self.count.to_le_bytes());
        out.ends.push(out.bytes.len());
        self.open = false;
    }
}

// ---------------------------------------------------------------------------
// Publisher
// ---------------------------------------------------------------------------

/// How a publisher is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherConfig {
    /// The channel (session) id every packet carries; subscribers check it.
    pub channel: u32,
    /// Symbols are `0..symbols`, as in the engine.
    pub symbols: u32,
    /// No packet is bigger than this.
    pub packet_bytes_max: usize,
}

impl PublisherConfig {
    pub fn new(channel: u32, symbols: u32) -> Self {
        Self {
            channel,
            symbols,
            packet_bytes_max: PACKET_BYTES_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.symbols == 0 || self.symbols as usize > SYMBOLS_MAX {
            return Err(Error::InvalidArgument(format!(
                "symbols must be between 1 and {SYMBOLS_MAX}, not {}",
                self.symbols
            )));
        }
        if !(PACKET_BYTES_MIN..=PACKET_BYTES_MAX).contains(&self.packet_bytes_max) {
            return Err(Error::InvalidArgument(format!(
                "packet_bytes_max must be between {PACKET_BYTES_MIN} and {PACKET_BYTES_MAX}, not {}",
                self.packet_bytes_max
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
struct PublishedSymbol {
    book: LevelBook,
    last_top: Top,
    touched: bool,
    candles: [Candle; CANDLE_INTERVALS_NS.len()],
}

/// Turns engine event batches into market data packets.
#[derive(Clone, Debug)]
pub struct Publisher {
    config: PublisherConfig,
    symbols: Vec<PublishedSymbol>,
    /// Symbols whose book changed in the batch being published.
    touched: Vec<SymbolId>,
    /// Per interval, the symbols with an open candle.
    open_candles: [Vec<SymbolId>; CANDLE_INTERVALS_NS.len()],
    /// Per interval, the bucket the latest batch fell in.
    current_bucket_ns: [u64; CANDLE_INTERVALS_NS.len()],
    last_now_ns: u64,
    last_event_seq: u64,
    writer: PacketWriter,
}

impl Publisher {
    pub fn new(config: PublisherConfig) -> Result<Self, Error> {
        config.validate()?;
        let symbols = config.symbols as usize;
        Ok(Self {
            config,
            symbols: vec![PublishedSymbol::default(); symbols],
            touched: Vec::with_capacity(symbols),
            open_candles: [Vec::with_capacity(symbols), Vec::with_capacity(symbols)],
            current_bucket_ns: [0; CANDLE_INTERVALS_NS.len()],
            last_now_ns: 0,
            last_event_seq: 0,
            writer: PacketWriter {
                channel: config.channel,
                packet_bytes_max: config.packet_bytes_max,
                open: false,
                start: 0,
                count: 0,
                flags: 0,
                next_seq: 1,
                next_snapshot_seq: 1,
            },
        })
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The sequence number the next incremental packet will carry.
    pub fn next_seq(&self) -> u64 {
        self.writer.next_seq
    }

    /// The publisher's L2 book of `symbol`.
    pub fn book(&self, symbol: SymbolId) -> Option<&LevelBook> {
        self.symbols.get(symbol as usize).map(|state| &state.book)
    }

    /// The open candle of `symbol` for interval `interval_index`, if any.
    pub fn open_candle(&self, symbol: SymbolId, interval_index: usize) -> Option<Candle> {
        let candle = *self
            .symbols
            .get(symbol as usize)?
            .candles
            .get(interval_index)?;
        (candle.trades > 0).then_some(candle)
    }

    /// Checks a batch before anything is written: known symbols, valid sides,
    /// positive prices and trade quantities, increasing event sequence numbers.
    fn check_events(&self, events: &[Event]) -> Result<(), Error> {
        let mut last_seq = self.last_event_seq;
        for (index, event) in events.iter().enumerate() {
            if event.seq <= last_seq {
                return Err(Error::InvalidArgument(format!(
                    "event {index} has sequence number {} after {last_seq}; pass each engine \
                     event once, in order",
                    event.seq
                )));
            }
            last_seq = event.seq;
            let is_delta = event.kind == EventKind::BookDelta as u8;
            let is_trade = event.kind == EventKind::Trade as u8;
            if !is_delta && !is_trade {
                continue;
            }
            if event.symbol >= self.config.symbols {
                return Err(Error::InvalidArgument(format!(
                    "event {index} is for symbol {}, but this feed carries symbols 0..{}",
                    event.symbol, self.config.symbols
                )));
            }
            if Side::from_u8(event.side).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "event {index} has side {}, not 0 (buy) or 1 (sell)",
                    event.side
                )));
            }
            if event.price <= 0 || (is_trade && event.qty == 0) {
                return Err(Error::InvalidArgument(format!(
                    "event {index} has price {} and quantity {}; prices must be positive, \
                     and trades must have a quantity",
                    event.price, event.qty
                )));
            }
        }
        Ok(())
    }

    /// Publishes one batch of engine events, stamped `now_ns`, appending
    /// packets to `out`. Book deltas and trades become messages; a symbol whose
    /// best bid or ask changed gets a top-of-book message after the batch;
    /// candles whose bucket ended before `now_ns` close first. The last packet
    /// is closed at the end of the batch, so nothing waits for the next one.
    ///
    /// Time never goes backwards: an earlier `now_ns` than the last counts as
    /// the last.
    pub fn publish(
        &mut self,
        events: &[Event],
        now_ns: u64,
        out: &mut Packets,
    ) -> Result<(), Error> {
        self.check_events(events)?;
        let now_ns = now_ns.max(self.last_now_ns);
        self.last_now_ns = now_ns;
        self.close_finished_candles(now_ns, out);
        for event in events {
            self.last_event_seq = event.seq;
            let Some(side) = Side::from_u8(event.side) else {
                continue;
            };
            if event.kind == EventKind::BookDelta as u8 {
                self.apply_delta(event.symbol, side, event.price, event.qty, now_ns, out);
            } else if event.kind == EventKind::Trade as u8 {
                self.apply_trade(event, side, now_ns, out);
            }
        }
        self.publish_tops(now_ns, out);
        self.writer.close(out);
        Ok(())
    }

    fn apply_delta(
        &mut self,
        symbol: SymbolId,
        side: Side,
        price: Price,
        qty: Qty,
        now_ns: u64,
        out: &mut Packets,
    ) {
        let state = &mut self.symbols[symbol as usize];
        // The engine's books are bounded by its price range, so this cannot refuse.
        let stored = state.book.set(side, price, qty, usize::MAX);
        debug_assert!(stored);
        if !state.touched {
            state.touched = true;
            self.touched.push(symbol);
        }
        self.writer.make_room(out, DELTA_BYTES, 0, now_ns);
        let bytes = &mut out.bytes;
        message_head(bytes, DELTA_BYTES, KIND_DELTA, side as u8, symbol);
        put_i64(bytes, price);
        put_u64(bytes, qty);
    }

    fn apply_trade(&mut self, event: &Event, side: Side, now_ns: u64, out: &mut Packets) {
        let state = &mut self.symbols[event.symbol as usize];
        for (index, interval_ns) in CANDLE_INTERVALS_NS.iter().enumerate() {
            let candle = &mut state.candles[index];
            if candle.trades == 0 {
                self.open_candles[index].push(event.symbol);
            }
            candle.add(
                *interval_ns,
                now_ns - now_ns % interval_ns,
                event.price,
                event.qty,
            );
        }
        self.writer.make_room(out, TRADE_BYTES, 0, now_ns);
        let bytes = &mut out.bytes;
        message_head(bytes, TRADE_BYTES, KIND_TRADE, side as u8, event.symbol);
        put_i64(bytes, event.price);
        put_u64(bytes, event.qty);
        put_u64(bytes, event.seq);
    }

    fn publish_tops(&mut self, now_ns: u64, out: &mut Packets) {
        for index in 0..self.touched.len() {
            let symbol = self.touched[index];
            let state = &mut self.symbols[symbol as usize];
            state.touched = false;
            let top = state.book.top();
            if top == state.last_top {
                continue;
            }
            state.last_top = top;
            self.writer.make_room(out, TOP_BYTES, 0, now_ns);
            write_top(&mut out.bytes, symbol, top);
        }
        self.touched.clear();
    }

    fn close_finished_candles(&mut self, now_ns: u64, out: &mut Packets) {
        for (index, interval_ns) in CANDLE_INTERVALS_NS.iter().enumerate() {
            let bucket_ns = now_ns - now_ns % interval_ns;
            if bucket_ns > self.current_bucket_ns[index] {
                self.close_candles(index, now_ns, out);
            }
            self.current_bucket_ns[index] = bucket_ns;
        }
    }

    fn close_candles(&mut self, interval_index: usize, now_ns: u64, out: &mut Packets) {
        let open = std::mem::take(&mut self.open_candles[interval_index]);
        for &symbol in &open {
            let candle = std::mem::take(&mut self.symbols[symbol as usize].candles[interval_index]);
            debug_assert!(candle.trades > 0);
            self.writer.make_room(out, CANDLE_BYTES, 0, now_ns);
            write_candle(&mut out.bytes, symbol, &candle);
        }
        self.open_candles[interval_index] = open;
        self.open_candles[interval_index].clear();
    }

    /// Closes every open candle now (at the end of a session, say) and
    /// publishes them.
    pub fn flush(&mut self, now_ns: u64, out: &mut Packets) {
        let now_ns = now_ns.max(self.last_now_ns);
        self.last_now_ns = now_ns;
        for index in 0..CANDLE_INTERVALS_NS.len() {
            self.close_candles(index, now_ns, out);
        }
        self.writer.close(out);
    }

    /// A heartbeat packet: no messages; its `seq` is the last incremental
    /// packet sent, so a subscriber that missed the tail of a quiet feed
    /// learns of the gap.
    pub fn heartbeat(&mut self, now_ns: u64, out: &mut Packets) {
        let now_ns = now_ns.max(self.last_now_ns);
        self.writer.close(out);
        self.writer.begin(out, FLAG_HEARTBEAT, now_ns);
        self.writer.close(out);
    }

    /// Snapshot packets of `symbol`'s whole L2 book, valid at the last
    /// incremental packet sent: a subscriber installs it and applies the
    /// deltas of later packets. Large books take several parts; the last has
    /// the `last` flag. Several small snapshots share a packet.
    pub fn snapshot(
        &mut self,
        symbol: SymbolId,
        now_ns: u64,
        out: &mut Packets,
    ) -> Result<(), Error> {
        if symbol >= self.config.symbols {
            return Err(Error::InvalidArgument(format!(
                "no symbol {symbol}; this feed carries symbols 0..{}",
                self.config.symbols
            )));
        }
        self.write_snapshot(symbol, now_ns.max(self.last_now_ns), out);
        self.writer.close(out);
        Ok(())
    }

    /// Snapshots of every symbol.
    pub fn snapshot_all(&mut self, now_ns: u64, out: &mut Packets) {
        let now_ns = now_ns.max(self.last_now_ns);
        for symbol in 0..self.config.symbols {
            self.write_snapshot(symbol, now_ns, out);
        }
        self.writer.close(out);
    }

    fn write_snapshot(&mut self, symbol: SymbolId, now_ns: u64, out: &mut Packets) {
        // An open snapshot packet takes this one too; an open incremental packet is closed
        // first (make_room does both), so the snapshot follows every delta sent.
        let valid_at = self.writer.next_seq - 1;
        let book = &self.symbols[symbol as usize].book;
        let bids = book.len(Side::Buy);
        let total = bids + book.len(Side::Sell);
        let mut sent = 0usize;
        let mut part = 0u32;
        loop {
            let remaining = total - sent;
            let least = SNAPSHOT_HEAD_BYTES + LEVEL_BYTES * remaining.min(1);
            self.writer.make_room(out, least, FLAG_SNAPSHOT, now_ns);
            let room = self.writer.room(out);
            let fit = ((room - SNAPSHOT_HEAD_BYTES) / LEVEL_BYTES)
                .min(remaining)
                .min(u16::MAX as usize);
            let bid_count = (sent + fit).min(bids) - sent.min(bids);
            let ask_count = fit - bid_count;
            let last = sent + fit == total;
            let bytes = &mut out.bytes;
            message_head(
                bytes,
                SNAPSHOT_HEAD_BYTES + fit * LEVEL_BYTES,
                KIND_SNAPSHOT,
                u8::from(last),
                symbol,
            );
            put_u64(bytes, valid_at);
            put_u32(bytes, part);
            put_u16(bytes, bid_count as u16);
            put_u16(bytes, ask_count as u16);
            for rank in sent..sent + fit {
                let (price, qty) = book.level_best_first(rank);
                put_i64(bytes, price);
                put_u64(bytes, qty);
            }
            sent += fit;
            part += 1;
            if last {
                break;
            }
        }
    }
}

fn write_top(bytes: &mut Vec<u8>, symbol: SymbolId, top: Top) {
    let flags = u8::from(top.bid.is_some()) | (u8::from(top.ask.is_some()) << 1);
    message_head(bytes, TOP_BYTES, KIND_TOP, flags, symbol);
    let (bid_price, bid_qty) = top.bid.unwrap_or((0, 0));
    let (ask_price, ask_qty) = top.ask.unwrap_or((0, 0));
    put_i64(bytes, bid_price);
    put_u64(bytes, bid_qty);
    put_i64(bytes, ask_price);
    put_u64(bytes, ask_qty);
}

fn write_candle(bytes: &mut Vec<u8>, symbol: SymbolId, candle: &Candle) {
    message_head(bytes, CANDLE_BYTES, KIND_CANDLE, 0, symbol);
    put_u64(bytes, candle.interval_ns);
    put_u64(bytes, candle.bucket_start_ns);
    put_i64(bytes, candle.open);
    put_i64(bytes, candle.high);
    put_i64(bytes, candle.low);
    put_i64(bytes, candle.close);
    put_u64(bytes, candle.volume);
    put_u32(bytes, candle.trades);
    put_u32(bytes, 0);
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}
fn i64_at(bytes: &[u8], at: usize) -> i64 {
    u64_at(bytes, at) as i64
}

/// A snapshot's levels on one side, best first, still as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels<'a>(&'a [u8]);

impl<'a> Levels<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / LEVEL_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Price, Qty)> + 'a {
        self.0
            .chunks_exact(LEVEL_BYTES)
            .map(|level| (i64_at(level, 0), u64_at(level, 8)))
    }
}

/// One decoded market data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Delta {
        symbol: SymbolId,
        side: Side,
        price: Price,
        qty: Qty,
    },
    Trade {
        symbol: SymbolId,
        trade: Trade,
    },
    Top {
        symbol: SymbolId,
        top: Top,
    },
    Candle {
        symbol: SymbolId,
        candle: Candle,
    },
    Snapshot {
        symbol: SymbolId,
        /// The incremental packet the snapshot is valid at (its state after that packet).
        valid_at: u64,
        part: u32,
        last: bool,
        bids: Levels<'a>,
        asks: Levels<'a>,
    },
}

impl Message<'_> {
    pub fn symbol(&self) -> SymbolId {
        match *self {
            Message::Delta { symbol, .. }
            | Message::Trade { symbol, .. }
            | Message::Top { symbol, .. }
            | Message::Candle { symbol, .. }
            | Message::Snapshot { symbol, .. } => symbol,
        }
    }
}

/// Reads and checks a packet's header: magic, version, flags, and that the
/// packet is exactly as long as it says.
pub fn decode_header(packet: &[u8]) -> Result<PacketHeader, Error> {
    if packet.len() < HEADER_BYTES {
        return corrupt(format!(
            "{} bytes is shorter than the {HEADER_BYTES}-byte header",
            packet.len()
        ));
    }
    if packet[0..4] != MAGIC {
        return corrupt(format!(
            "bad magic {:02x?}; this is not an sdi market data packet",
            &packet[0..4]
        ));
    }
    let version = u16_at(packet, 4);
    if version != VERSION {
        return corrupt(format!(
            "version {version}; this subscriber reads version {VERSION}"
        ));
    }
    let header = PacketHeader {
        flags: u16_at(packet, 6),
        channel: u32_at(packet, 8),
        packet_bytes: u16_at(packet, 12),
        message_count: u16_at(packet, 14),
        seq: u64_at(packet, 16),
        send_time_ns: u64_at(packet, 24),
    };
    if header.flags & !(FLAG_SNAPSHOT | FLAG_HEARTBEAT) != 0
        || header.flags == FLAG_SNAPSHOT | FLAG_HEARTBEAT
    {
        return corrupt(format!("unknown flags {:#06x}", header.flags));
    }
    if usize::from(header.packet_bytes) != packet.len() {
        return corrupt(format!(
            "the header says {} bytes but the packet has {} (truncated or padded)",
            header.packet_bytes,
            packet.len()
        ));
    }
    if header.is_heartbeat() && header.message_count != 0 {
        return corrupt("a heartbeat carries no messages".into());
    }
    if !header.is_heartbeat() && !header.is_snapshot() && header.seq == 0 {
        return corrupt("incremental packets are numbered from 1".into());
    }
    if header.seq == u64::MAX {
        return corrupt("sequence number u64::MAX is reserved".into());
    }
    Ok(header)
}

/// The messages of a packet whose header has been read; each is checked as
/// it is decoded (lengths, kinds, sides, symbols below `symbols`).
pub struct Messages<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u16,
    snapshot: bool,
    symbols: u32,
}

impl<'a> Messages<'a> {
    pub fn new(packet: &'a [u8], header: &PacketHeader, symbols: u32) -> Self {
        Self {
            bytes: packet,
            at: HEADER_BYTES,
            left: header.message_count,
            snapshot: header.is_snapshot(),
            symbols,
        }
    }

    /// Checks that the messages fill the packet exactly.
    pub fn check_all(mut self) -> Result<MessageCounts, Error> {
        let mut counts = MessageCounts::default();
        for message in self.by_ref() {
            match message? {
                Message::Delta { .. } => counts.deltas += 1,
                Message::Snapshot { .. } => counts.snapshots += 1,
                _ => counts.other += 1,
            }
        }
        if self.at != self.bytes.len() {
            return corrupt(format!(
                "{} bytes left after the last message",
                self.bytes.len() - self.at
            ));
        }
        Ok(counts)
    }

    fn decode(&mut self) -> Result<Message<'a>, Error> {
        let rest = &self.bytes[self.at..];
        if rest.len() < MESSAGE_HEAD_BYTES {
            return corrupt(format!(
                "message at byte {} runs past the end of the packet",
                self.at
            ));
        }
        let length = usize::from(u16_at(rest, 0));
        let kind = rest[2];
        let aux = rest[3];
        let symbol = u32_at(rest, 4);
        if length < MESSAGE_HEAD_BYTES || length > rest.len() {
            return corrupt(format!(
                "message at byte {} says it is {length} bytes; {} are left",
                self.at,
                rest.len()
            ));
        }
        if symbol >= self.symbols {
            return corrupt(format!(
                "message for symbol {symbol}; the feed carries symbols 0..{}",
                self.symbols
            ));
        }
        let body = &rest[..length];
        let expected = match kind {
            KIND_DELTA => DELTA_BYTES,
            KIND_TRADE => TRADE_BYTES,
            KIND_TOP => TOP_BYTES,
            KIND_CANDLE => CANDLE_BYTES,
            KIND_SNAPSHOT if length >= SNAPSHOT_HEAD_BYTES => {
                SNAPSHOT_HEAD_BYTES
                    + LEVEL_BYTES * (usize::from(u16_at(body, 20)) + usize::from(u16_at(body, 22)))
            }
            KIND_SNAPSHOT => SNAPSHOT_HEAD_BYTES,
            _ => return corrupt(format!("unknown message kind {kind}")),
        };
        if length != expected {
            return corrupt(format!(
                "message kind {kind} is {length} bytes, not {expected}"
            ));
        }
        if (kind == KIND_SNAPSHOT) != self.snapshot {
            return corrupt(format!(
                "message kind {kind} in a {} packet",
                if self.snapshot {
                    "snapshot"
                } else {
                    "incremental"
                }
            ));
        }
        self.at += length;
        let side = || {
            Side::from_u8(aux).ok_or_else(|| Error::Corrupt(format!("side {aux} is not 0 or 1")))
        };
        let message = match kind {
            KIND_DELTA => Message::Delta {
                symbol,
                side: side()?,
                price: i64_at(body, 8),
                qty: u64_at(body, 16),
            },
            KIND_TRADE => Message::Trade {
                symbol,
                trade: Trade {
                    aggressor: side()?,
                    price: i64_at(body, 8),
                    qty: u64_at(body, 16),
                    trade_id: u64_at(body, 24),
                },
            },
            KIND_TOP => {
                if aux > 3 {
                    return corrupt(format!("top of book flags {aux:#04x}"));
                }
                let level = |at: usize| (i64_at(body, at), u64_at(body, at + 8));
                Message::Top {
                    symbol,
                    top: Top {
                        bid: (aux & 1 != 0).then(|| level(8)),
                        ask: (aux & 2 != 0).then(|| level(24)),
                    },
                }
            }
            KIND_CANDLE => {
                let candle = Candle {
                    interval_ns: u64_at(body, 8),
                    bucket_start_ns: u64_at(body, 16),
                    open: i64_at(body, 24),
                    high: i64_at(body, 32),
                    low: i64_at(body, 40),
                    close: i64_at(body, 48),
                    volume: u64_at(body, 56),
                    trades: u32_at(body, 64),
                };
                let range = candle.low..=candle.high;
                if !CANDLE_INTERVALS_NS.contains(&candle.interval_ns)
                    || candle.trades == 0
                    || !range.contains(&candle.open)
                    || !range.contains(&candle.close)
                {
                    return corrupt(format!("inconsistent candle {candle:?}"));
                }
                Message::Candle { symbol, candle }
            }
            _ => {
                if aux > 1 {
                    return corrupt(format!("snapshot flags {aux:#04x}"));
                }
                let bids = usize::from(u16_at(body, 20));
                let levels_at = SNAPSHOT_HEAD_BYTES;
                let split = levels_at + bids * LEVEL_BYTES;
                Message::Snapshot {
                    symbol,
                    valid_at: u64_at(body, 8),
                    part: u32_at(body, 16),
                    last: aux == 1,
                    bids: Levels(&body[levels_at..split]),
                    asks: Levels(&body[split..]),
                }
            }
        };
        Ok(message)
    }
}

/// How many messages of each sort a packet holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub deltas: usize,
    pub snapshots: usize,
    pub other: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let decoded = self.decode();
        if decoded.is_err() {
            self.left = 0;
        }
        Some(decoded)
    }
}

/// Decodes and checks a whole packet: its header and every message.
pub fn decode_packet(packet: &[u8], symbols: u32) -> Result<(PacketHeader, Messages<'_>), Error> {
    let header = decode_header(packet)?;
    Messages::new(packet, &header, symbols).check_all()?;
    Ok((header, Messages::new(packet, &header, symbols)))
}

// ---------------------------------------------------------------------------
// Subscriber
// ---------------------------------------------------------------------------

/// How a subscriber is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberConfig {
    /// Packets of any other channel are refused.
    pub channel: u32,
    pub symbols: u32,
    /// Recent trades kept per symbol.
    pub trades_kept: usize,
    /// Closed candles kept per symbol and interval.
    pub candles_kept: usize,
}

impl SubscriberConfig {
    pub fn new(channel: u32, symbols: u32) -> Self {
        Self {
            channel,
            symbols,
            trades_kept: 64,
            candles_kept: 64,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.symbols == 0 || self.symbols as usize > SYMBOLS_MAX {
            return Err(Error::InvalidArgument(format!(
                "symbols must be between 1 and {SYMBOLS_MAX}, not {}",
                self.symbols
            )));
        }
        if self.trades_kept > TRADES_KEPT_MAX || self.candles_kept > CANDLES_KEPT_MAX {
            return Err(Error::InvalidArgument(format!(
                "keep at most {TRADES_KEPT_MAX} trades and {CANDLES_KEPT_MAX} candles per symbol"
            )));
        }
        Ok(())
    }
}

/// What applying one packet did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The next incremental packet, applied.
    Applied,
    /// Applied, after finding that packets before it were lost.
    Gap,
    /// Already seen (or older than what was seen); ignored.
    Duplicate,
    /// A snapshot packet; `installed` symbols were rebuilt from it.
    Snapshot { installed: u32 },
    /// A heartbeat (it may also have revealed a gap: see `gaps`).
    Heartbeat,
}

/// Counters a subscriber keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    pub packets: u64,
    pub gaps: u64,
    /// Incremental packets known lost (the sum of every gap's width).
    pub packets_lost: u64,
    pub duplicates: u64,
    pub snapshots_installed: u64,
    /// Snapshots not used: too old for the deltas buffered, or parts missing.
    pub snapshots_discarded: u64,
    /// Top-of-book messages that disagreed with the book built from deltas.
    pub top_mismatches: u64,
    pub last_send_time_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct BufferedDelta {
    seq: u64,
    symbol: SymbolId,
    side: Side,
    price: Price,
    qty: Qty,
}

#[derive(Clone, Debug, Default)]
struct PendingSnapshot {
    active: bool,
    valid_at: u64,
    next_part: u32,
    /// Levels best first while parts arrive; reversed on install.
    book: LevelBook,
}

#[derive(Clone, Debug, Default)]
struct SubscribedSymbol {
    book: LevelBook,
    /// `None`: stale, waiting for a snapshot. `Some(at)`: the book holds every
    /// change up to packet `at` or to the last packet applied, whichever is later.
    synced_at: Option<u64>,
    trades: VecDeque<Trade>,
    candles: [VecDeque<Candle>; CANDLE_INTERVALS_NS.len()],
    pending: PendingSnapshot,
}

/// Rebuilds the feed's books from packets, detecting gaps and recovering
/// from snapshots.
#[derive(Clone, Debug)]
pub struct Subscriber {
    config: SubscriberConfig,
    symbols: Vec<SubscribedSymbol>,
    /// The incremental packet expected next.
    next_seq: u64,
    stale: u32,
    /// Deltas of stale symbols from packet `buffer_from` on, gap-free.
    buffer: Vec<BufferedDelta>,
    buffer_from: u64,
    stats: SubscriberStats,
}

impl Subscriber {
    /// A subscriber that has seen nothing yet. It starts in sync with empty
    /// books (right for a feed's first packet, 1); a first packet later than 1
    /// is a gap, and every symbol then waits for a snapshot.
    pub fn new(config: SubscriberConfig) -> Result<Self, Error> {
        config.validate()?;
        let symbols = (0..config.symbols)
            .map(|_| SubscribedSymbol {
                synced_at: Some(0),
                ..SubscribedSymbol::default()
            })
            .collect();
        Ok(Self {
            config,
            symbols,
            next_seq: 1,
            stale: 0,
            buffer: Vec::new(),
            buffer_from: 1,
            stats: SubscriberStats::default(),
        })
    }

    pub fn config(&self) -> &SubscriberConfig {
        &self.config
    }

    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// The incremental packet expected next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// True when some symbol's book cannot be trusted until a snapshot arrives.
    pub fn needs_snapshot(&self) -> bool {
        self.stale > 0
    }

    /// True when `symbol` is stale (waiting for a snapshot).
    pub fn is_stale(&self, symbol: SymbolId) -> bool {
        self.symbols
            .get(symbol as usize)
            .is_some_and(|state| state.synced_at.is_none())
    }

    /// The stale symbols, in order.
    pub fn stale_symbols(&self) -> Vec<SymbolId> {
        (0..self.config.symbols)
            .filter(|&symbol| self.is_stale(symbol))
            .collect()
    }

    pub fn book(&self, symbol: SymbolId) -> Option<&LevelBook> {
        self.symbols.get(symbol as usize).map(|state| &state.book)
    }

    /// Recent trades of `symbol`, oldest first.
    pub fn trades(&self, symbol: SymbolId) -> Vec<Trade> {
        self.symbols
            .get(symbol as usize)
            .map(|state| state.trades.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Closed candles of `symbol` for interval `interval_index`, oldest first.
    pub fn candles(&self, symbol: SymbolId, interval_index: usize) -> Vec<Candle> {
        self.symbols
            .get(symbol as usize)
            .and_then(|state| state.candles.get(interval_index))
            .map(|candles| candles.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Validates `packet` whole, then applies it. A bad packet changes nothing.
    pub fn apply(&mut self, packet: &[u8]) -> Result<Outcome, Error> {
        let header = decode_header(packet)?;
        if header.channel != self.config.channel {
            return corrupt(format!(
                "packet of channel {}; this subscriber follows channel {}",
                header.channel, self.config.channel
            ));
        }
        let counts = Messages::new(packet, &header, self.config.symbols).check_all()?;
        self.stats.packets += 1;
        self.stats.last_send_time_ns = self.stats.last_send_time_ns.max(header.send_time_ns);
        if header.is_heartbeat() {
            if header.seq >= self.next_seq {
                self.gap(header.seq + 1);
                self.next_seq = header.seq + 1;
            }
            return Ok(Outcome::Heartbeat);
        }
        if header.is_snapshot() {
            let installed = self.apply_snapshot_packet(packet, &header)?;
            return Ok(Outcome::Snapshot { installed });
        }
        let seq = header.seq;
        if seq < self.next_seq {
            self.stats.duplicates += 1;
            return Ok(Outcome::Duplicate);
        }
        let outcome = if seq > self.next_seq {
            self.gap(seq);
            Outcome::Gap
        } else {
            Outcome::Applied
        };
        self.next_seq = seq + 1;
        let buffering = self.stale > 0;
        if buffering && self.buffer.len() + counts.deltas > RECOVERY_DELTAS_MAX {
            // Too much to hold: start over from the next packet; only a
            // snapshot valid at this packet or later can be used now.
            self.buffer.clear();
            self.buffer_from = seq + 1;
        }
        let keep = buffering && self.buffer_from <= seq;
        for message in Messages::new(packet, &header, self.config.symbols) {
            self.apply_message(message?, seq, keep);
        }
        if self.stale == 0 && !self.buffer.is_empty() {
            self.buffer.clear();
        }
        Ok(outcome)
    }

    /// Packets before `seq` (from `next_seq` on) were lost: every symbol whose
    /// book may miss one of them becomes stale, and buffering restarts at `seq`.
    fn gap(&mut self, seq: u64) {
        self.stats.gaps += 1;
        self.stats.packets_lost += seq - self.next_seq;
        for state in &mut self.symbols {
            if let Some(at) = state.synced_at {
                if at < seq - 1 {
                    state.synced_at = None;
                    self.stale += 1;
                }
            }
        }
        self.buffer.clear();
        self.buffer_from = seq;
    }

    fn mark_stale(&mut self, symbol: SymbolId) {
        let state = &mut self.symbols[symbol as usize];
        if state.synced_at.is_some() {
            state.synced_at = None;
            self.stale += 1;
        }
    }

    fn apply_message(&mut self, message: Message<'_>, seq: u64, keep: bool) {
        let symbol = message.symbol();
        let trades_kept = self.config.trades_kept;
        let candles_kept = self.config.candles_kept;
        let state = &mut self.symbols[symbol as usize];
        let current = state.synced_at.map(|at| seq > at);
        let mut now_stale = false;
        match message {
            Message::Delta {
                side, price, qty, ..
            } => match current {
                Some(true) => now_stale = !state.book.set(side, price, qty, BOOK_LEVELS_MAX),
                Some(false) => {}
                None if keep => self.buffer.push(BufferedDelta {
                    seq,
                    symbol,
                    side,
                    price,
                    qty,
                }),
                None => {}
            },
            Message::Top { top, .. } => {
                if current == Some(true) && state.book.top() != top {
                    self.stats.top_mismatches += 1;
                    now_stale = true;
                }
            }
            Message::Trade { trade, .. } => {
                if trades_kept > 0 {
                    if state.trades.len() == trades_kept {
                        state.trades.pop_front();
                    }
                    state.trades.push_back(trade);
                }
            }
            Message::Candle { candle, .. } => {
                let index = CANDLE_INTERVALS_NS
                    .iter()
                    .position(|&interval| interval == candle.interval_ns);
                if let (Some(index), true) = (index, candles_kept > 0) {
                    let candles = &mut state.candles[index];
                    if candles.len() == candles_kept {
                        candles.pop_front();
                    }
                    candles.push_back(candle);
                }
            }
            Message::Snapshot { .. } => {}
        }
        if now_stale {
            self.mark_stale(symbol);
        }
    }

    fn apply_snapshot_packet(
        &mut self,
        packet: &[u8],
        header: &PacketHeader,
    ) -> Result<u32, Error> {
        let mut installed = 0;
        for message in Messages::new(packet, header, self.config.symbols) {
            let Message::Snapshot {
                symbol,
                valid_at,
                part,
                last,
                bids,
                asks,
            } = message?
            else {
                continue;
            };
            let pending = &mut self.symbols[symbol as usize].pending;
            if part == 0 {
                pending.active = true;
                pending.valid_at = valid_at;
                pending.next_part = 0;
                pending.book.clear();
            }
            if !pending.active || pending.valid_at != valid_at || pending.next_part != part {
                if pending.active {
                    self.stats.snapshots_discarded += 1;
                }
                pending.active = false;
                continue;
            }
            pending.next_part += 1;
            // Parts arrive best first; each side must keep getting worse.
            let mut ordered = true;
            for (price, qty) in bids.iter() {
                ordered &= qty > 0 && pending.book.bids.last().is_none_or(|l| price < l.0);
                pending.book.bids.push((price, qty));
            }
            for (price, qty) in asks.iter() {
                ordered &= qty > 0 && pending.book.asks.last().is_none_or(|l| price > l.0);
                pending.book.asks.push((price, qty));
            }
            if !ordered {
                self.stats.snapshots_discarded += 1;
                pending.active = false;
                continue;
            }
            if last {
                pending.active = false;
                if self.install(symbol) {
                    installed += 1;
                }
            }
        }
        Ok(installed)
    }

    /// Installs `symbol`'s assembled snapshot if it can be brought up to date,
    /// replaying the buffered deltas after it.
    fn install(&mut self, symbol: SymbolId) -> bool {
        let last_applied = self.next_seq - 1;
        let state = &mut self.symbols[symbol as usize];
        let valid_at = state.pending.valid_at;
        let usable = match state.synced_at {
            // A symbol in sync takes a snapshot only if it is not older than its book.
            Some(at) => valid_at >= at.max(last_applied),
            // A stale one needs every delta after the snapshot: buffered, or none yet.
            None => valid_at >= last_applied || valid_at.saturating_add(1) >= self.buffer_from,
        };
        let books = &state.pending.book;
        let crossed = matches!(
            (books.bids.first(), books.asks.first()),
            (Some(bid), Some(ask)) if bid.0 >= ask.0
        );
        if !usable || crossed {
            self.stats.snapshots_discarded += 1;
            return false;
        }
        let pending = &mut state.pending;
        pending.book.bids.reverse();
        pending.book.asks.reverse();
        std::mem::swap(&mut state.book, &mut pending.book);
        pending.book.clear();
        if state.synced_at.is_none() {
            self.stale -= 1;
            for delta in self
                .buffer
                .iter()
                .filter(|d| d.symbol == symbol && d.seq > valid_at)
            {
                state
                    .book
                    .set(delta.side, delta.price, delta.qty, BOOK_LEVELS_MAX);
            }
        }
        state.synced_at = Some(valid_at);
        self.stats.snapshots_installed += 1;
        if self.stale == 0 {
            self.buffer.clear();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(seq: u64, symbol: SymbolId, side: Side, price: Price, qty: Qty) -> Event {
        Event {
            seq,
            kind: EventKind::BookDelta as u8,
            side: side as u8,
            symbol,
            price,
            qty,
            ..Event::default()
        }
    }

    fn trade(seq: u64, symbol: SymbolId, side: Side, price: Price, qty: Qty) -> Event {
        Event {
            seq,
            kind: EventKind::Trade as u8,
            side: side as u8,
            symbol,
            price,
            qty,
            ..Event::default()
        }
    }

    #[test]
    fn a_delta_reaches_the_subscriber() {
        let mut publisher = Publisher::new(PublisherConfig::new(7, 2)).unwrap();
        let mut subscriber = Subscriber::new(SubscriberConfig::new(7, 2)).unwrap();
        let mut out = Packets::new();
        let events = [
            delta(1, 1, Side::Buy, 100, 5),
            delta(2, 1, Side::Sell, 101, 3),
        ];
        publisher.publish(&events, 10, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(subscriber.apply(out.get(0)).unwrap(), Outcome::Applied);
        let top = subscriber.book(1).unwrap().top();
        assert_eq!(top.bid, Some((100, 5)));
        assert_eq!(top.ask, Some((101, 3)));
        assert_eq!(subscriber.stats().top_mismatches, 0);
    }

    #[test]
    fn packets_stay_under_the_limit_and_are_numbered_without_gaps() {
        let config = PublisherConfig {
            packet_bytes_max: PACKET_BYTES_MIN,
            ..PublisherConfig::new(1, 1)
        };
        let mut publisher = Publisher::new(config).unwrap();
        let events: Vec<Event> = (1..=100)
            .map(|seq| delta(seq, 0, Side::Buy, seq as i64, 1))
            .collect();
        let mut out = Packets::new();
        publisher.publish(&events, 0, &mut out).unwrap();
        assert!(out.len() > 10);
        for (index, packet) in out.iter().enumerate() {
            assert!(packet.len() <= PACKET_BYTES_MIN);
            assert_eq!(decode_header(packet).unwrap().seq, index as u64 + 1);
        }
    }

    #[test]
    fn candles_close_when_the_next_bucket_starts_and_on_flush() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 1)).unwrap();
        let mut subscriber = Subscriber::new(SubscriberConfig::new(1, 1)).unwrap();
        let mut out = Packets::new();
        let second = 1_000_000_000;
        publisher
            .publish(
                &[trade(1, 0, Side::Buy, 10, 2), trade(2, 0, Side::Sell, 8, 1)],
                5,
                &mut out,
            )
            .unwrap();
        publisher
            .publish(&[trade(3, 0, Side::Buy, 12, 4)], second / 2, &mut out)
            .unwrap();
        publisher
            .publish(&[trade(4, 0, Side::Buy, 11, 1)], second + 1, &mut out)
            .unwrap();
        for packet in out.iter() {
            subscriber.apply(packet).unwrap();
        }
        let closed = subscriber.candles(0, 0);
        assert_eq!(closed.len(), 1);
        let candle = closed[0];
        assert_eq!(
            (
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.volume,
                candle.trades
            ),
            (10, 12, 8, 12, 7, 3)
        );
        assert_eq!(candle.bucket_start_ns, 0);
        assert!(subscriber.candles(0, 1).is_empty());
        out.clear();
        publisher.flush(second + 2, &mut out);
        for packet in out.iter() {
            subscriber.apply(packet).unwrap();
        }
        assert_eq!(subscriber.candles(0, 0).len(), 2);
        assert_eq!(subscriber.candles(0, 1)[0].volume, 8);
        assert_eq!(subscriber.trades(0).len(), 4);
    }

    #[test]
    fn a_lost_packet_is_a_gap_and_a_snapshot_heals_it() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 1)).unwrap();
        let mut subscriber = Subscriber::new(SubscriberConfig::new(1, 1)).unwrap();
        let mut out = Packets::new();
        publisher
            .publish(&[delta(1, 0, Side::Buy, 100, 5)], 0, &mut out)
            .unwrap();
        publisher
            .publish(&[delta(2, 0, Side::Buy, 99, 5)], 0, &mut out)
            .unwrap();
        publisher
            .publish(&[delta(3, 0, Side::Buy, 100, 0)], 0, &mut out)
            .unwrap();
        subscriber.apply(out.get(0)).unwrap();
        assert_eq!(subscriber.apply(out.get(2)).unwrap(), Outcome::Gap);
        assert!(subscriber.needs_snapshot());
        let mut snapshot = Packets::new();
        publisher.snapshot(0, 0, &mut snapshot).unwrap();
        assert_eq!(
            subscriber.apply(snapshot.get(0)).unwrap(),
            Outcome::Snapshot { installed: 1 }
        );
        assert!(!subscriber.needs_snapshot());
        assert_eq!(
            subscriber.book(0).unwrap().depth(Side::Buy, 10),
            vec![(99, 5)]
        );
        assert_eq!(subscriber.apply(out.get(1)).unwrap(), Outcome::Duplicate);
    }

    #[test]
    fn a_heartbeat_reveals_a_lost_tail() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 1)).unwrap();
        let mut subscriber = Subscriber::new(SubscriberConfig::new(1, 1)).unwrap();
        let mut out = Packets::new();
        publisher
            .publish(&[delta(1, 0, Side::Buy, 100, 5)], 0, &mut out)
            .unwrap();
        publisher.heartbeat(0, &mut out);
        assert_eq!(subscriber.apply(out.get(1)).unwrap(), Outcome::Heartbeat);
        assert!(subscriber.needs_snapshot());
        assert_eq!(subscriber.stats().packets_lost, 1);
    }

    #[test]
    fn bad_packets_are_refused_and_change_nothing() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 1)).unwrap();
        let mut out = Packets::new();
        publisher
            .publish(
                &[
                    delta(1, 0, Side::Buy, 100, 5),
                    trade(2, 0, Side::Buy, 100, 1),
                ],
                0,
                &mut out,
            )
            .unwrap();
        let good = out.get(0).to_vec();
        let mut subscriber = Subscriber::new(SubscriberConfig::new(1, 1)).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[4] = 9;
        let mut bad_side = good.clone();
        bad_side[HEADER_BYTES + 3] = 7;
        let mut bad_kind = good.clone();
        bad_kind[HEADER_BYTES + 2] = 99;
        let mut bad_length = good.clone();
        bad_length[HEADER_BYTES] = 200;
        for packet in [
            &good[..10],
            &good[..good.len() - 1],
            &bad_magic,
            &bad_version,
            &bad_side,
            &bad_kind,
            &bad_length,
        ] {
            assert!(matches!(subscriber.apply(packet), Err(Error::Corrupt(_))));
        }
        assert_eq!(subscriber.next_seq(), 1);
        assert!(subscriber.book(0).unwrap().is_empty());
        let other_channel = Subscriber::new(SubscriberConfig::new(2, 1))
            .unwrap()
            .apply(&good);
        assert!(matches!(other_channel, Err(Error::Corrupt(_))));
    }

    #[test]
    fn small_snapshots_share_a_packet() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 3)).unwrap();
        let mut out = Packets::new();
        publisher
            .publish(&[delta(1, 2, Side::Sell, 7, 1)], 0, &mut out)
            .unwrap();
        out.clear();
        publisher.snapshot_all(0, &mut out);
        assert_eq!(out.len(), 1);
        let header = decode_header(out.get(0)).unwrap();
        assert_eq!((header.message_count, header.seq), (3, 1));
    }

    #[test]
    fn the_publisher_refuses_bad_events_before_writing() {
        let mut publisher = Publisher::new(PublisherConfig::new(1, 1)).unwrap();
        let mut out = Packets::new();
        let wrong_symbol = publisher.publish(&[delta(1, 3, Side::Buy, 1, 1)], 0, &mut out);
        assert!(matches!(wrong_symbol, Err(Error::InvalidArgument(_))));
        publisher
            .publish(&[delta(5, 0, Side::Buy, 1, 1)], 0, &mut out)
            .unwrap();
        let replayed = publisher.publish(&[delta(5, 0, Side::Buy, 1, 1)], 0, &mut out);
        assert!(matches!(replayed, Err(Error::InvalidArgument(_))));
        assert_eq!(out.len(), 1);
        assert!(Publisher::new(PublisherConfig {
            packet_bytes_max: 64,
            ..PublisherConfig::new(1, 1)
        })
        .is_err());
    }
}
