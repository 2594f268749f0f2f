//! One durable save at a time: a segments store against RocksDB's synced single write, in
//! alternating rounds in one process, with the disk's own limit measured in every round.
//!
//! A durable single save is one device flush plus a little CPU, and on a shared machine
//! the flush alone swings by 2x within minutes, so one figure per store (as `poh-bench`
//! reports) can put either side ahead. Here both run in short rounds, one after the other
//! (which goes first alternates), on the same txs, and the report is each round's ratio
//! and their median: the disk's swings hit both sides of a round alike.
//!
//! ```sh
//! cargo run --release -p poh-bench --features rocksdb --example single_save_rounds -- 1000 16
//! ```
//!
//! Arguments: saves per round per side (default 1000), rounds (default 16), and the
//! directory to create the stores in (default: the system's temporary directory).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use poh_bench::rocks_peer;
use poh_bench::util::{arg, median, payload};
use poh_storage::{Layout, OpenOptions, StorageManager, Tx};
use rocksdb::{DB, WriteBatch, WriteOptions};

/// Bytes of one record as the segments store writes it for these txs (header + id +
/// holder + payload), for the raw limit's writes.
const RECORD: usize = 1129;

fn tx(i: usize) -> Result<Tx> {
    Ok(Tx::new(
        format!("s{i:08}"),
        "bench-holder",
        1_710_000_000.0 + i as f64,
        payload(i, 1024),
    )?)
}

/// The RocksDB peer's write of one tx, as `poh-bench --peers rocksdb` does it: one synced
/// batch of its record and its time key.
fn rocks_save(db: &DB, synced: &WriteOptions, t: &Tx) -> Result<()> {
    let mut b = WriteBatch::default();
    rocks_peer::put(&mut b, db, t)?;
    db.write_opt(b, synced)?;
    Ok(())
}

/// Microseconds per write of `RECORD` bytes + `fdatasync`, `n` of them from record `at` on:
/// inside the already written `file` (`grow` false), or each one growing it.
fn raw(file: &File, at: usize, n: usize, grow: bool) -> Result<f64> {
    let b = vec![7u8; RECORD];
    let t = Instant::now();
    for i in at..at + n {
        file.write_at(&b, (i * RECORD) as u64)?;
        file.sync_data()?;
    }
    if grow {
        file.set_len(0)?;
        file.sync_all()?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
}

#[tokio::main]
async fn main() -> Result<()> {
    let per: usize = arg(1, 1000)?;
    let rounds: usize = arg(2, 16)?;
    let parent: PathBuf = arg(3, std::env::temp_dir())?;
    let dir = tempfile::tempdir_in(&parent).context("temporary directory")?;

    let base = dir.path().join("segments");
    let opts = OpenOptions {
        layout: Some(Layout::Segments),
        inline_saves: true,
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(&base, &base.join("poh.db"), opts).await?;

    let db = rocks_peer::open(&dir.path().join("rocksdb"))?;
    let synced = rocks_peer::synced();

    // The disk's limits: one file written ahead (appends inside written bytes, as the
    // segments store's padding makes them), one grown by every write (as a log that is
    // not preallocated).
    let inside = File::create(dir.path().join("raw-inside"))?;
    (&inside).write_all(&vec![0u8; per * rounds * RECORD + 4096])?;
    inside.sync_all()?;
    let growing = File::create(dir.path().join("raw-growing"))?;

    println!("{per} saves per side per round, {rounds} rounds, 1 KiB payloads");
    println!(
        "| round | segments µs/save | RocksDB µs/save | segments speed / RocksDB | disk: write+fdatasync inside written bytes | growing the file |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let (mut ours, mut rocks, mut ratios, mut lim_in, mut lim_grow) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let txs = (round * per..(round + 1) * per)
            .map(tx)
            .collect::<Result<Vec<_>>>()?;
        let mut o = 0.0;
        let mut r = 0.0;
        for side in 0..2 {
            if (side + round) % 2 == 0 {
                let t = Instant::now();
                for tx in &txs {
                    sm.save(tx.clone()).await?;
                }
                o = t.elapsed().as_secs_f64() / per as f64 * 1e6;
            } else {
                let t = Instant::now();
                for tx in &txs {
                    rocks_save(&db, &synced, tx)?;
                }
                r = t.elapsed().as_secs_f64() / per as f64 * 1e6;
            }
        }
        let li = raw(&inside, round * per, per, false)?;
        let lg = raw(&growing, 0, per, true)?;
        println!(
            "| {round} | {o:.0} | {r:.0} | {:.2}x | {li:.0} µs | {lg:.0} µs |",
            r / o
        );
        ours.push(o);
        rocks.push(r);
        ratios.push(r / o);
        lim_in.push(li);
        lim_grow.push(lg);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "\nmedians: segments {:.0} µs ({:.0}/s), RocksDB {:.0} µs ({:.0}/s); segments / RocksDB {:.2}x (rounds {lo:.2}x-{hi:.2}x); disk {:.0} µs inside written bytes, {:.0} µs growing the file",
        median(&ours),
        1e6 / median(&ours),
        median(&rocks),
        1e6 / median(&rocks),
        median(&ratios),
        median(&lim_in),
        median(&lim_grow),
    );
    sm.close().await?;
    Ok(())
}
