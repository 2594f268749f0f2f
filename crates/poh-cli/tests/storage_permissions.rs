//! A store is private by default: what it creates is readable by its own user only
//! (directories 0700, files 0600), whatever the umask; `--group-readable` /
//! `POH_GROUP_READABLE` / `OpenOptions::group_readable` widens that to 0750/0640 and no
//! further. A base directory (or `.tmp/`, `.quarantine/`) that other users can write to is
//! refused by every writing command, with the `chmod` that fixes it; reads still work and
//! only warn.
//!
//! The binaries run under `umask 000` (through `sh`), so any mode that is not set
//! explicitly shows up as world-readable. The tests run as root in CI, where access checks
//! always pass, so they check modes, not access attempts.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::cli::{Scratch, assert_same_files, tx_json};
use poh_storage::{OpenOptions, StorageError, StorageManager};

/// `sh -c` script that runs `$0 "$@"` with an empty umask.
const UMASK_000: &str = r#"umask 000; exec "$0" "$@""#;

/// `poh-storage ARGS` in the scratch directory under `umask 000`, with no POH_* variables
/// but those in `env`.
fn cmd(s: &Scratch, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(UMASK_000)
        .arg(env!("CARGO_BIN_EXE_poh-storage"))
        .args(args)
        .current_dir(s.path());
    for var in [
        "POH_BASE",
        "POH_DB",
        "POH_MAX_PAYLOAD",
        "POH_GROUP_READABLE",
        "POH_LAYOUT",
        "POH_SEGMENT_WINDOW",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c
}

fn run(s: &Scratch, env: &[(&str, &str)], args: &[&str]) -> Output {
    cmd(s, env, args).output().expect("run poh-storage")
}

fn ok(s: &Scratch, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = run(s, env, args);
    assert!(
        o.status.success(),
        "poh-storage {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

/// Permission bits (with setuid/setgid/sticky) of `p`, not following a link.
fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

/// Records the mode of `root` and of everything under it (relative names, `""` for the
/// root), adding to what `seen` already holds.
fn record(root: &Path, seen: &mut BTreeMap<String, (bool, u32)>) {
    fn walk(root: &Path, p: &Path, seen: &mut BTreeMap<String, (bool, u32)>) {
        let meta = std::fs::symlink_metadata(p).expect("stat");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        seen.insert(rel, (meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for e in std::fs::read_dir(p).expect("read_dir") {
                walk(root, &e.expect("entry").path(), seen);
            }
        }
    }
    walk(root, root, seen);
}

/// Runs a store's whole life under `umask 000` with `flags` (global flags, given before
/// or after the subcommand) and `env`, and returns the mode of every path it ever created
/// under the base: init, saves, a re-save, the database's `-wal`/`-shm` while a writer has
/// it open, and `recover` quarantining a corrupt payload and noting a row without one.
fn store_life(s: &Scratch, flags: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, (bool, u32)> {
    let base = s.base();
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let mut seen = BTreeMap::new();
    let argv = with(&["init"]);
    ok(s, env, &argv.iter().map(String::as_str).collect::<Vec<_>>());
    record(&base, &mut seen);
    for (id, payload) in [("a", "alpha"), ("b", "beta"), ("a", "alpha, again")] {
        let tx = tx_json(id, 1.0, payload.as_bytes());
        // Flags after the subcommand this time.
        let mut argv = vec!["save".to_owned(), "--tx".to_owned(), tx];
        argv.extend(flags.iter().map(|f| f.to_string()));
        ok(s, env, &argv.iter().map(String::as_str).collect::<Vec<_>>());
        record(&base, &mut seen);
    }

    // A writer holding the store open: the WAL and its index exist meanwhile.
    let argv = with(&["import", "--batch-size", "1", "--print-acked"]);
    let mut child = cmd(s, env, &argv.iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", tx_json("c", 2.0, b"gamma")).expect("write a line");
    stdin.flush().expect("flush");
    let mut acked = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut acked)
        .expect("read the acknowledged id");
    assert_eq!(acked, "c\n");
    for side in ["poh.db-wal", "poh.db-shm"] {
        assert!(
            base.join(side).exists(),
            "{side} exists while a writer is open"
        );
    }
    record(&base, &mut seen);
    drop(stdin);
    let out = child.wait_with_output().expect("wait for import");
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A corrupt payload (rewritten in place, so it keeps its mode) is quarantined; a row
    // whose payload is gone is noted there.
    std::fs::write(base.join("a.bin"), b"tampered").expect("corrupt a");
    std::fs::remove_file(base.join("b.bin")).expect("lose b");
    let argv = with(&["recover"]);
    ok(s, env, &argv.iter().map(String::as_str).collect::<Vec<_>>());
    record(&base, &mut seen);
    seen
}

/// Asserts that every directory in `seen` has mode `dir` and every file `file`, and that
/// everything a store creates was seen.
fn assert_modes(seen: &BTreeMap<String, (bool, u32)>, dir: u32, file: u32, what: &str) {
    let wrong: Vec<String> = seen
        .iter()
        .filter(|(_, (is_dir, m))| *m != if *is_dir { dir } else { file })
        .map(|(name, (_, m))| format!("{name:?} {m:o}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: expected dirs {dir:o}, files {file:o}; wrong: {wrong:?}"
    );
    for name in [
        "",
        ".tmp",
        ".quarantine",
        ".poh.lock",
        "poh.db",
        "poh.db-wal",
        "poh.db-shm",
        "a.bin",
        "b.bin",
        "c.bin",
    ] {
        assert!(seen.contains_key(name), "{what}: never saw {name:?}");
    }
    let quarantined: Vec<&String> = seen
        .keys()
        .filter(|k| k.starts_with(".quarantine/"))
        .collect();
    assert!(
        quarantined.iter().any(|k| k.ends_with(".json"))
            && quarantined.iter().any(|k| k.ends_with(".bin")),
        "{what}: recover quarantined a payload with a note: {quarantined:?}"
    );
}

#[test]
fn everything_a_store_creates_is_private_whatever_the_umask() {
    let s = Scratch::new();
    let seen = store_life(&s, &[], &[]);
    assert_modes(&seen, 0o700, 0o600, "default");
}

#[test]
fn group_readable_gives_the_group_read_access_and_nothing_more() {
    let s = Scratch::new();
    let seen = store_life(&s, &["--group-readable"], &[]);
    assert_modes(&seen, 0o750, 0o640, "--group-readable");

    let s = Scratch::new();
    let seen = store_life(&s, &[], &[("POH_GROUP_READABLE", "true")]);
    assert_modes(&seen, 0o750, 0o640, "POH_GROUP_READABLE=true");

    let s = Scratch::new();
    ok(&s, &[("POH_GROUP_READABLE", "0")], &["init"]);
    assert_eq!(mode(&s.base()), 0o700, "POH_GROUP_READABLE=0");
    let o = run(&s, &[("POH_GROUP_READABLE", "perhaps")], &["list"]);
    assert_eq!(o.status.code(), Some(2), "not a boolean");
}

/// The prototype (or an earlier poh-store) left world-readable files: they keep their
/// modes until the store rewrites them; what it creates or rewrites is private.
#[test]
fn existing_files_keep_their_modes_until_rewritten() {
    let s = Scratch::new();
    s.save("old", 1.0, b"old");
    s.save("kept", 1.0, b"kept");
    let base = s.base();
    set_mode(&base, 0o755);
    for f in ["old.bin", "kept.bin", "poh.db", ".poh.lock"] {
        set_mode(&base.join(f), 0o644);
    }
    ok(
        &s,
        &[],
        &["save", "--tx", &tx_json("old", 2.0, b"rewritten")],
    );
    ok(&s, &[], &["save", "--tx", &tx_json("new", 2.0, b"new")]);
    assert_eq!(mode(&base.join("old.bin")), 0o600, "a re-saved payload");
    assert_eq!(mode(&base.join("new.bin")), 0o600, "a new payload");
    assert_eq!(mode(&base.join("kept.bin")), 0o644, "an untouched payload");
    assert_eq!(mode(&base.join("poh.db")), 0o644, "the existing database");
    assert_eq!(mode(&base), 0o755, "the existing base");
}

#[test]
fn load_out_writes_a_private_file_whatever_the_umask() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    ok(&s, &[], &["load", "--tx-id", "a", "--out", "a.payload"]);
    assert_eq!(
        std::fs::read(s.path().join("a.payload")).expect("read"),
        b"alpha"
    );
    assert_eq!(mode(&s.path().join("a.payload")), 0o600);
    ok(
        &s,
        &[],
        &[
            "--group-readable",
            "load",
            "--tx-id",
            "a",
            "--out",
            "b.payload",
        ],
    );
    assert_eq!(
        mode(&s.path().join("b.payload")),
        0o600,
        "not the store's file"
    );
}

/// Asserts a run failed with exit 1 and a message saying that `dir` (as the command
/// named it) is writable and the command that fixes it.
fn refused(o: &Output, dir: &str, ctx: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{ctx}: stderr: {err}");
    let fix = format!("chmod 700 {dir}`");
    for w in ["is writable by other users", &fix] {
        assert!(err.contains(w), "{ctx}: stderr lacks {w:?}: {err}");
    }
}

/// A base that other users can write to lets them plant files and links in a directory
/// the store deletes files in: every writing command refuses it, changing nothing, and
/// says how to fix it; reads go on, with a warning.
#[test]
fn a_base_writable_by_others_refuses_writes_and_says_how_to_fix_it() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    s.save("b", 2.0, b"beta");
    let base = s.base();
    let lines = s.path().join("in.jsonl");
    std::fs::write(&lines, format!("{}\n", tx_json("d", 4.0, b"delta"))).expect("write input");
    let save = tx_json("c", 3.0, b"gamma");
    for m in [0o777, 0o770, 0o702, 0o720] {
        set_mode(&base, m);
        let before = s.snapshot();
        for args in [
            vec!["save", "--tx", save.as_str()],
            vec!["delete", "--tx-id", "a"],
            vec!["import", "in.jsonl"],
            vec!["recover"],
            vec!["init"],
        ] {
            let o = run(&s, &[], &args);
            refused(&o, "./data", &format!("mode {m:o}: {args:?}"));
        }
        assert_same_files(
            &before,
            &s.snapshot(),
            &format!("refused writes, mode {m:o}"),
        );
        assert_eq!(
            mode(&base),
            m,
            "the store does not chmod the operator's directory"
        );

        for args in [
            vec!["load", "--tx-id", "a"],
            vec!["list"],
            vec!["stats"],
            vec!["verify"],
            vec!["recover", "--dry-run"],
        ] {
            let o = run(&s, &[], &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "mode {m:o}: {args:?}: {err}");
            assert!(err.contains("chmod"), "mode {m:o}: {args:?} warns: {err}");
        }
        assert_same_files(&before, &s.snapshot(), &format!("reads, mode {m:o}"));
    }

    // Fixed as the message says, writes work again.
    set_mode(&base, 0o700);
    ok(&s, &[], &["save", "--tx", &save]);
    // A sticky directory keeps others from removing or renaming what is not theirs.
    set_mode(&base, 0o1777);
    ok(&s, &[], &["delete", "--tx-id", "c"]);
}

/// The store's own directories are held to the same rule.
#[test]
fn a_store_directory_writable_by_others_is_refused_too() {
    let s = Scratch::new();
    s.save("a", 1.0, b"alpha");
    let tmp = s.base().join(".tmp");
    set_mode(&tmp, 0o777);
    let o = run(&s, &[], &["save", "--tx", &tx_json("b", 2.0, b"beta")]);
    refused(&o, "./data/.tmp", ".tmp 0777");
    ok(&s, &[], &["list"]);
}

/// The library: `open` creates a private store by default and a group-readable one on
/// request, and refuses a writable base with a typed error naming it; a read-only handle
/// opens it.
#[tokio::test]
async fn the_library_opens_private_stores_and_refuses_writable_bases() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let private = dir.path().join("private");
    let sm = StorageManager::open(&private, private.join("poh.db"))
        .await
        .expect("open");
    sm.close().await.expect("close");
    assert_eq!(mode(&private), 0o700);
    assert_eq!(mode(&private.join("poh.db")), 0o600);

    let shared = dir.path().join("shared");
    let opts = OpenOptions {
        group_readable: true,
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(&shared, shared.join("poh.db"), opts)
        .await
        .expect("open group-readable");
    sm.close().await.expect("close");
    for (p, m) in [
        (shared.clone(), 0o750),
        (shared.join(".tmp"), 0o750),
        (shared.join("poh.db"), 0o640),
        (shared.join(".poh.lock"), 0o640),
    ] {
        assert_eq!(mode(&p), m, "{}", p.display());
    }

    set_mode(&private, 0o777);
    let err = StorageManager::open(&private, private.join("poh.db"))
        .await
        .expect_err("a world-writable base is refused");
    match &err {
        StorageError::WritableByOthers {
            path,
            mode,
            expected,
        } => {
            assert_eq!(path, &private);
            assert_eq!(*mode, 0o777);
            assert_eq!(*expected, 0o700);
        }
        other => panic!("expected WritableByOthers, got {other:?}"),
    }
    assert!(err.to_string().contains("chmod 700"), "{err}");
    let ro = OpenOptions {
        read_only: true,
        create: false,
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(&private, private.join("poh.db"), ro)
        .await
        .expect("a read-only handle opens it");
    assert!(sm.list_page(None, 10).await.expect("list").rows.is_empty());
    sm.close().await.expect("close");
}

/// A segments store's life under `umask 000`: everything it creates (the layout record,
/// `segments/` and its files, the database and its side files, quarantined records and
/// notes) gets exactly the store's modes; a `segments/` others can write to is refused.
#[test]
fn a_segments_store_is_private_whatever_the_umask() {
    for (flags, dir, file) in [
        (vec!["--layout", "segments"], 0o700, 0o600),
        (
            vec!["--layout", "segments", "--group-readable"],
            0o750,
            0o640,
        ),
    ] {
        let s = Scratch::new();
        let base = s.base();
        let with = |args: &[&str]| -> Vec<String> {
            flags.iter().chain(args).map(|a| a.to_string()).collect()
        };
        let run_ok = |args: &[&str]| {
            let argv = with(args);
            ok(
                &s,
                &[],
                &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        };
        let mut seen = BTreeMap::new();
        run_ok(&["init"]);
        record(&base, &mut seen);
        for (id, ts) in [("a", 1.0), ("b", 7200.0), ("a", 2.0)] {
            run_ok(&["save", "--tx", &tx_json(id, ts, b"payload")]);
            record(&base, &mut seen);
        }
        // A flipped byte in a's record: recover quarantines it with a note.
        let seg = std::fs::read_dir(base.join("segments"))
            .expect("segments")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("a segment");
        let mut data = std::fs::read(&seg).expect("read segment");
        // The last byte of the last record (zeros of padding may follow it).
        let last = data.iter().rposition(|b| *b != 0).expect("a record");
        data[last] ^= 1;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, &data[last..], last as u64).expect("flip");
        run_ok(&["recover"]);
        record(&base, &mut seen);
        let wrong: Vec<String> = seen
            .iter()
            .filter(|(_, (is_dir, m))| *m != if *is_dir { dir } else { file })
            .map(|(name, (_, m))| format!("{name:?} {m:o}"))
            .collect();
        assert!(wrong.is_empty(), "{flags:?}: wrong modes: {wrong:?}");
        for name in [
            "",
            ".poh-layout",
            ".poh.lock",
            "segments",
            "poh.db",
            ".quarantine",
        ] {
            assert!(
                seen.contains_key(name),
                "{flags:?}: never saw {name:?}: {seen:?}"
            );
        }
        assert!(
            seen.keys()
                .any(|k| k.starts_with("segments/") && k.ends_with(".seg"))
        );
        assert!(
            seen.keys()
                .any(|k| k.starts_with(".quarantine/") && k.ends_with(".json"))
        );

        // Others able to write to segments/: writes refused naming it, reads go on.
        set_mode(&base.join("segments"), 0o777);
        let argv = with(&["save", "--tx", &tx_json("c", 1.0, b"x")]);
        let out = run(
            &s,
            &[],
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("segments") && err.contains("writable by other users"),
            "{err}"
        );
        run_ok(&["list"]);
    }
}
