//! A store whose payload files live in a [`SimFs`], with its lock file and SQLite database
//! on a real temporary directory at the same paths.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::sim::SimFs;
use crate::stores::layout_from_env;
use poh_storage::{Layout, OpenOptions, StorageManager};
use tempfile::TempDir;

/// The segment window simulated segments stores use: short, so that a workload's
/// timestamps spread over several segments (whole-segment expiry, drops, compaction).
pub const SIM_SEGMENT_WINDOW: Duration = Duration::from_secs(100);

/// A simulated store's places. Keep it alive for the whole test.
pub struct SimStore {
    /// The real temporary directory (holds the database and the lock file).
    pub dir: TempDir,
    /// The simulated file system.
    pub sim: SimFs,
    /// The base directory (real for the lock file, simulated for payloads).
    pub base: PathBuf,
    /// The SQLite database (real).
    pub db: PathBuf,
    /// The layout a first open creates.
    pub layout: Layout,
}

impl Default for SimStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStore {
    /// A fresh, empty simulated store of the layout `POH_LAYOUT` names (flat files by
    /// default); the base directory is created by the first open.
    pub fn new() -> Self {
        Self::with_layout(layout_from_env())
    }

    /// A fresh, empty simulated store of `layout`.
    pub fn with_layout(layout: Layout) -> Self {
        let dir = TempDir::new().expect("tempdir");
        let base = dir.path().join("data");
        std::fs::create_dir_all(&base).expect("real base for the lock file");
        let sim = SimFs::new();
        sim.create_durable_dir(dir.path()).expect("sim root");
        let db = dir.path().join("poh.db");
        Self {
            dir,
            sim,
            base,
            db,
            layout,
        }
    }

    /// Options that put payloads in the simulation (and create a store of the layout).
    /// Inline saves are on: a harness on a multi-threaded runtime drives the lone-caller
    /// path (saves committed on the caller's thread), one on a current-thread runtime the
    /// writer thread's.
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            fs: Arc::new(self.sim.clone()),
            inline_saves: true,
            layout: Some(self.layout),
            segment_window: (self.layout == Layout::Segments).then_some(SIM_SEGMENT_WINDOW),
            ..OpenOptions::default()
        }
    }

    /// Opens (or reopens, running repair) the store.
    pub async fn open(&self) -> poh_storage::Result<StorageManager> {
        StorageManager::open_with(&self.base, &self.db, self.options()).await
    }
}

/// A closed simulated store's complete state (simulated files and the real database),
/// to run several experiments from one starting point.
pub struct SavedState {
    sim: SimFs,
    db: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl SimStore {
    fn db_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut p = self.db.clone().into_os_string();
                p.push(suffix);
                PathBuf::from(p)
            })
            .collect()
    }

    /// Saves the state; the store must be closed.
    pub fn save_state(&self) -> SavedState {
        SavedState {
            sim: self.sim.fork(),
            db: self
                .db_files()
                .into_iter()
                .map(|p| {
                    let data = std::fs::read(&p).ok();
                    (p, data)
                })
                .collect(),
        }
    }

    /// Puts back a saved state; the store must be closed.
    pub fn restore_state(&self, saved: &SavedState) {
        self.sim.restore(&saved.sim);
        for (p, data) in &saved.db {
            match data {
                Some(d) => std::fs::write(p, d).expect("restore database file"),
                None => match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove {}: {e}", p.display()),
                },
            }
        }
    }
}
