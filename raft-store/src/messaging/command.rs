//! Commands carried in Raft log entries and their results.

use std::fmt;

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, DeviceId, MessageKind, UserId};
use bongsu_proto::ErrorCode;
use serde::{Deserialize, Serialize};

/// A change to a shard, proposed through Raft and applied by every replica.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a conversation. Repeating the same creation (same creator and kind) is a no-op
    /// that succeeds, so the proposer may retry.
    CreateConversation {
        conv_id: ConvId,
        kind: ConversationKind,
        creator: UserId,
        members: Vec<UserId>,
        at_ms: u64,
    },
    /// Add and remove members on behalf of `actor`.
    ChangeMembers {
        conv_id: ConvId,
        actor: UserId,
        add: Vec<UserId>,
        remove: Vec<UserId>,
        at_ms: u64,
    },
    /// Append one message.
    Append(AppendMessage),
    /// Move `user`'s read cursor in a conversation forward to `seq` (never backward).
    MoveCursor {
        user: UserId,
        conv_id: ConvId,
        seq: u64,
    },
    /// A change to the cluster's own state; only the meta group applies these.
    Meta(crate::meta::MetaCommand),
    /// Sign-up, devices and refresh tokens.
    Account(crate::accounts::AccountCommand),
    /// Node to node, applied in the user's shard: an outbox delivery from the conversation's
    /// shard saying that `user` joined (or left) `conv_id` at log index `version` there.
    /// Only nodes propose it (a pump delivering its shard's outbox); no client request maps
    /// to it, so a gateway cannot forge membership in someone's conversation list.
    UserConv {
        user: UserId,
        conv_id: ConvId,
        joined: bool,
        version: u64,
    },
    /// Node to node, applied in a conversation's shard: these outbox entries, named by (log
    /// index, user), were delivered and are deleted. Exact keys rather than a range, so that
    /// a pump may acknowledge part of an entry's fan-out and apply stays a few point writes.
    OutboxDone { delivered: Vec<(u64, UserId)> },
}

/// The message part of [`Command::Append`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendMessage {
    pub conv_id: ConvId,
    pub sender: UserId,
    pub device: DeviceId,
    pub client_msg_id: ClientMsgId,
    pub kind: MessageKind,
    pub body: Vec<u8>,
    /// Milliseconds since the Unix epoch, set by the proposer so that apply stays deterministic.
    pub at_ms: u64,
}

/// Formats commands without their bodies: message bodies never reach logs (invariant 7).
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateConversation {
                conv_id,
                kind,
                creator,
                members,
                ..
            } => {
                write!(
                    f,
                    "CreateConversation({conv_id} {kind:?} by {creator}, {} members)",
                    members.len()
                )
            }
            Command::ChangeMembers {
                conv_id,
                actor,
                add,
                remove,
                ..
            } => {
                write!(
                    f,
                    "ChangeMembers({conv_id} by {actor}, +{} -{})",
                    add.len(),
                    remove.len()
                )
            }
            Command::Append(m) => write!(
                f,
                "Append({} from {} cmid {} {:?}, {} bytes)",
                m.conv_id,
                m.sender,
                m.client_msg_id,
                m.kind,
                m.body.len()
            ),
            Command::MoveCursor { user, conv_id, seq } => {
                write!(f, "MoveCursor({user} in {conv_id} to {seq})")
            }
            Command::Meta(m) => write!(f, "Meta({m:?})"),
            Command::Account(a) => write!(f, "Account({a:?})"),
            Command::UserConv {
                user,
                conv_id,
                joined,
                version,
            } => write!(
                f,
                "UserConv({user} {} {conv_id} at {version})",
                if *joined { "joined" } else { "left" }
            ),
            Command::OutboxDone { delivered } => {
                write!(f, "OutboxDone({} entries)", delivered.len())
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Created {
        conv_id: ConvId,
        existed: bool,
    },
    MembersChanged {
        member_count: u32,
    },
    /// The message's seq; `duplicate` when it was stored by an earlier send with the same id.
    Appended {
        seq: u64,
        duplicate: bool,
    },
    /// The cursor after the command (unchanged if the command tried to move it back).
    CursorMoved {
        seq: u64,
    },
    /// An account command succeeded for this user.
    Account {
        user_id: bongsu_proto::model::UserId,
    },
    /// A user's conversation index took (`changed`) or ignored (stale version) a delivery.
    UserIndexed {
        changed: bool,
    },
    /// How many of the named outbox entries existed and were deleted.
    OutboxCleared {
        removed: u32,
    },
    /// The meta group's shard map after the command.
    MapChanged {
        version: u64,
    },
    /// The command broke a rule and changed nothing.
    Rejected(Rejection),
    /// Raft's own entries (blank, membership) have no messaging result.
    Empty,
}

/// Why a command was refused, with its stable code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: String,
}

impl CommandResult {
    pub(crate) fn reject(code: ErrorCode, reason: impl Into<String>) -> Self {
        CommandResult::Rejected(Rejection {
            code,
            reason: reason.into(),
        })
    }
}
