//! The flat-file engine: the prototype's layout, kept compatible both ways. Each payload
//! is a file `<base>/<tx_id>.bin`; its metadata (SHA-256, timestamp, holder, size) is a
//! row of the SQLite table `txs`; writers are ordered across processes by an advisory
//! lock on `<base>/.poh.lock`. See `docs/design.md` for the format, the protocols and
//! every crash window.
//!
//! - [`payload`]: payload file names, temp and quarantine folders, hashing, modes.
//! - [`meta`]: the SQLite metadata (schema, migration of prototype databases, readers
//!   that never write).
//! - [`lock`]: the cross-process store lock, with bounded waits.
//! - [`writer`]: the save protocol (temps, fsync, one commit, renames), delete, expiry.
//! - [`reader`]: loads verified against the recorded SHA-256.
//! - [`recover`]: recovery and verification.
//! - [`names`]: the paths the store manages, refused as a database or an output.

pub(crate) mod lock;
pub(crate) mod meta;
pub(crate) mod names;
pub(crate) mod payload;
mod reader;
mod recover;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::lock::StoreLock;
use self::meta::{MetaBackend, MetaState, SqliteBackend};
use self::payload::PayloadStore;
use self::reader::FilesReader;
use self::writer::FilesWriter;
use crate::engine::{Engine, EngineReader, EngineWriter};
use crate::error::{Result, StorageError};
use crate::fs::Modes;
use crate::options::OpenOptions;
use crate::poison::Poison;
use crate::report::RecoverReport;

pub use self::lock::LOCK_FILE;
pub use self::payload::sha256_hex;

/// A flat-file store, opened.
pub(crate) struct FilesEngine {
    payloads: PayloadStore,
    backend: Arc<SqliteBackend>,
    lock_timeout: Duration,
    modes: Modes,
}

impl FilesEngine {
    /// Opens (or, with `opts.create`, creates) the store at `base` with metadata at `db`:
    /// refuses a database path among the store's own names, a place that is not a store,
    /// links at the store's own names and (for writing) directories others can write to.
    /// A read-only open creates and changes nothing.
    pub(crate) fn open(base: PathBuf, db: PathBuf, opts: &OpenOptions) -> Result<Self> {
        names::check_db_path(&base, &db)?;
        let modes = Modes::new(opts.group_readable);
        let payloads = PayloadStore::new(opts.fs.clone(), &base).with_modes(modes);
        let create = opts.create && !opts.read_only;
        let backend = Arc::new(SqliteBackend::new(&db, create).with_mode(modes.file));
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
        } else {
            payloads.init()?;
        }
        Ok(Self {
            payloads,
            backend,
            lock_timeout: opts.lock_timeout,
            modes,
        })
    }
}

impl Engine for FilesEngine {
    fn base(&self) -> &Path {
        self.payloads.base()
    }

    fn location(&self) -> String {
        self.backend.location().display().to_string()
    }

    fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout::Files
    }

    fn writer(&self, poison: Poison, repair: bool) -> Result<Box<dyn EngineWriter>> {
        let mut meta = self.backend.open_writer()?;
        let base = self.payloads.base();
        let lock = StoreLock::open(base, self.lock_timeout, self.modes.file)?;
        let mut repaired = !repair;
        if repair {
            // Another process holding the lock is alive and writing: do not wait for it
            // (reads must not), let the writer repair at its first hold instead.
            if let Some(_guard) = lock.try_exclusive()? {
                log_repair(&recover::repair_temps(&self.payloads, &mut *meta, false));
                repaired = true;
            }
        }
        Ok(Box::new(FilesWriter {
            meta,
            payloads: self.payloads.clone(),
            lock,
            poison,
            repaired,
        }))
    }

    fn reader(&self) -> Result<Box<dyn EngineReader>> {
        Ok(Box::new(FilesReader {
            meta: self.backend.open_reader()?,
            payloads: self.payloads.clone(),
            lock_timeout: self.lock_timeout,
        }))
    }

    fn recover(&self, dry_run: bool) -> Result<RecoverReport> {
        // A dry run looks things up again through a second reader: it never writes.
        let mut writer = if dry_run {
            self.backend.open_reader()?
        } else {
            self.backend.open_writer()?
        };
        let mut reader = self.backend.open_reader()?;
        let lock = StoreLock::open_existing(self.payloads.base(), self.lock_timeout)?;
        recover::run(
            &self.payloads,
            &mut *writer,
            &mut *reader,
            lock.as_ref(),
            dry_run,
        )
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
        let own = e.name == lock::LOCK_FILE
            || (e.name == payload::TMP_DIR && e.kind == crate::fs::EntryKind::Dir)
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
