//! Prerequisites from outside the repository, required in one way everywhere.
//!
//! A test that needs something the repository cannot provide by itself asks for it first:
//!
//! ```no_run
//! # fn demo() {
//! let Some(seedref) = poh_testkit::require::seedref() else { return };
//! # let _ = seedref;
//! # }
//! ```
//!
//! When the prerequisite is there, the test gets its value. When it is missing:
//!
//! - by default the test writes `SKIPPED <test>: needs <what>: <why>` directly to the
//!   process's stderr (not through `eprintln!`, which `cargo test` captures and hides for a
//!   passing test) and returns early, so it passes, visibly skipped;
//! - with `POH_REQUIRE_ALL=1` (what `.ci/run` sets) it panics instead: in CI every
//!   prerequisite is mandatory and a missing one is a failure, never a silent pass.
//!
//! Ready-made checks: [`seedref`] (the prototype's Python model) and [`root_with_loop`]
//! (root, loop devices, `mkfs.ext4`, `mount`). Anything else goes through
//! [`prerequisite`] with a check of its own, e.g. [`check_command`] for a program.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set to `1` to make every prerequisite mandatory: a missing one fails the test.
pub const REQUIRE_ALL_ENV: &str = "POH_REQUIRE_ALL";
/// Overrides where the prototype's Python model is (default `../shared/seedref` beside
/// the repository root).
pub const SEEDREF_ENV: &str = "POH_SEEDREF";

/// Whether missing prerequisites fail tests: `POH_REQUIRE_ALL` is set, non-empty and
/// not `0`.
pub fn mandatory() -> bool {
    std::env::var_os(REQUIRE_ALL_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_owned()
}

/// The value of a satisfied prerequisite, or `None` after a `SKIPPED` note on stderr
/// when it is missing; panics when it is missing and [`mandatory`].
///
/// `what` names the prerequisite ("root with loop devices"); `check` is its value, or
/// why it is missing, ideally with what to install or set.
#[track_caller]
pub fn prerequisite<T>(what: &str, check: Result<T, String>) -> Option<T> {
    decide(
        &test_name(),
        what,
        check,
        mandatory(),
        &mut std::io::stderr(),
    )
}

#[track_caller]
fn decide<T>(
    test: &str,
    what: &str,
    check: Result<T, String>,
    mandatory: bool,
    out: &mut impl Write,
) -> Option<T> {
    match check {
        Ok(v) => Some(v),
        Err(why) if mandatory => panic!(
            "{test} needs {what}: {why} ({REQUIRE_ALL_ENV}=1: every prerequisite is mandatory)"
        ),
        Err(why) => {
            // Best effort: a note that cannot be written must not fail the test.
            let _ = writeln!(out, "SKIPPED {test}: needs {what}: {why}");
            None
        }
    }
}

/// Runs `program args`; its stdout when it exits 0, otherwise why not.
pub fn check_command(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            last_line(&out.stderr)
        ))
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

// ----- the prototype's Python model -----

/// Where the prototype's Python model should be: `POH_SEEDREF`, or `shared/seedref` in
/// the folder that holds the repository.
pub fn seedref_dir() -> PathBuf {
    match std::env::var_os(SEEDREF_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            // <repo>/crates/poh-testkit -> <repo>/.. -> shared/seedref
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest
                .ancestors()
                .nth(3)
                .unwrap_or(manifest)
                .join("shared/seedref")
        }
    }
}

/// The model's folder if `python3` can import its `poh_storage` and `poh_ttl` packages
/// (with `aiofiles` and `aiosqlite`) from it; why not otherwise. Checked once per process.
pub fn check_seedref() -> Result<PathBuf, String> {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let dir = seedref_dir();
            if !dir.join("poh_storage/app_storage.py").is_file()
                || !dir.join("poh_ttl/cli.py").is_file()
            {
                return Err(format!(
                    "it is not at {} (set {SEEDREF_ENV} to its folder)",
                    dir.display()
                ));
            }
            let out = Command::new("python3")
                .env("PYTHONPATH", &dir)
                .args([
                    "-c",
                    "import aiofiles, aiosqlite, poh_storage.app_storage, poh_ttl.cli",
                ])
                .output()
                .map_err(|e| format!("cannot run python3 ({e}): install Python 3"))?;
            if out.status.success() {
                Ok(dir)
            } else {
                Err(format!(
                    "python3 cannot import it from {}: {}; install the packages with \
                     `pip install aiofiles aiosqlite`",
                    dir.display(),
                    last_line(&out.stderr)
                ))
            }
        })
        .clone()
}

/// The prototype's Python model (see [`check_seedref`]), as a [`prerequisite`].
#[track_caller]
pub fn seedref() -> Option<PathBuf> {
    prerequisite(
        "the prototype's Python model (python3 with aiofiles and aiosqlite)",
        check_seedref(),
    )
}

// ----- root with loop devices -----

/// The process's effective user id, from `/proc/self/status`.
fn effective_uid() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| "no effective uid in /proc/self/status".to_owned())
}

/// The process's effective user id, if it can be read.
pub fn euid() -> Option<u32> {
    effective_uid().ok()
}

/// `Ok` if this process is root and can make, mount and unmount an ext4 file system on a
/// loop device (a real, small trial); why not otherwise. Checked once per process.
pub fn check_root_with_loop() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let uid = effective_uid()?;
            if uid != 0 {
                return Err(format!("running as uid {uid}, not root"));
            }
            for (program, args) in [
                ("mkfs.ext4", &["-V"][..]),
                ("losetup", &["--version"][..]),
                ("mount", &["--version"][..]),
                ("umount", &["--version"][..]),
            ] {
                check_command(program, args)
                    .map_err(|e| format!("{e} (install e2fsprogs and util-linux)"))?;
            }
            let mut trial = crate::ext4::Ext4Mount::new(8, &[])
                .map_err(|e| format!("a trial ext4 loop mount failed: {e}"))?;
            trial
                .unmount()
                .map_err(|e| format!("a trial ext4 loop mount failed: {e}"))
        })
        .clone()
}

/// Root with loop devices, `mkfs.ext4` and `mount` (see [`check_root_with_loop`]), as a
/// [`prerequisite`].
#[track_caller]
pub fn root_with_loop() -> Option<()> {
    prerequisite(
        "root with loop devices, mkfs.ext4 and mount",
        check_root_with_loop(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_prerequisite_gives_its_value_and_prints_nothing() {
        let mut out = Vec::new();
        assert_eq!(decide("t", "x", Ok(7), false, &mut out), Some(7));
        assert_eq!(decide("t", "x", Ok(7), true, &mut out), Some(7));
        assert!(out.is_empty());
    }

    #[test]
    fn a_missing_prerequisite_skips_with_a_note() {
        let mut out = Vec::new();
        let got: Option<()> = decide(
            "my_test",
            "a thing",
            Err("not here".into()),
            false,
            &mut out,
        );
        assert_eq!(got, None);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "SKIPPED my_test: needs a thing: not here\n"
        );
    }

    #[test]
    #[should_panic(expected = "my_test needs a thing: not here (POH_REQUIRE_ALL=1")]
    fn a_missing_prerequisite_fails_when_mandatory() {
        let mut out = Vec::new();
        let _: Option<()> = decide("my_test", "a thing", Err("not here".into()), true, &mut out);
    }

    #[test]
    fn the_test_name_is_the_thread_name() {
        assert!(
            test_name().ends_with("the_test_name_is_the_thread_name"),
            "{}",
            test_name()
        );
    }

    #[test]
    fn a_missing_program_is_reported() {
        let err = check_command("poh-testkit-no-such-program", &[]).unwrap_err();
        assert!(
            err.contains("cannot run poh-testkit-no-such-program"),
            "{err}"
        );
        assert!(check_command("sh", &["-c", "exit 3"]).is_err());
        assert_eq!(
            check_command("sh", &["-c", "echo hi"]).as_deref(),
            Ok("hi\n")
        );
    }

    #[test]
    fn the_effective_uid_is_read() {
        effective_uid().expect("a uid");
    }
}
