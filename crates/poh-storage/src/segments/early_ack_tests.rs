//! Small save groups answered before their index commit (docs/design.md §7.3c), driven
//! on the engine directly (no writer thread, so no timer settles them behind the test).

use std::path::{Path, PathBuf};
use std::time::Duration;

use poh_types::{Tx, TxId};

use super::SegmentsEngine;
use super::writer::SegmentsWriter;
use crate::engine::{Engine, EngineReader, EngineWriter};
use crate::files::lock::StoreLock;
use crate::layout::Layout;
use crate::options::OpenOptions;
use crate::poison::Poison;

fn tx(id: &str, ts: f64, payload: &[u8]) -> Tx {
    Tx {
        tx_id: TxId::new(id).expect("id"),
        holder_id: "holder".into(),
        timestamp: ts,
        payload: payload.to_vec(),
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    base: PathBuf,
    db: PathBuf,
    engine: SegmentsEngine,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::TempDir::new().expect("tempdir");
        let base = root.path().join("data");
        std::fs::create_dir(&base).expect("base");
        let db = base.join("poh.db");
        let opts = OpenOptions {
            create: true,
            layout: Some(Layout::Segments),
            lock_timeout: Duration::from_millis(50),
            ..OpenOptions::default()
        };
        let engine = SegmentsEngine::open(base.clone(), db.clone(), &opts, None).expect("open");
        Self {
            _root: root,
            base,
            db,
            engine,
        }
    }

    /// The writing half, with an age bound no test reaches: only the count of groups
    /// decides when they commit, however slowly the test runs.
    fn writer(&self) -> SegmentsWriter {
        let mut w = self
            .engine
            .segments_writer(Poison::default(), true)
            .expect("writer");
        w.early_age = Duration::from_secs(3600);
        w
    }

    /// Installs `trigger` from another connection once `w` has saved and committed a
    /// first tx ("seed"): the failure a test injects into a later save or commit.
    fn seeded_with(&self, w: &mut dyn EngineWriter, trigger: &str) -> rusqlite::Connection {
        save(w, &[tx("seed", 10.0, b"s")]);
        w.settle().expect("settle");
        let conn = rusqlite::Connection::open(&self.db).expect("outside");
        conn.execute_batch(trigger).expect("trigger");
        conn
    }

    /// A second engine on the same store (another process's handle).
    fn open_again(&self) -> SegmentsEngine {
        let opts = OpenOptions {
            layout: Some(Layout::Segments),
            lock_timeout: Duration::from_millis(50),
            ..OpenOptions::default()
        };
        let recorded = crate::layout::Recorded {
            layout: Layout::Segments,
            window_secs: crate::layout::DEFAULT_SEGMENT_WINDOW.as_secs(),
        };
        SegmentsEngine::open(self.base.clone(), self.db.clone(), &opts, Some(recorded))
            .expect("open again")
    }

    /// The ids another process finds in the index.
    fn indexed(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.db).expect("outside connection");
        let mut stmt = conn
            .prepare("SELECT tx_id FROM records ORDER BY tx_id")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<Vec<String>, _>>()
            .expect("rows")
    }

    /// True when another process could take the store lock now.
    fn lock_free(&self) -> bool {
        let lock = StoreLock::open_existing(&self.base, Duration::from_millis(10))
            .expect("lock file")
            .expect("a lock file");
        lock.try_exclusive().expect("try lock").is_some()
    }
}

fn save(w: &mut dyn EngineWriter, txs: &[Tx]) {
    for r in w.save_group(&[txs]) {
        r.expect("save");
    }
}

fn seen(r: &mut dyn EngineReader, ids: &[&str]) {
    for i in ids {
        let id = TxId::new(*i).expect("id");
        let got = r.load(&id).expect("load").expect("found");
        assert_eq!(got.tx_id, id);
        assert!(r.contains(i).expect("contains"), "{i}");
        assert!(r.row(i).expect("row").is_some(), "{i}");
    }
    let page = r.page_ids(None, 100).expect("page");
    assert_eq!(page, ids, "listing");
    assert_eq!(r.stats().expect("stats").count, ids.len() as u64, "count");
    let expired = r.find_expired(1e12, 1.0, None, 100).expect("expired");
    assert_eq!(expired.len(), ids.len(), "expiry scan");
}

fn path_of(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn small_groups_are_seen_here_at_once_and_elsewhere_at_their_shared_commit() {
    let f = Fixture::new();
    let mut w = f.writer();
    let w: &mut dyn EngineWriter = &mut w;
    let mut r = f.engine.reader().expect("reader");
    save(w, &[tx("a", 10.0, b"first")]);
    assert!(w.unsettled());
    seen(r.as_mut(), &["a"]);
    assert!(f.indexed().is_empty(), "not yet committed");
    assert!(
        !f.lock_free(),
        "held until the commit: {}",
        path_of(&f.base)
    );
    // The next small group joins the same transaction; a re-save replaces in place.
    save(w, &[tx("b", 11.0, b"second"), tx("a", 12.0, b"again")]);
    seen(r.as_mut(), &["a", "b"]);
    let a = r.load(&TxId::new("a").expect("id")).expect("load");
    assert_eq!(a.map(|t| t.payload), Some(b"again".to_vec()));
    assert!(f.indexed().is_empty());
    w.settle().expect("settle");
    assert!(!w.unsettled());
    assert_eq!(f.indexed(), ["a", "b"]);
    assert!(f.lock_free());
    seen(r.as_mut(), &["a", "b"]);
}

#[test]
fn the_eighth_small_group_and_any_big_one_or_other_command_commit_at_once() {
    let f = Fixture::new();
    let mut w = f.writer();
    let w: &mut dyn EngineWriter = &mut w;
    let ids: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        save(w, &[tx(id, 10.0 + i as f64, b"p")]);
        let want: Vec<String> = if i == 7 { ids.clone() } else { Vec::new() };
        assert_eq!(f.indexed(), want, "after group {i}");
    }
    assert!(!w.unsettled());
    // A group of more than 16 txs commits itself and the small ones before it.
    save(w, &[tx("t", 30.0, b"p")]);
    let big: Vec<Tx> = (0..17)
        .map(|i| tx(&format!("u{i:02}"), 31.0, b"p"))
        .collect();
    save(w, &big);
    assert_eq!(f.indexed().len(), 8 + 1 + 17);
    assert!(!w.unsettled());
    // A delete commits what waits first, then itself.
    save(w, &[tx("v", 40.0, b"p")]);
    assert!(w.delete(&TxId::new("s0").expect("id")).expect("delete"));
    let now = f.indexed();
    assert!(now.contains(&"v".to_string()) && !now.contains(&"s0".to_string()));
    assert!(!w.unsettled());
}

#[test]
fn a_failed_group_keeps_the_groups_answered_before_it() {
    let f = Fixture::new();
    let mut w = f.writer();
    let w: &mut dyn EngineWriter = &mut w;
    let mut r = f.engine.reader().expect("reader");
    f.seeded_with(
        w,
        "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.tx_id = 'bad'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    save(w, &[tx("ok", 11.0, b"answered")]);
    let failed = w.save_group(&[&[tx("bad", 12.0, b"refused")]]);
    assert!(failed[0].is_err(), "{failed:?}");
    // The group answered before it is committed with the failure, never rolled back.
    assert!(!w.unsettled());
    assert_eq!(f.indexed(), ["ok", "seed"]);
    seen(r.as_mut(), &["ok", "seed"]);
}

#[test]
fn a_failed_shared_commit_loses_no_answered_save() {
    let f = Fixture::new();
    let mut w = f.writer();
    let w: &mut dyn EngineWriter = &mut w;
    let mut r = f.engine.reader().expect("reader");
    // The commit that would index "late" fails (the generation bump is refused).
    let conn = f.seeded_with(
        w,
        "CREATE TRIGGER boom BEFORE UPDATE ON seg_config
         WHEN EXISTS (SELECT 1 FROM records WHERE tx_id = 'late')
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    save(w, &[tx("late", 11.0, b"answered")]);
    let err = w.settle().expect_err("the commit fails");
    assert!(err.to_string().contains("injected failure"), "{err}");
    // Answered, so still served here; the index lost it, the segment did not.
    seen(r.as_mut(), &["late", "seed"]);
    assert_eq!(f.indexed(), ["seed"]);
    assert!(f.lock_free(), "released after the failure");
    conn.execute_batch("DROP TRIGGER boom")
        .expect("drop trigger");
    // The next command replays the segment tails into the index first.
    assert!(
        !w.delete(&TxId::new("nothing").expect("id"))
            .expect("delete")
    );
    assert_eq!(f.indexed(), ["late", "seed"]);
    seen(r.as_mut(), &["late", "seed"]);
}

#[test]
fn closing_commits_what_waits() {
    let f = Fixture::new();
    let mut w = f.writer();
    save(&mut w, &[tx("a", 10.0, b"x")]);
    assert!(f.indexed().is_empty());
    drop(w);
    assert_eq!(f.indexed(), ["a"]);
    assert!(f.lock_free());
}

#[test]
fn a_writer_that_dies_before_its_shared_commit_leaves_the_next_one_its_saves() {
    // Two handles on one store, as two processes: the second has already replayed the
    // tails (its first command) when the first dies holding answered groups.
    let f = Fixture::new();
    let other = f.open_again();
    let ttl = 1000.0;
    let fresh = 1_000_000.0;
    let old = fresh - 10.0 * ttl;
    for expire in [false, true] {
        let mut a = f.writer();
        // "k" keeps x's first segment alive once x moves (a group that empties a segment
        // commits at once).
        save(&mut a, &[tx("x", fresh, b"first"), tx("k", fresh, b"keep")]);
        a.settle().expect("settle");
        let mut b = other
            .segments_writer(Poison::default(), true)
            .expect("writer");
        assert!(!b.delete(&TxId::new("none").expect("id")).expect("delete"));
        // A re-save into another window, answered, then the writer dies uncommitted.
        save(&mut a, &[tx("x", old, b"second")]);
        assert!(a.unsettled());
        a.die();
        let mut r = other.reader().expect("reader");
        if expire {
            // The other writer's expiry takes the answered version; the first never
            // comes back.
            let gone = b.delete_expired(fresh, ttl, 100).expect("expire");
            assert_eq!(gone, ["x"]);
            assert_eq!(r.load(&TxId::new("x").expect("id")).expect("load"), None);
        } else {
            // The other writer appends to the same window: the answered record is
            // indexed first, never cut as a dead writer's tail.
            save(&mut b, &[tx("y", old, b"other")]);
            b.settle().expect("settle");
            let x = r.load(&TxId::new("x").expect("id")).expect("load");
            assert_eq!(x.map(|t| t.payload), Some(b"second".to_vec()));
            assert!(b.delete(&TxId::new("x").expect("id")).expect("delete"));
            assert!(b.delete(&TxId::new("y").expect("id")).expect("delete"));
        }
        drop(b);
    }
}

/// A reader racing the writer's shared commits never misses an answered save: each look
/// made after a save was answered lists and counts it, whether the save's rows are still
/// answered-only (served from the overlay) or already committed (the overlay is cleared
/// then). The commit can land between any two steps of a look; a listing that read the
/// index before taking the overlay would miss the rows of a commit landing in between.
#[test]
fn a_look_racing_the_shared_commit_sees_every_answered_save() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const SAVES: usize = 1000;
    let f = Fixture::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut w = f.writer();
    let mut r = f.engine.reader().expect("reader");
    let looks = {
        let (answered, done) = (answered.clone(), done.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !done.load(Ordering::SeqCst) {
                let before = answered.load(Ordering::SeqCst);
                let page = r.page_ids(None, SAVES + 1).expect("page");
                assert!(
                    page.len() >= before,
                    "listed {} of {before} answered saves",
                    page.len()
                );
                let before = answered.load(Ordering::SeqCst);
                let count = r.stats().expect("stats").count as usize;
                assert!(
                    count >= before,
                    "counted {count} of {before} answered saves"
                );
                if let Some(last) = answered.load(Ordering::SeqCst).checked_sub(1) {
                    let id = TxId::new(format!("r{last:05}")).expect("id");
                    assert!(r.load(&id).expect("load").is_some(), "{id} not found");
                }
                looks += 1;
            }
            looks
        })
    };
    for i in 0..SAVES {
        save(&mut w, &[tx(&format!("r{i:05}"), 10.0, b"p")]);
        answered.store(i + 1, Ordering::SeqCst);
        if i % 2 == 1 {
            w.settle().expect("settle");
        }
    }
    done.store(true, Ordering::SeqCst);
    let looks = looks.join().expect("reader thread");
    assert!(looks > 0);
}

/// A writer skips reading the index's generation only while it holds answered groups of
/// its own (the store lock and its write transaction held since its last commit). Two
/// writers, as two processes, take turns appending to one time window: while one holds
/// its answered groups the other cannot take the lock; once they are committed, the next
/// save of either must see what the other appended there, or it would write over it.
#[test]
fn writers_taking_turns_in_one_window_never_write_over_each_other() {
    let f = Fixture::new();
    let other = f.open_again();
    let mut a = f.writer();
    let mut b = other
        .segments_writer(Poison::default(), true)
        .expect("writer");
    let mut want: Vec<String> = Vec::new();
    for turn in 0..6 {
        let (w, name): (&mut SegmentsWriter, &str) = if turn % 2 == 0 {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        for k in 0..3 {
            let id = format!("{name}{turn}-{k}");
            save(w, &[tx(&id, 10.0, id.as_bytes())]);
            want.push(id);
        }
        assert!(
            w.unsettled(),
            "turn {turn}: the groups wait for their commit"
        );
        assert!(!f.lock_free(), "turn {turn}: held until their commit");
        w.settle().expect("settle");
    }
    want.sort();
    assert_eq!(f.indexed(), want);
    for r in [f.engine.reader(), other.reader()] {
        let mut r = r.expect("reader");
        for id in &want {
            let got = r
                .load(&TxId::new(id.as_str()).expect("id"))
                .expect("load")
                .expect("found");
            assert_eq!(got.payload, id.as_bytes(), "{id}");
        }
    }
}
