//! [`ReopeningStore`]: an [`ExpiryTarget`] that reopens its store after a failure that
//! reopening can repair, so a daemon recovers by itself when the device comes back.
//!
//! After a failed fsync the storage engine *poisons* its handle: it refuses writes until the
//! store is reopened, rather than trust the kernel's page cache. Before this, a daemon whose
//! device had a hiccup failed every later pass until a supervisor restarted the process
//! (`--max-failures`). A `ReopeningStore` does what the restart did, in place: when a store
//! call fails with an I/O, database or poisoned error, it closes that handle; the next call
//! (the next pass) opens the store again through [`StorageManager::open_with`], which runs
//! the same checks and crash repair as a start. While the device is still gone, the reopen
//! fails and so does the pass; once it is back, passes succeed again.
//!
//! It never creates a store: a base or database that vanished stays a failed pass
//! ([`StorageError::NotFound`]), not a new empty store.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use poh_storage::{MetaRow, OpenOptions, StorageError, StorageManager};
use tracing::{info, warn};

use crate::target::ExpiryTarget;

/// A store that is reopened after a failure that reopening can repair (see the module
/// docs). Share it with `Arc` between the daemon and, say, a metrics endpoint.
pub struct ReopeningStore {
    base: PathBuf,
    db: PathBuf,
    opts: OpenOptions,
    slot: Mutex<Slot>,
    /// Serializes reopens, so two callers never open the store twice.
    reopening: tokio::sync::Mutex<()>,
    reopens: AtomicU64,
}

struct Slot {
    /// Bumped at every open, so a failure of an old handle does not close a newer one.
    generation: u64,
    store: Option<StorageManager>,
}

impl std::fmt::Debug for ReopeningStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReopeningStore")
            .field("base", &self.base)
            .field("db", &self.db)
            .field("open", &self.current().is_some())
            .field("reopens", &self.reopens())
            .finish_non_exhaustive()
    }
}

/// Errors after which the handle is closed and the store reopened at the next call: a
/// poisoned store, and I/O or database errors (which are what poison it, and may leave a
/// database connection in a state only a new one gets out of).
pub fn reopen_repairs(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Poisoned(_) | StorageError::Io { .. } | StorageError::Meta { .. }
    )
}

impl ReopeningStore {
    /// Opens the existing store at `base`/`db` with `opts` (whose `create` is turned off:
    /// neither this open nor a reopen ever creates a store).
    pub async fn open(
        base: impl AsRef<Path>,
        db: impl AsRef<Path>,
        opts: OpenOptions,
    ) -> Result<Self, StorageError> {
        let opts = OpenOptions {
            create: false,
            ..opts
        };
        let (base, db) = (base.as_ref().to_path_buf(), db.as_ref().to_path_buf());
        let store = StorageManager::open_with(&base, &db, opts.clone()).await?;
        Ok(Self {
            base,
            db,
            opts,
            slot: Mutex::new(Slot {
                generation: 1,
                store: Some(store),
            }),
            reopening: tokio::sync::Mutex::new(()),
            reopens: AtomicU64::new(0),
        })
    }

    /// The open handle, if there is one (none after a failure, until the next store call
    /// reopens it). Never opens anything: for readers that must not race the daemon.
    pub fn current(&self) -> Option<StorageManager> {
        self.lock().store.clone()
    }

    /// How many times the store was reopened after a failure.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Closes the handle (finishing queued writes). A later store call reopens it.
    pub async fn close(&self) -> Result<(), StorageError> {
        let store = self.lock().store.take();
        match store {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open handle with its generation, reopening the store if it was closed.
    async fn acquire(&self) -> Result<(u64, StorageManager), StorageError> {
        {
            let slot = self.lock();
            if let Some(s) = &slot.store {
                return Ok((slot.generation, s.clone()));
            }
        }
        let _one_at_a_time = self.reopening.lock().await;
        {
            let slot = self.lock();
            if let Some(s) = &slot.store {
                return Ok((slot.generation, s.clone()));
            }
        }
        let store = StorageManager::open_with(&self.base, &self.db, self.opts.clone()).await?;
        let n = self.reopens.fetch_add(1, Ordering::Relaxed) + 1;
        info!(store = %poh_storage::store_location(&self.base, &self.db), reopens = n, "store reopened");
        let mut slot = self.lock();
        slot.generation += 1;
        slot.store = Some(store.clone());
        Ok((slot.generation, store))
    }

    /// After `err` from the handle of `generation`: closes that handle if reopening can
    /// repair the error (and no newer handle replaced it meanwhile).
    async fn after_error(&self, generation: u64, err: &StorageError) {
        if !reopen_repairs(err) {
            return;
        }
        let retired = {
            let mut slot = self.lock();
            if slot.generation == generation {
                slot.store.take()
            } else {
                None
            }
        };
        if let Some(old) = retired {
            warn!(
                store = %poh_storage::store_location(&self.base, &self.db),
                "closing the store after a failure; the next pass reopens it"
            );
            if let Err(e) = old.close().await {
                warn!(store = %poh_storage::store_location(&self.base, &self.db), error = %poh_storage::error_chain(&e), "closing the failed store handle");
            }
        }
    }
}

impl ExpiryTarget for ReopeningStore {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let (generation, store) = self.acquire().await?;
        let result = store.delete_expired(now, ttl, limit).await;
        if let Err(e) = &result {
            self.after_error(generation, e).await;
        }
        result
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        let (generation, store) = self.acquire().await?;
        let result = store.find_expired(now, ttl, after, limit).await;
        if let Err(e) = &result {
            self.after_error(generation, e).await;
        }
        result
    }

    fn location(&self) -> Option<String> {
        Some(poh_storage::store_location(&self.base, &self.db))
    }
}
