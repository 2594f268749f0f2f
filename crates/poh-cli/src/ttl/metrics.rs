//! The metrics `poh-ttl run --metrics` exports, in Prometheus' text format.
//!
//! Values are recorded into a [`PrometheusRecorder`] of this daemon's own (not a process-wide
//! one, so tests can run several daemons in one process), through the `metrics` facade: the
//! duration histogram as each pass ends ([`Metrics`] is the daemon's [`PassObserver`]), and
//! at each scrape ([`Metrics::refresh`], called by [`crate::ttl::serve`]) the counters from
//! one snapshot of the daemon's statistics (so they agree with each other and with the
//! health) and what is read from the store or the clock (txs, bytes, expiry lag, health). The text is the exporter's
//! [`PrometheusHandle::render`]. The README's metrics table lists every metric.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use poh_storage::Stats;
use poh_ttl::{DaemonStats, Health, PassEvent, PassObserver};

/// Passes that completed (counter).
pub const PASSES: &str = "poh_ttl_passes_total";
/// Passes that failed (counter).
pub const FAILURES: &str = "poh_ttl_pass_failures_total";
/// Failed passes since the last completed one (gauge).
pub const CONSECUTIVE_FAILURES: &str = "poh_ttl_consecutive_failures";
/// Txs expired (counter).
pub const EXPIRED: &str = "poh_ttl_expired_total";
/// Pass duration (histogram, label `result`).
pub const PASS_DURATION: &str = "poh_ttl_pass_duration_seconds";
/// End of the last completed pass, UNIX seconds (gauge).
pub const LAST_SUCCESS: &str = "poh_ttl_last_success_timestamp_seconds";
/// Txs in the store (gauge).
pub const STORE_TXS: &str = "poh_ttl_store_txs";
/// Payload bytes in the store (gauge).
pub const STORE_BYTES: &str = "poh_ttl_store_bytes";
/// How long ago the oldest tx in the store expired (gauge).
pub const EXPIRY_LAG: &str = "poh_ttl_expiry_lag_seconds";
/// 1 while healthy, 0 when `/healthz` answers 503 (gauge).
pub const HEALTHY: &str = "poh_ttl_healthy";
/// Times the store was reopened after a failure (counter).
pub const REOPENS: &str = "poh_ttl_store_reopens_total";
/// The TTL (gauge).
pub const TTL: &str = "poh_ttl_ttl_seconds";
/// The interval between passes (gauge).
pub const INTERVAL: &str = "poh_ttl_interval_seconds";
/// Always 1, with the version as a label (gauge).
pub const BUILD_INFO: &str = "poh_ttl_build_info";

/// Histogram buckets for pass durations, in seconds: from a pass that finds nothing (well
/// under a millisecond) to one working through a backlog of millions (minutes).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

/// The `result` label of a pass.
fn result_label(event: &PassEvent) -> &'static str {
    if event.outcome.is_ok() {
        "success"
    } else {
        "failure"
    }
}

/// The daemon's metrics: a recorder of its own and the handle that renders it.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What a scrape reads: the daemon's statistics (one snapshot, so the counters agree with
/// each other and with the health), the store, the health.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The daemon's statistics.
    pub stats: DaemonStats,
    /// The store's counts, if it could be read now.
    pub store: Option<Stats>,
    /// The expiry lag, if the store could be read now.
    pub lag_secs: Option<f64>,
    /// The daemon's health now.
    pub health: Health,
    /// Store reopens after failures so far.
    pub reopens: u64,
}

impl Metrics {
    /// A recorder with every metric described, the build info, TTL and interval set, and
    /// the counters at 0 (so a scrape before the first pass already lists them).
    pub fn new(ttl: Duration, interval: Duration) -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(PASS_DURATION.to_owned()), DURATION_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = Arc::new(builder.build_recorder());
        let handle = recorder.handle();
        let m = Self { recorder, handle };
        m.with(|| {
            describe_counter!(PASSES, "TTL passes that completed");
            describe_counter!(FAILURES, "TTL passes that failed (the next tick retries)");
            describe_gauge!(
                CONSECUTIVE_FAILURES,
                "failed TTL passes since the last completed one"
            );
            describe_counter!(
                EXPIRED,
                "txs expired (deleted), including by passes that failed part-way"
            );
            describe_histogram!(
                PASS_DURATION,
                Unit::Seconds,
                "wall time of a TTL pass, by result (success, failure)"
            );
            describe_gauge!(
                LAST_SUCCESS,
                Unit::Seconds,
                "end of the last completed TTL pass, UNIX seconds (0: none yet)"
            );
            describe_gauge!(
                STORE_TXS,
                "txs in the store (counted at a scrape, at most every 10 s and after each pass)"
            );
            describe_gauge!(
                STORE_BYTES,
                Unit::Bytes,
                "payload bytes in the store (rows with a recorded size; counted with poh_ttl_store_txs)"
            );
            describe_gauge!(
                EXPIRY_LAG,
                Unit::Seconds,
                "how long ago the oldest tx in the store passed its TTL: max(0, now - ttl - oldest timestamp); near 0 while the daemon keeps up"
            );
            describe_gauge!(HEALTHY, "1 when /healthz answers 200, 0 when it answers 503");
            describe_counter!(REOPENS, "times the store was closed after a failure and reopened");
            describe_gauge!(TTL, Unit::Seconds, "the TTL (--ttl)");
            describe_gauge!(INTERVAL, Unit::Seconds, "the time between passes (--interval)");
            describe_gauge!(BUILD_INFO, "always 1; the version is a label");

            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            gauge!(TTL).set(ttl.as_secs_f64());
            gauge!(INTERVAL).set(interval.as_secs_f64());
            counter!(PASSES).absolute(0);
            counter!(FAILURES).absolute(0);
            counter!(EXPIRED).absolute(0);
            counter!(REOPENS).absolute(0);
            gauge!(LAST_SUCCESS).set(0.0);
        });
        m
    }

    /// Runs `f` with this daemon's recorder as the `metrics` macros' recorder.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// Sets what a scrape read (store counts, lag, health) and renders every metric.
    pub fn refresh(&self, o: &Observed) -> String {
        self.with(|| {
            if let Some(s) = &o.store {
                gauge!(STORE_TXS).set(s.count as f64);
                gauge!(STORE_BYTES).set(s.bytes as f64);
            }
            if let Some(lag) = o.lag_secs {
                gauge!(EXPIRY_LAG).set(lag);
            }
            let st = &o.stats;
            counter!(PASSES).absolute(st.passes);
            counter!(FAILURES).absolute(st.failures);
            counter!(EXPIRED).absolute(st.expired_total);
            gauge!(CONSECUTIVE_FAILURES).set(st.consecutive_failures as f64);
            gauge!(LAST_SUCCESS).set(st.last_success_at.unwrap_or(0.0));
            gauge!(HEALTHY).set(if o.health.is_healthy() { 1.0 } else { 0.0 });
            counter!(REOPENS).absolute(o.reopens);
        });
        self.handle.render()
    }
}

impl PassObserver for Metrics {
    fn pass_finished(&self, event: &PassEvent) {
        self.with(|| {
            histogram!(PASS_DURATION, "result" => result_label(event))
                .record(event.elapsed.as_secs_f64());
        });
        // Move the pass's sample into its histogram now rather than at the next scrape,
        // so nothing accumulates when nobody scrapes.
        self.handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poh_ttl::{PassFailure, ScanSummary};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_statistics_set_the_counters_and_passes_fill_the_histogram() {
        let m = Metrics::new(Duration::from_secs(3600), Duration::from_secs(60));
        let t = m.refresh(&Observed {
            stats: DaemonStats::default(),
            store: None,
            lag_secs: None,
            health: Health::Healthy("starting".into()),
            reopens: 0,
        });
        assert_eq!(value(&t, PASSES), Some(0.0), "{t}");
        assert_eq!(
            value(&t, "poh_ttl_build_info{version=\"0.1.0\"}"),
            Some(1.0),
            "{t}"
        );
        assert_eq!(value(&t, TTL), Some(3600.0));
        assert_eq!(value(&t, LAST_SUCCESS), Some(0.0));
        assert!(t.contains("# TYPE poh_ttl_passes_total counter"), "{t}");

        let summary = ScanSummary {
            count: 5,
            batches: 1,
            now: 1_700_000_000.0,
            elapsed: Duration::from_millis(3),
            dry_run: false,
            stopped_early: false,
        };
        m.pass_finished(&PassEvent {
            id: 1,
            elapsed: Duration::from_millis(3),
            finished_at: 1_700_000_000.0,
            outcome: Ok(summary.clone()),
        });
        m.pass_finished(&PassEvent {
            id: 2,
            elapsed: Duration::from_millis(2),
            finished_at: 1_700_000_060.0,
            outcome: Err(PassFailure {
                error: "boom".into(),
                expired: 2,
            }),
        });
        let t = m.refresh(&Observed {
            stats: DaemonStats {
                passes: 1,
                failures: 1,
                consecutive_failures: 1,
                last_error: Some("boom".into()),
                expired_total: 7,
                last_pass: Some(summary),
                started_at: 1_699_999_999.0,
                last_success_at: Some(1_700_000_000.0),
                last_failure_at: Some(1_700_000_060.0),
            },
            store: Some(Stats {
                count: 7,
                bytes: 700,
                rows_without_size: 0,
                oldest: Some(1.0),
                newest: Some(2.0),
            }),
            lag_secs: Some(12.5),
            health: Health::Unhealthy("boom".into()),
            reopens: 1,
        });
        assert_eq!(value(&t, PASSES), Some(1.0), "{t}");
        assert_eq!(value(&t, FAILURES), Some(1.0));
        assert_eq!(value(&t, CONSECUTIVE_FAILURES), Some(1.0));
        assert_eq!(value(&t, EXPIRED), Some(7.0));
        assert_eq!(value(&t, LAST_SUCCESS), Some(1_700_000_000.0));
        assert_eq!(value(&t, STORE_TXS), Some(7.0));
        assert_eq!(value(&t, STORE_BYTES), Some(700.0));
        assert_eq!(value(&t, EXPIRY_LAG), Some(12.5));
        assert_eq!(value(&t, HEALTHY), Some(0.0));
        assert_eq!(value(&t, REOPENS), Some(1.0));
        assert_eq!(
            value(
                &t,
                "poh_ttl_pass_duration_seconds_bucket{result=\"success\",le=\"0.005\"}"
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            value(
                &t,
                "poh_ttl_pass_duration_seconds_count{result=\"failure\"}"
            ),
            Some(1.0)
        );
        assert!(
            t.contains("# TYPE poh_ttl_pass_duration_seconds histogram"),
            "{t}"
        );
    }
}
