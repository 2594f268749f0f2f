//! The engine seam: what a storage engine implements under [`crate::StorageManager`].
//!
//! The layer above an engine — written once for all of them — owns the async API, input
//! validation, read-only handles, the reader pool, group commit (one writer thread that
//! batches concurrent saves, [`crate::group`]) and poisoning after a durability failure.
//! An engine owns where and how txs are kept and its crash protocol:
//! - [`Engine`]: one opened store; hands out its writing half once (to the writer thread)
//!   and reading halves on demand (pooled above), and runs recovery/verification.
//! - [`EngineWriter`]: durable changes, called from one thread at a time: a group of
//!   saves (all-or-nothing per request), a delete, one bounded expiry batch.
//! - [`EngineReader`]: lookups that never write: a tx verified against its SHA-256, rows
//!   by id, pages in id order, expired rows in `(timestamp, tx_id)` order, stats.
//!
//! The lock and concurrency model is the engine's: the flat-file engine ([`crate::files`])
//! orders writers across processes with a file lock; a database engine would use its
//! transactions. What crosses the seam is engine-neutral: [`Tx`], [`MetaRow`], [`Stats`],
//! [`RecoverReport`] and [`StorageError`](crate::StorageError).

use std::path::Path;

use poh_types::{Tx, TxId};

use crate::error::Result;
use crate::poison::Poison;
use crate::report::RecoverReport;

/// One metadata row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRow {
    /// Transaction id (as stored; rows written by other tools may hold ids we reject).
    pub tx_id: String,
    /// Holder id; empty for legacy rows.
    pub holder_id: String,
    /// UNIX seconds.
    pub timestamp: f64,
    /// Lowercase hex SHA-256 of the payload. Empty only on a segments store whose record
    /// (the hash's only copy there) cannot be read or fails its header check: a damaged
    /// record, which `verify` reports and a load refuses.
    pub storage_hash: String,
    /// Payload size in bytes; `None` for legacy rows.
    pub size: Option<u64>,
}

/// Aggregate figures of a store.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Number of transactions.
    pub count: u64,
    /// Sum of the known payload sizes.
    pub bytes: u64,
    /// Rows without a recorded size (written by the prototype).
    pub rows_without_size: u64,
    /// Smallest timestamp.
    pub oldest: Option<f64>,
    /// Largest timestamp.
    pub newest: Option<f64>,
}

/// One opened store of some engine.
pub(crate) trait Engine: Send + Sync + 'static {
    /// The directory the store lives in (for messages and [`crate::StorageManager::base`]).
    fn base(&self) -> &Path;
    /// Where the metadata is, for messages.
    fn location(&self) -> String;
    /// Which engine this is.
    fn layout(&self) -> crate::layout::Layout;
    /// The writing half, for the writer thread; called once per handle, never for a
    /// read-only one. `poison` is set by the engine when what the disk holds is uncertain
    /// (a failed fsync); `repair` asks it to finish what crashed writers left, as soon as
    /// that does not mean waiting for another live writer.
    fn writer(&self, poison: Poison, repair: bool) -> Result<Box<dyn EngineWriter>>;
    /// A reading half; it never writes anything.
    fn reader(&self) -> Result<Box<dyn EngineReader>>;
    /// Checks every tx and repairs what a crash or corruption left, or with `dry_run`
    /// only reports it. Never deletes the last copy of a committed payload.
    fn recover(&self, dry_run: bool) -> Result<RecoverReport>;
}

/// Durable changes. Every method returns Ok only once its change survives power loss.
pub(crate) trait EngineWriter: Send {
    /// Saves a group of requests: one result per request, in order; each request is
    /// saved whole or not at all. Valid input is guaranteed by the caller.
    fn save_group(&mut self, group: &[&[Tx]]) -> Vec<Result<()>>;
    /// Deletes `id`; true if it existed.
    fn delete(&mut self, id: &TxId) -> Result<bool>;
    /// Deletes up to `limit` txs with `now - timestamp > ttl`, oldest first, as one
    /// atomic step that re-checks the condition, and returns their ids. An engine that
    /// expires whole time windows at once (segments, PostgreSQL partitions) may take its
    /// first wholly expired window whatever its size, and so return more.
    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>>;
    /// True while saves it acknowledged wait for work it deferred (the segments engine's
    /// index commit of small groups, docs/design.md §7.3c): the writer thread then calls
    /// [`settle`](Self::settle) once no save has come for a moment. Their durability
    /// never waits for it; only other processes' view of them does.
    fn unsettled(&self) -> bool {
        false
    }
    /// Finishes what [`unsettled`](Self::unsettled) reports, and releases what it held
    /// for it. Every other method finishes it first by itself.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Lookups; never write.
pub(crate) trait EngineReader: Send {
    /// The tx, its payload verified against the recorded SHA-256; `Ok(None)` if unknown.
    fn load(&mut self, id: &TxId) -> Result<Option<Tx>>;
    /// [`load`](Self::load) of each of `ids`, in order (an engine may fetch them in one
    /// round trip).
    fn load_many(&mut self, ids: &[TxId]) -> Vec<Result<Option<Tx>>> {
        ids.iter().map(|id| self.load(id)).collect()
    }
    /// [`load`](Self::load) for a caller that must not wait: the tx (or `None` if
    /// unknown) when its row records a payload of at most `max_bytes` and that payload
    /// verifies at the first read; `None` for anything else (a larger or unsized payload,
    /// an error, a payload that does not verify), which the caller then loads with
    /// [`load`](Self::load), whose errors are precise and which may wait out a writer
    /// mid-protocol. Never waits for a lock. The default looks the row up, then loads.
    fn load_small(&mut self, id: &TxId, max_bytes: u64) -> Option<Option<Tx>> {
        match self.row(id.as_str()).ok()? {
            None => Some(None),
            Some(row) if row.size.is_some_and(|n| n <= max_bytes) => self.load(id).ok(),
            Some(_) => None,
        }
    }
    /// The row of `tx_id`, without reading the payload.
    fn row(&mut self, tx_id: &str) -> Result<Option<MetaRow>>;
    /// True if `tx_id` has a row. The default looks the row up; an engine whose rows need
    /// more than a lookup (the segments engine reads the hash from the record's header)
    /// answers from the lookup alone.
    fn contains(&mut self, tx_id: &str) -> Result<bool> {
        Ok(self.row(tx_id)?.is_some())
    }
    /// Up to `limit` rows with `tx_id > after`, in id order.
    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>>;
    /// The ids of [`page`](Self::page), without the rest of each row. The default takes
    /// them from `page`.
    fn page_ids(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .page(after, limit)?
            .into_iter()
            .map(|r| r.tx_id)
            .collect())
    }
    /// Up to `limit` rows with `now - timestamp > ttl` in `(timestamp, tx_id)` order,
    /// strictly after `after`.
    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>>;
    /// Count, bytes and time range.
    fn stats(&mut self) -> Result<Stats>;
}
