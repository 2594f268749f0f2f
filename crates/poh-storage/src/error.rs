//! Errors of the storage library: one enum, each variant naming the tx or path concerned.

use std::io;
use std::path::PathBuf;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The transaction breaks an input rule; nothing was written.
    #[error(transparent)]
    Invalid(#[from] poh_types::TxError),

    /// A stored payload does not match the SHA-256 recorded for it, or is not a regular file.
    /// Run `recover` to quarantine it.
    #[error("integrity error on tx {tx_id}: {detail} (run `poh-storage recover` to quarantine it)")]
    Integrity {
        /// The transaction concerned.
        tx_id: String,
        /// What was found.
        detail: String,
    },

    /// A row exists but its payload file is missing.
    #[error(
        "tx {tx_id}: payload file {} is missing (run `poh-storage recover` to drop the row)",
        path.display()
    )]
    PayloadMissing {
        /// The transaction concerned.
        tx_id: String,
        /// Where the payload should be.
        path: PathBuf,
    },

    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write temp file", "fsync", ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// The metadata database failed.
    #[error("metadata database {}: {what}: {source}", path.display())]
    Meta {
        /// What was being done.
        what: String,
        /// The database file.
        path: PathBuf,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The metadata database was written by a newer, incompatible version.
    #[error(
        "metadata database {} has schema version {found}; this build understands up to {supported}. Upgrade poh-store.",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },

    /// No store exists at the given location and creation was not requested.
    #[error("no store at {}: {why} (create one with `poh-storage init`)", path.display())]
    NotFound {
        /// The missing base directory or database.
        path: PathBuf,
        /// What is missing.
        why: String,
    },

    /// A path given for the store names one of the files the store manages itself (for
    /// example a database inside `<base>/.tmp/`, or an output file onto the database), so
    /// using it would destroy the store or the file; nothing was touched. See
    /// [`crate::check_db_path`].
    #[error("refusing {}: {why}", path.display())]
    BadPath {
        /// The path as given.
        path: PathBuf,
        /// Why it is refused: what it is to the store.
        why: String,
    },

    /// An earlier fsync or finalising step failed, so what the disk holds is uncertain.
    /// The store refuses writes until it is closed and reopened (reopening runs repair).
    #[error(
        "store is read-only after an earlier durability failure ({0}); close and reopen it to repair"
    )]
    Poisoned(String),

    /// The store has been closed.
    #[error("store is closed")]
    Closed,

    /// The handle was opened read-only ([`crate::OpenOptions::read_only`]).
    #[error("the store was opened read-only; {0} needs a writable handle")]
    ReadOnly(&'static str),

    /// Another process holds the store lock and did not release it in time.
    #[error(
        "store lock {} is held by {} and was not released within {waited:?}: is a poh-storage or poh-ttl process stopped or hung? (the wait is set by --lock-timeout / POH_LOCK_TIMEOUT)",
        path.display(),
        holder.map_or_else(|| "another process".to_owned(), |p| format!("process {p}"))
    )]
    LockTimeout {
        /// The lock file.
        path: std::path::PathBuf,
        /// How long was waited.
        waited: std::time::Duration,
        /// The holder's pid, when the kernel tells it.
        holder: Option<u32>,
    },

    /// A name the store manages (`.tmp`, `.quarantine`, `.poh.lock`) is something the
    /// store refuses to use: a symbolic link, or a file where a directory belongs.
    #[error("{}: {why}; move it out of the store and retry", path.display())]
    BadStoreEntry {
        /// The offending path.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// What was found at the given place is not a store, and treating it as a new one
    /// could destroy data (a database that lost its schema beside payload files, a
    /// non-empty directory that is not a store).
    #[error("{} is not a poh store: {why}", path.display())]
    NotAStore {
        /// The base directory or database concerned.
        path: std::path::PathBuf,
        /// What was found and what to do.
        why: String,
    },

    /// A directory of the store (its base, `.tmp/` or `.quarantine/`) can be written by
    /// users other than its owner: a group or world write bit without the sticky bit.
    /// Anyone who can write there can plant files and symbolic links where the store
    /// renames and deletes files, so a writable handle refuses to open; read-only handles
    /// only warn.
    #[error(
        "{} is writable by other users (mode {mode:04o}): anyone who can write there can plant files and links in a store that deletes files, so the store refuses to write to it; make it private with `chmod {expected:o} {}`",
        path.display(),
        path.display()
    )]
    WritableByOthers {
        /// The directory concerned.
        path: PathBuf,
        /// Its permission bits (with setuid, setgid and sticky).
        mode: u32,
        /// The mode the store gives the directories it creates (0700, or 0750 for a
        /// group-readable store): what to `chmod` it to.
        expected: u32,
    },

    /// The layout (or segment window) asked for differs from the one the store was
    /// created with; nothing was changed. An existing store always opens with its own.
    #[error(
        "{} is a {found} store, but {asked} was asked for; leave the option out to open it as it is (`poh-storage migrate --to <layout>` converts a store)",
        path.display()
    )]
    LayoutMismatch {
        /// The base directory.
        path: PathBuf,
        /// What the store is.
        found: String,
        /// What was asked for.
        asked: String,
    },

    /// A database URL that cannot be used (`--db postgres://...`); shown without its
    /// password.
    #[error("bad database URL {url}: {why}")]
    BadUrl {
        /// The URL, password removed.
        url: String,
        /// What is wrong with it.
        why: String,
    },

    /// The save passed its commit point (the rows are durable and each payload is
    /// durable in `.tmp/`) but moving the payloads into place failed. The txs are saved:
    /// loads return them, and the next open or `recover` finishes the move.
    #[error(
        "tx(s) {} committed, but the payload could not be moved into place ({cause}); the payload is durable in .tmp/ and is moved into place at the next open or by `poh-storage recover`",
        tx_ids.join(", ")
    )]
    Unfinished {
        /// The committed txs (as many as fit in a message are listed by the caller).
        tx_ids: Vec<String>,
        /// What failed.
        cause: Box<StorageError>,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for errors that may go away on retry (permissions, descriptors, I/O errors,
    /// a busy database), as opposed to bad input or detected corruption.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::Meta { .. } | Self::Poisoned(_) | Self::LockTimeout { .. }
        )
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// `err` and its sources joined with `": "` on one line (like `{:#}`), leaving out a
/// source whose text the message so far already contains (several errors quote their
/// cause). The one rule both binaries and the TTL daemon's log use.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
