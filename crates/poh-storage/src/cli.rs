//! The `poh-storage` command line: argument definitions, one function per subcommand and
//! the mapping from errors to exit codes. The binary only parses arguments, sets up
//! logging and calls [`run`] and [`finish`].
//!
//! The commands are synchronous code that hands each store call to a current-thread tokio
//! runtime (`block_on`): reading stdin or a file and writing stdout happen on the main
//! thread, never on an async worker.
//!
//! # Exit codes
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | any other failure: I/O, database, no store at the given place, ... |
//! | 2 | usage error or bad input: unknown flag, invalid tx JSON, invalid tx_id, malformed or over-long import line, a `--db` or `--out` that names one of the store's own files |
//! | 3 | the tx does not exist (`load`, `delete`); stderr says `tx <id> not found` |
//! | 4 | integrity problem: `load` of a corrupt or missing payload, `verify` found problems |
//!
//! Errors are printed to stderr as `error: ` followed by the whole cause chain (as with
//! `{:#}`; see [`error_chain`]).
//!
//! # Output
//! `init`, `save`, `load`, `delete` and `list` print what the prototype printed:
//! `Initialized`, `Saved <id>`, the JSON form of the tx, `Deleted <id>` and a JSON array
//! of ids. `load` and `list` use the prototype's exact JSON spacing (`", "`, `": "`, non-ASCII
//! escaped), so scripts written against it see the same bytes. `recover` prints a JSON
//! report. `--json` turns the other outputs into one JSON document.
//!
//! # Import
//! `import` reads JSON Lines (one tx per line, blank lines skipped) and saves them with
//! `save_batch`, one durable commit per batch. Lines before the first bad line are saved
//! (each batch was acknowledged before the next was read); the bad line and everything
//! after it are not, and the error names the line. With `--print-acked`, each id is
//! printed to stdout only after its batch's commit returned, and stdout is flushed after
//! every batch.

use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use poh_types::{DEFAULT_MAX_PAYLOAD_BYTES, JsonError, Limits, Tx, TxError, TxId, TxIdError};

use crate::{OpenOptions, RecoverReport, Stats, StorageError, StorageManager};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any failure not listed below (I/O, database, missing store, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: usage error or bad input (flags, tx JSON, tx_id, import line, a path
/// onto the store's own files).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the tx does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit status: integrity problem (corrupt or missing payload; verify found problems).
pub const EXIT_INTEGRITY: u8 = 4;

/// Ids fetched per `list_page` call while streaming `list`.
const LIST_PAGE: usize = 1000;
/// Payload bytes above which an import batch is committed early.
const IMPORT_BATCH_BYTES: usize = 64 * 1024 * 1024;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  failure (I/O, database, no store at --base/--db, ...)
  2  usage error or bad input (unknown flag, invalid tx JSON or tx_id, malformed or
     over-long import line, --db or --out naming one of the store's own files)
  3  tx not found (load, delete)
  4  integrity problem (load of a corrupt or missing payload; verify found problems)

Environment:
  POH_BASE            default for --base
  POH_DB              default for --db
  POH_MAX_PAYLOAD     default for --max-payload
  POH_LOCK_TIMEOUT    default for --lock-timeout
  POH_GROUP_READABLE  default for --group-readable (true/false, 1/0, yes/no, on/off)
  RUST_LOG            log filter for messages on stderr (default: warn)";

/// `poh-storage`: a durable, verified store of Proof-of-History transactions.
#[derive(Debug, Parser)]
#[command(
    name = "poh-storage",
    version,
    about = "A durable, verified store of Proof-of-History transactions",
    long_about = "A durable, verified store of Proof-of-History transactions: payloads are \
                  files <base>/<tx_id>.bin, metadata is a row in an SQLite database. Only \
                  init, save and import create a missing store.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Where the store is and how to print.
    #[command(flatten)]
    pub store: StoreOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes (before or after the subcommand name).
#[derive(Debug, Clone, Args)]
pub struct StoreOpts {
    /// Directory of the payload files.
    #[arg(
        long,
        global = true,
        env = "POH_BASE",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub base: PathBuf,
    /// SQLite metadata database [default: <base>/poh.db].
    #[arg(long, global = true, env = "POH_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
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
    /// Longest wait for another process's store lock before giving up (e.g. 30s, 2m).
    #[arg(
        long,
        global = true,
        env = "POH_LOCK_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_lock_timeout
    )]
    pub lock_timeout: std::time::Duration,
    /// Make what the store creates readable by the group too: directories 0750 and files
    /// 0640 instead of 0700 and 0600 (existing files keep their modes until rewritten).
    #[arg(
        long,
        global = true,
        env = "POH_GROUP_READABLE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub group_readable: bool,
}

fn parse_lock_timeout(s: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))
}

impl StoreOpts {
    /// The database path: `--db`, or `<base>/poh.db`.
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| self.base.join("poh.db"))
    }

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
}

/// Arguments of `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// JSON Lines file, one tx per line; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Txs per durable commit.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Print each tx_id to stdout once its batch is durably saved (flushed per batch).
    #[arg(long)]
    pub print_acked: bool,
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
struct StdoutClosed;

/// The exit status for an error from [`run`], following the table in the module docs.
pub fn exit_code(err: &anyhow::Error) -> u8 {
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
                StorageError::Invalid(_) | StorageError::BadPath { .. } => return EXIT_USAGE,
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

/// Sets up logging to stderr, filtered by `RUST_LOG` (default `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Turns the outcome of [`run`] into the process exit status, printing any error (with its
/// whole cause chain) to stderr. A closed stdout ends the program quietly with success,
/// as for any Unix filter.
pub fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr().lock(), "error: {}", error_chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes joined by `: ` (like `{:#}`), leaving out a cause whose
/// message its parent already ends with (library errors often quote their source).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if s.is_empty() {
            s = msg;
        } else if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
    }
    s
}

/// Runs one parsed command line, writing its output to stdout.
pub fn run(cli: Cli) -> Result<()> {
    let stdout = io::stdout();
    let mut out = Out(io::BufWriter::new(stdout.lock()));
    let res = run_with(cli, &mut out);
    let flushed = out.flush();
    res.and(flushed)
}

/// Standard output with errors mapped for [`finish`].
struct Out<W: Write>(W);

impl<W: Write> Out<W> {
    fn map(e: io::Error) -> anyhow::Error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            anyhow::Error::new(StdoutClosed)
        } else {
            anyhow::Error::new(e).context("cannot write to stdout")
        }
    }

    fn put(&mut self, s: &str) -> Result<()> {
        self.bytes(s.as_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.0.write_all(b).map_err(Self::map)
    }

    fn line(&mut self, s: &str) -> Result<()> {
        self.put(s)?;
        self.put("\n")
    }

    fn flush(&mut self) -> Result<()> {
        self.0.flush().map_err(Self::map)
    }
}

/// A current-thread runtime that the synchronous commands hand store calls to.
struct Rt(tokio::runtime::Runtime);

impl Rt {
    fn new() -> Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Self)
            .context("cannot start the async runtime")
    }

    fn call<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }

    fn open(&self, opts: &StoreOpts, access: Access) -> Result<StorageManager> {
        let db = opts.db_path();
        let o = OpenOptions {
            create: access == Access::Create,
            read_only: access == Access::Read,
            group_readable: opts.group_readable,
            lock_timeout: opts.lock_timeout,
            limits: opts.limits(),
            ..OpenOptions::default()
        };
        self.call(StorageManager::open_with(&opts.base, &db, o))
            .map_err(|e| match e {
                // Already says what is missing and what to do.
                e @ StorageError::NotFound { .. } => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context(format!(
                    "cannot open the store at {} (metadata {})",
                    opts.base.display(),
                    db.display()
                )),
            })
    }

    fn close(&self, sm: &StorageManager) -> Result<()> {
        self.call(sm.close()).context("cannot close the store")
    }
}

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Create it if missing (init, save, import).
    Create,
    /// It must exist; interrupted saves are finished on open (delete, recover).
    Existing,
    /// It must exist, and nothing under it is created or changed, no lock is waited
    /// for on the fast path (load, list, stats, verify, recover --dry-run).
    Read,
}

/// Opens the store, runs `f`, and closes the store whatever `f` returned, so its writes
/// are finished and its database closed cleanly (no WAL file left behind) before exit.
fn with_store<T>(
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
        Command::Import(args) => cmd_import(&opts, &args, out),
        Command::Verify => cmd_verify(&opts, out),
        Command::Stats => cmd_stats(&opts, out),
    }
}

fn cmd_init<W: Write>(opts: &StoreOpts, out: &mut Out<W>) -> Result<()> {
    with_store(opts, Access::Create, |_, _| Ok(()))?;
    if opts.json {
        out.line(&json_obj(&[
            ("initialized", serde_json::Value::Bool(true)),
            ("base", path_json(&opts.base)),
            ("db", path_json(&opts.db_path())),
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
        crate::names::check_output_path(&opts.base, &opts.db_path(), path)
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
                .call(sm.list_page(after.take(), LIST_PAGE))
                .context("cannot list txs")?;
            for row in &page.rows {
                if !first {
                    out.put(", ")?;
                }
                first = false;
                out.put(&py_json_str(&row.tx_id))?;
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
    s
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

/// Where `import` reads from, for messages.
enum Source {
    Stdin,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str("stdin"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn cmd_import<W: Write>(opts: &StoreOpts, args: &ImportArgs, out: &mut Out<W>) -> Result<()> {
    let (source, mut reader, total): (Source, Box<dyn BufRead>, Option<u64>) =
        match args.file.as_deref() {
            None => (Source::Stdin, Box::new(io::stdin().lock()), None),
            Some(p) if p == Path::new("-") => (Source::Stdin, Box::new(io::stdin().lock()), None),
            Some(p) => {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                (
                    Source::File(p.to_path_buf()),
                    Box::new(io::BufReader::with_capacity(1 << 20, f)),
                    len,
                )
            }
        };
    let mut imp = Importer {
        opts,
        args,
        progress: progress_bar(total),
        store: None,
        batch: Vec::with_capacity((args.batch_size as usize).min(4096)),
        batch_bytes: 0,
        saved: 0,
        batches: 0,
        lines: 0,
    };
    let mut res = imp.read_all(&source, &mut *reader, out);
    if let Some((rt, sm)) = imp.store.take() {
        let closed = rt.close(&sm);
        res = res.and(closed);
    }
    imp.progress.finish_and_clear();
    // The summary goes to stderr when stdout carries the acknowledged ids.
    let summary = if opts.json {
        json_obj(&[
            ("imported", imp.saved.into()),
            ("batches", imp.batches.into()),
            ("lines", imp.lines.into()),
            ("source", source.to_string().into()),
        ])
    } else {
        format!(
            "Imported {} tx(s) from {source} in {} batch(es)",
            imp.saved, imp.batches
        )
    };
    match res {
        Ok(()) if args.print_acked => {
            let _ = writeln!(io::stderr().lock(), "{summary}");
            Ok(())
        }
        Ok(()) => out.line(&summary),
        Err(e) => Err(e.context(format!(
            "import from {source} stopped; the {} tx(s) before the error were saved",
            imp.saved
        ))),
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => {
            let pb = indicatif::ProgressBar::new(n);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} ({eta})",
            ) {
                pb.set_style(style);
            }
            pb
        }
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// One import: the pending batch, the store (opened on the first batch, so input that
/// is bad from its first line leaves the store untouched, not even created) and counters.
struct Importer<'a> {
    opts: &'a StoreOpts,
    args: &'a ImportArgs,
    progress: indicatif::ProgressBar,
    store: Option<(Rt, StorageManager)>,
    batch: Vec<Tx>,
    batch_bytes: usize,
    saved: u64,
    batches: u64,
    lines: u64,
}

impl Importer<'_> {
    fn read_all<W: Write>(
        &mut self,
        source: &Source,
        reader: &mut dyn BufRead,
        out: &mut Out<W>,
    ) -> Result<()> {
        let limits = self.opts.limits();
        let max_line = max_import_line(self.opts.max_payload);
        let batch_size = self.args.batch_size as usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = read_line_bounded(reader, &mut buf, max_line)
                .with_context(|| format!("cannot read {source} at line {}", self.lines + 1))?;
            if n == 0 {
                break;
            }
            self.lines += 1;
            self.progress.inc(n as u64);
            if line_too_long(&buf, max_line) {
                // Reading stopped at the limit: the rest of the line is never held.
                let line = self.lines;
                self.flush(out)?;
                return Err(anyhow::Error::new(BadInput(format!(
                    "line is longer than {max_line} bytes, the longest a tx can be when the \
                     payload limit is {} bytes (--max-payload); reading stopped there",
                    self.opts.max_payload
                )))
                .context(format!("{source} line {line}")));
            }
            let parsed = std::str::from_utf8(&buf)
                .map_err(|e| anyhow::Error::new(BadInput(format!("not UTF-8: {e}"))))
                .and_then(|text| {
                    if text.trim().is_empty() {
                        Ok(None)
                    } else {
                        Tx::from_json(text, &limits)
                            .map(Some)
                            .map_err(anyhow::Error::new)
                    }
                });
            let tx = match parsed {
                Ok(Some(tx)) => tx,
                Ok(None) => continue,
                Err(e) => {
                    // Everything before the bad line is valid: save it, then stop.
                    let line = self.lines;
                    self.flush(out)?;
                    return Err(e.context(format!("{source} line {line}")));
                }
            };
            self.batch_bytes += tx.payload.len();
            self.batch.push(tx);
            if self.batch.len() >= batch_size || self.batch_bytes >= IMPORT_BATCH_BYTES {
                self.flush(out)?;
                self.progress.set_message(format!("{} txs", self.saved));
            }
        }
        self.flush(out)
    }

    /// Saves the pending batch in one durable commit; then, with `--print-acked`, prints
    /// its ids and flushes stdout.
    fn flush<W: Write>(&mut self, out: &mut Out<W>) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.store.is_none() {
            let rt = Rt::new()?;
            let sm = rt.open(self.opts, Access::Create)?;
            self.store = Some((rt, sm));
        }
        let Some((rt, sm)) = self.store.as_ref() else {
            return Err(anyhow!("store not open"));
        };
        let txs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let ids: Vec<String> = if self.args.print_acked {
            txs.iter().map(|t| t.tx_id.to_string()).collect()
        } else {
            Vec::new()
        };
        let n = txs.len() as u64;
        let last_line = self.lines;
        rt.call(sm.save_batch(txs))
            .with_context(|| format!("cannot save the batch ending at line {last_line}"))?;
        self.saved += n;
        self.batches += 1;
        if self.args.print_acked {
            // A reader that went away is a failure here: the ids are the point.
            let ack = |e: anyhow::Error| {
                anyhow!("cannot print acknowledged ids: {e:#} (their batch was saved)")
            };
            for id in &ids {
                out.line(id).map_err(ack)?;
            }
            out.flush().map_err(ack)?;
        }
        Ok(())
    }
}

/// Bytes an `import` line may hold besides the base64 of its payload (ids, timestamp,
/// field names, spacing).
const IMPORT_LINE_SLACK: usize = 64 * 1024;

/// The longest `import` line (without its newline) for a payload limit of `max_payload`
/// bytes: the payload's base64 (4 characters per 3 bytes) plus [`IMPORT_LINE_SLACK`].
pub fn max_import_line(max_payload: usize) -> usize {
    max_payload
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(IMPORT_LINE_SLACK)
}

/// Appends the next line of `reader` (with its `\n`, if any) to `buf`, reading at most
/// `max_line + 1` bytes, and returns the number of bytes read (0 at the end of input).
/// A line longer than `max_line` is cut there and the rest left unread: see
/// [`line_too_long`].
fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max_line: usize,
) -> io::Result<usize> {
    let cap = u64::try_from(max_line)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader.take(cap).read_until(b'\n', buf)
}

/// True if `line`, as [`read_line_bounded`] returned it, was cut: more than `max_line`
/// bytes and no newline yet.
fn line_too_long(line: &[u8], max_line: usize) -> bool {
    line.len() > max_line && line.last() != Some(&b'\n')
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

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).context("cannot encode JSON")
}

fn json_obj(fields: &[(&str, serde_json::Value)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn path_json(p: &Path) -> serde_json::Value {
    serde_json::Value::String(p.display().to_string())
}

/// The tx as the prototype printed it: Python's `json.dumps` of
/// `{"tx_id", "holder_id", "timestamp", "payload"}`.
pub fn prototype_tx_json(tx: &Tx) -> String {
    let w = tx.to_wire();
    format!(
        "{{\"tx_id\": {}, \"holder_id\": {}, \"timestamp\": {}, \"payload\": {}}}",
        py_json_str(&w.tx_id),
        py_json_str(&w.holder_id),
        py_float_repr(w.timestamp),
        py_json_str(&w.payload)
    )
}

/// A JSON string as Python's `json.dumps` writes it (non-ASCII as `\uXXXX`).
pub fn py_json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A float as Python's `repr` writes it: shortest round-trip digits, fixed notation for
/// decimal exponents from -4 to 15, otherwise `d.ddde±XX`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.7000000005e9".
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    let decpt = exp + 1; // x = 0.DIGITS * 10^decpt
    let n = digits.len() as i32;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= n {
            format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (a, b) = digits.split_at(1);
        let frac = if b.is_empty() {
            String::new()
        } else {
            format!(".{b}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{a}{frac}e{esign}{:02}", exp.abs())
    }
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
    fn floats_print_like_python_repr() {
        // Expected values are Python 3's repr() of the same floats.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1_700_000_000.5, "1700000000.5"),
            (1_700_000_000.0, "1700000000.0"),
            (123.456, "123.456"),
            (1e11, "100000000000.0"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (1.5e-7, "1.5e-07"),
            (12_345_678_901_234_567.0, "1.2345678901234568e+16"),
            (-2.5, "-2.5"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(*x), *want, "{x:e}");
        }
    }

    #[test]
    fn strings_print_like_python_json_dumps() {
        assert_eq!(py_json_str("a-b.c_1"), r#""a-b.c_1""#);
        assert_eq!(py_json_str("é\"\\\n\u{1}"), r#""\u00e9\"\\\n\u0001""#);
        assert_eq!(py_json_str("😀"), r#""\ud83d\ude00""#);
        assert_eq!(py_json_str("\u{7f}"), "\"\u{7f}\"");
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let nf = anyhow::Error::new(TxNotFound("a".into())).context("x");
        assert_eq!(exit_code(&nf), EXIT_NOT_FOUND);
        let bad = Tx::from_json("{", &Limits::default()).unwrap_err();
        assert_eq!(exit_code(&anyhow::Error::new(bad).context("y")), EXIT_USAGE);
        let integ = StorageError::Integrity {
            tx_id: "a".into(),
            detail: "d".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(integ)), EXIT_INTEGRITY);
        let bad_path = StorageError::BadPath {
            path: "data/.tmp/poh.db".into(),
            why: "w".into(),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(bad_path).context("cannot open")),
            EXIT_USAGE
        );
        assert_eq!(exit_code(&anyhow!("other")), EXIT_FAILURE);
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        let bad = Tx::from_json("{", &Limits::default()).unwrap_err();
        let msg = error_chain(&anyhow::Error::new(bad).context("invalid --tx"));
        assert!(
            msg.starts_with("invalid --tx: malformed transaction JSON: EOF"),
            "{msg}"
        );
        assert_eq!(msg.matches("EOF").count(), 1, "{msg}");
        let e = anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }

    #[test]
    fn import_lines_are_read_up_to_the_limit_and_no_further() {
        assert_eq!(max_import_line(16), 24 + 64 * 1024);
        assert_eq!(max_import_line(0), 64 * 1024);
        assert_eq!(max_import_line(64 << 20), 89_544_024); // as the README says
        assert_eq!(max_import_line(usize::MAX), usize::MAX);
        let mut input: &[u8] = b"abc\nabcd\nabcde\nxy";
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            buf.clear();
            let n = read_line_bounded(&mut input, &mut buf, 4).unwrap();
            if n == 0 {
                break;
            }
            lines.push((
                String::from_utf8(buf.clone()).unwrap(),
                line_too_long(&buf, 4),
            ));
        }
        // "abcde" is cut after 5 bytes; what follows is read as the next "line".
        let want = [
            ("abc\n", false),
            ("abcd\n", false),
            ("abcde", true),
            ("\n", false),
            ("xy", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(l, t)| ((*l).to_owned(), *t)).collect();
        assert_eq!(lines, want);
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
