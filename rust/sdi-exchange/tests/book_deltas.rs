//! Book deltas rebuild the depth: a subscriber that applies every `BookDelta`
//! holds the same levels as the engine.

use std::collections::BTreeMap;

use sdi_exchange::workload::{mixed_workload, workload_config};
use sdi_exchange::{Engine, EventKind, Side};

#[test]
fn deltas_rebuild_the_book() {
    let mut config = workload_config(false);
    config.book_deltas = true;
    let mut engine = Engine::new(config).expect("valid");
    let mut bids: BTreeMap<i64, u64> = BTreeMap::new();
    let mut asks: BTreeMap<i64, u64> = BTreeMap::new();
    let mut events = Vec::new();
    for (index, command) in mixed_workload(20_000, 3).iter().enumerate() {
        events.clear();
        engine.process(command, index as u64 + 1, &mut events);
        for event in events
            .iter()
            .filter(|e| e.kind == EventKind::BookDelta as u8)
        {
            let side = if event.side == Side::Buy as u8 {
                &mut bids
            } else {
                &mut asks
            };
            if event.qty == 0 {
                side.remove(&event.price);
            } else {
                side.insert(event.price, event.qty);
            }
        }
        if index % 997 == 0 {
            let want_bids: Vec<_> = bids.iter().rev().map(|(p, q)| (*p, *q)).collect();
            let want_asks: Vec<_> = asks.iter().map(|(p, q)| (*p, *q)).collect();
            assert_eq!(engine.depth(0, Side::Buy, usize::MAX), want_bids);
            assert_eq!(engine.depth(0, Side::Sell, usize::MAX), want_asks);
        }
    }
    assert!(!bids.is_empty() && !asks.is_empty());
}
