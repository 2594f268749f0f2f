//! Helpers shared by the command-line tests: the real binaries in scratch directories
//! (`cli` for `poh-storage`, `ttl` for `poh-ttl`), and the shared test machinery.
#![allow(dead_code)]

pub mod cli;
pub mod ttl;

#[allow(unused_imports)]
pub use poh_testkit::{hostile, sim_store as sim, snapshot};

use poh_storage::Tx;

/// A valid tx.
pub fn tx(id: &str, ts: f64, payload: &[u8]) -> Tx {
    Tx::new(id, "holder-1", ts, payload.to_vec()).expect("valid tx")
}

/// A valid id.
pub fn id(s: &str) -> poh_storage::TxId {
    poh_storage::TxId::new(s).expect("valid id")
}
