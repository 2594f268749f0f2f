//! Power cuts under a PostgreSQL server: its data directory lives on a loop-mounted ext4
//! that `EXT4_IOC_SHUTDOWN` with NOLOGFLUSH cuts while saves are in flight (what the
//! device had not been told to keep is lost), the server is killed, the file system
//! remounted and the server restarted, which replays its WAL. The server's own default is
//! set to `synchronous_commit = off` — commits acknowledged before their WAL is flushed —
//! and still no acknowledged save may be missing: every session of the engine forces
//! `synchronous_commit = on`.
//!
//! Needs root with loop devices and PostgreSQL binaries (skipped with a note otherwise,
//! mandatory under `POH_REQUIRE_ALL=1`). `POH_PG_POWER_CUTS` sets the number of cuts
//! (default 3).

use std::collections::BTreeMap;
use std::process::Command;

use poh_storage::{OpenOptions, StorageManager, Tx};
use poh_testkit::ext4::{EXT4_GOING_FLAGS_NOLOGFLUSH, Ext4Mount};
use poh_testkit::pg::{PgCluster, check_postgres};
use poh_testkit::require::{prerequisite, root_with_loop};

fn tx(id: String, i: u32) -> Tx {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    Tx::new(id, "h", now, i.to_le_bytes().repeat(64)).expect("valid tx")
}

/// The live (not zombie) processes whose parent is `ppid`, from `/proc` (no procps).
fn children(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if stat_fields(p).is_some_and(|f| f.0 != "Z" && f.1 == ppid) {
            out.push(p);
        }
    }
    out
}

/// State and parent of `pid` from `/proc/<pid>/stat` ("pid (comm) state ppid ...").
fn stat_fields(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.to_owned();
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// SIGKILL to the server and every process it started: stopped first (so it forks
/// nothing more), its children listed and killed, then the server; waits until none is
/// left holding the file system.
#[allow(unsafe_code)]
fn kill_server(pid: u32) {
    let Ok(server) = libc::pid_t::try_from(pid) else {
        return;
    };
    let kill = |p: u32, sig: libc::c_int| {
        if let Ok(p) = libc::pid_t::try_from(p) {
            // SAFETY: kill(2) on the server's own processes.
            unsafe { libc::kill(p, sig) };
        }
    };
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let mut all = vec![pid];
    all.extend(children(pid));
    for p in all.iter().rev() {
        kill(*p, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while all
        .iter()
        .any(|p| stat_fields(*p).is_some_and(|f| f.0 != "Z"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "server processes linger: {all:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn power_cuts_under_the_server_lose_no_acknowledged_save() {
    let Some(()) = root_with_loop() else { return };
    if prerequisite("PostgreSQL server binaries", check_postgres()).is_none() {
        return;
    }
    let cuts: u32 = std::env::var("POH_PG_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut mnt = Ext4Mount::new(512, &["-b", "4096"]).expect("ext4 loop mount");
    let cluster = PgCluster::start_at(&mnt.path().join("pgdata")).expect("start PostgreSQL");
    let url = cluster.create_db("cut").expect("createdb");
    cluster
        .psql("postgres", "ALTER SYSTEM SET synchronous_commit = off")
        .expect("server default");
    cluster
        .psql("postgres", "SELECT pg_reload_conf()")
        .expect("reload");
    // The cluster itself (initdb does not sync) must be on the device before any cut.
    let synced = Command::new("sync").arg("-f").arg(mnt.path()).status();
    assert!(synced.is_ok_and(|s| s.success()), "sync the file system");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut acked: BTreeMap<String, Tx> = BTreeMap::new();
    let mut failed_saves = 0u32;
    for cut in 0..cuts {
        let sm = rt
            .block_on(StorageManager::open_with(
                "unused",
                &url,
                OpenOptions::default(),
            ))
            .expect("open store");
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<Vec<Tx>>();
        let writer = {
            let sm = sm.clone();
            rt.spawn(async move {
                for b in 0u32.. {
                    let batch: Vec<Tx> = (0..20)
                        .map(|i| tx(format!("c{cut}-b{b}-{i}"), b * 20 + i))
                        .collect();
                    match sm.save_batch(batch.clone()).await {
                        Ok(()) => {
                            if ack_tx.send(batch).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        // Some acknowledged batches, then the cut while the next ones are in flight.
        let mut batches = 0;
        while batches < 15 + 5 * cut {
            let batch = ack_rx.recv().expect("the writer acknowledges batches");
            acked.extend(batch.into_iter().map(|t| (t.tx_id.to_string(), t)));
            batches += 1;
        }
        let pid = cluster.server_pid().expect("server pid");
        mnt.shutdown(EXT4_GOING_FLAGS_NOLOGFLUSH)
            .expect("cut the power");
        kill_server(pid);
        // Whatever the writer was told before its saves started failing was acknowledged.
        for batch in ack_rx.iter() {
            acked.extend(batch.into_iter().map(|t| (t.tx_id.to_string(), t)));
        }
        rt.block_on(writer).expect("writer task");
        failed_saves += 1;
        drop(sm);
        mnt.remount().expect("remount after the cut");
        cluster
            .remove_stale_pid_file()
            .expect("the killed server's pid file");
        cluster.start_server().expect("restart after the cut");
        let sm = rt
            .block_on(StorageManager::open_with(
                "unused",
                &url,
                OpenOptions::default(),
            ))
            .expect("reopen store");
        let ids: Vec<poh_storage::TxId> = acked.values().map(|t| t.tx_id.clone()).collect();
        let loaded = rt.block_on(sm.load_many(ids)).expect("load_many");
        for (t, got) in acked.values().zip(loaded) {
            let got = got.unwrap_or_else(|e| panic!("cut {cut}: load {}: {e}", t.tx_id));
            assert_eq!(
                got.as_ref(),
                Some(t),
                "cut {cut}: acknowledged {} lost",
                t.tx_id
            );
        }
        let report = rt.block_on(sm.verify()).expect("verify");
        assert!(report.is_clean(), "cut {cut}: {report:?}");
        rt.block_on(sm.close()).expect("close");
    }
    eprintln!(
        "pg power cuts: {cuts} cuts, {} acknowledged saves checked intact after each, {failed_saves} writers cut mid-save",
        acked.len()
    );
}
