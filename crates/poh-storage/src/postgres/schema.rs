//! The store's tables in PostgreSQL (schema version 1), created once under the DDL lock:
//! ```text
//! poh_store(key text PRIMARY KEY, value text)      schema_version, window_secs
//! poh_txs(tx_id text COLLATE "C", holder_id text, timestamp float8,
//!         storage_hash text, size int8, payload bytea)
//!     PARTITION BY RANGE (timestamp); partitions poh_txs_p<bucket> hold
//!     [bucket * window_secs, (bucket + 1) * window_secs); poh_txs_default holds rows
//!     of windows without a partition of their own
//!     indexes: (tx_id), (timestamp, tx_id)
//! poh_ids(tx_id text COLLATE "C" PRIMARY KEY, timestamp float8)
//!     the id directory: the timestamp (so the window) of each id's row, so lookups and
//!     re-saves search one partition; index (timestamp)
//! poh_quarantine(... the columns of poh_txs ..., reason text, at timestamptz)
//! ```
//! The tables live in the connection's current schema (set another one with
//! `?options=-csearch_path%3Dname` in the URL), so one database can hold several stores.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tokio_postgres::error::SqlState;

use super::{KEY_DDL, LOCK_STORE, NS_STORE, PgFail, Shared, part_bucket};
use crate::error::{Result, StorageError};
use crate::options::OpenOptions;

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// What an open found.
pub(crate) struct Found {
    /// Width of a partition's window, in seconds.
    pub(crate) window: i64,
    /// Buckets that have a partition.
    pub(crate) buckets: BTreeSet<i64>,
}

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS poh_store (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS poh_txs (
    tx_id text COLLATE "C" NOT NULL,
    holder_id text NOT NULL,
    timestamp double precision NOT NULL,
    storage_hash text NOT NULL,
    size bigint NOT NULL,
    payload bytea NOT NULL
) PARTITION BY RANGE (timestamp);
CREATE TABLE IF NOT EXISTS poh_txs_default PARTITION OF poh_txs DEFAULT;
CREATE INDEX IF NOT EXISTS poh_txs_id ON poh_txs (tx_id);
CREATE INDEX IF NOT EXISTS poh_txs_time ON poh_txs (timestamp, tx_id);
CREATE TABLE IF NOT EXISTS poh_ids (
    tx_id text COLLATE "C" PRIMARY KEY,
    timestamp double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS poh_ids_time ON poh_ids (timestamp);
CREATE TABLE IF NOT EXISTS poh_quarantine (
    tx_id text COLLATE "C" NOT NULL,
    holder_id text NOT NULL,
    timestamp double precision NOT NULL,
    storage_hash text NOT NULL,
    size bigint NOT NULL,
    payload bytea,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"#;

/// Checks the store's tables in the database (creating them when `opts` allows) and
/// returns its window and partitions.
pub(crate) fn open(shared: &Shared, opts: &OpenOptions, asked: i64) -> Result<Found> {
    let asked_explicitly = opts.segment_window.is_some();
    let create = opts.create && !opts.read_only;
    let shown = &shared.shown;
    let res = shared.run("open the store", |mut c| async move {
        let r = c
            .query_one(
                "SELECT to_regclass('poh_store') IS NOT NULL,
                        to_regclass('poh_txs') IS NOT NULL AND to_regclass('poh_ids') IS NOT NULL",
                &[],
            )
            .await?;
        let (has_store, has_txs): (bool, bool) = (r.try_get(0)?, r.try_get(1)?);
        if !(has_store && has_txs) {
            if !create {
                return Err(PgFail::Storage(StorageError::NotFound {
                    path: PathBuf::from(shown),
                    why: "the database holds no poh-store tables".into(),
                }));
            }
            let t = c.transaction().await?;
            t.execute(LOCK_STORE, &[&NS_STORE, &KEY_DDL]).await?;
            t.batch_execute(CREATE).await?;
            t.batch_execute(&format!(
                "INSERT INTO poh_store VALUES ('schema_version', '{SCHEMA_VERSION}'), \
                 ('window_secs', '{asked}') ON CONFLICT (key) DO NOTHING"
            ))
            .await?;
            t.commit().await?;
        }
        let rows = c.query("SELECT key, value FROM poh_store", &[]).await?;
        let mut version = None;
        let mut window = None;
        for r in rows {
            let (k, v): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            match k.as_str() {
                "schema_version" => version = v.parse::<i64>().ok(),
                "window_secs" => window = v.parse::<i64>().ok().filter(|w| *w >= 1),
                _ => {}
            }
        }
        Ok((version, window))
    });
    let (version, window) = match res {
        Err(StorageError::Meta { source, what, path }) => {
            return Err(explain_connect(what, path, source));
        }
        other => other?,
    };
    let not_store = |why: &str| StorageError::NotAStore {
        path: PathBuf::from(&shared.shown),
        why: why.into(),
    };
    let version = version.ok_or_else(|| not_store("poh_store has no valid schema_version"))?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            path: PathBuf::from(&shared.shown),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let window = window.ok_or_else(|| not_store("poh_store has no valid window_secs"))?;
    if asked_explicitly && window != asked {
        return Err(StorageError::LayoutMismatch {
            path: PathBuf::from(&shared.shown),
            found: format!("postgres store with {window} s partitions"),
            asked: format!("a {asked} s window"),
        });
    }
    Ok(Found {
        window,
        buckets: buckets(shared)?,
    })
}

/// The buckets of the partitions attached to `poh_txs` (partitions not named by us are
/// left alone: never dropped, never written by name).
pub(crate) fn buckets(shared: &Shared) -> Result<BTreeSet<i64>> {
    shared.run("list partitions", |c| async move {
        let rows = c
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'poh_txs'::regclass",
                &[],
            )
            .await?;
        let mut out = BTreeSet::new();
        for r in rows {
            let name: String = r.try_get(0)?;
            if let Some(b) = part_bucket(&name) {
                out.insert(b);
            }
        }
        Ok(out)
    })
}

/// A connection or open failure in words an operator can act on: a missing database is
/// "no store" (exit 1, or 3 for poh-ttl); authentication and unreachable servers say so.
fn explain_connect(
    what: String,
    path: PathBuf,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> StorageError {
    let text = source.to_string();
    let code_of = |c: &SqlState| text.contains(&format!("({})", c.code()));
    if code_of(&SqlState::INVALID_CATALOG_NAME) {
        return StorageError::NotFound {
            path,
            why: format!("{text}; create the database first (createdb)"),
        };
    }
    let what = if code_of(&SqlState::INVALID_PASSWORD)
        || code_of(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    {
        format!("{what}: the server refused the credentials")
    } else if text.contains("error connecting") || text.contains("Connection refused") {
        format!("{what}: cannot reach the server")
    } else {
        what
    };
    StorageError::Meta { what, path, source }
}
