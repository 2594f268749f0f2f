//! A real `poh-ttl run` process for tests that talk to it: its log lines as they come, the
//! metrics endpoint it reports, signals and a bounded wait for its exit. And a minimal
//! HTTP/1.1 client over `std::net::TcpStream` for `/metrics` and `/healthz`. Every wait is
//! bounded; nothing sleeps for time to pass: tests poll until what they wait for is seen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Upper bound for anything to happen; only a safety net against a hung binary.
pub const SAFETY: Duration = Duration::from_secs(60);

/// How often a poll looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// A running `poh-ttl run`.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Daemon {
    /// Starts `poh-ttl run ARGS` with `env` (RUST_LOG and POH_* unset unless given).
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_poh-ttl"));
        cmd.arg("run")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("POH_BASE")
            .env_remove("POH_DB")
            .env_remove("POH_LAYOUT")
            .env_remove("POH_LOG_FORMAT")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start poh-ttl run");
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
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + SAFETY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
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

    /// The metrics endpoint's address, from the `metrics listening on http://ADDR/metrics`
    /// line.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_line("metrics listening on http://");
        let rest = line
            .split("metrics listening on http://")
            .nth(1)
            .expect("address follows");
        let addr = rest.split('/').next().expect("address");
        addr.parse()
            .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
    }

    /// Sends `sig`.
    #[allow(unsafe_code)]
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the exit (bounded), collecting the rest of the log.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + SAFETY;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for poh-ttl") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("poh-ttl did not exit; log:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(POLL);
        };
        // The pipe closes with the process; the reader thread then ends.
        while let Ok(line) = self.lines.recv_timeout(SAFETY) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// SIGTERM, then the exit status and the whole log.
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        self.signal(libc::SIGTERM);
        self.wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that panicked leaves no daemon behind.
        let _ = self.child.kill();
    }
}

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `METHOD path` on `addr` with `Connection: close`, read to the end.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

/// The value of `series` (a metric name, with its labels if any) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes `/metrics` until `ok` holds for the text (bounded); returns that text.
pub fn scrape_until(addr: SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SAFETY;
    loop {
        let r = get(addr, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        if ok(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{}",
            r.body
        );
        std::thread::sleep(POLL);
    }
}

/// Asks `/healthz` until it answers `status` (bounded); returns the response.
pub fn health_until(addr: SocketAddr, status: u16) -> Response {
    let deadline = Instant::now() + SAFETY;
    loop {
        let r = get(addr, "/healthz");
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for /healthz {status}; last: {r:?}"
        );
        std::thread::sleep(POLL);
    }
}
