//! The `poh-ttl` command line: expires old transactions from a store, once (`scan`, for
//! cron) or periodically (`run`, a daemon that stops cleanly on SIGINT/SIGTERM). Exit
//! codes are in [`crate::common`] (3: no store at the given location).

mod printer;

use std::io::{self, BufWriter};
use std::num::{NonZeroU64, NonZeroUsize};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use poh_storage::{StorageManager, error_chain};
use poh_ttl::{DEFAULT_BATCH_SIZE, ScanMode, TtlManager, parse_duration, parse_interval};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::common::{self, Access, EXIT_NOT_FOUND, StoreLocation};
pub use printer::{ExpiredPrinter, OutputFormat};

/// `poh-ttl`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "poh-ttl",
    version,
    long_about = None,
    about = "Expire transactions older than a TTL from a poh-storage store",
    after_help = "Durations: seconds (3600, 0.5) or with a unit (90s, 15m, 1h, 7d).\n\
                  A tx expires when now - timestamp > TTL.\n\
                  Exit codes: 0 ok, 1 failure, 2 bad arguments, 3 no store at the location."
)]
pub struct Cli {
    /// Where the store is (before or after the subcommand).
    #[command(flatten)]
    location: StoreLocation,
    #[command(subcommand)]
    cmd: Command,
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
    /// Age after which a tx expires: seconds or a duration with a unit (7d).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    ttl: Duration,
    /// Most txs deleted per store transaction.
    #[arg(long, default_value_t = NonZeroUsize::new(DEFAULT_BATCH_SIZE).unwrap_or(NonZeroUsize::MIN))]
    batch_size: NonZeroUsize,
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

/// Runs `poh-ttl` with its parsed command line: logging, a multi-threaded runtime, the
/// command, and the exit status.
pub fn main(cli: Cli) -> ExitCode {
    common::init_logging(match cli.cmd {
        Command::Scan(_) => "warn",
        Command::Run(_) => "info",
    });
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                match cli.cmd {
                    Command::Scan(a) => scan(&cli.location, a).await,
                    Command::Run(a) => run(&cli.location, a).await,
                }
            })
        });
    common::finish(result, "poh-ttl: ", EXIT_NOT_FOUND)
}

/// Opens an existing store; never creates one. A read-only handle (dry runs) changes
/// nothing under the base or at the database, not even the repair other opens do.
async fn open_store(loc: &StoreLocation, read_only: bool) -> Result<StorageManager> {
    let access = if read_only {
        Access::Read
    } else {
        Access::Existing
    };
    StorageManager::open_with(&loc.base, loc.db_path(), loc.open_options(access))
        .await
        .with_context(|| {
            format!(
                "open store {} (database {})",
                loc.base.display(),
                loc.db_path().display()
            )
        })
}

async fn scan(loc: &StoreLocation, a: ScanArgs) -> Result<()> {
    let store = open_store(loc, a.dry_run).await?;
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
        Err(e) => (started.elapsed(), Some(error_chain(e))),
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

async fn run(loc: &StoreLocation, a: RunArgs) -> Result<()> {
    // Install the handlers before anything else, so a signal never kills us mid-batch.
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let store = open_store(loc, false).await?;
    let mgr =
        TtlManager::new(store.clone(), a.store.ttl)?.with_batch_size(a.store.batch_size.get());
    let daemon = mgr.spawn(a.interval)?;
    info!(
        base = %loc.base.display(),
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
