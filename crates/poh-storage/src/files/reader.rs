//! The flat-file engine's reading half ([`FilesReader`]): a metadata reader connection
//! and the payload files; a load reads `<id>.bin` and checks it against the row. Nothing
//! here writes, creates or waits for the store lock on the fast path.

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
    let id = TxId::new(row.tx_id.as_str()).map_err(|e| StorageError::Integrity {
        tx_id: row.tx_id.clone(),
        detail: format!("stored id is not a safe file name ({e}); its file is never read"),
    })?;
    let path = payloads.path(&id);
    let data = match payloads.read(&id) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::PayloadMissing {
                tx_id: row.tx_id.clone(),
                path,
            });
        }
        Err(e) if is_not_regular(&e) => {
            return Err(StorageError::Integrity {
                tx_id: row.tx_id.clone(),
                detail: format!("{} is not a regular file", path.display()),
            });
        }
        Err(e) => return Err(StorageError::io("read payload", path, e)),
    };
    verify_bytes(row, id, data)
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
