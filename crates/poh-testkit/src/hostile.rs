//! The table of hostile transaction inputs, shared by every front end that accepts a
//! transaction as JSON (the library here; the CLI's `save --tx` and `import` read the same
//! bytes). A runner feeds each [`JsonCase::input`] to its front end, expects a rejection
//! whose message contains every word of [`JsonCase::expect`] (case-insensitive), and checks
//! the store is unchanged byte for byte.

/// The payload limit stores under hostile-input tests are opened with.
pub const SMALL_LIMIT: usize = 16;

/// One hostile JSON document.
pub struct JsonCase {
    /// What the case is about.
    pub name: String,
    /// The raw bytes (not always UTF-8).
    pub input: Vec<u8>,
    /// Words the error message must contain.
    pub expect: Vec<&'static str>,
}

/// A JSON transaction with the given raw (already JSON-encoded) field values.
pub fn doc(tx_id: &str, holder_id: &str, timestamp: &str, payload: &str) -> Vec<u8> {
    format!(
        r#"{{"tx_id":{tx_id},"holder_id":{holder_id},"timestamp":{timestamp},"payload":{payload}}}"#
    )
    .into_bytes()
}

fn case(name: impl Into<String>, input: Vec<u8>, expect: &[&'static str]) -> JsonCase {
    JsonCase {
        name: name.into(),
        input,
        expect: expect.to_vec(),
    }
}

/// A valid payload field ("hello").
pub const OK_PAYLOAD: &str = r#""aGVsbG8=""#;

/// Every hostile JSON input. A valid document differs from each in one field.
pub fn json_cases() -> Vec<JsonCase> {
    let id = |raw: &str, expect: &[&'static str]| {
        case(
            format!("tx_id {raw}"),
            doc(raw, r#""h""#, "1700000000", OK_PAYLOAD),
            expect,
        )
    };
    let ts = |raw: &str, expect: &[&'static str]| {
        case(
            format!("timestamp {raw}"),
            doc(r#""t""#, r#""h""#, raw, OK_PAYLOAD),
            expect,
        )
    };
    let payload = |name: &str, raw: &str, expect: &[&'static str]| {
        case(
            format!("payload {name}"),
            doc(r#""t""#, r#""h""#, "1700000000", raw),
            expect,
        )
    };
    let long_id = format!("\"{}\"", "x".repeat(10 * 1024));
    // Standard base64 of n bytes of 7: "BwcH" per three bytes, then the padded rest.
    let sevens = |n: usize| {
        let tail = match n % 3 {
            0 => "",
            1 => "Bw==",
            _ => "Bwc=",
        };
        format!("\"{}{tail}\"", "BwcH".repeat(n / 3))
    };
    let over_limit = sevens(SMALL_LIMIT + 1);
    let huge = sevens(64 * 1024);
    let mut non_utf8 = doc(r#""a?b""#, r#""h""#, "1", OK_PAYLOAD);
    let q = non_utf8.iter().position(|&b| b == b'?').expect("marker");
    non_utf8.splice(q..=q, [0xff, 0xfe]);

    vec![
        // tx_id: empty, huge, control characters (path-like ids are valid: they are
        // stored under escaped names, see tests/hostile.rs).
        id(r#""""#, &["tx_id", "empty"]),
        id(&long_id, &["tx_id", "10240 bytes", "limit"]),
        id(r#""a\u0000b""#, &["tx_id", "'\\0'"]),
        id(r#""a\nb""#, &["tx_id", "control"]),
        id(r#""a\u001b[0m""#, &["tx_id", "control"]),
        id(r#""\udc80""#, &["malformed", "surrogate"]),
        id(r#""a\ud800b""#, &["malformed", "escape"]),
        case(
            "tx_id with invalid UTF-8 bytes",
            non_utf8,
            &["malformed", "unicode"],
        ),
        id("1", &["tx_id", "must be a string", "number 1"]),
        id("null", &["tx_id", "must be a string", "null"]),
        // holder_id
        case(
            "holder_id empty",
            doc(r#""t""#, r#""""#, "1", OK_PAYLOAD),
            &["holder_id", "empty"],
        ),
        case(
            "holder_id NUL",
            doc(r#""t""#, r#""a\u0000""#, "1", OK_PAYLOAD),
            &["holder_id", "control"],
        ),
        // timestamp: not finite (through JSON: overflow or strings), negative, milliseconds.
        ts("1e400", &["malformed", "number out of range"]),
        ts("-1e400", &["malformed", "number out of range"]),
        ts(
            r#""NaN""#,
            &["timestamp", "must be a number", "string \"NaN\""],
        ),
        ts(r#""inf""#, &["timestamp", "must be a number", "string"]),
        ts(
            r#""1700000000""#,
            &["timestamp", "must be a number", "string"],
        ),
        ts("NaN", &["malformed"]),
        ts("null", &["timestamp", "must be a number", "null"]),
        ts("-1", &["timestamp", "negative"]),
        ts("-0.001", &["timestamp", "negative"]),
        ts("1700000000000", &["timestamp", "milliseconds"]),
        ts("1e300", &["timestamp", "milliseconds"]),
        // payload: over the limit, not base64, not standard base64, wrong type.
        payload(
            "over the limit",
            &over_limit,
            &["payload", "limit is 16 bytes"],
        ),
        payload(
            "64 KiB, far over the limit",
            &huge,
            &["payload", "limit is 16 bytes"],
        ),
        payload("not base64", r#""!!!!""#, &["base64"]),
        payload("unpadded", r#""aGVsbG8""#, &["base64"]),
        payload("URL-safe alphabet", r#""-_-_""#, &["base64"]),
        payload("with a newline", r#""aGVs\nbG8=""#, &["base64"]),
        payload("number", "12", &["payload", "must be a string"]),
        payload(
            "array of bytes",
            "[104,105]",
            &["payload", "must be a string", "array"],
        ),
        // malformed documents
        case("empty input", b"".to_vec(), &["malformed", "eof"]),
        case(
            "truncated",
            br#"{"tx_id":"t","holder_id""#.to_vec(),
            &["malformed", "eof"],
        ),
        case("array", b"[]".to_vec(), &["malformed"]),
        case("null", b"null".to_vec(), &["malformed"]),
        case("a string", br#""tx""#.to_vec(), &["malformed"]),
        case(
            "trailing garbage",
            [doc(r#""t""#, r#""h""#, "1", OK_PAYLOAD), b" x".to_vec()].concat(),
            &["malformed", "trailing"],
        ),
        case(
            "two documents",
            [
                doc(r#""t""#, r#""h""#, "1", OK_PAYLOAD),
                doc(r#""u""#, r#""h""#, "1", OK_PAYLOAD),
            ]
            .concat(),
            &["malformed", "trailing"],
        ),
        case(
            "missing payload",
            br#"{"tx_id":"t","holder_id":"h","timestamp":1}"#.to_vec(),
            &["malformed", "missing field", "payload"],
        ),
        case(
            "unknown field",
            br#"{"tx_id":"t","holder_id":"h","timestamp":1,"payload":"","holderid":"x"}"#.to_vec(),
            &["malformed", "unknown field", "holderid"],
        ),
        case(
            "duplicate field",
            br#"{"tx_id":"t","tx_id":"u","holder_id":"h","timestamp":1,"payload":""}"#.to_vec(),
            &["malformed", "duplicate field", "tx_id"],
        ),
    ]
}

/// The valid document every case departs from; it must be accepted.
pub fn valid_doc() -> Vec<u8> {
    doc(r#""t""#, r#""h""#, "1700000000", OK_PAYLOAD)
}
