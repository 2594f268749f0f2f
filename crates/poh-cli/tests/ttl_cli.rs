//! The `poh-ttl scan` command line contract: the prototype's `Expired: [...]` output, JSON
//! and dry-run reports, store defaults, duration parsing, and exit codes (0 ok, 1 failure,
//! 2 bad arguments, 3 no store) — against the real binary.

mod common;

use std::process::Stdio;

use common::ttl::*;
use predicates::prelude::*;

/// Two txs far past a one-hour TTL on the real clock (a older than b) and one fresh.
fn mixed_store() -> tempfile::TempDir {
    let now = real_now();
    store_with(&[
        ("old-a".into(), now - 20_000.0),
        ("old-b".into(), now - 10_000.0),
        ("fresh".into(), now - 100.0),
    ])
}

#[test]
fn scan_prints_the_expired_ids_like_the_prototype() {
    let dir = mixed_store();
    bin()
        .arg("scan")
        .args(store_args(&dir))
        .args(["--ttl", "3600"])
        .assert()
        .success()
        .stdout(
            predicate::eq("Expired: ['old-a', 'old-b']\n")
                .or(predicate::eq("Expired: ['old-b', 'old-a']\n")),
        )
        .stderr("");
    assert_eq!(ids_in(&dir), set(["fresh"]));
}

#[test]
fn scan_with_nothing_expired_prints_an_empty_list() {
    let empty = store_with(&[]);
    bin()
        .arg("scan")
        .args(store_args(&empty))
        .args(["--ttl", "1"])
        .assert()
        .success()
        .stdout("Expired: []\n");

    let dir = mixed_store();
    bin()
        .arg("scan")
        .args(store_args(&dir))
        .args(["--ttl", "30000"])
        .assert()
        .success()
        .stdout("Expired: []\n");
    assert_eq!(ids_in(&dir).len(), 3);
}

#[test]
fn human_durations_mean_the_same_as_seconds() {
    let dir = mixed_store();
    for ttl in ["4h", "14400.0"] {
        bin()
            .arg("scan")
            .args(store_args(&dir))
            .args(["--ttl", ttl, "--dry-run"])
            .assert()
            .success()
            .stdout("Would expire: ['old-a']\n");
    }
    bin()
        .arg("scan")
        .args(store_args(&dir))
        .args(["--ttl", "1h 30m"])
        .assert()
        .success()
        .stdout(predicate::str::contains("'old-a'").and(predicate::str::contains("'old-b'")));
    assert_eq!(ids_in(&dir), set(["fresh"]));
}

/// Every file under `dir` with its bytes (SQLite's `-shm` index aside), links as targets.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            let ft = std::fs::symlink_metadata(&p).expect("stat").file_type();
            if ft.is_dir() {
                out.insert(p.clone(), b"dir".to_vec());
                stack.push(p);
            } else if !p.to_string_lossy().ends_with("-shm") {
                let data = if ft.is_symlink() {
                    std::fs::read_link(&p)
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    std::fs::read(&p).expect("read")
                };
                out.insert(p, data);
            }
        }
    }
    out
}

/// A dry run changes no byte, even with crash leftovers the open-time repair of a
/// writing handle would finish or remove: on flat files a committed save not yet renamed
/// and a stray temp; on segments an uncommitted tail after a segment's last committed
/// record, an empty segment file the index never registered and a non-empty unknown one.
#[test]
fn dry_run_changes_no_byte_even_with_crash_leftovers() {
    let dir = mixed_store();
    let (base, _) = paths(&dir);
    if flat_files() {
        std::fs::rename(
            payload_path(&base, "fresh"),
            base.join(".tmp/fresh.9-0.tmp"),
        )
        .unwrap();
        std::fs::write(base.join(".tmp/stray.9-1.tmp"), b"stray").unwrap();
    } else {
        let segs = base.join("segments");
        let seg = std::fs::read_dir(&segs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .expect("a segment");
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut f, b"PoHr torn tail").unwrap();
        std::fs::write(segs.join("90000000.seg"), b"").unwrap();
        std::fs::write(segs.join("90000001.seg"), b"unknown").unwrap();
    }
    let before = files_under(dir.path());
    bin()
        .arg("scan")
        .args(store_args(&dir))
        .args(["--ttl", "3600", "--dry-run"])
        .assert()
        .success();
    assert_eq!(
        files_under(dir.path()),
        before,
        "a dry run changed the store"
    );
}

#[test]
fn dry_run_reports_and_deletes_nothing() {
    let dir = mixed_store();
    let out = bin()
        .arg("scan")
        .args(store_args(&dir))
        .args(["--ttl", "3600", "--dry-run"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Would expire: ['old-a', 'old-b']\n",
        "a dry run lists oldest first"
    );
    assert_eq!(ids_in(&dir).len(), 3);
    let (base, _) = paths(&dir);
    if flat_files() {
        assert!(payload_path(&base, "old-a").exists());
    }
    let kept = load_in(&dir, "old-a").expect("old-a is still stored");
    assert_eq!(kept.payload, b"payload of old-a");
}

#[test]
fn json_reports_ids_count_mode_and_time() {
    let dir = mixed_store();
    for dry_run in [true, false] {
        let mut cmd = bin();
        cmd.arg("scan")
            .args(store_args(&dir))
            .args(["--ttl", "3600", "--json"]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.assert().success().get_output().stdout.clone();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut expired: Vec<String> = serde_json::from_value(v["expired"].clone()).unwrap();
        expired.sort();
        assert_eq!(expired, ["old-a", "old-b"]);
        assert_eq!(v["count"], 2);
        assert_eq!(v["dry_run"], dry_run);
        assert!(v["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{v}");
        assert!(v.get("error").is_none());
    }
    assert_eq!(ids_in(&dir), set(["fresh"]));
}

#[test]
fn base_and_db_default_like_poh_storage() {
    let dir = mixed_store();
    let (base, _) = paths(&dir);
    // --base defaults to ./data, --db to <base>/poh.db.
    bin()
        .current_dir(dir.path())
        .args(["scan", "--ttl", "3600", "--dry-run", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"count\":2"));
    // Environment variables.
    bin()
        .env("POH_BASE", &base)
        .args(["scan", "--ttl", "3600", "--dry-run", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"count\":2"));
    bin()
        .env("POH_BASE", &base)
        .env("POH_DB", base.join("poh.db"))
        .args(["scan", "--ttl", "3600"])
        .assert()
        .success()
        .stdout(predicate::str::contains("'old-a'"));
    assert_eq!(ids_in(&dir), set(["fresh"]));
}

#[test]
fn zero_negative_and_unreadable_durations_exit_2_and_touch_nothing() {
    let dir = mixed_store();
    for (ttl, says) in [
        ("0", "greater than zero"),
        ("0s", "greater than zero"),
        ("-5", "greater than zero"),
        ("-1h", "greater than zero"),
        ("soon", "not a duration"),
        ("nan", "out of range"),
    ] {
        bin()
            .arg("scan")
            .args(store_args(&dir))
            .args(["--ttl", ttl])
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(says).and(predicate::str::contains("--ttl")));
    }
    for interval in ["0", "-1"] {
        bin()
            .arg("run")
            .args(store_args(&dir))
            .args(["--ttl", "1h", "--interval", interval])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("greater than zero"));
    }
    bin()
        .arg("scan")
        .args(store_args(&dir))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--ttl"));
    assert_eq!(ids_in(&dir).len(), 3);
}

#[test]
fn a_missing_store_is_a_clear_error_and_is_not_created() {
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path().join("nowhere");
    bin()
        .args(["scan", "--ttl", "1h", "--base"])
        .arg(&base)
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("no store at").and(predicate::str::contains("nowhere")));
    assert!(!base.exists());

    // The base directory exists but holds no database.
    std::fs::create_dir(&base).unwrap();
    for cmd in [&["scan"][..], &["run", "--interval", "1h"][..]] {
        bin()
            .args(cmd)
            .args(["--ttl", "1h", "--base"])
            .arg(&base)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("database does not exist"));
    }
    assert!(!base.join("poh.db").exists());
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path().join("data");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(
        base.join("poh.db"),
        b"this is not sqlite, just text long enough ......",
    )
    .unwrap();
    bin()
        .args(["scan", "--ttl", "1h", "--base"])
        .arg(&base)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("poh.db").and(predicate::str::contains("database")));
}

#[test]
fn two_scan_processes_at_once_delete_each_expired_tx_exactly_once() {
    let now = real_now();
    let mut txs = many("old", 300, |i| now - 10_000.0 - (i % 17) as f64);
    let old = set(txs.iter().map(|(i, _)| i));
    txs.extend(many("new", 40, |i| now - i as f64));
    let dir = store_with(&txs);

    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_poh-ttl"))
            .arg("scan")
            .args(store_args(&dir))
            .args(["--ttl", "1h", "--json", "--batch-size", "3"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let mut reported = Vec::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<String> = serde_json::from_value(v["expired"].clone()).unwrap();
        assert_eq!(v["count"], ids.len());
        reported.extend(ids);
    }
    assert_eq!(reported.len(), 300, "each expired tx reported exactly once");
    assert_eq!(set(&reported), old);
    assert_eq!(
        ids_in(&dir),
        set(many("new", 40, |_| 0.0).iter().map(|(i, _)| i))
    );
}

/// Needs the prototype's Python model (`poh_testkit::require::seedref`: `../shared/seedref`
/// beside the repository or `POH_SEEDREF`, with python3, aiofiles and aiosqlite). The
/// prototype reads flat-file stores only, so these stores are flat-file ones whatever
/// `POH_LAYOUT` says.
#[test]
fn scan_prints_what_the_prototype_prints() {
    let Some(seedref) = poh_testkit::require::seedref() else {
        return;
    };
    let now = real_now();
    let fresh = ("fresh".to_string(), now - 100.0);
    let old_a = ("old-a".to_string(), now - 20_000.0);
    let old_b = ("old-b".to_string(), now - 10_000.0);
    for txs in [
        vec![fresh.clone()],
        vec![fresh.clone(), old_a.clone()],
        vec![old_b, fresh, old_a],
    ] {
        let expired = txs.len() - 1;
        let ours = store_with_layout(poh_storage::Layout::Files, &txs);
        let theirs = copy_store(&ours);
        let (base, db) = paths(&theirs);
        let py = std::process::Command::new("python3")
            .args(["-m", "poh_ttl.cli", "scan", "--ttl", "3600", "--base"])
            .arg(&base)
            .arg("--db")
            .arg(&db)
            .env("PYTHONPATH", &seedref)
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let out = bin()
            .arg("scan")
            .args(store_args(&ours))
            .args(["--ttl", "3600"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let (py, ours_out) = (
            String::from_utf8(py.stdout).unwrap(),
            String::from_utf8(out).unwrap(),
        );
        if expired < 2 {
            assert_eq!(ours_out, py, "byte for byte");
        } else {
            // Same line up to the order of the ids.
            let items = |s: &str| {
                let inner = s
                    .trim_end()
                    .strip_prefix("Expired: [")
                    .unwrap()
                    .strip_suffix(']')
                    .unwrap();
                let mut v: Vec<String> = inner.split(", ").map(str::to_owned).collect();
                v.sort();
                v
            };
            assert_eq!(items(&ours_out), items(&py));
            assert_eq!(items(&ours_out), ["'old-a'", "'old-b'"]);
        }
        assert_eq!(ids_in(&ours), ids_in(&theirs), "both deleted the same txs");
        assert_eq!(ids_in(&ours), set(["fresh"]));
    }
}

/// A symbolic link planted at one of the store's own directories (`.tmp` of a flat-file
/// store; `.quarantine` and `segments` of a segments store), to a directory outside the
/// store holding a file named like the store's own, is refused by a scan and a dry run,
/// naming it; the target is untouched.
#[test]
fn a_link_planted_at_tmp_is_refused_and_never_followed() {
    let names: &[(&str, &str)] = if flat_files() {
        &[(".tmp", "old-a.1-0.tmp")]
    } else {
        &[
            (".quarantine", "old-a.1-0.json"),
            ("segments", "00000001.seg"),
        ]
    };
    for (name, planted) in names {
        let dir = mixed_store();
        let (base, _) = paths(&dir);
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join(planted), b"not the store's").unwrap();
        let own = base.join(name);
        if own.exists() {
            // Kept beside the store, so nothing of it can be reached through the link.
            std::fs::rename(&own, dir.path().join("kept")).unwrap();
        }
        std::os::unix::fs::symlink(&outside, &own).unwrap();
        let before = files_under(&outside);
        for dry in [true, false] {
            let mut cmd = bin();
            cmd.arg("scan")
                .args(store_args(&dir))
                .args(["--ttl", "3600"]);
            if dry {
                cmd.arg("--dry-run");
            }
            cmd.assert()
                .failure()
                .stderr(predicate::str::contains(*name));
            assert_eq!(
                files_under(&outside),
                before,
                "{name}, dry run {dry}: the target changed"
            );
        }
    }
}
