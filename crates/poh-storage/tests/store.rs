//! The storage API's basic contract: what is saved loads back identical and verified;
//! deletes, re-saves, paging and stats behave as documented.

mod common;
use common::{id, store, tx};
use poh_storage::{StorageError, StorageManager};

#[tokio::test]
async fn save_then_load_returns_every_field() {
    let (_d, sm) = store().await;
    let t = tx("t1", 1_700_000_000.25, b"hello");
    sm.save(t.clone()).await.unwrap();
    assert_eq!(sm.load(&id("t1")).await.unwrap(), Some(t));
    assert!(sm.exists(&id("t1")).await.unwrap());
    assert_eq!(sm.load(&id("nope")).await.unwrap(), None);
    assert!(!sm.exists(&id("nope")).await.unwrap());
    let on_disk = std::fs::read(sm.base().join("t1.bin")).unwrap();
    assert_eq!(on_disk, b"hello");
    sm.close().await.unwrap();
}

#[tokio::test]
async fn resave_replaces_payload_and_fields() {
    let (_d, sm) = store().await;
    sm.save(tx("t1", 10.0, b"old")).await.unwrap();
    let mut new = tx("t1", 20.0, b"new payload");
    new.holder_id = "other".into();
    sm.save(new.clone()).await.unwrap();
    assert_eq!(sm.load(&id("t1")).await.unwrap(), Some(new));
    assert_eq!(sm.stats().await.unwrap().count, 1);
}

#[tokio::test]
async fn delete_removes_row_and_file() {
    let (_d, sm) = store().await;
    sm.save(tx("t1", 10.0, b"x")).await.unwrap();
    assert!(sm.delete(&id("t1")).await.unwrap());
    assert!(!sm.delete(&id("t1")).await.unwrap());
    assert_eq!(sm.load(&id("t1")).await.unwrap(), None);
    assert!(!sm.base().join("t1.bin").exists());
}

#[tokio::test]
async fn batch_is_all_or_nothing_on_invalid_input() {
    let (_d, sm) = store().await;
    let mut bad = tx("b", 1.0, b"x");
    bad.timestamp = f64::NAN;
    let err = sm.save_batch(vec![tx("a", 1.0, b"x"), bad]).await.unwrap_err();
    assert!(matches!(err, StorageError::Invalid(_)), "{err}");
    assert_eq!(sm.stats().await.unwrap().count, 0);
    assert!(!sm.base().join("a.bin").exists());
}

#[tokio::test]
async fn concurrent_saves_all_land() {
    let (_d, sm) = store().await;
    let mut handles = Vec::new();
    for i in 0..64 {
        let sm = sm.clone();
        handles.push(tokio::spawn(async move {
            sm.save(tx(&format!("c{i}"), i as f64, format!("p{i}").as_bytes()))
                .await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let stats = sm.stats().await.unwrap();
    assert_eq!(stats.count, 64);
    for i in 0..64 {
        let got = sm.load(&id(&format!("c{i}"))).await.unwrap().unwrap();
        assert_eq!(got.payload, format!("p{i}").as_bytes());
    }
}

#[tokio::test]
async fn list_pages_cover_everything_once() {
    let (_d, sm) = store().await;
    let txs: Vec<_> = (0..25).map(|i| tx(&format!("id{i:03}"), 1.0, b"p")).collect();
    sm.save_batch(txs).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = sm.list_page(after, 10).await.unwrap();
        seen.extend(page.rows.iter().map(|r| r.tx_id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let want: Vec<_> = (0..25).map(|i| format!("id{i:03}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn stats_report_count_bytes_and_range() {
    let (_d, sm) = store().await;
    sm.save_batch(vec![tx("a", 5.0, b"12345"), tx("b", 9.0, b"123")])
        .await
        .unwrap();
    let s = sm.stats().await.unwrap();
    assert_eq!((s.count, s.bytes, s.oldest, s.newest), (2, 8, Some(5.0), Some(9.0)));
}

#[tokio::test]
async fn corrupted_payload_is_an_integrity_error_naming_the_tx() {
    let (_d, sm) = store().await;
    sm.save(tx("t1", 1.0, b"hello")).await.unwrap();
    std::fs::write(sm.base().join("t1.bin"), b"hellO").unwrap();
    let err = sm.load(&id("t1")).await.unwrap_err();
    assert!(matches!(err, StorageError::Integrity { ref tx_id, .. } if tx_id == "t1"), "{err}");
    assert!(err.to_string().contains("t1"));
}

#[tokio::test]
async fn closed_store_refuses_work() {
    let (_d, sm) = store().await;
    sm.close().await.unwrap();
    let err = sm.save(tx("a", 1.0, b"x")).await.unwrap_err();
    assert!(matches!(err, StorageError::Closed), "{err}");
}

#[tokio::test]
async fn reopen_keeps_data() {
    let dir = tempfile::TempDir::new().unwrap();
    let (b, db) = (dir.path().join("d"), dir.path().join("d/poh.db"));
    let sm = StorageManager::open(&b, &db).await.unwrap();
    sm.save(tx("keep", 3.0, b"abc")).await.unwrap();
    sm.close().await.unwrap();
    let sm = StorageManager::open(&b, &db).await.unwrap();
    assert_eq!(sm.load(&id("keep")).await.unwrap().unwrap().payload, b"abc");
}
