//! The error type of this crate: a validation failure with its stable code.

use crate::model::ErrorCode;

/// A value from the network or from a caller broke a rule of the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {field}: {reason}")]
pub struct ModelError {
    /// The stable code a client sees.
    pub code: ErrorCode,
    /// The field that was wrong, as named in the `.proto` file.
    pub field: &'static str,
    /// What was wrong with it, for a human.
    pub reason: String,
}

impl ModelError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
