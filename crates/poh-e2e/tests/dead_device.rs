//! A store on a device that dies: `poh-ttl run --metrics` on a store on ext4 (a loop
//! device), whose file system is then shut down (`EXT4_IOC_SHUTDOWN`: every later operation
//! fails with EIO, as on a dead disk). `/healthz` must turn 503 with the I/O error as the
//! reason, and the failed passes show in `/metrics`. After the file system is unmounted and
//! mounted again (the device is back), the daemon reopens the store by itself and health
//! turns 200 again, without a restart. Real binaries, real HTTP, a real kernel file system.
//!
//! Needs root with loop devices (`poh_testkit::require::root_with_loop`): elsewhere it is
//! skipped with a note, in CI (`POH_REQUIRE_ALL=1`) it is mandatory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{bin, lines_of, now, signal};
use poh_testkit::ext4::{EXT4_GOING_FLAGS_NOLOGFLUSH, Ext4Mount};
use poh_testkit::require::root_with_loop;

/// Only a safety net against a hung child; the test polls for what it waits for.
const SAFETY: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Kills the daemon if the test fails half-way, so the mount can go.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` with `Connection: close`: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Asks `/healthz` until it answers `status` (bounded); returns the body.
fn health_until(addr: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + SAFETY;
    loop {
        let (s, body) = get(addr, "/healthz");
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}; last: {s} {body}"
        );
        std::thread::sleep(POLL);
    }
}

/// Reads log lines until one contains `needle`.
fn wait_line(lines: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + SAFETY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no log line with {needle:?}: {e}"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn health_turns_red_on_a_dead_device_and_green_once_it_is_back() {
    let Some(()) = root_with_loop() else { return };
    let mut mnt = Ext4Mount::new(32, &["-b", "4096"]).expect("ext4 loop mount");
    let base = mnt.path().join("data");
    let base_s = base.display().to_string();
    let storage = |args: &[&str]| {
        let out = Command::new(bin("poh-storage"))
            .args(["--base", &base_s])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("POH_DB")
            .output()
            .expect("run poh-storage");
        assert!(
            out.status.success(),
            "poh-storage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    storage(&["init"]);
    let old = now() - 7200.0;
    storage(&[
        "save",
        "--tx",
        &format!(r#"{{"tx_id":"old","holder_id":"h","timestamp":{old},"payload":"aGk="}}"#),
    ]);

    let mut child = Command::new(bin("poh-ttl"))
        .args([
            "run",
            "--base",
            &base_s,
            "--ttl",
            "1h",
            "--interval",
            "50ms",
        ])
        .args(["--metrics", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("POH_DB")
        .env_remove("POH_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poh-ttl run");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let daemon = Running(child);
    let line = wait_line(&lines, "metrics listening on http://");
    let addr: SocketAddr = line
        .split("metrics listening on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    health_until(addr, 200);

    // The device dies.
    mnt.shutdown(EXT4_GOING_FLAGS_NOLOGFLUSH)
        .expect("shut the file system down");
    let red = health_until(addr, 503);
    assert!(
        red.starts_with("unhealthy: the last") && red.contains(&base_s),
        "{red}"
    );
    // The kernel's EIO, as the file system call or SQLite reports it.
    assert!(
        red.contains("Input/output error") || red.contains("disk I/O error"),
        "the cause is named: {red}"
    );
    let (_, m) = get(addr, "/metrics");
    assert!(
        metric(&m, "poh_ttl_pass_failures_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "poh_ttl_healthy"), Some(0.0), "{m}");

    // It comes back: the journal is replayed at the mount, the daemon reopens the store.
    mnt.remount().expect("mount the file system again");
    let green = health_until(addr, 200);
    assert!(green.starts_with("ok: "), "{green}");
    let (_, m) = get(addr, "/metrics");
    assert!(
        metric(&m, "poh_ttl_store_reopens_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );

    signal(&daemon.0, libc::SIGTERM);
    wait_line(&lines, "store closed");
    drop(daemon);
    mnt.unmount().expect("unmount");
}
