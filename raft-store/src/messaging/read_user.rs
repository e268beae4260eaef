//! Reads of a user's own state (conversation index, user events), of the outbox, and the
//! merged event stream subscribers follow.

use bongsu_proto::model::{ConvId, Message, UserId};

use super::layout::{self, OutboxEntry, UserConvRecord, UserEvent};
use super::read::{corrupt, MessagingView};
use super::retention::EventsPruned;
use crate::codec::decode;
use crate::errors::Result;
use crate::keys::{prefix_end, CF_SM};

/// One undelivered outbox entry: the log index that caused it, the user it concerns, and
/// what to tell the user's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    pub log_index: u64,
    pub user: UserId,
    pub entry: OutboxEntry,
}

/// What a shard's subscribers see, in log-index order: one per log index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    Message(Message),
    /// Every user event the entry recorded (one, or several for a `ChangeMembers` that removed
    /// several members), never empty.
    Users(Vec<UserEvent>),
}

fn index_at(k: &[u8], at: usize) -> Option<u64> {
    k.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

impl MessagingView {
    /// The log index of the last entry applied, 0 before any.
    pub fn applied_index(&self) -> Result<u64> {
        let state = crate::applied::read(&self.store, self.group)?;
        Ok(state.last_applied.map(|l| l.index).unwrap_or(0))
    }

    /// The oldest undelivered outbox entries, in (log index, user) order, at most `limit`.
    pub fn outbox(&self, limit: usize) -> Result<Vec<PendingDelivery>> {
        self.outbox_skipping(limit, usize::MAX, |_| false)
    }

    /// The oldest undelivered outbox entries whose user `skip` does not name, in (log index,
    /// user) order: at most `limit` of them, looking at no more than `scanned` entries. The
    /// pump skips the users of a destination it cannot reach, so one unreachable shard does not
    /// hold back the others.
    pub fn outbox_skipping(
        &self,
        limit: usize,
        scanned: usize,
        skip: impl Fn(&UserId) -> bool,
    ) -> Result<Vec<PendingDelivery>> {
        let from = layout::outbox_prefix(self.group);
        let to = prefix_end(&from);
        let mut out = Vec::new();
        for item in self
            .store
            .scan(self.group, CF_SM, &from, &to, false)
            .take(scanned)
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let log_index = index_at(&k, 9).ok_or_else(|| corrupt(self.group, &k, "outbox key"))?;
            let user = k
                .get(17..)
                .and_then(|b| UserId::try_from(b).ok())
                .ok_or_else(|| corrupt(self.group, &k, "outbox key"))?;
            if skip(&user) {
                continue;
            }
            let entry = decode(self.group, &k, "outbox entry", &v)?;
            out.push(PendingDelivery {
                log_index,
                user,
                entry,
            });
        }
        Ok(out)
    }

    /// One seek: whether anything waits in the outbox.
    pub fn outbox_is_empty(&self) -> Result<bool> {
        Ok(self.outbox(1)?.is_empty())
    }

    pub fn user_conv(&self, user: &UserId, conv: &ConvId) -> Result<Option<UserConvRecord>> {
        self.get(
            &layout::user_conv_key(self.group, user, conv),
            "user conversation",
        )
    }

    /// The conversations `user` belongs to (as far as deliveries have arrived), in id order,
    /// each with the user's read cursor.
    pub fn user_conversations(&self, user: &UserId) -> Result<Vec<(ConvId, u64)>> {
        let from = layout::user_conv_prefix(self.group, user);
        let to = prefix_end(&from);
        let mut out = Vec::new();
        for item in self.store.scan(self.group, CF_SM, &from, &to, false) {
            let (k, v) = item?;
            let conv = k
                .get(from.len()..)
                .and_then(|b| ConvId::try_from(b).ok())
                .ok_or_else(|| corrupt(self.group, &k, "user conversation key"))?;
            let rec: UserConvRecord = decode(self.group, &k, "user conversation", &v)?;
            if rec.joined {
                out.push((conv, self.cursor(user, &conv)?));
            }
        }
        Ok(out)
    }

    /// User events of entries with log index in (`after_index`, `upto`], in log order.
    fn user_events_between(
        &self,
        after_index: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<UserEvent>)>> {
        Ok(self
            .by_log_index(
                layout::user_event_key,
                after_index,
                upto,
                limit,
                "user events",
            )?
            .into_iter()
            .map(|(index, _, events)| (index, events))
            .collect())
    }

    /// Messages and user events of entries after `after_index`, merged in log-index order, at
    /// most `limit`.
    ///
    /// Both scans stop at the applied index read first: an apply batch lands atomically with
    /// its applied index, so everything up to it is in the store, while an entry applied
    /// between the two scans could otherwise show up in one and not the other, and a
    /// subscriber that resumed after it would never see the rest.
    ///
    /// Blind to retention: subscribers read [`resume_after`](Self::resume_after).
    pub(crate) fn shard_events_after(
        &self,
        after_index: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ShardEvent)>> {
        let upto = self.applied_index()?;
        let mut messages = self
            .events_between(after_index, upto, limit)?
            .into_iter()
            .peekable();
        let mut users = self
            .user_events_between(after_index, upto, limit)?
            .into_iter()
            .peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_message = match (messages.peek(), users.peek()) {
                (Some((m, _)), Some((u, _))) => m < u,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_message {
                messages.next().map(|(i, m)| (i, ShardEvent::Message(m)))
            } else {
                users.next().map(|(i, u)| (i, ShardEvent::Users(u)))
            };
            out.extend(next);
        }
        Ok(out)
    }

    /// What a subscriber resuming after `after_index` gets: the shard's events after it, as
    /// [`shard_events_after`](Self::shard_events_after) reads them, or [`EventsPruned`] when
    /// retention pruned some of them, never a stream with a hole. The watermark is read after
    /// the scans and only rises, so a prune that landed during them is seen (see
    /// [`super::retention`]).
    pub fn resume_after(
        &self,
        after_index: u64,
        limit: usize,
    ) -> Result<std::result::Result<Vec<(u64, ShardEvent)>, EventsPruned>> {
        let events = self.shard_events_after(after_index, limit)?;
        Ok(self.check_resume(after_index)?.map(|()| events))
    }
}
