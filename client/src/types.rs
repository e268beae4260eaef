//! The SDK's view of the API's values: ids are typed and validated, nothing is raw protobuf.

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, Message, UserId};
use bongsu_proto::v1;
use sha2::{Digest, Sha256};

use crate::errors::{Error, Result};

/// What kind of device signs in, shown in the device list (the model's one definition).
pub use bongsu_proto::model::DeviceKind;

/// A device as it introduces itself when signing in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// E.g. "Jisoo's phone"; at most 64 bytes.
    pub name: String,
}

impl DeviceInfo {
    pub fn new(kind: DeviceKind, name: impl Into<String>) -> Self {
        DeviceInfo {
            kind,
            name: name.into(),
        }
    }
}

impl From<DeviceInfo> for v1::DeviceInfo {
    fn from(d: DeviceInfo) -> Self {
        v1::DeviceInfo {
            kind: v1::DeviceKind::from(d.kind) as i32,
            name: d.name,
        }
    }
}

/// An account, as LookupUsers shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub handle: String,
}

impl TryFrom<v1::User> for User {
    type Error = Error;

    fn try_from(u: v1::User) -> Result<Self> {
        Ok(User {
            id: UserId::try_from(u.user_id.as_slice())?,
            handle: u.handle,
        })
    }
}

/// A member of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: UserId,
    pub handle: String,
    /// "owner", "member" or "follower".
    pub role: String,
}

impl TryFrom<v1::Member> for Member {
    type Error = Error;

    fn try_from(m: v1::Member) -> Result<Self> {
        Ok(Member {
            user: UserId::try_from(m.user_id.as_slice())?,
            handle: m.handle,
            role: m.role,
        })
    }
}

fn members(ms: Vec<v1::Member>) -> Result<Vec<Member>> {
    ms.into_iter().map(Member::try_from).collect()
}

/// A conversation and its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConvId,
    pub kind: ConversationKind,
    pub members: Vec<Member>,
    pub last_seq: u64,
    pub created_at_ms: u64,
}

impl TryFrom<v1::Conversation> for Conversation {
    type Error = Error;

    fn try_from(c: v1::Conversation) -> Result<Self> {
        Ok(Conversation {
            id: ConvId::try_from(c.conv_id.as_slice())?,
            kind: ConversationKind::try_from(c.kind)?,
            members: members(c.members)?,
            last_seq: c.last_seq,
            created_at_ms: c.created_at_ms,
        })
    }
}

/// One line of the caller's conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub id: ConvId,
    pub kind: ConversationKind,
    pub last_seq: u64,
    /// The caller's read cursor, shared by all of their devices.
    pub read_seq: u64,
    pub unread: u64,
    pub last_message: Option<Message>,
    /// Members, for display (up to 10).
    pub members: Vec<Member>,
}

impl TryFrom<v1::ConversationSummary> for ConversationSummary {
    type Error = Error;

    fn try_from(c: v1::ConversationSummary) -> Result<Self> {
        Ok(ConversationSummary {
            id: ConvId::try_from(c.conv_id.as_slice())?,
            kind: ConversationKind::try_from(c.kind)?,
            last_seq: c.last_seq,
            read_seq: c.read_seq,
            unread: c.unread,
            last_message: c.last_message.map(Message::try_from).transpose()?,
            members: members(c.members)?,
        })
    }
}

/// A page of a conversation's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub messages: Vec<Message>,
    pub last_seq: u64,
}

impl TryFrom<v1::HistoryReply> for History {
    type Error = Error;

    fn try_from(h: v1::HistoryReply) -> Result<Self> {
        Ok(History {
            messages: messages(h.messages)?,
            last_seq: h.last_seq,
        })
    }
}

pub(crate) fn messages(ms: Vec<v1::Message>) -> Result<Vec<Message>> {
    ms.into_iter()
        .map(|m| Message::try_from(m).map_err(Error::from))
        .collect()
}

/// What Sync returns for one conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedConversation {
    pub conversation: ConversationSummary,
    /// Messages after the cursor given, oldest first.
    pub messages: Vec<Message>,
    /// More remain: sync again from the last message returned.
    pub has_more: bool,
}

impl TryFrom<v1::ConversationSync> for SyncedConversation {
    type Error = Error;

    fn try_from(c: v1::ConversationSync) -> Result<Self> {
        let summary = c.conversation.ok_or(Error::missing("conversation"))?;
        Ok(SyncedConversation {
            conversation: ConversationSummary::try_from(summary)?,
            messages: messages(c.messages)?,
            has_more: c.has_more,
        })
    }
}

/// One event of a subscription. Heartbeats are not events: the SDK uses them to notice a dead
/// connection and keeps them to itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new message; per conversation in seq order, with no gap and no duplicate.
    Message(Message),
    /// The caller was added to a conversation (or created one).
    Joined(ConversationSummary),
    /// The caller left or was removed from a conversation.
    Left(ConvId),
    /// The caller's read cursor in a conversation moved (on any of their devices).
    Read { conv: ConvId, read_seq: u64 },
}

/// A fresh random conversation id, for a new group.
pub fn new_conv_id() -> ConvId {
    ConvId::from_u128(rand::random())
}

/// A fresh random idempotency key for one send.
pub fn new_client_msg_id() -> ClientMsgId {
    ClientMsgId::from_u128(rand::random())
}

/// The id of the direct conversation between two users: the same whoever asks first, so that
/// both sides (and every retry) find the one conversation instead of creating two.
pub fn direct_conv_id(a: UserId, b: UserId) -> ConvId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"bongsu direct conversation v1");
    h.update(lo.as_bytes());
    h.update(hi.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ConvId(id)
}

/// The text of a message, when it is text.
pub fn text_of(m: &Message) -> Option<&str> {
    match m.kind {
        bongsu_proto::model::MessageKind::Text => std::str::from_utf8(&m.body).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_ignore_order_and_differ_per_pair() {
        let (a, b, c) = (
            UserId::from_u128(1),
            UserId::from_u128(2),
            UserId::from_u128(3),
        );
        assert_eq!(direct_conv_id(a, b), direct_conv_id(b, a));
        assert_ne!(direct_conv_id(a, b), direct_conv_id(a, c));
        assert_ne!(direct_conv_id(a, b), direct_conv_id(b, c));
    }

    #[test]
    fn bad_ids_in_replies_are_errors_not_panics() {
        let bad = v1::Conversation {
            conv_id: vec![1, 2, 3],
            kind: v1::ConversationKind::Group as i32,
            ..Default::default()
        };
        assert!(matches!(
            Conversation::try_from(bad),
            Err(Error::InvalidReply(_))
        ));
        let no_summary = v1::ConversationSync::default();
        assert!(SyncedConversation::try_from(no_summary).is_err());
    }
}
