//! The matching engine: order books for every symbol, the order manager's
//! funds and risk checks, and the events every command yields.
//!
//! One thread owns an [`Engine`]; nothing in it locks. Orders live in one slab
//! allocated at start (`Vec<Order>` linked by `u32` indexes, with a free list),
//! price levels are indexed directly by tick offset, and a two-level bitset
//! finds the next non-empty level. Order ids map to slab slots through a hash
//! map sized at start. In steady state processing a command allocates nothing.

use crate::config::{EngineConfig, SymbolConfig};
use crate::constants::DAY_NS;
use crate::error::Error;
use crate::hash::StateHasher;
use crate::idindex::IdIndex;
use crate::levelset::LevelSet;
use crate::types::{
    AccountId, Command, CommandKind, Event, EventKind, OrderId, OrderType, Price, Qty, Reason,
    Side, SymbolId, TimeInForce, CASH,
};

const NIL: u32 = u32::MAX;

type IdMap = IdIndex;

#[derive(Clone, Copy, Debug)]
struct Order {
    id: OrderId,
    qty: Qty,
    prev: u32,
    next: u32,
    level: u32,
    account: AccountId,
    symbol: SymbolId,
    side: Side,
}

#[derive(Clone, Copy, Debug)]
struct Level {
    head: u32,
    tail: u32,
    total: Qty,
}

const EMPTY_LEVEL: Level = Level {
    head: NIL,
    tail: NIL,
    total: 0,
};

struct Book {
    config: SymbolConfig,
    /// `config.max_price()`, kept to spare a multiplication per order.
    max_price: Price,
    bids: Vec<Level>,
    asks: Vec<Level>,
    bid_set: LevelSet,
    ask_set: LevelSet,
    best_bid: u32,
    best_ask: u32,
    last_trade: Price,
}

impl Book {
    fn new(config: SymbolConfig) -> Self {
        let levels = config.price_levels as usize;
        Self {
            max_price: config.max_price(),
            config,
            bids: vec![EMPTY_LEVEL; levels],
            asks: vec![EMPTY_LEVEL; levels],
            bid_set: LevelSet::new(levels),
            ask_set: LevelSet::new(levels),
            best_bid: NIL,
            best_ask: NIL,
            last_trade: 0,
        }
    }

    #[inline]
    fn price_at(&self, index: u32) -> Price {
        self.config.min_price + self.config.tick_size * Price::from(index)
    }

    fn reference(&self) -> Price {
        if self.last_trade > 0 {
            self.last_trade
        } else {
            self.config.reference_price
        }
    }

    /// The level index of a limit price, or why the price is refused.
    #[inline]
    fn index_of(&self, price: Price) -> Result<u32, Reason> {
        let config = &self.config;
        // `min_price` is a multiple of the tick, so `price` is on the grid exactly
        // when its offset from `min_price` is: one division, none for a tick of 1.
        let offset = price - config.min_price;
        let (steps, remainder) = if config.tick_size == 1 {
            (offset, 0)
        } else {
            let steps = offset / config.tick_size;
            (steps, offset - steps * config.tick_size)
        };
        if price <= 0 || remainder != 0 {
            return Err(Reason::PriceOffTickGrid);
        }
        if price < config.min_price || price > self.max_price {
            return Err(Reason::PriceOutOfRange);
        }
        let reference = self.reference();
        if config.band_bps > 0 && reference > 0 {
            let distance = i128::from((price - reference).abs()) * 10_000;
            if distance > i128::from(reference) * i128::from(config.band_bps) {
                return Err(Reason::PriceOutsideBand);
            }
        }
        Ok(steps as u32)
    }

    /// The worst price a market order may reach: the band's edge (or the book's).
    fn market_limit(&self, side: Side) -> Result<u32, Reason> {
        let config = &self.config;
        let reference = self.reference();
        if reference <= 0 {
            return Err(Reason::NoReferencePrice);
        }
        let top = config.price_levels - 1;
        if config.band_bps == 0 {
            return Ok(match side {
                Side::Buy => top,
                Side::Sell => 0,
            });
        }
        let reach = i128::from(reference) * i128::from(config.band_bps) / 10_000;
        let tick = i128::from(config.tick_size);
        let min = i128::from(config.min_price);
        let index = match side {
            // Round towards the reference so the edge stays inside the band.
            Side::Buy => (i128::from(reference) + reach - min).div_euclid(tick),
            Side::Sell => (i128::from(reference) - reach - min + tick - 1).div_euclid(tick),
        };
        Ok(index.clamp(0, i128::from(top)) as u32)
    }

    fn levels_mut(&mut self, side: Side) -> (&mut Vec<Level>, &mut LevelSet) {
        match side {
            Side::Buy => (&mut self.bids, &mut self.bid_set),
            Side::Sell => (&mut self.asks, &mut self.ask_set),
        }
    }

    /// The best level of `side`, or `NIL`.
    #[inline]
    fn best(&self, side: Side) -> u32 {
        match side {
            Side::Buy => self.best_bid,
            Side::Sell => self.best_ask,
        }
    }

    /// The next non-empty level of `side` after `index`, away from the spread
    /// (higher asks, lower bids), or `NIL`.
    #[inline]
    fn next_worse(&self, side: Side, index: u32) -> u32 {
        match side {
            Side::Sell => self
                .ask_set
                .next_at_or_above(index as usize + 1)
                .map_or(NIL, |i| i as u32),
            Side::Buy if index == 0 => NIL,
            Side::Buy => self
                .bid_set
                .next_at_or_below(index as usize - 1)
                .map_or(NIL, |i| i as u32),
        }
    }

    /// Finds the new best level of `side` after the best one, `emptied`, lost its last order.
    /// Nothing better than `emptied` can exist, so the search starts there.
    fn refresh_best(&mut self, side: Side, emptied: u32) {
        match side {
            Side::Buy => {
                self.best_bid = self
                    .bid_set
                    .next_at_or_below(emptied as usize)
                    .map_or(NIL, |index| index as u32);
            }
            Side::Sell => {
                self.best_ask = self
                    .ask_set
                    .next_at_or_above(emptied as usize)
                    .map_or(NIL, |index| index as u32);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Account {
    cash: i64,
    cash_locked: i64,
    day: u64,
    day_notional: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Holding {
    qty: i64,
    locked: i64,
}

/// An account's funds, as [`Engine::balance`] reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Units owned (cash, or lots of an asset).
    pub total: i64,
    /// Units held back by resting orders.
    pub locked: i64,
}

/// The best level of each side: `(price, total quantity)`, or `None` when the side is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopOfBook {
    pub bid: Option<(Price, Qty)>,
    pub ask: Option<(Price, Qty)>,
}

/// A resting order, as [`Engine::order`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub symbol: SymbolId,
    pub side: Side,
    pub price: Price,
    pub qty: Qty,
}

/// Appends events with gap-free output sequence numbers.
struct Emitter<'a> {
    out: &'a mut Vec<Event>,
    next_seq: u64,
    input_seq: u64,
}

impl Emitter<'_> {
    #[inline]
    fn push(&mut self, mut event: Event) {
        event.seq = self.next_seq;
        event.input_seq = self.input_seq;
        self.next_seq += 1;
        self.out.push(event);
    }

    /// A price level's new total (0 when the level emptied).
    #[inline]
    fn book_delta(&mut self, side: Side, symbol: SymbolId, price: Price, total: Qty) {
        self.push(Event {
            kind: EventKind::BookDelta as u8,
            side: side as u8,
            symbol,
            price,
            qty: total,
            ..Event::default()
        });
    }

    fn reject(&mut self, command: &Command, reason: Reason) {
        self.push(Event {
            kind: EventKind::Rejected as u8,
            side: command.side,
            reason: reason as u8,
            symbol: command.symbol,
            account: command.account,
            order_id: command.order_id,
            price: command.price,
            qty: command.qty,
            ..Event::default()
        });
    }
}

/// The aggressive side of a match.
struct Taker {
    id: OrderId,
    account: AccountId,
    symbol: SymbolId,
    side: Side,
    /// Level index of the limit price (the worst price it accepts).
    limit: u32,
    /// The price at which its funds were locked (its limit price).
    lock_price: Price,
    remaining: Qty,
}

/// Order books, accounts and the rules that move them.
pub struct Engine {
    config: EngineConfig,
    books: Vec<Book>,
    orders: Vec<Order>,
    free: u32,
    resting: u32,
    ids: IdMap,
    accounts: Vec<Account>,
    holdings: Vec<Holding>,
    next_seq: u64,
    /// The largest order id any place command carried (for gateways that
    /// restart and must not hand out an id again).
    max_order_id: OrderId,
}

impl Engine {
    /// An empty engine; every allocation it will ever make for orders happens here.
    pub fn new(config: EngineConfig) -> Result<Self, Error> {
        config.validate()?;
        let capacity = config.orders_resting_max as usize;
        let symbols = config.symbols.len();
        let holdings = if config.funds {
            let count = (config.accounts as usize)
                .checked_mul(symbols)
                .filter(|count| *count <= crate::constants::HOLDINGS_MAX)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "accounts x symbols must be at most {} when funds are on",
                        crate::constants::HOLDINGS_MAX
                    ))
                })?;
            vec![Holding::default(); count]
        } else {
            Vec::new()
        };
        let mut orders = Vec::with_capacity(capacity);
        for slot in 0..capacity {
            let next = if slot + 1 < capacity {
                (slot + 1) as u32
            } else {
                NIL
            };
            orders.push(Order {
                id: 0,
                qty: 0,
                prev: NIL,
                next,
                level: NIL,
                account: 0,
                symbol: 0,
                side: Side::Buy,
            });
        }
        let ids = IdIndex::with_capacity(capacity);
        Ok(Self {
            books: config.symbols.iter().cloned().map(Book::new).collect(),
            accounts: vec![Account::default(); config.accounts as usize],
            holdings,
            orders,
            free: 0,
            resting: 0,
            ids,
            next_seq: 1,
            max_order_id: 0,
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The sequence number the next event will carry.
    pub fn next_event_seq(&self) -> u64 {
        self.next_seq
    }

    /// The largest order id a place command has carried so far (0 before any).
    pub fn max_order_id(&self) -> OrderId {
        self.max_order_id
    }

    /// How many orders rest on all books.
    pub fn resting_orders(&self) -> u32 {
        self.resting
    }

    /// Processes one sequenced command, appending its events to `out`.
    pub fn process(&mut self, command: &Command, input_seq: u64, out: &mut Vec<Event>) {
        let mut emit = Emitter {
            out,
            next_seq: self.next_seq,
            input_seq,
        };
        match CommandKind::from_u8(command.kind) {
            Some(CommandKind::Place) => {
                if command.order_id != OrderId::MAX {
                    self.max_order_id = self.max_order_id.max(command.order_id);
                }
                Self::place(
                    &self.config,
                    &mut self.books,
                    &mut self.orders,
                    &mut self.free,
                    &mut self.resting,
                    &mut self.ids,
                    &mut self.accounts,
                    &mut self.holdings,
                    command,
                    &mut emit,
                );
            }
            Some(CommandKind::Cancel) => self.cancel(command, &mut emit),
            Some(CommandKind::Amend) => self.amend(command, &mut emit),
            Some(CommandKind::Deposit) => self.deposit(command, &mut emit),
            None => emit.reject(command, Reason::InvalidCommand),
        }
        self.next_seq = emit.next_seq;
    }

    fn deposit(&mut self, command: &Command, emit: &mut Emitter<'_>) {
        if command.account >= self.config.accounts {
            return emit.reject(command, Reason::UnknownAccount);
        }
        if command.symbol != CASH && command.symbol as usize >= self.books.len() {
            return emit.reject(command, Reason::UnknownSymbol);
        }
        if command.qty == 0 {
            return emit.reject(command, Reason::InvalidQuantity);
        }
        if !self.config.funds {
            return emit.reject(command, Reason::InvalidCommand);
        }
        let amount = i64::try_from(command.qty).unwrap_or(i64::MAX);
        let balance = if command.symbol == CASH {
            &mut self.accounts[command.account as usize].cash
        } else {
            let at = command.account as usize * self.books.len() + command.symbol as usize;
            &mut self.holdings[at].qty
        };
        match balance.checked_add(amount) {
            Some(total) if total <= crate::constants::BALANCE_MAX => *balance = total,
            _ => return emit.reject(command, Reason::BalanceOverLimit),
        }
        emit.push(Event {
            kind: EventKind::Deposited as u8,
            symbol: command.symbol,
            account: command.account,
            qty: command.qty,
            ..Event::default()
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn place(
        config: &EngineConfig,
        books: &mut [Book],
        orders: &mut [Order],
        free: &mut u32,
        resting: &mut u32,
        ids: &mut IdMap,
        accounts: &mut [Account],
        holdings: &mut [Holding],
        command: &Command,
        emit: &mut Emitter<'_>,
    ) {
        let (Some(side), Some(order_type), Some(tif)) = (
            Side::from_u8(command.side),
            OrderType::from_u8(command.order_type),
            TimeInForce::from_u8(command.time_in_force),
        ) else {
            return emit.reject(command, Reason::InvalidCommand);
        };
        if order_type == OrderType::Market && tif == TimeInForce::Gtc {
            return emit.reject(command, Reason::InvalidCommand);
        }
        let Some(book) = books.get_mut(command.symbol as usize) else {
            return emit.reject(command, Reason::UnknownSymbol);
        };
        if command.account >= config.accounts {
            return emit.reject(command, Reason::UnknownAccount);
        }
        if command.qty == 0 {
            return emit.reject(command, Reason::InvalidQuantity);
        }
        if command.qty > book.config.order_qty_max {
            return emit.reject(command, Reason::QuantityOverLimit);
        }
        let limit = match order_type {
            OrderType::Limit => book.index_of(command.price),
            OrderType::Market => book.market_limit(side),
        };
        let limit = match limit {
            Ok(limit) => limit,
            Err(reason) => return emit.reject(command, reason),
        };
        if command.order_id == OrderId::MAX {
            return emit.reject(command, Reason::InvalidCommand);
        }
        if ids.contains(command.order_id) {
            return emit.reject(command, Reason::DuplicateOrderId);
        }
        if tif == TimeInForce::Gtc && *free == NIL {
            return emit.reject(command, Reason::BookFull);
        }
        let lock_price = book.price_at(limit);
        let notional = lock_price * command.qty as i64;
        let symbols = config.symbols.len();
        if config.funds {
            let account = &mut accounts[command.account as usize];
            let day = command.timestamp_ns / DAY_NS;
            if account.day != day {
                account.day = day;
                account.day_notional = 0;
            }
            if config.daily_notional_max > 0
                && account.day_notional.saturating_add(notional) > config.daily_notional_max
            {
                return emit.reject(command, Reason::DailyNotionalOverLimit);
            }
            let holding =
                &mut holdings[command.account as usize * symbols + command.symbol as usize];
            let enough = match side {
                Side::Buy => account.cash - account.cash_locked >= notional,
                Side::Sell => holding.qty - holding.locked >= command.qty as i64,
            };
            if !enough {
                return emit.reject(command, Reason::InsufficientFunds);
            }
            match side {
                Side::Buy => account.cash_locked += notional,
                Side::Sell => holding.locked += command.qty as i64,
            }
            account.day_notional = account.day_notional.saturating_add(notional);
        }
        emit.push(Event {
            kind: EventKind::Accepted as u8,
            side: side as u8,
            symbol: command.symbol,
            account: command.account,
            order_id: command.order_id,
            price: lock_price,
            qty: command.qty,
            leaves: command.qty,
            ..Event::default()
        });
        let mut taker = Taker {
            id: command.order_id,
            account: command.account,
            symbol: command.symbol,
            side,
            limit,
            lock_price,
            remaining: command.qty,
        };
        if tif == TimeInForce::Fok && !Self::can_fill(book, &taker) {
            Self::unlock(config, accounts, holdings, &taker, taker.remaining);
            return emit.push(Event {
                kind: EventKind::Expired as u8,
                side: side as u8,
                reason: Reason::FillOrKill as u8,
                symbol: command.symbol,
                account: command.account,
                order_id: command.order_id,
                price: lock_price,
                qty: command.qty,
                ..Event::default()
            });
        }
        Self::match_taker(
            config, book, orders, free, resting, ids, accounts, holdings, &mut taker, emit,
        );
        if taker.remaining == 0 {
            return;
        }
        if tif == TimeInForce::Gtc {
            let slot = *free;
            *free = orders[slot as usize].next;
            *resting += 1;
            orders[slot as usize] = Order {
                id: taker.id,
                qty: taker.remaining,
                prev: NIL,
                next: NIL,
                level: taker.limit,
                account: taker.account,
                symbol: taker.symbol,
                side,
            };
            ids.insert(taker.id, slot);
            Self::append_to_level(config, book, orders, slot, emit);
        } else {
            Self::unlock(config, accounts, holdings, &taker, taker.remaining);
            emit.push(Event {
                kind: EventKind::Expired as u8,
                side: side as u8,
                reason: Reason::ImmediateOrCancel as u8,
                symbol: command.symbol,
                account: command.account,
                order_id: command.order_id,
                price: lock_price,
                qty: taker.remaining,
                ..Event::default()
            });
        }
    }

    /// Whether the opposite side holds at least `taker.remaining` within its limit.
    fn can_fill(book: &Book, taker: &Taker) -> bool {
        let mut needed = taker.remaining;
        let mut index = book.best(taker.side.opposite());
        while index != NIL && Self::crosses(taker, index) {
            let level = match taker.side {
                Side::Buy => &book.asks[index as usize],
                Side::Sell => &book.bids[index as usize],
            };
            if level.total >= needed {
                return true;
            }
            needed -= level.total;
            index = book.next_worse(taker.side.opposite(), index);
        }
        false
    }

    #[inline]
    fn crosses(taker: &Taker, maker_level: u32) -> bool {
        match taker.side {
            Side::Buy => maker_level <= taker.limit,
            Side::Sell => maker_level >= taker.limit,
        }
    }

    /// Trades `taker` against the opposite side, best price first, oldest first.
    #[allow(clippy::too_many_arguments)]
    fn match_taker(
        config: &EngineConfig,
        book: &mut Book,
        orders: &mut [Order],
        free: &mut u32,
        resting: &mut u32,
        ids: &mut IdMap,
        accounts: &mut [Account],
        holdings: &mut [Holding],
        taker: &mut Taker,
        emit: &mut Emitter<'_>,
    ) {
        let maker_side = taker.side.opposite();
        let symbols = config.symbols.len();
        loop {
            let index = book.best(maker_side);
            if taker.remaining == 0 || index == NIL || !Self::crosses(taker, index) {
                return;
            }
            let price = book.price_at(index);
            let (levels, set) = book.levels_mut(maker_side);
            let level = &mut levels[index as usize];
            while taker.remaining > 0 && level.head != NIL {
                let slot = level.head;
                let maker = &mut orders[slot as usize];
                let qty = taker.remaining.min(maker.qty);
                maker.qty -= qty;
                level.total -= qty;
                taker.remaining -= qty;
                let maker_id = maker.id;
                let maker_account = maker.account;
                let maker_leaves = maker.qty;
                if config.funds {
                    let notional = price * qty as i64;
                    let signed_qty = qty as i64;
                    let taker_at = taker.account as usize * symbols + taker.symbol as usize;
                    let maker_at = maker_account as usize * symbols + taker.symbol as usize;
                    match taker.side {
                        Side::Buy => {
                            let buyer = &mut accounts[taker.account as usize];
                            buyer.cash -= notional;
                            buyer.cash_locked -= taker.lock_price * signed_qty;
                            holdings[taker_at].qty += signed_qty;
                            holdings[maker_at].qty -= signed_qty;
                            holdings[maker_at].locked -= signed_qty;
                            accounts[maker_account as usize].cash += notional;
                        }
                        Side::Sell => {
                            holdings[taker_at].qty -= signed_qty;
                            holdings[taker_at].locked -= signed_qty;
                            accounts[taker.account as usize].cash += notional;
                            let buyer = &mut accounts[maker_account as usize];
                            buyer.cash -= notional;
                            buyer.cash_locked -= notional;
                            holdings[maker_at].qty += signed_qty;
                        }
                    }
                }
                emit.push(Event {
                    kind: EventKind::Trade as u8,
                    side: taker.side as u8,
                    symbol: taker.symbol,
                    account: taker.account,
                    maker_account,
                    order_id: taker.id,
                    maker_order_id: maker_id,
                    price,
                    qty,
                    leaves: taker.remaining,
                    maker_leaves,
                    ..Event::default()
                });
                if maker_leaves == 0 {
                    let next = maker.next;
                    level.head = next;
                    if next == NIL {
                        level.tail = NIL;
                    } else {
                        orders[next as usize].prev = NIL;
                    }
                    orders[slot as usize].next = *free;
                    orders[slot as usize].level = NIL;
                    *free = slot;
                    *resting -= 1;
                    ids.remove(maker_id);
                }
            }
            let level_total = level.total;
            if level.head == NIL {
                set.remove(index as usize);
                book.refresh_best(maker_side, index);
            }
            book.last_trade = price;
            if config.book_deltas {
                emit.book_delta(maker_side, taker.symbol, price, level_total);
            }
        }
    }

    fn append_to_level(
        config: &EngineConfig,
        book: &mut Book,
        orders: &mut [Order],
        slot: u32,
        emit: &mut Emitter<'_>,
    ) {
        let order = orders[slot as usize];
        let index = order.level;
        let (levels, set) = book.levels_mut(order.side);
        let level = &mut levels[index as usize];
        if level.tail == NIL {
            level.head = slot;
            set.insert(index as usize);
        } else {
            orders[level.tail as usize].next = slot;
            orders[slot as usize].prev = level.tail;
        }
        level.tail = slot;
        level.total += order.qty;
        let total = level.total;
        match order.side {
            Side::Buy if book.best_bid == NIL || index > book.best_bid => book.best_bid = index,
            Side::Sell if book.best_ask == NIL || index < book.best_ask => book.best_ask = index,
            _ => {}
        }
        if config.book_deltas {
            emit.book_delta(order.side, order.symbol, book.price_at(index), total);
        }
    }

    /// Unlinks a resting order from its level (the slot stays allocated).
    fn unlink(
        config: &EngineConfig,
        book: &mut Book,
        orders: &mut [Order],
        slot: u32,
        emit: &mut Emitter<'_>,
    ) {
        let order = orders[slot as usize];
        let index = order.level;
        let (levels, set) = book.levels_mut(order.side);
        let level = &mut levels[index as usize];
        if order.prev == NIL {
            level.head = order.next;
        } else {
            orders[order.prev as usize].next = order.next;
        }
        if order.next == NIL {
            level.tail = order.prev;
        } else {
            orders[order.next as usize].prev = order.prev;
        }
        level.total -= order.qty;
        let total = level.total;
        if level.head == NIL {
            set.remove(index as usize);
            if book.best(order.side) == index {
                book.refresh_best(order.side, index);
            }
        }
        let resting = &mut orders[slot as usize];
        resting.prev = NIL;
        resting.next = NIL;
        if config.book_deltas {
            emit.book_delta(order.side, order.symbol, book.price_at(index), total);
        }
    }

    /// Releases what an order's `qty` untraded lots held back.
    fn unlock(
        config: &EngineConfig,
        accounts: &mut [Account],
        holdings: &mut [Holding],
        taker: &Taker,
        qty: Qty,
    ) {
        if !config.funds {
            return;
        }
        match taker.side {
            Side::Buy => {
                accounts[taker.account as usize].cash_locked -= taker.lock_price * qty as i64;
            }
            Side::Sell => {
                let at = taker.account as usize * config.symbols.len() + taker.symbol as usize;
                holdings[at].locked -= qty as i64;
            }
        }
    }

    /// The slot of `command`'s order, if it rests and belongs to the command's account and symbol.
    fn owned_slot(&self, command: &Command) -> Option<u32> {
        let slot = self.ids.get(command.order_id)?;
        let order = &self.orders[slot as usize];
        (order.account == command.account && order.symbol == command.symbol).then_some(slot)
    }

    fn cancel(&mut self, command: &Command, emit: &mut Emitter<'_>) {
        if command.symbol as usize >= self.books.len() {
            return emit.reject(command, Reason::UnknownSymbol);
        }
        let Some(slot) = self.owned_slot(command) else {
            return emit.reject(command, Reason::UnknownOrder);
        };
        let order = self.orders[slot as usize];
        let book = &mut self.books[order.symbol as usize];
        let price = book.price_at(order.level);
        Self::unlink(&self.config, book, &mut self.orders, slot, emit);
        let taker = Taker {
            id: order.id,
            account: order.account,
            symbol: order.symbol,
            side: order.side,
            limit: order.level,
            lock_price: price,
            remaining: order.qty,
        };
        Self::unlock(
            &self.config,
            &mut self.accounts,
            &mut self.holdings,
            &taker,
            order.qty,
        );
        self.ids.remove(order.id);
        self.orders[slot as usize].next = self.free;
        self.orders[slot as usize].level = NIL;
        self.free = slot;
        self.resting -= 1;
        emit.push(Event {
            kind: EventKind::Cancelled as u8,
            side: order.side as u8,
            symbol: order.symbol,
            account: order.account,
            order_id: order.id,
            price,
            qty: order.qty,
            leaves: 0,
            ..Event::default()
        });
    }

    /// Changes a resting order. A smaller quantity at the same price keeps its
    /// place in the queue; a new price or a larger quantity sends it to the back
    /// of its (new) level, and a new price that crosses the book trades first.
    fn amend(&mut self, command: &Command, emit: &mut Emitter<'_>) {
        if command.symbol as usize >= self.books.len() {
            return emit.reject(command, Reason::UnknownSymbol);
        }
        let Some(slot) = self.owned_slot(command) else {
            return emit.reject(command, Reason::UnknownOrder);
        };
        let order = self.orders[slot as usize];
        let symbols = self.books.len();
        let book = &mut self.books[order.symbol as usize];
        if command.qty == 0 {
            return emit.reject(command, Reason::InvalidQuantity);
        }
        if command.qty > book.config.order_qty_max {
            return emit.reject(command, Reason::QuantityOverLimit);
        }
        let old_price = book.price_at(order.level);
        let new_level = if command.price == old_price {
            order.level
        } else {
            match book.index_of(command.price) {
                Ok(index) => index,
                Err(reason) => return emit.reject(command, reason),
            }
        };
        let new_price = book.price_at(new_level);
        if self.config.funds {
            let account = &mut self.accounts[order.account as usize];
            let holding_at = order.account as usize * symbols + order.symbol as usize;
            let old_notional = old_price * order.qty as i64;
            let new_notional = new_price * command.qty as i64;
            let growth = (new_notional - old_notional).max(0);
            if self.config.daily_notional_max > 0
                && account.day_notional.saturating_add(growth) > self.config.daily_notional_max
            {
                return emit.reject(command, Reason::DailyNotionalOverLimit);
            }
            match order.side {
                Side::Buy => {
                    let extra = new_notional - old_notional;
                    if extra > account.cash - account.cash_locked {
                        return emit.reject(command, Reason::InsufficientFunds);
                    }
                    account.cash_locked += extra;
                }
                Side::Sell => {
                    let holding = &mut self.holdings[holding_at];
                    let extra = command.qty as i64 - order.qty as i64;
                    if extra > holding.qty - holding.locked {
                        return emit.reject(command, Reason::InsufficientFunds);
                    }
                    holding.locked += extra;
                }
            }
            account.day_notional = account.day_notional.saturating_add(growth);
        }
        emit.push(Event {
            kind: EventKind::Amended as u8,
            side: order.side as u8,
            symbol: order.symbol,
            account: order.account,
            order_id: order.id,
            price: new_price,
            qty: command.qty,
            leaves: command.qty,
            ..Event::default()
        });
        if new_level == order.level && command.qty <= order.qty {
            // Same price, less or equal quantity: keep the place in the queue.
            let (levels, _) = book.levels_mut(order.side);
            let level = &mut levels[order.level as usize];
            level.total -= order.qty - command.qty;
            let total = level.total;
            self.orders[slot as usize].qty = command.qty;
            if self.config.book_deltas && command.qty != order.qty {
                emit.book_delta(order.side, order.symbol, old_price, total);
            }
            return;
        }
        Self::unlink(&self.config, book, &mut self.orders, slot, emit);
        let mut taker = Taker {
            id: order.id,
            account: order.account,
            symbol: order.symbol,
            side: order.side,
            limit: new_level,
            lock_price: new_price,
            remaining: command.qty,
        };
        // The slot is still allocated and mapped, so trading cannot run out of capacity.
        Self::match_taker(
            &self.config,
            book,
            &mut self.orders,
            &mut self.free,
            &mut self.resting,
            &mut self.ids,
            &mut self.accounts,
            &mut self.holdings,
            &mut taker,
            emit,
        );
        if taker.remaining == 0 {
            self.ids.remove(order.id);
            self.orders[slot as usize].next = self.free;
            self.orders[slot as usize].level = NIL;
            self.free = slot;
            self.resting -= 1;
            return;
        }
        let resting = &mut self.orders[slot as usize];
        resting.qty = taker.remaining;
        resting.level = new_level;
        Self::append_to_level(&self.config, book, &mut self.orders, slot, emit);
    }

    /// A resting order by id.
    pub fn order(&self, id: OrderId) -> Option<RestingOrder> {
        let slot = self.ids.get(id)?;
        let order = &self.orders[slot as usize];
        Some(RestingOrder {
            id,
            account: order.account,
            symbol: order.symbol,
            side: order.side,
            price: self.books[order.symbol as usize].price_at(order.level),
            qty: order.qty,
        })
    }

    /// The best bid and ask of `symbol`, each as `(price, total quantity)`.
    pub fn top_of_book(&self, symbol: SymbolId) -> Option<TopOfBook> {
        let book = self.books.get(symbol as usize)?;
        let bid = (book.best_bid != NIL).then(|| {
            (
                book.price_at(book.best_bid),
                book.bids[book.best_bid as usize].total,
            )
        });
        let ask = (book.best_ask != NIL).then(|| {
            (
                book.price_at(book.best_ask),
                book.asks[book.best_ask as usize].total,
            )
        });
        Some(TopOfBook { bid, ask })
    }

    /// Up to `levels` price levels of one side, best first, as `(price, total quantity)`.
    pub fn depth(&self, symbol: SymbolId, side: Side, levels: usize) -> Vec<(Price, Qty)> {
        let Some(book) = self.books.get(symbol as usize) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(levels.min(64));
        let mut index = book.best(side);
        while index != NIL && out.len() < levels {
            let level = match side {
                Side::Buy => &book.bids[index as usize],
                Side::Sell => &book.asks[index as usize],
            };
            out.push((book.price_at(index), level.total));
            index = book.next_worse(side, index);
        }
        out
    }

    /// The orders resting at one price level of `symbol`, oldest first.
    pub fn level_orders(&self, symbol: SymbolId, side: Side, price: Price) -> Vec<RestingOrder> {
        let Some(book) = self.books.get(symbol as usize) else {
            return Vec::new();
        };
        let Ok(index) = Self::level_index(book, price) else {
            return Vec::new();
        };
        let level = match side {
            Side::Buy => &book.bids[index as usize],
            Side::Sell => &book.asks[index as usize],
        };
        let mut out = Vec::new();
        let mut slot = level.head;
        while slot != NIL {
            let order = &self.orders[slot as usize];
            out.push(RestingOrder {
                id: order.id,
                account: order.account,
                symbol,
                side,
                price,
                qty: order.qty,
            });
            slot = order.next;
        }
        out
    }

    fn level_index(book: &Book, price: Price) -> Result<u32, Reason> {
        let config = &book.config;
        if price % config.tick_size != 0 || price < config.min_price || price > config.max_price() {
            return Err(Reason::PriceOutOfRange);
        }
        Ok(((price - config.min_price) / config.tick_size) as u32)
    }

    /// The last trade price of `symbol` (0 before the first trade).
    pub fn last_trade(&self, symbol: SymbolId) -> Option<Price> {
        self.books.get(symbol as usize).map(|book| book.last_trade)
    }

    /// An account's cash (`symbol == CASH`) or asset balance.
    pub fn balance(&self, account: AccountId, symbol: SymbolId) -> Option<Balance> {
        let state = self.accounts.get(account as usize)?;
        if symbol == CASH {
            return Some(Balance {
                total: state.cash,
                locked: state.cash_locked,
            });
        }
        if symbol as usize >= self.books.len() || !self.config.funds {
            return None;
        }
        let holding = self.holdings[account as usize * self.books.len() + symbol as usize];
        Some(Balance {
            total: holding.qty,
            locked: holding.locked,
        })
    }

    /// A fingerprint of everything that matters: every resting order in
    /// priority order, every balance, the last trades and the event sequence.
    /// Two engines fed the same commands have the same hash.
    pub fn state_hash(&self) -> u64 {
        let mut hash = StateHasher::new();
        hash.u64(self.next_seq);
        hash.u64(u64::from(self.resting));
        for (symbol, book) in self.books.iter().enumerate() {
            hash.u64(symbol as u64);
            hash.u64(book.last_trade as u64);
            for side in [Side::Buy, Side::Sell] {
                for (price, total) in self.depth(symbol as u32, side, usize::MAX) {
                    hash.u64(price as u64);
                    hash.u64(total);
                    for order in self.level_orders(symbol as u32, side, price) {
                        hash.u64(order.id);
                        hash.u64(u64::from(order.account));
                        hash.u64(order.qty);
                    }
                }
            }
        }
        for account in &self.accounts {
            hash.u64(account.cash as u64);
            hash.u64(account.cash_locked as u64);
            hash.u64(account.day);
            hash.u64(account.day_notional as u64);
        }
        for holding in &self.holdings {
            hash.u64(holding.qty as u64);
            hash.u64(holding.locked as u64);
        }
        hash.finish()
    }
}
