//! The index of a segments store: SQLite tables that map each tx id to where its record
//! is, and account each segment's live and dead bytes. (The segments are the data; the
//! index is what is committed: a record is part of the store once its row is.)
//!
//! Schema (version 4, `PRAGMA application_id` = "PoHS"):
//! ```sql
//! CREATE TABLE records (
//!   tx_id TEXT PRIMARY KEY NOT NULL,
//!   seg INTEGER NOT NULL,          -- segment id: <base>/segments/<seg>.seg
//!   off INTEGER NOT NULL,          -- byte offset of the record in it
//!   size INTEGER NOT NULL,         -- payload bytes
//!   timestamp REAL NOT NULL,
//!   holder_id TEXT NOT NULL,
//!   hash BLOB NOT NULL             -- empty: the record's header holds the payload's
//!                                  -- SHA-256 (rows of a version-2 index: the 32 bytes)
//! ) WITHOUT ROWID;
//! CREATE INDEX records_seg_ts ON records(seg, timestamp);  -- expiry, dry runs, verify,
//!                                                          -- compaction, drops (each
//!                                                          -- entry ends with its tx_id)
//! CREATE TABLE segments (
//!   id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL,
//!   state INTEGER NOT NULL,        -- 0 open for appends, 1 sealed, 2 dropped: its file is
//!                                  -- unlinked and its rows, if any are left, are garbage
//!   len INTEGER NOT NULL,          -- committed length: bytes after it are not committed
//!   live_count INTEGER NOT NULL, live_bytes INTEGER NOT NULL, dead_bytes INTEGER NOT NULL,
//!   newest REAL);                  -- largest timestamp ever written to it
//! CREATE INDEX segments_bucket ON segments(bucket, state, id);
//! CREATE TABLE seg_config (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
//!   -- next_seq, next_seg, generation (bumped by every commit: other processes' caches)
//! ```
//!
//! Version 2 (the tables are version 1's) changes one rule: a dropped segment may still have
//! rows. They are no longer part of the store: every lookup, listing and count leaves them
//! out ([`LIVE_SEG`], [`LIVE_ROW`]), and the writer deletes them in bounded sweeps after
//! the drop (docs/design.md §7.5). A version-1 binary would serve them, so it is refused.
//!
//! Version 3 (the same tables again) writes no hash into a row: the record's header holds
//! the payload's SHA-256 under its header check, and a load checks the payload against it
//! anyway. That is a third of the index's bytes (docs/design.md §7.1). Metadata reads that
//! return the hash ([`Row::meta`] callers: one row, a page, a dry run) read it from the
//! header; listings of ids and loads need nothing more than before. Rows of a version-2
//! index keep their hashes, and both are checked. A version-2 binary would find no hash
//! to check against, so it is refused.
//!
//! Version 4 (the same tables) keeps one secondary index instead of two: `(seg,
//! timestamp)` replaces `(timestamp, tx_id)` and `(seg, off)`, a B-tree less for every row
//! a save writes (docs/design.md §7.1). A row below the TTL cutoff can only be in a live
//! segment whose time window starts before it ([`Index::expiry_candidates`]: usually the
//! few segments of one window), and in each of them the expired rows are a range of this
//! index; windows never overlap in time, so walking them in order walks the rows in
//! `(timestamp, tx_id)` order. The upgrade from versions 1–3 swaps the indexes in one
//! transaction. A version-3 binary would use neither index, so it is refused; this
//! binary reads an older index as it is (its queries are right over either index).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::engine::{MetaRow, Stats};
use crate::error::{Result, StorageError};
use crate::files::meta::{SqliteBackend, cutoff, meta_err, schema_version};

/// Schema version of the segments index (see the module's notes on versions 2 and 3).
pub(crate) const SCHEMA_VERSION: i64 = 4;
/// `PRAGMA application_id` of a segments index ("PoHS").
pub(crate) const APPLICATION_ID: i64 = 0x506F_4853;

/// Segment states.
pub(crate) const OPEN: i64 = 0;
pub(crate) const SEALED: i64 = 1;
pub(crate) const DROPPED: i64 = 2;

/// One index row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) tx_id: String,
    pub(crate) seg: u64,
    pub(crate) off: u64,
    pub(crate) size: u64,
    pub(crate) timestamp: f64,
    pub(crate) holder_id: String,
    /// The payload's SHA-256 as the index holds it (rows written before version 3), or as
    /// read from the record's header; `None` when neither is at hand.
    pub(crate) hash: Option<[u8; 32]>,
}

/// What a version-3 row stores as its hash: nothing (the record's header holds it).
pub(crate) const NO_HASH: &[u8] = &[];

impl Row {
    pub(crate) fn meta(&self) -> MetaRow {
        MetaRow {
            tx_id: self.tx_id.clone(),
            holder_id: self.holder_id.clone(),
            timestamp: self.timestamp,
            storage_hash: self.hash.map(hex::encode).unwrap_or_default(),
            size: Some(self.size),
        }
    }

    /// Expiry's order: `(timestamp, tx_id)`.
    pub(crate) fn time_order(a: &Row, b: &Row) -> std::cmp::Ordering {
        a.timestamp
            .total_cmp(&b.timestamp)
            .then_with(|| a.tx_id.cmp(&b.tx_id))
    }

    /// Bytes of its record.
    pub(crate) fn record_len(&self) -> u64 {
        super::record::record_len(self.tx_id.len(), self.holder_id.len(), self.size)
    }
}

/// One segment's entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegRow {
    pub(crate) id: u64,
    pub(crate) bucket: u64,
    pub(crate) state: i64,
    pub(crate) len: u64,
    pub(crate) live_count: u64,
    pub(crate) live_bytes: u64,
    pub(crate) dead_bytes: u64,
    pub(crate) newest: Option<f64>,
}

/// What a database file holds, found without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Missing,
    /// No tables at all (a new or emptied file).
    Empty,
    /// A segments index.
    Segments,
    /// A flat-file store's metadata (a `txs` table).
    Files,
    /// Tables of something else.
    Other,
}

/// A row's record length less its fixed header bytes ([`super::record::header_len`]`(0, 0)`),
/// as SQL over a `records` row: payload, id and holder bytes.
pub(crate) const VAR_LEN_SQL: &str =
    "(size + length(CAST(tx_id AS BLOB)) + length(CAST(holder_id AS BLOB)))";
pub(crate) const ROW_COLS: &str = "tx_id, seg, off, size, timestamp, holder_id, hash";
/// A `records` row is part of the store unless its segment is dropped: as a filter over
/// many rows (the dropped segments' ids are read once per statement).
pub(crate) const LIVE_SEG: &str = "seg NOT IN (SELECT id FROM segments WHERE state = 2)";
// The two filters spell out DROPPED's value (string constants cannot format it in).
const _: () = assert!(DROPPED == 2);
/// The same test for one row of `records` (one lookup of its segment).
pub(crate) const LIVE_ROW: &str =
    "NOT EXISTS (SELECT 1 FROM segments s WHERE s.id = records.seg AND s.state = 2)";
const GET_ROW: &str = "SELECT tx_id, seg, off, size, timestamp, holder_id, hash FROM records
     WHERE tx_id = ?1 AND NOT EXISTS (
        SELECT 1 FROM segments s WHERE s.id = records.seg AND s.state = 2)";

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let blob: Vec<u8> = r.get(6)?;
    // Empty: in the record's header. Any length but 32 is damage, and matches no payload.
    let hash = match blob.len() {
        0 => None,
        32 => {
            let mut h = [0u8; 32];
            h.copy_from_slice(&blob);
            Some(h)
        }
        _ => Some([0u8; 32]),
    };
    Ok(Row {
        tx_id: r.get(0)?,
        seg: to_u64(r.get(1)?),
        off: to_u64(r.get(2)?),
        size: to_u64(r.get(3)?),
        timestamp: r.get(4)?,
        holder_id: r.get(5)?,
        hash,
    })
}

pub(crate) fn seg_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegRow> {
    Ok(SegRow {
        id: to_u64(r.get(0)?),
        bucket: to_u64(r.get(1)?),
        state: r.get(2)?,
        len: to_u64(r.get(3)?),
        live_count: to_u64(r.get(4)?),
        live_bytes: to_u64(r.get(5)?),
        dead_bytes: to_u64(r.get(6)?),
        newest: r.get(7)?,
    })
}

pub(crate) const SEG_COLS: &str =
    "id, bucket, state, len, live_count, live_bytes, dead_bytes, newest";

/// The time window of a timestamp (finite and non-negative) in a store of `window`-second
/// windows: the segments' `bucket`.
pub(crate) fn bucket_of(ts: f64, window: u64) -> u64 {
    (ts / window as f64).floor() as u64
}

/// Opens connections to the index database.
#[derive(Debug, Clone)]
pub(crate) struct IndexDb {
    backend: SqliteBackend,
    path: PathBuf,
}

impl IndexDb {
    pub(crate) fn new(path: &Path, create: bool, mode: u32) -> Self {
        Self {
            backend: SqliteBackend::new(path, create).with_mode(mode),
            path: path.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds, changing nothing.
    pub(crate) fn probe(&self) -> Result<Found> {
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
            _ => {}
        }
        let conn = self.backend.connect_reader()?;
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.backend.err("read the schema", e))?;
        Ok(if names.is_empty() {
            Found::Empty
        } else if names.iter().any(|n| n == "records") && names.iter().any(|n| n == "segments") {
            Found::Segments
        } else if names.iter().any(|n| n == "txs") {
            Found::Files
        } else {
            Found::Other
        })
    }

    /// The writer's connection: WAL, `synchronous=FULL` until [`Index::durability`] says
    /// otherwise (a save group's commit is `NORMAL`: docs/design.md §7.3), the schema
    /// created or checked.
    pub(crate) fn open_writer(&self) -> Result<Index> {
        let conn = self.backend.connect(true)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.backend.err("enable WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(self.backend.err(
                "enable WAL",
                std::io::Error::other(format!("journal_mode stayed {mode}")),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.backend.err("set synchronous=FULL", e))?;
        create_schema(&conn, &self.path)?;
        Ok(Index {
            conn,
            path: self.path.clone(),
            full: std::cell::Cell::new(true),
        })
    }

    /// A connection that never writes (see the flat-file engine's readers: it works on a
    /// read-only mount, a full disk and a store owned by another user).
    pub(crate) fn open_reader(&self) -> Result<Index> {
        let conn = self.backend.connect_reader()?;
        check_schema(&conn, &self.path)?;
        Ok(Index {
            conn,
            path: self.path.clone(),
            full: std::cell::Cell::new(true),
        })
    }
}

fn create_schema(conn: &Connection, path: &Path) -> Result<()> {
    let err = |what: &str, e: rusqlite::Error| meta_err(path, what, e);
    let version = schema_version(conn, path, SCHEMA_VERSION)?;
    if version == SCHEMA_VERSION {
        return check_schema(conn, path);
    }
    if (1..SCHEMA_VERSION).contains(&version) {
        // Same tables. From version 2 on a dropped segment may keep rows (its garbage),
        // which a version-1 binary would serve; from version 3 on new rows carry no hash,
        // which a version-2 binary would have nothing to check against; from version 4 on
        // one index on (seg, timestamp) replaces two. The version says so.
        check_schema(conn, path)?;
        let what = format!("upgrade the index to version {SCHEMA_VERSION}");
        let tx = conn.unchecked_transaction().map_err(|e| err(&what, e))?;
        tx.execute_batch(&format!(
            "DROP INDEX IF EXISTS records_time;
             DROP INDEX IF EXISTS records_seg;
             CREATE INDEX IF NOT EXISTS records_seg_ts ON records(seg, timestamp);
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(|e| err(&what, e))?;
        return tx.commit().map_err(|e| err(&what, e));
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| err("begin creating the index", e))?;
    let txs: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'txs'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| err("read the schema", e))?;
    if txs > 0 {
        return Err(StorageError::NotAStore {
            path: path.to_owned(),
            why: "the database holds a flat-file store's metadata (a txs table), not a \
                  segments index; nothing was changed"
                .into(),
        });
    }
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS records (
            tx_id TEXT PRIMARY KEY NOT NULL,
            seg INTEGER NOT NULL,
            off INTEGER NOT NULL,
            size INTEGER NOT NULL,
            timestamp REAL NOT NULL,
            holder_id TEXT NOT NULL,
            hash BLOB NOT NULL) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS records_seg_ts ON records(seg, timestamp);
         CREATE TABLE IF NOT EXISTS segments (
            id INTEGER PRIMARY KEY,
            bucket INTEGER NOT NULL,
            state INTEGER NOT NULL,
            len INTEGER NOT NULL,
            live_count INTEGER NOT NULL,
            live_bytes INTEGER NOT NULL,
            dead_bytes INTEGER NOT NULL,
            newest REAL);
         CREATE INDEX IF NOT EXISTS segments_bucket ON segments(bucket, state, id);
         CREATE TABLE IF NOT EXISTS seg_config (
            key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
         INSERT OR IGNORE INTO seg_config VALUES ('next_seq', 1), ('next_seg', 1),
            ('generation', 0);
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))
    .map_err(|e| err("create the index tables", e))?;
    tx.commit().map_err(|e| err("commit the index tables", e))
}

fn check_schema(conn: &Connection, path: &Path) -> Result<()> {
    let app: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| meta_err(path, "read application id", e))?;
    if app != APPLICATION_ID {
        return Err(StorageError::NotAStore {
            path: path.to_owned(),
            why: "the database is not a segments index (its application id is not poh-store's); \
                  nothing was changed"
                .into(),
        });
    }
    schema_version(conn, path, SCHEMA_VERSION).map(drop)
}

/// One connection to the index.
pub(crate) struct Index {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// The connection's `synchronous` setting: `FULL` (true) or `NORMAL`.
    full: std::cell::Cell<bool>,
}

impl Index {
    /// Sets how the next commits reach the disk: `full` (`synchronous=FULL`) makes each one
    /// durable when it returns, and with it every commit before it (the WAL is one file,
    /// appended in order); otherwise (`NORMAL`) a commit reaches the disk with the next
    /// durable commit or checkpoint. Only between transactions (SQLite refuses inside one).
    pub(crate) fn durability(&self, full: bool) -> Result<()> {
        if self.full.get() == full {
            return Ok(());
        }
        let level = if full { "FULL" } else { "NORMAL" };
        self.conn
            .pragma_update(None, "synchronous", level)
            .map_err(|e| self.err(format!("set synchronous={level}"), e))?;
        self.full.set(full);
        Ok(())
    }

    pub(crate) fn err(&self, what: impl Into<String>, e: rusqlite::Error) -> StorageError {
        meta_err(&self.path, what, e)
    }

    fn rows(&self, sql: &str, p: impl rusqlite::Params, what: &str) -> Result<Vec<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| self.err(what, e))?;
        stmt.query_map(p, row_from)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(what, e))
    }

    pub(crate) fn get(&self, tx_id: &str) -> Result<Option<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(GET_ROW)
            .map_err(|e| self.err("look up row", e))?;
        stmt.query_row([tx_id], row_from)
            .optional()
            .map_err(|e| self.err(format!("look up tx {tx_id}"), e))
    }

    pub(crate) fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Row>> {
        let limit = to_i64(limit as u64);
        match after {
            Some(a) => self.rows(
                &format!(
                    "SELECT {ROW_COLS} FROM records WHERE tx_id > ?1 AND {LIVE_SEG}
                     ORDER BY tx_id LIMIT ?2"
                ),
                params![a, limit],
                "list rows",
            ),
            None => self.rows(
                &format!("SELECT {ROW_COLS} FROM records WHERE {LIVE_SEG} ORDER BY tx_id LIMIT ?1"),
                params![limit],
                "list rows",
            ),
        }
    }

    /// The live segments that may hold a row below `cutoff`, from window `from` on, by
    /// window and id: those of the windows that start before it. (`floor(ts / window)`
    /// never decreases as `ts` grows, so no row below the cutoff is in a later window, and
    /// no row at or after a timestamp in an earlier one.)
    pub(crate) fn expiry_candidates(
        &self,
        cutoff: f64,
        window: u64,
        from: u64,
    ) -> Result<Vec<(u64, u64)>> {
        if cutoff.is_nan() || cutoff <= 0.0 {
            // Timestamps are never negative.
            return Ok(Vec::new());
        }
        let last = to_i64(bucket_of(cutoff, window));
        self.conn
            .prepare_cached(&format!(
                "SELECT bucket, id FROM segments
                 WHERE bucket >= ?1 AND bucket <= ?2 AND state < {DROPPED}
                 ORDER BY bucket, id"
            ))
            .and_then(|mut s| {
                s.query_map(params![to_i64(from), last], |r| {
                    Ok((to_u64(r.get(0)?), to_u64(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err("find the segments that may hold expired rows", e))
    }

    /// Up to `limit` expired rows after `after`, oldest first (`(timestamp, tx_id)`
    /// order), in a store of `window`-second segment windows: window by window, the rows
    /// of each of its segments merged.
    pub(crate) fn find_expired(
        &self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
        window: u64,
    ) -> Result<Vec<Row>> {
        let (ats, aid) = after.unwrap_or((f64::NEG_INFINITY, ""));
        let from = if ats > 0.0 { bucket_of(ats, window) } else { 0 };
        let c = cutoff(now, ttl);
        let segs = self.expiry_candidates(c, window, from)?;
        let sql = format!(
            "SELECT {ROW_COLS} FROM records
             WHERE seg = ?1 AND timestamp < ?2 AND (?3 - timestamp) > ?4
               AND timestamp >= ?5 AND (timestamp, tx_id) > (?5, ?6)
             ORDER BY timestamp, tx_id LIMIT ?7"
        );
        let mut out: Vec<Row> = Vec::new();
        let mut rest = segs.as_slice();
        while let Some(&(bucket, _)) = rest.first() {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let n = rest.iter().take_while(|(b, _)| *b == bucket).count();
            let mut rows: Vec<Row> = Vec::new();
            for &(_, seg) in &rest[..n] {
                rows.extend(self.rows(
                    &sql,
                    params![to_i64(seg), c, now, ttl, ats, aid, to_i64(left as u64)],
                    "find expired rows",
                )?);
            }
            if n > 1 {
                rows.sort_by(Row::time_order);
                rows.truncate(left);
            }
            out.extend(rows);
            rest = &rest[n..];
        }
        Ok(out)
    }

    /// Up to `limit` rows of segment `seg` after `after`, in `(timestamp, tx_id)` order.
    pub(crate) fn rows_of_segment(
        &self,
        seg: u64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let (ats, aid) = after.unwrap_or((f64::NEG_INFINITY, ""));
        self.rows(
            &format!(
                "SELECT {ROW_COLS} FROM records
                 WHERE seg = ?1 AND timestamp >= ?2 AND (timestamp, tx_id) > (?2, ?3)
                 ORDER BY timestamp, tx_id LIMIT ?4"
            ),
            params![to_i64(seg), ats, aid, to_i64(limit as u64)],
            "read rows of a segment",
        )
    }

    pub(crate) fn segments(&self) -> Result<Vec<SegRow>> {
        let what = "read the segment table";
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {SEG_COLS} FROM segments ORDER BY id"))
            .map_err(|e| self.err(what, e))?;
        stmt.query_map([], seg_from)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(what, e))
    }

    pub(crate) fn config(&self, key: &str) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM seg_config WHERE key = ?1")
            .map_err(|e| self.err("read the index configuration", e))?;
        let v: Option<i64> = stmt
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(format!("read {key}"), e))?;
        Ok(to_u64(v.unwrap_or(0)))
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        self.conn
            .query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(size), 0), min(timestamp), max(timestamp)
                     FROM records WHERE {LIVE_SEG}"
                ),
                [],
                |r| {
                    Ok(Stats {
                        count: to_u64(r.get(0)?),
                        bytes: to_u64(r.get(1)?),
                        rows_without_size: 0,
                        oldest: r.get(2)?,
                        newest: r.get(3)?,
                    })
                },
            )
            .map_err(|e| self.err("compute stats", e))
    }

    /// The smallest and largest timestamp of the rows whose id is not in `skip`.
    pub(crate) fn time_range_without(
        &self,
        skip: &std::collections::HashSet<String>,
    ) -> Result<(Option<f64>, Option<f64>)> {
        let limit = to_i64(skip.len() as u64 + 1);
        let first = |order: &str| -> Result<Option<f64>> {
            let rows: Vec<(String, f64)> = self
                .conn
                .prepare_cached(&format!(
                    "SELECT tx_id, timestamp FROM records WHERE {LIVE_SEG}
                     ORDER BY timestamp {order}, tx_id LIMIT ?1"
                ))
                .and_then(|mut s| {
                    s.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| self.err("compute stats", e))?;
            Ok(rows
                .into_iter()
                .find(|(id, _)| !skip.contains(id))
                .map(|(_, ts)| ts))
        };
        Ok((first("ASC")?, first("DESC")?))
    }

    pub(crate) fn integrity_check(&self) -> Result<Vec<String>> {
        let what = "run SQLite's integrity check";
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.err(what, e))?;
        let msgs: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(what, e))?;
        Ok(msgs.into_iter().filter(|m| m != "ok").collect())
    }
}
