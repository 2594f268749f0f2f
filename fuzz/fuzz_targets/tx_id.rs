//! `TxId::new` never panics, and every id it accepts is one normal path component: joined
//! to a base directory as `<id>.bin` it names a file directly inside that directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use poh_types::{MAX_TX_ID_LEN, TxId};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let Ok(id) = TxId::new(s.as_ref()) else {
        return;
    };
    assert_eq!(id.as_str(), s, "an accepted id is kept as given");
    assert!(id.as_str().len() <= MAX_TX_ID_LEN);
    assert!(!id.as_str().starts_with('.'));
    let comps: Vec<_> = Path::new(id.as_str()).components().collect();
    assert!(
        matches!(comps.as_slice(), [Component::Normal(c)] if *c == id.as_str()),
        "{id:?} is not a single normal component: {comps:?}"
    );
    let base = Path::new("/store/base");
    let file = base.join(format!("{id}.bin"));
    assert_eq!(
        file.parent(),
        Some(base),
        "{id:?} escapes the base directory"
    );
});
