//! [`SimFs`]: an in-memory [`FileSystem`] that models what POSIX promises to keep across
//! a power cut, and injects I/O errors on demand. Tests use it to check the durability
//! promise at every step of a workload.
//! (Over 600 lines on purpose: the durability model, the fault injector and their own
//! tests form one unit; splitting them would spread one invariant over several files.)
//!
//! # Durability model
//! Like redb's crash-test backend and SQLite's crash VFS, every file has *live* contents
//! (what reads see) and *durable* contents (what survives power loss); every directory has
//! live entries and durable entries.
//! - [`FileSystem::sync_file`] makes a file's live contents durable.
//! - [`FileSystem::sync_dir`] makes a directory's live entries durable: creations,
//!   renames into and out of it, and removals. Nothing else does — not syncing a file in
//!   it, not syncing its parent. A rename touches two directories and is durable in each
//!   only once that directory is synced (so after a power cut a renamed file may show up
//!   under both names, or neither, exactly as the contract allows).
//! - A directory made by `create_dir_all` is an entry of its parent like any other: it
//!   survives only once the parent is synced.
//!
//! [`SimFs::power_loss`] turns the live state into what a power cut leaves: every
//! directory's entries revert to its durable entries and every file's contents to its
//! durable contents; a file never synced comes back empty (or, with [`Loss::Torn`], holding
//! the first half of what was written: a torn write; for a file whose synced bytes the
//! live ones only extend — an append — the synced bytes and half of the rest).
//!
//! Open files ([`FileSystem::open_rw`]) follow the same model: [`FileHandle::write_at`] and
//! [`FileHandle::set_len`] change the live contents, [`FileHandle::sync_data`] makes them
//! durable. A handle keeps its file after the name is removed, as on POSIX.
//!
//! # Fault injection
//! Every call of a [`FileSystem`] method counts as one operation, reads and listings
//! included ([`SimFs::ops`]), so a test can run a workload once to count its operations and
//! then fail each of them in turn. A [`Fault`] fails the Nth operation matching it (every
//! operation, or only one [`Op`] kind, or only one path) with a chosen errno, once or from
//! then on. A failed operation has no effect, except that a failed
//! [`write_new`](FileSystem::write_new) or [`write_at`](FileHandle::write_at) with any errno
//! but `EACCES` leaves half of its data written (the file created, for `write_new`), as a
//! real `ENOSPC` or `EIO` in the middle of a write does.
//! [`SimFs::halt_after`] models the power going off after the Nth operation: every later
//! operation fails with `EIO` and has no effect, so the live state stays what it was at the
//! cut until the test calls [`SimFs::power_loss`].
//!
//! # What is not modelled
//! Only the files reached through [`FileSystem`] live here: the store lock
//! (the store lock) and the SQLite database stay on the real disk, so tests give the
//! store a real (temporary) base directory and use the same path for the simulated one.
//! SQLite runs with `synchronous=FULL`, so a transaction whose commit returned is durable
//! and one that did not return is rolled back; the model therefore assumes the power cut
//! falls *between* operations, and the real database file as it stands is the database a
//! power cut at that point would leave.
//!
//! Permissions are not modelled either: the `mode` of a new file or directory is ignored
//! and [`FileSystem::mode`] answers `None`, so the store's check of who may write to its
//! directories is skipped.
//!
//! Paths must be absolute; `..` and symbolic links in the middle of a path are not
//! resolved (the store never produces either).

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use poh_storage::{DirEntry, EntryKind, FileHandle, FileSystem, not_regular};

/// A kind of [`FileSystem`] operation, for [`Fault::only`] and [`SimFs::failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`FileSystem::create_dir_all`].
    CreateDirAll,
    /// [`FileSystem::write_new`].
    WriteNew,
    /// [`FileSystem::sync_file`].
    SyncFile,
    /// [`FileSystem::rename`].
    Rename,
    /// [`FileSystem::sync_dir`].
    SyncDir,
    /// [`FileSystem::read`].
    Read,
    /// [`FileSystem::remove_file`].
    RemoveFile,
    /// [`FileSystem::list_dir`].
    ListDir,
    /// [`FileSystem::kind`].
    Kind,
    /// [`FileSystem::open_rw`] and [`FileSystem::open_ro`].
    Open,
    /// [`FileHandle::read_at`].
    ReadAt,
    /// [`FileHandle::write_at`].
    WriteAt,
    /// [`FileHandle::sync_data`].
    SyncData,
    /// [`FileHandle::set_len`].
    SetLen,
    /// [`FileHandle::len`].
    Len,
}

impl Op {
    /// True for the operations that change the file system.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Op::CreateDirAll
                | Op::WriteNew
                | Op::SyncFile
                | Op::Rename
                | Op::SyncDir
                | Op::RemoveFile
                | Op::Open
                | Op::WriteAt
                | Op::SyncData
                | Op::SetLen
        )
    }

    /// True for the sync operations (`fsync` of a file or directory, `fdatasync`).
    pub fn is_sync(self) -> bool {
        matches!(self, Op::SyncFile | Op::SyncDir | Op::SyncData)
    }
}

/// An injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Fail the `at`-th matching operation counted from when the fault was injected
    /// (1-based).
    pub at: u64,
    /// The errno returned, as [`io::Error::from_raw_os_error`].
    pub errno: i32,
    /// Keep failing every later matching operation too.
    pub persist: bool,
    /// Only count and fail operations of this kind.
    pub only: Option<Op>,
    /// Only count and fail operations whose path (either path of a rename) is this one.
    pub path: Option<PathBuf>,
    seen: u64,
}

impl Fault {
    /// Fails the `at`-th operation from now with `errno`.
    pub fn nth(at: u64, errno: i32) -> Self {
        Self {
            at,
            errno,
            persist: false,
            only: None,
            path: None,
            seen: 0,
        }
    }

    /// Fails every matching operation from the `at`-th on.
    pub fn from_on(mut self) -> Self {
        self.persist = true;
        self
    }

    /// Counts and fails only operations of kind `op`.
    pub fn only(mut self, op: Op) -> Self {
        self.only = Some(op);
        self
    }

    /// Counts and fails only operations on `path`.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    fn matches(&self, op: Op, paths: &[&Path]) -> bool {
        self.only.is_none_or(|o| o == op) && self.path.as_deref().is_none_or(|p| paths.contains(&p))
    }
}

/// What a power cut does to files written but never synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// They come back with their last synced contents (empty if never synced).
    #[default]
    Clean,
    /// They come back holding the first half of their live contents (a torn write) when
    /// those differ from the synced contents.
    Torn,
}

/// One failure the simulation injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Index of the operation (as counted by [`SimFs::ops`]).
    pub index: u64,
    /// Its kind.
    pub op: Op,
    /// Its (first) path.
    pub path: PathBuf,
    /// The errno returned.
    pub errno: i32,
}

/// An entry of [`SimFs::tree`]: the live state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A file and its live contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(PathBuf),
}

type Ino = usize;

#[derive(Debug, Clone)]
enum Inode {
    File {
        live: Vec<u8>,
        durable: Vec<u8>,
    },
    Dir {
        live: BTreeMap<String, Ino>,
        durable: BTreeMap<String, Ino>,
    },
    Symlink {
        target: PathBuf,
    },
}

impl Inode {
    fn kind(&self) -> EntryKind {
        match self {
            Inode::File { .. } => EntryKind::File,
            Inode::Dir { .. } => EntryKind::Dir,
            Inode::Symlink { .. } => EntryKind::Symlink,
        }
    }

    fn empty_dir() -> Self {
        Inode::Dir {
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
        }
    }
}

const ROOT: Ino = 0;

#[derive(Debug, Clone)]
struct State {
    inodes: Vec<Inode>,
    ops: u64,
    faults: Vec<Fault>,
    halt_at: Option<u64>,
    halted: bool,
    failed: Vec<Failed>,
}

/// The simulated file system. Cheap to clone; clones share one state.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The normal components of an absolute path.
fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir => {}
            Component::Normal(s) => out.push(
                s.to_str()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 path"))?
                    .to_owned(),
            ),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("simulated fs does not resolve {}", path.display()),
                ));
            }
        }
    }
    if !absolute {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "simulated fs needs an absolute path, got {}",
                path.display()
            ),
        ));
    }
    Ok(out)
}

impl State {
    fn dir_live(&self, ino: Ino) -> Option<&BTreeMap<String, Ino>> {
        match &self.inodes[ino] {
            Inode::Dir { live, .. } => Some(live),
            _ => None,
        }
    }

    fn dir_live_mut(&mut self, ino: Ino) -> Option<&mut BTreeMap<String, Ino>> {
        match &mut self.inodes[ino] {
            Inode::Dir { live, .. } => Some(live),
            _ => None,
        }
    }

    /// The inode at `comps`, without following links.
    fn lookup(&self, comps: &[String]) -> io::Result<Ino> {
        let mut cur = ROOT;
        for c in comps {
            let entries = self.dir_live(cur).ok_or_else(|| errno(libc::ENOTDIR))?;
            cur = *entries.get(c).ok_or_else(|| errno(libc::ENOENT))?;
        }
        Ok(cur)
    }

    /// The directory holding the last component, and that component.
    fn parent<'a>(&self, comps: &'a [String]) -> io::Result<(Ino, &'a str)> {
        let (name, dir) = comps
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root has no parent"))?;
        let ino = self.lookup(dir)?;
        if self.dir_live(ino).is_none() {
            return Err(errno(libc::ENOTDIR));
        }
        Ok((ino, name))
    }

    fn alloc(&mut self, node: Inode) -> Ino {
        self.inodes.push(node);
        self.inodes.len() - 1
    }

    /// Counts one operation and decides whether it fails.
    fn enter(&mut self, op: Op, paths: &[&Path]) -> io::Result<()> {
        self.ops += 1;
        if self.halted {
            return Err(errno(libc::EIO));
        }
        let mut fail = None;
        for f in &mut self.faults {
            if !f.matches(op, paths) {
                continue;
            }
            f.seen += 1;
            if f.seen == f.at || (f.persist && f.seen > f.at) {
                fail.get_or_insert(f.errno);
            }
        }
        if let Some(e) = fail {
            self.failed.push(Failed {
                index: self.ops,
                op,
                path: paths.first().map(|p| p.to_path_buf()).unwrap_or_default(),
                errno: e,
            });
            return Err(errno(e));
        }
        Ok(())
    }

    /// Called after an operation that was allowed to run.
    fn leave(&mut self) {
        if self.halt_at.is_some_and(|h| self.ops >= h) {
            self.halted = true;
        }
    }

    fn create_dir_all(&mut self, comps: &[String]) -> io::Result<()> {
        let mut cur = ROOT;
        for c in comps {
            let next = match self.dir_live(cur) {
                None => return Err(errno(libc::ENOTDIR)),
                Some(entries) => entries.get(c).copied(),
            };
            cur = match next {
                Some(ino) if matches!(self.inodes[ino], Inode::Dir { .. }) => ino,
                Some(_) => return Err(errno(libc::EEXIST)),
                None => {
                    let ino = self.alloc(Inode::empty_dir());
                    if let Some(entries) = self.dir_live_mut(cur) {
                        entries.insert(c.clone(), ino);
                    }
                    ino
                }
            };
        }
        Ok(())
    }

    fn create_file(&mut self, comps: &[String], data: Vec<u8>) -> io::Result<Ino> {
        let (dir, name) = self.parent(comps)?;
        if self.dir_live(dir).is_some_and(|e| e.contains_key(name)) {
            return Err(errno(libc::EEXIST));
        }
        let ino = self.alloc(Inode::File {
            live: data,
            durable: Vec::new(),
        });
        if let Some(entries) = self.dir_live_mut(dir) {
            entries.insert(name.to_owned(), ino);
        }
        Ok(ino)
    }

    fn rename(&mut self, from: &[String], to: &[String]) -> io::Result<()> {
        let (src_dir, src_name) = self.parent(from)?;
        let ino = *self
            .dir_live(src_dir)
            .and_then(|e| e.get(src_name))
            .ok_or_else(|| errno(libc::ENOENT))?;
        let (dst_dir, dst_name) = self.parent(to)?;
        if let Some(&existing) = self.dir_live(dst_dir).and_then(|e| e.get(dst_name)) {
            if existing == ino {
                return Ok(());
            }
            match (&self.inodes[ino], &self.inodes[existing]) {
                (Inode::Dir { .. }, Inode::Dir { live, .. }) if !live.is_empty() => {
                    return Err(errno(libc::ENOTEMPTY));
                }
                (Inode::Dir { .. }, Inode::Dir { .. }) => {}
                (Inode::Dir { .. }, _) => return Err(errno(libc::ENOTDIR)),
                (_, Inode::Dir { .. }) => return Err(errno(libc::EISDIR)),
                _ => {}
            }
        }
        if let Some(e) = self.dir_live_mut(src_dir) {
            e.remove(src_name);
        }
        if let Some(e) = self.dir_live_mut(dst_dir) {
            e.insert(dst_name.to_owned(), ino);
        }
        Ok(())
    }

    fn power_loss(&mut self, loss: Loss) {
        for node in &mut self.inodes {
            match node {
                Inode::File { live, durable } => {
                    if loss == Loss::Torn && live != durable && !durable.starts_with(live) {
                        // What was synced stays when the live bytes only add to it (an
                        // append); half of the rest survives.
                        let synced = if live.starts_with(durable) {
                            durable.len()
                        } else {
                            0
                        };
                        let keep = synced + (live.len() - synced) / 2;
                        live.truncate(keep);
                        *durable = live.clone();
                    } else {
                        *live = durable.clone();
                    }
                }
                Inode::Dir { live, durable } => *live = durable.clone(),
                Inode::Symlink { .. } => {}
            }
        }
        self.faults.clear();
        self.halt_at = None;
        self.halted = false;
    }

    fn walk(&self, ino: Ino, path: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        match &self.inodes[ino] {
            Inode::File { live, .. } => {
                out.insert(path.to_path_buf(), Node::File(live.clone()));
            }
            Inode::Symlink { target } => {
                out.insert(path.to_path_buf(), Node::Symlink(target.clone()));
            }
            Inode::Dir { live, .. } => {
                out.insert(path.to_path_buf(), Node::Dir);
                for (name, &child) in live {
                    self.walk(child, &path.join(name), out);
                }
            }
        }
    }
}

impl SimFs {
    /// An empty file system: just a durable root directory.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                inodes: vec![Inode::empty_dir()],
                ops: 0,
                faults: Vec::new(),
                halt_at: None,
                halted: false,
                failed: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves a usable state behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run<T>(
        &self,
        op: Op,
        paths: &[&Path],
        f: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.lock();
        st.enter(op, paths)?;
        let out = f(&mut st);
        st.leave();
        out
    }

    // ---- setup and inspection (not counted as operations, never failed) ----

    /// Creates `dir` and its parents, durably: as if it existed before the test.
    pub fn create_durable_dir(&self, dir: &Path) -> io::Result<()> {
        let comps = components(dir)?;
        let mut st = self.lock();
        st.create_dir_all(&comps)?;
        // Make every directory on the way durable in its parent.
        for depth in 0..=comps.len() {
            let ino = st.lookup(&comps[..depth])?;
            if let Inode::Dir { live, durable } = &mut st.inodes[ino] {
                *durable = live.clone();
            }
        }
        Ok(())
    }

    /// Creates (or replaces) a durable file holding `data`; its directory must exist and
    /// its entry is made durable too. For building crash states by hand.
    pub fn put_durable(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let comps = components(path)?;
        let mut st = self.lock();
        let (dir, name) = st.parent(&comps)?;
        let ino = st.alloc(Inode::File {
            live: data.to_vec(),
            durable: data.to_vec(),
        });
        if let Inode::Dir { live, durable } = &mut st.inodes[dir] {
            live.insert(name.to_owned(), ino);
            durable.insert(name.to_owned(), ino);
        }
        Ok(())
    }

    /// Creates a durable symbolic link at `path` pointing to `target`.
    pub fn put_symlink(&self, path: &Path, target: &Path) -> io::Result<()> {
        let comps = components(path)?;
        let mut st = self.lock();
        let (dir, name) = st.parent(&comps)?;
        let ino = st.alloc(Inode::Symlink {
            target: target.to_path_buf(),
        });
        if let Inode::Dir { live, durable } = &mut st.inodes[dir] {
            live.insert(name.to_owned(), ino);
            durable.insert(name.to_owned(), ino);
        }
        Ok(())
    }

    /// The live contents of a file, if `path` is one.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let comps = components(path).ok()?;
        let st = self.lock();
        match &st.inodes[st.lookup(&comps).ok()?] {
            Inode::File { live, .. } => Some(live.clone()),
            _ => None,
        }
    }

    /// True if `path` exists (live).
    pub fn exists(&self, path: &Path) -> bool {
        components(path)
            .ok()
            .is_some_and(|c| self.lock().lookup(&c).is_ok())
    }

    /// Every live path under `root` (inclusive), with what it is; empty if `root` does not
    /// exist. For comparing states before and after an operation.
    pub fn tree(&self, root: &Path) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        if let Ok(comps) = components(root) {
            let st = self.lock();
            if let Ok(ino) = st.lookup(&comps) {
                st.walk(ino, root, &mut out);
            }
        }
        out
    }

    /// An independent copy of the whole state (files, faults, counters), to run several
    /// experiments from one starting point.
    pub fn fork(&self) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    /// Replaces this file system's whole state with a copy of `other`'s; every clone of
    /// this one sees the change.
    pub fn restore(&self, other: &SimFs) {
        let copy = other.lock().clone();
        *self.lock() = copy;
    }

    // ---- faults and power loss ----

    /// Operations counted so far (every [`FileSystem`] call).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Adds a fault; its count starts now.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every fault and any pending halt.
    pub fn clear_faults(&self) {
        let mut st = self.lock();
        st.faults.clear();
        st.halt_at = None;
    }

    /// The failures injected so far.
    pub fn failed(&self) -> Vec<Failed> {
        self.lock().failed.clone()
    }

    /// The power goes off right after the `n`-th operation from now (`n` = 0: now):
    /// every later operation fails with `EIO` and changes nothing.
    pub fn halt_after(&self, n: u64) {
        let mut st = self.lock();
        let at = st.ops + n;
        st.halt_at = Some(at);
        if n == 0 {
            st.halted = true;
        }
    }

    /// True once the power is off (see [`halt_after`](Self::halt_after)).
    pub fn halted(&self) -> bool {
        self.lock().halted
    }

    /// A power cut: see the module docs. Clears faults and the halt: the machine comes
    /// back up.
    pub fn power_loss(&self) {
        self.power_loss_with(Loss::Clean);
    }

    /// [`power_loss`](Self::power_loss) choosing what unsynced files become.
    pub fn power_loss_with(&self, loss: Loss) {
        self.lock().power_loss(loss);
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path, _mode: u32) -> io::Result<()> {
        let comps = components(dir)?;
        self.run(Op::CreateDirAll, &[dir], |st| st.create_dir_all(&comps))
    }

    fn write_new(&self, path: &Path, data: &[u8], _mode: u32) -> io::Result<()> {
        let comps = components(path)?;
        let mut st = self.lock();
        if let Err(e) = st.enter(Op::WriteNew, &[path]) {
            // A write that fails part-way (ENOSPC, EIO) leaves the file created and torn;
            // EACCES fails at open and leaves nothing.
            if !st.halted && e.raw_os_error() != Some(libc::EACCES) {
                let _ = st.create_file(&comps, data[..data.len() / 2].to_vec());
            }
            return Err(e);
        }
        let out = st.create_file(&comps, data.to_vec()).map(|_| ());
        st.leave();
        out
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let comps = components(path)?;
        self.run(Op::SyncFile, &[path], |st| {
            let ino = st.lookup(&comps)?;
            match &mut st.inodes[ino] {
                Inode::File { live, durable } => {
                    *durable = live.clone();
                    Ok(())
                }
                Inode::Dir { .. } => Err(errno(libc::EISDIR)),
                Inode::Symlink { .. } => Err(errno(libc::ELOOP)),
            }
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (f, t) = (components(from)?, components(to)?);
        self.run(Op::Rename, &[from, to], |st| st.rename(&f, &t))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let comps = components(dir)?;
        self.run(Op::SyncDir, &[dir], |st| {
            let ino = st.lookup(&comps)?;
            match &mut st.inodes[ino] {
                Inode::Dir { live, durable } => {
                    *durable = live.clone();
                    Ok(())
                }
                _ => Err(errno(libc::ENOTDIR)),
            }
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let comps = components(path)?;
        self.run(Op::Read, &[path], |st| {
            let ino = st.lookup(&comps)?;
            match &st.inodes[ino] {
                Inode::File { live, .. } => Ok(live.clone()),
                Inode::Dir { .. } => Err(not_regular(path)),
                Inode::Symlink { .. } => Err(errno(libc::ELOOP)),
            }
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let comps = components(path)?;
        self.run(Op::RemoveFile, &[path], |st| {
            let (dir, name) = st.parent(&comps)?;
            let ino = *st
                .dir_live(dir)
                .and_then(|e| e.get(name))
                .ok_or_else(|| errno(libc::ENOENT))?;
            if matches!(st.inodes[ino], Inode::Dir { .. }) {
                return Err(errno(libc::EISDIR));
            }
            if let Some(e) = st.dir_live_mut(dir) {
                e.remove(name);
            }
            Ok(())
        })
    }

    fn list_dir(&self, dir: &Path, visit: &mut dyn FnMut(DirEntry)) -> io::Result<()> {
        let comps = components(dir)?;
        // Collect first: the visitor may call back into the file system.
        let entries = self.run(Op::ListDir, &[dir], |st| {
            let ino = st.lookup(&comps)?;
            let live = st.dir_live(ino).ok_or_else(|| errno(libc::ENOTDIR))?;
            Ok(live
                .iter()
                .map(|(name, &child)| DirEntry {
                    name: name.clone(),
                    kind: st.inodes[child].kind(),
                })
                .collect::<Vec<_>>())
        })?;
        for e in entries {
            visit(e);
        }
        Ok(())
    }

    fn kind(&self, path: &Path) -> io::Result<EntryKind> {
        let comps = components(path)?;
        self.run(Op::Kind, &[path], |st| {
            let ino = st.lookup(&comps)?;
            Ok(st.inodes[ino].kind())
        })
    }

    fn open_rw(&self, path: &Path, create: bool, _mode: u32) -> io::Result<Box<dyn FileHandle>> {
        let comps = components(path)?;
        let ino = self.run(Op::Open, &[path], |st| {
            if create {
                st.create_file(&comps, Vec::new())
            } else {
                st.open_file(&comps, path)
            }
        })?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
            path: path.to_path_buf(),
            writable: true,
        }))
    }

    fn open_ro(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let comps = components(path)?;
        let ino = self.run(Op::Open, &[path], |st| st.open_file(&comps, path))?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
            path: path.to_path_buf(),
            writable: false,
        }))
    }
}

impl State {
    /// The inode of the existing regular file at `comps`, never following a link.
    fn open_file(&self, comps: &[String], path: &Path) -> io::Result<Ino> {
        let ino = self.lookup(comps)?;
        match &self.inodes[ino] {
            Inode::File { .. } => Ok(ino),
            Inode::Dir { .. } => Err(not_regular(path)),
            Inode::Symlink { .. } => Err(errno(libc::ELOOP)),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> io::Result<(&mut Vec<u8>, &mut Vec<u8>)> {
        match &mut self.inodes[ino] {
            Inode::File { live, durable } => Ok((live, durable)),
            _ => Err(errno(libc::EBADF)),
        }
    }
}

/// An open simulated file: it keeps its inode, as a descriptor does.
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    path: PathBuf,
    writable: bool,
}

impl SimFile {
    fn run<T>(&self, op: Op, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.enter(op, &[&self.path])?;
        let out = f(&mut st);
        st.leave();
        out
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(errno(libc::EBADF))
        }
    }
}

fn write_into(live: &mut Vec<u8>, off: u64, data: &[u8]) -> io::Result<()> {
    let off = usize::try_from(off).map_err(|_| errno(libc::EFBIG))?;
    let end = off + data.len();
    if live.len() < end {
        live.resize(end, 0);
    }
    live[off..end].copy_from_slice(data);
    Ok(())
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.run(Op::Len, |st| Ok(st.file_mut(self.ino)?.0.len() as u64))
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.run(Op::ReadAt, |st| {
            let live = &*st.file_mut(self.ino)?.0;
            let start = usize::try_from(off).unwrap_or(usize::MAX).min(live.len());
            let n = buf.len().min(live.len() - start);
            buf[..n].copy_from_slice(&live[start..start + n]);
            Ok(n)
        })
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = st.enter(Op::WriteAt, &[&self.path]) {
            // A write that fails part-way (ENOSPC, EIO) leaves half of its data behind.
            if !st.halted && e.raw_os_error() != Some(libc::EACCES) {
                let (live, _) = st.file_mut(self.ino)?;
                write_into(live, off, &data[..data.len() / 2])?;
            }
            return Err(e);
        }
        let out = st
            .file_mut(self.ino)
            .and_then(|(live, _)| write_into(live, off, data));
        st.leave();
        out
    }

    fn sync_data(&self) -> io::Result<()> {
        self.run(Op::SyncData, |st| {
            let (live, durable) = st.file_mut(self.ino)?;
            *durable = live.clone();
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.run(Op::SetLen, |st| {
            let len = usize::try_from(len).map_err(|_| errno(libc::EFBIG))?;
            st.file_mut(self.ino)?.0.resize(len, 0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_data_and_entries_are_lost() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        fs.write_new(&p("/s/a"), b"aaa", 0o600).unwrap();
        fs.write_new(&p("/s/b"), b"bbb", 0o600).unwrap();
        fs.sync_file(&p("/s/b")).unwrap();
        fs.sync_dir(&p("/s")).unwrap();
        fs.write_new(&p("/s/c"), b"ccc", 0o600).unwrap();
        fs.sync_file(&p("/s/c")).unwrap();
        fs.power_loss();
        assert_eq!(
            fs.contents(&p("/s/a")),
            Some(Vec::new()),
            "entry kept, data lost"
        );
        assert_eq!(fs.contents(&p("/s/b")), Some(b"bbb".to_vec()));
        assert!(!fs.exists(&p("/s/c")), "entry never synced");
    }

    #[test]
    fn torn_loss_keeps_a_prefix() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        fs.write_new(&p("/s/a"), b"abcd", 0o600).unwrap();
        fs.sync_dir(&p("/s")).unwrap();
        fs.power_loss_with(Loss::Torn);
        assert_eq!(fs.contents(&p("/s/a")), Some(b"ab".to_vec()));
    }

    #[test]
    fn rename_is_durable_per_directory() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s/t")).unwrap();
        fs.write_new(&p("/s/t/x"), b"new", 0o600).unwrap();
        fs.sync_file(&p("/s/t/x")).unwrap();
        fs.sync_dir(&p("/s/t")).unwrap();
        fs.put_durable(&p("/s/x"), b"old").unwrap();
        fs.rename(&p("/s/t/x"), &p("/s/x")).unwrap();
        assert_eq!(fs.contents(&p("/s/x")), Some(b"new".to_vec()));
        fs.power_loss();
        assert_eq!(fs.contents(&p("/s/x")), Some(b"old".to_vec()));
        assert_eq!(fs.contents(&p("/s/t/x")), Some(b"new".to_vec()));
        fs.rename(&p("/s/t/x"), &p("/s/x")).unwrap();
        fs.sync_dir(&p("/s")).unwrap();
        fs.power_loss();
        assert_eq!(fs.contents(&p("/s/x")), Some(b"new".to_vec()));
        assert_eq!(
            fs.contents(&p("/s/t/x")),
            Some(b"new".to_vec()),
            "source dir not synced"
        );
    }

    #[test]
    fn new_directories_need_their_parent_synced() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        fs.create_dir_all(&p("/s/d/e"), 0o700).unwrap();
        fs.write_new(&p("/s/d/e/f"), b"x", 0o600).unwrap();
        fs.sync_file(&p("/s/d/e/f")).unwrap();
        fs.sync_dir(&p("/s/d/e")).unwrap();
        fs.power_loss();
        assert!(!fs.exists(&p("/s/d")));
    }

    #[test]
    fn faults_fail_the_nth_matching_op() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        fs.inject(Fault::nth(2, libc::EIO).only(Op::WriteNew));
        fs.write_new(&p("/s/a"), b"1", 0o600).unwrap();
        let e = fs.write_new(&p("/s/b"), b"1234", 0o600).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert_eq!(
            fs.contents(&p("/s/b")),
            Some(b"12".to_vec()),
            "torn by the failure"
        );
        fs.write_new(&p("/s/c"), b"1", 0o600).unwrap();
        assert_eq!(fs.failed().len(), 1);

        fs.inject(Fault::nth(1, libc::EACCES).from_on().path("/s/a"));
        assert!(fs.read(&p("/s/c")).is_ok());
        for _ in 0..3 {
            let e = fs.read(&p("/s/a")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        }
        fs.clear_faults();
        assert!(fs.read(&p("/s/a")).is_ok());
    }

    #[test]
    fn halt_freezes_the_state() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        fs.halt_after(1);
        fs.write_new(&p("/s/a"), b"1", 0o600).unwrap();
        assert!(fs.halted());
        assert!(fs.sync_dir(&p("/s")).is_err());
        fs.power_loss();
        assert!(!fs.halted());
        assert!(!fs.exists(&p("/s/a")));
    }

    #[test]
    fn appends_keep_what_was_synced_and_tear_the_rest() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s")).unwrap();
        let f = fs.open_rw(&p("/s/seg"), true, 0o600).unwrap();
        f.write_at(0, b"abcd").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/s")).unwrap();
        f.write_at(4, b"efgh").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"abcdefgh");
        fs.power_loss_with(Loss::Torn);
        assert_eq!(fs.contents(&p("/s/seg")), Some(b"abcdef".to_vec()));
        fs.power_loss();
        let f = fs.open_rw(&p("/s/seg"), false, 0o600).unwrap();
        f.set_len(2).unwrap();
        fs.power_loss();
        assert_eq!(
            fs.contents(&p("/s/seg")),
            Some(b"abcdef".to_vec()),
            "a cut not synced comes back"
        );
        fs.inject(Fault::nth(1, libc::EIO).only(Op::WriteAt));
        let f = fs.open_rw(&p("/s/seg"), false, 0o600).unwrap();
        assert!(f.write_at(6, b"WXYZ").is_err());
        assert_eq!(fs.contents(&p("/s/seg")), Some(b"abcdefWX".to_vec()));
        assert!(fs.open_rw(&p("/s/seg"), true, 0o600).is_err(), "exclusive");
        let ro = fs.open_ro(&p("/s/seg")).unwrap();
        assert!(ro.write_at(0, b"x").is_err());
    }

    #[test]
    fn reads_never_follow_links_and_refuse_directories() {
        let fs = SimFs::new();
        fs.create_durable_dir(&p("/s/d")).unwrap();
        fs.put_symlink(&p("/s/l"), &p("/etc/passwd")).unwrap();
        assert_eq!(
            fs.read(&p("/s/l")).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert!(poh_storage::is_not_regular(
            &fs.read(&p("/s/d")).unwrap_err()
        ));
        assert_eq!(fs.kind(&p("/s/l")).unwrap(), EntryKind::Symlink);
        assert_eq!(
            fs.remove_file(&p("/s/d")).unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
    }
}
