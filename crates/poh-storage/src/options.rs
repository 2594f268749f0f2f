//! [`OpenOptions`]: how a store is opened, for every engine.

use std::sync::Arc;
use std::time::Duration;

use poh_types::Limits;

use crate::fs::{FileSystem, RealFs};
use crate::layout::Layout;

/// How long a wait for another process's store lock lasts by default before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How a store is opened.
#[derive(Clone)]
pub struct OpenOptions {
    /// Create the base directory and database if missing (default true).
    pub create: bool,
    /// Finish or discard the temp files of saves a crash interrupted, at open (default
    /// true); `recover` does the same repair. (To inspect a store exactly as found, open
    /// it [`read_only`](Self::read_only).)
    pub repair: bool,
    /// Open for reading only (default false): nothing under the base or at the database
    /// is created, migrated or changed — not even the lock file — so it works on a
    /// read-only mount, a full disk or a store owned by another user, never waits for a
    /// writer's lock on its fast path, and inspects a store exactly as found. Writes
    /// return [`StorageError::ReadOnly`](crate::StorageError::ReadOnly); `recover` runs only as a dry run.
    pub read_only: bool,
    /// Give the group read access to what the store creates (default false): directories
    /// 0750 and files 0640 instead of 0700 and 0600, for deployments where a group of
    /// services shares a store. Never wider; existing files keep their modes until they
    /// are rewritten. Whatever this says, a writable handle refuses a base, `.tmp/` or
    /// `.quarantine/` that other users can write to ([`StorageError::WritableByOthers`](crate::StorageError::WritableByOthers)).
    pub group_readable: bool,
    /// Longest wait for the store lock before failing with
    /// [`StorageError::LockTimeout`](crate::StorageError::LockTimeout) (default 30 s).
    pub lock_timeout: Duration,
    /// The layout of a store this open creates (default `None`: flat files). An existing
    /// store always opens with the layout recorded in it; naming a different one here is
    /// refused with [`StorageError::LayoutMismatch`](crate::StorageError::LayoutMismatch)
    /// rather than ignored.
    pub layout: Option<Layout>,
    /// Width of the time window one segment holds, for a `segments` store this open
    /// creates (default 1 h; whole seconds, at least 1). Recorded in the store; naming a
    /// different width for an existing store is refused like a layout mismatch.
    pub segment_window: Option<Duration>,
    /// PostgreSQL stores only: detach wholly expired partitions (kept as tables named
    /// `poh_expired_<window>`, for an operator to archive and drop) instead of dropping
    /// them (default false).
    pub detach_expired: bool,
    /// Let a lone save commit on its caller's thread (default false). When no other save
    /// is in progress and the writer thread is idle, a save called on a multi-threaded
    /// tokio runtime then commits right there, in `tokio::task::block_in_place`, instead
    /// of going to the writer thread and back: two thread wake-ups fewer, ~45 µs of a
    /// ~280 µs durable single save on this kind of machine. Saves from several callers
    /// still queue and share one commit; on a current-thread runtime or outside tokio
    /// every save queues. Off by default because tokio panics on blocking inside a
    /// `LocalSet` driven outside the runtime's worker threads, which a library cannot
    /// detect: turn it on when saves are never called from such a `LocalSet` (the Python
    /// package does; so does `poh-bench`).
    pub inline_saves: bool,
    /// Input limits applied to saves.
    pub limits: Limits,
    /// The file system payloads live on (tests substitute a simulated one).
    pub fs: Arc<dyn FileSystem>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: true,
            repair: true,
            read_only: false,
            group_readable: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            layout: None,
            segment_window: None,
            detach_expired: false,
            inline_saves: false,
            limits: Limits::default(),
            fs: Arc::new(RealFs),
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("create", &self.create)
            .field("repair", &self.repair)
            .field("read_only", &self.read_only)
            .field("group_readable", &self.group_readable)
            .field("lock_timeout", &self.lock_timeout)
            .field("layout", &self.layout)
            .field("segment_window", &self.segment_window)
            .field("detach_expired", &self.detach_expired)
            .field("inline_saves", &self.inline_saves)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
