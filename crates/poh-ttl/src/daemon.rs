//! The TTL daemon: a tokio task that runs one pass per tick of a fixed interval until its
//! [`DaemonHandle`] asks it to stop (or is dropped).
//!
//! A failed pass is logged at ERROR and retried at the next tick; passes and failures
//! (total and consecutive) are published through the handle, so a task that keeps failing
//! is visible rather than silently dead. Each pass is logged at INFO with counts and
//! elapsed time; the expired ids only at DEBUG.

use std::future::Future;
use std::num::NonZeroU64;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

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
}

/// Controls a running daemon. Dropping it stops the daemon too (after the batch in
/// flight), without waiting for it.
#[derive(Debug)]
pub struct DaemonHandle {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<DaemonStats>,
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
        if interval < MIN_INTERVAL {
            return Err(TtlError::InvalidInterval);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stats_tx, stats_rx) = watch::channel(DaemonStats::default());
        let task = tokio::spawn(run(self, interval, stop_rx, stats_tx));
        Ok(DaemonHandle {
            stop: stop_tx,
            stats: stats_rx,
            task,
        })
    }
}

async fn run<T: ExpiryTarget>(
    mgr: TtlManager<T>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    stats: watch::Sender<DaemonStats>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    info!(
        ttl_secs = mgr.ttl().as_secs_f64(),
        interval_secs = interval.as_secs_f64(),
        batch_size = mgr.batch_size(),
        "TTL daemon started"
    );
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        if stop_requested(&stop) {
            break;
        }
        match mgr.pass(ScanMode::Delete, |_| {}, Some(&stop)).await {
            Ok(s) => {
                info!(
                    expired = s.count,
                    batches = s.batches,
                    elapsed_ms = (s.elapsed.as_secs_f64() * 1e6).round() / 1e3,
                    stopped_early = s.stopped_early,
                    "TTL pass complete"
                );
                stats.send_modify(|st| {
                    st.passes += 1;
                    st.consecutive_failures = 0;
                    st.expired_total += s.count;
                    st.last_pass = Some(s);
                });
            }
            Err(e) => {
                let msg = display_chain(&e);
                let partial = match &e {
                    TtlError::Scan { expired, .. } => *expired,
                    _ => 0,
                };
                stats.send_modify(|st| {
                    st.failures += 1;
                    st.consecutive_failures += 1;
                    st.expired_total += partial;
                    st.last_error = Some(msg.clone());
                });
                error!(
                    error = %msg,
                    consecutive_failures = stats.borrow().consecutive_failures,
                    "TTL pass failed; retrying at the next tick"
                );
            }
        }
    }
    let st = stats.borrow().clone();
    info!(
        passes = st.passes,
        failures = st.failures,
        expired_total = st.expired_total,
        "TTL daemon stopped"
    );
}
