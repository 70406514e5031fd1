//! The index core's one error type. Each message says what to do about it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid index options: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(
        "user {user} already has document {doc} (live or deleted); document ids are \
         never reused: give the new mail a new id"
    )]
    DuplicateDoc { user: u32, doc: u64 },
    #[error("query syntax error at byte {position}: {message}")]
    QuerySyntax { position: usize, message: String },
    #[error("query too broad: {0}; use a longer prefix or more specific terms")]
    QueryTooBroad(String),
    #[error(
        "{path}: {message}; the index is damaged: restore it or rebuild it from the mail store"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "the index refuses writes since a log write failed ({reason}); fix the cause \
         (disk full, failing disk), then reopen the index"
    )]
    Poisoned { reason: String },
    #[error("{path}: {source}; check the path, its permissions and free space")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &Path, message: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
