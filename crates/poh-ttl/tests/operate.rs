//! What an operator's tooling reads from a running daemon: every pass reaches a
//! [`PassObserver`] with its id and outcome, a [`DaemonMonitor`] shows whether a pass is
//! running and when it last made progress (what a watchdog needs), and health
//! ([`poh_ttl::health::assess`]) follows failures, recoveries and staleness on an injected
//! clock. Time is tokio's paused clock: nothing waits for real time to pass.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use poh_ttl::health::assess;
use poh_ttl::{
    DaemonMonitor, DaemonStats, HealthPolicy, ManualClock, PassEvent, TokioClock, TtlManager,
};
use tokio::time::advance;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

async fn wait_for(monitor: &DaemonMonitor, f: impl FnMut(&DaemonStats) -> bool) -> DaemonStats {
    monitor
        .subscribe()
        .wait_for(f)
        .await
        .expect("daemon alive")
        .clone()
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_pass_with_its_id_outcome_and_clock_time() {
    let (_dir, sm) = store().await;
    let clock = ManualClock::new(NOW);
    seed(&sm, &many("old", 3, |i| NOW - 7200.0 - i as f64)).await;
    let events: Arc<Mutex<Vec<PassEvent>>> = Arc::default();
    let seen = events.clone();
    let target = Arc::new(Flaky::new(sm.clone(), [1]));
    let handle = TtlManager::new(target, HOUR)
        .unwrap()
        .with_clock(clock.clone())
        .spawn_with(HOUR, move |e: &PassEvent| {
            seen.lock().unwrap().push(e.clone())
        })
        .unwrap();
    let monitor = handle.monitor();

    wait_for(&monitor, |s| s.passes == 1).await;
    clock.set(NOW + 3600.0);
    advance(HOUR).await;
    wait_for(&monitor, |s| s.failures == 1).await;
    clock.set(NOW + 7200.0);
    advance(HOUR).await;
    let st = wait_for(&monitor, |s| s.passes == 2).await;
    let end = handle.shutdown().await.unwrap();
    assert_eq!(end, st);

    let events = events.lock().unwrap().clone();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3], "passes are numbered from 1 in order");
    let first = events[0].outcome.as_ref().expect("pass 1 completed");
    assert_eq!(first.count, 3);
    assert_eq!(events[0].finished_at, NOW);
    let failed = events[1].outcome.as_ref().expect_err("pass 2 failed");
    assert!(failed.error.contains("database is locked"), "{failed:?}");
    assert_eq!(failed.expired, 0);
    assert_eq!(events[1].finished_at, NOW + 3600.0);
    assert_eq!(events[2].outcome.as_ref().map(|s| s.count), Ok(0));

    assert_eq!(st.started_at, NOW);
    assert_eq!(st.last_success_at, Some(NOW + 7200.0));
    assert_eq!(st.last_failure_at, Some(NOW + 3600.0));
}

#[tokio::test(start_paused = true)]
async fn the_monitor_shows_a_pass_stuck_in_a_store_call_and_outlives_the_handle() {
    let target = Arc::new(Gated::new(Empty));
    let clock = TokioClock::starting_at(NOW);
    let handle = TtlManager::new(target.clone(), HOUR)
        .unwrap()
        .with_clock(clock)
        .spawn(HOUR)
        .unwrap();
    let monitor = handle.monitor();
    target
        .entered
        .subscribe()
        .wait_for(|n| *n == 1)
        .await
        .unwrap();

    let a = monitor.activity();
    assert_eq!(a.running, Some(1));
    assert_eq!(a.last_progress_at, NOW);
    advance(10 * MINUTE).await;
    assert_eq!(monitor.activity().stalled_for(), Some(10 * MINUTE));
    let policy = HealthPolicy::for_interval(MINUTE); // stale after 3 minutes
    let h = assess(&policy, &monitor.snapshot(), NOW + 600.0);
    assert_eq!(
        h.reason(),
        "TTL pass 1 has made no progress for 10m (limit 3m): is the store's device hung?"
    );

    target.gate.add_permits(1);
    let st = wait_for(&monitor, |s| s.passes == 1).await;
    let a = monitor.activity();
    assert_eq!((a.running, a.stalled_for()), (None, None));
    assert_eq!(a.last_progress_at, NOW + 600.0);
    assert_eq!(st.last_success_at, Some(NOW + 600.0));
    assert!(assess(&policy, &monitor.snapshot(), NOW + 601.0).is_healthy());

    // The handle is consumed by shutdown; the monitor then reports a stopped daemon.
    target.gate.add_permits(100);
    handle.shutdown().await.unwrap();
    assert!(!monitor.is_running());
    assert!(!assess(&policy, &monitor.snapshot(), NOW + 602.0).is_healthy());
}

#[tokio::test(start_paused = true)]
async fn health_turns_red_on_a_failed_pass_and_green_on_the_next_success() {
    let (_dir, sm) = store().await;
    let clock = ManualClock::new(NOW);
    let target = Arc::new(Flaky::new(sm.clone(), [1, 2]));
    let handle = TtlManager::new(target, HOUR)
        .unwrap()
        .with_clock(clock.clone())
        .spawn(HOUR)
        .unwrap();
    let monitor = handle.monitor();
    let policy = HealthPolicy::for_interval(HOUR);
    let health = |now: f64| assess(&policy, &monitor.snapshot(), now);

    wait_for(&monitor, |s| s.passes == 1).await;
    assert!(health(NOW).is_healthy(), "{:?}", health(NOW));
    for (n, at) in [(1, 3600.0), (2, 7200.0)] {
        clock.set(NOW + at);
        advance(HOUR).await;
        wait_for(&monitor, |s| s.failures == n).await;
        let h = health(NOW + at);
        assert!(!h.is_healthy());
        assert!(h.reason().contains("database is locked"), "{h:?}");
    }
    clock.set(NOW + 10800.0);
    advance(HOUR).await;
    wait_for(&monitor, |s| s.passes == 2).await;
    assert!(health(NOW + 10800.0).is_healthy());
    // Then the clock runs on with no pass (a hung scheduler): red after 3 intervals.
    assert!(health(NOW + 10800.0 + 3.0 * 3600.0).is_healthy());
    let h = health(NOW + 10800.0 + 3.0 * 3600.0 + 1.0);
    assert_eq!(h.reason(), "no TTL pass has succeeded for 3h 1s (limit 3h)");
    handle.shutdown().await.unwrap();
}
