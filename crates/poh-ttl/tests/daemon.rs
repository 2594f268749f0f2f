//! The TTL daemon runs a pass at every interval tick, survives failing passes (counting
//! them and retrying at the next tick), and stops on shutdown after the batch in flight.
//! Time is tokio's paused clock: nothing here waits for real time to pass.

mod common;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use poh_ttl::{DaemonStats, ManualClock, TokioClock, TtlError, TtlManager};
use tokio::time::{Instant, advance};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

async fn wait_for(
    handle: &poh_ttl::DaemonHandle,
    f: impl FnMut(&DaemonStats) -> bool,
) -> DaemonStats {
    handle
        .subscribe()
        .wait_for(f)
        .await
        .expect("daemon alive")
        .clone()
}

#[tokio::test(start_paused = true)]
async fn a_pass_runs_at_start_and_then_at_each_interval() {
    let target = Arc::new(Counting::new(Empty));
    let clock = TokioClock::starting_at(NOW);
    let start = Instant::now();
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .with_clock(clock)
        .spawn(MINUTE)
        .unwrap();

    wait_for(&handle, |s| s.passes == 1).await;
    advance(Duration::from_secs(59)).await;
    assert_eq!(
        handle.stats().passes,
        1,
        "no pass before the interval is up"
    );
    advance(Duration::from_secs(1)).await;
    wait_for(&handle, |s| s.passes == 2).await;
    advance(MINUTE).await;
    let st = wait_for(&handle, |s| s.passes == 3).await;
    assert_eq!((st.failures, st.consecutive_failures), (0, 0));

    let calls = target.calls();
    let at: Vec<Duration> = calls.iter().map(|c| c.at - start).collect();
    assert_eq!(at, [Duration::ZERO, MINUTE, 2 * MINUTE]);
    let nows: Vec<f64> = calls.iter().map(|c| c.now).collect();
    assert_eq!(
        nows,
        [NOW, NOW + 60.0, NOW + 120.0],
        "each pass reads the clock"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_daemon_survives_failing_passes_and_retries_at_the_next_tick() {
    let (_dir, sm) = store().await;
    // "now" stays put while the ticks move, so "fresh" never ages.
    let clock = ManualClock::new(NOW);
    seed(&sm, &many("old", 3, |i| NOW - 7200.0 - i as f64)).await;
    seed(&sm, &[("fresh".into(), NOW)]).await;
    let target = Arc::new(Counting::new(Flaky::new(sm.clone(), [0, 1])));
    let start = Instant::now();
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .with_clock(clock)
        .spawn(HOUR)
        .unwrap();

    let st = wait_for(&handle, |s| s.failures == 1).await;
    assert_eq!((st.passes, st.consecutive_failures), (0, 1));
    let err = st.last_error.expect("error recorded");
    assert!(err.contains("database is locked"), "{err}");

    let st = wait_for(&handle, |s| s.passes == 1).await;
    assert_eq!(st.failures, 2);
    assert_eq!(st.consecutive_failures, 0, "reset by the successful pass");
    assert_eq!(st.expired_total, 3);
    assert_eq!(st.last_pass.as_ref().map(|p| p.count), Some(3));
    assert!(st.last_error.is_some(), "the last failure stays visible");
    assert!(!handle.is_finished());
    assert_eq!(ids(&sm).await, set(["fresh"]));

    let calls = target.calls();
    let failed: Vec<bool> = calls.iter().map(|c| c.failed).collect();
    assert_eq!(&failed[..3], [true, true, false]);
    let at: Vec<Duration> = calls[..3].iter().map(|c| c.at - start).collect();
    assert_eq!(
        at,
        [Duration::ZERO, HOUR, 2 * HOUR],
        "one retry per tick, no busy loop"
    );

    let end = handle.shutdown().await.unwrap();
    assert_eq!((end.passes, end.failures), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_tx_is_deleted_by_the_first_pass_after_it_ages_past_the_ttl() {
    let (_dir, sm) = store().await;
    let clock = TokioClock::starting_at(NOW);
    // Age 50 s now; with a 100 s TTL it expires between the passes at 30 s and 60 s.
    seed(&sm, &[("aging".into(), NOW - 50.0), ("young".into(), NOW)]).await;
    let target = Arc::new(Counting::new(sm.clone()));
    let handle = TtlManager::new(target.clone(), Duration::from_secs(100))
        .unwrap()
        .with_clock(clock)
        .spawn(Duration::from_secs(30))
        .unwrap();

    let st = wait_for(&handle, |s| s.expired_total == 1).await;
    assert_eq!(st.failures, 0);
    for c in target.calls() {
        let age = c.now - (NOW - 50.0);
        if age > 100.0 {
            assert_eq!(c.ids, ["aging"], "first pass past the TTL deletes it");
            assert!(age <= 130.0, "within one interval of expiring");
            break;
        }
        assert!(c.ids.is_empty(), "kept at age {age}");
    }
    assert_eq!(ids(&sm).await, set(["young"]));
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_daemon_and_no_pass_runs_afterwards() {
    let target = Arc::new(Counting::new(Empty));
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .spawn(MINUTE)
        .unwrap();
    wait_for(&handle, |s| s.passes == 1).await;

    let st = handle.shutdown().await.unwrap();
    assert_eq!(st.passes, 1);
    advance(10 * MINUTE).await;
    assert_eq!(target.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_the_daemon() {
    let target = Arc::new(Counting::new(Empty));
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .spawn(MINUTE)
        .unwrap();
    wait_for(&handle, |s| s.passes == 1).await;
    drop(handle);
    for _ in 0..10 {
        advance(MINUTE).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(target.calls().len(), 1);
}

#[tokio::test]
async fn shutdown_during_a_pass_finishes_the_batch_in_flight_and_starts_no_other() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("old", 5, |i| NOW - 7200.0 - i as f64)).await;
    let target = Arc::new(Gated::new(sm.clone()));
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .with_clock(ManualClock::new(NOW))
        .with_batch_size(1)
        .spawn(HOUR)
        .unwrap();

    // The first batch is in flight (waiting at the gate) when the stop request comes.
    target
        .entered
        .subscribe()
        .wait_for(|n| *n == 1)
        .await
        .unwrap();
    handle.stop();
    target.gate.add_permits(1);
    let st = handle.shutdown().await.unwrap();

    assert_eq!(*target.entered.borrow(), 1, "no second batch started");
    assert_eq!(st.passes, 1);
    let pass = st.last_pass.expect("pass recorded");
    assert_eq!(pass.count, 1);
    assert!(pass.stopped_early);
    assert_eq!(ids(&sm).await.len(), 4, "the batch in flight completed");
}

#[tokio::test]
async fn a_zero_interval_is_refused() {
    let r = TtlManager::new(Empty, HOUR).unwrap().spawn(Duration::ZERO);
    assert!(matches!(r, Err(TtlError::InvalidInterval)));
}

#[tokio::test(start_paused = true)]
async fn run_until_returns_the_final_stats_when_shutdown_completes() {
    let target = Arc::new(Counting::new(Empty));
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .spawn(MINUTE)
        .unwrap();
    let mut rx = handle.subscribe();
    let shutdown = async move {
        rx.wait_for(|s| s.passes == 3).await.unwrap();
    };
    let st = handle
        .run_until(shutdown, NonZeroU64::new(2))
        .await
        .unwrap();
    assert_eq!((st.passes, st.failures), (3, 0));
    advance(10 * MINUTE).await;
    assert_eq!(target.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn run_until_gives_up_after_the_failure_limit_and_not_before() {
    // Fails, fails, succeeds (count reset), then fails three times in a row.
    let target = Arc::new(Counting::new(Flaky::new(Empty, [0, 1, 3, 4, 5])));
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .spawn(MINUTE)
        .unwrap();
    let err = handle
        .run_until(std::future::pending(), NonZeroU64::new(3))
        .await
        .unwrap_err();
    match err {
        TtlError::GaveUp {
            failures,
            last_error,
        } => {
            assert_eq!(failures, 3);
            assert!(last_error.contains("database is locked"), "{last_error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        target.calls().len(),
        6,
        "stopped right after the third failure in a row"
    );
}
