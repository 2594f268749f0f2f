//! Shared support for the poh-ttl integration tests: temporary stores, txs, and expiry
//! targets that count calls, fail on demand, wait at a gate or re-save between batches.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use poh_storage::{MetaRow, StorageError, StorageManager, Tx};
pub use poh_testkit::stores::*;
use poh_ttl::ExpiryTarget;
use tokio::sync::Semaphore;

/// The error injected by [`Flaky`].
pub fn injected_error() -> StorageError {
    StorageError::Meta {
        what: "injected failure".into(),
        path: PathBuf::from("poh.db"),
        source: "database is locked".into(),
    }
}

/// One call seen by [`Counting`].
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Tokio time of the call.
    pub at: tokio::time::Instant,
    /// The pass's "now".
    pub now: f64,
    /// The batch limit asked for.
    pub limit: usize,
    /// Ids returned (empty on error).
    pub ids: Vec<String>,
    /// Whether the call failed.
    pub failed: bool,
}

/// Records every call to the wrapped target.
#[derive(Debug, Default)]
pub struct Counting<T> {
    pub inner: T,
    pub calls: Mutex<Vec<Call>>,
}

impl<T> Counting<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn record(
        &self,
        at: tokio::time::Instant,
        now: f64,
        limit: usize,
        r: &Result<Vec<String>, StorageError>,
    ) {
        self.calls.lock().expect("calls lock").push(Call {
            at,
            now,
            limit,
            ids: r.as_ref().cloned().unwrap_or_default(),
            failed: r.is_err(),
        });
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Counting<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let at = tokio::time::Instant::now();
        let r = self.inner.delete_expired(now, ttl, limit).await;
        self.record(at, now, limit, &r);
        r
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        let at = tokio::time::Instant::now();
        let r = self.inner.find_expired(now, ttl, after, limit).await;
        let ids = r
            .as_ref()
            .map(|rows| rows.iter().map(|x| x.tx_id.clone()).collect())
            .map_err(|_| injected_error());
        self.record(at, now, limit, &ids);
        r
    }
}

/// A target with nothing to expire that answers at once (no I/O), for exact timing
/// under paused tokio time.
#[derive(Debug, Default)]
pub struct Empty;

impl ExpiryTarget for Empty {
    async fn delete_expired(&self, _: f64, _: f64, _: usize) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    async fn find_expired(
        &self,
        _: f64,
        _: f64,
        _: Option<(f64, String)>,
        _: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        Ok(Vec::new())
    }
}

/// Fails the calls whose (0-based) numbers are in `failing`, with [`injected_error`],
/// and forwards the others.
#[derive(Debug)]
pub struct Flaky<T> {
    pub inner: T,
    failing: BTreeSet<usize>,
    n: AtomicUsize,
}

impl<T> Flaky<T> {
    pub fn new(inner: T, failing: impl IntoIterator<Item = usize>) -> Self {
        Self {
            inner,
            failing: failing.into_iter().collect(),
            n: AtomicUsize::new(0),
        }
    }

    fn fails(&self) -> bool {
        self.failing
            .contains(&self.n.fetch_add(1, Ordering::SeqCst))
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Flaky<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        if self.fails() {
            return Err(injected_error());
        }
        self.inner.delete_expired(now, ttl, limit).await
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        if self.fails() {
            return Err(injected_error());
        }
        self.inner.find_expired(now, ttl, after, limit).await
    }
}

/// Each delete call waits for a permit; `entered` counts calls that reached the gate.
#[derive(Debug)]
pub struct Gated<T> {
    pub inner: T,
    pub gate: Semaphore,
    pub entered: tokio::sync::watch::Sender<usize>,
}

impl<T> Gated<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            gate: Semaphore::new(0),
            entered: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Gated<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.entered.send_modify(|n| *n += 1);
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.delete_expired(now, ttl, limit).await
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        self.inner.find_expired(now, ttl, after, limit).await
    }
}

/// Re-saves `txs` (through the same store) right after delete batch number `after_batch`
/// (1-based) returns, i.e. between two batches of one pass.
#[derive(Debug)]
pub struct ResaveBetweenBatches {
    pub store: StorageManager,
    pub after_batch: usize,
    pub txs: Mutex<Option<Vec<Tx>>>,
    n: AtomicUsize,
}

impl ResaveBetweenBatches {
    pub fn new(store: StorageManager, after_batch: usize, txs: Vec<Tx>) -> Self {
        Self {
            store,
            after_batch,
            txs: Mutex::new(Some(txs)),
            n: AtomicUsize::new(0),
        }
    }
}

impl ExpiryTarget for ResaveBetweenBatches {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let ids = self.store.delete_expired(now, ttl, limit).await?;
        if self.n.fetch_add(1, Ordering::SeqCst) + 1 == self.after_batch {
            let txs = self.txs.lock().expect("txs lock").take();
            if let Some(txs) = txs {
                self.store.save_batch(txs).await?;
            }
        }
        Ok(ids)
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        self.store.find_expired(now, ttl, after, limit).await
    }
}
