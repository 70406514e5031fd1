//! The engine against the reference model on random command streams: the same
//! events, the same books and balances, and the invariants after every command.

mod model;

use model::Model;
use proptest::prelude::*;
use sdi_exchange::{
    Command, CommandKind, Engine, EngineConfig, Event, EventKind, Side, SymbolConfig, CASH,
};

const ACCOUNTS: u32 = 4;
const SYMBOLS: u32 = 2;

fn config(funds: bool, capacity: u32, band_bps: u32, notional_max: i64) -> EngineConfig {
    let symbol = |tick: i64| SymbolConfig {
        tick_size: tick,
        min_price: tick,
        price_levels: 40,
        reference_price: 20 * tick,
        band_bps,
        order_qty_max: 50,
    };
    EngineConfig {
        symbols: vec![symbol(1), symbol(5)],
        accounts: ACCOUNTS,
        orders_resting_max: capacity,
        funds,
        daily_notional_max: notional_max,
        book_deltas: false,
    }
}

/// Commands aimed at a small price range so orders collide, with some bad ones.
/// Most commands act for the account `id % ACCOUNTS`, so cancels and amends
/// usually name their own orders.
fn command_strategy() -> impl Strategy<Value = Command> {
    let account = prop_oneof![12 => Just(None), 1 => (0..ACCOUNTS + 1).prop_map(Some)];
    let symbol = prop_oneof![20 => 0..SYMBOLS, 1 => Just(7u32)];
    let id = prop_oneof![40 => 1u64..16, 1 => Just(u64::MAX)];
    let price = prop_oneof![
        20 => 13i64..28,
        2 => 1i64..41,
        1 => -5i64..3,
        1 => 39i64..300,
    ];
    let qty = prop_oneof![20 => 1u64..30, 1 => Just(0u64), 1 => 50u64..60];
    let kind = prop_oneof![
        12 => Just(0u8), // limit
        2 => Just(1u8),  // market
        4 => Just(2u8),  // cancel
        6 => Just(3u8),  // amend
        2 => Just(4u8),  // deposit
        1 => Just(5u8),  // garbage kind
        1 => Just(6u8),  // off-grid limit
    ];
    (
        kind,
        account,
        symbol,
        id,
        price,
        qty,
        0u8..3,
        0u8..3,
        0u64..3,
    )
        .prop_map(|(kind, account, symbol, id, price, qty, tif, side, day)| {
            let account = account.unwrap_or((id % u64::from(ACCOUNTS)) as u32);
            let tick = if symbol == 1 { 5 } else { 1 };
            // Side 2 is invalid: one command in three would be refused, so fold most into 0..2.
            let side = if side == 2 && id % 5 != 0 { 0 } else { side };
            let place = |order_type: u8, price: i64| Command {
                kind: CommandKind::Place as u8,
                side,
                order_type,
                time_in_force: tif,
                symbol,
                account,
                order_id: id,
                price,
                qty,
                ..Command::default()
            };
            let mut command = match kind {
                0 => place(0, price * tick),
                1 => place(1, 0),
                2 => Command::cancel(account, symbol, id),
                3 => Command::amend(account, symbol, id, price * tick, qty),
                4 => Command::deposit(account, if qty % 2 == 0 { CASH } else { symbol }, qty * 40),
                5 => Command {
                    kind: 9,
                    ..Command::default()
                },
                _ => place(0, price * tick + 1),
            };
            command.timestamp_ns = day * sdi_exchange::constants::DAY_NS;
            command
        })
}

fn check_invariants(engine: &Engine, config: &EngineConfig, deposits: &[i64]) {
    for symbol in 0..SYMBOLS {
        let top = engine.top_of_book(symbol).expect("symbol exists");
        if let (Some((bid, _)), Some((ask, _))) = (top.bid, top.ask) {
            assert!(
                bid < ask,
                "book {symbol} is crossed: bid {bid} >= ask {ask}"
            );
        }
    }
    if !config.funds {
        return;
    }
    // Money and stock are only moved, never made: totals equal what was deposited.
    let mut cash = 0;
    let mut stock = vec![0i64; SYMBOLS as usize];
    for account in 0..ACCOUNTS {
        let balance = engine.balance(account, CASH).expect("account exists");
        assert!(
            balance.locked >= 0 && balance.locked <= balance.total,
            "{balance:?}"
        );
        cash += balance.total;
        for symbol in 0..SYMBOLS {
            let holding = engine.balance(account, symbol).expect("holding exists");
            assert!(
                holding.locked >= 0 && holding.locked <= holding.total,
                "{holding:?}"
            );
            stock[symbol as usize] += holding.total;
        }
    }
    assert_eq!(cash, deposits[0], "cash was created or destroyed");
    for symbol in 0..SYMBOLS as usize {
        assert_eq!(
            stock[symbol],
            deposits[1 + symbol],
            "stock {symbol} created or destroyed"
        );
    }
}

fn run(config: EngineConfig, commands: &[Command]) {
    let mut engine = Engine::new(config.clone()).expect("valid config");
    let mut model = Model::new(config.clone());
    let mut deposits = vec![0i64; 1 + SYMBOLS as usize];
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (index, command) in commands.iter().enumerate() {
        got.clear();
        want.clear();
        let seq = index as u64 + 1;
        engine.process(command, seq, &mut got);
        model.process(command, seq, &mut want);
        assert_eq!(got, want, "command {index}: {command:?}");
        for event in &got {
            if event.kind == EventKind::Deposited as u8 {
                let slot = if event.symbol == CASH {
                    0
                } else {
                    1 + event.symbol as usize
                };
                deposits[slot] += event.qty as i64;
            }
        }
        for symbol in 0..SYMBOLS {
            for side in [Side::Buy, Side::Sell] {
                assert_eq!(
                    engine.depth(symbol, side, usize::MAX),
                    model.depth(symbol, side),
                    "depth of symbol {symbol} {side:?} after command {index}"
                );
            }
        }
        check_invariants(&engine, &config, &deposits);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn matching_only_agrees_with_the_model(commands in proptest::collection::vec(command_strategy(), 1..200)) {
        run(config(false, 12, 0, 0), &commands);
    }

    #[test]
    fn funds_and_risk_agree_with_the_model(
        commands in proptest::collection::vec(command_strategy(), 1..200),
        band in prop_oneof![Just(0u32), Just(3_000u32), Just(5_000u32)],
        notional in prop_oneof![Just(0i64), Just(2_000i64)],
    ) {
        // Fund everyone first so that trading happens, then run the random stream.
        let mut stream: Vec<Command> = (0..ACCOUNTS)
            .flat_map(|a| [Command::deposit(a, CASH, 5_000), Command::deposit(a, 0, 200), Command::deposit(a, 1, 200)])
            .collect();
        stream.extend(commands);
        run(config(true, 16, band, notional), &stream);
    }
}

#[test]
fn price_time_priority_within_a_level() {
    let config = config(false, 16, 0, 0);
    let mut engine = Engine::new(config).expect("valid");
    let mut events: Vec<Event> = Vec::new();
    for (seq, id) in [1u64, 2, 3].iter().enumerate() {
        let c = Command::limit(0, 0, *id, Side::Sell, 20, 5, sdi_exchange::TimeInForce::Gtc);
        engine.process(&c, seq as u64 + 1, &mut events);
    }
    // Order 1 shrinks (keeps its place); order 2 grows (goes to the back).
    engine.process(&Command::amend(0, 0, 1, 20, 3), 4, &mut events);
    engine.process(&Command::amend(0, 0, 2, 20, 6), 5, &mut events);
    events.clear();
    let buy = Command::limit(1, 0, 9, Side::Buy, 20, 14, sdi_exchange::TimeInForce::Gtc);
    engine.process(&buy, 6, &mut events);
    let makers: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Trade as u8)
        .map(|e| (e.maker_order_id, e.qty))
        .collect();
    assert_eq!(makers, vec![(1, 3), (3, 5), (2, 6)]);
}
