//! Every limit of the exchange core, in one place. Units are last in each name.

/// Most symbols one engine trades.
pub const SYMBOLS_MAX: usize = 4096;
/// Most accounts one engine knows (account ids are dense, `0..accounts_max`).
pub const ACCOUNTS_MAX: usize = 1 << 22;
/// Most orders resting at once in one engine; the order slab is sized from
/// the configured value at start and never grows.
pub const ORDERS_RESTING_MAX: usize = 1 << 26;
/// Most price levels one symbol's band may span (levels are indexed directly).
pub const PRICE_LEVELS_MAX: usize = 1 << 22;
/// Largest quantity one order may carry, whatever a symbol's own limit says.
/// Keeps `price * quantity` far from overflowing an `i64`.
pub const ORDER_QTY_MAX: u64 = 1 << 32;
/// Largest price, in price units. With [`ORDER_QTY_MAX`], every notional fits in an `i64`.
pub const PRICE_MAX: i64 = 1 << 30;
/// Largest balance or position an account may hold, in its units.
pub const BALANCE_MAX: i64 = 1 << 62;
/// Price band around the reference price, at most this many basis points.
pub const BAND_BPS_MAX: u32 = 10_000;
/// Nanoseconds in a trading day, for the per-account daily notional limit.
pub const DAY_NS: u64 = 86_400_000_000_000;
/// Most (account, symbol) holdings an engine with funds keeps: `accounts * symbols`.
pub const HOLDINGS_MAX: usize = 1 << 26;
