//! The SDK's one error type, and how a gRPC status becomes one.
//!
//! The gateway puts the stable code of every error it returns into the `bongsu-code` metadata
//! entry (and `retry-after` seconds on `RESOURCE_EXHAUSTED`). A status without that entry did
//! not come from the gateway's own logic: it is the transport (connection refused or reset, a
//! gateway killed mid-call), so it is reported as [`Error::Transport`].

use std::time::Duration;

use bongsu_proto::{ErrorCode, ModelError};

pub use bongsu_proto::model::{CODE_KEY, RETRY_AFTER_KEY};

/// Everything that can go wrong in a call through the SDK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The gateway (or a node behind it) refused the request with a stable code.
    #[error("{code}: {message}")]
    Api {
        code: ErrorCode,
        message: String,
        /// Set on `RESOURCE_EXHAUSTED`: how long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The call did not reach a gateway's logic, or its answer did not reach us.
    #[error("transport ({code:?}): {message}")]
    Transport { code: tonic::Code, message: String },
    /// One attempt took longer than the SDK's per-attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An endpoint is not a usable URL.
    #[error("invalid endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    /// `Client::connect` was given no endpoints.
    #[error("no gateway endpoints given")]
    NoEndpoints,
    /// A call that needs a session was made before signing in.
    #[error("not signed in: sign up, sign in, or use a saved session first")]
    NotSignedIn,
    /// The server sent something that breaks the model (a bad id, an oversized body).
    #[error("invalid reply from the server: {0}")]
    InvalidReply(#[from] ModelError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable code the server gave, if the error came from the server.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth trying again with the same request (every SDK call is idempotent): the cluster was
    /// busy or between leaders, or the connection failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { code, .. } => matches!(
                code,
                ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::ResourceExhausted
            ),
            Error::Transport { .. } | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// The gateway that gave this error is better avoided for the next attempt: it is gone, or
    /// cannot reach the cluster. Other gateways are just as good (they are stateless).
    pub fn should_switch_gateway(&self) -> bool {
        match self {
            Error::Api { code, .. } => *code == ErrorCode::Unavailable,
            Error::Transport { .. } | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// Builds an [`Error::InvalidReply`] for a reply that lacks something it must have.
    pub(crate) fn missing(field: &'static str) -> Self {
        Error::InvalidReply(ModelError::invalid(field, "missing in the reply"))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let md = s.metadata();
        let Some(name) = md.get(CODE_KEY).and_then(|v| v.to_str().ok()) else {
            return Error::Transport {
                code: s.code(),
                message: s.message().to_string(),
            };
        };
        // Some server messages repeat the code ("NOT_MEMBER: ..."); Display adds it once.
        let text = s.message();
        let text = text
            .strip_prefix(name)
            .and_then(|t| t.strip_prefix(": "))
            .unwrap_or(text);
        let (code, message) = match ErrorCode::from_name(name) {
            Some(c) => (c, text.to_string()),
            None => (
                ErrorCode::from_grpc(s.code()),
                format!("{name} (unknown to this SDK): {text}"),
            ),
        };
        let retry_after = md
            .get(RETRY_AFTER_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Error::Api {
            code,
            message,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, md: &[(&'static str, &str)]) -> tonic::Status {
        let mut s = tonic::Status::new(code, "boom");
        for (k, v) in md {
            s.metadata_mut()
                .insert(*k, v.parse().expect("test metadata is ASCII"));
        }
        s
    }

    #[test]
    fn every_stable_code_is_read_from_metadata() {
        for code in ErrorCode::ALL {
            let e = Error::from(status(tonic::Code::Internal, &[(CODE_KEY, code.as_str())]));
            assert_eq!(e.code(), Some(code), "{code}");
        }
    }

    #[test]
    fn a_code_repeated_in_the_message_is_shown_once() {
        let mut s = tonic::Status::new(tonic::Code::PermissionDenied, "NOT_MEMBER: not yours");
        s.metadata_mut()
            .insert(CODE_KEY, "NOT_MEMBER".parse().expect("ASCII"));
        assert_eq!(Error::from(s).to_string(), "NOT_MEMBER: not yours");
    }

    #[test]
    fn table_of_statuses() {
        struct Case {
            status: tonic::Status,
            code: Option<ErrorCode>,
            retryable: bool,
            switch: bool,
            retry_after: Option<u64>,
        }
        let cases = [
            Case {
                status: status(tonic::Code::PermissionDenied, &[(CODE_KEY, "NOT_MEMBER")]),
                code: Some(ErrorCode::NotMember),
                retryable: false,
                switch: false,
                retry_after: None,
            },
            Case {
                status: status(
                    tonic::Code::ResourceExhausted,
                    &[(CODE_KEY, "RESOURCE_EXHAUSTED"), (RETRY_AFTER_KEY, "3")],
                ),
                code: Some(ErrorCode::ResourceExhausted),
                retryable: true,
                switch: false,
                retry_after: Some(3),
            },
            Case {
                status: status(tonic::Code::Unavailable, &[(CODE_KEY, "NOT_LEADER")]),
                code: Some(ErrorCode::NotLeader),
                retryable: true,
                switch: false,
                retry_after: None,
            },
            Case {
                status: status(tonic::Code::Unavailable, &[(CODE_KEY, "UNAVAILABLE")]),
                code: Some(ErrorCode::Unavailable),
                retryable: true,
                switch: true,
                retry_after: None,
            },
            // No bongsu-code: the connection, not the gateway, failed.
            Case {
                status: status(tonic::Code::Unavailable, &[]),
                code: None,
                retryable: true,
                switch: true,
                retry_after: None,
            },
            // A garbled retry-after is ignored rather than trusted.
            Case {
                status: status(
                    tonic::Code::ResourceExhausted,
                    &[(CODE_KEY, "RESOURCE_EXHAUSTED"), (RETRY_AFTER_KEY, "soon")],
                ),
                code: Some(ErrorCode::ResourceExhausted),
                retryable: true,
                switch: false,
                retry_after: None,
            },
            // A code from a newer server falls back on the gRPC code.
            Case {
                status: status(tonic::Code::NotFound, &[(CODE_KEY, "BRAND_NEW_CODE")]),
                code: Some(ErrorCode::UnknownConversation),
                retryable: false,
                switch: false,
                retry_after: None,
            },
            Case {
                status: status(
                    tonic::Code::Unauthenticated,
                    &[(CODE_KEY, "UNAUTHENTICATED")],
                ),
                code: Some(ErrorCode::Unauthenticated),
                retryable: false,
                switch: false,
                retry_after: None,
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let e = Error::from(c.status);
            assert_eq!(e.code(), c.code, "case {i}: {e}");
            assert_eq!(e.is_retryable(), c.retryable, "case {i}: {e}");
            assert_eq!(e.should_switch_gateway(), c.switch, "case {i}: {e}");
            assert_eq!(
                e.retry_after(),
                c.retry_after.map(Duration::from_secs),
                "case {i}: {e}"
            );
        }
    }
}
