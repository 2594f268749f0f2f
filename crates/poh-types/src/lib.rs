//! Proof-of-History transaction types: [`Tx`], the validated [`TxId`], the input
//! rules every store applies, and the JSON form
//! `{"tx_id","holder_id","timestamp","payload"}` (payload in standard base64).
//!
//! # Layout
//! - [`id`]: [`TxId`], the one place that decides what an id is and how it maps to a file name.
//! - [`tx`]: [`Tx`] and [`Limits`], the field rules (holder, timestamp, payload size).
//! - [`json`]: the JSON codec ([`TxJson`], [`Tx::from_json`], [`Tx::to_json`]).
//!
//! # What this crate is not
//! It does no I/O and knows nothing about where transactions are stored.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod id;
pub mod json;
pub mod tx;

pub use id::{ESCAPE_PREFIX, MAX_FILE_STEM_LEN, MAX_SAFE_ID_LEN, MAX_TX_ID_LEN, TxId, TxIdError};
pub use json::{JsonError, TxJson};
pub use tx::{DEFAULT_MAX_PAYLOAD_BYTES, Limits, MAX_TIMESTAMP_SECS, Tx, TxError, check_timestamp};
