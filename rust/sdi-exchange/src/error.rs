//! The exchange core's one error type. Business outcomes (a rejected order)
//! are events, never errors; these are for calls that cannot be carried out.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid exchange configuration: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("journal {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "journal {path} is held by another process (a running primary); \
         stop it, or follow the journal as a standby"
    )]
    Locked { path: PathBuf },
    #[error(
        "journal {path} refuses writes since an append failed and could not be undone \
         ({reason}); fix the cause (disk full, failing disk), then reopen the exchange"
    )]
    Poisoned { path: PathBuf, reason: String },
    #[error("internal error: {0}; this is a bug, please report it")]
    Internal(String),
    #[error("ring: {0}")]
    Ring(#[from] sdi_ring::Error),
    #[error("journal {path}: {source}; check the path, its permissions and free space")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
