//! What the benchmark binary and its examples share: the RocksDB peer's layout (with
//! `--features rocksdb`).

#[cfg(feature = "rocksdb")]
pub mod rocks_peer;
