//! A `poh-storage import` or a `poh-ttl scan` killed with SIGKILL at any moment never loses
//! an acknowledged tx: after reopening and recovering, every acknowledged tx loads with
//! identical fields (or as the version that was in flight), an import batch lands whole or
//! not at all, no row lacks a valid payload, and a killed TTL scan removed only expired txs.
//!
//! Each iteration runs the real binaries on one store that lives through the whole loop:
//! an import of new ids and re-saves with fresh payloads and timestamps (a random
//! `--batch-size`), a TTL scan over old-stamped txs, or both at once. The parent reads the
//! acknowledged ids (`--print-acked`) or the scan's batch log lines and sends SIGKILL after
//! a random number of them plus a random delay of a few hundred microseconds, so kills land
//! inside batches: between temp writes, commit, renames and removals. The store is then
//! checked against an exact model, which becomes the store's contents for the next
//! iteration.
//!
//! `POH_KILL_ITERS` sets the number of iterations (default 250); `POH_SEED` repeats a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Rng, bin, lines_of, now, signal};
use poh_storage::{Layout, OpenOptions, ProblemKind, StorageManager, Tx, TxId};

/// Only a safety net against a hung child; the test waits on its output, never on time.
const SAFETY: Duration = Duration::from_secs(120);
/// TTL given to `poh-ttl scan`. Old txs are stamped at least two TTLs back, fresh ones at
/// most an hour back, so no tx changes class while the loop runs.
const TTL_SECS: f64 = 86_400.0;
const DEFAULT_ITERS: u64 = 250;
/// Above this many stored txs, imports only re-save (keeps each check fast).
const MAX_STORED: usize = 400;
/// Longest extra delay between the chosen output line and the kill, before the child's
/// batch period is known.
const MAX_DELAY_US: u64 = 1500;
/// Cap on a measured batch period used for delays.
const MAX_PERIOD_US: u64 = 20_000;

type State = BTreeMap<String, Tx>;

fn is_old(tx: &Tx) -> bool {
    now() - tx.timestamp > TTL_SECS
}

/// Waits `us` microseconds without sleeping: the kill's timing within a batch.
fn spin(us: u64) {
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::thread::yield_now();
    }
}

/// A running child, with the lines of its progress stream (stdout of an import: the
/// acknowledged ids; stderr of a scan: its log) and the other stream collected.
struct Proc {
    what: &'static str,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// When each progress line arrived.
    arrivals: Vec<Instant>,
    other: Option<JoinHandle<String>>,
}

impl Proc {
    fn collect(stream: impl Read + Send + 'static) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut stream = stream;
            let _ = stream.read_to_string(&mut s);
            s
        })
    }

    /// Reads progress lines until `k` of them satisfy `is_progress` or the child closed
    /// the stream.
    fn wait_progress(&mut self, k: usize, is_progress: fn(&str) -> bool) {
        let mut count = self.seen.iter().filter(|l| is_progress(l)).count();
        while count < k {
            match self.lines.recv_timeout(SAFETY) {
                Ok(line) => {
                    if is_progress(&line) {
                        count += 1;
                        self.arrivals.push(Instant::now());
                    }
                    self.seen.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} stalled:\n{}", self.what, self.seen.join("\n"))
                }
            }
        }
    }

    /// The longest gap between progress lines so far: about one batch's duration, so a
    /// delay drawn below it lands anywhere in the next batch.
    fn period_us(&self) -> Option<u64> {
        self.arrivals
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_micros() as u64)
            .max()
            .filter(|&p| p > 0)
            .map(|p| p.min(MAX_PERIOD_US))
    }

    /// A random delay: none, within one batch period, or a short fixed range before any
    /// period is known.
    fn delay_us(&self, rng: &mut Rng) -> u64 {
        if rng.below(4) == 0 {
            return 0;
        }
        match self.period_us() {
            Some(p) => rng.below(p + p / 4 + 1),
            None => rng.below(MAX_DELAY_US + 1),
        }
    }

    fn kill(&self) {
        // A child that already exited is a zombie until waited for: kill(2) still succeeds.
        signal(&self.child, libc::SIGKILL);
    }

    /// Reads the rest of the progress stream, reaps the child and returns its status,
    /// every progress line and the other stream.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        loop {
            match self.lines.recv_timeout(SAFETY) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} never ended:\n{}", self.what, self.seen.join("\n"))
                }
            }
        }
        let status = self.child.wait().expect("wait for child");
        let other = self
            .other
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, self.seen, other)
    }
}

fn killed(status: &ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

fn spawn_import(base: &Path, db: &Path, batch_size: usize, input: &[Tx]) -> Proc {
    let mut child = Command::new(bin("poh-storage"))
        .arg("--base")
        .arg(base)
        .arg("--db")
        .arg(db)
        .args(["import", "--print-acked", "--batch-size"])
        .arg(batch_size.to_string())
        .arg("-")
        .env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_LAYOUT")
        .env_remove("POH_MAX_PAYLOAD")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poh-storage import");
    let text: String = input.iter().map(|t| t.to_json() + "\n").collect();
    let mut stdin = child.stdin.take().expect("stdin");
    // The child may die before reading it all: a broken pipe is expected then.
    std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let other = Some(Proc::collect(child.stderr.take().expect("stderr")));
    Proc {
        what: "import",
        child,
        lines,
        seen: Vec::new(),
        arrivals: Vec::new(),
        other,
    }
}

fn spawn_scan(base: &Path, db: &Path, batch_size: usize) -> Proc {
    let mut child = Command::new(bin("poh-ttl"))
        .arg("scan")
        .arg("--base")
        .arg(base)
        .arg("--db")
        .arg(db)
        .args(["--ttl", &TTL_SECS.to_string(), "--batch-size"])
        .arg(batch_size.to_string())
        .env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_LAYOUT")
        // One log line per committed batch of deletions, naming the ids.
        .env("RUST_LOG", "poh_ttl=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poh-ttl scan");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let other = Some(Proc::collect(child.stdout.take().expect("stdout")));
    Proc {
        what: "ttl scan",
        child,
        lines,
        seen: Vec::new(),
        arrivals: Vec::new(),
        other,
    }
}

fn is_ack(_: &str) -> bool {
    true
}

fn is_ttl_batch(line: &str) -> bool {
    line.contains("TTL batch")
}

/// The ids of a `TTL batch ... ids=["a", "b"]` log line (ids never need escaping).
fn ttl_batch_ids(line: &str) -> Vec<String> {
    let Some(start) = line.find("ids=[") else {
        return Vec::new();
    };
    let rest = &line[start + 5..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .split(", ")
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Generates one import's input: new ids and re-saves (of stored ids and of ids earlier in
/// the same input), each version with its own holder, timestamp and payload.
struct Gen {
    next_id: u64,
    version: u64,
}

impl Gen {
    fn input(&mut self, rng: &mut Rng, stored: &State, n: usize) -> Vec<Tx> {
        let stored_ids: Vec<&String> = stored.keys().collect();
        let mut out: Vec<Tx> = Vec::with_capacity(n);
        for _ in 0..n {
            let roll = rng.below(100);
            let id = if roll < 8 && !out.is_empty() {
                out[rng.below(out.len() as u64) as usize].tx_id.to_string()
            } else if !stored_ids.is_empty() && (roll < 50 || stored.len() >= MAX_STORED) {
                stored_ids[rng.below(stored_ids.len() as u64) as usize].clone()
            } else {
                self.next_id += 1;
                match self.next_id % 3 {
                    0 => format!("k{}", self.next_id),
                    1 => format!("tx.{}", self.next_id),
                    _ => format!("id_{}-x", self.next_id),
                }
            };
            self.version += 1;
            let ts = if rng.below(100) < 35 {
                now() - 2.0 * TTL_SECS - rng.below(86_400_000) as f64 / 1000.0
            } else {
                now() - rng.below(3_600_000) as f64 / 1000.0
            };
            let len = rng.below(257) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            out.push(
                Tx::new(id, format!("h{}", self.version), ts, payload).expect("valid generated tx"),
            );
        }
        out
    }
}

fn apply(state: &mut State, txs: &[Tx]) {
    for t in txs {
        state.insert(t.tx_id.to_string(), t.clone());
    }
}

/// What one iteration did, for the check.
struct Outcome {
    /// The store may hold exactly this (the in-flight batch did not commit) ...
    without_inflight: State,
    /// ... or this (it did); equal when no batch was in flight.
    with_inflight: State,
    /// A TTL scan ran: an id whose version in the chosen state is old may be gone.
    scanned: bool,
    /// A TTL scan was killed: its removals may have been cut between row and file.
    scan_killed: bool,
    /// Ids a scan logged as deleted.
    scan_deleted: Vec<String>,
    /// Versions the scan could have seen: the store before and the whole input.
    seen_versions: Vec<Tx>,
    /// An import ran (so a deleted id may have been saved again).
    imported: bool,
}

#[derive(Default)]
struct Counts {
    iterations: u64,
    kills: u64,
    import_kills: u64,
    scan_kills: u64,
    scans: u64,
    acked: u64,
    inflight_committed: u64,
    inflight_dropped: u64,
    scan_deleted: u64,
    txs_checked: u64,
    orphans_removed: u64,
    kills_leaving_temps: u64,
    kills_after_commit: u64,
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_tx() {
    kill_loop(Layout::Files);
}

/// The same loop on a segments store (the binaries open it with its recorded layout):
/// kills land between appends, fdatasyncs, index commits, drops and compaction steps.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_tx_on_segments() {
    kill_loop(Layout::Segments);
}

/// The same loop on a store in PostgreSQL (a throwaway cluster): kills land inside
/// transactions, between them and inside expiry batches; the server rolls back what was
/// not committed.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_tx_on_postgres() {
    let Some(cluster) = poh_testkit::pg::cluster() else {
        return;
    };
    let url = cluster.create_db("killloop").expect("createdb");
    // A killed client's last COMMIT may still be on its way through the server when the
    // child is reaped: the check waits until the server has finished every session of the
    // killed processes, so the outcome it sees is final.
    let settle = || {
        let deadline = Instant::now() + SAFETY;
        loop {
            let open = cluster
                .psql(
                    "killloop",
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poh-store'",
                )
                .expect("psql");
            if open == "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sessions of killed processes linger: {open}"
            );
            std::thread::yield_now();
        }
    };
    // What the database holds of a tx the check finds wrong (after recover's repair; the
    // holder names the version that wrote the row), for the failure message.
    let diagnose = |id: &str| {
        let id = id.replace('\'', "''");
        cluster
            .psql(
                "killloop",
                &format!(
                    "SELECT 'entry', tx_id, timestamp::text, '' FROM poh_ids WHERE tx_id = '{id}'
                     UNION ALL
                     SELECT 'row', tableoid::regclass::text, timestamp::text, holder_id
                     FROM poh_txs WHERE tx_id = '{id}'
                     UNION ALL
                     SELECT 'table', relname::text, '', '' FROM pg_class
                     WHERE relkind IN ('r', 'p') AND relname LIKE 'poh\\_%'"
                ),
            )
            .unwrap_or_else(|e| e)
    };
    kill_loop_at(
        Layout::Postgres,
        Some(PathBuf::from(url)),
        &settle,
        &diagnose,
    );
}

fn kill_loop(layout: Layout) {
    kill_loop_at(layout, None, &|| {}, &|_| String::new());
}

/// The loop on a new store of `layout`: under a temp dir, or in the database `db` names.
/// `settle` runs after each iteration's children are gone, before the check; `diagnose`
/// describes what the store holds of a tx the check finds wrong.
fn kill_loop_at(
    layout: Layout,
    db: Option<PathBuf>,
    settle: &dyn Fn(),
    diagnose: &dyn Fn(&str) -> String,
) {
    let mut rng = Rng::from_env(&format!("kill_loop ({layout})"));
    let iters: u64 = std::env::var("POH_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERS);
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path().join("data");
    let db = db.unwrap_or_else(|| base.join("poh.db"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = OpenOptions {
            layout: Some(layout),
            ..OpenOptions::default()
        };
        let sm = StorageManager::open_with(&base, &db, opts).await.unwrap();
        sm.close().await.unwrap();
    });

    let started = Instant::now();
    let mut stored = State::new();
    let mut g = Gen {
        next_id: 0,
        version: 0,
    };
    let mut c = Counts::default();
    for iter in 0..iters {
        let out = run_iteration(&mut rng, &mut g, &stored, &base, &db, &mut c, iter);
        settle();
        stored = rt.block_on(check(&base, &db, &out, &mut c, iter, diagnose));
        c.iterations += 1;
    }
    eprintln!(
        "kill loop ({layout}): {} iterations in {:.1} s, {} kills ({} imports, {} TTL scans); \
         {} acknowledged txs checked ({} in-flight batches found committed, {} not); \
         {} TTL scans ({} killed) deleted {} txs; {} orphan payloads of killed scans removed by recover; \
         {} tx loads compared; {} txs in the store at the end; \
         {} kills left temp files, {} of them a committed save for the reopen to roll forward",
        c.iterations,
        started.elapsed().as_secs_f64(),
        c.kills,
        c.import_kills,
        c.scan_kills,
        c.acked,
        c.inflight_committed,
        c.inflight_dropped,
        c.scans,
        c.scan_kills,
        c.scan_deleted,
        c.orphans_removed,
        c.txs_checked,
        stored.len(),
        c.kills_leaving_temps,
        c.kills_after_commit,
    );
}

/// Runs one iteration's children and kills; returns what the store may now hold.
fn run_iteration(
    rng: &mut Rng,
    g: &mut Gen,
    stored: &State,
    base: &Path,
    db: &Path,
    c: &mut Counts,
    iter: u64,
) -> Outcome {
    // 5 in 8: import alone; 1 in 8: scan alone; 2 in 8: both at once.
    let kind = rng.below(8);
    let with_import = kind != 5;
    let with_scan = kind >= 5;
    // Who gets killed when both run: the import, the scan, or both.
    let victims = if with_import && with_scan {
        rng.below(3)
    } else if with_import {
        0
    } else {
        1
    };
    let kill_import = with_import && victims != 1;
    let kill_scan = with_scan && victims != 0;

    // Batch sizes 1..=200, spread over the orders of magnitude.
    let batch_size = match rng.below(4) {
        0 => 1 + rng.below(3),
        1 => 1 + rng.below(10),
        2 => 1 + rng.below(50),
        _ => 1 + rng.below(200),
    } as usize;
    // 20..=300 txs, in at most 30 batches (each batch costs a few fsyncs).
    let n = (20 + rng.below(281) as usize).min(batch_size * 30).max(20);
    let input = if with_import {
        g.input(rng, stored, n)
    } else {
        Vec::new()
    };
    let old_stored = stored.values().filter(|t| is_old(t)).count();
    // 1..=20 deletions per batch, in at most about 30 batches.
    let scan_batch = (1 + rng.below(20) as usize).max(old_stored / 30);

    let import_at = rng.below(n as u64 + 1) as usize;
    let scan_at = if rng.below(8) == 0 {
        0
    } else {
        1 + rng.below((old_stored / scan_batch) as u64 + 1) as usize
    };
    let (mut import_delay, mut scan_delay) = (0, 0);

    let scan_first = rng.below(2) == 0;
    let mut scan = None;
    if with_scan && scan_first {
        scan = Some(spawn_scan(base, db, scan_batch));
    }
    let mut import = with_import.then(|| spawn_import(base, db, batch_size, &input));
    if with_scan && !scan_first {
        scan = Some(spawn_scan(base, db, scan_batch));
    }
    if let Some(p) = import.as_mut().filter(|_| kill_import) {
        p.wait_progress(import_at, is_ack);
        import_delay = p.delay_us(rng);
        spin(import_delay);
        p.kill();
    }
    if let Some(p) = scan.as_mut().filter(|_| kill_scan) {
        p.wait_progress(scan_at, is_ttl_batch);
        scan_delay = p.delay_us(rng);
        spin(scan_delay);
        p.kill();
    }

    let ctx = format!(
        "iteration {iter}: import={with_import} (n={n}, batch {batch_size}, kill after {import_at} acks + {import_delay} µs: {kill_import}), \
         scan={with_scan} (batch {scan_batch}, kill after {scan_at} batches + {scan_delay} µs: {kill_scan})"
    );
    let mut without_inflight = stored.clone();
    let mut with_inflight = stored.clone();
    if let Some(p) = import {
        let (status, acked, stderr) = p.finish();
        if killed(&status) {
            c.kills += 1;
            c.import_kills += 1;
        } else {
            assert!(
                status.success(),
                "{ctx}: import failed ({status}):\n{stderr}"
            );
            assert_eq!(acked.len(), n, "{ctx}: import ended early:\n{stderr}");
        }
        // Acknowledged ids are the input's prefix, in order.
        let a = acked.len();
        assert!(a <= n, "{ctx}: more ids acknowledged than sent");
        for (i, id) in acked.iter().enumerate() {
            assert_eq!(
                id.as_str(),
                input[i].tx_id.as_str(),
                "{ctx}: acknowledged line {i}"
            );
        }
        c.acked += a as u64;
        // Ids are printed per batch after its commit; a kill while printing leaves part of
        // a batch printed, and all of it committed. Otherwise the next batch may be in
        // flight.
        let (definite, inflight_end) = if a == n {
            (n, n)
        } else if a % batch_size != 0 {
            let end = ((a / batch_size + 1) * batch_size).min(n);
            (end, end)
        } else {
            (a, (a + batch_size).min(n))
        };
        apply(&mut without_inflight, &input[..definite]);
        with_inflight = without_inflight.clone();
        apply(&mut with_inflight, &input[definite..inflight_end]);
    }
    let mut scan_deleted = Vec::new();
    let mut scan_killed = false;
    if let Some(p) = scan {
        c.scans += 1;
        let (status, log, stdout) = p.finish();
        if killed(&status) {
            c.kills += 1;
            c.scan_kills += 1;
            scan_killed = true;
        } else {
            assert!(
                status.success(),
                "{ctx}: scan failed ({status}):\n{}\n{stdout}",
                log.join("\n")
            );
            let problems: Vec<&String> = log
                .iter()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .collect();
            assert!(problems.is_empty(), "{ctx}: scan reported {problems:#?}");
        }
        scan_deleted = log.iter().flat_map(|l| ttl_batch_ids(l)).collect();
        c.scan_deleted += scan_deleted.len() as u64;
    }
    let mut seen_versions: Vec<Tx> = stored.values().cloned().collect();
    seen_versions.extend(input);
    Outcome {
        without_inflight,
        with_inflight,
        scanned: with_scan,
        scan_killed,
        scan_deleted,
        seen_versions,
        imported: with_import,
    }
}

/// Temp files in `.tmp/`, and how many of them hold the payload their committed row names
/// while the payload file does not (what a read-only verify reports as `rolled_forward`):
/// looked at before any repair.
async fn interrupted_saves(base: &Path, db: &Path) -> (usize, usize) {
    let temps = std::fs::read_dir(base.join(".tmp")).map_or(0, |d| d.count());
    if temps == 0 {
        return (0, 0);
    }
    let opts = OpenOptions {
        create: false,
        read_only: true,
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(base, db, opts)
        .await
        .expect("read-only open");
    let report = sm.verify().await.expect("verify");
    sm.close().await.expect("close");
    (temps, report.rolled_forward.len())
}

/// Reopens the store (repairing `.tmp/`), recovers, verifies and compares every tx with the
/// outcome; returns the store's exact contents.
async fn check(
    base: &PathBuf,
    db: &PathBuf,
    out: &Outcome,
    c: &mut Counts,
    iter: u64,
    diagnose: &dyn Fn(&str) -> String,
) -> State {
    // Where the kills landed: temps of an interrupted save, and among them saves that had
    // passed their commit point (the row already names the temp's content).
    let (temps, committed) = interrupted_saves(base, db).await;
    c.kills_leaving_temps += u64::from(temps > 0);
    c.kills_after_commit += u64::from(committed > 0);
    let sm = StorageManager::open(base, db)
        .await
        .unwrap_or_else(|e| panic!("iteration {iter}: reopen failed: {e}"));
    let report = sm
        .recover(false)
        .await
        .unwrap_or_else(|e| panic!("iteration {iter}: recover failed: {e}"));
    // Opening finished or removed every interrupted save; what may remain is a payload
    // whose row a killed scan deleted before removing the file.
    assert!(
        report.rolled_forward.is_empty() && report.temps_removed.is_empty(),
        "iteration {iter}: open left temps: {report:#?}"
    );
    let orphans: BTreeSet<&str> = report
        .findings
        .iter()
        .map(|f| {
            if !(f.kind == ProblemKind::Orphan && out.scan_killed) {
                let versions = |t: Option<&Tx>| t.map(|t| (t.holder_id.clone(), t.timestamp));
                let id = f.tx_id.as_str();
                let seen: Vec<_> = out
                    .seen_versions
                    .iter()
                    .filter(|t| t.tx_id.as_str() == id)
                    .map(|t| (t.holder_id.as_str(), t.timestamp))
                    .collect();
                panic!(
                    "iteration {iter}: recover found {f:#?}\n\
                     acknowledged {:?}, in flight {:?}, versions the scan could see {seen:?}, \
                     logged deleted by the scan: {}; the store now:\n{}",
                    versions(out.without_inflight.get(id)),
                    versions(out.with_inflight.get(id)),
                    out.scan_deleted.iter().any(|d| d == id),
                    diagnose(id)
                );
            }
            f.tx_id.as_str()
        })
        .collect();
    c.orphans_removed += orphans.len() as u64;
    let verify = sm.verify().await.unwrap();
    assert!(
        verify.is_clean(),
        "iteration {iter}: verify after recover: {:#?}",
        verify.findings
    );

    // Every row, and every id the model knows, loaded and verified.
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut after = None;
    loop {
        let page = sm.list_page(after.take(), 1000).await.unwrap();
        ids.extend(page.rows.into_iter().map(|r| r.tx_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let listed = ids.clone();
    ids.extend(out.without_inflight.keys().cloned());
    ids.extend(out.with_inflight.keys().cloned());
    let ids: Vec<String> = ids.into_iter().collect();
    let loaded = sm
        .load_many(ids.iter().map(|i| TxId::new(i.as_str()).unwrap()).collect())
        .await
        .unwrap();
    let mut actual = State::new();
    let (mut says_committed, mut says_dropped) = (None, None);
    for (id, got) in ids.iter().zip(loaded) {
        let got = got.unwrap_or_else(|e| panic!("iteration {iter}: load {id}: {e}"));
        // Every listed tx loads.
        assert!(
            got.is_some() || !listed.contains(id),
            "iteration {iter}: {id} is listed but does not load"
        );
        c.txs_checked += 1;
        let fits = |want: Option<&Tx>| match (&got, want) {
            (Some(g), Some(w)) => g == w,
            (None, None) => true,
            (None, Some(w)) => out.scanned && is_old(w),
            (Some(_), None) => false,
        };
        let (a, b) = (out.without_inflight.get(id), out.with_inflight.get(id));
        let (fa, fb) = (fits(a), fits(b));
        assert!(
            fa || fb,
            "iteration {iter}: tx {id} is {got:?}; acknowledged {a:?}, in flight {b:?}"
        );
        if fa && !fb {
            says_dropped.get_or_insert(id.clone());
        }
        if fb && !fa {
            says_committed.get_or_insert(id.clone());
        }
        if orphans.contains(id.as_str()) {
            assert!(got.is_none(), "iteration {iter}: orphan {id} has a row");
        }
        if let Some(t) = got {
            actual.insert(id.clone(), t);
        }
    }
    // The in-flight batch is atomic: no tx shows it committed while another shows it not.
    if let (Some(x), Some(y)) = (&says_committed, &says_dropped) {
        panic!("iteration {iter}: in-flight batch half applied: {x} has it, {y} does not");
    }
    if out.with_inflight != out.without_inflight {
        if says_committed.is_some() {
            c.inflight_committed += 1;
        } else if says_dropped.is_some() {
            c.inflight_dropped += 1;
        }
    }
    // A scan deletes only what was expired: each id it logged had an old version.
    for id in &out.scan_deleted {
        assert!(
            out.seen_versions
                .iter()
                .any(|t| t.tx_id.as_str() == id && is_old(t)),
            "iteration {iter}: scan deleted {id}, which never had an old version"
        );
        if !out.imported {
            assert!(
                !actual.contains_key(id),
                "iteration {iter}: scan logged {id} deleted, yet it is there"
            );
        }
    }
    sm.close().await.unwrap();
    actual
}
