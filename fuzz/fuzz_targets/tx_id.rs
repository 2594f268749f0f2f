//! `TxId::new` never panics; every id it accepts maps to one plain file name directly
//! inside the base directory (`<stem>.bin`, never a dot-name), the mapping parses back to
//! the same id, and no other name parses back to it. `TxId::from_file_stem` never panics
//! and accepts only canonical stems. The prototype's name for an id, when the store reads
//! it, is one plain name inside the base that no id's own name can be.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use poh_types::{MAX_TX_ID_LEN, TxId};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    // Any string read as a file stem either is not one, or is exactly the stem of the id
    // it names.
    if let Some(id) = TxId::from_file_stem(s.as_ref()) {
        assert_eq!(id.file_stem(), s.as_ref(), "non-canonical stem accepted");
    }
    let Ok(id) = TxId::new(s.as_ref()) else {
        return;
    };
    assert_eq!(id.as_str(), s, "an accepted id is kept as given");
    assert!(id.as_str().len() <= MAX_TX_ID_LEN);
    assert!(!id.as_str().chars().any(char::is_control));
    let stem = id.file_stem();
    assert!(stem.is_ascii() && !stem.starts_with('.'), "{stem:?}");
    if id.is_safe_name() {
        assert_eq!(stem, id.as_str(), "a safe id keeps its name");
    }
    assert_eq!(
        TxId::from_file_stem(&stem).as_ref(),
        Some(&id),
        "{id:?} does not parse back from {stem:?}"
    );
    let name = format!("{stem}.bin");
    let comps: Vec<_> = Path::new(&name).components().collect();
    assert!(
        matches!(comps.as_slice(), [Component::Normal(c)] if *c == name.as_str()),
        "{id:?} is not a single normal component: {comps:?}"
    );
    if let Some(proto) = id.prototype_file_stem() {
        assert_ne!(proto, &*stem, "{id:?}: the prototype name is its own");
        assert!(
            TxId::from_file_stem(proto).is_none(),
            "{id:?}: its prototype name {proto:?} is another id's name"
        );
        let name = format!("{proto}.bin");
        assert!(name.len() <= 255, "{id:?}: {name:?} is too long for a name");
        let comps: Vec<_> = Path::new(&name).components().collect();
        assert!(
            matches!(comps.as_slice(), [Component::Normal(c)] if *c == name.as_str()),
            "{id:?}: its prototype name is not a single normal component: {comps:?}"
        );
    }
    let base = Path::new("/store/base");
    assert_eq!(
        base.join(&name).parent(),
        Some(base),
        "{id:?} escapes the base directory"
    );
});
