//! poh-storage: a durable, verified store for Proof-of-History transactions — the engine
//! library under the `poh-storage` and `poh-ttl` command lines and the Python package.
//!
//! A save is acknowledged only once it is durable; a load re-hashes the payload and
//! refuses one that differs; `recover` repairs whatever a crash or corruption left, and
//! never deletes the last copy of anything. Today's engine keeps each payload as a file
//! `<base>/<tx_id>.bin` and its metadata (SHA-256, timestamp, holder, size) as a row of
//! the SQLite table `txs`: the prototype's format, extended compatibly (see
//! `docs/design.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use poh_storage::{StorageManager, Tx, TxId};
//!
//! let store = StorageManager::open("./data", "./data/poh.db").await?;
//! store.save(Tx::new("t1", "alice", 1_700_000_000.0, b"hello".to_vec())?).await?;
//! let tx = store.load(&TxId::new("t1")?).await?;                 // verified against SHA-256
//! assert_eq!(tx.map(|t| t.payload), Some(b"hello".to_vec()));
//! let report = store.recover(false).await?;                      // repair after a crash
//! assert!(report.is_clean());
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! The layers, top down (docs/design.md draws them):
//! - `manager`: [`StorageManager`], the async API for every engine: validation,
//!   read-only handles, the reader pool; `options`: [`OpenOptions`].
//! - `group`: group commit — one writer thread batching concurrent saves for the engine;
//!   `poison`: the "refuse writes until reopened" state after a durability failure.
//! - `engine`: the seam an engine implements (`Engine`, `EngineWriter`, `EngineReader`)
//!   and the engine-neutral data that crosses it ([`MetaRow`], [`Stats`]).
//! - `files`: the flat-file engine (payload files + SQLite metadata + a store lock).
//! - `segments`: the segments engine (time-windowed append-only segment files of
//!   checksummed records + an SQLite index); `layout`: [`Layout`], chosen at creation and
//!   recorded; `migrate`: [`migrate`], converting a store from one layout to the other.
//! - `report`: [`RecoverReport`], [`Finding`], [`ProblemKind`].
//! - `fs`: the narrow [`FileSystem`] trait the file engine is written against (tests
//!   substitute poh-testkit's simulated one) and [`RealFs`].
//! - `error`: [`StorageError`], the one error type, and [`error_chain`].
//!
//! # What it is not
//! Not a database: no queries beyond by-id, by-id-order paging and by-age expiry. Not safe
//! to share with the prototype's own writers at the same moment (they ignore the store
//! lock); the prototype may read a store of ours, and its stores open with ours. Not a
//! command line: that is the `poh-cli` crate.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod dburl;
mod engine;
mod error;
mod files;
mod fs;
mod group;
mod layout;
mod manager;
mod migrate;
mod options;
mod par;
mod poison;
#[cfg(feature = "postgres")]
mod postgres;
mod report;
mod segments;

pub use dburl::{is_database_url, redact_url, store_location};
pub use engine::{MetaRow, Stats};
pub use error::{Result, StorageError, error_chain};
pub use files::names::{check_db_path, check_output_path, is_store_path};
pub use files::{LOCK_FILE, sha256_hex};
pub use fs::{
    DirEntry, EntryKind, FileHandle, FileSystem, Modes, RealFs, is_not_regular, not_regular,
    read_exact_at, writable_by_others,
};
pub use group::{MAX_GROUP_BYTES, MAX_GROUP_TXS};
pub use layout::{DEFAULT_SEGMENT_WINDOW, LAYOUT_FILE, Layout};
pub use manager::{IdPage, Page, StorageManager};
pub use migrate::{MIGRATED_MARKER, MigrateReport, migrate};
pub use options::{DEFAULT_LOCK_TIMEOUT, OpenOptions};
pub use par::cores;
pub use poh_types::{Limits, Tx, TxId};
pub use report::{Finding, ProblemKind, RecoverReport};
/// Most index rows of dropped segments one TTL pass of a segments store sweeps
/// (docs/design.md §7.5); save groups sweep too.
pub use segments::writer::SWEEP_STEP as SEGMENTS_SWEEP_ROWS;

/// The README's Rust examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
