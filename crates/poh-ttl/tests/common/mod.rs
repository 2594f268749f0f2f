//! Shared support for the poh-ttl integration tests: temporary stores, txs, and expiry
//! targets that count calls, fail on demand, wait at a gate or re-save between batches.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use poh_storage::{MetaRow, OpenOptions, StorageError, StorageManager, Tx, TxId};
use poh_ttl::ExpiryTarget;
use tempfile::TempDir;
use tokio::sync::Semaphore;

/// A fixed "now" for tests on a manual clock (2023-11-14).
pub const NOW: f64 = 1_700_000_000.0;

/// The store's base directory and database under a test directory.
pub fn paths(dir: &TempDir) -> (PathBuf, PathBuf) {
    let base = dir.path().join("data");
    let db = base.join("poh.db");
    (base, db)
}

/// A fresh store in a temporary directory; keep the `TempDir` alive.
pub async fn store() -> (TempDir, StorageManager) {
    let dir = TempDir::new().expect("tempdir");
    let (base, db) = paths(&dir);
    let sm = StorageManager::open(&base, &db).await.expect("open store");
    (dir, sm)
}

/// Another handle (own writer thread, own connections) on an existing store.
pub async fn open_existing(dir: &TempDir) -> StorageManager {
    let (base, db) = paths(dir);
    let opts = OpenOptions {
        create: false,
        ..OpenOptions::default()
    };
    StorageManager::open_with(base, db, opts)
        .await
        .expect("reopen store")
}

/// A valid tx whose payload names it.
pub fn tx(id: &str, ts: f64) -> Tx {
    Tx::new(id, "holder-1", ts, format!("payload of {id}").into_bytes()).expect("valid tx")
}

/// A valid id.
pub fn id(s: &str) -> TxId {
    TxId::new(s).expect("valid id")
}

/// Saves one tx per `(id, timestamp)`, in one batch.
pub async fn seed(sm: &StorageManager, txs: &[(String, f64)]) {
    let txs = txs.iter().map(|(i, ts)| tx(i, *ts)).collect();
    sm.save_batch(txs).await.expect("seed store");
}

/// `n` ids `<prefix>-000..`, each with timestamp `ts(i)`.
pub fn many(prefix: &str, n: usize, ts: impl Fn(usize) -> f64) -> Vec<(String, f64)> {
    (0..n)
        .map(|i| (format!("{prefix}-{i:03}"), ts(i)))
        .collect()
}

/// Every id in the store.
pub async fn ids(sm: &StorageManager) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut after = None;
    loop {
        let page = sm.list_page(after, 500).await.expect("list");
        out.extend(page.rows.into_iter().map(|r| r.tx_id));
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// The payload file of `id`.
pub fn payload_path(base: &Path, id: &str) -> PathBuf {
    base.join(format!("{id}.bin"))
}

/// A `set` of the given strings.
pub fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// The error injected by [`Flaky`].
pub fn injected_error() -> StorageError {
    StorageError::Meta {
        what: "injected failure".into(),
        path: PathBuf::from("poh.db"),
        source: "database is locked".into(),
    }
}

/// One call seen by [`Counting`].
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Tokio time of the call.
    pub at: tokio::time::Instant,
    /// The pass's "now".
    pub now: f64,
    /// The batch limit asked for.
    pub limit: usize,
    /// Ids returned (empty on error).
    pub ids: Vec<String>,
    /// Whether the call failed.
    pub failed: bool,
}

/// Records every call to the wrapped target.
#[derive(Debug, Default)]
pub struct Counting<T> {
    pub inner: T,
    pub calls: Mutex<Vec<Call>>,
}

impl<T> Counting<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn record(
        &self,
        at: tokio::time::Instant,
        now: f64,
        limit: usize,
        r: &Result<Vec<String>, StorageError>,
    ) {
        self.calls.lock().expect("calls lock").push(Call {
            at,
            now,
            limit,
            ids: r.as_ref().cloned().unwrap_or_default(),
            failed: r.is_err(),
        });
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Counting<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let at = tokio::time::Instant::now();
        let r = self.inner.delete_expired(now, ttl, limit).await;
        self.record(at, now, limit, &r);
        r
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        let at = tokio::time::Instant::now();
        let r = self.inner.find_expired(now, ttl, after, limit).await;
        let ids = r
            .as_ref()
            .map(|rows| rows.iter().map(|x| x.tx_id.clone()).collect())
            .map_err(|_| injected_error());
        self.record(at, now, limit, &ids);
        r
    }
}

/// A target with nothing to expire that answers at once (no I/O), for exact timing
/// under paused tokio time.
#[derive(Debug, Default)]
pub struct Empty;

impl ExpiryTarget for Empty {
    async fn delete_expired(&self, _: f64, _: f64, _: usize) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    async fn find_expired(
        &self,
        _: f64,
        _: f64,
        _: Option<(f64, String)>,
        _: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        Ok(Vec::new())
    }
}

/// Fails the calls whose (0-based) numbers are in `failing`, with [`injected_error`],
/// and forwards the others.
#[derive(Debug)]
pub struct Flaky<T> {
    pub inner: T,
    failing: BTreeSet<usize>,
    n: AtomicUsize,
}

impl<T> Flaky<T> {
    pub fn new(inner: T, failing: impl IntoIterator<Item = usize>) -> Self {
        Self {
            inner,
            failing: failing.into_iter().collect(),
            n: AtomicUsize::new(0),
        }
    }

    fn fails(&self) -> bool {
        self.failing
            .contains(&self.n.fetch_add(1, Ordering::SeqCst))
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Flaky<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        if self.fails() {
            return Err(injected_error());
        }
        self.inner.delete_expired(now, ttl, limit).await
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        if self.fails() {
            return Err(injected_error());
        }
        self.inner.find_expired(now, ttl, after, limit).await
    }
}

/// Each delete call waits for a permit; `entered` counts calls that reached the gate.
#[derive(Debug)]
pub struct Gated<T> {
    pub inner: T,
    pub gate: Semaphore,
    pub entered: tokio::sync::watch::Sender<usize>,
}

impl<T> Gated<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            gate: Semaphore::new(0),
            entered: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl<T: ExpiryTarget> ExpiryTarget for Gated<T> {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.entered.send_modify(|n| *n += 1);
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.delete_expired(now, ttl, limit).await
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        self.inner.find_expired(now, ttl, after, limit).await
    }
}

/// Re-saves `txs` (through the same store) right after delete batch number `after_batch`
/// (1-based) returns, i.e. between two batches of one pass.
#[derive(Debug)]
pub struct ResaveBetweenBatches {
    pub store: StorageManager,
    pub after_batch: usize,
    pub txs: Mutex<Option<Vec<Tx>>>,
    n: AtomicUsize,
}

impl ResaveBetweenBatches {
    pub fn new(store: StorageManager, after_batch: usize, txs: Vec<Tx>) -> Self {
        Self {
            store,
            after_batch,
            txs: Mutex::new(Some(txs)),
            n: AtomicUsize::new(0),
        }
    }
}

impl ExpiryTarget for ResaveBetweenBatches {
    async fn delete_expired(
        &self,
        now: f64,
        ttl: f64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let ids = self.store.delete_expired(now, ttl, limit).await?;
        if self.n.fetch_add(1, Ordering::SeqCst) + 1 == self.after_batch {
            let txs = self.txs.lock().expect("txs lock").take();
            if let Some(txs) = txs {
                self.store.save_batch(txs).await?;
            }
        }
        Ok(ids)
    }

    async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>, StorageError> {
        self.store.find_expired(now, ttl, after, limit).await
    }
}

/// Runs `fut` on a fresh current-thread runtime (for tests that drive the binary).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

/// A closed store holding `txs`, for tests that run the binary on it.
pub fn store_with(txs: &[(String, f64)]) -> TempDir {
    block_on(async {
        let (dir, sm) = store().await;
        if !txs.is_empty() {
            seed(&sm, txs).await;
        }
        sm.close().await.expect("close store");
        dir
    })
}

/// Every id in the store under `dir` (opened and closed again).
pub fn ids_in(dir: &TempDir) -> BTreeSet<String> {
    block_on(async {
        let sm = open_existing(dir).await;
        let out = ids(&sm).await;
        sm.close().await.expect("close store");
        out
    })
}

/// The real system time, for txs a binary (on the system clock) must see as old or new.
pub fn real_now() -> f64 {
    poh_ttl::clock::unix_now()
}

/// The `poh-ttl` binary.
pub fn bin() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_poh-ttl"));
    cmd.env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("RUST_LOG");
    cmd
}

/// `--base` and `--db` of the store under `dir`.
pub fn store_args(dir: &TempDir) -> [String; 4] {
    let (base, db) = paths(dir);
    [
        "--base".into(),
        base.display().to_string(),
        "--db".into(),
        db.display().to_string(),
    ]
}

/// A copy of the (closed) store under `from`, in a new temporary directory.
pub fn copy_store(from: &TempDir) -> TempDir {
    let to = TempDir::new().expect("tempdir");
    let (src, _) = paths(from);
    let (dst, _) = paths(&to);
    std::fs::create_dir_all(&dst).expect("create base");
    for e in std::fs::read_dir(&src).expect("list base") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy file");
        }
    }
    to
}
