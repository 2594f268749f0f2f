//! Both binaries on a `segments` store: `init --layout segments` records the layout, every
//! command keeps the same output contract as on a flat-file store, a mismatched --layout
//! or --segment-window is refused with exit 2 and no change, corruption is found (exit 4)
//! and quarantined, and `poh-ttl scan` drops whole expired windows.

mod common;

use common::cli::{Scratch, assert_same_files, tx_json};
use predicates::prelude::*;

/// A scratch directory with an initialised segments store of 1-hour windows.
fn segments_store() -> Scratch {
    let s = Scratch::new();
    s.cmd()
        .args(["init", "--layout", "segments"])
        .assert()
        .success()
        .stdout("Initialized\n");
    s
}

fn seg_files(s: &Scratch) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(s.base().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn init_records_the_layout_and_reports_it() {
    let s = segments_store();
    assert!(s.base().join(".poh-layout").is_file());
    assert!(s.base().join("segments").is_dir());
    let text = std::fs::read_to_string(s.base().join(".poh-layout")).unwrap();
    assert!(
        text.contains("layout=segments") && text.contains("window_secs=3600"),
        "{text}"
    );
    // init again, with or without the flag, is fine and says what it is.
    let out = s.ok(&["init", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layout"], "segments");
    s.ok(&["init", "--layout", "segments"]);
    // A flat-file store says so too.
    let f = Scratch::new();
    let v: serde_json::Value = serde_json::from_str(&f.ok(&["init", "--json"])).unwrap();
    assert_eq!(v["layout"], "files");
}

#[test]
fn the_commands_keep_their_output_contract() {
    let s = segments_store();
    s.cmd()
        .args(["save", "--tx"])
        .arg(r#"{"tx_id":"t1","holder_id":"holder-1","timestamp":1700000000.5,"payload":"aGVsbG8="}"#)
        .assert()
        .success()
        .stdout("Saved t1\n");
    s.cmd()
        .args(["load", "--tx-id", "t1"])
        .assert()
        .success()
        .stdout(
            "{\"tx_id\": \"t1\", \"holder_id\": \"holder-1\", \"timestamp\": 1700000000.5, \"payload\": \"aGVsbG8=\"}\n",
        );
    assert!(!s.base().join("t1.bin").exists(), "no payload files");
    s.save("t2", 1_700_000_100.0, b"second");
    s.save("t1", 1_700_000_200.0, b"re-saved");
    assert_eq!(s.list(), ["t1", "t2"]);
    s.cmd()
        .args(["load", "--tx-id", "t1", "--out", "-"])
        .assert()
        .success()
        .stdout("re-saved");
    s.cmd()
        .args(["delete", "--tx-id", "t2"])
        .assert()
        .success()
        .stdout("Deleted t2\n");
    s.cmd().args(["delete", "--tx-id", "t2"]).assert().code(3);
    s.cmd().args(["load", "--tx-id", "t2"]).assert().code(3);
    let lines: String = (0..50)
        .map(|i| tx_json(&format!("imp{i:02}"), 1_700_000_000.0 + i as f64, b"x") + "\n")
        .collect();
    s.cmd()
        .args(["import", "-"])
        .write_stdin(lines)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["stats", "--json"])).unwrap();
    assert_eq!(v["count"], 51);
    s.cmd().arg("verify").assert().success();
    let report: serde_json::Value = serde_json::from_str(&s.ok(&["recover"])).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn a_layout_or_window_other_than_the_stores_is_refused_and_changes_nothing() {
    let s = segments_store();
    s.save("a", 1.0, b"x");
    let before = s.snapshot();
    for args in [
        vec!["--layout", "files", "list"],
        vec![
            "--layout",
            "files",
            "save",
            "--tx",
            &tx_json("b", 1.0, b"y"),
        ],
        vec!["--segment-window", "10m", "init"],
    ] {
        s.cmd()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("segments"));
    }
    assert_same_files(&before, &s.snapshot(), "a refused --layout");

    let f = Scratch::new();
    f.save("a", 1.0, b"x");
    let before = f.snapshot();
    f.cmd()
        .args([
            "--layout",
            "segments",
            "save",
            "--tx",
            &tx_json("b", 1.0, b"y"),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("files store").and(predicate::str::contains("segments")));
    assert_same_files(&before, &f.snapshot(), "a refused --layout");
    f.cmd()
        .args(["--layout", "rocks", "init"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown layout"));
}

#[test]
fn a_corrupt_record_exits_4_and_recover_quarantines_it() {
    let s = segments_store();
    s.save("ok1", 1.0, b"fine");
    s.save("bad1", 1.0, b"original payload");
    let seg = seg_files(&s).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    // Inside bad1's payload, the last record (zeros of padding may follow it).
    let last = data.iter().rposition(|b| *b != 0).unwrap() - 2;
    data[last] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    s.cmd()
        .args(["load", "--tx-id", "bad1"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("integrity error on tx bad1"));
    let before = s.snapshot();
    let out = s.cmd().arg("verify").assert().code(4);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("bad1: corrupt"), "{stdout}");
    assert!(!stdout.contains("ok1:"), "{stdout}");
    assert_same_files(&before, &s.snapshot(), "verify");
    let report: serde_json::Value = serde_json::from_str(&s.ok(&["recover"])).unwrap();
    assert_eq!(report["findings"][0]["tx_id"], "bad1", "{report}");
    s.cmd().args(["load", "--tx-id", "bad1"]).assert().code(3);
    s.cmd().args(["load", "--tx-id", "ok1"]).assert().success();
    s.cmd().arg("verify").assert().success();
    // --out onto the store's own files is refused.
    let seg_name = seg.display().to_string();
    s.cmd()
        .args(["load", "--tx-id", "ok1", "--out", &seg_name])
        .assert()
        .code(2);
}

#[test]
fn poh_ttl_drops_whole_expired_windows() {
    let s = segments_store();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Three windows a day apart; the oldest two are past a 1.5-day TTL.
    for (id, age) in [("d3", 3.0), ("d2", 2.0), ("d0", 0.0)] {
        s.save(id, now - age * 86_400.0, id.as_bytes());
    }
    assert_eq!(seg_files(&s).len(), 3);
    let ttl = || {
        let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_poh-ttl"));
        c.current_dir(s.path())
            .env_remove("POH_BASE")
            .env_remove("POH_DB")
            .env_remove("POH_LAYOUT")
            .env_remove("RUST_LOG");
        c
    };
    let before = s.snapshot();
    ttl()
        .args(["scan", "--ttl", "36h", "--dry-run"])
        .assert()
        .success();
    assert_same_files(&before, &s.snapshot(), "a dry run");
    ttl()
        .args(["scan", "--ttl", "36h"])
        .assert()
        .success()
        .stdout(
            predicate::eq("Expired: ['d3', 'd2']\n").or(predicate::eq("Expired: ['d2', 'd3']\n")),
        );
    assert_eq!(s.list(), ["d0"]);
    assert_eq!(
        seg_files(&s).len(),
        1,
        "the expired windows' files are gone"
    );
    s.cmd().arg("verify").assert().success();
}

#[test]
fn migrate_converts_in_place_and_to_a_new_path() {
    let s = Scratch::new();
    for i in 0..20 {
        s.save(
            &format!("t{i:02}"),
            1_700_000_000.0 + i as f64,
            format!("p{i}").as_bytes(),
        );
    }
    let loads = |s: &Scratch, base: &str| -> Vec<String> {
        (0..20)
            .map(|i| s.ok(&["--base", base, "load", "--tx-id", &format!("t{i:02}")]))
            .collect()
    };
    let before = loads(&s, "data");
    let out = s.ok(&["migrate", "--to", "segments"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("files"), Some("segments")),
        "{r}"
    );
    assert_eq!(r["verified"], 20, "{r}");
    assert!(
        s.path().join("data.pre-migrate/t00.bin").is_file(),
        "the old store is kept"
    );
    assert!(s.base().join(".poh-layout").is_file());
    assert_eq!(loads(&s, "data"), before);
    s.cmd().arg("verify").assert().success();

    s.ok(&["migrate", "--to", "files", "--dest", "copy"]);
    assert!(s.path().join("copy/t00.bin").is_file());
    assert_eq!(loads(&s, "copy"), before);
    // The source is still the segments store.
    assert!(s.base().join(".poh-layout").is_file());
    // A second in-place run while the first run's copy is still kept is refused.
    s.cmd()
        .args(["migrate", "--to", "files"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pre-migrate"));
}
