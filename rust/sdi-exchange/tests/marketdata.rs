//! Market data against the engine: a subscriber that receives every packet
//! holds exactly the engine's depth; one that loses packets notices, and
//! after a snapshot plus the deltas after it holds the engine's depth again.
//! Mangled packets are refused, never a panic.

use std::collections::VecDeque;

use proptest::prelude::*;
use sdi_exchange::marketdata::{
    decode_header, Outcome, Packets, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
    PACKET_BYTES_MIN,
};
use sdi_exchange::workload::{mixed_workload, workload_config, SplitMix};
use sdi_exchange::{
    Command, Engine, EngineConfig, Event, EventKind, Side, SymbolConfig, TimeInForce,
};

const CHANNEL: u32 = 3;

/// Commands over several symbols and a narrow price range, so that orders
/// trade, levels empty and fill again, and cancels and amends hit.
fn random_commands(count: usize, symbols: u32, seed: u64) -> Vec<Command> {
    let mut random = SplitMix::new(seed);
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        let symbol = random.below(u64::from(symbols)) as u32;
        let id = 1 + random.below(60);
        let price = 90 + random.below(21) as i64;
        let qty = 1 + random.below(20);
        let side = if random.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let command = match random.below(10) {
            0..=4 => Command::limit(0, symbol, id, side, price, qty, TimeInForce::Gtc),
            5 => Command::limit(0, symbol, id, side, price, qty, TimeInForce::Ioc),
            6 | 7 => Command::cancel(0, symbol, id),
            _ => Command::amend(0, symbol, id, price, qty),
        };
        commands.push(command);
    }
    commands
}

fn multi_symbol_config(symbols: u32) -> EngineConfig {
    EngineConfig {
        symbols: vec![SymbolConfig::new(1, 1, 1000); symbols as usize],
        accounts: 1,
        orders_resting_max: 4096,
        funds: false,
        daily_notional_max: 0,
        book_deltas: true,
    }
}

fn assert_same_depth(engine: &Engine, subscriber: &Subscriber, symbols: u32) {
    for symbol in 0..symbols {
        let book = subscriber.book(symbol).expect("a known symbol");
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(
                book.depth(side, usize::MAX),
                engine.depth(symbol, side, usize::MAX),
                "symbol {symbol}, side {side:?}"
            );
        }
    }
}

/// Drives `commands` through an engine in random batches, publishing each batch.
struct Feed {
    engine: Engine,
    publisher: Publisher,
    events: Vec<Event>,
    packets: Packets,
    random: SplitMix,
    now_ns: u64,
    input_seq: u64,
}

impl Feed {
    fn new(config: EngineConfig, packet_bytes_max: usize, seed: u64) -> Self {
        let symbols = config.symbols.len() as u32;
        Self {
            engine: Engine::new(config).expect("valid"),
            publisher: Publisher::new(PublisherConfig {
                packet_bytes_max,
                ..PublisherConfig::new(CHANNEL, symbols)
            })
            .expect("valid"),
            events: Vec::new(),
            packets: Packets::new(),
            random: SplitMix::new(seed),
            now_ns: 0,
            input_seq: 0,
        }
    }

    /// Processes one batch; its packets are in `self.packets`.
    fn batch(&mut self, commands: &[Command]) {
        self.events.clear();
        for command in commands {
            self.input_seq += 1;
            self.engine
                .process(command, self.input_seq, &mut self.events);
        }
        // Time moves in steps of up to 0.7 s, so 1 s candles close often.
        self.now_ns += self.random.below(700_000_000);
        self.packets.clear();
        self.publisher
            .publish(&self.events, self.now_ns, &mut self.packets)
            .expect("engine events are valid");
    }
}

fn run_lossless(commands: &[Command], config: EngineConfig, packet_bytes_max: usize, seed: u64) {
    let symbols = config.symbols.len() as u32;
    let mut feed = Feed::new(config, packet_bytes_max, seed);
    let mut subscriber = Subscriber::new(SubscriberConfig::new(CHANNEL, symbols)).expect("valid");
    let mut at = 0;
    let mut trades = 0u64;
    while at < commands.len() {
        let size = 1 + feed.random.below(40) as usize;
        let batch = &commands[at..(at + size).min(commands.len())];
        at += batch.len();
        feed.batch(batch);
        trades += feed
            .events
            .iter()
            .filter(|event| event.kind == EventKind::Trade as u8)
            .count() as u64;
        for packet in feed.packets.iter() {
            assert!(packet.len() <= packet_bytes_max);
            let outcome = subscriber.apply(packet).expect("a good packet");
            assert_eq!(outcome, Outcome::Applied);
        }
        assert_same_depth(&feed.engine, &subscriber, symbols);
        for symbol in 0..symbols {
            let top = feed.engine.top_of_book(symbol).expect("a symbol");
            let book_top = subscriber.book(symbol).expect("a symbol").top();
            assert_eq!((book_top.bid, book_top.ask), (top.bid, top.ask));
        }
    }
    let stats = subscriber.stats();
    assert_eq!(stats.gaps, 0);
    assert_eq!(stats.top_mismatches, 0);
    assert!(!subscriber.needs_snapshot());
    // Every trade reached the subscriber, and closed candles add up to at most them.
    let mut seen_trades = 0;
    feed.packets.clear();
    feed.publisher.flush(feed.now_ns, &mut feed.packets);
    for packet in feed.packets.iter() {
        subscriber.apply(packet).expect("a good packet");
    }
    for symbol in 0..symbols {
        let candle_trades: u64 = subscriber
            .candles(symbol, 1)
            .iter()
            .map(|candle| u64::from(candle.trades))
            .sum();
        seen_trades += candle_trades;
    }
    // The runs are a few minutes of feed time: far fewer 1-minute candles than are kept.
    assert_eq!(seen_trades, trades);
}

/// Loses packets at random; snapshots are requested while the subscriber is
/// stale and arrive a few batches late (as from a separate snapshot channel),
/// so the subscriber must buffer the deltas in between.
fn run_lossy(
    commands: &[Command],
    config: EngineConfig,
    packet_bytes_max: usize,
    seed: u64,
    loss_percent: u64,
) {
    let symbols = config.symbols.len() as u32;
    let mut feed = Feed::new(config, packet_bytes_max, seed);
    let mut subscriber = Subscriber::new(SubscriberConfig::new(CHANNEL, symbols)).expect("valid");
    let mut in_flight: VecDeque<(usize, Vec<Vec<u8>>)> = VecDeque::new();
    let mut lost = 0u64;
    let mut recoveries = 0u64;
    let mut at = 0;
    let mut batch_index = 0usize;
    while at < commands.len() {
        let size = 1 + feed.random.below(30) as usize;
        let batch = &commands[at..(at + size).min(commands.len())];
        at += batch.len();
        batch_index += 1;
        feed.batch(batch);
        for packet in feed.packets.iter() {
            if feed.random.below(100) < loss_percent {
                lost += 1;
                continue;
            }
            subscriber.apply(packet).expect("a good packet");
        }
        while in_flight
            .front()
            .is_some_and(|(due, _)| *due <= batch_index)
        {
            let (_, packets) = in_flight.pop_front().expect("checked");
            for packet in &packets {
                // Snapshot packets can be lost too; an incomplete snapshot is discarded.
                if feed.random.below(100) < loss_percent / 2 {
                    continue;
                }
                subscriber.apply(packet).expect("a good packet");
            }
            if !subscriber.needs_snapshot() {
                recoveries += 1;
            }
        }
        if subscriber.needs_snapshot() && in_flight.is_empty() {
            let mut snapshot = Packets::new();
            feed.publisher.snapshot_all(feed.now_ns, &mut snapshot);
            let delay = feed.random.below(3) as usize;
            in_flight.push_back((
                batch_index + delay,
                snapshot.iter().map(<[u8]>::to_vec).collect(),
            ));
        }
        // A lost tail goes unnoticed until a later packet or a heartbeat, so
        // compare only when the subscriber has seen the last packet published.
        if !subscriber.needs_snapshot() && subscriber.next_seq() == feed.publisher.next_seq() {
            assert_same_depth(&feed.engine, &subscriber, symbols);
        }
    }
    // The end of the session: a heartbeat reveals any lost tail, and a
    // snapshot delivered whole brings every symbol back.
    feed.packets.clear();
    feed.publisher.heartbeat(feed.now_ns, &mut feed.packets);
    feed.publisher.snapshot_all(feed.now_ns, &mut feed.packets);
    for packet in feed.packets.iter() {
        subscriber.apply(packet).expect("a good packet");
    }
    assert!(!subscriber.needs_snapshot());
    assert_same_depth(&feed.engine, &subscriber, symbols);
    if lost > 0 {
        assert!(subscriber.stats().gaps > 0, "lost {lost} packets unnoticed");
        assert!(subscriber.stats().snapshots_installed > 0 || recoveries > 0);
    } else {
        assert_eq!(subscriber.stats().gaps, 0);
    }
}

fn workload_with_deltas() -> EngineConfig {
    let mut config = workload_config(false);
    config.book_deltas = true;
    config
}

#[test]
fn every_packet_rebuilds_the_engine_book_on_the_benchmark_mix() {
    run_lossless(&mixed_workload(20_000, 11), workload_with_deltas(), 1400, 1);
}

#[test]
fn lost_packets_are_detected_and_healed_on_the_benchmark_mix() {
    run_lossy(
        &mixed_workload(20_000, 12),
        workload_with_deltas(),
        1400,
        2,
        5,
    );
}

#[test]
fn big_books_split_their_snapshots_over_many_small_packets() {
    let mut feed = Feed::new(workload_with_deltas(), PACKET_BYTES_MIN, 3);
    feed.batch(&mixed_workload(3_000, 13));
    let mut snapshot = Packets::new();
    feed.publisher
        .snapshot(0, 0, &mut snapshot)
        .expect("symbol 0");
    assert!(snapshot.len() > 20, "{} packets", snapshot.len());
    let mut subscriber = Subscriber::new(SubscriberConfig::new(CHANNEL, 1)).expect("valid");
    // An empty batch publishes nothing.
    let mut later = Packets::new();
    feed.publisher
        .publish(&[], 0, &mut later)
        .expect("an empty batch is fine");
    assert!(later.is_empty());
    for (index, packet) in snapshot.iter().enumerate() {
        let header = decode_header(packet).expect("good");
        assert!(header.is_snapshot());
        let outcome = subscriber.apply(packet).expect("good");
        let last = index + 1 == snapshot.len();
        assert_eq!(
            outcome,
            Outcome::Snapshot {
                installed: u32::from(last)
            }
        );
    }
    assert_same_depth(&feed.engine, &subscriber, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_subscriber_that_gets_every_packet_holds_the_engine_depth(
        seed in any::<u64>(),
        symbols in 1u32..4,
        packet_bytes_max in PACKET_BYTES_MIN..1500,
    ) {
        run_lossless(&random_commands(1500, symbols, seed), multi_symbol_config(symbols), packet_bytes_max, seed);
    }

    #[test]
    fn a_subscriber_that_loses_packets_recovers_the_engine_depth(
        seed in any::<u64>(),
        symbols in 1u32..4,
        packet_bytes_max in PACKET_BYTES_MIN..600,
        loss_percent in 0u64..30,
    ) {
        run_lossy(&random_commands(1500, symbols, seed), multi_symbol_config(symbols), packet_bytes_max, seed, loss_percent);
    }

    #[test]
    fn mangled_packets_are_refused_without_a_panic(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut feed = Feed::new(multi_symbol_config(2), 400, seed);
        feed.batch(&random_commands(200, 2, seed));
        let mut packets: Vec<Vec<u8>> = feed.packets.iter().map(<[u8]>::to_vec).collect();
        let mut snapshot = Packets::new();
        feed.publisher.snapshot_all(0, &mut snapshot);
        packets.extend(snapshot.iter().map(<[u8]>::to_vec));
        let mut subscriber = Subscriber::new(SubscriberConfig::new(CHANNEL, 2)).expect("valid");
        for packet in &mut packets {
            let original = packet.clone();
            for (at, value) in &flips {
                let at = at % packet.len();
                packet[at] ^= value | 1;
            }
            if cut % 3 == 0 {
                packet.truncate(cut % packet.len());
            }
            // Either refused, or (if the damage hit a value field) accepted as data.
            let _ = subscriber.apply(packet);
            let _ = subscriber.apply(&original);
        }
    }
}
