//! The error type of histories and reports: JSON that does not decode or encode, files that
//! cannot be read or written.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A history (or another JSON document) could not be decoded.
    #[error("decode {what} from JSON: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },

    #[error("encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },

    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;
