//! Paths given to the store that name the store's own files are refused before anything is
//! touched: a `--db` inside `.tmp/` or `.quarantine/`, on the lock file, on a payload name
//! `<base>/<x>.bin` or on the base directory itself (where the store would delete or
//! overwrite its own database), and a `load --out` onto the database, its `-wal`/`-shm`/
//! `-journal` files or any name the store manages. Paths are compared after resolving
//! `..`, relative paths and symbolic links. Also: `load --out -` writes the raw payload to
//! stdout, and `load --out FILE` creates FILE with mode 0600.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::cli::{Scratch, assert_same_files, tx_json};

/// `poh-storage ARGS`; returns (exit code, stdout bytes, stderr).
fn run(s: &Scratch, args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = s.cmd().args(args).output().expect("run poh-storage");
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `args`, expects exit 2, nothing on stdout, and stderr naming `path` and every word.
fn expect_refused(s: &Scratch, args: &[&str], path: &str, words: &[&str]) {
    let (code, stdout, stderr) = run(s, args);
    assert_eq!(code, Some(2), "{args:?}: exit status; stderr: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: printed {stdout:?}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(&format!("refusing {path}")),
        "{args:?}: stderr {stderr:?} should name {path:?}"
    );
    for w in words {
        assert!(
            stderr.contains(w),
            "{args:?}: stderr {stderr:?} should mention {w:?}"
        );
    }
}

/// A store under `./data` holding `a1` and `a2`, and `link` -> `data` beside it.
fn fixture() -> Scratch {
    let s = Scratch::new();
    s.save("a1", 1.0, b"payload one");
    s.save("a2", 2.0, b"payload two");
    symlink("data", s.path().join("link")).unwrap();
    s
}

/// `--db` values that name a file the store manages, each with a word of the reason.
fn bad_dbs(s: &Scratch) -> Vec<(String, &'static str)> {
    let abs = s.base().display().to_string();
    [
        ("data/.tmp/poh.db", "temp directory"),
        ("./data/.tmp/poh.db", "temp directory"),
        (&format!("{abs}/.tmp/poh.db"), "temp directory"),
        ("data/.tmp", "temp directory"),
        ("data/nowhere/../.tmp/poh.db", "temp directory"),
        ("link/.tmp/poh.db", "temp directory"),
        ("data/.quarantine/poh.db", "quarantine directory"),
        ("data/.quarantine/new/poh.db", "quarantine directory"),
        ("data/.poh.lock", "lock file"),
        ("data/meta.bin", "payload file name"),
        ("data/a1.bin", "payload file name"),
        ("link/meta.bin", "payload file name"),
        ("data/x/../meta.bin", "payload file name"),
        (&format!("{abs}/../data/meta.bin"), "payload file name"),
        ("data", "base directory"),
        ("data/", "base directory"),
        ("link", "base directory"),
        (".//data/.", "base directory"),
        ("dblink", "payload file name"),
    ]
    .into_iter()
    .map(|(p, w)| (p.to_owned(), w))
    .collect()
}

#[test]
fn a_db_among_the_stores_own_names_is_refused_and_nothing_changes() {
    let s = fixture();
    // A link whose target is a payload name: SQLite would write through it.
    symlink("data/linked.bin", s.path().join("dblink")).unwrap();
    let before = s.snapshot();
    let valid = tx_json("meta", 3.0, b"would replace the database");
    let mut tried = 0;
    for (db, why) in bad_dbs(&s) {
        for cmd in [
            vec!["save", "--tx", &valid],
            vec!["init"],
            vec!["recover"],
            vec!["verify"],
            vec!["list"],
            vec!["load", "--tx-id", "a1"],
        ] {
            let mut args = vec!["--db", db.as_str()];
            args.extend(cmd);
            expect_refused(&s, &args, &db, &["metadata database", why]);
            assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
            tried += 1;
        }
        // import opens the store on its first batch; the env var is refused the same way.
        let out = s
            .cmd()
            .env("POH_DB", &db)
            .args(["import", "-"])
            .write_stdin(valid.clone())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "import with POH_DB={db}: {out:?}"
        );
        assert_same_files(&before, &s.snapshot(), &format!("import, POH_DB={db}"));
        tried += 1;
    }
    // The store is intact and still works with its own database.
    assert_eq!(s.list(), ["a1", "a2"]);
    s.ok(&["verify"]);
    eprintln!("refused --db runs: {tried}");
}

#[test]
fn a_missing_store_is_not_created_for_a_refused_db() {
    let s = Scratch::new();
    for db in ["data/.tmp/poh.db", "data/meta.bin", "data"] {
        let valid = tx_json("t", 1.0, b"x");
        expect_refused(
            &s,
            &["--db", db, "save", "--tx", &valid],
            db,
            &["metadata database"],
        );
        expect_refused(&s, &["--db", db, "init"], db, &["metadata database"]);
        assert!(s.snapshot().is_empty(), "{db}: created {:?}", s.snapshot());
    }
}

#[test]
fn databases_beside_the_payloads_or_elsewhere_are_fine() {
    for db in [
        "data/poh.db",
        "data/other.db",
        "data/bin",
        "data/x.bin.db",
        "data/.tmpdb",
        "meta/poh.db",
        "elsewhere.db",
    ] {
        let s = Scratch::new();
        std::fs::create_dir(s.path().join("meta")).unwrap();
        s.ok(&["--db", db, "save", "--tx", &tx_json("t", 1.0, b"x")]);
        s.ok(&["--db", db, "verify"]);
        assert!(s.path().join(db).is_file(), "{db}");
    }
}

#[test]
fn the_library_refuses_a_db_among_the_stores_own_names() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path().join("data");
    for db in [
        base.join(".tmp/poh.db"),
        base.join("meta.bin"),
        base.join(".poh.lock"),
        base.join(".quarantine/x"),
        base.clone(),
    ] {
        let err = rt
            .block_on(poh_storage::StorageManager::open(&base, &db))
            .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&db.display().to_string()) && msg.contains("metadata database"),
            "{msg}"
        );
        assert!(!base.exists(), "{}: the store was created", db.display());
    }
}

/// `load --out` targets that are the store's own files, each with a word of the reason.
fn bad_outs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("data/poh.db", "metadata database"),
        ("data/poh.db-wal", "metadata database"),
        ("data/poh.db-shm", "metadata database"),
        ("data/poh.db-journal", "metadata database"),
        ("link/poh.db", "metadata database"),
        ("data/x/../poh.db", "metadata database"),
        ("data/a2.bin", "payload file name"),
        ("data/new.bin", "payload file name"),
        ("link/a2.bin", "payload file name"),
        ("./data/./a2.bin", "payload file name"),
        ("data/.tmp/out", "temp directory"),
        ("data/.quarantine/out", "quarantine directory"),
        ("data/.poh.lock", "lock file"),
        ("data", "base directory"),
    ]
}

#[test]
fn load_out_onto_the_stores_own_files_is_refused_and_nothing_changes() {
    let s = fixture();
    let before = s.snapshot();
    for (out, why) in bad_outs() {
        let args = ["load", "--tx-id", "a1", "--out", out];
        expect_refused(&s, &args, out, &["output file", why]);
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
    // With the database elsewhere (a second store, in `other/`), its files are refused
    // and a payload-free name in the base is not.
    s.ok(&[
        "--base",
        "other",
        "--db",
        "meta.db",
        "save",
        "--tx",
        &tx_json("m", 1.0, b"in meta.db"),
    ]);
    let before = s.snapshot();
    for out in ["meta.db", "meta.db-wal", "./meta.db-journal"] {
        let args = [
            "--base", "other", "--db", "meta.db", "load", "--tx-id", "m", "--out", out,
        ];
        expect_refused(&s, &args, out, &["output file", "metadata database"]);
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
    // A name in the base that is not the database in use nor a payload name is fine.
    s.ok(&[
        "--base",
        "other",
        "--db",
        "meta.db",
        "load",
        "--tx-id",
        "m",
        "--out",
        "other/m.out",
    ]);
    assert_eq!(
        std::fs::read(s.path().join("other/m.out")).unwrap(),
        b"in meta.db"
    );
}

#[test]
fn load_out_dash_writes_the_raw_payload_to_stdout() {
    let s = fixture();
    let payload: Vec<u8> = (0..=255u8).chain([0, b'\n', 0xff]).collect();
    s.save("bin", 3.0, &payload);
    let (code, stdout, stderr) = run(&s, &["load", "--tx-id", "bin", "--out", "-"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, payload);
    assert!(!s.path().join("-").exists(), "wrote a file named -");
    // A missing tx still exits 3 and prints nothing.
    let (code, stdout, _) = run(&s, &["load", "--tx-id", "nope", "--out", "-"]);
    assert_eq!((code, stdout.is_empty()), (Some(3), true));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn load_out_file_is_created_with_mode_0600() {
    let s = fixture();
    let out = s.path().join("payload.out");
    s.ok(&["load", "--tx-id", "a1", "--out", "payload.out"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"payload one");
    assert_eq!(mode(&out), 0o600, "new file");
    // Replacing an existing file (temp file + rename) also leaves a 0600 file.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.ok(&["load", "--tx-id", "a2", "--out", "payload.out"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"payload two");
    assert_eq!(mode(&out), 0o600, "replaced file");
    let names: Vec<_> = std::fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "temp file left: {names:?}"
    );
}
