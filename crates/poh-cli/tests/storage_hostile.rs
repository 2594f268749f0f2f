//! Hostile and broken input given to the `poh-storage` binary never writes anything: every
//! hostile tx document of the shared table (`common::hostile`), through `save --tx` and
//! `import`, unsafe ids for `load` and `delete`, a `--db` that is a directory or a corrupt
//! file, and payload files replaced by a link out of the base or a directory, each get
//! their documented exit code and a clear message, and the store stays byte for byte as it
//! was.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::cli::Scratch;
use common::hostile::{SMALL_LIMIT, json_cases, valid_doc};
use common::snapshot::{Snapshot, snapshot};

/// A store under `./data` holding `t` and `x`, with files outside the base named like
/// their payloads, which an escaping id or a followed link would reach.
fn fixture() -> Scratch {
    let s = Scratch::new();
    s.save("t", 1.0, b"existing t");
    s.save("x", 2.0, b"existing x");
    std::fs::write(s.path().join("x.bin"), b"outside the base").unwrap();
    std::fs::write(s.path().join("t.bin"), b"outside the base").unwrap();
    s
}

/// The whole scratch directory (store and the files beside it), SQLite's `-shm` aside.
fn snap(s: &Scratch) -> Snapshot {
    snapshot(s.path())
}

/// The flag every run below passes, so the table's size cases hit the limit.
fn limit_arg() -> [String; 2] {
    ["--max-payload".into(), SMALL_LIMIT.to_string()]
}

/// Runs `poh-storage ARGS` (stdin given or empty) and checks the exit code, that stdout is
/// empty, and that stderr mentions every word (case-insensitive).
fn expect_failure(
    s: &Scratch,
    args: &[String],
    stdin: Option<&[u8]>,
    code: i32,
    words: &[&str],
    ctx: &str,
) {
    let mut cmd = s.cmd();
    cmd.args(args);
    cmd.write_stdin(stdin.unwrap_or_default().to_vec());
    let out = cmd.output().expect("run poh-storage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{ctx}: exit status; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{ctx}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lower = stderr.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "{ctx}: stderr {stderr:?} should mention {w:?}"
        );
    }
    assert!(
        stderr.starts_with("error: "),
        "{ctx}: one error message: {stderr:?}"
    );
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn hostile_json_through_save_and_import_exits_2_and_writes_nothing() {
    let s = fixture();
    let before = snap(&s);
    let cases = json_cases();
    let (mut via_argv, mut via_stdin) = (0, 0);
    for c in &cases {
        // argv cannot carry a NUL byte, and `--tx` takes UTF-8 text: such documents only
        // reach the CLI through stdin (below).
        if let Ok(text) = std::str::from_utf8(&c.input)
            && !c.input.contains(&0)
        {
            let mut args = limit_arg().to_vec();
            args.extend(strings(&["save", "--tx", text]));
            expect_failure(
                &s,
                &args,
                None,
                2,
                &c.expect,
                &format!("save --tx {}", c.name),
            );
            assert_eq!(snap(&s), before, "save --tx {} changed the store", c.name);
            via_argv += 1;
        }

        // `save --tx -` and `import -` read the same bytes from stdin.
        let mut args = limit_arg().to_vec();
        args.extend(strings(&["save", "--tx", "-"]));
        let words: Vec<&str> = if std::str::from_utf8(&c.input).is_ok() {
            c.expect.clone()
        } else {
            // stdin is checked for UTF-8 before it is parsed
            vec!["invalid --tx", "stdin is not utf-8"]
        };
        expect_failure(
            &s,
            &args,
            Some(&c.input),
            2,
            &words,
            &format!("save --tx - {}", c.name),
        );
        assert_eq!(snap(&s), before, "save --tx - {} changed the store", c.name);

        let mut args = limit_arg().to_vec();
        args.extend(strings(&["import", "-"]));
        if c.input.is_empty() {
            // No line is no tx: an empty import succeeds and changes nothing.
            let out = s.cmd().args(&args).output().expect("run");
            assert!(out.status.success(), "empty import: {out:?}");
            assert_eq!(snap(&s), before, "an empty import changed the store");
        } else {
            let mut words: Vec<&str> = vec!["stdin line 1", "0 tx(s) before the error"];
            if std::str::from_utf8(&c.input).is_ok() {
                words.extend(&c.expect);
            } else {
                // Lines are checked for UTF-8 before they are parsed.
                words.push("not utf-8");
            }
            expect_failure(
                &s,
                &args,
                Some(&c.input),
                2,
                &words,
                &format!("import {}", c.name),
            );
            assert_eq!(snap(&s), before, "import {} changed the store", c.name);
        }
        via_stdin += 2;
    }
    // The document every case departs from is accepted by both.
    let valid = String::from_utf8(valid_doc()).unwrap();
    let mut args = limit_arg().to_vec();
    args.extend(strings(&["save", "--tx", &valid]));
    s.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.cmd()
        .args(["import", "-"])
        .write_stdin(valid.clone())
        .assert()
        .success();
    s.ok(&["verify"]);
    eprintln!(
        "hostile JSON inputs tried over the CLI: {} ({via_argv} through save --tx, {via_stdin} through save --tx - and import -)",
        via_argv + via_stdin
    );
}

/// Invalid ids given to `load` and `delete` are refused before the store is opened; ids
/// that look like paths are valid ids, not found in this store (exit 3), and reach
/// nothing outside it. (`load` of `""` and the save of path-like ids are in
/// `tests/cli.rs`.)
#[test]
fn invalid_ids_for_load_and_delete_exit_2_and_change_nothing() {
    let s = fixture();
    let before = snap(&s);
    let long = "x".repeat(10 * 1024);
    let absolute = s.path().join("x").display().to_string();
    let invalid: Vec<(&str, &str)> = vec![
        ("delete", ""),
        ("load", &long),
        ("delete", &long),
        ("delete", "x\n"),
        ("load", "a\u{1b}b"),
    ];
    for (cmd, id) in &invalid {
        let shown: String = id.chars().take(20).collect();
        let ctx = format!("{cmd} --tx-id {shown:?}");
        expect_failure(
            &s,
            &strings(&[cmd, "--tx-id", id]),
            None,
            2,
            &["tx_id"],
            &ctx,
        );
        assert_eq!(snap(&s), before, "{ctx} changed the store");
    }
    let path_like: Vec<(&str, &str)> = vec![
        ("delete", "a/b"),
        ("load", ".hidden"),
        ("delete", ".hidden"),
        ("load", &absolute),
        ("delete", &absolute),
        ("load", "t/../x"),
        ("delete", "t/../x"),
        ("load", "."),
    ];
    for (cmd, id) in &path_like {
        let ctx = format!("{cmd} --tx-id {id:?}");
        expect_failure(
            &s,
            &strings(&[cmd, "--tx-id", id]),
            None,
            3,
            &["not found"],
            &ctx,
        );
        assert_eq!(snap(&s), before, "{ctx} changed the store");
    }
    eprintln!(
        "unusual ids tried over the CLI: {}",
        invalid.len() + path_like.len()
    );
}

/// Every command that opens the store, with `--db` naming a directory.
fn store_commands() -> Vec<Vec<String>> {
    let valid = String::from_utf8(valid_doc()).unwrap();
    [
        vec!["init"],
        vec!["save", "--tx", &valid],
        vec!["load", "--tx-id", "t"],
        vec!["delete", "--tx-id", "t"],
        vec!["list"],
        vec!["stats"],
        vec!["verify"],
        vec!["recover"],
        vec!["recover", "--dry-run"],
    ]
    .iter()
    .map(|a| strings(a))
    .collect()
}

/// `--db` naming a directory: every command fails (exit 1) naming the path, and neither
/// the directory nor the store changes.
#[test]
fn db_path_that_is_a_directory_exits_1_and_changes_nothing() {
    let s = fixture();
    let dir_db = s.path().join("dbdir");
    std::fs::create_dir(&dir_db).unwrap();
    std::fs::write(dir_db.join("inside"), b"kept").unwrap();
    let before = snap(&s);
    let db = dir_db.display().to_string();
    let mut tried = 0;
    for args in store_commands() {
        let mut full = strings(&["--db", &db]);
        full.extend(args.clone());
        expect_failure(
            &s,
            &full,
            None,
            1,
            &[&db, "directory"],
            &format!("{args:?}"),
        );
        assert_eq!(snap(&s), before, "{args:?} changed the store");
        tried += 1;
    }
    // import opens the store only for its first batch.
    expect_failure(
        &s,
        &strings(&["--db", &db, "import", "-"]),
        Some(&valid_doc()),
        1,
        &[&db, "directory"],
        "import",
    );
    assert_eq!(snap(&s), before, "import changed the store");
    eprintln!("commands tried with --db a directory: {}", tried + 1);
}

/// A database file that is not SQLite (garbage, or text): every command fails (exit 1)
/// saying so, and the file and the store stay as they were.
#[test]
fn corrupt_database_file_exits_1_and_is_left_as_is() {
    let s = fixture();
    let db = s.base().join("poh.db");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut tried = 0;
    for (name, bytes) in [
        ("garbage", garbage.as_slice()),
        ("text", b"hello, not sqlite\n".as_slice()),
    ] {
        std::fs::write(&db, bytes).unwrap();
        let before = snap(&s);
        let mut runs: Vec<(Vec<String>, Option<Vec<u8>>)> =
            store_commands().into_iter().map(|a| (a, None)).collect();
        runs.push((strings(&["import", "-"]), Some(valid_doc())));
        for (args, stdin) in runs {
            let ctx = format!("{name} database: {args:?}");
            expect_failure(
                &s,
                &args,
                stdin.as_deref(),
                1,
                &["poh.db", "not a database"],
                &ctx,
            );
            assert_eq!(snap(&s), before, "{ctx} changed the store");
            assert_eq!(std::fs::read(&db).unwrap(), bytes, "{ctx}");
            tried += 1;
        }
    }
    eprintln!("commands tried on a corrupt database file: {tried}");
}

/// A payload replaced by a symbolic link to a file outside the base (holding exactly the
/// right bytes) or by a directory: `load` exits 4 naming the tx and follows nothing,
/// `verify` exits 4, nothing changes; `delete` removes the link itself, not its target.
#[test]
fn payload_replaced_by_a_link_out_of_the_base_or_a_directory_exits_4() {
    let s = fixture();
    let outside = s.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target: PathBuf = outside.join("secret");
    std::fs::write(&target, b"existing x").unwrap(); // x's exact payload
    let bin = |id: &str| s.base().join(format!("{id}.bin"));
    std::fs::remove_file(bin("x")).unwrap();
    symlink(&target, bin("x")).unwrap();
    std::fs::remove_file(bin("t")).unwrap();
    std::fs::create_dir(bin("t")).unwrap();
    std::fs::write(bin("t").join("inner"), b"inside").unwrap();
    let before = snap(&s);
    let target_meta = std::fs::metadata(&target).unwrap();

    let mut tried = 0;
    for id in ["x", "t"] {
        for extra in [None, Some("out.bin")] {
            let mut args = strings(&["load", "--tx-id", id]);
            if let Some(f) = extra {
                args.extend(strings(&["--out", f]));
            }
            expect_failure(
                &s,
                &args,
                None,
                4,
                &[&format!("integrity error on tx {id}"), "not a regular file"],
                &format!("{args:?}"),
            );
            assert_eq!(snap(&s), before, "{args:?} changed the store");
            tried += 1;
        }
    }
    let out = s.cmd().arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(4), "verify: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("x: corrupt") && stdout.contains("t: corrupt"),
        "{stdout}"
    );
    assert_eq!(snap(&s), before, "verify changed the store");
    tried += 1;

    // delete removes the row and the link, never what the link points to.
    assert_eq!(s.ok(&["delete", "--tx-id", "x"]), "Deleted x\n");
    assert!(std::fs::symlink_metadata(bin("x")).is_err(), "link left");
    assert_eq!(std::fs::read(&target).unwrap(), b"existing x");
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (target_meta.len(), target_meta.modified().unwrap()),
        "the link's target was touched"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    tried += 1;
    eprintln!("tampered payload files tried over the CLI: {tried}");
}
