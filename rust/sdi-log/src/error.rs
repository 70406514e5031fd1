//! The log core's one error type. Each message says what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid partition configuration: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(
        "the batch would be {batch_bytes} bytes, over the limit of {limit_bytes}; \
         split it into smaller batches"
    )]
    BatchTooLarge {
        batch_bytes: usize,
        limit_bytes: usize,
    },
    #[error(
        "offset {offset} is outside the log, which holds offsets \
         {log_start_offset}..{next_offset}; fetch from within that range"
    )]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        next_offset: u64,
    },
    #[error(
        "partition {path}: {message}; nothing was cut off; restore the partition from a replica"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("partition {path} is held by another process or handle; close it there first")]
    Locked { path: PathBuf },
    #[error(
        "partition {path} refuses writes since a write failed and could not be undone \
         ({reason}); fix the cause (disk full, failing disk), then reopen the partition"
    )]
    Poisoned { path: PathBuf, reason: String },
    #[error("{path}: {source}; check the path, its permissions and free space")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &std::path::Path, message: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}
