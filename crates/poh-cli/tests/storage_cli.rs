//! The `poh-storage` binary keeps its documented contract: the prototype's commands and
//! output strings, the documented exit codes, env-var defaults, and bad input that never
//! changes the store.

mod common;

use common::cli::{Scratch, assert_same_files, b64, snapshot, tx_json};
use predicates::prelude::*;

// ---------------------------------------------------------------- happy paths

#[test]
fn init_creates_the_default_store_and_prints_initialized() {
    let s = Scratch::new();
    s.cmd()
        .arg("init")
        .assert()
        .success()
        .stdout("Initialized\n");
    assert!(s.base().join("poh.db").is_file());
    // init on an existing store is fine
    s.cmd()
        .arg("init")
        .assert()
        .success()
        .stdout("Initialized\n");
}

#[test]
fn save_then_load_prints_the_prototype_strings() {
    let s = Scratch::new();
    s.cmd()
        .args(["save", "--tx"])
        .arg(r#"{"tx_id":"t1","holder_id":"holder-1","timestamp":1700000000.5,"payload":"aGVsbG8="}"#)
        .assert()
        .success()
        .stdout("Saved t1\n");
    // Byte for byte what the prototype's `print(json.dumps({...}))` wrote.
    s.cmd()
        .args(["load", "--tx-id", "t1"])
        .assert()
        .success()
        .stdout(
            "{\"tx_id\": \"t1\", \"holder_id\": \"holder-1\", \"timestamp\": 1700000000.5, \"payload\": \"aGVsbG8=\"}\n",
        );
    assert_eq!(std::fs::read(s.base().join("t1.bin")).unwrap(), b"hello");
}

#[test]
fn load_output_is_the_json_form_and_round_trips() {
    let s = Scratch::new();
    let payload: Vec<u8> = (0..=255u8).collect();
    s.save("bin.1", 1_700_000_123.0, &payload);
    let out = s.ok(&["load", "--tx-id", "bin.1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tx_id"], "bin.1");
    assert_eq!(v["holder_id"], "holder-1");
    assert_eq!(v["timestamp"], 1_700_000_123.0);
    assert_eq!(v["payload"], b64(&payload));
    // --json prints the same document
    assert_eq!(s.ok(&["load", "--tx-id", "bin.1", "--json"]), out);
    // and it can be saved again as is
    s.ok(&["delete", "--tx-id", "bin.1"]);
    s.ok(&["save", "--tx", out.trim_end()]);
    assert_eq!(s.ok(&["load", "--tx-id", "bin.1"]), out);
}

#[test]
fn non_ascii_holder_is_escaped_like_the_prototype() {
    let s = Scratch::new();
    s.ok(&[
        "save",
        "--tx",
        r#"{"tx_id":"u","holder_id":"zoë","timestamp":1,"payload":""}"#,
    ]);
    s.cmd()
        .args(["load", "--tx-id", "u"])
        .assert()
        .success()
        .stdout("{\"tx_id\": \"u\", \"holder_id\": \"zo\\u00eb\", \"timestamp\": 1.0, \"payload\": \"\"}\n");
}

#[test]
fn save_reads_the_tx_from_stdin_with_dash() {
    let s = Scratch::new();
    s.cmd()
        .args(["save", "--tx", "-"])
        .write_stdin(tx_json("s1", 5.0, b"from stdin"))
        .assert()
        .success()
        .stdout("Saved s1\n");
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["load", "--tx-id", "s1"])).unwrap();
    assert_eq!(v["payload"], b64(b"from stdin"));
}

#[test]
fn resave_replaces_the_tx() {
    let s = Scratch::new();
    s.save("r", 1.0, b"old");
    s.save("r", 2.0, b"new!");
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["load", "--tx-id", "r"])).unwrap();
    assert_eq!(v["payload"], b64(b"new!"));
    assert_eq!(v["timestamp"], 2.0);
    assert_eq!(s.list(), ["r"]);
}

#[test]
fn delete_prints_deleted_and_the_tx_is_gone() {
    let s = Scratch::new();
    s.save("d1", 1.0, b"x");
    s.save("d2", 1.0, b"y");
    s.cmd()
        .args(["delete", "--tx-id", "d1"])
        .assert()
        .success()
        .stdout("Deleted d1\n");
    assert!(!s.base().join("d1.bin").exists());
    assert_eq!(s.list(), ["d2"]);
    s.cmd()
        .args(["load", "--tx-id", "d1"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("tx d1 not found"));
}

#[test]
fn list_on_an_empty_store_prints_an_empty_array() {
    let s = Scratch::new();
    s.ok(&["init"]);
    s.cmd().arg("list").assert().success().stdout("[]\n");
    s.cmd()
        .args(["list", "--json"])
        .assert()
        .success()
        .stdout("[]\n");
}

#[test]
fn list_prints_ids_in_id_order_with_the_prototype_spacing() {
    let s = Scratch::new();
    for id in ["b", "a", "c"] {
        s.save(id, 1.0, b"x");
    }
    s.cmd()
        .arg("list")
        .assert()
        .success()
        .stdout("[\"a\", \"b\", \"c\"]\n");
}

#[test]
fn list_streams_across_pages() {
    let s = Scratch::new();
    let n = 2_345;
    let lines: String = (0..n)
        .map(|i| tx_json(&format!("id-{i:05}"), i as f64, b"p") + "\n")
        .collect();
    s.cmd()
        .args(["import", "-"])
        .write_stdin(lines)
        .assert()
        .success();
    let ids = s.list();
    let want: Vec<String> = (0..n).map(|i| format!("id-{i:05}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn load_out_writes_the_raw_payload_to_a_file() {
    let s = Scratch::new();
    let payload = b"\x00\x01raw bytes\xff".to_vec();
    s.save("o1", 1.0, &payload);
    s.cmd()
        .args(["load", "--tx-id", "o1", "--out", "out/payload.bin"])
        .assert()
        .failure(); // the folder does not exist
    std::fs::create_dir(s.path().join("out")).unwrap();
    s.cmd()
        .args(["load", "--tx-id", "o1", "--out", "out/payload.bin"])
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("o1"));
    assert_eq!(
        std::fs::read(s.path().join("out/payload.bin")).unwrap(),
        payload
    );
    // replaces an existing file; leaves no temp file behind
    s.save("o1", 1.0, b"second");
    s.ok(&["load", "--tx-id", "o1", "--out", "out/payload.bin"]);
    assert_eq!(
        std::fs::read(s.path().join("out/payload.bin")).unwrap(),
        b"second"
    );
    let names: Vec<_> = std::fs::read_dir(s.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["payload.bin"]);
    // a missing tx creates no file
    s.cmd()
        .args(["load", "--tx-id", "nope", "--out", "out/nope.bin"])
        .assert()
        .code(3);
    assert!(!s.path().join("out/nope.bin").exists());
}

#[test]
fn stats_reports_count_bytes_and_time_range() {
    let s = Scratch::new();
    s.save("a", 1_700_000_000.0, b"12345");
    s.save("b", 1_700_000_100.5, b"1234567890");
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["stats", "--json"])).unwrap();
    assert_eq!(v["count"], 2);
    assert_eq!(v["bytes"], 15);
    assert_eq!(v["oldest"], 1_700_000_000.0);
    assert_eq!(v["newest"], 1_700_000_100.5);
    let human = s.ok(&["stats"]);
    assert!(human.contains("txs:     2"), "{human}");
    assert!(human.contains("15 B"), "{human}");
    assert!(human.contains("2023-11-14T22:13:20.000Z"), "{human}");
    assert!(human.contains("2023-11-14T22:15:00.500Z"), "{human}");
    let empty = Scratch::new();
    empty.ok(&["init"]);
    let v: serde_json::Value = serde_json::from_str(&empty.ok(&["stats", "--json"])).unwrap();
    assert_eq!(v["count"], 0);
    assert!(v["oldest"].is_null());
}

#[test]
fn json_flag_gives_machine_readable_confirmations() {
    let s = Scratch::new();
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["init", "--json"])).unwrap();
    assert_eq!(v["initialized"], true);
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["save", "--json", "--tx", &tx_json("j", 1.0, b"x")])).unwrap();
    assert_eq!(v["saved"], "j");
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "delete", "--tx-id", "j"])).unwrap();
    assert_eq!(v["deleted"], "j");
}

#[test]
fn recover_prints_a_json_report_and_quarantines_corrupt_payloads() {
    let s = Scratch::new();
    s.save("good", 1.0, b"fine");
    s.save("bad", 1.0, b"original");
    std::fs::write(s.base().join("bad.bin"), b"tampered").unwrap();
    std::fs::write(s.base().join("orphan.bin"), b"no row").unwrap();

    let before = s.snapshot();
    let dry: serde_json::Value = serde_json::from_str(&s.ok(&["recover", "--dry-run"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["findings"].as_array().unwrap().len(), 2, "{dry}");
    assert_same_files(&before, &s.snapshot(), "recover --dry-run");

    let rep: serde_json::Value = serde_json::from_str(&s.ok(&["recover"])).unwrap();
    assert_eq!(rep["dry_run"], false);
    let kinds: Vec<(String, String)> = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["tx_id"].as_str().unwrap().to_owned(),
                f["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(kinds.contains(&("bad".into(), "corrupt".into())), "{rep}");
    assert!(kinds.contains(&("orphan".into(), "orphan".into())), "{rep}");
    assert_eq!(s.list(), ["good"]);
    let mut quarantined = std::fs::read_dir(s.base().join(".quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect::<Vec<_>>();
    quarantined.sort();
    // The orphan is kept too: recover never deletes a payload file.
    assert_eq!(quarantined, [b"no row".to_vec(), b"tampered".to_vec()]);
    s.cmd().arg("verify").assert().success();
}

#[test]
fn verify_passes_on_a_clean_store() {
    let s = Scratch::new();
    s.save("a", 1.0, b"x");
    s.save("b", 2.0, b"y");
    s.cmd()
        .arg("verify")
        .assert()
        .success()
        .stdout(predicate::str::contains("2 ok, 0 problem(s)"));
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["verify", "--json"])).unwrap();
    assert_eq!(v["rows_ok"], 2);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
}

// ---------------------------------------------------------------- flags and env vars

#[test]
fn env_vars_set_the_default_base_and_db() {
    let s = Scratch::new();
    let base = s.path().join("env-base");
    let db = s.path().join("meta/env.db");
    std::fs::create_dir(s.path().join("meta")).unwrap();
    s.cmd()
        .env("POH_BASE", &base)
        .env("POH_DB", &db)
        .args(["save", "--tx", &tx_json("e1", 1.0, b"x")])
        .assert()
        .success();
    assert!(base.join("e1.bin").is_file());
    assert!(db.is_file());
    assert!(!base.join("poh.db").exists());
    assert!(!s.base().exists(), "./data untouched");
    s.cmd()
        .env("POH_BASE", &base)
        .env("POH_DB", &db)
        .arg("list")
        .assert()
        .success()
        .stdout("[\"e1\"]\n");
    // POH_BASE alone: the db defaults to <base>/poh.db
    let base2 = s.path().join("b2");
    s.cmd()
        .env("POH_BASE", &base2)
        .arg("init")
        .assert()
        .success();
    assert!(base2.join("poh.db").is_file());
}

#[test]
fn flags_override_env_vars_and_work_on_either_side_of_the_subcommand() {
    let s = Scratch::new();
    let flag_base = s.path().join("flag");
    s.cmd()
        .env("POH_BASE", s.path().join("env"))
        .arg("--base")
        .arg(&flag_base)
        .arg("init")
        .assert()
        .success();
    assert!(flag_base.join("poh.db").is_file());
    assert!(!s.path().join("env").exists());
    s.cmd()
        .arg("list")
        .arg("--base")
        .arg(&flag_base)
        .assert()
        .success()
        .stdout("[]\n");
    let db = s.path().join("x.db");
    s.cmd()
        .args(["save", "--base", "store2", "--db"])
        .arg(&db)
        .args(["--tx", &tx_json("f", 1.0, b"x")])
        .assert()
        .success();
    assert!(db.is_file());
    assert!(s.path().join("store2/f.bin").is_file());
}

#[test]
fn max_payload_limits_save_and_import() {
    let s = Scratch::new();
    s.ok(&["init"]);
    let before = s.snapshot();
    s.cmd()
        .args([
            "save",
            "--max-payload",
            "4",
            "--tx",
            &tx_json("big", 1.0, b"12345"),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("limit is 4"));
    s.cmd()
        .env("POH_MAX_PAYLOAD", "4")
        .args(["import", "-"])
        .write_stdin(tx_json("big", 1.0, b"12345"))
        .assert()
        .code(2);
    assert_same_files(&before, &s.snapshot(), "a read or a rejected import");
    s.ok(&[
        "save",
        "--max-payload",
        "5",
        "--tx",
        &tx_json("big", 1.0, b"12345"),
    ]);
}

#[test]
fn help_documents_exit_codes_and_env_vars() {
    let s = Scratch::new();
    let help = s.ok(&["--help"]);
    for want in [
        "Exit codes:",
        "3  tx not found",
        "4  integrity problem",
        "POH_BASE",
        "POH_DB",
        "RUST_LOG",
        "import",
        "verify",
        "stats",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}

// ---------------------------------------------------------------- exit codes

#[test]
fn missing_tx_exits_3_for_load_and_delete() {
    let s = Scratch::new();
    s.ok(&["init"]);
    for cmd in ["load", "delete"] {
        s.cmd()
            .args([cmd, "--tx-id", "ghost"])
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::contains("tx ghost not found"));
    }
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new();
    s.cmd().assert().code(2);
    s.cmd().arg("frobnicate").assert().code(2);
    s.cmd().args(["list", "--no-such-flag"]).assert().code(2);
    s.cmd().arg("save").assert().code(2); // --tx missing
    s.cmd()
        .args(["import", "--batch-size", "0"])
        .assert()
        .code(2);
}

/// Every bad input exits 2, names the problem, and leaves the store byte for byte as it was.
#[test]
fn bad_input_exits_2_and_leaves_the_store_unchanged() {
    let s = Scratch::new();
    s.save("keep", 1_700_000_000.0, b"kept");
    let before = s.snapshot();
    let bad_txs: &[(&str, &str)] = &[
        ("not json", "malformed"),
        ("{", "malformed"),
        (r#"{"tx_id":"a","holder_id":"h","timestamp":1}"#, "payload"),
        (
            r#"{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"!!"}"#,
            "base64",
        ),
        (
            r#"{"tx_id":"a\nb","holder_id":"h","timestamp":1,"payload":""}"#,
            "tx_id",
        ),
        (
            r#"{"tx_id":"","holder_id":"h","timestamp":1,"payload":""}"#,
            "tx_id",
        ),
        (
            r#"{"tx_id":"a","holder_id":"","timestamp":1,"payload":""}"#,
            "holder_id",
        ),
        (
            r#"{"tx_id":"a","holder_id":"h","timestamp":-1,"payload":""}"#,
            "negative",
        ),
        (
            r#"{"tx_id":"a","holder_id":"h","timestamp":1700000000000,"payload":""}"#,
            "milliseconds",
        ),
        (
            r#"{"tx_id":"a","holder_id":"h","timestamp":1,"payload":"","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"tx_id":"keep","holder_id":"h","timestamp":"1","payload":""}"#,
            "malformed",
        ),
    ];
    for (tx, word) in bad_txs {
        s.cmd()
            .args(["save", "--tx", tx])
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(*word));
        assert_same_files(&before, &s.snapshot(), &format!("save --tx {tx}"));
    }
    for args in [
        ["load", "--tx-id", "a\nb"],
        ["delete", "--tx-id", "a\u{7f}"],
        ["load", "--tx-id", ""],
    ] {
        s.cmd()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("tx_id"));
        assert_same_files(&before, &s.snapshot(), &format!("{args:?}"));
    }
    // the same on a missing store: nothing is created
    let empty = Scratch::new();
    empty.cmd().args(["save", "--tx", "{"]).assert().code(2);
    empty
        .cmd()
        .args(["import", "-"])
        .write_stdin("garbage\n")
        .assert()
        .code(2);
    assert!(!empty.base().exists());
}

/// Any id without control characters works through the CLI, printed back as given; a
/// path-like id is stored under an escaped name inside the base.
#[test]
fn path_like_and_tuple_ids_save_load_list_and_delete() {
    let s = Scratch::new();
    for id in ["('127.0.0.1', 5)", "../x", "é"] {
        s.save(id, 1_700_000_000.0, id.as_bytes());
    }
    assert_eq!(
        s.ok(&["list"]).trim_end(),
        r#"["('127.0.0.1', 5)", "../x", "\u00e9"]"#
    );
    let out = s.ok(&["load", "--tx-id", "../x"]);
    assert!(out.contains(r#""tx_id": "../x""#), "{out}");
    assert!(s.base().join("~..%2Fx.bin").is_file());
    assert!(s.base().join("~%28%27127.0.0.1%27%2C%205%29.bin").is_file());
    assert!(!s.path().join("x.bin").exists());
    assert_eq!(
        s.ok(&["delete", "--tx-id", "../x"]).trim_end(),
        "Deleted ../x"
    );
    s.ok(&["verify"]);
}

#[test]
fn reads_and_misses_do_not_change_the_store() {
    let s = Scratch::new();
    s.save("a", 1.0, b"x");
    let before = s.snapshot();
    s.ok(&["load", "--tx-id", "a"]);
    s.ok(&["list"]);
    s.ok(&["stats"]);
    s.ok(&["verify"]);
    s.cmd().args(["load", "--tx-id", "zzz"]).assert().code(3);
    s.cmd().args(["delete", "--tx-id", "zzz"]).assert().code(3);
    assert_same_files(&before, &s.snapshot(), "a read");
}

#[test]
fn corrupt_payload_load_exits_4_naming_the_tx() {
    let s = Scratch::new();
    s.save("c1", 1.0, b"original");
    std::fs::write(s.base().join("c1.bin"), b"flipped!").unwrap();
    s.cmd()
        .args(["load", "--tx-id", "c1"])
        .assert()
        .code(4)
        .stdout("")
        .stderr(predicate::str::contains("integrity error on tx c1"));
    // --out writes nothing either
    s.cmd()
        .args(["load", "--tx-id", "c1", "--out", "x.bin"])
        .assert()
        .code(4);
    assert!(!s.path().join("x.bin").exists());
    // a missing payload file is an integrity problem too
    s.save("m1", 1.0, b"here");
    std::fs::remove_file(s.base().join("m1.bin")).unwrap();
    s.cmd()
        .args(["load", "--tx-id", "m1"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("m1").and(predicate::str::contains("missing")));
}

#[test]
fn verify_on_a_corrupted_store_exits_4_and_lists_the_tx() {
    let s = Scratch::new();
    s.save("ok1", 1.0, b"fine");
    s.save("bad1", 1.0, b"original");
    s.save("gone1", 1.0, b"deleted behind our back");
    std::fs::write(s.base().join("bad1.bin"), b"changed").unwrap();
    std::fs::remove_file(s.base().join("gone1.bin")).unwrap();
    let before = s.snapshot();
    let out = s.cmd().arg("verify").assert().code(4);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("bad1: corrupt"), "{stdout}");
    assert!(stdout.contains("gone1: missing_payload"), "{stdout}");
    assert!(!stdout.contains("ok1:"), "{stdout}");
    out.stderr(predicate::str::contains("verify found 2 problem(s)"));

    let out = s.cmd().args(["verify", "--json"]).assert().code(4);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let mut ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tx_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["bad1", "gone1"]);
    assert_same_files(&before, &s.snapshot(), "verify");
}

#[test]
fn commands_on_a_missing_store_fail_clearly_and_create_nothing() {
    let s = Scratch::new();
    for args in [
        vec!["load", "--tx-id", "a"],
        vec!["delete", "--tx-id", "a"],
        vec!["list"],
        vec!["recover"],
        vec!["recover", "--dry-run"],
        vec!["verify"],
        vec!["stats"],
    ] {
        s.cmd().args(&args).assert().code(1).stdout("").stderr(
            predicate::str::contains("no store at")
                .and(predicate::str::contains("poh-storage init")),
        );
        assert!(snapshot(s.path()).is_empty(), "{args:?} created files");
    }
    // a base directory without its database
    std::fs::create_dir(s.base()).unwrap();
    s.cmd()
        .args(["load", "--tx-id", "a"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("metadata database does not exist"));
    assert!(!s.base().join("poh.db").exists());
}

// ---------------------------------------------------------------- import

fn numbered_lines(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            tx_json(
                &format!("tx{i:03}"),
                i as f64,
                format!("payload {i}").as_bytes(),
            ) + "\n"
        })
        .collect()
}

#[test]
fn import_from_a_file_saves_every_line() {
    let s = Scratch::new();
    std::fs::write(s.path().join("in.jsonl"), numbered_lines(0..25)).unwrap();
    s.cmd()
        .args(["import", "in.jsonl", "--batch-size", "10"])
        .assert()
        .success()
        .stdout("Imported 25 tx(s) from in.jsonl in 3 batch(es)\n");
    assert_eq!(s.list().len(), 25);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["load", "--tx-id", "tx017"])).unwrap();
    assert_eq!(v["payload"], b64(b"payload 17"));
    assert_eq!(v["timestamp"], 17.0);
    s.ok(&["verify"]);
}

#[test]
fn import_from_stdin_with_blank_lines_and_crlf() {
    let s = Scratch::new();
    let input = format!(
        "{}\r\n\n   \n{}\n{}",
        tx_json("a", 1.0, b"1"),
        tx_json("b", 2.0, b"2"),
        tx_json("c", 3.0, b"3") // no final newline
    );
    let out = s
        .cmd()
        .args(["import", "--json"])
        .write_stdin(input)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["imported"], 3);
    assert_eq!(v["lines"], 5);
    assert_eq!(v["source"], "stdin");
    assert_eq!(s.list(), ["a", "b", "c"]);
}

/// Lines before the first bad line are saved (their batches were acknowledged); the bad
/// line and all after it are not; the error names the line.
#[test]
fn import_stops_at_a_malformed_line_keeping_what_came_before() {
    let s = Scratch::new();
    let input = format!(
        "{}not json at all\n{}",
        numbered_lines(0..25),
        numbered_lines(25..30)
    );
    for (source, path_arg) in [("in.jsonl", Some("in.jsonl")), ("stdin", None)] {
        let s2 = Scratch::new();
        let mut cmd = s2.cmd();
        cmd.args(["import", "--batch-size", "10"]);
        match path_arg {
            Some(p) => {
                std::fs::write(s2.path().join(p), &input).unwrap();
                cmd.arg(p);
            }
            None => {
                cmd.write_stdin(input.clone());
            }
        }
        cmd.assert().code(2).stderr(
            predicate::str::contains(format!("{source} line 26"))
                .and(predicate::str::contains("malformed"))
                .and(predicate::str::contains(
                    "25 tx(s) before the error were saved",
                )),
        );
        let want: Vec<String> = (0..25).map(|i| format!("tx{i:03}")).collect();
        assert_eq!(s2.list(), want, "from {source}");
    }
    // an invalid field is reported the same way
    s.cmd()
        .args(["import", "-"])
        .write_stdin(format!(
            "{}{{\"tx_id\":\"x\",\"holder_id\":\"\",\"timestamp\":1,\"payload\":\"\"}}\n",
            numbered_lines(0..2)
        ))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 3").and(predicate::str::contains("holder_id")));
    assert_eq!(s.list(), ["tx000", "tx001"]);
}

#[test]
fn import_rejects_invalid_utf8_with_the_line_number() {
    let s = Scratch::new();
    let mut input = numbered_lines(0..1).into_bytes();
    input.extend_from_slice(b"{\"tx_id\":\"\xff\"}\n");
    s.cmd()
        .arg("import")
        .write_stdin(input)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2").and(predicate::str::contains("UTF-8")));
    assert_eq!(s.list(), ["tx000"]);
}

#[test]
fn print_acked_prints_exactly_the_saved_ids() {
    let s = Scratch::new();
    let input = format!("{}bad\n", numbered_lines(0..23));
    let out = s
        .cmd()
        .args(["import", "-", "--batch-size", "5", "--print-acked"])
        .write_stdin(input)
        .assert()
        .code(2);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let acked: Vec<&str> = stdout.lines().collect();
    let want: Vec<String> = (0..23).map(|i| format!("tx{i:03}")).collect();
    assert_eq!(acked, want, "only ids, one per line, in input order");
    assert_eq!(s.list(), want, "every acknowledged id is stored");

    // on success the summary goes to stderr, keeping stdout to ids
    let s = Scratch::new();
    s.cmd()
        .args(["import", "--print-acked"])
        .write_stdin(numbered_lines(0..3))
        .assert()
        .success()
        .stdout("tx000\ntx001\ntx002\n")
        .stderr(predicate::str::contains("Imported 3 tx(s)"));
}

#[test]
fn import_of_a_missing_file_fails_without_creating_a_store() {
    let s = Scratch::new();
    s.cmd()
        .args(["import", "nope.jsonl"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope.jsonl"));
    assert!(!s.base().exists());
}

#[test]
fn import_repeats_of_an_id_keep_the_last() {
    let s = Scratch::new();
    let input = format!(
        "{}\n{}\n{}\n",
        tx_json("dup", 1.0, b"first"),
        tx_json("other", 1.0, b"o"),
        tx_json("dup", 2.0, b"second")
    );
    s.cmd().arg("import").write_stdin(input).assert().success();
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["load", "--tx-id", "dup"])).unwrap();
    assert_eq!(v["payload"], b64(b"second"));
    s.ok(&["verify"]);
}

#[test]
fn verify_leaves_an_interrupted_save_as_found_and_recover_finishes_it() {
    let s = Scratch::new();
    s.save("t1", 1.0, b"old payload");
    // What a crash after the commit point leaves: the row names the new payload, which
    // is still in .tmp/, while t1.bin holds the old one.
    s.save("t1", 2.0, b"new payload");
    let base = s.base();
    std::fs::write(base.join(".tmp/t1.999-0.tmp"), b"new payload").unwrap();
    std::fs::write(base.join("t1.bin"), b"old payload").unwrap();
    let before = s.snapshot();

    let out = s.cmd().args(["verify", "--json"]).assert().code(4);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["rolled_forward"], serde_json::json!(["t1"]), "{v}");
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    s.cmd().args(["recover", "--dry-run"]).assert().success();
    assert_same_files(&before, &s.snapshot(), "verify and recover --dry-run");

    s.ok(&["recover"]);
    s.ok(&["verify"]);
    let loaded: serde_json::Value =
        serde_json::from_str(&s.ok(&["load", "--tx-id", "t1"])).unwrap();
    assert_eq!(loaded["payload"], b64(b"new payload"));
    assert!(!base.join(".tmp/t1.999-0.tmp").exists());
}
