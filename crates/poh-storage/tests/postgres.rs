//! The PostgreSQL engine against a real, throwaway server (`poh_testkit::pg`): skipped
//! with a note where no PostgreSQL binaries exist, mandatory under `POH_REQUIRE_ALL=1`.

use poh_storage::{OpenOptions, StorageManager, Tx, TxId};
use poh_testkit::pg;

fn tx(id: &str, ts: f64) -> Tx {
    Tx::new(id, "holder-1", ts, format!("payload of {id}").into_bytes()).expect("valid tx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("rt").expect("createdb");
    let t0 = std::time::Instant::now();
    let sm = StorageManager::open_with("unused", &url, OpenOptions::default())
        .await
        .expect("open");
    eprintln!("open {:?}", t0.elapsed());
    sm.save(tx("a", 1_700_000_000.0)).await.expect("save");
    let got = sm
        .load(&TxId::new("a").unwrap())
        .await
        .expect("load")
        .expect("present");
    assert_eq!(got, tx("a", 1_700_000_000.0));
    sm.close().await.expect("close");
}
