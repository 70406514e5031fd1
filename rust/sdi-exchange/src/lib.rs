//! The stock exchange's core (book chapter 13), in pure Rust.
//!
//! - [`Engine`]: order books with price-time priority, matching (limit, market,
//!   IOC, FOK, cancel, amend), and the order manager's funds and risk checks.
//! - [`Journal`]: the sequencer's checksummed journal of every inbound command.
//! - [`Exchange`]: sequencer + journal + engine. Every command gets a gap-free
//!   sequence number and a timestamp, goes to the journal, then to the engine;
//!   replaying the journal rebuilds the same state and the same events.

pub mod config;
pub mod constants;
mod engine;
mod error;
mod hash;
mod idindex;
mod journal;
mod levelset;
pub mod marketdata;
pub mod pipeline;
mod sequencer;
pub mod types;
pub mod workload;

pub use config::{EngineConfig, SymbolConfig};
pub use engine::{Balance, Engine, RestingOrder, TopOfBook};
pub use error::Error;
pub use journal::{Durability, Follower, Journal, JournalRecord};
pub use sequencer::{Exchange, Standby};
pub use types::{
    AccountId, Command, CommandKind, Event, EventKind, OrderId, OrderType, Price, Qty, Reason,
    Side, SymbolId, TimeInForce, CASH,
};
