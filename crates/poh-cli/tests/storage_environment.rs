//! The store survives a hostile environment without losing or touching what is not its
//! own: a save whose commit passed but whose rename failed is never undone by repair; a
//! database that lost its schema, or a directory that is not a store, is refused rather
//! than "repaired"; orphan payloads are quarantined, never deleted; links planted at the
//! store's own names are refused, never followed; reads never wait for a stopped lock
//! holder and writers give up after a bounded wait naming it; dry runs and `verify` change
//! no byte; SQLite-level damage is reported by `verify`.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::{Scratch, assert_same_files, tx_json};
use common::sim::SimStore;
use common::snapshot::snapshot;
use common::{id, tx};
use poh_storage::{Layout, ProblemKind, StorageError};
use poh_testkit::sim::{Fault, Op};

fn run(s: &Scratch, args: &[&str]) -> Output {
    s.cmd().args(args).output().expect("run poh-storage")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One run of every `poh-storage` command on tx `a` (and a save of `save`).
fn every_command(save: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["list"],
        vec!["load", "--tx-id", "a"],
        vec!["stats"],
        vec!["verify"],
        vec!["recover"],
        vec!["recover", "--dry-run"],
        vec!["delete", "--tx-id", "a"],
        vec!["save", "--tx", save],
        vec!["init"],
    ]
}

/// Asserts a run failed with `code` and that stderr mentions every word.
fn failed(o: &Output, code: i32, words: &[&str], ctx: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{ctx}: stderr: {err}");
    for w in words {
        assert!(err.contains(w), "{ctx}: stderr lacks {w:?}: {err}");
    }
}

// ------------------------------------------------------------- D1: committed, not renamed

/// A save whose rows committed but whose rename failed says so, loads, survives
/// `recover` (which used to drop the row and so make the temp garbage) and is finished
/// once the rename works again. (A flat-file store's crash window: a segments store has no
/// rename in its save, so this runs on flat files whatever `POH_LAYOUT` says.)
#[tokio::test]
async fn a_committed_save_whose_rename_fails_is_never_dropped_by_recover() {
    let st = SimStore::with_layout(Layout::Files);
    let sm = st.open().await.expect("open");
    sm.save(tx("old", 1.0, b"kept")).await.expect("save old");
    let dest = st.base.join("n1.bin");
    st.sim.inject(
        Fault::nth(1, libc::EPERM)
            .only(Op::Rename)
            .path(&dest)
            .from_on(),
    );

    let err = sm
        .save(tx("n1", 2.0, b"hi"))
        .await
        .expect_err("rename fails");
    assert!(
        matches!(&err, StorageError::Unfinished { tx_ids, .. } if tx_ids == &["n1"]),
        "{err:?}"
    );
    let msg = err.to_string();
    for w in ["n1", "committed", "next open"] {
        assert!(msg.contains(w), "message lacks {w:?}: {msg}");
    }
    let loaded = sm.load(&id("n1")).await.expect("load").expect("present");
    assert_eq!(loaded.payload, b"hi");
    sm.close().await.expect("close");

    // Reopen (its repair cannot rename either) and recover: the row stays.
    let sm = st.open().await.expect("reopen");
    let report = sm.recover(false).await.expect("recover");
    let unfinished: Vec<_> = report
        .of_kind(ProblemKind::Unfinished)
        .map(|f| f.tx_id.as_str())
        .collect();
    assert_eq!(unfinished, ["n1"], "{report:#?}");
    assert_eq!(report.of_kind(ProblemKind::MissingPayload).count(), 0);
    assert!(sm.exists(&id("n1")).await.expect("exists"), "row dropped");
    sm.close().await.expect("close");

    // Once the directory takes renames again, the next open finishes the save.
    st.sim.clear_faults();
    let sm = st.open().await.expect("reopen");
    let loaded = sm.load(&id("n1")).await.expect("load").expect("present");
    assert_eq!(loaded.payload, b"hi");
    assert_eq!(st.sim.contents(&dest).as_deref(), Some(&b"hi"[..]));
    assert!(sm.verify().await.expect("verify").is_clean());
    sm.close().await.expect("close");
}

// ---------------------------------------------------------------- D5: lost metadata

/// A store whose database was emptied (0 bytes) is not taken for a new, empty store by any
/// command: reads and writes refuse it, naming the database, and nothing changes — in
/// particular `recover` no longer deletes every payload as an orphan.
#[test]
fn an_emptied_database_beside_payloads_is_refused_by_every_command() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    s.save("b", 2.0, b"beta");
    std::fs::write(s.base().join("poh.db"), b"").expect("empty the database");
    let before = s.snapshot();
    let save = tx_json("c", 3.0, b"gamma");
    for args in every_command(&save) {
        let o = run(&s, &args);
        failed(&o, 1, &["not a poh store", "poh.db"], &format!("{args:?}"));
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
}

/// `init` (and any command that creates a store) refuses a non-empty directory that is
/// not a store: a user's `firmware.bin` there would otherwise be taken for an orphan.
#[test]
fn a_store_is_never_created_over_a_directory_holding_other_files() {
    let s = Scratch::new();
    std::fs::create_dir(s.base()).expect("mkdir");
    std::fs::write(s.base().join("firmware.bin"), b"not a payload").expect("user file");
    let before = s.snapshot();
    let save = tx_json("a", 1.0, b"x");
    for args in [vec!["init"], vec!["save", "--tx", save.as_str()]] {
        let o = run(&s, &args);
        failed(
            &o,
            1,
            &["not a poh store", "firmware.bin"],
            &format!("{args:?}"),
        );
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
    // An empty directory is fine.
    let empty = Scratch::new();
    std::fs::create_dir(empty.base()).expect("mkdir");
    empty.ok(&["init"]);
}

/// Payload files whose rows were lost (a database rolled back to an older copy, as after
/// losing its WAL) are orphans: `recover` moves them, byte for byte, to `.quarantine/`.
#[test]
fn orphans_from_lost_rows_are_quarantined_not_deleted() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    let db = s.base().join("poh.db");
    let old = std::fs::read(&db).expect("db copy");
    s.save("b", 2.0, b"beta");
    s.save("c", 3.0, b"gamma");
    std::fs::write(&db, &old).expect("roll the database back");

    let rep: serde_json::Value = serde_json::from_str(&s.ok(&["recover"])).expect("report is JSON");
    let orphans: Vec<&str> = rep["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "orphan")
        .map(|f| f["tx_id"].as_str().expect("id"))
        .collect();
    assert_eq!(orphans, ["b", "c"], "{rep}");
    let mut kept: Vec<Vec<u8>> = std::fs::read_dir(s.base().join(".quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    kept.sort();
    assert_eq!(kept, [b"beta".to_vec(), b"gamma".to_vec()]);
    assert_eq!(s.list(), ["a"]);
}

// ------------------------------------------------- D3, D8, D9: the store's own names

/// A sentinel directory outside the store, with a file in it, to plant links to.
fn sentinel(s: &Scratch) -> PathBuf {
    let dir = s.path().join("sentinel");
    std::fs::create_dir(&dir).expect("sentinel");
    std::fs::write(dir.join("precious.bin"), b"not the store's").expect("sentinel file");
    std::fs::write(dir.join("a.1-0.tmp"), b"named like a temp").expect("sentinel temp");
    dir
}

/// For each name the store manages, a symbolic link planted there (to a directory outside
/// the store) is refused by every command with an error naming it, and the link's target
/// is untouched byte for byte.
#[test]
fn links_planted_at_the_stores_own_names_are_refused_never_followed() {
    for name in [".tmp", ".quarantine", ".poh.lock"] {
        let s = Scratch::new();
        s.save("a", 1.0, b"alpha");
        // A crash leftover and a corrupt payload give repair something to do.
        std::fs::write(s.base().join("a.bin"), b"tampered").expect("tamper");
        let target = sentinel(&s);
        let planted = s.base().join(name);
        if planted.is_dir() {
            std::fs::remove_dir_all(&planted).expect("rm own dir");
        } else if planted.exists() {
            std::fs::remove_file(&planted).expect("rm own file");
        }
        symlink(&target, &planted).expect("plant link");
        let outside = snapshot(&target);
        let save = tx_json("b", 2.0, b"beta");
        for args in every_command(&save) {
            let o = run(&s, &args);
            let ctx = format!("{name}: {args:?}");
            assert_ne!(o.status.code(), Some(0), "{ctx}: accepted: {}", stderr(&o));
            assert!(stderr(&o).contains(name), "{ctx}: {}", stderr(&o));
            assert_eq!(
                snapshot(&target),
                outside,
                "{ctx}: the link's target changed"
            );
        }
    }
}

/// `.tmp` being a regular file is named as such, not reported as `File exists`.
#[test]
fn a_regular_file_where_a_store_directory_belongs_is_named() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    std::fs::remove_dir(s.base().join(".tmp")).expect("rm .tmp");
    std::fs::write(s.base().join(".tmp"), b"").expect("file .tmp");
    let o = run(&s, &["save", "--tx", &tx_json("b", 2.0, b"beta")]);
    failed(&o, 1, &[".tmp", "regular file"], "save");
}

// ----------------------------------------------------------------- D6: lock holders

/// A lock holder that stopped (here: this test process holds the lock and does nothing)
/// blocks no read, and a writer gives up after its bounded wait naming the holder's pid.
#[test]
fn a_stopped_lock_holder_blocks_no_read_and_writers_give_up_naming_it() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .open(s.base().join(".poh.lock"))
        .expect("open lock");
    lock.lock().expect("take the store lock");

    assert_eq!(s.list(), ["a"]);
    s.ok(&["load", "--tx-id", "a"]);
    s.ok(&["stats"]);
    let pid = std::process::id().to_string();
    let save = tx_json("b", 2.0, b"beta");
    for args in [
        vec!["save", "--tx", save.as_str()],
        vec!["delete", "--tx-id", "a"],
    ] {
        let mut a = vec!["--lock-timeout", "200ms"];
        a.extend(args.iter().copied());
        let o = run(&s, &a);
        failed(&o, 1, &[".poh.lock", &pid, "200ms"], &format!("{args:?}"));
    }
    drop(lock);
    assert_eq!(s.list(), ["a"], "nothing was written meanwhile");
}

// --------------------------------------------------------- D7: dry runs write nothing

/// Reads, `verify` and `recover --dry-run` change no byte of a store, even one with crash
/// leftovers to repair (a committed save not renamed, a stray temp), and even a prototype
/// store they used to migrate.
#[test]
fn reads_and_dry_runs_change_no_byte() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    s.save("b", 2.0, b"beta");
    // A save that committed but crashed before its rename: its payload only in .tmp/.
    std::fs::rename(s.base().join("b.bin"), s.base().join(".tmp/b.77-0.tmp")).expect("mv");
    std::fs::write(s.base().join(".tmp/zz.77-1.tmp"), b"stray").expect("stray temp");
    let before = s.snapshot();
    for args in [
        vec!["list"],
        vec!["load", "--tx-id", "b"],
        vec!["stats"],
        vec!["recover", "--dry-run"],
    ] {
        s.ok(&args);
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
    let o = run(&s, &["verify"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_same_files(&before, &s.snapshot(), "verify");
}

/// A prototype store (version 0 table, no `.tmp/`, no lock file) read by every read
/// command stays exactly as the prototype left it.
#[test]
fn reading_a_prototype_store_changes_nothing() {
    let s = Scratch::new();
    let base = s.base();
    std::fs::create_dir(&base).expect("mkdir");
    let db = base.join("poh.db");
    {
        let c = rusqlite::Connection::open(&db).expect("db");
        c.execute_batch(
            "CREATE TABLE txs (tx_id TEXT PRIMARY KEY, storage_hash TEXT NOT NULL,
                               timestamp REAL NOT NULL);",
        )
        .expect("schema");
        c.execute(
            "INSERT INTO txs VALUES ('p1', ?1, 1700000000.5)",
            [poh_storage::sha256_hex(b"hello")],
        )
        .expect("row");
    }
    std::fs::write(base.join("p1.bin"), b"hello").expect("payload");
    let before = s.snapshot();
    assert_eq!(s.list(), ["p1"]);
    let p1 = s.ok(&["load", "--tx-id", "p1"]);
    assert!(p1.contains("\"holder_id\": \"\""), "{p1}");
    s.ok(&["stats"]);
    s.ok(&["verify"]);
    s.ok(&["recover", "--dry-run"]);
    assert_same_files(&before, &s.snapshot(), "reads of a prototype store");
}

// -------------------------------------------------------- D11: SQLite-level damage

/// A zeroed index page passes every row lookup, but `verify` runs SQLite's own check and
/// reports it (exit 4).
#[test]
fn verify_reports_a_damaged_index_page() {
    let s = Scratch::new();
    let lines: String = (0..400)
        .map(|i| tx_json(&format!("t{i:04}"), 1000.0 + f64::from(i), b"p") + "\n")
        .collect();
    let file = s.path().join("in.jsonl");
    std::fs::write(&file, lines).expect("input");
    s.ok(&["import", file.to_str().expect("utf-8 path")]);
    s.ok(&["verify"]);
    let db = s.base().join("poh.db");
    let (page_size, root): (i64, i64) = {
        let c = rusqlite::Connection::open(&db).expect("db");
        let ps = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'txs_timestamp'",
                [],
                |r| r.get(0),
            )
            .expect("index root");
        (ps, root)
    };
    zero_page(&db, page_size, root);
    let o = run(&s, &["verify"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("integrity check"), "{out}");
}

fn zero_page(db: &Path, page_size: i64, page: i64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::options()
        .write(true)
        .open(db)
        .expect("open db");
    let size = usize::try_from(page_size).expect("page size");
    let at = u64::try_from((page - 1) * page_size).expect("offset");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&vec![0u8; size]).expect("zero page");
}
