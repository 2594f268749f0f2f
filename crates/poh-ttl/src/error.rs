//! Errors of the TTL library: [`TtlError`], and [`display_chain`] to print an error with
//! its causes on one line.

use poh_storage::StorageError;

/// Everything the TTL library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// The TTL is zero, negative or not finite; zero would expire everything up to "now".
    #[error("the TTL must be a positive number of seconds, got {secs}")]
    InvalidTtl {
        /// The TTL given, in seconds.
        secs: f64,
    },

    /// The daemon interval is shorter than [`MIN_INTERVAL`](crate::daemon::MIN_INTERVAL).
    #[error(
        "the daemon interval must be at least {}",
        humantime::format_duration(crate::daemon::MIN_INTERVAL)
    )]
    InvalidInterval,

    /// A pass failed part-way. Batches committed before the failure stay deleted (each
    /// batch is atomic); the next pass picks up the rest.
    #[error("TTL pass failed after {expired} txs were {}", if *dry_run { "found" } else { "expired" })]
    Scan {
        /// Txs deleted (or, in a dry run, found) before the failure.
        expired: u64,
        /// Whether this was a dry run.
        dry_run: bool,
        /// The store's error.
        #[source]
        source: StorageError,
    },

    /// The daemon stopped after too many failed passes in a row.
    #[error("giving up after {failures} failed TTL passes in a row; last error: {last_error}")]
    GaveUp {
        /// Consecutive failed passes.
        failures: u64,
        /// The last failure, with its causes.
        last_error: String,
    },

    /// The daemon task panicked (a bug); its last statistics are in the log.
    #[error("the TTL daemon task panicked: {0}")]
    DaemonPanicked(String),
}

impl TtlError {
    /// The storage error underneath, if any.
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            Self::Scan { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TtlError> = std::result::Result<T, E>;

/// `err` and its sources on one line: one home for the rule, in the storage crate.
pub use poh_storage::error_chain as display_chain;
