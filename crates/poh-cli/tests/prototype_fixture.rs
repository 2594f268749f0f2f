//! A store the prototype really wrote (its own CLI, committed as a fixture in
//! `tests/fixtures/prototype-store/`, see the README there) opens with our library and our
//! CLI: every tx lists and loads (with `holder_id` ""), `verify` is clean, a new tx saves,
//! and the prototype's rows and payload files stay exactly as they were.
//!
//! Unlike `interop.rs`, this needs nothing outside the repository, so it always runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::{Scratch, b64, tx_json};
use poh_storage::sha256_hex;
use poh_storage::{StorageManager, Tx, TxId};

/// `(tx_id, timestamp as the prototype printed it, payload)`, as `make.sh` wrote them.
fn expected() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "alpha",
            "1700000005.5",
            b"hello from the prototype".to_vec(),
        ),
        ("beta", "1700000001.0", (0..=255u8).collect()),
        (
            "big.v1",
            "1700000003.0",
            (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("empty", "1700000002.25", Vec::new()),
        ("old-1", "1000.0", b"old".to_vec()),
    ]
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prototype-store/store")
}

/// Copies the fixture's files into `to` (created).
fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).expect("create the store directory");
    for e in std::fs::read_dir(fixture()).expect("read the fixture") {
        let e = e.expect("fixture entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a fixture file");
    }
}

type Rows = BTreeMap<String, (String, f64)>;

/// The prototype's three columns of every row, read with plain SQLite.
fn rows(db: &Path) -> Rows {
    let c = rusqlite::Connection::open(db).expect("open the database");
    let mut stmt = c
        .prepare("SELECT tx_id, storage_hash, timestamp FROM txs")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read rows")
}

/// Every payload file under `base`, by name.
fn payload_files(base: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(base)
        .expect("read the base")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read a payload file"))
        })
        .collect()
}

/// The fixture is what its README says: the prototype's schema, one row per tx with the
/// payload's SHA-256, and the payload files.
fn check_as_written(base: &Path) -> (Rows, BTreeMap<String, Vec<u8>>) {
    let db = base.join("poh.db");
    let c = rusqlite::Connection::open(&db).expect("open the database");
    let cols: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('txs')")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("columns");
    assert_eq!(
        cols,
        ["tx_id", "storage_hash", "timestamp"],
        "prototype schema"
    );
    drop(c);
    let rows = rows(&db);
    let files = payload_files(base);
    let want = expected();
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    for (id, ts, payload) in &want {
        let (hash, t) = &rows[*id];
        assert_eq!(hash, &sha256_hex(payload), "{id}");
        assert_eq!(t.to_string(), ts.trim_end_matches(".0"), "{id}");
        assert_eq!(&files[&format!("{id}.bin")], payload, "{id}");
    }
    assert_eq!(files.len(), want.len());
    (rows, files)
}

/// The prototype's rows and payload files are still there, unchanged.
fn check_unchanged(base: &Path, rows_before: &Rows, files_before: &BTreeMap<String, Vec<u8>>) {
    let rows_after = rows(&base.join("poh.db"));
    let files_after = payload_files(base);
    for (id, row) in rows_before {
        assert_eq!(rows_after.get(id), Some(row), "row {id} changed");
    }
    for (name, data) in files_before {
        assert_eq!(files_after.get(name), Some(data), "{name} changed");
    }
}

#[tokio::test]
async fn the_library_opens_a_store_the_prototype_wrote() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let base = dir.path().join("data");
    let db = base.join("poh.db");
    copy_fixture(&base);
    let (rows_before, files_before) = check_as_written(&base);

    let sm = StorageManager::open(&base, &db)
        .await
        .expect("open the prototype store");
    let page = sm.list_page(None, 100).await.expect("list");
    let ids: Vec<String> = page.rows.into_iter().map(|r| r.tx_id).collect();
    assert_eq!(ids, ["alpha", "beta", "big.v1", "empty", "old-1"]);
    assert!(page.next.is_none());
    for (id, ts, payload) in expected() {
        let got = sm
            .load(&TxId::new(id).expect("id"))
            .await
            .unwrap_or_else(|e| panic!("load {id}: {e}"))
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(
            got.holder_id, "",
            "{id}: the prototype never stored a holder"
        );
        assert_eq!(got.timestamp, ts.parse::<f64>().expect("number"), "{id}");
        assert_eq!(got.payload, payload, "{id}");
    }
    let report = sm.verify().await.expect("verify");
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.rows_ok, 5);
    let stats = sm.stats().await.expect("stats");
    assert_eq!((stats.count, stats.rows_without_size), (5, 5));

    let ours = Tx::new(
        "ours-1",
        "holder-1",
        1_700_000_100.0,
        b"saved by us".to_vec(),
    )
    .expect("valid tx");
    sm.save(ours.clone())
        .await
        .expect("save into the prototype store");
    assert_eq!(
        sm.load(&TxId::new("ours-1").expect("id"))
            .await
            .expect("load")
            .as_ref(),
        Some(&ours)
    );
    let report = sm.recover(false).await.expect("recover");
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    sm.close().await.expect("close");

    check_unchanged(&base, &rows_before, &files_before);
    assert_eq!(rows(&db).len(), 6);
    assert_eq!(payload_files(&base).len(), 6);
}

#[test]
fn the_cli_opens_a_store_the_prototype_wrote() {
    let s = Scratch::new();
    let base = s.base();
    copy_fixture(&base);
    let (rows_before, files_before) = check_as_written(&base);

    assert_eq!(s.list(), ["alpha", "beta", "big.v1", "empty", "old-1"]);
    for (id, ts, payload) in expected() {
        // Byte for byte what the prototype's own `load` prints.
        assert_eq!(
            s.ok(&["load", "--tx-id", id]),
            format!(
                "{{\"tx_id\": \"{id}\", \"holder_id\": \"\", \"timestamp\": {ts}, \"payload\": \"{}\"}}\n",
                b64(&payload)
            )
        );
    }
    let verify: serde_json::Value =
        serde_json::from_str(&s.ok(&["verify", "--json"])).expect("verify report");
    assert_eq!(verify["rows_ok"], 5, "{verify}");
    assert_eq!(verify["findings"], serde_json::json!([]), "{verify}");
    let stats: serde_json::Value =
        serde_json::from_str(&s.ok(&["stats", "--json"])).expect("stats");
    // The prototype recorded no sizes.
    assert_eq!(stats["count"], 5, "{stats}");
    assert_eq!(stats["rows_without_size"], 5, "{stats}");

    assert_eq!(
        s.ok(&[
            "save",
            "--tx",
            &tx_json("ours-1", 1_700_000_100.0, b"saved by us")
        ]),
        "Saved ours-1\n"
    );
    let ours: serde_json::Value =
        serde_json::from_str(&s.ok(&["load", "--tx-id", "ours-1"])).expect("JSON");
    assert_eq!(ours["holder_id"], "holder-1");
    assert_eq!(ours["payload"], b64(b"saved by us"));
    let recover: serde_json::Value =
        serde_json::from_str(&s.ok(&["recover"])).expect("recover report");
    assert_eq!(recover["findings"], serde_json::json!([]), "{recover}");
    s.ok(&["verify"]);
    assert_eq!(
        s.list(),
        ["alpha", "beta", "big.v1", "empty", "old-1", "ours-1"]
    );

    check_unchanged(&base, &rows_before, &files_before);
}
