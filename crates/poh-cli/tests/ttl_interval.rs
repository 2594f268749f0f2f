//! `poh-ttl run --interval` has a floor: an interval under 10 ms (`1e-9` meant thousands
//! of passes a second) is bad arguments (exit 2) with a message naming the minimum, before
//! the store is opened.

mod common;

use std::time::Duration;

use common::ttl::*;
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
