//! The error type of this crate.

use openraft::{AnyError, ErrorSubject, ErrorVerb};

use crate::GroupId;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open rocksdb at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },

    /// The store was written by a newer release; this one must not touch it.
    #[error("the store at {path} has format {format}, written by a newer release (this one knows format {known}); run that release or newer")]
    NewerStore {
        path: String,
        format: u32,
        known: u32,
    },

    #[error("rocksdb {op} for group {group}: {source}")]
    RocksDb {
        group: GroupId,
        op: &'static str,
        source: rocksdb::Error,
    },

    /// A value read back from disk did not decode. The store never guesses around it.
    #[error("corrupt value in group {group} at key {key} ({what}): {reason}")]
    Corrupt {
        group: GroupId,
        key: String,
        what: &'static str,
        reason: String,
    },

    /// An earlier write failed; the writer acknowledges nothing any more (fail-stop).
    #[error("the log writer stopped after a failed write: {0}")]
    WriterFailed(String),

    #[error("snapshot for group {group} is invalid: {reason}")]
    BadSnapshot { group: GroupId, reason: String },

    /// Reading or writing a snapshot file failed.
    #[error("snapshot file for group {group}: {reason}")]
    SnapshotIo { group: GroupId, reason: String },

    /// A blocking thread running RocksDB work panicked or was cancelled (see
    /// `store::off_runtime`).
    #[error("{what}: the storage task failed: {reason}")]
    TaskFailed { what: &'static str, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Converts into openraft's error, tagged with what was being done.
    pub fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> crate::StorageError {
        openraft::StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}
