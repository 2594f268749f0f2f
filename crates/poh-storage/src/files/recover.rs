//! Recovery and verification: find every state a crash or corruption can leave and, unless
//! it is a dry run, repair it.
//!
//! Scans run without the store lock so writers are not held up; every problem found is
//! checked again under the exclusive lock before anything is changed, so a tx saved or
//! deleted meanwhile is never touched by mistake.

use std::path::PathBuf;

use poh_types::TxId;
use tracing::warn;

use super::lock::StoreLock;
use super::meta::MetaStore;
use super::payload::{PayloadStore, sha256_hex};
use super::reader::check_payload_found;
use crate::engine::MetaRow;
use crate::error::{Result, StorageError};
use crate::fs::{EntryKind, is_not_regular};
use crate::par::par_map;
use crate::report::{Finding, ProblemKind, RecoverReport};

/// Rows read per page during a scan.
const PAGE: usize = 512;

/// Finishes or discards the temp files of interrupted saves. Caller holds the exclusive
/// lock. A temp whose content matches its committed row, where the final file does not,
/// is renamed into place (the save had passed its commit point); any other temp is
/// removed. Unreadable temps are reported and kept.
pub(crate) fn repair_temps(
    payloads: &PayloadStore,
    meta: &mut dyn MetaStore,
    dry_run: bool,
) -> RecoverReport {
    let mut report = RecoverReport {
        dry_run,
        ..Default::default()
    };
    let temps = match payloads.temps() {
        Ok(t) => t,
        Err(e) => {
            report.findings.push(Finding {
                tx_id: String::new(),
                kind: ProblemKind::Transient,
                detail: format!("cannot list {}: {e}", payloads.tmp_dir().display()),
                action: "left alone".into(),
            });
            return report;
        }
    };
    let fs = payloads.fs();
    let mut renamed = false;
    for t in temps {
        let roll = match &t.tx_id {
            None => false,
            Some(id) => match should_roll_forward(payloads, meta, id, &t.path) {
                Ok(r) => r,
                Err(detail) => {
                    report.findings.push(Finding {
                        tx_id: id.to_string(),
                        kind: ProblemKind::Transient,
                        detail,
                        action: "left alone".into(),
                    });
                    continue;
                }
            },
        };
        if dry_run {
            match (&t.tx_id, roll) {
                (Some(id), true) => report.rolled_forward.push(id.to_string()),
                _ => report.temps_removed.push(t.path),
            }
            continue;
        }
        match (&t.tx_id, roll) {
            (Some(id), true) => match fs.rename(&t.path, &payloads.path(id)) {
                Ok(()) => {
                    renamed = true;
                    report.rolled_forward.push(id.to_string());
                }
                Err(e) => report.findings.push(Finding {
                    tx_id: id.to_string(),
                    kind: ProblemKind::Transient,
                    detail: format!("cannot rename {} into place: {e}", t.path.display()),
                    action: "left alone".into(),
                }),
            },
            _ => match fs.remove_file(&t.path) {
                Ok(()) => report.temps_removed.push(t.path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.findings.push(Finding {
                    tx_id: t.tx_id.map(|i| i.to_string()).unwrap_or_default(),
                    kind: ProblemKind::Transient,
                    detail: format!("cannot remove temp {}: {e}", t.path.display()),
                    action: "left alone".into(),
                }),
            },
        }
    }
    if renamed && let Err(e) = fs.sync_dir(payloads.base()) {
        report.findings.push(Finding {
            tx_id: String::new(),
            kind: ProblemKind::Transient,
            detail: format!("fsync of {} failed: {e}", payloads.base().display()),
            action: "rolled-forward files may not be durable yet".into(),
        });
    }
    report
}

fn should_roll_forward(
    payloads: &PayloadStore,
    meta: &mut dyn MetaStore,
    id: &TxId,
    temp: &std::path::Path,
) -> std::result::Result<bool, String> {
    let row = meta
        .get(id.as_str())
        .map_err(|e| format!("cannot read row: {e}"))?;
    let Some(row) = row else { return Ok(false) };
    let temp_data = match payloads.fs().read(temp) {
        Ok(d) => d,
        Err(e) if is_not_regular(&e) || e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(false);
        }
        Err(e) => return Err(format!("cannot read {}: {e}", temp.display())),
    };
    if sha256_hex(&temp_data) != row.storage_hash {
        return Ok(false);
    }
    Ok(match payloads.read(id) {
        Ok(d) => sha256_hex(&d) != row.storage_hash,
        Err(_) => true,
    })
}

/// Full recovery (or, with `dry_run`, verification).
///
/// `lock` is `None` only for a read-only handle on a store no writer of ours has opened
/// (no lock file). In a dry run `writer` is a second reader: nothing is written.
pub(crate) fn run(
    payloads: &PayloadStore,
    writer: &mut dyn MetaStore,
    reader: &mut dyn MetaStore,
    lock: Option<&StoreLock>,
    dry_run: bool,
) -> Result<RecoverReport> {
    let mut report = {
        let _g = hold(lock, dry_run)?;
        repair_temps(payloads, writer, dry_run)
    };
    let mut scan = Scan {
        payloads,
        writer,
        reader,
        lock,
        dry_run,
        report: &mut report,
    };
    scan.rows()?;
    scan.files()?;
    scan.database();
    Ok(report)
}

/// One recovery or verification pass over rows and files: what it reads and writes with,
/// and the report it fills.
struct Scan<'a> {
    payloads: &'a PayloadStore,
    writer: &'a mut dyn MetaStore,
    reader: &'a mut dyn MetaStore,
    lock: Option<&'a StoreLock>,
    dry_run: bool,
    report: &'a mut RecoverReport,
}

/// The lock a step takes: shared to look (a dry run waits out writers mid-protocol),
/// exclusive to change anything.
fn hold(lock: Option<&StoreLock>, dry_run: bool) -> Result<Option<super::lock::LockGuard<'_>>> {
    lock.map(|l| if dry_run { l.shared() } else { l.exclusive() })
        .transpose()
}

/// Checks one row's payload: `None` when it verifies. Also the path it was read at when
/// that was the prototype's name for the id (see [`PayloadStore::prototype_path`]).
fn classify(
    payloads: &PayloadStore,
    row: &MetaRow,
) -> (Option<(ProblemKind, String)>, Option<PathBuf>) {
    let (checked, found) = check_payload_found(payloads, row);
    (problem(checked, row), found)
}

fn problem(checked: Result<poh_types::Tx>, row: &MetaRow) -> Option<(ProblemKind, String)> {
    match checked {
        Ok(_) => None,
        Err(StorageError::PayloadMissing { path, .. }) => Some((
            ProblemKind::MissingPayload,
            format!("{} does not exist", path.display()),
        )),
        Err(StorageError::Integrity { detail, .. }) if TxId::new(row.tx_id.as_str()).is_err() => {
            Some((ProblemKind::UnsafeId, detail))
        }
        Err(StorageError::Integrity { detail, .. }) => Some((ProblemKind::Corrupt, detail)),
        Err(e) => Some((ProblemKind::Transient, e.to_string())),
    }
}

impl Scan<'_> {
    /// Checks every row's payload, page by page, and fixes (or reports) what fails.
    fn rows(&mut self) -> Result<()> {
        let workers = crate::par::cores().clamp(1, 8);
        let mut after: Option<String> = None;
        loop {
            let rows = self.reader.page(after.as_deref(), PAGE)?;
            let Some(last) = rows.last() else { break };
            after = Some(last.tx_id.clone());
            self.report.rows_checked += rows.len() as u64;
            let mut problems: Vec<(MetaRow, ProblemKind, String)> = Vec::new();
            let mut to_adopt: Vec<&MetaRow> = Vec::new();
            for ((p, found), r) in par_map(&rows, workers, |r| classify(self.payloads, r))
                .into_iter()
                .zip(&rows)
            {
                match p {
                    Some((k, d)) => problems.push((r.clone(), k, d)),
                    None if found.is_some() => to_adopt.push(r),
                    None => {}
                }
            }
            self.report.rows_ok += (rows.len() - problems.len()) as u64;
            if !to_adopt.is_empty() {
                self.adopt(&to_adopt)?;
            }
            if problems.is_empty() {
                continue;
            }
            let _g = hold(self.lock, self.dry_run)?;
            for (row, _, _) in problems {
                // A dry run did not roll this tx forward; the real run would have, before
                // checking it, so its payload in `.tmp/` is no finding.
                if self.dry_run && self.report.rolled_forward.contains(&row.tx_id) {
                    self.report.rows_ok += 1;
                    continue;
                }
                // Look again under the lock: the tx may have been re-saved or deleted.
                let Some(now) = self.writer.get(&row.tx_id)? else {
                    self.report.rows_ok += 1;
                    continue;
                };
                let (found, at) = classify(self.payloads, &now);
                let Some((mut kind, mut detail)) = found else {
                    self.report.rows_ok += 1;
                    continue;
                };
                // Never drop the row of a committed save whose payload is only in `.tmp/`
                // (its move into place failed): that would make the temp garbage.
                if matches!(kind, ProblemKind::MissingPayload | ProblemKind::Corrupt)
                    && let Some(temp) = committed_temp(self.payloads, &now)
                {
                    detail = format!(
                        "{detail}; its committed payload is in {} and is moved into place \
                         at the next open or recover",
                        temp.display()
                    );
                    kind = ProblemKind::Unfinished;
                }
                let action = if self.dry_run {
                    match kind {
                        ProblemKind::MissingPayload => "would drop row".to_owned(),
                        ProblemKind::Corrupt => "would quarantine".to_owned(),
                        _ => "left alone".to_owned(),
                    }
                } else {
                    fix_row(
                        self.payloads,
                        &mut *self.writer,
                        &now,
                        at.as_deref(),
                        kind,
                        &detail,
                    )
                };
                self.report.findings.push(Finding {
                    tx_id: now.tx_id.clone(),
                    kind,
                    detail,
                    action,
                });
            }
        }
        Ok(())
    }

    /// Renames to their own name the payloads of `rows` that verified at the prototype's
    /// name for their id (in a dry run, only lists them). Under the exclusive lock each
    /// is checked again first (re-saved, deleted or renamed meanwhile: left as it is now),
    /// and the base is synced once after the renames. A rename that fails is reported
    /// as transient; the payload stays where loads still find it.
    fn adopt(&mut self, rows: &[&MetaRow]) -> Result<()> {
        if self.dry_run {
            self.report
                .adopted
                .extend(rows.iter().map(|r| r.tx_id.clone()));
            return Ok(());
        }
        let _g = hold(self.lock, false)?;
        let mut renamed = false;
        for row in rows {
            let Some(now) = self.writer.get(&row.tx_id)? else {
                continue;
            };
            let (Ok(tx), Some(from)) = check_payload_found(self.payloads, &now) else {
                continue;
            };
            match self.payloads.adopt(&tx.tx_id, &from) {
                Ok(()) => {
                    renamed = true;
                    self.report.adopted.push(now.tx_id.clone());
                }
                Err(e) => self.report.findings.push(Finding {
                    tx_id: now.tx_id.clone(),
                    kind: ProblemKind::Transient,
                    detail: format!(
                        "cannot rename {} (the prototype's name for it) to {}: {e}",
                        from.display(),
                        self.payloads.path(&tx.tx_id).display()
                    ),
                    action: "left alone: loads still read it there".into(),
                }),
            }
        }
        if renamed {
            let base = self.payloads.base();
            self.payloads
                .fs()
                .sync_dir(base)
                .map_err(|e| StorageError::io("fsync directory", base, e))?;
        }
        Ok(())
    }

    /// Checks every payload file in the base directory has a row; removes (or reports) orphans.
    fn files(&mut self) -> Result<()> {
        let mut batch: Vec<(TxId, EntryKind)> = Vec::with_capacity(PAGE);
        let mut err: Option<StorageError> = None;
        let payloads = self.payloads;
        let listed = payloads.for_each_payload(&mut |id, kind| {
            if err.is_some() {
                return;
            }
            batch.push((id, kind));
            if batch.len() >= PAGE {
                let b = std::mem::take(&mut batch);
                if let Err(e) = self.check_files(b) {
                    err = Some(e);
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        listed.map_err(|e| StorageError::io("list payload directory", payloads.base(), e))?;
        self.check_files(batch)
    }

    fn check_files(&mut self, batch: Vec<(TxId, EntryKind)>) -> Result<()> {
        self.report.files_checked += batch.len() as u64;
        let names: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let unknown: std::collections::HashSet<String> =
            self.reader.without_row(&names)?.into_iter().collect();
        let orphans: Vec<(TxId, EntryKind)> = batch
            .into_iter()
            .filter(|(id, _)| unknown.contains(id.as_str()))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let _g = hold(self.lock, self.dry_run)?;
        for (id, kind) in orphans {
            if self.writer.get(id.as_str())?.is_some() {
                continue;
            }
            let path = self.payloads.path(&id);
            let detail = format!("{} ({kind:?}) has no metadata row", path.display());
            // Never deleted: a file without a row may be the last copy of a tx whose
            // metadata was lost. It goes to quarantine, with a note, for an operator.
            let action = if kind == EntryKind::Dir {
                "left alone: a directory".to_owned()
            } else if self.dry_run {
                "would quarantine".to_owned()
            } else {
                let note = serde_json::json!({
                    "tx_id": id.as_str(),
                    "problem": "payload file without a metadata row (orphan)",
                    "found_as": format!("{kind:?}"),
                })
                .to_string();
                match self.payloads.quarantine(&id, &note) {
                    Ok(dest) => format!("quarantined to {}", dest.display()),
                    Err(e) => format!("left alone: {e}"),
                }
            };
            self.report.findings.push(Finding {
                tx_id: id.to_string(),
                kind: ProblemKind::Orphan,
                detail,
                action,
            });
        }
        Ok(())
    }
}

/// The JSON note kept in `.quarantine/` for a row the store drops or a payload it moves.
fn note(row: &MetaRow, problem: &str) -> String {
    serde_json::json!({
        "tx_id": row.tx_id,
        "holder_id": row.holder_id,
        "timestamp": row.timestamp,
        "storage_hash": row.storage_hash,
        "size": row.size,
        "problem": problem,
    })
    .to_string()
}

impl Scan<'_> {
    /// Runs the database's own integrity check (a damaged index page passes every row
    /// lookup but breaks range scans such as TTL passes) and reports what it finds.
    fn database(&mut self) {
        let problems = match self.reader.integrity_check() {
            Ok(p) => p,
            Err(e) => vec![e.to_string()],
        };
        if problems.is_empty() {
            return;
        }
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        self.report.findings.push(Finding {
            tx_id: String::new(),
            kind: ProblemKind::Database,
            detail: format!(
                "the metadata database failed its integrity check ({} problem(s)): {}",
                problems.len(),
                shown.join("; ")
            ),
            action: "left alone: restore the database from a backup, or rebuild its \
                     indexes with `sqlite3 <db> REINDEX` after stopping every writer"
                .into(),
        });
    }
}

/// Repairs one row's finding. `at` is where its payload was read when that was the
/// prototype's name for the id: the file a corrupt payload's quarantine moves.
fn fix_row(
    payloads: &PayloadStore,
    writer: &mut dyn MetaStore,
    row: &MetaRow,
    at: Option<&std::path::Path>,
    kind: ProblemKind,
    detail: &str,
) -> String {
    let drop_row =
        |writer: &mut dyn MetaStore| match writer.delete_if_hash(&row.tx_id, &row.storage_hash) {
            Ok(_) => None,
            Err(e) => Some(format!("row not dropped: {e}")),
        };
    let Ok(id) = TxId::new(row.tx_id.as_str()) else {
        return "left alone".into();
    };
    match kind {
        // What the row said is kept as a note: dropping it loses nothing.
        ProblemKind::MissingPayload => match payloads.quarantine_note(&id, &note(row, detail)) {
            Ok(path) => {
                let msg = format!("dropped row (noted in {})", path.display());
                match drop_row(writer) {
                    None => msg,
                    Some(e) => e,
                }
            }
            Err(e) => format!("left alone: cannot write its quarantine note: {e}"),
        },
        // Quarantine the file before dropping the row: a crash in between leaves a row
        // with a missing payload (noted and dropped next time), never a lost payload.
        ProblemKind::Corrupt => match payloads.quarantine_file(
            &id,
            at.unwrap_or(&payloads.path(&id)),
            &note(row, detail),
        ) {
            Ok(dest) => {
                let msg = format!("quarantined to {}", dest.display());
                match drop_row(writer) {
                    None => msg,
                    Some(e) => format!("{msg}; {e}"),
                }
            }
            Err(e) => {
                warn!(tx_id = %row.tx_id, error = %e, "quarantine failed");
                format!("left alone: quarantine failed: {e}")
            }
        },
        _ => "left alone".into(),
    }
}

/// A temp file in `.tmp/` holding exactly the committed payload of `row`: the last copy
/// of a committed save whose move into place failed.
fn committed_temp(payloads: &PayloadStore, row: &MetaRow) -> Option<PathBuf> {
    let id = TxId::new(row.tx_id.as_str()).ok()?;
    let temps = payloads.temps().ok()?;
    temps
        .into_iter()
        .filter(|t| t.tx_id.as_ref() == Some(&id))
        .find(|t| {
            payloads.fs().read(&t.path).is_ok_and(|d| {
                row.size.is_none_or(|n| n == d.len() as u64) && sha256_hex(&d) == row.storage_hash
            })
        })
        .map(|t| t.path)
}
