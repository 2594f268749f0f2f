//! Payload files: where each payload lives, the temporary and quarantine names, and
//! reading a payload back with its hash checked.
//!
//! Layout under the base directory:
//! - `<tx_id>.bin`: the payload of a committed tx (the prototype's name, kept for
//!   compatibility).
//! - `.tmp/<tx_id>.<pid>-<seq>.tmp`: a payload being saved. It becomes `<tx_id>.bin` by a
//!   rename after its metadata row is committed.
//! - `.quarantine/<tx_id>.<unix-secs>-<n>.bin` (+ `.json`): payloads that failed
//!   verification, kept for an operator, never deleted by the store.
//! - `.poh.lock`: the store's writer lock (see [`crate::lock`]).
//!
//! Every name that is not a payload starts with `.`, which no [`TxId`] may, so the two
//! can never collide.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use poh_types::TxId;

use crate::fs::{EntryKind, FileSystem};

/// Suffix of payload files.
pub const PAYLOAD_SUFFIX: &str = ".bin";
/// Directory of in-flight payloads, under the base.
pub const TMP_DIR: &str = ".tmp";
/// Directory of quarantined payloads, under the base.
pub const QUARANTINE_DIR: &str = ".quarantine";
const TMP_SUFFIX: &str = ".tmp";

/// The payload half of a store.
#[derive(Clone)]
pub struct PayloadStore {
    fs: Arc<dyn FileSystem>,
    base: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
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
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Creates the base and `.tmp` directories if missing, and syncs the parent of each
    /// one created: a new directory's entry survives power loss only once its parent is
    /// synced, and everything saved under it would vanish with it.
    pub fn init(&self) -> io::Result<()> {
        if self.create_dir(&self.base)? {
            let parent = match self.base.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            self.fs.sync_dir(parent)?;
        }
        if self.create_dir(&self.tmp)? {
            self.fs.sync_dir(&self.base)?;
        }
        Ok(())
    }

    /// Creates `dir` (and its parents) if it does not exist; true if it was created.
    fn create_dir(&self, dir: &Path) -> io::Result<bool> {
        match self.fs.kind(dir) {
            Ok(EntryKind::Dir) => Ok(false),
            // Let create_dir_all decide (it accepts a link to a directory, refuses a file).
            Ok(_) => self.fs.create_dir_all(dir).map(|()| false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.fs.create_dir_all(dir)?;
                Ok(true)
            }
            Err(e) => Err(e),
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

    /// `<base>/<tx_id>.bin`.
    pub fn path(&self, id: &TxId) -> PathBuf {
        self.base.join(format!("{id}{PAYLOAD_SUFFIX}"))
    }

    /// A fresh, unique temp path for `id`.
    pub fn new_temp_path(&self, id: &TxId) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{id}.{}-{n}{TMP_SUFFIX}", std::process::id()))
    }

    /// Reads `<tx_id>.bin` (never following a link).
    pub fn read(&self, id: &TxId) -> io::Result<Vec<u8>> {
        self.fs.read(&self.path(id))
    }

    /// Lists `.tmp/` (empty if it does not exist).
    pub fn temps(&self) -> io::Result<Vec<TempFile>> {
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
            Err(e) => Err(e),
        }
    }

    /// Calls `visit(id, kind)` for every `<id>.bin` entry of the base directory whose stem
    /// is a valid id, streaming. Other names are ignored (the store never creates them).
    pub fn for_each_payload(&self, visit: &mut dyn FnMut(TxId, EntryKind)) -> io::Result<()> {
        self.fs.list_dir(&self.base, &mut |e| {
            if let Some(id) = e
                .name
                .strip_suffix(PAYLOAD_SUFFIX)
                .and_then(|stem| TxId::new(stem).ok())
            {
                visit(id, e.kind);
            }
        })
    }

    /// Moves `<tx_id>.bin` into `.quarantine/`, with `note` (JSON) beside it, and makes
    /// both directory changes durable. Returns the new path.
    pub fn quarantine(&self, id: &TxId, note: &str) -> io::Result<PathBuf> {
        self.fs.create_dir_all(&self.quarantine)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{id}.{secs}-{}-{n}", std::process::id());
        let dest = self.quarantine.join(format!("{stem}{PAYLOAD_SUFFIX}"));
        let note_path = self.quarantine.join(format!("{stem}.json"));
        self.fs.write_new(&note_path, note.as_bytes())?;
        self.fs.sync_file(&note_path)?;
        self.fs.rename(&self.path(id), &dest)?;
        self.fs.sync_dir(&self.quarantine)?;
        self.fs.sync_dir(&self.base)?;
        Ok(dest)
    }
}

/// `<id>.<pid>-<seq>.tmp` → `id`. The id may itself contain dots; the part after the
/// last dot is ours and has none.
fn parse_temp_name(name: &str) -> Option<TxId> {
    let stem = name.strip_suffix(TMP_SUFFIX)?;
    let (id, _nonce) = stem.rsplit_once('.')?;
    TxId::new(id).ok()
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
        for id in ["a", "a.b.c", "x-1_2"] {
            let id = TxId::new(id).unwrap();
            let p = ps.new_temp_path(&id);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_temp_name(name), Some(id));
        }
        assert_eq!(parse_temp_name("garbage"), None);
        assert_eq!(parse_temp_name(".x.1-2.tmp"), None);
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
