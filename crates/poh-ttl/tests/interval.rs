//! `poh-ttl run --interval` has a floor: an interval under 10 ms (`1e-9` meant thousands of
//! passes a second) is bad arguments (exit 2) with a message naming the minimum, before
//! the store is opened; the library's `spawn` refuses it too.

mod common;

use std::time::Duration;

use common::*;
use poh_ttl::{MIN_INTERVAL, TtlError, TtlManager};
use predicates::prelude::*;

#[test]
fn an_interval_under_the_minimum_exits_2_naming_it() {
    let dir = store_with(&[("old".into(), real_now() - 10_000.0)]);
    for interval in ["1e-9", "0.001", "0.0099", "9ms", "1ns", "100us"] {
        bin()
            .arg("run")
            .args(store_args(&dir))
            .args(["--ttl", "1h", "--interval", interval])
            // Before the floor existed this started the daemon, which never stopped.
            .timeout(Duration::from_secs(20))
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::contains("--interval")
                    .and(predicate::str::contains(interval))
                    .and(predicate::str::contains("at least 10ms")),
            );
    }
    // Nothing ran: the expired tx is still there.
    assert_eq!(ids_in(&dir), set(["old"]));
}

#[test]
fn the_help_names_the_minimum_interval() {
    bin()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("at least 10ms"));
}

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
