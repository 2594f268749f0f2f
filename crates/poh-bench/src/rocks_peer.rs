//! The RocksDB peer's layout: one column family of records (id → holder, timestamp,
//! SHA-256, payload) and one of `(timestamp, id)` keys for expiry, no compression (the
//! payloads are random), every write synced.

use std::path::Path;

use anyhow::{Context, Result};
use poh_storage::Tx;
use rocksdb::{ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use sha2::Digest as _;

/// Opens (creating) the peer's database in `dir`.
pub fn open(dir: &Path) -> Result<DB> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let cfs = ["data", "time"].map(|name| {
        let mut o = rocksdb::Options::default();
        o.set_compression_type(rocksdb::DBCompressionType::None);
        ColumnFamilyDescriptor::new(name, o)
    });
    Ok(DB::open_cf_descriptors(&opts, dir, cfs)?)
}

/// Write options that sync every write.
pub fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// A tx's record: holder length and holder, timestamp, payload SHA-256, payload.
pub fn value(t: &Tx) -> Vec<u8> {
    let hash: [u8; 32] = sha2::Sha256::digest(&t.payload).into();
    let holder = t.holder_id.as_bytes();
    let mut v = Vec::with_capacity(2 + holder.len() + 8 + 32 + t.payload.len());
    v.extend_from_slice(&(holder.len() as u16).to_le_bytes());
    v.extend_from_slice(holder);
    v.extend_from_slice(&t.timestamp.to_le_bytes());
    v.extend_from_slice(&hash);
    v.extend_from_slice(&t.payload);
    v
}

/// `(timestamp, id)` as an ordered key (timestamps are non-negative: their bits order).
pub fn time_key(t: &Tx) -> Vec<u8> {
    let mut k = t.timestamp.to_bits().to_be_bytes().to_vec();
    k.extend_from_slice(t.tx_id.as_str().as_bytes());
    k
}

/// Adds a tx's record and its time key to `b`.
pub fn put(b: &mut WriteBatch, db: &DB, t: &Tx) -> Result<()> {
    let data = db.cf_handle("data").context("no data column family")?;
    let time = db.cf_handle("time").context("no time column family")?;
    b.put_cf(data, t.tx_id.as_str().as_bytes(), value(t));
    b.put_cf(time, time_key(t), []);
    Ok(())
}
