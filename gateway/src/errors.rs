//! The one error type a client of the gateway can see, and its conversion to gRPC and HTTP.
//!
//! Every error carries a stable [`ErrorCode`]; `tonic::Status` and HTTP responses are built
//! from it here and nowhere else.

use std::time::Duration;

use bongsu_proto::{ErrorCode, ModelError};

pub use bongsu_proto::model::{CODE_KEY, RETRY_AFTER_KEY};

/// A failed request: a stable code, a message for humans, and when to retry if that helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Set on `RESOURCE_EXHAUSTED`: when the caller may try again.
    pub retry_after: Option<Duration>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn exhausted(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: ErrorCode::ResourceExhausted,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    /// Whole seconds to put in `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|s| s.max(1))
    }

    /// The HTTP status for a stable code.
    pub fn http_status(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::NotMember | ErrorCode::NotOwner | ErrorCode::PermissionDenied => 403,
            ErrorCode::UnknownConversation | ErrorCode::UnknownNode | ErrorCode::UnknownUser => 404,
            ErrorCode::ConversationExists | ErrorCode::HandleTaken => 409,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::NotLeader | ErrorCode::Unavailable => 503,
            ErrorCode::CorruptData => 500,
            ErrorCode::AlreadyInitialized
            | ErrorCode::StaleEpoch
            | ErrorCode::FailedPrecondition
            | ErrorCode::NodeReplaced
            | ErrorCode::ClusterMismatch
            | ErrorCode::EventsPruned
            | ErrorCode::UpgradeNotFinished => 412,
            ErrorCode::InvalidArgument
            | ErrorCode::InvalidMembers
            | ErrorCode::DirectImmutable
            | ErrorCode::TooManyMembers => 400,
        }
    }
}

/// A rule of the model broken by a request: its stable code and which field.
impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        ApiError::new(e.code, format!("{}: {}", e.field, e.reason))
    }
}

/// What a node's reply says, as a client-facing error: the node's `bongsu-code` is kept.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError::new(ErrorCode::of_status_or_grpc(&s), s.message().to_string())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let mut status = tonic::Status::new(e.code.grpc_code(), e.message.clone());
        let md = status.metadata_mut();
        if let Ok(v) = e.code.as_str().parse() {
            md.insert(CODE_KEY, v);
        }
        if let Some(secs) = e.retry_after_secs() {
            if let Ok(v) = secs.to_string().parse() {
                md.insert(RETRY_AFTER_KEY, v);
            }
        }
        status
    }
}

/// HTTP: the status from [`ApiError::http_status`], `Retry-After` when set, and the body
/// `{"error": {"code": "NOT_MEMBER", "message": "..."}}`.
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(ApiError::http_status(self.code))
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs() {
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_round_trip_through_grpc() {
        for code in ErrorCode::ALL {
            let status = tonic::Status::from(ApiError::new(code, "x"));
            assert_eq!(ApiError::from(status).code, code, "{code}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let e = ApiError::exhausted("slow down", Duration::from_millis(1200));
        assert_eq!(e.retry_after_secs(), Some(2));
        let e = ApiError::exhausted("slow down", Duration::from_millis(10));
        assert_eq!(e.retry_after_secs(), Some(1));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
}
