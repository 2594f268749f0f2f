//! The store lock: an advisory `flock` on `<base>/.poh.lock` that orders every change to
//! the pair (metadata row, payload file) across threads and processes.
//!
//! Writers hold it exclusively while they commit rows and rename, remove or quarantine
//! payload files, so no process ever sees another's half-finished change. Readers never
//! take it on their fast path; they take it shared only to re-check a payload that did
//! not match its row, which waits out any writer in the middle of its protocol.
//!
//! Every wait is bounded: a holder that stopped (SIGSTOP, a hung device) makes the
//! waiter fail with [`StorageError::LockTimeout`], naming the holder's pid when the
//! kernel tells it (`/proc/locks`), instead of hanging forever. The lock file is opened
//! with `O_NOFOLLOW`: a symbolic link planted in its place is refused, never followed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, StorageError};

/// Name of the lock file under the base directory.
pub const LOCK_FILE: &str = ".poh.lock";

/// A handle on the store's lock file.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
    timeout: Duration,
}

/// Held lock; released on drop.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a StoreLock,
}

#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

impl StoreLock {
    /// Opens the lock file under `base`, creating it if needed with permission bits `mode`
    /// exactly (whatever the umask; an existing lock file keeps its mode); waits last up
    /// to `timeout`.
    pub fn open(base: &Path, timeout: Duration, mode: u32) -> Result<Self> {
        let path = base.join(LOCK_FILE);
        let open = |create: bool| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(create)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
        };
        // Create it, or open the one there; another process may be doing either at the
        // same moment, so a lost race is retried a few times.
        let mut attempts = 0;
        let file = loop {
            attempts += 1;
            match open(true) {
                Ok(f) => {
                    // The umask may have narrowed the mode `open` gave it.
                    f.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(|e| StorageError::io("set the mode of lock file", &path, e))?;
                    break f;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match open(false) {
                    Ok(f) => break f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => continue,
                    Err(e) => return Err(lock_open_error(&path, e)),
                },
                Err(e) => return Err(lock_open_error(&path, e)),
            }
        };
        Self::checked(file, path, timeout)
    }

    /// Opens the lock file under `base` if it exists, without creating or writing
    /// anything (for read-only handles). `None` when there is none: no writer of ours has
    /// ever opened the store, so there is nothing to wait out.
    pub fn open_existing(base: &Path, timeout: Duration) -> Result<Option<Self>> {
        let path = base.join(LOCK_FILE);
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(file) => Self::checked(file, path, timeout).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(lock_open_error(&path, e)),
        }
    }

    fn checked(file: File, path: PathBuf, timeout: Duration) -> Result<Self> {
        let meta = file
            .metadata()
            .map_err(|e| StorageError::io("stat lock file", &path, e))?;
        if !meta.is_file() {
            return Err(StorageError::BadStoreEntry {
                path,
                why: "the store's lock file is not a regular file".into(),
            });
        }
        Ok(Self {
            file,
            path,
            timeout,
        })
    }

    /// Waits (up to the timeout) until the lock is held exclusively.
    pub fn exclusive(&self) -> Result<LockGuard<'_>> {
        self.wait(Mode::Exclusive)
    }

    /// Waits (up to the timeout) until the lock is held shared.
    pub fn shared(&self) -> Result<LockGuard<'_>> {
        self.wait(Mode::Shared)
    }

    /// The exclusive lock if nobody else holds the lock right now; `None` otherwise.
    pub fn try_exclusive(&self) -> Result<Option<LockGuard<'_>>> {
        self.attempt(Mode::Exclusive)
    }

    /// The shared lock if nobody holds it exclusively right now; `None` otherwise.
    pub fn try_shared(&self) -> Result<Option<LockGuard<'_>>> {
        self.attempt(Mode::Shared)
    }

    fn attempt(&self, mode: Mode) -> Result<Option<LockGuard<'_>>> {
        let res = match mode {
            Mode::Shared => self.file.try_lock_shared(),
            Mode::Exclusive => self.file.try_lock(),
        };
        match res {
            Ok(()) => Ok(Some(LockGuard { lock: self })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io("lock", &self.path, e)),
        }
    }

    /// Polls with a growing pause (1 ms up to 20 ms): `flock` itself cannot time out.
    fn wait(&self, mode: Mode) -> Result<LockGuard<'_>> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(g) = self.attempt(mode)? {
                return Ok(g);
            }
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err(StorageError::LockTimeout {
                    path: self.path.clone(),
                    waited: self.timeout,
                    holder: self.holder_pid(),
                });
            }
            std::thread::sleep(pause.min(self.timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The pid of a process holding a lock on this file, from `/proc/locks` (Linux).
    fn holder_pid(&self) -> Option<u32> {
        let ino = self.file.metadata().ok()?.ino();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_in(&locks, ino, std::process::id())
    }
}

/// Finds, in the text of `/proc/locks`, the pid of a `FLOCK` on inode `ino` held by a
/// process other than `me`. A line reads `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`.
fn holder_in(locks: &str, ino: u64, me: u32) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, dev_ino) = (f.get(1)?, f.get(4)?, f.get(5)?);
        if *kind != "FLOCK" {
            return None;
        }
        let pid: u32 = pid.parse().ok()?;
        let file_ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        (file_ino == ino && pid != me).then_some(pid)
    })
}

fn lock_open_error(path: &Path, e: io::Error) -> StorageError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        StorageError::BadStoreEntry {
            path: path.to_owned(),
            why: "the store's lock file is a symbolic link; the store never follows one".into(),
        }
    } else {
        StorageError::io("open lock file", path, e)
    }
}

impl LockGuard<'_> {
    /// Leaves the lock held after the guard is gone, until [`StoreLock::unlock`]: for a
    /// holder whose protocol spans several calls (the segments writer between a save
    /// group's acknowledgement and its index commit).
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

/// The lock file's first byte while its holder has acknowledged work not yet committed
/// (the segments writer's early-acknowledged groups, docs/design.md §7.3c).
const MARK_PENDING: u8 = b'P';
/// ... and once that work is committed.
const MARK_CLEAR: u8 = b'-';

impl StoreLock {
    /// Releases a lock left held by [`LockGuard::keep`].
    pub(crate) fn unlock(&self) {
        let _ = self.file.unlock();
    }

    /// Marks (or clears) in the lock file that the holder has acknowledged work it has
    /// not committed yet, so that the next holder knows, if this one dies first, to
    /// finish it. Only a live holder of the exclusive lock calls it. Not synced: after a
    /// power cut every writer finishes such work at its first hold anyway.
    pub(crate) fn mark_pending(&self, pending: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let b = if pending { MARK_PENDING } else { MARK_CLEAR };
        self.file.write_all_at(&[b], 0)
    }

    /// True when the last holder marked work it did not commit ([`Self::mark_pending`]):
    /// read by a new holder of the exclusive lock.
    pub(crate) fn marked_pending(&self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 1];
        let n = self.file.read_at(&mut b, 0)?;
        Ok(n == 1 && b[0] == MARK_PENDING)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; unlock failing leaves nothing to do.
        let _ = self.lock.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_pid_is_read_from_proc_locks_lines() {
        let text = "1: POSIX  ADVISORY  WRITE 10 fd:01:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 fd:01:77 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 99 fd:01:78 0 EOF\n";
        assert_eq!(holder_in(text, 77, 1), Some(4242));
        assert_eq!(
            holder_in(text, 77, 4242),
            None,
            "our own lock is not a holder"
        );
        assert_eq!(holder_in(text, 78, 1), Some(99));
        assert_eq!(holder_in(text, 5, 1), None);
    }

    #[test]
    fn a_held_lock_times_out_with_the_holders_pid_and_a_free_one_is_taken() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let a = StoreLock::open(dir.path(), Duration::from_millis(30), 0o600).expect("open a");
        let b = StoreLock::open(dir.path(), Duration::from_millis(30), 0o600).expect("open b");
        let held = a.exclusive().expect("first lock");
        assert!(b.try_exclusive().expect("try").is_none());
        match b.shared() {
            Err(StorageError::LockTimeout { path, .. }) => {
                assert_eq!(path, dir.path().join(LOCK_FILE));
            }
            other => panic!("expected a lock timeout, got {other:?}"),
        }
        drop(held);
        assert!(b.try_exclusive().expect("try").is_some());
    }
}
