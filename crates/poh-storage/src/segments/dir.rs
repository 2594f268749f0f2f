//! The files of a segments store under its base directory: `segments/<id>.seg` and
//! `.quarantine/`, created with the store's modes, never through a planted link.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StorageError};
use crate::fs::{EntryKind, FileSystem, Modes, writable_by_others};

/// Directory of the segment files, under the base.
pub const SEGMENTS_DIR: &str = "segments";
/// Directory of quarantined records, under the base.
pub const QUARANTINE_DIR: &str = ".quarantine";
const SEG_SUFFIX: &str = ".seg";

/// Where a segments store's files are.
#[derive(Clone)]
pub(crate) struct SegDir {
    fs: Arc<dyn FileSystem>,
    base: PathBuf,
    segs: PathBuf,
    quarantine: PathBuf,
    modes: Modes,
    seq: Arc<AtomicU64>,
}

impl SegDir {
    pub(crate) fn new(fs: Arc<dyn FileSystem>, base: &Path, modes: Modes) -> Self {
        Self {
            fs,
            segs: base.join(SEGMENTS_DIR),
            quarantine: base.join(QUARANTINE_DIR),
            base: base.to_owned(),
            modes,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn fs(&self) -> &dyn FileSystem {
        &*self.fs
    }

    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    pub(crate) fn segs(&self) -> &Path {
        &self.segs
    }

    pub(crate) fn modes(&self) -> Modes {
        self.modes
    }

    /// `<base>/segments/<id>.seg`.
    pub(crate) fn path(&self, id: u64) -> PathBuf {
        self.segs.join(format!("{id:08}{SEG_SUFFIX}"))
    }

    /// Refuses (for writers) directories other users can write to.
    pub(crate) fn check_permissions(&self) -> Result<()> {
        for dir in [&self.base, &self.segs, &self.quarantine] {
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

    /// True if the store's own directory `dir` exists as a real directory, false if it
    /// does not exist; an error naming it if it is a link, a file or anything else.
    fn own_dir(&self, dir: &Path) -> Result<bool> {
        crate::fs::own_dir(&*self.fs, dir)
    }

    /// Checks, changing nothing, that the store's own directories are real directories
    /// where they exist.
    pub(crate) fn check(&self) -> Result<()> {
        self.own_dir(&self.segs)?;
        self.own_dir(&self.quarantine)?;
        Ok(())
    }

    /// Creates the base (syncing its parent) if missing; true if it was created.
    pub(crate) fn create_base(&self) -> Result<bool> {
        match self.fs.kind(&self.base) {
            Ok(EntryKind::Dir) => return Ok(false),
            Ok(EntryKind::Symlink) if std::fs::metadata(&self.base).is_ok_and(|m| m.is_dir()) => {
                return Ok(false);
            }
            Ok(_) => {
                return Err(StorageError::BadStoreEntry {
                    path: self.base.clone(),
                    why: "the store's base is not a directory".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("open base directory", &self.base, e)),
        }
        self.fs
            .create_dir_all(&self.base, self.modes.dir)
            .map_err(|e| StorageError::io("create base directory", &self.base, e))?;
        let parent = match self.base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        self.fs
            .sync_dir(parent)
            .map_err(|e| StorageError::io("fsync directory", parent, e))?;
        Ok(true)
    }

    /// Creates `segments/` if missing, durably.
    pub(crate) fn init(&self) -> Result<()> {
        self.check()?;
        if !self.own_dir(&self.segs)? {
            self.fs
                .create_dir_all(&self.segs, self.modes.dir)
                .map_err(|e| StorageError::io("create segments directory", &self.segs, e))?;
            self.fs
                .sync_dir(&self.base)
                .map_err(|e| StorageError::io("fsync directory", &self.base, e))?;
        }
        Ok(())
    }

    /// Every entry of `segments/`: `(Some(id), kind)` for a segment name, `(None, kind)`
    /// with its name for anything else. Empty if the directory does not exist.
    pub(crate) fn list(&self) -> Result<Vec<(Option<u64>, String, EntryKind)>> {
        if !self.own_dir(&self.segs)? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.fs
            .list_dir(&self.segs, &mut |e| {
                out.push((parse_name(&e.name), e.name, e.kind));
            })
            .map_err(|e| StorageError::io("list segments directory", &self.segs, e))?;
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(out)
    }

    fn ensure_quarantine(&self) -> Result<()> {
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
        Ok(())
    }

    /// A fresh name `.quarantine/<label>.<secs>-<pid>-<n>.<ext>`.
    fn name(&self, label: &str, ext: &str) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.quarantine
            .join(format!("{label}.{secs}-{}-{n}.{ext}", std::process::id()))
    }

    /// Writes `bytes` (a record as found) and `note` (JSON) into `.quarantine/`, both
    /// durable before returning: the note first, so a crash leaves a note without bytes,
    /// never bytes without a note. Returns the path of the bytes.
    pub(crate) fn quarantine_bytes(
        &self,
        label: &str,
        bytes: Option<&[u8]>,
        note: &str,
    ) -> Result<PathBuf> {
        self.ensure_quarantine()?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let note_path = self.name(label, "json");
            match self
                .fs
                .write_new_synced(&note_path, note.as_bytes(), self.modes.file)
            {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                    continue;
                }
                Err(e) => return Err(StorageError::io("write quarantine note", &note_path, e)),
                Ok(()) => {}
            }
            let out = match bytes {
                Some(b) => {
                    let bin = note_path.with_extension("bin");
                    self.fs
                        .write_new_synced(&bin, b, self.modes.file)
                        .map_err(|e| StorageError::io("write quarantined record", &bin, e))?;
                    bin
                }
                None => note_path,
            };
            self.fs
                .sync_dir(&self.quarantine)
                .map_err(|e| StorageError::io("fsync directory", &self.quarantine, e))?;
            return Ok(out);
        }
    }

    /// Moves a whole file (a segment the index does not know) into `.quarantine/` with a
    /// note beside it, durably. Returns its new path.
    pub(crate) fn quarantine_file(&self, src: &Path, label: &str, note: &str) -> Result<PathBuf> {
        let note_path = self.quarantine_bytes(label, None, note)?;
        let dest = note_path.with_extension("seg");
        (|| {
            self.fs.rename(src, &dest)?;
            self.fs.sync_dir(&self.quarantine)?;
            self.fs.sync_dir(&self.segs)
        })()
        .map_err(|e| StorageError::io("move segment into quarantine", src, e))?;
        Ok(dest)
    }
}

/// `00000012.seg` → 12.
fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEG_SUFFIX)?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_parse_back() {
        let d = SegDir::new(Arc::new(crate::fs::RealFs), Path::new("/b"), Modes::PRIVATE);
        for id in [1u64, 12, 99_999_999, 123_456_789_012] {
            let p = d.path(id);
            assert_eq!(
                parse_name(p.file_name().unwrap().to_str().unwrap()),
                Some(id)
            );
        }
        for bad in ["x.seg", ".seg", "12.seg.tmp", "-1.seg", "12"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
