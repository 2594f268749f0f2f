//! Replay of segment tails into the index. A save group's index commit is not flushed on
//! its own (`synchronous=NORMAL`, docs/design.md §7.3): the segment is the log. After a
//! power loss the index may therefore lag the segments, whose records were synced before
//! each commit. [`replay`] (at every writer's first exclusive hold, and first in repair)
//! reads the records past each segment's committed length, checks each one whole (header
//! check and payload SHA-256), and commits to the index, durably and in write order, every
//! record of a complete save request written after the index's high-water mark
//! (`next_seq`: every durable commit records it, so a record below it belongs to no lost
//! commit). Everything after the last replayed record of a segment is cut.

use std::collections::{BTreeMap, HashMap};

use rusqlite::params;

use super::dir::SegDir;
use super::index::{DROPPED, Index, Row, to_i64};
use super::record::{self, Header};
use crate::error::{Result, StorageError};
use crate::fs::{FileHandle, is_not_regular, read_exact_at};
use crate::report::{Finding, ProblemKind, RecoverReport};

/// A whole, checked record found past a segment's committed length.
struct TailRec {
    seg: u64,
    off: u64,
    h: Header,
}

impl TailRec {
    fn end(&self) -> u64 {
        self.off + self.h.record_len()
    }
}

/// A segment with bytes past its committed length.
struct Tail {
    seg: u64,
    committed: u64,
    file_len: u64,
    file: Box<dyn FileHandle>,
}

/// The whole, valid records of `file` from `from` on, up to the first that is not.
fn read_tail(
    file: &dyn FileHandle,
    seg: u64,
    from: u64,
    file_len: u64,
) -> std::io::Result<Vec<TailRec>> {
    let mut out = Vec::new();
    let mut off = from;
    while off < file_len {
        let avail = file_len - off;
        let fixed = read_exact_at(file, off, record::FIXED.min(avail as usize))?;
        let Ok(hlen) = record::claimed_header_len(&fixed) else {
            break;
        };
        if avail < hlen as u64 {
            break;
        }
        let Ok(h) = record::parse_header(&read_exact_at(file, off, hlen)?) else {
            break;
        };
        let Ok(size) = usize::try_from(h.size) else {
            break;
        };
        if avail < h.record_len() {
            break;
        }
        let payload = read_exact_at(file, off + hlen as u64, size)?;
        if payload.len() != size || record::sha256(&payload) != h.sha {
            break;
        }
        let rec = TailRec { seg, off, h };
        off = rec.end();
        out.push(rec);
    }
    Ok(out)
}

/// True if `file` holds only zero bytes in `[from, to)`: a writer's padding
/// (docs/design.md §7.3b), which is neither a record nor a torn one.
pub(crate) fn zeros_only(file: &dyn FileHandle, from: u64, to: u64) -> std::io::Result<bool> {
    const CHUNK: u64 = 256 * 1024;
    let mut off = from;
    while off < to {
        let n = (to - off).min(CHUNK) as usize;
        let bytes = read_exact_at(file, off, n)?;
        if bytes.len() < n || bytes.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

fn finding(kind: ProblemKind, tx_id: &str, detail: String, action: impl Into<String>) -> Finding {
    Finding {
        tx_id: tx_id.to_owned(),
        kind,
        detail,
        action: action.into(),
    }
}

/// What a look at the segment tails found: each tail, its whole records, and which of
/// them a replay commits (complete save requests after the high-water mark, in write
/// order).
struct Scan {
    tails: Vec<Tail>,
    recs: Vec<TailRec>,
    apply: Vec<usize>,
    max_seq: Option<u64>,
}

/// Reads every segment tail (past its committed length) of `index`'s live segments.
/// `Ok(None)` when no segment has one.
fn scan(dir: &SegDir, index: &Index, dry_run: bool) -> Result<Option<Scan>> {
    let fs = dir.fs();
    let mut tails: Vec<Tail> = Vec::new();
    let mut recs: Vec<TailRec> = Vec::new();
    for seg in index.segments()? {
        if seg.state == DROPPED {
            continue;
        }
        let path = dir.path(seg.id);
        let opened = if dry_run {
            fs.open_ro(&path)
        } else {
            fs.open_rw(&path, false, 0)
        };
        let file = match opened {
            Ok(f) => f,
            // Missing or not a file: repair and the scan report its rows.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || is_not_regular(&e) => continue,
            Err(e) => return Err(StorageError::io("open segment", path, e)),
        };
        let file_len = file
            .len()
            .map_err(|e| StorageError::io("read the length of segment", &path, e))?;
        if file_len <= seg.len {
            continue;
        }
        recs.extend(
            read_tail(&*file, seg.id, seg.len, file_len)
                .map_err(|e| StorageError::io("read the tail of segment", &path, e))?,
        );
        tails.push(Tail {
            seg: seg.id,
            committed: seg.len,
            file_len,
            file,
        });
    }
    if tails.is_empty() {
        return Ok(None);
    }

    // Records written after the high-water mark, one per seq (a compaction copy repeats
    // its original's seq and bytes), grouped into their save requests.
    let high = index.config("next_seq")?;
    let mut by_seq: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        if r.h.seq >= high {
            by_seq.entry(r.h.seq).or_insert(i);
        }
    }
    let base = |h: &Header| -> Option<u64> {
        (h.req_count > 0 && h.req_pos < h.req_count)
            .then(|| h.seq.checked_sub(u64::from(h.req_pos)))
            .flatten()
    };
    let mut requests: HashMap<u64, (u32, u32)> = HashMap::new();
    for &i in by_seq.values() {
        let h = &recs[i].h;
        let Some(b) = base(h) else { continue };
        let e = requests.entry(b).or_insert((h.req_count, 0));
        if e.0 == h.req_count {
            e.1 += 1;
        } else {
            e.1 = u32::MAX;
        }
    }
    // Complete requests only (each seq is one position of its request), in write order.
    let apply: Vec<usize> = by_seq
        .values()
        .copied()
        .filter(|&i| {
            base(&recs[i].h)
                .and_then(|b| requests.get(&b))
                .is_some_and(|(n, found)| n == found)
        })
        .collect();
    let max_seq = recs.iter().map(|r| r.h.seq).max();
    Ok(Some(Scan {
        tails,
        recs,
        apply,
        max_seq,
    }))
}

/// The rows a replay would commit, in write order (a later one for the same id wins),
/// found without changing anything: what a read-only handle serves on top of an index
/// that lost its last commits to a power cut, until a writer replays them.
pub(crate) fn pending_rows(dir: &SegDir, index: &Index) -> Result<Vec<Row>> {
    let Some(scan) = scan(dir, index, true)? else {
        return Ok(Vec::new());
    };
    Ok(scan
        .apply
        .iter()
        .map(|&i| {
            let r = &scan.recs[i];
            Row {
                tx_id: r.h.tx_id.clone(),
                seg: r.seg,
                off: r.off,
                size: r.h.size,
                timestamp: r.h.timestamp,
                holder_id: r.h.holder_id.clone(),
                hash: Some(r.h.sha),
            }
        })
        .collect())
}

/// Replays the segment tails into `index` (a dry run only reports what it would do: the
/// ids in `rolled_forward`, the cuts as torn tails). The caller holds the exclusive lock
/// (the shared one for a dry run). An error leaves the tails as they are.
pub(crate) fn replay(
    dir: &SegDir,
    index: &Index,
    dry_run: bool,
    report: &mut RecoverReport,
) -> Result<()> {
    let Some(scan) = scan(dir, index, dry_run)? else {
        return Ok(());
    };
    let Scan {
        tails,
        recs,
        apply,
        max_seq,
    } = scan;
    let apply: Vec<&TailRec> = apply.iter().map(|&i| &recs[i]).collect();

    // Each segment's new committed length: the end of its last replayed record.
    let mut new_len: HashMap<u64, u64> = tails.iter().map(|t| (t.seg, t.committed)).collect();
    let mut newest: HashMap<u64, f64> = HashMap::new();
    let mut applied_bytes: HashMap<u64, u64> = HashMap::new();
    for r in &apply {
        let l = new_len.entry(r.seg).or_default();
        *l = (*l).max(r.end());
        let n = newest.entry(r.seg).or_insert(f64::NEG_INFINITY);
        *n = n.max(r.h.timestamp);
        *applied_bytes.entry(r.seg).or_default() += r.h.record_len();
    }

    for r in &apply {
        report.rolled_forward.push(r.h.tx_id.clone());
    }
    if !dry_run && !apply.is_empty() {
        commit(
            index,
            &apply,
            &tails,
            &new_len,
            &newest,
            &applied_bytes,
            max_seq,
        )?;
    }

    for t in &tails {
        let keep = new_len.get(&t.seg).copied().unwrap_or(t.committed);
        if keep >= t.file_len {
            continue;
        }
        // Padding after the last record is left for the next append.
        let path = dir.path(t.seg);
        if zeros_only(&*t.file, keep, t.file_len)
            .map_err(|e| StorageError::io("read the tail of segment", &path, e))?
        {
            continue;
        }
        let detail = format!(
            "{} holds {} byte(s) after its last committed record (a save interrupted \
             before its commit)",
            path.display(),
            t.file_len - keep
        );
        if dry_run {
            report
                .findings
                .push(finding(ProblemKind::TornTail, "", detail, "would cut"));
            continue;
        }
        match t.file.set_len(keep).and_then(|()| t.file.sync_data()) {
            Ok(()) => report.findings.push(finding(
                ProblemKind::TornTail,
                "",
                detail,
                format!("cut at {keep}"),
            )),
            Err(e) => report.findings.push(finding(
                ProblemKind::Transient,
                "",
                format!("{detail}; cannot cut it: {e}"),
                "left alone",
            )),
        }
    }
    Ok(())
}

/// One durable commit of the replayed records: their rows (a replaced row's record counts
/// as dead bytes), each segment's new length, newest timestamp and counters, the
/// high-water mark past every seq seen.
fn commit(
    index: &Index,
    apply: &[&TailRec],
    tails: &[Tail],
    new_len: &HashMap<u64, u64>,
    newest: &HashMap<u64, f64>,
    applied_bytes: &HashMap<u64, u64>,
    max_seq: Option<u64>,
) -> Result<()> {
    index.durability(true)?;
    let run = || -> Result<()> {
        let exec = |sql: &str, p: &[&dyn rusqlite::ToSql], what: &str| -> Result<usize> {
            index
                .conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(p))
                .map_err(|e| index.err(what, e))
        };
        index
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| index.err("begin replaying segment tails", e))?;
        // Per segment: (live_count, live_bytes, dead_bytes) changes.
        let mut deltas: HashMap<u64, (i64, i64, i64)> = HashMap::new();
        for r in apply {
            let h = &r.h;
            let len = to_i64(h.record_len());
            if let Some(old) = index.get(&h.tx_id)? {
                let d = deltas.entry(old.seg).or_default();
                let old_len = to_i64(old.record_len());
                d.0 -= 1;
                d.1 -= old_len;
                d.2 += old_len;
            }
            exec(
                "INSERT OR REPLACE INTO records (tx_id, seg, off, size, timestamp, holder_id, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    h.tx_id,
                    to_i64(r.seg),
                    to_i64(r.off),
                    to_i64(h.size),
                    h.timestamp,
                    h.holder_id,
                    super::index::NO_HASH
                ],
                &format!("replay tx {}", h.tx_id),
            )?;
            let d = deltas.entry(r.seg).or_default();
            d.0 += 1;
            d.1 += len;
        }
        for t in tails {
            let end = new_len.get(&t.seg).copied().unwrap_or(t.committed);
            if end <= t.committed {
                continue;
            }
            let skipped =
                (end - t.committed).saturating_sub(applied_bytes.get(&t.seg).copied().unwrap_or(0));
            deltas.entry(t.seg).or_default().2 += to_i64(skipped);
            let ts = newest.get(&t.seg).copied().unwrap_or(f64::NEG_INFINITY);
            exec(
                "UPDATE segments SET len = ?2,
                    newest = CASE WHEN newest IS NULL OR newest < ?3 THEN ?3 ELSE newest END
                 WHERE id = ?1",
                params![to_i64(t.seg), to_i64(end), ts],
                &format!("account replayed segment {}", t.seg),
            )?;
        }
        let mut segs: Vec<(&u64, &(i64, i64, i64))> = deltas.iter().collect();
        segs.sort_by_key(|(s, _)| **s);
        for (&seg, &(count, live, dead)) in segs {
            exec(
                "UPDATE segments SET live_count = max(live_count + ?2, 0),
                    live_bytes = max(live_bytes + ?3, 0), dead_bytes = dead_bytes + ?4
                 WHERE id = ?1",
                params![to_i64(seg), count, live, dead],
                &format!("account segment {seg}"),
            )?;
        }
        let next = to_i64(max_seq.map_or(0, |s| s.saturating_add(1)));
        exec(
            "UPDATE seg_config SET value = CASE
                WHEN key = 'generation' THEN value + 1
                WHEN key = 'next_seq' AND value < ?1 THEN ?1
                ELSE value END",
            params![next],
            "update the index configuration",
        )?;
        index
            .conn
            .execute_batch("COMMIT")
            .map_err(|e| index.err("commit the replayed segment tails", e))
    };
    run().inspect_err(|_| {
        if !index.conn.is_autocommit() {
            let _ = index.conn.execute_batch("ROLLBACK");
        }
    })
}
