//! Helpers for tests that run the real `poh-storage` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// A scratch directory to run the binary in; the default store is `./data` inside it.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: TempDir::new().expect("tempdir"),
        }
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default store's base directory (`./data`).
    pub fn base(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `poh-storage` run in the scratch directory with no POH_* variables set, so the
    /// defaults (`./data`, `./data/poh.db`) apply unless a test says otherwise.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_poh-storage"));
        c.current_dir(self.dir.path())
            .env_remove("POH_BASE")
            .env_remove("POH_DB")
            .env_remove("POH_MAX_PAYLOAD")
            .env_remove("POH_GROUP_READABLE")
            .env_remove("POH_LAYOUT")
            .env_remove("POH_SEGMENT_WINDOW")
            .env_remove("RUST_LOG")
            .env_remove("POH_LOG_FORMAT");
        c
    }

    /// Runs `poh-storage ARGS` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run poh-storage");
        assert!(
            out.status.success(),
            "poh-storage {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Saves a tx through the CLI.
    pub fn save(&self, id: &str, ts: f64, payload: &[u8]) {
        let out = self.ok(&["save", "--tx", &tx_json(id, ts, payload)]);
        assert_eq!(out, format!("Saved {id}\n"));
    }

    /// The ids `list` prints, parsed.
    pub fn list(&self) -> Vec<String> {
        serde_json::from_str(&self.ok(&["list"])).expect("list prints a JSON array")
    }

    /// Every file and folder under the scratch directory, with file contents.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(self.dir.path())
    }
}

/// The JSON form of a valid tx with holder `holder-1`.
pub fn tx_json(id: &str, ts: f64, payload: &[u8]) -> String {
    poh_types::Tx::new(id, "holder-1", ts, payload.to_vec())
        .expect("valid tx")
        .to_json()
}

/// Standard base64 of `bytes`, as the JSON form carries payloads.
pub fn b64(bytes: &[u8]) -> String {
    poh_types::Tx::new("x", "h", 0.0, bytes.to_vec())
        .expect("valid tx")
        .to_wire()
        .payload
}

pub use super::snapshot::{Snapshot, snapshot};

/// Asserts two snapshots are equal, naming the paths that differ.
pub fn assert_same_files(before: &Snapshot, after: &Snapshot, what: &str) {
    let differ: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            let state = |m: &Snapshot| m.get(k).cloned().unwrap_or_else(|| "absent".into());
            format!("{} ({} -> {})", k.display(), state(before), state(after))
        })
        .collect();
    assert!(differ.is_empty(), "{what} changed the store: {differ:?}");
}
