//! A `poh-ttl run` daemon expiring half of a store while another process saves, re-saves
//! with fresh timestamps, loads and deletes: no fresh tx is lost, no row is left without
//! its payload, and neither side sees an error (busy waits stay inside the library).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Rng, bin, lines_of, now, signal};
use poh_storage::{StorageManager, Tx, TxId};

/// Only a safety net against a hung daemon; the test waits on log lines.
const SAFETY: Duration = Duration::from_secs(120);
const TTL_SECS: f64 = 5000.0;

fn tx(id: &str, ts: f64, payload: Vec<u8>) -> Tx {
    Tx::new(id, "holder", ts, payload).expect("valid tx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_writer_share_a_store_without_losing_fresh_txs() {
    let mut rng = Rng::from_env("two_process");
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path().join("data");
    let db = base.join("poh.db");
    let sm = StorageManager::open(&base, &db).await.unwrap();

    // Half old (expired by the daemon), half fresh.
    let old_ts = now() - 2.0 * TTL_SECS;
    let mut fresh: HashMap<String, Tx> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.push(tx(
            &format!("old-{i}"),
            old_ts,
            format!("old {i}").into_bytes(),
        ));
        let f = tx(&format!("new-{i}"), now(), format!("new {i}").into_bytes());
        fresh.insert(f.tx_id.to_string(), f.clone());
        batch.push(f);
    }
    sm.save_batch(batch).await.unwrap();

    let mut daemon = Command::new(bin("poh-ttl"))
        .env_remove("POH_LAYOUT")
        .arg("run")
        .arg("--base")
        .arg(&base)
        .arg("--db")
        .arg(&db)
        .args([
            "--ttl",
            &TTL_SECS.to_string(),
            "--interval",
            "0.02",
            "--batch-size",
            "50",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poh-ttl run");
    let log = lines_of(daemon.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let wait_passes = |n: usize, seen: &mut Vec<String>| {
        let mut passes = 0;
        while passes < n {
            let line = log
                .recv_timeout(SAFETY)
                .unwrap_or_else(|e| panic!("daemon log stalled ({e}):\n{}", seen.join("\n")));
            if line.contains("TTL pass complete") {
                passes += 1;
            }
            seen.push(line);
        }
    };
    wait_passes(1, &mut seen);

    // The writer's workload runs while the daemon keeps passing.
    let mut old_left: Vec<String> = (0..300).map(|i| format!("old-{i}")).collect();
    let mut n_new = 0;
    for step in 0..1500 {
        match rng.below(6) {
            // a brand-new fresh tx
            0 => {
                let t = tx(&format!("later-{n_new}"), now(), vec![rng.next() as u8; 64]);
                n_new += 1;
                sm.save(t.clone()).await.unwrap();
                fresh.insert(t.tx_id.to_string(), t);
            }
            // re-save an old (possibly already expired) id with a fresh timestamp
            1 if !old_left.is_empty() => {
                let id = old_left.swap_remove(rng.below(old_left.len() as u64) as usize);
                let t = tx(&id, now(), format!("revived {step}").into_bytes());
                sm.save(t.clone()).await.unwrap();
                fresh.insert(id, t);
            }
            // re-save a fresh id with a new payload
            2 => {
                let ids: Vec<&String> = fresh.keys().collect();
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                let t = tx(&id, now(), format!("resaved {step}").into_bytes());
                sm.save(t.clone()).await.unwrap();
                fresh.insert(id, t);
            }
            // delete a fresh id
            3 if fresh.len() > 100 => {
                let ids: Vec<&String> = fresh.keys().collect();
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                assert!(sm.delete(&TxId::new(id.as_str()).unwrap()).await.unwrap());
                fresh.remove(&id);
            }
            // save an old-stamped tx the daemon may expire at any time
            4 => {
                let t = tx(&format!("doomed-{step}"), old_ts, b"doomed".to_vec());
                sm.save(t).await.unwrap();
            }
            // load anything: old ids may be gone, but a present tx always verifies
            _ => {
                let id = format!("old-{}", rng.below(300));
                let _ = sm.load(&TxId::new(id).unwrap()).await.unwrap();
                let ids: Vec<&String> = fresh.keys().collect();
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                let got = sm.load(&TxId::new(id.as_str()).unwrap()).await.unwrap();
                assert_eq!(got.as_ref(), fresh.get(&id), "fresh tx {id} changed");
            }
        }
    }

    // Log lines queued during the workload are old news: drop them, then wait for three
    // more passes, so at least two started after the last write. Then a clean stop.
    while let Ok(line) = log.try_recv() {
        seen.push(line);
    }
    wait_passes(3, &mut seen);
    signal(&daemon, libc::SIGTERM);
    let status = daemon.wait().unwrap();
    while let Ok(line) = log.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    assert!(
        status.success(),
        "daemon exit {status:?}:\n{}",
        seen.join("\n")
    );
    let errors: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(errors.is_empty(), "daemon reported errors: {errors:#?}");

    // Every fresh tx is intact; every old-stamped one is gone; nothing dangles.
    for (id, want) in &fresh {
        let got = sm.load(&TxId::new(id.as_str()).unwrap()).await.unwrap();
        assert_eq!(got.as_ref(), Some(want), "fresh tx {id} lost or changed");
    }
    let stats = sm.stats().await.unwrap();
    assert_eq!(stats.count as usize, fresh.len(), "only fresh txs remain");
    let report = sm.verify().await.unwrap();
    assert!(report.is_clean(), "verify: {:#?}", report.findings);
    sm.close().await.unwrap();
}
