//! The writer thread: owns the metadata writer connection and applies every change, so
//! that concurrent `save` callers share one durable commit (group commit).
//!
//! Save protocol for a group, all under the exclusive store lock:
//! 1. write each payload to a fresh `.tmp/` file and fsync it, then fsync `.tmp/`;
//! 2. commit all rows in one SQLite transaction (synchronous=FULL) — the commit point;
//! 3. rename each temp file to `<tx_id>.bin`;
//! 4. fsync the base directory; then acknowledge every caller.
//!
//! A crash before 2 leaves only temp files (removed by repair). A crash after 2 leaves
//! rows whose payload is still in `.tmp/`; repair finishes the rename (roll forward).
//! An fsync or rename failure poisons the store: it refuses writes until reopened.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use poh_types::{Tx, TxId};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::{Result, StorageError};
use crate::lock::StoreLock;
use crate::meta::{MetaRow, MetaStore};
use crate::par::par_map;
use crate::payload::{PayloadStore, sha256_hex};

/// Most transactions committed in one group.
pub const MAX_GROUP_TXS: usize = 4096;
/// Most payload bytes committed in one group.
pub const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Work for the writer.
pub(crate) enum Cmd {
    Save {
        txs: Vec<Tx>,
        reply: oneshot::Sender<Result<()>>,
    },
    Delete {
        id: TxId,
        reply: oneshot::Sender<Result<bool>>,
    },
    DeleteExpired {
        now: f64,
        ttl: f64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<String>>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Shared "poisoned" state: set after a durability failure, cleared only by reopening.
#[derive(Debug, Default, Clone)]
pub(crate) struct Poison(Arc<Mutex<Option<String>>>);

impl Poison {
    pub(crate) fn check(&self) -> Result<()> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn set(&self, why: String) {
        warn!(%why, "store poisoned: refusing writes until reopened");
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(why);
        }
    }
}

pub(crate) struct Writer {
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

struct Request {
    txs: Vec<Tx>,
    reply: oneshot::Sender<Result<()>>,
}

impl Writer {
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        let mut next: Option<Cmd> = None;
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match cmd {
                Cmd::Save { txs, reply } => {
                    let mut bytes: usize = txs.iter().map(|t| t.payload.len()).sum();
                    let mut count = txs.len();
                    let mut group = vec![Request { txs, reply }];
                    while count < MAX_GROUP_TXS && bytes < MAX_GROUP_BYTES {
                        match rx.try_recv() {
                            Ok(Cmd::Save { txs, reply }) => {
                                count += txs.len();
                                bytes += txs.iter().map(|t| t.payload.len()).sum::<usize>();
                                group.push(Request { txs, reply });
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    debug!(requests = group.len(), txs = count, "committing group");
                    self.commit_group(group);
                }
                Cmd::Delete { id, reply } => {
                    let _ = reply.send(self.delete(&id));
                }
                Cmd::DeleteExpired {
                    now,
                    ttl,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.delete_expired(now, ttl, limit));
                }
                Cmd::Close { reply } => {
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn fail_all(group: Vec<Request>, err: &StorageError) {
        for r in group {
            let _ = r.reply.send(Err(clone_err(err)));
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        if let Err(e) = self.poison.check() {
            return Self::fail_all(group, &e);
        }
        let guard = match hold(
            &self.lock,
            &mut self.repaired,
            &self.payloads,
            &mut *self.meta,
        ) {
            Ok(g) => g,
            Err(e) => return Self::fail_all(group, &e),
        };
        let fs = self.payloads.fs();

        // 1. temp files, written and synced in parallel (fsyncs of separate files overlap
        //    in the device queue); a request whose write fails is answered with that
        //    error and the rest of the group goes on.
        let jobs: Vec<(usize, &Tx, PathBuf)> = group
            .iter()
            .enumerate()
            .flat_map(|(r, req)| req.txs.iter().map(move |tx| (r, tx)))
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
        let mut live: Vec<(Request, Vec<Staged>)> = Vec::with_capacity(group.len());
        for ((req, staged), failed) in group.into_iter().zip(staged).zip(failed) {
            match failed {
                Some(e) => {
                    remove_temps(fs, &staged);
                    let _ = req.reply.send(Err(e));
                }
                None => live.push((req, staged)),
            }
        }
        if let Err(e) = self.poison.check() {
            for (req, staged) in live {
                remove_temps(fs, &staged);
                let _ = req.reply.send(Err(clone_err(&e)));
            }
            return;
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
            for (req, staged) in live {
                remove_temps(fs, &staged);
                let _ = req.reply.send(Err(clone_err(&err)));
            }
            return;
        }

        // 2. the commit point.
        let rows: Vec<MetaRow> = live
            .iter()
            .flat_map(|(_, s)| s.iter().map(|s| s.row.clone()))
            .collect();
        if let Err(e) = self.meta.upsert(&rows) {
            for (req, staged) in live {
                remove_temps(fs, &staged);
                let _ = req.reply.send(Err(clone_err(&e)));
            }
            return;
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
        drop(guard);
        // Past the commit point a failure does not undo the save: say so.
        let fail = fail.map(|cause| StorageError::Unfinished {
            tx_ids: live
                .iter()
                .flat_map(|(_, s)| s.iter().map(|s| s.id.to_string()))
                .collect(),
            cause: Box::new(cause),
        });
        for (req, staged) in live {
            let _ = req.reply.send(match &fail {
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
        self.poison.check()?;
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
        self.poison.check()?;
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
) -> Result<crate::lock::LockGuard<'a>> {
    let guard = lock.exclusive()?;
    if !*repaired {
        *repaired = true;
        let report = crate::recover::repair_temps(payloads, meta, false);
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

/// Most threads syncing temp files at once. Creations stay on one thread: they contend
/// for the directory's lock anyway, while fsyncs of separate files overlap in the device.
const SYNC_THREADS: usize = 16;

/// Writes every job's temp file (one thread, each created with permission bits `mode`),
/// then fsyncs them (up to [`SYNC_THREADS`]). A failed write removes its temp; a failed
/// fsync also poisons the store.
fn stage_all(
    fs: &dyn crate::fs::FileSystem,
    jobs: &[(usize, &Tx, PathBuf)],
    mode: u32,
    poison: &Poison,
) -> Vec<Result<()>> {
    let mut results: Vec<Result<()>> = jobs
        .iter()
        .map(|(_, tx, temp)| {
            fs.write_new(temp, &tx.payload, mode).map_err(|e| {
                let _ = fs.remove_file(temp);
                StorageError::io("write temp payload", temp, e)
            })
        })
        .collect();
    let written: Vec<usize> = (0..jobs.len()).filter(|&i| results[i].is_ok()).collect();
    let synced = par_map(&written, SYNC_THREADS, |&i| fs.sync_file(&jobs[i].2));
    for (i, r) in written.into_iter().zip(synced) {
        if let Err(e) = r {
            let temp = &jobs[i].2;
            // A failed fsync may have dropped dirty pages: nothing later can be trusted
            // to be durable without a reopen.
            poison.set(format!("fsync of {} failed: {e}", temp.display()));
            let _ = fs.remove_file(temp);
            results[i] = Err(StorageError::io("fsync temp payload", temp, e));
        }
    }
    results
}

/// Removes a payload whose row is gone. A failure only leaves an orphan file, which
/// `recover` removes later; the delete itself has happened.
fn remove_payload(payloads: &PayloadStore, id: &TxId) {
    let path = payloads.path(id);
    match payloads.fs().remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(tx_id = %id, path = %path.display(), error = %e,
            "row deleted but payload file not removed; `recover` will remove the orphan"),
    }
}

fn remove_temps(fs: &dyn crate::fs::FileSystem, staged: &[Staged]) {
    for s in staged {
        let _ = fs.remove_file(&s.temp);
    }
}

/// Errors hold `io::Error`s, which do not clone; a group's shared failure is copied
/// into each caller's answer with its message intact.
pub(crate) fn clone_err(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io { op, path, source } => StorageError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StorageError::Meta { what, path, source } => StorageError::Meta {
            what: what.clone(),
            path: path.clone(),
            source: source.to_string().into(),
        },
        StorageError::Poisoned(s) => StorageError::Poisoned(s.clone()),
        StorageError::Closed => StorageError::Closed,
        other => StorageError::Meta {
            what: "group commit".into(),
            path: std::path::PathBuf::new(),
            source: other.to_string().into(),
        },
    }
}
