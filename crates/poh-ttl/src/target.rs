//! [`ExpiryTarget`]: the two store operations a TTL pass needs. The real store implements
//! it; tests wrap it to inject failures, count calls or change the store between batches.

use std::future::Future;

use poh_storage::{MetaRow, StorageError, StorageManager};

/// What a TTL pass runs against.
///
/// Both methods take the pass's `now` and `ttl` (seconds) and select rows with
/// `now - timestamp > ttl`, oldest first in `(timestamp, tx_id)` order.
pub trait ExpiryTarget: Send + Sync + 'static {
    /// Deletes up to `limit` expired txs (rows and payloads) in one atomic step and
    /// returns their ids. The condition must be checked inside that step, so a tx
    /// re-saved with a fresh timestamp meanwhile is kept; fewer than `limit` ids means
    /// nothing expired is left.
    fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// Up to `limit` expired rows strictly after `after` (a `(timestamp, tx_id)` key),
    /// changing nothing.
    fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<MetaRow>, StorageError>> + Send;

    /// Where the store is, for log lines (`store=...`); `None` if it has no name.
    fn location(&self) -> Option<String> {
        None
    }
}

impl ExpiryTarget for StorageManager {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        StorageManager::delete_expired(self, now, ttl, limit).await
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        StorageManager::find_expired(self, now, ttl, after, limit).await
    }

    fn location(&self) -> Option<String> {
        Some(StorageManager::location(self))
    }
}

impl<T: ExpiryTarget> ExpiryTarget for std::sync::Arc<T> {
    fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send {
        (**self).delete_expired(now, ttl, limit)
    }

    fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<MetaRow>, StorageError>> + Send {
        (**self).find_expired(now, ttl, after, limit)
    }

    fn location(&self) -> Option<String> {
        (**self).location()
    }
}
