//! The narrow file-system interface the payload store is written against, and its
//! real implementation. Tests substitute [`crate::sim::SimFs`] to inject failures and
//! simulate power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
pub trait FileSystem: Send + Sync + 'static {
    /// Creates the directory and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new file (failing if it exists) holding `data`. Not synced.
    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes a file's contents durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Creates, writes and syncs a file. Implementations may do it on one descriptor;
    /// the default calls [`write_new`](Self::write_new) then [`sync_file`](Self::sync_file).
    fn write_new_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.write_new(path, data)?;
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
    fn create(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        Self::create(path)?.write_all(data)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn write_new_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = Self::create(path)?;
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
