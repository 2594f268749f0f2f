//! `poh-ttl`: expires old transactions from a poh-storage store, once (`scan`, for cron)
//! or periodically (`run`, a daemon that stops cleanly on SIGINT/SIGTERM).
//!
//! Exit codes: 0 success; 1 the pass or the daemon failed; 2 bad arguments (including a
//! zero or negative TTL/interval, an interval under 10 ms, a `--db` among the store's own
//! names); 3 no store at the given location.

use std::io::{self, BufWriter, IsTerminal};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use poh_storage::{OpenOptions, StorageError, StorageManager};
use poh_ttl::cli::{ExpiredPrinter, OutputFormat};
use poh_ttl::{
    DEFAULT_BATCH_SIZE, ScanMode, TtlManager, display_chain, parse_duration, parse_interval,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;
use tracing_subscriber::EnvFilter;

const EXIT_FAILURE: u8 = 1;
/// Bad arguments; clap exits with it for what it parses, and so do we for a `--db` the
/// storage library refuses.
const EXIT_USAGE: u8 = 2;
const EXIT_NO_STORE: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "poh-ttl",
    version,
    about = "Expire transactions older than a TTL from a poh-storage store",
    after_help = "Durations: seconds (3600, 0.5) or with a unit (90s, 15m, 1h, 7d).\n\
                  A tx expires when now - timestamp > TTL.\n\
                  Exit codes: 0 ok, 1 failure, 2 bad arguments, 3 no store at the location."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
    /// Make what the store creates readable by the group too: directories 0750 and files
    /// 0640 instead of 0700 and 0600 (existing files keep their modes until rewritten).
    #[arg(
        long,
        global = true,
        env = "POH_GROUP_READABLE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    group_readable: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one pass: delete every expired tx and print `Expired: [...]`.
    Scan(ScanArgs),
    /// Run a pass now and then every --interval until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct StoreArgs {
    /// Base directory of the store (payload files).
    #[arg(long, env = "POH_BASE", default_value = "./data")]
    base: PathBuf,
    /// Metadata database [default: <base>/poh.db].
    #[arg(long, env = "POH_DB")]
    db: Option<PathBuf>,
    /// Age after which a tx expires: seconds or a duration with a unit (7d).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    ttl: Duration,
    /// Most txs deleted per store transaction.
    #[arg(long, default_value_t = NonZeroUsize::new(DEFAULT_BATCH_SIZE).unwrap_or(NonZeroUsize::MIN))]
    batch_size: NonZeroUsize,
    /// Longest wait for another process's store lock before a batch fails (e.g. 30s).
    #[arg(long, env = "POH_LOCK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

#[derive(Args, Debug)]
struct ScanArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would expire; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object: {"expired": [...], "count", "dry_run", "elapsed_ms"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Time between passes: seconds or a duration with a unit (1h); at least 10ms.
    #[arg(long, value_parser = parse_interval, allow_hyphen_values = true)]
    interval: Duration,
    /// Exit with status 1 after this many failed passes in a row (so a supervisor
    /// restarts the process, which reopens the store); by default retry forever.
    #[arg(long)]
    max_failures: Option<NonZeroU64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Command::Scan(_) => "warn",
        Command::Run(_) => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                match cli.cmd {
                    Command::Scan(a) => scan(a, cli.group_readable).await,
                    Command::Run(a) => run(a, cli.group_readable).await,
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poh-ttl: error: {}", display_chain(e.as_ref()));
            let storage = || e.chain().filter_map(|c| c.downcast_ref::<StorageError>());
            let code = if storage().any(|s| matches!(s, StorageError::BadPath { .. })) {
                EXIT_USAGE
            } else if storage().any(|s| matches!(s, StorageError::NotFound { .. })) {
                EXIT_NO_STORE
            } else {
                EXIT_FAILURE
            };
            ExitCode::from(code)
        }
    }
}

/// Opens an existing store; never creates one. A read-only handle (dry runs) changes
/// nothing under the base or at the database, not even the repair other opens do.
async fn open_store(
    a: &StoreArgs,
    read_only: bool,
    group_readable: bool,
) -> Result<StorageManager> {
    let db = a.db.clone().unwrap_or_else(|| a.base.join("poh.db"));
    let opts = OpenOptions {
        create: false,
        read_only,
        group_readable,
        lock_timeout: a.lock_timeout,
        ..OpenOptions::default()
    };
    StorageManager::open_with(&a.base, &db, opts)
        .await
        .with_context(|| {
            format!(
                "open store {} (database {})",
                a.base.display(),
                db.display()
            )
        })
}

async fn scan(a: ScanArgs, group_readable: bool) -> Result<()> {
    let store = open_store(&a.store, a.dry_run, group_readable).await?;
    let mgr =
        TtlManager::new(store.clone(), a.store.ttl)?.with_batch_size(a.store.batch_size.get());
    let (mode, format) = (
        if a.dry_run {
            ScanMode::DryRun
        } else {
            ScanMode::Delete
        },
        if a.json {
            OutputFormat::Json
        } else {
            OutputFormat::Text
        },
    );
    let started = Instant::now();
    let mut printer = ExpiredPrinter::begin(BufWriter::new(io::stdout()), format, a.dry_run)
        .context("write to stdout")?;
    let mut write_error = None;
    // Writing to stdout blocks; tell the runtime so it does not stall other tasks.
    let result = mgr
        .scan_with(mode, |ids| {
            if write_error.is_none()
                && let Err(e) = tokio::task::block_in_place(|| printer.batch(ids))
            {
                write_error = Some(e);
            }
        })
        .await;
    let (elapsed, failure) = match &result {
        Ok(s) => (s.elapsed, None),
        Err(e) => (started.elapsed(), Some(display_chain(e))),
    };
    if write_error.is_none()
        && let Err(e) = tokio::task::block_in_place(|| printer.finish(elapsed, failure.as_deref()))
    {
        write_error = Some(e);
    }
    let closed = store.close().await.context("close the store");
    result?;
    if let Some(e) = write_error {
        return Err(e).context("write the report to stdout (the pass itself completed)");
    }
    closed
}

async fn run(a: RunArgs, group_readable: bool) -> Result<()> {
    // Install the handlers before anything else, so a signal never kills us mid-batch.
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let store = open_store(&a.store, false, group_readable).await?;
    let mgr =
        TtlManager::new(store.clone(), a.store.ttl)?.with_batch_size(a.store.batch_size.get());
    let daemon = mgr.spawn(a.interval)?;
    info!(
        base = %a.store.base.display(),
        ttl_secs = a.store.ttl.as_secs_f64(),
        interval_secs = a.interval.as_secs_f64(),
        "poh-ttl running; stop with SIGINT or SIGTERM"
    );
    let shutdown = async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        info!(signal = name, "stopping: finishing the batch in flight");
    };
    let result = daemon.run_until(shutdown, a.max_failures).await;
    let closed = store.close().await.context("close the store");
    let stats = result?;
    closed?;
    info!(
        passes = stats.passes,
        failures = stats.failures,
        expired_total = stats.expired_total,
        "poh-ttl stopped; store closed"
    );
    Ok(())
}
