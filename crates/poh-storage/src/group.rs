//! Group commit, for every engine: one writer thread owns the engine's writing half and
//! applies every change, so that concurrent `save` callers share one durable commit.
//!
//! The thread takes the first waiting save and every save queued behind it (up to
//! [`MAX_GROUP_TXS`] txs or [`MAX_GROUP_BYTES`] of payload) as one group, hands the group
//! to [`EngineWriter::save_group`], and answers each caller with its own result. Deletes
//! and expiry batches run between groups, in arrival order. After a durability failure
//! the [`Poison`] makes every later write fail until the store is reopened.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use poh_types::{Tx, TxId};
use tokio::sync::oneshot;
use tracing::debug;

use crate::engine::EngineWriter;
use crate::error::{Result, StorageError};
use crate::poison::Poison;

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
}

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

/// The next command: looked for without sleeping for [`YIELD_FOR`], then waited for.
/// None once every sender is gone.
fn next_command(rx: &Receiver<Cmd>) -> Option<Cmd> {
    let started = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(c) => return Some(c),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if started.elapsed() < YIELD_FOR => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// Runs the writer thread until [`Cmd::Close`] or until every sender is gone.
pub(crate) fn run(mut writer: Box<dyn EngineWriter>, poison: Poison, rx: Receiver<Cmd>) {
    let mut next: Option<Cmd> = None;
    // Requests in the last save group: more than one means concurrent callers.
    let mut last_requests = 0usize;
    loop {
        let cmd = match next.take() {
            Some(c) => c,
            None => match next_command(&rx) {
                Some(c) => c,
                None => return,
            },
        };
        match cmd {
            Cmd::Save { txs, reply } => {
                let mut bytes: usize = txs.iter().map(|t| t.payload.len()).sum();
                let mut count = txs.len();
                let mut group = vec![(txs, reply)];
                let started = Instant::now();
                let mut arrived = started;
                while count < MAX_GROUP_TXS && bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
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
                let results = match poison.check() {
                    Err(e) => group.iter().map(|_| Err(clone_err(&e))).collect(),
                    Ok(()) => {
                        let slices: Vec<&[Tx]> = group.iter().map(|(t, _)| t.as_slice()).collect();
                        writer.save_group(&slices)
                    }
                };
                for ((txs, reply), res) in group.into_iter().zip(results) {
                    let _ = reply.send(res.map(|()| txs));
                }
            }
            Cmd::Delete { id, reply } => {
                let _ = reply.send(poison.check().and_then(|()| writer.delete(&id)));
            }
            Cmd::DeleteExpired {
                now,
                ttl,
                limit,
                reply,
            } => {
                let res = poison
                    .check()
                    .and_then(|()| writer.delete_expired(now, ttl, limit));
                let _ = reply.send(res);
            }
            Cmd::Close { reply } => {
                let _ = reply.send(());
                return;
            }
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
}
