//! [`Poison`]: the store's "refuse writes" state after a durability failure. A failed
//! fsync may have dropped dirty pages and a retried fsync can falsely succeed, so once an
//! engine sees one, every later write fails until the store is closed and reopened (which
//! runs repair). Shared by the writer thread, the engine and the async API.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use crate::error::{Result, StorageError};

/// Shared "poisoned" state: set after a durability failure, cleared only by reopening.
#[derive(Debug, Default, Clone)]
pub(crate) struct Poison(Arc<Mutex<Option<String>>>);

impl Poison {
    pub(crate) fn check(&self) -> Result<()> {
        match &*lock(&self.0) {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn set(&self, why: String) {
        warn!(%why, "store poisoned: refusing writes until reopened");
        let mut g = lock(&self.0);
        if g.is_none() {
            *g = Some(why);
        }
    }
}

/// Locks `m`, going on after a panic in another holder: every value the store keeps behind
/// a mutex (a sender, a thread handle, idle readers, this state) stays valid whatever a
/// panicking holder was doing, so poisoning carries no information here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
