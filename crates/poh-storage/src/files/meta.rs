//! The metadata half of a store: the narrow [`MetaStore`] interface and its SQLite
//! implementation, including the in-place migration of prototype databases.
//! (Over 600 lines on purpose: the schema, the migration and every SQL statement stay in
//! one file, so the SQL the store runs can be reviewed in one place.)
//!
//! Schema (version 1):
//! ```sql
//! CREATE TABLE txs (tx_id TEXT PRIMARY KEY, storage_hash TEXT NOT NULL,
//!                   timestamp REAL NOT NULL,                 -- the prototype's three columns
//!                   holder_id TEXT NOT NULL DEFAULT '',      -- added by migration
//!                   size INTEGER);                           -- payload bytes; NULL for legacy rows
//! CREATE INDEX txs_timestamp ON txs(timestamp, tx_id);
//! PRAGMA user_version = 1;
//! ```
//! The added columns have defaults, so the prototype's
//! `INSERT OR REPLACE INTO txs (tx_id, storage_hash, timestamp)` keeps working.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::engine::{MetaRow, Stats};
use crate::error::{Result, StorageError};

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another to release the database before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The operations a metadata backend provides. Called from blocking threads only.
///
/// Every mutating call is one durable transaction: when it returns Ok the change
/// survives power loss; when it fails nothing of it is applied.
pub trait MetaStore: Send {
    /// Inserts or replaces all rows in one transaction.
    fn upsert(&mut self, rows: &[MetaRow]) -> Result<()>;
    /// The row of `tx_id`.
    fn get(&mut self, tx_id: &str) -> Result<Option<MetaRow>>;
    /// Deletes the row of `tx_id`; true if there was one.
    fn delete(&mut self, tx_id: &str) -> Result<bool>;
    /// Deletes the row of `tx_id` only if it still has `storage_hash` (used by recovery,
    /// so that a tx re-saved meanwhile is left alone); true if deleted.
    fn delete_if_hash(&mut self, tx_id: &str, storage_hash: &str) -> Result<bool>;
    /// Deletes up to `limit` rows with `now - timestamp > ttl`, oldest first, in one
    /// transaction, and returns their ids.
    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>>;
    /// Up to `limit` rows with `now - timestamp > ttl` ordered by `(timestamp, tx_id)`,
    /// strictly after `after`. Changes nothing.
    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>>;
    /// Those of `ids` that have no row (one query for the lot).
    fn without_row(&mut self, ids: &[&str]) -> Result<Vec<String>>;
    /// Up to `limit` rows with `tx_id > after`, in id order.
    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>>;
    /// Aggregate figures.
    fn stats(&mut self) -> Result<Stats>;
    /// The database's own consistency check: one message per problem, empty when sound.
    fn integrity_check(&mut self) -> Result<Vec<String>>;
}

/// What a metadata location holds, found without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaState {
    /// Nothing there.
    Missing,
    /// A database without the `txs` table: empty (a 0-byte file, a lost schema) or
    /// some other application's.
    NoSchema,
    /// A poh store's metadata (ours or the prototype's).
    Store,
}

/// Opens connections to one metadata database.
pub trait MetaBackend: Send + Sync + 'static {
    /// What the location holds, changing nothing.
    fn probe(&self) -> Result<MetaState>;
    /// A connection for the writer (creates and migrates the schema).
    fn open_writer(&self) -> Result<Box<dyn MetaStore>>;
    /// A connection for readers: never creates, migrates or writes anything, so it also
    /// works on a read-only mount, a full disk or a prototype database as found.
    fn open_reader(&self) -> Result<Box<dyn MetaStore>>;
    /// Where the database is, for messages.
    fn location(&self) -> &Path;
}

/// SQLite metadata: a database file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    path: PathBuf,
    create: bool,
    mode: u32,
}

impl SqliteBackend {
    /// A backend for the database at `path`; `create` allows creating the file (mode 0600).
    pub fn new(path: impl Into<PathBuf>, create: bool) -> Self {
        Self {
            path: path.into(),
            create,
            mode: 0o600,
        }
    }

    /// The same backend creating a missing database file with permission bits `mode`
    /// (SQLite gives its `-wal`, `-shm` and `-journal` files the database's mode).
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub(crate) fn connect(&self, create: bool) -> Result<Connection> {
        self.check_file(create)?;
        if create {
            self.create_file()?;
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(&self.path, flags).map_err(|e| self.err("open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err("set busy timeout", e))?;
        Ok(conn)
    }

    fn check_file(&self, create: bool) -> Result<()> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Err(self.err(
                "open",
                std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "the path is a directory, not a database file",
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                Err(StorageError::NotFound {
                    path: self.path.clone(),
                    why: "the metadata database does not exist".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Creates a missing database file, empty, with exactly the backend's mode (whatever
    /// the umask), before SQLite opens it: SQLite would create it 0644 less the umask, and
    /// gives its `-wal` and `-shm` files the mode of the database. An existing file (or
    /// the file an existing link points to) keeps its mode.
    fn create_file(&self) -> Result<()> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Ok(()),
        }
        // O_EXCL: this descriptor must be the file's only one in the process. Closing any
        // descriptor of a database drops every POSIX lock the process holds on it, SQLite's
        // included; a file this call creates has no SQLite connection yet. (A file created
        // meanwhile by someone else is theirs: SQLite opens it as it is.)
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(self.err("create", e)),
        };
        // Only a file this open created (empty) gets the mode; not one another process
        // created and filled meanwhile.
        if file.metadata().is_ok_and(|m| m.len() == 0) {
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| self.err("set the mode of", e))?;
        }
        Ok(())
    }

    /// A connection that only reads: read-write if the file allows it (so SQLite can
    /// use and clean up the WAL index as usual), else read-only, else — on a read-only
    /// mount with no WAL file, where nobody can be writing — as an immutable file.
    pub(crate) fn connect_reader(&self) -> Result<Connection> {
        self.check_file(false)?;
        let plain = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let mut attempts = vec![
            (
                self.path.to_string_lossy().into_owned(),
                plain | OpenFlags::SQLITE_OPEN_READ_WRITE,
            ),
            (
                self.path.to_string_lossy().into_owned(),
                plain | OpenFlags::SQLITE_OPEN_READ_ONLY,
            ),
        ];
        // A WAL without frames holds nothing the database file lacks (a failed attempt
        // above may itself have left an empty one on a full disk).
        if std::fs::metadata(wal_path(&self.path)).map_or(true, |m| m.len() == 0) {
            attempts.push((
                format!("file:{}?immutable=1", uri_path(&self.path)),
                plain | OpenFlags::SQLITE_OPEN_READ_ONLY,
            ));
        }
        let mut last = None;
        for (name, flags) in attempts {
            let attempt = Connection::open_with_flags(&name, flags).and_then(|c| {
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
                Ok(c)
            });
            match attempt {
                Ok(c) => return Ok(c),
                Err(e) if is_access_error(&e) => last = Some(e),
                Err(e) => return Err(self.err("open for reading", e)),
            }
        }
        Err(match last {
            Some(e) => self.err("open for reading", e),
            None => self.err(
                "open for reading",
                std::io::Error::other("no way to open it"),
            ),
        })
    }

    /// A metadata error, with the operating system's reason when SQLite's own message
    /// hides it ("unable to open database file" on a read-only mount or a file owned by
    /// another user), and no guess that the file is not a database unless SQLite says so.
    pub(crate) fn err(
        &self,
        what: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StorageError {
        meta_err(&self.path, what, e)
    }
}

/// `<db>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// `path` for an SQLite URI (`file:` + percent-encoded path).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' | b' ' | 0x80..=0xff | 0..=0x1f => {
                out.push_str(&format!("%{b:02X}"))
            }
            b => out.push(b as char),
        }
    }
    out
}

/// Errors that a reader can get around by opening the file another way.
fn is_access_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(C::CannotOpen | C::ReadOnly | C::PermissionDenied | C::DiskFull | C::SystemIoFailure)
    )
}

/// ` (<reason>)` when the operating system knows why SQLite failed where SQLite's own
/// message does not say: a dead device ("Input/output error", where SQLite may even say
/// "database disk image is malformed"), a read-only mount, a database file this process
/// may not write ("Permission denied"), or (almost) no space left — SQLite reports a full
/// disk met while growing its WAL index only as "disk I/O error". Empty otherwise.
///
/// It never opens the database file itself: closing any descriptor of a database drops
/// every POSIX lock the process holds on it, SQLite's included, which would let another
/// process checkpoint or reset a WAL this one is still writing. It looks at the directory
/// (opened read-only and fsynced, which
/// reaches a dead device) and asks `statvfs` and `access` instead.
fn os_reason(path: &Path) -> String {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(st) = rustix::fs::statvfs(dir) {
        if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
            return format!(
                " (Read-only file system: {} is mounted read-only)",
                dir.display()
            );
        }
        let free = st.f_bfree.saturating_mul(st.f_frsize);
        if free < LOW_SPACE {
            return format!(
                " (No space left on device: the file system of {} has {free} bytes free)",
                dir.display()
            );
        }
    }
    // A dead device: fsync of the directory reaches the device (a cached open would not).
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        return format!(" ({e})");
    }
    match rustix::fs::access(path, rustix::fs::Access::WRITE_OK) {
        Err(e) if e != rustix::io::Errno::NOENT => format!(" ({})", std::io::Error::from(e)),
        _ => String::new(),
    }
}

/// Free space below which an SQLite I/O error is reported as a full disk: SQLite needs a
/// few pages to grow its WAL index and journal.
const LOW_SPACE: u64 = 1 << 20;

impl MetaBackend for SqliteBackend {
    fn probe(&self) -> Result<MetaState> {
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MetaState::Missing),
            _ => {}
        }
        let conn = self.connect_reader()?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'txs'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err("read the schema", e))?;
        Ok(if tables > 0 {
            MetaState::Store
        } else {
            MetaState::NoSchema
        })
    }

    fn open_writer(&self) -> Result<Box<dyn MetaStore>> {
        let conn = self.connect(self.create)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.err("enable WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(self.err(
                "enable WAL",
                std::io::Error::other(format!("journal_mode stayed {mode}")),
            ));
        }
        // FULL: in WAL mode every commit syncs the WAL, so a committed row survives power
        // loss. NORMAL would only sync at checkpoints. See docs/design.md.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err("set synchronous=FULL", e))?;
        migrate(&conn, &self.path)?;
        Ok(Box::new(SqliteMeta {
            conn,
            path: self.path.clone(),
            cols: ROW_COLS,
        }))
    }

    fn open_reader(&self) -> Result<Box<dyn MetaStore>> {
        let conn = self.connect_reader()?;
        // A prototype database not yet migrated (a read-only handle never migrates) has
        // neither holder_id nor size: read them as '' and NULL.
        let has_holder: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('txs') WHERE name = 'holder_id'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )
            .map_err(|e| self.err("read columns of txs", e))?;
        Ok(Box::new(SqliteMeta {
            conn,
            path: self.path.clone(),
            cols: if has_holder {
                ROW_COLS
            } else {
                LEGACY_ROW_COLS
            },
        }))
    }

    fn location(&self) -> &Path {
        &self.path
    }
}

/// The database's `PRAGMA user_version`, refused as [`StorageError::SchemaTooNew`] when
/// it is newer than `supported` (a newer poh-store wrote it). Every engine's schema
/// check starts here.
pub(crate) fn schema_version(conn: &Connection, path: &Path, supported: i64) -> Result<i64> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| meta_err(path, "read schema version", e))?;
    if version > supported {
        return Err(StorageError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported,
        });
    }
    Ok(version)
}

/// Brings a database of any earlier version (including the prototype's, version 0) to
/// [`SCHEMA_VERSION`] in one transaction. Idempotent; a no-op when current.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let err = |what: &str, e: rusqlite::Error| meta_err(path, what, e);
    let version = schema_version(conn, path, SCHEMA_VERSION)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| err("begin migration", e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS txs (
            tx_id TEXT PRIMARY KEY,
            storage_hash TEXT NOT NULL,
            timestamp REAL NOT NULL)",
    )
    .map_err(|e| err("create table txs", e))?;
    let mut cols = Vec::new();
    {
        let mut stmt = tx
            .prepare("SELECT name FROM pragma_table_info('txs')")
            .map_err(|e| err("read columns of txs", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| err("read columns of txs", e))?;
        for c in rows {
            cols.push(c.map_err(|e| err("read columns of txs", e))?);
        }
    }
    for required in ["tx_id", "storage_hash", "timestamp"] {
        if !cols.iter().any(|c| c == required) {
            return Err(StorageError::Meta {
                what: "check table txs".into(),
                path: path.to_owned(),
                source: format!("table txs has no column {required}; this is not a poh store")
                    .into(),
            });
        }
    }
    if !cols.iter().any(|c| c == "holder_id") {
        tx.execute_batch("ALTER TABLE txs ADD COLUMN holder_id TEXT NOT NULL DEFAULT ''")
            .map_err(|e| err("add column holder_id", e))?;
    }
    if !cols.iter().any(|c| c == "size") {
        tx.execute_batch("ALTER TABLE txs ADD COLUMN size INTEGER")
            .map_err(|e| err("add column size", e))?;
    }
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS txs_timestamp ON txs(timestamp, tx_id);
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))
    .map_err(|e| err("create timestamp index", e))?;
    tx.commit().map_err(|e| err("commit migration", e))
}

/// A SQLite connection implementing [`MetaStore`].
pub struct SqliteMeta {
    conn: Connection,
    path: PathBuf,
    /// The selected columns: [`ROW_COLS`], or [`LEGACY_ROW_COLS`] for a prototype table.
    cols: &'static str,
}

const ROW_COLS: &str = "tx_id, holder_id, timestamp, storage_hash, size";
const LEGACY_ROW_COLS: &str = "tx_id, '' AS holder_id, timestamp, storage_hash, NULL AS size";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<MetaRow> {
    Ok(MetaRow {
        tx_id: r.get(0)?,
        holder_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        timestamp: r.get(2)?,
        storage_hash: r.get(3)?,
        size: r
            .get::<_, Option<i64>>(4)?
            .and_then(|s| u64::try_from(s).ok()),
    })
}

/// A metadata error about the database at `path`, with the operating system's reason
/// when it knows one SQLite's message hides ([`os_reason`]): on a dead device SQLite may
/// say "database disk image is malformed" where the kernel says "Input/output error".
pub(crate) fn meta_err(
    path: &Path,
    what: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StorageError {
    StorageError::Meta {
        what: format!("{}{}", what.into(), os_reason(path)),
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// Widens the index range by a hair so that float rounding in `now - ttl` can never
/// exclude a row; the exact predicate `now - timestamp > ttl` then decides.
pub(crate) fn cutoff(now: f64, ttl: f64) -> f64 {
    let c = now - ttl;
    c + c.abs() * 1e-12 + 1e-9
}

impl SqliteMeta {
    fn err(&self, what: &str, e: rusqlite::Error) -> StorageError {
        meta_err(&self.path, what, e)
    }

    fn query_rows(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        what: &str,
    ) -> Result<Vec<MetaRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| self.err(what, e))?;
        let rows = stmt
            .query_map(params, row_from)
            .map_err(|e| self.err(what, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(what, e))
    }
}

impl MetaStore for SqliteMeta {
    fn upsert(&mut self, rows: &[MetaRow]) -> Result<()> {
        let what = "insert rows";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| meta_err(&self.path, what, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO txs (tx_id, holder_id, timestamp, storage_hash, size)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| meta_err(&self.path, what, e))?;
            for r in rows {
                let size = r.size.and_then(|s| i64::try_from(s).ok());
                stmt.execute(params![
                    r.tx_id,
                    r.holder_id,
                    r.timestamp,
                    r.storage_hash,
                    size
                ])
                .map_err(|e| StorageError::Meta {
                    what: format!("insert row of tx {}", r.tx_id),
                    path: self.path.clone(),
                    source: Box::new(e),
                })?;
            }
        }
        tx.commit().map_err(|e| meta_err(&self.path, "commit", e))
    }

    fn get(&mut self, tx_id: &str) -> Result<Option<MetaRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {} FROM txs WHERE tx_id = ?1", self.cols))
            .map_err(|e| self.err("look up row", e))?;
        stmt.query_row([tx_id], row_from)
            .optional()
            .map_err(|e| self.err(&format!("look up tx {tx_id}"), e))
    }

    fn delete(&mut self, tx_id: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM txs WHERE tx_id = ?1")
            .and_then(|mut s| s.execute([tx_id]))
            .map_err(|e| self.err(&format!("delete tx {tx_id}"), e))?;
        Ok(n > 0)
    }

    fn delete_if_hash(&mut self, tx_id: &str, storage_hash: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM txs WHERE tx_id = ?1 AND storage_hash = ?2")
            .and_then(|mut s| s.execute([tx_id, storage_hash]))
            .map_err(|e| self.err(&format!("delete tx {tx_id}"), e))?;
        Ok(n > 0)
    }

    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| meta_err(&self.path, "begin expiry", e))?;
        let ids = {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM txs WHERE tx_id IN (
                        SELECT tx_id FROM txs
                        WHERE timestamp < ?1 AND (?2 - timestamp) > ?3
                        ORDER BY timestamp, tx_id LIMIT ?4)
                     RETURNING tx_id",
                )
                .map_err(|e| meta_err(&self.path, "prepare expiry", e))?;
            stmt.query_map(params![cutoff(now, ttl), now, ttl, limit], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(|e| meta_err(&self.path, "delete expired rows", e))?
        };
        tx.commit()
            .map_err(|e| meta_err(&self.path, "commit expiry", e))?;
        Ok(ids)
    }

    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (ats, aid) = after.unwrap_or((f64::NEG_INFINITY, ""));
        self.query_rows(
            &format!(
                "SELECT {} FROM txs
                 WHERE timestamp < ?1 AND (?2 - timestamp) > ?3 AND (timestamp, tx_id) > (?4, ?5)
                 ORDER BY timestamp, tx_id LIMIT ?6",
                self.cols
            ),
            params![cutoff(now, ttl), now, ttl, ats, aid, limit],
            "find expired rows",
        )
    }

    fn without_row(&mut self, ids: &[&str]) -> Result<Vec<String>> {
        let what = "look up payload ids";
        let list = serde_json::to_string(ids).map_err(|e| meta_err(&self.path, what, e))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT j.value FROM json_each(?1) AS j
                 WHERE NOT EXISTS (SELECT 1 FROM txs WHERE tx_id = j.value)",
            )
            .map_err(|e| self.err(what, e))?;
        stmt.query_map([list], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| meta_err(&self.path, what, e))
    }

    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match after {
            Some(a) => self.query_rows(
                &format!(
                    "SELECT {} FROM txs WHERE tx_id > ?1 ORDER BY tx_id LIMIT ?2",
                    self.cols
                ),
                params![a, limit],
                "list rows",
            ),
            None => self.query_rows(
                &format!("SELECT {} FROM txs ORDER BY tx_id LIMIT ?1", self.cols),
                params![limit],
                "list rows",
            ),
        }
    }

    fn integrity_check(&mut self) -> Result<Vec<String>> {
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

    fn stats(&mut self) -> Result<Stats> {
        let size = if self.cols == ROW_COLS {
            "size"
        } else {
            "NULL"
        };
        self.conn
            .query_row(
                &format!(
                    "SELECT count(*), coalesce(sum({size}), 0), count(*) - count({size}),
                        min(timestamp), max(timestamp) FROM txs"
                ),
                [],
                |r| {
                    Ok(Stats {
                        count: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                        bytes: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                        rows_without_size: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                        oldest: r.get(3)?,
                        newest: r.get(4)?,
                    })
                },
            )
            .map_err(|e| self.err("compute stats", e))
    }
}
