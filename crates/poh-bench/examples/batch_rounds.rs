//! Durable `save_batch` of 1,000 txs: a segments store against RocksDB's synced write
//! batch, in alternating rounds in one process, both stores growing to the same size.
//!
//! `poh-bench` fills each store in one phase, one store after the other, so a minute in
//! which the disk is slow lands on one side only (at 1M the segments figure has come in
//! near 150k/s and above 230k/s in runs whose RocksDB figure barely moved). Here both
//! fill in short rounds, one after the other (which goes first alternates), with the
//! same txs, and the report is each round's ratio and their median: the disk's swings
//! hit both sides of a round alike.
//!
//! ```sh
//! cargo run --release -p poh-bench --features rocksdb --example batch_rounds -- 50 20
//! ```
//!
//! Arguments: batches of 1,000 per round per side (default 50), rounds (default 20: 1M
//! txs in each store at the end), seconds between two txs' timestamps (default 0.001:
//! the store fills one time window, as a node's recent txs do; `poh-bench` spaces them
//! 1 s apart), and the directory to create the stores in (default: the system's
//! temporary directory).
//!
//! RocksDB flushes its memtables and compacts on threads of its own after its writes
//! return. Each of its rounds waits for them to finish (so that none runs during the
//! other side's round) and reports two figures: its writes alone, and with that wait.
//! Filling a store in one go, as `poh-bench` does, its writes share the disk with that
//! work instead, and wait for it when it falls behind.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use poh_bench::rocks_peer;
use poh_bench::util::{arg, median, payload};
use poh_storage::{Layout, OpenOptions, StorageManager, Tx};
use rocksdb::{DB, WriteBatch};

const BATCH: usize = 1000;

fn tx(i: usize, spacing: f64) -> Result<Tx> {
    Ok(Tx::new(
        format!("b{i:08}"),
        "bench-holder",
        1_710_000_000.0 + i as f64 * spacing,
        payload(i, 1024),
    )?)
}

/// True while RocksDB flushes a memtable or compacts, or has either pending.
fn rocks_busy(db: &DB) -> Result<bool> {
    let mut busy = 0;
    for p in [
        "rocksdb.num-running-flushes",
        "rocksdb.num-running-compactions",
    ] {
        busy += db.property_int_value(p)?.unwrap_or(0);
    }
    for cf in ["data", "time"] {
        let cf = db.cf_handle(cf).context("column family")?;
        for p in [
            "rocksdb.mem-table-flush-pending",
            "rocksdb.compaction-pending",
        ] {
            busy += db.property_int_value_cf(&cf, p)?.unwrap_or(0);
        }
    }
    Ok(busy > 0)
}

#[tokio::main]
async fn main() -> Result<()> {
    // RUST_LOG=poh_storage=debug shows, per group commit, where its time went.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let per: usize = arg(1, 50)?;
    let rounds: usize = arg(2, 20)?;
    let spacing: f64 = arg(3, 0.001)?;
    let parent: PathBuf = arg(4, std::env::temp_dir())?;
    let dir = tempfile::tempdir_in(&parent).context("temporary directory")?;

    let base = dir.path().join("segments");
    let opts = OpenOptions {
        layout: Some(Layout::Segments),
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(&base, &base.join("poh.db"), opts).await?;
    let db = rocks_peer::open(&dir.path().join("rocksdb"))?;
    let synced = rocks_peer::synced();

    println!(
        "{per} batches of {BATCH} per side per round, {rounds} rounds ({} txs a store), 1 KiB payloads, timestamps {spacing} s apart",
        per * BATCH * rounds
    );
    println!(
        "| round | txs in each store after it | segments tx/s | RocksDB tx/s | segments / RocksDB | RocksDB tx/s, its flushes and compactions included | segments / that |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let (mut ours, mut rocks, mut ratios, mut rocks_all, mut ratios_all) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let first = round * per * BATCH;
        let batches = (0..per)
            .map(|b| {
                (first + b * BATCH..first + (b + 1) * BATCH)
                    .map(|i| tx(i, spacing))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let n = (per * BATCH) as f64;
        let (mut o, mut r, mut ra) = (0.0, 0.0, 0.0);
        for side in 0..2 {
            if (side + round) % 2 == 0 {
                let copies = batches.clone();
                let t = Instant::now();
                for b in copies {
                    sm.save_batch(b).await?;
                }
                o = n / t.elapsed().as_secs_f64();
            } else {
                let t = Instant::now();
                for b in &batches {
                    let mut wb = WriteBatch::default();
                    for t in b {
                        rocks_peer::put(&mut wb, &db, t)?;
                    }
                    db.write_opt(wb, &synced)?;
                }
                r = n / t.elapsed().as_secs_f64();
                // Its memtable flushes and compactions run on its own threads after the
                // writes return: waited for here, so that none of them runs during the
                // other side's round, and reported as a second figure.
                while rocks_busy(&db)? {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                ra = n / t.elapsed().as_secs_f64();
            }
        }
        println!(
            "| {round} | {} | {o:.0} | {r:.0} | {:.2}x | {ra:.0} | {:.2}x |",
            first + per * BATCH,
            o / r,
            o / ra
        );
        ours.push(o);
        rocks.push(r);
        ratios.push(o / r);
        rocks_all.push(ra);
        ratios_all.push(o / ra);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "\nmedians: segments {:.0} tx/s, RocksDB {:.0} tx/s; segments / RocksDB {:.2}x (rounds {lo:.2}x-{hi:.2}x); RocksDB with its flushes and compactions {:.0} tx/s, segments / that {:.2}x",
        median(&ours),
        median(&rocks),
        median(&ratios),
        median(&rocks_all),
        median(&ratios_all),
    );
    sm.close().await?;
    Ok(())
}
