//! A store written in the prototype's format opens with ours, is migrated in place, stays
//! writable by the prototype's own SQL, and its rows load with an empty holder_id.

mod common;
use common::{id, tx};
use poh_storage::sha256_hex;
use poh_storage::{StorageError, StorageManager};
use rusqlite::Connection;

/// Builds what the prototype left on disk: the three-column table in rollback-journal
/// mode, and `<base>/<id>.bin` files.
fn prototype_store(base: &std::path::Path, db: &std::path::Path, txs: &[(&str, f64, &[u8])]) {
    std::fs::create_dir_all(base).unwrap();
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS txs (tx_id TEXT PRIMARY KEY, storage_hash TEXT NOT NULL, timestamp REAL NOT NULL)",
    )
    .unwrap();
    for (id, ts, payload) in txs {
        std::fs::write(base.join(format!("{id}.bin")), payload).unwrap();
        c.execute(
            "INSERT OR REPLACE INTO txs (tx_id, storage_hash, timestamp) VALUES (?, ?, ?)",
            rusqlite::params![id, sha256_hex(payload), ts],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn prototype_store_opens_migrates_and_stays_prototype_writable() {
    let dir = tempfile::TempDir::new().unwrap();
    let (base, db) = (dir.path().join("store"), dir.path().join("meta.sqlite"));
    prototype_store(
        &base,
        &db,
        &[("old-1", 1000.5, b"first"), ("old-2", 2000.0, b"second")],
    );

    let sm = StorageManager::open(&base, &db).await.unwrap();
    let got = sm.load(&id("old-1")).await.unwrap().unwrap();
    assert_eq!(got.holder_id, "");
    assert_eq!(got.payload, b"first");
    assert_eq!(got.timestamp, 1000.5);
    assert!(sm.verify().await.unwrap().is_clean());
    let stats = sm.stats().await.unwrap();
    assert_eq!((stats.count, stats.rows_without_size), (2, 2));
    sm.save(tx("ours", 3000.0, b"third")).await.unwrap();

    // Migrated in place: version, columns, index, WAL.
    let c = Connection::open(&db).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let cols: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('txs')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        cols,
        ["tx_id", "storage_hash", "timestamp", "holder_id", "size"]
    );
    let idx: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='txs_timestamp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(idx, 1);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Expiry uses the index.
    let plan: String = c
        .query_row(
            "EXPLAIN QUERY PLAN SELECT tx_id FROM txs WHERE timestamp < 5 ORDER BY timestamp, tx_id",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("txs_timestamp"), "{plan}");

    // The prototype's own write still succeeds on the migrated table, with the store open.
    std::fs::write(base.join("proto-new.bin"), b"fourth").unwrap();
    c.execute(
        "INSERT OR REPLACE INTO txs (tx_id, storage_hash, timestamp) VALUES (?, ?, ?)",
        rusqlite::params!["proto-new", sha256_hex(b"fourth"), 4000.0],
    )
    .unwrap();
    let got = sm.load(&id("proto-new")).await.unwrap().unwrap();
    assert_eq!(
        (got.holder_id.as_str(), got.payload.as_slice()),
        ("", &b"fourth"[..])
    );
    // And what we wrote reads back through the prototype's query.
    let (h, ts): (String, f64) = c
        .query_row(
            "SELECT storage_hash, timestamp FROM txs WHERE tx_id = 'ours'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((h, ts), (sha256_hex(b"third"), 3000.0));
    sm.close().await.unwrap();

    // Reopening is a no-op migration.
    let sm = StorageManager::open(&base, &db).await.unwrap();
    assert_eq!(sm.stats().await.unwrap().count, 4);
    assert!(sm.verify().await.unwrap().is_clean());
}

#[tokio::test]
async fn newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::TempDir::new().unwrap();
    let (base, db) = (dir.path().join("s"), dir.path().join("s.db"));
    prototype_store(&base, &db, &[]);
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = StorageManager::open(&base, &db).await.unwrap_err();
    assert!(
        matches!(err, StorageError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Upgrade"), "{err}");
}

#[tokio::test]
async fn unrelated_sqlite_file_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("other.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE txs (a INTEGER)")
        .unwrap();
    let err = StorageManager::open(dir.path().join("b"), &db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a poh store"), "{err}");
}
