//! The messaging machine's commands, one type per command; [`crate::Command`] carries each in
//! a variant of the same name.

use std::fmt;

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, DeviceId, MessageKind, UserId};
use serde::{Deserialize, Serialize};

/// Create a conversation. Repeating the same creation (same creator and kind) is a no-op that
/// succeeds, so the proposer may retry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateConversation {
    pub conv_id: ConvId,
    pub kind: ConversationKind,
    pub creator: UserId,
    pub members: Vec<UserId>,
    pub at_ms: u64,
}

/// Add and remove members on behalf of `actor`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMembers {
    pub conv_id: ConvId,
    pub actor: UserId,
    pub add: Vec<UserId>,
    pub remove: Vec<UserId>,
    pub at_ms: u64,
}

/// Append one message.
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

/// Move `user`'s read cursor in a conversation forward to `seq` (never backward).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCursor {
    pub user: UserId,
    pub conv_id: ConvId,
    pub seq: u64,
}

/// Node to node, applied in the user's shard: an outbox delivery from the conversation's shard
/// saying that `user` joined (or left) `conv_id` at log index `version` there. Only nodes
/// propose it (a pump delivering its shard's outbox); no client request maps to it, so a
/// gateway cannot forge membership in someone's conversation list.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConv {
    pub user: UserId,
    pub conv_id: ConvId,
    pub joined: bool,
    pub version: u64,
}

/// Node to node, applied in a conversation's shard: these outbox entries, named by (log index,
/// user), were delivered and are deleted. Exact keys rather than a range, so that a pump may
/// acknowledge part of an entry's fan-out and apply stays a few point writes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxDone {
    pub delivered: Vec<(u64, UserId)>,
}

/// Node to node, proposed by a shard's leader now and then (see [`super::retention`]): prune the
/// shard's bookkeeping that nobody needs any more. Drops, in log-index order, the subscriber
/// events (message events and user events) of entries below `events_before`, and with each
/// message event the message's dedup key, but stops at the first message whose dedup window
/// has not passed at `now_ms`. Bounded: one entry deletes at most
/// [`PRUNE_MAX_DELETES`](super::retention::PRUNE_MAX_DELETES) keys, and says whether more is
/// left. `events_before` above the entry's own log index is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    /// Events of log indexes below this one may go.
    pub events_before: u64,
    /// The proposer's clock, milliseconds since the Unix epoch: dedup windows are measured
    /// against it, so that apply stays deterministic.
    pub now_ms: u64,
}

impl fmt::Debug for CreateConversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CreateConversation {
            conv_id,
            kind,
            creator,
            members,
            ..
        } = self;
        write!(
            f,
            "{conv_id} {kind:?} by {creator}, {} members",
            members.len()
        )
    }
}

impl fmt::Debug for ChangeMembers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ChangeMembers {
            conv_id,
            actor,
            add,
            remove,
            ..
        } = self;
        write!(f, "{conv_id} by {actor}, +{} -{}", add.len(), remove.len())
    }
}

/// Without the body: message bodies never reach logs (ARCHITECTURE.md invariant 7).
impl fmt::Debug for AppendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} from {} cmid {} {:?}, {} bytes",
            self.conv_id,
            self.sender,
            self.client_msg_id,
            self.kind,
            self.body.len()
        )
    }
}

impl fmt::Debug for MoveCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MoveCursor { user, conv_id, seq } = self;
        write!(f, "{user} in {conv_id} to {seq}")
    }
}

impl fmt::Debug for UserConv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let UserConv {
            user,
            conv_id,
            joined,
            version,
        } = self;
        let what = if *joined { "joined" } else { "left" };
        write!(f, "{user} {what} {conv_id} at {version}")
    }
}

impl fmt::Debug for OutboxDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries", self.delivered.len())
    }
}
