//! Repair, recovery and verification of a segments store.
//!
//! [`repair`] (at every writable open, at a writer's first hold of the lock when another
//! process held it at open, and first in `recover`) finishes what crashed writers left:
//! bytes after a segment's committed length are cut (a torn or uncommitted tail), files of
//! dropped segments are unlinked, an empty segment file the index does not know (a crash
//! between creating it and registering it) is removed, and a non-empty one is moved to
//! quarantine — never deleted.
//!
//! [`run`] then reads every segment, row by row in time order (`records_seg_ts`), checking
//! each record against its row (header checksum, fields, payload SHA-256): a record that
//! fails is quarantined (its bytes as found and a note) and its row dropped; a row whose
//! segment is gone is noted in quarantine and dropped. Errors that may pass leave the tx
//! alone. A dry run reports the same and changes nothing.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::params;

use super::dir::SegDir;
use super::index::{DROPPED, Index, OPEN, Row, SEALED, SegRow, to_i64};
use super::reader::{self, Problem};
use super::replay::replay;
use crate::error::{Result, StorageError};
use crate::files::lock::{LockGuard, StoreLock};
use crate::fs::{EntryKind, read_exact_at};
use crate::par::par_map;
use crate::report::{Finding, ProblemKind, RecoverReport};

/// Rows checked per page.
const PAGE: usize = 512;

/// The JSON note kept in `.quarantine/` for a record the store stops serving.
/// Its hash is the row's, else the one in the record's header when that header (at the
/// start of `bytes`) is intact and the row's; `null` when neither is known.
pub(crate) fn note(row: &Row, segment: &Path, problem: &str, bytes: Option<&[u8]>) -> String {
    let hlen = super::record::header_len(row.tx_id.len(), row.holder_id.len());
    let hash = row.hash.or_else(|| {
        let header = bytes?.get(..hlen)?;
        super::record::header_is(
            header,
            &row.tx_id,
            &row.holder_id,
            row.timestamp,
            row.size,
            None,
        )
    });
    serde_json::json!({
        "tx_id": row.tx_id,
        "holder_id": row.holder_id,
        "timestamp": row.timestamp,
        "storage_hash": hash.map(hex::encode),
        "size": row.size,
        "segment": segment.display().to_string(),
        "offset": row.off,
        "problem": problem,
    })
    .to_string()
}

fn finding(tx_id: &str, kind: ProblemKind, detail: String, action: impl Into<String>) -> Finding {
    Finding {
        tx_id: tx_id.to_owned(),
        kind,
        detail,
        action: action.into(),
    }
}

/// Runs `sql` in its own durable transaction, bumping the index generation so that every
/// writer's cache (in any process) is refreshed.
fn commit_fix(index: &Index, f: impl FnOnce(&Index) -> rusqlite::Result<()>) -> Result<()> {
    index.durability(true)?;
    let run = || -> rusqlite::Result<()> {
        index.conn.execute_batch("BEGIN IMMEDIATE")?;
        f(index)?;
        index.conn.execute(
            "UPDATE seg_config SET value = value + 1 WHERE key = 'generation'",
            [],
        )?;
        index.conn.execute_batch("COMMIT")
    };
    run().map_err(|e| {
        if !index.conn.is_autocommit() {
            let _ = index.conn.execute_batch("ROLLBACK");
        }
        index.err("commit a repair", e)
    })
}

/// Finishes what crashed writers left (see the module docs). The caller holds the
/// exclusive lock (or, for a dry run, the shared one); `index` is the writer's connection
/// (a reader's for a dry run, which changes nothing).
pub(crate) fn repair(dir: &SegDir, index: Option<&Index>, dry_run: bool) -> RecoverReport {
    let mut report = RecoverReport {
        dry_run,
        ..Default::default()
    };
    let Some(index) = index else { return report };
    if let Err(e) = repair_inner(dir, index, dry_run, &mut report) {
        report.findings.push(finding(
            "",
            ProblemKind::Transient,
            format!("repair stopped: {e}"),
            "left alone",
        ));
    }
    report
}

fn repair_inner(
    dir: &SegDir,
    index: &Index,
    dry_run: bool,
    report: &mut RecoverReport,
) -> Result<()> {
    replay(dir, index, dry_run, report)?;
    let fs = dir.fs();
    let segs = index.segments()?;
    let known: HashMap<u64, &SegRow> = segs.iter().map(|s| (s.id, s)).collect();
    let files = dir.list()?;
    let on_disk: HashMap<u64, EntryKind> = files
        .iter()
        .filter_map(|(id, _, kind)| id.map(|i| (i, *kind)))
        .collect();
    let mut removed_any = false;
    let mut purge: Vec<u64> = Vec::new();
    let mut seal: Vec<u64> = Vec::new();
    for seg in &segs {
        let path = dir.path(seg.id);
        let present = on_disk.get(&seg.id);
        if seg.state == DROPPED {
            if present.is_some() {
                let detail = format!(
                    "{} belongs to a dropped segment (a crash came before its unlink)",
                    path.display()
                );
                // Not a finding of a dry run: the index proves the file garbage, it is never
                // read, and a live writer removes it at its next command (it defers the
                // unlink so that a failed unlink never fails a committed save). `verify` on
                // a healthy store right after a compaction must stay clean.
                if dry_run {
                    continue;
                }
                match fs.remove_file(&path) {
                    Ok(()) => {
                        removed_any = true;
                        report
                            .findings
                            .push(finding("", ProblemKind::TempFile, detail, "removed"));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        report.findings.push(finding(
                            "",
                            ProblemKind::Transient,
                            format!("{detail}; cannot remove it: {e}"),
                            "left alone",
                        ));
                        continue;
                    }
                }
            }
            purge.push(seg.id);
            continue;
        }
        if present != Some(&EntryKind::File) {
            // Missing (or not a file): the scan reports its rows.
            if seg.state == OPEN {
                seal.push(seg.id);
            }
            continue;
        }
        let file = if dry_run {
            fs.open_ro(&path)
        } else {
            fs.open_rw(&path, false, 0)
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                report.findings.push(finding(
                    "",
                    ProblemKind::Transient,
                    format!("cannot open {}: {e}", path.display()),
                    "left alone",
                ));
                continue;
            }
        };
        let len = file
            .len()
            .map_err(|e| StorageError::io("read the length of segment", &path, e))?;
        // Bytes after the committed length were replayed or cut by `replay` above.
        if len < seg.len && seg.state == OPEN {
            // Committed bytes are gone: never append after the hole (the scan reports the
            // rows that pointed there).
            seal.push(seg.id);
        }
    }
    for (id, name, kind) in &files {
        let Some(id) = id else { continue };
        if known.contains_key(id) {
            continue;
        }
        let path = dir.segs().join(name);
        let size = if *kind == EntryKind::File {
            fs.open_ro(&path).and_then(|f| f.len()).ok()
        } else {
            None
        };
        match size {
            // Created by a writer that crashed before registering it: holds nothing.
            Some(0) => {
                let detail = format!(
                    "{} is an empty segment file the index does not know (a crash before \
                     it was registered)",
                    path.display()
                );
                // Not a finding of a dry run: the index proves the file garbage, it is never
                // read, and a live writer removes it at its next command (it defers the
                // unlink so that a failed unlink never fails a committed save). `verify` on
                // a healthy store right after a compaction must stay clean.
                if dry_run {
                    continue;
                }
                match fs.remove_file(&path) {
                    Ok(()) => {
                        removed_any = true;
                        report
                            .findings
                            .push(finding("", ProblemKind::TempFile, detail, "removed"));
                    }
                    Err(e) => report.findings.push(finding(
                        "",
                        ProblemKind::Transient,
                        format!("{detail}; cannot remove it: {e}"),
                        "left alone",
                    )),
                }
            }
            _ => {
                // Never deleted: it may hold the last copy of txs whose index rows were lost.
                let detail = format!(
                    "{} ({kind:?}) is a segment the index does not know",
                    path.display()
                );
                let action = if *kind != EntryKind::File {
                    "left alone: not a regular file".to_owned()
                } else if dry_run {
                    "would quarantine".to_owned()
                } else {
                    let n = serde_json::json!({
                        "segment": path.display().to_string(),
                        "problem": "segment file unknown to the index (orphan)",
                    })
                    .to_string();
                    match dir.quarantine_file(&path, &format!("segment-{id}"), &n) {
                        Ok(dest) => format!("quarantined to {}", dest.display()),
                        Err(e) => format!("left alone: {e}"),
                    }
                };
                report
                    .findings
                    .push(finding("", ProblemKind::Orphan, detail, action));
            }
        }
    }
    if dry_run {
        return Ok(());
    }
    if removed_any {
        fs.sync_dir(dir.segs())
            .map_err(|e| StorageError::io("fsync segments directory", dir.segs(), e))?;
    }
    if !purge.is_empty() || !seal.is_empty() {
        commit_fix(index, |ix| {
            for id in &purge {
                // Kept while rows of it wait for the writer's sweep (§7.5).
                ix.conn.execute(
                    &format!(
                        "DELETE FROM segments WHERE id = ?1 AND state = {DROPPED}
                           AND NOT EXISTS (SELECT 1 FROM records WHERE seg = ?1)"
                    ),
                    [to_i64(*id)],
                )?;
            }
            for id in &seal {
                ix.conn.execute(
                    &format!(
                        "UPDATE segments SET state = {SEALED} WHERE id = ?1 AND state = {OPEN}"
                    ),
                    [to_i64(*id)],
                )?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The lock a step takes: shared to look (a dry run waits out writers mid-protocol),
/// exclusive to change anything.
fn hold(lock: Option<&StoreLock>, dry_run: bool) -> Result<Option<LockGuard<'_>>> {
    lock.map(|l| if dry_run { l.shared() } else { l.exclusive() })
        .transpose()
}

/// Full recovery (or, with `dry_run`, verification): repair, then every row checked
/// against its record, segment by segment in time order, then the database's own check.
pub(crate) fn run(
    dir: &SegDir,
    writer: Option<Index>,
    reader: Index,
    lock: Option<&StoreLock>,
    dry_run: bool,
) -> Result<RecoverReport> {
    let mut report = {
        let _g = hold(lock, dry_run)?;
        repair(dir, Some(writer.as_ref().unwrap_or(&reader)), dry_run)
    };
    let mut scan = Scan {
        dir,
        writer: writer.as_ref(),
        reader: &reader,
        lock,
        dry_run,
        report: &mut report,
    };
    scan.segments()?;
    scan.orphan_rows()?;
    scan.database();
    Ok(report)
}

struct Scan<'a> {
    dir: &'a SegDir,
    writer: Option<&'a Index>,
    reader: &'a Index,
    lock: Option<&'a StoreLock>,
    dry_run: bool,
    report: &'a mut RecoverReport,
}

/// What is wrong with one row, as found.
struct Bad {
    row: Row,
    kind: ProblemKind,
    detail: String,
    bytes: Option<Vec<u8>>,
}

fn classify(dir: &SegDir, file: Option<&dyn crate::fs::FileHandle>, row: &Row) -> Option<Bad> {
    let path = dir.path(row.seg);
    let Some(file) = file else {
        return Some(Bad {
            row: row.clone(),
            kind: ProblemKind::MissingPayload,
            detail: format!("segment {} does not exist", path.display()),
            bytes: None,
        });
    };
    match reader::read_row(file, row, &path) {
        Ok(_) => None,
        Err(Problem::Missing) => Some(Bad {
            row: row.clone(),
            kind: ProblemKind::MissingPayload,
            detail: format!("segment {} does not exist", path.display()),
            bytes: None,
        }),
        Err(Problem::Corrupt(detail)) => {
            let len = usize::try_from(row.record_len()).unwrap_or(0);
            Some(Bad {
                row: row.clone(),
                kind: ProblemKind::Corrupt,
                detail,
                bytes: read_exact_at(file, row.off, len).ok(),
            })
        }
        Err(Problem::Io(e)) => Some(Bad {
            row: row.clone(),
            kind: ProblemKind::Transient,
            detail: format!("cannot read {}: {e}", path.display()),
            bytes: None,
        }),
    }
}

impl Scan<'_> {
    /// Every live segment, sequentially.
    fn segments(&mut self) -> Result<()> {
        let workers = crate::par::cores().clamp(1, 8);
        for seg in self.reader.segments()? {
            if seg.state == DROPPED {
                continue;
            }
            self.report.files_checked += 1;
            let file = match reader::open_segment(self.dir, seg.id) {
                Ok(f) => Some(f),
                Err(Problem::Missing) => None,
                Err(Problem::Corrupt(_)) => None,
                Err(Problem::Io(e)) => {
                    self.report.findings.push(finding(
                        "",
                        ProblemKind::Transient,
                        format!("cannot open {}: {e}", self.dir.path(seg.id).display()),
                        "left alone",
                    ));
                    continue;
                }
            };
            let mut after: Option<(f64, String)> = None;
            let (mut count, mut bytes) = (0u64, 0u64);
            loop {
                let from = after.as_ref().map(|(ts, id)| (*ts, id.as_str()));
                let rows = self.reader.rows_of_segment(seg.id, from, PAGE)?;
                let Some(last) = rows.last() else { break };
                after = Some((last.timestamp, last.tx_id.clone()));
                count += rows.len() as u64;
                bytes += rows.iter().map(Row::record_len).sum::<u64>();
                self.report.rows_checked += rows.len() as u64;
                let dir = self.dir;
                let bad: Vec<Bad> = par_map(&rows, workers, |r| classify(dir, file.as_deref(), r))
                    .into_iter()
                    .flatten()
                    .collect();
                self.report.rows_ok += (rows.len() - bad.len()) as u64;
                if !bad.is_empty() {
                    self.fix(bad)?;
                }
            }
            self.counters(&seg, count, bytes)?;
        }
        Ok(())
    }

    /// A segment's live counters must match its rows (compaction and drops rely on them).
    /// A mismatch loses nothing, but is reported, and set right by a real run.
    fn counters(&mut self, seg: &SegRow, count: u64, bytes: u64) -> Result<()> {
        if (seg.live_count, seg.live_bytes) == (count, bytes) {
            return Ok(());
        }
        // Look again under the lock: a writer may have committed meanwhile.
        let _g = hold(self.lock, self.dry_run)?;
        let index = self.writer.unwrap_or(self.reader);
        let Some(now) = index.segments()?.into_iter().find(|s| s.id == seg.id) else {
            return Ok(());
        };
        let (count, bytes) = index
            .conn
            .query_row(
                &format!(
                    "SELECT count(*), coalesce(sum({}), 0) FROM records WHERE seg = ?1",
                    super::index::VAR_LEN_SQL
                ),
                [to_i64(seg.id)],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map_err(|e| index.err("count a segment's rows", e))?;
        let count = u64::try_from(count).unwrap_or(0);
        let bytes =
            u64::try_from(bytes).unwrap_or(0) + count * super::record::header_len(0, 0) as u64;
        if (now.live_count, now.live_bytes) == (count, bytes) {
            return Ok(());
        }
        let detail = format!(
            "segment {} is accounted {} live record(s) of {} bytes; its rows are {count} of {bytes} bytes",
            self.dir.path(seg.id).display(),
            now.live_count,
            now.live_bytes
        );
        let action = if self.dry_run {
            "would set the counters right".to_owned()
        } else {
            match commit_fix(index, |ix| {
                ix.conn
                    .execute(
                        "UPDATE segments SET live_count = ?2, live_bytes = ?3 WHERE id = ?1",
                        params![to_i64(seg.id), to_i64(count), to_i64(bytes)],
                    )
                    .map(drop)
            }) {
                Ok(()) => "counters set right".to_owned(),
                Err(e) => format!("left alone: {e}"),
            }
        };
        self.report
            .findings
            .push(finding("", ProblemKind::Database, detail, action));
        Ok(())
    }

    /// Rows pointing at a segment the index does not have. (The rows of a dropped segment
    /// are garbage the writer sweeps, not findings.)
    fn orphan_rows(&mut self) -> Result<()> {
        // The segments they point at first: one pass over the index's first column.
        let segs: Vec<i64> = self
            .reader
            .conn
            .prepare_cached(
                "SELECT DISTINCT seg FROM records
                 WHERE seg NOT IN (SELECT id FROM segments) ORDER BY seg",
            )
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.reader.err("find rows without a segment", e))?;
        for seg in segs {
            self.orphan_rows_of(u64::try_from(seg).unwrap_or(0))?;
        }
        Ok(())
    }

    fn orphan_rows_of(&mut self, seg: u64) -> Result<()> {
        let mut after: Option<(f64, String)> = None;
        loop {
            // A writer may have registered it since (only a damaged row names an id that
            // was never handed out).
            let registered = self
                .reader
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM segments WHERE id = ?1)")
                .and_then(|mut s| s.query_row([to_i64(seg)], |r| r.get::<_, bool>(0)))
                .map_err(|e| self.reader.err("find rows without a segment", e))?;
            if registered {
                break;
            }
            let from = after.as_ref().map(|(ts, id)| (*ts, id.as_str()));
            let rows = self.reader.rows_of_segment(seg, from, PAGE)?;
            let Some(last) = rows.last() else { break };
            after = Some((last.timestamp, last.tx_id.clone()));
            self.report.rows_checked += rows.len() as u64;
            let bad = rows
                .into_iter()
                .map(|row| Bad {
                    detail: format!(
                        "its segment {} is not in the index",
                        self.dir.path(row.seg).display()
                    ),
                    row,
                    kind: ProblemKind::MissingPayload,
                    bytes: None,
                })
                .collect();
            self.fix(bad)?;
        }
        Ok(())
    }

    /// Re-checks each problem under the lock and fixes (or reports) it.
    fn fix(&mut self, bad: Vec<Bad>) -> Result<()> {
        let _g = hold(self.lock, self.dry_run)?;
        let index = self.writer.unwrap_or(self.reader);
        for b in bad {
            // The row may have moved (compaction), been re-saved or deleted meanwhile.
            let now = index.get(&b.row.tx_id)?;
            if now
                .as_ref()
                .is_none_or(|n| n.seg != b.row.seg || n.off != b.row.off)
            {
                self.report.rows_ok += 1;
                continue;
            }
            let action = match b.kind {
                ProblemKind::Transient => "left alone".to_owned(),
                _ if self.dry_run => match b.kind {
                    ProblemKind::MissingPayload => "would drop row".to_owned(),
                    _ => "would quarantine".to_owned(),
                },
                _ => self.quarantine(index, &b),
            };
            self.report
                .findings
                .push(finding(&b.row.tx_id, b.kind, b.detail, action));
        }
        Ok(())
    }

    /// Keeps what the row said (and the record's bytes as found) in quarantine, then drops
    /// the row if it still points there: a crash in between leaves the row (found and
    /// quarantined again next time), never a row dropped without a note.
    fn quarantine(&self, index: &Index, b: &Bad) -> String {
        let seg_path = self.dir.path(b.row.seg);
        let n = note(&b.row, &seg_path, &b.detail, b.bytes.as_deref());
        let kept = match self
            .dir
            .quarantine_bytes(&b.row.tx_id, b.bytes.as_deref(), &n)
        {
            Ok(p) => p,
            Err(e) => return format!("left alone: cannot write its quarantine note: {e}"),
        };
        let row = &b.row;
        let dropped = commit_fix(index, |ix| {
            let n = ix.conn.execute(
                "DELETE FROM records WHERE tx_id = ?1 AND seg = ?2 AND off = ?3",
                params![row.tx_id, to_i64(row.seg), to_i64(row.off)],
            )?;
            if n > 0 {
                let len = to_i64(row.record_len());
                ix.conn.execute(
                    "UPDATE segments SET live_count = max(live_count - 1, 0),
                        live_bytes = max(live_bytes - ?2, 0), dead_bytes = dead_bytes + ?2
                     WHERE id = ?1",
                    params![to_i64(row.seg), len],
                )?;
            }
            Ok(())
        });
        match (b.kind, dropped) {
            (_, Err(e)) => format!("row not dropped: {e}"),
            (ProblemKind::MissingPayload, Ok(())) => {
                format!("dropped row (noted in {})", kept.display())
            }
            (_, Ok(())) => format!("quarantined to {}", kept.display()),
        }
    }

    /// SQLite's own check of the index.
    fn database(&mut self) {
        let problems = match self.reader.integrity_check() {
            Ok(p) => p,
            Err(e) => vec![e.to_string()],
        };
        if problems.is_empty() {
            return;
        }
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        self.report.findings.push(finding(
            "",
            ProblemKind::Database,
            format!(
                "the index database failed its integrity check ({} problem(s)): {}",
                problems.len(),
                shown.join("; ")
            ),
            "left alone: restore the database from a backup, or rebuild its indexes with \
             `sqlite3 <db> REINDEX` after stopping every writer",
        ));
    }
}
