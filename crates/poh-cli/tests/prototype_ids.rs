//! A store the prototype wrote with ids that are not safe file names (its own CLI,
//! committed as a fixture in `tests/fixtures/prototype-ids/`, see the README there) opens
//! with no manual step: every tx whose payload the prototype kept inside the base loads
//! from the prototype's name (`('127.0.0.1', 5).bin`) while its own name is missing, and
//! `recover` renames those payloads to their own names, durably, losing nothing. Nothing
//! outside the base is read or touched (the prototype wrote `../outside` there), a link
//! at a prototype name is never followed, and a corrupt payload at a prototype name is
//! quarantined, never deleted.
//!
//! Needs nothing outside the repository, so it always runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::{Scratch, b64, tx_json};
use poh_storage::{ProblemKind, StorageError, StorageManager, Tx, TxId};

/// The txs of the fixture whose payloads the prototype wrote inside the base: `(tx_id,
/// timestamp, payload)`, as `make.sh` left them.
fn inside() -> Vec<(String, f64, Vec<u8>)> {
    vec![
        (
            "('127.0.0.1', 5)".into(),
            1_700_000_007.25,
            b"saved again by the prototype".to_vec(),
        ),
        (".hidden".into(), 1_700_000_003.0, Vec::new()),
        ("a b".into(), 1_700_000_002.0, (0..=255u8).collect()),
        ("plain-1".into(), 1_700_000_005.0, b"a safe id".to_vec()),
        (
            "x".repeat(200),
            1_700_000_004.0,
            (0..5000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        (
            "é".into(),
            1_700_000_001.0,
            "payload of é".as_bytes().to_vec(),
        ),
    ]
}

/// The ids whose payload is at the prototype's name, not at the store's own.
fn unusual() -> Vec<String> {
    inside()
        .into_iter()
        .map(|t| t.0)
        .filter(|id| id != "plain-1")
        .collect()
}

/// The id the prototype stored outside its base (`<base>/../outside.bin`).
const OUTSIDE: &str = "../outside";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prototype-ids")
}

/// Copies the fixture into `dir`: the store as `dir/data` and the file the prototype
/// wrote outside it as `dir/outside.bin`. Returns the base.
fn copy_fixture(dir: &Path) -> PathBuf {
    let base = dir.join("data");
    std::fs::create_dir_all(&base).expect("create the store directory");
    for e in std::fs::read_dir(fixture().join("store")).expect("read the fixture") {
        let e = e.expect("fixture entry");
        std::fs::copy(e.path(), base.join(e.file_name())).expect("copy a fixture file");
    }
    std::fs::copy(fixture().join("outside.bin"), dir.join("outside.bin"))
        .expect("copy the outside file");
    base
}

fn id(s: &str) -> TxId {
    TxId::new(s).expect("a valid id")
}

fn own_name(base: &Path, tx_id: &str) -> PathBuf {
    base.join(format!("{}.bin", id(tx_id).file_stem()))
}

fn prototype_name(base: &Path, tx_id: &str) -> PathBuf {
    base.join(format!("{tx_id}.bin"))
}

/// Every file directly in `dir` and below it, with its bytes (links as their target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read a directory") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                todo.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("read a link");
                out.insert(p, target.into_os_string().into_encoded_bytes());
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read a file"));
            }
        }
    }
    out
}

async fn load(sm: &StorageManager, tx_id: &str) -> poh_storage::Result<Option<Tx>> {
    sm.load(&id(tx_id)).await
}

#[tokio::test]
async fn payloads_at_the_prototypes_names_load_and_recover_adopts_them() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let base = copy_fixture(dir.path());
    let db = base.join("poh.db");
    for tx_id in unusual() {
        assert!(prototype_name(&base, &tx_id).is_file(), "{tx_id}");
        assert!(!own_name(&base, &tx_id).exists(), "{tx_id}");
    }
    let outside = std::fs::read(dir.path().join("outside.bin")).expect("outside file");

    // A read-only handle (as `verify`, `load`) reads them and changes nothing.
    let before = tree(dir.path());
    let ro = StorageManager::open_with(
        &base,
        &db,
        poh_storage::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .expect("open read-only");
    for (tx_id, ts, payload) in inside() {
        let tx = load(&ro, &tx_id)
            .await
            .unwrap_or_else(|e| panic!("load {tx_id}: {e}"))
            .unwrap_or_else(|| panic!("{tx_id} missing"));
        assert_eq!((tx.timestamp, &tx.payload), (ts, &payload), "{tx_id}");
        assert_eq!(tx.holder_id, "", "the prototype never stored a holder");
    }
    let report = ro.verify().await.expect("verify");
    let mut adopted = report.adopted.clone();
    adopted.sort();
    assert_eq!(adopted, unusual(), "{report:#?}");
    // The one problem: the payload the prototype wrote outside its base is not looked at.
    let findings: Vec<(&str, ProblemKind)> = report
        .findings
        .iter()
        .map(|f| (f.tx_id.as_str(), f.kind))
        .collect();
    assert_eq!(findings, [(OUTSIDE, ProblemKind::MissingPayload)]);
    ro.close().await.expect("close");
    assert_eq!(tree(dir.path()), before, "a read-only open changed files");

    // A writable open: loads still read the prototype's names; the payload outside the
    // base is reported missing (FileNotFoundError in Python), never read.
    let sm = StorageManager::open(&base, &db).await.expect("open");
    match load(&sm, OUTSIDE).await {
        Err(StorageError::PayloadMissing { path, .. }) => {
            assert_eq!(path.parent(), Some(base.as_path()), "{}", path.display());
        }
        other => panic!("{OUTSIDE}: {other:?}"),
    }
    let report = sm.recover(false).await.expect("recover");
    let mut adopted = report.adopted.clone();
    adopted.sort();
    assert_eq!(adopted, unusual(), "{report:#?}");
    assert_eq!(report.of_kind(ProblemKind::MissingPayload).count(), 1);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    for tx_id in unusual() {
        assert!(!prototype_name(&base, &tx_id).exists(), "{tx_id}");
        assert!(own_name(&base, &tx_id).is_file(), "{tx_id}");
    }
    for (tx_id, ts, payload) in inside() {
        let tx = load(&sm, &tx_id).await.expect("load").expect("present");
        assert_eq!((tx.timestamp, tx.payload), (ts, payload), "{tx_id}");
    }
    // Its row was dropped with a note; the file outside the base is as it was.
    assert_eq!(load(&sm, OUTSIDE).await.expect("load"), None);
    assert_eq!(
        std::fs::read(dir.path().join("outside.bin")).expect("outside file"),
        outside
    );
    let again = sm.recover(false).await.expect("recover again");
    assert!(again.is_clean() && again.adopted.is_empty(), "{:#?}", again);
    sm.close().await.expect("close");
}

#[tokio::test]
async fn saves_and_deletes_leave_nothing_at_the_prototypes_names() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let base = copy_fixture(dir.path());
    let sm = StorageManager::open(&base, base.join("poh.db"))
        .await
        .expect("open");
    let net = "('127.0.0.1', 5)";

    // A re-save: the new payload at the own name, the old one at the prototype's gone.
    let new = Tx::new(net, "node", 1_800_000_000.0, b"saved by us".to_vec()).expect("tx");
    sm.save(new.clone()).await.expect("save");
    assert!(!prototype_name(&base, net).exists());
    assert_eq!(
        std::fs::read(own_name(&base, net)).expect("own"),
        b"saved by us"
    );
    assert_eq!(load(&sm, net).await.expect("load"), Some(new));

    // A delete removes the payload at the prototype's name.
    assert!(sm.delete(&id("a b")).await.expect("delete"));
    assert!(!prototype_name(&base, "a b").exists());
    assert_eq!(load(&sm, "a b").await.expect("load"), None);

    // So does expiry.
    let gone = sm
        .delete_expired(1_700_000_004.5, 1.0, 100)
        .await
        .expect("expire");
    assert_eq!(gone, ["é", ".hidden"]);
    assert!(!prototype_name(&base, "é").exists());
    assert!(!prototype_name(&base, ".hidden").exists());
    sm.close().await.expect("close");
}

#[tokio::test]
async fn a_corrupt_payload_at_a_prototype_name_is_quarantined_not_deleted() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let base = copy_fixture(dir.path());
    let bad = prototype_name(&base, "é");
    std::fs::write(&bad, b"altered").expect("corrupt it");
    let sm = StorageManager::open(&base, base.join("poh.db"))
        .await
        .expect("open");
    match load(&sm, "é").await {
        Err(StorageError::Integrity { detail, .. }) => {
            assert!(detail.contains("prototype's name"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let report = sm.recover(false).await.expect("recover");
    let corrupt: Vec<_> = report.of_kind(ProblemKind::Corrupt).collect();
    assert_eq!(corrupt.len(), 1, "{report:#?}");
    assert_eq!(corrupt[0].tx_id, "é");
    assert!(!bad.exists());
    let kept: Vec<Vec<u8>> = tree(&base.join(".quarantine"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "bin"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(kept, [b"altered".to_vec()], "the altered file is kept");
    assert_eq!(load(&sm, "é").await.expect("load"), None);
    sm.close().await.expect("close");
}

#[tokio::test]
async fn a_link_at_a_prototype_name_is_never_followed() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let base = copy_fixture(dir.path());
    // Planted: the prototype's name of "a b" points at a file outside the base whose
    // bytes would even verify.
    let target = dir.path().join("secret.bin");
    std::fs::copy(prototype_name(&base, "a b"), &target).expect("copy");
    std::fs::remove_file(prototype_name(&base, "a b")).expect("remove");
    std::os::unix::fs::symlink(&target, prototype_name(&base, "a b")).expect("symlink");

    let sm = StorageManager::open(&base, base.join("poh.db"))
        .await
        .expect("open");
    match load(&sm, "a b").await {
        Err(StorageError::Integrity { detail, .. }) => {
            assert!(detail.contains("not a regular file"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let report = sm.recover(false).await.expect("recover");
    assert!(!report.adopted.contains(&"a b".to_owned()), "{report:#?}");
    assert_eq!(
        report
            .of_kind(ProblemKind::Corrupt)
            .map(|f| f.tx_id.as_str())
            .collect::<Vec<_>>(),
        ["a b"]
    );
    // The link itself went to quarantine; its target is untouched, and nothing took
    // the own name of "a b".
    assert!(std::fs::symlink_metadata(prototype_name(&base, "a b")).is_err());
    assert!(!own_name(&base, "a b").exists());
    assert_eq!(
        std::fs::read(&target).expect("target"),
        (0..=255u8).collect::<Vec<_>>()
    );
    sm.close().await.expect("close");
}

#[test]
fn the_cli_reads_and_recovers_a_prototype_store_with_unusual_ids() {
    let s = Scratch::new();
    let base = copy_fixture(s.path());
    let mut ids: Vec<String> = inside().into_iter().map(|t| t.0).collect();
    ids.push(OUTSIDE.into());
    ids.sort();
    assert_eq!(s.list(), ids);
    let net = "('127.0.0.1', 5)";
    // Byte for byte what the prototype's own `load` printed.
    assert_eq!(
        s.ok(&["load", "--tx-id", net]),
        format!(
            "{{\"tx_id\": \"('127.0.0.1', 5)\", \"holder_id\": \"\", \"timestamp\": 1700000007.25, \"payload\": \"{}\"}}\n",
            b64(b"saved again by the prototype")
        )
    );
    let verify = s.cmd().arg("verify").output().expect("run verify");
    let text = String::from_utf8_lossy(&verify.stdout);
    // The one problem is the payload written outside the base.
    assert_eq!(verify.status.code(), Some(4), "{text}");
    assert!(text.contains("../outside: missing_payload"), "{text}");
    assert!(
        text.contains("('127.0.0.1', 5): payload at the prototype's name"),
        "{text}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&s.ok(&["recover"])).expect("recover report");
    let mut adopted: Vec<String> =
        serde_json::from_value(report["adopted"].clone()).expect("adopted ids");
    adopted.sort();
    assert_eq!(adopted, unusual(), "{report}");
    assert!(own_name(&base, net).is_file());
    s.ok(&["verify"]);
    s.ok(&["save", "--tx", &tx_json("é", 1_800_000_000.0, b"new")]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&s.ok(&["load", "--tx-id", "é"])).expect("JSON")
            ["payload"],
        b64(b"new")
    );
}
