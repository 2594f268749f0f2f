//! [`ReopeningStore`]: after an I/O failure poisons the store, the handle is closed and the
//! next pass reopens the store, so passes succeed again once the store is back; a store
//! that vanished is never recreated. The failure is real: the store's base directory is
//! moved away (the base fsync each delete batch starts with fails, which poisons the
//! handle), then moved back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use poh_storage::{OpenOptions, StorageError};
use poh_ttl::health::assess;
use poh_ttl::{HealthPolicy, ManualClock, ReopeningStore, ScanMode, TtlError, TtlManager};
use tokio::time::advance;

const HOUR: Duration = Duration::from_secs(3600);

async fn reopening(dir: &tempfile::TempDir) -> Arc<ReopeningStore> {
    let (base, db) = paths(dir);
    Arc::new(
        ReopeningStore::open(base, db, OpenOptions::default())
            .await
            .expect("open store"),
    )
}

fn storage_error(e: &TtlError) -> &StorageError {
    e.storage().expect("a storage error")
}

#[tokio::test]
async fn a_poisoned_store_is_reopened_by_the_next_pass_once_it_is_back() {
    let (dir, sm) = store().await;
    seed(&sm, &many("old", 3, |i| NOW - 7200.0 - i as f64)).await;
    sm.close().await.unwrap();
    let (base, _) = paths(&dir);
    let away = dir.path().join("moved");
    let store = reopening(&dir).await;
    let mgr = TtlManager::new(store.clone(), HOUR)
        .unwrap()
        .with_clock(ManualClock::new(NOW));

    std::fs::rename(&base, &away).unwrap();
    let e = mgr.scan_summary(ScanMode::Delete).await.unwrap_err();
    assert!(
        matches!(storage_error(&e), StorageError::Io { .. }),
        "the base fsync fails: {e:?}"
    );
    assert!(store.current().is_none(), "the failed handle was closed");

    // Still gone: the reopen fails, and creates nothing.
    let e = mgr.scan_summary(ScanMode::Delete).await.unwrap_err();
    assert!(
        matches!(storage_error(&e), StorageError::NotFound { .. }),
        "{e:?}"
    );
    assert!(!base.exists(), "a reopen never creates a store");
    assert_eq!(store.reopens(), 0);

    std::fs::rename(&away, &base).unwrap();
    let s = mgr.scan_summary(ScanMode::Delete).await.unwrap();
    assert_eq!(s.count, 3, "the pass after the recovery does the work");
    assert_eq!(store.reopens(), 1);
    assert!(store.current().is_some());
    store.close().await.unwrap();
    let sm = open_existing(&dir).await;
    assert!(ids(&sm).await.is_empty());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn errors_reopening_cannot_repair_keep_the_handle() {
    let (dir, sm) = store().await;
    sm.close().await.unwrap();
    // A writable handle's expiry on a read-only handle is refused, not an I/O failure.
    let (base, db) = paths(&dir);
    let ro = ReopeningStore::open(
        &base,
        &db,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let mgr = TtlManager::new(ro, HOUR).unwrap();
    let e = mgr.scan_summary(ScanMode::Delete).await.unwrap_err();
    assert!(
        matches!(storage_error(&e), StorageError::ReadOnly(_)),
        "{e:?}"
    );
    assert!(mgr.target().current().is_some(), "handle kept");
    assert_eq!(mgr.target().reopens(), 0);
}

#[tokio::test]
async fn opening_a_missing_store_fails_and_creates_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let (base, db) = paths(&dir);
    let e = ReopeningStore::open(&base, &db, OpenOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
    assert!(!base.exists());
}

/// The daemon on a `ReopeningStore`: health goes red when the store fails and back to
/// green when it returns, without a restart.
#[tokio::test(start_paused = true)]
async fn the_daemon_recovers_by_itself_and_health_follows() {
    let (dir, sm) = store().await;
    seed(&sm, &many("old", 2, |i| NOW - 7200.0 - i as f64)).await;
    sm.close().await.unwrap();
    let (base, _) = paths(&dir);
    let away = dir.path().join("moved");
    let store = reopening(&dir).await;
    let clock = ManualClock::new(NOW);
    let handle = TtlManager::new(store.clone(), HOUR)
        .unwrap()
        .with_clock(clock.clone())
        .spawn(HOUR)
        .unwrap();
    let monitor = handle.monitor();
    let policy = HealthPolicy::for_interval(HOUR);
    let mut rx = monitor.subscribe();

    // Counts are waited for with `>=`: while a pass waits for the store's writer thread
    // the paused clock may jump to the next tick, so a count can move past a value before
    // this task looks (an exact match would then wait forever).
    rx.wait_for(|s| s.passes >= 1).await.unwrap();
    assert!(assess(&policy, &monitor.snapshot(), NOW).is_healthy());

    std::fs::rename(&base, &away).unwrap();
    for n in [1, 2] {
        advance(HOUR).await;
        rx.wait_for(|s| s.failures >= n).await.unwrap();
        let h = assess(&policy, &monitor.snapshot(), NOW);
        assert!(!h.is_healthy(), "{h:?}");
    }
    let h = assess(&policy, &monitor.snapshot(), NOW);
    assert!(h.reason().contains("does not exist"), "{h:?}");

    std::fs::rename(&away, &base).unwrap();
    clock.set(NOW + 3.0 * 3600.0);
    seed_later(&dir).await;
    advance(HOUR).await;
    // The two old txs, then `later`: nothing else can expire.
    let st = rx.wait_for(|s| s.expired_total >= 3).await.unwrap().clone();
    assert_eq!(st.expired_total, 3);
    assert_eq!(st.consecutive_failures, 0);
    assert!(assess(&policy, &monitor.snapshot(), NOW + 3.0 * 3600.0).is_healthy());
    assert_eq!(store.reopens(), 1);
    handle.shutdown().await.unwrap();
    store.close().await.unwrap();
}

/// One more tx, expired at the daemon's clock of `NOW + 3h`, saved through a second
/// handle.
async fn seed_later(dir: &tempfile::TempDir) {
    let sm = open_existing(dir).await;
    seed(&sm, &[("later".into(), NOW)]).await;
    sm.close().await.unwrap();
}
