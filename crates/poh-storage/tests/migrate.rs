//! `migrate` converts a store between layouts losing nothing: every tx arrives identical
//! (fields and payload, verified), in place or to a new path; the source of a copy is left
//! as it was; and a run cut by a power loss or an I/O error at any file operation, or
//! between the two renames of an in-place swap, is finished by running it again.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::sim::SimStore;
use common::snapshot::snapshot;
use common::{id, tx};
use poh_storage::{Layout, OpenOptions, StorageManager, Tx, migrate};
use poh_testkit::sim::Fault;
use tempfile::TempDir;

fn txs(n: usize) -> Vec<Tx> {
    (0..n)
        .map(|i| {
            tx(
                &format!("m{i:02}"),
                100.0 * i as f64,
                format!("payload {i}").repeat(i % 5 + 1).as_bytes(),
            )
        })
        .collect()
}

/// A store of `n` txs, one of them re-saved and one deleted (`n - 1` remain).
async fn create(base: &Path, db: &Path, layout: Layout, opts: OpenOptions, n: usize) {
    let sm = StorageManager::open_with(
        base,
        db,
        OpenOptions {
            layout: Some(layout),
            ..opts
        },
    )
    .await
    .unwrap();
    sm.save_batch(txs(n)).await.unwrap();
    // A re-save and a delete, so the source holds history.
    sm.save(tx("m03", 7.0, b"re-saved")).await.unwrap();
    sm.delete(&id("m04")).await.unwrap();
    sm.close().await.unwrap();
}

async fn contents(base: &Path, db: &Path, opts: OpenOptions) -> (Layout, BTreeMap<String, Tx>) {
    let sm = StorageManager::open_with(
        base,
        db,
        OpenOptions {
            create: false,
            ..opts
        },
    )
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    let page = sm.list_page(None, 1000).await.unwrap();
    for r in page.rows {
        let t = sm.load(&id(&r.tx_id)).await.unwrap().unwrap();
        out.insert(r.tx_id, t);
    }
    assert!(sm.verify().await.unwrap().is_clean());
    let layout = sm.layout();
    sm.close().await.unwrap();
    (layout, out)
}

fn paths(dir: &TempDir) -> (PathBuf, PathBuf) {
    let base = dir.path().join("data");
    (base.clone(), base.join("poh.db"))
}

#[tokio::test]
async fn in_place_both_ways_keeps_every_tx_and_the_old_store() {
    let dir = TempDir::new().unwrap();
    let (base, db) = paths(&dir);
    create(&base, &db, Layout::Files, OpenOptions::default(), 40).await;
    let (_, before) = contents(&base, &db, OpenOptions::default()).await;
    assert_eq!(before.len(), 39);

    let r = migrate(&base, &db, Layout::Segments, None, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!((r.copied, r.verified), (39, 39), "{r:?}");
    let kept = r.previous.clone().expect("the old store is kept");
    assert!(kept.join("m00.bin").is_file());
    let (layout, after) = contents(&base, &db, OpenOptions::default()).await;
    assert_eq!(layout, Layout::Segments);
    assert_eq!(after, before);
    assert!(!base.join("m00.bin").exists());

    // Again: nothing to do.
    let r = migrate(&base, &db, Layout::Segments, None, OpenOptions::default())
        .await
        .unwrap();
    assert!(r.unchanged, "{r:?}");

    // And back, once the first copy is moved away.
    std::fs::rename(&kept, dir.path().join("first-copy")).unwrap();
    let r = migrate(&base, &db, Layout::Files, None, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(r.verified, 39);
    let (layout, back) = contents(&base, &db, OpenOptions::default()).await;
    assert_eq!(layout, Layout::Files);
    assert_eq!(back, before);
}

#[tokio::test]
async fn to_a_new_path_leaves_the_source_as_it_was() {
    let dir = TempDir::new().unwrap();
    let (base, db) = paths(&dir);
    create(&base, &db, Layout::Segments, OpenOptions::default(), 40).await;
    let (_, before) = contents(&base, &db, OpenOptions::default()).await;
    let snap = snapshot(&base);
    let dest = (dir.path().join("out"), dir.path().join("out/poh.db"));
    let r = migrate(
        &base,
        &db,
        Layout::Files,
        Some(dest.clone()),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.verified, 39);
    assert_eq!(r.base, dest.0);
    let s = snapshot(&base);
    // Reads may leave SQLite's WAL index behind; the data files are as they were.
    let data = |m: &common::snapshot::Snapshot| -> Vec<(PathBuf, String)> {
        m.iter()
            .filter(|(p, _)| !p.to_string_lossy().contains("poh.db"))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect()
    };
    assert_eq!(data(&s), data(&snap), "the source changed");
    let (layout, copied) = contents(&dest.0, &dest.1, OpenOptions::default()).await;
    assert_eq!(layout, Layout::Files);
    assert_eq!(copied, before);
}

#[tokio::test]
async fn a_swap_cut_between_its_renames_is_finished_by_a_rerun() {
    let dir = TempDir::new().unwrap();
    let (base, db) = paths(&dir);
    create(&base, &db, Layout::Files, OpenOptions::default(), 40).await;
    let (_, before) = contents(&base, &db, OpenOptions::default()).await;
    // A complete, marked destination, then the first rename only: what a kill leaves.
    let staged = dir.path().join("data.migrate");
    let r = migrate(
        &base,
        &db,
        Layout::Segments,
        Some((staged.clone(), staged.join("poh.db"))),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.verified, 39);
    std::fs::write(staged.join(poh_storage::MIGRATED_MARKER), b"complete\n").unwrap();
    std::fs::rename(&base, dir.path().join("data.pre-migrate")).unwrap();
    let existing = OpenOptions {
        create: false,
        ..OpenOptions::default()
    };
    assert!(
        StorageManager::open_with(&base, &db, existing)
            .await
            .is_err(),
        "no store at the base"
    );

    let r = migrate(&base, &db, Layout::Segments, None, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(r.previous, Some(dir.path().join("data.pre-migrate")));
    let (layout, after) = contents(&base, &db, OpenOptions::default()).await;
    assert_eq!(layout, Layout::Segments);
    assert_eq!(after, before);
    assert!(!base.join(poh_storage::MIGRATED_MARKER).exists());
}

/// A copy cut at every file operation — by a power loss (the simulated file system keeps
/// what was synced) or an I/O error — and run again ends with every tx of the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_at_any_operation_is_finished_by_a_rerun() {
    for (from, to) in [
        (Layout::Files, Layout::Segments),
        (Layout::Segments, Layout::Files),
    ] {
        let s = SimStore::with_layout(from);
        create(&s.base, &s.db, from, s.options(), 8).await;
        let (_, before) = contents(&s.base, &s.db, s.options()).await;
        let dest_base = s.dir.path().join("dest");
        let dest = (dest_base.clone(), s.dir.path().join("dest.db"));
        std::fs::create_dir_all(&dest_base).unwrap(); // the lock file is real
        let saved = s.save_state();
        let opts = || OpenOptions {
            fs: Arc::new(s.sim.clone()),
            segment_window: s.options().segment_window,
            ..OpenOptions::default()
        };
        let clean_db = |p: &Path| {
            for suffix in ["", "-wal", "-shm"] {
                let mut f = p.as_os_str().to_owned();
                f.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(f));
            }
        };
        let start = s.sim.ops();
        migrate(&s.base, &s.db, to, Some(dest.clone()), opts())
            .await
            .unwrap();
        let total = s.sim.ops() - start;
        let mut points = 0;
        for n in 0..total {
            for cut in [true, false] {
                s.restore_state(&saved);
                clean_db(&dest.1);
                if cut {
                    s.sim.halt_after(n);
                } else {
                    s.sim.inject(Fault::nth(n + 1, libc::EIO));
                }
                let first = migrate(&s.base, &s.db, to, Some(dest.clone()), opts()).await;
                if cut {
                    s.sim.power_loss();
                } else {
                    s.sim.clear_faults();
                }
                let r = migrate(&s.base, &s.db, to, Some(dest.clone()), opts())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{from}->{to}: rerun after op {n} (cut {cut}, first {first:?}): {e}")
                    });
                assert_eq!(r.verified, 7, "{from}->{to} after op {n}");
                let (layout, after) = contents(&dest.0, &dest.1, opts()).await;
                assert_eq!(layout, to);
                assert_eq!(after, before, "{from}->{to}: op {n}, cut {cut}");
                points += 1;
            }
        }
        eprintln!("{from} -> {to}: copy cut at {points} points, each finished by a rerun");
    }
}
