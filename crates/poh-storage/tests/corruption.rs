//! Corruption is always detected and repaired precisely: altered payloads and rows fail
//! `load` with an integrity error naming the tx, `verify` reports exactly those, `recover`
//! quarantines exactly those; and every crash state (missing payload, orphan, leftover or
//! committed temp) is repaired, with dry runs and transient errors changing nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::sim::SimStore;
use common::snapshot::{sim_snapshot, snapshot};
use common::{id, tx};
use poh_storage::{Layout, ProblemKind, RecoverReport, StorageError, StorageManager, Tx};
use poh_testkit::sim::{Fault, Op};
use tempfile::TempDir;

struct Store {
    dir: TempDir,
    base: PathBuf,
    db: PathBuf,
}

impl Store {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let base = dir.path().join("data");
        let db = dir.path().join("data/poh.db");
        Self { dir, base, db }
    }

    async fn open(&self) -> StorageManager {
        StorageManager::open(&self.base, &self.db)
            .await
            .expect("open store")
    }

    fn sql(&self, sql: &str, params: impl rusqlite::Params) {
        let conn = rusqlite::Connection::open(&self.db).expect("open db");
        conn.execute(sql, params).expect("sql");
    }

    fn bin(&self, id: &str) -> PathBuf {
        self.base.join(format!("{id}.bin"))
    }

    fn temp(&self, id: &str) -> PathBuf {
        self.base.join(".tmp").join(format!("{id}.99999-0.tmp"))
    }

    /// Points the row of `t.tx_id` at `t` (as a committed re-save would) without touching
    /// any file.
    fn commit_row(&self, t: &Tx) {
        self.sql(
            "UPDATE txs SET storage_hash = ?2, size = ?3, timestamp = ?4, holder_id = ?5
             WHERE tx_id = ?1",
            rusqlite::params![
                t.tx_id.as_str(),
                poh_storage::sha256_hex(&t.payload),
                t.payload.len() as i64,
                t.timestamp,
                t.holder_id
            ],
        );
    }
}

fn ids_of(report: &RecoverReport, kind: ProblemKind) -> BTreeSet<String> {
    report.of_kind(kind).map(|f| f.tx_id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn payload_of(i: usize) -> Vec<u8> {
    format!("payload number {i}, some bytes to corrupt").into_bytes()
}

#[tokio::test]
async fn altered_payloads_and_rows_are_found_and_quarantined_exactly() {
    let st = Store::new();
    let sm = st.open().await;
    let txs: Vec<Tx> = (0..10)
        .map(|i| tx(&format!("t{i}"), 100.0 + i as f64, &payload_of(i)))
        .collect();
    sm.save_batch(txs.clone()).await.unwrap();

    // t1: one bit flipped; t3: truncated; t5: emptied; t7: row's hash altered;
    // t9: a byte appended.
    let mut flipped = std::fs::read(st.bin("t1")).unwrap();
    flipped[3] ^= 0x10;
    std::fs::write(st.bin("t1"), &flipped).unwrap();
    let full = std::fs::read(st.bin("t3")).unwrap();
    std::fs::write(st.bin("t3"), &full[..full.len() / 2]).unwrap();
    std::fs::write(st.bin("t5"), b"").unwrap();
    st.sql(
        "UPDATE txs SET storage_hash = ?1 WHERE tx_id = 't7'",
        [poh_storage::sha256_hex(b"something else")],
    );
    let mut grown = std::fs::read(st.bin("t9")).unwrap();
    grown.push(0);
    std::fs::write(st.bin("t9"), &grown).unwrap();
    let bad = set(&["t1", "t3", "t5", "t7", "t9"]);

    for (i, t) in txs.iter().enumerate() {
        let name = format!("t{i}");
        let got = sm.load(&t.tx_id).await;
        if bad.contains(&name) {
            let err = got.unwrap_err();
            assert!(
                matches!(&err, StorageError::Integrity { tx_id, .. } if *tx_id == name),
                "{name}: {err}"
            );
            assert!(
                err.to_string().contains(&name),
                "message names the tx: {err}"
            );
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(t), "{name} still loads");
        }
    }

    let before = snapshot(st.dir.path());
    let report = sm.verify().await.unwrap();
    assert_eq!(snapshot(st.dir.path()), before, "verify changed the store");
    assert_eq!(ids_of(&report, ProblemKind::Corrupt), bad, "{report:#?}");
    assert_eq!(
        report.findings.len(),
        bad.len(),
        "nothing else: {report:#?}"
    );
    assert_eq!((report.rows_checked, report.rows_ok), (10, 5));

    let report = sm.recover(false).await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::Corrupt), bad, "{report:#?}");
    assert_eq!(
        report.findings.len(),
        bad.len(),
        "nothing else: {report:#?}"
    );
    for f in &report.findings {
        assert!(f.action.starts_with("quarantined to"), "{f:?}");
    }

    // The quarantine holds each bad payload, byte for byte as found, with its note.
    let q = st.base.join(".quarantine");
    let mut quarantined = BTreeSet::new();
    for entry in std::fs::read_dir(&q).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let note: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let tx_id = note["tx_id"].as_str().unwrap().to_owned();
        assert!(stem.starts_with(&format!("{tx_id}.")), "{name}");
        assert!(
            note["problem"].as_str().is_some_and(|p| !p.is_empty()),
            "{note}"
        );
        assert!(note["storage_hash"].is_string(), "{note}");
        let kept = std::fs::read(q.join(format!("{stem}.bin"))).unwrap();
        let expected = match tx_id.as_str() {
            "t1" => flipped.clone(),
            "t3" => full[..full.len() / 2].to_vec(),
            "t5" => Vec::new(),
            "t7" => payload_of(7),
            "t9" => grown.clone(),
            other => panic!("quarantined a good tx {other}"),
        };
        assert_eq!(kept, expected, "{tx_id} kept as found");
        quarantined.insert(tx_id);
    }
    assert_eq!(quarantined, bad);
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), 2 * bad.len());

    // The bad txs are gone, the good ones untouched, the store clean.
    for (i, t) in txs.iter().enumerate() {
        let got = sm.load(&t.tx_id).await.unwrap();
        if bad.contains(&format!("t{i}")) {
            assert_eq!(got, None);
            assert!(!st.bin(&format!("t{i}")).exists());
        } else {
            assert_eq!(got.as_ref(), Some(t));
        }
    }
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn row_whose_payload_is_missing_is_dropped() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save_batch(vec![tx("gone", 1.0, b"x"), tx("kept", 1.0, b"y")])
        .await
        .unwrap();
    std::fs::remove_file(st.bin("gone")).unwrap();

    let err = sm.load(&id("gone")).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::PayloadMissing { tx_id, .. } if tx_id == "gone"),
        "{err}"
    );
    let report = sm.verify().await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::MissingPayload), set(&["gone"]));
    assert_eq!(report.findings.len(), 1, "{report:#?}");

    let report = sm.recover(false).await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::MissingPayload), set(&["gone"]));
    // The row is dropped, but what it said is kept as a note in quarantine.
    let action = &report.findings[0].action;
    assert!(action.starts_with("dropped row (noted in "), "{action}");
    let note = quarantined(&st, "gone", "json");
    let note: serde_json::Value = serde_json::from_slice(&note).unwrap();
    assert_eq!(note["tx_id"], "gone");
    assert_eq!(note["holder_id"], "holder-1");
    assert!(!sm.exists(&id("gone")).await.unwrap());
    assert_eq!(sm.load(&id("kept")).await.unwrap().unwrap().payload, b"y");
    assert!(sm.verify().await.unwrap().is_clean());
}

#[tokio::test]
async fn orphan_payload_is_quarantined_never_deleted() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("kept", 1.0, b"y")).await.unwrap();
    std::fs::write(st.bin("orphan"), b"no row").unwrap();

    let report = sm.verify().await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::Orphan), set(&["orphan"]));
    assert_eq!(report.findings.len(), 1, "{report:#?}");
    assert!(st.bin("orphan").exists(), "verify changes nothing");

    let report = sm.recover(false).await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::Orphan), set(&["orphan"]));
    let action = &report.findings[0].action;
    assert!(action.starts_with("quarantined to "), "{action}");
    assert!(!st.bin("orphan").exists());
    assert_eq!(quarantined(&st, "orphan", "bin"), b"no row");
    assert!(st.bin("kept").exists());
    assert!(sm.verify().await.unwrap().is_clean());
}

#[tokio::test]
async fn leftover_temp_without_row_is_removed() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("kept", 1.0, b"y")).await.unwrap();
    sm.close().await.unwrap();

    // Left by a crash before the commit point: removed when the store opens...
    std::fs::write(st.temp("never"), b"half a save").unwrap();
    let sm = st.open().await;
    assert!(!st.temp("never").exists());

    // ...or by recover, when it appears while the store is open (another process).
    std::fs::write(st.temp("never2"), b"half a save").unwrap();
    let report = sm.recover(false).await.unwrap();
    assert_eq!(report.temps_removed, vec![st.temp("never2")]);
    assert!(report.findings.is_empty(), "{report:#?}");
    assert!(!st.temp("never2").exists());
    assert!(!sm.exists(&id("never2")).await.unwrap());
    assert_eq!(sm.load(&id("kept")).await.unwrap().unwrap().payload, b"y");
}

/// A save that passed its commit point (row committed) but crashed before renaming its
/// temp into place is finished: by the next open, or by `recover` on a running store.
#[tokio::test]
async fn committed_temp_is_rolled_forward() {
    for final_file in ["missing", "old"] {
        for at_open in [true, false] {
            let ctx = format!("{final_file} payload, repaired at open: {at_open}");
            let st = Store::new();
            let sm = st.open().await;
            let old = tx("x", 10.0, b"old payload");
            sm.save(old).await.unwrap();
            if at_open {
                sm.close().await.unwrap();
            }
            let new = Tx::new("x", "holder-2", 20.0, b"new payload, longer".to_vec()).unwrap();
            std::fs::write(st.temp("x"), &new.payload).unwrap();
            st.commit_row(&new);
            if final_file == "missing" {
                std::fs::remove_file(st.bin("x")).unwrap();
            }

            let sm = if at_open {
                let sm = st.open().await;
                assert!(!st.temp("x").exists(), "{ctx}");
                sm
            } else {
                // A reader already finds the new payload where the crash left it.
                assert_eq!(
                    sm.load(&id("x")).await.unwrap().as_ref(),
                    Some(&new),
                    "{ctx}"
                );
                let report = sm.recover(false).await.unwrap();
                assert_eq!(
                    report.rolled_forward,
                    vec!["x".to_owned()],
                    "{ctx}: {report:#?}"
                );
                assert!(report.findings.is_empty(), "{ctx}: {report:#?}");
                sm
            };
            assert_eq!(sm.load(&id("x")).await.unwrap(), Some(new.clone()), "{ctx}");
            assert_eq!(std::fs::read(st.bin("x")).unwrap(), new.payload, "{ctx}");
            assert_eq!(std::fs::read_dir(st.base.join(".tmp")).unwrap().count(), 0);
            assert!(sm.verify().await.unwrap().is_clean(), "{ctx}");
            sm.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn dry_run_reports_everything_and_changes_nothing() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save_batch(vec![
        tx("good", 1.0, b"fine"),
        tx("corrupt", 1.0, b"will be altered"),
        tx("missing", 1.0, b"will be removed"),
        tx("rolled", 1.0, b"old"),
    ])
    .await
    .unwrap();
    std::fs::write(st.bin("corrupt"), b"altered").unwrap();
    std::fs::remove_file(st.bin("missing")).unwrap();
    std::fs::write(st.bin("orphan"), b"no row").unwrap();
    std::fs::write(st.temp("stray"), b"no row").unwrap();
    let new = tx("rolled", 2.0, b"new");
    std::fs::write(st.temp("rolled"), &new.payload).unwrap();
    st.commit_row(&new);

    let before = snapshot(st.dir.path());
    for _ in 0..2 {
        let report = sm.recover(true).await.unwrap();
        assert!(report.dry_run);
        assert_eq!(ids_of(&report, ProblemKind::Corrupt), set(&["corrupt"]));
        assert_eq!(
            ids_of(&report, ProblemKind::MissingPayload),
            set(&["missing"])
        );
        assert_eq!(ids_of(&report, ProblemKind::Orphan), set(&["orphan"]));
        assert_eq!(report.findings.len(), 3, "{report:#?}");
        assert_eq!(report.rolled_forward, vec!["rolled".to_owned()]);
        assert_eq!(report.temps_removed, vec![st.temp("stray")]);
        assert_eq!(
            snapshot(st.dir.path()),
            before,
            "a dry run changed the store"
        );
    }
    let report = sm.verify().await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(snapshot(st.dir.path()), before, "verify changed the store");

    // The real run repairs all of it.
    sm.recover(false).await.unwrap();
    assert_ne!(snapshot(st.dir.path()), before);
    assert!(sm.verify().await.unwrap().is_clean());
    assert_eq!(sm.load(&id("rolled")).await.unwrap(), Some(new));
    assert_eq!(
        sm.load(&id("good")).await.unwrap().unwrap().payload,
        b"fine"
    );
}

/// An error that may pass (here `EACCES` on reading one payload, injected because
/// permissions do not stop root) is reported as transient and the tx is left alone. (A
/// flat-file payload's path, whatever `POH_LAYOUT` says.)
#[tokio::test]
async fn transient_read_error_leaves_the_tx_alone() {
    let s = SimStore::with_layout(Layout::Files);
    let sm = s.open().await.unwrap();
    sm.save_batch(vec![tx("locked", 1.0, b"secret"), tx("open", 1.0, b"fine")])
        .await
        .unwrap();
    let locked: &Path = &s.base.join("locked.bin");
    s.sim.inject(
        Fault::nth(1, libc::EACCES)
            .from_on()
            .only(Op::Read)
            .path(locked),
    );

    let err = sm.load(&id("locked")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("locked.bin"),
        "names the path: {err}"
    );

    let before = sim_snapshot(&s.sim, &s.base);
    for dry_run in [true, false] {
        let report = sm.recover(dry_run).await.unwrap();
        assert_eq!(
            ids_of(&report, ProblemKind::Transient),
            set(&["locked"]),
            "{report:#?}"
        );
        assert_eq!(report.findings.len(), 1, "{report:#?}");
        assert_eq!(report.findings[0].action, "left alone");
        assert!(
            report.findings[0].detail.contains("ermission"),
            "{report:#?}"
        );
        assert_eq!(sim_snapshot(&s.sim, &s.base), before, "dry run {dry_run}");
        assert!(sm.exists(&id("locked")).await.unwrap());
    }
    assert_eq!(
        sm.load(&id("open")).await.unwrap().unwrap().payload,
        b"fine"
    );

    // Once the error passes, the tx is there, intact.
    s.sim.clear_faults();
    assert_eq!(
        sm.load(&id("locked")).await.unwrap().unwrap().payload,
        b"secret"
    );
    assert!(sm.verify().await.unwrap().is_clean());
}

/// The one file `.quarantine/<id>.*.<ext>` holds.
fn quarantined(st: &Store, id: &str, ext: &str) -> Vec<u8> {
    let found: Vec<_> = std::fs::read_dir(st.base.join(".quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{id}.")) && name.ends_with(&format!(".{ext}"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    std::fs::read(&found[0]).unwrap()
}
