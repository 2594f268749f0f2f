//! The segments engine's own promises: a torn tail is cut at the last committed record; a
//! corrupt record in a sealed segment is found exactly, quarantined (bytes and a note) and
//! never served; a missing segment's rows are noted and dropped; a segment the index does
//! not know is quarantined, never deleted; an expired time window goes as a whole file;
//! compaction gives dead space back without losing a live tx; a failed index commit leaves
//! no part of a batch.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{id, tx};
use poh_storage::{Layout, OpenOptions, ProblemKind, RecoverReport, StorageError, StorageManager};
use sha2::Digest as _;
use tempfile::TempDir;

struct Store {
    dir: TempDir,
    base: PathBuf,
    db: PathBuf,
}

impl Store {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let base = dir.path().join("data");
        let db = base.join("poh.db");
        Self { dir, base, db }
    }

    async fn open(&self) -> StorageManager {
        StorageManager::open_with(
            &self.base,
            &self.db,
            OpenOptions {
                layout: Some(Layout::Segments),
                segment_window: Some(Duration::from_secs(100)),
                ..OpenOptions::default()
            },
        )
        .await
        .expect("open store")
    }

    async fn open_read_only(&self) -> StorageManager {
        StorageManager::open_with(
            &self.base,
            &self.db,
            OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .await
        .expect("open store read-only")
    }

    fn segs(&self) -> PathBuf {
        self.base.join("segments")
    }

    /// The segment files, sorted.
    fn seg_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.segs())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    /// (segment file, offset) of a tx's record, from the index.
    fn location(&self, tx_id: &str) -> (PathBuf, u64) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let (seg, off): (i64, i64) = conn
            .query_row(
                "SELECT seg, off FROM records WHERE tx_id = ?1",
                [tx_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (self.segs().join(format!("{seg:08}.seg")), off as u64)
    }

    /// A segment's committed length, from the index.
    fn committed(&self, seg: &Path) -> u64 {
        let id: i64 = seg
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("a segment file name");
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let len: i64 = conn
            .query_row("SELECT len FROM segments WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        len as u64
    }

    /// Puts `bytes` right after a segment's committed records, with nothing after them
    /// (what an append whose commit never happened leaves); returns the committed length.
    fn append_uncommitted(&self, seg: &Path, bytes: &[u8]) -> u64 {
        let committed = self.committed(seg);
        let mut data = std::fs::read(seg).unwrap();
        data.truncate(committed as usize);
        data.extend_from_slice(bytes);
        std::fs::write(seg, &data).unwrap();
        committed
    }

    /// True if no segment holds anything but zeros (a writer's padding) after its
    /// committed length.
    fn nothing_past_committed(&self) -> bool {
        self.seg_files().iter().all(|p| {
            let data = std::fs::read(p).unwrap();
            let committed = self.committed(p) as usize;
            data.get(committed..)
                .is_none_or(|t| t.iter().all(|b| *b == 0))
        })
    }

    fn quarantine(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.base.join(".quarantine")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn ids_of(report: &RecoverReport, kind: ProblemKind) -> BTreeSet<String> {
    report.of_kind(kind).map(|f| f.tx_id.clone()).collect()
}

fn flip(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x20;
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_committed_stays() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save_batch(
        (0..5)
            .map(|i| tx(&format!("t{i}"), 10.0, b"payload"))
            .collect(),
    )
    .await
    .unwrap();
    sm.close().await.unwrap();
    let seg = st.seg_files().pop().unwrap();
    // Half a record after the last committed one, as a torn append leaves.
    let first_record = std::fs::read(&seg).unwrap()[..60].to_vec();
    let committed = st.append_uncommitted(&seg, &first_record);

    let ro = st.open_read_only().await;
    let report = ro.verify().await.unwrap();
    assert_eq!(
        report.of_kind(ProblemKind::TornTail).count(),
        1,
        "{report:#?}"
    );
    assert_eq!(report.findings.len(), 1, "{report:#?}");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        committed + 60,
        "verify cuts nothing"
    );
    for i in 0..5 {
        assert!(ro.load(&id(&format!("t{i}"))).await.unwrap().is_some());
    }
    ro.close().await.unwrap();

    // A writable open cuts it at once; the next save appends after the committed records.
    let sm = st.open().await;
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed);
    sm.save(tx("t5", 20.0, b"after")).await.unwrap();
    for i in 0..6 {
        assert!(
            sm.load(&id(&format!("t{i}"))).await.unwrap().is_some(),
            "t{i}"
        );
    }
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_record_is_quarantined_exactly_and_never_served() {
    let st = Store::new();
    let sm = st.open().await;
    let txs: Vec<_> = (0..8)
        .map(|i| {
            tx(
                &format!("t{i}"),
                10.0 + i as f64,
                format!("payload {i}").as_bytes(),
            )
        })
        .collect();
    sm.save_batch(txs.clone()).await.unwrap();
    // A later window, so the first segment is not the one being appended to.
    sm.save(tx("later", 500.0, b"later")).await.unwrap();
    sm.close().await.unwrap();

    // t2: a payload byte flipped; t5: a header byte (its holder) flipped.
    let (seg2, off2) = st.location("t2");
    flip(&seg2, off2 + 76 + 2 + 8 + 8 + 3);
    let (seg5, off5) = st.location("t5");
    flip(&seg5, off5 + 76 + 2 + 1);
    let flipped = std::fs::read(&seg2).unwrap();

    let sm = st.open().await;
    for t in &txs {
        let got = sm.load(&t.tx_id).await;
        if ["t2", "t5"].contains(&t.tx_id.as_str()) {
            let err = got.unwrap_err();
            assert!(
                matches!(&err, StorageError::Integrity { tx_id, .. } if tx_id == t.tx_id.as_str()),
                "{err}"
            );
            assert!(err.to_string().contains(t.tx_id.as_str()), "{err}");
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(t));
        }
    }
    // The metadata's hash comes from the record's header: t2's header is intact, t5's is
    // not, and its hash is then empty (never a made-up one). Listing ids reads no header.
    let rows = sm.list_page(None, 100).await.unwrap().rows;
    assert_eq!(rows.len(), 9);
    for r in &rows {
        let want = match r.tx_id.as_str() {
            "t5" => String::new(),
            "later" => hex::encode(sha2::Sha256::digest(b"later")),
            t => hex::encode(sha2::Sha256::digest(format!("payload {}", &t[1..]))),
        };
        assert_eq!(r.storage_hash, want, "{r:?}");
    }
    assert_eq!(sm.meta(&id("t5")).await.unwrap().unwrap().storage_hash, "");
    let ids = sm.list_ids_page(None, 100).await.unwrap().ids;
    assert_eq!(
        ids,
        rows.iter().map(|r| r.tx_id.clone()).collect::<Vec<_>>()
    );
    assert!(sm.exists(&id("t5")).await.unwrap());
    let bad: BTreeSet<String> = ["t2", "t5"].iter().map(|s| s.to_string()).collect();
    let before = common::snapshot::snapshot(st.dir.path());
    let report = sm.verify().await.unwrap();
    assert_eq!(
        common::snapshot::snapshot(st.dir.path()),
        before,
        "verify changed nothing"
    );
    assert_eq!(ids_of(&report, ProblemKind::Corrupt), bad, "{report:#?}");
    assert_eq!(report.findings.len(), 2, "{report:#?}");
    assert_eq!((report.rows_checked, report.rows_ok), (9, 7));

    let report = sm.recover(false).await.unwrap();
    assert_eq!(ids_of(&report, ProblemKind::Corrupt), bad, "{report:#?}");
    for f in &report.findings {
        assert!(f.action.starts_with("quarantined to"), "{f:?}");
    }
    // Each record is kept as found, with a note naming the tx, the segment and the problem.
    let q = st.quarantine();
    assert_eq!(q.len(), 4, "{q:?}");
    let mut noted = BTreeSet::new();
    for p in q
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let note: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let tx_id = note["tx_id"].as_str().unwrap().to_owned();
        assert!(
            note["segment"].as_str().unwrap().ends_with(".seg"),
            "{note}"
        );
        assert!(!note["problem"].as_str().unwrap().is_empty());
        // The hash, from the record's header while that is intact.
        let hash = &note["storage_hash"];
        match tx_id.as_str() {
            "t2" => assert_eq!(hash, &hex::encode(sha2::Sha256::digest(b"payload 2"))[..]),
            _ => assert!(hash.is_null(), "{note}"),
        }
        let kept = std::fs::read(p.with_extension("bin")).unwrap();
        if tx_id == "t2" {
            let off = note["offset"].as_u64().unwrap() as usize;
            assert_eq!(
                kept,
                flipped[off..off + kept.len()].to_vec(),
                "kept as found"
            );
        }
        noted.insert(tx_id);
    }
    assert_eq!(noted, bad);
    // Never served again; everything else intact; the store clean.
    for t in &txs {
        let got = sm.load(&t.tx_id).await.unwrap();
        if bad.contains(t.tx_id.as_str()) {
            assert_eq!(got, None);
        } else {
            assert_eq!(got.as_ref(), Some(t));
        }
    }
    assert_eq!(sm.stats().await.unwrap().count, 7);
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn a_missing_segment_drops_its_rows_with_notes_and_keeps_the_rest() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save_batch(vec![tx("old", 10.0, b"x"), tx("new", 510.0, b"y")])
        .await
        .unwrap();
    sm.close().await.unwrap();
    let (seg, _) = st.location("old");
    std::fs::remove_file(&seg).unwrap();
    let sm = st.open().await;
    let err = sm.load(&id("old")).await.unwrap_err();
    assert!(matches!(err, StorageError::PayloadMissing { .. }), "{err}");
    let report = sm.recover(false).await.unwrap();
    assert_eq!(
        ids_of(&report, ProblemKind::MissingPayload),
        ["old".to_owned()].into()
    );
    assert!(
        report.findings[0]
            .action
            .starts_with("dropped row (noted in ")
    );
    assert_eq!(sm.load(&id("old")).await.unwrap(), None);
    assert_eq!(sm.load(&id("new")).await.unwrap().unwrap().payload, b"y");
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn a_segment_the_index_does_not_know_is_quarantined_never_deleted() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("a", 10.0, b"x")).await.unwrap();
    sm.close().await.unwrap();
    let stray = st.segs().join("00099999.seg");
    let empty = st.segs().join("00099998.seg");
    std::fs::write(&stray, b"whatever it holds").unwrap();
    std::fs::write(&empty, b"").unwrap();
    let sm = st.open().await; // open-time repair
    assert!(!stray.exists() && !empty.exists());
    let kept: Vec<PathBuf> = st
        .quarantine()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"whatever it holds");
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn expired_windows_go_as_whole_files_and_partly_expired_ones_hide_their_txs() {
    let st = Store::new();
    let sm = st.open().await;
    // Windows of 100 s: 0-99 (10 txs), 100-199 (10), 200-299 (10: half expired below).
    let txs = (0..30)
        .map(|i| tx(&format!("t{i:02}"), 10.0 * i as f64, b"p"))
        .collect();
    sm.save_batch(txs).await.unwrap();
    assert_eq!(st.seg_files().len(), 3);
    let gone = sm.delete_expired(1000.0, 750.0, 1000).await.unwrap();
    // now - ts > 750  <=>  ts < 250: t00..t24.
    assert_eq!(gone.len(), 25, "{gone:?}");
    assert_eq!(st.seg_files().len(), 1, "two whole windows unlinked");
    for i in 0..30 {
        let got = sm.load(&id(&format!("t{i:02}"))).await.unwrap();
        assert_eq!(got.is_some(), i >= 25, "t{i:02}");
    }
    assert_eq!(sm.stats().await.unwrap().count, 5);
    // Nothing left to expire: a pass changes nothing.
    assert!(
        sm.delete_expired(1000.0, 750.0, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    // The last window goes too once all of it is expired.
    let gone = sm.delete_expired(2000.0, 750.0, 1000).await.unwrap();
    assert_eq!(gone.len(), 5);
    assert!(st.seg_files().is_empty(), "{:?}", st.seg_files());
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

/// Rows in the index, whatever their segment's state (a dropped segment's wait there
/// for their sweep), and the dropped segments the index still lists.
fn index_rows_and_dropped(st: &Store) -> (i64, i64) {
    let conn = rusqlite::Connection::open(&st.db).unwrap();
    let rows = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    let dropped = conn
        .query_row("SELECT count(*) FROM segments WHERE state = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    (rows, dropped)
}

#[tokio::test]
async fn a_dropped_window_leaves_at_once_and_its_rows_are_swept_in_bounded_steps() {
    let st = Store::new();
    let sm = st.open().await;
    // 20,000 txs in the window 0-99 s (more than two sweeps' worth), 5 in 5000-5099 s.
    let old: Vec<String> = (0..20_000).map(|i| format!("d{i:05}")).collect();
    for chunk in old.chunks(5000) {
        let txs = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| tx(id, (i % 100) as f64, b"p"))
            .collect();
        sm.save_batch(txs).await.unwrap();
    }
    let live: Vec<poh_storage::Tx> = (0..5)
        .map(|i| tx(&format!("l{i}"), 5000.0 + i as f64, b"q"))
        .collect();
    sm.save_batch(live).await.unwrap();
    assert_eq!(st.seg_files().len(), 2);

    // One call drops the whole window, however far past the limit its txs go.
    let gone = sm.delete_expired(1000.0, 500.0, 1000).await.unwrap();
    let gone: BTreeSet<String> = gone.into_iter().collect();
    assert_eq!(gone, old.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(st.seg_files().len(), 1, "the window's file is unlinked");
    // Gone for every reader at once, though its rows are still in the index.
    assert_eq!(index_rows_and_dropped(&st), (20_005, 1));
    for id_ in ["d00000", "d12345", "d19999"] {
        assert_eq!(sm.load(&id(id_)).await.unwrap(), None, "{id_}");
        assert!(!sm.delete(&id(id_)).await.unwrap(), "{id_}");
    }
    let stats = sm.stats().await.unwrap();
    assert_eq!((stats.count, stats.oldest), (5, Some(5000.0)));
    let page = sm.list_page(None, 100).await.unwrap();
    assert_eq!(page.rows.len(), 5, "{:?}", page.rows);
    assert!(
        sm.find_expired(1000.0, 500.0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        sm.find_expired(9000.0, 500.0, None, 100)
            .await
            .unwrap()
            .len()
            == 5
    );
    // Garbage the index proves is garbage: not a finding.
    let report = sm.verify().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.rows_checked, 5);
    sm.close().await.unwrap();

    // A read-only handle leaves them out as well.
    let ro = st.open_read_only().await;
    assert_eq!(ro.load(&id("d00042")).await.unwrap(), None);
    assert_eq!(ro.stats().await.unwrap().count, 5);
    assert_eq!(ro.list_page(None, 100).await.unwrap().rows.len(), 5);
    ro.close().await.unwrap();

    // A restart (and its repair) keeps the dropped segment's entry while rows remain.
    let sm = st.open().await;
    assert_eq!(sm.load(&id("d19998")).await.unwrap(), None);
    assert_eq!(index_rows_and_dropped(&st), (20_005, 1));
    // An id of the dropped window saved again is a new tx; no sweep takes it.
    sm.save(tx("d19998", 5050.0, b"again")).await.unwrap();
    // The index is read from outside: the save's commit lands now.
    sm.flush().await.unwrap();
    // The save swept what it may (twice its txs, at least 1,024 rows) before it wrote.
    assert_eq!(index_rows_and_dropped(&st), (20_005 - 1024, 1));

    // Each TTL pass that ends sweeps up to 8,192 rows; nothing it returns is swept.
    let mut passes = 0;
    loop {
        assert!(
            sm.delete_expired(1000.0, 500.0, 1000)
                .await
                .unwrap()
                .is_empty()
        );
        passes += 1;
        let (rows, _) = index_rows_and_dropped(&st);
        if rows == 6 {
            break;
        }
        assert!(passes < 5, "{rows} rows after {passes} passes");
    }
    assert_eq!(passes, 3, "18,975 rows in sweeps of 8,192");
    // The entry of the swept segment goes with the next commit.
    sm.save(tx("l9", 5009.0, b"q")).await.unwrap();
    sm.flush().await.unwrap();
    assert_eq!(index_rows_and_dropped(&st), (7, 0));
    let got = sm.load(&id("d19998")).await.unwrap().unwrap();
    assert_eq!(
        (got.payload.as_slice(), got.timestamp),
        (&b"again"[..], 5050.0)
    );
    assert_eq!(sm.stats().await.unwrap().count, 7);
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn an_index_of_an_earlier_version_is_read_as_it_is_and_upgraded_by_a_writer() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("a", 10.0, b"x")).await.unwrap();
    sm.close().await.unwrap();
    let db = || rusqlite::Connection::open(&st.db).unwrap();
    let version = || -> i64 {
        db().query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let hash_len = |id: &str| -> i64 {
        db().query_row(
            "SELECT length(hash) FROM records WHERE tx_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    let set = |v: i64| {
        db().execute_batch(&format!("PRAGMA user_version = {v}"))
            .unwrap()
    };
    let sha_hex = |p: &[u8]| hex::encode(sha2::Sha256::digest(p));
    let indexes = || -> Vec<String> {
        let db = db();
        let mut s = db
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'
                   AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // Version 4: the row holds no hash (the metadata reads it from the record's header),
    // and one index on (seg, timestamp) serves expiry, verify and compaction.
    assert_eq!(version(), 4);
    assert_eq!(hash_len("a"), 0);
    assert_eq!(indexes(), ["records_seg_ts"]);
    // An index written by a version-3, -2 or -1 binary: its two indexes, and (before
    // version 3) its rows hold the hash.
    db().execute_batch(
        "DROP INDEX records_seg_ts;
         CREATE INDEX records_time ON records(timestamp, tx_id);
         CREATE INDEX records_seg ON records(seg, off);",
    )
    .unwrap();
    db().execute(
        "UPDATE records SET hash = ?1 WHERE tx_id = 'a'",
        [&sha2::Sha256::digest(b"x")[..]],
    )
    .unwrap();
    for old in [1, 2, 3] {
        set(old);
        let ro = st.open_read_only().await;
        assert_eq!(ro.load(&id("a")).await.unwrap().unwrap().payload, b"x");
        assert_eq!(
            ro.meta(&id("a")).await.unwrap().unwrap().storage_hash,
            sha_hex(b"x")
        );
        // Its queries are right over the old indexes.
        let expired = ro.find_expired(100.0, 1.0, None, 10).await.unwrap();
        assert_eq!(
            expired.iter().map(|r| r.tx_id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(ro.verify().await.unwrap().is_clean());
        ro.close().await.unwrap();
        assert_eq!(version(), old, "a read-only handle changes nothing");
        assert_eq!(indexes(), ["records_seg", "records_time"]);
    }
    let sm = st.open().await;
    sm.save(tx("b", 20.0, b"y")).await.unwrap();
    // The index is read and written from outside below: the save's commit lands now.
    sm.flush().await.unwrap();
    assert_eq!(version(), 4);
    assert_eq!(indexes(), ["records_seg_ts"], "the old indexes are swapped");
    assert_eq!(
        (hash_len("a"), hash_len("b")),
        (32, 0),
        "old rows keep their hashes"
    );
    for (i, p) in [("a", b"x"), ("b", b"y")] {
        assert_eq!(sm.load(&id(i)).await.unwrap().unwrap().payload, p);
        assert_eq!(
            sm.meta(&id(i)).await.unwrap().unwrap().storage_hash,
            sha_hex(p)
        );
    }
    // A hash the index holds is still checked: one that is not the payload's is refused.
    db().execute(
        "UPDATE records SET hash = ?1 WHERE tx_id = 'a'",
        [&sha2::Sha256::digest(b"not x")[..]],
    )
    .unwrap();
    let err = sm.load(&id("a")).await.unwrap_err();
    assert!(matches!(err, StorageError::Integrity { .. }), "{err}");
    sm.close().await.unwrap();
    // A later version than this build knows is refused, never served.
    set(5);
    let err = StorageManager::open_with(&st.base, &st.db, OpenOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test]
async fn a_future_timestamp_gets_its_own_segment_and_pins_nothing() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save_batch(vec![
        tx("now", 1_000.0, b"n"),
        tx("future", 90_000_000_000.0, b"f"),
        tx("ancient", 1.0, b"a"),
    ])
    .await
    .unwrap();
    assert_eq!(st.seg_files().len(), 3);
    let gone = sm.delete_expired(5_000.0, 3_000.0, 1000).await.unwrap();
    let gone: BTreeSet<String> = gone.into_iter().collect();
    assert_eq!(gone, ["ancient".to_owned(), "now".to_owned()].into());
    assert_eq!(
        st.seg_files().len(),
        1,
        "only the future tx's segment stays"
    );
    sm.close().await.unwrap();
}

#[tokio::test]
async fn compaction_gives_dead_space_back_and_keeps_every_live_tx() {
    let st = Store::new();
    let sm = st.open().await;
    let payload = vec![7u8; 4096];
    for round in 0..20 {
        let txs = (0..10)
            .map(|i| tx(&format!("t{i}"), 10.0 + round as f64, &payload))
            .collect();
        sm.save_batch(txs).await.unwrap();
    }
    sm.delete(&id("t9")).await.unwrap();
    let total: u64 = st
        .seg_files()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // 9 live records of ~4.2 KB; without compaction 200 records (~840 KB) would remain.
    assert!(total < 4 * 9 * 4200, "{total} bytes on disk for 9 live txs");
    for i in 0..9 {
        let got = sm.load(&id(&format!("t{i}"))).await.unwrap().unwrap();
        assert_eq!((got.payload.len(), got.timestamp), (4096, 29.0));
    }
    assert_eq!(sm.load(&id("t9")).await.unwrap(), None);
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn expiry_walks_a_window_of_several_segments_in_time_order() {
    // One window (100 s) with two segments: compaction seals the first and moves its
    // oldest live records (one step: up to 4 MiB) into a new one, where later saves go
    // too. A window before it expires whole; one after it not at all.
    let st = Store::new();
    let sm = st.open().await;
    let big = vec![3u8; 40 * 1024];
    let mut live: std::collections::BTreeMap<String, f64> = Default::default();
    let mut save = |txs: Vec<(String, f64)>| {
        for (i, t) in &txs {
            live.insert(i.clone(), *t);
        }
        txs.into_iter()
            .map(|(i, t)| tx(&i, t, &big))
            .collect::<Vec<_>>()
    };
    let old: Vec<_> = (0..5)
        .map(|i| (format!("old{i}"), 5.0 + i as f64))
        .collect();
    sm.save_batch(save(old)).await.unwrap();
    let e = |ts: &dyn Fn(usize) -> f64, n: usize| -> Vec<(String, f64)> {
        (0..n).map(|i| (format!("e{i:03}"), ts(i))).collect()
    };
    // Equal timestamps throughout: the order within one is the id's.
    sm.save_batch(save(e(&|i| 100.0 + (i % 30) as f64, 150)))
        .await
        .unwrap();
    sm.save_batch(save(e(&|i| 100.5 + (i * 7 % 40) as f64, 150)))
        .await
        .unwrap();
    sm.save_batch(save(e(&|i| 100.5 + (i * 7 % 40) as f64, 10)))
        .await
        .unwrap();
    let late: Vec<_> = (0..20)
        .map(|i| (format!("n{i:02}"), 100.5 + 2.0 * i as f64))
        .chain((0..5).map(|i| (format!("z{i}"), 250.0 + i as f64)))
        .collect();
    sm.save_batch(save(late)).await.unwrap();
    let segs_of = |prefix: &[&str]| -> BTreeSet<PathBuf> {
        live.keys()
            .filter(|k| prefix.iter().any(|p| k.starts_with(p)))
            .map(|k| st.location(k).0)
            .collect()
    };
    assert_eq!(segs_of(&["e", "n"]).len(), 2, "the window has two segments");
    assert!(segs_of(&["old"]).is_disjoint(&segs_of(&["e", "n"])));

    // Expired: before 135 s, in both segments of the window (compaction moved the oldest
    // rows; the second holds later saves of older times). The dry run, 7 rows a page,
    // lists exactly those, in order.
    let (now, ttl) = (1000.0, 865.0);
    let mut want: Vec<(f64, String)> = live
        .iter()
        .filter(|(_, t)| now - **t > ttl)
        .map(|(i, t)| (*t, i.clone()))
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    assert!(want.len() > 100, "{}", want.len());
    let expired_in = |seg: &PathBuf| {
        want.iter()
            .filter(|(_, i)| &st.location(i).0 == seg)
            .count()
    };
    assert!(
        segs_of(&["e", "n"]).iter().all(|s| expired_in(s) > 7),
        "expired rows in each segment of the window"
    );
    let mut listed: Vec<(f64, String)> = Vec::new();
    loop {
        let after = listed.last().cloned();
        let page = sm.find_expired(now, ttl, after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let n = page.len();
        listed.extend(page.into_iter().map(|r| (r.timestamp, r.tx_id)));
        if n < 7 {
            break;
        }
    }
    assert_eq!(listed, want);

    // The pass, 7 a batch (the old window whole), deletes exactly those.
    let mut gone: Vec<String> = Vec::new();
    loop {
        let batch = sm.delete_expired(now, ttl, 7).await.unwrap();
        let n = batch.len();
        gone.extend(batch);
        if n < 7 {
            break;
        }
    }
    gone.sort();
    let mut want_ids: Vec<String> = want.into_iter().map(|(_, i)| i).collect();
    want_ids.sort();
    assert_eq!(gone, want_ids);
    assert!(
        sm.find_expired(now, ttl, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for (i, t) in live.iter().filter(|(_, t)| now - **t <= ttl) {
        let got = sm.load(&id(i)).await.unwrap().unwrap();
        assert_eq!(got.timestamp, *t, "{i}");
    }
    assert_eq!(
        sm.stats().await.unwrap().count,
        (live.len() - gone.len()) as u64
    );
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_index_commit_leaves_no_part_of_the_batch() {
    let st = Store::new();
    let sm = st.open().await;
    let old = tx("x", 10.0, b"old x");
    sm.save(old.clone()).await.unwrap();
    let conn = rusqlite::Connection::open(&st.db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.tx_id = 'bad'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    drop(conn);
    let err = sm
        .save_batch(vec![
            tx("p", 20.0, b"p"),
            tx("x", 21.0, b"new x"),
            tx("bad", 22.0, b"bad"),
            tx("r", 23.0, b"r"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Meta { .. }), "{err}");
    assert!(err.to_string().contains("bad"), "names the tx: {err}");
    for i in ["p", "bad", "r"] {
        assert!(!sm.exists(&id(i)).await.unwrap(), "{i}");
    }
    assert_eq!(sm.load(&id("x")).await.unwrap(), Some(old));
    assert!(
        st.nothing_past_committed(),
        "the appended records were cut back"
    );
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn links_at_the_stores_own_names_are_never_followed() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("a", 10.0, b"x")).await.unwrap();
    sm.close().await.unwrap();
    let outside = st.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    // A segment file replaced by a link: never read through it, quarantined as corrupt.
    let (seg, _) = st.location("a");
    std::fs::copy(&seg, outside.join("copy.seg")).unwrap();
    std::fs::remove_file(&seg).unwrap();
    std::os::unix::fs::symlink(outside.join("copy.seg"), &seg).unwrap();
    let sm = st.open().await;
    let err = sm.load(&id("a")).await.unwrap_err();
    assert!(matches!(err, StorageError::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    sm.close().await.unwrap();

    // The segments directory or the layout record replaced by a link: refused at open.
    let segs = st.segs();
    std::fs::rename(&segs, outside.join("segs")).unwrap();
    std::os::unix::fs::symlink(outside.join("segs"), &segs).unwrap();
    let err = StorageManager::open(&st.base, &st.db).await.unwrap_err();
    assert!(matches!(err, StorageError::BadStoreEntry { .. }), "{err}");
    std::fs::remove_file(&segs).unwrap();
    std::fs::rename(outside.join("segs"), &segs).unwrap();
    let layout = st.base.join(poh_storage::LAYOUT_FILE);
    std::fs::rename(&layout, outside.join("layout")).unwrap();
    std::os::unix::fs::symlink(outside.join("layout"), &layout).unwrap();
    let err = StorageManager::open(&st.base, &st.db).await.unwrap_err();
    assert!(matches!(err, StorageError::BadStoreEntry { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        2,
        "nothing outside changed"
    );
}

/// The index as of now, kept through SQLite (`VACUUM INTO`): what a power cut leaves of it
/// when the commits after this point were not yet flushed (save groups commit without a
/// flush of their own; their records, synced first, are the log).
fn keep_index(st: &Store) -> PathBuf {
    let kept = st.dir.path().join("kept.db");
    let conn = rusqlite::Connection::open(&st.db).unwrap();
    conn.execute("VACUUM INTO ?1", [kept.display().to_string()])
        .unwrap();
    kept
}

/// Puts the kept index back in place of the store's (closed) one.
fn lose_index_commits(st: &Store, kept: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", st.db.display()));
        if p.exists() {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::rename(kept, &st.db).unwrap();
}

/// Windows 0, 1 and 2 (100 s each: three segments) committed durably with a0, a1, a2;
/// then, by a handle that is closed, b0 and b1, a0 re-saved at 30.0, y, and `more` as one
/// batch. Returns the index as it was before those ([`lose_index_commits`] puts it back).
async fn with_later_commits(st: &Store, more: Vec<poh_storage::Tx>) -> PathBuf {
    let sm = st.open().await;
    sm.save_batch(
        (0..3)
            .map(|i| tx(&format!("a{i}"), 10.0 + 100.0 * f64::from(i), b"first"))
            .collect(),
    )
    .await
    .unwrap();
    sm.close().await.unwrap();
    let kept = keep_index(st);
    let sm = st.open().await;
    sm.save_batch(vec![tx("b0", 20.0, b"b0"), tx("b1", 150.0, b"b1")])
        .await
        .unwrap();
    sm.save(tx("a0", 30.0, b"second")).await.unwrap();
    sm.save(tx("y", 35.0, b"y")).await.unwrap();
    if !more.is_empty() {
        sm.save_batch(more).await.unwrap();
    }
    sm.close().await.unwrap();
    kept
}

fn record_len(id: &str, payload: &[u8]) -> u64 {
    (76 + id.len() + "holder-1".len() + 8 + payload.len()) as u64
}

/// An index that lost its last save commits (a power cut before they were flushed) is
/// brought up to date from the segment tails at the next writable open: every save
/// request whose records are all whole comes back, in write order (a re-save wins over
/// the version the index knew), a request with a record cut short comes back in no part,
/// and the cut bytes go. `verify` before it reports the roll-forward and changes nothing;
/// after it the store verifies clean, counters included.
#[tokio::test]
async fn an_index_that_lost_its_last_commits_is_brought_up_to_date_from_the_segments() {
    let st = Store::new();
    let kept = with_later_commits(&st, vec![tx("c0", 40.0, b"c0"), tx("c1", 250.0, b"c1")]).await;
    let (seg2, c1_at) = st.location("c1");
    lose_index_commits(&st, &kept);
    // The power cut also tore c1, the last record of window 2's segment.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg2)
        .unwrap()
        .set_len(c1_at + record_len("c1", b"c1") / 2)
        .unwrap();
    let files_before: Vec<(PathBuf, Vec<u8>)> = st
        .seg_files()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();

    let ro = st.open_read_only().await;
    let report = ro.verify().await.unwrap();
    ro.close().await.unwrap();
    assert_eq!(
        report.rolled_forward,
        ["b0", "b1", "a0", "y"],
        "{report:#?}"
    );
    assert_eq!(
        report.of_kind(ProblemKind::TornTail).count(),
        2,
        "c0 after y in window 0, half of c1 in window 2: {report:#?}"
    );
    assert_eq!(report.findings.len(), 2, "{report:#?}");
    let files_after: Vec<(PathBuf, Vec<u8>)> = st
        .seg_files()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    assert_eq!(files_after, files_before, "verify changes nothing");

    let sm = st.open().await;
    for (i, payload) in [
        ("a0", &b"second"[..]),
        ("a1", b"first"),
        ("a2", b"first"),
        ("b0", b"b0"),
        ("b1", b"b1"),
        ("y", b"y"),
    ] {
        let got = sm.load(&id(i)).await.unwrap();
        assert_eq!(got.map(|t| t.payload), Some(payload.to_vec()), "{i}");
    }
    for i in ["c0", "c1"] {
        assert!(!sm.exists(&id(i)).await.unwrap(), "{i} came back in part");
    }
    let report = sm.verify().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    // Saves go on after the replayed records; the next open has nothing to replay.
    sm.save(tx("z", 50.0, b"z")).await.unwrap();
    sm.close().await.unwrap();
    let sm = st.open().await;
    assert_eq!(sm.stats().await.unwrap().count, 7);
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

/// A read-only handle writes nothing, so it cannot replay: it serves the acknowledged
/// saves an index lost to a power cut from the segment tails (load, list, stats, dry-run
/// expiry), changing no byte of the store, until a writer has replayed them; from then
/// on it follows the index (a delete made after the replay is seen).
#[tokio::test]
async fn a_read_only_handle_serves_the_saves_the_index_lost_until_a_writer_replays_them() {
    let st = Store::new();
    // a0 is re-saved with a later timestamp: the lost index still has it at 10.0.
    let kept = with_later_commits(&st, Vec::new()).await;
    lose_index_commits(&st, &kept);
    let snapshot = || -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = st.seg_files();
        files.push(st.db.clone());
        files
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(p).unwrap()))
            .collect()
    };
    let before = snapshot();

    let ro = st.open_read_only().await;
    let want = [
        ("a0", 30.0, &b"second"[..]),
        ("a1", 110.0, b"first"),
        ("a2", 210.0, b"first"),
        ("b0", 20.0, b"b0"),
        ("b1", 150.0, b"b1"),
        ("y", 35.0, b"y"),
    ];
    for (i, ts, payload) in want {
        let got = ro.load(&id(i)).await.unwrap().expect(i);
        assert_eq!((got.timestamp, &got.payload[..]), (ts, payload), "{i}");
        assert_eq!(ro.meta(&id(i)).await.unwrap().unwrap().timestamp, ts, "{i}");
    }
    let many = ro
        .load_many(want.iter().map(|(i, _, _)| id(i)).collect())
        .await
        .unwrap();
    assert!(many.iter().all(|r| matches!(r, Ok(Some(_)))), "{many:?}");
    // Listed once each, in id order, across pages.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = ro.list_page(after.take(), 2).await.unwrap();
        listed.extend(page.rows.into_iter().map(|r| r.tx_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, ["a0", "a1", "a2", "b0", "b1", "y"]);
    let stats = ro.stats().await.unwrap();
    assert_eq!(stats.count, 6);
    assert_eq!(stats.bytes, 6 + 5 + 5 + 2 + 2 + 1);
    // a0's old timestamp (10.0) no longer counts: b0 is the oldest.
    assert_eq!((stats.oldest, stats.newest), (Some(20.0), Some(210.0)));
    // Expired before 25.0, one per page: b0 only, not the old version of a0.
    let first = ro.find_expired(1000.0, 975.0, None, 1).await.unwrap();
    assert_eq!(first.iter().map(|r| &r.tx_id).collect::<Vec<_>>(), ["b0"]);
    let rest = ro
        .find_expired(1000.0, 975.0, Some((20.0, "b0".into())), 1)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(snapshot(), before, "a read-only handle changed the store");

    // A writer replays the tails and deletes y: the read-only handle follows the index.
    let sm = st.open().await;
    assert!(sm.delete(&id("y")).await.unwrap());
    sm.close().await.unwrap();
    assert!(ro.load(&id("y")).await.unwrap().is_none());
    assert_eq!(ro.stats().await.unwrap().count, 5);
    let got = ro.load(&id("a0")).await.unwrap().unwrap();
    assert_eq!(got.payload, b"second");
    ro.close().await.unwrap();
}

/// A small append writes zeros after its records (padding), so that the appends after it
/// do not change the file's length and their `fdatasync` writes no metadata: later small
/// saves land inside it, nothing treats it as a torn tail, a store at rest (closed) holds
/// none, and padding a crash left behind is kept for the next append.
#[tokio::test]
async fn small_appends_write_padding_that_later_ones_fill() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("p0", 10.0, b"first")).await.unwrap();
    // The index is read from outside below: its commit lands now.
    sm.flush().await.unwrap();
    let seg = st.seg_files().pop().unwrap();
    let len = || std::fs::metadata(&seg).unwrap().len();
    let padded = len();
    let first = st.committed(&seg);
    assert!(padded >= first + 64 * 1024, "{padded} vs {first}");
    assert!(st.nothing_past_committed(), "padding is zeros");
    sm.save(tx("p1", 11.0, b"second")).await.unwrap();
    sm.flush().await.unwrap();
    assert!(st.committed(&seg) > first);
    assert_eq!(len(), padded, "filled, not grown");
    let report = sm.verify().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    sm.close().await.unwrap();
    assert_eq!(len(), st.committed(&seg), "a closed store keeps no padding");

    // Padding left by a crash (as a writer that never closed leaves it): read-only and
    // writable opens report nothing, cut nothing, and the next save fills it.
    let committed = st.committed(&seg);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(padded)
        .unwrap();
    let ro = st.open_read_only().await;
    assert!(ro.verify().await.unwrap().is_clean());
    ro.close().await.unwrap();
    let sm = st.open().await;
    sm.save(tx("p2", 12.0, b"third")).await.unwrap();
    sm.flush().await.unwrap();
    assert!(st.committed(&seg) > committed);
    assert_eq!(len(), padded, "the crash's padding was filled, not cut");
    for (i, p) in [("p0", &b"first"[..]), ("p1", b"second"), ("p2", b"third")] {
        assert_eq!(sm.load(&id(i)).await.unwrap().unwrap().payload, p);
    }
    let report = sm.recover(false).await.unwrap();
    assert!(report.findings.is_empty(), "{report:#?}");
    assert_eq!(len(), padded);
    sm.close().await.unwrap();
    assert_eq!(len(), st.committed(&seg));
}

/// A whole record past a committed length that is older than the index's high-water mark
/// (what a failed save or an uncommitted compaction step leaves) is never replayed: the
/// row keeps pointing where it did, and the copy is cut.
#[tokio::test]
async fn records_below_the_high_water_mark_are_never_replayed() {
    let st = Store::new();
    let sm = st.open().await;
    sm.save(tx("x", 10.0, b"x")).await.unwrap();
    sm.delete(&id("x")).await.unwrap();
    sm.save(tx("w", 11.0, b"w")).await.unwrap();
    sm.close().await.unwrap();
    // x's record, deleted since, appended again after the committed records.
    let (seg, _) = st.location("w");
    let x = std::fs::read(&seg).unwrap()[..record_len("x", b"x") as usize].to_vec();
    let committed = st.append_uncommitted(&seg, &x);

    let sm = st.open().await;
    assert!(
        !sm.exists(&id("x")).await.unwrap(),
        "a deleted tx came back"
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed);
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

/// `load_many` over many ids (split over readers, each part one read transaction) gives
/// exactly what one `load` per id gives, in order: the payloads, `None` for unknown ids,
/// and an integrity error naming a tx whose record was altered.
#[tokio::test]
async fn load_many_answers_like_one_load_per_id() {
    let st = Store::new();
    let sm = st.open().await;
    let txs: Vec<_> = (0..150)
        .map(|i| {
            tx(
                &format!("m{i:03}"),
                10.0 + f64::from(i),
                format!("p{i}").as_bytes(),
            )
        })
        .collect();
    sm.save_batch(txs).await.unwrap();
    let (seg, off) = st.location("m077");
    flip(&seg, off + record_len("m077", b"p77") - 1);
    let ids: Vec<_> = (0..200)
        .map(|i| id(&format!("m{:03}", (i * 7) % 200)))
        .collect();
    let many = sm.load_many(ids.clone()).await.unwrap();
    assert_eq!(many.len(), ids.len());
    for (i, got) in ids.iter().zip(many) {
        let one = sm.load(i).await;
        match (got, one) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{i}"),
            (Err(a), Err(b)) => {
                assert_eq!(i.as_str(), "m077");
                assert!(
                    matches!(a, StorageError::Integrity { ref tx_id, .. } if tx_id == "m077"),
                    "{a}"
                );
                assert_eq!(a.to_string(), b.to_string());
            }
            (a, b) => panic!("{i}: load_many {a:?}, load {b:?}"),
        }
    }
    let known = sm.load_many(vec![id("m001"), id("zz")]).await.unwrap();
    assert_eq!(known[0].as_ref().unwrap().as_ref().unwrap().payload, b"p1");
    assert!(known[1].as_ref().unwrap().is_none());
    sm.close().await.unwrap();
}

#[tokio::test]
async fn compaction_during_expiry_keeps_every_unexpired_tx() {
    let st = Store::new();
    let sm = st.open().await;
    let txs = (0..300)
        .map(|i| tx(&format!("c{i:03}"), i as f64, b"p"))
        .collect();
    sm.save_batch(txs).await.unwrap();
    // now - ts > 1000  <=>  ts < 260: windows 0-99 and 100-199 whole, 60 of 200-299.
    let mut gone = BTreeSet::new();
    loop {
        let ids = sm.delete_expired(1260.0, 1000.0, 7).await.unwrap();
        if ids.is_empty() {
            break;
        }
        gone.extend(ids);
    }
    assert_eq!(gone.len(), 260);
    // More passes: compaction copies the half-dead window forward.
    for _ in 0..5 {
        assert!(
            sm.delete_expired(1260.0, 1000.0, 7)
                .await
                .unwrap()
                .is_empty()
        );
        sm.save(tx("other", 5000.0, b"o")).await.unwrap();
    }
    for i in 260..300 {
        let got = sm.load(&id(&format!("c{i:03}"))).await.unwrap();
        assert!(got.is_some(), "c{i:03} lost");
    }
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}
