//! A TTL pass deletes exactly the txs with `now - timestamp > ttl` (strictly), in bounded
//! batches, each exactly once, and never a tx that is fresh, from the future, or re-saved
//! with a fresh timestamp during the pass.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use poh_ttl::{ManualClock, ScanMode, TtlError, TtlManager};

const HOUR: Duration = Duration::from_secs(3600);

fn manager<T: poh_ttl::ExpiryTarget>(target: T, ttl: Duration) -> TtlManager<T> {
    TtlManager::new(target, ttl)
        .expect("valid ttl")
        .with_clock(ManualClock::new(NOW))
}

#[tokio::test]
async fn boundary_exactly_ttl_is_kept_just_over_is_expired() {
    let (dir, sm) = store().await;
    seed(
        &sm,
        &[
            ("way-over".into(), NOW - 86_400.0),
            ("just-over".into(), NOW - 3600.001),
            ("exactly".into(), NOW - 3600.0),
            ("just-under".into(), NOW - 3599.999),
            ("fresh".into(), NOW),
            ("future".into(), NOW + 600.0),
        ],
    )
    .await;

    let report = manager(sm.clone(), HOUR).scan_once().await.unwrap();

    assert_eq!(set(&report.expired), set(["way-over", "just-over"]));
    assert_eq!(report.count, 2);
    assert_eq!(report.now, NOW);
    assert!(!report.dry_run);
    assert_eq!(
        ids(&sm).await,
        set(["exactly", "just-under", "fresh", "future"])
    );
    let (base, _) = paths(&dir);
    assert!(!payload_path(&base, "way-over").exists());
    assert!(!payload_path(&base, "just-over").exists());
    assert!(sm.load(&id("exactly")).await.unwrap().is_some());
}

#[tokio::test]
async fn fractional_ttl_boundary() {
    let (_dir, sm) = store().await;
    seed(
        &sm,
        &[("exactly".into(), NOW - 0.5), ("over".into(), NOW - 0.501)],
    )
    .await;
    let mgr = TtlManager::from_secs_f64(sm.clone(), 0.5)
        .unwrap()
        .with_clock(ManualClock::new(NOW));
    assert_eq!(mgr.scan_once().await.unwrap().expired, ["over"]);
    assert_eq!(ids(&sm).await, set(["exactly"]));
}

#[tokio::test]
async fn moving_the_clock_expires_txs_without_waiting() {
    let (_dir, sm) = store().await;
    seed(&sm, &[("a".into(), NOW), ("b".into(), NOW + 10.0)]).await;
    let clock = ManualClock::new(NOW);
    let mgr = TtlManager::new(sm.clone(), HOUR)
        .unwrap()
        .with_clock(clock.clone());

    assert!(mgr.scan_once().await.unwrap().expired.is_empty());
    clock.advance(HOUR);
    assert!(
        mgr.scan_once().await.unwrap().expired.is_empty(),
        "age == ttl is kept"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(mgr.scan_once().await.unwrap().expired, ["a"]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(mgr.scan_once().await.unwrap().expired, ["b"]);
    assert!(ids(&sm).await.is_empty());
}

#[tokio::test]
async fn future_timestamps_are_never_expired() {
    let (_dir, sm) = store().await;
    seed(
        &sm,
        &[
            ("soon".into(), NOW + 1.0),
            ("far".into(), NOW + 10.0 * 365.0 * 86_400.0),
        ],
    )
    .await;
    let mgr = TtlManager::new(sm.clone(), Duration::from_millis(1))
        .unwrap()
        .with_clock(ManualClock::new(NOW));
    assert!(mgr.scan_once().await.unwrap().expired.is_empty());
    assert!(mgr.scan_dry_run().await.unwrap().expired.is_empty());
    assert_eq!(ids(&sm).await.len(), 2);
}

#[tokio::test]
async fn empty_store_is_one_call_and_reports_nothing() {
    let (_dir, sm) = store().await;
    let target = Arc::new(Counting::new(sm));
    let report = manager(target.clone(), HOUR).scan_once().await.unwrap();
    assert!(report.expired.is_empty());
    assert_eq!((report.count, report.batches), (0, 1));
    assert_eq!(target.calls().len(), 1);
}

#[tokio::test]
async fn nothing_to_expire_costs_one_call_whatever_the_store_size() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("fresh", 500, |i| NOW - i as f64)).await;
    let target = Arc::new(Counting::new(sm.clone()));
    let mgr = manager(target.clone(), HOUR).with_batch_size(7);
    assert_eq!(mgr.scan_once().await.unwrap().count, 0);
    assert_eq!(target.calls().len(), 1, "no scan over the live txs");
    assert_eq!(ids(&sm).await.len(), 500);
}

#[tokio::test]
async fn batches_smaller_than_the_expired_set_delete_all_of_it() {
    let (dir, sm) = store().await;
    let old = many("old", 100, |i| NOW - 7200.0 - i as f64);
    seed(&sm, &old).await;
    seed(&sm, &many("new", 20, |i| NOW - i as f64)).await;
    let target = Arc::new(Counting::new(sm.clone()));

    let report = manager(target.clone(), HOUR)
        .with_batch_size(7)
        .scan_once()
        .await
        .unwrap();

    assert_eq!(report.count, 100);
    assert_eq!(set(&report.expired), set(old.iter().map(|(i, _)| i)));
    // Oldest batch first (old-099 has the smallest timestamp); no order within a batch.
    assert_eq!(
        set(&report.expired[..7]),
        set((93..100).map(|i| format!("old-{i:03}")))
    );
    let calls = target.calls();
    assert_eq!(calls.len(), 15, "14 full batches of 7, then one of 2");
    assert!(calls.iter().all(|c| c.limit == 7 && c.ids.len() <= 7));
    assert!(
        calls.iter().all(|c| c.now == NOW),
        "now is read once per pass"
    );
    assert_eq!(report.batches, 15);
    assert_eq!(
        ids(&sm).await,
        set(many("new", 20, |_| 0.0).iter().map(|(i, _)| i))
    );
    let (base, _) = paths(&dir);
    assert!(old.iter().all(|(i, _)| !payload_path(&base, i).exists()));
}

#[tokio::test]
async fn an_exact_multiple_of_the_batch_ends_with_an_empty_call() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("old", 21, |i| NOW - 7200.0 - i as f64)).await;
    let target = Arc::new(Counting::new(sm.clone()));
    let report = manager(target.clone(), HOUR)
        .with_batch_size(7)
        .scan_once()
        .await
        .unwrap();
    assert_eq!(report.count, 21);
    let sizes: Vec<usize> = target.calls().iter().map(|c| c.ids.len()).collect();
    assert_eq!(sizes, [7, 7, 7, 0]);
}

#[tokio::test]
async fn scan_with_streams_batches_and_summary_counts() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("old", 30, |i| NOW - 7200.0 - i as f64)).await;
    let mgr = manager(sm.clone(), HOUR).with_batch_size(4);

    let mut seen = Vec::new();
    let dry = mgr
        .scan_with(ScanMode::DryRun, |b| seen.push(b.to_vec()))
        .await
        .unwrap();
    assert_eq!(dry.count, 30);
    assert!(dry.dry_run);
    assert!(seen.iter().all(|b| !b.is_empty() && b.len() <= 4));
    assert_eq!(seen.concat().len(), 30);

    let summary = mgr.scan_summary(ScanMode::Delete).await.unwrap();
    assert_eq!(
        (summary.count, summary.dry_run, summary.stopped_early),
        (30, false, false)
    );
    assert_eq!(summary.batches, 8);
    assert!(ids(&sm).await.is_empty());
}

#[tokio::test]
async fn dry_run_reports_every_expired_tx_and_changes_nothing() {
    let (dir, sm) = store().await;
    // Many equal timestamps: paging must order by (timestamp, tx_id) to miss none.
    let old = many("old", 40, |i| NOW - 7200.0 - (i / 10) as f64);
    seed(&sm, &old).await;
    seed(&sm, &many("new", 5, |_| NOW)).await;
    let before = ids(&sm).await;

    let report = manager(sm.clone(), HOUR)
        .with_batch_size(7)
        .scan_dry_run()
        .await
        .unwrap();

    assert!(report.dry_run);
    assert_eq!(report.count, 40);
    assert_eq!(report.expired.len(), 40, "no duplicates across pages");
    assert_eq!(set(&report.expired), set(old.iter().map(|(i, _)| i)));
    assert_eq!(ids(&sm).await, before);
    let (base, _) = paths(&dir);
    if flat_files() {
        assert!(old.iter().all(|(i, _)| payload_path(&base, i).exists()));
    }
}

#[tokio::test]
async fn resave_with_fresh_timestamp_between_batches_is_kept() {
    let (_dir, sm) = store().await;
    // old-000 is the newest of the old ones, so the last batch would delete it.
    seed(&sm, &many("old", 20, |i| NOW - 7200.0 - i as f64)).await;
    let mut fresh = tx("old-000", NOW);
    fresh.payload = b"re-saved".to_vec();
    let target = ResaveBetweenBatches::new(sm.clone(), 1, vec![fresh]);

    let report = manager(target, HOUR)
        .with_batch_size(7)
        .scan_once()
        .await
        .unwrap();

    assert_eq!(report.count, 19);
    assert!(!report.expired.contains(&"old-000".to_string()));
    assert_eq!(ids(&sm).await, set(["old-000"]));
    let loaded = sm.load(&id("old-000")).await.unwrap().expect("kept");
    assert_eq!(loaded.payload, b"re-saved");
    assert_eq!(loaded.timestamp, NOW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resaves_during_a_scan_are_never_lost() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("old", 300, |i| NOW - 7200.0 - i as f64)).await;
    let mgr = manager(sm.clone(), HOUR).with_batch_size(5);

    // Re-save every third old tx with a fresh timestamp, and add new ones, while the
    // scan runs.
    let writer = {
        let sm = sm.clone();
        tokio::spawn(async move {
            for i in (0..300).step_by(3) {
                let mut t = tx(&format!("old-{i:03}"), NOW);
                t.payload = b"fresh".to_vec();
                sm.save(t).await.unwrap();
                sm.save(tx(&format!("new-{i:03}"), NOW)).await.unwrap();
            }
        })
    };
    let report = mgr.scan_once().await.unwrap();
    writer.await.unwrap();

    for i in (0..300).step_by(3) {
        let loaded = sm.load(&id(&format!("old-{i:03}"))).await.unwrap();
        assert_eq!(
            loaded.map(|t| t.payload),
            Some(b"fresh".to_vec()),
            "old-{i:03} was re-saved fresh and must survive"
        );
        assert!(sm.exists(&id(&format!("new-{i:03}"))).await.unwrap());
    }
    // The pass ended on a short batch, so nothing expired was left behind; every other
    // old tx was deleted exactly once, and a re-saved one only if its delete came first
    // (it was then re-created by the re-save, checked above).
    assert_eq!(mgr.scan_once().await.unwrap().count, 0);
    let expired = set(&report.expired);
    assert_eq!(expired.len(), report.expired.len(), "no id reported twice");
    let others: Vec<String> = (0..300)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("old-{i:03}"))
        .collect();
    assert!(others.iter().all(|i| expired.contains(i)));
    let remaining = ids(&sm).await;
    assert!(others.iter().all(|i| !remaining.contains(i)));
    assert_eq!(remaining.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_store_handles_scanning_at_once_delete_each_tx_exactly_once() {
    let (dir, sm) = store().await;
    let old = many("old", 200, |i| NOW - 7200.0 - (i % 13) as f64);
    seed(&sm, &old).await;
    seed(&sm, &many("new", 30, |i| NOW - i as f64)).await;
    let other = open_existing(&dir).await;
    let a = manager(sm.clone(), HOUR).with_batch_size(7);
    let b = manager(other.clone(), HOUR).with_batch_size(7);

    let (ra, rb) = tokio::join!(a.scan_once(), b.scan_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());

    let sa = set(&ra.expired);
    let sb = set(&rb.expired);
    assert!(
        sa.is_disjoint(&sb),
        "a tx was reported by both: {:?}",
        sa.intersection(&sb)
    );
    assert_eq!(ra.count + rb.count, 200);
    assert_eq!(&sa | &sb, set(old.iter().map(|(i, _)| i)));
    assert_eq!(
        ids(&sm).await,
        set(many("new", 30, |_| 0.0).iter().map(|(i, _)| i))
    );
    other.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_batch_reports_what_was_done_and_the_next_pass_finishes() {
    let (_dir, sm) = store().await;
    seed(&sm, &many("old", 20, |i| NOW - 7200.0 - i as f64)).await;
    let mgr = manager(Flaky::new(sm.clone(), [2]), HOUR).with_batch_size(5);

    let err = mgr.scan_once().await.unwrap_err();
    match &err {
        TtlError::Scan {
            expired, dry_run, ..
        } => assert_eq!((*expired, *dry_run), (10, false)),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.storage().is_some());
    assert!(poh_ttl::display_chain(&err).contains("database is locked"));
    assert_eq!(ids(&sm).await.len(), 10, "committed batches stay deleted");

    assert_eq!(mgr.scan_once().await.unwrap().count, 10);
    assert!(ids(&sm).await.is_empty());
}

#[tokio::test]
async fn zero_negative_and_non_finite_ttls_are_refused() {
    let (_dir, sm) = store().await;
    assert!(matches!(
        TtlManager::new(sm.clone(), Duration::ZERO),
        Err(TtlError::InvalidTtl { .. })
    ));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                TtlManager::from_secs_f64(sm.clone(), bad),
                Err(TtlError::InvalidTtl { .. })
            ),
            "{bad}"
        );
    }
    let mgr = TtlManager::new(sm, HOUR).unwrap().with_batch_size(0);
    assert_eq!(mgr.batch_size(), 1);
}
