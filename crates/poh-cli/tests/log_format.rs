//! `--log-format json` (env `POH_LOG_FORMAT`) on both binaries: every line on stderr is
//! one JSON object with `timestamp`, `level`, `target` and `message`; the daemon's pass
//! lines carry `store`, `pass_id`, counts and `duration_ms`, a failed pass its `error`
//! chain, and the error that ends a program is a JSON line too (with `exit_code`).

mod common;

use serde_json::Value;

use common::daemon::*;
use common::ttl::*;

/// Parses every line as a JSON object, naming the first that is not.
fn objects(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v.get(key).is_some(), "no {key}: {l}");
            }
            v
        })
        .collect()
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_daemon_logs_one_json_object_per_line_with_the_pass_fields() {
    let now = real_now();
    let dir = store_with(&many("old", 3, |i| now - 7200.0 - i as f64));
    let (base, _) = paths(&dir);
    let mut args: Vec<String> = store_args(&dir).into();
    args.extend(["--ttl", "1h", "--interval", "50ms", "--log-format", "json"].map(String::from));
    let mut d = Daemon::start(&args, &[]);
    d.wait_for_line("TTL pass complete");
    // A failing pass: the store's directory goes away.
    let away = dir.path().join("away");
    std::fs::rename(&base, &away).unwrap();
    d.wait_for_line("TTL pass failed");
    std::fs::rename(&away, &base).unwrap();
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));

    let all = objects(&log);
    let pass = all
        .iter()
        .find(|v| v["message"] == "TTL pass complete")
        .expect("a pass line");
    assert_eq!(pass["level"], "INFO", "{pass}");
    assert_eq!(pass["target"], "poh_ttl::daemon", "{pass}");
    assert_eq!(pass["store"], base.display().to_string(), "{pass}");
    assert_eq!(pass["pass_id"], 1, "{pass}");
    assert_eq!(pass["expired"], 3, "{pass}");
    assert_eq!(pass["batches"], 1, "{pass}");
    assert!(
        pass["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{pass}"
    );

    let failed = all
        .iter()
        .find(|v| v["message"] == "TTL pass failed; retrying at the next tick")
        .expect("a failed pass line");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(
        failed["pass_id"].as_u64().is_some_and(|id| id >= 2),
        "{failed}"
    );
    assert_eq!(failed["consecutive_failures"], 1, "{failed}");
    let err = failed["error"].as_str().expect("error is a string");
    assert!(
        err.starts_with("TTL pass failed after 0 txs were expired: ")
            && err.contains(&base.display().to_string()),
        "the whole chain, naming the store: {err}"
    );
    assert!(failed["duration_ms"].as_f64().is_some(), "{failed}");
}

#[test]
fn poh_storage_logs_and_fails_in_json_with_the_env_var() {
    // A warning through the log: a read of a store other users can write to.
    let dir = store_with(&[("a".into(), 1.0)]);
    let (base, _) = paths(&dir);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poh-storage"))
        .args(store_args(&dir))
        .arg("list")
        .env_remove("RUST_LOG")
        .env("POH_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = objects(&stderr_lines(&out));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "WARN");
    assert!(
        lines[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("writable by other users")),
        "{}",
        lines[0]
    );

    // The error that ends the program.
    let empty = tempfile::TempDir::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poh-storage"))
        .args(store_args(&empty))
        .args(["load", "--tx-id", "a", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .env_remove("POH_LOG_FORMAT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = objects(&stderr_lines(&out));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let e = &lines[0];
    assert_eq!(e["level"], "ERROR");
    assert_eq!(e["target"], "poh-storage");
    assert_eq!(e["exit_code"], 1);
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("no store at")),
        "{e}"
    );
}

#[test]
fn poh_ttl_scan_fails_in_json_and_text_stays_the_default() {
    let empty = tempfile::TempDir::new().unwrap();
    let out = bin()
        .args(store_args(&empty))
        .args(["scan", "--ttl", "1h", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let lines = objects(&stderr_lines(&out));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["target"], "poh-ttl");
    assert_eq!(lines[0]["exit_code"], 3);

    let out = bin()
        .args(store_args(&empty))
        .args(["scan", "--ttl", "1h"])
        .env_remove("POH_LOG_FORMAT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("poh-ttl: error: "), "{err}");

    let out = bin()
        .args(["scan", "--ttl", "1h", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
