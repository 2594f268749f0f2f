//! Both binaries on a store in PostgreSQL (`--db postgres://...`), against a throwaway
//! server (`poh_testkit::pg`): skipped with a note where no PostgreSQL binaries exist,
//! mandatory under `POH_REQUIRE_ALL=1`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::cli::{Scratch, tx_json};
use poh_testkit::pg;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn ttl(s: &Scratch) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_poh-ttl"));
    c.current_dir(s.path())
        .env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_LAYOUT")
        .env_remove("RUST_LOG")
        .env_remove("POH_LOG_FORMAT");
    c
}

#[test]
fn every_command_works_on_a_database_and_nothing_local_is_made() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("cli").expect("createdb");
    let s = Scratch::new();
    let db = ["--db", url.as_str()];
    let init = s.ok(&[&db[..], &["init", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&init).expect("json");
    assert_eq!(v["layout"], "postgres");
    assert_eq!(
        v["db"],
        url.replace(c.password(), "***"),
        "password not shown"
    );
    let t = now();
    for (id, ts) in [("old", 1000.0), ("fresh", t), ("('127.0.0.1', 5)", t)] {
        let out = s.ok(&[&db[..], &["save", "--tx", &tx_json(id, ts, id.as_bytes())]].concat());
        assert_eq!(out, format!("Saved {id}\n"));
    }
    let list: Vec<String> =
        serde_json::from_str(&s.ok(&[&db[..], &["list"]].concat())).expect("list json");
    assert_eq!(list, ["('127.0.0.1', 5)", "fresh", "old"]);
    let out = s.ok(&[&db[..], &["load", "--tx-id", "fresh"]].concat());
    assert!(out.contains("\"fresh\""), "{out}");
    let stats = s.ok(&[&db[..], &["stats", "--json"]].concat());
    assert!(stats.contains("\"count\":3"), "{stats}");
    s.ok(&[&db[..], &["verify"]].concat());
    // The TTL scan, through POH_DB this time.
    ttl(&s)
        .env("POH_DB", &url)
        .args(["scan", "--ttl", "3600"])
        .assert()
        .success()
        .stdout("Expired: ['old']\n");
    s.ok(&[&db[..], &["delete", "--tx-id", "fresh"]].concat());
    s.cmd()
        .args(db)
        .args(["load", "--tx-id", "fresh"])
        .assert()
        .code(3);
    assert!(!s.base().exists(), "no local store was made");
}

#[test]
fn migrate_moves_stores_between_local_layouts_and_a_database_both_ways() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("mig").expect("createdb");
    let s = Scratch::new();
    s.ok(&["init", "--layout", "segments"]);
    let t = now();
    let lines: String = (0..300)
        .map(|i| {
            tx_json(
                &format!("m{i:03}"),
                t - f64::from(i) * 60.0,
                &[i as u8; 100],
            ) + "\n"
        })
        .collect();
    std::fs::write(s.path().join("in.jsonl"), lines).expect("write");
    s.ok(&["import", "in.jsonl"]);
    let local = s.list();
    let report = s.ok(&["migrate", "--to", "postgres", "--dest-db", &url]);
    let r: serde_json::Value = serde_json::from_str(&report).expect("json");
    assert_eq!(
        (r["copied"].as_u64(), r["verified"].as_u64()),
        (Some(300), Some(300)),
        "{r}"
    );
    assert!(!report.contains(c.password()), "{report}");
    let in_db: Vec<String> =
        serde_json::from_str(&s.ok(&["--db", &url, "list"])).expect("list json");
    assert_eq!(in_db, local);
    // Running it again resumes: nothing to copy.
    let again: serde_json::Value =
        serde_json::from_str(&s.ok(&["migrate", "--to", "postgres", "--dest-db", &url]))
            .expect("json");
    assert_eq!(
        (again["copied"].as_u64(), again["already_there"].as_u64()),
        (Some(0), Some(300))
    );
    // And back to a local flat-file store.
    let back = s.path().join("back");
    let back_s = back.display().to_string();
    s.ok(&["--db", &url, "migrate", "--to", "files", "--dest", &back_s]);
    let again: Vec<String> =
        serde_json::from_str(&s.ok(&["--base", &back_s, "list"])).expect("list json");
    assert_eq!(again, local);
    s.ok(&["--base", &back_s, "verify"]);
    // A database that holds another store's txs is never emptied by a migration.
    s.ok(&["--db", &url, "save", "--tx", &tx_json("theirs", t, b"x")]);
    let out = s
        .cmd()
        .args(["migrate", "--to", "postgres", "--dest-db", &url])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("theirs"));
    s.ok(&["--db", &url, "load", "--tx-id", "theirs"]);
    // In place is not possible.
    s.cmd()
        .args(["migrate", "--to", "postgres"])
        .assert()
        .code(2);
}

#[test]
fn bad_urls_credentials_and_missing_databases_exit_as_documented() {
    let Some(c) = pg::cluster() else { return };
    let s = Scratch::new();
    let pw = c.password().to_owned();
    let run = |args: &[&str]| s.cmd().args(args).output().expect("run");
    let no_db = format!("postgres://poh:{pw}@127.0.0.1:{}", c.port());
    let out = run(&["--db", &no_db, "list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = format!("postgres://poh:not-{pw}@127.0.0.1:{}/postgres", c.port());
    let out = run(&["--db", &wrong, "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the credentials") && !err.contains(&pw),
        "{err}"
    );
    let missing = c.url("nosuchdb");
    let out = run(&["--db", &missing, "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nosuchdb") && !err.contains(&pw), "{err}");
    ttl(&s)
        .args(["--db", &missing, "scan", "--ttl", "60"])
        .assert()
        .code(3);
    // The password may come from PGPASSWORD instead of the command line.
    let url = c.create_db("pwenv").expect("createdb");
    let bare = url.replace(&format!(":{pw}@"), "@");
    assert!(!bare.contains(&pw));
    s.cmd()
        .env("PGPASSWORD", &pw)
        .args(["--db", &bare, "init"])
        .assert()
        .success();
}

#[test]
fn a_server_crash_mid_import_loses_no_acknowledged_tx() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("crash").expect("createdb");
    let s = Scratch::new();
    s.ok(&["--db", &url, "init"]);
    let t = now();
    let mut f = std::fs::File::create(s.path().join("big.jsonl")).expect("create");
    for i in 0..60_000u32 {
        writeln!(f, "{}", tx_json(&format!("i{i:05}"), t, &i.to_le_bytes())).expect("write");
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_poh-storage"))
        .current_dir(s.path())
        .env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_LAYOUT")
        .args([
            "--db",
            &url,
            "import",
            "big.jsonl",
            "--print-acked",
            "--batch-size",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked: Vec<String> = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        acked.push(line.expect("utf-8 line"));
        if acked.len() >= 2000 {
            break;
        }
    }
    c.stop_immediate().expect("crash the server");
    acked.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the import fails once the server is gone"
    );
    assert!(acked.len() < 60_000, "the crash came mid-import");
    c.start_server().expect("restart");
    let listed: std::collections::BTreeSet<String> =
        serde_json::from_str::<Vec<String>>(&s.ok(&["--db", &url, "list"]))
            .expect("list json")
            .into_iter()
            .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged txs lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    s.ok(&["--db", &url, "verify"]);
}

#[test]
fn the_daemon_survives_a_server_restart() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("daemon").expect("createdb");
    let s = Scratch::new();
    s.ok(&["--db", &url, "init"]);
    s.ok(&[
        "--db",
        &url,
        "save",
        "--tx",
        &tx_json("old1", now() - 7200.0, b"x"),
    ]);
    let args: Vec<String> = [
        "--db",
        &url,
        "--ttl",
        "1h",
        "--interval",
        "50ms",
        "--log-format",
        "json",
    ]
    .map(String::from)
    .into();
    let mut d = common::daemon::Daemon::start(&args, &[]);
    let first = d.wait_for_line("\"expired\":1");
    assert!(!first.contains(c.password()), "{first}");
    assert!(first.contains(&url.replace(c.password(), "***")), "{first}");
    c.stop_immediate().expect("crash the server");
    d.wait_for_line("TTL pass failed");
    c.start_server().expect("restart");
    // Saved after the restart, expired by the same daemon.
    s.ok(&[
        "--db",
        &url,
        "save",
        "--tx",
        &tx_json("old2", now() - 7200.0, b"y"),
    ]);
    d.wait_for_line("\"expired\":1");
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(
        log.iter().all(|l| !l.contains(c.password())),
        "password in the log"
    );
    let list: Vec<String> =
        serde_json::from_str(&s.ok(&["--db", &url, "list"])).expect("list json");
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn two_writer_processes_and_two_daemons_share_one_database() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("shared").expect("createdb");
    let s = Scratch::new();
    s.ok(&["--db", &url, "init"]);
    let t = now();
    // Each writer: its own fresh txs, old ones for the daemons, and 500 ids both write.
    for w in ["a", "b"] {
        let mut f = std::fs::File::create(s.path().join(format!("{w}.jsonl"))).expect("create");
        for i in 0..1500u32 {
            let (id, ts) = match i % 3 {
                0 => (format!("{w}-fresh-{i}"), t - f64::from(i)),
                1 => (format!("{w}-old-{i}"), t - 90_000.0 - f64::from(i)),
                _ => (format!("both-{}", i / 3), t - 10.0),
            };
            writeln!(f, "{}", tx_json(&id, ts, w.as_bytes())).expect("write");
        }
    }
    let daemon_args: Vec<String> = [
        "--db",
        &url,
        "--ttl",
        "1d",
        "--interval",
        "20ms",
        "--log-format",
        "json",
    ]
    .map(String::from)
    .into();
    let mut daemons = [
        common::daemon::Daemon::start(&daemon_args, &[]),
        common::daemon::Daemon::start(&daemon_args, &[]),
    ];
    let writers: Vec<_> = ["a", "b"]
        .iter()
        .map(|w| {
            Command::new(env!("CARGO_BIN_EXE_poh-storage"))
                .current_dir(s.path())
                .env_remove("POH_BASE")
                .env_remove("POH_DB")
                .env_remove("POH_LAYOUT")
                .args([
                    "--db",
                    &url,
                    "import",
                    &format!("{w}.jsonl"),
                    "--batch-size",
                    "50",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn import")
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().expect("wait import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Both daemons pass; wait (bounded) until their passes have expired every old tx.
    for d in &mut daemons {
        d.wait_for_line("TTL pass complete");
    }
    let deadline = std::time::Instant::now() + common::daemon::SAFETY;
    while c
        .psql(
            "shared",
            "SELECT count(*) FROM poh_txs WHERE tx_id LIKE '%-old-%'",
        )
        .expect("psql")
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "old txs never expired"
        );
        std::thread::sleep(common::daemon::POLL);
    }
    for d in daemons {
        let (status, log) = d.stop();
        assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
        assert!(
            !log.iter().any(|l| l.contains("TTL pass failed")),
            "{}",
            log.join("\n")
        );
    }
    let listed: Vec<String> =
        serde_json::from_str(&s.ok(&["--db", &url, "list"])).expect("list json");
    let mut want: Vec<String> = Vec::new();
    for w in ["a", "b"] {
        want.extend(
            (0..1500u32)
                .filter(|i| i % 3 == 0)
                .map(|i| format!("{w}-fresh-{i}")),
        );
    }
    want.extend((0..500u32).map(|i| format!("both-{i}")));
    want.sort();
    assert_eq!(
        listed, want,
        "every unexpired tx kept once, every expired one gone"
    );
    assert_eq!(
        c.psql(
            "shared",
            "SELECT count(*) - count(DISTINCT tx_id) FROM poh_txs"
        )
        .expect("psql"),
        "0"
    );
    s.ok(&["--db", &url, "verify"]);
}
