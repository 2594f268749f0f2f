//! `poh-ttl` keeps a store private: what it creates in a store (`.tmp/` or `segments/`, the
//! lock file) is 0700/0600 whatever the umask, or 0750/0640 with `--group-readable`; a base
//! other users can write to makes a deleting pass (`scan`, `run`) fail with exit 1 and the
//! `chmod` that fixes it, while `scan --dry-run` still reads it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::ttl::*;

/// `poh-ttl ARGS` under `umask 000`, with no POH_* variables set.
fn ttl(args: &[String]) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"umask 000; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_poh-ttl"))
        .args(args);
    for var in [
        "POH_BASE",
        "POH_DB",
        "POH_GROUP_READABLE",
        "POH_LOCK_TIMEOUT",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.output().expect("run poh-ttl")
}

fn args(first: &[&str], dir: &tempfile::TempDir, rest: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    v.extend(store_args(dir));
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

#[test]
fn a_deleting_pass_refuses_a_base_writable_by_others() {
    let now = real_now();
    let dir = store_with(&[("old".into(), now - 10_000.0)]);
    let (base, _) = paths(&dir);
    set_mode(&base, 0o777);
    for argv in [
        args(&["scan"], &dir, &["--ttl", "1h"]),
        args(&["run"], &dir, &["--ttl", "1h", "--interval", "1h"]),
    ] {
        let o = ttl(&argv);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{argv:?}: {err}");
        let fix = format!("chmod 700 {}`", base.display());
        for w in ["is writable by other users", fix.as_str()] {
            assert!(err.contains(w), "{argv:?}: stderr lacks {w:?}: {err}");
        }
    }
    let o = ttl(&args(&["scan"], &dir, &["--ttl", "1h", "--dry-run"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "dry run: {err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Would expire: ['old']\n"
    );
    assert!(err.contains("chmod"), "the dry run warns: {err}");

    set_mode(&base, 0o700);
    assert_eq!(ids_in(&dir), set(["old"]), "nothing was deleted");
    let o = ttl(&args(&["scan"], &dir, &["--ttl", "1h"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Expired: ['old']\n");
}

/// A store without the directory its passes write into and without its lock file (as the
/// prototype leaves a flat-file store: no `.tmp/`; an empty segments store without
/// `segments/`): the first pass creates them, private by default and group-readable on
/// request.
#[test]
fn what_a_pass_creates_is_private_or_group_readable() {
    let (own_dir, txs) = if flat_files() {
        (".tmp", vec![("fresh".to_owned(), real_now())])
    } else {
        // Only an empty segments store can lose `segments/` and stay whole.
        ("segments", Vec::new())
    };
    for (flags, dir_mode, file_mode) in [
        (&[][..], 0o700, 0o600),
        (&["--group-readable"][..], 0o750, 0o640),
    ] {
        let dir = store_with(&txs);
        let (base, _) = paths(&dir);
        std::fs::remove_dir(base.join(own_dir)).expect("remove the store's directory");
        std::fs::remove_file(base.join(".poh.lock")).expect("remove the lock");
        let mut argv: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        argv.extend(args(&["scan"], &dir, &["--ttl", "1h"]));
        let o = ttl(&argv);
        assert!(
            o.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(mode(&base.join(own_dir)), dir_mode, "{flags:?}: {own_dir}");
        assert_eq!(mode(&base.join(".poh.lock")), file_mode, "{flags:?}: lock");
    }
}
