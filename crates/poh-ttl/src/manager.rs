//! [`TtlManager`]: one TTL pass over a store, deleting (or, in a dry run, listing) every
//! expired tx in bounded batches, oldest first.
//!
//! A pass reads "now" once, then asks the store for batches until one comes back short.
//! Each delete batch is one atomic step of the store that re-checks the condition, so a
//! tx re-saved with a fresh timestamp during the pass is kept, and two passes running at
//! once (in one process or two) each delete a given tx at most once between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poh_storage::StorageManager;
use tokio::sync::watch;
use tracing::debug;

use crate::clock::{Clock, SystemClock};
use crate::error::{Result, TtlError};
use crate::target::ExpiryTarget;

/// Txs per store call unless [`TtlManager::with_batch_size`] says otherwise: large enough
/// that a pass over millions of expired txs is a few thousand commits, small enough that
/// a concurrent writer waits for at most one short transaction.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// What a pass does with the expired txs it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Delete them (row, then payload file).
    Delete,
    /// Only report them; the store is not changed.
    DryRun,
}

/// Counts of a pass, without the ids (memory stays flat however many expire).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSummary {
    /// Txs deleted (or found, in a dry run).
    pub count: u64,
    /// Store calls made.
    pub batches: u64,
    /// The "now" of the pass, UNIX seconds.
    pub now: f64,
    /// Wall time the pass took.
    pub elapsed: Duration,
    /// True for a dry run.
    pub dry_run: bool,
    /// True if a shutdown request ended the pass between two batches; the rest is left
    /// for the next pass.
    pub stopped_early: bool,
}

/// A pass with the ids it expired.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanReport {
    /// Ids deleted (or found, in a dry run), batch by batch: each batch holds the oldest
    /// txs left, but a delete batch lists its ids in no particular order.
    pub expired: Vec<String>,
    /// `expired.len()`.
    pub count: u64,
    /// Store calls made.
    pub batches: u64,
    /// The "now" of the pass, UNIX seconds.
    pub now: f64,
    /// Wall time the pass took.
    pub elapsed: Duration,
    /// True for a dry run.
    pub dry_run: bool,
}

impl ScanReport {
    fn new(expired: Vec<String>, s: ScanSummary) -> Self {
        Self {
            expired,
            count: s.count,
            batches: s.batches,
            now: s.now,
            elapsed: s.elapsed,
            dry_run: s.dry_run,
        }
    }
}

/// Expires txs older than a TTL from a store.
///
/// Generic over the [`ExpiryTarget`] (the real [`StorageManager`] by default), with an
/// injectable [`Clock`].
pub struct TtlManager<T = StorageManager> {
    target: T,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    batch: usize,
}

impl<T> std::fmt::Debug for TtlManager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlManager")
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<T: ExpiryTarget> TtlManager<T> {
    /// A manager expiring txs older than `ttl` from `target`, on the system clock, in
    /// batches of [`DEFAULT_BATCH_SIZE`]. A zero TTL is refused.
    pub fn new(target: T, ttl: Duration) -> Result<Self> {
        if ttl.is_zero() {
            return Err(TtlError::InvalidTtl { secs: 0.0 });
        }
        Ok(Self {
            target,
            ttl,
            clock: Arc::new(SystemClock),
            batch: DEFAULT_BATCH_SIZE,
        })
    }

    /// [`new`](Self::new) with the TTL in (fractional) seconds; zero, negative and
    /// non-finite values are refused.
    pub fn from_secs_f64(target: T, ttl_secs: f64) -> Result<Self> {
        match Duration::try_from_secs_f64(ttl_secs) {
            Ok(d) if !d.is_zero() => Self::new(target, d),
            _ => Err(TtlError::InvalidTtl { secs: ttl_secs }),
        }
    }

    /// Reads "now" from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Deletes at most `n` txs per store call (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Txs per store call.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The store this manager expires from.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The clock passes read "now" from.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Deletes every tx with `now - timestamp > ttl` and returns their ids.
    ///
    /// The ids are kept in memory; for a store where millions may expire at once use
    /// [`scan_with`](Self::scan_with) or [`scan_summary`](Self::scan_summary).
    pub async fn scan_once(&self) -> Result<ScanReport> {
        self.collect(ScanMode::Delete).await
    }

    /// Lists what [`scan_once`](Self::scan_once) would delete, changing nothing.
    pub async fn scan_dry_run(&self) -> Result<ScanReport> {
        self.collect(ScanMode::DryRun).await
    }

    /// One pass that calls `on_batch` with the ids of each batch as it is deleted (or
    /// found), so the caller can stream them; memory stays flat.
    ///
    /// On error the ids already handed to `on_batch` stay deleted, and
    /// [`TtlError::Scan`] says how many there were.
    pub async fn scan_with<F>(&self, mode: ScanMode, on_batch: F) -> Result<ScanSummary>
    where
        F: FnMut(&[String]) + Send,
    {
        self.pass(mode, on_batch, None).await
    }

    /// One pass reporting only counts.
    pub async fn scan_summary(&self, mode: ScanMode) -> Result<ScanSummary> {
        self.pass(mode, |_| {}, None).await
    }

    async fn collect(&self, mode: ScanMode) -> Result<ScanReport> {
        let mut ids = Vec::new();
        let summary = self
            .pass(mode, |batch| ids.extend_from_slice(batch), None)
            .await?;
        Ok(ScanReport::new(ids, summary))
    }

    /// The pass itself. `stop`, when given, is checked between batches: once it reads
    /// true (or its sender is gone) the pass ends after the batch in flight.
    pub(crate) async fn pass<F>(
        &self,
        mode: ScanMode,
        mut on_batch: F,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<ScanSummary>
    where
        F: FnMut(&[String]) + Send,
    {
        let started = Instant::now();
        let now = self.clock.now();
        let ttl = self.ttl.as_secs_f64();
        let dry_run = mode == ScanMode::DryRun;
        let mut count = 0u64;
        let mut batches = 0u64;
        let mut after: Option<(f64, String)> = None;
        let mut stopped_early = false;
        let fail = |count, source| TtlError::Scan {
            expired: count,
            dry_run,
            source,
        };
        loop {
            let ids = match mode {
                ScanMode::Delete => self
                    .target
                    .delete_expired(now, ttl, self.batch)
                    .await
                    .map_err(|e| fail(count, e))?,
                ScanMode::DryRun => {
                    let rows = self
                        .target
                        .find_expired(now, ttl, after.take(), self.batch)
                        .await
                        .map_err(|e| fail(count, e))?;
                    after = rows.last().map(|r| (r.timestamp, r.tx_id.clone()));
                    rows.into_iter().map(|r| r.tx_id).collect()
                }
            };
            batches += 1;
            count += ids.len() as u64;
            if !ids.is_empty() {
                debug!(dry_run, ids = ?ids, "TTL batch");
                on_batch(&ids);
            }
            if ids.len() < self.batch {
                break;
            }
            if stop.is_some_and(stop_requested) {
                stopped_early = true;
                break;
            }
        }
        Ok(ScanSummary {
            count,
            batches,
            now,
            elapsed: started.elapsed(),
            dry_run,
            stopped_early,
        })
    }
}

/// True once a stop was sent or the sender is gone.
pub(crate) fn stop_requested(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}
