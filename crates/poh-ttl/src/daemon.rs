//! The TTL daemon: a tokio task that runs one pass per tick of a fixed interval until its
//! [`DaemonHandle`] asks it to stop (or is dropped).
//!
//! A failed pass is logged at ERROR and retried at the next tick; passes and failures
//! (total and consecutive) are published through the handle, so a task that keeps failing
//! is visible rather than silently dead. Each pass is logged at INFO with its id, the
//! store, counts and duration; the expired ids only at DEBUG.
//!
//! For operating it: a [`PassObserver`] given to [`TtlManager::spawn_with`] sees every
//! pass as it ends (metrics), and a [`DaemonMonitor`] (cheap to clone, usable after the
//! handle was consumed by [`DaemonHandle::run_until`]) reads the statistics and the
//! [`Activity`] (is a pass running, when did it last make progress) from other tasks: a
//! health endpoint ([`crate::health`]) or a watchdog.

use std::future::Future;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

use crate::clock::Clock;
use crate::error::{Result, TtlError, display_chain};
use crate::manager::{ScanMode, ScanSummary, TtlManager, stop_requested};
use crate::target::ExpiryTarget;

/// The shortest interval between passes the daemon accepts (10 ms). Shorter ones are
/// almost certainly a mistake (`1e-9` seconds ran thousands of passes a second, each one
/// taking the store lock); a pass that finds nothing costs well under this.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What the daemon has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonStats {
    /// Passes that completed.
    pub passes: u64,
    /// Passes that failed.
    pub failures: u64,
    /// Failures since the last completed pass (0 when the last pass succeeded).
    pub consecutive_failures: u64,
    /// The most recent failure, with its causes; kept after later successes.
    pub last_error: Option<String>,
    /// Txs expired over the daemon's life, including by passes that later failed.
    pub expired_total: u64,
    /// The most recent completed pass.
    pub last_pass: Option<ScanSummary>,
    /// When the daemon started, UNIX seconds on the manager's [`Clock`].
    pub started_at: f64,
    /// When the most recent completed pass ended, UNIX seconds on the manager's clock.
    pub last_success_at: Option<f64>,
    /// When the most recent failed pass ended, UNIX seconds on the manager's clock.
    pub last_failure_at: Option<f64>,
}

/// What the daemon is doing now: updated when a pass starts, after each batch that
/// expired something, and when a pass ends, so a pass stuck in one store call shows as
/// no progress while a long pass through a backlog keeps moving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// The id of the pass in progress (passes are numbered from 1), or `None` between
    /// passes.
    pub running: Option<u64>,
    /// The last sign of life (daemon start, pass start, a batch, pass end), UNIX seconds on
    /// the manager's clock: what health checks compare against.
    pub last_progress_at: f64,
    /// The same moment on tokio's monotonic clock: what a watchdog compares against (a
    /// wall-clock step must not look like a hang).
    pub last_progress: tokio::time::Instant,
}

impl Activity {
    fn starting(clock: &dyn Clock) -> Self {
        Self {
            running: None,
            last_progress_at: clock.now(),
            last_progress: tokio::time::Instant::now(),
        }
    }

    /// How long the pass in progress has gone without progress; `None` between passes.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.running.map(|_| self.last_progress.elapsed())
    }
}

/// How a pass ended, as a [`PassObserver`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PassEvent {
    /// The pass's id: passes are numbered from 1 in the order they start.
    pub id: u64,
    /// Wall time the pass took (for a failed pass, until the failure).
    pub elapsed: Duration,
    /// When it ended, UNIX seconds on the manager's clock.
    pub finished_at: f64,
    /// Its counts, or why it failed.
    pub outcome: std::result::Result<ScanSummary, PassFailure>,
}

/// A failed pass, as a [`PassObserver`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PassFailure {
    /// The error with its causes, on one line.
    pub error: String,
    /// Txs the pass deleted before it failed (they stay deleted).
    pub expired: u64,
}

/// Sees every pass of a daemon as it ends, on the daemon's task, just before the
/// statistics are updated (so whoever sees them change also sees what the observer
/// recorded): keep it quick (record a metric, not I/O).
pub trait PassObserver: Send + Sync + 'static {
    /// Called once per pass, completed or failed.
    fn pass_finished(&self, event: &PassEvent);
}

/// No observer.
impl PassObserver for () {
    fn pass_finished(&self, _: &PassEvent) {}
}

impl<F: Fn(&PassEvent) + Send + Sync + 'static> PassObserver for F {
    fn pass_finished(&self, event: &PassEvent) {
        self(event)
    }
}

impl<O: PassObserver + ?Sized> PassObserver for Arc<O> {
    fn pass_finished(&self, event: &PassEvent) {
        (**self).pass_finished(event)
    }
}

/// A read-only view of a running daemon for other tasks (a health endpoint, a
/// watchdog); cheap to clone, and it outlives the [`DaemonHandle`].
#[derive(Debug, Clone)]
pub struct DaemonMonitor {
    stats: watch::Receiver<DaemonStats>,
    activity: Arc<Mutex<Activity>>,
}

/// One consistent reading of a [`DaemonMonitor`].
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSnapshot {
    /// The statistics.
    pub stats: DaemonStats,
    /// What it is doing.
    pub activity: Activity,
    /// False once its task has ended (shut down, or panicked).
    pub running: bool,
}

impl DaemonMonitor {
    /// A snapshot of the statistics.
    pub fn stats(&self) -> DaemonStats {
        self.stats.borrow().clone()
    }

    /// A receiver that sees every update of the statistics, as
    /// [`DaemonHandle::subscribe`].
    pub fn subscribe(&self) -> watch::Receiver<DaemonStats> {
        self.stats.clone()
    }

    /// What the daemon is doing now.
    pub fn activity(&self) -> Activity {
        *self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// False once the daemon's task has ended (after a shutdown, or a panic).
    pub fn is_running(&self) -> bool {
        self.stats.has_changed().is_ok()
    }

    /// Statistics, activity and whether it runs, read together.
    pub fn snapshot(&self) -> DaemonSnapshot {
        DaemonSnapshot {
            activity: self.activity(),
            stats: self.stats(),
            running: self.is_running(),
        }
    }
}

/// Controls a running daemon. Dropping it stops the daemon too (after the batch in
/// flight), without waiting for it.
#[derive(Debug)]
pub struct DaemonHandle {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<DaemonStats>,
    activity: Arc<Mutex<Activity>>,
    task: JoinHandle<()>,
}

impl DaemonHandle {
    /// A snapshot of the statistics.
    pub fn stats(&self) -> DaemonStats {
        self.stats.borrow().clone()
    }

    /// A receiver that sees every update of the statistics (after each pass), e.g. to
    /// `wait_for(|s| s.passes >= 1)`.
    pub fn subscribe(&self) -> watch::Receiver<DaemonStats> {
        self.stats.clone()
    }

    /// A view of the daemon for other tasks, valid after this handle is consumed.
    pub fn monitor(&self) -> DaemonMonitor {
        DaemonMonitor {
            stats: self.stats.clone(),
            activity: self.activity.clone(),
        }
    }

    /// What the daemon is doing now.
    pub fn activity(&self) -> Activity {
        *self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the task has ended (after a shutdown, or if it panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the daemon to stop without waiting; [`shutdown`](Self::shutdown) waits.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the daemon gracefully: a pass in progress finishes the batch in flight and
    /// starts no other; no new pass starts. Returns the final statistics.
    pub async fn shutdown(self) -> Result<DaemonStats> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| TtlError::DaemonPanicked(e.to_string()))?;
        Ok(self.stats.borrow().clone())
    }

    /// Lets the daemon run until `shutdown` completes (e.g. a signal), then shuts it down
    /// gracefully and returns the final statistics.
    ///
    /// With `max_consecutive_failures`, gives up once that many passes in a row have
    /// failed: the daemon is shut down and [`TtlError::GaveUp`] returned, so a supervisor
    /// can restart the process (reopening a store that refuses writes after a durability
    /// failure repairs it). Without it, failed passes are retried forever.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        max_consecutive_failures: Option<NonZeroU64>,
    ) -> Result<DaemonStats> {
        let limit = max_consecutive_failures.map(NonZeroU64::get);
        let mut rx = self.stats.clone();
        let gave_up = tokio::select! {
            _ = shutdown => false,
            r = async {
                rx.wait_for(|s| limit.is_some_and(|m| s.consecutive_failures >= m))
                    .await
                    .map(|_| ())
            } => r.is_ok(),
        };
        // `wait_for` fails only if the task is gone; `shutdown` then reports the panic.
        let last = self.stats();
        let end = self.shutdown().await?;
        if gave_up {
            return Err(TtlError::GaveUp {
                failures: last.consecutive_failures,
                last_error: last.last_error.unwrap_or_default(),
            });
        }
        Ok(end)
    }
}

impl<T: ExpiryTarget> TtlManager<T> {
    /// Runs a pass now and then at every `interval` on a new tokio task, until the
    /// returned handle's [`shutdown`](DaemonHandle::shutdown). A pass that runs late
    /// delays the next tick rather than bunching ticks up. An interval shorter than
    /// [`MIN_INTERVAL`] is refused.
    ///
    /// # Panics
    /// Outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn(self, interval: Duration) -> Result<DaemonHandle> {
        self.spawn_with(interval, ())
    }

    /// [`spawn`](Self::spawn), telling `observer` about every pass as it ends.
    ///
    /// # Panics
    /// Outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn_with(
        self,
        interval: Duration,
        observer: impl PassObserver,
    ) -> Result<DaemonHandle> {
        if interval < MIN_INTERVAL {
            return Err(TtlError::InvalidInterval);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stats_tx, stats_rx) = watch::channel(DaemonStats {
            started_at: self.clock().now(),
            ..DaemonStats::default()
        });
        let activity = Arc::new(Mutex::new(Activity::starting(self.clock())));
        let task = tokio::spawn(run(
            self,
            interval,
            stop_rx,
            stats_tx,
            activity.clone(),
            observer,
        ));
        Ok(DaemonHandle {
            stop: stop_tx,
            stats: stats_rx,
            activity,
            task,
        })
    }
}

/// Marks progress of pass `running` (`None`: the pass ended) now.
fn progress(activity: &Mutex<Activity>, clock: &dyn Clock, running: Option<u64>) {
    let mut a = activity.lock().unwrap_or_else(|p| p.into_inner());
    a.running = running;
    a.last_progress_at = clock.now();
    a.last_progress = tokio::time::Instant::now();
}

/// Milliseconds with microsecond precision, for logs.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn run<T: ExpiryTarget, O: PassObserver>(
    mgr: TtlManager<T>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    stats: watch::Sender<DaemonStats>,
    activity: Arc<Mutex<Activity>>,
    observer: O,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let store = mgr.target().location().unwrap_or_default();
    info!(
        store = %store,
        ttl_secs = mgr.ttl().as_secs_f64(),
        interval_secs = interval.as_secs_f64(),
        batch_size = mgr.batch_size(),
        "TTL daemon started"
    );
    let mut pass_id = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        if stop_requested(&stop) {
            break;
        }
        pass_id += 1;
        let id = pass_id;
        let clock = mgr.clock();
        progress(&activity, clock, Some(id));
        let started = std::time::Instant::now();
        let result = mgr
            .pass(
                ScanMode::Delete,
                |_| progress(&activity, clock, Some(id)),
                Some(&stop),
            )
            .await;
        let finished_at = clock.now();
        let event = PassEvent {
            id,
            elapsed: match &result {
                Ok(s) => s.elapsed,
                Err(_) => started.elapsed(),
            },
            finished_at,
            outcome: match result {
                Ok(s) => Ok(s),
                Err(e) => Err(PassFailure {
                    expired: match &e {
                        TtlError::Scan { expired, .. } => *expired,
                        _ => 0,
                    },
                    error: display_chain(&e),
                }),
            },
        };
        // The observer first: whoever sees the statistics change (a health check, a
        // scrape) also sees what the observer recorded for that pass.
        observer.pass_finished(&event);
        match &event.outcome {
            Ok(s) => {
                stats.send_modify(|st| {
                    st.passes += 1;
                    st.consecutive_failures = 0;
                    st.expired_total += s.count;
                    st.last_pass = Some(s.clone());
                    st.last_success_at = Some(finished_at);
                });
                info!(
                    store = %store,
                    pass_id = id,
                    expired = s.count,
                    batches = s.batches,
                    duration_ms = millis(s.elapsed),
                    stopped_early = s.stopped_early,
                    "TTL pass complete"
                );
            }
            Err(f) => {
                stats.send_modify(|st| {
                    st.failures += 1;
                    st.consecutive_failures += 1;
                    st.expired_total += f.expired;
                    st.last_error = Some(f.error.clone());
                    st.last_failure_at = Some(finished_at);
                });
                error!(
                    store = %store,
                    pass_id = id,
                    expired = f.expired,
                    duration_ms = millis(event.elapsed),
                    consecutive_failures = stats.borrow().consecutive_failures,
                    error = %f.error,
                    "TTL pass failed; retrying at the next tick"
                );
            }
        }
        progress(&activity, clock, None);
    }
    let st = stats.borrow().clone();
    info!(
        store = %store,
        passes = st.passes,
        failures = st.failures,
        expired_total = st.expired_total,
        "TTL daemon stopped"
    );
}
