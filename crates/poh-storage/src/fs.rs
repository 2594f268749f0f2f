//! The narrow file-system interface the payload store is written against, and its
//! real implementation. Tests substitute [`crate::sim::SimFs`] to inject failures and
//! simulate power loss.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The permission bits a store gives what it creates: its directories (the base, `.tmp/`,
/// `.quarantine/`) and its files (payloads, temps, quarantine notes, the database and its
/// side files, the lock). Set exactly, whatever the process umask. Files and directories
/// that already exist keep their modes until the store rewrites them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Mode of the directories the store creates.
    pub dir: u32,
    /// Mode of the files the store creates.
    pub file: u32,
}

impl Modes {
    /// The default: readable and writable by the store's own user only (0700 / 0600).
    pub const PRIVATE: Modes = Modes {
        dir: 0o700,
        file: 0o600,
    };
    /// Readable by the group as well, for services that share a store (0750 / 0640).
    /// Never wider: nothing is group-writable or open to other users.
    pub const GROUP_READABLE: Modes = Modes {
        dir: 0o750,
        file: 0o640,
    };

    /// [`Self::GROUP_READABLE`] if `group_readable`, else [`Self::PRIVATE`].
    pub fn new(group_readable: bool) -> Self {
        if group_readable {
            Self::GROUP_READABLE
        } else {
            Self::PRIVATE
        }
    }
}

impl Default for Modes {
    fn default() -> Self {
        Self::PRIVATE
    }
}

/// True when `mode` lets users other than the owner create, remove or rename entries in
/// a directory: a group or world write bit without the sticky bit.
pub fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0 && mode & 0o1000 == 0
}

/// What a directory entry is. Payloads must be [`EntryKind::File`]; anything else found
/// where a payload should be is treated as corruption, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's file name (not UTF-8 names are skipped by listings: no payload has one).
    pub name: String,
    /// What it is, without following links.
    pub kind: EntryKind,
}

/// The file operations the payload store needs, nothing more.
///
/// Durability contract, as on POSIX: data written by [`write_new`](Self::write_new)
/// survives power loss only after [`sync_file`](Self::sync_file); a created, renamed or
/// removed name survives only after [`sync_dir`](Self::sync_dir) on its directory.
///
/// Modes: `mode` arguments are permission bits (`0o700`, `0o600`, ...) that a real file
/// system must give the new directory or file exactly, whatever the process umask (see
/// [`Modes`]). A file system without permissions (the simulator) ignores them.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates the directory, with permission bits `mode`, and its missing parents (those
    /// with the default mode, as `mkdir -p -m` does).
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()>;
    /// Creates a new file (failing if it exists) with permission bits `mode`, holding
    /// `data`. Not synced.
    fn write_new(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// Makes a file's contents durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Creates, writes and syncs a file. Implementations may do it on one descriptor;
    /// the default calls [`write_new`](Self::write_new) then [`sync_file`](Self::sync_file).
    fn write_new_synced(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_new(path, data, mode)?;
        self.sync_file(path)
    }
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Reads a whole regular file without following a symbolic link.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Removes a file (or symbolic link).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Calls `visit` for each entry of a directory, without following links and without
    /// holding the whole listing in memory.
    fn list_dir(&self, dir: &Path, visit: &mut dyn FnMut(DirEntry)) -> io::Result<()>;
    /// What `path` is, without following links.
    fn kind(&self, path: &Path) -> io::Result<EntryKind>;
    /// The permission bits of `path` (with the setuid, setgid and sticky bits), following
    /// a link; `None` on a file system without permissions (the default).
    fn mode(&self, _path: &Path) -> io::Result<Option<u32>> {
        Ok(None)
    }
    /// Opens a regular file for positioned reads and writes, never following a symbolic
    /// link: with `create`, creates it exclusively (failing if it exists) with permission
    /// bits `mode`; otherwise it must exist. Used by append-only layouts (segments).
    fn open_rw(&self, path: &Path, create: bool, mode: u32) -> io::Result<Box<dyn FileHandle>>;
    /// Opens an existing regular file for positioned reads, never following a symbolic
    /// link; its write methods fail.
    fn open_ro(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
}

/// An open file for positioned I/O (see [`FileSystem::open_rw`]).
///
/// Durability contract: bytes written by [`write_at`](Self::write_at) and a length set by
/// [`set_len`](Self::set_len) survive power loss only after [`sync_data`](Self::sync_data)
/// (`fdatasync`). A handle keeps reading the file it opened even after the name is removed.
#[allow(clippy::len_without_is_empty)] // a length that can fail; emptiness is never asked
pub trait FileHandle: Send + Sync {
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end of the file.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `off`, or fails (possibly having written part of it).
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the contents and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `len` bytes at `off` to the device without waiting and without
    /// making anything durable (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that the
    /// [`sync_data`](Self::sync_data) calls that follow on several files find their data
    /// written already. A hint: the default does nothing, and a failure is for the
    /// `sync_data` that follows to report.
    fn start_writeback(&self, _off: u64, _len: u64) {}
    /// Cuts (or extends with zeros) the file to `len` bytes. Not synced.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Reads exactly `len` bytes at `off` from `file`, or fewer if the file ends first.
pub fn read_exact_at(file: &dyn FileHandle, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(off + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

fn kind_of(ft: fs::FileType) -> EntryKind {
    if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

impl RealFs {
    /// Creates a new file with exactly `mode`: the umask may have narrowed what `open`
    /// gave it, so the mode is set again on the descriptor.
    fn create(path: &Path, mode: u32) -> io::Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        Ok(f)
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && fs::metadata(dir).is_ok_and(|m| m.is_dir()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        // The umask may have narrowed it. Set the mode through a descriptor of the
        // directory just made, never through a link put in its place meanwhile.
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?
            .set_permissions(Permissions::from_mode(mode))
    }

    fn write_new(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        Self::create(path, mode)?.write_all(data)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn write_new_synced(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let mut f = Self::create(path, mode)?;
        f.write_all(data)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(not_regular(path));
        }
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        f.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path, visit: &mut dyn FnMut(DirEntry)) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            visit(DirEntry {
                name,
                kind: kind_of(entry.file_type()?),
            });
        }
        Ok(())
    }

    fn kind(&self, path: &Path) -> io::Result<EntryKind> {
        Ok(kind_of(fs::symlink_metadata(path)?.file_type()))
    }

    fn mode(&self, path: &Path) -> io::Result<Option<u32>> {
        Ok(Some(fs::metadata(path)?.permissions().mode() & 0o7777))
    }

    fn open_rw(&self, path: &Path, create: bool, mode: u32) -> io::Result<Box<dyn FileHandle>> {
        let f = if create {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?;
            f.set_permissions(Permissions::from_mode(mode))?;
            f
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(path)?
        };
        if !f.metadata()?.is_file() {
            return Err(not_regular(path));
        }
        Ok(Box::new(RealFile(f)))
    }

    fn open_ro(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        if !f.metadata()?.is_file() {
            return Err(not_regular(path));
        }
        Ok(Box::new(RealFile(f)))
    }
}

/// A [`FileHandle`] on a real file.
struct RealFile(File);

impl FileHandle for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        loop {
            match self.0.read_at(buf, off) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.0.write_all_at(data, off)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    // The library's only `unsafe`: no safe wrapper of `sync_file_range` in the
    // dependencies already used (std, libc, rustix).
    #[allow(unsafe_code)]
    fn start_writeback(&self, off: u64, len: u64) {
        use std::os::fd::AsRawFd as _;
        let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain system call on a descriptor this handle owns; no memory is
        // passed. Its result is ignored on purpose (see the trait: a hint only).
        unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// True if `dir`, one of a store's own directories, exists as a real directory; false if
/// it does not exist; an error naming it if it is a link, a file or anything else (the
/// store never follows or replaces what was planted there). Every engine checks its own
/// directories with this.
pub(crate) fn own_dir(fs: &dyn FileSystem, dir: &Path) -> crate::error::Result<bool> {
    use crate::error::StorageError;
    match fs.kind(dir) {
        Ok(EntryKind::Dir) => Ok(true),
        Ok(kind) => Err(StorageError::BadStoreEntry {
            path: dir.to_owned(),
            why: format!(
                "the store's own directory is {}, not a directory; the store never \
                 follows or replaces it",
                match kind {
                    EntryKind::Symlink => "a symbolic link",
                    EntryKind::File => "a regular file",
                    _ => "a special file",
                }
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io("inspect", dir, e)),
    }
}

/// The error [`FileSystem::read`] returns for something that is not a regular file.
pub fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is not a regular file", path.display()),
    )
}

/// True when a read error means "this is not a readable regular file" — a symbolic link
/// (refused by `O_NOFOLLOW`), a directory or a special file — as opposed to an error that
/// may pass (permissions, I/O, descriptors).
pub fn is_not_regular(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
        || e.kind() == io::ErrorKind::IsADirectory
        || e.raw_os_error() == Some(libc::ELOOP)
        || e.raw_os_error() == Some(libc::EISDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_or_world_write_bit_without_sticky_is_writable_by_others() {
        for m in [0o777, 0o770, 0o720, 0o702, 0o2770] {
            assert!(writable_by_others(m), "{m:o}");
        }
        for m in [0o700, 0o750, 0o755, 0o555, 0o1777, 0o1770] {
            assert!(!writable_by_others(m), "{m:o}");
        }
        assert_eq!(Modes::new(false), Modes::PRIVATE);
        assert_eq!(Modes::new(true).file & 0o077, 0o040, "group read only");
    }
}
