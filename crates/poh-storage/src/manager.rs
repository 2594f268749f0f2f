//! [`StorageManager`]: the async face of a store. Writes go to the writer thread (group
//! commit); reads run on tokio's blocking pool with a small pool of reader connections.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use poh_types::{Limits, Tx, TxId};
use tokio::sync::oneshot;

use crate::error::{Result, StorageError};
use crate::fs::{FileSystem, Modes, RealFs, is_not_regular};
use crate::lock::{DEFAULT_LOCK_TIMEOUT, StoreLock};
use crate::meta::{MetaBackend, MetaRow, MetaState, MetaStore, SqliteBackend, Stats};
use crate::payload::{PayloadStore, sha256_hex};
use crate::recover::{self, RecoverReport};
use crate::writer::{Cmd, Poison, Writer};

/// Most idle reader connections kept.
const MAX_IDLE_READERS: usize = 8;

/// How a store is opened.
#[derive(Clone)]
pub struct OpenOptions {
    /// Create the base directory and database if missing (default true).
    pub create: bool,
    /// Finish or discard the temp files of saves a crash interrupted, at open (default
    /// true). Turn off to inspect a store exactly as found (`verify`); the writes of such a
    /// handle still work, and `recover` does the same repair.
    pub repair: bool,
    /// Open for reading only (default false): nothing under the base or at the database
    /// is created, migrated or changed — not even the lock file — so it works on a
    /// read-only mount, a full disk or a store owned by another user, never waits for a
    /// writer's lock on its fast path, and inspects a store exactly as found. Writes
    /// return [`StorageError::ReadOnly`]; `recover` runs only as a dry run.
    pub read_only: bool,
    /// Give the group read access to what the store creates (default false): directories
    /// 0750 and files 0640 instead of 0700 and 0600, for deployments where a group of
    /// services shares a store. Never wider; existing files keep their modes until they
    /// are rewritten. Whatever this says, a writable handle refuses a base, `.tmp/` or
    /// `.quarantine/` that other users can write to ([`StorageError::WritableByOthers`]).
    pub group_readable: bool,
    /// Longest wait for the store lock before failing with
    /// [`StorageError::LockTimeout`] (default 30 s).
    pub lock_timeout: Duration,
    /// Input limits applied to saves.
    pub limits: Limits,
    /// The file system payloads live on (tests substitute a simulated one).
    pub fs: Arc<dyn FileSystem>,
    /// The metadata backend; `None` means SQLite at the `db` path given to `open`.
    pub meta: Option<Arc<dyn MetaBackend>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: true,
            repair: true,
            read_only: false,
            group_readable: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            limits: Limits::default(),
            fs: Arc::new(RealFs),
            meta: None,
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("create", &self.create)
            .field("repair", &self.repair)
            .field("read_only", &self.read_only)
            .field("group_readable", &self.group_readable)
            .field("lock_timeout", &self.lock_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A page of [`StorageManager::list_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Rows in id order.
    pub rows: Vec<MetaRow>,
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
    thread: Mutex<Option<JoinHandle<()>>>,
    backend: Arc<dyn MetaBackend>,
    readers: Mutex<Vec<Box<dyn MetaStore>>>,
    payloads: PayloadStore,
    limits: Limits,
    poison: Poison,
    read_only: bool,
    lock_timeout: Duration,
}

impl Inner {
    /// The store lock for waiting out writers, opened without creating anything; `None`
    /// when no writer of ours ever opened the store.
    fn lock(&self) -> Result<Option<StoreLock>> {
        StoreLock::open_existing(self.payloads.base(), self.lock_timeout)
    }
}

/// Logs what an open-time repair did.
fn log_repair(report: &RecoverReport) {
    if !report.rolled_forward.is_empty() || !report.temps_removed.is_empty() {
        tracing::info!(
            rolled_forward = report.rolled_forward.len(),
            temps_removed = report.temps_removed.len(),
            "finished saves interrupted by a crash"
        );
    }
}

/// A store is about to be created where the metadata is missing or has no schema: the
/// base must hold nothing but what the store itself puts there. A non-empty directory
/// that is not a store (a user's files) or payload files whose metadata was lost are
/// refused, so no later `recover` can mistake them for orphans.
fn check_new_store_place(payloads: &PayloadStore, db: &Path, state: MetaState) -> Result<()> {
    let base = payloads.base();
    let db_name = db_name_in(base, db);
    let mut foreign: Vec<String> = Vec::new();
    let mut count = 0usize;
    let listed = payloads.fs().list_dir(base, &mut |e| {
        let own = e.name == crate::lock::LOCK_FILE
            || (e.name == crate::payload::TMP_DIR && e.kind == crate::fs::EntryKind::Dir)
            || db_name.as_deref().is_some_and(|n| {
                e.name == n
                    || ["-wal", "-shm", "-journal"]
                        .iter()
                        .any(|x| e.name == format!("{n}{x}"))
            });
        if !own {
            count += 1;
            if foreign.len() < 3 {
                foreign.push(e.name);
            }
        }
    });
    match listed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("list base directory", base, e)),
    }
    if count == 0 {
        return Ok(());
    }
    let shown = foreign.join(", ");
    let more = if count > foreign.len() { ", …" } else { "" };
    let why = match state {
        MetaState::NoSchema => format!(
            "its metadata database {} is empty or has no txs table, yet the directory holds \
             {count} other entr{} ({shown}{more}); the metadata may have been lost. Nothing \
             was changed: restore the database, or move the files away to start a new store",
            db.display(),
            if count == 1 { "y" } else { "ies" },
        ),
        _ => format!(
            "the directory is not empty ({count} entr{}: {shown}{more}) and has no metadata \
             database at {}; refusing to make a store of it. Use a new or empty directory \
             (or restore the database if this store lost it)",
            if count == 1 { "y" } else { "ies" },
            db.display(),
        ),
    };
    Err(StorageError::NotAStore {
        path: base.to_owned(),
        why,
    })
}

/// The database's file name when it lives directly in `base`.
fn db_name_in(base: &Path, db: &Path) -> Option<String> {
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let same = parent == base
        || matches!((parent.canonicalize(), base.canonicalize()), (Ok(a), Ok(b)) if a == b);
    same.then(|| db.file_name().map(|n| n.to_string_lossy().into_owned()))
        .flatten()
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
            .field("base", &self.inner.payloads.base())
            .field("db", &self.inner.backend.location())
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
        crate::names::check_db_path(&base, &db)?;
        let modes = Modes::new(opts.group_readable);
        let payloads = PayloadStore::new(opts.fs.clone(), &base).with_modes(modes);
        let create = opts.create && !opts.read_only;
        let backend: Arc<dyn MetaBackend> = match &opts.meta {
            Some(b) => b.clone(),
            None => Arc::new(SqliteBackend::new(&db, create).with_mode(modes.file)),
        };
        let state = match payloads.fs().kind(&base) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                return Err(StorageError::NotFound {
                    path: base,
                    why: "the base directory does not exist".into(),
                });
            }
            _ => backend.probe()?,
        };
        match state {
            MetaState::Store => {}
            MetaState::Missing if !create => {
                return Err(StorageError::NotFound {
                    path: db,
                    why: "the metadata database does not exist".into(),
                });
            }
            MetaState::NoSchema if !create => {
                return Err(StorageError::NotAStore {
                    path: db,
                    why: "the metadata database is empty or has no txs table (was it lost or \
                          truncated?); nothing was changed"
                        .into(),
                });
            }
            MetaState::Missing | MetaState::NoSchema => {
                check_new_store_place(&payloads, &db, state)?;
            }
        }
        // Other users able to write to the store's directories could plant files and links
        // where it renames and deletes files: writers refuse, readers warn.
        match payloads.check_permissions() {
            Err(e @ StorageError::WritableByOthers { .. }) if opts.read_only => {
                tracing::warn!("{e}; reading it anyway");
            }
            res => res?,
        }
        if opts.read_only {
            payloads.check()?;
            // Refuses a lock file planted as a link, as writers do; opens nothing else.
            StoreLock::open_existing(&base, opts.lock_timeout)?;
            return Ok(Self::assemble(
                backend,
                payloads,
                &opts,
                None,
                Poison::default(),
            ));
        }
        payloads.init()?;
        let mut meta = backend.open_writer()?;
        let lock = StoreLock::open(&base, opts.lock_timeout, modes.file)?;
        let mut repaired = false;
        if opts.repair {
            // Another process holding the lock is alive and writing: do not wait for it
            // (reads must not), let the writer thread repair at its first hold instead.
            if let Some(_guard) = lock.try_exclusive()? {
                log_repair(&recover::repair_temps(&payloads, &mut *meta, false));
                repaired = true;
            }
        }
        let poison = Poison::default();
        let writer = Writer {
            meta,
            payloads: payloads.clone(),
            lock,
            poison: poison.clone(),
            repaired: repaired || !opts.repair,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("poh-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::io("spawn writer thread", &base, e))?;
        Ok(Self::assemble(
            backend,
            payloads,
            &opts,
            Some((tx, thread)),
            poison,
        ))
    }

    fn assemble(
        backend: Arc<dyn MetaBackend>,
        payloads: PayloadStore,
        opts: &OpenOptions,
        writer: Option<(mpsc::Sender<Cmd>, JoinHandle<()>)>,
        poison: Poison,
    ) -> Self {
        let (tx, thread) = match writer {
            Some((tx, thread)) => (Some(tx), Some(thread)),
            None => (None, None),
        };
        Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(tx),
                thread: Mutex::new(thread),
                backend,
                readers: Mutex::new(Vec::new()),
                payloads,
                limits: opts.limits,
                poison,
                read_only: opts.read_only,
                lock_timeout: opts.lock_timeout,
            }),
        }
    }

    /// Fails for a handle opened read-only.
    fn writable(&self, what: &'static str) -> Result<()> {
        if self.inner.read_only {
            return Err(StorageError::ReadOnly(what));
        }
        Ok(())
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        self.inner.payloads.base()
    }

    /// The limits applied to saves.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
            let sender = guard.as_ref().ok_or(StorageError::Closed)?;
            sender.send(make(reply)).map_err(|_| StorageError::Closed)?;
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
        self.call(|reply| Cmd::Save { txs, reply }).await
    }

    /// Deletes `id` (row, then payload file); true if it existed.
    pub async fn delete(&self, id: &TxId) -> Result<bool> {
        self.writable("delete")?;
        let id = id.clone();
        self.call(|reply| Cmd::Delete { id, reply }).await
    }

    /// Deletes up to `limit` txs with `now - timestamp > ttl`, oldest first, as one
    /// commit, and returns their ids. The condition is checked inside the commit, so a tx
    /// re-saved with a fresh timestamp meanwhile is kept.
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

    fn with_reader<T>(inner: &Inner, f: impl FnOnce(&mut dyn MetaStore) -> Result<T>) -> Result<T> {
        let pooled = inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => inner.backend.open_reader()?,
        };
        let out = f(&mut *conn);
        let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
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
        self.read(move |inner| load_one(inner, &id)).await
    }

    /// Loads many ids in one hand-off to the blocking pool; one result per id, in order.
    pub async fn load_many(&self, ids: Vec<TxId>) -> Result<Vec<Result<Option<Tx>>>> {
        self.read(move |inner| Ok(ids.iter().map(|id| load_one(inner, id)).collect()))
            .await
    }

    /// True if a row exists for `id` (the payload is not read).
    pub async fn exists(&self, id: &TxId) -> Result<bool> {
        let id = id.clone();
        self.read(move |inner| Self::with_reader(inner, |m| Ok(m.get(id.as_str())?.is_some())))
            .await
    }

    /// The metadata row of `id`, without reading the payload.
    pub async fn meta(&self, id: &TxId) -> Result<Option<MetaRow>> {
        let id = id.clone();
        self.read(move |inner| Self::with_reader(inner, |m| m.get(id.as_str())))
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
        self.read(move |inner| {
            // A dry run looks things up again through a second reader: it never writes.
            let mut writer = if dry_run {
                inner.backend.open_reader()?
            } else {
                inner.backend.open_writer()?
            };
            let mut reader = inner.backend.open_reader()?;
            let lock = inner.lock()?;
            recover::run(
                &inner.payloads,
                &mut *writer,
                &mut *reader,
                lock.as_ref(),
                dry_run,
            )
        })
        .await
    }

    /// Read-only integrity check: [`recover`](Self::recover) with `dry_run`.
    pub async fn verify(&self) -> Result<RecoverReport> {
        self.recover(true).await
    }

    /// Finishes queued writes and stops the writer. Later calls fail with
    /// [`StorageError::Closed`]. Dropping the last clone closes the store too.
    pub async fn close(&self) -> Result<()> {
        let sender = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sender) = sender {
            let (reply, rx) = oneshot::channel();
            if sender.send(Cmd::Close { reply }).is_ok() {
                let _ = rx.await;
            }
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            blocking(move || {
                let _ = t.join();
                Ok(())
            })
            .await?;
        }
        self.inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

/// Reads and verifies one payload against its row.
pub(crate) fn check_payload(payloads: &PayloadStore, row: &MetaRow) -> Result<Tx> {
    let id = TxId::new(row.tx_id.as_str()).map_err(|e| StorageError::Integrity {
        tx_id: row.tx_id.clone(),
        detail: format!("stored id is not a safe file name ({e}); its file is never read"),
    })?;
    let path = payloads.path(&id);
    let data = match payloads.read(&id) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::PayloadMissing {
                tx_id: row.tx_id.clone(),
                path,
            });
        }
        Err(e) if is_not_regular(&e) => {
            return Err(StorageError::Integrity {
                tx_id: row.tx_id.clone(),
                detail: format!("{} is not a regular file", path.display()),
            });
        }
        Err(e) => return Err(StorageError::io("read payload", path, e)),
    };
    verify_bytes(row, id, data)
}

fn verify_bytes(row: &MetaRow, id: TxId, data: Vec<u8>) -> Result<Tx> {
    if let Some(size) = row.size
        && size != data.len() as u64
    {
        return Err(StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail: format!("payload is {} bytes, {size} were saved", data.len()),
        });
    }
    let h = sha256_hex(&data);
    if h != row.storage_hash {
        return Err(StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail: format!(
                "payload SHA-256 {h} does not match the recorded {}",
                row.storage_hash
            ),
        });
    }
    Ok(Tx {
        tx_id: id,
        holder_id: row.holder_id.clone(),
        timestamp: row.timestamp,
        payload: data,
    })
}

fn load_one(inner: &Inner, id: &TxId) -> Result<Option<Tx>> {
    let Some(row) = StorageManager::with_reader(inner, |m| m.get(id.as_str()))? else {
        return Ok(None);
    };
    match check_payload(&inner.payloads, &row) {
        Ok(tx) => Ok(Some(tx)),
        Err(e @ (StorageError::Io { .. } | StorageError::Meta { .. })) => Err(e),
        Err(_) => load_slow(inner, id),
    }
}

/// The payload did not match: wait out any writer mid-protocol (shared lock), then look
/// again, including in `.tmp/` for a save that committed but crashed before its rename.
fn load_slow(inner: &Inner, id: &TxId) -> Result<Option<Tx>> {
    let lock = inner.lock()?;
    let _guard = lock.as_ref().map(StoreLock::shared).transpose()?;
    let Some(row) = StorageManager::with_reader(inner, |m| m.get(id.as_str()))? else {
        return Ok(None);
    };
    let err = match check_payload(&inner.payloads, &row) {
        Ok(tx) => return Ok(Some(tx)),
        Err(e) => e,
    };
    if let Ok(temps) = inner.payloads.temps() {
        for t in temps.into_iter().filter(|t| t.tx_id.as_ref() == Some(id)) {
            if let Ok(data) = inner.payloads.fs().read(&t.path)
                && let Ok(tx) = verify_bytes(&row, id.clone(), data)
            {
                return Ok(Some(tx));
            }
        }
    }
    Err(err)
}
