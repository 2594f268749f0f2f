//! The `poh-ttl` command line: expires old transactions from a store, once (`scan`, for
//! cron) or periodically (`run`, a daemon that stops cleanly on SIGINT/SIGTERM). Exit
//! codes are in [`crate::common`] (3: no store at the given location).
//!
//! For operating the daemon: [`metrics`] (what `--metrics` exports), [`serve`] (the HTTP
//! endpoint: `/metrics`, `/healthz`), [`notify`] (systemd readiness, status, watchdog).

pub mod metrics;
pub mod notify;
mod printer;
pub mod serve;

use std::io::{self, BufWriter};
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use poh_storage::{StorageManager, error_chain};
use poh_ttl::{
    Clock, DEFAULT_BATCH_SIZE, HealthPolicy, ReopeningStore, ScanMode, SystemClock, TtlManager,
    parse_duration, parse_interval,
};
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::info;

use crate::common::{self, Access, EXIT_NOT_FOUND, LogArgs, StoreLocation};
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
    /// How to log.
    #[command(flatten)]
    log: LogArgs,
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
    /// Serve Prometheus metrics on http://ADDR/metrics and health on /healthz. A port
    /// alone (9464, :9464) listens on 127.0.0.1 only; give an address to listen elsewhere
    /// (0.0.0.0:9464). Port 0 picks a free port (logged: "metrics listening on ...").
    #[arg(long, value_name = "ADDR", value_parser = serve::parse_metrics_addr)]
    metrics: Option<SocketAddr>,
}

/// Runs `poh-ttl` with its parsed command line: logging, a multi-threaded runtime, the
/// command, and the exit status.
pub fn main(cli: Cli) -> ExitCode {
    common::init_logging(
        match cli.cmd {
            Command::Scan(_) => "warn",
            Command::Run(_) => "info",
        },
        cli.log.log_format,
    );
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
    common::finish(result, "poh-ttl", "poh-ttl: ", EXIT_NOT_FOUND)
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
        .with_context(|| format!("open {}", loc.describe()))
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

/// Binds the metrics endpoint's address (before the daemon starts, so a port in use
/// fails the start instead of a scrape).
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen for metrics on {addr}"))
}

/// Serves `endpoint` on `listener` on a new task until `stop` fires; returns the address
/// it listens on (the port chosen for port 0) and the task.
pub fn start_endpoint(
    listener: TcpListener,
    endpoint: Arc<serve::Endpoint>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener
        .local_addr()
        .context("the metrics listener's address")?;
    let task = tokio::spawn(serve::serve(listener, endpoint, async move {
        let _ = stop.await;
    }));
    Ok((addr, task))
}

async fn run(loc: &StoreLocation, a: RunArgs) -> Result<()> {
    // Install the handlers before anything else, so a signal never kills us mid-batch.
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let (ttl, interval) = (a.store.ttl, a.interval);
    let store = Arc::new(
        ReopeningStore::open(&loc.base, loc.db_path(), loc.open_options(Access::Existing))
            .await
            .with_context(|| format!("open {}", loc.describe()))?,
    );
    let listener = match a.metrics {
        Some(addr) => Some(bind_metrics(addr).await?),
        None => None,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = metrics::Metrics::new(ttl, interval);
    let mgr = TtlManager::new(store.clone(), ttl)?
        .with_batch_size(a.store.batch_size.get())
        .with_clock(clock.clone());
    let daemon = mgr.spawn_with(interval, metrics.clone())?;
    let monitor = daemon.monitor();
    let endpoint = Arc::new(serve::Endpoint::new(
        metrics,
        monitor.clone(),
        store.clone(),
        HealthPolicy::for_interval(interval),
        clock,
        ttl,
    ));
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel();
    let server = match listener {
        Some(l) => {
            let (addr, task) = start_endpoint(l, endpoint.clone(), server_stopped)?;
            info!(%addr, "metrics listening on http://{addr}/metrics (health: /healthz)");
            Some(task)
        }
        None => None,
    };
    info!(
        store = %poh_storage::store_location(&loc.base, &loc.db_path()),
        ttl_secs = ttl.as_secs_f64(),
        interval_secs = interval.as_secs_f64(),
        "poh-ttl running; stop with SIGINT or SIGTERM"
    );
    notify::send(&[NotifyState::Ready, NotifyState::Status("running")]);
    let notifiers = notify::spawn(monitor.clone(), {
        let ep = endpoint.clone();
        move || notify::status_line(&monitor.stats(), &ep.health())
    });
    let stopping = notify::Stopping::default();
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            stopping.notify();
            info!(signal = name, "stopping: finishing the batch in flight");
        }
    };
    let result = daemon.run_until(shutdown, a.max_failures).await;
    stopping.notify();
    for t in notifiers {
        t.abort();
    }
    let _ = stop_server.send(());
    if let Some(t) = server {
        let _ = t.await;
    }
    let closed = store.close().await.context("close the store");
    let stats = result?;
    closed?;
    info!(
        store = %poh_storage::store_location(&loc.base, &loc.db_path()),
        passes = stats.passes,
        failures = stats.failures,
        expired_total = stats.expired_total,
        reopens = store.reopens(),
        "poh-ttl stopped; store closed"
    );
    Ok(())
}
