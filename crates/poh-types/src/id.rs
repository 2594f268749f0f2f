//! Transaction ids: the rules that make an id safe to use as a file name.

use std::fmt;

/// Longest accepted id, in bytes. `<id>.bin` and the temporary names derived from it
/// stay well below the 255-byte file-name limit of common filesystems.
pub const MAX_TX_ID_LEN: usize = 128;

/// A validated transaction id.
///
/// Accepted: 1 to [`MAX_TX_ID_LEN`] ASCII characters from `A-Z a-z 0-9 . _ -`, not
/// starting with `.`. Such an id can never name a path outside the store's base
/// directory (no `/`, no `..` component, no hidden file) and is the same string on
/// every platform.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(String);

/// Why a string is not a valid [`TxId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxIdError {
    /// The id is the empty string.
    #[error("tx_id is empty")]
    Empty,
    /// The id is longer than [`MAX_TX_ID_LEN`] bytes.
    #[error("tx_id is {len} bytes long; the limit is {MAX_TX_ID_LEN}")]
    TooLong {
        /// Length of the rejected id, in bytes.
        len: usize,
    },
    /// The id starts with `.` (hidden files and `..` are reserved).
    #[error("tx_id {0:?} starts with '.'; ids may not start with a dot")]
    LeadingDot(String),
    /// The id contains a character outside `A-Z a-z 0-9 . _ -`.
    #[error(
        "tx_id {id:?} contains {bad:?} at byte {at}; allowed are letters, digits, '.', '_' and '-'"
    )]
    BadChar {
        /// The rejected id (lossy if it was not UTF-8).
        id: String,
        /// The first offending character.
        bad: char,
        /// Its byte offset.
        at: usize,
    },
}

impl TxId {
    /// Validates `s` and returns it as an id.
    pub fn new(s: impl Into<String>) -> Result<Self, TxIdError> {
        let s = s.into();
        validate(&s)?;
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

fn validate(s: &str) -> Result<(), TxIdError> {
    if s.is_empty() {
        return Err(TxIdError::Empty);
    }
    if let Some((at, bad)) = s.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(TxIdError::BadChar {
            id: truncate_for_message(s),
            bad,
            at,
        });
    }
    if s.len() > MAX_TX_ID_LEN {
        return Err(TxIdError::TooLong { len: s.len() });
    }
    if s.starts_with('.') {
        return Err(TxIdError::LeadingDot(s.to_owned()));
    }
    Ok(())
}

/// Keeps error messages readable when the offending id is huge.
fn truncate_for_message(s: &str) -> String {
    const KEEP: usize = 64;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

impl std::str::FromStr for TxId {
    type Err = TxIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TxId {
    type Error = TxIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TxId {
    type Error = TxIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for TxId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl serde::Serialize for TxId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TxId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TxId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_charset() {
        for ok in ["a", "tx-1", "A_b.c-9", "x".repeat(MAX_TX_ID_LEN).as_str(), "a..b"] {
            assert!(TxId::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_unsafe_ids_with_a_reason() {
        assert_eq!(TxId::new(""), Err(TxIdError::Empty));
        assert!(matches!(TxId::new("../x"), Err(TxIdError::BadChar { bad: '/', .. })));
        assert!(matches!(TxId::new("a/b"), Err(TxIdError::BadChar { bad: '/', at: 1, .. })));
        assert!(matches!(TxId::new(".hidden"), Err(TxIdError::LeadingDot(_))));
        assert!(matches!(TxId::new(".."), Err(TxIdError::LeadingDot(_))));
        assert!(matches!(TxId::new("a\0b"), Err(TxIdError::BadChar { bad: '\0', .. })));
        assert!(matches!(TxId::new("a b"), Err(TxIdError::BadChar { bad: ' ', .. })));
        assert!(matches!(TxId::new("é"), Err(TxIdError::BadChar { bad: 'é', .. })));
        assert!(matches!(TxId::new("a\\b"), Err(TxIdError::BadChar { bad: '\\', .. })));
        let long = "x".repeat(10_000);
        assert_eq!(TxId::new(long.clone()), Err(TxIdError::TooLong { len: 10_000 }));
        let msg = TxId::new(format!("{long}/")).unwrap_err().to_string();
        assert!(msg.len() < 300, "message stays short: {msg}");
    }

    proptest! {
        #[test]
        fn valid_ids_are_plain_file_names(s in "\\PC{0,140}") {
            if let Ok(id) = TxId::new(s.clone()) {
                let p = std::path::Path::new(id.as_str());
                let comps: Vec<_> = p.components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
                prop_assert!(!id.as_str().starts_with('.'));
                prop_assert!(id.as_str().len() <= MAX_TX_ID_LEN);
            }
        }

        #[test]
        fn generated_valid_ids_round_trip(s in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}") {
            let id = TxId::new(s.clone()).expect("matches the documented charset");
            prop_assert_eq!(id.as_str(), s.as_str());
            let json = serde_json::to_string(&id).expect("serialize");
            let back: TxId = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, id);
        }
    }
}
