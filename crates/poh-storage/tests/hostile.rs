//! Hostile and broken input never writes anything: every malformed transaction, unsafe id,
//! bad timestamp, oversized payload, unusable database or tampered payload file gets a clear
//! error naming the field, path or tx, and leaves the store unchanged byte for byte.
//!
//! The JSON cases are a shared table (`common::hostile`); this file runs them through the
//! library. A front end that reads the same JSON (the CLI) runs the same table.

mod common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::PathBuf;

use common::hostile::{SMALL_LIMIT, json_cases, valid_doc};
use common::sim::SimStore;
use common::snapshot::{sim_snapshot, snapshot};
use common::tx;
use poh_storage::{
    Layout, Limits, OpenOptions, ProblemKind, StorageError, StorageManager, Tx, TxId,
};
use poh_testkit::sim::{Fault, Op};
use poh_types::{JsonError, TxJson};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tempfile::TempDir;

/// A real store under `<root>/data` with a few txs, small limits, and files outside the
/// base that an escaping id or a followed link would reach.
struct Fixture {
    root: TempDir,
    base: PathBuf,
    db: PathBuf,
    sm: StorageManager,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_layout(Layout::Files).await
    }

    async fn with_layout(layout: Layout) -> Self {
        let root = TempDir::new().expect("tempdir");
        let base = root.path().join("data");
        let db = base.join("poh.db");
        let opts = OpenOptions {
            layout: Some(layout),
            ..small_limits()
        };
        let sm = StorageManager::open_with(&base, &db, opts)
            .await
            .expect("open store");
        sm.save_batch(vec![
            tx("t", 1.0, b"existing t"),
            tx("x", 2.0, b"existing x"),
        ])
        .await
        .expect("seed");
        // Its index commit lands now, not during the snapshots that follow.
        sm.flush().await.expect("flush");
        std::fs::write(root.path().join("x.bin"), b"outside the base").expect("outside file");
        Self { root, base, db, sm }
    }

    fn snapshot(&self) -> common::snapshot::Snapshot {
        snapshot(self.root.path())
    }
}

fn small_limits() -> OpenOptions {
    OpenOptions {
        limits: Limits {
            max_payload_bytes: SMALL_LIMIT,
        },
        ..OpenOptions::default()
    }
}

/// The library's JSON entry: bytes as read from a file or stdin, parsed and validated
/// against the store's limits, then saved.
async fn save_json(sm: &StorageManager, input: &[u8]) -> Result<(), String> {
    let parsed = serde_json::from_slice::<TxJson>(input)
        .map_err(JsonError::from)
        .and_then(|j| Tx::from_wire(j, sm.limits()));
    if let Ok(s) = std::str::from_utf8(input) {
        // The `&str` entry agrees.
        assert_eq!(
            Tx::from_json(s, sm.limits()).is_ok(),
            parsed.is_ok(),
            "from_json and from_slice disagree on {s:?}"
        );
    }
    match parsed {
        Err(e) => Err(e.to_string()),
        Ok(t) => sm.save(t).await.map_err(|e| e.to_string()),
    }
}

fn assert_mentions(msg: &str, words: &[&str], ctx: &str) {
    for w in words {
        assert!(
            msg.to_lowercase().contains(&w.to_lowercase()),
            "{ctx}: error {msg:?} should mention {w:?}"
        );
    }
    assert!(
        msg.len() < 600,
        "{ctx}: error message stays readable: {} bytes",
        msg.len()
    );
}

#[tokio::test]
async fn hostile_json_is_rejected_and_writes_nothing() {
    for layout in [Layout::Files, Layout::Segments] {
        let f = Fixture::with_layout(layout).await;
        let before = f.snapshot();
        let cases = json_cases();
        for c in &cases {
            let err = save_json(&f.sm, &c.input)
                .await
                .expect_err(&format!("{} was accepted", c.name));
            assert_mentions(&err, &c.expect, &c.name);
            assert_eq!(
                f.snapshot(),
                before,
                "{layout}: {} changed the store",
                c.name
            );
        }
        // The document every case departs from is fine.
        save_json(&f.sm, &valid_doc())
            .await
            .expect("the valid document");
        assert!(f.sm.verify().await.expect("verify").is_clean());
        eprintln!(
            "{layout}: hostile JSON inputs tried through the library: {}",
            cases.len()
        );
    }
}

#[tokio::test]
async fn hostile_ids_and_fields_are_rejected_and_write_nothing() {
    for layout in [Layout::Files, Layout::Segments] {
        hostile_ids_and_fields(layout).await;
    }
}

async fn hostile_ids_and_fields(layout: Layout) {
    let f = Fixture::with_layout(layout).await;
    let before = f.snapshot();
    let mut tried = 0;

    // Ids: the type refuses them, so no API can be handed one.
    let long = "x".repeat(10 * 1024);
    for (raw, word) in [
        ("", "empty"),
        (long.as_str(), "limit"),
        ("a\0b", "'\\0'"),
        ("a\nb", "'\\n'"),
        ("a\u{1b}[0m", "control"),
        ("a\u{85}b", "control"),
    ] {
        let err = TxId::new(raw).expect_err(raw).to_string();
        assert_mentions(&err, &["tx_id", word], &format!("id {raw:?}"));
        let err = Tx::new(raw, "h", 1.0, b"p".to_vec())
            .expect_err(raw)
            .to_string();
        assert_mentions(&err, &["tx_id"], &format!("id {raw:?}"));
        tried += 1;
    }

    // Fields: a Tx is plain data, so the store checks it again before writing.
    let bad = |mutate: &dyn Fn(&mut Tx)| {
        let mut t = tx("t", 5.0, b"replacement");
        mutate(&mut t);
        t
    };
    let cases: Vec<(&str, Tx, &[&str])> = vec![
        (
            "NaN timestamp",
            bad(&|t| t.timestamp = f64::NAN),
            &["timestamp", "finite"],
        ),
        (
            "inf timestamp",
            bad(&|t| t.timestamp = f64::INFINITY),
            &["timestamp", "finite"],
        ),
        (
            "-inf timestamp",
            bad(&|t| t.timestamp = f64::NEG_INFINITY),
            &["timestamp", "finite"],
        ),
        (
            "negative timestamp",
            bad(&|t| t.timestamp = -1.0),
            &["timestamp", "negative"],
        ),
        (
            "ms timestamp",
            bad(&|t| t.timestamp = 1.7e12),
            &["timestamp", "milliseconds"],
        ),
        (
            "max timestamp",
            bad(&|t| t.timestamp = f64::MAX),
            &["timestamp", "milliseconds"],
        ),
        (
            "empty holder",
            bad(&|t| t.holder_id.clear()),
            &["holder_id", "empty"],
        ),
        (
            "NUL in holder",
            bad(&|t| t.holder_id = "a\0".into()),
            &["holder_id", "control"],
        ),
        (
            "payload over the limit",
            bad(&|t| t.payload = vec![0; SMALL_LIMIT + 1]),
            &["payload", "17 bytes", "limit is 16"],
        ),
    ];
    for (name, t, words) in &cases {
        let err = f.sm.save(t.clone()).await.expect_err(name);
        assert!(matches!(err, StorageError::Invalid(_)), "{name}: {err}");
        assert_mentions(&err.to_string(), words, name);
        assert_mentions(&err.to_string(), &["tx t"], name);
        // In a batch, one bad tx rejects all of them.
        let batch = vec![tx("new1", 1.0, b"ok"), t.clone(), tx("new2", 1.0, b"ok")];
        let err = f.sm.save_batch(batch).await.expect_err(name);
        assert!(matches!(err, StorageError::Invalid(_)), "{name}: {err}");
        assert_eq!(f.snapshot(), before, "{name} changed the store");
        tried += 1;
    }
    assert_eq!(
        f.sm.load(&common::id("t"))
            .await
            .expect("load")
            .expect("t")
            .payload,
        b"existing t"
    );
    eprintln!("{layout}: hostile ids and field values tried through the library: {tried}");
}

#[tokio::test]
async fn db_path_that_is_a_directory_is_refused() {
    let f = Fixture::new().await;
    f.sm.close().await.expect("close");
    let dir_db = f.base.join("not-a-db");
    std::fs::create_dir(&dir_db).expect("mkdir");
    let before = f.snapshot();
    let err = StorageManager::open(&f.base, &dir_db)
        .await
        .expect_err("a directory as db");
    assert!(matches!(err, StorageError::Meta { .. }), "{err}");
    assert_mentions(
        &err.to_string(),
        &[dir_db.to_str().expect("utf-8"), "directory"],
        "db dir",
    );
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn corrupt_database_file_is_refused_and_left_as_is() {
    let f = Fixture::new().await;
    f.sm.close().await.expect("close");
    // Garbage of a few pages, and a short text file.
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, bytes) in [
        ("garbage", garbage.as_slice()),
        ("text", b"hello, not sqlite\n".as_slice()),
    ] {
        std::fs::write(&f.db, bytes).expect("write db");
        let before = f.snapshot();
        let err = StorageManager::open(&f.base, &f.db).await.expect_err(name);
        assert!(matches!(err, StorageError::Meta { .. }), "{name}: {err}");
        assert_mentions(
            &err.to_string(),
            &[f.db.to_str().expect("utf-8"), "not a database"],
            name,
        );
        assert_eq!(
            f.snapshot(),
            before,
            "{name}: the file or the store changed"
        );
        assert_eq!(std::fs::read(&f.db).expect("db"), bytes);
    }
}

/// A read-only base directory: every change is refused with the path and the OS's reason,
/// and nothing changes. Permissions do not stop root, so the directory is made read-only in
/// the simulated file system (`EACCES` on every change); the real `chmod` variant runs too
/// when not root. (The flat-file engine's operations and names, whatever `POH_LAYOUT` says.)
#[tokio::test]
async fn read_only_base_directory_refuses_changes() {
    let s = SimStore::with_layout(Layout::Files);
    let sm = s.open().await.expect("open");
    sm.save(tx("t", 1.0, b"existing")).await.expect("seed");
    for op in [Op::CreateDirAll, Op::WriteNew, Op::Rename, Op::RemoveFile] {
        s.sim.inject(Fault::nth(1, libc::EACCES).from_on().only(op));
    }
    let before = (sim_snapshot(&s.sim, &s.base), snapshot(s.dir.path()));
    let attempts = [
        ("save", sm.save(tx("new", 1.0, b"new")).await),
        ("re-save", sm.save(tx("t", 2.0, b"other")).await),
        (
            "batch",
            sm.save_batch(vec![tx("a", 1.0, b"a"), tx("b", 1.0, b"b")])
                .await,
        ),
    ];
    for (name, r) in attempts {
        let err = r.expect_err(name);
        assert!(matches!(err, StorageError::Io { .. }), "{name}: {err}");
        assert!(err.is_transient(), "{name}: {err}");
        assert_mentions(&err.to_string(), &[".tmp", "permission denied"], name);
        let now = (sim_snapshot(&s.sim, &s.base), snapshot(s.dir.path()));
        assert_eq!(now, before, "{name} changed the store");
    }
    // A failed write is not a failed fsync: the store keeps working once writable again.
    s.sim.clear_faults();
    sm.save(tx("new", 1.0, b"new"))
        .await
        .expect("writable again");
    assert_eq!(
        sm.load(&common::id("t"))
            .await
            .expect("load")
            .expect("t")
            .payload,
        b"existing"
    );
    sm.close().await.expect("close");

    if running_as_root() {
        eprintln!(
            "note: running as root, which ignores permissions: real read-only directory case skipped"
        );
        return;
    }
    let f = Fixture::new().await;
    let mode = |m: u32| {
        use std::os::unix::fs::PermissionsExt;
        for d in [f.base.clone(), f.base.join(".tmp")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m)).expect("chmod");
        }
    };
    mode(0o555);
    let before = f.snapshot();
    let err =
        f.sm.save(tx("new", 1.0, b"new"))
            .await
            .expect_err("read-only");
    mode(0o755);
    assert_mentions(
        &err.to_string(),
        &[".tmp", "permission denied"],
        "chmod 555",
    );
    assert_eq!(f.snapshot(), before);
}

fn running_as_root() -> bool {
    let dir = TempDir::new().expect("tempdir");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").expect("probe");
    std::fs::metadata(&probe).expect("stat").uid() == 0
}

/// A payload file replaced by a directory, or by a symbolic link (even one to a file with
/// exactly the right bytes), is an integrity error naming the tx; the link is never
/// followed; `recover` quarantines the directory or the link itself, and whatever the link
/// pointed to is untouched.
#[tokio::test]
async fn payload_replaced_by_a_directory_or_a_link_is_never_followed() {
    let f = Fixture::new().await;
    let outside = f.root.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = outside.join("secret");
    std::fs::write(&target, b"existing x").expect("target"); // x's exact payload
    let bin = |id: &str| f.base.join(format!("{id}.bin"));

    std::fs::remove_file(bin("t")).expect("rm");
    std::fs::create_dir(bin("t")).expect("dir in place of t");
    std::fs::write(bin("t").join("inner"), b"inside").expect("inner");
    std::fs::remove_file(bin("x")).expect("rm");
    symlink(&target, bin("x")).expect("link in place of x");
    // An orphan link, and a link in `.tmp/` named like a temp of x.
    symlink(&target, bin("evil")).expect("orphan link");
    symlink(&target, f.base.join(".tmp/x.1-0.tmp")).expect("temp link");

    let before = f.snapshot();
    for (id, what) in [("t", "not a regular file"), ("x", "not a regular file")] {
        let err = f.sm.load(&common::id(id)).await.expect_err(id);
        assert!(
            matches!(&err, StorageError::Integrity { tx_id, .. } if tx_id == id),
            "{id}: {err}"
        );
        assert_mentions(&err.to_string(), &[&format!("tx {id}"), what], id);
    }
    let report = f.sm.verify().await.expect("verify");
    assert_eq!(f.snapshot(), before, "load or verify changed the store");
    let corrupt: Vec<_> = report
        .of_kind(ProblemKind::Corrupt)
        .map(|x| x.tx_id.as_str())
        .collect();
    assert_eq!(corrupt, ["t", "x"], "{report:#?}");
    let orphans: Vec<_> = report
        .of_kind(ProblemKind::Orphan)
        .map(|x| x.tx_id.as_str())
        .collect();
    assert_eq!(orphans, ["evil"], "{report:#?}");

    let report = f.sm.recover(false).await.expect("recover");
    assert_eq!(
        report.of_kind(ProblemKind::Corrupt).count(),
        2,
        "{report:#?}"
    );
    for name in ["t.bin", "x.bin", "evil.bin", ".tmp/x.1-0.tmp"] {
        assert!(
            std::fs::symlink_metadata(f.base.join(name)).is_err(),
            "{name} still there"
        );
    }
    // The quarantine holds the directory (with its contents), the link itself and the
    // orphan link (moved, never deleted).
    let mut kept = Vec::new();
    for e in std::fs::read_dir(f.base.join(".quarantine")).expect("quarantine") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if !name.ends_with(".bin") {
            continue;
        }
        let ft = std::fs::symlink_metadata(&p).expect("stat").file_type();
        if name.starts_with("t.") {
            assert!(ft.is_dir());
            assert_eq!(std::fs::read(p.join("inner")).expect("inner"), b"inside");
        } else {
            assert!(
                name.starts_with("x.") || name.starts_with("evil."),
                "{name}"
            );
            assert!(ft.is_symlink());
            assert_eq!(std::fs::read_link(&p).expect("readlink"), target);
        }
        kept.push(name);
    }
    assert_eq!(kept.len(), 3, "{kept:?}");
    // The link's target was never touched.
    assert_eq!(std::fs::read(&target).expect("target"), b"existing x");
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1);
    assert!(f.sm.verify().await.expect("verify").is_clean());
}

/// Random bytes round-trip through save and load exactly, re-saved over one another.
#[test]
fn random_payloads_round_trip() {
    for layout in [Layout::Files, Layout::Segments] {
        random_payloads_round_trip_on(layout);
    }
}

fn random_payloads_round_trip_on(layout: Layout) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = TempDir::new().expect("tempdir");
    let opts = OpenOptions {
        layout: Some(layout),
        ..OpenOptions::default()
    };
    let sm = rt
        .block_on(StorageManager::open_with(
            dir.path().join("d"),
            dir.path().join("d/poh.db"),
            opts,
        ))
        .expect("open");
    let mut runner = TestRunner::new(Config::with_cases(64));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..4096), 0u8..4),
            |(payload, slot)| {
                let t = Tx::new(format!("p{slot}"), "h", 1.0, payload).expect("valid");
                rt.block_on(async {
                    sm.save(t.clone()).await.expect("save");
                    let back = sm.load(&t.tx_id).await.expect("load");
                    prop_assert_eq!(back, Some(t));
                    Ok(())
                })
            },
        )
        .expect("property");
    let report = rt.block_on(sm.verify()).expect("verify");
    assert!(report.is_clean(), "{layout:?}: {report:#?}");
}

/// Any string as a tx_id is either rejected (and nothing is written) or round-trips, with
/// its payload file directly under the base directory.
#[test]
fn arbitrary_ids_are_rejected_or_round_trip() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = TempDir::new().expect("tempdir");
    let base = dir.path().join("d");
    let sm = rt
        .block_on(StorageManager::open(&base, base.join("poh.db")))
        .expect("open");
    let before = snapshot(dir.path());
    let near_valid = "[A-Za-z0-9._/\\\\ \\x00-]{0,12}";
    let strategy = prop_oneof![
        any::<String>(),
        near_valid,
        "[.a]{1,4}",
        "x{120,140}",
        "[x/]{200,255}",
        "\\PC{60,90}"
    ];
    let mut runner = TestRunner::new(Config::with_cases(256));
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |s| {
            let Ok(id) = TxId::new(s.clone()) else {
                // Rejected on every path: the type, and the JSON form.
                let json = format!(
                    r#"{{"tx_id":{},"holder_id":"h","timestamp":1,"payload":""}}"#,
                    serde_json::to_string(&s).expect("encode")
                );
                prop_assert!(Tx::from_json(&json, &Limits::default()).is_err());
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            if !id.fits_file_name() {
                // Its escaped name is longer than a file name may be: refused as input,
                // on every path, before anything is written.
                let e = Tx::new(s.clone(), "h", 1.0, vec![]).expect_err("name too long");
                prop_assert!(e.to_string().contains("too long to store"), "{}", e);
                prop_assert_eq!(rt.block_on(sm.load(&id)).expect("load"), None);
                return Ok(());
            }
            let t = Tx::new(s.clone(), "h", 1.0, s.as_bytes().to_vec()).expect("valid");
            rt.block_on(async {
                sm.save(t.clone()).await.expect("save");
                prop_assert_eq!(sm.load(&id).await.expect("load"), Some(t));
                Ok(())
            })?;
            let file = base.join(format!("{}.bin", id.file_stem()));
            prop_assert_eq!(file.parent(), Some(base.as_path()));
            prop_assert!(std::fs::symlink_metadata(&file).expect("stat").is_file());
            rt.block_on(sm.delete(&id)).expect("delete");
            Ok(())
        })
        .expect("property");
    assert!(accepted.get() > 0, "the strategy produced no valid id");
    assert_eq!(without_db(snapshot(dir.path())), without_db(before));
}

/// Everything but SQLite's own files, which change as rows come and go.
fn without_db(s: common::snapshot::Snapshot) -> common::snapshot::Snapshot {
    s.into_iter()
        .filter(|(p, _)| !p.to_string_lossy().contains("poh.db"))
        .collect()
}

/// Ids that look like paths are ids like any other: each is saved under an escaped name
/// directly inside the base, loads, lists and deletes as itself, and nothing outside the
/// base (the file `x.bin` beside it) is ever touched.
#[tokio::test]
async fn path_like_ids_stay_inside_the_base() {
    let f = Fixture::new().await;
    let outside = std::fs::read(f.root.path().join("x.bin")).expect("outside file");
    let non_utf8 = String::from_utf8_lossy(b"a\xff\xfeb").into_owned();
    let ids = [
        "../x",
        "a/b",
        "/etc/passwd",
        ".hidden",
        "..",
        ".",
        "x.bin/..",
        ".tmp",
        ".poh.lock",
        "('127.0.0.1', 5)",
        non_utf8.as_str(),
    ];
    for (i, raw) in ids.iter().enumerate() {
        let payload = format!("payload {i}").into_bytes();
        f.sm.save(Tx::new(*raw, "h", 10.0 + i as f64, payload.clone()).expect(raw))
            .await
            .expect(raw);
        let id = TxId::new(*raw).expect(raw);
        let got = f.sm.load(&id).await.expect(raw).expect(raw);
        assert_eq!(got.payload, payload, "{raw:?}");
        let name = format!("{}.bin", id.file_stem());
        assert!(name.starts_with('~'), "{raw:?} is escaped: {name}");
        assert_eq!(std::fs::read(f.base.join(&name)).expect(&name), payload);
    }
    let listed: Vec<String> =
        f.sm.list_page(None, 1000)
            .await
            .expect("list")
            .rows
            .into_iter()
            .map(|r| r.tx_id)
            .collect();
    for raw in ids {
        assert!(listed.iter().any(|l| l == raw), "{raw:?} listed as itself");
    }
    let report = f.sm.recover(false).await.expect("recover");
    assert!(report.findings.is_empty(), "{report:?}");
    for raw in ids {
        assert!(f.sm.delete(&TxId::new(raw).expect(raw)).await.expect(raw));
    }
    assert_eq!(
        std::fs::read(f.root.path().join("x.bin")).expect("outside file"),
        outside
    );
    assert!(!f.root.path().join("etc").exists());
    let mut left: Vec<String> = std::fs::read_dir(&f.base)
        .expect("list base")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".poh.lock",
            ".tmp",
            "poh.db",
            "poh.db-shm",
            "poh.db-wal",
            "t.bin",
            "x.bin"
        ]
    );
}
