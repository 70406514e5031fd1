//! A reproducible order stream shaped like exchange-core's benchmark mix, for
//! benchmarks and tests: about 9% GTC limit orders, 3% IOC, 6% cancels and
//! 82% moves (price amends), keeping about 1,000 orders resting over about
//! 750 price levels, with enough aggressive orders to trade.
//!
//! The generator runs its own engine while it generates, so cancels and moves
//! name orders that are really resting at that point of the stream.

use std::collections::HashMap;

use crate::config::{EngineConfig, SymbolConfig};
use crate::engine::Engine;
use crate::types::{Command, EventKind, OrderId, Price, Side, TimeInForce, CASH};

/// Accounts the workload trades from.
pub const WORKLOAD_ACCOUNTS: u32 = 1_000;
const MID: Price = 50_000;
const HALF_SPREAD_LEVELS: i64 = 375;
const RESTING_TARGET: usize = 1_000;

/// A small deterministic generator (splitmix64).
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The one-symbol engine configuration the workload is written for.
pub fn workload_config(funds: bool) -> EngineConfig {
    EngineConfig {
        symbols: vec![SymbolConfig::new(1, 1, 100_000)],
        accounts: WORKLOAD_ACCOUNTS,
        orders_resting_max: 1 << 16,
        funds,
        daily_notional_max: 0,
        book_deltas: false,
    }
}

/// Deposits that give every workload account ample cash and stock.
pub fn funding_commands() -> Vec<Command> {
    (0..WORKLOAD_ACCOUNTS)
        .flat_map(|account| {
            [
                Command::deposit(account, CASH, 1 << 50),
                Command::deposit(account, 0, 1 << 30),
            ]
        })
        .collect()
}

/// `count` commands of the mix, reproducible from `seed`.
pub fn mixed_workload(count: usize, seed: u64) -> Vec<Command> {
    let mut engine = Engine::new(workload_config(false)).expect("the workload config is valid");
    let mut random = SplitMix::new(seed);
    let mut live: Vec<(OrderId, u32)> = Vec::new();
    let mut position: HashMap<OrderId, usize> = HashMap::new();
    let mut next_id: OrderId = 1;
    let mut commands = Vec::with_capacity(count);
    let mut events = Vec::new();
    while commands.len() < count {
        let top = engine.top_of_book(0).unwrap_or_default();
        let best_bid = top.bid.map_or(MID - 1, |(price, _)| price);
        let best_ask = top.ask.map_or(MID + 1, |(price, _)| price);
        let roll = random.below(100);
        let account = random.below(u64::from(WORKLOAD_ACCOUNTS)) as u32;
        let qty = 1 + random.below(100);
        let want_new =
            live.len() < RESTING_TARGET / 2 || (live.len() < RESTING_TARGET && roll < 20);
        let command = if live.is_empty() || want_new || roll < 9 {
            let side = if random.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            // Mostly passive, sometimes a few ticks through the spread.
            let offset = random.below(HALF_SPREAD_LEVELS as u64) as i64 - 2;
            let price = match side {
                Side::Buy => best_ask - 1 - offset,
                Side::Sell => best_bid + 1 + offset,
            };
            let id = next_id;
            next_id += 1;
            Command::limit(account, 0, id, side, price.max(1), qty, TimeInForce::Gtc)
        } else if roll < 12 {
            let side = if random.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = match side {
                Side::Buy => best_ask + random.below(3) as i64,
                Side::Sell => (best_bid - random.below(3) as i64).max(1),
            };
            let id = next_id;
            next_id += 1;
            Command::limit(account, 0, id, side, price, qty, TimeInForce::Ioc)
        } else {
            let (id, owner) = live[random.below(live.len() as u64) as usize];
            if roll < 18 || live.len() > RESTING_TARGET * 2 {
                Command::cancel(owner, 0, id)
            } else {
                let order = engine.order(id).expect("live orders rest");
                let step = 1 + random.below(5) as i64;
                // Moves drift towards the spread more often than away, so trades happen.
                let towards = random.below(3) != 0;
                let price = match (order.side, towards) {
                    (Side::Buy, true) | (Side::Sell, false) => order.price + step,
                    (Side::Buy, false) | (Side::Sell, true) => (order.price - step).max(1),
                };
                Command::amend(owner, 0, id, price, order.qty)
            }
        };
        events.clear();
        engine.process(&command, commands.len() as u64 + 1, &mut events);
        commands.push(command);
        for event in &events {
            let gone = match event.kind {
                kind if kind == EventKind::Trade as u8 && event.maker_leaves == 0 => {
                    Some(event.maker_order_id)
                }
                kind if kind == EventKind::Cancelled as u8 => Some(event.order_id),
                _ => None,
            };
            if let Some(id) = gone {
                if let Some(at) = position.remove(&id) {
                    live.swap_remove(at);
                    if let Some(&(moved, _)) = live.get(at) {
                        position.insert(moved, at);
                    }
                }
            }
        }
        let placed = command.kind == crate::types::CommandKind::Place as u8
            || command.kind == crate::types::CommandKind::Amend as u8;
        if placed
            && !position.contains_key(&command.order_id)
            && engine.order(command.order_id).is_some()
        {
            position.insert(command.order_id, live.len());
            live.push((command.order_id, command.account));
        }
        // An amend that traded away the whole order leaves no resting order behind.
        if command.kind == crate::types::CommandKind::Amend as u8
            && engine.order(command.order_id).is_none()
        {
            if let Some(at) = position.remove(&command.order_id) {
                live.swap_remove(at);
                if let Some(&(moved, _)) = live.get(at) {
                    position.insert(moved, at);
                }
            }
        }
    }
    commands
}

/// Processes `commands` one by one on `engine`, writing each command's
/// processing time in nanoseconds into `latencies_ns` (same length), as the
/// benchmarks' latency figures. The clock read itself (about 20 ns through
/// the vDSO) is inside every figure, so they err on the slow side.
pub fn measure_latencies(engine: &mut Engine, commands: &[Command], latencies_ns: &mut [u64]) {
    let mut events = Vec::with_capacity(64);
    let first_seq = engine.next_event_seq();
    for (index, (command, latency)) in commands.iter().zip(latencies_ns.iter_mut()).enumerate() {
        events.clear();
        let started = std::time::Instant::now();
        engine.process(command, first_seq + index as u64, &mut events);
        *latency = started.elapsed().as_nanos() as u64;
    }
}
