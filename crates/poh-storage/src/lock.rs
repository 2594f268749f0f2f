//! The store lock: an advisory `flock` on `<base>/.poh.lock` that orders every change to
//! the pair (metadata row, payload file) across threads and processes.
//!
//! Writers hold it exclusively while they commit rows and rename, remove or quarantine
//! payload files, so no process ever sees another's half-finished change. Readers never
//! take it on their fast path; they take it shared only to re-check a payload that did
//! not match its row, which waits out any writer in the middle of its protocol.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// Name of the lock file under the base directory.
pub const LOCK_FILE: &str = ".poh.lock";

/// A handle on the store's lock file.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

/// Held lock; released on drop.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a StoreLock,
}

impl StoreLock {
    /// Opens (creating if needed) the lock file under `base`.
    pub fn open(base: &Path) -> Result<Self> {
        let path = base.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open lock file", &path, e))?;
        Ok(Self { file, path })
    }

    /// Blocks until the lock is held exclusively.
    pub fn exclusive(&self) -> Result<LockGuard<'_>> {
        self.file
            .lock()
            .map_err(|e| StorageError::io("lock", &self.path, e))?;
        Ok(LockGuard { lock: self })
    }

    /// Blocks until the lock is held shared.
    pub fn shared(&self) -> Result<LockGuard<'_>> {
        self.file
            .lock_shared()
            .map_err(|e| StorageError::io("lock (shared)", &self.path, e))?;
        Ok(LockGuard { lock: self })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; unlock failing leaves nothing to do.
        let _ = self.lock.file.unlock();
    }
}
