//! The PostgreSQL engine against a real, throwaway server (`poh_testkit::pg`: initdb and
//! pg_ctl from the machine's binaries): skipped with a note where none exist, mandatory
//! under `POH_REQUIRE_ALL=1`. Each test starts its own cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use poh_storage::{Layout, OpenOptions, ProblemKind, StorageError, StorageManager, Tx, TxId};
use poh_testkit::pg::{self, PgCluster};

const NOW: f64 = 1_700_000_000.0;

fn tx(id: &str, ts: f64) -> Tx {
    Tx::new(
        id,
        "holder-1",
        ts,
        format!("payload of {id} at {ts}").into_bytes(),
    )
    .expect("valid tx")
}

fn id(s: &str) -> TxId {
    TxId::new(s).expect("valid id")
}

async fn open(url: &str, opts: OpenOptions) -> poh_storage::Result<StorageManager> {
    StorageManager::open_with("unused-base", url, opts).await
}

async fn open_ok(url: &str) -> StorageManager {
    open(url, OpenOptions::default()).await.expect("open store")
}

/// All ids, through list pages.
async fn ids(sm: &StorageManager) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = sm.list_page(after.take(), 7).await.expect("list");
        out.extend(page.rows.into_iter().map(|r| r.tx_id));
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

fn rows_of(c: &PgCluster, db: &str, id: &str) -> u64 {
    c.psql(
        db,
        &format!("SELECT count(*) FROM poh_txs WHERE tx_id = '{id}'"),
    )
    .expect("psql")
    .parse()
    .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_loads_lists_deletes_and_resaves_across_handles() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("basic").expect("createdb");
    let sm = open_ok(&url).await;
    assert_eq!(sm.layout(), Layout::Postgres);
    let odd = "('127.0.0.1', 5)";
    let mut batch: Vec<Tx> = (0..30)
        .map(|i| tx(&format!("t{i:02}"), NOW - f64::from(i) * 1000.0))
        .collect();
    batch.push(tx(odd, NOW));
    sm.save_batch(batch.clone()).await.expect("save batch");
    let mut want: Vec<String> = batch.iter().map(|t| t.tx_id.to_string()).collect();
    want.sort();
    assert_eq!(ids(&sm).await, want, "list is in id order, paged");
    for t in &batch {
        assert_eq!(sm.load(&t.tx_id).await.expect("load").as_ref(), Some(t));
    }
    assert_eq!(sm.load(&id("nope")).await.expect("load"), None);
    let st = sm.stats().await.expect("stats");
    assert_eq!(st.count, 31);
    assert_eq!(st.newest, Some(NOW));
    assert_eq!(st.oldest, Some(NOW - 29_000.0));

    // A re-save moves the tx to another window's partition: still one row.
    let moved = tx("t05", NOW + 7200.0);
    sm.save(moved.clone()).await.expect("re-save");
    assert_eq!(rows_of(&c, "basic", "t05"), 1);
    assert!(sm.delete(&id("t06")).await.expect("delete"));
    assert!(!sm.delete(&id("t06")).await.expect("delete again"));

    // Another handle (another node) sees the same store.
    let other = open(
        &url,
        OpenOptions {
            create: false,
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .await
    .expect("open read-only");
    assert_eq!(other.load(&id("t05")).await.expect("load"), Some(moved));
    assert_eq!(other.load(&id("t06")).await.expect("load"), None);
    let e = other
        .save(tx("x", NOW))
        .await
        .expect_err("read-only handle");
    assert!(matches!(e, StorageError::ReadOnly(_)), "{e}");
    assert!(sm.verify().await.expect("verify").is_clean());
    other.close().await.expect("close");
    sm.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_drops_whole_partitions_and_spares_fresh_resaves() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("ttl").expect("createdb");
    let opts = OpenOptions {
        segment_window: Some(Duration::from_secs(100)),
        ..OpenOptions::default()
    };
    let sm = open(&url, opts.clone()).await.expect("open");
    // Windows of 100 s; TTL 1000 s at NOW: everything before NOW - 1000 is expired.
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.push(tx(&format!("old{i}"), NOW - 5000.0 + f64::from(i))); // one old window
        batch.push(tx(&format!("older{i}"), NOW - 9000.0 + f64::from(i))); // another
        batch.push(tx(&format!("edge{i}"), NOW - 1050.0 + f64::from(i) * 10.0)); // boundary
        batch.push(tx(&format!("new{i}"), NOW - f64::from(i)));
    }
    sm.save_batch(batch).await.expect("save");
    // Re-saved with a fresh timestamp: must survive.
    sm.save(tx("old3", NOW)).await.expect("re-save");
    let parts_before: u64 = c
        .psql(
            "ttl",
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'poh_txs'::regclass",
        )
        .expect("psql")
        .parse()
        .expect("count");
    let mut expired = Vec::new();
    loop {
        let got = sm.delete_expired(NOW, 1000.0, 4).await.expect("expire");
        let n = got.len();
        expired.extend(got);
        if n < 4 {
            break;
        }
    }
    let expired: BTreeSet<String> = expired.into_iter().collect();
    let mut want: BTreeSet<String> = BTreeSet::new();
    for i in 0..10 {
        if i != 3 {
            want.insert(format!("old{i}"));
        }
        want.insert(format!("older{i}"));
        // edge i has timestamp NOW - 1050 + 10 i: expired when 1050 - 10 i > 1000.
        if 1050 - 10 * i > 1000 {
            want.insert(format!("edge{i}"));
        }
    }
    assert_eq!(expired, want);
    let left: BTreeSet<String> = ids(&sm).await.into_iter().collect();
    assert!(left.contains("old3") && left.contains("new0") && left.contains("edge5"));
    assert!(left.is_disjoint(&want));
    let old_parts: u64 = c
        .psql(
            "ttl",
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'poh_txs'::regclass AND c.relname IN \
             ('poh_txs_p16999950', 'poh_txs_p16999910')",
        )
        .expect("psql")
        .parse()
        .expect("count");
    assert_eq!(old_parts, 0, "the two wholly expired windows were dropped");
    assert!(parts_before >= 2);
    // A pass with nothing to expire expires nothing, and finishes the earlier drops:
    // the parked tables and the directory entries of the dropped windows are gone.
    assert!(
        sm.delete_expired(NOW, 1000.0, 4)
            .await
            .expect("expire")
            .is_empty()
    );
    let count = |sql: &str| c.psql("ttl", sql).expect("psql");
    assert_eq!(
        count("SELECT count(*) FROM pg_class WHERE relname LIKE 'poh\\_trash\\_%'"),
        "0"
    );
    assert_eq!(
        count("SELECT count(*) FROM poh_ids WHERE tx_id LIKE 'old%' AND tx_id <> 'old3'"),
        "0"
    );
    assert!(sm.verify().await.expect("verify").is_clean());
    sm.close().await.expect("close");

    // Detaching instead of dropping keeps the rows, outside the store.
    let detach = open(
        &url,
        OpenOptions {
            detach_expired: true,
            ..opts
        },
    )
    .await
    .expect("open");
    detach.save(tx("gone", NOW - 7000.0)).await.expect("save");
    let got = detach
        .delete_expired(NOW, 1000.0, 100)
        .await
        .expect("expire");
    assert_eq!(got, vec!["gone".to_owned()]);
    assert_eq!(detach.load(&id("gone")).await.expect("load"), None);
    let report = detach.verify().await.expect("verify");
    assert!(
        report.is_clean(),
        "a drop being finished is no problem: {report:?}"
    );
    let more = detach
        .delete_expired(NOW, 1000.0, 100)
        .await
        .expect("expire");
    assert!(more.is_empty());
    assert_eq!(
        c.psql("ttl", "SELECT tx_id FROM poh_expired_p16999930")
            .expect("psql"),
        "gone"
    );
    detach.close().await.expect("close");
}

/// Waits until `n` sessions of database `db` match `cond` (a `pg_stat_activity` condition).
async fn wait_sessions(c: &PgCluster, db: &str, cond: &str, n: u64) {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND {cond}");
    for _ in 0..6000 {
        let got: u64 = c.psql(db, &sql).expect("psql").parse().expect("a count");
        if got >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = c
        .psql(
            db,
            "SELECT pid, state, wait_event_type, wait_event, query FROM pg_stat_activity",
        )
        .unwrap_or_default();
    panic!("never {n} sessions with {cond}:\n{all}");
}

/// A tx of an expired window re-saved (into the same window) while another node finishes
/// that window's drop: the drop's clean-up of the window's directory entries must not
/// take the re-saved one, whose row it could not see when its statement began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_drop_keeps_a_tx_resaved_into_the_dropped_window() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("refill").expect("createdb");
    let opts = OpenOptions {
        segment_window: Some(Duration::from_secs(100)),
        ..OpenOptions::default()
    };
    let a = open(&url, opts.clone()).await.expect("open");
    let b = open(&url, opts).await.expect("open");
    let old = NOW - 5000.0;
    b.save(tx("k", old)).await.expect("save");
    // Node a drops the window (parked until its next pass).
    let got = a.delete_expired(NOW, 1000.0, 100).await.expect("expire");
    assert_eq!(got, vec!["k".to_owned()]);
    // A session holds k's directory entry, so node b's re-save stops after writing its
    // row and before its directory entry, and a's next pass queues behind it there.
    let mut hold = c.psql_session("refill").expect("psql");
    hold.send("BEGIN; SELECT 1 FROM poh_ids WHERE tx_id = 'k' FOR UPDATE;")
        .expect("send");
    wait_sessions(&c, "refill", "state = 'idle in transaction'", 1).await;
    let again = tx("k", old + 1.0);
    let saver = {
        let (b, again) = (b.clone(), again.clone());
        tokio::spawn(async move { b.save(again).await })
    };
    wait_sessions(&c, "refill", "wait_event_type = 'Lock'", 1).await;
    // A node with a longer TTL: its pass only finishes the earlier drop.
    let pass = {
        let a = a.clone();
        tokio::spawn(async move { a.delete_expired(NOW, 1.0e9, 100).await })
    };
    wait_sessions(&c, "refill", "wait_event_type = 'Lock'", 2).await;
    hold.send("COMMIT;").expect("send");
    hold.finish().expect("psql session");
    saver.await.expect("task").expect("re-save");
    assert!(pass.await.expect("task").expect("expire").is_empty());
    assert_eq!(a.load(&id("k")).await.expect("load"), Some(again));
    let report = a.verify().await.expect("verify");
    assert!(report.is_clean(), "{:#?}", report.findings);
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_never_served_and_recover_quarantines_it() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("corrupt").expect("createdb");
    let sm = open_ok(&url).await;
    sm.save_batch(vec![tx("good", NOW), tx("bad", NOW)])
        .await
        .expect("save");
    c.psql(
        "corrupt",
        "UPDATE poh_txs SET payload = 'tampered' WHERE tx_id = 'bad'",
    )
    .expect("tamper");
    let e = sm.load(&id("bad")).await.expect_err("corrupt payload");
    assert!(matches!(e, StorageError::Integrity { .. }), "{e}");
    let many = sm
        .load_many(vec![id("good"), id("bad"), id("absent")])
        .await
        .expect("load_many");
    assert!(matches!(&many[0], Ok(Some(t)) if t.tx_id.as_str() == "good"));
    assert!(
        matches!(&many[1], Err(StorageError::Integrity { .. })),
        "{:?}",
        many[1]
    );
    assert!(matches!(&many[2], Ok(None)));
    let report = sm.verify().await.expect("verify");
    let bad: Vec<_> = report.of_kind(ProblemKind::Corrupt).collect();
    assert_eq!(bad.len(), 1, "{report:?}");
    assert_eq!(bad[0].tx_id, "bad");
    assert_eq!(rows_of(&c, "corrupt", "bad"), 1, "verify changes nothing");
    let report = sm.recover(false).await.expect("recover");
    assert_eq!(report.of_kind(ProblemKind::Corrupt).count(), 1);
    assert_eq!(sm.load(&id("bad")).await.expect("load"), None);
    assert_eq!(
        c.psql(
            "corrupt",
            "SELECT tx_id || ':' || encode(payload, 'escape') FROM poh_quarantine"
        )
        .expect("psql"),
        "bad:tampered",
        "the last copy is kept, out of the store"
    );
    assert!(sm.verify().await.expect("verify").is_clean());
    assert!(sm.load(&id("good")).await.expect("load").is_some());

    // The id directory loses an entry: the row is invisible to loads until recover points
    // the directory at it again (the rows are the truth).
    c.psql("corrupt", "DELETE FROM poh_ids WHERE tx_id = 'good'")
        .expect("lose it");
    assert_eq!(sm.load(&id("good")).await.expect("load"), None);
    let report = sm.verify().await.expect("verify");
    assert_eq!(
        report
            .of_kind(ProblemKind::Database)
            .map(|f| f.tx_id.as_str())
            .collect::<Vec<_>>(),
        ["good"],
        "{report:?}"
    );
    sm.recover(false).await.expect("recover");
    assert_eq!(
        sm.load(&id("good")).await.expect("load"),
        Some(tx("good", NOW))
    );
    assert!(sm.verify().await.expect("verify").is_clean());
    // An entry without a row is reported, and removed by recover.
    c.psql("corrupt", "INSERT INTO poh_ids VALUES ('ghost', 1)")
        .expect("plant it");
    let report = sm.verify().await.expect("verify");
    assert_eq!(
        report
            .of_kind(ProblemKind::Database)
            .map(|f| f.tx_id.as_str())
            .collect::<Vec<_>>(),
        ["ghost"]
    );
    sm.recover(false).await.expect("recover");
    assert!(sm.verify().await.expect("verify").is_clean());
    sm.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_credentials_and_databases_fail_clearly() {
    let Some(c) = pg::cluster() else { return };
    let pw = c.password().to_owned();
    let port = c.port();
    let shown = |e: &StorageError| {
        let s = poh_storage::error_chain(e);
        assert!(!s.contains(&pw), "password shown: {s}");
        s
    };
    // No database name.
    let e = open(
        &format!("postgres://poh:{pw}@127.0.0.1:{port}"),
        OpenOptions::default(),
    )
    .await
    .expect_err("no db");
    assert!(matches!(e, StorageError::BadUrl { .. }), "{}", shown(&e));
    // Unparsable.
    let e = open(
        "postgres://poh@127.0.0.1:notaport/x",
        OpenOptions::default(),
    )
    .await
    .expect_err("bad port");
    assert!(matches!(e, StorageError::BadUrl { .. }), "{}", shown(&e));
    // Wrong password.
    let e = open(
        &format!("postgres://poh:wrong-{pw}@127.0.0.1:{port}/postgres"),
        OpenOptions::default(),
    )
    .await
    .expect_err("wrong password");
    let s = shown(&e);
    assert!(s.contains("refused the credentials"), "{s}");
    // Missing database: no store.
    let e = open(&c.url("missing"), OpenOptions::default())
        .await
        .expect_err("missing db");
    assert!(matches!(e, StorageError::NotFound { .. }), "{}", shown(&e));
    assert!(shown(&e).contains("missing"), "{}", shown(&e));
    // A database without the store's tables is no store unless asked to create one.
    let url = c.create_db("empty").expect("createdb");
    for opts in [
        OpenOptions {
            create: false,
            ..OpenOptions::default()
        },
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    ] {
        let e = open(&url, opts).await.expect_err("no tables");
        assert!(matches!(e, StorageError::NotFound { .. }), "{}", shown(&e));
    }
    assert_eq!(
        c.psql(
            "empty",
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'poh%'"
        )
        .expect("psql"),
        "0"
    );
    // A local layout asked for with a database URL.
    let e = open(
        &url,
        OpenOptions {
            layout: Some(Layout::Segments),
            ..OpenOptions::default()
        },
    )
    .await
    .expect_err("layout");
    assert!(
        matches!(e, StorageError::LayoutMismatch { .. }),
        "{}",
        shown(&e)
    );
    // Another window than the store's.
    open_ok(&url).await.close().await.expect("close");
    let e = open(
        &url,
        OpenOptions {
            segment_window: Some(Duration::from_secs(60)),
            ..OpenOptions::default()
        },
    )
    .await
    .expect_err("window");
    assert!(
        matches!(e, StorageError::LayoutMismatch { .. }),
        "{}",
        shown(&e)
    );
    // The postgres layout without a URL.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let e = StorageManager::open_with(
        dir.path().join("data"),
        dir.path().join("data/poh.db"),
        OpenOptions {
            layout: Some(Layout::Postgres),
            ..OpenOptions::default()
        },
    )
    .await
    .expect_err("postgres without url");
    assert!(matches!(e, StorageError::BadUrl { .. }), "{e}");
    assert!(!dir.path().join("data").exists(), "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_loses_no_acknowledged_save_and_the_handle_reconnects() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("crash").expect("createdb");
    let sm = open_ok(&url).await;
    let writer = {
        let sm = sm.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for b in 0..400 {
                let batch: Vec<Tx> = (0..25)
                    .map(|i| tx(&format!("b{b:03}-{i:02}"), NOW + f64::from(b)))
                    .collect();
                match sm.save_batch(batch.clone()).await {
                    Ok(()) => acked.extend(batch),
                    Err(_) => {
                        failed += 1;
                        if failed >= 1 && !acked.is_empty() {
                            return (acked, failed);
                        }
                    }
                }
            }
            (acked, failed)
        })
    };
    // Let some saves through, then crash the server under the writer.
    loop {
        let st = sm.stats().await.expect("stats");
        if st.count >= 500 {
            break;
        }
        tokio::task::yield_now().await;
    }
    c.stop_immediate().expect("crash the server");
    let (acked, failed) = writer.await.expect("writer task");
    assert!(
        failed >= 1,
        "a save during the outage fails (after retries)"
    );
    c.start_server().expect("restart");
    // The same handle works again: the pool replaced its dead connections.
    sm.save(tx("after", NOW)).await.expect("save after restart");
    for t in &acked {
        assert_eq!(
            sm.load(&t.tx_id).await.expect("load").as_ref(),
            Some(t),
            "{}",
            t.tx_id
        );
    }
    assert!(sm.verify().await.expect("verify").is_clean());
    sm.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_resaving_and_expiring_never_duplicate_or_lose() {
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("nodes").expect("createdb");
    let a = open_ok(&url).await;
    let b = open_ok(&url).await;
    let mut tasks = Vec::new();
    for (n, sm) in [(0u32, a.clone()), (1, b.clone())] {
        // Writers: fresh txs re-saved over and over by both nodes, and expired ones.
        let w = sm.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..40u32 {
                let mut batch: Vec<Tx> = (0..20)
                    .map(|i| tx(&format!("fresh{i:02}"), NOW - f64::from(round + n)))
                    .collect();
                batch.extend((0..5).map(|i| tx(&format!("stale{n}-{round}-{i}"), NOW - 50_000.0)));
                w.save_batch(batch).await.expect("save");
            }
        }));
        // TTL passes on both nodes at once.
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                sm.delete_expired(NOW, 10_000.0, 50).await.expect("expire");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    while !a
        .delete_expired(NOW, 10_000.0, 1000)
        .await
        .expect("expire")
        .is_empty()
    {}
    let dupes = c
        .psql(
            "nodes",
            "SELECT count(*) FROM (SELECT tx_id FROM poh_txs GROUP BY tx_id HAVING count(*) > 1) d",
        )
        .expect("psql");
    assert_eq!(dupes, "0", "one row per id");
    let left = ids(&b).await;
    let want: Vec<String> = (0..20).map(|i| format!("fresh{i:02}")).collect();
    assert_eq!(left, want, "every fresh tx kept, every expired one gone");
    for id_ in &want {
        let t = a.load(&id(id_)).await.expect("load").expect("present");
        assert!(t.timestamp >= NOW - 41.0);
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_asked_with_the_server_certificate_verified() {
    let Some(c) = pg::cluster() else { return };
    let openssl = poh_testkit::require::check_command("openssl", &["version"]);
    if poh_testkit::require::prerequisite("openssl (to make test certificates)", openssl).is_none()
    {
        return;
    }
    let url = c.create_db("tls").expect("createdb");
    let ca = c.enable_tls().expect("enable TLS");
    // Not asked for: plain, as before.
    open_ok(&url).await.close().await.expect("close");
    // Asked for, but the server's certificate is signed by an unknown CA: refused.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let other_ca = dir.path().join("other-ca.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = open(
        &format!("{url}?sslmode=require&sslrootcert={}", other_ca.display()),
        OpenOptions::default(),
    )
    .await
    .expect_err("unknown CA");
    let msg = poh_storage::error_chain(&e);
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    // Asked for, with the CA: TLS is in use.
    let sm = open(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
        OpenOptions::default(),
    )
    .await
    .expect("open over TLS");
    sm.save(tx("secret", NOW)).await.expect("save");
    let tls_sessions = c
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'poh-store' AND s.ssl",
        )
        .expect("psql");
    assert_ne!(tls_sessions, "0", "the store's connections use TLS");
    sm.close().await.expect("close");
}

/// What the store holds, as the server sees it: ids, hashes and timestamps.
fn db_snapshot(c: &PgCluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT count(*) || ' ' || coalesce(md5(string_agg(tx_id || ':' || storage_hash || ':' \
         || timestamp::text, ',' ORDER BY tx_id)), '') FROM poh_txs",
    )
    .expect("psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_writes_nothing_and_hostile_ids_are_only_data() {
    use poh_testkit::hostile::{SMALL_LIMIT, json_cases, valid_doc};
    let Some(c) = pg::cluster() else { return };
    let url = c.create_db("hostile").expect("createdb");
    let opts = OpenOptions {
        limits: poh_storage::Limits {
            max_payload_bytes: SMALL_LIMIT,
        },
        ..OpenOptions::default()
    };
    let sm = open(&url, opts).await.expect("open");
    sm.save(tx("t", NOW))
        .await
        .expect_err("over the small limit");
    sm.save(Tx::new("t", "h", NOW, b"small".to_vec()).expect("tx"))
        .await
        .expect("seed");
    let before = db_snapshot(&c, "hostile");
    let cases = json_cases();
    for case in &cases {
        let parsed = serde_json::from_slice::<poh_types::TxJson>(&case.input)
            .map_err(poh_types::JsonError::from)
            .and_then(|j| Tx::from_wire(j, sm.limits()));
        let res = match parsed {
            Err(e) => Err(e.to_string()),
            Ok(t) => sm.save(t).await.map_err(|e| e.to_string()),
        };
        let err = res.expect_err(&format!("{} was accepted", case.name));
        for w in &case.expect {
            assert!(
                err.to_lowercase().contains(&w.to_lowercase()),
                "{}: {err}",
                case.name
            );
        }
        assert_eq!(
            db_snapshot(&c, "hostile"),
            before,
            "{} changed the store",
            case.name
        );
    }
    let valid = Tx::from_json(
        std::str::from_utf8(&valid_doc()).expect("utf-8"),
        sm.limits(),
    );
    sm.save(valid.expect("the valid document"))
        .await
        .expect("save");
    // Ids that look like SQL, quotes, backslashes, any script: stored and listed as they
    // are (every value is a bound parameter; partition names never come from input).
    let odd = [
        "'; DROP TABLE poh_txs; --",
        "a\\b\"c",
        "%_*?[]",
        "ünïcödé-ид-标识",
        "('127.0.0.1', 5)",
    ];
    for id_ in odd {
        sm.save(Tx::new(id_, "h'\"", NOW, b"x".to_vec()).expect("tx"))
            .await
            .expect(id_);
    }
    for id_ in odd {
        let t = sm.load(&id(id_)).await.expect("load").expect(id_);
        assert_eq!(t.holder_id, "h'\"");
    }
    let listed = ids(&sm).await;
    for id_ in odd {
        assert!(listed.iter().any(|l| l == id_), "{id_}");
    }
    assert!(sm.verify().await.expect("verify").is_clean());
    sm.close().await.expect("close");
}
