//! `poh-ttl run` is a daemon that logs each pass and, on SIGTERM or SIGINT, stops
//! cleanly: it finishes the batch in flight, closes the store and exits 0, leaving a store
//! that opens and verifies. Runs the real binary; waits on its log lines, not on time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::ttl::*;

/// Upper bound for anything below to happen; only a safety net against a hung binary.
const SAFETY: Duration = Duration::from_secs(60);

struct Daemon {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(dir: &tempfile::TempDir) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_poh-ttl"))
            .arg("run")
            .args(store_args(dir))
            .args(["--ttl", "1h", "--interval", "1h", "--batch-size", "2"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start poh-ttl run");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one contains `needle`; returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(SAFETY) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "no log line with {needle:?} ({e}); log so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    #[allow(unsafe_code)]
    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the exit (bounded), collecting the rest of the log.
    fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let (tx, rx) = channel();
        let lines = self.lines;
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(SAFETY) {
            Ok(s) => s.expect("wait for poh-ttl"),
            Err(_) => panic!("poh-ttl did not exit; log:\n{}", self.seen.join("\n")),
        };
        // The pipe is closed once the process is gone; the reader thread ends.
        self.seen.extend(lines.iter());
        (status, self.seen)
    }
}

fn stops_cleanly_on(sig: libc::c_int, name: &str) {
    let now = real_now();
    let mut txs = many("old", 5, |i| now - 10_000.0 - i as f64);
    txs.push(("fresh".into(), now - 100.0));
    let dir = store_with(&txs);

    let mut daemon = Daemon::start(&dir);
    let pass = daemon.wait_for_line("TTL pass complete");
    assert!(pass.contains("INFO"), "{pass}");
    assert!(
        pass.contains("expired=5") && pass.contains("elapsed_ms="),
        "{pass}"
    );
    assert!(
        !pass.contains("old-0"),
        "ids are not logged at INFO: {pass}"
    );

    daemon.signal(sig);
    let (status, log) = daemon.wait();
    let log = log.join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{log}"
    );
    assert!(log.contains(&format!("signal=\"{name}\"")), "{log}");
    assert!(log.contains("store closed"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");

    // The store opens, verifies clean, and holds exactly the fresh tx.
    block_on(async {
        let sm = open_existing(&dir).await;
        let report = sm.verify().await.expect("verify");
        assert!(report.is_clean(), "{report:?}");
        assert!(sm.load(&id("fresh")).await.expect("load").is_some());
        assert_eq!(ids(&sm).await, set(["fresh"]));
        sm.close().await.expect("close");
    });
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    stops_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn run_stops_cleanly_on_sigint() {
    stops_cleanly_on(libc::SIGINT, "SIGINT");
}
