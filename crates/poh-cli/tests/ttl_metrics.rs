//! `poh-ttl run --metrics ADDR` over real HTTP against the real binary: counters and store
//! gauges move after passes, `/healthz` turns 503 with a reason when the store becomes
//! unreadable and back to 200 when it returns (the daemon reopens it by itself), the
//! address binds to loopback unless one is given, and bad or busy addresses fail the start.
//! Tests poll the endpoint with a bounded deadline until what they wait for shows.

mod common;

use std::net::TcpListener;

use common::daemon::*;
use common::ttl::*;

/// `run` arguments for the store under `dir`: a short interval so passes come quickly.
fn run_args(dir: &tempfile::TempDir, metrics: &str) -> Vec<String> {
    let mut a: Vec<String> = store_args(dir).into();
    a.extend(["--ttl", "1h", "--interval", "50ms", "--metrics", metrics].map(String::from));
    a
}

/// Saves txs with the `poh-storage` binary (a second process, as a node's writer would).
fn save(dir: &tempfile::TempDir, id: &str, ts: f64) {
    let tx = poh_types::Tx::new(id, "holder-1", ts, b"payload".to_vec())
        .expect("valid tx")
        .to_json();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poh-storage"))
        .args(store_args(dir))
        .args(["save", "--tx", &tx])
        .env_remove("RUST_LOG")
        .output()
        .expect("run poh-storage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_move_after_passes_and_the_store_gauges_follow() {
    let now = real_now();
    let mut txs = many("old", 3, |i| now - 7200.0 - i as f64);
    txs.push(("fresh".into(), now));
    let dir = store_with(&txs);
    let mut d = Daemon::start(&run_args(&dir, "127.0.0.1:0"), &[]);
    let addr = d.metrics_addr();
    assert!(addr.ip().is_loopback());

    let t = scrape_until(addr, "a completed pass", |t| {
        metric(t, "poh_ttl_passes_total").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(metric(&t, "poh_ttl_expired_total"), Some(3.0), "{t}");
    assert_eq!(metric(&t, "poh_ttl_pass_failures_total"), Some(0.0));
    assert_eq!(metric(&t, "poh_ttl_store_txs"), Some(1.0), "{t}");
    let bytes = "payload of fresh".len() as f64; // what `store_with` saved
    assert_eq!(metric(&t, "poh_ttl_store_bytes"), Some(bytes), "{t}");
    assert_eq!(metric(&t, "poh_ttl_expiry_lag_seconds"), Some(0.0));
    assert_eq!(metric(&t, "poh_ttl_healthy"), Some(1.0));
    assert_eq!(metric(&t, "poh_ttl_ttl_seconds"), Some(3600.0));
    assert_eq!(metric(&t, "poh_ttl_interval_seconds"), Some(0.05));
    let version = format!(
        "poh_ttl_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&t, &version), Some(1.0), "{t}");
    let last = metric(&t, "poh_ttl_last_success_timestamp_seconds").expect("last success");
    assert!(last >= now, "{last} < {now}");
    assert!(
        metric(
            &t,
            "poh_ttl_pass_duration_seconds_count{result=\"success\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{t}"
    );
    assert!(
        t.contains("# TYPE poh_ttl_pass_duration_seconds histogram")
            && t.contains("poh_ttl_pass_duration_seconds_bucket{result=\"success\",le=\"+Inf\"}"),
        "{t}"
    );
    for (name, kind) in [
        ("poh_ttl_passes_total", "counter"),
        ("poh_ttl_pass_failures_total", "counter"),
        ("poh_ttl_expired_total", "counter"),
        ("poh_ttl_store_reopens_total", "counter"),
        ("poh_ttl_store_txs", "gauge"),
        ("poh_ttl_store_bytes", "gauge"),
        ("poh_ttl_expiry_lag_seconds", "gauge"),
        ("poh_ttl_last_success_timestamp_seconds", "gauge"),
        ("poh_ttl_consecutive_failures", "gauge"),
        ("poh_ttl_healthy", "gauge"),
        ("poh_ttl_build_info", "gauge"),
    ] {
        assert!(t.contains(&format!("# TYPE {name} {kind}")), "{name}: {t}");
        assert!(t.contains(&format!("# HELP {name} ")), "{name}: {t}");
    }
    let r = get(addr, "/metrics");
    assert!(r.headers.contains("text/plain; version=0.0.4"), "{r:?}");

    // Two more expired txs from another process: a later pass expires them.
    save(&dir, "late-1", now - 7200.0);
    save(&dir, "late-2", now - 7200.0);
    let t = scrape_until(addr, "the late txs expired", |t| {
        metric(t, "poh_ttl_expired_total") == Some(5.0)
    });
    let passes = metric(&t, "poh_ttl_passes_total").expect("passes");
    assert!(passes >= 2.0, "{t}");
    // Store gauges are read at the scrape; the late txs are gone by now.
    assert_eq!(metric(&t, "poh_ttl_store_txs"), Some(1.0), "{t}");

    let h = get(addr, "/healthz");
    assert_eq!(h.status, 200, "{h:?}");
    assert!(
        h.body.starts_with("ok: the last TTL pass succeeded"),
        "{h:?}"
    );

    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
}

#[test]
fn health_turns_503_when_the_store_becomes_unreadable_and_200_when_it_is_back() {
    let now = real_now();
    let dir = store_with(&many("old", 2, |i| now - 7200.0 - i as f64));
    let (base, _) = paths(&dir);
    let away = dir.path().join("unplugged");
    let mut d = Daemon::start(&run_args(&dir, "127.0.0.1:0"), &[]);
    let addr = d.metrics_addr();
    let ok = health_until(addr, 200);
    assert!(ok.body.starts_with("ok: "), "{ok:?}");

    // The store's directory goes away (as an unmounted or dead device's would): the next
    // pass fails and health turns red with the reason.
    std::fs::rename(&base, &away).expect("move the store away");
    let red = health_until(addr, 503);
    assert!(red.body.starts_with("unhealthy: the last"), "{red:?}");
    assert!(
        red.body.contains("TTL pass") && red.body.contains(&base.display().to_string()),
        "the reason names the failure and the store: {red:?}"
    );
    let t = scrape_until(addr, "a failed pass", |t| {
        metric(t, "poh_ttl_pass_failures_total").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(metric(&t, "poh_ttl_healthy"), Some(0.0), "{t}");
    assert!(
        metric(&t, "poh_ttl_consecutive_failures").is_some_and(|n| n >= 1.0),
        "{t}"
    );
    assert!(
        metric(
            &t,
            "poh_ttl_pass_duration_seconds_count{result=\"failure\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{t}"
    );
    assert!(
        !base.exists(),
        "the daemon never recreates a vanished store"
    );

    // It comes back (with one more expired tx): the daemon reopens the store by itself and
    // health turns green, without a restart.
    std::fs::rename(&away, &base).expect("move the store back");
    save(&dir, "while-away", now - 7200.0);
    let back = health_until(addr, 200);
    assert!(back.body.starts_with("ok: "), "{back:?}");
    // Every expired tx is gone once the store is empty: a pass cut by the move may have
    // committed its deletes and still failed (the store vanished under it), so the
    // expired count may be short of 3; what the store holds is checked below.
    let t = scrape_until(addr, "the pass after the recovery", |t| {
        metric(t, "poh_ttl_store_txs") == Some(0.0)
            && metric(t, "poh_ttl_expired_total").is_some_and(|n| n >= 1.0)
            && metric(t, "poh_ttl_consecutive_failures") == Some(0.0)
    });
    assert!(
        metric(&t, "poh_ttl_store_reopens_total").is_some_and(|n| n >= 1.0),
        "{t}"
    );
    assert_eq!(metric(&t, "poh_ttl_healthy"), Some(1.0));
    assert_eq!(metric(&t, "poh_ttl_consecutive_failures"), Some(0.0));

    let (status, log) = d.stop();
    let log = log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("store reopened"), "{log}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poh-storage"))
        .args(store_args(&dir))
        .arg("list")
        .env_remove("RUST_LOG")
        .output()
        .expect("run poh-storage list");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]", "{out:?}");
}

#[test]
fn a_bare_port_listens_on_loopback_only() {
    let dir = store_with(&[]);
    for spec in ["0", ":0"] {
        let mut d = Daemon::start(&run_args(&dir, spec), &[]);
        let addr = d.metrics_addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "--metrics {spec}");
        assert_eq!(get(addr, "/healthz").status, 200);
        let (status, _) = d.stop();
        assert!(status.success());
    }
}

#[test]
fn other_paths_and_methods_are_refused() {
    let dir = store_with(&[]);
    let mut d = Daemon::start(&run_args(&dir, "127.0.0.1:0"), &[]);
    let addr = d.metrics_addr();
    let r = get(addr, "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("/metrics and /healthz"), "{r:?}");
    let r = request(addr, "POST", "/metrics");
    assert_eq!(r.status, 405, "{r:?}");
    assert!(
        r.headers.to_ascii_lowercase().contains("allow: get, head"),
        "{r:?}"
    );
    let r = request(addr, "HEAD", "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    d.stop();
}

#[test]
fn a_bad_address_is_a_usage_error_and_a_busy_port_fails_the_start() {
    let dir = store_with(&[]);
    let out = bin()
        .arg("run")
        .args(store_args(&dir))
        .args([
            "--ttl",
            "1h",
            "--interval",
            "1h",
            "--metrics",
            "localhost:9464",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not PORT, :PORT or IP:PORT"), "{err}");

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = bin()
        .arg("run")
        .args(store_args(&dir))
        .args(["--ttl", "1h", "--interval", "1h", "--metrics", &port])
        .timeout(SAFETY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listen for metrics on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// The expiry lag follows the daemon's clock, over real HTTP: the endpoint and daemon are
/// assembled in-process as `run` assembles them, with a manual clock instead of the
/// system's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_lag_follows_an_injected_clock() {
    use std::sync::Arc;
    use std::time::Duration;

    use poh_cli::ttl::metrics::Metrics;
    use poh_cli::ttl::serve::Endpoint;
    use poh_cli::ttl::{bind_metrics, start_endpoint};
    use poh_storage::OpenOptions;
    use poh_ttl::{Clock, HealthPolicy, ManualClock, ReopeningStore, TtlManager};

    const T: f64 = 1_700_000_000.0;
    let ttl = Duration::from_secs(100);
    let hour = Duration::from_secs(3600);
    let dir = tempfile::TempDir::new().unwrap();
    let (base, db) = paths(&dir);
    let sm = poh_storage::StorageManager::open(&base, &db).await.unwrap();
    seed(&sm, &[("a".into(), T), ("b".into(), T + 30.0)]).await;
    sm.close().await.unwrap();

    let store = Arc::new(
        ReopeningStore::open(&base, &db, OpenOptions::default())
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(T + 50.0);
    let metrics = Metrics::new(ttl, hour);
    let daemon = TtlManager::new(store.clone(), ttl)
        .unwrap()
        .with_clock(clock.clone())
        .spawn_with(hour, metrics.clone())
        .unwrap();
    daemon
        .subscribe()
        .wait_for(|s| s.passes == 1)
        .await
        .unwrap();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let endpoint = Arc::new(Endpoint::new(
        metrics,
        daemon.monitor(),
        store.clone(),
        HealthPolicy::for_interval(hour),
        shared,
        ttl,
    ));
    let listener = bind_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (addr, server) = start_endpoint(listener, endpoint, stopped).unwrap();
    let lag = move || async move {
        let t = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
            .await
            .unwrap()
            .body;
        metric(&t, "poh_ttl_expiry_lag_seconds").unwrap_or_else(|| panic!("no lag in {t}"))
    };

    assert_eq!(lag().await, 0.0, "nothing expired at T+50");
    clock.set(T + 160.0); // "a" expired 60 s ago; no pass runs for an hour
    assert_eq!(lag().await, 60.0);
    clock.set(T + 400.5);
    assert_eq!(lag().await, 300.5);
    // Health reads the same clock: 3 intervals without a pass is red.
    clock.set(T + 50.0 + 3.0 * 3600.0 + 1.0);
    let h = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap();
    assert_eq!(h.status, 503, "{h:?}");
    assert!(h.body.contains("no TTL pass has succeeded for 3h"), "{h:?}");

    let _ = stop.send(());
    server.await.unwrap();
    daemon.shutdown().await.unwrap();
    store.close().await.unwrap();
}
