//! poh-storage: a durable, verified store for Proof-of-History transactions.
//!
//! Each payload is a file `<base>/<tx_id>.bin`; its metadata (SHA-256, timestamp, holder,
//! size) is a row of the SQLite table `txs`. A save is acknowledged only once both are
//! durable; a load re-hashes the payload and refuses one that differs; `recover` repairs
//! whatever a crash or corruption left. The on-disk format is the prototype's, extended
//! compatibly (see `docs/design.md`).
//!
//! # Layout
//! - [`manager`]: [`StorageManager`], the async API (open, save, load, delete, list,
//!   recover, stats, close).
//! - [`writer`]: the writer thread and its group-commit save protocol.
//! - [`payload`]: payload file names, temp and quarantine folders, hashing.
//! - [`names`]: the names the store manages, and refusing a database or output path
//!   that would land on them.
//! - [`meta`]: the [`MetaStore`] interface and its SQLite implementation, with migration.
//! - [`recover`]: recovery and verification reports.
//! - [`fs`]: the narrow [`FileSystem`] trait and the real implementation.
//! - [`lock`]: the cross-process store lock.
//! - [`error`]: [`StorageError`], the one error type.
//!
//! # What it is not
//! Not a database: no queries beyond by-id, by-id-order paging and by-age expiry. Not safe
//! to share with the prototype's own writers at the same moment (they ignore the store
//! lock); the prototype may read a store of ours, and its stores open with ours.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod error;
pub mod fs;
pub mod lock;
pub mod manager;
pub mod meta;
pub mod names;
mod par;
pub mod payload;
pub mod recover;
pub mod writer;

pub use error::{Result, StorageError, error_chain};
pub use fs::{DirEntry, EntryKind, FileSystem, Modes, RealFs, is_not_regular, not_regular};
pub use manager::{OpenOptions, Page, StorageManager};
pub use meta::{MetaBackend, MetaRow, MetaStore, SqliteBackend, Stats};
pub use payload::sha256_hex;
pub use poh_types::{Limits, Tx, TxId};
pub use recover::{Finding, ProblemKind, RecoverReport};
