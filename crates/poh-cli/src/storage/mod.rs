//! The `poh-storage` command line: argument definitions and one function per subcommand
//! (`import` in `storage::import`). The binary only parses arguments and calls [`main`].
//!
//! The commands are synchronous code that hands each store call to a current-thread tokio
//! runtime (`block_on`): reading stdin or a file and writing stdout happen on the main
//! thread, never on an async worker.
//!
//! Exit codes and error printing are shared with `poh-ttl`: see [`crate::common`].
//!
//! # Output
//! `init`, `save`, `load`, `delete` and `list` print what the prototype printed:
//! `Initialized`, `Saved <id>`, the JSON form of the tx, `Deleted <id>` and a JSON array
//! of ids. `load` and `list` use the prototype's exact JSON spacing (`", "`, `": "`, non-ASCII
//! escaped), so scripts written against it see the same bytes. `recover` prints a JSON
//! report. `--json` turns the other outputs into one JSON document.
//!
mod import;

use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use poh_storage::{RecoverReport, Stats, StorageError, StorageManager};
use poh_types::{DEFAULT_MAX_PAYLOAD_BYTES, Limits, Tx, TxId};

use crate::common::{
    self, Access, BadInput, EXIT_FAILURE, LogArgs, ProblemsFound, StdoutClosed, StoreLocation,
    TxNotFound,
};
use crate::pyfmt::{prototype_tx_json, py_json_str};
pub use import::ImportArgs;

/// Ids fetched per `list_ids_page` call while streaming `list`.
const LIST_PAGE: usize = 1000;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  failure (I/O, database, no store at --base/--db, ...)
  2  usage error or bad input (unknown flag, invalid tx JSON or tx_id, malformed or
     over-long import line, --db or --out naming one of the store's own files,
     --layout or --segment-window other than the store's own, a bad database URL)
  3  tx not found (load, delete)
  4  integrity problem (load of a corrupt or missing payload; verify found problems)

Environment:
  POH_BASE            default for --base
  POH_DB              default for --db (a file, or postgres://user@host/dbname)
  PGPASSWORD          password for a database URL that has none
  POH_MAX_PAYLOAD     default for --max-payload
  POH_LOCK_TIMEOUT    default for --lock-timeout
  POH_GROUP_READABLE  default for --group-readable (true/false, 1/0, yes/no, on/off)
  POH_LAYOUT          default for --layout (files or segments; only for a new store)
  POH_SEGMENT_WINDOW  default for --segment-window (only for a new segments store)
  POH_DETACH_EXPIRED  default for --detach-expired (postgres stores)
  RUST_LOG            log filter for messages on stderr (default: warn)";

/// `poh-storage`: a durable, verified store of Proof-of-History transactions.
#[derive(Debug, Parser)]
#[command(
    name = "poh-storage",
    version,
    about = "A durable, verified store of Proof-of-History transactions",
    long_about = "A durable, verified store of Proof-of-History transactions. Three layouts: \
                  `files` (the default: payloads are files <base>/<tx_id>.bin, metadata a row \
                  in an SQLite database) and `segments` (payloads appended as checksummed \
                  records to time-windowed segment files under <base>/segments, with an \
                  SQLite index), chosen with --layout when a store is created, and \
                  `postgres` (one time-partitioned table in the PostgreSQL database that \
                  --db postgres://user@host/dbname names). Only init, save and import create \
                  a missing store.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Where the store is and how to print.
    #[command(flatten)]
    pub store: StoreOpts,
    /// How to log.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes (before or after the subcommand name).
#[derive(Debug, Clone, Args)]
pub struct StoreOpts {
    /// Where the store is.
    #[command(flatten)]
    pub location: StoreLocation,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Largest payload accepted by save and import, in bytes.
    #[arg(
        long,
        global = true,
        env = "POH_MAX_PAYLOAD",
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_PAYLOAD_BYTES
    )]
    pub max_payload: usize,
}

impl StoreOpts {
    /// The input limits from the flags.
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store if missing and print `Initialized`.
    Init,
    /// Save one tx given as JSON {"tx_id","holder_id","timestamp","payload"} (payload in base64).
    Save {
        /// The tx as JSON, or `-` to read it from stdin.
        #[arg(long, value_name = "JSON")]
        tx: String,
    },
    /// Print a tx as JSON (payload verified against its SHA-256), or write its payload to a file.
    Load {
        /// The tx to load.
        #[arg(long, value_name = "ID")]
        tx_id: TxId,
        /// Write the raw payload to FILE (atomically, mode 0600), or to stdout with `-`,
        /// instead of printing JSON. The store's own files are refused.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete a tx (metadata row, then payload file).
    Delete {
        /// The tx to delete.
        #[arg(long, value_name = "ID")]
        tx_id: TxId,
    },
    /// Print all tx ids as a JSON array, in id order (streamed page by page).
    List,
    /// Repair what a crash or corruption left and print a JSON report.
    Recover {
        /// Report what would be done without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Save txs from JSON Lines (a file or stdin), batched.
    Import(ImportArgs),
    /// Check every tx and file without repairing; exit 4 if problems are found.
    Verify,
    /// Print the number of txs, their bytes and the time range.
    Stats,
    /// Convert the store to another layout, verifying every payload, and print a JSON
    /// report. In place by default (the store as it was is kept as `<base>.pre-migrate`;
    /// stop every other process using the store first); a kill at any moment loses
    /// nothing, and running it again finishes it.
    Migrate {
        /// The layout to convert to: `files`, `segments` or `postgres` (with --dest-db
        /// postgres://...). A store in PostgreSQL (--db postgres://...) converts to a
        /// local layout with --dest.
        #[arg(long, value_name = "LAYOUT")]
        to: poh_storage::Layout,
        /// Write the converted store here instead of converting in place (the source is
        /// left as it is).
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
        /// The converted store's database [default: <dest>/poh.db], or the PostgreSQL
        /// URL of a `--to postgres` migration.
        #[arg(long, value_name = "FILE|URL")]
        dest_db: Option<PathBuf>,
    },
}

/// Runs `poh-storage` with its parsed command line: logging, the command, and the exit
/// status (a missing store is exit 1, see [`crate::common`]).
pub fn main(cli: Cli) -> ExitCode {
    common::init_logging("warn", cli.log.log_format);
    common::finish(run(cli), "poh-storage", "", EXIT_FAILURE)
}

/// Runs one parsed command line, writing its output to stdout.
pub fn run(cli: Cli) -> Result<()> {
    let stdout = io::stdout();
    let mut out = Out(io::BufWriter::new(stdout.lock()));
    let res = run_with(cli, &mut out);
    let flushed = out.flush();
    res.and(flushed)
}

/// Standard output with errors mapped for [`common::finish`].
pub(crate) struct Out<W: Write>(W);

impl<W: Write> Out<W> {
    fn map(e: io::Error) -> anyhow::Error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            anyhow::Error::new(StdoutClosed)
        } else {
            anyhow::Error::new(e).context("cannot write to stdout")
        }
    }

    pub(crate) fn put(&mut self, s: &str) -> Result<()> {
        self.bytes(s.as_bytes())
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.0.write_all(b).map_err(Self::map)
    }

    pub(crate) fn line(&mut self, s: &str) -> Result<()> {
        self.put(s)?;
        self.put("\n")
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.0.flush().map_err(Self::map)
    }
}

/// A current-thread runtime that the synchronous commands hand store calls to.
pub(crate) struct Rt(tokio::runtime::Runtime);

impl Rt {
    pub(crate) fn new() -> Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Self)
            .context("cannot start the async runtime")
    }

    pub(crate) fn call<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }

    pub(crate) fn open(&self, opts: &StoreOpts, access: Access) -> Result<StorageManager> {
        let loc = &opts.location;
        let o = poh_storage::OpenOptions {
            limits: opts.limits(),
            ..loc.open_options(access)
        };
        self.call(StorageManager::open_with(&loc.base, loc.db_path(), o))
            .map_err(|e| match e {
                // Already says what is missing and what to do.
                e @ StorageError::NotFound { .. } => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context(format!("cannot open {}", loc.describe())),
            })
    }

    pub(crate) fn close(&self, sm: &StorageManager) -> Result<()> {
        self.call(sm.close()).context("cannot close the store")
    }
}

/// Opens the store, runs `f`, and closes the store whatever `f` returned, so its writes
/// are finished and its database closed cleanly (no WAL file left behind) before exit.
pub(crate) fn with_store<T>(
    opts: &StoreOpts,
    access: Access,
    f: impl FnOnce(&Rt, &StorageManager) -> Result<T>,
) -> Result<T> {
    let rt = Rt::new()?;
    let sm = rt.open(opts, access)?;
    let res = f(&rt, &sm);
    let closed = rt.close(&sm);
    let value = res?;
    closed?;
    Ok(value)
}

fn run_with<W: Write>(cli: Cli, out: &mut Out<W>) -> Result<()> {
    let opts = cli.store;
    match cli.command {
        Command::Init => cmd_init(&opts, out),
        Command::Save { tx } => cmd_save(&opts, &tx, out),
        Command::Load { tx_id, out: file } => cmd_load(&opts, &tx_id, file.as_deref(), out),
        Command::Delete { tx_id } => cmd_delete(&opts, &tx_id, out),
        Command::List => cmd_list(&opts, out),
        Command::Recover { dry_run } => cmd_recover(&opts, dry_run, out),
        Command::Import(args) => import::cmd_import(&opts, &args, out),
        Command::Verify => cmd_verify(&opts, out),
        Command::Stats => cmd_stats(&opts, out),
        Command::Migrate { to, dest, dest_db } => cmd_migrate(&opts, to, dest, dest_db, out),
    }
}

fn cmd_init<W: Write>(opts: &StoreOpts, out: &mut Out<W>) -> Result<()> {
    let layout = with_store(opts, Access::Create, |_, sm| Ok(sm.layout()))?;
    if opts.json {
        out.line(&json_obj(&[
            ("initialized", serde_json::Value::Bool(true)),
            ("layout", serde_json::Value::String(layout.to_string())),
            ("base", path_json(&opts.location.base)),
            ("db", serde_json::Value::String(opts.location.db_shown())),
        ]))
    } else {
        out.line("Initialized")
    }
}

fn cmd_save<W: Write>(opts: &StoreOpts, json: &str, out: &mut Out<W>) -> Result<()> {
    let text;
    let json = if json == "-" {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read the tx JSON from stdin")?;
        // Bytes that are not UTF-8 are bad input (exit 2), as for `import`, not a read error.
        text = String::from_utf8(bytes)
            .map_err(|e| BadInput(format!("invalid --tx: stdin is not UTF-8: {e}")))?;
        text.as_str()
    } else {
        json
    };
    // Parse and validate before opening: bad input never touches the store.
    let tx = Tx::from_json(json, &opts.limits()).context("invalid --tx")?;
    let id = tx.tx_id.to_string();
    with_store(opts, Access::Create, |rt, sm| {
        rt.call(sm.save(tx))
            .with_context(|| format!("cannot save tx {id}"))
    })?;
    if opts.json {
        out.line(&json_obj(&[("saved", serde_json::Value::String(id))]))
    } else {
        out.line(&format!("Saved {id}"))
    }
}

fn cmd_load<W: Write>(
    opts: &StoreOpts,
    id: &TxId,
    file: Option<&Path>,
    out: &mut Out<W>,
) -> Result<()> {
    let to_stdout = file == Some(Path::new("-"));
    // `-` is stdout; any other output must not be one of the store's own files (checked
    // before the store is opened, so a refusal changes nothing).
    let file = file.filter(|p| *p != Path::new("-"));
    if let Some(path) = file {
        poh_storage::check_output_path(&opts.location.base, &opts.location.db_path(), path)
            .context("invalid --out")?;
    }
    let tx = with_store(opts, Access::Read, |rt, sm| {
        rt.call(sm.load(id))
            .with_context(|| format!("cannot load tx {id}"))
    })?
    .ok_or_else(|| TxNotFound(id.to_string()))?;
    if to_stdout {
        return out.bytes(&tx.payload);
    }
    match file {
        Some(path) => {
            write_file_atomically(path, &tx.payload)?;
            let _ = writeln!(
                io::stderr().lock(),
                "Wrote {} bytes of tx {id} to {}",
                tx.payload.len(),
                path.display()
            );
            Ok(())
        }
        None => out.line(&prototype_tx_json(&tx)),
    }
}

fn cmd_delete<W: Write>(opts: &StoreOpts, id: &TxId, out: &mut Out<W>) -> Result<()> {
    let existed = with_store(opts, Access::Existing, |rt, sm| {
        rt.call(sm.delete(id))
            .with_context(|| format!("cannot delete tx {id}"))
    })?;
    if !existed {
        return Err(TxNotFound(id.to_string()).into());
    }
    if opts.json {
        out.line(&json_obj(&[(
            "deleted",
            serde_json::Value::String(id.to_string()),
        )]))
    } else {
        out.line(&format!("Deleted {id}"))
    }
}

fn cmd_list<W: Write>(opts: &StoreOpts, out: &mut Out<W>) -> Result<()> {
    with_store(opts, Access::Read, |rt, sm| {
        out.put("[")?;
        let mut after: Option<String> = None;
        let mut first = true;
        loop {
            let page = rt
                .call(sm.list_ids_page(after.take(), LIST_PAGE))
                .context("cannot list txs")?;
            for id in &page.ids {
                if !first {
                    out.put(", ")?;
                }
                first = false;
                out.put(&py_json_str(id))?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.line("]")
    })
}

fn cmd_recover<W: Write>(opts: &StoreOpts, dry_run: bool, out: &mut Out<W>) -> Result<()> {
    let access = if dry_run {
        Access::Read
    } else {
        Access::Existing
    };
    let report = with_store(opts, access, |rt, sm| {
        rt.call(sm.recover(dry_run)).context("recover failed")
    })?;
    out.line(&to_json(&report)?)
}

fn cmd_verify<W: Write>(opts: &StoreOpts, out: &mut Out<W>) -> Result<()> {
    let report = with_store(opts, Access::Read, |rt, sm| {
        rt.call(sm.verify()).context("verify failed")
    })?;
    let problems = report.findings.len() + report.rolled_forward.len() + report.temps_removed.len();
    if opts.json {
        out.line(&to_json(&report)?)?;
    } else {
        out.put(&verify_text(&report))?;
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(ProblemsFound(problems).into())
    }
}

fn verify_text(r: &RecoverReport) -> String {
    let mut s = String::new();
    let problems = r.findings.len() + r.rolled_forward.len() + r.temps_removed.len();
    let _ = writeln!(
        s,
        "Checked {} tx(s) and {} payload file(s): {} ok, {} problem(s)",
        r.rows_checked, r.files_checked, r.rows_ok, problems
    );
    for f in &r.findings {
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let id = if f.tx_id.is_empty() { "-" } else { &f.tx_id };
        let _ = writeln!(s, "  {id}: {kind}: {} ({})", f.detail, f.action);
    }
    for id in &r.rolled_forward {
        let _ = writeln!(s, "  {id}: interrupted save (would roll forward)");
    }
    for p in &r.temps_removed {
        let _ = writeln!(s, "  -: leftover temp file {} (would remove)", p.display());
    }
    for id in &r.adopted {
        let _ = writeln!(
            s,
            "  {id}: payload at the prototype's name for it (recover renames it; not a problem)"
        );
    }
    s
}

fn cmd_migrate<W: Write>(
    opts: &StoreOpts,
    to: poh_storage::Layout,
    dest: Option<PathBuf>,
    dest_db: Option<PathBuf>,
    out: &mut Out<W>,
) -> Result<()> {
    let loc = &opts.location;
    let dest = match (dest, dest_db) {
        (Some(d), db) => {
            let db = db.unwrap_or_else(|| d.join("poh.db"));
            Some((d, db))
        }
        (None, Some(db)) if poh_storage::is_database_url(&db) => Some((loc.base.clone(), db)),
        (None, Some(_)) => {
            return Err(anyhow::Error::new(BadInput(
                "--dest-db needs --dest (the converted store's directory), unless it is a \
                 postgres:// URL"
                    .into(),
            )));
        }
        (None, None) => None,
    };
    let o = poh_storage::OpenOptions {
        limits: opts.limits(),
        layout: None,
        ..loc.open_options(Access::Existing)
    };
    let rt = Rt::new()?;
    let report = rt
        .call(poh_storage::migrate(&loc.base, &loc.db_path(), to, dest, o))
        .with_context(|| format!("cannot migrate {} to {to}", loc.describe()))?;
    out.line(&to_json(&report)?)
}

fn cmd_stats<W: Write>(opts: &StoreOpts, out: &mut Out<W>) -> Result<()> {
    let stats = with_store(opts, Access::Read, |rt, sm| {
        rt.call(sm.stats()).context("cannot read stats")
    })?;
    if opts.json {
        out.line(&to_json(&stats)?)
    } else {
        out.put(&stats_text(&stats))
    }
}

fn stats_text(st: &Stats) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "txs:     {}", st.count);
    let _ = writeln!(s, "bytes:   {} ({} bytes)", human_bytes(st.bytes), st.bytes);
    if st.rows_without_size > 0 {
        let _ = writeln!(
            s,
            "         size unknown for {} tx(s) written by the prototype (not counted)",
            st.rows_without_size
        );
    }
    for (name, t) in [("oldest", st.oldest), ("newest", st.newest)] {
        let _ = match t {
            Some(t) => writeln!(s, "{name}:  {} ({t})", rfc3339(t)),
            None => writeln!(s, "{name}:  -"),
        };
    }
    s
}

/// Writes `data` to `path` through a temp file in the same directory and a rename, so
/// `path` is never seen half-written.
fn write_file_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| BadInput(format!("--out {} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Payloads may be private: the file is readable by its owner only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).context("cannot encode JSON")
}

pub(crate) fn json_obj(fields: &[(&str, serde_json::Value)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn path_json(p: &Path) -> serde_json::Value {
    serde_json::Value::String(p.display().to_string())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// RFC 3339 UTC time of UNIX seconds `t`, or `?` when out of the printable range.
fn rfc3339(t: f64) -> String {
    // humantime prints years 1970..=9999 only.
    if !(0.0..253_402_300_800.0).contains(&t) {
        return "?".into();
    }
    match std::time::Duration::try_from_secs_f64(t)
        .ok()
        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
    {
        Some(at) => humantime::format_rfc3339_millis(at).to_string(),
        None => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timestamps_outside_humantime_range_do_not_panic() {
        for t in [-1.0, f64::NAN, 1e300, 253_402_300_800.0] {
            assert_eq!(rfc3339(t), "?");
        }
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
