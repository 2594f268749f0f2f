//! Group commit, for every engine: one writer thread owns the engine's writing half and
//! applies every change, so that concurrent `save` callers share one durable commit.
//!
//! The thread takes the first waiting save and every save queued behind it (up to
//! [`MAX_GROUP_TXS`] txs or [`MAX_GROUP_BYTES`] of payload) as one group, hands the group
//! to [`EngineWriter::save_group`], and answers each caller with its own result. Deletes
//! and expiry batches run between groups, in arrival order. After a durability failure
//! the [`Poison`] makes every later write fail until the store is reopened.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use poh_types::{Tx, TxId};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::engine::EngineWriter;
use crate::error::{Result, StorageError};
use crate::poison::{Poison, lock};

/// Most transactions committed in one group.
pub const MAX_GROUP_TXS: usize = 4096;
/// Most payload bytes committed in one group.
pub const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Work for the writer thread.
pub(crate) enum Cmd {
    /// Answered with the txs themselves once saved: the caller's thread frees them (its
    /// allocator's memory), not this one between groups.
    Save {
        txs: Vec<Tx>,
        reply: oneshot::Sender<Result<Vec<Tx>>>,
    },
    Delete {
        id: TxId,
        reply: oneshot::Sender<Result<bool>>,
    },
    DeleteExpired {
        now: f64,
        ttl: f64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<String>>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Settles the engine now ([`crate::StorageManager::flush`]).
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
    /// Wakes the thread after a save on its caller's thread left the engine unsettled
    /// ([`EngineWriter::unsettled`]): the thread settles it once saves pause. Not counted
    /// as queued ([`Writer::idle`]).
    Settle,
}

impl Cmd {
    /// True for the commands [`Writer::queue`] counts.
    fn counted(&self) -> bool {
        !matches!(self, Cmd::Settle)
    }
}

/// How long no save may come before the writer thread settles an unsettled engine
/// ([`EngineWriter::settle`]: the segments engine's index commit of small groups
/// acknowledged before it). Other processes see those saves once it is done; within the
/// process they are seen at once. While saves keep coming, the engine bounds the wait
/// itself.
const SETTLE_AFTER: Duration = Duration::from_millis(1);

/// How long the writer thread keeps looking for the next command (yielding its core
/// between looks) before it sleeps: a caller that saves again as soon as it is answered
/// then finds the thread awake. Waking a sleeping thread costs ~40 µs on this kind of
/// machine, a fifth of a durable single save. RocksDB's write thread does the same
/// (`max_yield_usec`, 100 µs by default).
const YIELD_FOR: Duration = Duration::from_micros(100);

/// How long the writer waits for another save to join a group, once the queue is empty,
/// when saves are arriving from several callers: the callers answered by the group before
/// are waking up to save again (~20–50 µs each here), and without the wait the group is
/// cut before them, so that concurrent callers split into halves that each pay a whole
/// `fdatasync`. Every arrival restarts the gap; [`GATHER_FOR`] bounds the whole wait, well
/// under the cost of the sync it shares. Measured with poh-bench (segments, median of
/// alternating runs with and without): 2 callers +20 %, 4 callers +29 %, 8 callers +44 %,
/// 64 callers +13 %; a single caller never waits.
const GATHER_GAP: Duration = Duration::from_micros(25);
/// The longest a group waits for more saves to join it.
const GATHER_FOR: Duration = Duration::from_micros(100);

/// True while a group should keep waiting for more saves: only when saves come from
/// several callers (the group before had more than one request, or this one already
/// has), for [`GATHER_GAP`] after the last arrival and [`GATHER_FOR`] in all.
fn keep_gathering(
    last_requests: usize,
    requests: usize,
    since_arrival: Duration,
    since_start: Duration,
) -> bool {
    (last_requests > 1 || requests > 1) && since_arrival < GATHER_GAP && since_start < GATHER_FOR
}

/// The next command: looked for without sleeping for [`YIELD_FOR`] when `spin` (the
/// thread just answered a save: its caller may save again at once), then waited for;
/// while the engine is unsettled, in waits of [`SETTLE_AFTER`], settling it after one
/// in which no save was made on a caller's thread and none is in progress.
///
/// [`Writer::nudged`] stays set while the thread watches an unsettled engine, so saves
/// on their callers' threads send no [`Cmd::Settle`] (each would be a wake-up) until the
/// engine is settled and the thread is about to sleep for good: it clears the flag, then
/// looks at the engine once more (a save that saw the flag still set left it unsettled
/// before that look).
fn next_command(writer: &Writer, rx: &Receiver<Cmd>, spin: bool) -> Option<Cmd> {
    let started = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(c) => return Some(c),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if spin && started.elapsed() < YIELD_FOR => {
                std::thread::yield_now()
            }
            Err(TryRecvError::Empty) if !writer.unsettled.load(Ordering::SeqCst) => {
                writer.nudged.store(false, Ordering::SeqCst);
                if !writer.unsettled.load(Ordering::SeqCst) {
                    return rx.recv().ok();
                }
            }
            Err(TryRecvError::Empty) => {
                let seen = writer.activity.load(Ordering::Acquire);
                match rx.recv_timeout(SETTLE_AFTER) {
                    Ok(c) => return Some(c),
                    Err(RecvTimeoutError::Disconnected) => return None,
                    Err(RecvTimeoutError::Timeout) => {
                        // A save in progress settles the engine itself if it must, or
                        // counts as activity once done: settling now would only make it
                        // wait for the engine (or queue).
                        if writer.activity.load(Ordering::Acquire) == seen
                            && writer.saving.load(Ordering::Acquire) == 0
                        {
                            writer.settle();
                        }
                    }
                }
            }
        }
    }
}

/// Most txs a save may have to commit on its caller's thread ([`Writer::save_inline`]).
/// The two hand-offs it saves are a sixth of a single durable save but 1 % of a batch of
/// 1,000, which would hold the caller's runtime thread for milliseconds; such batches ran
/// no faster inline (poh-bench, alternating runs: 194k–238k/s inline against 219k–262k/s
/// through the thread at 300k, 209k–244k/s against 217k–231k/s at 1M).
pub(crate) const INLINE_MAX_TXS: usize = 16;

/// The engine's writing half, shared by the writer thread and by a lone caller that finds
/// it idle ([`Writer::save_inline`]), and the count of commands queued for the thread.
pub(crate) struct Writer {
    engine: Mutex<Option<Box<dyn EngineWriter>>>,
    queued: AtomicUsize,
    /// [`crate::OpenOptions::inline_saves`].
    inline: bool,
    /// Saves in progress, on either path, from the moment they are called.
    saving: AtomicUsize,
    /// The engine is unsettled ([`EngineWriter::unsettled`]) as of its last command.
    unsettled: AtomicBool,
    /// A [`Cmd::Settle`] is on its way to the thread, or the thread watches the unsettled
    /// engine already ([`next_command`]).
    nudged: AtomicBool,
    /// Saves done on their callers' threads so far.
    activity: AtomicU64,
}

/// One save in progress ([`Writer::saving`]); it ends when dropped, also when the caller's
/// future is dropped before the answer.
pub(crate) struct Saving<'a> {
    writer: &'a Writer,
    alone: bool,
}

impl Saving<'_> {
    /// True when no other save was in progress as this one began.
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for Saving<'_> {
    fn drop(&mut self) {
        self.writer.saving.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    pub(crate) fn new(engine: Box<dyn EngineWriter>, inline: bool) -> Self {
        Self {
            engine: Mutex::new(Some(engine)),
            queued: AtomicUsize::new(0),
            inline,
            saving: AtomicUsize::new(0),
            unsettled: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            activity: AtomicU64::new(0),
        }
    }

    /// Records whether `engine` is left unsettled, after a command (under the lock).
    fn note(&self, engine: &dyn EngineWriter) {
        self.unsettled.store(engine.unsettled(), Ordering::SeqCst);
    }

    /// True when the caller of a save just done on its own thread must send
    /// [`Cmd::Settle`]: the engine is unsettled, and the thread neither watches it already
    /// nor has such a command on its way ([`next_command`]).
    pub(crate) fn wants_settle(&self) -> bool {
        self.unsettled.load(Ordering::SeqCst) && !self.nudged.swap(true, Ordering::SeqCst)
    }

    /// Settles the engine (the writer thread, once saves paused); a failure is logged:
    /// the saves it concerns were answered already and are durable (the next command
    /// replays them into the index).
    fn settle(&self) {
        let mut engine = self.engine();
        if let Some(w) = engine.as_mut() {
            if let Err(e) = w.settle() {
                warn!(error = %e, "deferred work after acknowledged saves failed");
            }
            self.note(w.as_ref());
        } else {
            self.unsettled.store(false, Ordering::Release);
        }
    }

    /// Counts a save in progress until the returned guard drops.
    pub(crate) fn saving(&self) -> Saving<'_> {
        let before = self.saving.fetch_add(1, Ordering::AcqRel);
        Saving {
            writer: self,
            alone: before == 0,
        }
    }

    /// Counts a command about to be sent to the thread (`sent` false: it was not, after all).
    pub(crate) fn queue(&self, sent: bool) {
        if sent {
            self.queued.fetch_add(1, Ordering::AcqRel);
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// True when a save that began alone ([`Saving::alone`]) may run on its caller's
    /// thread: inline saves are on and nothing is queued for the writer thread.
    pub(crate) fn idle(&self) -> bool {
        self.inline && self.queued.load(Ordering::Acquire) == 0
    }

    /// Saves `txs` on the calling thread, as one group of its own, when the thread is not
    /// committing: a lone caller then pays no hand-off to the thread and back (two thread
    /// wake-ups, ~45 µs here, a sixth of a durable single save). Only for a save of at
    /// most [`INLINE_MAX_TXS`] txs that began alone ([`Saving::alone`]) with nothing
    /// queued ([`Writer::idle`]): concurrent callers queue, and still share one commit.
    /// `None` when the writer is busy or closed, or the save is bigger: the caller queues
    /// its save as before. The call blocks its thread for the
    /// commit (the async API runs it in `tokio::task::block_in_place`). A panic inside
    /// poisons the store.
    pub(crate) fn save_inline(&self, poison: &Poison, txs: &[Tx]) -> Option<Result<()>> {
        if !self.idle() || txs.len() > INLINE_MAX_TXS {
            return None;
        }
        let mut guard = match self.engine.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return None,
        };
        let engine = guard.as_mut()?;
        let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poison.check()?;
            engine.save_group(&[txs]).pop().unwrap_or(Ok(()))
        }));
        self.activity.fetch_add(1, Ordering::AcqRel);
        self.note(engine.as_ref());
        Some(saved.unwrap_or_else(|_| {
            let why = "a save panicked inside the engine; reopen the store (it repairs)";
            poison.set(why.into());
            Err(StorageError::Poisoned(why.into()))
        }))
    }

    /// The engine, locked, while the thread applies one command; `None` once closed.
    fn engine(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn EngineWriter>>> {
        lock(&self.engine)
    }

    /// Runs `f` on the engine (`Closed` once it is gone) and records whether it left the
    /// engine unsettled.
    fn run<T>(&self, f: impl FnOnce(&mut dyn EngineWriter) -> Result<T>) -> Result<T> {
        let mut engine = self.engine();
        let w = engine.as_mut().ok_or(StorageError::Closed)?;
        let res = f(w.as_mut());
        self.note(w.as_ref());
        res
    }

    fn took(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs the writer thread until [`Cmd::Close`] or until every sender is gone; the engine
/// is closed (dropped) on this thread either way.
pub(crate) fn run(writer: &Writer, poison: Poison, rx: Receiver<Cmd>) {
    serve(writer, poison, rx);
    drop(writer.engine().take());
}

fn serve(writer: &Writer, poison: Poison, rx: Receiver<Cmd>) {
    let mut next: Option<Cmd> = None;
    // Requests in the last save group: more than one means concurrent callers.
    let mut last_requests = 0usize;
    // The last command was a save this thread answered.
    let mut answered = false;
    loop {
        let cmd = match next.take() {
            Some(c) => c,
            None => match next_command(writer, &rx, answered) {
                Some(c) => {
                    if c.counted() {
                        writer.took();
                    }
                    c
                }
                None => return,
            },
        };
        answered = matches!(cmd, Cmd::Save { .. });
        match cmd {
            Cmd::Save { txs, reply } => {
                let mut bytes: usize = txs.iter().map(|t| t.payload.len()).sum();
                let mut count = txs.len();
                let mut group = vec![(txs, reply)];
                let started = Instant::now();
                let mut arrived = started;
                while count < MAX_GROUP_TXS && bytes < MAX_GROUP_BYTES {
                    let got = rx.try_recv();
                    if got.as_ref().is_ok_and(Cmd::counted) {
                        writer.took();
                    }
                    match got {
                        Ok(Cmd::Settle) => {}
                        Ok(Cmd::Save { txs, reply }) => {
                            arrived = Instant::now();
                            count += txs.len();
                            bytes += txs.iter().map(|t| t.payload.len()).sum::<usize>();
                            group.push((txs, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty)
                            if keep_gathering(
                                last_requests,
                                group.len(),
                                arrived.elapsed(),
                                started.elapsed(),
                            ) =>
                        {
                            std::thread::yield_now();
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                last_requests = group.len();
                debug!(requests = group.len(), txs = count, "committing group");
                let mut engine = writer.engine();
                let results = match (poison.check(), engine.as_mut()) {
                    (Err(e), _) => group.iter().map(|_| Err(clone_err(&e))).collect(),
                    (Ok(()), None) => group.iter().map(|_| Err(StorageError::Closed)).collect(),
                    (Ok(()), Some(w)) => {
                        let slices: Vec<&[Tx]> = group.iter().map(|(t, _)| t.as_slice()).collect();
                        let results = w.save_group(&slices);
                        writer.note(w.as_ref());
                        results
                    }
                };
                drop(engine);
                for ((txs, reply), res) in group.into_iter().zip(results) {
                    let _ = reply.send(res.map(|()| txs));
                }
            }
            Cmd::Delete { id, reply } => {
                let res = poison.check().and_then(|()| writer.run(|w| w.delete(&id)));
                let _ = reply.send(res);
            }
            Cmd::DeleteExpired {
                now,
                ttl,
                limit,
                reply,
            } => {
                let res = poison
                    .check()
                    .and_then(|()| writer.run(|w| w.delete_expired(now, ttl, limit)));
                let _ = reply.send(res);
            }
            Cmd::Flush { reply } => {
                let _ = reply.send(writer.run(|w| w.settle()));
            }
            Cmd::Close { reply } => {
                // What the engine deferred is done before the answer: a handle opened
                // after the close sees every save.
                writer.settle();
                let _ = reply.send(());
                return;
            }
            // The wake-up was the point: next_command watches the engine from here on.
            Cmd::Settle => {}
        }
    }
}

/// Errors hold `io::Error`s, which do not clone; a group's shared failure is copied
/// into each caller's answer with its message intact.
pub(crate) fn clone_err(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io { op, path, source } => StorageError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StorageError::Meta { what, path, source } => StorageError::Meta {
            what: what.clone(),
            path: path.clone(),
            source: source.to_string().into(),
        },
        StorageError::Poisoned(s) => StorageError::Poisoned(s.clone()),
        StorageError::Closed => StorageError::Closed,
        StorageError::LockTimeout {
            path,
            waited,
            holder,
        } => StorageError::LockTimeout {
            path: path.clone(),
            waited: *waited,
            holder: *holder,
        },
        StorageError::Unfinished { tx_ids, cause } => StorageError::Unfinished {
            tx_ids: tx_ids.clone(),
            cause: Box::new(clone_err(cause)),
        },
        other => StorageError::Meta {
            what: "group commit".into(),
            path: std::path::PathBuf::new(),
            source: other.to_string().into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Duration = Duration::ZERO;

    #[test]
    fn a_lone_caller_never_waits_for_company() {
        assert!(!keep_gathering(0, 1, NONE, NONE));
        assert!(!keep_gathering(1, 1, NONE, NONE));
    }

    #[test]
    fn concurrent_callers_wait_for_the_gap_and_never_past_the_bound() {
        // The group before had several requests, or this one has: wait.
        assert!(keep_gathering(2, 1, NONE, NONE));
        assert!(keep_gathering(1, 2, NONE, NONE));
        assert!(keep_gathering(64, 30, GATHER_GAP / 2, GATHER_FOR / 2));
        // Nobody arrived for a whole gap: stop.
        assert!(!keep_gathering(64, 30, GATHER_GAP, GATHER_FOR / 2));
        // Arrivals keep coming, but the whole wait is bounded.
        assert!(!keep_gathering(64, 30, NONE, GATHER_FOR));
    }

    /// The groups an engine committed: the committing thread's name, and the requests.
    type Groups = std::sync::Arc<Mutex<Vec<(String, usize)>>>;

    /// An engine that records which thread committed each group, and may panic.
    struct Recorder {
        groups: Groups,
        panic: bool,
        /// Every save leaves it unsettled, as the segments engine's small groups do.
        unsettled: bool,
        /// Settling fails (a shared commit that keeps failing): it stays unsettled.
        stuck: bool,
    }

    impl EngineWriter for Recorder {
        fn save_group(&mut self, group: &[&[Tx]]) -> Vec<Result<()>> {
            assert!(!self.panic, "engine bug");
            let name = std::thread::current().name().unwrap_or("").to_owned();
            lock(&self.groups).push((name, group.len()));
            self.unsettled = true;
            group.iter().map(|_| Ok(())).collect()
        }
        fn unsettled(&self) -> bool {
            self.unsettled
        }
        fn settle(&mut self) -> Result<()> {
            if self.stuck {
                return Err(StorageError::Poisoned("the commit keeps failing".into()));
            }
            if self.unsettled {
                self.unsettled = false;
                lock(&self.groups).push(("settled".into(), 0));
            }
            Ok(())
        }
        fn delete(&mut self, _: &TxId) -> Result<bool> {
            Ok(false)
        }
        fn delete_expired(&mut self, _: f64, _: f64, _: usize) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
    }

    fn recorder(inline: bool, panic: bool) -> (Writer, Groups) {
        recorder_with(inline, panic, false)
    }

    fn recorder_with(inline: bool, panic: bool, stuck: bool) -> (Writer, Groups) {
        let groups = std::sync::Arc::new(Mutex::new(Vec::new()));
        let engine = Recorder {
            groups: groups.clone(),
            panic,
            unsettled: false,
            stuck,
        };
        (Writer::new(Box::new(engine), inline), groups)
    }

    fn one_tx() -> Vec<Tx> {
        vec![Tx::new("t1", "h", 1.0, b"p".to_vec()).expect("valid tx")]
    }

    #[test]
    fn an_idle_writer_saves_on_the_callers_thread() {
        let (w, groups) = recorder(true, false);
        let poison = Poison::default();
        let txs = one_tx();
        let caller = std::thread::Builder::new()
            .name("caller".into())
            .spawn(move || w.save_inline(&poison, &txs).map(|r| r.is_ok()))
            .expect("spawn");
        assert_eq!(caller.join().expect("caller"), Some(true));
        assert_eq!(*lock(&groups), vec![("caller".to_owned(), 1)]);
    }

    #[test]
    fn a_busy_queued_closed_or_disabled_writer_takes_no_inline_save() {
        let poison = Poison::default();
        let txs = one_tx();
        // A command queued for the thread: it goes first, so this save queues too.
        let (w, groups) = recorder(true, false);
        w.queue(true);
        assert!(w.save_inline(&poison, &txs).is_none());
        w.took();
        assert!(w.save_inline(&poison, &txs).is_some());
        // The thread is committing (it holds the engine).
        let held = w.engine();
        assert!(w.save_inline(&poison, &txs).is_none());
        drop(held);
        // Closed: the thread took the engine away.
        drop(w.engine().take());
        assert!(w.save_inline(&poison, &txs).is_none());
        assert_eq!(lock(&groups).len(), 1);
        // A batch bigger than a few txs goes to the thread.
        let (w, groups) = recorder(true, false);
        let big: Vec<Tx> = (0..=INLINE_MAX_TXS)
            .map(|i| Tx::new(format!("b{i}"), "h", 1.0, b"p".to_vec()).expect("valid tx"))
            .collect();
        assert!(w.save_inline(&poison, &big).is_none());
        assert!(w.save_inline(&poison, &big[..INLINE_MAX_TXS]).is_some());
        assert_eq!(lock(&groups).len(), 1);
        // Inline saves switched off.
        let (w, groups) = recorder(false, false);
        assert!(w.save_inline(&poison, &txs).is_none());
        assert!(lock(&groups).is_empty());
    }

    #[test]
    fn the_thread_settles_what_saves_left_on_flush_and_before_it_answers_close() {
        let (w, groups) = recorder(true, false);
        let poison = Poison::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let ask = |make: &dyn Fn(oneshot::Sender<Result<()>>) -> Cmd| {
            let (reply, got) = oneshot::channel();
            w.queue(true);
            tx.send(make(reply)).expect("send");
            got.blocking_recv().expect("answer")
        };
        std::thread::scope(|s| {
            let thread = s.spawn(|| run(&w, poison.clone(), rx));
            // A save on the caller's thread leaves the engine unsettled: the caller is
            // asked to wake the thread, once until the thread has seen it.
            assert!(w.save_inline(&poison, &one_tx()).is_some());
            assert!(w.wants_settle());
            assert!(!w.wants_settle());
            ask(&|reply| Cmd::Flush { reply }).expect("flush");
            assert_eq!(lock(&groups).last().map(|g| g.0.as_str()), Some("settled"));
            assert!(!w.unsettled.load(Ordering::Acquire));
            // A save through the thread, then close: answered only once it is settled.
            let (reply, got) = oneshot::channel();
            w.queue(true);
            tx.send(Cmd::Save {
                txs: one_tx(),
                reply,
            })
            .expect("send");
            got.blocking_recv().expect("answer").expect("saved");
            let (reply, got) = oneshot::channel();
            w.queue(true);
            tx.send(Cmd::Close { reply }).expect("send");
            got.blocking_recv().expect("closed");
            let seen = lock(&groups).clone();
            assert_eq!(seen.len(), 4, "{seen:?}");
            assert_eq!(seen[3].0, "settled", "{seen:?}");
            thread.join().expect("writer thread");
        });
    }

    #[test]
    fn a_thread_that_watches_an_unsettled_engine_is_not_woken_again_by_each_save() {
        let (w, groups) = recorder_with(true, false, true);
        let poison = Poison::default();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let thread = s.spawn(|| run(&w, poison.clone(), rx));
            assert!(w.save_inline(&poison, &one_tx()).is_some());
            assert!(w.wants_settle());
            tx.send(Cmd::Settle).expect("send");
            // A flush after the wake-up: once it is answered, the thread has taken the
            // wake-up too. The engine cannot settle, so the thread goes on watching it.
            let (reply, got) = oneshot::channel();
            w.queue(true);
            tx.send(Cmd::Flush { reply }).expect("send");
            assert!(got.blocking_recv().expect("answer").is_err());
            // Each save made inline: the thread's timed settle (which keeps failing) may
            // hold the engine for a moment, and a save that finds it held is not made.
            let saved_inline = || loop {
                match w.save_inline(&poison, &one_tx()) {
                    Some(r) => return r.is_ok(),
                    None => std::thread::yield_now(),
                }
            };
            let asked: Vec<bool> = (0..3).map(|_| saved_inline() && w.wants_settle()).collect();
            let (reply, got) = oneshot::channel();
            w.queue(true);
            tx.send(Cmd::Close { reply }).expect("send");
            got.blocking_recv().expect("closed");
            thread.join().expect("writer thread");
            assert_eq!(
                asked, [false; 3],
                "a watching thread was asked to wake again"
            );
            assert_eq!(lock(&groups).len(), 4);
        });
    }

    #[test]
    fn only_a_save_that_began_alone_is_alone() {
        let (w, _) = recorder(true, false);
        let first = w.saving();
        assert!(first.alone());
        let second = w.saving();
        assert!(!second.alone());
        drop(first);
        drop(second);
        // Both ended (a dropped future ends its save too): the next one is alone again.
        assert!(w.saving().alone());
    }

    #[test]
    fn a_panic_in_an_inline_save_poisons_the_store() {
        let (w, _) = recorder(true, true);
        let poison = Poison::default();
        let got = w.save_inline(&poison, &one_tx());
        assert!(
            matches!(got, Some(Err(StorageError::Poisoned(_)))),
            "{got:?}"
        );
        assert!(matches!(poison.check(), Err(StorageError::Poisoned(_))));
    }

    #[test]
    fn a_poisoned_store_refuses_an_inline_save() {
        let (w, groups) = recorder(true, false);
        let poison = Poison::default();
        poison.set("fsync failed".into());
        let got = w.save_inline(&poison, &one_tx());
        assert!(
            matches!(got, Some(Err(StorageError::Poisoned(_)))),
            "{got:?}"
        );
        assert!(lock(&groups).is_empty());
    }
}
