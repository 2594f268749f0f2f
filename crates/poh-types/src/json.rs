//! The JSON form of a transaction: `{"tx_id","holder_id","timestamp","payload"}` with
//! the payload in standard (padded) base64, as the prototype's CLI read and wrote it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::tx::{Limits, Tx, TxError};

/// The wire form, field for field. Only a JSON object decodes to it (serde's derived
/// structs would also take an array of the four values in order, which names no field).
/// Unknown fields are rejected so that a typo such as `"holderid"` is an error rather
/// than a silently empty field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxJson {
    /// Transaction id.
    pub tx_id: String,
    /// Holder id.
    pub holder_id: String,
    /// UNIX seconds.
    pub timestamp: f64,
    /// Standard base64 of the payload.
    pub payload: String,
}

/// The fields of [`TxJson`] as decoded from the entries of a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(deserialize_with = "de_tx_id")]
    tx_id: String,
    #[serde(deserialize_with = "de_holder_id")]
    holder_id: String,
    #[serde(deserialize_with = "de_timestamp")]
    timestamp: f64,
    #[serde(deserialize_with = "de_payload")]
    payload: String,
}

impl<'de> Deserialize<'de> for TxJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOnly)
    }
}

/// Accepts a JSON object (decoded as [`Fields`]) and refuses every other JSON value,
/// naming what was given.
struct ObjectOnly;

/// The refusal of a JSON value that is not an object.
fn not_an_object<E: serde::de::Error>(got: impl std::fmt::Display) -> E {
    E::custom(format!("a transaction must be a JSON object, got {got}"))
}

impl<'de> serde::de::Visitor<'de> for ObjectOnly {
    type Value = TxJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a transaction as a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TxJson, A::Error> {
        let f = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(TxJson {
            tx_id: f.tx_id,
            holder_id: f.holder_id,
            timestamp: f.timestamp,
            payload: f.payload,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<TxJson, A::Error> {
        Err(not_an_object("an array"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<TxJson, E> {
        Err(not_an_object("null"))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<TxJson, E> {
        Err(not_an_object("null"))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<TxJson, E> {
        Err(not_an_object(format_args!("the boolean {v}")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TxJson, E> {
        Err(not_an_object(format_args!("the number {v}")))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TxJson, E> {
        Err(not_an_object(format_args!("the number {v}")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TxJson, E> {
        Err(not_an_object(format_args!("the number {v}")))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<TxJson, E> {
        Err(not_an_object("a string"))
    }
}

/// Names a JSON value's type for messages.
fn kind(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

// Field-by-field decoding, so that a value of the wrong type is reported with the field's
// name ("timestamp must be a number ...") rather than only a line and column.
fn de_string<'de, D: serde::Deserializer<'de>>(d: D, field: &str) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(serde::de::Error::custom(format!(
            "{field} must be a string, got {}",
            kind(&other)
        ))),
    }
}

fn de_tx_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_string(d, "tx_id")
}

fn de_holder_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_string(d, "holder_id")
}

fn de_payload<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_string(d, "payload (standard base64)")
}

fn de_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v.as_f64() {
        Some(f) if v.is_number() => Ok(f),
        _ => Err(serde::de::Error::custom(format!(
            "timestamp must be a number of UNIX seconds, got {}",
            kind(&v)
        ))),
    }
}

/// A JSON document that is not a valid transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON, a missing field, a wrong type or an unknown field.
    #[error("malformed transaction JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The `payload` field is not standard base64.
    #[error("tx {tx_id}: payload is not valid standard base64: {source}")]
    Base64 {
        /// The transaction concerned.
        tx_id: String,
        /// The decoder's complaint.
        source: base64::DecodeError,
    },
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] TxError),
}

impl Tx {
    /// Parses and validates the JSON form against `limits`.
    pub fn from_json(s: &str, limits: &Limits) -> Result<Self, JsonError> {
        let j: TxJson = serde_json::from_str(s)?;
        Self::from_wire(j, limits)
    }

    /// Validates an already parsed wire form against `limits`.
    pub fn from_wire(j: TxJson, limits: &Limits) -> Result<Self, JsonError> {
        let tx_id = crate::TxId::new(j.tx_id).map_err(TxError::from)?;
        // Reject an oversized payload before decoding it: base64 is 4/3 of the bytes.
        let max_encoded = limits.max_payload_bytes.saturating_add(2) / 3 * 4;
        if j.payload.len() > max_encoded.saturating_add(4) {
            return Err(TxError::PayloadTooLarge {
                tx_id: tx_id.into_string(),
                len: j.payload.len() / 4 * 3,
                max: limits.max_payload_bytes,
            }
            .into());
        }
        let payload =
            STANDARD
                .decode(j.payload.as_bytes())
                .map_err(|source| JsonError::Base64 {
                    tx_id: tx_id.to_string(),
                    source,
                })?;
        let tx = Tx {
            tx_id,
            holder_id: j.holder_id,
            timestamp: j.timestamp,
            payload,
        };
        tx.validate(limits)?;
        Ok(tx)
    }

    /// The wire form of this transaction.
    pub fn to_wire(&self) -> TxJson {
        TxJson {
            tx_id: self.tx_id.to_string(),
            holder_id: self.holder_id.clone(),
            timestamp: self.timestamp,
            payload: STANDARD.encode(&self.payload),
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and a finite f64 always serializes.
        serde_json::to_string(&self.to_wire()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn parses_the_prototype_form() {
        let tx = Tx::from_json(
            r#"{"tx_id":"t1","holder_id":"h","timestamp":1700000000.5,"payload":"aGVsbG8="}"#,
            &lim(),
        )
        .unwrap();
        assert_eq!(tx.tx_id.as_str(), "t1");
        assert_eq!(tx.payload, b"hello");
        assert_eq!(tx.timestamp, 1700000000.5);
        // integers are accepted for the timestamp, as Python's float() did
        let tx = Tx::from_json(
            r#"{"tx_id":"t1","holder_id":"h","timestamp":17,"payload":""}"#,
            &lim(),
        )
        .unwrap();
        assert_eq!(tx.timestamp, 17.0);
    }

    #[test]
    fn hostile_json_is_rejected_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "malformed"),
            ("{", "malformed"),
            ("[]", "malformed"),
            (r#"{"tx_id":"a","holder_id":"h","timestamp":1}"#, "payload"),
            (
                r#"{"tx_id":1,"holder_id":"h","timestamp":1,"payload":""}"#,
                "malformed",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":"1","payload":""}"#,
                "malformed",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"!!"}"#,
                "base64",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"aGVsbG8"}"#,
                "base64",
            ),
            (
                r#"{"tx_id":"a\u0000b","holder_id":"h","timestamp":1,"payload":""}"#,
                "tx_id",
            ),
            (
                r#"{"tx_id":"a","holder_id":"","timestamp":1,"payload":""}"#,
                "holder_id",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":-1,"payload":""}"#,
                "negative",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":1e300,"payload":""}"#,
                "milliseconds",
            ),
            (
                r#"{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"","x":1}"#,
                "unknown field",
            ),
        ];
        for (input, word) in cases {
            let e = Tx::from_json(input, &lim()).unwrap_err().to_string();
            assert!(e.contains(word), "{input}: {e:?} should mention {word:?}");
        }
    }

    #[test]
    fn only_a_json_object_is_a_transaction() {
        // serde's derived structs also accept a sequence of the fields in order; a tx
        // must name its fields.
        let cases: &[(&str, &str)] = &[
            (r#"["id","h",1700000000,"aGk="]"#, "got an array"),
            (r#"  ["id","h",1700000000,"aGk="]"#, "got an array"),
            ("[]", "got an array"),
            ("null", "got null"),
            ("true", "got the boolean true"),
            ("12", "got the number 12"),
            ("-1.5", "got the number -1.5"),
            (r#""tx""#, "got a string"),
        ];
        for (input, got) in cases {
            let e = Tx::from_json(input, &lim()).unwrap_err();
            assert!(matches!(e, JsonError::Syntax(_)), "{input}: {e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("a transaction must be a JSON object") && msg.contains(got),
                "{input}: {msg:?} should say it must be an object and mention {got:?}"
            );
            // The wire type refuses it too, for callers that decode it themselves.
            assert!(serde_json::from_str::<TxJson>(input).is_err(), "{input}");
        }
        // The object form with the same values is fine, also with surrounding whitespace.
        let tx = Tx::from_json(
            " {\"tx_id\":\"id\",\"holder_id\":\"h\",\"timestamp\":1700000000,\"payload\":\"aGk=\"}\n",
            &lim(),
        )
        .unwrap();
        assert_eq!(tx.payload, b"hi");
    }

    #[test]
    fn oversized_payload_is_rejected_before_decoding() {
        let body = STANDARD.encode(vec![7u8; 1000]);
        let j = format!(r#"{{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"{body}"}}"#);
        let e = Tx::from_json(
            &j,
            &Limits {
                max_payload_bytes: 100,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, JsonError::Invalid(TxError::PayloadTooLarge { .. })),
            "{e}"
        );
        assert!(
            Tx::from_json(
                &j,
                &Limits {
                    max_payload_bytes: 1000
                }
            )
            .is_ok()
        );
        let e = Tx::from_json(
            &j,
            &Limits {
                max_payload_bytes: 999,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, JsonError::Invalid(TxError::PayloadTooLarge { .. })),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn json_round_trips(
            id in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}",
            holder in "[^\\p{Cc}]{1,20}",
            ts in 0.0f64..1e10,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let tx = Tx::new(id, holder, ts, payload).expect("valid by construction");
            let back = Tx::from_json(&tx.to_json(), &lim()).expect("our own output parses");
            prop_assert_eq!(back, tx);
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,200}") {
            let _ = Tx::from_json(&s, &lim());
        }
    }
}
