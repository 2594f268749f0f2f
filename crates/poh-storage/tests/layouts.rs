//! Both layouts answer the same API the same way: one scripted workload (saves, re-saves
//! across time windows, batches, deletes, expiry, paging, stats) gives identical results on
//! a flat-file store and a segments store; the layout is recorded at creation and an
//! explicit mismatch is refused.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{id, tx};
use poh_storage::{Layout, OpenOptions, StorageError, StorageManager, Tx};
use tempfile::TempDir;

fn opts(layout: Layout) -> OpenOptions {
    OpenOptions {
        layout: Some(layout),
        segment_window: (layout == Layout::Segments).then_some(Duration::from_secs(100)),
        ..OpenOptions::default()
    }
}

async fn open(dir: &TempDir, layout: Layout) -> StorageManager {
    StorageManager::open_with(
        dir.path().join("data"),
        dir.path().join("data/poh.db"),
        opts(layout),
    )
    .await
    .expect("open store")
}

fn t(id: &str, ts: f64, payload: &str) -> Tx {
    tx(id, ts, payload.as_bytes())
}

/// Runs the script and returns every answer as text.
async fn script(sm: &StorageManager) -> Vec<String> {
    let mut out = Vec::new();
    let mut log = |what: &str, v: String| out.push(format!("{what}: {v}"));
    log(
        "save a",
        format!("{:?}", sm.save(t("a", 150.0, "a-one")).await),
    );
    log(
        "save b",
        format!("{:?}", sm.save(t("b", 250.0, "b-one")).await),
    );
    // Re-save into another window, with another holder and size.
    let mut a2 = t("a", 950.0, "a-two, longer");
    a2.holder_id = "other holder".into();
    log("resave a", format!("{:?}", sm.save(a2).await));
    log(
        "batch",
        format!(
            "{:?}",
            sm.save_batch(vec![
                t("c", 120.0, "c"),
                t("d", 990.0, ""),
                t("e", 310.0, "e-one"),
                t("c", 130.0, "c-again in one batch"),
            ])
            .await
        ),
    );
    let mut bad = t("f", 1.0, "f");
    bad.timestamp = -1.0;
    let r = sm.save_batch(vec![t("g", 1.0, "g"), bad]).await;
    log(
        "invalid batch",
        format!("{}", matches!(r, Err(StorageError::Invalid(_)))),
    );
    log("delete b", format!("{:?}", sm.delete(&id("b")).await));
    log("delete b again", format!("{:?}", sm.delete(&id("b")).await));
    log(
        "delete never",
        format!("{:?}", sm.delete(&id("never")).await),
    );
    for i in ["a", "b", "c", "d", "e", "g"] {
        log(
            &format!("load {i}"),
            format!(
                "{:?}",
                sm.load(&id(i))
                    .await
                    .map(|o| o.map(|t| (t.clone(), t.payload)))
            ),
        );
        log(&format!("meta {i}"), format!("{:?}", sm.meta(&id(i)).await));
        log(
            &format!("exists {i}"),
            format!("{:?}", sm.exists(&id(i)).await),
        );
    }
    log("stats", format!("{:?}", sm.stats().await));
    log("page 1", format!("{:?}", sm.list_page(None, 2).await));
    log(
        "page 2",
        format!("{:?}", sm.list_page(Some("c".into()), 2).await),
    );
    log(
        "find expired",
        format!("{:?}", sm.find_expired(1000.0, 600.0, None, 10).await),
    );
    let expired: BTreeSet<String> = sm
        .delete_expired(1000.0, 600.0, 100)
        .await
        .expect("expire")
        .into_iter()
        .collect();
    log("expired", format!("{expired:?}"));
    log(
        "expired again",
        format!("{:?}", sm.delete_expired(1000.0, 600.0, 100).await),
    );
    log(
        "load many",
        format!("{:?}", sm.load_many(vec![id("a"), id("c"), id("d")]).await),
    );
    log("stats after", format!("{:?}", sm.stats().await));
    log(
        "verify",
        format!("{:?}", sm.verify().await.map(|r| r.is_clean())),
    );
    out
}

#[tokio::test]
async fn both_layouts_give_the_same_answers() {
    let mut results = Vec::new();
    for layout in [Layout::Files, Layout::Segments] {
        let dir = TempDir::new().unwrap();
        let sm = open(&dir, layout).await;
        results.push(script(&sm).await);
        sm.close().await.unwrap();
        // And again after a reopen, on the same data.
        let sm = open(&dir, layout).await;
        results.push(vec![
            format!("{:?}", sm.stats().await),
            format!("{:?}", sm.load(&id("d")).await),
        ]);
        sm.close().await.unwrap();
    }
    for (f, s) in results[0].iter().zip(&results[2]) {
        assert_eq!(f, s, "files and segments differ");
    }
    assert_eq!(results[0].len(), results[2].len());
    assert_eq!(results[1], results[3]);
}

#[tokio::test]
async fn expiry_with_a_small_limit_takes_only_expired_txs_and_finishes() {
    for layout in [Layout::Files, Layout::Segments] {
        let dir = TempDir::new().unwrap();
        let sm = open(&dir, layout).await;
        let txs: Vec<Tx> = (0..40)
            .map(|i| t(&format!("x{i:02}"), 25.0 * i as f64, "p"))
            .collect();
        sm.save_batch(txs).await.unwrap();
        let mut gone = BTreeSet::new();
        loop {
            let ids = sm.delete_expired(1000.0, 500.0, 7).await.unwrap();
            assert!(ids.len() <= 7, "{layout}: {} > limit", ids.len());
            if ids.is_empty() {
                break;
            }
            gone.extend(ids);
        }
        // now - ts > ttl  <=>  ts < 500
        let want: BTreeSet<String> = (0..20).map(|i| format!("x{i:02}")).collect();
        assert_eq!(gone, want, "{layout}");
        assert_eq!(sm.stats().await.unwrap().count, 20, "{layout}");
        assert!(sm.verify().await.unwrap().is_clean(), "{layout}");
        sm.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_layout_is_recorded_and_a_mismatch_is_refused() {
    let dir = TempDir::new().unwrap();
    let (base, db) = (dir.path().join("data"), dir.path().join("data/poh.db"));
    let sm = open(&dir, Layout::Segments).await;
    sm.save(t("a", 1.0, "x")).await.unwrap();
    sm.close().await.unwrap();
    assert!(base.join(poh_storage::LAYOUT_FILE).exists());
    assert!(
        !base.join("a.bin").exists(),
        "no payload file in a segments store"
    );

    // No layout asked: the recorded one.
    let sm = StorageManager::open(&base, &db).await.unwrap();
    assert_eq!(sm.load(&id("a")).await.unwrap().unwrap().payload, b"x");
    sm.close().await.unwrap();

    // The other one asked: refused, naming both.
    let err = StorageManager::open_with(&base, &db, opts(Layout::Files))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::LayoutMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("segments") && msg.contains("files"), "{msg}");

    // Another window: refused too.
    let other = OpenOptions {
        segment_window: Some(Duration::from_secs(60)),
        ..opts(Layout::Segments)
    };
    let err = StorageManager::open_with(&base, &db, other)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::LayoutMismatch { .. }), "{err}");

    // A flat-file store asked to be segments: refused, nothing created.
    let fdir = TempDir::new().unwrap();
    let sm = open(&fdir, Layout::Files).await;
    sm.save(t("a", 1.0, "x")).await.unwrap();
    sm.close().await.unwrap();
    let before = common::snapshot::snapshot(fdir.path());
    let err = StorageManager::open_with(
        fdir.path().join("data"),
        fdir.path().join("data/poh.db"),
        opts(Layout::Segments),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::LayoutMismatch { .. }), "{err}");
    assert_eq!(common::snapshot::snapshot(fdir.path()), before);
}

/// How a save reaches the engine: with `OpenOptions::inline_saves`, a lone save on a
/// multi-threaded runtime commits on its caller's thread; on a current-thread runtime,
/// with the option off, or with other saves in progress it goes through the writer
/// thread. Every way gives the same answers, for both layouts, mixed with concurrent
/// saves; and the default (off) serves a `LocalSet`, where blocking the thread would be
/// refused with a panic.
#[test]
fn saves_answer_the_same_on_the_callers_thread_and_through_the_writer() {
    #[derive(Debug, Clone, Copy)]
    enum Way {
        CurrentThread,
        MultiThread { inline: bool },
        LocalSet,
    }
    let ways = [
        Way::CurrentThread,
        Way::MultiThread { inline: true },
        Way::MultiThread { inline: false },
        Way::LocalSet,
    ];
    for layout in [Layout::Files, Layout::Segments] {
        let mut answers: Vec<(Way, Vec<String>)> = Vec::new();
        for way in ways {
            let rt = match way {
                Way::CurrentThread => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            }
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
            // On a current-thread runtime the option is on and has no effect.
            let inline = match way {
                Way::CurrentThread => true,
                Way::MultiThread { inline } => inline,
                Way::LocalSet => OpenOptions::default().inline_saves,
            };
            let run = async move {
                let dir = TempDir::new().unwrap();
                let sm = StorageManager::open_with(
                    dir.path().join("data"),
                    dir.path().join("data/poh.db"),
                    OpenOptions {
                        inline_saves: inline,
                        ..opts(layout)
                    },
                )
                .await
                .expect("open store");
                let mut out = script(&sm).await;
                // Concurrent saves beside lone ones: all land, none twice.
                let mut handles = Vec::new();
                for i in 0..32 {
                    let sm = sm.clone();
                    handles.push(tokio::spawn(async move {
                        sm.save(t(&format!("k{i:02}"), 100.0 + i as f64, "k")).await
                    }));
                }
                sm.save(t("lone", 5.0, "lone")).await.unwrap();
                for h in handles {
                    h.await.unwrap().unwrap();
                }
                sm.close().await.unwrap();
                let sm = open(&dir, layout).await;
                out.push(format!("{:?}", sm.stats().await.map(|s| s.count)));
                out.push(format!("{:?}", sm.load(&id("lone")).await));
                out.push(format!("{:?}", sm.load(&id("k31")).await));
                sm.close().await.unwrap();
                out
            };
            let got = match way {
                Way::LocalSet => rt.block_on(
                    tokio::task::LocalSet::new()
                        .run_until(async move { tokio::task::spawn_local(run).await.unwrap() }),
                ),
                _ => rt.block_on(run),
            };
            answers.push((way, got));
        }
        let (first_way, first) = &answers[0];
        assert!(first.iter().any(|a| a.contains("lone")), "{first:?}");
        for (way, got) in &answers[1..] {
            assert_eq!(got, first, "{layout}: {way:?} differs from {first_way:?}");
        }
    }
}

#[tokio::test]
async fn concurrent_saves_and_loads_on_segments() {
    let dir = TempDir::new().unwrap();
    let sm = open(&dir, Layout::Segments).await;
    let mut handles = Vec::new();
    for i in 0..64 {
        let sm = sm.clone();
        handles.push(tokio::spawn(async move {
            sm.save(t(&format!("c{i}"), (i * 10) as f64, &format!("p{i}")))
                .await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(sm.stats().await.unwrap().count, 64);
    for i in 0..64 {
        let got = sm.load(&id(&format!("c{i}"))).await.unwrap().unwrap();
        assert_eq!(got.payload, format!("p{i}").as_bytes());
    }
    sm.close().await.unwrap();
}

/// `load_small_now` (a load on the calling thread, for callers that cannot afford a
/// hand-off) answers exactly as `load` does or declines: the tx for a small payload,
/// `None` for an unknown id, and a decline — never a wrong answer — for a payload over
/// the limit or one that does not verify, which `load` then reports precisely.
#[tokio::test]
async fn small_loads_on_the_calling_thread_answer_as_load_or_decline() {
    for layout in [Layout::Files, Layout::Segments] {
        let dir = TempDir::new().unwrap();
        let sm = open(&dir, layout).await;
        let small = t("small", 1.0, "tiny");
        let big = tx("big", 2.0, &[7u8; 5000]);
        sm.save_batch(vec![small.clone(), big.clone()])
            .await
            .unwrap();
        assert_eq!(
            sm.load_small_now(&id("small"), 4096),
            Some(Some(small.clone())),
            "{layout}"
        );
        assert_eq!(sm.load_small_now(&id("nope"), 4096), Some(None), "{layout}");
        assert_eq!(sm.load_small_now(&id("big"), 4096), None, "{layout}");
        assert_eq!(
            sm.load_small_now(&id("big"), 5000),
            Some(Some(big)),
            "{layout}"
        );
        if layout == Layout::Files {
            std::fs::write(dir.path().join("data/small.bin"), b"TINY").unwrap();
            assert_eq!(sm.load_small_now(&id("small"), 4096), None);
            let err = sm.load(&id("small")).await.unwrap_err();
            assert!(matches!(err, StorageError::Integrity { .. }), "{err}");
            std::fs::remove_file(dir.path().join("data/small.bin")).unwrap();
            assert_eq!(sm.load_small_now(&id("small"), 4096), None);
            let err = sm.load(&id("small")).await.unwrap_err();
            assert!(matches!(err, StorageError::PayloadMissing { .. }), "{err}");
        }
        sm.close().await.unwrap();
    }
}
