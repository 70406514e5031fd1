//! The fixed-size records that go in (commands) and come out (events).
//!
//! Both are `repr(C)` with explicit padding so that Python can view a batch
//! as a structured numpy array and the journal can store commands as bytes.

/// Price in price units (an integer; a symbol's prices are multiples of its tick size).
pub type Price = i64;
/// Quantity in lots (an integer, never a float).
pub type Qty = u64;
/// An order's id, chosen by the gateway; unique among the orders resting on the exchange.
/// `u64::MAX` is reserved (an order with it is rejected as malformed).
pub type OrderId = u64;
/// A trading account, `0..accounts_max`.
pub type AccountId = u32;
/// A symbol, `0..symbols`.
pub type SymbolId = u32;

/// The symbol value a deposit uses to mean the account's cash rather than an asset.
pub const CASH: SymbolId = u32::MAX;

/// What a command asks for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// A new order (limit or market, with a time in force).
    Place = 1,
    /// Cancel a resting order.
    Cancel = 2,
    /// Change a resting order's quantity and/or price.
    Amend = 3,
    /// Credit an account's cash (`symbol == CASH`) or an asset position.
    Deposit = 4,
}

impl CommandKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Place,
            2 => Self::Cancel,
            3 => Self::Amend,
            4 => Self::Deposit,
            _ => return None,
        })
    }
}

/// Which side of the book.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Buy = 0,
    Sell = 1,
}

impl Side {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Buy),
            1 => Some(Self::Sell),
            _ => None,
        }
    }

    pub fn opposite(self) -> Self {
        match self {
            Self::Buy => Self::Sell,
            Self::Sell => Self::Buy,
        }
    }
}

/// Limit orders carry a price; market orders take what the band allows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderType {
    Limit = 0,
    Market = 1,
}

impl OrderType {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Limit),
            1 => Some(Self::Market),
            _ => None,
        }
    }
}

/// How long an order may live.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    /// Good till cancelled: what does not trade rests on the book.
    Gtc = 0,
    /// Immediate or cancel: trade what can be traded now, expire the rest.
    Ioc = 1,
    /// Fill or kill: trade all of it now, or none of it.
    Fok = 2,
}

impl TimeInForce {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Gtc),
            1 => Some(Self::Ioc),
            2 => Some(Self::Fok),
            _ => None,
        }
    }
}

/// One inbound command: 48 bytes, `repr(C)`.
///
/// `timestamp_ns` is stamped by the sequencer, not trusted from the client:
/// the per-day risk limits read it, so replay sees the same day boundaries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Command {
    pub kind: u8,
    pub side: u8,
    pub order_type: u8,
    pub time_in_force: u8,
    pub symbol: SymbolId,
    pub account: AccountId,
    pub reserved: u32,
    pub order_id: OrderId,
    pub price: Price,
    pub qty: Qty,
    pub timestamp_ns: u64,
}

impl Command {
    /// A limit order.
    pub fn limit(
        account: AccountId,
        symbol: SymbolId,
        order_id: OrderId,
        side: Side,
        price: Price,
        qty: Qty,
        time_in_force: TimeInForce,
    ) -> Self {
        Self {
            kind: CommandKind::Place as u8,
            side: side as u8,
            order_type: OrderType::Limit as u8,
            time_in_force: time_in_force as u8,
            symbol,
            account,
            order_id,
            price,
            qty,
            ..Self::default()
        }
    }

    /// A market order (always immediate-or-cancel, bounded by the price band).
    pub fn market(
        account: AccountId,
        symbol: SymbolId,
        order_id: OrderId,
        side: Side,
        qty: Qty,
    ) -> Self {
        Self {
            kind: CommandKind::Place as u8,
            side: side as u8,
            order_type: OrderType::Market as u8,
            time_in_force: TimeInForce::Ioc as u8,
            symbol,
            account,
            order_id,
            qty,
            ..Self::default()
        }
    }

    /// Cancel `order_id`, which `account` placed on `symbol`.
    pub fn cancel(account: AccountId, symbol: SymbolId, order_id: OrderId) -> Self {
        Self {
            kind: CommandKind::Cancel as u8,
            symbol,
            account,
            order_id,
            ..Self::default()
        }
    }

    /// Amend `order_id` to `qty` at `price`.
    pub fn amend(
        account: AccountId,
        symbol: SymbolId,
        order_id: OrderId,
        price: Price,
        qty: Qty,
    ) -> Self {
        Self {
            kind: CommandKind::Amend as u8,
            symbol,
            account,
            order_id,
            price,
            qty,
            ..Self::default()
        }
    }

    /// Credit `amount` of cash (`symbol == CASH`) or of an asset to `account`.
    pub fn deposit(account: AccountId, symbol: SymbolId, amount: Qty) -> Self {
        Self {
            kind: CommandKind::Deposit as u8,
            symbol,
            account,
            qty: amount,
            ..Self::default()
        }
    }

    /// The command as its 48 bytes, little-endian (the journal's byte order).
    pub fn to_bytes(&self) -> [u8; COMMAND_BYTES] {
        let mut out = [0u8; COMMAND_BYTES];
        out[0] = self.kind;
        out[1] = self.side;
        out[2] = self.order_type;
        out[3] = self.time_in_force;
        out[4..8].copy_from_slice(&self.symbol.to_le_bytes());
        out[8..12].copy_from_slice(&self.account.to_le_bytes());
        out[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        out[16..24].copy_from_slice(&self.order_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.price.to_le_bytes());
        out[32..40].copy_from_slice(&self.qty.to_le_bytes());
        out[40..48].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out
    }

    /// The command from its 48 little-endian bytes.
    pub fn from_bytes(bytes: &[u8; COMMAND_BYTES]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        Self {
            kind: bytes[0],
            side: bytes[1],
            order_type: bytes[2],
            time_in_force: bytes[3],
            symbol: u32_at(4),
            account: u32_at(8),
            reserved: u32_at(12),
            order_id: u64_at(16),
            price: u64_at(24) as i64,
            qty: u64_at(32),
            timestamp_ns: u64_at(40),
        }
    }
}

/// Size of one [`Command`] in bytes.
pub const COMMAND_BYTES: usize = 48;
const _: () = assert!(std::mem::size_of::<Command>() == COMMAND_BYTES);

/// What an event reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The order was accepted (`qty` is its quantity, `price` its limit).
    Accepted = 1,
    /// The command was refused; `reason` says why.
    Rejected = 2,
    /// A trade: `order_id`/`account` are the taker, `maker_*` the resting order.
    Trade = 3,
    /// The order was cancelled; `qty` is what was left.
    Cancelled = 4,
    /// An IOC, FOK or market order's untraded rest expired; `reason` says which rule.
    Expired = 5,
    /// The order was amended; `price` and `qty` are its new values.
    Amended = 6,
    /// A price level changed: `side`, `price`, and `qty` the level's new total.
    BookDelta = 7,
    /// An account was credited: `symbol` (or `CASH`), `qty` the amount.
    Deposited = 8,
}

/// Why a command was rejected or an order expired.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    None = 0,
    UnknownSymbol = 1,
    InvalidQuantity = 2,
    PriceOffTickGrid = 3,
    PriceOutsideBand = 4,
    UnknownOrder = 5,
    DuplicateOrderId = 6,
    InsufficientFunds = 7,
    QuantityOverLimit = 8,
    DailyNotionalOverLimit = 9,
    NoReferencePrice = 10,
    BookFull = 11,
    InvalidCommand = 12,
    UnknownAccount = 13,
    BalanceOverLimit = 14,
    PriceOutOfRange = 15,
    /// An IOC (or market) order's rest expired.
    ImmediateOrCancel = 20,
    /// A FOK order could not be filled whole, so none of it traded.
    FillOrKill = 21,
}

impl Reason {
    /// A short text for logs and FIX `Text` fields.
    pub fn text(self) -> &'static str {
        match self {
            Self::None => "",
            Self::UnknownSymbol => "unknown symbol",
            Self::InvalidQuantity => "quantity must be positive",
            Self::PriceOffTickGrid => "price is not a multiple of the tick size",
            Self::PriceOutsideBand => "price is outside the band around the reference price",
            Self::UnknownOrder => "no such resting order for this account",
            Self::DuplicateOrderId => "an order with this id is already resting",
            Self::InsufficientFunds => "insufficient funds",
            Self::QuantityOverLimit => "quantity is over the symbol's order limit",
            Self::DailyNotionalOverLimit => "the account's daily notional limit would be exceeded",
            Self::NoReferencePrice => "no reference price yet for a market order",
            Self::BookFull => "the exchange's order capacity is full",
            Self::InvalidCommand => "malformed command (kind, side, type or time in force)",
            Self::UnknownAccount => "account id is out of range",
            Self::BalanceOverLimit => "the deposit would take the balance over its limit",
            Self::PriceOutOfRange => "price is outside the range the book holds",
            Self::ImmediateOrCancel => "immediate-or-cancel remainder expired",
            Self::FillOrKill => "fill-or-kill order could not be filled whole",
        }
    }
}

/// One outbound event: 80 bytes, `repr(C)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Event {
    /// Gap-free output sequence number.
    pub seq: u64,
    /// Sequence number of the command that caused this event.
    pub input_seq: u64,
    pub kind: u8,
    pub side: u8,
    pub reason: u8,
    pub reserved: u8,
    pub symbol: SymbolId,
    pub account: AccountId,
    pub maker_account: AccountId,
    pub order_id: OrderId,
    pub maker_order_id: OrderId,
    pub price: Price,
    pub qty: Qty,
    /// What is left of `order_id` after this event.
    pub leaves: Qty,
    /// What is left of `maker_order_id` after a trade.
    pub maker_leaves: Qty,
}

/// Size of one [`Event`] in bytes.
pub const EVENT_BYTES: usize = 80;

impl Event {
    /// The event as its 80 bytes, little-endian (the event rings' and Python's layout).
    pub fn to_bytes(&self) -> [u8; EVENT_BYTES] {
        let mut out = [0u8; EVENT_BYTES];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.input_seq.to_le_bytes());
        out[16] = self.kind;
        out[17] = self.side;
        out[18] = self.reason;
        out[19] = self.reserved;
        out[20..24].copy_from_slice(&self.symbol.to_le_bytes());
        out[24..28].copy_from_slice(&self.account.to_le_bytes());
        out[28..32].copy_from_slice(&self.maker_account.to_le_bytes());
        out[32..40].copy_from_slice(&self.order_id.to_le_bytes());
        out[40..48].copy_from_slice(&self.maker_order_id.to_le_bytes());
        out[48..56].copy_from_slice(&self.price.to_le_bytes());
        out[56..64].copy_from_slice(&self.qty.to_le_bytes());
        out[64..72].copy_from_slice(&self.leaves.to_le_bytes());
        out[72..80].copy_from_slice(&self.maker_leaves.to_le_bytes());
        out
    }

    /// The event from its 80 little-endian bytes.
    pub fn from_bytes(bytes: &[u8; EVENT_BYTES]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        Self {
            seq: u64_at(0),
            input_seq: u64_at(8),
            kind: bytes[16],
            side: bytes[17],
            reason: bytes[18],
            reserved: bytes[19],
            symbol: u32_at(20),
            account: u32_at(24),
            maker_account: u32_at(28),
            order_id: u64_at(32),
            maker_order_id: u64_at(40),
            price: u64_at(48) as i64,
            qty: u64_at(56),
            leaves: u64_at(64),
            maker_leaves: u64_at(72),
        }
    }
}
const _: () = assert!(std::mem::size_of::<Event>() == EVENT_BYTES);
