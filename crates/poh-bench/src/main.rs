//! `poh-bench`: measures poh-storage on this machine and, in the same run, the machine's own
//! limits for the same work, so the figures can be read as ratios rather than absolutes.
//! (Over 600 lines on purpose: one binary measures every phase, the machine limits and
//! the report side by side, so a run is one self-contained program.)
//!
//! ```text
//! cargo run --release -p poh-bench -- --n 10000,100000 --size 1024 --markdown bench.md
//! cargo run --release -p poh-bench -- --layout files,segments --n 100000
//! ```
//!
//! Phases per N: durable single saves, batched saves, concurrent single saves, load+verify
//! (one call per tx and batched), list, TTL scan with nothing expired, TTL scan expiring
//! 10 %, verify and recover. Each reports elapsed time, ops/s and the process's peak
//! resident memory during the phase (the kernel's high-water mark, reset between phases).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod pg;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use poh_bench::util::payload;
use poh_storage::{Layout, StorageManager, Tx, TxId};
use poh_ttl::{ManualClock, ScanMode, TtlManager};
use serde::Serialize;

/// Benchmark poh-storage against this machine's own limits.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Store sizes to run, comma-separated (e.g. 10000,100000,1000000).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    n: Vec<usize>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Directory to create the stores in (a temporary directory under it is removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Most txs saved one at a time per run (durable single saves are slow by nature).
    #[arg(long, default_value_t = 2000)]
    single: usize,
    /// Concurrent `save` callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Most txs saved by the concurrent callers per run.
    #[arg(long, default_value_t = 20000)]
    concurrent_total: usize,
    /// Txs per `save_batch` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Send every save through the writer thread: open the stores without
    /// `OpenOptions::inline_saves` (on by default here, as in the Python package).
    #[arg(long)]
    no_inline_saves: bool,
    /// Store layouts to run, comma-separated (`files`, `segments`): each N runs once per
    /// layout, in the same run, so the figures compare directly.
    #[arg(long, value_delimiter = ',', default_value = "files")]
    layout: Vec<Layout>,
    /// Also run the peers on the same txs and phases: `sqlite` (the payload as a BLOB in
    /// one SQLite table, WAL, synchronous=FULL) and `rocksdb` (synced writes; only in a
    /// build with `--features rocksdb`).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The database of the `postgres` layout: a URL (postgres://user@host/dbname, an
    /// empty database), or `auto` to start a throwaway cluster from this machine's
    /// PostgreSQL binaries for the run (server and benchmark then share the cores).
    #[arg(long, value_name = "URL|auto", default_value = "auto")]
    postgres: String,
    /// Write the results as a Markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize, Clone)]
struct Row {
    layout: String,
    n: usize,
    phase: String,
    ops: u64,
    elapsed_s: f64,
    ops_per_s: f64,
    peak_rss_mib: f64,
    /// The machine's own limit for the same work, in ops/s, where one applies.
    limit_ops_per_s: Option<f64>,
    note: String,
}

#[derive(Debug, Serialize)]
struct Limits {
    durable_file_create_per_s: f64,
    durable_files_batched_per_s: f64,
    read_and_hash_all_cores_per_s: f64,
    sqlite_durable_commit_per_s: f64,
    single_save_limit_per_s: f64,
    sqlite_rows_in_1000_row_txns_per_s: f64,
    sha256_payloads_per_s: f64,
    sha256_mb_per_s: f64,
    warm_read_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    payload_bytes: usize,
    /// Machine limits measured right before each N's phases, in the same conditions.
    limits: Vec<(usize, Limits)>,
    rows: Vec<Row>,
}

/// Resets the kernel's peak-RSS mark for this process (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{cpus} CPUs ({model}), {mem_gib:.0} GiB RAM, {}",
        std::env::consts::OS
    )
}

/// Writes back every dirty page of the file system under `dir` (`syncfs`) before a
/// store's or a peer's first phase: the durable single saves would otherwise share the
/// device with the writeback of whatever ran before them (the machine's limits, the
/// stores before), and the one measured first would pay the most. Best effort.
fn settle(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = rustix::fs::syncfs(&d);
    }
}

const T0: f64 = 1_700_000_000.0;

/// Txs of the batched phase ("b") are the oldest, at `T0 + i`; the others come after
/// them, so "expire the oldest 10 %" touches only batched txs.
fn tx(prefix: &str, i: usize, size: usize) -> Result<Tx> {
    let ts = if prefix == "b" {
        T0 + i as f64
    } else {
        T0 + 1e7 + i as f64
    };
    Ok(Tx::new(
        format!("{prefix}{i:08}"),
        "bench-holder",
        ts,
        payload(i, size),
    )?)
}

/// Measures the machine's limits three times and keeps the median of each figure: file
/// creation on this kind of disk swings widely with what ran just before.
fn measure_limits(dir: &Path, size: usize) -> Result<Limits> {
    let runs = (0..3)
        .map(|_| measure_limits_once(dir, size))
        .collect::<Result<Vec<_>>>()?;
    let med = |f: fn(&Limits) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Limits {
        durable_file_create_per_s: med(|l| l.durable_file_create_per_s),
        durable_files_batched_per_s: med(|l| l.durable_files_batched_per_s),
        read_and_hash_all_cores_per_s: med(|l| l.read_and_hash_all_cores_per_s),
        sqlite_durable_commit_per_s: med(|l| l.sqlite_durable_commit_per_s),
        single_save_limit_per_s: med(|l| l.single_save_limit_per_s),
        sqlite_rows_in_1000_row_txns_per_s: med(|l| l.sqlite_rows_in_1000_row_txns_per_s),
        sha256_payloads_per_s: med(|l| l.sha256_payloads_per_s),
        sha256_mb_per_s: med(|l| l.sha256_mb_per_s),
        warm_read_per_s: med(|l| l.warm_read_per_s),
    })
}

fn measure_limits_once(dir: &Path, size: usize) -> Result<Limits> {
    // Files are left in place until the run ends: deleting them here would slow the file
    // creations measured next (ext4 holds freed inodes back for a while).
    let d = tempfile::TempDir::new_in(dir)?.keep();
    let data = payload(7, size);

    // temp + fsync + rename + fsync dir, one file at a time
    let n = 500;
    let dirf = File::open(&d)?;
    let t = Instant::now();
    for i in 0..n {
        let tmp = d.join(format!(".t{i}"));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, d.join(format!("f{i}.bin")))?;
        dirf.sync_all()?;
    }
    let durable_file = n as f64 / t.elapsed().as_secs_f64();

    // the same for 1,000 files at once: write all, fsync all (16 threads), fsync the
    // directory, rename all, fsync the directory — the payload half of a group commit
    let nb = 1000;
    let batch_dir = d.join("batch");
    fs::create_dir_all(&batch_dir)?;
    let bdir = File::open(&batch_dir)?;
    let t = Instant::now();
    let mut files = Vec::with_capacity(nb);
    for i in 0..nb {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(batch_dir.join(format!(".t{i}")))?;
        f.write_all(&data)?;
        files.push(f);
    }
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = files
            .chunks(nb.div_ceil(16))
            .map(|part| s.spawn(move || part.iter().try_for_each(File::sync_all)))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("fsync thread panicked"))??;
        }
        Ok(())
    })?;
    bdir.sync_all()?;
    for i in 0..nb {
        fs::rename(
            batch_dir.join(format!(".t{i}")),
            batch_dir.join(format!("f{i}.bin")),
        )?;
    }
    bdir.sync_all()?;
    let durable_batch = nb as f64 / t.elapsed().as_secs_f64();

    // one durable SQLite commit per row (WAL, synchronous=FULL)
    let conn = rusqlite::Connection::open(d.join("limit.db"))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE t (id TEXT PRIMARY KEY, h TEXT NOT NULL, ts REAL NOT NULL, holder TEXT, size INTEGER);",
    )?;
    let n_commit = 1000;
    let t = Instant::now();
    for i in 0..n_commit {
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, 'h', 1024)",
            rusqlite::params![format!("c{i}"), "x".repeat(64), i as f64],
        )?;
    }
    let commit = n_commit as f64 / t.elapsed().as_secs_f64();

    // rows in 1000-row transactions
    let rows = 100_000;
    let t = Instant::now();
    for chunk in 0..rows / 1000 {
        let txn = conn.unchecked_transaction()?;
        {
            let mut st = txn.prepare_cached("INSERT INTO t VALUES (?1, ?2, ?3, 'h', 1024)")?;
            for i in 0..1000 {
                st.execute(rusqlite::params![
                    format!("r{chunk}-{i}"),
                    "x".repeat(64),
                    i as f64
                ])?;
            }
        }
        txn.commit()?;
    }
    let batch_rows = rows as f64 / t.elapsed().as_secs_f64();

    // SHA-256 of one payload at a time
    let reps = 200_000;
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..reps {
        use sha2::Digest as _;
        acc ^= sha2::Sha256::digest(&data)[0];
    }
    std::hint::black_box(acc);
    let secs = t.elapsed().as_secs_f64();
    let sha = reps as f64 / secs;

    // warm reads of the files written above
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..20 {
        for i in 0..n {
            total += fs::read(d.join(format!("f{i}.bin")))?.len();
        }
    }
    std::hint::black_box(total);
    let reads = (20 * n) as f64 / t.elapsed().as_secs_f64();

    // warm read + SHA-256, on every core at once: what verification can reach
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let per_thread = 10 * n;
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..cpus {
            let d = &d;
            s.spawn(move || {
                use sha2::Digest as _;
                let mut acc = 0u8;
                for k in 0..per_thread {
                    let i = (k + c * 97) % n;
                    if let Ok(b) = fs::read(d.join(format!("f{i}.bin"))) {
                        acc ^= sha2::Sha256::digest(&b)[0];
                    }
                }
                std::hint::black_box(acc);
            });
        }
    });
    let read_hash_all = (cpus * per_thread) as f64 / t.elapsed().as_secs_f64();

    Ok(Limits {
        durable_file_create_per_s: durable_file,
        durable_files_batched_per_s: durable_batch,
        read_and_hash_all_cores_per_s: read_hash_all,
        sqlite_durable_commit_per_s: commit,
        single_save_limit_per_s: 1.0 / (1.0 / durable_file + 1.0 / commit),
        sqlite_rows_in_1000_row_txns_per_s: batch_rows,
        sha256_payloads_per_s: sha,
        sha256_mb_per_s: sha * size as f64 / 1e6,
        warm_read_per_s: reads,
    })
}

struct Phase {
    start: Instant,
    /// Time inside the phase spent on the benchmark's own work, not counted.
    excluded: Duration,
}

impl Phase {
    fn start() -> Self {
        reset_peak_rss();
        Self {
            start: Instant::now(),
            excluded: Duration::ZERO,
        }
    }

    fn exclude(&mut self, d: Duration) {
        self.excluded += d;
    }

    fn end(
        self,
        n: usize,
        name: &str,
        ops: u64,
        limit: Option<f64>,
        note: impl Into<String>,
    ) -> Row {
        let elapsed = self.start.elapsed().saturating_sub(self.excluded);
        let row = Row {
            layout: String::new(),
            n,
            phase: name.into(),
            ops,
            elapsed_s: elapsed.as_secs_f64(),
            ops_per_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
            peak_rss_mib: peak_rss_mib(),
            limit_ops_per_s: limit,
            note: note.into(),
        };
        eprintln!(
            "  {:<22} {:>9} ops {:>9.3} s {:>12.0} ops/s {:>7.1} MiB {}",
            row.phase, row.ops, row.elapsed_s, row.ops_per_s, row.peak_rss_mib, row.note
        );
        row
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Bytes a directory tree takes on disk (allocated blocks), and its files' lengths.
fn disk_usage(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut alloc = 0;
    let mut apparent = 0;
    let Ok(rd) = fs::read_dir(path) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = disk_usage(&e.path());
            alloc += a;
            apparent += b;
        } else {
            alloc += m.blocks() * 512;
            apparent += m.len();
        }
    }
    (alloc, apparent)
}

/// `total` single saves from `concurrency` tasks at once; caller `c` saves txs
/// `k * concurrency + c` (arrival order) or, `spread`, `c * per + k`.
async fn concurrent_saves(
    sm: &StorageManager,
    prefix: &'static str,
    total: usize,
    concurrency: usize,
    size: usize,
    spread: bool,
) -> Result<()> {
    let callers = concurrency.max(1);
    let per = total.div_ceil(callers);
    let mut tasks = Vec::new();
    for c in 0..callers {
        let sm = sm.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per {
                let i = if spread { c * per + k } else { k * callers + c };
                if i >= total {
                    break;
                }
                sm.save(tx(prefix, i, size)?).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn run_n(
    args: &Args,
    root: &Path,
    n: usize,
    limits: &Limits,
    layout: Layout,
) -> Result<Vec<Row>> {
    let mut rows = run_phases(args, root, n, limits, layout).await?;
    for r in &mut rows {
        r.layout = layout.to_string();
    }
    Ok(rows)
}

async fn run_phases(
    args: &Args,
    root: &Path,
    n: usize,
    limits: &Limits,
    layout: Layout,
) -> Result<Vec<Row>> {
    let dir = root.join(format!("store-{layout}-{n}"));
    let base = dir.join("data");
    let db = match layout {
        Layout::Postgres => PathBuf::from(pg::database(args, n)?),
        _ => base.join("poh.db"),
    };
    // As the Python package opens stores: a lone caller's save commits on its own thread.
    let opts = poh_storage::OpenOptions {
        layout: Some(layout),
        inline_saves: !args.no_inline_saves,
        ..poh_storage::OpenOptions::default()
    };
    let sm = StorageManager::open_with(&base, &db, opts).await?;
    let size = args.size;
    let mut rows = Vec::new();
    eprintln!("N = {n}, layout {layout}");

    // 1. one durable save at a time
    let single = n.min(args.single);
    settle(root);
    let p = Phase::start();
    for i in 0..single {
        sm.save(tx("s", i, size)?).await?;
    }
    rows.push(p.end(
        n,
        "save (one at a time)",
        single as u64,
        Some(limits.single_save_limit_per_s),
        if args.no_inline_saves {
            "limit: durable file create + one durable SQLite commit; through the writer thread"
        } else {
            "limit: durable file create + one durable SQLite commit; committed on the caller's thread (inline_saves)"
        },
    ));

    // 2. batched saves: fills the store with N txs. Only the save_batch calls are timed:
    //    making the txs (payload bytes from a PRNG) is the benchmark's work, not the store's.
    let mut p = Phase::start();
    let mut i = 0;
    while i < n {
        let end = (i + args.batch).min(n);
        let made = Instant::now();
        let txs = (i..end)
            .map(|j| tx("b", j, size))
            .collect::<Result<Vec<_>>>()?;
        p.exclude(made.elapsed());
        sm.save_batch(txs).await?;
        i = end;
    }
    rows.push(p.end(
        n,
        "save_batch",
        n as u64,
        Some(limits.durable_files_batched_per_s),
        format!(
            "{} per batch; limit: 1,000 durable files at once",
            args.batch
        ),
    ));

    // 3. many concurrent single saves (group commit): in arrival order (the txs in flight
    //    are next to each other in time, as a node receives them), then spread (each
    //    caller in its own stretch of time: the txs in flight span several windows, the
    //    worst case of a time-bucketed layout: one flush per window touched).
    let total = n.min(args.concurrent_total);
    for (prefix, spread, name) in [
        ("c", false, "save (concurrent)"),
        ("w", true, "save (concurrent, spread)"),
    ] {
        let p = Phase::start();
        concurrent_saves(&sm, prefix, total, args.concurrency, size, spread).await?;
        let note = if spread {
            format!(
                "{} callers, caller k saving txs k*{}.. (1 s apart): the txs in flight span {:.1} h",
                args.concurrency,
                total.div_ceil(args.concurrency.max(1)),
                total as f64 / 3600.0
            )
        } else {
            format!(
                "{} callers, txs in arrival order; limit as for save_batch",
                args.concurrency
            )
        };
        rows.push(p.end(
            n,
            name,
            total as u64,
            Some(limits.durable_files_batched_per_s),
            note,
        ));
    }
    let total = 2 * total;

    // Disk use of everything saved so far, against the bytes of what it holds.
    if layout == Layout::Postgres {
        sm.close().await?;
        rows.push(pg::disk_row(args, n, (single + n + total) as u64)?);
    } else {
        sm.close().await?;
        let (alloc, apparent) = disk_usage(&base);
        let stored = (single + n + total) as u64;
        let id_len = 9u64; // "b00000000"
        let useful = stored * (size as u64 + id_len + "bench-holder".len() as u64 + 32);
        let note = format!(
            "{:.0} B/tx allocated, {:.0} B/tx apparent; {:.2}x the bytes of payloads + ids + holders + hashes",
            alloc as f64 / stored as f64,
            apparent as f64 / stored as f64,
            alloc as f64 / useful as f64
        );
        eprintln!("  disk                   {note}");
        rows.push(Row {
            layout: String::new(),
            n,
            phase: "disk".into(),
            ops: stored,
            elapsed_s: 0.0,
            ops_per_s: 0.0,
            peak_rss_mib: 0.0,
            limit_ops_per_s: None,
            note,
        });
    }
    let sm = StorageManager::open(&base, &db).await?;

    // 4. loads with verification
    // Ids are made chunk by chunk, so the benchmark's own memory does not grow with N.
    let ids_in = |range: std::ops::Range<usize>| -> Result<Vec<TxId>> {
        Ok(range
            .map(|i| TxId::new(format!("b{i:08}")))
            .collect::<Result<_, _>>()?)
    };
    let one_by_one = n.min(20_000);
    let p = Phase::start();
    for id in ids_in(0..one_by_one)? {
        sm.load(&id).await?.context("missing tx")?;
    }
    rows.push(p.end(
        n,
        "load (one call each)",
        one_by_one as u64,
        None,
        "one hand-off per call",
    ));

    // The first pass over the whole store meets cold directory and inode caches at large
    // N; the second is the warm figure.
    for pass in ["load_many (first pass)", "load_many (warm)"] {
        let p = Phase::start();
        for start in (0..n).step_by(256) {
            for r in sm.load_many(ids_in(start..(start + 256).min(n))?).await? {
                r?.context("missing tx")?;
            }
        }
        rows.push(p.end(
            n,
            pass,
            n as u64,
            Some(limits.warm_read_per_s.min(limits.sha256_payloads_per_s)),
            "256 per call; limit: warm read or SHA-256 (1 core), the slower",
        ));
    }

    // concurrent loaders
    let loaders = 4;
    let p = Phase::start();
    let mut tasks = Vec::new();
    let part = n.div_ceil(loaders);
    for l in 0..loaders {
        let sm = sm.clone();
        let range = (l * part).min(n)..((l + 1) * part).min(n);
        tasks.push(tokio::spawn(async move {
            for start in range.clone().step_by(64) {
                let ids = (start..(start + 64).min(range.end))
                    .map(|i| TxId::new(format!("b{i:08}")))
                    .collect::<Result<Vec<_>, _>>()?;
                for r in sm.load_many(ids).await? {
                    r?.context("missing tx")?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    rows.push(p.end(
        n,
        "load_many (4 tasks, warm)",
        n as u64,
        Some(limits.read_and_hash_all_cores_per_s),
        "64 per call; limit: warm read + SHA-256 on all cores",
    ));

    // 5. list
    let p = Phase::start();
    let mut after = None;
    let mut listed = 0u64;
    loop {
        let page = sm.list_page(after, 1000).await?;
        listed += page.rows.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    rows.push(p.end(
        n,
        "list",
        listed,
        None,
        "pages of 1000 full rows (on segments: each hash read from its record's header)",
    ));
    let p = Phase::start();
    let mut after = None;
    let mut listed = 0u64;
    loop {
        let page = sm.list_ids_page(after, 1000).await?;
        listed += page.ids.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    rows.push(p.end(
        n,
        "list ids",
        listed,
        None,
        "pages of 1000 ids, as `poh-storage list` does",
    ));

    // 6. TTL pass with nothing expired (median of 50), through poh-ttl as the daemon runs it
    let now = T0 + 2e7;
    let clock = ManualClock::new(now);
    let ttl_none = TtlManager::from_secs_f64(sm.clone(), now - T0 + 1.0)?.with_clock(clock.clone());
    let mut times = Vec::new();
    reset_peak_rss();
    for _ in 0..50 {
        let t = Instant::now();
        let pass = ttl_none.scan_summary(ScanMode::Delete).await?;
        times.push(t.elapsed());
        anyhow::ensure!(pass.count == 0, "nothing should expire");
    }
    let med = median(times);
    rows.push(Row {
        layout: String::new(),
        n,
        phase: "ttl scan (none expired)".into(),
        ops: 1,
        elapsed_s: med.as_secs_f64(),
        ops_per_s: 1.0 / med.as_secs_f64().max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        limit_ops_per_s: None,
        note: "median of 50 passes".into(),
    });
    eprintln!(
        "  ttl scan (none expired) {:.3} ms",
        med.as_secs_f64() * 1e3
    );

    // 7. TTL pass expiring 10 % of the store (the oldest batched txs)
    let stored = sm.stats().await?.count as usize;
    let cutoff_i = (stored / 10).min(n);
    let ttl_10 = TtlManager::from_secs_f64(sm.clone(), now - (T0 + cutoff_i as f64) - 0.5)?
        .with_clock(clock);
    let p = Phase::start();
    let pass = ttl_10.scan_summary(ScanMode::Delete).await?;
    rows.push(p.end(
        n,
        "ttl scan (10% expired)",
        pass.count,
        None,
        format!("{} batches of 1000", pass.batches),
    ));
    if layout == Layout::Segments {
        // 7b. The work the drops left: the index rows of the dropped windows, which the
        //     passes after sweep (docs/design.md §7.5), timed as one phase.
        let passes = pass.count.div_ceil(poh_storage::SEGMENTS_SWEEP_ROWS as u64) + 1;
        let p = Phase::start();
        for _ in 0..passes {
            let again = ttl_10.scan_summary(ScanMode::Delete).await?;
            anyhow::ensure!(again.count == 0, "nothing more should expire");
        }
        rows.push(p.end(
            n,
            "ttl scan (10% expired): later sweeps",
            pass.count,
            None,
            format!(
                "the {passes} passes after, sweeping up to {} index rows each",
                poh_storage::SEGMENTS_SWEEP_ROWS
            ),
        ));
    }

    // 8. verify and recover over the whole store
    let p = Phase::start();
    let report = sm.verify().await?;
    anyhow::ensure!(
        report.is_clean(),
        "verify found problems: {:?}",
        report.findings.first()
    );
    rows.push(p.end(
        n,
        "verify",
        report.rows_checked,
        Some(limits.read_and_hash_all_cores_per_s),
        "limit: warm read + SHA-256 on all cores",
    ));
    let p = Phase::start();
    let report = sm.recover(false).await?;
    anyhow::ensure!(report.is_clean(), "recover found problems");
    rows.push(p.end(n, "recover", report.rows_checked, None, "nothing to repair"));

    sm.close().await?;
    // The store stays until the end of the run: deleting a million files here would slow
    // the next N's file creations (ext4 holds freed inodes back for a while).
    Ok(rows)
}

/// The SQLite-BLOB peer: what a user might pick instead — one table holding the payload
/// as a BLOB beside its fields, WAL, `synchronous=FULL` (the same durability), the same
/// txs and phases, one connection on this thread.
fn run_sqlite_peer(args: &Args, root: &Path, n: usize) -> Result<Vec<Row>> {
    use sha2::Digest as _;
    let dir = root.join(format!("peer-sqlite-{n}"));
    fs::create_dir_all(&dir)?;
    let path = dir.join("blobs.db");
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE txs (tx_id TEXT PRIMARY KEY, holder_id TEXT NOT NULL,
            timestamp REAL NOT NULL, hash BLOB NOT NULL, payload BLOB NOT NULL);
         CREATE INDEX txs_ts ON txs(timestamp, tx_id);",
    )?;
    let size = args.size;
    let insert = "INSERT OR REPLACE INTO txs VALUES (?1, ?2, ?3, ?4, ?5)";
    let put = |c: &rusqlite::Connection, t: &Tx| -> Result<()> {
        let hash: [u8; 32] = sha2::Sha256::digest(&t.payload).into();
        c.prepare_cached(insert)?.execute(rusqlite::params![
            t.tx_id.as_str(),
            t.holder_id,
            t.timestamp,
            &hash[..],
            t.payload
        ])?;
        Ok(())
    };
    let mut rows = Vec::new();
    eprintln!("N = {n}, peer sqlite-blob");

    let single = n.min(args.single);
    settle(root);
    let p = Phase::start();
    for i in 0..single {
        put(&conn, &tx("s", i, size)?)?;
    }
    rows.push(p.end(
        n,
        "save (one at a time)",
        single as u64,
        None,
        "one durable commit each",
    ));

    let mut p = Phase::start();
    let mut i = 0;
    while i < n {
        let end = (i + args.batch).min(n);
        let made = Instant::now();
        let txs = (i..end)
            .map(|j| tx("b", j, size))
            .collect::<Result<Vec<_>>>()?;
        p.exclude(made.elapsed());
        let t = conn.transaction()?;
        for x in &txs {
            put(&t, x)?;
        }
        t.commit()?;
        i = end;
    }
    rows.push(p.end(
        n,
        "save_batch",
        n as u64,
        None,
        format!("{} per transaction", args.batch),
    ));

    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    let (alloc, apparent) = disk_usage(&dir);
    let stored = (single + n) as u64;
    let useful = stored * (size as u64 + 9 + "bench-holder".len() as u64 + 32);
    rows.push(Row {
        layout: String::new(),
        n,
        phase: "disk".into(),
        ops: stored,
        elapsed_s: 0.0,
        ops_per_s: 0.0,
        peak_rss_mib: 0.0,
        limit_ops_per_s: None,
        note: format!(
            "{:.0} B/tx allocated, {:.0} B/tx apparent; {:.2}x the bytes of payloads + ids + holders + hashes",
            alloc as f64 / stored as f64,
            apparent as f64 / stored as f64,
            alloc as f64 / useful as f64
        ),
    });

    for pass in ["load_many (first pass)", "load_many (warm)"] {
        let p = Phase::start();
        let mut st = conn.prepare_cached("SELECT hash, payload FROM txs WHERE tx_id = ?1")?;
        for i in 0..n {
            let id = format!("b{i:08}");
            let (hash, payload): (Vec<u8>, Vec<u8>) =
                st.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let got: [u8; 32] = sha2::Sha256::digest(&payload).into();
            anyhow::ensure!(got[..] == hash[..], "peer payload {id} fails its hash");
        }
        drop(st);
        rows.push(p.end(n, pass, n as u64, None, "one SELECT + SHA-256 per tx"));
    }

    let cutoff = T0 + (stored as f64 / 10.0).floor();
    let p = Phase::start();
    let mut expired = 0u64;
    loop {
        let t = conn.transaction()?;
        let k = t.execute(
            "DELETE FROM txs WHERE tx_id IN (SELECT tx_id FROM txs WHERE timestamp < ?1
                ORDER BY timestamp, tx_id LIMIT 1000)",
            [cutoff],
        )?;
        t.commit()?;
        expired += k as u64;
        if k < 1000 {
            break;
        }
    }
    rows.push(p.end(
        n,
        "ttl scan (10% expired)",
        expired,
        None,
        "batches of 1000",
    ));
    for r in &mut rows {
        r.layout = "sqlite-blob".into();
    }
    Ok(rows)
}

/// The RocksDB peer: what a user might pick instead — one column family of records (id →
/// holder, timestamp, SHA-256, payload) and one of `(timestamp, id)` keys for expiry, every
/// write synced (`WriteOptions::set_sync`), the same txs and phases.
#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use poh_bench::rocks_peer::put;
    use rocksdb::{IteratorMode, WriteBatch};
    use sha2::Digest as _;

    /// Checks a stored value's payload against its SHA-256.
    fn verify(id: &str, v: &[u8]) -> Result<()> {
        let bad = || anyhow::anyhow!("peer value of {id} is malformed");
        let hl = usize::from(u16::from_le_bytes(v.get(..2).ok_or_else(bad)?.try_into()?));
        let at = 2 + hl + 8;
        let hash = v.get(at..at + 32).ok_or_else(bad)?;
        let got: [u8; 32] = sha2::Sha256::digest(&v[at + 32..]).into();
        anyhow::ensure!(got[..] == hash[..], "peer payload {id} fails its hash");
        Ok(())
    }

    pub(super) fn run_rocksdb_peer(args: &Args, root: &Path, n: usize) -> Result<Vec<Row>> {
        let dir = root.join(format!("peer-rocksdb-{n}"));
        let db = std::sync::Arc::new(poh_bench::rocks_peer::open(&dir)?);
        let synced = poh_bench::rocks_peer::synced();
        let size = args.size;
        let mut rows = Vec::new();
        eprintln!("N = {n}, peer rocksdb");

        let single = n.min(args.single);
        super::settle(root);
        let p = Phase::start();
        for i in 0..single {
            let mut b = WriteBatch::default();
            put(&mut b, &db, &tx("s", i, size)?)?;
            db.write_opt(b, &synced)?;
        }
        rows.push(p.end(
            n,
            "save (one at a time)",
            single as u64,
            None,
            "one synced write each",
        ));

        let mut p = Phase::start();
        let mut i = 0;
        while i < n {
            let end = (i + args.batch).min(n);
            let made = Instant::now();
            let txs = (i..end)
                .map(|j| tx("b", j, size))
                .collect::<Result<Vec<_>>>()?;
            p.exclude(made.elapsed());
            let mut b = WriteBatch::default();
            for t in &txs {
                put(&mut b, &db, t)?;
            }
            db.write_opt(b, &synced)?;
            i = end;
        }
        rows.push(p.end(
            n,
            "save_batch",
            n as u64,
            None,
            format!("{} per synced write batch", args.batch),
        ));

        // Concurrent callers, each a synced single write (RocksDB groups concurrent writers
        // into one WAL write and sync).
        let total = n.min(args.concurrent_total);
        let args_concurrency = args.concurrency.max(1);
        let per = total.div_ceil(args_concurrency);
        let p = Phase::start();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..args.concurrency)
                .map(|c| {
                    let db = db.clone();
                    s.spawn(move || -> Result<()> {
                        let synced = poh_bench::rocks_peer::synced();
                        for k in 0..per {
                            let i = k * args_concurrency + c;
                            if i >= total {
                                break;
                            }
                            let mut b = WriteBatch::default();
                            put(&mut b, &db, &tx("c", i, size)?)?;
                            db.write_opt(b, &synced)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
            }
            Ok(())
        })?;
        rows.push(p.end(
            n,
            "save (concurrent)",
            total as u64,
            None,
            format!("{} threads, one synced write each", args.concurrency),
        ));

        // Disk after a flush of the memtables (as the SQLite peer measures after a
        // checkpoint).
        db.flush_cfs_opt(
            &[
                db.cf_handle("data").context("no data column family")?,
                db.cf_handle("time").context("no time column family")?,
            ],
            &rocksdb::FlushOptions::default(),
        )?;
        let (alloc, apparent) = disk_usage(&dir);
        let stored = (single + n + total) as u64;
        let useful = stored * (size as u64 + 9 + "bench-holder".len() as u64 + 32);
        rows.push(Row {
            layout: String::new(),
            n,
            phase: "disk".into(),
            ops: stored,
            elapsed_s: 0.0,
            ops_per_s: 0.0,
            peak_rss_mib: 0.0,
            limit_ops_per_s: None,
            note: format!(
                "{:.0} B/tx allocated, {:.0} B/tx apparent; {:.2}x the bytes of payloads + ids + holders + hashes",
                alloc as f64 / stored as f64,
                apparent as f64 / stored as f64,
                alloc as f64 / useful as f64
            ),
        });

        let data = db.cf_handle("data").context("no data column family")?;
        for pass in ["load_many (first pass)", "load_many (warm)"] {
            let p = Phase::start();
            for i in 0..n {
                let id = format!("b{i:08}");
                let v = db
                    .get_pinned_cf(data, id.as_bytes())?
                    .with_context(|| format!("peer lost {id}"))?;
                verify(&id, &v)?;
            }
            rows.push(p.end(n, pass, n as u64, None, "one get + SHA-256 per tx"));
        }

        // Expire the oldest 10 %: walk the time keys below the cutoff, delete both keys,
        // 1,000 per synced batch.
        let time = db.cf_handle("time").context("no time column family")?;
        let cutoff = (T0 + (stored as f64 / 10.0).floor())
            .to_bits()
            .to_be_bytes();
        let p = Phase::start();
        let mut expired = 0u64;
        let mut batch = WriteBatch::default();
        let mut in_batch = 0;
        for item in db.iterator_cf(time, IteratorMode::Start) {
            let (k, _) = item?;
            if k.len() < 8 || k[..8] >= cutoff[..] {
                break;
            }
            batch.delete_cf(data, &k[8..]);
            batch.delete_cf(time, &k);
            in_batch += 1;
            if in_batch == 1000 {
                db.write_opt(std::mem::take(&mut batch), &synced)?;
                expired += in_batch;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            db.write_opt(batch, &synced)?;
            expired += in_batch;
        }
        rows.push(p.end(
            n,
            "ttl scan (10% expired)",
            expired,
            None,
            "batches of 1000 (time-key walk, synced)",
        ));
        for r in &mut rows {
            r.layout = "rocksdb".into();
        }
        Ok(rows)
    }
}

/// Each phase's ops/s per layout side by side, and segments' ratio to each other one.
fn comparison(report: &Report) -> String {
    let phases = [
        "save (one at a time)",
        "save_batch",
        "save (concurrent)",
        "save (concurrent, spread)",
        "load_many (first pass)",
        "load_many (warm)",
        "ttl scan (10% expired)",
        "disk",
    ];
    let mut layouts: Vec<&str> = Vec::new();
    for r in &report.rows {
        if !layouts.contains(&r.layout.as_str()) {
            layouts.push(&r.layout);
        }
    }
    if layouts.len() < 2 {
        return String::new();
    }
    let mut s =
        String::from("\nSide by side (ops/s; disk: allocated bytes per tx):\n\n| N | phase |");
    for l in &layouts {
        s.push_str(&format!(" {l} |"));
    }
    for l in layouts.iter().filter(|l| **l != "segments") {
        s.push_str(&format!(" segments / {l} |"));
    }
    s.push('\n');
    s.push_str(&"|---".repeat(2 + layouts.len() * 2 - 1));
    s.push_str("|\n");
    let mut ns: Vec<usize> = report.rows.iter().map(|r| r.n).collect();
    ns.dedup();
    for n in ns {
        for ph in phases {
            let value = |l: &str| -> Option<f64> {
                let r = report
                    .rows
                    .iter()
                    .find(|r| r.n == n && r.phase == ph && r.layout == l)?;
                if ph == "disk" {
                    r.note
                        .split(" B/tx")
                        .next()
                        .and_then(|v| v.trim().parse::<f64>().ok())
                } else {
                    Some(r.ops_per_s)
                }
            };
            if layouts.iter().all(|l| value(l).is_none()) {
                continue;
            }
            s.push_str(&format!("| {n} | {ph} |"));
            for l in &layouts {
                s.push_str(&value(l).map_or(" – |".into(), |v| format!(" {v:.0} |")));
            }
            let seg = value("segments");
            for l in layouts.iter().filter(|l| **l != "segments") {
                let cell = match (seg, value(l)) {
                    // For disk, smaller is better: the ratio says how many times less.
                    (Some(a), Some(b)) if ph == "disk" && a > 0.0 => {
                        format!(" {:.2}x less |", b / a)
                    }
                    (Some(a), Some(b)) if b > 0.0 => format!(" {:.2}x |", a / b),
                    _ => " – |".into(),
                };
                s.push_str(&cell);
            }
            s.push('\n');
        }
    }
    s
}

fn markdown(report: &Report) -> String {
    let mut s = format!(
        "Machine: {}. Payload: {} bytes.\n\nMachine limits, measured right before each N's phases:\n\n",
        report.machine, report.payload_bytes
    );
    s.push_str("| N | durable file create (temp, fsync, rename, fsync dir) | 1,000 durable files at once | durable SQLite commit | one-at-a-time save limit | SQLite rows in 1,000-row txns | SHA-256 (1 core) | warm read (1 core) | warm read + SHA-256 (all cores) |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (n, l) in &report.limits {
        s.push_str(&format!(
            "| {n} | {:.0}/s | {:.0}/s | {:.0}/s | {:.0}/s | {:.0}/s | {:.0}/s ({:.0} MB/s) | {:.0}/s | {:.0}/s |\n",
            l.durable_file_create_per_s,
            l.durable_files_batched_per_s,
            l.sqlite_durable_commit_per_s,
            l.single_save_limit_per_s,
            l.sqlite_rows_in_1000_row_txns_per_s,
            l.sha256_payloads_per_s,
            l.sha256_mb_per_s,
            l.warm_read_per_s,
            l.read_and_hash_all_cores_per_s,
        ));
    }
    s.push('\n');
    s.push_str("| layout | N | phase | ops | elapsed | ops/s | peak RSS | vs limit | note |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---|\n");
    for r in &report.rows {
        let elapsed = if r.elapsed_s < 0.1 {
            format!("{:.2} ms", r.elapsed_s * 1e3)
        } else {
            format!("{:.2} s", r.elapsed_s)
        };
        let ratio = r
            .limit_ops_per_s
            .map_or(String::new(), |l| format!("{:.2}x", r.ops_per_s / l));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} MiB | {} | {} |\n",
            r.layout, r.n, r.phase, r.ops, elapsed, r.ops_per_s, r.peak_rss_mib, ratio, r.note
        ));
    }
    s.push_str(&comparison(report));
    s
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // RUST_LOG=poh_storage=debug shows, per group commit, where its time went.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    anyhow::ensure!(
        args.batch > 0 && args.concurrency > 0,
        "--batch and --concurrency must be > 0"
    );
    let root = match &args.dir {
        Some(d) => tempfile::TempDir::new_in(d),
        None => tempfile::TempDir::new(),
    }
    .context("create benchmark directory")?;
    let mut rows = Vec::new();
    let mut all_limits = Vec::new();
    for &n in &args.n {
        eprintln!("measuring machine limits in {}", root.path().display());
        let limits = measure_limits(root.path(), args.size)?;
        eprintln!("{limits:#?}");
        for &layout in &args.layout {
            rows.extend(run_n(&args, root.path(), n, &limits, layout).await?);
        }
        if args.layout.contains(&Layout::Postgres) {
            rows.extend(pg::partition_drop_vs_delete(&args, n).await?);
        }
        for peer in &args.peers {
            match peer.as_str() {
                "sqlite" => rows.extend(run_sqlite_peer(&args, root.path(), n)?),
                #[cfg(feature = "rocksdb")]
                "rocksdb" => rows.extend(rocks::run_rocksdb_peer(&args, root.path(), n)?),
                #[cfg(not(feature = "rocksdb"))]
                "rocksdb" => anyhow::bail!(
                    "the rocksdb peer is not in this build: build poh-bench with `--features rocksdb`"
                ),
                other => anyhow::bail!("unknown peer {other:?} (known: sqlite, rocksdb)"),
            }
        }
        all_limits.push((n, limits));
    }
    let report = Report {
        machine: machine(),
        payload_bytes: args.size,
        limits: all_limits,
        rows,
    };
    pg::shutdown();
    let md = markdown(&report);
    println!("{md}");
    if let Some(p) = &args.markdown {
        fs::write(p, &md).with_context(|| format!("write {}", p.display()))?;
    }
    if let Some(p) = &args.json {
        fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}
