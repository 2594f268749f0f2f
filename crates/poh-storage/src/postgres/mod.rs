//! The PostgreSQL engine (`--db postgres://...`): txs — fields, payload (`bytea`) and
//! SHA-256 — in one table range-partitioned by timestamp window, shared by any number of
//! processes on any number of machines. See docs/design.md, section 8.
//!
//! - Every save, delete and expiry batch is one transaction; Ok means COMMIT returned
//!   (each session runs with `synchronous_commit = on`).
//! - Re-saves of one id are serialized by a transaction-scoped advisory lock on the id's
//!   hash (taken in sorted order, so two batches never deadlock on them), then the old row
//!   is deleted and the new one inserted: there is never more than one row per id and no
//!   lost update.
//! - Expiry drops (or detaches) every partition whose whole window is expired, and deletes
//!   the rows of the boundary partition in bounded batches; expiry passes and partition
//!   maintenance of all nodes are serialized by advisory locks.
//! - Loads verify SHA-256 end to end, whatever the database or network did.
//!
//! The engine owns a small tokio runtime and a connection pool (deadpool) that replaces
//! broken connections; operations that are safe to repeat (all of them: a save writes the
//! same row again) are retried with backoff when the connection is lost or the server
//! restarts.

mod schema;
mod tls;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use poh_types::{Tx, TxId};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, Row};

use crate::dburl::redact_url;
use crate::engine::{Engine, EngineReader, EngineWriter, MetaRow, Stats};
use crate::error::{Result, StorageError};
use crate::files::meta::cutoff;
use crate::files::sha256_hex;
use crate::layout::Layout;
use crate::options::OpenOptions;
use crate::poison::{Poison, lock};
use crate::report::{Finding, ProblemKind, RecoverReport};

/// Advisory-lock namespace (first key) of per-id locks: "POHI".
const NS_ID: i32 = 0x504F_4849;
/// Advisory-lock namespace of store-wide locks: "POHS".
const NS_STORE: i32 = 0x504F_4853;
/// Store-wide lock: partition DDL (create, drop, detach).
const KEY_DDL: i32 = 1;
/// Store-wide lock: one expiry batch at a time, across all nodes.
const KEY_TTL: i32 = 2;
/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 512;
/// Most pooled connections per handle.
const POOL_SIZE: usize = 16;
/// Attempts of an operation whose connection broke (first try included).
const ATTEMPTS: u32 = 6;
/// First pause before a retry; doubled each time (0.1 + 0.2 + ... = 3.1 s in all).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Windows created ahead of the current one, so saves of fresh txs find a partition.
const AHEAD: i64 = 2;
/// Most window partitions made; rows of further windows go to the default partition
/// (so txs with scattered timestamps cannot make thousands of tables).
const MAX_PARTITIONS: usize = 2000;

/// State shared by the engine and its halves.
struct Shared {
    /// Dropped with `shutdown_background` (a runtime may not be dropped inside another
    /// runtime's async context, where the last handle can go away).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The URL without its password, for messages.
    shown: String,
    /// Width of one partition's window, in seconds.
    window: i64,
    /// Buckets known to have a partition.
    buckets: Mutex<BTreeSet<i64>>,
    /// Buckets whose rows stay in the default partition (see [`PgWriter::ensure`]).
    unpartitioned: Mutex<BTreeSet<i64>>,
    /// Detach expired partitions (kept as `poh_expired_<bucket>`) instead of dropping them.
    detach: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What went wrong talking to the database.
#[derive(Debug)]
enum PgFail {
    Pg(tokio_postgres::Error),
    Pool(PoolError),
    Storage(StorageError),
}

impl From<tokio_postgres::Error> for PgFail {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFail::Pg(e)
    }
}

impl From<PoolError> for PgFail {
    fn from(e: PoolError) -> Self {
        PgFail::Pool(e)
    }
}

impl From<StorageError> for PgFail {
    fn from(e: StorageError) -> Self {
        PgFail::Storage(e)
    }
}

type PgResult<T> = std::result::Result<T, PgFail>;

/// The SQLSTATE of a failure, if the server sent one.
fn code(f: &PgFail) -> Option<&SqlState> {
    match f {
        PgFail::Pg(e) => e.code(),
        PgFail::Pool(PoolError::Backend(e)) => e.code(),
        _ => None,
    }
}

/// True for failures after which the same operation may simply be tried again: the
/// connection was lost or refused, the server is starting or shutting down, or the
/// transaction lost a deadlock or serialization race (and was rolled back).
fn retryable(f: &PgFail) -> bool {
    if let Some(c) = code(f) {
        return [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_DOES_NOT_EXIST,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
        ]
        .contains(c);
    }
    match f {
        PgFail::Pg(e) => e.is_closed() || io_cause(e),
        PgFail::Pool(PoolError::Backend(e)) => e.is_closed() || io_cause(e),
        PgFail::Pool(PoolError::Timeout(_)) => true,
        _ => false,
    }
}

/// True when the error came from the socket (refused, reset, closed).
fn io_cause(e: &tokio_postgres::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.is::<std::io::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}

impl Shared {
    fn err(&self, what: impl Into<String>, f: PgFail) -> StorageError {
        let what = what.into();
        match f {
            PgFail::Storage(e) => e,
            PgFail::Pg(e) => self.pg_err(what, e),
            PgFail::Pool(PoolError::Backend(e)) => self.pg_err(what, e),
            PgFail::Pool(e) => StorageError::Meta {
                what,
                path: PathBuf::from(&self.shown),
                source: e.to_string().into(),
            },
        }
    }

    fn pg_err(&self, what: String, e: tokio_postgres::Error) -> StorageError {
        if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
            return StorageError::NotFound {
                path: PathBuf::from(&self.shown),
                why: format!("{what}: the store's tables are gone ({})", db_message(&e)),
            };
        }
        StorageError::Meta {
            what,
            path: PathBuf::from(&self.shown),
            source: db_message(&e).into(),
        }
    }

    /// Runs `f` on our runtime from a blocking thread.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable_runtime(),
        }
    }

    /// Runs `op` with a pooled connection, retrying with backoff while the failure is one
    /// after which the same operation is safe to repeat (see [`retryable`]).
    fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Object) -> Fut,
        Fut: Future<Output = PgResult<T>>,
    {
        self.block_on(async {
            let mut pause = FIRST_BACKOFF;
            let mut attempt = 1;
            loop {
                let res = match self.pool.get().await {
                    Ok(client) => op(client).await,
                    Err(e) => Err(PgFail::Pool(e)),
                };
                match res {
                    Ok(v) => return Ok(v),
                    Err(f) if attempt < ATTEMPTS && retryable(&f) => {
                        tracing::warn!(
                            store = %self.shown,
                            attempt,
                            error = %self.err(what, f),
                            "database operation failed; retrying"
                        );
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                        attempt += 1;
                    }
                    Err(f) => return Err(self.err(what, f)),
                }
            }
        })
    }
}

#[allow(clippy::panic)]
fn unreachable_runtime() -> ! {
    // The runtime is only taken out in Drop.
    panic!("PostgreSQL engine used after its runtime was shut down")
}

/// The server's own message (and detail) rather than tokio-postgres's "db error".
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// An opened PostgreSQL store.
pub(crate) struct PgEngine {
    shared: Arc<Shared>,
    base: PathBuf,
}

impl PgEngine {
    /// Connects to the database `url` names, checks (or, when `opts.create` allows,
    /// creates) the store's tables there. `base` is only reported back, never touched.
    pub(crate) fn open(url: &str, base: PathBuf, opts: &OpenOptions) -> Result<Self> {
        let shown = redact_url(url);
        let bad = |why: String| StorageError::BadUrl {
            url: shown.clone(),
            why,
        };
        let (url, tls_opts) = tls::split_url(url).map_err(&bad)?;
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
        if !tls_opts.mode_given {
            // TLS only when the URL asks for it (`sslmode=require`); then the server's
            // certificate is always verified.
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let connector = tls::connector(&tls_opts).map_err(&bad)?;
        if cfg.get_dbname().is_none() {
            return Err(bad(
                "it names no database (postgres://user@host/dbname)".into()
            ));
        }
        if cfg.get_password().is_none()
            && let Some(pw) = std::env::var_os("PGPASSWORD")
        {
            cfg.password(pw.as_encoded_bytes());
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("poh-store");
        }
        // Durability is a promise of every save: commits wait for the WAL flush whatever
        // the server's or the role's default. A read-only handle cannot write at all.
        let mut session = cfg.get_options().unwrap_or("").to_owned();
        session.push_str(if opts.read_only {
            " -c default_transaction_read_only=on"
        } else {
            " -c synchronous_commit=on"
        });
        cfg.options(session.trim());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("poh-pg")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io("start the database runtime", &base, e))?;
        let mgr = Manager::from_config(
            cfg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(opts.lock_timeout.max(Duration::from_secs(1))))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let window = match opts.segment_window {
            Some(w) if w.as_secs() == 0 || w.subsec_nanos() != 0 => {
                return Err(StorageError::BadPath {
                    path: PathBuf::from(&shown),
                    why: format!(
                        "a partition window must be a whole number of seconds, at least 1 (got {w:?})"
                    ),
                });
            }
            Some(w) => i64::try_from(w.as_secs()).unwrap_or(i64::MAX),
            None => i64::try_from(crate::layout::DEFAULT_SEGMENT_WINDOW.as_secs()).unwrap_or(3600),
        };
        let mut shared = Shared {
            rt: Some(rt),
            pool,
            shown: shown.clone(),
            window,
            buckets: Mutex::new(BTreeSet::new()),
            unpartitioned: Mutex::new(BTreeSet::new()),
            detach: opts.detach_expired,
        };
        let found = schema::open(&shared, opts, window)?;
        shared.window = found.window;
        *lock(&shared.buckets) = found.buckets;
        Ok(Self {
            shared: Arc::new(shared),
            base,
        })
    }
}

impl Engine for PgEngine {
    fn base(&self) -> &Path {
        &self.base
    }

    fn location(&self) -> String {
        self.shared.shown.clone()
    }

    fn layout(&self) -> Layout {
        Layout::Postgres
    }

    fn writer(&self, _poison: Poison, _repair: bool) -> Result<Box<dyn EngineWriter>> {
        let w = PgWriter {
            shared: self.shared.clone(),
        };
        w.ensure_ahead(now_secs())?;
        Ok(Box::new(w))
    }

    fn reader(&self) -> Result<Box<dyn EngineReader>> {
        Ok(Box::new(PgReader {
            shared: self.shared.clone(),
        }))
    }

    fn recover(&self, dry_run: bool) -> Result<RecoverReport> {
        verify(&self.shared, dry_run)
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The window a timestamp falls in.
fn bucket(ts: f64, window: i64) -> i64 {
    // Timestamps are validated to [0, 1e11]: the cast cannot saturate.
    (ts / window as f64).floor() as i64
}

/// The partition holding window `b`.
fn part_name(b: i64) -> String {
    if b < 0 {
        format!("poh_txs_n{}", b.unsigned_abs())
    } else {
        format!("poh_txs_p{b}")
    }
}

/// The window of one of our partitions, from its name.
fn part_bucket(name: &str) -> Option<i64> {
    if let Some(n) = name.strip_prefix("poh_txs_p") {
        n.parse().ok()
    } else {
        name.strip_prefix("poh_txs_n")?
            .parse::<i64>()
            .ok()
            .map(|n| -n)
    }
}

/// Advisory-lock key of an id: 32 bits of its SHA-256.
fn id_key(id: &str) -> i32 {
    let h = crate::segments::record::sha256(id.as_bytes());
    i32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// Sorted, deduplicated lock keys of `ids` (sorted so no two transactions wait on each
/// other's keys in opposite orders).
fn id_keys<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<i32> {
    let set: BTreeSet<i32> = ids.into_iter().map(id_key).collect();
    set.into_iter().collect()
}

const LOCK_IDS: &str = "SELECT pg_advisory_xact_lock($1::int4, k) FROM unnest($2::int4[]) AS k";
const LOCK_STORE: &str = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";
const ROW_COLS: &str = "tx_id, holder_id, timestamp, storage_hash, size";

fn meta_row(r: &Row) -> PgResult<MetaRow> {
    Ok(MetaRow {
        tx_id: r.try_get(0)?,
        holder_id: r.try_get(1)?,
        timestamp: r.try_get(2)?,
        storage_hash: r.try_get(3)?,
        size: r
            .try_get::<_, i64>(4)
            .ok()
            .and_then(|s| u64::try_from(s).ok()),
    })
}

/// The tables of dropped windows whose drop is still to be finished (`poh_trash_*`, and
/// `poh_detached_*` until renamed `poh_expired_*`).
async fn parked_tables(c: &impl deadpool_postgres::GenericClient) -> PgResult<Vec<String>> {
    c.query(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
           AND (c.relname LIKE 'poh\\_trash\\_%' OR c.relname LIKE 'poh\\_detached\\_%')",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get::<_, String>(0)?))
    .collect()
}

/// The writing half.
struct PgWriter {
    shared: Arc<Shared>,
}

impl PgWriter {
    /// Makes sure a partition exists for each of `buckets`, as far as one can be made
    /// (under the DDL lock, so two nodes never race on one). A window is left to the
    /// default partition when that partition already holds rows of it (late or
    /// early txs that arrived before any node made the window) or when the store has
    /// [`MAX_PARTITIONS`] windows: its rows are stored all the same and expire by row
    /// deletes instead of a drop.
    fn ensure(&self, buckets: &BTreeSet<i64>) -> Result<()> {
        let missing: Vec<i64> = {
            let known = lock(&self.shared.buckets);
            let skip = lock(&self.shared.unpartitioned);
            let room = MAX_PARTITIONS.saturating_sub(known.len());
            buckets
                .iter()
                .filter(|b| !known.contains(b) && !skip.contains(b))
                .take(room)
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let w = self.shared.window;
        let (created, refused) = self.shared.run("create partitions", |mut c| {
            let missing = missing.clone();
            async move {
                let mut t = c.transaction().await?;
                t.execute(LOCK_STORE, &[&NS_STORE, &KEY_DDL]).await?;
                let (mut created, mut refused) = (Vec::new(), Vec::new());
                for b in missing {
                    let lo = b.saturating_mul(w);
                    let hi = b.saturating_add(1).saturating_mul(w);
                    let name = part_name(b);
                    let exists: bool = t
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                        .await?
                        .try_get(0)?;
                    if exists {
                        created.push(b);
                        continue;
                    }
                    // Entries of the window already (rows in the default partition, or
                    // entries of a dropped window not cleaned up yet): no partition.
                    let (flo, fhi) = (lo as f64, hi as f64);
                    let taken: bool = t
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM poh_ids
                                            WHERE timestamp >= $1 AND timestamp < $2)",
                            &[&flo, &fhi],
                        )
                        .await?
                        .try_get(0)?;
                    if taken {
                        refused.push(b);
                        continue;
                    }
                    let sp = t.savepoint("poh_window").await?;
                    let made = sp
                        .batch_execute(&format!(
                            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF poh_txs \
                             FOR VALUES FROM ({lo}) TO ({hi})"
                        ))
                        .await;
                    match made {
                        Ok(()) => {
                            sp.commit().await?;
                            created.push(b);
                        }
                        // The default partition holds rows of this window.
                        Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                            sp.rollback().await?;
                            refused.push(b);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                t.commit().await?;
                Ok((created, refused))
            }
        })?;
        lock(&self.shared.buckets).extend(created);
        lock(&self.shared.unpartitioned).extend(refused);
        Ok(())
    }

    /// Partitions for the current window and the next few.
    fn ensure_ahead(&self, now: f64) -> Result<()> {
        let b = bucket(
            now.clamp(0.0, poh_types::MAX_TIMESTAMP_SECS),
            self.shared.window,
        );
        self.ensure(&(b..=b + AHEAD).collect())
    }

    fn save_all(&self, txs: &[&Tx]) -> Result<()> {
        let buckets: BTreeSet<i64> = txs
            .iter()
            .map(|t| bucket(t.timestamp, self.shared.window))
            .collect();
        self.ensure(&buckets)?;
        let keys = id_keys(txs.iter().map(|t| t.tx_id.as_str()));
        let ids: Vec<&str> = txs.iter().map(|t| t.tx_id.as_str()).collect();
        let holders: Vec<&str> = txs.iter().map(|t| t.holder_id.as_str()).collect();
        let stamps: Vec<f64> = txs.iter().map(|t| t.timestamp).collect();
        let hashes: Vec<String> = txs.iter().map(|t| sha256_hex(&t.payload)).collect();
        let sizes: Vec<i64> = txs
            .iter()
            .map(|t| i64::try_from(t.payload.len()).unwrap_or(i64::MAX))
            .collect();
        let payloads: Vec<&[u8]> = txs.iter().map(|t| t.payload.as_slice()).collect();
        // A row whose window has no partition (never made, or dropped by another node
        // since) lands in the default partition: a save never fails for want of one.
        self.shared.run("save txs", |mut c| {
            let (keys, ids, holders, stamps, hashes, sizes, payloads) =
                (&keys, &ids, &holders, &stamps, &hashes, &sizes, &payloads);
            async move {
                let t = c.transaction().await?;
                t.execute(LOCK_IDS, &[&NS_ID, keys]).await?;
                // The directory says where the old versions are: only their windows are
                // searched, and a batch of new ids searches none.
                let find = t
                    .prepare_cached(
                        "SELECT tx_id, timestamp FROM poh_ids WHERE tx_id = ANY($1::text[])",
                    )
                    .await?;
                let old = t.query(&find, &[ids]).await?;
                if !old.is_empty() {
                    let old_ids: Vec<String> =
                        old.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
                    let old_ts: Vec<f64> =
                        old.iter().map(|r| r.try_get(1)).collect::<Result<_, _>>()?;
                    let del = t
                        .prepare_cached(
                            "DELETE FROM poh_txs WHERE tx_id = ANY($1::text[])
                               AND timestamp = ANY($2::float8[])",
                        )
                        .await?;
                    t.execute(&del, &[&old_ids, &old_ts]).await?;
                }
                let ins = t
                    .prepare_cached(
                        "INSERT INTO poh_txs (tx_id, holder_id, timestamp, storage_hash, size, payload)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::int8[], $6::bytea[])",
                    )
                    .await?;
                t.execute(&ins, &[ids, holders, stamps, hashes, sizes, payloads])
                    .await?;
                // The directory last: a transaction that has written it has written
                // poh_txs, so a partition drop (which locks poh_txs first) never reads
                // the directory between the two.
                let dir = t
                    .prepare_cached(
                        "INSERT INTO poh_ids (tx_id, timestamp)
                         SELECT * FROM unnest($1::text[], $2::float8[])
                         ON CONFLICT (tx_id) DO UPDATE SET timestamp = EXCLUDED.timestamp",
                    )
                    .await?;
                t.execute(&dir, &[ids, stamps]).await?;
                t.commit().await?;
                Ok(())
            }
        })
    }

    /// Finishes the drops of earlier passes: for each parked table (`poh_trash_*`,
    /// `poh_detached_*`), removes the directory entries that point at one of its rows and
    /// at no row of the store, then drops it (or renames it `poh_expired_*`, for the
    /// operator), in one transaction under the DDL lock. Repeating it after a crash is
    /// harmless.
    fn finish_drops(&self) -> Result<()> {
        let w = self.shared.window;
        let parked: Vec<String> = self.shared.run("list dropped partitions", |c| async move {
            parked_tables(&c).await
        })?;
        for name in parked {
            let (keep, suffix) = match name.strip_prefix("poh_trash_") {
                Some(s) => (false, s.to_owned()),
                None => (true, name["poh_detached_".len()..].to_owned()),
            };
            let Some(b) = part_bucket(&format!("poh_txs_{suffix}")) else {
                continue;
            };
            let lo = b.saturating_mul(w) as f64;
            let hi = b.saturating_add(1).saturating_mul(w) as f64;
            self.shared
                .run(&format!("finish the drop of {name}"), |mut c| {
                    let (name, suffix) = (&name, &suffix);
                    async move {
                        // Repeatable read: an entry a save re-points into this window while
                        // this runs (its row written, invisible to this statement's
                        // snapshot) fails the transaction with a serialization error, which
                        // is retried, instead of being deleted. Under read committed the
                        // DELETE re-checked only the entry's new version against the old
                        // snapshot's NOT EXISTS and took it: the re-saved tx became
                        // invisible to loads.
                        let t = c
                            .build_transaction()
                            .isolation_level(IsolationLevel::RepeatableRead)
                            .start()
                            .await?;
                        t.execute(LOCK_STORE, &[&NS_STORE, &KEY_DDL]).await?;
                        // Another node may have finished it first.
                        let there: bool = t
                            .query_one("SELECT to_regclass($1) IS NOT NULL", &[name])
                            .await?
                            .try_get(0)?;
                        if !there {
                            t.commit().await?;
                            return Ok(());
                        }
                        // Only entries proven to be garbage: each points at a row of the
                        // parked table (the version the drop took away) and at no row of
                        // the store.
                        t.execute(
                            &format!(
                                "DELETE FROM poh_ids d USING {name} p
                                 WHERE p.tx_id = d.tx_id AND p.timestamp = d.timestamp
                                   AND d.timestamp >= $1 AND d.timestamp < $2
                                   AND NOT EXISTS (SELECT 1 FROM poh_txs t
                                                   WHERE t.tx_id = d.tx_id AND t.timestamp = d.timestamp)"
                            ),
                            &[&lo, &hi],
                        )
                        .await?;
                        let last = if keep {
                            format!("ALTER TABLE IF EXISTS {name} RENAME TO poh_expired_{suffix}")
                        } else {
                            format!("DROP TABLE IF EXISTS {name}")
                        };
                        t.batch_execute(&last).await?;
                        t.commit().await?;
                        Ok(())
                    }
                })?;
        }
        Ok(())
    }

    /// Drops (or detaches) wholly expired partitions until `limit` ids are reached (at
    /// least one partition, whatever its size: dropping it costs the same), returning
    /// the ids they held.
    fn drop_expired_windows(&self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        let w = self.shared.window;
        // Every row of window b has timestamp < (b+1)*w. The window is wholly expired
        // when that bound is at least a second past `now - ttl`: then `now - ts > ttl`
        // holds for each row whatever the float rounding.
        let expired: Vec<i64> = lock(&self.shared.buckets)
            .iter()
            .copied()
            .filter(|b| (b.saturating_add(1).saturating_mul(w) as f64) + 1.0 <= now - ttl)
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let detach = self.shared.detach;
        let (ids, gone) = self.shared.run("drop expired partitions", |mut c| {
            let expired = expired.clone();
            async move {
                let t = c.transaction().await?;
                t.execute(LOCK_STORE, &[&NS_STORE, &KEY_DDL]).await?;
                t.execute(LOCK_STORE, &[&NS_STORE, &KEY_TTL]).await?;
                // The lock the drop needs anyway, taken first: every transaction that
                // wrote poh_txs (and then the directory) has committed or rolled back,
                // and no other can write either until this one ends, so the directory's
                // entries of a window are exactly the rows the drop removes.
                t.batch_execute("LOCK TABLE poh_txs IN ACCESS EXCLUSIVE MODE")
                    .await?;
                let attached: BTreeSet<String> = t
                    .query(
                        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                         WHERE i.inhparent = 'poh_txs'::regclass",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<std::result::Result<_, _>>()?;
                let mut ids: Vec<String> = Vec::new();
                let mut gone = Vec::new();
                for b in expired {
                    if !ids.is_empty() && ids.len() >= limit {
                        break;
                    }
                    let name = part_name(b);
                    gone.push(b);
                    if !attached.contains(&name) {
                        continue;
                    }
                    // While a window has its partition, the default partition holds no row
                    // of it (see `ensure`): the directory's entries of the window are exactly
                    // the partition's rows, read (and removed) from a narrow table.
                    let lo = b.saturating_mul(w) as f64;
                    let hi = b.saturating_add(1).saturating_mul(w) as f64;
                    for r in t
                        .query(
                            "SELECT tx_id FROM poh_ids WHERE timestamp >= $1 AND timestamp < $2",
                            &[&lo, &hi],
                        )
                        .await?
                    {
                        ids.push(r.try_get(0)?);
                    }
                    // Out of the store at once (a catalog change); the table itself and
                    // the directory entries go in the next pass (`finish_drops`), without
                    // holding up saves and loads.
                    let parked = if detach { "poh_detached_" } else { "poh_trash_" };
                    t.batch_execute(&format!(
                        "ALTER TABLE poh_txs DETACH PARTITION {name};
                         ALTER TABLE {name} RENAME TO {parked}{}",
                        &name["poh_txs_".len()..]
                    ))
                    .await?;
                }
                t.commit().await?;
                Ok((ids, gone))
            }
        })?;
        let mut known = lock(&self.shared.buckets);
        for b in gone {
            known.remove(&b);
        }
        lock(&self.shared.unpartitioned).clear();
        Ok(ids)
    }
}

impl EngineWriter for PgWriter {
    fn save_group(&mut self, group: &[&[Tx]]) -> Vec<Result<()>> {
        // One transaction for the whole group; the last save of an id wins, as if the
        // requests had committed one after another.
        let mut last: HashMap<&str, usize> = HashMap::new();
        let all: Vec<&Tx> = group.iter().flat_map(|r| r.iter()).collect();
        for (i, t) in all.iter().enumerate() {
            last.insert(t.tx_id.as_str(), i);
        }
        let txs: Vec<&Tx> = all
            .iter()
            .enumerate()
            .filter(|(i, t)| last.get(t.tx_id.as_str()) == Some(i))
            .map(|(_, t)| *t)
            .collect();
        match self.save_all(&txs) {
            Ok(()) => group.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let msg = crate::error::error_chain(&e);
                let shown = self.shared.shown.clone();
                group
                    .iter()
                    .map(|r| {
                        Err(StorageError::Meta {
                            what: format!(
                                "save of {} tx(s) (first {}) was not committed",
                                r.len(),
                                r.first().map_or("", |t| t.tx_id.as_str())
                            ),
                            path: PathBuf::from(&shown),
                            source: msg.clone().into(),
                        })
                    })
                    .collect()
            }
        }
    }

    fn delete(&mut self, id: &TxId) -> Result<bool> {
        let keys = id_keys([id.as_str()]);
        self.shared.run(&format!("delete tx {id}"), |mut c| {
            let keys = &keys;
            async move {
                let t = c.transaction().await?;
                t.execute(LOCK_IDS, &[&NS_ID, keys]).await?;
                // The row first, then its directory entry (the order saves use).
                let at = t
                    .query_opt(
                        "SELECT timestamp FROM poh_ids WHERE tx_id = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                let n = match at {
                    Some(r) => {
                        let ts: f64 = r.try_get(0)?;
                        t.execute(
                            "DELETE FROM poh_txs WHERE tx_id = $1 AND timestamp = $2",
                            &[&id.as_str(), &ts],
                        )
                        .await?
                    }
                    None => 0,
                };
                t.execute("DELETE FROM poh_ids WHERE tx_id = $1", &[&id.as_str()])
                    .await?;
                t.commit().await?;
                Ok(n > 0)
            }
        })
    }

    fn delete_expired(&mut self, now: f64, ttl: f64, limit: usize) -> Result<Vec<String>> {
        self.finish_drops()?;
        // The partitions other nodes made (or dropped) since this handle looked: a window
        // another node made is dropped whole here too, not expired row by row.
        *lock(&self.shared.buckets) = schema::buckets(&self.shared)?;
        self.ensure_ahead(now)?;
        let mut ids = self.drop_expired_windows(now, ttl, limit)?;
        if ids.len() >= limit {
            return Ok(ids);
        }
        let n = i64::try_from(limit - ids.len()).unwrap_or(i64::MAX);
        let cut = cutoff(now, ttl);
        let rows = self.shared.run("delete expired txs", |mut c| async move {
            let t = c.transaction().await?;
            t.execute(LOCK_STORE, &[&NS_STORE, &KEY_TTL]).await?;
            let found: Vec<String> = t
                .query(
                    "SELECT tx_id FROM poh_txs WHERE timestamp < $1 AND ($2 - timestamp) > $3
                     ORDER BY timestamp, tx_id LIMIT $4",
                    &[&cut, &now, &ttl, &n],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            if found.is_empty() {
                t.commit().await?;
                return Ok(Vec::new());
            }
            let keys = id_keys(found.iter().map(String::as_str));
            t.execute(LOCK_IDS, &[&NS_ID, &keys]).await?;
            // The condition is checked again under the locks: a tx re-saved meanwhile
            // with a fresh timestamp stays.
            let gone: Vec<(f64, String)> = t
                .query(
                    "DELETE FROM poh_txs WHERE tx_id = ANY($1::text[])
                       AND timestamp < $2 AND ($3 - timestamp) > $4
                     RETURNING timestamp, tx_id",
                    &[&found, &cut, &now, &ttl],
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
            let gone_ts: Vec<f64> = gone.iter().map(|g| g.0).collect();
            let gone_ids: Vec<&str> = gone.iter().map(|g| g.1.as_str()).collect();
            t.execute(
                "DELETE FROM poh_ids d USING unnest($1::text[], $2::float8[]) AS u(id, ts)
                     WHERE d.tx_id = u.id AND d.timestamp = u.ts",
                &[&gone_ids, &gone_ts],
            )
            .await?;
            t.commit().await?;
            Ok(gone)
        })?;
        let mut rows = rows;
        rows.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        ids.extend(rows.into_iter().map(|(_, id)| id));
        Ok(ids)
    }
}

/// The reading half.
struct PgReader {
    shared: Arc<Shared>,
}

impl PgReader {
    fn rows(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<MetaRow>> {
        self.shared.run(what, |c| async move {
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, params).await?.iter().map(meta_row).collect()
        })
    }
}

impl PgReader {
    /// The tx, once its payload matches the SHA-256 recorded beside it.
    fn checked(
        &self,
        id: &TxId,
        holder_id: String,
        timestamp: f64,
        want: &str,
        payload: Vec<u8>,
    ) -> Result<Tx> {
        let have = sha256_hex(&payload);
        if have != want {
            return Err(StorageError::Integrity {
                tx_id: id.to_string(),
                detail: format!(
                    "payload SHA-256 {have} does not match the recorded {want} (database {})",
                    self.shared.shown
                ),
            });
        }
        Ok(Tx {
            tx_id: id.clone(),
            holder_id,
            timestamp,
            payload,
        })
    }
}

impl EngineReader for PgReader {
    /// Declines: a database lookup is a network round trip, which a caller that must
    /// not wait cannot afford; it then loads through [`EngineReader::load`].
    fn load_small(&mut self, _id: &TxId, _max_bytes: u64) -> Option<Option<Tx>> {
        None
    }

    fn load(&mut self, id: &TxId) -> Result<Option<Tx>> {
        let got = self.shared.run(&format!("load tx {id}"), |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT holder_id, timestamp, storage_hash, payload FROM poh_txs
                     WHERE tx_id = $1
                       AND timestamp = (SELECT timestamp FROM poh_ids WHERE tx_id = $1)",
                )
                .await?;
            let rows = c.query(&stmt, &[&id.as_str()]).await?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            Ok(Some((
                r.try_get::<_, String>(0)?,
                r.try_get::<_, f64>(1)?,
                r.try_get::<_, String>(2)?,
                r.try_get::<_, Vec<u8>>(3)?,
            )))
        })?;
        let Some((holder_id, timestamp, want, payload)) = got else {
            return Ok(None);
        };
        self.checked(id, holder_id, timestamp, &want, payload)
            .map(Some)
    }

    fn load_many(&mut self, ids: &[TxId]) -> Vec<Result<Option<Tx>>> {
        let wanted: Vec<&str> = ids.iter().map(TxId::as_str).collect();
        let got = self.shared.run("load txs", |c| {
            let wanted = &wanted;
            async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT t.tx_id, t.holder_id, t.timestamp, t.storage_hash, t.payload
                         FROM poh_ids d JOIN poh_txs t
                           ON t.tx_id = d.tx_id AND t.timestamp = d.timestamp
                         WHERE d.tx_id = ANY($1::text[])",
                    )
                    .await?;
                let mut found = HashMap::new();
                for r in c.query(&stmt, &[wanted]).await? {
                    found.insert(
                        r.try_get::<_, String>(0)?,
                        (
                            r.try_get::<_, String>(1)?,
                            r.try_get::<_, f64>(2)?,
                            r.try_get::<_, String>(3)?,
                            r.try_get::<_, Vec<u8>>(4)?,
                        ),
                    );
                }
                Ok(found)
            }
        });
        let mut found = match got {
            Ok(f) => f,
            Err(e) => {
                let msg = crate::error::error_chain(&e);
                return ids
                    .iter()
                    .map(|id| {
                        Err(StorageError::Meta {
                            what: format!("load tx {id}"),
                            path: PathBuf::from(&self.shared.shown),
                            source: msg.clone().into(),
                        })
                    })
                    .collect();
            }
        };
        ids.iter()
            .map(|id| match found.remove(id.as_str()) {
                None => Ok(None),
                Some((holder_id, timestamp, want, payload)) => self
                    .checked(id, holder_id, timestamp, &want, payload)
                    .map(Some),
            })
            .collect()
    }

    fn row(&mut self, tx_id: &str) -> Result<Option<MetaRow>> {
        Ok(self
            .rows(
                "look up a tx",
                &format!(
                    "SELECT {ROW_COLS} FROM poh_txs WHERE tx_id = $1
                       AND timestamp = (SELECT timestamp FROM poh_ids WHERE tx_id = $1)"
                ),
                &[&tx_id],
            )?
            .into_iter()
            .next())
    }

    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>> {
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        match after {
            Some(a) => self.rows(
                "list txs",
                &format!("SELECT {ROW_COLS} FROM poh_txs WHERE tx_id > $1 ORDER BY tx_id LIMIT $2"),
                &[&a, &n],
            ),
            None => self.rows(
                "list txs",
                &format!("SELECT {ROW_COLS} FROM poh_txs ORDER BY tx_id LIMIT $1"),
                &[&n],
            ),
        }
    }

    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>> {
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        let (ats, aid) = after.unwrap_or((f64::NEG_INFINITY, ""));
        let cut = cutoff(now, ttl);
        self.rows(
            "find expired txs",
            &format!(
                "SELECT {ROW_COLS} FROM poh_txs
                 WHERE timestamp < $1 AND ($2 - timestamp) > $3 AND (timestamp, tx_id) > ($4, $5)
                 ORDER BY timestamp, tx_id LIMIT $6"
            ),
            &[&cut, &now, &ttl, &ats, &aid, &n],
        )
    }

    fn stats(&mut self) -> Result<Stats> {
        self.shared.run("stats", |c| async move {
            let r = c
                .query_one(
                    "SELECT count(*), coalesce(sum(size), 0)::int8, min(timestamp), max(timestamp)
                     FROM poh_txs",
                    &[],
                )
                .await?;
            Ok(Stats {
                count: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
                bytes: u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
                rows_without_size: 0,
                oldest: r.try_get(2)?,
                newest: r.try_get(3)?,
            })
        })
    }
}

/// Reads every row, checks its payload against its SHA-256 and size, and (unless
/// `dry_run`) moves each one that fails into `poh_quarantine` — never deleting the last
/// copy. Also reports server settings that break the durability promise.
fn verify(shared: &Shared, dry_run: bool) -> Result<RecoverReport> {
    let mut report = RecoverReport {
        dry_run,
        ..RecoverReport::default()
    };
    let settings = shared.run("read server settings", |c| async move {
        let r = c
            .query_one(
                "SELECT current_setting('fsync'), current_setting('full_page_writes')",
                &[],
            )
            .await?;
        Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?))
    })?;
    for (name, value) in [("fsync", &settings.0), ("full_page_writes", &settings.1)] {
        if value != "on" {
            report.findings.push(Finding {
                tx_id: String::new(),
                kind: ProblemKind::Database,
                detail: format!(
                    "the server runs with {name} = {value}: acknowledged saves can be lost or torn at a power loss"
                ),
                action: "none (a server setting; set it to on)".into(),
            });
        }
    }
    let mut after = String::new();
    loop {
        let page = shared.run("read txs to verify", |c| {
            let after = after.clone();
            async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT tx_id, storage_hash, size, payload, tableoid::regclass::text
                         FROM poh_txs WHERE tx_id > $1 ORDER BY tx_id LIMIT $2",
                    )
                    .await?;
                c.query(&stmt, &[&after, &VERIFY_PAGE])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<_, String>(0)?,
                            r.try_get::<_, String>(1)?,
                            r.try_get::<_, i64>(2)?,
                            r.try_get::<_, Vec<u8>>(3)?,
                            r.try_get::<_, String>(4)?,
                        ))
                    })
                    .collect::<PgResult<Vec<_>>>()
            }
        })?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        let mut prev: Option<&str> = None;
        for (id, want, size, payload, part) in &page {
            report.rows_checked += 1;
            if prev == Some(id.as_str()) {
                report.findings.push(Finding {
                    tx_id: id.clone(),
                    kind: ProblemKind::Database,
                    detail: "more than one row for this id (written outside poh-store?)".into(),
                    action: "none (load serves one of them; delete and save it again)".into(),
                });
            }
            prev = Some(id.as_str());
            let have = sha256_hex(payload);
            let len_ok = i64::try_from(payload.len()).is_ok_and(|l| l == *size);
            if have == *want && len_ok {
                report.rows_ok += 1;
                continue;
            }
            let detail = if have != *want {
                format!("payload SHA-256 {have} does not match the recorded {want} (in {part})")
            } else {
                format!(
                    "payload is {} bytes, the row records {size} (in {part})",
                    payload.len()
                )
            };
            let action = if dry_run {
                "would move the row to poh_quarantine".to_owned()
            } else {
                quarantine(shared, id, &detail)?;
                "moved the row to poh_quarantine".to_owned()
            };
            report.findings.push(Finding {
                tx_id: id.clone(),
                kind: ProblemKind::Corrupt,
                detail,
                action,
            });
        }
        if page.len() < usize::try_from(VERIFY_PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    directory(shared, dry_run, &mut report)?;
    Ok(report)
}

/// Rows the id directory does not point at are invisible to loads: reported, and (unless
/// `dry_run`) pointed at again — the rows are the truth, the directory is rebuilt from
/// them (for an id with several rows, at its newest).
fn directory(shared: &Shared, dry_run: bool, report: &mut RecoverReport) -> Result<()> {
    // The three looks (rows without an entry, entries without a row, the windows whose
    // drop is being finished) share one snapshot, taken once no drop is under way (the
    // lock comes before the snapshot, which the first query takes): another node's drop
    // committing between them must not make its window's entries look stale.
    let (lost, stale, parked) = shared.run("check the id directory", |mut c| async move {
        let t = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        t.batch_execute("LOCK TABLE poh_txs IN ACCESS SHARE MODE")
            .await?;
        let pairs = |rows: Vec<Row>| {
            rows.iter()
                .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, f64>(1)?)))
                .collect::<PgResult<Vec<_>>>()
        };
        let lost = pairs(
            t.query(
                "SELECT t.tx_id, max(t.timestamp) FROM poh_txs t
                 WHERE NOT EXISTS (SELECT 1 FROM poh_ids d
                                   WHERE d.tx_id = t.tx_id AND d.timestamp = t.timestamp)
                 GROUP BY t.tx_id ORDER BY t.tx_id",
                &[],
            )
            .await?,
        )?;
        let stale = pairs(
            t.query(
                "SELECT d.tx_id, d.timestamp FROM poh_ids d
                 WHERE NOT EXISTS (SELECT 1 FROM poh_txs t
                                   WHERE t.tx_id = d.tx_id AND t.timestamp = d.timestamp)
                 ORDER BY d.tx_id",
                &[],
            )
            .await?,
        )?;
        let parked = parked_tables(&t).await?;
        t.commit().await?;
        Ok((lost, stale, parked))
    })?;
    for (id, ts) in lost {
        let action = if dry_run {
            "would point the id directory at the row".to_owned()
        } else {
            fix_under_id_lock(
                shared,
                &format!("repair the directory entry of tx {id}"),
                &id,
                &[(
                    "INSERT INTO poh_ids (tx_id, timestamp)
                     SELECT $1, max(timestamp) FROM poh_txs WHERE tx_id = $1 HAVING count(*) > 0
                     ON CONFLICT (tx_id) DO UPDATE SET timestamp = EXCLUDED.timestamp",
                    None,
                )],
            )?;
            "pointed the id directory at the row".to_owned()
        };
        report.findings.push(Finding {
            tx_id: id,
            kind: ProblemKind::Database,
            detail: format!(
                "the id directory does not point at its row (timestamp {ts}): loads do not see it"
            ),
            action,
        });
    }
    // Entries without a row: garbage the store can prove (nothing points at a payload).
    // Those of a window whose drop is being finished (its parked table still exists) are
    // the next expiry pass's work, not a problem.
    let parked: BTreeSet<i64> = parked
        .iter()
        .filter_map(|n| {
            let suffix = n
                .strip_prefix("poh_trash_")
                .or_else(|| n.strip_prefix("poh_detached_"))?;
            part_bucket(&format!("poh_txs_{suffix}"))
        })
        .collect();
    let stale = stale
        .into_iter()
        .filter(|(_, ts)| !parked.contains(&bucket(*ts, shared.window)))
        .map(|(id, _)| id);
    for id in stale {
        let action = if dry_run {
            "would remove the entry".to_owned()
        } else {
            fix_under_id_lock(
                shared,
                &format!("remove the directory entry of tx {id}"),
                &id,
                &[(
                    "DELETE FROM poh_ids d WHERE d.tx_id = $1
                       AND NOT EXISTS (SELECT 1 FROM poh_txs t
                                       WHERE t.tx_id = d.tx_id AND t.timestamp = d.timestamp)",
                    None,
                )],
            )?;
            "removed the entry".to_owned()
        };
        report.findings.push(Finding {
            tx_id: id,
            kind: ProblemKind::Database,
            detail: "an id directory entry without a row".into(),
            action,
        });
    }
    Ok(())
}

/// Moves the rows of `id` whose payload fails its hash into `poh_quarantine`, in one
/// transaction under the id's lock.
fn quarantine(shared: &Shared, id: &str, reason: &str) -> Result<()> {
    fix_under_id_lock(
        shared,
        &format!("quarantine tx {id}"),
        id,
        &[
            (
                "WITH bad AS (
                   DELETE FROM poh_txs WHERE tx_id = $1
                     AND (encode(sha256(payload), 'hex') <> storage_hash OR length(payload) <> size)
                   RETURNING tx_id, holder_id, timestamp, storage_hash, size, payload)
                 INSERT INTO poh_quarantine (tx_id, holder_id, timestamp, storage_hash, size, payload, reason)
                 SELECT tx_id, holder_id, timestamp, storage_hash, size, payload, $2 FROM bad",
                Some(reason),
            ),
            (
                "DELETE FROM poh_ids WHERE tx_id = $1
                   AND NOT EXISTS (SELECT 1 FROM poh_txs WHERE tx_id = $1)",
                None,
            ),
        ],
    )
}

/// Runs `statements` (each with `$1` the id and, when given, `$2` its text) in one
/// transaction under the id's lock: the repairs of recover.
fn fix_under_id_lock(
    shared: &Shared,
    what: &str,
    id: &str,
    statements: &[(&str, Option<&str>)],
) -> Result<()> {
    let keys = id_keys([id]);
    shared.run(what, |mut c| {
        let keys = &keys;
        async move {
            let t = c.transaction().await?;
            t.execute(LOCK_IDS, &[&NS_ID, keys]).await?;
            for (sql, extra) in statements {
                match extra {
                    Some(x) => t.execute(*sql, &[&id, x]).await?,
                    None => t.execute(*sql, &[&id]).await?,
                };
            }
            t.commit().await?;
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        for b in [0, 1, 472_222, -3, i64::MAX / 3600] {
            assert_eq!(part_bucket(&part_name(b)), Some(b), "{b}");
        }
        assert_eq!(part_bucket("poh_txs_x1"), None);
        assert_eq!(part_bucket("other"), None);
    }

    #[test]
    fn buckets_follow_the_window() {
        assert_eq!(bucket(0.0, 3600), 0);
        assert_eq!(bucket(3599.999, 3600), 0);
        assert_eq!(bucket(3600.0, 3600), 1);
        assert_eq!(bucket(1e11, 1), 100_000_000_000);
    }

    #[test]
    fn lock_keys_are_sorted_and_unique() {
        let k = id_keys(["b", "a", "b", "c"]);
        assert_eq!(k.len(), 3);
        assert!(k.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(id_key("a"), id_key("a"));
    }
}
