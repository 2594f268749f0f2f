//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use poh_testkit::{hostile, sim_store as sim, snapshot};

use poh_storage::{StorageManager, Tx};
use tempfile::TempDir;

/// A fresh store in a temporary directory; keep the `TempDir` alive.
pub async fn store() -> (TempDir, StorageManager) {
    let dir = TempDir::new().expect("tempdir");
    let sm = StorageManager::open(dir.path().join("data"), dir.path().join("data/poh.db"))
        .await
        .expect("open store");
    (dir, sm)
}

/// A valid tx.
pub fn tx(id: &str, ts: f64, payload: &[u8]) -> Tx {
    Tx::new(id, "holder-1", ts, payload.to_vec()).expect("valid tx")
}

/// A valid id.
pub fn id(s: &str) -> poh_storage::TxId {
    poh_storage::TxId::new(s).expect("valid id")
}
