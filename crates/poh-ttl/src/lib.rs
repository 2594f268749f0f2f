//! poh-ttl: TTL garbage collection for a poh-storage store.
//!
//! A transaction expires when `now - timestamp > ttl` (strictly; `timestamp` is the tx's
//! own). [`TtlManager::scan_once`] deletes every expired tx in bounded batches through the
//! store's timestamp index, so a pass costs O(expired), not O(store size), and writers are
//! never blocked for longer than one batch. [`TtlManager::spawn`] runs passes on a tokio
//! task at a fixed interval; a failed pass is logged and retried at the next tick, and the
//! [`DaemonHandle`] counts failures so the task never dies silently.
//!
//! # Layout
//! - [`manager`]: [`TtlManager`], one pass (delete or dry run), reports and summaries.
//! - [`daemon`]: the background task, its [`DaemonHandle`] and [`DaemonStats`].
//! - [`target`]: [`ExpiryTarget`], the two store operations a pass needs (implemented for
//!   [`StorageManager`]; tests substitute failing or instrumented targets).
//! - [`clock`]: [`Clock`] and its implementations: system, manual, and tokio-time.
//! - [`duration`]: parsing `3600`, `0.5`, `1h`, `7d` into a positive [`std::time::Duration`]
//!   (and daemon intervals, at least [`MIN_INTERVAL`]).
//! - [`error`]: [`TtlError`], and [`display_chain`] for one-line messages.
//!
//! # What it is not
//! Not a scheduler: it deletes by the tx's own timestamp and nothing else (no per-tx
//! TTLs, no access-time tracking). It does not repair stores: files left behind by a
//! failed payload removal are orphans for `poh-storage recover`. The atomicity of each
//! batch (a tx re-saved with a fresh timestamp meanwhile is kept) comes from the storage
//! crate's `delete_expired`, which checks the condition inside its commit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use poh_storage::StorageManager;
//! use poh_ttl::TtlManager;
//!
//! let store = StorageManager::open("./data", "./data/poh.db").await?;
//! let ttl = TtlManager::new(store.clone(), Duration::from_secs(7 * 86400))?;
//! let report = ttl.scan_once().await?;
//! println!("expired {} txs", report.count);
//! let daemon = ttl.spawn(Duration::from_secs(3600))?;
//! // ... later
//! let stats = daemon.shutdown().await?;
//! println!("{} passes", stats.passes);
//! store.close().await?;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod clock;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod manager;
pub mod target;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use daemon::{DaemonHandle, DaemonStats, MIN_INTERVAL};
pub use duration::{DurationError, parse_duration, parse_interval};
pub use error::{Result, TtlError, display_chain};
pub use manager::{DEFAULT_BATCH_SIZE, ScanMode, ScanReport, ScanSummary, TtlManager};
pub use poh_storage::StorageManager;
pub use target::ExpiryTarget;
