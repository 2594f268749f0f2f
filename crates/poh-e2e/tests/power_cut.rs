//! The real binaries on a real kernel file system (ext4 on a loop device): power cuts at
//! random moments, and a full disk.
//!
//! **Power cuts.** One store lives through the whole test on a small ext4 mount. Each
//! cut runs, all at once, `poh-storage import --print-acked` of generated JSON Lines (new
//! ids, re-saves, old-stamped txs), a series of single `poh-storage save` calls and a
//! `poh-ttl run` daemon whose TTL expires only the old-stamped txs; at a random moment
//! (after a random number of acknowledged ids plus a random delay) the file system is shut
//! down with `EXT4_IOC_SHUTDOWN` / `EXT4_GOING_FLAGS_NOLOGFLUSH`: what the kernel had not
//! yet written to the device, page cache and journal alike, is lost, as in a power cut.
//! The processes are killed, the file system unmounted and mounted again (the journal is
//! replayed), `poh-storage verify` shows what was interrupted, `poh-storage recover`
//! repairs it, `verify` must then be clean, every acknowledged tx must load with its exact
//! payload (or as the newer version that was in flight), nothing unknown may appear, and
//! the files beside the store on the same file system must be unchanged.
//!
//! **A full disk.** A store on a small ext4 filled up to its last block with other files,
//! then a little room freed (none, 16 KiB, 256 KiB, 2 MiB): `import` and `save` run until
//! refused, which must be exit 1 with an error naming the cause (a separate test, so that
//! the two properties fail separately); once space is freed `recover` succeeds, `verify`
//! is clean and every acknowledged tx loads intact.
//!
//! Both need root with loop devices (`poh_testkit::require::root_with_loop`): elsewhere they
//! are skipped with a note, in CI (`POH_REQUIRE_ALL=1`) they are mandatory.
//! `POH_POWER_CUTS` sets the number of cuts (default 20), `POH_SEED` repeats a run's choices
//! (the timing of the cut within them stays real).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Rng, bin, lines_of, now};
use poh_storage::{Layout, OpenOptions, StorageManager, Tx, TxId};
use poh_testkit::ext4::{EXT4_GOING_FLAGS_NOLOGFLUSH, Ext4Mount};
use poh_testkit::require::root_with_loop;

/// Only a safety net against a hung child; the test waits on output, never on time.
const SAFETY: Duration = Duration::from_secs(60);
/// The daemon's TTL. Old txs are stamped at least two TTLs back, fresh ones at most an
/// hour back, so no tx changes class during the test.
const TTL_SECS: f64 = 86_400.0;
const DEFAULT_CUTS: u64 = 20;
/// Size of the power-cut file system.
const CUT_FS_MIB: u64 = 96;
/// Above this many fresh ids per writer, new txs are re-saves (keeps each check fast).
const MAX_FRESH: usize = 600;

/// Writes one visible line to stderr (not captured by the test harness).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A store on the mount: `<mount>/store`, database `<mount>/store/poh.db`.
#[derive(Clone)]
struct Store {
    base: PathBuf,
    db: PathBuf,
}

impl Store {
    fn on(mount: &Path) -> Self {
        let base = mount.join("store");
        let db = base.join("poh.db");
        Self { base, db }
    }

    /// `poh-storage --base .. --db .. ARGS`, with no POH_* variables from outside.
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("poh-storage"));
        c.arg("--base")
            .arg(&self.base)
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("POH_BASE")
            .env_remove("POH_DB")
            .env_remove("POH_LAYOUT")
            .env_remove("POH_MAX_PAYLOAD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `poh-storage ARGS` to the end.
    fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().expect("run poh-storage")
    }

    /// Runs `poh-storage ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "poh-storage {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `recover` (or `verify` with `--json`) parsed.
    fn report(&self, args: &[&str]) -> (ExitStatus, serde_json::Value, String) {
        let out = self.run(args);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "poh-storage {args:?} ({}) printed no JSON report ({e}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            out.status,
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The ids `list` prints.
    fn list(&self) -> BTreeSet<String> {
        serde_json::from_str(&self.ok(&["list"])).expect("list prints a JSON array")
    }
}

fn len(v: &serde_json::Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

// ----------------------------------------------------------------------------- the model

/// What one id may hold: the last acknowledged version, and versions written after it
/// whose acknowledgement was not seen (they may or may not have landed).
#[derive(Default, Debug)]
struct Entry {
    acked: Option<Tx>,
    pending: Vec<Tx>,
}

type Model = BTreeMap<String, Entry>;

/// Old-stamped txs (ids `o…`) are the daemon's to expire: absent is always allowed.
fn is_old_id(id: &str) -> bool {
    id.starts_with('o')
}

fn fresh_ts(rng: &mut Rng) -> f64 {
    now() - rng.below(3_600_000) as f64 / 1000.0
}

fn old_ts(rng: &mut Rng) -> f64 {
    now() - 2.0 * TTL_SECS - rng.below(86_400_000) as f64 / 1000.0
}

fn payload(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Generates the txs of one writer: its own fresh ids (`<prefix>N`), re-saves of them,
/// and old-stamped new ids (`o<prefix>N`); no id twice.
struct Gen {
    prefix: &'static str,
    next: u64,
    version: u64,
}

impl Gen {
    fn txs(&mut self, rng: &mut Rng, model: &Model, n: usize, max_payload: u64) -> Vec<Tx> {
        let mine: Vec<&String> = model
            .iter()
            .filter(|(id, e)| id.starts_with(self.prefix) && e.acked.is_some())
            .map(|(id, _)| id)
            .collect();
        let mut used = BTreeSet::new();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let roll = rng.below(100);
            self.version += 1;
            let (id, ts) = if roll < 30 {
                self.next += 1;
                (format!("o{}{}", self.prefix, self.next), old_ts(rng))
            } else if !mine.is_empty() && (roll < 60 || mine.len() >= MAX_FRESH) {
                let id = mine[rng.below(mine.len() as u64) as usize].clone();
                (id, fresh_ts(rng))
            } else {
                self.next += 1;
                (format!("{}{}", self.prefix, self.next), fresh_ts(rng))
            };
            if !used.insert(id.clone()) {
                continue;
            }
            let holder = format!("h{}", self.version);
            out.push(Tx::new(id, holder, ts, payload(rng, max_payload)).expect("valid tx"));
        }
        out
    }
}

/// Records `txs` as written but not (yet) acknowledged.
fn attempt(model: &mut Model, txs: &[Tx]) {
    for t in txs {
        model
            .entry(t.tx_id.to_string())
            .or_default()
            .pending
            .push(t.clone());
    }
}

/// Records the acknowledgement of `tx`: it is the id's version from now on.
fn ack(model: &mut Model, tx: &Tx) {
    let e = model.entry(tx.tx_id.to_string()).or_default();
    e.pending.retain(|p| p != tx);
    e.acked = Some(tx.clone());
}

/// Loads every id of the model and every id in the store (library, after `recover`), and
/// checks each against the model; returns the number of acknowledged txs found intact
/// and makes the store's contents the new model.
async fn check_store(store: &Store, model: &mut Model, ctx: &str) -> u64 {
    let sm = StorageManager::open(&store.base, &store.db)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: open after recover: {e}"));
    let mut in_store = BTreeSet::new();
    let mut after = None;
    loop {
        let page = sm.list_page(after.take(), 1000).await.expect("list");
        in_store.extend(page.rows.into_iter().map(|r| r.tx_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(store.list(), in_store, "{ctx}: the CLI lists the same ids");
    let unknown: Vec<&String> = in_store
        .iter()
        .filter(|id| !model.contains_key(*id))
        .collect();
    assert!(unknown.is_empty(), "{ctx}: txs nobody wrote: {unknown:?}");
    let ids: Vec<String> = model.keys().cloned().collect();
    let loaded = load_all(&sm, &ids).await;
    let mut intact = 0;
    let mut found = Model::new();
    for (id, got) in ids.iter().zip(loaded) {
        let got = got.unwrap_or_else(|e| panic!("{ctx}: load {id}: {e}"));
        let e = &model[id];
        match &got {
            Some(t) => {
                assert!(
                    e.acked.as_ref() == Some(t) || e.pending.contains(t),
                    "{ctx}: {id} holds a version nobody wrote last: {t:?}; acknowledged {:?}, in flight {:?}",
                    e.acked,
                    e.pending
                );
                if e.acked.as_ref() == Some(t) {
                    intact += 1;
                }
            }
            None => assert!(
                e.acked.is_none() || is_old_id(id),
                "{ctx}: acknowledged tx {id} LOST: {:?}",
                e.acked
            ),
        }
        assert_eq!(
            got.is_some(),
            in_store.contains(id),
            "{ctx}: {id} list vs load"
        );
        if let Some(t) = got {
            found.insert(
                id.clone(),
                Entry {
                    acked: Some(t),
                    pending: Vec::new(),
                },
            );
        }
    }
    sm.close().await.expect("close");
    // The store as found is the model from now on.
    *model = found;
    intact
}

/// `load_many` of `ids`, in order.
async fn load_all(
    sm: &StorageManager,
    ids: &[String],
) -> Vec<Result<Option<Tx>, poh_storage::StorageError>> {
    sm.load_many(
        ids.iter()
            .map(|i| TxId::new(i.as_str()).expect("id"))
            .collect(),
    )
    .await
    .expect("load_many")
}

/// Before anything repairs the store: a read-only handle (what `load`, `list` and
/// `export` open) already serves every acknowledged tx, or a newer version in flight.
async fn check_read_only(store: &Store, model: &Model, ctx: &str) {
    let ro = StorageManager::open_with(
        &store.base,
        &store.db,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{ctx}: read-only open after the cut: {e}"));
    let ids: Vec<String> = model.keys().cloned().collect();
    let loaded = load_all(&ro, &ids).await;
    for (id, got) in ids.iter().zip(loaded) {
        let e = &model[id];
        match got {
            Ok(Some(t)) => assert!(
                e.acked.as_ref() == Some(&t) || e.pending.contains(&t),
                "{ctx}: before recover, {id} reads as a version nobody wrote last: {t:?}; \
                 acknowledged {:?}, in flight {:?}",
                e.acked,
                e.pending
            ),
            Ok(None) => assert!(
                e.acked.is_none() || is_old_id(id),
                "{ctx}: before recover, acknowledged tx {id} reads as absent: {:?}",
                e.acked
            ),
            // A tx whose save was in flight may be cut short: recover deals with it.
            Err(err) => assert!(
                !e.pending.is_empty() || is_old_id(id),
                "{ctx}: before recover, acknowledged tx {id} fails to load: {err}"
            ),
        }
    }
    ro.close().await.expect("close");
}

// ----------------------------------------------------------------------------- the workload

/// A `poh-storage save` per tx, one after the other, until told to stop; the child in
/// flight is reachable so the test can kill it.
struct Saver {
    stop: Arc<AtomicBool>,
    /// Set right before the cut: a save that fails while it is unset failed on its own.
    cut: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<Vec<SaveResult>>>,
}

struct SaveResult {
    tx: Tx,
    acked: bool,
    failed_before_cut: Option<String>,
}

impl Saver {
    fn start(store: &Store, txs: Vec<Tx>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let (store, stop2, cut2, slot) = (store.clone(), stop.clone(), cut.clone(), child.clone());
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            for tx in txs {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let json = tx.to_json();
                let mut c = store
                    .cli(&["save", "--tx", &json])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start poh-storage save");
                let (mut out, mut err) = (
                    c.stdout.take().expect("stdout"),
                    c.stderr.take().expect("stderr"),
                );
                {
                    let mut slot = slot.lock().expect("slot");
                    // Started after the test's kill looked: this one ends here too.
                    if stop2.load(Ordering::SeqCst) {
                        let _ = c.kill();
                    }
                    *slot = Some(c);
                }
                let (mut stdout, mut stderr) = (String::new(), String::new());
                let _ = out.read_to_string(&mut stdout);
                let _ = err.read_to_string(&mut stderr);
                // Reaped under the lock, so a kill never reaches a reused pid.
                let status = slot
                    .lock()
                    .expect("slot")
                    .take()
                    .map(|mut c| c.wait().expect("wait for save"));
                let ok = status.is_some_and(|s| s.success());
                let acked = ok && stdout == format!("Saved {}\n", tx.tx_id);
                let failed_before_cut = (!acked && !cut2.load(Ordering::SeqCst))
                    .then(|| format!("{status:?}: {stdout}{stderr}"));
                results.push(SaveResult {
                    tx,
                    acked,
                    failed_before_cut,
                });
            }
            results
        });
        Self {
            stop,
            cut,
            child,
            thread: Some(thread),
        }
    }

    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.child.lock().expect("slot").as_mut() {
            let _ = c.kill();
        }
    }

    fn finish(mut self) -> Vec<SaveResult> {
        self.kill();
        self.thread
            .take()
            .map(|t| t.join().expect("saver thread"))
            .unwrap_or_default()
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child killed (and reaped) when dropped, so a failing test leaves nothing running on
/// the mount.
struct Killed(Option<Child>);

impl Killed {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }

    fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        let mut c = self.0.take()?;
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

fn collect(stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut stream = stream;
        let _ = stream.read_to_string(&mut s);
        s
    })
}

/// Waits `us` microseconds without sleeping: where the cut lands.
fn spin(us: u64) {
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::thread::yield_now();
    }
}

/// Receives lines until `k` arrived (or the stream closed).
fn wait_lines(rx: &Receiver<String>, seen: &mut Vec<String>, k: usize, what: &str) {
    while seen.len() < k {
        match rx.recv_timeout(SAFETY) {
            Ok(l) => seen.push(l),
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => panic!("{what} stalled after {} lines", seen.len()),
        }
    }
}

/// Files beside the store on the same file system, which no command may touch.
fn write_bystanders(root: &Path, rng: &mut Rng) -> BTreeMap<PathBuf, Vec<u8>> {
    let dir = root.join("outside");
    std::fs::create_dir(&dir).expect("create outside/");
    let mut files = BTreeMap::new();
    for i in 0..4 {
        let p = dir.join(format!("file-{i}"));
        let data = payload(rng, 20_000);
        let mut f = std::fs::File::create(&p).expect("create a bystander");
        f.write_all(&data).expect("write a bystander");
        f.sync_all().expect("fsync a bystander");
        files.insert(p, data);
    }
    for d in [&dir, &root.to_path_buf()] {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .expect("fsync a directory");
    }
    files
}

fn check_bystanders(root: &Path, files: &BTreeMap<PathBuf, Vec<u8>>, ctx: &str) {
    let top: BTreeSet<String> = std::fs::read_dir(root)
        .expect("list the mount")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ["lost+found", "outside", "store"].map(str::to_owned).into();
    assert_eq!(top, want, "{ctx}: the mount's top level changed");
    let names: BTreeSet<PathBuf> = std::fs::read_dir(root.join("outside"))
        .expect("list outside/")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        names,
        files.keys().cloned().collect(),
        "{ctx}: outside/ changed"
    );
    for (p, data) in files {
        assert_eq!(
            &std::fs::read(p).expect("read a bystander"),
            data,
            "{ctx}: {} changed",
            p.display()
        );
    }
}

#[derive(Default)]
struct Counts {
    cuts: u64,
    acked_import: u64,
    acked_save: u64,
    acked_checked: u64,
    rolled_forward: u64,
    temps_found: u64,
    orphans_removed: u64,
    cuts_inside_import: u64,
    daemon_passes: u64,
    txs_at_end: usize,
}

#[test]
fn power_cuts_on_ext4_lose_no_acknowledged_tx() {
    let Some(()) = root_with_loop() else { return };
    power_cuts(Layout::Files);
}

/// The same cuts on a segments store: they land between appends, fdatasyncs, index
/// commits, segment drops of the TTL daemon and compaction steps.
#[test]
fn power_cuts_on_ext4_lose_no_acknowledged_tx_on_segments() {
    let Some(()) = root_with_loop() else { return };
    power_cuts(Layout::Segments);
}

fn power_cuts(layout: Layout) {
    let cuts: u64 = std::env::var("POH_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CUTS);
    let mut rng = Rng::from_env(&format!("power_cut ({layout})"));
    say(&format!("power_cut ({layout}): POH_SEED={}", rng.seed()));
    let inputs = tempfile::TempDir::new().expect("tempdir for inputs");
    let mut mnt = Ext4Mount::new(CUT_FS_MIB, &["-b", "4096"]).expect("ext4 loop mount");
    let store = Store::on(mnt.path());
    store.ok(&["init", "--layout", layout.name()]);
    let bystanders = write_bystanders(mnt.path(), &mut rng);
    let started = Instant::now();
    let mut model = Model::new();
    let (mut gi, mut gs) = (
        Gen {
            prefix: "i",
            next: 0,
            version: 0,
        },
        Gen {
            prefix: "s",
            next: 0,
            version: 1 << 40,
        },
    );
    let mut c = Counts::default();

    for cut in 0..cuts {
        // The workload: an import, a series of saves and the TTL daemon, all at once.
        let n = 50 + rng.below(251) as usize;
        let batch = match rng.below(3) {
            0 => 1 + rng.below(4),
            1 => 1 + rng.below(20),
            _ => 1 + rng.below(100),
        };
        let import_txs = gi.txs(&mut rng, &model, n, 3000);
        let save_txs = gs.txs(&mut rng, &model, 40, 3000);
        attempt(&mut model, &import_txs);
        attempt(&mut model, &save_txs);
        let input = inputs.path().join(format!("cut-{cut}.jsonl"));
        let text: String = import_txs.iter().map(|t| t.to_json() + "\n").collect();
        std::fs::write(&input, text).expect("write the import's input");

        let mut daemon = Killed(Some(
            Command::new(bin("poh-ttl"))
                .arg("run")
                .arg("--base")
                .arg(&store.base)
                .arg("--db")
                .arg(&store.db)
                .args(["--ttl", &TTL_SECS.to_string(), "--interval", "0.03"])
                .args(["--batch-size", &(1 + rng.below(20)).to_string()])
                .env_remove("POH_BASE")
                .env_remove("POH_DB")
                .env_remove("POH_LAYOUT")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start poh-ttl run"),
        ));
        let daemon_log = lines_of(daemon.get().stderr.take().expect("stderr"));
        let mut import = Killed(Some(
            store
                .cli(&[
                    "import",
                    "--print-acked",
                    "--batch-size",
                    &batch.to_string(),
                ])
                .arg(&input)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start poh-storage import"),
        ));
        let acked_rx = lines_of(import.get().stdout.take().expect("stdout"));
        let import_err = collect(import.get().stderr.take().expect("stderr"));
        let saver = Saver::start(&store, save_txs);

        // The moment: after k acknowledged ids (one cut in five after the whole import),
        // plus a delay.
        let k = if rng.below(5) == 0 {
            n
        } else {
            rng.below(n as u64) as usize
        };
        let delay = match rng.below(4) {
            0 => 0,
            1 => rng.below(500),
            2 => rng.below(5_000),
            _ => rng.below(40_000),
        };
        let mut acked_lines = Vec::new();
        wait_lines(&acked_rx, &mut acked_lines, k, "import");
        spin(delay);
        let import_done = import.get().try_wait().expect("try_wait import");
        let daemon_done = daemon.get().try_wait().expect("try_wait daemon");
        let pre_cut_log: Vec<String> = daemon_log.try_iter().collect();
        saver.cut.store(true, Ordering::SeqCst);
        mnt.shutdown(EXT4_GOING_FLAGS_NOLOGFLUSH)
            .expect("cut the power");
        c.cuts += 1;
        let ctx = format!(
            "cut {cut} (import of {n} in batches of {batch}, cut after {k} acks + {delay} µs)"
        );

        // Everything running dies with the power.
        import.kill_and_wait();
        daemon.kill_and_wait();
        let saves = saver.finish();
        wait_lines(&acked_rx, &mut acked_lines, usize::MAX, "import");
        let import_stderr = import_err.join().unwrap_or_default();
        assert!(daemon_done.is_none(), "{ctx}: the daemon had exited");
        let errors: Vec<&String> = pre_cut_log
            .iter()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        assert!(
            errors.is_empty(),
            "{ctx}: the daemon failed before the cut: {errors:#?}"
        );
        c.daemon_passes += pre_cut_log
            .iter()
            .filter(|l| l.contains("TTL pass complete"))
            .count() as u64;
        if let Some(status) = import_done {
            assert!(
                status.success() && acked_lines.len() == n,
                "{ctx}: the import ended before the cut ({status}), {} of {n} acknowledged:\n{import_stderr}",
                acked_lines.len()
            );
        } else {
            c.cuts_inside_import += 1;
        }

        // Acknowledgements: the import's printed ids (its input's prefix, in order) and the
        // saves that printed `Saved`.
        assert!(
            acked_lines.len() <= n,
            "{ctx}: more ids acknowledged than sent"
        );
        for (i, id) in acked_lines.iter().enumerate() {
            assert_eq!(
                id,
                import_txs[i].tx_id.as_str(),
                "{ctx}: acknowledged line {i}"
            );
            ack(&mut model, &import_txs[i]);
        }
        c.acked_import += acked_lines.len() as u64;
        for s in &saves {
            assert!(
                s.failed_before_cut.is_none(),
                "{ctx}: save of {} failed before the cut: {:?}",
                s.tx.tx_id,
                s.failed_before_cut
            );
            if s.acked {
                ack(&mut model, &s.tx);
                c.acked_save += 1;
            }
        }

        // The reboot: unmount, mount (journal replay), see what the cut left, repair.
        mnt.remount()
            .unwrap_or_else(|e| panic!("{ctx}: remount: {e}"));
        check_bystanders(mnt.path(), &bystanders, &ctx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check_read_only(&store, &model, &ctx));
        let (status, found, stderr) = store.report(&["verify", "--json"]);
        assert!(
            matches!(status.code(), Some(0 | 4)),
            "{ctx}: verify before recover: {status}: {stderr}"
        );
        c.rolled_forward += len(&found["rolled_forward"]) as u64;
        c.temps_found += len(&found["temps_removed"]) as u64;
        let (status, rep, stderr) = store.report(&["recover"]);
        assert!(status.success(), "{ctx}: recover failed: {stderr}");
        for f in rep["findings"].as_array().into_iter().flatten() {
            let id = f["tx_id"].as_str().unwrap_or_default();
            // Only a TTL delete cut between its row and its file leaves something to
            // repair after the reopen: a payload without a row.
            assert!(
                f["kind"] == "orphan" && is_old_id(id),
                "{ctx}: recover found {f}\n(verify before it: {found})"
            );
            c.orphans_removed += 1;
        }
        let verify = store.run(&["verify"]);
        assert!(
            verify.status.success(),
            "{ctx}: verify after recover: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        c.acked_checked += rt.block_on(check_store(&store, &mut model, &ctx));
        check_bystanders(mnt.path(), &bystanders, &ctx);
    }
    c.txs_at_end = model.len();
    say(&format!(
        "power_cut ({layout}): {} cuts in {:.1} s ({} inside an import), {} txs acknowledged ({} by import, {} by save), \
         {} acknowledged txs checked intact after the cuts, {} committed saves rolled forward, \
         {} temp files found, {} orphans of cut TTL deletes quarantined by recover, {} daemon passes before the cuts, \
         {} txs in the store at the end; POH_SEED={}",
        c.cuts,
        started.elapsed().as_secs_f64(),
        c.cuts_inside_import,
        c.acked_import + c.acked_save,
        c.acked_import,
        c.acked_save,
        c.acked_checked,
        c.rolled_forward,
        c.temps_found,
        c.orphans_removed,
        c.daemon_passes,
        c.txs_at_end,
        rng.seed(),
    ));
}

// ----------------------------------------------------------------------------- a full disk

/// Size of the disk-full file system.
const FULL_FS_MIB: u64 = 32;
/// Filler file sizes, largest first: the file system is filled to its last block.
const FILLER_SIZES: [u64; 3] = [1 << 20, 64 << 10, 4 << 10];

/// Files filling the disk-full mount beside the store (`<mount>/filler/`).
struct Fillers {
    dir: PathBuf,
    files: Vec<(PathBuf, u64)>,
    next: u64,
}

impl Fillers {
    fn new(root: &Path) -> Self {
        let dir = root.join("filler");
        std::fs::create_dir(&dir).expect("create filler/");
        Self {
            dir,
            files: Vec::new(),
            next: 0,
        }
    }

    /// Writes filler files, of each size in turn, until the file system has no block left.
    fn fill(&mut self) {
        for size in FILLER_SIZES {
            let chunk = vec![0x5A; size as usize];
            loop {
                self.next += 1;
                let p = self.dir.join(format!("f{}", self.next));
                match std::fs::write(&p, &chunk) {
                    Ok(()) => self.files.push((p, size)),
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        // The partial file goes; the next, smaller size fills its room.
                        std::fs::remove_file(&p).expect("remove a partial filler");
                        break;
                    }
                    Err(e) => panic!("write filler {}: {e}", p.display()),
                }
            }
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .expect("fsync filler/");
    }

    /// Deletes fillers, largest first, freeing about `bytes` (at least one file).
    fn free(&mut self, bytes: u64) -> u64 {
        self.files.sort_by_key(|f| std::cmp::Reverse(f.1));
        let mut freed = 0;
        let mut keep = Vec::new();
        for (p, size) in std::mem::take(&mut self.files) {
            if freed + size <= bytes.max(FILLER_SIZES[2]) {
                std::fs::remove_file(&p).expect("remove a filler");
                freed += size;
            } else {
                keep.push((p, size));
            }
        }
        self.files = keep;
        freed
    }
}

/// Whether a refused write's error names the cause (no space).
fn names_the_cause(stderr: &str) -> bool {
    stderr.contains("No space left on device") || stderr.contains("disk is full")
}

/// A write refused for lack of space: exit 1; the message is kept for the caller.
fn refused(out: &Output, ctx: &str, messages: &mut Vec<(String, String)>) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{ctx}: exit status {} (want 1): {stderr}",
        out.status
    );
    messages.push((ctx.to_owned(), stderr));
}

fn disk_full_tx(prefix: &str, i: usize, rng: &mut Rng, size: u64) -> Tx {
    let len = size / 2 + rng.below(size / 2 + 1);
    let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    Tx::new(format!("{prefix}{i}"), "holder-1", fresh_ts(rng), payload).expect("valid tx")
}

/// What a run of [`fill_the_disk`] saw.
#[derive(Default)]
struct FullDisk {
    acked: u64,
    checked: u64,
    /// Every refused write: where, and its stderr.
    messages: Vec<(String, String)>,
    /// Loads tried while the disk was full, and how many failed.
    loads_while_full: u64,
    loads_failed_while_full: Vec<String>,
}

/// One store on a small ext4; per round, the disk is filled to its last block with files
/// beside the store, `room` bytes are freed, and an import and then single saves run until
/// refused (each must exit 1). Then space is freed: `recover` must succeed, `verify` be
/// clean, and every acknowledged tx load intact.
fn fill_the_disk(test: &str, rooms: &[u64], layout: Layout) -> FullDisk {
    let mut rng = Rng::from_env(test);
    say(&format!("{test}: POH_SEED={}", rng.seed()));
    let inputs = tempfile::TempDir::new().expect("tempdir for inputs");
    let mnt = Ext4Mount::new(FULL_FS_MIB, &["-b", "4096", "-m", "0"]).expect("ext4 loop mount");
    let store = Store::on(mnt.path());
    store.ok(&["init", "--layout", layout.name()]);
    let mut model = Model::new();
    let mut fillers = Fillers::new(mnt.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut r = FullDisk::default();
    let mut next_id = 0;

    for (round, &room) in rooms.iter().enumerate() {
        let ctx = format!("round {round} ({room} bytes free)");
        fillers.fill();
        if room > 0 {
            fillers.free(room);
        }

        // An import that cannot fit: it acknowledges what fits, then fails.
        let n = 200;
        let batch = 1 + rng.below(8);
        let txs: Vec<Tx> = (0..n)
            .map(|i| disk_full_tx("d", next_id + i, &mut rng, 24 << 10))
            .collect();
        next_id += n;
        attempt(&mut model, &txs);
        let input = inputs.path().join(format!("round-{round}.jsonl"));
        let text: String = txs.iter().map(|t| t.to_json() + "\n").collect();
        std::fs::write(&input, text).expect("write the import's input");
        let out = store
            .cli(&[
                "import",
                "--print-acked",
                "--batch-size",
                &batch.to_string(),
            ])
            .arg(&input)
            .output()
            .expect("run poh-storage import");
        refused(&out, &format!("{ctx}: import"), &mut r.messages);
        let printed = String::from_utf8(out.stdout.clone()).expect("utf-8");
        for (i, id) in printed.lines().enumerate() {
            assert_eq!(id, txs[i].tx_id.as_str(), "{ctx}: acknowledged line {i}");
            ack(&mut model, &txs[i]);
            r.acked += 1;
        }

        // Single saves: acknowledged while they fit, then refused. (Up to 1,000: the
        // import's exit may free more than a few saves' room — SQLite removes its WAL when
        // the last connection closes — so the room left varies with the layout's index.)
        let mut failed = false;
        for _ in 0..1000 {
            let tx = disk_full_tx("f", next_id, &mut rng, 8 << 10);
            next_id += 1;
            attempt(&mut model, std::slice::from_ref(&tx));
            let out = store.run(&["save", "--tx", &tx.to_json()]);
            if out.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    format!("Saved {}\n", tx.tx_id)
                );
                ack(&mut model, &tx);
                r.acked += 1;
            } else {
                refused(
                    &out,
                    &format!("{ctx}: save of {}", tx.tx_id),
                    &mut r.messages,
                );
                failed = true;
                break;
            }
        }
        assert!(failed, "{ctx}: 1,000 saves fitted on a full disk");

        // Reads while the disk is still full (recorded, not required).
        if let Some(id) = model
            .iter()
            .find_map(|(id, e)| e.acked.as_ref().map(|_| id))
        {
            r.loads_while_full += 1;
            let out = store.run(&["load", "--tx-id", id]);
            if !out.status.success() {
                r.loads_failed_while_full
                    .push(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
        }

        // Room again: recover, a clean verify, every acknowledged tx intact.
        fillers.free(4 << 20);
        let (status, rep, stderr) = store.report(&["recover"]);
        assert!(status.success(), "{ctx}: recover failed: {stderr}");
        let verify = store.run(&["verify"]);
        assert!(
            verify.status.success(),
            "{ctx}: verify after recover ({}): {}{}\nrecover said: {rep}",
            verify.status,
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        r.checked += rt.block_on(check_store(&store, &mut model, &ctx));
        // And the store takes writes again.
        let tx = disk_full_tx("after", round, &mut rng, 8 << 10);
        store.ok(&["save", "--tx", &tx.to_json()]);
        ack(&mut model, &tx);
    }
    let unclear = r
        .messages
        .iter()
        .filter(|(_, m)| !names_the_cause(m))
        .count();
    say(&format!(
        "{test}: {} rounds: {} txs acknowledged, {} writes refused (exit 1; {unclear} without naming the cause), \
         {} acknowledged txs checked intact after freeing space; loads while full: {} of {} failed",
        rooms.len(),
        r.acked,
        r.messages.len(),
        r.checked,
        r.loads_failed_while_full.len(),
        r.loads_while_full,
    ));
    r
}

/// Room left before the writes start: none, a few blocks, a few payloads, many.
const ROOMS: [u64; 4] = [0, 16 << 10, 256 << 10, 2 << 20];

#[test]
fn a_full_disk_refuses_writes_and_loses_no_acknowledged_tx() {
    let Some(()) = root_with_loop() else { return };
    let r = fill_the_disk("disk_full", &ROOMS, Layout::Files);
    // Reads open the store read-only: a full disk does not stop them.
    assert!(
        r.loads_failed_while_full.is_empty(),
        "loads failed while the disk was full: {:?}",
        r.loads_failed_while_full
    );
}

#[test]
fn a_full_disk_error_names_the_cause() {
    let Some(()) = root_with_loop() else { return };
    let r = fill_the_disk("disk_full_message", &ROOMS, Layout::Files);
    let unclear: Vec<String> = r
        .messages
        .iter()
        .filter(|(_, m)| !names_the_cause(m))
        .map(|(ctx, m)| format!("{ctx}: {}", m.trim()))
        .collect();
    assert!(
        unclear.is_empty(),
        "refused writes whose error does not name the cause (no space left on device):\n{}",
        unclear.join("\n")
    );
}

/// The same full disk under a segments store: writes refused naming the cause, nothing
/// acknowledged lost, reads working while it is full.
#[test]
fn a_full_disk_refuses_writes_and_loses_no_acknowledged_tx_on_segments() {
    let Some(()) = root_with_loop() else { return };
    let r = fill_the_disk("disk_full_segments", &ROOMS, Layout::Segments);
    assert!(
        r.loads_failed_while_full.is_empty(),
        "loads failed while the disk was full: {:?}",
        r.loads_failed_while_full
    );
    let unclear: Vec<&(String, String)> = r
        .messages
        .iter()
        .filter(|(_, m)| !names_the_cause(m))
        .collect();
    assert!(
        unclear.is_empty(),
        "errors not naming the cause: {unclear:#?}"
    );
}

/// On a read-only mount every read command works (the store is opened read-only: nothing
/// is created, migrated or locked), a dry-run TTL scan too, and writes fail naming the
/// cause ("Read-only file system").
#[test]
fn reads_work_on_a_read_only_mount_and_writes_name_the_cause() {
    let Some(()) = root_with_loop() else { return };
    let mnt = Ext4Mount::new(FULL_FS_MIB, &["-b", "4096"]).expect("ext4 loop mount");
    let store = Store::on(mnt.path());
    for (i, id) in ["r1", "r2"].iter().enumerate() {
        let tx = Tx::new(*id, "h", 1_000.0 + i as f64, id.as_bytes().to_vec()).expect("tx");
        store.ok(&["save", "--tx", &tx.to_json()]);
    }
    let remount = |mode: &str| {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(mnt.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "remount {mode}");
    };
    remount("ro");
    assert_eq!(store.list(), BTreeSet::from(["r1".into(), "r2".into()]));
    store.ok(&["load", "--tx-id", "r1"]);
    store.ok(&["stats"]);
    store.ok(&["verify"]);
    store.ok(&["recover", "--dry-run"]);
    let scan = Command::new(bin("poh-ttl"))
        .env_remove("POH_LAYOUT")
        .args(["scan", "--ttl", "1s", "--dry-run", "--base"])
        .arg(&store.base)
        .arg("--db")
        .arg(&store.db)
        .output()
        .expect("run poh-ttl");
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let tx = Tx::new("w", "h", 1.0, b"w".to_vec()).expect("tx");
    let out = store.run(&["save", "--tx", &tx.to_json()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    remount("rw");
}
