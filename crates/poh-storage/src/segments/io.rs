//! The segments writer's I/O thread: it seals a save group's records (their payload
//! SHA-256 and header check), writes them and syncs them while the writer's own thread
//! writes the group's index rows (docs/design.md §7.3).
//!
//! The thread is started once per writer and then woken per group. A thread spawned per
//! group waited about 2 ms for a core whenever the other core was busy (the scheduler
//! starts a new thread behind the running ones); a woken thread that was sleeping runs
//! within about 10 µs (both measured on this kind of 2-core machine).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use super::record;
use crate::fs::FileHandle;
use crate::par::par_map;

/// Bytes of a segment's records written, and their writeback started, as soon as they
/// are sealed: the device takes them while the rest of the group is hashed, and the
/// `fdatasync` at the end waits for less.
pub(crate) const STREAM_CHUNK: usize = 256 * 1024;

/// Bytes of a group from which its payloads are hashed on several threads (measured at
/// 1,000 txs of 1 KiB, 1 MiB: 0.97 ms on one thread, 1.11 ms with a second one spawned
/// for it, so a group of that size is hashed on one).
pub(crate) const PAR_HASH_MIN: usize = 4 * 1024 * 1024;

/// One segment's part of a save group.
pub(crate) struct SegJob {
    pub(crate) id: u64,
    pub(crate) file: Arc<dyn FileHandle>,
    /// Where `buf` goes in the file (the segment's committed length).
    pub(crate) start: u64,
    /// The records ([`record::encode_unsealed`]), then the zeros of the segment's padding.
    pub(crate) buf: Vec<u8>,
    /// Bytes of records in `buf` (the rest is padding).
    pub(crate) len: usize,
    /// Each record's offset in `buf` and header length, in order.
    pub(crate) records: Vec<(usize, usize)>,
}

/// What [`seal_write_sync`] did: the microseconds sealing and writing took, those the
/// syncs took, and one sync result per job; or the first write that failed (with its
/// segment; nothing is synced then).
pub(crate) type Streamed =
    std::result::Result<(u64, u64, Vec<std::io::Result<()>>), (u64, std::io::Error)>;

/// Seals every record of `jobs`, writes each job's bytes at its start (in pieces of
/// [`STREAM_CHUNK`], each piece's writeback started as it is written), then syncs every
/// job's segment (their writeback started together first, when several).
pub(crate) fn seal_write_sync(jobs: &mut [SegJob]) -> Streamed {
    let t = Instant::now();
    let total: usize = jobs.iter().map(|j| j.len).sum();
    let threads = if total >= PAR_HASH_MIN {
        crate::par::cores().min(4)
    } else {
        1
    };
    for job in jobs.iter_mut() {
        let ends: Vec<usize> = job
            .records
            .iter()
            .skip(1)
            .map(|&(off, _)| off)
            .chain(std::iter::once(job.len))
            .collect();
        if threads > 1 {
            let spans: Vec<(usize, usize, usize)> = job
                .records
                .iter()
                .zip(&ends)
                .map(|(&(off, hlen), &end)| (off, hlen, end))
                .collect();
            let buf = &job.buf;
            let shas = par_map(&spans, threads, |&(off, hlen, end)| {
                record::sha256(&buf[off + hlen..end])
            });
            for (&(off, hlen, end), sha) in spans.iter().zip(&shas) {
                record::seal_with(&mut job.buf[off..end], hlen, sha);
            }
        } else {
            let mut written = 0;
            for (&(off, hlen), &end) in job.records.iter().zip(&ends) {
                record::seal(&mut job.buf[off..end], hlen);
                if end - written >= STREAM_CHUNK {
                    let at = job.start + written as u64;
                    job.file
                        .write_at(at, &job.buf[written..end])
                        .map_err(|e| (job.id, e))?;
                    job.file.start_writeback(at, (end - written) as u64);
                    written = end;
                }
            }
            if written < job.buf.len() {
                job.file
                    .write_at(job.start + written as u64, &job.buf[written..])
                    .map_err(|e| (job.id, e))?;
            }
            continue;
        }
        job.file
            .write_at(job.start, &job.buf)
            .map_err(|e| (job.id, e))?;
    }
    let written_us = t.elapsed().as_micros() as u64;
    let parts: Vec<(&dyn FileHandle, u64, u64)> = jobs
        .iter()
        .map(|j| (&*j.file, j.start, j.buf.len() as u64))
        .collect();
    let synced = sync_all(&parts);
    Ok((
        written_us,
        (t.elapsed().as_micros() as u64).saturating_sub(written_us),
        synced,
    ))
}

/// Syncs each file (after the write of `len` bytes at `start`); one result each. With
/// several, the writeback of all of them is started first, so that the device takes their
/// data in one go and each `fdatasync` then only waits and flushes (measured: 6 segments
/// synced one after the other, or on 6 threads, cost about twice as much).
pub(crate) fn sync_all(parts: &[(&dyn FileHandle, u64, u64)]) -> Vec<std::io::Result<()>> {
    if parts.len() > 1 {
        for &(file, start, len) in parts {
            file.start_writeback(start, len);
        }
    }
    parts.iter().map(|(file, ..)| file.sync_data()).collect()
}

/// The writer's I/O thread: jobs in, their outcomes out, one at a time.
///
/// Each job is handed over with the thread's CPU set steered away from the sender's CPU
/// ([`IoThread::send`]). Woken from a busy core, the thread was queued behind its waker on
/// that core: the scheduler did not look for the idle one while both had been busy (at 1M
/// txs in poh-bench a 1,000-tx group's job started a median 1.1 ms after it was sent, so
/// the records and the rows, meant to overlap, ran one after the other).
pub(crate) struct IoThread {
    jobs: Option<Sender<(Vec<SegJob>, Instant)>>,
    done: Receiver<(Streamed, u64)>,
    thread: Option<JoinHandle<()>>,
    tid: Option<rustix::thread::Pid>,
    /// The CPUs it may run on as started (its spawner's).
    cpus: Option<rustix::thread::CpuSet>,
    /// The CPU the thread was last steered away from.
    away_from: std::cell::Cell<Option<usize>>,
}

impl IoThread {
    pub(crate) fn start() -> std::io::Result<Self> {
        let (jobs, rx) = channel::<(Vec<SegJob>, Instant)>();
        let (tx, done) = channel::<(Streamed, u64)>();
        let (tid_tx, tid_rx) = channel();
        let thread = std::thread::Builder::new()
            .name("poh-writer-io".into())
            .spawn(move || {
                let _ = tid_tx.send(rustix::thread::gettid());
                for (mut job, sent) in rx {
                    let waited = sent.elapsed().as_micros() as u64;
                    if tx.send((seal_write_sync(&mut job), waited)).is_err() {
                        return;
                    }
                }
            })?;
        let tid = tid_rx.recv().ok();
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            cpus: tid.and_then(|t| rustix::thread::sched_getaffinity(Some(t)).ok()),
            tid,
            away_from: std::cell::Cell::new(None),
        })
    }

    /// Keeps the thread off the CPU this one runs on, when the process may use another
    /// (best effort: a failure only costs the overlap).
    fn steer(&self) {
        let (Some(tid), Some(all)) = (self.tid, &self.cpus) else {
            return;
        };
        let here = rustix::thread::sched_getcpu();
        if self.away_from.get() == Some(here) {
            return;
        }
        let mut cpus = *all;
        cpus.unset(here);
        let target = if cpus.count() > 0 { &cpus } else { all };
        if rustix::thread::sched_setaffinity(Some(tid), target).is_ok() {
            self.away_from.set(Some(here));
        }
    }

    /// Hands `jobs` to the thread; gives them back when it is gone.
    pub(crate) fn send(&self, jobs: Vec<SegJob>) -> std::result::Result<(), Vec<SegJob>> {
        match &self.jobs {
            Some(j) => {
                self.steer();
                j.send((jobs, Instant::now())).map_err(|e| e.0.0)
            }
            None => Err(jobs),
        }
    }

    /// The outcome of the job sent last, and the microseconds it waited for the thread;
    /// `None` when the thread is gone.
    pub(crate) fn wait(&self) -> Option<(Streamed, u64)> {
        self.done.recv().ok()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_handed_to_a_thread_kept_off_the_senders_cpu() {
        let Ok(allowed) = rustix::thread::sched_getaffinity(None) else {
            return;
        };
        let io = IoThread::start().expect("start");
        let tid = io.tid.expect("the thread's id");
        let cpus: Vec<usize> = (0..1024).filter(|c| allowed.is_set(*c)).collect();
        if cpus.len() < 2 {
            eprintln!("note: one CPU here; nothing to steer");
            return;
        }
        for &cpu in cpus.iter().take(2) {
            // This thread pinned to `cpu`: the I/O thread may run anywhere else.
            let mut one = rustix::thread::CpuSet::new();
            one.set(cpu);
            rustix::thread::sched_setaffinity(None, &one).expect("pin");
            io.send(Vec::new()).ok().expect("sent");
            let (done, _) = io.wait().expect("done");
            assert!(done.is_ok());
            let its = rustix::thread::sched_getaffinity(Some(tid)).expect("its CPUs");
            assert!(!its.is_set(cpu), "kept off CPU {cpu}");
            assert_eq!(its.count() as usize, cpus.len() - 1);
        }
        rustix::thread::sched_setaffinity(None, &allowed).expect("unpin");
    }
}
