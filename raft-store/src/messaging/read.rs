//! Reads of a shard's messaging state, straight from RocksDB.

use std::sync::Arc;

use bongsu_proto::model::{ConvId, ConversationKind, Message, UserId};

use super::layout::{self, ConvRecord, Role};
use crate::codec::decode;
use crate::errors::{Result, StoreError};
use crate::keys::{display_key, prefix_end, CF_SM};
use crate::store::Store;
use crate::GroupId;

/// The most message bytes one page of a read returns (at least one message, whatever its
/// size): 1,000 messages of 64 KiB would otherwise make a 64 MiB reply, over what any gRPC
/// client accepts by default (4 MiB). A page can therefore hold fewer messages than asked
/// for; readers continue from its last seq until they reach the conversation's `last_seq`.
pub const READ_MAX_BYTES: usize = 1 << 20;

/// A value found under a log-index key: the index, the key (for errors) and the value.
pub(super) type Indexed<T> = (u64, Box<[u8]>, T);

/// A conversation as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationInfo {
    pub conv_id: ConvId,
    pub kind: ConversationKind,
    pub owner: UserId,
    pub member_count: u32,
    pub last_seq: u64,
    pub created_at_ms: u64,
}

/// Read access to one group's messaging state.
#[derive(Clone)]
pub struct MessagingView {
    pub(super) store: Arc<Store>,
    pub(super) group: GroupId,
}

impl MessagingView {
    pub fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    pub(super) fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        self.store
            .get(self.group, CF_SM, key)?
            .map(|v| decode(self.group, key, what, &v))
            .transpose()
    }

    pub fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationInfo>> {
        let rec: Option<ConvRecord> =
            self.get(&layout::conv_key(self.group, conv), "conversation")?;
        Ok(rec.map(|r| ConversationInfo {
            conv_id: *conv,
            kind: r.kind,
            owner: r.owner,
            member_count: r.member_count,
            last_seq: r.last_seq,
            created_at_ms: r.created_at_ms,
        }))
    }

    /// The seq of the newest message, 0 for an empty conversation; one point read.
    pub fn last_seq(&self, conv: &ConvId) -> Result<Option<u64>> {
        Ok(self.conversation(conv)?.map(|c| c.last_seq))
    }

    pub fn role(&self, conv: &ConvId, user: &UserId) -> Result<Option<Role>> {
        self.get(&layout::member_key(self.group, conv, user), "member")
    }

    /// Every member and role, in user-id order.
    pub fn members(&self, conv: &ConvId) -> Result<Vec<(UserId, Role)>> {
        let from = layout::member_prefix(self.group, conv);
        let to = prefix_end(&from);
        let mut out = Vec::new();
        for item in self.store.scan(self.group, CF_SM, &from, &to, false) {
            let (k, v) = item?;
            let user = k
                .get(from.len()..)
                .and_then(|b| UserId::try_from(b).ok())
                .ok_or_else(|| corrupt(self.group, &k, "member key"))?;
            out.push((user, decode(self.group, &k, "member", &v)?));
        }
        Ok(out)
    }

    /// Messages with `seq >= from`, in seq order, at most `limit` and at most about
    /// [`READ_MAX_BYTES`] (always at least one).
    pub fn read_from(&self, conv: &ConvId, from: u64, limit: usize) -> Result<Vec<Message>> {
        let start = layout::message_key(self.group, conv, from);
        let end = prefix_end(&layout::message_key(self.group, conv, 0)[..start.len() - 8]);
        self.scan_messages(&start, &end, false, limit)
    }

    /// Messages with `seq < before`, newest `limit` of them (fewer if they pass
    /// [`READ_MAX_BYTES`]), returned in seq order.
    pub fn read_before(&self, conv: &ConvId, before: u64, limit: usize) -> Result<Vec<Message>> {
        let start = layout::message_key(self.group, conv, 0);
        let end = layout::message_key(self.group, conv, before);
        let mut out = self.scan_messages(&start, &end, true, limit)?;
        out.reverse();
        Ok(out)
    }

    fn scan_messages(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .store
            .scan(self.group, CF_SM, from, to, reverse)
            .take(limit)
        {
            let (k, v) = item?;
            bytes = bytes.saturating_add(v.len());
            if !out.is_empty() && bytes > READ_MAX_BYTES {
                break;
            }
            let m: Message = decode(self.group, &k, "message", &v)?;
            let seq_in_key = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok());
            if seq_in_key.map(u64::from_be_bytes) != Some(m.seq) {
                return Err(corrupt(self.group, &k, "message seq"));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Messages appended by log entries with index > `after_index`, in log order, at most
    /// `limit`, each with its log index. Blind to retention: subscribers read
    /// [`resume_after`](Self::resume_after), which refuses a resume from pruned events.
    #[cfg(test)]
    pub(crate) fn events_after(
        &self,
        after_index: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>> {
        self.events_between(after_index, u64::MAX, limit)
    }

    /// Like [`events_after`](Self::events_after), with log index at most `upto`.
    pub(super) fn events_between(
        &self,
        after_index: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>> {
        let refs: Vec<Indexed<(ConvId, u64)>> =
            self.by_log_index(layout::event_key, after_index, upto, limit, "event")?;
        refs.into_iter()
            .map(|(index, k, (conv, seq))| {
                let msg = self
                    .read_from(&conv, seq, 1)?
                    .into_iter()
                    .next()
                    .filter(|m| m.seq == seq)
                    .ok_or_else(|| corrupt(self.group, &k, "event without its message"))?;
                Ok((index, msg))
            })
            .collect()
    }

    /// Values of one log-index-keyed tag (`key(group, index)`) for log indexes in
    /// (`after_index`, `upto`], in log order, at most `limit`, each with its index and key.
    pub(super) fn by_log_index<T: serde::de::DeserializeOwned>(
        &self,
        key: fn(GroupId, u64) -> Vec<u8>,
        after_index: u64,
        upto: u64,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<Indexed<T>>> {
        if after_index >= upto {
            return Ok(Vec::new());
        }
        let from = key(self.group, after_index.saturating_add(1));
        let to = match upto.checked_add(1) {
            Some(end) => key(self.group, end),
            None => prefix_end(&key(self.group, 0)[..9]),
        };
        let mut out = Vec::new();
        for item in self
            .store
            .scan(self.group, CF_SM, &from, &to, false)
            .take(limit)
        {
            let (k, v) = item?;
            let index = k
                .get(9..17)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(self.group, &k, what))?;
            let value: T = decode(self.group, &k, what, &v)?;
            out.push((index, k, value));
        }
        Ok(out)
    }

    /// The user's read cursor in a conversation (0 if never moved).
    pub fn cursor(&self, user: &UserId, conv: &ConvId) -> Result<u64> {
        Ok(self
            .get(&layout::cursor_key(self.group, user, conv), "cursor")?
            .unwrap_or(0))
    }
}

pub(super) fn corrupt(group: GroupId, key: &[u8], what: &'static str) -> StoreError {
    StoreError::Corrupt {
        group,
        key: display_key(key),
        what,
        reason: "key does not match its value".into(),
    }
}
