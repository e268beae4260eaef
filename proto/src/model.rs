//! Validated model types, built from protobuf with `TryFrom`.
//!
//! Identifiers are 16 bytes so that storage keys have a fixed width; they print as 32 lowercase
//! hex digits. Message bodies are checked against a size limit and, for text kinds, UTF-8.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::errors::{ModelError, Result};
use crate::v1;

mod kinds;
pub mod requests;
mod rules;
#[cfg(feature = "openapi")]
pub mod schema;

pub use kinds::{ConversationKind, DeviceKind, MessageKind};
pub use rules::*;

macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub const LEN: usize = 16;

            pub fn from_u128(v: u128) -> Self {
                Self(v.to_be_bytes())
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = ModelError;

            fn try_from(b: &[u8]) -> Result<Self> {
                let arr: [u8; 16] = b.try_into().map_err(|_| {
                    ModelError::invalid($field, format!("must be 16 bytes, got {}", b.len()))
                })?;
                Ok(Self(arr))
            }
        }

        impl FromStr for $name {
            type Err = ModelError;

            /// 32 hex digits, or a UUID's 8-4-4-4-12 form: exactly what [`ID_PATTERN`] says.
            fn from_str(s: &str) -> Result<Self> {
                parse_hex_id(s)
                    .map(Self::from_u128)
                    .ok_or_else(|| ModelError::invalid($field, ID_RULE))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", u128::from_be_bytes(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

id16!(
    /// A conversation (direct, group or channel).
    ConvId, "conv_id"
);
id16!(
    /// A user account.
    UserId, "user_id"
);
id16!(
    /// One logged-in device of a user.
    DeviceId, "device"
);
id16!(
    /// The idempotency key a client attaches to every send.
    ClientMsgId, "client_msg_id"
);

/// The Raft group id of the meta group, on every node. Shard `s` is group `s + 1`: nodes,
/// tools and test harnesses all number groups this way.
pub const META_GROUP: u64 = 0;

/// The Raft group id of a shard.
pub fn shard_group(shard: u32) -> u64 {
    shard as u64 + 1
}

/// The shard of a Raft group id, `None` for the meta group.
pub fn group_shard(group: u64) -> Option<u32> {
    group.checked_sub(1).and_then(|s| u32::try_from(s).ok())
}

/// The shard that owns an id (a conversation, or a user's own state), out of `shards`.
///
/// FNV-1a over the id's 16 bytes: stable across versions and platforms, which it must be,
/// since every gateway and node computes it and the shard count is fixed at cluster init.
pub fn shard_of(id: &[u8; 16], shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as u32
}

/// The 16-byte key that places a (normalized) handle on a shard (FNV-1a of the handle, twice),
/// so `shard_of(&handle_key(h), shards)` finds where a handle is claimed.
pub fn handle_key(handle: &str) -> [u8; 16] {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in handle.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    k[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    k
}

/// The gRPC metadata key carrying the stable code (e.g. `NOT_MEMBER`) on every failed call.
pub const CODE_KEY: &str = "bongsu-code";
/// The gRPC metadata keys carrying the leader hint on `NOT_LEADER`.
pub const LEADER_ID_KEY: &str = "bongsu-leader-id";
pub const LEADER_ADDR_KEY: &str = "bongsu-leader-addr";
/// The gRPC metadata key with the seconds to wait on `RESOURCE_EXHAUSTED`.
pub const RETRY_AFTER_KEY: &str = "retry-after";

/// Stable error codes; see `ErrorCode` in `messaging.proto` for what each means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    NotMember,
    MessageTooLarge,
    UnknownConversation,
    ConversationExists,
    InvalidMembers,
    DirectImmutable,
    NotOwner,
    InvalidArgument,
    NotLeader,
    Unavailable,
    ResourceExhausted,
    Unauthenticated,
    CorruptData,
    TooManyMembers,
    AlreadyInitialized,
    StaleEpoch,
    UnknownNode,
    FailedPrecondition,
    HandleTaken,
    UnknownUser,
    NodeReplaced,
    ClusterMismatch,
    EventsPruned,
    UpgradeNotFinished,
    PermissionDenied,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::NotMember,
        ErrorCode::MessageTooLarge,
        ErrorCode::UnknownConversation,
        ErrorCode::ConversationExists,
        ErrorCode::InvalidMembers,
        ErrorCode::DirectImmutable,
        ErrorCode::NotOwner,
        ErrorCode::InvalidArgument,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unauthenticated,
        ErrorCode::CorruptData,
        ErrorCode::TooManyMembers,
        ErrorCode::AlreadyInitialized,
        ErrorCode::StaleEpoch,
        ErrorCode::UnknownNode,
        ErrorCode::FailedPrecondition,
        ErrorCode::HandleTaken,
        ErrorCode::UnknownUser,
        ErrorCode::NodeReplaced,
        ErrorCode::ClusterMismatch,
        ErrorCode::EventsPruned,
        ErrorCode::UpgradeNotFinished,
        ErrorCode::PermissionDenied,
    ];

    /// The protobuf enum value, whose name is the stable string clients match on.
    pub fn to_proto(self) -> v1::ErrorCode {
        match self {
            ErrorCode::NotMember => v1::ErrorCode::NotMember,
            ErrorCode::MessageTooLarge => v1::ErrorCode::MessageTooLarge,
            ErrorCode::UnknownConversation => v1::ErrorCode::UnknownConversation,
            ErrorCode::ConversationExists => v1::ErrorCode::ConversationExists,
            ErrorCode::InvalidMembers => v1::ErrorCode::InvalidMembers,
            ErrorCode::DirectImmutable => v1::ErrorCode::DirectImmutable,
            ErrorCode::NotOwner => v1::ErrorCode::NotOwner,
            ErrorCode::InvalidArgument => v1::ErrorCode::InvalidArgument,
            ErrorCode::NotLeader => v1::ErrorCode::NotLeader,
            ErrorCode::Unavailable => v1::ErrorCode::Unavailable,
            ErrorCode::ResourceExhausted => v1::ErrorCode::ResourceExhausted,
            ErrorCode::Unauthenticated => v1::ErrorCode::Unauthenticated,
            ErrorCode::CorruptData => v1::ErrorCode::CorruptData,
            ErrorCode::TooManyMembers => v1::ErrorCode::TooManyMembers,
            ErrorCode::AlreadyInitialized => v1::ErrorCode::AlreadyInitialized,
            ErrorCode::StaleEpoch => v1::ErrorCode::StaleEpoch,
            ErrorCode::UnknownNode => v1::ErrorCode::UnknownNode,
            ErrorCode::FailedPrecondition => v1::ErrorCode::FailedPrecondition,
            ErrorCode::HandleTaken => v1::ErrorCode::HandleTaken,
            ErrorCode::UnknownUser => v1::ErrorCode::UnknownUser,
            ErrorCode::NodeReplaced => v1::ErrorCode::NodeReplaced,
            ErrorCode::ClusterMismatch => v1::ErrorCode::ClusterMismatch,
            ErrorCode::EventsPruned => v1::ErrorCode::EventsPruned,
            ErrorCode::UpgradeNotFinished => v1::ErrorCode::UpgradeNotFinished,
            ErrorCode::PermissionDenied => v1::ErrorCode::PermissionDenied,
        }
    }

    /// The stable name, e.g. `NOT_MEMBER`.
    pub fn as_str(self) -> &'static str {
        self.to_proto().as_str_name()
    }

    /// The code with that stable name.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The stable code a failed call carries in its [`CODE_KEY`] metadata, if any.
    #[cfg(feature = "grpc")]
    pub fn of_status(status: &tonic::Status) -> Option<ErrorCode> {
        status
            .metadata()
            .get(CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_name)
    }

    /// The stable code of a failed call: its [`CODE_KEY`] metadata, or, for a status without
    /// a code bongsu knows (from tonic itself, a proxy, or a newer server), [`Self::from_grpc`]
    /// of its gRPC code. Every client of bongsu (gateway, SDK, tools) judges a status by this
    /// one rule.
    #[cfg(feature = "grpc")]
    pub fn of_status_or_grpc(status: &tonic::Status) -> ErrorCode {
        ErrorCode::of_status(status).unwrap_or_else(|| ErrorCode::from_grpc(status.code()))
    }

    /// The stable code a gRPC code stands for when nothing more precise is known: the one
    /// [`Self::grpc_code`] maps onto it that says least (a permission error is `NOT_MEMBER`, not
    /// `NOT_OWNER`), and `UNAVAILABLE` (worth retrying elsewhere) for codes bongsu never sends.
    #[cfg(feature = "grpc")]
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::PermissionDenied => ErrorCode::NotMember,
            tonic::Code::NotFound => ErrorCode::UnknownConversation,
            tonic::Code::AlreadyExists => ErrorCode::ConversationExists,
            tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::DataLoss => ErrorCode::CorruptData,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            _ => ErrorCode::Unavailable,
        }
    }

    /// The gRPC status code every server of bongsu answers this code with.
    #[cfg(feature = "grpc")]
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::NotMember | ErrorCode::NotOwner | ErrorCode::PermissionDenied => {
                tonic::Code::PermissionDenied
            }
            ErrorCode::UnknownConversation | ErrorCode::UnknownNode | ErrorCode::UnknownUser => {
                tonic::Code::NotFound
            }
            ErrorCode::ConversationExists
            | ErrorCode::AlreadyInitialized
            | ErrorCode::HandleTaken => tonic::Code::AlreadyExists,
            ErrorCode::NotLeader | ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::CorruptData => tonic::Code::DataLoss,
            ErrorCode::StaleEpoch
            | ErrorCode::FailedPrecondition
            | ErrorCode::NodeReplaced
            | ErrorCode::ClusterMismatch
            | ErrorCode::EventsPruned
            | ErrorCode::UpgradeNotFinished => tonic::Code::FailedPrecondition,
            ErrorCode::MessageTooLarge
            | ErrorCode::InvalidArgument
            | ErrorCode::InvalidMembers
            | ErrorCode::DirectImmutable
            | ErrorCode::TooManyMembers => tonic::Code::InvalidArgument,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored message, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub conv_id: ConvId,
    pub seq: u64,
    pub sender: UserId,
    pub device: DeviceId,
    pub client_msg_id: ClientMsgId,
    pub kind: MessageKind,
    pub body: Vec<u8>,
    pub sent_at_ms: u64,
}

impl TryFrom<v1::Message> for Message {
    type Error = ModelError;

    fn try_from(m: v1::Message) -> Result<Self> {
        let kind = MessageKind::try_from(m.kind)?;
        validate_body(kind, &m.body, DEFAULT_MAX_BODY_BYTES)?;
        Ok(Self {
            conv_id: ConvId::try_from(m.conv_id.as_slice())?,
            seq: m.seq,
            sender: UserId::try_from(m.sender.as_slice())?,
            device: DeviceId::try_from(m.device.as_slice())?,
            client_msg_id: ClientMsgId::try_from(m.client_msg_id.as_slice())?,
            kind,
            body: m.body,
            sent_at_ms: m.sent_at_ms,
        })
    }
}

impl From<Message> for v1::Message {
    fn from(m: Message) -> Self {
        Self {
            conv_id: m.conv_id.0.to_vec(),
            seq: m.seq,
            sender: m.sender.0.to_vec(),
            device: m.device.0.to_vec(),
            client_msg_id: m.client_msg_id.0.to_vec(),
            kind: v1::MessageKind::from(m.kind) as i32,
            body: m.body,
            sent_at_ms: m.sent_at_ms,
        }
    }
}

#[cfg(test)]
mod tests;
