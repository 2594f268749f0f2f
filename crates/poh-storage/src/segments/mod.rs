//! The segments engine: transactions appended as self-describing, checksummed records to
//! segment files, one series of segments per time window of the txs' own timestamps, with
//! an SQLite index from tx id to record. See docs/design.md, section 7, for the format,
//! the protocols and every crash window.
//!
//! - [`record`]: the record format (encode, parse, checks).
//! - [`index`]: the SQLite index (schema, lookups, the segment table).
//! - [`dir`]: segment file names, the store's directories, quarantine.
//! - [`writer`]: group commit, delete, expiry (whole segments dropped at once), compaction.
//! - [`reader`]: verified loads.
//! - [`replay`]: segment tails replayed into an index that lags them (after a power loss).
//! - [`overlay`]: what a read-only handle serves from those tails until a writer replays them.
//! - [`recover`]: open-time repair, recovery and verification.

pub(crate) mod dir;
pub(crate) mod index;
pub(crate) mod io;
pub(crate) mod overlay;
pub(crate) mod reader;
pub(crate) mod record;
pub(crate) mod recover;
pub(crate) mod replay;
pub(crate) mod writer;

#[cfg(test)]
mod early_ack_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::dir::SegDir;
use self::index::{Found, IndexDb};
use self::overlay::Overlay;
use crate::engine::{Engine, EngineReader, EngineWriter};
use crate::error::{Result, StorageError};
use crate::files::lock::{LOCK_FILE, StoreLock};
use crate::fs::{EntryKind, Modes};
use crate::layout::{self, LAYOUT_FILE, Layout, Recorded};
use crate::options::OpenOptions;
use crate::poison::Poison;
use crate::report::RecoverReport;

/// A segments store, opened.
pub(crate) struct SegmentsEngine {
    dir: SegDir,
    db: IndexDb,
    window: u64,
    lock_timeout: Duration,
    /// A read-only handle's rows from segment tails the index lost (see [`overlay`]).
    overlay: Option<Arc<Overlay>>,
    /// The writer's acknowledged rows awaiting their index commit, for the readers.
    acked: overlay::Acked,
}

/// The window width `opts` asks for, in whole seconds.
fn asked_window(base: &Path, opts: &OpenOptions) -> Result<Option<u64>> {
    match opts.segment_window {
        None => Ok(None),
        Some(d) if d.as_secs() >= 1 && d.subsec_nanos() == 0 => Ok(Some(d.as_secs())),
        Some(d) => Err(StorageError::BadPath {
            path: base.to_owned(),
            why: format!(
                "a segment window must be a whole number of seconds, at least 1 (got {d:?})"
            ),
        }),
    }
}

impl SegmentsEngine {
    /// Opens the segments store at `base` (whose layout record is `recorded`), or with
    /// `opts.create` creates one there (`recorded` is `None`).
    pub(crate) fn open(
        base: PathBuf,
        db: PathBuf,
        opts: &OpenOptions,
        recorded: Option<Recorded>,
    ) -> Result<Self> {
        crate::files::names::check_db_path(&base, &db)?;
        let modes = Modes::new(opts.group_readable);
        let dir = SegDir::new(opts.fs.clone(), &base, modes);
        let create = opts.create && !opts.read_only;
        let index = IndexDb::new(&db, create, modes.file);
        let asked = asked_window(&base, opts)?;
        let window = match recorded {
            Some(rec) => {
                if let Some(w) = asked.filter(|w| *w != rec.window_secs) {
                    return Err(StorageError::LayoutMismatch {
                        path: base,
                        found: format!("segments store with {} s windows", rec.window_secs),
                        asked: format!("a {w} s window"),
                    });
                }
                Self::check_existing(&dir, &index, create)?;
                rec.window_secs
            }
            None => {
                let window = asked.unwrap_or(layout::DEFAULT_SEGMENT_WINDOW.as_secs());
                Self::create(&dir, &index, &db, create, window)?;
                window
            }
        };
        match dir.check_permissions() {
            Err(e @ StorageError::WritableByOthers { .. }) if opts.read_only => {
                tracing::warn!("{e}; reading it anyway");
            }
            res => res?,
        }
        dir.check()?;
        let mut overlay = None;
        if opts.read_only {
            if let Some(lock) = StoreLock::open_existing(&base, opts.lock_timeout)? {
                overlay = Self::find_pending(&dir, &index, &lock)?.map(Arc::new);
            }
        } else {
            dir.init()?;
        }
        Ok(Self {
            dir,
            db: index,
            window,
            lock_timeout: opts.lock_timeout,
            overlay,
            acked: overlay::Acked::default(),
        })
    }

    /// The writing half, as its own type (the engine tests reach into it).
    pub(crate) fn segments_writer(
        &self,
        poison: Poison,
        repair: bool,
    ) -> Result<writer::SegmentsWriter> {
        let index = self.db.open_writer()?;
        let lock = StoreLock::open(self.dir.base(), self.lock_timeout, self.dir.modes().file)?;
        let mut w = writer::SegmentsWriter::new(
            index,
            self.dir.clone(),
            lock,
            poison,
            self.window,
            repair,
            self.acked.clone(),
        );
        if repair {
            w.repair_if_free()?;
        }
        Ok(w)
    }

    /// For a read-only handle: the acknowledged saves in the segment tails that the index
    /// lost to a power cut (a writer replays them at its first hold; this handle writes
    /// nothing, so it serves them from memory). Looked for under the shared lock, so no
    /// writer is between its append and its commit; when a writer holds the lock right
    /// now, it has replayed the tails already and there is nothing to find.
    fn find_pending(dir: &SegDir, index: &IndexDb, lock: &StoreLock) -> Result<Option<Overlay>> {
        let Some(_shared) = lock.try_shared()? else {
            return Ok(None);
        };
        let idx = index.open_reader()?;
        let generation = idx.config("generation")?;
        let rows = match replay::pending_rows(dir, &idx) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(
                    "cannot read the segment tails ({e}); saves the index lost to a power \
                     cut, if any, stay invisible to this read-only handle until a writer \
                     opens the store"
                );
                return Ok(None);
            }
        };
        let overlay = Overlay::new(generation, rows);
        if let Some(ov) = &overlay {
            tracing::info!(
                txs = ov.len(),
                "the index lags the segments (a power cut before its last commits were \
                 flushed): serving those saves from the segment tails; the next writing \
                 open brings the index up to date"
            );
        }
        Ok(overlay)
    }

    /// An existing segments store: its index must be a segments index, or (when creating)
    /// missing or empty while no segment holds anything.
    fn check_existing(dir: &SegDir, index: &IndexDb, create: bool) -> Result<()> {
        let found = index.probe()?;
        let path = index.path().to_owned();
        match found {
            Found::Segments => Ok(()),
            Found::Files | Found::Other => Err(StorageError::NotAStore {
                path,
                why: "the store's layout record says segments, but its database is not a \
                      segments index; nothing was changed"
                    .into(),
            }),
            Found::Missing | Found::Empty => {
                let segs = dir.list()?;
                if !segs.is_empty() {
                    return Err(StorageError::NotAStore {
                        path,
                        why: format!(
                            "the index database is missing or empty, yet {} holds {} \
                             entr{}: the index may have been lost. Nothing was changed: \
                             restore the database",
                            dir.segs().display(),
                            segs.len(),
                            if segs.len() == 1 { "y" } else { "ies" }
                        ),
                    });
                }
                if !create {
                    return Err(StorageError::NotFound {
                        path,
                        why: "the index database does not exist".into(),
                    });
                }
                Ok(())
            }
        }
    }

    /// A new store: refuses a place holding anything but the store's own names (or a
    /// flat-file store), then writes the layout record first, durably.
    fn create(dir: &SegDir, index: &IndexDb, db: &Path, create: bool, window: u64) -> Result<()> {
        let base = dir.base();
        let found = match dir.fs().kind(base) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                return Err(StorageError::NotFound {
                    path: base.to_owned(),
                    why: "the base directory does not exist".into(),
                });
            }
            _ => index.probe()?,
        };
        match found {
            Found::Files => {
                return Err(StorageError::LayoutMismatch {
                    path: base.to_owned(),
                    found: Layout::Files.name().into(),
                    asked: Layout::Segments.name().into(),
                });
            }
            Found::Other | Found::Segments => {
                return Err(StorageError::NotAStore {
                    path: db.to_owned(),
                    why: format!(
                        "the database already holds tables, but {} has no layout record \
                         ({LAYOUT_FILE}); nothing was changed",
                        base.display()
                    ),
                });
            }
            Found::Missing | Found::Empty => {}
        }
        if !create {
            return Err(StorageError::NotFound {
                path: base.to_owned(),
                why: "no store here".into(),
            });
        }
        check_new_place(dir, db)?;
        dir.create_base()?;
        layout::write(
            dir.fs(),
            base,
            Recorded {
                layout: Layout::Segments,
                window_secs: window,
            },
            dir.modes().file,
        )
    }
}

/// The base of a new store must hold nothing but the store's own names.
fn check_new_place(dir: &SegDir, db: &Path) -> Result<()> {
    let base = dir.base();
    let db_name = match db.parent() {
        Some(p) if p == base => db.file_name().map(|n| n.to_string_lossy().into_owned()),
        _ => None,
    };
    let mut foreign = Vec::new();
    let listed = dir.fs().list_dir(base, &mut |e| {
        let own = e.name == LOCK_FILE
            || e.name == ".poh-layout.tmp"
            || (e.name == dir::SEGMENTS_DIR && e.kind == EntryKind::Dir)
            || db_name.as_deref().is_some_and(|n| {
                e.name == n
                    || ["-wal", "-shm", "-journal"]
                        .iter()
                        .any(|x| e.name == format!("{n}{x}"))
            });
        if !own {
            foreign.push(e.name);
        }
    });
    match listed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("list base directory", base, e)),
    }
    if !dir.list()?.is_empty() {
        foreign.push(format!("{}/…", dir::SEGMENTS_DIR));
    }
    if foreign.is_empty() {
        return Ok(());
    }
    let count = foreign.len();
    foreign.truncate(3);
    Err(StorageError::NotAStore {
        path: base.to_owned(),
        why: format!(
            "the directory is not empty ({count} entr{}: {}{}) and holds no store; refusing \
             to make a segments store of it. Use a new or empty directory",
            if count == 1 { "y" } else { "ies" },
            foreign.join(", "),
            if count > 3 { ", …" } else { "" }
        ),
    })
}

impl Engine for SegmentsEngine {
    fn base(&self) -> &Path {
        self.dir.base()
    }

    fn location(&self) -> String {
        self.db.path().display().to_string()
    }

    fn layout(&self) -> Layout {
        Layout::Segments
    }

    fn writer(&self, poison: Poison, repair: bool) -> Result<Box<dyn EngineWriter>> {
        Ok(Box::new(self.segments_writer(poison, repair)?))
    }

    fn reader(&self) -> Result<Box<dyn EngineReader>> {
        Ok(Box::new(reader::SegmentsReader::new(
            self.db.open_reader()?,
            self.dir.clone(),
            self.overlay.clone(),
            self.acked.clone(),
            self.window,
        )))
    }

    fn recover(&self, dry_run: bool) -> Result<RecoverReport> {
        let writer = if dry_run {
            None
        } else {
            Some(self.db.open_writer()?)
        };
        let reader = self.db.open_reader()?;
        let lock = StoreLock::open_existing(self.dir.base(), self.lock_timeout)?;
        recover::run(&self.dir, writer, reader, lock.as_ref(), dry_run)
    }
}
