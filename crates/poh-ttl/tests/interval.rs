//! The daemon interval has a floor: the library's `spawn` refuses an interval under 10 ms
//! (`1e-9` meant thousands of passes a second). The command line's check is in poh-cli's
//! `ttl_interval` tests.

mod common;

use std::time::Duration;

use poh_ttl::{MIN_INTERVAL, TtlError, TtlManager};

#[tokio::test]
async fn spawn_refuses_an_interval_under_the_minimum() {
    assert_eq!(MIN_INTERVAL, Duration::from_millis(10));
    let (_dir, sm) = common::store().await;
    for interval in [
        Duration::from_nanos(1),
        MIN_INTERVAL - Duration::from_nanos(1),
    ] {
        let r = TtlManager::new(sm.clone(), Duration::from_secs(3600))
            .unwrap()
            .spawn(interval);
        match r {
            Err(e @ TtlError::InvalidInterval) => {
                assert!(e.to_string().contains("at least 10ms"), "{e}")
            }
            Err(e) => panic!("{interval:?}: {e}"),
            Ok(h) => {
                let _ = h.shutdown().await;
                panic!("{interval:?} was accepted");
            }
        }
    }
    let h = TtlManager::new(sm.clone(), Duration::from_secs(3600))
        .unwrap()
        .spawn(MIN_INTERVAL)
        .expect("the minimum itself is allowed");
    h.shutdown().await.expect("shutdown");
    sm.close().await.expect("close");
}
