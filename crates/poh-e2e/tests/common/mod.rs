//! Helpers for end-to-end tests: locating the workspace's binaries, a seeded random
//! source, and a reader for a child's log lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc::{Receiver, channel};

/// Path of a binary built by the workspace (`cargo test --workspace` builds them all).
pub fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the suite with `cargo test --workspace`",
        path.display()
    );
    path
}

/// xorshift64*: a small seeded generator so a failing run can be repeated (`POH_SEED`).
pub struct Rng {
    state: u64,
    seed: u64,
}

impl Rng {
    /// Seed from `POH_SEED` or the clock; the seed is printed.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("POH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: POH_SEED={seed}");
        Self {
            state: seed | 1,
            seed,
        }
    }

    /// The seed (`POH_SEED` repeats the run).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Forwards a child's stream line by line to a channel, from a thread.
pub fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `sig` to a child we own.
#[allow(unsafe_code)]
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Current UNIX time in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
