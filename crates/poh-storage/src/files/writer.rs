//! The flat-file engine's writing half ([`FilesWriter`]): the save, delete and expiry
//! protocols. The writer thread above ([`crate::group`]) hands it whole groups.
//!
//! Save protocol for a group, all under the exclusive store lock:
//! 1. write each payload to a fresh `.tmp/` file and fsync it (on several threads), then
//!    fsync `.tmp/`;
//! 2. commit all rows in one SQLite transaction (synchronous=FULL) — the commit point;
//! 3. rename each temp file to `<tx_id>.bin`;
//! 4. fsync the base directory; then acknowledge every caller.
//!
//! A crash before 2 leaves only temp files (removed by repair). A crash after 2 leaves
//! rows whose payload is still in `.tmp/`; repair finishes the rename (roll forward).
//! An fsync or rename failure poisons the store: it refuses writes until reopened.

use std::path::PathBuf;

use poh_types::{Tx, TxId};
use tracing::{debug, warn};

use super::lock::StoreLock;
use super::meta::MetaStore;
use super::payload::{PayloadStore, sha256_hex};
use crate::engine::{EngineWriter, MetaRow};
use crate::error::{Result, StorageError};
use crate::group::clone_err;
use crate::par::par_map;
use crate::poison::Poison;

/// The writing half of a flat-file store: the metadata writer connection, the payload
/// files, the store lock.
pub(crate) struct FilesWriter {
    pub(crate) meta: Box<dyn MetaStore>,
    pub(crate) payloads: PayloadStore,
    pub(crate) lock: StoreLock,
    pub(crate) poison: Poison,
    /// True once leftover temps of crashed saves were repaired (at open, or at this
    /// writer's first hold of the lock when another process held it at open).
    pub(crate) repaired: bool,
}

struct Staged {
    temp: std::path::PathBuf,
    row: MetaRow,
    id: TxId,
}

impl EngineWriter for FilesWriter {
    fn save_group(&mut self, group: &[&[Tx]]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = group.iter().map(|_| None).collect();
        self.commit_group(group, &mut results);
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StorageError::Closed)))
            .collect()
    }

    fn delete(&mut self, id: &TxId) -> Result<bool> {
        FilesWriter::delete(self, id)
    }

    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        FilesWriter::delete_expired(self, now, ttl, limit)
    }
}

impl FilesWriter {
    /// Runs the save protocol for `group`, answering each request in `out` (every slot
    /// is filled before returning).
    fn commit_group(&mut self, group: &[&[Tx]], out: &mut [Option<Result<()>>]) {
        let fail_all = |out: &mut [Option<Result<()>>], e: &StorageError| {
            for slot in out.iter_mut() {
                *slot = Some(Err(clone_err(e)));
            }
        };
        if let Err(e) = self.poison.check() {
            return fail_all(out, &e);
        }
        let guard = match hold(
            &self.lock,
            &mut self.repaired,
            &self.payloads,
            &mut *self.meta,
        ) {
            Ok(g) => g,
            Err(e) => return fail_all(out, &e),
        };
        let fs = self.payloads.fs();

        // 1. temp files, written and synced in parallel (fsyncs of separate files overlap
        //    in the device queue); a request whose write fails is answered with that
        //    error and the rest of the group goes on.
        let jobs: Vec<(usize, &Tx, PathBuf)> = group
            .iter()
            .enumerate()
            .flat_map(|(r, txs)| txs.iter().map(move |tx| (r, tx)))
            .map(|(r, tx)| (r, tx, self.payloads.new_temp_path(&tx.tx_id)))
            .collect();
        let results = stage_all(fs, &jobs, self.payloads.modes().file, &self.poison);
        let mut failed: Vec<Option<StorageError>> = (0..group.len()).map(|_| None).collect();
        let mut staged: Vec<Vec<Staged>> = (0..group.len()).map(|_| Vec::new()).collect();
        for ((r, tx, temp), res) in jobs.into_iter().zip(results) {
            match res {
                Err(e) => {
                    if failed[r].is_none() {
                        failed[r] = Some(e);
                    }
                }
                Ok(()) => staged[r].push(Staged {
                    temp,
                    id: tx.tx_id.clone(),
                    row: MetaRow {
                        tx_id: tx.tx_id.to_string(),
                        holder_id: tx.holder_id.clone(),
                        timestamp: tx.timestamp,
                        storage_hash: sha256_hex(&tx.payload),
                        size: Some(tx.payload.len() as u64),
                    },
                }),
            }
        }
        let mut live: Vec<(usize, Vec<Staged>)> = Vec::with_capacity(group.len());
        for (r, (staged, failed)) in staged.into_iter().zip(failed).enumerate() {
            match failed {
                Some(e) => {
                    remove_temps(fs, &staged);
                    out[r] = Some(Err(e));
                }
                None => live.push((r, staged)),
            }
        }
        // Answers every live request with `e` after removing its temps.
        let abandon =
            |out: &mut [Option<Result<()>>], live: Vec<(usize, Vec<Staged>)>, e: &StorageError| {
                for (r, staged) in live {
                    remove_temps(fs, &staged);
                    out[r] = Some(Err(clone_err(e)));
                }
            };
        if let Err(e) = self.poison.check() {
            return abandon(out, live, &e);
        }
        if live.is_empty() {
            return;
        }
        // The temps' directory entries must be durable before the commit point, or a
        // power cut after the commit could leave a committed row whose new payload is
        // nowhere (and whose old one no longer matches).
        let tmp_dir = self.payloads.tmp_dir();
        if let Err(e) = fs.sync_dir(tmp_dir) {
            self.poison.set(format!(
                "fsync of directory {} failed: {e}",
                tmp_dir.display()
            ));
            let err = StorageError::io("fsync temp directory", tmp_dir, e);
            return abandon(out, live, &err);
        }

        // 2. the commit point.
        let rows: Vec<MetaRow> = live
            .iter()
            .flat_map(|(_, s)| s.iter().map(|s| s.row.clone()))
            .collect();
        if let Err(e) = self.meta.upsert(&rows) {
            return abandon(out, live, &e);
        }

        // 3. + 4. finalise. From here the rows are durable; a failure leaves work that
        // repair on reopen completes, so the store is poisoned rather than guessed at.
        let mut fail: Option<StorageError> = None;
        'outer: for (_, staged) in &live {
            for s in staged {
                let dest = self.payloads.path(&s.id);
                if let Err(e) = fs.rename(&s.temp, &dest) {
                    self.poison
                        .set(format!("rename to {} failed: {e}", dest.display()));
                    fail = Some(StorageError::io("rename payload into place", dest, e));
                    break 'outer;
                }
            }
        }
        if fail.is_none() {
            let base = self.payloads.base();
            if let Err(e) = fs.sync_dir(base) {
                self.poison
                    .set(format!("fsync of directory {} failed: {e}", base.display()));
                fail = Some(StorageError::io("fsync base directory", base, e));
            }
        }
        if fail.is_none() {
            // Each saved payload is durable at its own name: an older one left at the
            // prototype's name for its id is garbage now (not synced: should the removal
            // be lost, loads still prefer the own name).
            for s in live.iter().flat_map(|(_, s)| s) {
                remove_prototype_name(&self.payloads, &s.id);
            }
        }
        drop(guard);
        // Past the commit point a failure does not undo the save: say so.
        let fail = fail.map(|cause| StorageError::Unfinished {
            tx_ids: live
                .iter()
                .flat_map(|(_, s)| s.iter().map(|s| s.id.to_string()))
                .collect(),
            cause: Box::new(cause),
        });
        for (r, staged) in live {
            out[r] = Some(match &fail {
                None => Ok(()),
                Some(StorageError::Unfinished { cause, .. }) => Err(StorageError::Unfinished {
                    tx_ids: staged.iter().map(|s| s.id.to_string()).collect(),
                    cause: Box::new(clone_err(cause)),
                }),
                Some(e) => Err(clone_err(e)),
            });
        }
    }

    fn delete(&mut self, id: &TxId) -> Result<bool> {
        let _guard = hold(
            &self.lock,
            &mut self.repaired,
            &self.payloads,
            &mut *self.meta,
        )?;
        let existed = self.meta.delete(id.as_str())?;
        if existed {
            remove_payload(&self.payloads, id);
        }
        Ok(existed)
    }

    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        let _guard = hold(
            &self.lock,
            &mut self.repaired,
            &self.payloads,
            &mut *self.meta,
        )?;
        // A pass with nothing to expire may touch no disk block at all (SQLite answers
        // from its cache): sync the base directory so a dead device fails the pass
        // instead of letting it count as a success.
        let base = self.payloads.base();
        if let Err(e) = self.payloads.fs().sync_dir(base) {
            self.poison
                .set(format!("fsync of directory {} failed: {e}", base.display()));
            return Err(StorageError::io(
                "check the store's device (fsync)",
                base,
                e,
            ));
        }
        let ids = self.meta.delete_expired(now, ttl, limit)?;
        let safe: Vec<TxId> = ids
            .iter()
            .filter_map(|id| match TxId::new(id.as_str()) {
                Ok(id) => Some(id),
                Err(e) => {
                    // Rows written by other tools may carry ids we never use as file names.
                    warn!(tx_id = %id, error = %e, "expired row has an unsafe id; its file (if any) is left alone");
                    None
                }
            })
            .collect();
        // Unlinks of separate files overlap well (most of their cost is freeing the inode,
        // outside the directory lock): ~2x faster on 8 threads than on one.
        let payloads = &self.payloads;
        par_map(&safe, UNLINK_THREADS, |id| remove_payload(payloads, id));
        Ok(ids)
    }
}

/// Takes the exclusive lock (a bounded wait) and, the first time, finishes what crashed
/// saves left in `.tmp/` (when another process held the lock at open, the open skipped it).
fn hold<'a>(
    lock: &'a StoreLock,
    repaired: &mut bool,
    payloads: &PayloadStore,
    meta: &mut dyn MetaStore,
) -> Result<super::lock::LockGuard<'a>> {
    let guard = lock.exclusive()?;
    if !*repaired {
        *repaired = true;
        let report = super::recover::repair_temps(payloads, meta, false);
        debug!(
            rolled_forward = report.rolled_forward.len(),
            temps_removed = report.temps_removed.len(),
            "repaired leftover temps at the first write"
        );
    }
    Ok(guard)
}

/// Most threads removing payload files at once.
const UNLINK_THREADS: usize = 8;

/// Most threads writing and syncing temp files at once.
const SYNC_THREADS: usize = 16;

/// Writes and fsyncs every job's temp file (each created with permission bits `mode`) on
/// up to [`SYNC_THREADS`] threads, each taking its share of the jobs one after the other:
/// creations contend for the temp directory's lock, but one thread's creation overlaps
/// the others' fsyncs, which overlap each other in the device. (Creating every file on
/// one thread before the first fsync left the device idle meanwhile.) A failed write
/// removes its temp; a failed fsync also poisons the store.
fn stage_all(
    fs: &dyn crate::fs::FileSystem,
    jobs: &[(usize, &Tx, PathBuf)],
    mode: u32,
    poison: &Poison,
) -> Vec<Result<()>> {
    par_map(jobs, SYNC_THREADS, |(_, tx, temp)| {
        fs.write_new(temp, &tx.payload, mode).map_err(|e| {
            let _ = fs.remove_file(temp);
            StorageError::io("write temp payload", temp, e)
        })?;
        fs.sync_file(temp).map_err(|e| {
            // A failed fsync may have dropped dirty pages: nothing later can be trusted
            // to be durable without a reopen.
            poison.set(format!("fsync of {} failed: {e}", temp.display()));
            let _ = fs.remove_file(temp);
            StorageError::io("fsync temp payload", temp, e)
        })
    })
}

/// Removes a payload whose row is gone, under its own name and under the prototype's
/// name for its id (a prototype store's payload not yet renamed). A failure only leaves
/// an orphan file, which `recover` quarantines later; the delete itself has happened.
fn remove_payload(payloads: &PayloadStore, id: &TxId) {
    let path = payloads.path(id);
    match payloads.fs().remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(tx_id = %id, path = %path.display(), error = %e,
            "row deleted but payload file not removed; `recover` will quarantine the orphan"),
    }
    remove_prototype_name(payloads, id);
}

/// Removes the file at the prototype's name for `id`, if the id has one (see
/// [`PayloadStore::prototype_path`]): an earlier version of a tx whose current payload
/// is at its own name (re-saved), or whose row is gone (deleted). Never the last copy of
/// a committed payload: loads read that name only while the own name is missing.
fn remove_prototype_name(payloads: &PayloadStore, id: &TxId) {
    let Some(path) = payloads.prototype_path(id) else {
        return;
    };
    match payloads.fs().remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(tx_id = %id, path = %path.display(), error = %e,
            "an old payload at the prototype's name for this id was not removed"),
    }
}

fn remove_temps(fs: &dyn crate::fs::FileSystem, staged: &[Staged]) {
    for s in staged {
        let _ = fs.remove_file(&s.temp);
    }
}
