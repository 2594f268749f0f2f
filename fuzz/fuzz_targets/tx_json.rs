//! `Tx::from_json` never panics on any input, and what it accepts survives
//! to_json → from_json unchanged (and re-encodes to the same text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use poh_types::{Limits, Tx};

fuzz_target!(|data: &[u8]| {
    // JSON text is UTF-8; other bytes are refused before the codec (see the hostile-input
    // table in poh-storage's tests), so feed the codec what is text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        max_payload_bytes: 4096,
    };
    let Ok(tx) = Tx::from_json(text, &limits) else {
        return;
    };
    let json = tx.to_json();
    let back = match Tx::from_json(&json, &limits) {
        Ok(t) => t,
        Err(e) => panic!("our own output {json:?} does not parse: {e}"),
    };
    assert_eq!(back, tx, "round trip changed the tx");
    assert_eq!(back.to_json(), json, "re-encoding is not stable");
});
