//! Keys and records of the messaging state (see the table in the module above).

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, UserId};
use serde::{Deserialize, Serialize};

use crate::keys::sm_key;
use crate::GroupId;

pub const TAG_CONV: u8 = 0x01;
pub const TAG_MEMBER: u8 = 0x02;
pub const TAG_MESSAGE: u8 = 0x03;
pub const TAG_DEDUP: u8 = 0x04;
pub const TAG_CURSOR: u8 = 0x05;
pub const TAG_EVENT: u8 = 0x06;
pub const TAG_OUTBOX: u8 = 0x07;
pub const TAG_USER_CONV: u8 = 0x08;
pub const TAG_USER_EVENT: u8 = 0x09;
pub const TAG_RETENTION: u8 = 0x0a;

/// A conversation's header, read on every append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvRecord {
    pub kind: ConversationKind,
    /// The creator; for a channel, its only writer.
    pub owner: UserId,
    pub member_count: u32,
    pub last_seq: u64,
    pub created_at_ms: u64,
}

/// A member's role in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Owner,
    Member,
    /// Follows a channel: reads, never writes.
    Follower,
}

/// A cross-shard effect waiting in a conversation's shard to be delivered to a user's shard:
/// the user joined (or left) `conv`. Keyed by the log index of the entry that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub conv: ConvId,
    pub joined: bool,
}

/// One conversation in a user's conversation index (in the user's shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConvRecord {
    pub joined: bool,
    /// The log index, in the conversation's shard, of the change this record reflects. A
    /// delivery with a version at or below it is stale (redelivered or overtaken) and ignored.
    /// A record with `joined == false` stays as a tombstone so that a late, older "joined"
    /// cannot bring the conversation back.
    pub version: u64,
}

/// How far retention has pruned the shard's events (see [`super::retention`]): every message
/// event and user event of a log index below `events_from` is gone, every one at or above it
/// is kept. Absent until the first prune (then nothing is pruned: `events_from` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRecord {
    pub events_from: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEventKind {
    Joined,
    Left,
    Read,
}

/// A change to a user's membership or read state, recorded by log index for subscribers. One
/// entry may record several (a `ChangeMembers` that removes three members), so the value
/// under a log index is a list.
///
/// Recorded in the user's shard (joined and left when the outbox delivers them, read when
/// the cursor moves) and, for removals, also in the conversation's shard at the
/// `ChangeMembers` entry itself: that shard's stream carries the messages, so a subscriber
/// sees the removal before any message appended after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    pub user: UserId,
    pub conv: ConvId,
    pub kind: UserEventKind,
    /// For `Read`, the read cursor. For `Joined` and `Left`, the membership version: the log
    /// index of the change in the conversation's shard (the same number whichever shard
    /// recorded the event), so a subscriber that hears of one change from two shards, or of
    /// two changes out of order, keeps the newest.
    pub seq: u64,
}

pub fn conv_key(g: GroupId, conv: &ConvId) -> Vec<u8> {
    sm_key(g, &[&[TAG_CONV], &conv.0])
}

pub fn member_key(g: GroupId, conv: &ConvId, user: &UserId) -> Vec<u8> {
    sm_key(g, &[&[TAG_MEMBER], &conv.0, &user.0])
}

pub fn member_prefix(g: GroupId, conv: &ConvId) -> Vec<u8> {
    sm_key(g, &[&[TAG_MEMBER], &conv.0])
}

pub fn message_key(g: GroupId, conv: &ConvId, seq: u64) -> Vec<u8> {
    sm_key(g, &[&[TAG_MESSAGE], &conv.0, &seq.to_be_bytes()])
}

pub fn dedup_key(g: GroupId, conv: &ConvId, sender: &UserId, cmid: &ClientMsgId) -> Vec<u8> {
    sm_key(g, &[&[TAG_DEDUP], &conv.0, &sender.0, &cmid.0])
}

pub fn cursor_key(g: GroupId, user: &UserId, conv: &ConvId) -> Vec<u8> {
    sm_key(g, &[&[TAG_CURSOR], &user.0, &conv.0])
}

/// The message a log entry appended, by log index, for subscribers that resume by index.
pub fn event_key(g: GroupId, log_index: u64) -> Vec<u8> {
    sm_key(g, &[&[TAG_EVENT], &log_index.to_be_bytes()])
}

/// An outbox entry: log index of the causing entry, then the user it concerns.
pub fn outbox_key(g: GroupId, log_index: u64, user: &UserId) -> Vec<u8> {
    sm_key(g, &[&[TAG_OUTBOX], &log_index.to_be_bytes(), &user.0])
}

pub fn outbox_prefix(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_OUTBOX]])
}

pub fn user_conv_key(g: GroupId, user: &UserId, conv: &ConvId) -> Vec<u8> {
    sm_key(g, &[&[TAG_USER_CONV], &user.0, &conv.0])
}

pub fn user_conv_prefix(g: GroupId, user: &UserId) -> Vec<u8> {
    sm_key(g, &[&[TAG_USER_CONV], &user.0])
}

/// The user events a log entry recorded (a `Vec<UserEvent>`, never empty), by log index.
pub fn user_event_key(g: GroupId, log_index: u64) -> Vec<u8> {
    sm_key(g, &[&[TAG_USER_EVENT], &log_index.to_be_bytes()])
}

/// The shard's [`RetentionRecord`].
pub fn retention_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_RETENTION]])
}
