//! What the benchmark binary and its examples share: the RocksDB peer's layout (with
//! `--features rocksdb`) and a few helpers.

#[cfg(feature = "rocksdb")]
pub mod rocks_peer;

pub mod util;
