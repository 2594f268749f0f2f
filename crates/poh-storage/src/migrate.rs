//! [`migrate`]: converts a store to another layout, in place or to a new path, verifying
//! every payload, so that a kill at any moment loses nothing and running it again
//! finishes it.
//!
//! The source is never changed while its txs are copied: under its exclusive lock (other
//! writers wait, then time out), every tx is loaded — verified against its SHA-256 — and
//! saved into the destination in batches; a tx already there with the same hash is
//! skipped, so a rerun resumes where a killed run stopped. Then the destination must hold
//! exactly the source's txs (ids and hashes, compared page by page; extra ones are removed)
//! and verify clean.
//!
//! In place, the destination is built beside the base (`<base>.migrate`), marked complete
//! (`<base>.migrate/.poh-migrated`, durably), and then swapped in: `<base>` is renamed to
//! `<base>.pre-migrate` (kept for the operator, never deleted) and `<base>.migrate` to
//! `<base>`, the parent synced. A crash between the two renames leaves no `<base>`; a
//! rerun finds the marked destination and finishes the swap. In place needs the database
//! inside the base (it moves with it); otherwise pass a destination.

use std::path::{Path, PathBuf};

use poh_types::TxId;

use crate::error::{Result, StorageError};
use crate::files::lock::StoreLock;
use crate::layout::{self, Layout};
use crate::manager::StorageManager;
use crate::options::OpenOptions;

/// Txs copied per batch.
const PAGE: usize = 512;
/// Name of the completion marker in an in-place destination.
pub const MIGRATED_MARKER: &str = ".poh-migrated";

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MigrateReport {
    /// The layout the store had.
    pub from: String,
    /// The layout it has now.
    pub to: String,
    /// Txs copied (loaded verified, saved) by this run.
    pub copied: u64,
    /// Txs already in the destination with the same hash (a resumed run).
    pub already_there: u64,
    /// Txs in the destination that the source no longer has, removed.
    pub removed_extra: u64,
    /// Txs the destination holds at the end, each checked against the source.
    pub verified: u64,
    /// Where the converted store is.
    pub base: PathBuf,
    /// Its database.
    pub db: PathBuf,
    /// In place: where the store as it was is kept (the operator removes it).
    pub previous: Option<PathBuf>,
    /// Nothing to do: the store already had the layout.
    pub unchanged: bool,
}

fn sibling(base: &Path, suffix: &str) -> Result<PathBuf> {
    let name = base.file_name().ok_or_else(|| StorageError::BadPath {
        path: base.to_owned(),
        why: "an in-place migration needs a base directory with a name".into(),
    })?;
    let mut n = name.to_os_string();
    n.push(suffix);
    Ok(base.with_file_name(n))
}

fn sync_parent(fs: &dyn crate::fs::FileSystem, p: &Path) -> Result<()> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs.sync_dir(parent)
        .map_err(|e| StorageError::io("fsync directory", parent, e))
}

fn exists(fs: &dyn crate::fs::FileSystem, p: &Path) -> bool {
    fs.kind(p).is_ok()
}

/// Converts the store at `base` (database `db`) to layout `to`: in place when `dest` is
/// `None`, else into the new store `dest` = (base, db). `opts` gives the file system, the
/// lock timeout, modes and (for the new store) the segment window; its `layout`, `create`
/// and `read_only` are set here. See the module docs for the protocol.
pub async fn migrate(
    base: &Path,
    db: &Path,
    to: Layout,
    dest: Option<(PathBuf, PathBuf)>,
    opts: OpenOptions,
) -> Result<MigrateReport> {
    let fs = opts.fs.clone();
    let src_url = crate::dburl::is_database_url(db);
    let dest_url = dest
        .as_ref()
        .is_some_and(|(_, d)| crate::dburl::is_database_url(d));
    if src_url || dest_url || to == Layout::Postgres {
        return migrate_database(base, db, to, dest, opts, src_url, dest_url).await;
    }
    let in_place = dest.is_none();
    let (dest_base, dest_db) = match dest {
        Some(d) => d,
        None => {
            let tmp = sibling(base, ".migrate")?;
            let rel = db.strip_prefix(base).map_err(|_| StorageError::BadPath {
                path: db.to_owned(),
                why: "an in-place migration moves the database with the base directory, so \
                      it must be inside it; give a destination instead"
                    .into(),
            })?;
            let dest_db = tmp.join(rel);
            (tmp, dest_db)
        }
    };
    let previous = sibling(base, ".pre-migrate").ok();

    // A killed in-place run between its two renames: finish the swap.
    if in_place && !exists(&*fs, base) && exists(&*fs, &dest_base.join(MIGRATED_MARKER)) {
        return finish_swap(&*fs, base, db, &dest_base, previous, to).await;
    }

    let from = match layout::read(&*fs, base)? {
        Some(r) => r.layout,
        None => Layout::Files,
    };
    let src_opts = OpenOptions {
        create: false,
        read_only: true,
        layout: None,
        ..opts.clone()
    };
    if in_place && from == to {
        // Still a store (opening refuses anything else), and nothing to do.
        StorageManager::open_with(base, db, src_opts)
            .await?
            .close()
            .await?;
        return Ok(MigrateReport {
            from: from.to_string(),
            to: to.to_string(),
            base: base.to_owned(),
            db: db.to_owned(),
            unchanged: true,
            ..MigrateReport::default()
        });
    }
    if in_place && let Some(prev) = previous.as_ref().filter(|p| exists(&*fs, p)) {
        return Err(StorageError::BadPath {
            path: prev.clone(),
            why: "an earlier migration's copy of the store is still there; move it away (it \
                  is the store as it was before that migration) and run again"
                .into(),
        });
    }
    let source = StorageManager::open_with(base, db, src_opts).await?;
    // Keep every other writer out while the txs are copied: the source must not change
    // under the copy.
    let lock = StoreLock::open_existing(base, opts.lock_timeout)?;
    let _guard = lock.as_ref().map(StoreLock::exclusive).transpose()?;

    let dest_opts = OpenOptions {
        create: true,
        read_only: false,
        layout: Some(to),
        ..opts.clone()
    };
    let target = StorageManager::open_with(&dest_base, &dest_db, dest_opts).await?;
    let mut report = MigrateReport {
        from: from.to_string(),
        to: to.to_string(),
        base: if in_place {
            base.to_owned()
        } else {
            dest_base.clone()
        },
        db: if in_place {
            db.to_owned()
        } else {
            dest_db.clone()
        },
        ..MigrateReport::default()
    };
    let res = copy_and_check(&source, &target, &mut report, true).await;
    source.close().await?;
    target.close().await?;
    res?;
    if !in_place {
        return Ok(report);
    }
    // Mark the destination complete (durably), then swap.
    let marker = dest_base.join(MIGRATED_MARKER);
    if !exists(&*fs, &marker) {
        fs.write_new_synced(&marker, b"complete\n", opts_mode(&opts))
            .map_err(|e| StorageError::io("write migration marker", &marker, e))?;
        fs.sync_dir(&dest_base)
            .map_err(|e| StorageError::io("fsync directory", &dest_base, e))?;
    }
    // Still under the lock (it moves with the directory): nobody writes in between.
    let done = finish_swap(&*fs, base, db, &dest_base, previous, to).await?;
    drop(_guard);
    Ok(MigrateReport {
        previous: done.previous,
        ..report
    })
}

/// A migration to or from PostgreSQL: always to a destination (a database cannot be
/// converted in place), copied page by page and verified like any other; running it again
/// resumes it (what is already there with the same SHA-256 is not copied again).
async fn migrate_database(
    base: &Path,
    db: &Path,
    to: Layout,
    dest: Option<(PathBuf, PathBuf)>,
    opts: OpenOptions,
    src_url: bool,
    dest_url: bool,
) -> Result<MigrateReport> {
    let show = |p: &Path| PathBuf::from(crate::dburl::redact_url(&p.to_string_lossy()));
    let Some((dest_base, dest_db)) = dest else {
        return Err(StorageError::BadPath {
            path: show(db),
            why: "a migration to or from PostgreSQL cannot be done in place: give a \
                  destination (--dest DIR for a local store, --dest-db postgres://... for a \
                  database)"
                .into(),
        });
    };
    if dest_url != (to == Layout::Postgres) {
        return Err(StorageError::BadPath {
            path: show(&dest_db),
            why: if dest_url {
                format!("a database URL holds a postgres store, not a {to} one")
            } else {
                "the postgres layout needs a database URL as destination (--dest-db \
                 postgres://...)"
                    .into()
            },
        });
    }
    let from = if src_url {
        Layout::Postgres
    } else {
        layout::read(&*opts.fs, base)?.map_or(Layout::Files, |r| r.layout)
    };
    let src_opts = OpenOptions {
        create: false,
        read_only: true,
        layout: None,
        ..opts.clone()
    };
    let source = StorageManager::open_with(base, db, src_opts).await?;
    let lock = if src_url {
        None
    } else {
        StoreLock::open_existing(base, opts.lock_timeout)?
    };
    let _guard = lock.as_ref().map(StoreLock::exclusive).transpose()?;
    let dest_opts = OpenOptions {
        create: true,
        read_only: false,
        layout: Some(to),
        ..opts
    };
    let target = StorageManager::open_with(&dest_base, &dest_db, dest_opts).await?;
    let mut report = MigrateReport {
        from: from.to_string(),
        to: to.to_string(),
        base: dest_base,
        db: show(&dest_db),
        ..MigrateReport::default()
    };
    let res = copy_and_check(&source, &target, &mut report, !dest_url).await;
    source.close().await?;
    target.close().await?;
    res?;
    Ok(report)
}

fn opts_mode(opts: &OpenOptions) -> u32 {
    crate::fs::Modes::new(opts.group_readable).file
}

/// The swap of an in-place migration: `<base>` → `<base>.pre-migrate`, the marked
/// destination → `<base>`, the parent synced, the marker removed.
async fn finish_swap(
    fs: &dyn crate::fs::FileSystem,
    base: &Path,
    db: &Path,
    dest_base: &Path,
    previous: Option<PathBuf>,
    to: Layout,
) -> Result<MigrateReport> {
    let mut kept = None;
    if exists(fs, base) {
        let prev = previous.ok_or_else(|| StorageError::BadPath {
            path: base.to_owned(),
            why: "no name to keep the store as it was under".into(),
        })?;
        if exists(fs, &prev) {
            return Err(StorageError::BadPath {
                path: prev.clone(),
                why: "an earlier migration's copy of the store is still there; move it away \
                      (it is the store as it was before that migration) and run again"
                    .into(),
            });
        }
        fs.rename(base, &prev)
            .map_err(|e| StorageError::io("move the store aside", base, e))?;
        kept = Some(prev);
    } else if let Some(prev) = previous.filter(|p| exists(fs, p)) {
        kept = Some(prev);
    }
    fs.rename(dest_base, base)
        .map_err(|e| StorageError::io("move the converted store into place", dest_base, e))?;
    sync_parent(fs, base)?;
    let marker = base.join(MIGRATED_MARKER);
    match fs.remove_file(&marker) {
        Ok(()) => fs
            .sync_dir(base)
            .map_err(|e| StorageError::io("fsync directory", base, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("remove migration marker", marker, e)),
    }
    Ok(MigrateReport {
        to: to.to_string(),
        base: base.to_owned(),
        db: db.to_owned(),
        previous: kept,
        ..MigrateReport::default()
    })
}

/// Copies every tx of `source` missing (or different) in `target`, then checks `target`
/// tx by tx and verifies it. A tx only `target` holds is deleted when `delete_extra` (a
/// local store this migration made) and is an error otherwise (a database others may
/// share: nothing there is deleted).
async fn copy_and_check(
    source: &StorageManager,
    target: &StorageManager,
    report: &mut MigrateReport,
    delete_extra: bool,
) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = source.list_page(after.take(), PAGE).await?;
        let mut todo: Vec<TxId> = Vec::new();
        for row in &page.rows {
            let id = TxId::new(row.tx_id.as_str()).map_err(|e| StorageError::Integrity {
                tx_id: row.tx_id.clone(),
                detail: format!("its id cannot be carried over ({e})"),
            })?;
            match target.meta(&id).await? {
                Some(m) if m.storage_hash == row.storage_hash => report.already_there += 1,
                _ => todo.push(id),
            }
        }
        if !todo.is_empty() {
            let mut txs = Vec::with_capacity(todo.len());
            for (id, got) in todo.iter().zip(source.load_many(todo.clone()).await?) {
                match got? {
                    Some(tx) => txs.push(tx),
                    // Gone meanwhile: nothing to copy (the source is locked, so only a
                    // reader's view can lag; the check below settles it).
                    None => tracing::warn!(tx_id = %id, "tx vanished from the source"),
                }
            }
            report.copied += txs.len() as u64;
            target.save_batch(txs).await?;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    // The destination holds exactly the source's txs: extra ones (from a run resumed after
    // the source changed) go; every one is compared by hash.
    let mut after: Option<String> = None;
    loop {
        let page = target.list_page(after.take(), PAGE).await?;
        for row in &page.rows {
            let id = TxId::new(row.tx_id.as_str()).map_err(|e| StorageError::Integrity {
                tx_id: row.tx_id.clone(),
                detail: e.to_string(),
            })?;
            match source.meta(&id).await? {
                Some(m) if m.storage_hash == row.storage_hash => report.verified += 1,
                Some(m) => {
                    return Err(StorageError::Integrity {
                        tx_id: row.tx_id.clone(),
                        detail: format!(
                            "the converted store holds hash {} where the source holds {}",
                            row.storage_hash, m.storage_hash
                        ),
                    });
                }
                None if delete_extra => {
                    target.delete(&id).await?;
                    report.removed_extra += 1;
                }
                None => {
                    return Err(StorageError::Integrity {
                        tx_id: row.tx_id.clone(),
                        detail: "the destination database holds this tx and the source does not: \
                                 it may be another store's or newer data, so nothing there is \
                                 deleted; migrate into an empty database (or another schema)"
                            .into(),
                    });
                }
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let (s, t) = (source.stats().await?, target.stats().await?);
    if s.count != t.count || report.verified != s.count {
        return Err(StorageError::Integrity {
            tx_id: String::new(),
            detail: format!(
                "the converted store holds {} txs, the source {} ({} checked)",
                t.count, s.count, report.verified
            ),
        });
    }
    let v = target.verify().await?;
    if !v.is_clean() {
        return Err(StorageError::Integrity {
            tx_id: v
                .findings
                .first()
                .map(|f| f.tx_id.clone())
                .unwrap_or_default(),
            detail: format!(
                "the converted store does not verify: {:?}",
                v.findings.first()
            ),
        });
    }
    Ok(())
}
