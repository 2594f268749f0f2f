//! systemd's notify protocol for `poh-ttl run` under `Type=notify`: `READY=1` once the
//! store is open (and the metrics endpoint listens), `STATUS=` with the health after each
//! pass, `WATCHDOG=1` at half of `WATCHDOG_USEC` while the daemon works, `STOPPING=1` on
//! shutdown. Everything is a no-op unless `NOTIFY_SOCKET` is set; a failed send is logged,
//! never fatal (the service manager decides what a missing ping means).
//!
//! The watchdog pings only while the daemon is alive and not stuck: its task is running,
//! and a pass in progress has made progress (a batch) within the watchdog timeout. A pass
//! hung in one store call (a dead NFS server, a device that stopped answering) stops the
//! pings, so systemd restarts the service; a long pass through a backlog does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use poh_ttl::{DaemonMonitor, DaemonStats, Health};

/// Whether systemd (or anything speaking its protocol) listens: `NOTIFY_SOCKET` is set.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Sends `states`; logs a failure.
pub fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Sends `STOPPING=1` once, however many times it is called.
#[derive(Debug, Default, Clone)]
pub struct Stopping(Arc<AtomicBool>);

impl Stopping {
    /// Tells the service manager the daemon is stopping (the first call only).
    pub fn notify(&self) {
        if !self.0.swap(true, Ordering::SeqCst) {
            send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
    }
}

/// The watchdog timeout systemd asked for (`WATCHDOG_USEC`, for this process).
pub fn watchdog_timeout() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Whether the watchdog may be pinged now: the daemon runs, and a pass in progress has made
/// progress within `timeout`.
pub fn alive(monitor: &DaemonMonitor, timeout: Duration) -> bool {
    monitor.is_running()
        && monitor
            .activity()
            .stalled_for()
            .is_none_or(|stalled| stalled < timeout)
}

/// The `STATUS=` text: the health, and what the daemon has done.
pub fn status_line(stats: &DaemonStats, health: &Health) -> String {
    match health {
        Health::Unhealthy(why) => format!("unhealthy: {why}"),
        Health::Healthy(_) => {
            let last = stats.last_pass.as_ref().map_or_else(String::new, |p| {
                format!(
                    "last pass expired {} txs in {:.1} ms; ",
                    p.count,
                    p.elapsed.as_secs_f64() * 1e3
                )
            });
            format!(
                "ok: {last}{} passes, {} failed, {} txs expired since start",
                stats.passes, stats.failures, stats.expired_total
            )
        }
    }
}

/// Starts the tasks that keep the service manager informed: `STATUS=` (from `status`) after
/// each pass, and, with a watchdog, `WATCHDOG=1` every half timeout while [`alive`]. They
/// end with the daemon.
pub fn spawn(
    monitor: DaemonMonitor,
    status: impl Fn() -> String + Send + Sync + 'static,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !enabled() {
        return tasks;
    }
    let mut rx = monitor.subscribe();
    tasks.push(tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            send(&[NotifyState::Status(&status())]);
        }
    }));
    if let Some(timeout) = watchdog_timeout() {
        debug!(
            timeout_ms = timeout.as_millis() as u64,
            "systemd watchdog enabled"
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(timeout / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            while monitor.is_running() {
                tick.tick().await;
                if alive(&monitor, timeout) {
                    send(&[NotifyState::Watchdog]);
                    warned = false;
                } else if !warned {
                    warn!(
                        pass = monitor.activity().running,
                        "the TTL pass in progress has made no progress for longer than the \
                         watchdog timeout; no longer pinging the watchdog"
                    );
                    warned = true;
                }
            }
        }));
    }
    tasks
}
