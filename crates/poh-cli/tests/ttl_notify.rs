//! `poh-ttl run` speaks systemd's notify protocol to a real Unix datagram socket the test
//! binds and passes as `NOTIFY_SOCKET` (as systemd does for `Type=notify`): `READY=1` once
//! the store is open (never for a store that does not open), `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` while passes run, no pings while a pass is stuck (here: blocked on the
//! store lock, which the test holds), and `STOPPING=1` on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::ttl::*;

/// The test's end of `NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
    /// Every message received so far, in order.
    got: Vec<String>,
}

impl Manager {
    fn new() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self {
            sock,
            path: path.display().to_string(),
            _dir: dir,
            got: Vec::new(),
        }
    }

    /// The last messages received, for failure messages.
    fn tail(&self) -> &[String] {
        &self.got[self.got.len().saturating_sub(10)..]
    }

    /// The next message, waiting at most `within`.
    fn recv(&mut self, within: Duration) -> Option<String> {
        self.sock
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push(m.clone());
                Some(m)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// Receives until a message has a line equal to `line` (bounded).
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + SAFETY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(m) if m.lines().any(|l| l == line) => return m,
                Some(_) => {}
                None => panic!("no {line:?} from poh-ttl; received: {:?}", self.tail()),
            }
        }
    }
}

fn start(dir: &tempfile::TempDir, mgr: &Manager, watchdog: Option<Duration>) -> Daemon {
    let mut args: Vec<String> = store_args(dir).into();
    args.extend(["--ttl", "1h", "--interval", "50ms", "--lock-timeout", "60s"].map(String::from));
    let usec = watchdog.map(|d| d.as_micros().to_string());
    let mut env = vec![("NOTIFY_SOCKET", mgr.path.as_str())];
    if let Some(u) = &usec {
        env.push(("WATCHDOG_USEC", u.as_str()));
    }
    Daemon::start(&args, &env)
}

#[test]
fn ready_after_the_store_opens_status_after_passes_and_stopping_on_sigterm() {
    let now = real_now();
    let dir = store_with(&many("old", 2, |i| now - 7200.0 - i as f64));
    let mut mgr = Manager::new();
    let d = start(&dir, &mgr, None);

    let ready = mgr.wait_for("READY=1");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready:?}");
    let status = mgr.wait_for_status("; 1 passes");
    assert!(
        status.starts_with("STATUS=ok: last pass expired 2 txs in ")
            && status.ends_with("; 1 passes, 0 failed, 2 txs expired since start"),
        "{status}"
    );

    d.signal(libc::SIGTERM);
    mgr.wait_for("STOPPING=1");
    let (st, log) = d.wait();
    assert_eq!(st.code(), Some(0), "{}", log.join("\n"));
    assert!(
        !mgr.got.iter().any(|m| m.contains("WATCHDOG=1")),
        "no watchdog pings without WATCHDOG_USEC: {:?}",
        mgr.got
    );
}

impl Manager {
    /// Receives until a `STATUS=` line contains `needle`; returns that line.
    fn wait_for_status(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + SAFETY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left) else {
                panic!("no STATUS with {needle:?}; received: {:?}", self.tail())
            };
            if let Some(l) = m
                .lines()
                .find(|l| l.starts_with("STATUS=") && l.contains(needle))
            {
                return l.to_owned();
            }
        }
    }
}

#[test]
fn no_ready_for_a_store_that_does_not_open() {
    let dir = tempfile::TempDir::new().unwrap(); // no store in it
    let mut mgr = Manager::new();
    let d = start(&dir, &mgr, Some(Duration::from_millis(200)));
    let (st, _) = d.wait();
    assert_eq!(st.code(), Some(3));
    // The process is gone: whatever it sent is already queued.
    while mgr.recv(Duration::from_millis(1)).is_some() {}
    assert!(
        !mgr.got
            .iter()
            .any(|m| m.contains("READY=1") || m.contains("WATCHDOG=1")),
        "{:?}",
        mgr.got
    );
}

#[test]
fn watchdog_pings_at_half_the_timeout_stop_while_a_pass_is_stuck_and_resume() {
    let dir = store_with(&[]);
    let (base, _) = paths(&dir);
    let timeout = Duration::from_millis(400);
    let mut mgr = Manager::new();
    let d = start(&dir, &mgr, Some(timeout));
    mgr.wait_for("READY=1");
    // Pings come every half timeout: three in a row arrive within a few timeouts (the
    // bound is loose for a loaded machine; what matters is that they are not one a minute).
    let first = Instant::now();
    for _ in 0..3 {
        mgr.wait_for("WATCHDOG=1");
    }
    assert!(
        first.elapsed() < 10 * timeout,
        "three pings took {:?}",
        first.elapsed()
    );

    // Hold the store lock: the next pass waits for it inside its first batch (up to
    // --lock-timeout, 60 s), making no progress. Once it has been stuck for longer than the
    // timeout, the pings stop.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(base.join(".poh.lock"))
        .expect("open the store lock");
    lock.lock().expect("take the store lock");
    let stuck_since = Instant::now();
    // Pings may go on until the stuck pass has made no progress for a whole timeout;
    // after that, a silence of two timeouts (four ping periods) shows they stopped.
    let deadline = Instant::now() + SAFETY;
    loop {
        assert!(
            Instant::now() < deadline,
            "pings never stopped: {:?}",
            mgr.got
        );
        match mgr.recv(2 * timeout) {
            Some(m) if m.contains("WATCHDOG=1") => continue,
            Some(_) => continue,
            None => break,
        }
    }
    assert!(
        stuck_since.elapsed() >= timeout,
        "the pings stopped before a pass could have been stuck for the timeout"
    );

    // Release it: the pass completes and the pings resume.
    lock.unlock().expect("release the store lock");
    drop(lock);
    mgr.wait_for("WATCHDOG=1");

    d.signal(libc::SIGTERM);
    mgr.wait_for("STOPPING=1");
    let (st, log) = d.wait();
    assert_eq!(st.code(), Some(0), "{}", log.join("\n"));
    let log = log.join("\n");
    assert!(log.contains("no longer pinging the watchdog"), "{log}");
}
