//! Cross-shard effects: the outbox of a conversation's shard and the conversation index of a
//! user's shard.
//!
//! A conversation lives in one shard and its members' own state in theirs, so "Bob was added
//! to the group" must reach Bob's shard too. Applying a membership change in the
//! conversation's shard writes one outbox entry per member who joined or left, in the same
//! atomic batch as the change, keyed by the entry's log index. The node leading that shard
//! delivers each entry to the user's shard as [`Command::UserConv`] with `version` = that log
//! index, and then deletes it with [`Command::OutboxDone`]. Entries stay until delivered, so
//! nothing is lost across crashes or leader changes; a delivery may repeat or overtake an
//! older one, which is harmless because one conversation lives in one shard and its log
//! indexes only grow: the user's shard keeps the version per (user, conversation) and ignores
//! anything at or below it.
//!
//! A removal is also recorded as a LEFT user event in the conversation's shard itself, at the
//! `ChangeMembers` entry (see `apply::change_members`): the outbox is eventually consistent,
//! but a removed member's live stream must stop at the removal, not at the delivery. Both
//! LEFT events carry the same version (that entry's log index) in `seq`, and so does every
//! JOINED this module records, so a subscriber that hears from both shards keeps the newest.
//!
//! [`Command::UserConv`]: super::Command::UserConv
//! [`Command::OutboxDone`]: super::Command::OutboxDone

use std::collections::BTreeSet;
use std::sync::Mutex;

use bongsu_proto::model::{ConvId, UserId};

use super::command::CommandResult;
use super::layout::{self, OutboxEntry, UserConvRecord, UserEvent, UserEventKind};
use crate::errors::Result;
use crate::overlay::Overlay;
use crate::GroupId;

/// Records that `user` joined or left `conv` through the entry at `log_index`.
pub(crate) fn record(
    tx: &mut Overlay<'_>,
    log_index: u64,
    user: &UserId,
    conv: &ConvId,
    joined: bool,
) {
    let key = layout::outbox_key(tx.group(), log_index, user);
    tx.put(
        key,
        &OutboxEntry {
            conv: *conv,
            joined,
        },
    );
    tx.outbox_added = true;
}

/// Deletes delivered outbox entries; entries already gone (a repeated acknowledgement) are
/// skipped.
pub(crate) fn done(tx: &mut Overlay<'_>, delivered: &[(u64, UserId)]) -> Result<CommandResult> {
    let g = tx.group();
    let mut removed = 0u32;
    for (index, user) in delivered {
        let key = layout::outbox_key(g, *index, user);
        if tx.get::<OutboxEntry>(&key, "outbox entry")?.is_some() {
            tx.delete(key);
            removed += 1;
        }
    }
    Ok(CommandResult::OutboxCleared { removed })
}

/// Applies a delivery to the user's conversation index, recording a user event when the
/// index changes.
pub(crate) fn user_conv(
    tx: &mut Overlay<'_>,
    user: &UserId,
    conv: &ConvId,
    joined: bool,
    version: u64,
    log_index: u64,
) -> Result<CommandResult> {
    let g = tx.group();
    let key = layout::user_conv_key(g, user, conv);
    let current: Option<UserConvRecord> = tx.get(&key, "user conversation")?;
    if current.is_some_and(|c| version <= c.version) {
        return Ok(CommandResult::UserIndexed { changed: false });
    }
    let was_joined = current.is_some_and(|c| c.joined);
    tx.put(key, &UserConvRecord { joined, version });
    let changed = was_joined != joined;
    if changed {
        let kind = if joined {
            UserEventKind::Joined
        } else {
            UserEventKind::Left
        };
        // `seq` carries the version, so that a subscriber can order this against the LEFT the
        // conversation's shard recorded for the same change, or for a later one.
        tx.put(
            layout::user_event_key(g, log_index),
            &vec![UserEvent {
                user: *user,
                conv: *conv,
                kind,
                seq: version,
            }],
        );
    }
    Ok(CommandResult::UserIndexed { changed })
}

/// Which groups on this node may have undelivered outbox entries. Apply marks a group when it
/// adds entries (and snapshot installs mark it too); the node's pump clears the mark once the
/// outbox is empty. Groups never marked are never looked at, so idle groups stay idle.
#[derive(Default)]
pub struct OutboxSignal {
    dirty: Mutex<BTreeSet<GroupId>>,
    notify: tokio::sync::Notify,
}

impl OutboxSignal {
    pub fn mark(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("outbox signal lock poisoned")
            .insert(group);
        // Stores a permit when nobody waits, so a mark between two waits is not missed.
        self.notify.notify_one();
    }

    /// Marks the group again without waking the pump: for a group whose outbox someone else
    /// (its leader) drains, so that it is looked at on the next periodic recheck instead of in
    /// a busy loop.
    pub fn keep(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("outbox signal lock poisoned")
            .insert(group);
    }

    pub fn clear(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("outbox signal lock poisoned")
            .remove(&group);
    }

    pub fn dirty(&self) -> Vec<GroupId> {
        self.dirty
            .lock()
            .expect("outbox signal lock poisoned")
            .iter()
            .copied()
            .collect()
    }

    /// Waits for the next mark.
    pub async fn marked(&self) {
        self.notify.notified().await
    }
}
