//! [`StorageManager`]: the async face of a store, the same for every engine. Input is
//! validated here; writes go to the writer thread ([`crate::group`], group commit); reads
//! run on tokio's blocking pool with a small pool of the engine's readers; read-only
//! handles and poisoning are enforced here, not in each engine.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use poh_types::{Limits, Tx, TxId};
use tokio::sync::oneshot;

use crate::engine::{Engine, EngineReader, MetaRow, Stats};
use crate::error::{Result, StorageError};
use crate::files::FilesEngine;
use crate::group::{self, Cmd};
use crate::layout::{self, Layout};
use crate::options::OpenOptions;
use crate::poison::{Poison, lock};
use crate::report::RecoverReport;
use crate::segments::SegmentsEngine;

/// Most idle reader connections kept.
const MAX_IDLE_READERS: usize = 8;
/// Fewest ids a [`StorageManager::load_many`] call splits over several readers.
const LOAD_SPLIT_MIN: usize = 64;
/// Most readers one [`StorageManager::load_many`] call uses.
const MAX_LOAD_PARTS: usize = 4;

/// A page of [`StorageManager::list_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Rows in id order.
    pub rows: Vec<MetaRow>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// A page of [`StorageManager::list_ids_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct IdPage {
    /// Ids in order.
    pub ids: Vec<String>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// A durable, verified transaction store: payload files under a base directory and
/// metadata in a database. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct StorageManager {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    /// The engine's writing half (None for a read-only handle).
    writer: Option<Arc<group::Writer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    engine: Arc<dyn Engine>,
    readers: Mutex<Vec<Box<dyn EngineReader>>>,
    limits: Limits,
    poison: Poison,
    read_only: bool,
}

impl Drop for Inner {
    /// Dropping the last handle without `close()` still finishes queued writes and closes
    /// the database (so SQLite checkpoints and removes its WAL), blocking briefly.
    fn drop(&mut self) {
        drop(self.tx.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for StorageManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageManager")
            .field("layout", &self.inner.engine.layout())
            .field("base", &self.inner.engine.base())
            .field("db", &self.inner.engine.location())
            .finish()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Meta {
            what: "blocking task".into(),
            path: PathBuf::new(),
            source: e.to_string().into(),
        })
    })
}

/// Opens the engine of the store at `base`: the layout recorded in it (a store without a
/// record is a flat-file one), or for a new store the one `opts` asks for (flat files by
/// default). An explicit layout that differs from an existing store's is refused.
fn open_engine(base: PathBuf, db: PathBuf, opts: &OpenOptions) -> Result<Arc<dyn Engine>> {
    if let Some(url) = db.to_str().filter(|s| crate::dburl::is_url_str(s)) {
        return open_database(url, base, opts);
    }
    if opts.layout == Some(Layout::Postgres) {
        return Err(StorageError::BadUrl {
            url: db.display().to_string(),
            why: "the postgres layout keeps a store in a PostgreSQL database: give --db \
                  postgres://user@host/dbname"
                .into(),
        });
    }
    let recorded = layout::read(&*opts.fs, &base)?;
    let layout = match (recorded, opts.layout) {
        (Some(rec), Some(asked)) if rec.layout != asked => {
            return Err(StorageError::LayoutMismatch {
                path: base,
                found: rec.layout.name().into(),
                asked: asked.name().into(),
            });
        }
        (Some(rec), _) => rec.layout,
        (None, Some(Layout::Segments)) => Layout::Segments,
        (None, _) => Layout::Files,
    };
    Ok(match layout {
        Layout::Files => Arc::new(FilesEngine::open(base, db, opts)?),
        Layout::Segments => Arc::new(SegmentsEngine::open(base, db, opts, recorded)?),
        Layout::Postgres => {
            return Err(StorageError::NotAStore {
                path: base,
                why: "a directory cannot hold a postgres store".into(),
            });
        }
    })
}

/// Opens the PostgreSQL store in the database `url` names (`base` is kept only to be
/// reported back). A local layout asked for explicitly is refused.
#[cfg(feature = "postgres")]
fn open_database(url: &str, base: PathBuf, opts: &OpenOptions) -> Result<Arc<dyn Engine>> {
    if let Some(asked) = opts.layout.filter(|l| *l != Layout::Postgres) {
        return Err(StorageError::LayoutMismatch {
            path: PathBuf::from(crate::dburl::redact_url(url)),
            found: Layout::Postgres.name().into(),
            asked: asked.name().into(),
        });
    }
    Ok(Arc::new(crate::postgres::PgEngine::open(url, base, opts)?))
}

/// Without the `postgres` feature a database URL is refused, saying why.
#[cfg(not(feature = "postgres"))]
fn open_database(url: &str, _base: PathBuf, _opts: &OpenOptions) -> Result<Arc<dyn Engine>> {
    Err(StorageError::BadUrl {
        url: crate::dburl::redact_url(url),
        why: "this build of poh-storage has no PostgreSQL engine (the `postgres` feature)".into(),
    })
}

impl StorageManager {
    /// Opens the store with payloads under `base` and SQLite metadata at `db`, creating
    /// both if missing, migrating a prototype database in place, and finishing any save
    /// a crash interrupted after its commit point.
    pub async fn open(base: impl AsRef<Path>, db: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(base, db, OpenOptions::default()).await
    }

    /// [`open`](Self::open) with options.
    pub async fn open_with(
        base: impl AsRef<Path>,
        db: impl AsRef<Path>,
        opts: OpenOptions,
    ) -> Result<Self> {
        let base = base.as_ref().to_path_buf();
        let db = db.as_ref().to_path_buf();
        blocking(move || Self::open_blocking(base, db, opts)).await
    }

    fn open_blocking(base: PathBuf, db: PathBuf, opts: OpenOptions) -> Result<Self> {
        let engine = open_engine(base, db, &opts)?;
        let poison = Poison::default();
        let (tx, thread) = if opts.read_only {
            (None, None)
        } else {
            let writer = Arc::new(group::Writer::new(
                engine.writer(poison.clone(), opts.repair)?,
                opts.inline_saves,
            ));
            let (tx, rx) = mpsc::channel();
            let p = poison.clone();
            let w = writer.clone();
            let thread = std::thread::Builder::new()
                .name("poh-writer".into())
                .spawn(move || group::run(&w, p, rx))
                .map_err(|e| StorageError::io("spawn writer thread", engine.base(), e))?;
            (Some((tx, writer)), Some(thread))
        };
        let (tx, writer) = tx.unzip();
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(tx),
                writer,
                thread: Mutex::new(thread),
                engine,
                readers: Mutex::new(Vec::new()),
                limits: opts.limits,
                poison,
                read_only: opts.read_only,
            }),
        })
    }

    /// The store's layout (the engine it opened with).
    pub fn layout(&self) -> Layout {
        self.inner.engine.layout()
    }

    /// Fails for a handle opened read-only.
    fn writable(&self, what: &'static str) -> Result<()> {
        if self.inner.read_only {
            return Err(StorageError::ReadOnly(what));
        }
        Ok(())
    }

    /// Where the store is, for messages and logs: its base directory, or for a
    /// PostgreSQL store the database URL without its password.
    pub fn location(&self) -> String {
        match self.layout() {
            Layout::Postgres => self.inner.engine.location(),
            _ => self.base().display().to_string(),
        }
    }

    /// The base directory (for a PostgreSQL store, the one it was opened with, unused).
    pub fn base(&self) -> &Path {
        self.inner.engine.base()
    }

    /// The limits applied to saves.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = lock(&self.inner.tx);
            let sender = guard.as_ref().ok_or(StorageError::Closed)?;
            if let Some(w) = &self.inner.writer {
                w.queue(true);
            }
            if sender.send(make(reply)).is_err() {
                if let Some(w) = &self.inner.writer {
                    w.queue(false);
                }
                return Err(StorageError::Closed);
            }
        }
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Saves `tx` durably: when this returns Ok the tx survives a crash or power loss.
    /// Re-saving an id replaces it atomically. Concurrent callers share one commit.
    pub async fn save(&self, tx: Tx) -> Result<()> {
        self.save_batch(vec![tx]).await
    }

    /// Saves all of `txs` durably in one commit: all of them or, on error, none.
    /// Every tx is validated first; one invalid tx rejects the batch before anything is
    /// written.
    pub async fn save_batch(&self, txs: Vec<Tx>) -> Result<()> {
        for tx in &txs {
            tx.validate(&self.inner.limits)?;
        }
        self.writable("save")?;
        if txs.is_empty() {
            return Ok(());
        }
        self.inner.poison.check()?;
        let _saving = self.inner.writer.as_ref().map(|w| w.saving());
        if txs.len() <= group::INLINE_MAX_TXS
            && _saving.as_ref().is_some_and(|s| s.alone())
            && let Some(saved) = self.save_inline(&txs)
        {
            return saved;
        }
        // The txs come back to be freed here (measured: freeing 1,000 txs on the writer
        // thread, memory another thread allocated, took it 1.4 ms between two groups).
        self.call(|reply| Cmd::Save { txs, reply }).await.map(drop)
    }

    /// A lone caller's save, committed on its own thread when the writer is idle
    /// ([`group::Writer::save_inline`]); `None` (queue it) when the writer is busy or
    /// closed, or when this thread may not block: outside a multi-threaded tokio runtime.
    fn save_inline(&self, txs: &[Tx]) -> Option<Result<()>> {
        let writer = self.inner.writer.as_ref()?;
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if !writer.idle()
            || handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread
            || lock(&self.inner.tx).is_none()
        {
            return None;
        }
        let saved = tokio::task::block_in_place(|| writer.save_inline(&self.inner.poison, txs));
        if saved.is_some()
            && writer.wants_settle()
            && let Some(tx) = lock(&self.inner.tx).as_ref()
        {
            // Not counted as queued: the next lone save still runs here.
            let _ = tx.send(Cmd::Settle);
        }
        saved
    }

    /// Makes every save answered so far visible to other processes now. Never needed
    /// for durability or within this process: a save is on the disk and seen here once it
    /// returns Ok. A segments store commits the index rows of small save groups a moment
    /// after answering them (docs/design.md §7.3c), a millisecond or so after saves
    /// pause; this does it at once. A no-op on other layouts and read-only handles.
    pub async fn flush(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        self.call(|reply| Cmd::Flush { reply }).await
    }

    /// Deletes `id` (row, then payload file); true if it existed.
    pub async fn delete(&self, id: &TxId) -> Result<bool> {
        self.writable("delete")?;
        let id = id.clone();
        self.call(|reply| Cmd::Delete { id, reply }).await
    }

    /// Deletes up to `limit` txs with `now - timestamp > ttl`, oldest first, as one
    /// commit, and returns their ids. The condition is checked inside the commit, so a tx
    /// re-saved with a fresh timestamp meanwhile is kept. On a segments or PostgreSQL store
    /// the first wholly expired time window goes whole whatever its size (one segment or
    /// partition dropped: the same cost however many txs it holds), so a call may return
    /// more than `limit` ids.
    pub async fn delete_expired(&self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        self.writable("expiry")?;
        self.call(|reply| Cmd::DeleteExpired {
            now,
            ttl,
            limit,
            reply,
        })
        .await
    }

    fn with_reader<T>(
        inner: &Inner,
        f: impl FnOnce(&mut dyn EngineReader) -> Result<T>,
    ) -> Result<T> {
        let pooled = lock(&inner.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => inner.engine.reader()?,
        };
        let out = f(&mut *conn);
        let mut pool = lock(&inner.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || f(&inner)).await
    }

    /// Up to `limit` txs with `now - timestamp > ttl`, after `after` in
    /// `(timestamp, tx_id)` order. Changes nothing (for dry runs).
    pub async fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, String)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>> {
        self.read(move |inner| {
            Self::with_reader(inner, |m| {
                m.find_expired(
                    now,
                    ttl,
                    after.as_ref().map(|(t, s)| (*t, s.as_str())),
                    limit,
                )
            })
        })
        .await
    }

    /// Loads `id`, verifying its payload against the recorded SHA-256. `Ok(None)` if
    /// there is no such tx; an integrity error if the payload is missing or altered.
    pub async fn load(&self, id: &TxId) -> Result<Option<Tx>> {
        let id = id.clone();
        self.read(move |inner| Self::with_reader(inner, |r| r.load(&id)))
            .await
    }

    /// Loads `id` on the calling thread, without any hand-off, if that needs no waiting:
    /// `Some(Some(tx))` (verified, as [`load`](Self::load)) or `Some(None)` (no such tx)
    /// when the tx is unknown or its row records a payload of at most `max_bytes` that
    /// verifies at the first read; `None` for anything else — a larger payload, a row
    /// without a recorded size (written by the prototype), any error or a payload that
    /// does not verify — which the caller then loads with [`load`](Self::load) (whose
    /// errors are precise, and which waits out a writer mid-protocol).
    ///
    /// This blocks: one indexed lookup and the read of one small file, on the calling
    /// thread (tens of microseconds from the page cache, a disk read otherwise). It is for
    /// callers to whom a thread hand-off per load costs more than that (the Python
    /// bindings, which release the GIL around it); from an async task, prefer
    /// [`load`](Self::load).
    pub fn load_small_now(&self, id: &TxId, max_bytes: u64) -> Option<Option<Tx>> {
        Self::with_reader(&self.inner, |r| Ok(r.load_small(id, max_bytes)))
            .ok()
            .flatten()
    }

    /// Loads many ids; one result per id, in order. A call of 64 ids or more is split over
    /// up to one reader per core (each part one hand-off to the blocking pool), so one
    /// caller can verify at the rate of every core.
    pub async fn load_many(&self, ids: Vec<TxId>) -> Result<Vec<Result<Option<Tx>>>> {
        let cores = crate::par::cores();
        let parts = (ids.len() / (LOAD_SPLIT_MIN / 2)).clamp(1, cores.min(MAX_LOAD_PARTS));
        if parts == 1 {
            return self
                .read(move |inner| Self::with_reader(inner, |r| Ok(r.load_many(&ids))))
                .await;
        }
        let total = ids.len();
        let per = total.div_ceil(parts);
        let mut rest = ids;
        let mut handles = Vec::with_capacity(parts);
        while !rest.is_empty() {
            let tail = rest.split_off(per.min(rest.len()));
            let part = std::mem::replace(&mut rest, tail);
            let inner = self.inner.clone();
            // Started at once (not on first poll), so the parts run side by side.
            handles.push(tokio::task::spawn_blocking(move || {
                Self::with_reader(&inner, |r| Ok(r.load_many(&part)))
            }));
        }
        let mut out = Vec::with_capacity(total);
        for h in handles {
            let part = h.await.unwrap_or_else(|e| {
                Err(StorageError::Meta {
                    what: "blocking task".into(),
                    path: PathBuf::new(),
                    source: e.to_string().into(),
                })
            })?;
            out.extend(part);
        }
        Ok(out)
    }

    /// True if a row exists for `id` (the payload is not read).
    pub async fn exists(&self, id: &TxId) -> Result<bool> {
        let id = id.clone();
        self.read(move |inner| Self::with_reader(inner, |m| m.contains(id.as_str())))
            .await
    }

    /// The metadata row of `id`, without reading the payload.
    pub async fn meta(&self, id: &TxId) -> Result<Option<MetaRow>> {
        let id = id.clone();
        self.read(move |inner| Self::with_reader(inner, |m| m.row(id.as_str())))
            .await
    }

    /// Up to `limit` rows after id `after`, in id order; page through a store of any size
    /// without holding it in memory.
    pub async fn list_page(&self, after: Option<String>, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        self.read(move |inner| {
            let rows = Self::with_reader(inner, |m| m.page(after.as_deref(), limit))?;
            let next = if rows.len() == limit {
                rows.last().map(|r| r.tx_id.clone())
            } else {
                None
            };
            Ok(Page { rows, next })
        })
        .await
    }

    /// The ids of [`list_page`](Self::list_page), without the rest of each row: what a
    /// listing of ids needs, and on a segments store no read of the records' headers.
    pub async fn list_ids_page(&self, after: Option<String>, limit: usize) -> Result<IdPage> {
        let limit = limit.max(1);
        self.read(move |inner| {
            let ids = Self::with_reader(inner, |m| m.page_ids(after.as_deref(), limit))?;
            let next = if ids.len() == limit {
                ids.last().cloned()
            } else {
                None
            };
            Ok(IdPage { ids, next })
        })
        .await
    }

    /// Count, bytes and time range of the store.
    pub async fn stats(&self) -> Result<Stats> {
        self.read(|inner| Self::with_reader(inner, |m| m.stats()))
            .await
    }

    /// Checks every tx and file and repairs what a crash or corruption left: finishes
    /// interrupted saves, drops rows whose payload is gone, quarantines payloads that fail
    /// their hash, removes orphan and temp files. Transient errors are reported and the
    /// tx left alone. With `dry_run`, reports what it would do and changes nothing.
    pub async fn recover(&self, dry_run: bool) -> Result<RecoverReport> {
        if !dry_run {
            self.writable("recover (without --dry-run)")?;
            self.inner.poison.check()?;
        }
        self.read(move |inner| inner.engine.recover(dry_run)).await
    }

    /// Read-only integrity check: [`recover`](Self::recover) with `dry_run`.
    pub async fn verify(&self) -> Result<RecoverReport> {
        self.recover(true).await
    }

    /// Finishes queued writes and stops the writer. Later calls fail with
    /// [`StorageError::Closed`]. Dropping the last clone closes the store too.
    pub async fn close(&self) -> Result<()> {
        let sender = lock(&self.inner.tx).take();
        if let Some(sender) = sender {
            let (reply, rx) = oneshot::channel();
            if sender.send(Cmd::Close { reply }).is_ok() {
                let _ = rx.await;
            }
        }
        let thread = lock(&self.inner.thread).take();
        if let Some(t) = thread {
            blocking(move || {
                let _ = t.join();
                Ok(())
            })
            .await?;
        }
        lock(&self.inner.readers).clear();
        Ok(())
    }
}
