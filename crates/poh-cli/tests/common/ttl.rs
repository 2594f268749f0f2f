//! Helpers for tests that run the real `poh-ttl` binary on stores made by
//! [`poh_testkit::stores`].

pub use poh_testkit::stores::*;
use tempfile::TempDir;

/// The `poh-ttl` binary.
pub fn bin() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_poh-ttl"));
    cmd.env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_LAYOUT")
        .env_remove("POH_SEGMENT_WINDOW")
        .env_remove("RUST_LOG")
        .env_remove("POH_LOG_FORMAT");
    cmd
}

/// `--base` and `--db` of the store under `dir`.
pub fn store_args(dir: &TempDir) -> [String; 4] {
    let (base, db) = paths(dir);
    [
        "--base".into(),
        base.display().to_string(),
        "--db".into(),
        db.display().to_string(),
    ]
}
