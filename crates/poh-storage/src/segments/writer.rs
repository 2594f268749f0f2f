//! The segments engine's writing half ([`SegmentsWriter`]): group commit, delete, expiry
//! and compaction, all under the exclusive store lock.
//!
//! Save protocol for a group (docs/design.md §7.3):
//! 1. encode every record, in request order, into one buffer per touched segment (the
//!    open segment of each tx's time window; a new one, registered by its own small
//!    commit first, when there is none or it is full);
//! 2. write each buffer with one positioned write at the segment's committed length, and
//!    `fdatasync` each touched segment (in parallel when several);
//! 3. commit the rows and the segments' new lengths and byte counts in one SQLite
//!    transaction — the commit point; then acknowledge. This commit is not flushed on its
//!    own (`synchronous=NORMAL`): the synced records are the log, and an index that lost
//!    it to a power cut is brought up to date from the segment tails ([`super::replay`])
//!    before anything else is written. A group of at most [`ACK_EARLY_TXS`] txs is
//!    acknowledged before this commit, which it shares with the next small groups
//!    (docs/design.md §7.3c); this process's readers see it at once.
//!
//! A failure before 3 cuts the segments back to their committed lengths (bytes after a
//! committed length are never read, and are replayed or cut at the next open); a failed
//! `fdatasync` poisons the store. Deletes, expiry, compaction and new segments are durable
//! index commits (`synchronous=FULL`, which also makes every commit before them durable);
//! a segment left without a live record is marked dropped in the same commit and unlinked
//! after it, once that commit is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poh_types::{Tx, TxId};
use rusqlite::{OptionalExtension, params};
use tracing::{debug, warn};

use super::dir::SegDir;
use super::index::{
    self, DROPPED, Index, LIVE_ROW, OPEN, Row, SEALED, SegRow, VAR_LEN_SQL, to_i64,
};
use super::io::{IoThread, SegJob, seal_write_sync, sync_all};
use super::overlay::{Acked, Overlay};
use super::reader::{self, Problem};
use super::record;
use crate::engine::EngineWriter;
use crate::error::{Result, StorageError};
use crate::files::lock::{LockGuard, StoreLock};
use crate::files::meta::cutoff;
use crate::fs::FileHandle;
use crate::group::clone_err;
use crate::poison::{Poison, lock};
use crate::report::RecoverReport;

/// Largest a segment grows before the next record of its window starts a new one.
pub(crate) const SEGMENT_CAP: u64 = 256 * 1024 * 1024;
/// Most records one compaction step moves.
const STEP_RECORDS: usize = 1024;
/// Most bytes one compaction step moves (a step moves at least one record).
const STEP_BYTES: u64 = 4 * 1024 * 1024;
/// Most rows of dropped segments the last batch of a TTL pass deletes (docs/design.md
/// §7.5: a few milliseconds of index work).
pub const SWEEP_STEP: usize = 8192;
/// Fewest and most rows of dropped segments a save group deletes before it is written
/// (twice its own txs in between, so that the sweeps keep up with any rate of saves and
/// expiry).
const SWEEP_SAVE_MIN: usize = 1024;
const SWEEP_SAVE_MAX: usize = 65536;

/// A save group of at most this many txs is acknowledged once its records are synced,
/// before its index commit, which the next groups share (docs/design.md §7.3c): one
/// SQLite commit per [`ACK_EARLY_GROUPS`] small groups instead of one each. Bigger groups
/// gained nothing from sharing a commit (poh-bench, 1,000-tx batches) and commit at once.
pub(crate) const ACK_EARLY_TXS: usize = 16;
/// Most groups acknowledged before their index commit: the next one commits them all.
const ACK_EARLY_GROUPS: usize = 8;
/// The oldest an acknowledged group waits for its index commit before the next group
/// commits it (the writer thread commits them too, once no save came for a while).
const ACK_EARLY_AGE: Duration = Duration::from_millis(2);

/// Zeros written ahead of the records of a small append (docs/design.md §7.3b): a
/// `fdatasync` that does not change the file's length writes no metadata, which halves
/// its cost here. Between [`PAD_MIN`] and [`PAD_MAX`], an eighth of the segment.
const PAD_MIN: u64 = 64 * 1024;
const PAD_MAX: u64 = 1024 * 1024;
const PAD_MAX_USIZE: usize = PAD_MAX as usize;

/// The zeros to write after an append of `[start, end)` to a file of `alloc` bytes: none
/// when the append stays inside the file or is big enough to pay its own length change.
fn pad_after(start: u64, end: u64, alloc: u64) -> u64 {
    if end <= alloc || end - start >= PAD_MAX {
        return 0;
    }
    let want = (end / 8).clamp(PAD_MIN, PAD_MAX);
    // Up to a 4 KiB boundary past `end + want`, less nothing below the current end.
    let target = (end + want).div_ceil(4096) * 4096;
    target.min(SEGMENT_CAP.max(end)) - end
}

/// The open segment of one time window, as last committed.
struct Active {
    id: u64,
    len: u64,
    /// The file's length: zeros (padding) from `len` to here.
    alloc: u64,
    /// The writer's commit count when it was last appended to.
    used: u64,
    file: Arc<dyn FileHandle>,
}

/// An open segment not appended to for this many save commits loses its padding (a
/// window the writes have moved on from keeps none; a later append pads again).
const COLD_COMMITS: u64 = 64;

/// What the writer remembers between commands; valid while the index's generation is
/// the one it last saw (another process's commit bumps it).
#[derive(Default)]
struct Cache {
    valid: bool,
    generation: u64,
    next_seq: u64,
    next_seg: u64,
    open: HashMap<u64, Active>,
    /// `Some(candidate)` once looked up since the last change of dead bytes.
    compaction: Option<Option<SegRow>>,
    /// `Some(false)` once a sweep found no dropped segment with rows left.
    dead: Option<bool>,
}

/// A segment this command appends to.
struct Staged {
    id: u64,
    bucket: u64,
    start: u64,
    /// The file's length before this command (zeros from `start` to here).
    alloc: u64,
    /// Bytes of the records placed in it by this command (from `start`).
    len: u64,
    /// Those records (a save's unsealed: [`record::encode_unsealed`]).
    buf: Vec<u8>,
    /// A save's records in `buf`: each one's offset there and header length.
    recs: Vec<(usize, usize)>,
    file: Arc<dyn FileHandle>,
    newest: f64,
    /// Full: the next record of its window goes to a new segment.
    full: bool,
}

impl Staged {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// True when this command appends to it.
    fn touched(&self) -> bool {
        self.len > 0
    }

    /// Zeros written after this command's records.
    fn pad(&self) -> u64 {
        pad_after(self.start, self.end(), self.alloc)
    }

    /// The file's length once this command's write is done.
    fn alloc_after(&self) -> u64 {
        self.alloc.max(self.end() + self.pad())
    }
}

/// Per-segment changes of one commit.
#[derive(Default, Clone, Copy)]
struct Delta {
    live_count: i64,
    live_bytes: i64,
    dead_bytes: i64,
}

/// The writing half of a segments store.
pub(crate) struct SegmentsWriter {
    index: Index,
    dir: SegDir,
    lock: Arc<StoreLock>,
    poison: Poison,
    window: u64,
    repaired: bool,
    /// Segment tails replayed into the index (once per writer, before any write).
    replayed: bool,
    /// A save group committed since the last durable commit (`synchronous=NORMAL`).
    unsynced: bool,
    cache: Cache,
    /// Segments marked dropped whose files are still to be unlinked.
    to_unlink: Vec<u64>,
    /// Dropped segments whose unlink is durable: their rows go at the next commit.
    to_purge: Vec<u64>,
    /// Save commits so far (what [`Active::used`] counts in).
    commits: u64,
    /// The thread that seals, writes and syncs a save group's records while the index
    /// rows are written here; started at the first group big enough to use it.
    io: Option<IoThread>,
    /// Save groups acknowledged whose index rows wait in the open transaction for their
    /// commit ([`ACK_EARLY_TXS`]).
    pending: Option<Pending>,
    /// Their rows, for this process's readers until that commit.
    acked: Acked,
    /// The store lock is held past the command that left `pending` (kept, see
    /// [`LockGuard::keep`]): no other writer may see their records before their rows.
    held: bool,
    /// A save group is between its savepoint and its release (true after a panic there:
    /// its rows are half written and never committed).
    in_group: bool,
    /// [`ACK_EARLY_AGE`] (a test that must not depend on its own speed raises it).
    pub(super) early_age: Duration,
}

/// Acknowledged save groups waiting for their index commit.
struct Pending {
    groups: usize,
    rows: Vec<Row>,
    since: Instant,
}

impl SegmentsWriter {
    pub(crate) fn new(
        index: Index,
        dir: SegDir,
        lock: StoreLock,
        poison: Poison,
        window: u64,
        repair: bool,
        acked: Acked,
    ) -> Self {
        Self {
            index,
            dir,
            lock: Arc::new(lock),
            poison,
            window,
            // Without repair (OpenOptions::repair = false) crash leftovers are left as
            // found; an uncommitted tail is still cut before anything is appended after it.
            repaired: !repair,
            replayed: false,
            unsynced: false,
            cache: Cache::default(),
            to_unlink: Vec::new(),
            to_purge: Vec::new(),
            commits: 0,
            io: None,
            pending: None,
            acked,
            held: false,
            in_group: false,
            early_age: ACK_EARLY_AGE,
        }
    }

    /// Repairs what crashed writers left, unless another process holds the lock (then the
    /// first write repairs).
    pub(crate) fn repair_if_free(&mut self) -> Result<()> {
        if let Some(_g) = self.lock.try_exclusive()? {
            replay_once(&self.dir, &self.index, &mut self.replayed)?;
            let _ = self.lock.mark_pending(false);
            let report = super::recover::repair(&self.dir, Some(&self.index), false);
            log_repair(&report);
            self.repaired = true;
        }
        Ok(())
    }

    /// The time window (bucket) of a timestamp.
    fn bucket(&self, ts: f64) -> u64 {
        // Timestamps are finite and non-negative (validated above the seam).
        index::bucket_of(ts, self.window)
    }
}

/// Replays the segment tails into the index unless done already: before this writer
/// writes anything (whatever `OpenOptions::repair` says), so that no tail holding an
/// acknowledged save is ever cut. An error leaves every tail alone and fails the command.
fn replay_once(dir: &SegDir, index: &Index, replayed: &mut bool) -> Result<()> {
    if *replayed {
        return Ok(());
    }
    let mut report = RecoverReport::default();
    super::replay::replay(dir, index, false, &mut report)?;
    if !report.rolled_forward.is_empty() || !report.findings.is_empty() {
        tracing::info!(
            replayed = report.rolled_forward.len(),
            cut = report.findings.len(),
            "brought the index up to date from the segment tails"
        );
    }
    *replayed = true;
    Ok(())
}

/// Takes the exclusive lock and brings the cache up to date: replays the segment tails
/// and repairs once, and forgets everything when another process committed since.
fn hold<'a>(
    lock: &'a StoreLock,
    index: &Index,
    dir: &SegDir,
    (replayed, repaired): (&mut bool, &mut bool),
    cache: &mut Cache,
    own_pending: bool,
) -> Result<LockGuard<'a>> {
    let guard = lock.exclusive()?;
    // A writer process that died holding answered groups it had not committed (§7.3c)
    // left their records past the committed lengths, and its mark: replay them before
    // anything here appends, cuts or drops (its seqs are above the committed mark too).
    if !own_pending
        && *replayed
        && lock
            .marked_pending()
            .map_err(|e| StorageError::io("read the store lock file", dir.base(), e))?
    {
        tracing::info!("the last writer stopped before committing answered saves; replaying them");
        *replayed = false;
    }
    if !*replayed {
        replay_once(dir, index, replayed)?;
        cache.valid = false;
        // Whatever a dead holder marked is indexed now (an error only costs the next
        // holder a replay that finds nothing).
        let _ = lock.mark_pending(false);
    }
    if !*repaired {
        *repaired = true;
        let report = super::recover::repair(dir, Some(index), false);
        log_repair(&report);
        cache.valid = false;
    }
    if own_pending && cache.valid {
        // Held since this writer's last group, whose rows wait in its open write
        // transaction: no other process can have committed, so the cache is current (one
        // index read less per small save).
        return Ok(guard);
    }
    let generation = index.config("generation")?;
    if !cache.valid || cache.generation != generation {
        *cache = Cache {
            valid: true,
            generation,
            next_seq: index.config("next_seq")?.max(cache.next_seq).max(1),
            next_seg: index.config("next_seg")?.max(1),
            open: HashMap::new(),
            compaction: None,
            dead: None,
        };
    }
    Ok(guard)
}

fn log_repair(report: &RecoverReport) {
    if !report.findings.is_empty() {
        tracing::info!(
            findings = report.findings.len(),
            "repaired what crashed writers left in the segments"
        );
    }
}

impl EngineWriter for SegmentsWriter {
    fn save_group(&mut self, group: &[&[Tx]]) -> Vec<Result<()>> {
        match self.save_all(group) {
            Ok(()) => group.iter().map(|_| Ok(())).collect(),
            Err(e) => group.iter().map(|_| Err(clone_err(&e))).collect(),
        }
    }

    fn unsettled(&self) -> bool {
        self.pending.is_some() || self.held
    }

    fn settle(&mut self) -> Result<()> {
        let res = self.settle_pending();
        if self.held {
            self.held = false;
            self.lock.unlock();
        }
        res
    }

    fn delete(&mut self, id: &TxId) -> Result<bool> {
        let lock = self.lock.clone();
        let _g = self.enter(&lock, false)?;
        self.compact_step()?;
        let dropped = self.txn(true, |w| {
            let Some(row) = w.get_row(id.as_str())? else {
                return Ok((None, false));
            };
            w.exec(
                "DELETE FROM records WHERE tx_id = ?1",
                params![id.as_str()],
                &format!("delete tx {id}"),
            )?;
            let mut deltas = HashMap::new();
            kill(&mut deltas, &row);
            Ok((Some(w.apply_deltas(&deltas)?), true))
        })?;
        match dropped {
            None => Ok(false),
            Some(dropped) => {
                self.after_commit(&dropped, true)?;
                Ok(true)
            }
        }
    }

    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        let lock = self.lock.clone();
        let _g = self.enter(&lock, false)?;
        // A segment whose window starts before the cutoff is not worth copying here: some
        // of its live records may be expired (this pass deletes them next), and the rest
        // go with the whole segment once its window has expired.
        if let Some(cand) = self.compaction_candidate()?
            && (cand.live_count == 0 || cand.bucket as f64 * self.window as f64 >= cutoff(now, ttl))
        {
            self.compact_step()?;
        }
        // Before anything changes: a pass with nothing to expire may touch no disk block at
        // all, and a store whose directory vanished or whose device died must fail the
        // pass before it deletes a row (it must not count as done, in part or whole).
        let segs = self.dir.segs();
        if let Err(e) = self.dir.fs().sync_dir(segs) {
            self.poison
                .set(format!("fsync of directory {} failed: {e}", segs.display()));
            return Err(StorageError::io(
                "check the store's device (fsync)",
                segs,
                e,
            ));
        }
        let c = cutoff(now, ttl);
        let started = std::time::Instant::now();
        let (ids, dropped, split) = self.txn(true, |w| {
            let mut ids: Vec<String> = Vec::new();
            let mut dropped: Vec<u64> = Vec::new();
            // 1. Whole segments whose newest record is expired: each dropped in O(1) index
            //    work (its ids read over `records_seg_ts`, its state set to dropped: from this
            //    commit on its rows are not part of the store, and sweeps delete them later).
            //    At least one per call whatever its size, then as many as fit in `limit`.
            let whole: Vec<(u64, u64)> = w
                .index
                .conn
                .prepare_cached(&format!(
                    "SELECT id, live_count FROM segments
                     WHERE state < {DROPPED} AND live_count > 0 AND newest < ?1
                       AND (?2 - newest) > ?3
                     ORDER BY bucket, id"
                ))
                .and_then(|mut s| {
                    s.query_map(params![c, now, ttl], |r| {
                        Ok((
                            u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                            u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| w.index.err("find expired segments", e))?;
            for (seg, live) in whole {
                if !ids.is_empty() && ids.len() as u64 + live > limit as u64 {
                    continue;
                }
                let gone: Vec<String> = w
                    .index
                    .conn
                    .prepare_cached("SELECT tx_id FROM records WHERE seg = ?1")
                    .and_then(|mut s| {
                        s.query_map([to_i64(seg)], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(|e| w.index.err(format!("read the rows of segment {seg}"), e))?;
                ids.extend(gone);
                w.exec(
                    &format!(
                        "UPDATE segments SET state = {DROPPED}, dead_bytes = dead_bytes + live_bytes,
                            live_bytes = 0, live_count = 0 WHERE id = ?1"
                    ),
                    params![to_i64(seg)],
                    &format!("drop segment {seg}"),
                )?;
                w.cache.dead = Some(true);
                dropped.push(seg);
            }
            let (whole_txs, whole_segs) = (ids.len(), dropped.len());
            let whole_us = started.elapsed().as_micros() as u64;
            // 2. Expired txs of partly expired segments leave the index now; their bytes
            //    come back when the segment is compacted or dropped.
            let remaining = limit.saturating_sub(ids.len());
            if remaining > 0 {
                // Only live segments of the windows that start before the cutoff can hold
                // expired rows, each a range of `records_seg_ts`; oldest window first.
                // Only what the accounting needs comes back: the id, where its record
                // was, and the record's length (header + id + holder + payload bytes).
                let sql = format!(
                    "DELETE FROM records WHERE tx_id IN (
                        SELECT tx_id FROM records
                        WHERE seg = ?1 AND timestamp < ?2 AND (?3 - timestamp) > ?4
                        ORDER BY timestamp, tx_id LIMIT ?5)
                     RETURNING tx_id, {VAR_LEN_SQL}"
                );
                let mut rows: Vec<(String, u64, u64)> = Vec::new();
                for (_, seg) in w.index.expiry_candidates(c, w.window, 0)? {
                    let left = remaining.saturating_sub(rows.len());
                    if left == 0 {
                        break;
                    }
                    let part = w
                        .index
                        .conn
                        .prepare_cached(&sql)
                        .and_then(|mut s| {
                            s.query_map(
                                params![to_i64(seg), c, now, ttl, to_i64(left as u64)],
                                |r| {
                                    Ok((
                                        r.get::<_, String>(0)?,
                                        seg,
                                        u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                                    ))
                                },
                            )?
                            .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .map_err(|e| {
                            w.index
                                .err(format!("delete expired rows of segment {seg}"), e)
                        })?;
                    rows.extend(part);
                }
                let mut deltas: HashMap<u64, Delta> = HashMap::new();
                for (_, seg, var) in &rows {
                    let d = deltas.entry(*seg).or_default();
                    let len = to_i64(record::header_len(0, 0) as u64 + var);
                    d.live_count -= 1;
                    d.live_bytes -= len;
                    d.dead_bytes += len;
                }
                dropped.extend(w.apply_deltas(&deltas)?);
                ids.extend(rows.into_iter().map(|(id, _, _)| id));
            }
            // 3. The pass ends with this batch: one bounded sweep of the rows that earlier
            //    drops left (docs/design.md §7.5).
            let partial_us = started.elapsed().as_micros() as u64 - whole_us;
            let mut swept = 0;
            if ids.len() < limit {
                let (n, emptied) = w.sweep_rows(SWEEP_STEP)?;
                swept = n;
                dropped.extend(emptied);
            }
            let changed = !ids.is_empty() || !dropped.is_empty() || swept > 0;
            let split = (whole_segs, whole_txs, ids.len() - whole_txs, swept, whole_us, partial_us);
            Ok(((ids, dropped, split), changed))
        })?;
        if !dropped.is_empty() {
            self.cache.compaction = None;
        }
        let committed_us = started.elapsed().as_micros() as u64;
        self.after_commit(&dropped, true)?;
        let (whole_segments, whole_txs, partial_txs, swept, whole_us, partial_us) = split;
        debug!(
            whole_segments,
            whole_txs,
            partial_txs,
            swept,
            whole_us,
            partial_us,
            committed_us,
            total_us = started.elapsed().as_micros() as u64,
            "expiry batch"
        );
        Ok(ids)
    }
}

/// Cuts an open segment's padding (not synced: zeros a power cut brings back are padding).
fn trim_padding(a: &mut Active) {
    if a.alloc > a.len && a.file.set_len(a.len).is_ok() {
        a.alloc = a.len;
    }
}

impl Drop for SegmentsWriter {
    fn drop(&mut self) {
        if let Err(e) = EngineWriter::settle(self) {
            warn!(error = %e, "acknowledged saves not indexed at close; the next open replays them");
        }
        self.trim_all_padding();
    }
}

/// Fewest records in a group whose index rows are written while its segments sync.
const OVERLAP_MIN_RECORDS: usize = 16;

/// Syncs every touched staged segment ([`sync_all`]); one result each.
fn sync_staged(staged: &[Staged]) -> Vec<std::io::Result<()>> {
    let parts: Vec<(&dyn FileHandle, u64, u64)> = staged
        .iter()
        .filter(|s| s.touched())
        .map(|s| (&*s.file, s.start, s.len))
        .collect();
    sync_all(&parts)
}

/// What [`write_and_sync`] did: the microseconds the writes took and one sync result per
/// touched segment, or the first write that failed (with its segment; nothing is synced
/// then).
type Written = std::result::Result<(u64, Vec<std::io::Result<()>>), (u64, std::io::Error)>;

/// Writes each touched staged segment's records (`bufs[i]` for `staged[i]`, exactly its
/// `len` bytes) at its committed length, in one positioned write with the zeros of its
/// padding after them (when the append grows the file, see [`pad_after`]), then syncs
/// them ([`sync_staged`]).
fn write_and_sync(staged: &[Staged], bufs: &[Vec<u8>]) -> Written {
    let t = std::time::Instant::now();
    for (s, buf) in staged.iter().zip(bufs).filter(|(s, _)| s.touched()) {
        if buf.len() as u64 != s.len {
            // Never written: the offsets its rows name would be wrong.
            return Err((
                s.id,
                std::io::Error::other(format!(
                    "{} bytes of records encoded where {} were placed",
                    buf.len(),
                    s.len
                )),
            ));
        }
        let pad = usize::try_from(s.pad()).unwrap_or(0);
        let res = if pad == 0 {
            s.file.write_at(s.start, buf)
        } else {
            let mut padded = Vec::with_capacity(buf.len() + pad);
            padded.extend_from_slice(buf);
            padded.resize(buf.len() + pad, 0);
            s.file.write_at(s.start, &padded)
        };
        res.map_err(|e| (s.id, e))?;
    }
    let took = t.elapsed().as_micros() as u64;
    Ok((took, sync_staged(staged)))
}

/// Counts the record a row pointed at as dead in its segment.
fn kill(deltas: &mut HashMap<u64, Delta>, row: &Row) {
    kill_len(deltas, row.seg, to_i64(row.record_len()));
}

/// Counts a record of `len` bytes in segment `seg` as dead.
fn kill_len(deltas: &mut HashMap<u64, Delta>, seg: u64, len: i64) {
    let d = deltas.entry(seg).or_default();
    d.live_count -= 1;
    d.live_bytes -= len;
    d.dead_bytes += len;
}

impl SegmentsWriter {
    /// Runs `f` in one write transaction (taken at once: `BEGIN IMMEDIATE`), committed
    /// when `f` returns `(value, true)`, rolled back otherwise. A `durable` commit is on
    /// the disk when it returns, and so is every commit before it; otherwise it gets there
    /// with the next durable commit or checkpoint (a save group's: its records, synced
    /// first, are replayed if a power cut takes it).
    fn txn<T>(
        &mut self,
        durable: bool,
        f: impl FnOnce(&mut Self) -> Result<(T, bool)>,
    ) -> Result<T> {
        self.settle_pending()?;
        self.index.durability(durable)?;
        self.index
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.index.err("begin a transaction", e))?;
        let out = f(self).and_then(|(v, commit)| {
            if commit {
                self.finish_commit()?;
                self.unsynced = !durable;
            } else {
                self.rollback();
            }
            Ok(v)
        });
        if out.is_err() {
            self.rollback();
        }
        out
    }

    fn rollback(&self) {
        if !self.index.conn.is_autocommit() {
            let _ = self.index.conn.execute_batch("ROLLBACK");
        }
    }

    /// Runs a save group's `f` in the open save transaction (begun here when no earlier
    /// group left it open), under a savepoint: a failure takes back this group's rows
    /// only, never those of groups acknowledged before it. Nothing is committed here.
    fn group_txn<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let open = self.pending.is_some();
        // Prepared once (exec): parsed for every group, they showed in a single save's
        // profile.
        let conn = |w: &Self, sql: &str, what: &str| w.exec(sql, [], what).map(drop);
        if !open {
            self.index.durability(false)?;
            conn(self, "BEGIN IMMEDIATE", "begin a transaction")?;
        }
        if let Err(e) = conn(self, "SAVEPOINT save_group", "begin a save group") {
            if !open {
                self.rollback();
            }
            return Err(e);
        }
        self.in_group = true;
        let out = f(self);
        self.in_group = false;
        let out = out.and_then(|v| {
            conn(self, "RELEASE save_group", "end a save group")?;
            Ok(v)
        });
        if out.is_err() {
            let undone = open
                && conn(self, "ROLLBACK TO save_group", "undo a save group")
                    .and_then(|()| conn(self, "RELEASE save_group", "end a save group"))
                    .is_ok();
            if !undone {
                self.rollback();
                self.forget_pending();
            }
        }
        out
    }

    /// What SIGKILL leaves of this writer: no commit, no cleanup, the lock released (by
    /// the kernel, as its descriptor closes).
    #[cfg(test)]
    pub(super) fn die(self) {
        self.rollback();
        self.lock.unlock();
        std::mem::forget(self);
    }

    /// Leaves acknowledged groups whose rows a rollback took to the replay of the segment
    /// tails: their records are synced past the committed lengths with seqs above the
    /// committed high-water mark, so the next command's [`hold`] indexes them again, and
    /// this process's readers serve them from [`Self::acked`] meanwhile (its generation
    /// is still the index's).
    fn forget_pending(&mut self) {
        if self.pending.take().is_some() {
            self.replayed = false;
        }
        self.cache.valid = false;
    }

    /// Commits the open save transaction: every group acknowledged before its commit, and
    /// the current one if any.
    fn commit_saves(&mut self) -> Result<()> {
        let res = if self.in_group {
            // A panic inside a group: its rows are half written.
            Err(StorageError::Poisoned(
                "a save group stopped half way; its index rows are not committed".into(),
            ))
        } else {
            self.finish_commit()
        };
        match res {
            Ok(()) => {
                self.unsynced = true;
                if self.pending.take().is_some() {
                    *lock(&self.acked) = None;
                    // An error only costs the next holder a replay that finds nothing.
                    let _ = self.lock.mark_pending(false);
                }
                Ok(())
            }
            Err(e) => {
                self.rollback();
                self.forget_pending();
                Err(e)
            }
        }
    }

    /// Commits the groups acknowledged before their index commit, if any.
    fn settle_pending(&mut self) -> Result<()> {
        if self.pending.is_none() {
            return Ok(());
        }
        self.commit_saves()
    }

    /// Leaves a synced group's rows in the open transaction, acknowledged, and shows them
    /// to this process's readers.
    fn defer(&mut self, rows: Vec<Row>) {
        let p = self.pending.get_or_insert_with(|| Pending {
            groups: 0,
            rows: Vec::new(),
            since: Instant::now(),
        });
        p.groups += 1;
        p.rows.extend(rows);
        *lock(&self.acked) = Overlay::new(self.cache.generation, p.rows.clone()).map(Arc::new);
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params, what: &str) -> Result<usize> {
        self.index
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(p))
            .map_err(|e| self.index.err(what, e))
    }

    fn get_row(&self, tx_id: &str) -> Result<Option<Row>> {
        self.index.get(tx_id)
    }

    /// Deletes up to `budget` rows of dropped segments (garbage: nothing reads them), the
    /// oldest segment first, in the open transaction. Returns how many, and the dropped
    /// segments now without rows (to unlink again, idempotently, and forget).
    fn sweep_rows(&mut self, budget: usize) -> Result<(usize, Vec<u64>)> {
        if self.cache.dead == Some(false) || budget == 0 {
            return Ok((0, Vec::new()));
        }
        let segs: Vec<i64> = self
            .index
            .conn
            .prepare_cached(&format!(
                "SELECT id FROM segments WHERE state = {DROPPED} ORDER BY id"
            ))
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.index.err("find dropped segments", e))?;
        let mut swept = 0usize;
        let mut emptied = Vec::new();
        for seg in segs {
            let left = budget - swept;
            if left == 0 {
                break;
            }
            let n = self.exec(
                "DELETE FROM records WHERE tx_id IN (
                    SELECT tx_id FROM records WHERE seg = ?1 LIMIT ?2)",
                params![seg, to_i64(left as u64)],
                &format!("sweep the rows of dropped segment {seg}"),
            )?;
            swept += n;
            if n < left {
                emptied.push(u64::try_from(seg).unwrap_or(0));
            }
        }
        if swept < budget {
            self.cache.dead = Some(false);
        }
        Ok((swept, emptied))
    }

    /// One sweep of at most `budget` rows in its own commit, when dropped segments may
    /// still have rows.
    fn sweep_step(&mut self, budget: usize) -> Result<()> {
        if self.cache.dead == Some(false) {
            return Ok(());
        }
        let emptied = self.txn(false, |w| {
            let (n, emptied) = w.sweep_rows(budget)?;
            let changed = n > 0 || !emptied.is_empty();
            Ok((emptied, changed))
        })?;
        self.after_commit(&emptied, false)
    }

    /// Applies per-segment changes; returns the segments left without a live record (and
    /// with committed bytes), now marked dropped.
    fn apply_deltas(&mut self, deltas: &HashMap<u64, Delta>) -> Result<Vec<u64>> {
        self.account(&[], &[], deltas)
    }

    /// Records a group's changes to each segment in one statement per segment: the staged
    /// segments' new lengths and newest timestamps, and every segment's live and dead
    /// counts (`deltas`); then the seals. Returns the segments left without a live record
    /// (and with committed bytes), now marked dropped. A small save group touches one
    /// segment: one statement for it, where the length and the counts took two.
    fn account(
        &mut self,
        staged: &[Staged],
        seals: &[u64],
        deltas: &HashMap<u64, Delta>,
    ) -> Result<Vec<u64>> {
        if deltas
            .values()
            .any(|d| d.dead_bytes > 0 || d.live_count < 0)
        {
            // Dead bytes grew: the segment to compact next may have changed.
            self.cache.compaction = None;
        }
        let grown: HashMap<u64, (u64, f64)> = staged
            .iter()
            .filter(|s| s.touched())
            .map(|s| (s.id, (s.end(), s.newest)))
            .collect();
        let mut segs: Vec<u64> = deltas.keys().chain(grown.keys()).copied().collect();
        segs.sort_unstable();
        segs.dedup();
        let none = Delta::default();
        let mut dropped = Vec::new();
        for seg in segs {
            let d = deltas.get(&seg).unwrap_or(&none);
            let (len, newest) = match grown.get(&seg) {
                Some(&(len, newest)) => (Some(to_i64(len)), Some(newest)),
                None => (None, None),
            };
            self.exec(
                "UPDATE segments SET live_count = max(live_count + ?2, 0),
                    live_bytes = max(live_bytes + ?3, 0), dead_bytes = dead_bytes + ?4,
                    len = coalesce(?5, len),
                    newest = CASE WHEN ?6 IS NULL THEN newest
                                  WHEN newest IS NULL OR newest < ?6 THEN ?6
                                  ELSE newest END
                 WHERE id = ?1",
                params![
                    to_i64(seg),
                    d.live_count,
                    d.live_bytes,
                    d.dead_bytes,
                    len,
                    newest
                ],
                &format!("account segment {seg}"),
            )?;
            if d.live_count < 0 && self.drop_if_empty(seg)? {
                dropped.push(seg);
            }
        }
        for seg in seals {
            self.exec(
                &format!("UPDATE segments SET state = {SEALED} WHERE id = ?1 AND state = {OPEN}"),
                params![to_i64(*seg)],
                &format!("seal segment {seg}"),
            )?;
        }
        Ok(dropped)
    }

    /// Marks `seg` dropped if no row points into it (counted from the rows themselves,
    /// never trusted from the counters: a drop deletes the segment's file).
    fn drop_if_empty(&self, seg: u64) -> Result<bool> {
        let rows: i64 = self
            .index
            .conn
            .prepare_cached("SELECT count(*) FROM records WHERE seg = ?1")
            .and_then(|mut s| s.query_row([to_i64(seg)], |r| r.get(0)))
            .map_err(|e| {
                self.index
                    .err(format!("count the rows of segment {seg}"), e)
            })?;
        if rows > 0 {
            return Ok(false);
        }
        let n = self.exec(
            &format!(
                "UPDATE segments SET state = {DROPPED}, live_count = 0,
                    dead_bytes = dead_bytes + live_bytes, live_bytes = 0
                 WHERE id = ?1 AND state < {DROPPED} AND len > 0"
            ),
            params![to_i64(seg)],
            &format!("drop segment {seg}"),
        )?;
        Ok(n > 0)
    }

    /// Ends the open transaction with a durable commit (synchronous=FULL): bumps the
    /// generation (other processes' caches), records the counters, and forgets dropped
    /// segments whose unlink is durable and whose rows are swept.
    fn finish_commit(&mut self) -> Result<()> {
        for seg in &self.to_purge {
            self.exec(
                &format!(
                    "DELETE FROM segments WHERE id = ?1 AND state = {DROPPED}
                       AND NOT EXISTS (SELECT 1 FROM records WHERE seg = ?1)"
                ),
                params![to_i64(*seg)],
                &format!("forget dropped segment {seg}"),
            )?;
        }
        self.exec(
            "UPDATE seg_config SET value = CASE key
                WHEN 'generation' THEN value + 1
                WHEN 'next_seq' THEN ?1
                WHEN 'next_seg' THEN ?2
                ELSE value END",
            params![to_i64(self.cache.next_seq), to_i64(self.cache.next_seg)],
            "update the index configuration",
        )?;
        self.index
            .conn
            .execute_batch("COMMIT")
            .map_err(|e| self.index.err("commit", e))?;
        self.to_purge.clear();
        self.cache.generation += 1;
        Ok(())
    }

    /// After a commit that dropped `dropped`: forget them, and (when `now`) unlink their
    /// files at once; otherwise they are unlinked at the start of the next command (so a
    /// failure there is that command's, never a committed save's).
    fn after_commit(&mut self, dropped: &[u64], now: bool) -> Result<()> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.cache.open.retain(|_, a| !dropped.contains(&a.id));
        for seg in dropped {
            if !self.to_unlink.contains(seg) {
                self.to_unlink.push(*seg);
            }
        }
        if now { self.finish_drops() } else { Ok(()) }
    }

    /// Unlinks the files of dropped segments and syncs the directory; their rows are
    /// forgotten at the next commit. A failed fsync poisons the store.
    fn finish_drops(&mut self) -> Result<()> {
        if self.to_unlink.is_empty() {
            return Ok(());
        }
        if self.unsynced {
            // The commit that dropped them must be on the disk before their files go: an
            // empty durable commit makes every commit before it durable.
            self.txn(true, |_| Ok(((), true)))?;
        }
        let fs = self.dir.fs();
        let mut removed = Vec::new();
        let mut failed = None;
        for &seg in &self.to_unlink {
            let path = self.dir.path(seg);
            match fs.remove_file(&path) {
                Ok(()) => removed.push(seg),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(seg),
                Err(e) => {
                    warn!(segment = seg, error = %e, "dropped segment not removed yet");
                    failed = Some(StorageError::io("remove dropped segment", path, e));
                    break;
                }
            }
        }
        self.to_unlink.retain(|s| !removed.contains(s));
        if !removed.is_empty() {
            let segs = self.dir.segs();
            if let Err(e) = fs.sync_dir(segs) {
                self.poison
                    .set(format!("fsync of directory {} failed: {e}", segs.display()));
                return Err(StorageError::io("fsync segments directory", segs, e));
            }
            self.to_purge.extend(removed);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The segment to append `len` bytes of window `bucket` to (never `exclude`), staged
    /// in `staged`: returns its index there and the record's offset.
    fn place(
        &mut self,
        staged: &mut Vec<Staged>,
        seals: &mut Vec<u64>,
        bucket: u64,
        len: u64,
        exclude: Option<u64>,
    ) -> Result<(usize, u64)> {
        if let Some(i) = staged.iter().rposition(|s| s.bucket == bucket && !s.full) {
            let end = staged[i].end();
            if end == 0 || end + len <= SEGMENT_CAP {
                return Ok((i, end));
            }
            staged[i].full = true;
            seals.push(staged[i].id);
        } else if !staged.iter().any(|s| s.bucket == bucket)
            && let Some(a) = self.active(bucket, exclude, seals)?
        {
            staged.push(Staged {
                id: a.id,
                bucket,
                start: a.len,
                alloc: a.alloc,
                len: 0,
                buf: Vec::new(),
                recs: Vec::new(),
                file: a.file,
                newest: f64::NEG_INFINITY,
                full: false,
            });
            let i = staged.len() - 1;
            if a.len == 0 || a.len + len <= SEGMENT_CAP {
                return Ok((i, a.len));
            }
            staged[i].full = true;
            seals.push(a.id);
        }
        let (id, file) = self.new_segment(bucket)?;
        staged.push(Staged {
            id,
            bucket,
            start: 0,
            alloc: 0,
            len: 0,
            buf: Vec::new(),
            recs: Vec::new(),
            file,
            newest: f64::NEG_INFINITY,
            full: false,
        });
        Ok((staged.len() - 1, 0))
    }

    /// The open segment of `bucket` as committed (not `exclude`), ready for appends, or
    /// `None` when there is none usable (one whose file lost committed bytes is sealed).
    fn active(
        &mut self,
        bucket: u64,
        exclude: Option<u64>,
        seals: &mut Vec<u64>,
    ) -> Result<Option<Active>> {
        if let Some(a) = self.cache.open.get(&bucket) {
            if Some(a.id) == exclude {
                return Ok(None);
            }
            return Ok(Some(Active {
                id: a.id,
                len: a.len,
                alloc: a.alloc,
                used: a.used,
                file: a.file.clone(),
            }));
        }
        let found: Option<(i64, i64)> = self
            .index
            .conn
            .prepare_cached(&format!(
                "SELECT id, len FROM segments WHERE bucket = ?1 AND state = {OPEN}
                 ORDER BY id DESC LIMIT 1"
            ))
            .and_then(|mut s| {
                s.query_row([to_i64(bucket)], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.index.err("find the open segment of a window", e))?;
        let Some((id, len)) = found else {
            return Ok(None);
        };
        let (id, len) = (
            u64::try_from(id).unwrap_or(0),
            u64::try_from(len).unwrap_or(0),
        );
        if Some(id) == exclude {
            return Ok(None);
        }
        let path = self.dir.path(id);
        let file: Arc<dyn FileHandle> = match self.dir.fs().open_rw(&path, false, 0) {
            Ok(f) => Arc::from(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(segment = id, "open segment's file is missing; sealing it");
                seals.push(id);
                return Ok(None);
            }
            Err(e) => return Err(StorageError::io("open segment", path, e)),
        };
        let actual = file
            .len()
            .map_err(|e| StorageError::io("read the length of segment", &path, e))?;
        if actual < len {
            warn!(
                segment = id,
                actual,
                committed = len,
                "segment lost committed bytes; sealing it"
            );
            seals.push(id);
            return Ok(None);
        }
        let mut alloc = actual;
        if actual > len
            && !super::replay::zeros_only(&*file, len, actual)
                .map_err(|e| StorageError::io("read past the end of segment", &path, e))?
        {
            // A crashed writer's uncommitted tail (not just padding): never read, cut
            // before appending.
            file.set_len(len)
                .map_err(|e| StorageError::io("cut an uncommitted tail of segment", &path, e))?;
            alloc = len;
        }
        let used = self.commits;
        self.cache.open.insert(
            bucket,
            Active {
                id,
                len,
                alloc,
                used,
                file: file.clone(),
            },
        );
        Ok(Some(Active {
            id,
            len,
            alloc,
            used,
            file,
        }))
    }

    /// Creates a new, empty segment of window `bucket`: its file (exclusively), the
    /// directory synced, then its row committed on its own, empty. A crash before that
    /// commit leaves an empty file the index does not know, which repair removes; after
    /// it, an empty segment that later saves append to.
    fn new_segment(&mut self, bucket: u64) -> Result<(u64, Arc<dyn FileHandle>)> {
        for _ in 0..1000 {
            let id = self.cache.next_seg;
            self.cache.next_seg += 1;
            let path = self.dir.path(id);
            let file = match self.dir.fs().open_rw(&path, true, self.dir.modes().file) {
                Ok(f) => Arc::<dyn FileHandle>::from(f),
                // A leftover the index does not know (recover reports it): skip its id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::io("create segment", path, e)),
            };
            let segs = self.dir.segs();
            if let Err(e) = self.dir.fs().sync_dir(segs) {
                self.poison
                    .set(format!("fsync of directory {} failed: {e}", segs.display()));
                let _ = self.dir.fs().remove_file(&path);
                return Err(StorageError::io("fsync segments directory", segs, e));
            }
            let registered = self.txn(true, |w| {
                w.exec(
                    &format!(
                        "INSERT INTO segments (id, bucket, state, len, live_count, live_bytes,
                            dead_bytes, newest) VALUES (?1, ?2, {OPEN}, 0, 0, 0, 0, NULL)"
                    ),
                    params![to_i64(id), to_i64(bucket)],
                    &format!("register segment {id}"),
                )?;
                Ok(((), true))
            });
            if let Err(e) = registered {
                let _ = self.dir.fs().remove_file(&path);
                return Err(e);
            }
            self.cache.open.insert(
                bucket,
                Active {
                    id,
                    len: 0,
                    alloc: 0,
                    used: self.commits,
                    file: file.clone(),
                },
            );
            return Ok((id, file));
        }
        Err(StorageError::io(
            "create segment",
            self.dir.segs(),
            std::io::Error::other("1000 segment names in a row are taken"),
        ))
    }

    /// Writes and syncs every staged buffer (each segment in one positioned write, the
    /// syncs in parallel). A failed sync poisons the store.
    fn write_staged(&self, staged: &mut [Staged]) -> Result<()> {
        let bufs: Vec<Vec<u8>> = staged
            .iter_mut()
            .map(|s| std::mem::take(&mut s.buf))
            .collect();
        let (_, synced) = write_and_sync(staged, &bufs)
            .map_err(|(seg, e)| StorageError::io("append to segment", self.dir.path(seg), e))?;
        self.check_synced(staged, synced)
    }

    /// The outcome of [`sync_staged`]: a failed sync poisons the store.
    fn check_synced(&self, staged: &[Staged], synced: Vec<std::io::Result<()>>) -> Result<()> {
        let touched = staged.iter().filter(|s| s.touched());
        if touched.clone().count() != synced.len() {
            // Never committed: some segment's records were not written and synced.
            return Err(StorageError::io(
                "fdatasync segment",
                self.dir.segs(),
                std::io::Error::other(format!(
                    "{} of {} segments synced",
                    synced.len(),
                    touched.count()
                )),
            ));
        }
        for (s, r) in touched.zip(synced) {
            if let Err(e) = r {
                let path = self.dir.path(s.id);
                self.poison
                    .set(format!("fdatasync of {} failed: {e}", path.display()));
                return Err(StorageError::io("fdatasync segment", path, e));
            }
        }
        Ok(())
    }

    /// Undoes what an uncommitted command wrote: cuts the segments back to their committed
    /// lengths, durably (synced records of a failed save must not come back with a power
    /// cut and be replayed). A cut that fails poisons the store: what remains is past a
    /// committed length, never read, and cut or replayed at the next open.
    fn roll_back(&mut self, staged: &[Staged]) {
        for s in staged.iter().filter(|s| s.touched()) {
            self.cache.open.retain(|_, a| a.id != s.id);
            if let Err(e) = s.file.set_len(s.start).and_then(|()| s.file.sync_data()) {
                debug!(segment = s.id, error = %e, "segment not cut back after a failure");
                self.poison.set(format!(
                    "{} could not be cut back after a failed write: {e}",
                    self.dir.path(s.id).display()
                ));
            }
        }
    }

    /// After a commit: the staged segments are the open ones of their windows, as
    /// committed (full or sealed ones are forgotten).
    fn remember(&mut self, staged: Vec<Staged>, seals: &[u64]) {
        self.commits += 1;
        for s in staged {
            if s.full || seals.contains(&s.id) {
                self.cache.open.retain(|_, a| a.id != s.id);
                // A sealed segment takes no more appends: its padding goes (not synced:
                // zeros left by a power cut are padding to every reader).
                if s.alloc_after() > s.end() {
                    let _ = s.file.set_len(s.end());
                }
                continue;
            }
            let len = s.end();
            let alloc = s.alloc_after();
            self.cache.open.insert(
                s.bucket,
                Active {
                    id: s.id,
                    len,
                    alloc,
                    used: self.commits,
                    file: s.file,
                },
            );
        }
        // Under the lock, with the cache current: no other writer is past these lengths.
        let now = self.commits;
        for a in self.cache.open.values_mut() {
            if a.alloc > a.len && now.saturating_sub(a.used) > COLD_COMMITS {
                trim_padding(a);
            }
        }
    }

    /// At the end of this writer: the padding of every open segment goes, so that a store
    /// at rest holds none. Only under the lock and with the cache current (another
    /// process may have appended past the lengths this writer knows); otherwise it stays,
    /// as zeros every reader ignores.
    fn trim_all_padding(&mut self) {
        if !self.cache.valid
            || self.poison.check().is_err()
            || self.cache.open.values().all(|a| a.alloc <= a.len)
        {
            return;
        }
        let lock = self.lock.clone();
        let Ok(Some(_g)) = lock.try_exclusive() else {
            return;
        };
        if self.index.config("generation").ok() != Some(self.cache.generation) {
            return;
        }
        for a in self.cache.open.values_mut() {
            trim_padding(a);
        }
    }

    /// What every command starts with: refuse when poisoned, take the store lock (with
    /// the cache brought up to date, see [`hold`]), and unlink what earlier commands
    /// dropped.
    fn enter<'a>(&mut self, lock: &'a StoreLock, keep_pending: bool) -> Result<LockGuard<'a>> {
        self.poison.check()?;
        let replaying = !self.replayed;
        let guard = hold(
            lock,
            &self.index,
            &self.dir,
            (&mut self.replayed, &mut self.repaired),
            &mut self.cache,
            self.pending.is_some(),
        )?;
        // The guard holds the lock now (a lock kept held is taken again at once: the same
        // open file).
        self.held = false;
        if replaying && self.replayed {
            *crate::poison::lock(&self.acked) = None;
        }
        if !keep_pending {
            self.settle_pending()?;
        }
        self.finish_drops()?;
        Ok(guard)
    }

    fn save_all(&mut self, group: &[&[Tx]]) -> Result<()> {
        let entered = Instant::now();
        let lock = self.lock.clone();
        let guard = self.enter(&lock, true)?;
        let res = self.save_locked(group, entered);
        if res.is_err()
            && let Err(e) = self.settle_pending()
        {
            warn!(error = %e, "index commit of acknowledged saves failed; they are replayed");
        }
        if self.pending.is_some() {
            // Held until their commit (EngineWriter::settle, or the next command).
            guard.keep();
            self.held = true;
        }
        res
    }

    fn save_locked(&mut self, group: &[&[Tx]], entered: Instant) -> Result<()> {
        self.compact_step()?;
        if let Some(tx) = group
            .iter()
            .flat_map(|t| t.iter())
            .find(|t| t.holder_id.len() > record::MAX_HOLDER)
        {
            return Err(StorageError::Meta {
                what: format!("save tx {}", tx.tx_id),
                path: self.dir.base().to_owned(),
                source: format!(
                    "holder_id is {} bytes; a segments store takes at most {}",
                    tx.holder_id.len(),
                    record::MAX_HOLDER
                )
                .into(),
            });
        }
        let txs: usize = group.iter().map(|t| t.len()).sum();
        self.sweep_step((2 * txs).clamp(SWEEP_SAVE_MIN, SWEEP_SAVE_MAX))?;
        let started = std::time::Instant::now();
        // 1. Place every record and encode it unsealed (its two hashes are left for the
        //    I/O thread), in request order; the seqs follow it. The rows need nothing
        //    else: an index row holds no hash (index version 3).
        let mut staged: Vec<Staged> = Vec::new();
        let mut seals: Vec<u64> = Vec::new();
        let mut placed: Vec<Row> = Vec::with_capacity(txs);
        let mut seq = self.cache.next_seq;
        let mut left: u64 = group
            .iter()
            .flat_map(|t| t.iter())
            .map(|tx| {
                record::record_len(
                    tx.tx_id.as_str().len(),
                    tx.holder_id.len(),
                    tx.payload.len() as u64,
                )
            })
            .sum();
        let res = (|| -> Result<()> {
            for txs in group {
                let count = u32::try_from(txs.len()).unwrap_or(u32::MAX);
                for (pos, tx) in txs.iter().enumerate() {
                    let bucket = self.bucket(tx.timestamp);
                    let len = record::record_len(
                        tx.tx_id.as_str().len(),
                        tx.holder_id.len(),
                        tx.payload.len() as u64,
                    );
                    let (i, off) = self.place(&mut staged, &mut seals, bucket, len, None)?;
                    let s = &mut staged[i];
                    if s.buf.capacity() == 0 {
                        // Room for the rest of the group (as much as the segment takes), so
                        // that the buffer is never copied as it grows.
                        let room = SEGMENT_CAP.saturating_sub(s.start).max(len);
                        s.buf
                            .reserve(usize::try_from(left.min(room)).unwrap_or(0) + PAD_MAX_USIZE);
                    }
                    left = left.saturating_sub(len);
                    let at = s.buf.len();
                    let pos = u32::try_from(pos).unwrap_or(u32::MAX);
                    let hlen = record::encode_unsealed(&mut s.buf, tx, seq, count, pos);
                    s.recs.push((at, hlen));
                    s.len += len;
                    s.newest = s.newest.max(tx.timestamp);
                    seq += 1;
                    placed.push(Row {
                        tx_id: tx.tx_id.to_string(),
                        seg: s.id,
                        off,
                        size: tx.payload.len() as u64,
                        timestamp: tx.timestamp,
                        holder_id: tx.holder_id.clone(),
                        hash: None,
                    });
                }
            }
            Ok(())
        })();
        // The seqs are used up even by a group that fails: records of it left past a
        // committed length stay below the high-water mark the next commit records, so a
        // replay never takes them.
        self.cache.next_seq = seq;
        if let Err(e) = res {
            self.roll_back(&staged);
            return Err(e);
        }
        // Each touched segment's records, and the zeros of its padding after them.
        let mut jobs: Vec<SegJob> = staged
            .iter_mut()
            .filter(|s| s.touched())
            .map(|s| {
                let pad = usize::try_from(s.pad()).unwrap_or(0);
                let mut buf = std::mem::take(&mut s.buf);
                let len = buf.len();
                buf.resize(len + pad, 0);
                SegJob {
                    id: s.id,
                    file: s.file.clone(),
                    start: s.start,
                    buf,
                    len,
                    records: std::mem::take(&mut s.recs),
                }
            })
            .collect();
        if let Some((j, s)) = jobs
            .iter()
            .zip(staged.iter().filter(|s| s.touched()))
            .find(|(j, s)| j.len as u64 != s.len)
        {
            // Never written: the offsets the rows name would be wrong.
            let e = StorageError::io(
                "encode records",
                self.dir.path(s.id),
                std::io::Error::other(format!(
                    "{} bytes of records encoded where {} were placed",
                    j.len, s.len
                )),
            );
            self.roll_back(&staged);
            return Err(e);
        }
        let placed_at = std::time::Instant::now();
        // 2. The records are sealed, written and synced on the I/O thread (for a group
        //    big enough to be worth the hand-off) while the index rows are written here;
        //    the commit comes only after every write and sync succeeded, so the commit
        //    point still follows the records' durability.
        let overlap = placed.len() >= OVERLAP_MIN_RECORDS && self.io_thread();
        let mut rows_us = 0u64;
        let mut written_us = 0u64;
        let mut sync_us = 0u64;
        let mut commit_us = 0u64;
        let mut joined_us = 0u64;
        let mut io_wait_us = 0u64;
        let committed = self.group_txn(|w| {
            let rows = |w: &mut Self| -> Result<Vec<u64>> {
                let deltas = w.insert_rows(&placed)?;
                w.account(&staged, &seals, &deltas)
            };
            let sent = match w.io.as_ref().filter(|_| overlap) {
                Some(io) => match io.send(std::mem::take(&mut jobs)) {
                    Ok(()) => true,
                    Err(back) => {
                        jobs = back;
                        w.io = None;
                        false
                    }
                },
                None => false,
            };
            let (rows, done) = if sent {
                let t = std::time::Instant::now();
                let rows = rows(w);
                rows_us = t.elapsed().as_micros() as u64;
                let done =
                    w.io.as_ref()
                        .and_then(IoThread::wait)
                        .map(|(done, waited)| {
                            io_wait_us = waited;
                            done
                        });
                if done.is_none() {
                    // Gone (it never is but by a bug): the next big group starts another.
                    w.io = None;
                }
                (rows, done)
            } else {
                let done = Some(seal_write_sync(&mut jobs));
                let t = std::time::Instant::now();
                let rows = rows(w);
                rows_us = t.elapsed().as_micros() as u64;
                (rows, done)
            };
            let done = done.ok_or_else(|| {
                StorageError::io(
                    "append to segment",
                    w.dir.segs(),
                    std::io::Error::other("the writer's I/O thread stopped"),
                )
            })?;
            let (took, synced_in, synced) =
                done.map_err(|(seg, e)| StorageError::io("append to segment", w.dir.path(seg), e))?;
            (written_us, sync_us) = (took, synced_in);
            w.check_synced(&staged, synced)?;
            joined_us = placed_at.elapsed().as_micros() as u64;
            rows
        });
        let committed = committed.and_then(|dropped| {
            // The first group waiting marks the lock file first: a writer process that
            // dies now leaves the next holder that mark, and so the replay it needs.
            let early = txs <= ACK_EARLY_TXS
                && dropped.is_empty()
                && match &self.pending {
                    Some(p) => {
                        p.groups + 1 < ACK_EARLY_GROUPS && p.since.elapsed() < self.early_age
                    }
                    None => self.lock.mark_pending(true).is_ok(),
                };
            if !early {
                let t = Instant::now();
                self.commit_saves()?;
                commit_us = t.elapsed().as_micros() as u64;
            }
            Ok((dropped, early))
        });
        match committed {
            Ok((dropped, early)) => {
                debug!(
                    early,
                    records = placed.len(),
                    segments = staged.len(),
                    place_us = (placed_at - started).as_micros() as u64,
                    seal_and_write_us = written_us,
                    sync_us,
                    rows_us,
                    commit_us,
                    joined_us,
                    io_wait_us,
                    rest_us = placed_at.elapsed().as_micros() as u64,
                    before_us = (started - entered).as_micros() as u64,
                    "group committed"
                );
                self.remember(staged, &seals);
                if early {
                    self.defer(placed);
                }
                self.after_commit(&dropped, false)
            }
            Err(e) => {
                self.roll_back(&staged);
                self.cache.valid = false;
                Err(e)
            }
        }
    }

    /// True when the I/O thread runs (started here the first time).
    fn io_thread(&mut self) -> bool {
        if self.io.is_none() {
            match IoThread::start() {
                Ok(t) => self.io = Some(t),
                Err(e) => debug!(error = %e, "no I/O thread: records are written inline"),
            }
        }
        self.io.is_some()
    }

    /// Writes the rows of a group's records (a later one of an id replacing the earlier),
    /// returning the per-segment changes: each row's record live, and the record an old
    /// row pointed at dead. Both statements are prepared once per group: looking them up
    /// in the statement cache per row cost about a fifth of the writer's time.
    fn insert_rows(&self, placed: &[Row]) -> Result<HashMap<u64, Delta>> {
        // Only what the accounting needs of an old row: its segment and record length.
        static OLD_ROW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT seg, {VAR_LEN_SQL} FROM records WHERE tx_id = ?1 AND {LIVE_ROW}")
        });
        let conn = &self.index.conn;
        let what = "prepare the row statements";
        let mut old = conn
            .prepare_cached(&OLD_ROW)
            .map_err(|e| self.index.err(what, e))?;
        // A new id is one insert; an id the index has already is looked up and replaced
        // (a row of a dropped segment is replaced too, with nothing to account).
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO records (tx_id, seg, off, size, timestamp, holder_id, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tx_id) DO NOTHING",
            )
            .map_err(|e| self.index.err(what, e))?;
        let mut replace = conn
            .prepare_cached(
                "UPDATE records SET seg = ?2, off = ?3, size = ?4, timestamp = ?5,
                    holder_id = ?6, hash = ?7
                 WHERE tx_id = ?1",
            )
            .map_err(|e| self.index.err(what, e))?;
        let mut deltas: HashMap<u64, Delta> = HashMap::new();
        for r in placed {
            let values = params![
                r.tx_id,
                to_i64(r.seg),
                to_i64(r.off),
                to_i64(r.size),
                r.timestamp,
                r.holder_id,
                index::NO_HASH
            ];
            let failed = |e| self.index.err(format!("insert row of tx {}", r.tx_id), e);
            if insert.execute(values).map_err(failed)? == 0 {
                let prev: Option<(i64, i64)> = old
                    .query_row([r.tx_id.as_str()], |x| Ok((x.get(0)?, x.get(1)?)))
                    .optional()
                    .map_err(|e| self.index.err(format!("look up tx {}", r.tx_id), e))?;
                if let Some((seg, var)) = prev {
                    let len = record::header_len(0, 0) as i64 + var;
                    kill_len(&mut deltas, u64::try_from(seg).unwrap_or(0), len);
                }
                replace.execute(values).map_err(failed)?;
            }
            let d = deltas.entry(r.seg).or_default();
            d.live_count += 1;
            d.live_bytes += to_i64(r.record_len());
        }
        Ok(deltas)
    }

    /// The segment to compact next, if any is more than half dead (or has no live record).
    fn compaction_candidate(&mut self) -> Result<Option<SegRow>> {
        if let Some(c) = &self.cache.compaction {
            return Ok(c.clone());
        }
        let c: Option<SegRow> = self
            .index
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM segments
                 WHERE state < {DROPPED} AND len > 0
                   AND (live_count = 0 OR dead_bytes > live_bytes)
                 ORDER BY dead_bytes DESC, id LIMIT 1",
                index::SEG_COLS
            ))
            .and_then(|mut s| s.query_row([], index::seg_from).optional())
            .map_err(|e| self.index.err("find a segment to compact", e))?;
        self.cache.compaction = Some(c.clone());
        Ok(c)
    }

    /// One bounded compaction step, when a segment is more than half dead: its live
    /// records (up to [`STEP_RECORDS`] / [`STEP_BYTES`]) are read, verified, appended to
    /// the open segment of their window (never the source, which is sealed), synced, and
    /// their rows moved in one commit; a segment left without a live record is dropped.
    /// A record that fails its checks is quarantined (never copied, never served).
    fn compact_step(&mut self) -> Result<()> {
        let Some(src) = self.compaction_candidate()? else {
            return Ok(());
        };
        let rows = self.index.rows_of_segment(src.id, None, STEP_RECORDS)?;
        if rows.is_empty() {
            let dropped = self.txn(true, |w| {
                // No row points here, whatever the counters said: set them right, drop it.
                w.exec(
                    "UPDATE segments SET live_count = 0, live_bytes = 0 WHERE id = ?1",
                    params![to_i64(src.id)],
                    "account segment",
                )?;
                let d = if w.drop_if_empty(src.id)? {
                    vec![src.id]
                } else {
                    Vec::new()
                };
                Ok((d, true))
            })?;
            self.cache.compaction = None;
            return self.after_commit(&dropped, false);
        }
        let src_path = self.dir.path(src.id);
        let file = match reader::open_segment(&self.dir, src.id) {
            Ok(f) => f,
            Err(Problem::Io(e)) => return Err(StorageError::io("open segment", src_path, e)),
            // Missing or not a file: recover's business (it drops or quarantines the rows);
            // compaction leaves the segment alone until then.
            Err(_) => {
                self.cache.compaction = Some(None);
                return Ok(());
            }
        };
        let mut good: Vec<(Row, Vec<u8>)> = Vec::new();
        let mut bad: Vec<(Row, Vec<u8>, String)> = Vec::new();
        let mut bytes = 0u64;
        for row in rows {
            if bytes >= STEP_BYTES {
                break;
            }
            let len = usize::try_from(row.record_len()).unwrap_or(usize::MAX);
            let data = crate::fs::read_exact_at(&*file, row.off, len)
                .map_err(|e| StorageError::io("read segment", &src_path, e))?;
            bytes += row.record_len();
            match reader::check_bytes(&data, &row, &src_path) {
                Ok(()) => good.push((row, data)),
                Err(Problem::Corrupt(why)) => bad.push((row, data, why)),
                Err(Problem::Io(e)) => return Err(StorageError::io("read segment", src_path, e)),
                Err(Problem::Missing) => return Ok(()),
            }
        }
        // Quarantine first (durably): a crash before the commit leaves a copy in
        // quarantine and the row in place, never a row dropped without its bytes kept.
        for (row, data, why) in &bad {
            let note = super::recover::note(row, &src_path, why, Some(data));
            self.dir.quarantine_bytes(&row.tx_id, Some(data), &note)?;
        }
        let mut staged: Vec<Staged> = Vec::new();
        let mut seals: Vec<u64> = vec![src.id];
        let mut moved: Vec<(Row, u64, u64)> = Vec::new();
        let res = (|| -> Result<()> {
            for (row, data) in &good {
                let (i, off) = self.place(
                    &mut staged,
                    &mut seals,
                    src.bucket,
                    data.len() as u64,
                    Some(src.id),
                )?;
                staged[i].buf.extend_from_slice(data);
                staged[i].len += data.len() as u64;
                staged[i].newest = staged[i].newest.max(row.timestamp);
                moved.push((row.clone(), staged[i].id, off));
            }
            self.write_staged(&mut staged)
        })();
        if let Err(e) = res {
            self.roll_back(&staged);
            return Err(e);
        }
        let committed = self.txn(true, |w| {
            let mut deltas: HashMap<u64, Delta> = HashMap::new();
            for (row, seg, off) in &moved {
                let n = w.exec(
                    "UPDATE records SET seg = ?2, off = ?3
                     WHERE tx_id = ?1 AND seg = ?4 AND off = ?5",
                    params![
                        row.tx_id,
                        to_i64(*seg),
                        to_i64(*off),
                        to_i64(row.seg),
                        to_i64(row.off)
                    ],
                    &format!("move the row of tx {}", row.tx_id),
                )?;
                let len = to_i64(row.record_len());
                let d = deltas.entry(*seg).or_default();
                if n > 0 {
                    d.live_count += 1;
                    d.live_bytes += len;
                    kill(&mut deltas, row);
                } else {
                    d.dead_bytes += len;
                }
            }
            for (row, _, _) in &bad {
                let n = w.exec(
                    "DELETE FROM records WHERE tx_id = ?1 AND seg = ?2 AND off = ?3",
                    params![row.tx_id, to_i64(row.seg), to_i64(row.off)],
                    &format!("drop the row of tx {}", row.tx_id),
                )?;
                if n > 0 {
                    kill(&mut deltas, row);
                }
            }
            Ok((w.account(&staged, &seals, &deltas)?, true))
        });
        match committed {
            Ok(dropped) => {
                debug!(
                    segment = src.id,
                    moved = moved.len(),
                    quarantined = bad.len(),
                    "compaction step"
                );
                self.cache.open.retain(|_, a| a.id != src.id);
                self.remember(staged, &seals);
                self.after_commit(&dropped, false)
            }
            Err(e) => {
                self.roll_back(&staged);
                self.cache.valid = false;
                Err(e)
            }
        }
    }
}
