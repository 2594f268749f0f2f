//! Is the daemon keeping up? [`assess`] turns a [`DaemonSnapshot`] into [`Health`]: healthy,
//! or unhealthy with a reason an operator can act on. No I/O and no clock of its own: the
//! caller passes "now" (from the same [`Clock`](crate::Clock) the daemon's manager reads),
//! so every rule is tested without waiting.
//!
//! The rules, in order:
//! 1. The daemon's task has ended (stopped, or panicked): unhealthy.
//! 2. The last [`HealthPolicy::max_failures`] passes (default 1: the last one) failed:
//!    unhealthy, with the last error. A store on a dead device fails its next pass (each
//!    batch syncs the base directory first), so it turns red within one interval.
//! 3. Nothing has succeeded for longer than [`HealthPolicy::stale_after`] (default
//!    [`DEFAULT_STALE_INTERVALS`] intervals, at least [`MIN_STALE`]): unhealthy. "Succeeded"
//!    is the end of the last completed pass, the daemon's start before the first one, or,
//!    while a pass runs, its last progress (its start or a batch that expired something),
//!    so a long pass working through a backlog stays green and a pass hung in one store
//!    call turns red.
//! 4. Otherwise healthy.

use std::time::Duration;

use crate::daemon::DaemonSnapshot;

/// Intervals without a successful pass after which the daemon is unhealthy, by default.
pub const DEFAULT_STALE_INTERVALS: u32 = 3;

/// The least [`HealthPolicy::stale_after`] chosen from an interval: with short intervals,
/// a busy machine's scheduling jitter must not turn health red.
pub const MIN_STALE: Duration = Duration::from_secs(60);

/// When the daemon counts as unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Longest time without a successful pass (or progress of a running one).
    pub stale_after: Duration,
    /// Consecutive failed passes that make it unhealthy (at least 1).
    pub max_failures: u64,
}

impl HealthPolicy {
    /// The defaults for a daemon running a pass every `interval`: unhealthy after one
    /// failed pass, or after [`DEFAULT_STALE_INTERVALS`] intervals (at least
    /// [`MIN_STALE`]) without success.
    pub fn for_interval(interval: Duration) -> Self {
        Self {
            stale_after: interval
                .saturating_mul(DEFAULT_STALE_INTERVALS)
                .max(MIN_STALE),
            max_failures: 1,
        }
    }
}

/// The verdict, with a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Passes succeed; what the last one did, or that the first one is running.
    Healthy(String),
    /// Why not.
    Unhealthy(String),
}

impl Health {
    /// True for [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy(_))
    }

    /// The reason or detail.
    pub fn reason(&self) -> &str {
        match self {
            Self::Healthy(s) | Self::Unhealthy(s) => s,
        }
    }
}

/// `secs` as a short human duration, whole seconds (or milliseconds under one second).
fn ago(secs: f64) -> String {
    let secs = secs.max(0.0);
    let d = if secs < 1.0 {
        Duration::from_millis((secs * 1e3).round() as u64)
    } else {
        Duration::from_secs(secs.round() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// The health of the daemon in `snap` at `now` (UNIX seconds on the daemon's clock).
pub fn assess(policy: &HealthPolicy, snap: &DaemonSnapshot, now: f64) -> Health {
    let st = &snap.stats;
    if !snap.running {
        return Health::Unhealthy("the TTL daemon is not running (stopped or crashed)".into());
    }
    if st.consecutive_failures >= policy.max_failures.max(1) {
        let last = st.last_error.as_deref().unwrap_or("unknown error");
        return Health::Unhealthy(if st.consecutive_failures == 1 {
            format!("the last TTL pass failed: {last}")
        } else {
            format!(
                "the last {} TTL passes failed; last error: {last}",
                st.consecutive_failures
            )
        });
    }
    let mut fresh = st.last_success_at.unwrap_or(st.started_at);
    if snap.activity.running.is_some() {
        fresh = fresh.max(snap.activity.last_progress_at);
    }
    let quiet = now - fresh;
    let limit = policy.stale_after.as_secs_f64();
    if quiet > limit {
        let limit = ago(limit);
        return Health::Unhealthy(match (st.last_success_at, snap.activity.running) {
            (_, Some(id)) => format!(
                "TTL pass {id} has made no progress for {} (limit {limit}): is the store's \
                 device hung?",
                ago(quiet)
            ),
            (Some(_), None) => format!(
                "no TTL pass has succeeded for {} (limit {limit})",
                ago(quiet)
            ),
            (None, None) => format!(
                "no TTL pass has succeeded since the daemon started {} ago (limit {limit})",
                ago(quiet)
            ),
        });
    }
    Health::Healthy(
        match (snap.activity.running, &st.last_pass, st.last_success_at) {
            (Some(id), _, None) => format!("TTL pass {id} (the first) is running"),
            (_, Some(p), Some(at)) => format!(
                "the last TTL pass succeeded {} ago and expired {} txs",
                ago(now - at),
                p.count
            ),
            _ => "starting".into(),
        },
    )
}

/// How far behind expiry is: how long ago the oldest tx in the store passed its TTL,
/// `max(0, now - ttl - oldest)`; 0 for an empty store or one where nothing is expired.
/// A daemon that keeps up holds this near 0 (under one interval).
pub fn expiry_lag(now: f64, ttl: Duration, oldest: Option<f64>) -> f64 {
    match oldest {
        Some(t) => (now - ttl.as_secs_f64() - t).max(0.0),
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{Activity, DaemonStats};
    use crate::manager::ScanSummary;

    const T0: f64 = 1_700_000_000.0;
    const MIN: Duration = Duration::from_secs(60);

    fn snap(stats: DaemonStats, running: Option<u64>, progress_at: f64) -> DaemonSnapshot {
        DaemonSnapshot {
            stats,
            activity: Activity {
                running,
                last_progress_at: progress_at,
                last_progress: tokio::time::Instant::now(),
            },
            running: true,
        }
    }

    fn succeeded(at: f64, count: u64) -> DaemonStats {
        DaemonStats {
            passes: 1,
            started_at: T0,
            last_success_at: Some(at),
            last_pass: Some(ScanSummary {
                count,
                batches: 1,
                now: at,
                elapsed: Duration::from_millis(3),
                dry_run: false,
                stopped_early: false,
            }),
            expired_total: count,
            ..DaemonStats::default()
        }
    }

    #[test]
    fn the_stale_limit_is_three_intervals_and_at_least_a_minute() {
        let hour = HealthPolicy::for_interval(Duration::from_secs(3600));
        assert_eq!(hour.stale_after, Duration::from_secs(3 * 3600));
        assert_eq!(hour.max_failures, 1);
        let fast = HealthPolicy::for_interval(Duration::from_millis(10));
        assert_eq!(fast.stale_after, MIN_STALE);
    }

    #[test]
    fn healthy_after_a_recent_success_and_red_once_it_is_older_than_the_limit() {
        let p = HealthPolicy::for_interval(MIN); // stale after 3 minutes
        let s = snap(succeeded(T0 + 10.0, 42), None, T0 + 10.0);
        let h = assess(&p, &s, T0 + 70.0);
        assert_eq!(
            h,
            Health::Healthy("the last TTL pass succeeded 1m ago and expired 42 txs".into())
        );
        assert!(
            assess(&p, &s, T0 + 190.0).is_healthy(),
            "exactly at the limit"
        );
        let h = assess(&p, &s, T0 + 191.0);
        assert!(!h.is_healthy());
        assert_eq!(h.reason(), "no TTL pass has succeeded for 3m 1s (limit 3m)");
    }

    #[test]
    fn one_failed_pass_turns_it_red_with_the_error_and_a_success_turns_it_back() {
        let p = HealthPolicy::for_interval(MIN);
        let mut st = succeeded(T0, 1);
        st.failures = 1;
        st.consecutive_failures = 1;
        st.last_error = Some("TTL pass failed after 0 txs were expired: fsync: EIO".into());
        let h = assess(&p, &snap(st.clone(), None, T0 + 60.0), T0 + 61.0);
        assert_eq!(
            h,
            Health::Unhealthy(
                "the last TTL pass failed: TTL pass failed after 0 txs were expired: fsync: EIO"
                    .into()
            )
        );
        st.consecutive_failures = 4;
        let h = assess(&p, &snap(st.clone(), None, T0 + 60.0), T0 + 61.0);
        assert!(
            h.reason()
                .starts_with("the last 4 TTL passes failed; last error: TTL pass")
        );
        // The next success clears it (the last error stays in the stats).
        st.consecutive_failures = 0;
        st.last_success_at = Some(T0 + 120.0);
        assert!(assess(&p, &snap(st, None, T0 + 120.0), T0 + 121.0).is_healthy());
    }

    #[test]
    fn a_failure_limit_above_one_tolerates_fewer_failures() {
        let p = HealthPolicy {
            max_failures: 3,
            ..HealthPolicy::for_interval(MIN)
        };
        let mut st = succeeded(T0, 0);
        st.consecutive_failures = 2;
        st.last_error = Some("database is locked".into());
        assert!(assess(&p, &snap(st.clone(), None, T0), T0 + 1.0).is_healthy());
        st.consecutive_failures = 3;
        assert!(!assess(&p, &snap(st, None, T0), T0 + 1.0).is_healthy());
    }

    #[test]
    fn before_the_first_pass_the_start_counts_and_a_first_pass_that_hangs_turns_red() {
        let p = HealthPolicy::for_interval(MIN);
        let st = DaemonStats {
            started_at: T0,
            ..DaemonStats::default()
        };
        let h = assess(&p, &snap(st.clone(), Some(1), T0), T0 + 5.0);
        assert_eq!(
            h,
            Health::Healthy("TTL pass 1 (the first) is running".into())
        );
        let h = assess(&p, &snap(st.clone(), Some(1), T0), T0 + 181.0);
        assert_eq!(
            h.reason(),
            "TTL pass 1 has made no progress for 3m 1s (limit 3m): is the store's device hung?"
        );
        let h = assess(&p, &snap(st, None, T0), T0 + 181.0);
        assert_eq!(
            h.reason(),
            "no TTL pass has succeeded since the daemon started 3m 1s ago (limit 3m)"
        );
    }

    #[test]
    fn a_long_pass_that_keeps_making_progress_stays_healthy() {
        let p = HealthPolicy::for_interval(MIN);
        // The last completed pass was an hour ago, but the running pass expired a batch
        // ten seconds ago.
        let s = snap(succeeded(T0, 5), Some(7), T0 + 3590.0);
        assert!(assess(&p, &s, T0 + 3600.0).is_healthy());
        let s = snap(succeeded(T0, 5), Some(7), T0 + 3000.0);
        assert!(!assess(&p, &s, T0 + 3600.0).is_healthy());
    }

    #[test]
    fn a_daemon_that_is_not_running_is_unhealthy() {
        let p = HealthPolicy::for_interval(MIN);
        let mut s = snap(succeeded(T0, 0), None, T0);
        s.running = false;
        assert_eq!(
            assess(&p, &s, T0 + 1.0).reason(),
            "the TTL daemon is not running (stopped or crashed)"
        );
    }

    #[test]
    fn expiry_lag_is_how_long_ago_the_oldest_tx_expired() {
        let ttl = Duration::from_secs(100);
        assert_eq!(expiry_lag(T0, ttl, None), 0.0);
        assert_eq!(expiry_lag(T0, ttl, Some(T0 - 50.0)), 0.0, "not yet expired");
        assert_eq!(
            expiry_lag(T0, ttl, Some(T0 - 100.0)),
            0.0,
            "exactly the TTL"
        );
        assert_eq!(expiry_lag(T0, ttl, Some(T0 - 160.0)), 60.0);
        assert_eq!(
            expiry_lag(T0, ttl, Some(T0 + 10.0)),
            0.0,
            "future timestamp"
        );
    }
}
