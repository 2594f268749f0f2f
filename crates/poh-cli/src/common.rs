//! What both binaries share, in one place: where the store is (flags, env vars and the
//! `<base>/poh.db` default), how a command opens it, the exit-code table, error printing
//! and logging.
//!
//! # Exit codes
//! | code | `poh-storage` | `poh-ttl` |
//! |------|---------------|-----------|
//! | 0 | success | success |
//! | 1 | any other failure: I/O, database, no store, not a store, lock timeout, ... | the pass or the daemon failed |
//! | 2 | usage error or bad input: flags, tx JSON, tx_id, import line, a path onto the store's own files, a bad database URL, a --layout or --segment-window the store was not created with | bad arguments, a path onto the store's own files, a bad database URL, a layout mismatch |
//! | 3 | the tx does not exist (`load`, `delete`) | no store at the given location |
//! | 4 | integrity problem: `load` of a corrupt or missing payload; `verify` found problems | — |

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use poh_storage::{Layout, OpenOptions, StorageError, error_chain};
use poh_types::{JsonError, TxError, TxIdError};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any failure not listed below (I/O, database, missing store, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: usage error or bad input (flags, tx JSON, tx_id, import line, a path
/// onto the store's own files).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: what was named does not exist: the tx (`poh-storage load`, `delete`), the
/// store (`poh-ttl`).
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit status: integrity problem (corrupt or missing payload; verify found problems).
pub const EXIT_INTEGRITY: u8 = 4;

/// Where the store is: the flags both binaries take, with their env vars and defaults.
#[derive(Debug, Clone, Args)]
pub struct StoreLocation {
    /// Directory of the payload files.
    #[arg(
        long,
        global = true,
        env = "POH_BASE",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub base: PathBuf,
    /// SQLite metadata database [default: <base>/poh.db], or a PostgreSQL database
    /// URL (postgres://user@host/dbname): the store then lives in that database and
    /// --base is not used. Prefer POH_DB (or PGPASSWORD) for a URL with a password:
    /// command lines are visible to other users. Passwords are never printed.
    #[arg(long, global = true, env = "POH_DB", value_name = "FILE|URL")]
    pub db: Option<PathBuf>,
    /// Longest wait for another process's store lock before giving up: seconds or a
    /// duration with a unit (30s, 2m).
    #[arg(
        long,
        global = true,
        env = "POH_LOCK_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = poh_ttl::parse_duration
    )]
    pub lock_timeout: Duration,
    /// Make what the store creates readable by the group too: directories 0750 and files
    /// 0640 instead of 0700 and 0600 (existing files keep their modes until rewritten).
    #[arg(
        long,
        global = true,
        env = "POH_GROUP_READABLE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub group_readable: bool,
    /// Layout of a store this command creates: `files` (one file per payload, the
    /// default) or `segments` (append-only time-windowed segment files). An existing store
    /// always opens with the layout recorded in it; naming another one is refused (exit 2).
    #[arg(long, global = true, env = "POH_LAYOUT", value_name = "LAYOUT")]
    pub layout: Option<Layout>,
    /// Width of the time window each segment of a new `segments` store holds: seconds or
    /// a duration with a unit (1h, 10m) [default: 1h]. Recorded at creation; naming
    /// another width for an existing store is refused (exit 2).
    #[arg(
        long,
        global = true,
        env = "POH_SEGMENT_WINDOW",
        value_name = "DURATION",
        value_parser = poh_ttl::parse_duration
    )]
    pub segment_window: Option<Duration>,
    /// PostgreSQL stores: detach wholly expired partitions (kept as tables
    /// poh_expired_<window> for archiving) instead of dropping them.
    #[arg(
        long,
        global = true,
        env = "POH_DETACH_EXPIRED",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub detach_expired: bool,
}

/// How log messages (and the final error) are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's fields (`store`, `pass_id`, `expired`, `duration_ms`, `error`, ...) at the
    /// top level, plus `span` when the event happened inside one.
    Json,
}

/// Logging flags both binaries take.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format on stderr: `text`, or `json` (one object per line, for a log pipeline).
    #[arg(
        long,
        global = true,
        env = "POH_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create it if missing (init, save, import).
    Create,
    /// It must exist; interrupted saves are finished on open (delete, recover, TTL passes).
    Existing,
    /// It must exist, and nothing under it is created or changed, no lock is waited
    /// for on the fast path (load, list, stats, verify, dry runs).
    Read,
}

impl StoreLocation {
    /// The database path: `--db`, or `<base>/poh.db`.
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| self.base.join("poh.db"))
    }

    /// Library options for opening the store with `access`.
    pub fn open_options(&self, access: Access) -> OpenOptions {
        OpenOptions {
            create: access == Access::Create,
            read_only: access == Access::Read,
            group_readable: self.group_readable,
            lock_timeout: self.lock_timeout,
            layout: self.layout,
            segment_window: self.segment_window,
            detach_expired: self.detach_expired,
            ..OpenOptions::default()
        }
    }

    /// True when `--db` is a PostgreSQL URL.
    pub fn is_database(&self) -> bool {
        self.db.as_deref().is_some_and(poh_storage::is_database_url)
    }

    /// `--db` as it may be shown: a URL without its password.
    pub fn db_shown(&self) -> String {
        poh_storage::redact_url(&self.db_path().to_string_lossy())
    }

    /// "the store at `<base>` (metadata `<db>`)", or "the store in `<url>`" (password
    /// removed), for messages.
    pub fn describe(&self) -> String {
        if self.is_database() {
            return format!("the store in {}", self.db_shown());
        }
        format!(
            "the store at {} (metadata {})",
            self.base.display(),
            self.db_path().display()
        )
    }
}

/// The tx asked for does not exist (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("tx {0} not found")]
pub struct TxNotFound(pub String);

/// `verify` found problems (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("verify found {0} problem(s); run `poh-storage recover` to repair")]
pub struct ProblemsFound(pub usize);

/// Bad input that is not a tx field error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Stdout was closed by its reader (for example `poh-storage list | head`).
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// The exit status for an error, following the table in the module docs; `no_store` is
/// the status for a store that does not exist (1 for `poh-storage`, 3 for `poh-ttl`).
pub fn exit_code(err: &anyhow::Error, no_store: u8) -> u8 {
    for cause in err.chain() {
        if cause.is::<TxNotFound>() {
            return EXIT_NOT_FOUND;
        }
        if cause.is::<ProblemsFound>() {
            return EXIT_INTEGRITY;
        }
        if let Some(e) = cause.downcast_ref::<StorageError>() {
            match e {
                StorageError::Integrity { .. } | StorageError::PayloadMissing { .. } => {
                    return EXIT_INTEGRITY;
                }
                StorageError::Invalid(_)
                | StorageError::BadPath { .. }
                | StorageError::BadUrl { .. }
                | StorageError::LayoutMismatch { .. } => return EXIT_USAGE,
                StorageError::NotFound { .. } => return no_store,
                _ => {}
            }
        }
        if cause.is::<BadInput>()
            || cause.is::<JsonError>()
            || cause.is::<TxError>()
            || cause.is::<TxIdError>()
        {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILURE
}

/// The format [`init_logging`] chose, for [`finish`].
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Sets up logging to stderr in `format`, filtered by `RUST_LOG` (default
/// `default_level`); text is in colour only on a terminal.
pub fn init_logging(default_level: &str, format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The error that ends a program as one JSON log line: what a log pipeline reading
/// `--log-format json` expects instead of a bare `error: ...` line. Written directly, so
/// no `RUST_LOG` filter hides it.
pub fn error_json(program: &str, err: &anyhow::Error, code: u8) -> String {
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": "ERROR",
        "target": program,
        "message": format!("{program} failed"),
        "error": error_chain(err.as_ref()),
        "exit_code": code,
    })
    .to_string()
}

/// Turns the outcome of `program` into the process exit status, printing any error
/// (`<prefix>error: ` and its whole cause chain; with `--log-format json`, one JSON
/// object: [`error_json`]) to stderr. A closed stdout ends the program quietly with
/// success, as for any Unix filter.
pub fn finish(result: anyhow::Result<()>, program: &str, prefix: &str, no_store: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e, no_store);
            let line = match LOG_FORMAT.get() {
                Some(LogFormat::Json) => error_json(program, &e, code),
                _ => format!("{prefix}error: {}", error_chain(e.as_ref())),
            };
            let _ = writeln!(io::stderr().lock(), "{line}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;
    use poh_types::{Limits, Tx};

    #[test]
    fn exit_codes_follow_the_table() {
        let nf = anyhow::Error::new(TxNotFound("a".into())).context("x");
        assert_eq!(exit_code(&nf, EXIT_FAILURE), EXIT_NOT_FOUND);
        let bad = Tx::from_json("{", &Limits::default()).unwrap_err();
        assert_eq!(
            exit_code(&anyhow::Error::new(bad).context("y"), EXIT_FAILURE),
            EXIT_USAGE
        );
        let integ = StorageError::Integrity {
            tx_id: "a".into(),
            detail: "d".into(),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(integ), EXIT_FAILURE),
            EXIT_INTEGRITY
        );
        let bad_path = StorageError::BadPath {
            path: "data/x.bin".into(),
            why: "a payload file name".into(),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(bad_path).context("open"), EXIT_FAILURE),
            EXIT_USAGE
        );
        let no_store = || StorageError::NotFound {
            path: "data".into(),
            why: "missing".into(),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(no_store()), EXIT_FAILURE),
            EXIT_FAILURE
        );
        assert_eq!(
            exit_code(&anyhow::Error::new(no_store()), EXIT_NOT_FOUND),
            EXIT_NOT_FOUND
        );
        assert_eq!(exit_code(&anyhow!("other"), EXIT_FAILURE), EXIT_FAILURE);
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        let bad = Tx::from_json("{", &Limits::default()).unwrap_err();
        let e = anyhow::Error::new(bad).context("invalid --tx");
        let msg = error_chain(e.as_ref());
        assert!(
            msg.starts_with("invalid --tx: malformed transaction JSON: EOF"),
            "{msg}"
        );
        assert_eq!(msg.matches("EOF").count(), 1, "{msg}");
        let e = anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(e.as_ref()), "outer: middle: inner");
    }
}
