//! `poh-ttl` refuses a `--db` among the store's own names (inside `.tmp/`, a payload name
//! `<base>/<x>.bin`, ...) as bad arguments (exit 2), before anything is touched: the
//! storage library's rule, which every open applies.

mod common;

use common::ttl::*;
use predicates::prelude::*;

#[test]
fn a_db_among_the_stores_own_names_exits_2() {
    let dir = store_with(&[("old".into(), real_now() - 10_000.0)]);
    let (base, _) = paths(&dir);
    for (db, why) in [
        (base.join(".tmp/poh.db"), "temp directory"),
        (base.join("meta.bin"), "payload file name"),
        (base.join(".poh.lock"), "lock file"),
    ] {
        let existed = db.exists(); // the lock file does
        for cmd in [&["scan"][..], &["run", "--interval", "1h"][..]] {
            bin()
                .args(cmd)
                .args(["--ttl", "1h", "--base"])
                .arg(&base)
                .arg("--db")
                .arg(&db)
                .timeout(std::time::Duration::from_secs(20))
                .assert()
                .code(2)
                .stdout("")
                .stderr(
                    predicate::str::contains(format!("refusing {}", db.display()))
                        .and(predicate::str::contains(why)),
                );
            assert_eq!(db.exists(), existed, "{} was created", db.display());
        }
    }
    assert_eq!(ids_in(&dir), set(["old"]));
}
