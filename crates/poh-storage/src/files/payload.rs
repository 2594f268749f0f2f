//! Payload files: where each payload lives, the temporary and quarantine names, and
//! reading a payload back with its hash checked.
//!
//! Layout under the base directory:
//! - `<stem>.bin`: the payload of a committed tx, where `<stem>` is
//!   [`TxId::file_stem`]: the id itself for ids that are safe names (the prototype's
//!   name, kept for compatibility), else the id escaped (`~` and `%XX`).
//! - `.tmp/<stem>.<pid>-<seq>.tmp`: a payload being saved. It becomes `<stem>.bin` by a
//!   rename after its metadata row is committed.
//! - `.quarantine/<stem>.<unix-secs>-<pid>-<n>.bin` (+ `.json`): payloads that failed
//!   verification, kept for an operator, never deleted by the store.
//! - `.poh.lock`: the store's writer lock (see [`super::lock`]).
//!
//! Every name that is not a payload starts with `.`, which no stem does, so the two
//! can never collide; names are parsed back with [`TxId::from_file_stem`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use poh_types::TxId;

use crate::error::{Result, StorageError};
use crate::fs::{EntryKind, FileSystem, Modes, writable_by_others};

/// Suffix of payload files.
pub const PAYLOAD_SUFFIX: &str = ".bin";
/// Directory of in-flight payloads, under the base.
pub const TMP_DIR: &str = ".tmp";
/// Directory of quarantined payloads, under the base.
pub const QUARANTINE_DIR: &str = ".quarantine";
const TMP_SUFFIX: &str = ".tmp";
/// Longest stem kept in a quarantine name: `.<secs>-<pid>-<n>.json` takes at most 58 bytes.
const QUARANTINE_STEM_MAX: usize = 255 - 58;

/// The payload half of a store.
#[derive(Clone)]
pub struct PayloadStore {
    fs: Arc<dyn FileSystem>,
    base: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    modes: Modes,
    seq: Arc<AtomicU64>,
}

impl std::fmt::Debug for PayloadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadStore")
            .field("base", &self.base)
            .finish()
    }
}

/// A temporary payload file found in `.tmp/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempFile {
    /// The id the temp belongs to, if its name parses to a valid id.
    pub tx_id: Option<TxId>,
    /// Full path.
    pub path: PathBuf,
}

impl PayloadStore {
    /// A payload store rooted at `base`. Nothing is touched until [`init`](Self::init).
    pub fn new(fs: Arc<dyn FileSystem>, base: impl Into<PathBuf>) -> Self {
        let base = base.into();
        Self {
            fs,
            tmp: base.join(TMP_DIR),
            quarantine: base.join(QUARANTINE_DIR),
            base,
            modes: Modes::PRIVATE,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same store giving what it creates `modes` (default [`Modes::PRIVATE`]).
    pub fn with_modes(mut self, modes: Modes) -> Self {
        self.modes = modes;
        self
    }

    /// The modes given to what the store creates.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// Refuses a store whose base, `.tmp/` or `.quarantine/` other users can write to (a
    /// group or world write bit without the sticky bit): they could plant files and links
    /// where the store renames and deletes files. Checks modes only; a file system without
    /// them (the simulator) passes.
    pub fn check_permissions(&self) -> Result<()> {
        for dir in [&self.base, &self.tmp, &self.quarantine] {
            let mode = match self.fs.mode(dir) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("inspect", dir, e)),
            };
            if writable_by_others(mode) {
                return Err(StorageError::WritableByOthers {
                    path: dir.clone(),
                    mode,
                    expected: self.modes.dir,
                });
            }
        }
        Ok(())
    }

    /// Creates the base and `.tmp` directories if missing, and syncs the parent of each
    /// one created: a new directory's entry survives power loss only once its parent is
    /// synced, and everything saved under it would vanish with it. Refuses a `.tmp` or
    /// `.quarantine` that is a symbolic link or not a directory (see [`Self::check`]).
    pub fn init(&self) -> Result<()> {
        let created = self
            .create_dir(&self.base)
            .map_err(|e| StorageError::io("create base directory", &self.base, e))?;
        if created {
            let parent = match self.base.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            self.fs
                .sync_dir(parent)
                .map_err(|e| StorageError::io("fsync directory", parent, e))?;
        }
        self.check()?;
        if !self.own_dir(&self.tmp)? {
            self.fs
                .create_dir_all(&self.tmp, self.modes.dir)
                .map_err(|e| StorageError::io("create temp directory", &self.tmp, e))?;
            self.fs
                .sync_dir(&self.base)
                .map_err(|e| StorageError::io("fsync directory", &self.base, e))?;
        }
        Ok(())
    }

    /// Checks, without changing anything, that the base is a directory and that the
    /// store's own directories (`.tmp`, `.quarantine`), where they exist, are real
    /// directories: the store never follows a symbolic link planted in their place, since
    /// it creates and removes files in them.
    pub fn check(&self) -> Result<()> {
        match self.fs.kind(&self.base) {
            Ok(EntryKind::Dir) => {}
            // The base itself may be a link chosen by its operator; follow it once.
            Ok(EntryKind::Symlink) if std::fs::metadata(&self.base).is_ok_and(|m| m.is_dir()) => {}
            Ok(_) => {
                return Err(StorageError::BadStoreEntry {
                    path: self.base.clone(),
                    why: "the store's base is not a directory".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    path: self.base.clone(),
                    why: "the base directory does not exist".into(),
                });
            }
            Err(e) => return Err(StorageError::io("open base directory", &self.base, e)),
        }
        self.own_dir(&self.tmp)?;
        self.own_dir(&self.quarantine)?;
        Ok(())
    }

    /// True if the store's own directory `dir` exists as a real directory, false if it
    /// does not exist; an error naming it if it is a link, a file or anything else.
    fn own_dir(&self, dir: &Path) -> Result<bool> {
        crate::fs::own_dir(&*self.fs, dir)
    }

    /// Creates `dir` (and its parents) if nothing is there; true if it was created.
    fn create_dir(&self, dir: &Path) -> io::Result<bool> {
        match self.fs.kind(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.fs.create_dir_all(dir, self.modes.dir)?;
                Ok(true)
            }
            Err(e) => Err(e),
            Ok(_) => Ok(false),
        }
    }

    /// The file system underneath.
    pub fn fs(&self) -> &dyn FileSystem {
        &*self.fs
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The temp directory.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// `<base>/<stem>.bin` (see [`TxId::file_stem`]).
    pub fn path(&self, id: &TxId) -> PathBuf {
        self.base
            .join(format!("{}{PAYLOAD_SUFFIX}", id.file_stem()))
    }

    /// A fresh, unique temp path for `id`.
    pub fn new_temp_path(&self, id: &TxId) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!(
            "{}.{}-{n}{TMP_SUFFIX}",
            id.file_stem(),
            std::process::id()
        ))
    }

    /// `<base>/<id>.bin`, the name the prototype gave `id`'s payload, when that is not
    /// [`path`](Self::path) and is one plain name directly in the base (see
    /// [`TxId::prototype_file_stem`]).
    pub fn prototype_path(&self, id: &TxId) -> Option<PathBuf> {
        id.prototype_file_stem()
            .map(|stem| self.base.join(format!("{stem}{PAYLOAD_SUFFIX}")))
    }

    /// Reads `<stem>.bin` (never following a link).
    pub fn read(&self, id: &TxId) -> io::Result<Vec<u8>> {
        self.fs.read(&self.path(id))
    }

    /// Renames the payload at the prototype's name `from` (see
    /// [`prototype_path`](Self::prototype_path)) to `id`'s own name, which must not exist:
    /// the caller holds the exclusive lock and found it missing. Not synced: the caller
    /// syncs the base once for a batch. Either name holds the payload at every moment,
    /// and loads look at both, so a crash at any point loses nothing.
    pub fn adopt(&self, id: &TxId, from: &Path) -> io::Result<()> {
        match self.fs.kind(&self.path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", self.path(id).display()),
                ));
            }
        }
        self.fs.rename(from, &self.path(id))
    }

    /// Lists `.tmp/` (empty if it does not exist; an error if it is not a real directory).
    pub fn temps(&self) -> Result<Vec<TempFile>> {
        if !self.own_dir(&self.tmp)? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let listed = self.fs.list_dir(&self.tmp, &mut |e| {
            out.push(TempFile {
                tx_id: parse_temp_name(&e.name),
                path: self.tmp.join(&e.name),
            })
        });
        match listed {
            Ok(()) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StorageError::io("list temp directory", &self.tmp, e)),
        }
    }

    /// Calls `visit(id, kind)` for every `<id>.bin` entry of the base directory whose stem
    /// is a valid id, streaming. Other names are ignored (the store never creates them).
    pub fn for_each_payload(&self, visit: &mut dyn FnMut(TxId, EntryKind)) -> io::Result<()> {
        self.fs.list_dir(&self.base, &mut |e| {
            if let Some(id) = e
                .name
                .strip_suffix(PAYLOAD_SUFFIX)
                .and_then(TxId::from_file_stem)
            {
                visit(id, e.kind);
            }
        })
    }

    /// Moves `<tx_id>.bin` into `.quarantine/`, with `note` (JSON) beside it, and makes
    /// both directory changes durable. Returns the new path. The note is written first: a
    /// crash in between leaves a note without its payload, never a payload without a note.
    pub fn quarantine(&self, id: &TxId, note: &str) -> Result<PathBuf> {
        self.quarantine_file(id, &self.path(id), note)
    }

    /// [`quarantine`](Self::quarantine) for the payload of `id` found at `src` (its own
    /// name, or the prototype's name for it).
    pub fn quarantine_file(&self, id: &TxId, src: &Path, note: &str) -> Result<PathBuf> {
        let stem = self.quarantine_note(id, note)?;
        let dest = stem.with_extension("bin");
        (|| {
            self.fs.rename(src, &dest)?;
            self.fs.sync_dir(&self.quarantine)?;
            self.fs.sync_dir(&self.base)
        })()
        .map_err(|e| StorageError::io("move payload into quarantine", src, e))?;
        Ok(dest)
    }

    /// Writes `note` (JSON) as `.quarantine/<tx_id>.<secs>-<pid>-<n>.json`, durably, and
    /// returns its path. Used alone for a row dropped without a payload, so that what the
    /// row said is never lost.
    pub fn quarantine_note(&self, id: &TxId, note: &str) -> Result<PathBuf> {
        if !self.own_dir(&self.quarantine)? {
            self.fs
                .create_dir_all(&self.quarantine, self.modes.dir)
                .map_err(|e| {
                    StorageError::io("create quarantine directory", &self.quarantine, e)
                })?;
            self.fs
                .sync_dir(&self.base)
                .map_err(|e| StorageError::io("fsync directory", &self.base, e))?;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The note names the id; the file name only has to be unique and readable, so a
        // stem too long for a 255-byte name with this suffix is cut (at a char boundary:
        // stems are ASCII).
        let stem = id.file_stem();
        let stem = &stem[..stem.len().min(QUARANTINE_STEM_MAX)];
        // A name left by an earlier, interrupted quarantine in the same second by a
        // process with the same pid is skipped, never overwritten.
        loop {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let note_path = self
                .quarantine
                .join(format!("{stem}.{secs}-{}-{n}.json", std::process::id()));
            match self
                .fs
                .write_new(&note_path, note.as_bytes(), self.modes.file)
            {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1_000_000 => continue,
                written => {
                    return written
                        .and_then(|()| self.fs.sync_file(&note_path))
                        .and_then(|()| self.fs.sync_dir(&self.quarantine))
                        .map(|()| note_path.clone())
                        .map_err(|e| StorageError::io("write quarantine note", &note_path, e));
                }
            }
        }
    }
}

/// `<stem>.<pid>-<seq>.tmp` → the id. The stem may itself contain dots; the part after
/// the last dot is ours and has none.
fn parse_temp_name(name: &str) -> Option<TxId> {
    let stem = name.strip_suffix(TMP_SUFFIX)?;
    let (stem, _nonce) = stem.rsplit_once('.')?;
    TxId::from_file_stem(stem)
}

/// Lowercase hex SHA-256, the `storage_hash` format.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse_back_to_their_id() {
        let ps = PayloadStore::new(Arc::new(crate::fs::RealFs), "/nonexistent");
        for id in ["a", "a.b.c", "x-1_2", "../x", "('127.0.0.1', 5)", "é.tmp"] {
            let id = TxId::new(id).unwrap();
            let p = ps.new_temp_path(&id);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_temp_name(name), Some(id));
        }
        assert_eq!(parse_temp_name("garbage"), None);
        assert_eq!(parse_temp_name(".x.1-2.tmp"), None);
    }

    #[test]
    fn every_id_names_a_file_directly_in_the_base() {
        let ps = PayloadStore::new(Arc::new(crate::fs::RealFs), "/store");
        for (id, name) in [
            ("t1", "t1.bin"),
            ("../x", "~..%2Fx.bin"),
            ("..", "~...bin"),
            (".poh.lock", "~.poh.lock.bin"),
            ("a/b", "~a%2Fb.bin"),
        ] {
            let p = ps.path(&TxId::new(id).unwrap());
            assert_eq!(p, Path::new("/store").join(name), "{id:?}");
            assert_eq!(p.parent(), Some(Path::new("/store")));
        }
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
