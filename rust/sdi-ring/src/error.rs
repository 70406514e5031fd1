//! The one error enum of the ring crate.

use std::path::PathBuf;

use crate::constants::{CAPACITY_BYTES_MAX, CAPACITY_BYTES_MIN};

/// Which end of the ring a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that pushes records.
    Producer,
    /// The side that pops records.
    Consumer,
}

impl Role {
    /// The role's name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Producer => Role::Consumer,
            Role::Consumer => Role::Producer,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Everything that can go wrong with a ring. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),

    /// The capacity is not a power of two within the allowed range.
    #[error(
        "capacity_bytes must be a power of two between {min} and {max}, got {capacity}; \
         try {suggestion}",
        min = CAPACITY_BYTES_MIN,
        max = CAPACITY_BYTES_MAX
    )]
    BadCapacity {
        /// The capacity asked for.
        capacity: u64,
        /// The nearest allowed capacity at or above it.
        suggestion: u64,
    },

    /// A record is larger than the ring or than `RECORD_BYTES_MAX`.
    #[error(
        "record {index} is {bytes} bytes, over the {max}-byte limit of this ring \
         (a payload must fit the ring with its 8-byte header); split it or create a larger ring"
    )]
    RecordTooLarge {
        /// The position of the record in its batch.
        index: usize,
        /// Its payload length.
        bytes: usize,
        /// The largest payload this ring accepts.
        max: usize,
    },

    /// A batch holds more records than `BATCH_RECORDS_MAX`.
    #[error("a batch may hold at most {max} records, got {records}; split the batch")]
    BatchTooLarge {
        /// The records asked for.
        records: usize,
        /// The limit.
        max: usize,
    },

    /// The role is held by a live process.
    #[error(
        "the ring already has a live {role} (pid {pid}); a ring takes one {role} at a time: \
         close the other one first, or wait for it to exit"
    )]
    RoleTaken {
        /// The role asked for.
        role: Role,
        /// The process that holds it.
        pid: u32,
    },

    /// The shared file or memory failed a check.
    #[error("the ring is corrupt: {0}; it was not used (recreate the ring file)")]
    Corrupt(String),

    /// The handle was closed.
    #[error("this ring {0} is closed; open a new one")]
    Closed(Role),

    /// The other end closed cleanly while this end waited on it.
    #[error(
        "the ring's {0} closed cleanly while this side waited on it; \
         nothing more will arrive or be read until a new one attaches"
    )]
    PeerClosed(Role),

    /// The other end died (its process no longer exists) while this end waited.
    #[error(
        "the ring's {role} (pid {pid}) has died: its process no longer exists{detail}; \
         start a new {role}, which takes over the role"
    )]
    PeerGone {
        /// The dead role.
        role: Role,
        /// Its process id.
        pid: u32,
        /// What was left behind (empty or full ring).
        detail: &'static str,
    },

    /// A blocking call waited its whole timeout.
    #[error("waited {waited_millis} ms for {what}; retry or wait longer")]
    Timeout {
        /// What the call waited for.
        what: &'static str,
        /// How long it waited.
        waited_millis: u128,
    },

    /// The operating system refused a file or mapping operation.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt(detail.into())
}
