//! Stores for tests in a temporary directory (`<dir>/data`, database `<dir>/data/poh.db`):
//! created, seeded, reopened, listed and copied through the library, for the TTL tests
//! and the command-line tests that run the binaries on them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use poh_storage::{Layout, OpenOptions, StorageManager, Tx, TxId};
use tempfile::TempDir;

/// The layout new test stores get: `POH_LAYOUT` (`files` or `segments`), flat files when
/// unset, so a whole suite can be run on either engine (`POH_LAYOUT=segments cargo test`).
///
/// # Panics
/// On any other value, naming it.
pub fn layout_from_env() -> Layout {
    match std::env::var("POH_LAYOUT") {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|e| panic!("POH_LAYOUT: {e}")),
        _ => Layout::Files,
    }
}

/// True when new test stores are flat-file ones (payloads are `<base>/<id>.bin` files, so
/// a test may look at them); false for segments stores.
pub fn flat_files() -> bool {
    layout_from_env() == Layout::Files
}

/// Options creating a store of [`layout_from_env`].
pub fn env_options() -> OpenOptions {
    OpenOptions {
        layout: Some(layout_from_env()),
        ..OpenOptions::default()
    }
}

/// A fixed "now" for tests on a manual clock (2023-11-14).
pub const NOW: f64 = 1_700_000_000.0;

/// The store's base directory and database under a test directory.
pub fn paths(dir: &TempDir) -> (PathBuf, PathBuf) {
    let base = dir.path().join("data");
    let db = base.join("poh.db");
    (base, db)
}

/// A fresh store of [`layout_from_env`] in a temporary directory; keep the `TempDir` alive.
pub async fn store() -> (TempDir, StorageManager) {
    store_of(layout_from_env()).await
}

/// A fresh store of `layout` in a temporary directory (for tests of one layout's own
/// behaviour, whatever `POH_LAYOUT` says); keep the `TempDir` alive.
pub async fn store_of(layout: Layout) -> (TempDir, StorageManager) {
    let dir = TempDir::new().expect("tempdir");
    let (base, db) = paths(&dir);
    let opts = OpenOptions {
        layout: Some(layout),
        ..OpenOptions::default()
    };
    let sm = StorageManager::open_with(&base, &db, opts)
        .await
        .expect("open store");
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

/// The payload file of `id` (in a flat-file store; a segments store has none).
pub fn payload_path(base: &Path, id: &str) -> PathBuf {
    base.join(format!("{id}.bin"))
}

/// A `set` of the given strings.
pub fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Runs `fut` on a fresh current-thread runtime (for tests that drive the binary).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

/// A closed store of [`layout_from_env`] holding `txs`, for tests that run the binary on it.
pub fn store_with(txs: &[(String, f64)]) -> TempDir {
    store_with_layout(layout_from_env(), txs)
}

/// A closed store of `layout` holding `txs`.
pub fn store_with_layout(layout: Layout, txs: &[(String, f64)]) -> TempDir {
    block_on(async {
        let (dir, sm) = store_of(layout).await;
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

/// Tx `id` of the store under `dir` (opened and closed again), its payload verified.
pub fn load_in(dir: &TempDir, id_: &str) -> Option<Tx> {
    block_on(async {
        let sm = open_existing(dir).await;
        let tx = sm.load(&id(id_)).await.expect("load");
        sm.close().await.expect("close store");
        tx
    })
}

/// The real system time, for txs a binary (on the system clock) must see as old or new.
pub fn real_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A copy of the (closed) store under `from`, in a new temporary directory.
pub fn copy_store(from: &TempDir) -> TempDir {
    let to = TempDir::new().expect("tempdir");
    let (src, _) = paths(from);
    let (dst, _) = paths(&to);
    std::fs::create_dir_all(&dst).expect("create base");
    copy_files(&src, &dst);
    // A segments store keeps its data one level down.
    let segs = src.join("segments");
    if segs.is_dir() {
        std::fs::create_dir_all(dst.join("segments")).expect("create segments dir");
        copy_files(&segs, &dst.join("segments"));
    }
    to
}

fn copy_files(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).expect("list directory") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy file");
        }
    }
}
