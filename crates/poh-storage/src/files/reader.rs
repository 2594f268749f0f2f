//! The flat-file engine's reading half ([`FilesReader`]): a metadata reader connection
//! and the payload files; a load reads `<id>.bin` and checks it against the row. Nothing
//! here writes, creates or waits for the store lock on the fast path.

use std::path::PathBuf;
use std::time::Duration;

use poh_types::{Tx, TxId};

use super::lock::StoreLock;
use super::meta::MetaStore;
use super::payload::{PayloadStore, sha256_hex};
use crate::engine::{EngineReader, MetaRow, Stats};
use crate::error::{Result, StorageError};
use crate::fs::is_not_regular;

/// Lookups on a flat-file store.
pub(crate) struct FilesReader {
    pub(crate) meta: Box<dyn MetaStore>,
    pub(crate) payloads: PayloadStore,
    pub(crate) lock_timeout: Duration,
}

impl EngineReader for FilesReader {
    fn load(&mut self, id: &TxId) -> Result<Option<Tx>> {
        let Some(row) = self.meta.get(id.as_str())? else {
            return Ok(None);
        };
        match check_payload(&self.payloads, &row) {
            Ok(tx) => Ok(Some(tx)),
            Err(e @ (StorageError::Io { .. } | StorageError::Meta { .. })) => Err(e),
            Err(_) => self.load_slow(id),
        }
    }

    /// One row lookup and one read of `<stem>.bin`; never the slow path's lock wait.
    fn load_small(&mut self, id: &TxId, max_bytes: u64) -> Option<Option<Tx>> {
        let Some(row) = self.meta.get(id.as_str()).ok()? else {
            return Some(None);
        };
        if row.size.is_none_or(|n| n > max_bytes) {
            return None;
        }
        check_payload(&self.payloads, &row).ok().map(Some)
    }

    fn row(&mut self, tx_id: &str) -> Result<Option<MetaRow>> {
        self.meta.get(tx_id)
    }

    fn page(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<MetaRow>> {
        self.meta.page(after, limit)
    }

    fn find_expired(
        &mut self,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Result<Vec<MetaRow>> {
        self.meta.find_expired(now, ttl, after, limit)
    }

    fn stats(&mut self) -> Result<Stats> {
        self.meta.stats()
    }
}

impl FilesReader {
    /// The payload did not match: wait out any writer mid-protocol (shared lock), then
    /// look again, including in `.tmp/` for a save that committed but crashed before its
    /// rename.
    fn load_slow(&mut self, id: &TxId) -> Result<Option<Tx>> {
        let lock = StoreLock::open_existing(self.payloads.base(), self.lock_timeout)?;
        let _guard = lock.as_ref().map(StoreLock::shared).transpose()?;
        let Some(row) = self.meta.get(id.as_str())? else {
            return Ok(None);
        };
        let err = match check_payload(&self.payloads, &row) {
            Ok(tx) => return Ok(Some(tx)),
            Err(e) => e,
        };
        if let Ok(temps) = self.payloads.temps() {
            for t in temps.into_iter().filter(|t| t.tx_id.as_ref() == Some(id)) {
                if let Ok(data) = self.payloads.fs().read(&t.path)
                    && let Ok(tx) = verify_bytes(&row, id.clone(), data)
                {
                    return Ok(Some(tx));
                }
            }
        }
        Err(err)
    }
}

/// Reads and verifies one payload against its row.
pub(crate) fn check_payload(payloads: &PayloadStore, row: &MetaRow) -> Result<Tx> {
    check_payload_found(payloads, row).0
}

/// [`check_payload`], also saying where the payload was read when that was the
/// prototype's name for the id (its own name missing): a payload `recover` renames, and,
/// if it fails verification, the file it quarantines.
pub(crate) fn check_payload_found(
    payloads: &PayloadStore,
    row: &MetaRow,
) -> (Result<Tx>, Option<PathBuf>) {
    let id = match TxId::new(row.tx_id.as_str()) {
        Ok(id) => id,
        Err(e) => {
            let err = StorageError::Integrity {
                tx_id: row.tx_id.clone(),
                detail: format!("stored id is not a safe file name ({e}); its file is never read"),
            };
            return (Err(err), None);
        }
    };
    let path = payloads.path(&id);
    let missing = || StorageError::PayloadMissing {
        tx_id: row.tx_id.clone(),
        path: path.clone(),
    };
    let (data, found) = match payloads.read(&id) {
        Ok(d) => (d, None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(proto) = payloads.prototype_path(&id) else {
                return (Err(missing()), None);
            };
            match payloads.fs().read(&proto) {
                Ok(d) => (d, Some(proto)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return (Err(missing()), None);
                }
                Err(e) => return (Err(read_error(row, &proto, e)), Some(proto)),
            }
        }
        Err(e) => return (Err(read_error(row, &path, e)), None),
    };
    let checked = verify_bytes(row, id, data).map_err(|e| match (e, &found) {
        (StorageError::Integrity { tx_id, detail }, Some(at)) => StorageError::Integrity {
            tx_id,
            detail: format!("{detail} (read at the prototype's name {})", at.display()),
        },
        (e, _) => e,
    });
    (checked, found)
}

/// The error for a payload file at `path` that could not be read: corruption when it is
/// not a regular file (a link, a directory, a device: never followed or opened), else an
/// I/O error.
fn read_error(row: &MetaRow, path: &std::path::Path, e: std::io::Error) -> StorageError {
    if is_not_regular(&e) {
        StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail: format!("{} is not a regular file", path.display()),
        }
    } else {
        StorageError::io("read payload", path, e)
    }
}

/// Checks `data` against the row's size and SHA-256.
fn verify_bytes(row: &MetaRow, id: TxId, data: Vec<u8>) -> Result<Tx> {
    if let Some(size) = row.size
        && size != data.len() as u64
    {
        return Err(StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail: format!("payload is {} bytes, {size} were saved", data.len()),
        });
    }
    let h = sha256_hex(&data);
    if h != row.storage_hash {
        return Err(StorageError::Integrity {
            tx_id: row.tx_id.clone(),
            detail: format!(
                "payload SHA-256 {h} does not match the recorded {}",
                row.storage_hash
            ),
        });
    }
    Ok(Tx {
        tx_id: id,
        holder_id: row.holder_id.clone(),
        timestamp: row.timestamp,
        payload: data,
    })
}
