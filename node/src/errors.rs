//! The node's error type, its one conversion to `tonic::Status`, and the way back from a
//! status another node answered.

use bongsu_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },

    #[error(transparent)]
    Store(#[from] bongsu_raft_store::StoreError),

    /// A request broke a rule; the code is what the client sees.
    #[error("{code}: {reason}")]
    Rejected { code: ErrorCode, reason: String },

    /// This node does not lead the group; `leader` is who does, if known.
    #[error("NOT_LEADER: group {group} is led by {leader:?}")]
    NotLeader {
        group: u64,
        leader: Option<(u64, String)>,
    },

    #[error("UNAVAILABLE: {0}")]
    Unavailable(String),

    #[error("raft: {0}")]
    Raft(String),

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

impl NodeError {
    pub fn rejected(code: ErrorCode, reason: impl Into<String>) -> Self {
        NodeError::Rejected {
            code,
            reason: reason.into(),
        }
    }

    /// Turns a failed node-to-node call (admin API) back into the node error it was made from.
    pub fn from_status(s: &tonic::Status) -> Self {
        match ErrorCode::of_status(s) {
            Some(ErrorCode::Unavailable | ErrorCode::NotLeader) | None => {
                NodeError::Unavailable(s.message().to_string())
            }
            Some(code) => NodeError::Rejected {
                code,
                reason: s.message().to_string(),
            },
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::Config { .. } => ErrorCode::InvalidArgument,
            NodeError::Store(bongsu_raft_store::StoreError::Corrupt { .. }) => {
                ErrorCode::CorruptData
            }
            NodeError::Rejected { code, .. } => *code,
            NodeError::NotLeader { .. } => ErrorCode::NotLeader,
            NodeError::Store(_)
            | NodeError::Unavailable(_)
            | NodeError::Raft(_)
            | NodeError::Io(_) => ErrorCode::Unavailable,
        }
    }
}

pub use bongsu_proto::model::{CODE_KEY, LEADER_ADDR_KEY, LEADER_ID_KEY};

impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> Self {
        let code = e.code();
        let grpc = code.grpc_code();
        let mut status = tonic::Status::new(grpc, e.to_string());
        let md = status.metadata_mut();
        if let Ok(v) = code.as_str().parse() {
            md.insert(CODE_KEY, v);
        }
        if let NodeError::NotLeader {
            leader: Some((id, addr)),
            ..
        } = &e
        {
            if let Ok(v) = id.to_string().parse() {
                md.insert(LEADER_ID_KEY, v);
            }
            if let Ok(v) = addr.parse() {
                md.insert(LEADER_ADDR_KEY, v);
            }
        }
        status
    }
}
