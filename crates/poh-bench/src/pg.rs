//! The `postgres` layout in the benchmark: where its database comes from (a URL, or a
//! throwaway cluster started for the run), its disk use, and expiry by partition drop
//! against a plain single-table `DELETE ... WHERE timestamp <` in the same server.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use poh_storage::{OpenOptions, StorageManager, Tx};
use poh_testkit::pg::PgCluster;
use tokio_postgres::{Client, NoTls};

use crate::{Args, Row, peak_rss_mib, reset_peak_rss};

/// The cluster started for `--postgres auto`, stopped by [`shutdown`].
static CLUSTER: Mutex<Option<PgCluster>> = Mutex::new(None);

/// Txs in the window that the partition-drop phase expires.
const DROP_TXS: usize = 100_000;

/// A fresh empty database named `name`: created in the run's own cluster, or on the
/// server of `--postgres URL` (then `name` must be creatable there by its user).
fn fresh_database(args: &Args, name: &str) -> Result<String> {
    if args.postgres != "auto" {
        let url = args.postgres.clone();
        let rt = tokio::runtime::Handle::current();
        let n = name.to_owned();
        return std::thread::scope(|s| {
            s.spawn(|| {
                rt.block_on(async {
                    let c = connect(&url).await?;
                    c.batch_execute(&format!("CREATE DATABASE {n}"))
                        .await
                        .with_context(|| format!("create database {n}"))?;
                    let (head, _) = url.rsplit_once('/').context("a URL with /dbname")?;
                    anyhow::Ok(format!("{head}/{n}"))
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("create database {name}: thread panicked"))?
        });
    }
    let mut guard = CLUSTER
        .lock()
        .map_err(|_| anyhow::anyhow!("cluster lock"))?;
    if guard.is_none() {
        eprintln!("starting a throwaway PostgreSQL cluster");
        *guard = Some(PgCluster::start().map_err(|e| anyhow::anyhow!("start PostgreSQL: {e}"))?);
    }
    let c = guard.as_ref().context("cluster")?;
    c.create_db(name)
        .map_err(|e| anyhow::anyhow!("create database {name}: {e}"))
}

/// The database the `postgres` layout's phases run in for store size `n`.
pub(crate) fn database(args: &Args, n: usize) -> Result<String> {
    fresh_database(args, &format!("poh_bench_{n}"))
}

/// Stops the cluster of `--postgres auto`, if one was started.
pub(crate) fn shutdown() {
    if let Ok(mut g) = CLUSTER.lock() {
        g.take();
    }
}

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {}", poh_storage::redact_url(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn url_of(n: usize, args: &Args) -> Result<String> {
    let guard = CLUSTER
        .lock()
        .map_err(|_| anyhow::anyhow!("cluster lock"))?;
    Ok(match guard.as_ref() {
        Some(c) => c.url(&format!("poh_bench_{n}")),
        None => {
            let (head, _) = args
                .postgres
                .rsplit_once('/')
                .context("a URL with /dbname")?;
            format!("{head}/poh_bench_{n}")
        }
    })
}

/// The store's tables, indexes and TOAST on the server, against the bytes it holds.
pub(crate) fn disk_row(args: &Args, n: usize, stored: u64) -> Result<Row> {
    let url = url_of(n, args)?;
    let rt = tokio::runtime::Handle::current();
    let bytes: i64 = std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(async {
                let c = connect(&url).await?;
                let r = c
                    .query_one(
                        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c
                         WHERE c.relkind = 'r' AND c.relname LIKE 'poh_txs%'",
                        &[],
                    )
                    .await?;
                anyhow::Ok(r.try_get::<_, i64>(0)?)
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("disk size: thread panicked"))?
    })?;
    let useful = stored * (args.size as u64 + 9 + "bench-holder".len() as u64 + 32);
    let note = format!(
        "{:.0} B/tx in tables, indexes and TOAST (before any VACUUM); {:.2}x the bytes of payloads + ids + holders + hashes",
        bytes as f64 / stored as f64,
        bytes as f64 / useful as f64
    );
    eprintln!("  disk                   {note}");
    Ok(Row {
        layout: String::new(),
        n,
        phase: "disk".into(),
        ops: stored,
        elapsed_s: 0.0,
        ops_per_s: 0.0,
        peak_rss_mib: 0.0,
        limit_ops_per_s: None,
        note,
    })
}

/// Expiring one wholly expired window of [`DROP_TXS`] txs through the store (a partition
/// drop), against the same rows in one plain table expired by `DELETE ... WHERE
/// timestamp < $1`, on the same server.
pub(crate) async fn partition_drop_vs_delete(args: &Args, n: usize) -> Result<Vec<Row>> {
    let url = fresh_database(args, &format!("poh_bench_drop_{n}"))?;
    let window = 3600.0;
    let w0 = (crate::T0 / window).floor() * window + 1000.0 * window;
    let txs = |range: std::ops::Range<usize>| -> Result<Vec<Tx>> {
        range
            .map(|i| {
                Ok(Tx::new(
                    format!("d{i:08}"),
                    "bench-holder",
                    w0 + i as f64 * (window - 1.0) / DROP_TXS as f64,
                    crate::payload(i, args.size),
                )?)
            })
            .collect()
    };
    let sm = StorageManager::open_with("unused", &url, OpenOptions::default()).await?;
    for start in (0..DROP_TXS).step_by(1000) {
        sm.save_batch(txs(start..start + 1000)?).await?;
    }
    let now = w0 + window + 10_000.0;
    reset_peak_rss();
    let t = Instant::now();
    let gone = sm.delete_expired(now, 1000.0, 1000).await?;
    let drop_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(gone.len() == DROP_TXS, "dropped {} txs", gone.len());
    let mut rows = vec![Row {
        layout: "postgres".into(),
        n,
        phase: "expire a whole window (partition drop)".into(),
        ops: gone.len() as u64,
        elapsed_s: drop_s,
        ops_per_s: gone.len() as f64 / drop_s.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        limit_ops_per_s: None,
        note: "one delete_expired call: the window's ids read, its partition detached".into(),
    }];
    // The rest of the drop happens at the start of the next pass, off the store's lock.
    let t = Instant::now();
    let more = sm.delete_expired(now, 1000.0, 1000).await?;
    let finish_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(more.is_empty(), "nothing left to expire");
    rows.push(Row {
        layout: "postgres".into(),
        n,
        phase: "expire a whole window: deferred work".into(),
        ops: DROP_TXS as u64,
        elapsed_s: finish_s,
        ops_per_s: DROP_TXS as f64 / finish_s.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        limit_ops_per_s: None,
        note: "the next pass: the window's directory entries removed, the table dropped".into(),
    });
    sm.close().await?;

    let c = connect(&url).await?;
    c.batch_execute(
        "CREATE TABLE plain (tx_id text COLLATE \"C\" PRIMARY KEY, holder_id text NOT NULL,
           timestamp double precision NOT NULL, storage_hash text NOT NULL, size bigint NOT NULL,
           payload bytea NOT NULL);
         CREATE INDEX plain_time ON plain (timestamp, tx_id);",
    )
    .await?;
    for start in (0..DROP_TXS).step_by(1000) {
        let batch = txs(start..start + 1000)?;
        let ids: Vec<&str> = batch.iter().map(|t| t.tx_id.as_str()).collect();
        let holders: Vec<&str> = batch.iter().map(|t| t.holder_id.as_str()).collect();
        let ts: Vec<f64> = batch.iter().map(|t| t.timestamp).collect();
        let hashes: Vec<String> = batch
            .iter()
            .map(|t| poh_storage::sha256_hex(&t.payload))
            .collect();
        let sizes: Vec<i64> = batch.iter().map(|t| t.payload.len() as i64).collect();
        let payloads: Vec<&[u8]> = batch.iter().map(|t| t.payload.as_slice()).collect();
        c.execute(
            "INSERT INTO plain SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::int8[], $6::bytea[])",
            &[&ids, &holders, &ts, &hashes, &sizes, &payloads],
        )
        .await?;
    }
    let t = Instant::now();
    let deleted = c
        .execute("DELETE FROM plain WHERE timestamp < $1", &[&(now - 1000.0)])
        .await?;
    let del_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(deleted as usize == DROP_TXS, "deleted {deleted} rows");
    let t = Instant::now();
    c.batch_execute("VACUUM plain").await?;
    let vacuum_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  expire 100k: partition drop {:.1} ms (+{:.1} ms next pass), plain DELETE {:.1} ms (+{:.1} ms VACUUM)",
        drop_s * 1e3,
        finish_s * 1e3,
        del_s * 1e3,
        vacuum_s * 1e3
    );
    rows.push(Row {
        layout: "postgres-plain-delete".into(),
        n,
        phase: "expire a whole window (partition drop)".into(),
        ops: deleted,
        elapsed_s: del_s,
        ops_per_s: deleted as f64 / del_s.max(1e-9),
        peak_rss_mib: 0.0,
        limit_ops_per_s: None,
        note: "baseline: one table, DELETE ... WHERE timestamp < $1".into(),
    });
    rows.push(Row {
        layout: "postgres-plain-delete".into(),
        n,
        phase: "expire a whole window: deferred work".into(),
        ops: deleted,
        elapsed_s: vacuum_s,
        ops_per_s: deleted as f64 / vacuum_s.max(1e-9),
        peak_rss_mib: 0.0,
        limit_ops_per_s: None,
        note: "baseline: the VACUUM the DELETE owes".into(),
    });
    Ok(rows)
}
