//! Transaction ids: which strings are ids, and the reversible mapping from an id to the
//! name of its payload file.
//!
//! # The id rule
//! An id is any non-empty UTF-8 string of at most [`MAX_TX_ID_LEN`] (255) bytes without
//! control characters (Unicode category Cc: U+0000–U+001F and U+007F–U+009F, so no NUL,
//! newline or escape sequence). `('127.0.0.1', 5)`, `../x` and `é` are ids.
//!
//! # The file-name mapping ([`TxId::file_stem`], [`TxId::from_file_stem`])
//! - A **safe** id — 1 to [`MAX_SAFE_ID_LEN`] (128) characters from `A-Z a-z 0-9 . _ -`,
//!   not starting with `.` (the whole id rule before ids were widened) — is its own stem:
//!   its payload stays `<id>.bin`, the prototype's name, so stores stay readable both ways.
//! - Every other id is **escaped**: [`ESCAPE_PREFIX`] (`~`) followed by the id's UTF-8
//!   bytes, where `A-Z a-z 0-9 . _ -` stand for themselves and every other byte is written
//!   `%XX` (two uppercase hex digits). `../x` becomes `~..%2Fx`, `('127.0.0.1', 5)` becomes
//!   `~%28%27127.0.0.1%27%2C%205%29`.
//!
//! Every stem is ASCII, contains no `/` and does not start with `.`, so `<stem>.bin` is one
//! plain name inside the base directory and never one of the store's own dot-names. The
//! mapping is a bijection onto the stems it produces: a safe id never contains `~`, and
//! [`TxId::from_file_stem`] accepts only the canonical form (it re-encodes and compares),
//! so no two names map to one id and `list` gives back exactly the ids that were saved.
//!
//! A stem is at most 3 × 255 + 1 bytes. A file name is at most 255 bytes, and no
//! reversible mapping can fit every 255-byte id into one name with a suffix (there are
//! more such ids than names); [`TxId::fits_file_name`] says whether an id's stem is at
//! most [`MAX_FILE_STEM_LEN`] bytes, which every name the store derives from it (payload,
//! temp, quarantine) fits. See docs/design.md, "Ids and file names".

use std::borrow::Cow;
use std::fmt;

/// Longest accepted id, in bytes.
pub const MAX_TX_ID_LEN: usize = 255;

/// Longest id that is its own file stem (a "safe" id), in bytes.
pub const MAX_SAFE_ID_LEN: usize = 128;

/// First character of every escaped stem. It is not in the safe set, so no safe id is
/// ever mistaken for an escaped one.
pub const ESCAPE_PREFIX: char = '~';

/// Longest stem for which every file name the store derives from an id fits the common
/// 255-byte file-name limit: `<stem>.bin` (4 more bytes) and the temp name
/// `<stem>.<pid>-<n>.tmp` (at most 36 more: a 10-digit pid and a 20-digit counter).
pub const MAX_FILE_STEM_LEN: usize = 219;

/// A validated transaction id (see the [module docs](self) for the rule and the
/// file-name mapping).
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
    /// The id contains a control character (NUL, newline, tab, escape, DEL, U+0080–U+009F).
    #[error(
        "tx_id {id:?} contains the control character {bad:?} at byte {at}; ids may not \
         contain control characters"
    )]
    BadChar {
        /// The rejected id (shortened if it is long).
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

    /// True if the id is its own file stem: 1 to [`MAX_SAFE_ID_LEN`] characters from
    /// `A-Z a-z 0-9 . _ -`, not starting with `.`.
    pub fn is_safe_name(&self) -> bool {
        is_safe_name(&self.0)
    }

    /// The stem of this id's payload file name (`<stem>.bin`): the id itself when it is a
    /// safe name, else `~` and the id with every byte outside `A-Z a-z 0-9 . _ -` written
    /// as `%XX`. Reversed by [`TxId::from_file_stem`].
    pub fn file_stem(&self) -> Cow<'_, str> {
        if self.is_safe_name() {
            return Cow::Borrowed(&self.0);
        }
        let mut out = String::with_capacity(self.0.len() * 3 + 1);
        out.push(ESCAPE_PREFIX);
        for &b in self.0.as_bytes() {
            if is_safe_byte(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        Cow::Owned(out)
    }

    /// True if [`file_stem`](Self::file_stem) is at most [`MAX_FILE_STEM_LEN`] bytes, so
    /// that every file name the store derives from the id fits a 255-byte name limit.
    pub fn fits_file_name(&self) -> bool {
        self.file_stem().len() <= MAX_FILE_STEM_LEN
    }

    /// The stem the prototype gave this id's payload, when it is not
    /// [`file_stem`](Self::file_stem) and still names one plain file inside the base: the
    /// prototype wrote every payload as `<base>/<id>.bin`, whatever the id, so a prototype
    /// store keeps e.g. `('127.0.0.1', 5).bin`. `Some(id)` for an id that is not a safe
    /// name, contains no `/`, gives a `<id>.bin` of at most 255 bytes, and is not itself a
    /// stem the mapping produces (that name is another id's payload, never this one's).
    /// `None` for safe ids (their stem already is the prototype's name) and for ids whose
    /// prototype name was a path, or no name at all. Such a name is only ever read (never
    /// following a link), renamed to [`file_stem`](Self::file_stem) or removed with its tx;
    /// see docs/design.md, "Ids and file names".
    pub fn prototype_file_stem(&self) -> Option<&str> {
        let id = self.0.as_str();
        let usable = !self.is_safe_name()
            && !id.contains('/')
            && id.len() <= MAX_PROTOTYPE_STEM_LEN
            && TxId::from_file_stem(id).is_none();
        usable.then_some(id)
    }

    /// The id whose [`file_stem`](Self::file_stem) is exactly `stem`, if any. Names the
    /// store did not produce (a non-canonical escape, an unsafe literal, a dot-name) give
    /// `None`.
    pub fn from_file_stem(stem: &str) -> Option<TxId> {
        let Some(body) = stem.strip_prefix(ESCAPE_PREFIX) else {
            return is_safe_name(stem).then(|| TxId(stem.to_owned()));
        };
        let bytes = body.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hi = hex_val(*bytes.get(i + 1)?)?;
                    let lo = hex_val(*bytes.get(i + 2)?)?;
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                b if is_safe_byte(b) => {
                    out.push(b);
                    i += 1;
                }
                _ => return None,
            }
        }
        let id = TxId::new(String::from_utf8(out).ok()?).ok()?;
        // Only the canonical form: a safe id is never escaped, a safe byte never
        // written as %XX, hex digits are uppercase.
        (id.file_stem() == stem).then_some(id)
    }
}

/// Longest stem whose `<stem>.bin` fits a 255-byte file name.
const MAX_PROTOTYPE_STEM_LEN: usize = 255 - 4;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SAFE_ID_LEN
        && !s.starts_with('.')
        && s.bytes().all(is_safe_byte)
}

fn validate(s: &str) -> Result<(), TxIdError> {
    if s.is_empty() {
        return Err(TxIdError::Empty);
    }
    if let Some((at, bad)) = s.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(TxIdError::BadChar {
            id: truncate_for_message(s),
            bad,
            at,
        });
    }
    if s.len() > MAX_TX_ID_LEN {
        return Err(TxIdError::TooLong { len: s.len() });
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
    fn accepts_the_wide_rule() {
        for ok in [
            "a",
            "tx-1",
            "A_b.c-9",
            "x".repeat(MAX_TX_ID_LEN).as_str(),
            "a..b",
            "../x",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "a\\b",
            "('127.0.0.1', 5)",
            "~x",
            "%41",
        ] {
            assert!(TxId::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_empty_long_and_control_with_a_reason() {
        assert_eq!(TxId::new(""), Err(TxIdError::Empty));
        assert!(matches!(
            TxId::new("a\0b"),
            Err(TxIdError::BadChar {
                bad: '\0',
                at: 1,
                ..
            })
        ));
        for bad in ["a\nb", "\t", "x\u{1b}[0m", "\u{7f}", "\u{85}"] {
            assert!(
                matches!(TxId::new(bad), Err(TxIdError::BadChar { .. })),
                "{bad:?} should be refused"
            );
        }
        let long = "x".repeat(MAX_TX_ID_LEN + 1);
        assert_eq!(
            TxId::new(long.clone()),
            Err(TxIdError::TooLong {
                len: MAX_TX_ID_LEN + 1
            })
        );
        let msg = TxId::new(format!("{}\n", "y".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "message stays short: {msg}");
    }

    #[test]
    fn safe_ids_keep_their_name_and_others_are_escaped() {
        let stem = |s: &str| TxId::new(s).unwrap().file_stem().into_owned();
        assert_eq!(stem("tx-1"), "tx-1");
        assert_eq!(stem("a..b"), "a..b");
        assert_eq!(stem("../x"), "~..%2Fx");
        assert_eq!(stem(".."), "~..");
        assert_eq!(stem(".hidden"), "~.hidden");
        assert_eq!(stem("('127.0.0.1', 5)"), "~%28%27127.0.0.1%27%2C%205%29");
        assert_eq!(stem("é"), "~%C3%A9");
        assert_eq!(stem("~x"), "~%7Ex");
        assert_eq!(stem(&"x".repeat(129)), format!("~{}", "x".repeat(129)));
        assert_eq!(stem(&"x".repeat(128)), "x".repeat(128));
    }

    #[test]
    fn only_canonical_stems_parse_back() {
        for (s, id) in [
            ("tx-1", Some("tx-1")),
            ("~..%2Fx", Some("../x")),
            ("~%C3%A9", Some("é")),
            ("~..%2fx", None), // lowercase hex
            ("~%61", None),    // a safe byte escaped
            ("~abc", None),    // a safe id escaped
            ("~%C3", None),    // not UTF-8
            ("~%00", None),    // a control character
            ("~%2", None),     // truncated escape
            ("~a b", None),    // an unsafe literal
            (".tmp", None),    // the store's own names
            (".poh", None),
            ("", None),
            ("~", None),
            ("a/b", None),
        ] {
            assert_eq!(
                TxId::from_file_stem(s).map(TxId::into_string).as_deref(),
                id,
                "{s:?}"
            );
        }
    }

    #[test]
    fn fitting_names() {
        assert!(
            TxId::new("x".repeat(MAX_FILE_STEM_LEN - 1))
                .unwrap()
                .fits_file_name()
        );
        assert!(
            !TxId::new("x".repeat(MAX_FILE_STEM_LEN))
                .unwrap()
                .fits_file_name()
        );
        assert!(TxId::new("/".repeat(72)).unwrap().fits_file_name());
        assert!(!TxId::new("/".repeat(73)).unwrap().fits_file_name());
    }

    #[test]
    fn prototype_names_are_plain_names_no_other_id_owns() {
        let proto = |s: &str| {
            TxId::new(s)
                .unwrap()
                .prototype_file_stem()
                .map(str::to_owned)
        };
        assert_eq!(
            proto("('127.0.0.1', 5)").as_deref(),
            Some("('127.0.0.1', 5)")
        );
        assert_eq!(proto("é").as_deref(), Some("é"));
        assert_eq!(proto("..").as_deref(), Some(".."));
        assert_eq!(proto(".hidden").as_deref(), Some(".hidden"));
        assert_eq!(proto(&"x".repeat(200)), Some("x".repeat(200)));
        // Safe ids: their own name already is the prototype's.
        assert_eq!(proto("tx-1"), None);
        // A path: the prototype wrote outside the base, or into a subdirectory.
        assert_eq!(proto("../x"), None);
        assert_eq!(proto("a/b"), None);
        assert_eq!(proto("/"), None);
        // No room for `.bin` in one name.
        assert_eq!(proto(&"é".repeat(126)), None);
        assert_eq!(
            proto(&format!("{}é", "x".repeat(249))),
            Some(format!("{}é", "x".repeat(249)))
        );
        // The escaped name of another id ("a b"): that file is never this id's.
        assert_eq!(proto("~a%20b"), None);
        // Non-canonical escapes name no other id: usable.
        assert_eq!(proto("~%61").as_deref(), Some("~%61"));
    }

    proptest! {
        #[test]
        fn prototype_names_are_single_components_never_a_mapped_name(s in "\\PC{0,140}") {
            if let Ok(id) = TxId::new(s.clone())
                && let Some(stem) = id.prototype_file_stem()
            {
                prop_assert_eq!(stem, id.as_str());
                prop_assert!(stem != id.file_stem());
                prop_assert!(TxId::from_file_stem(stem).is_none());
                let name = format!("{stem}.bin");
                prop_assert!(name.len() <= 255);
                let comps: Vec<_> = std::path::Path::new(&name).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
            }
        }

        #[test]
        fn every_id_maps_to_one_plain_name_inside_the_base(s in "\\PC{0,140}") {
            if let Ok(id) = TxId::new(s.clone()) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(id.as_str().len() <= MAX_TX_ID_LEN);
                let stem = id.file_stem();
                prop_assert!(stem.is_ascii());
                prop_assert!(!stem.starts_with('.'));
                let name = format!("{stem}.bin");
                let comps: Vec<_> = std::path::Path::new(&name).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
                let back = TxId::from_file_stem(&stem);
                prop_assert_eq!(back.as_ref(), Some(&id));
            }
        }

        #[test]
        fn any_string_parses_back_only_to_its_own_stem(s in "[~%A-Fa-f0-9._ -]{0,40}") {
            if let Some(id) = TxId::from_file_stem(&s) {
                prop_assert_eq!(id.file_stem().into_owned(), s.clone());
            }
        }

        #[test]
        fn safe_ids_round_trip_unchanged(s in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}") {
            let id = TxId::new(s.clone()).expect("a safe name is an id");
            prop_assert_eq!(id.file_stem().into_owned(), s.clone());
            let json = serde_json::to_string(&id).expect("serialize");
            let back: TxId = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, id);
        }
    }
}
