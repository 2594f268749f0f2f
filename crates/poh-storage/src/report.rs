//! What recovery and verification report, for every engine: each finding with what was
//! (or, in a dry run, would be) done about it.

use std::path::PathBuf;

use serde::Serialize;

/// What kind of problem a tx or file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A row whose payload file does not exist.
    MissingPayload,
    /// A payload that fails its hash or size, or is not a regular file.
    Corrupt,
    /// A payload file with no row.
    Orphan,
    /// A leftover temp file of an interrupted save.
    TempFile,
    /// A row whose id is not a safe file name (written by another tool); left alone.
    UnsafeId,
    /// An error that may pass (permissions, I/O, descriptors); left alone.
    Transient,
    /// A committed save whose payload is still only in `.tmp/` (moving it into place
    /// failed); left alone until the move succeeds — its row is never dropped.
    Unfinished,
    /// The metadata database's own integrity check failed.
    Database,
    /// Bytes after a segment's last committed record (a save interrupted before its
    /// commit, or a torn write): cut at the committed length.
    TornTail,
}

/// One finding, and what was (or, in a dry run, would be) done about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The tx concerned (empty for an unparsable temp file name).
    pub tx_id: String,
    /// The problem.
    pub kind: ProblemKind,
    /// Details for a person.
    pub detail: String,
    /// The action: `dropped row`, `quarantined to …`, `removed`, `rolled forward`,
    /// `left alone`.
    pub action: String,
}

/// The outcome of [`crate::StorageManager::recover`] or `verify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecoverReport {
    /// True if nothing was changed.
    pub dry_run: bool,
    /// Rows checked.
    pub rows_checked: u64,
    /// Rows whose payload verified.
    pub rows_ok: u64,
    /// Payload files checked for a row.
    pub files_checked: u64,
    /// Saves finished by recovery: on flat files, saves that had committed but not renamed
    /// their payload, finished from `.tmp/`; on segments, saves whose index commit a power
    /// cut took, replayed from the segment tails (for `verify`: what would be).
    pub rolled_forward: Vec<String>,
    /// Temp files removed (or to remove).
    pub temps_removed: Vec<PathBuf>,
    /// Txs whose payload was found at the name the prototype gave it (`<id>.bin` for an
    /// id that is not a safe name) and renamed to the store's own name for it (in a dry
    /// run: to rename). Not a problem: loads read either name.
    pub adopted: Vec<String>,
    /// Every problem found, with its action.
    pub findings: Vec<Finding>,
}

impl RecoverReport {
    /// Findings of one kind.
    pub fn of_kind(&self, kind: ProblemKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// True when the store is fully consistent (verify exits 0).
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.rolled_forward.is_empty() && self.temps_removed.is_empty()
    }
}
