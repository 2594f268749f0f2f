//! Durability under faults: with an I/O error injected at every file operation of a mixed
//! workload, or the power cut after every one, every acknowledged tx survives intact,
//! nothing unacknowledged is half-present, and recovery leaves no row without its payload.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::sim::SimStore;
use poh_storage::{Layout, MetaRow, StorageError, StorageManager, Tx, TxId};
use poh_testkit::sim::{Fault, Loss, Op};

const NOW: f64 = 1000.0;
const TTL: f64 = 100.0;

/// Both engines run every test (segments with 100 s windows, so the workload spreads over
/// several segments: whole-segment expiry, drops and compaction happen in it).
const LAYOUTS: [Layout; 2] = [Layout::Files, Layout::Segments];

/// One step of the workload.
#[derive(Clone)]
enum Step {
    Save(Tx),
    Batch(Vec<Tx>),
    Delete(&'static str),
    /// A TTL batch of this limit.
    Expire(usize),
}

/// What a step returned when it succeeded.
#[derive(Debug)]
enum Ack {
    Saved,
    Deleted(bool),
    Expired(Vec<String>),
}

fn tx(id: &str, ts: f64, payload: &[u8]) -> Tx {
    Tx::new(id, format!("holder-{id}"), ts, payload.to_vec()).expect("valid tx")
}

/// Saves, re-saves (single and in a batch), deletes, a TTL scan, a re-save after
/// expiry, and a batch of 20. Timestamps are chosen so the scan expires some txs and not
/// others.
fn workload() -> Vec<Step> {
    vec![
        Step::Save(tx("a", 500.0, b"a-one")),
        Step::Save(tx("b", 950.0, b"b-one")),
        Step::Save(tx("a", 960.0, b"a-two, longer than one")),
        Step::Batch(vec![
            tx("c", 100.0, b"c-one"),
            tx("d", 990.0, b"d-one"),
            tx("e", 200.0, b""),
        ]),
        Step::Delete("b"),
        Step::Batch(vec![tx("a", 970.0, b"a-three"), tx("f", 980.0, b"f-one")]),
        // A batch of one: on a segments store it drops c's window whole and leaves its row
        // for a later sweep, so the re-save of c below meets it.
        Step::Expire(1),
        Step::Save(tx("c", 995.0, b"c-two")),
        Step::Delete("zz"),
        Step::Save(tx("g", 999.0, b"g-one")),
        Step::Batch(vec![tx("d", 991.0, b"d-two"), tx("g", 999.5, b"g-two")]),
        // Big enough for a segments store to write its index rows while its I/O thread
        // writes and syncs the records.
        Step::Batch(
            (0..20)
                .map(|i| tx(&format!("h{i:02}"), 900.0 + f64::from(i), b"bulk"))
                .collect(),
        ),
        // The rest of the pass: the last batch sweeps what the drops left.
        Step::Expire(100),
    ]
}

async fn run_step(sm: &StorageManager, step: &Step) -> Result<Ack, StorageError> {
    match step {
        Step::Save(t) => sm.save(t.clone()).await.map(|()| Ack::Saved),
        Step::Batch(ts) => sm.save_batch(ts.clone()).await.map(|()| Ack::Saved),
        Step::Delete(id) => sm
            .delete(&TxId::new(*id).expect("valid id"))
            .await
            .map(Ack::Deleted),
        Step::Expire(limit) => sm.delete_expired(NOW, TTL, *limit).await.map(Ack::Expired),
    }
}

fn expired(t: &Tx) -> bool {
    NOW - t.timestamp > TTL
}

/// The states each id may be in after the workload: an acknowledged step fixes an id's
/// state; an unacknowledged one may or may not have happened.
#[derive(Default)]
struct Model {
    cands: BTreeMap<String, Vec<Option<Tx>>>,
    /// Ids each step may have changed.
    touched: Vec<BTreeSet<String>>,
}

impl Model {
    fn add(&mut self, id: &str, state: Option<Tx>) {
        let c = self
            .cands
            .entry(id.to_owned())
            .or_insert_with(|| vec![None]);
        if !c.contains(&state) {
            c.push(state);
        }
    }

    fn fix(&mut self, id: &str, state: Option<Tx>) {
        self.cands.insert(id.to_owned(), vec![state]);
    }

    fn apply(&mut self, step: &Step, res: &Result<Ack, StorageError>) {
        let mut touched = BTreeSet::new();
        match (step, res) {
            (Step::Save(t), r) => {
                self.apply_saves(std::slice::from_ref(t), r.is_ok(), &mut touched)
            }
            (Step::Batch(ts), r) => self.apply_saves(ts, r.is_ok(), &mut touched),
            (Step::Delete(id), Ok(ack)) => {
                let existed = matches!(ack, Ack::Deleted(true));
                let before = self.cands.get(*id).cloned().unwrap_or_else(|| vec![None]);
                assert!(
                    before.iter().any(|c| c.is_some() == existed),
                    "delete of {id} answered {ack:?}, but its state could only be {before:?}"
                );
                self.fix(id, None);
                touched.insert((*id).to_owned());
            }
            (Step::Delete(id), Err(_)) => {
                self.add(id, None);
                touched.insert((*id).to_owned());
            }
            (Step::Expire(_), Ok(Ack::Expired(ids))) => {
                for id in ids {
                    self.fix(id, None);
                    touched.insert(id.clone());
                }
            }
            (Step::Expire(_), Err(_)) => {
                let maybe: Vec<String> = self
                    .cands
                    .iter()
                    .filter(|(_, c)| c.iter().flatten().any(expired))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in maybe {
                    self.add(&id, None);
                    touched.insert(id);
                }
            }
            (Step::Expire(_), Ok(other)) => panic!("delete_expired answered {other:?}"),
        }
        self.touched.push(touched);
    }

    fn apply_saves(&mut self, txs: &[Tx], acked: bool, touched: &mut BTreeSet<String>) {
        for t in txs {
            if acked {
                self.fix(t.tx_id.as_str(), Some(t.clone()));
            } else {
                self.add(t.tx_id.as_str(), Some(t.clone()));
            }
            touched.insert(t.tx_id.to_string());
        }
    }
}

/// Reopens the store (repair), recovers, and checks it against the model. Returns a
/// description of the first violation.
async fn check(s: &SimStore, steps: &[Step], results: &[Result<Ack, StorageError>], ctx: &str) {
    let mut model = Model::default();
    for (step, res) in steps.iter().zip(results) {
        model.apply(step, res);
    }
    let sm = s
        .open()
        .await
        .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let rec = sm
        .recover(false)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: recover failed: {e}"));
    assert!(
        rec.of_kind(poh_storage::ProblemKind::Transient)
            .next()
            .is_none(),
        "{ctx}: recover hit transient errors: {rec:?}"
    );
    let ver = sm.verify().await.expect("verify");
    assert!(
        ver.is_clean(),
        "{ctx}: not clean after recover: {ver:?}\nrecover: {rec:?}"
    );

    let mut actual: BTreeMap<String, Option<Tx>> = BTreeMap::new();
    for id in model.cands.keys() {
        let got = sm
            .load(&TxId::new(id.as_str()).expect("model ids are valid"))
            .await
            .unwrap_or_else(|e| panic!("{ctx}: load {id}: {e}\nrecover: {rec:?}"));
        let allowed = &model.cands[id];
        assert!(
            allowed.contains(&got),
            "{ctx}: tx {id} is {got:?}; allowed: {allowed:?}\nrecover: {rec:?}\nresults: {results:?}"
        );
        actual.insert(id.clone(), got);
    }
    // No row beyond the model's ids.
    let rows: Vec<MetaRow> = sm.list_page(None, 1000).await.expect("list").rows;
    for r in &rows {
        assert!(
            model.cands.contains_key(&r.tx_id),
            "{ctx}: unexpected row {r:?}"
        );
    }
    // A batch that did not answer Ok landed whole or not at all (checked where no later
    // step could have changed its ids).
    for (i, (step, res)) in steps.iter().zip(results).enumerate() {
        let (Step::Batch(txs), Err(_)) = (step, res) else {
            continue;
        };
        let later: BTreeSet<&String> = model.touched[i + 1..].iter().flatten().collect();
        if txs.iter().any(|t| later.contains(&t.tx_id.to_string())) {
            continue;
        }
        let landed: Vec<bool> = txs
            .iter()
            .map(|t| actual[t.tx_id.as_str()].as_ref() == Some(t))
            .collect();
        assert!(
            landed.iter().all(|&l| l) || landed.iter().all(|&l| !l),
            "{ctx}: batch {i} landed partly: {landed:?}"
        );
    }
    sm.close().await.expect("close");
}

/// Opens a fresh simulated store and counts the file operations of the workload.
async fn count_ops(layout: Layout) -> u64 {
    let s = SimStore::with_layout(layout);
    let sm = s.open().await.expect("open");
    let before = s.sim.ops();
    let steps = workload();
    let mut results = Vec::new();
    for step in &steps {
        let r = run_step(&sm, step).await;
        assert!(r.is_ok(), "the workload succeeds without faults: {r:?}");
        results.push(r);
    }
    let n = s.sim.ops() - before;
    sm.close().await.expect("close");
    check(&s, &steps, &results, &format!("{layout}: no faults")).await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_error_keeps_acknowledged_data() {
    for layout in LAYOUTS {
        injected_errors(layout).await;
    }
}

async fn injected_errors(layout: Layout) {
    let total = count_ops(layout).await;
    let steps = workload();
    let mut points = 0u64;
    for (errno, persist) in [
        (libc::EIO, false),
        (libc::ENOSPC, false),
        (libc::EACCES, false),
        (libc::EIO, true),
    ] {
        for n in 1..=total {
            let s = SimStore::with_layout(layout);
            let sm = s.open().await.unwrap();
            let mut fault = Fault::nth(n, errno);
            if persist {
                fault = fault.from_on();
            }
            s.sim.inject(fault);
            let mut results = Vec::new();
            let mut poisoned_at = None;
            for (i, step) in steps.iter().enumerate() {
                let failed_before = s.sim.failed().len();
                let r = run_step(&sm, step).await;
                let failed_now = s.sim.failed();
                let hit = &failed_now[failed_before..];
                let ctx =
                    format!("{layout}: errno {errno} at op {n} (persist {persist}), step {i}");
                if matches!(step, Step::Save(_) | Step::Batch(_)) && !hit.is_empty() {
                    assert!(r.is_err(), "{ctx}: a save acknowledged despite {hit:?}");
                }
                if let Some(at) = poisoned_at {
                    assert!(
                        matches!(r, Err(StorageError::Poisoned(_))),
                        "{ctx}: the store took a write after a failed fsync or rename in step {at}: {r:?}"
                    );
                }
                if poisoned_at.is_none() && hit.iter().any(|f| f.op.is_sync() || f.op == Op::Rename)
                {
                    poisoned_at = Some(i);
                }
                results.push(r);
            }
            assert!(
                !s.sim.failed().is_empty() || persist,
                "op {n} was never reached"
            );
            sm.close().await.unwrap();
            s.sim.clear_faults();
            check(
                &s,
                &steps,
                &results,
                &format!("{layout}: errno {errno} at op {n} (persist {persist})"),
            )
            .await;
            points += 1;
        }
    }
    eprintln!(
        "{layout}: fault points tested: {points} ({total} operations x 3 errnos, + fail-from-N with EIO)"
    );
}

/// Runs the workload on a fresh store with the power going off after `n` file
/// operations, then cuts the power. Returns the store and the answers of the steps that ran.
async fn crash_after(
    layout: Layout,
    n: u64,
    loss: Loss,
) -> (SimStore, Vec<Result<Ack, StorageError>>) {
    let s = SimStore::with_layout(layout);
    let sm = s.open().await.expect("open");
    s.sim.halt_after(n);
    let mut results = Vec::new();
    for step in &workload() {
        if s.sim.halted() {
            break;
        }
        results.push(run_step(&sm, step).await);
    }
    sm.close().await.expect("close");
    s.sim.power_loss_with(loss);
    (s, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_after_every_operation_keeps_acknowledged_data() {
    for layout in LAYOUTS {
        power_losses(layout).await;
    }
}

async fn power_losses(layout: Layout) {
    let total = count_ops(layout).await;
    let steps = workload();
    let mut points = 0u64;
    for loss in [Loss::Clean, Loss::Torn] {
        for n in 0..=total {
            let (s, results) = crash_after(layout, n, loss).await;
            let ctx = format!("{layout}: power loss ({loss:?}) after op {n}");
            check(&s, &steps[..results.len()], &results, &ctx).await;
            points += 1;
        }
    }
    eprintln!(
        "{layout}: power-loss points tested: {points} (after each of {total} operations and before the first, clean and torn)"
    );
}

/// A second power cut, or an I/O error, while reopening and recovering from the first
/// loses nothing either: repair and recover are safe to interrupt and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_during_recovery_keeps_acknowledged_data() {
    for layout in LAYOUTS {
        failures_during_recovery(layout).await;
    }
}

async fn failures_during_recovery(layout: Layout) {
    let total = count_ops(layout).await;
    let steps = workload();
    let (mut cuts, mut errors, mut states) = (0u64, 0u64, 0u64);
    for n in 0..=total {
        // Measure the recovery of this state; skip states it leaves as they are.
        let (s, results) = crash_after(layout, n, Loss::Clean).await;
        let saved = s.save_state();
        let before = (common::snapshot::sim_snapshot(&s.sim, &s.base), s.sim.ops());
        let sm = s.open().await.expect("reopen");
        sm.recover(false).await.expect("recover");
        sm.close().await.expect("close");
        let after = common::snapshot::sim_snapshot(&s.sim, &s.base);
        let recovery_ops = s.sim.ops() - before.1;
        if after == before.0 {
            continue;
        }
        states += 1;
        for m in 0..recovery_ops {
            for cut in [true, false] {
                s.restore_state(&saved);
                if cut {
                    s.sim.halt_after(m);
                } else {
                    s.sim.inject(Fault::nth(m + 1, libc::EIO));
                }
                if let Ok(sm) = s.open().await {
                    let _ = sm.recover(false).await;
                    sm.close().await.expect("close");
                }
                let ctx = if cut {
                    s.sim.power_loss();
                    cuts += 1;
                    format!("{layout}: power loss after op {n}, then after op {m} of recovery")
                } else {
                    s.sim.clear_faults();
                    errors += 1;
                    format!(
                        "{layout}: power loss after op {n}, then EIO at op {} of recovery",
                        m + 1
                    )
                };
                check(&s, &steps[..results.len()], &results, &ctx).await;
            }
        }
    }
    eprintln!(
        "{layout}: recovery interrupted at {cuts} points by a power cut and at {errors} by EIO \
         (every operation of recovering the {states} crash states that need repair)"
    );
}

#[tokio::test]
async fn failed_fsync_poisons_the_store_until_reopened() {
    for (layout, op) in [
        (Layout::Files, Op::SyncFile),
        (Layout::Files, Op::SyncDir),
        (Layout::Segments, Op::SyncData),
        (Layout::Segments, Op::SyncDir),
    ] {
        let s = SimStore::with_layout(layout);
        let sm = s.open().await.unwrap();
        sm.save(tx("a", 1.0, b"first")).await.unwrap();
        s.sim.inject(Fault::nth(1, libc::EIO).only(op));
        // In another time window: a segments store creates a segment (and syncs its
        // directory) for it.
        let err = sm.save(tx("b", 250.0, b"second")).await.unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{op:?}: {err}");
        assert!(err.to_string().contains("sync"), "{op:?}: {err}");
        s.sim.clear_faults();

        // Every write is refused now, though the file system works again.
        let refused = [
            sm.save(tx("c", 3.0, b"third")).await.map(drop),
            sm.save_batch(vec![tx("d", 4.0, b"x")]).await.map(drop),
            sm.delete(&TxId::new("a").unwrap()).await.map(drop),
            sm.delete_expired(NOW, TTL, 10).await.map(drop),
            sm.recover(false).await.map(drop),
        ];
        for r in refused {
            assert!(matches!(r, Err(StorageError::Poisoned(_))), "{op:?}: {r:?}");
        }
        // Reads still work.
        assert_eq!(
            sm.load(&TxId::new("a").unwrap())
                .await
                .unwrap()
                .unwrap()
                .payload,
            b"first"
        );
        sm.close().await.unwrap();

        // Reopening repairs and accepts writes again.
        let sm = s.open().await.unwrap();
        sm.save(tx("c", 3.0, b"third")).await.unwrap();
        assert!(sm.verify().await.unwrap().is_clean());
        assert_eq!(
            sm.load(&TxId::new("c").unwrap())
                .await
                .unwrap()
                .unwrap()
                .payload,
            b"third"
        );
        assert!(!sm.exists(&TxId::new("d").unwrap()).await.unwrap());
        sm.close().await.unwrap();
    }
}

/// A metadata transaction that fails part-way through a batch leaves no row and no
/// payload file of that batch, and the earlier version of a re-saved tx intact.
#[tokio::test]
async fn interrupted_metadata_transaction_leaves_no_partial_batch() {
    let dir = tempfile::TempDir::new().unwrap();
    let (base, db) = (dir.path().join("data"), dir.path().join("poh.db"));
    let sm = StorageManager::open(&base, &db).await.unwrap();
    let old = tx("x", 10.0, b"old x");
    sm.save(old.clone()).await.unwrap();

    // Make SQLite abort the transaction at the third row of the batch.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON txs WHEN NEW.tx_id = 'bad'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    drop(conn);

    let batch = vec![
        tx("p", 20.0, b"p"),
        tx("x", 21.0, b"new x"),
        tx("bad", 22.0, b"bad"),
        tx("r", 23.0, b"r"),
    ];
    let err = sm.save_batch(batch).await.unwrap_err();
    assert!(matches!(err, StorageError::Meta { .. }), "{err}");
    assert!(err.to_string().contains("bad"), "names the tx: {err}");

    for id in ["p", "bad", "r"] {
        assert!(
            !sm.exists(&TxId::new(id).unwrap()).await.unwrap(),
            "row {id}"
        );
        assert!(!base.join(format!("{id}.bin")).exists(), "file {id}");
    }
    assert_eq!(sm.load(&TxId::new("x").unwrap()).await.unwrap(), Some(old));
    let temps: Vec<_> = std::fs::read_dir(base.join(".tmp")).unwrap().collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert!(sm.verify().await.unwrap().is_clean());
    sm.close().await.unwrap();
}

/// A segments group big enough to be written in pieces (320 KiB, 256 KiB at a time) by the
/// writer's I/O thread: a failure of any of its writes or of its sync fails the whole
/// batch (a failed sync poisons the store until it is reopened), leaves none of it
/// visible, keeps what was saved before, and a power cut right after loses nothing
/// acknowledged. The batch then saves whole.
#[tokio::test]
async fn a_big_group_written_in_pieces_fails_whole_and_saves_whole_later() {
    let batch: Vec<Tx> = (0..20)
        .map(|i| {
            let payload = vec![b'a' + (i % 26) as u8; 16 * 1024];
            tx(&format!("big{i:02}"), 900.0 + f64::from(i), &payload)
        })
        .collect();
    for (k, op) in [(1, Op::WriteAt), (2, Op::WriteAt), (1, Op::SyncData)] {
        let ctx = format!("{op:?} number {k}");
        let s = SimStore::with_layout(Layout::Segments);
        let sm = s.open().await.unwrap();
        sm.save(tx("before", 800.0, b"kept")).await.unwrap();
        s.sim.inject(Fault::nth(k, libc::EIO).only(op));
        let err = sm.save_batch(batch.clone()).await.unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{ctx}: {err}");
        s.sim.clear_faults();
        for t in &batch {
            assert!(!sm.exists(&t.tx_id).await.unwrap(), "{ctx}: {}", t.tx_id);
        }
        sm.close().await.unwrap();
        s.sim.power_loss();

        let sm = s.open().await.unwrap();
        assert_eq!(
            sm.load(&TxId::new("before").unwrap())
                .await
                .unwrap()
                .unwrap()
                .payload,
            b"kept",
            "{ctx}"
        );
        for t in &batch {
            assert!(!sm.exists(&t.tx_id).await.unwrap(), "{ctx}: {}", t.tx_id);
        }
        assert!(sm.verify().await.unwrap().is_clean(), "{ctx}");
        sm.save_batch(batch.clone()).await.unwrap();
        sm.close().await.unwrap();
        s.sim.power_loss();
        let sm = s.open().await.unwrap();
        let ids: Vec<TxId> = batch.iter().map(|t| t.tx_id.clone()).collect();
        for (t, got) in batch.iter().zip(sm.load_many(ids).await.unwrap()) {
            assert_eq!(got.unwrap().as_ref(), Some(t), "{ctx}");
        }
        assert!(sm.verify().await.unwrap().is_clean(), "{ctx}");
        sm.close().await.unwrap();
    }
}
