//! A deliberately simple reference exchange: the oracle the engine is tested against.
//!
//! Books are `BTreeMap<price, VecDeque<order>>`, balances are plain maps; it
//! trades the same rules as the engine but shares none of its code.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sdi_exchange::constants::{BALANCE_MAX, DAY_NS};
use sdi_exchange::{
    Command, CommandKind, EngineConfig, Event, EventKind, OrderType, Price, Reason, Side,
    TimeInForce, CASH,
};

#[derive(Clone, Debug)]
pub struct ModelOrder {
    pub id: u64,
    pub account: u32,
    pub qty: u64,
}

#[derive(Default, Clone, Debug)]
pub struct ModelBook {
    pub bids: BTreeMap<Price, VecDeque<ModelOrder>>,
    pub asks: BTreeMap<Price, VecDeque<ModelOrder>>,
    pub last_trade: Price,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct ModelAccount {
    pub cash: i64,
    pub cash_locked: i64,
    pub day: u64,
    pub day_notional: i64,
}

pub struct Model {
    pub config: EngineConfig,
    pub books: Vec<ModelBook>,
    /// order id -> (symbol, side, price)
    pub index: HashMap<u64, (u32, Side, Price)>,
    pub accounts: Vec<ModelAccount>,
    /// (account, symbol) -> (qty, locked)
    pub holdings: HashMap<(u32, u32), (i64, i64)>,
    pub next_seq: u64,
}

impl Model {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            books: vec![ModelBook::default(); config.symbols.len()],
            accounts: vec![ModelAccount::default(); config.accounts as usize],
            index: HashMap::new(),
            holdings: HashMap::new(),
            next_seq: 1,
            config,
        }
    }

    fn emit(&mut self, out: &mut Vec<Event>, input_seq: u64, mut event: Event) {
        event.seq = self.next_seq;
        event.input_seq = input_seq;
        self.next_seq += 1;
        out.push(event);
    }

    fn reject(&mut self, out: &mut Vec<Event>, seq: u64, c: &Command, reason: Reason) {
        let event = Event {
            kind: EventKind::Rejected as u8,
            side: c.side,
            reason: reason as u8,
            symbol: c.symbol,
            account: c.account,
            order_id: c.order_id,
            price: c.price,
            qty: c.qty,
            ..Event::default()
        };
        self.emit(out, seq, event);
    }

    fn resting_count(&self) -> usize {
        self.index.len()
    }

    fn reference(&self, symbol: usize) -> Price {
        let book = &self.books[symbol];
        if book.last_trade > 0 {
            book.last_trade
        } else {
            self.config.symbols[symbol].reference_price
        }
    }

    fn check_price(&self, symbol: usize, price: Price) -> Result<Price, Reason> {
        let s = &self.config.symbols[symbol];
        if price <= 0 || price % s.tick_size != 0 {
            return Err(Reason::PriceOffTickGrid);
        }
        if price < s.min_price || price > s.max_price() {
            return Err(Reason::PriceOutOfRange);
        }
        let reference = self.reference(symbol);
        if s.band_bps > 0
            && reference > 0
            && i128::from((price - reference).abs()) * 10_000
                > i128::from(reference) * i128::from(s.band_bps)
        {
            return Err(Reason::PriceOutsideBand);
        }
        Ok(price)
    }

    fn market_price(&self, symbol: usize, side: Side) -> Result<Price, Reason> {
        let s = &self.config.symbols[symbol];
        let reference = self.reference(symbol);
        if reference <= 0 {
            return Err(Reason::NoReferencePrice);
        }
        if s.band_bps == 0 {
            return Ok(match side {
                Side::Buy => s.max_price(),
                Side::Sell => s.min_price,
            });
        }
        let reach = reference as i128 * s.band_bps as i128 / 10_000;
        // Largest tick price <= reference + reach, smallest tick price >= reference - reach.
        let mut price = match side {
            Side::Buy => {
                let raw = reference as i128 + reach;
                let steps = (raw - s.min_price as i128).div_euclid(s.tick_size as i128);
                s.min_price as i128 + steps * s.tick_size as i128
            }
            Side::Sell => {
                let raw = reference as i128 - reach;
                let steps = (raw - s.min_price as i128 + s.tick_size as i128 - 1)
                    .div_euclid(s.tick_size as i128);
                s.min_price as i128 + steps * s.tick_size as i128
            }
        };
        price = price.clamp(s.min_price as i128, s.max_price() as i128);
        Ok(price as Price)
    }

    fn holding(&mut self, account: u32, symbol: u32) -> &mut (i64, i64) {
        self.holdings.entry((account, symbol)).or_insert((0, 0))
    }

    pub fn process(&mut self, c: &Command, seq: u64, out: &mut Vec<Event>) {
        match CommandKind::from_u8(c.kind) {
            Some(CommandKind::Place) => self.place(c, seq, out),
            Some(CommandKind::Cancel) => self.cancel(c, seq, out),
            Some(CommandKind::Amend) => self.amend(c, seq, out),
            Some(CommandKind::Deposit) => self.deposit(c, seq, out),
            None => self.reject(out, seq, c, Reason::InvalidCommand),
        }
    }

    fn deposit(&mut self, c: &Command, seq: u64, out: &mut Vec<Event>) {
        if c.account >= self.config.accounts {
            return self.reject(out, seq, c, Reason::UnknownAccount);
        }
        if c.symbol != CASH && c.symbol as usize >= self.books.len() {
            return self.reject(out, seq, c, Reason::UnknownSymbol);
        }
        if c.qty == 0 {
            return self.reject(out, seq, c, Reason::InvalidQuantity);
        }
        if !self.config.funds {
            return self.reject(out, seq, c, Reason::InvalidCommand);
        }
        let amount = c.qty as i128;
        let current = if c.symbol == CASH {
            self.accounts[c.account as usize].cash as i128
        } else {
            self.holding(c.account, c.symbol).0 as i128
        };
        if current + amount > BALANCE_MAX as i128 {
            return self.reject(out, seq, c, Reason::BalanceOverLimit);
        }
        if c.symbol == CASH {
            self.accounts[c.account as usize].cash += c.qty as i64;
        } else {
            self.holding(c.account, c.symbol).0 += c.qty as i64;
        }
        let event = Event {
            kind: EventKind::Deposited as u8,
            symbol: c.symbol,
            account: c.account,
            qty: c.qty,
            ..Event::default()
        };
        self.emit(out, seq, event);
    }

    fn place(&mut self, c: &Command, seq: u64, out: &mut Vec<Event>) {
        let (Some(side), Some(order_type), Some(tif)) = (
            Side::from_u8(c.side),
            OrderType::from_u8(c.order_type),
            TimeInForce::from_u8(c.time_in_force),
        ) else {
            return self.reject(out, seq, c, Reason::InvalidCommand);
        };
        if order_type == OrderType::Market && tif == TimeInForce::Gtc {
            return self.reject(out, seq, c, Reason::InvalidCommand);
        }
        let symbol = c.symbol as usize;
        if symbol >= self.books.len() {
            return self.reject(out, seq, c, Reason::UnknownSymbol);
        }
        if c.account >= self.config.accounts {
            return self.reject(out, seq, c, Reason::UnknownAccount);
        }
        if c.qty == 0 {
            return self.reject(out, seq, c, Reason::InvalidQuantity);
        }
        if c.qty > self.config.symbols[symbol].order_qty_max {
            return self.reject(out, seq, c, Reason::QuantityOverLimit);
        }
        let limit = match order_type {
            OrderType::Limit => self.check_price(symbol, c.price),
            OrderType::Market => self.market_price(symbol, side),
        };
        let limit = match limit {
            Ok(price) => price,
            Err(reason) => return self.reject(out, seq, c, reason),
        };
        if c.order_id == u64::MAX {
            return self.reject(out, seq, c, Reason::InvalidCommand);
        }
        if self.index.contains_key(&c.order_id) {
            return self.reject(out, seq, c, Reason::DuplicateOrderId);
        }
        if tif == TimeInForce::Gtc
            && self.resting_count() >= self.config.orders_resting_max as usize
        {
            return self.reject(out, seq, c, Reason::BookFull);
        }
        let notional = limit * c.qty as i64;
        if self.config.funds {
            let day = c.timestamp_ns / DAY_NS;
            let account = &mut self.accounts[c.account as usize];
            if account.day != day {
                account.day = day;
                account.day_notional = 0;
            }
            if self.config.daily_notional_max > 0
                && account.day_notional + notional > self.config.daily_notional_max
            {
                return self.reject(out, seq, c, Reason::DailyNotionalOverLimit);
            }
            let cash_free = account.cash - account.cash_locked;
            let (qty, locked) = *self.holding(c.account, c.symbol);
            let enough = match side {
                Side::Buy => cash_free >= notional,
                Side::Sell => qty - locked >= c.qty as i64,
            };
            if !enough {
                return self.reject(out, seq, c, Reason::InsufficientFunds);
            }
            match side {
                Side::Buy => self.accounts[c.account as usize].cash_locked += notional,
                Side::Sell => self.holding(c.account, c.symbol).1 += c.qty as i64,
            }
            self.accounts[c.account as usize].day_notional += notional;
        }
        let accepted = Event {
            kind: EventKind::Accepted as u8,
            side: side as u8,
            symbol: c.symbol,
            account: c.account,
            order_id: c.order_id,
            price: limit,
            qty: c.qty,
            leaves: c.qty,
            ..Event::default()
        };
        self.emit(out, seq, accepted);
        if tif == TimeInForce::Fok && self.available(symbol, side, limit) < c.qty {
            self.unlock(c.account, c.symbol, side, limit, c.qty);
            let expired = Event {
                kind: EventKind::Expired as u8,
                side: side as u8,
                reason: Reason::FillOrKill as u8,
                symbol: c.symbol,
                account: c.account,
                order_id: c.order_id,
                price: limit,
                qty: c.qty,
                ..Event::default()
            };
            return self.emit(out, seq, expired);
        }
        let remaining = self.take(
            c.order_id, c.account, c.symbol, side, limit, c.qty, seq, out,
        );
        if remaining == 0 {
            return;
        }
        if tif == TimeInForce::Gtc {
            self.rest(c.order_id, c.account, c.symbol, side, limit, remaining);
        } else {
            self.unlock(c.account, c.symbol, side, limit, remaining);
            let expired = Event {
                kind: EventKind::Expired as u8,
                side: side as u8,
                reason: Reason::ImmediateOrCancel as u8,
                symbol: c.symbol,
                account: c.account,
                order_id: c.order_id,
                price: limit,
                qty: remaining,
                ..Event::default()
            };
            self.emit(out, seq, expired);
        }
    }

    fn rest(&mut self, id: u64, account: u32, symbol: u32, side: Side, price: Price, qty: u64) {
        let book = &mut self.books[symbol as usize];
        let levels = match side {
            Side::Buy => &mut book.bids,
            Side::Sell => &mut book.asks,
        };
        levels
            .entry(price)
            .or_default()
            .push_back(ModelOrder { id, account, qty });
        self.index.insert(id, (symbol, side, price));
    }

    fn available(&self, symbol: usize, side: Side, limit: Price) -> u64 {
        let book = &self.books[symbol];
        match side {
            Side::Buy => book
                .asks
                .range(..=limit)
                .flat_map(|(_, q)| q)
                .map(|o| o.qty)
                .sum(),
            Side::Sell => book
                .bids
                .range(limit..)
                .flat_map(|(_, q)| q)
                .map(|o| o.qty)
                .sum(),
        }
    }

    fn unlock(&mut self, account: u32, symbol: u32, side: Side, price: Price, qty: u64) {
        if !self.config.funds {
            return;
        }
        match side {
            Side::Buy => self.accounts[account as usize].cash_locked -= price * qty as i64,
            Side::Sell => self.holding(account, symbol).1 -= qty as i64,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        id: u64,
        account: u32,
        symbol: u32,
        side: Side,
        limit: Price,
        mut remaining: u64,
        seq: u64,
        out: &mut Vec<Event>,
    ) -> u64 {
        while remaining > 0 {
            let book = &mut self.books[symbol as usize];
            let best = match side {
                Side::Buy => book.asks.iter_mut().next().filter(|(p, _)| **p <= limit),
                Side::Sell => book
                    .bids
                    .iter_mut()
                    .next_back()
                    .filter(|(p, _)| **p >= limit),
            };
            let Some((&price, queue)) = best else {
                break;
            };
            let maker = queue
                .front_mut()
                .expect("levels in the model are never empty");
            let qty = remaining.min(maker.qty);
            maker.qty -= qty;
            remaining -= qty;
            let (maker_id, maker_account, maker_leaves) = (maker.id, maker.account, maker.qty);
            if maker_leaves == 0 {
                queue.pop_front();
                if queue.is_empty() {
                    match side {
                        Side::Buy => book.asks.remove(&price),
                        Side::Sell => book.bids.remove(&price),
                    };
                }
                self.index.remove(&maker_id);
            }
            self.books[symbol as usize].last_trade = price;
            if self.config.funds {
                let notional = price * qty as i64;
                let q = qty as i64;
                match side {
                    Side::Buy => {
                        self.accounts[account as usize].cash -= notional;
                        self.accounts[account as usize].cash_locked -= limit * q;
                        self.holding(account, symbol).0 += q;
                        let maker_holding = self.holding(maker_account, symbol);
                        maker_holding.0 -= q;
                        maker_holding.1 -= q;
                        self.accounts[maker_account as usize].cash += notional;
                    }
                    Side::Sell => {
                        let taker_holding = self.holding(account, symbol);
                        taker_holding.0 -= q;
                        taker_holding.1 -= q;
                        self.accounts[account as usize].cash += notional;
                        self.accounts[maker_account as usize].cash -= notional;
                        self.accounts[maker_account as usize].cash_locked -= notional;
                        self.holding(maker_account, symbol).0 += q;
                    }
                }
            }
            let trade = Event {
                kind: EventKind::Trade as u8,
                side: side as u8,
                symbol,
                account,
                maker_account,
                order_id: id,
                maker_order_id: maker_id,
                price,
                qty,
                leaves: remaining,
                maker_leaves,
                ..Event::default()
            };
            self.emit(out, seq, trade);
        }
        remaining
    }

    fn owned(&self, c: &Command) -> Option<(u32, Side, Price, u64)> {
        let &(symbol, side, price) = self.index.get(&c.order_id)?;
        let book = &self.books[symbol as usize];
        let queue = match side {
            Side::Buy => &book.bids[&price],
            Side::Sell => &book.asks[&price],
        };
        let order = queue.iter().find(|o| o.id == c.order_id)?;
        (order.account == c.account && symbol == c.symbol)
            .then_some((symbol, side, price, order.qty))
    }

    fn remove(&mut self, symbol: u32, side: Side, price: Price, id: u64) {
        let book = &mut self.books[symbol as usize];
        let levels = match side {
            Side::Buy => &mut book.bids,
            Side::Sell => &mut book.asks,
        };
        let queue = levels.get_mut(&price).expect("indexed orders rest");
        queue.retain(|o| o.id != id);
        if queue.is_empty() {
            levels.remove(&price);
        }
        self.index.remove(&id);
    }

    fn cancel(&mut self, c: &Command, seq: u64, out: &mut Vec<Event>) {
        if c.symbol as usize >= self.books.len() {
            return self.reject(out, seq, c, Reason::UnknownSymbol);
        }
        let Some((symbol, side, price, qty)) = self.owned(c) else {
            return self.reject(out, seq, c, Reason::UnknownOrder);
        };
        self.remove(symbol, side, price, c.order_id);
        self.unlock(c.account, symbol, side, price, qty);
        let event = Event {
            kind: EventKind::Cancelled as u8,
            side: side as u8,
            symbol,
            account: c.account,
            order_id: c.order_id,
            price,
            qty,
            ..Event::default()
        };
        self.emit(out, seq, event);
    }

    fn amend(&mut self, c: &Command, seq: u64, out: &mut Vec<Event>) {
        if c.symbol as usize >= self.books.len() {
            return self.reject(out, seq, c, Reason::UnknownSymbol);
        }
        let Some((symbol, side, old_price, old_qty)) = self.owned(c) else {
            return self.reject(out, seq, c, Reason::UnknownOrder);
        };
        if c.qty == 0 {
            return self.reject(out, seq, c, Reason::InvalidQuantity);
        }
        if c.qty > self.config.symbols[symbol as usize].order_qty_max {
            return self.reject(out, seq, c, Reason::QuantityOverLimit);
        }
        let new_price = if c.price == old_price {
            old_price
        } else {
            match self.check_price(symbol as usize, c.price) {
                Ok(price) => price,
                Err(reason) => return self.reject(out, seq, c, reason),
            }
        };
        if self.config.funds {
            let old_notional = old_price * old_qty as i64;
            let new_notional = new_price * c.qty as i64;
            let growth = (new_notional - old_notional).max(0);
            let account = self.accounts[c.account as usize];
            if self.config.daily_notional_max > 0
                && account.day_notional + growth > self.config.daily_notional_max
            {
                return self.reject(out, seq, c, Reason::DailyNotionalOverLimit);
            }
            match side {
                Side::Buy => {
                    let extra = new_notional - old_notional;
                    if extra > account.cash - account.cash_locked {
                        return self.reject(out, seq, c, Reason::InsufficientFunds);
                    }
                    self.accounts[c.account as usize].cash_locked += extra;
                }
                Side::Sell => {
                    let extra = c.qty as i64 - old_qty as i64;
                    let (qty, locked) = *self.holding(c.account, symbol);
                    if extra > qty - locked {
                        return self.reject(out, seq, c, Reason::InsufficientFunds);
                    }
                    self.holding(c.account, symbol).1 += extra;
                }
            }
            self.accounts[c.account as usize].day_notional += growth;
        }
        let amended = Event {
            kind: EventKind::Amended as u8,
            side: side as u8,
            symbol,
            account: c.account,
            order_id: c.order_id,
            price: new_price,
            qty: c.qty,
            leaves: c.qty,
            ..Event::default()
        };
        self.emit(out, seq, amended);
        if new_price == old_price && c.qty <= old_qty {
            let book = &mut self.books[symbol as usize];
            let levels = match side {
                Side::Buy => &mut book.bids,
                Side::Sell => &mut book.asks,
            };
            let queue = levels.get_mut(&old_price).expect("resting");
            queue
                .iter_mut()
                .find(|o| o.id == c.order_id)
                .expect("resting")
                .qty = c.qty;
            return;
        }
        self.remove(symbol, side, old_price, c.order_id);
        let remaining = self.take(
            c.order_id, c.account, symbol, side, new_price, c.qty, seq, out,
        );
        if remaining > 0 {
            self.rest(c.order_id, c.account, symbol, side, new_price, remaining);
        }
    }

    /// `(price, total)` levels of one side, best first.
    pub fn depth(&self, symbol: u32, side: Side) -> Vec<(Price, u64)> {
        let book = &self.books[symbol as usize];
        let total = |q: &VecDeque<ModelOrder>| q.iter().map(|o| o.qty).sum::<u64>();
        match side {
            Side::Buy => book
                .bids
                .iter()
                .rev()
                .map(|(p, q)| (*p, total(q)))
                .collect(),
            Side::Sell => book.asks.iter().map(|(p, q)| (*p, total(q))).collect(),
        }
    }
}
