//! The segments engine's reading half ([`SegmentsReader`]): an index lookup, one
//! positioned read of the record, and every check (header checksum, fields against the
//! index, payload SHA-256). Segment files stay open between loads; nothing here writes or
//! takes the store lock (a record is never changed once committed, and a segment is
//! unlinked only after no row points into it, so a lookup that loses a race with a move
//! or a drop just looks again).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use poh_types::{Tx, TxId};

use super::dir::SegDir;
use super::index::{Index, Row};
use super::overlay::{Acked, Overlay};
use super::record;
use crate::engine::{EngineReader, MetaRow, Stats};
use crate::error::{Result, StorageError};
use crate::fs::{FileHandle, is_not_regular, read_exact_at};

/// Most segment files a reader keeps open.
const MAX_OPEN: usize = 256;

/// Lookups on a segments store.
pub(crate) struct SegmentsReader {
    index: Index,
    dir: SegDir,
    open: HashMap<u64, Arc<dyn FileHandle>>,
    /// A read-only handle's rows from the segment tails ([`Overlay`]), while they hold.
    overlay: Option<Arc<Overlay>>,
    /// The writer's acknowledged rows awaiting their index commit (a writing handle).
    acked: Acked,
    /// The store's segment window, in seconds.
    window: u64,
}

/// Why a row's record could not be served.
#[derive(Debug)]
pub(crate) enum Problem {
    /// The segment file does not exist.
    Missing,
    /// The record is not what the row says (or not a record at all).
    Corrupt(String),
    /// Reading failed (may pass).
    Io(std::io::Error),
}

impl SegmentsReader {
    pub(crate) fn new(
        index: Index,
        dir: SegDir,
        overlay: Option<Arc<Overlay>>,
        acked: Acked,
        window: u64,
    ) -> Self {
        Self {
            index,
            dir,
            open: HashMap::new(),
            overlay,
            acked,
            window,
        }
    }

    /// The overlay, while the index is still at the generation it was found over: a
    /// read-only handle's, else the writer's acknowledged rows. The writer's is taken
    /// before the generation is read, so a commit between the two only makes it
    /// ignored (the index then has its rows).
    fn overlay(&mut self) -> Result<Option<Arc<Overlay>>> {
        let (ov, fixed) = match &self.overlay {
            Some(ov) => (ov.clone(), true),
            None => match crate::poison::lock(&self.acked).clone() {
                Some(ov) => (ov, false),
                None => return Ok(None),
            },
        };
        if self.index.config("generation")? != ov.generation() {
            if fixed {
                self.overlay = None;
            }
            return Ok(None);
        }
        Ok(Some(ov))
    }

    /// Runs `f` on one snapshot of the index (a read transaction) when an overlay may
    /// apply, so that its generation check and the index reads merged with it agree: a
    /// commit landing between them would otherwise count its rows twice, or not at all.
    /// `f` gets the overlay, taken before anything else is read: its generation read is
    /// what starts the snapshot, so the index is read at that generation or (the overlay
    /// then ignored) a later one. An index read before it could meet a shared commit that
    /// cleared the writer's overlay in between, and find its rows in neither.
    fn in_snapshot<T>(
        &mut self,
        f: impl FnOnce(&mut Self, Option<Arc<Overlay>>) -> Result<T>,
    ) -> Result<T> {
        let may_apply = self.overlay.is_some() || crate::poison::lock(&self.acked).is_some();
        if !may_apply || !self.index.conn.is_autocommit() {
            let ov = self.overlay()?;
            return f(self, ov);
        }
        self.index
            .conn
            .execute_batch("BEGIN")
            .map_err(|e| self.index.err("begin a read", e))?;
        let out = self.overlay().and_then(|ov| f(self, ov));
        // A read transaction: ending it cannot lose anything.
        let _ = self.index.conn.execute_batch("COMMIT");
        out
    }

    /// Up to `limit` rows after `after` in id order: the index's, with the overlay's.
    fn page_rows(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<Row>> {
        self.in_snapshot(|r, ov| {
            let rows = r.index.page(after, limit)?;
            Ok(match ov {
                Some(ov) => ov.page(rows, after, limit),
                None => rows,
            })
        })
    }

    /// The row of `tx_id`: the overlay's, else the index's.
    fn lookup(&mut self, tx_id: &str) -> Result<Option<Row>> {
        if let Some(r) = self.overlay()?.and_then(|ov| ov.get(tx_id).cloned()) {
            return Ok(Some(r));
        }
        self.index.get(tx_id)
    }

    fn file(&mut self, seg: u64) -> std::result::Result<Arc<dyn FileHandle>, Problem> {
        if let Some(f) = self.open.get(&seg) {
            return Ok(f.clone());
        }
        let f: Arc<dyn FileHandle> = Arc::from(open_segment(&self.dir, seg)?);
        if self.open.len() >= MAX_OPEN {
            self.open.clear();
        }
        self.open.insert(seg, f.clone());
        Ok(f)
    }
}

/// Opens segment `seg` for reading.
pub(crate) fn open_segment(
    dir: &SegDir,
    seg: u64,
) -> std::result::Result<Box<dyn FileHandle>, Problem> {
    let path = dir.path(seg);
    dir.fs().open_ro(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Problem::Missing
        } else if is_not_regular(&e) {
            Problem::Corrupt(format!("{} is not a regular file", path.display()))
        } else {
            Problem::Io(e)
        }
    })
}

/// Reads the record `row` points at from `file` and checks it; returns the payload.
pub(crate) fn read_row(
    file: &dyn FileHandle,
    row: &Row,
    path: &Path,
) -> std::result::Result<Vec<u8>, Problem> {
    let len = usize::try_from(row.record_len())
        .map_err(|_| Problem::Corrupt("record length overflows".into()))?;
    let bytes = read_exact_at(file, row.off, len).map_err(Problem::Io)?;
    check_bytes(&bytes, row, path)?;
    let start = record::header_len(row.tx_id.len(), row.holder_id.len());
    let mut bytes = bytes;
    bytes.drain(..start);
    Ok(bytes)
}

/// Checks that `bytes` (read at the row's offset) are exactly the record the row names.
pub(crate) fn check_bytes(
    bytes: &[u8],
    row: &Row,
    path: &Path,
) -> std::result::Result<(), Problem> {
    if record::is_exactly(
        bytes,
        &row.tx_id,
        &row.holder_id,
        row.timestamp,
        row.size,
        row.hash.as_ref(),
    ) {
        return Ok(());
    }
    // Something differs: say what.
    let at = || format!("{} at offset {}", path.display(), row.off);
    let (h, _) = record::parse(bytes).map_err(|bad| match bad {
        record::Bad::Short => Problem::Corrupt(format!(
            "the record at {} is cut short ({} of {} bytes)",
            at(),
            bytes.len(),
            row.record_len()
        )),
        bad => Problem::Corrupt(format!("{bad} ({})", at())),
    })?;
    if h.tx_id != row.tx_id
        || h.holder_id != row.holder_id
        || h.timestamp.to_bits() != row.timestamp.to_bits()
        || h.size != row.size
    {
        return Err(Problem::Corrupt(format!(
            "the record at {} is tx {:?} (holder {:?}, timestamp {}, {} bytes), not what the \
             index says",
            at(),
            h.tx_id,
            h.holder_id,
            h.timestamp,
            h.size
        )));
    }
    if let Some(hash) = row.hash
        && h.sha != hash
    {
        return Err(Problem::Corrupt(format!(
            "payload SHA-256 {} at {} does not match the recorded {}",
            hex::encode(h.sha),
            at(),
            hex::encode(hash)
        )));
    }
    Err(Problem::Corrupt(format!(
        "the record at {} is not exactly what the index says",
        at()
    )))
}

/// The error a load returns for `problem` with `row`.
pub(crate) fn load_error(dir: &SegDir, row: &Row, problem: Problem) -> StorageError {
    let path = dir.path(row.seg);
    match problem {
        Problem::Missing => StorageError::PayloadMissing {
            tx_id: row.tx_id.clone(),
            path,
        },
        Problem::Corrupt(detail) => StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail,
        },
        Problem::Io(e) => StorageError::io("read segment", path, e),
    }
}

impl SegmentsReader {
    /// One lookup and one read: the tx, `Ok(None)` for an unknown id, or an error for any
    /// problem (the caller looks again).
    fn load_once(&mut self, id: &TxId) -> Result<Option<Tx>> {
        let Some(row) = self.lookup(id.as_str())? else {
            return Ok(None);
        };
        match self.read(&row) {
            Ok(payload) => Ok(Some(tx_of(id, row, payload))),
            Err(p) => Err(load_error(&self.dir, &row, p)),
        }
    }

    /// The checked payload of `row`'s record; on a problem the segment's file is closed
    /// (a moved or dropped segment is opened anew at the next look).
    fn read(&mut self, row: &Row) -> std::result::Result<Vec<u8>, Problem> {
        let res = self.file(row.seg).and_then(|f| {
            let path = self.dir.path(row.seg);
            read_row(&*f, row, &path)
        });
        if res.is_err() {
            self.open.remove(&row.seg);
        }
        res
    }

    /// The hash of `row`'s payload from its record's header, read and checked (index rows
    /// of version 3 carry none). When the record is not there or not the row's, the row
    /// is looked up again (it may have moved or gone meanwhile) and `*row` becomes the
    /// current one; a record still not the row's after a few looks is damaged and leaves
    /// `row.hash` at `None` (the metadata's hash is then empty: `verify` reports it, a load
    /// refuses it).
    fn fill_hash(&mut self, row: &mut Row) -> Result<()> {
        for _ in 0..3 {
            if row.hash.is_some() {
                return Ok(());
            }
            match self.header_hash(row) {
                Ok(h) => {
                    row.hash = Some(h);
                    return Ok(());
                }
                Err(Problem::Io(e)) => {
                    return Err(StorageError::io(
                        "read a record header (for its payload hash)",
                        self.dir.path(row.seg),
                        e,
                    ));
                }
                Err(_) => match self.lookup(&row.tx_id)? {
                    Some(now) if (now.seg, now.off) != (row.seg, row.off) => *row = now,
                    _ => break,
                },
            }
        }
        Ok(())
    }

    /// One read of `row`'s record header, checked against the row.
    fn header_hash(&mut self, row: &Row) -> std::result::Result<[u8; 32], Problem> {
        let res = self.file(row.seg).and_then(|f| {
            let len = record::header_len(row.tx_id.len(), row.holder_id.len());
            let b = read_exact_at(&*f, row.off, len).map_err(Problem::Io)?;
            record::header_is(
                &b,
                &row.tx_id,
                &row.holder_id,
                row.timestamp,
                row.size,
                None,
            )
            .ok_or_else(|| Problem::Corrupt("not the row's record header".into()))
        });
        if res.is_err() {
            self.open.remove(&row.seg);
        }
        res
    }

    /// The metadata of `rows`, each hash filled in ([`Self::fill_hash`]), the headers read
    /// in segment and offset order.
    fn metas(&mut self, mut rows: Vec<Row>) -> Result<Vec<MetaRow>> {
        let mut todo: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].hash.is_none())
            .collect();
        todo.sort_by_key(|&i| (rows[i].seg, rows[i].off));
        for i in todo {
            self.fill_hash(&mut rows[i])?;
        }
        Ok(rows.iter().map(Row::meta).collect())
    }
}

fn tx_of(id: &TxId, row: Row, payload: Vec<u8>) -> Tx {
    Tx {
        tx_id: id.clone(),
        holder_id: row.holder_id,
        timestamp: row.timestamp,
        payload,
    }
}

impl EngineReader for SegmentsReader {
    fn load(&mut self, id: &TxId) -> Result<Option<Tx>> {
        let mut last: Option<(Row, Problem)> = None;
        // A row can move (compaction) or go (expiry) between the lookup and the read: look
        // again, a few times, before calling it a problem.
        for _ in 0..3 {
            let Some(row) = self.lookup(id.as_str())? else {
                return Ok(None);
            };
            if let Some((prev, _)) = &last
                && prev.seg == row.seg
                && prev.off == row.off
            {
                break;
            }
            match self.read(&row) {
                Ok(payload) => return Ok(Some(tx_of(id, row, payload))),
                Err(p) => last = Some((row, p)),
            }
        }
        match last {
            Some((row, p)) => Err(load_error(&self.dir, &row, p)),
            None => Ok(None),
        }
    }

    /// The lookups share one read transaction (SQLite takes its read lock once, not once
    /// per id). A load that meets a problem is done again outside it, on a fresh snapshot
    /// (a row moved or dropped since the transaction began is looked up anew).
    fn load_many(&mut self, ids: &[TxId]) -> Vec<Result<Option<Tx>>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut in_txn = self.index.conn.execute_batch("BEGIN").is_ok();
        for id in ids {
            let first = self.load_once(id);
            match first {
                Ok(Some(tx)) => out.push(Ok(Some(tx))),
                Ok(None) if !in_txn => out.push(Ok(None)),
                _ => {
                    if in_txn {
                        let _ = self.index.conn.execute_batch("COMMIT");
                    }
                    out.push(self.load(id));
                    in_txn = self.index.conn.execute_batch("BEGIN").is_ok();
                }
            }
        }
        if in_txn {
            let _ = self.index.conn.execute_batch("COMMIT");
        }
        out
    }

    /// One lookup and one read, as [`load`](EngineReader::load) makes (the default would
    /// also read the record's header for the row's hash).
    fn load_small(&mut self, id: &TxId, max_bytes: u64) -> Option<Option<Tx>> {
        match self.lookup(id.as_str()).ok()? {
            None => Some(None),
            Some(row) if row.size <= max_bytes => {
                let payload = self.read(&row).ok()?;
                Some(Some(tx_of(id, row, payload)))
            }
            Some(_) => None,
        }
    }

    fn contains(&mut self, tx_id: &str) -> Result<bool> {
        Ok(self.lookup(tx_id)?.is_some())
    }

    fn row(&mut self, tx_id: &str) -> Result<Option<MetaRow>> {
        match self.lookup(tx_id)? {
            Some(r) => Ok(self.metas(vec![r])?.pop()),
            None => Ok(None),
        }
    }

    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>> {
        let rows = self.page_rows(after, limit)?;
        self.metas(rows)
    }

    fn page_ids(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .page_rows(after, limit)?
            .into_iter()
            .map(|r| r.tx_id)
            .collect())
    }

    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>> {
        let rows = self.in_snapshot(|r, ov| {
            Ok(match ov {
                Some(ov) => ov.expired(
                    r.index.find_expired(
                        now,
                        ttl,
                        after,
                        limit.saturating_add(ov.len()),
                        r.window,
                    )?,
                    now,
                    ttl,
                    after,
                    limit,
                ),
                None => r.index.find_expired(now, ttl, after, limit, r.window)?,
            })
        })?;
        self.metas(rows)
    }

    fn stats(&mut self) -> Result<Stats> {
        self.in_snapshot(|r, ov| match ov {
            Some(ov) => ov.stats(&r.index),
            None => r.index.stats(),
        })
    }
}
