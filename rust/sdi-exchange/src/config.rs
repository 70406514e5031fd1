//! How an engine is set up: its symbols, accounts, capacity and risk limits.

use crate::constants::{
    ACCOUNTS_MAX, BAND_BPS_MAX, ORDERS_RESTING_MAX, ORDER_QTY_MAX, PRICE_LEVELS_MAX, PRICE_MAX,
    SYMBOLS_MAX,
};
use crate::error::Error;
use crate::types::{Price, Qty};

/// One tradable symbol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolConfig {
    /// Prices are multiples of this (price units per tick), at least 1.
    pub tick_size: Price,
    /// The lowest price the book holds; a multiple of `tick_size`, at least one tick.
    pub min_price: Price,
    /// How many ticks the book spans from `min_price`; levels are indexed directly.
    pub price_levels: u32,
    /// The band's reference until the first trade sets it; 0 for none.
    pub reference_price: Price,
    /// Orders must lie within this many basis points of the reference; 0 turns the band off.
    pub band_bps: u32,
    /// Largest quantity one order may carry.
    pub order_qty_max: Qty,
}

impl SymbolConfig {
    /// A symbol with `price_levels` ticks of `tick_size` from `min_price`, no band.
    pub fn new(tick_size: Price, min_price: Price, price_levels: u32) -> Self {
        Self {
            tick_size,
            min_price,
            price_levels,
            reference_price: 0,
            band_bps: 0,
            order_qty_max: ORDER_QTY_MAX,
        }
    }

    /// The highest price the book holds.
    pub fn max_price(&self) -> Price {
        self.min_price + self.tick_size * (Price::from(self.price_levels) - 1)
    }
}

/// The engine's shape and limits, fixed at start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EngineConfig {
    pub symbols: Vec<SymbolConfig>,
    /// Account ids run `0..accounts`.
    pub accounts: u32,
    /// Capacity of the order slab: most orders resting at once, over all symbols.
    pub orders_resting_max: u32,
    /// Check and move funds: buys lock cash, sells lock the asset, trades settle.
    /// Off, the engine only matches (for studies of the book alone).
    pub funds: bool,
    /// Most notional (price x quantity, over orders accepted) per account per day; 0 for no limit.
    pub daily_notional_max: i64,
    /// Emit a `BookDelta` event for every price level a command changes.
    pub book_deltas: bool,
}

impl EngineConfig {
    /// Checks every field against the crate's limits.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: String| Err(Error::Config(message));
        if self.symbols.is_empty() || self.symbols.len() > SYMBOLS_MAX {
            return bad(format!(
                "give between 1 and {SYMBOLS_MAX} symbols, not {}",
                self.symbols.len()
            ));
        }
        if self.accounts == 0 || self.accounts as usize > ACCOUNTS_MAX {
            return bad(format!(
                "accounts must be between 1 and {ACCOUNTS_MAX}, not {}",
                self.accounts
            ));
        }
        if self.orders_resting_max == 0 || self.orders_resting_max as usize > ORDERS_RESTING_MAX {
            return bad(format!(
                "orders_resting_max must be between 1 and {ORDERS_RESTING_MAX}, not {}",
                self.orders_resting_max
            ));
        }
        if self.daily_notional_max < 0 {
            return bad("daily_notional_max must be 0 (no limit) or positive".into());
        }
        for (index, symbol) in self.symbols.iter().enumerate() {
            if symbol.tick_size < 1 || symbol.tick_size > PRICE_MAX {
                return bad(format!(
                    "symbol {index}: tick_size must be between 1 and {PRICE_MAX}"
                ));
            }
            if symbol.price_levels < 2 || symbol.price_levels as usize > PRICE_LEVELS_MAX {
                return bad(format!(
                    "symbol {index}: price_levels must be between 2 and {PRICE_LEVELS_MAX}, not {}",
                    symbol.price_levels
                ));
            }
            if symbol.min_price < symbol.tick_size || symbol.min_price % symbol.tick_size != 0 {
                return bad(format!(
                    "symbol {index}: min_price must be a positive multiple of tick_size"
                ));
            }
            let top = i128::from(symbol.min_price)
                + i128::from(symbol.tick_size) * (i128::from(symbol.price_levels) - 1);
            if top > i128::from(PRICE_MAX) {
                return bad(format!(
                    "symbol {index}: the book's top price {top} is over the limit {PRICE_MAX}; \
                     use fewer price_levels or a smaller tick_size"
                ));
            }
            if symbol.reference_price < 0 || symbol.reference_price > PRICE_MAX {
                return bad(format!(
                    "symbol {index}: reference_price must be 0..={PRICE_MAX}"
                ));
            }
            if symbol.band_bps > BAND_BPS_MAX {
                return bad(format!(
                    "symbol {index}: band_bps must be 0..={BAND_BPS_MAX}"
                ));
            }
            if symbol.order_qty_max == 0 || symbol.order_qty_max > ORDER_QTY_MAX {
                return bad(format!(
                    "symbol {index}: order_qty_max must be between 1 and {ORDER_QTY_MAX}"
                ));
            }
        }
        Ok(())
    }

    /// A stable fingerprint of the configuration, stored in the journal so that a
    /// journal is never replayed into an engine set up differently.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = crate::hash::StateHasher::new();
        hash.u64(u64::from(self.accounts));
        hash.u64(u64::from(self.orders_resting_max));
        hash.u64(u64::from(self.funds));
        hash.u64(self.daily_notional_max as u64);
        hash.u64(u64::from(self.book_deltas));
        for symbol in &self.symbols {
            hash.u64(symbol.tick_size as u64);
            hash.u64(symbol.min_price as u64);
            hash.u64(u64::from(symbol.price_levels));
            hash.u64(symbol.reference_price as u64);
            hash.u64(u64::from(symbol.band_bps));
            hash.u64(symbol.order_qty_max);
        }
        hash.finish()
    }
}
