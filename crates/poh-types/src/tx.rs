//! The transaction record and the field rules a store enforces before writing.

use crate::id::TxId;

/// Default largest payload a store accepts: 64 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Largest accepted timestamp, in UNIX seconds (about the year 5138).
///
/// A UNIX time in milliseconds for any date after 1973 is larger than this, so a
/// timestamp above it is rejected as "looks like milliseconds" rather than stored as a
/// date thousands of years away that would never expire.
pub const MAX_TIMESTAMP_SECS: f64 = 1e11;

/// A Proof-of-History transaction held for `holder_id`.
#[derive(Clone, PartialEq)]
pub struct Tx {
    /// Unique id; also names the payload file.
    pub tx_id: TxId,
    /// Who the transaction is held for. Empty only for rows written by the prototype,
    /// which did not persist it.
    pub holder_id: String,
    /// UNIX time in seconds.
    pub timestamp: f64,
    /// Opaque payload bytes.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("tx_id", &self.tx_id)
            .field("holder_id", &self.holder_id)
            .field("timestamp", &self.timestamp)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Limits applied to incoming transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// A field of a transaction breaks a rule. The message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// `tx_id` is not a valid id.
    #[error("invalid tx_id: {0}")]
    Id(#[from] crate::id::TxIdError),
    /// `tx_id` is valid, but its escaped payload file name would be longer than a file
    /// name may be (see [`TxId::fits_file_name`]), so no store can hold it.
    #[error(
        "tx_id {tx_id:?} is too long to store: its file name would take {stem_len} bytes \
         (at most {max} fit); use a shorter id or fewer characters outside A-Z a-z 0-9 . _ -"
    )]
    IdTooLongForFileName {
        /// The transaction concerned (shortened if long).
        tx_id: String,
        /// Bytes its escaped file stem takes.
        stem_len: usize,
        /// The most that fit.
        max: usize,
    },
    /// `holder_id` is empty.
    #[error("tx {tx_id}: holder_id is empty")]
    EmptyHolder {
        /// The transaction concerned.
        tx_id: String,
    },
    /// `holder_id` contains a NUL byte or a control character.
    #[error("tx {tx_id}: holder_id contains a control character")]
    HolderControlChar {
        /// The transaction concerned.
        tx_id: String,
    },
    /// `timestamp` is NaN or infinite.
    #[error("tx {tx_id}: timestamp {value} is not a finite number")]
    TimestampNotFinite {
        /// The transaction concerned.
        tx_id: String,
        /// The rejected value.
        value: f64,
    },
    /// `timestamp` is below zero.
    #[error("tx {tx_id}: timestamp {value} is negative; expected UNIX seconds")]
    TimestampNegative {
        /// The transaction concerned.
        tx_id: String,
        /// The rejected value.
        value: f64,
    },
    /// `timestamp` is far in the future, most likely milliseconds.
    #[error(
        "tx {tx_id}: timestamp {value} is too large (over {MAX_TIMESTAMP_SECS}); it looks like milliseconds, expected UNIX seconds"
    )]
    TimestampLooksLikeMillis {
        /// The transaction concerned.
        tx_id: String,
        /// The rejected value.
        value: f64,
    },
    /// The payload is larger than [`Limits::max_payload_bytes`].
    #[error("tx {tx_id}: payload is {len} bytes; the limit is {max} bytes")]
    PayloadTooLarge {
        /// The transaction concerned.
        tx_id: String,
        /// The payload's size.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

/// Checks a timestamp against the rules of [`Tx::validate`].
pub fn check_timestamp(tx_id: &str, value: f64) -> Result<(), TxError> {
    let tx_id = tx_id.to_owned();
    if !value.is_finite() {
        Err(TxError::TimestampNotFinite { tx_id, value })
    } else if value < 0.0 {
        Err(TxError::TimestampNegative { tx_id, value })
    } else if value > MAX_TIMESTAMP_SECS {
        Err(TxError::TimestampLooksLikeMillis { tx_id, value })
    } else {
        Ok(())
    }
}

impl Tx {
    /// Builds a transaction and checks it against the default [`Limits`].
    pub fn new(
        tx_id: impl Into<String>,
        holder_id: impl Into<String>,
        timestamp: f64,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Self, TxError> {
        let tx = Self {
            tx_id: TxId::new(tx_id)?,
            holder_id: holder_id.into(),
            timestamp,
            payload: payload.into(),
        };
        tx.validate(&Limits::default())?;
        Ok(tx)
    }

    /// Checks every field rule: an id whose file name fits (the id itself is valid by
    /// construction), non-empty holder without control characters, a finite,
    /// non-negative timestamp in seconds, a payload within `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), TxError> {
        let id = self.tx_id.as_str();
        if !self.tx_id.fits_file_name() {
            return Err(TxError::IdTooLongForFileName {
                tx_id: id.chars().take(64).collect(),
                stem_len: self.tx_id.file_stem().len(),
                max: crate::id::MAX_FILE_STEM_LEN,
            });
        }
        if self.holder_id.is_empty() {
            return Err(TxError::EmptyHolder { tx_id: id.into() });
        }
        if self.holder_id.chars().any(char::is_control) {
            return Err(TxError::HolderControlChar { tx_id: id.into() });
        }
        check_timestamp(id, self.timestamp)?;
        if self.payload.len() > limits.max_payload_bytes {
            return Err(TxError::PayloadTooLarge {
                tx_id: id.into(),
                len: self.payload.len(),
                max: limits.max_payload_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_whose_file_name_cannot_fit_is_refused() {
        let fits = "x".repeat(crate::id::MAX_FILE_STEM_LEN - 1);
        assert!(Tx::new(fits, "h", 1.0, vec![]).is_ok());
        let e = Tx::new("/".repeat(73), "h", 1.0, vec![]).unwrap_err();
        assert!(
            matches!(e, TxError::IdTooLongForFileName { stem_len: 220, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("too long to store"), "{e}");
    }

    #[test]
    fn field_rules_name_the_field() {
        let e = Tx::new("a", "", 1.0, vec![]).unwrap_err();
        assert!(e.to_string().contains("holder_id"), "{e}");
        for (ts, word) in [
            (f64::NAN, "finite"),
            (f64::INFINITY, "finite"),
            (-1.0, "negative"),
            (1.7e12, "milliseconds"),
        ] {
            let e = Tx::new("a", "h", ts, vec![]).unwrap_err();
            assert!(e.to_string().contains(word), "{ts}: {e}");
            assert!(e.to_string().contains("timestamp"), "{ts}: {e}");
        }
        assert!(Tx::new("a", "h", 0.0, vec![]).is_ok());
        assert!(Tx::new("a", "h", 1.7e9, vec![]).is_ok());
        assert!(Tx::new("a", "h\0", 1.0, vec![]).is_err());
    }

    #[test]
    fn payload_limit_is_enforced() {
        let tx = Tx::new("a", "h", 1.0, vec![0u8; 11]).unwrap();
        let e = tx
            .validate(&Limits {
                max_payload_bytes: 10,
            })
            .unwrap_err();
        assert_eq!(
            e,
            TxError::PayloadTooLarge {
                tx_id: "a".into(),
                len: 11,
                max: 10
            }
        );
        assert!(
            tx.validate(&Limits {
                max_payload_bytes: 11
            })
            .is_ok()
        );
    }
}
