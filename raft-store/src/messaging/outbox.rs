//! Cross-shard effects: the outbox of a conversation's shard and the conversation index of a
//! user's shard.
//!
//! A conversation lives in one shard and its members' own state in theirs, so "Bob was added
//! to the group" must reach Bob's shard too. Applying a membership change in the
//! conversation's shard writes one outbox entry per member who joined or left, in the same
//! atomic batch as the change, keyed by the entry's log index. The node leading that shard
//! delivers each entry to the user's shard as [`UserConv`] with `version` = that log
//! index, and then deletes it with [`OutboxDone`]. Entries stay until delivered, so
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
//! Recording an entry flags the apply batch (`Overlay::signal`), so the store marks the group
//! in its [`GroupSignal`](crate::GroupSignal) once the batch is written: the node's pump looks
//! only at marked groups.

use bongsu_proto::model::{ConvId, UserId};

use super::command::{OutboxDone, UserConv};
use super::layout::{self, OutboxEntry, UserConvRecord, UserEvent, UserEventKind};
use crate::errors::Result;
use crate::overlay::Overlay;
use crate::result::CommandResult;

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
    tx.signal();
}

/// Deletes delivered outbox entries; entries already gone (a repeated acknowledgement) are
/// skipped.
pub(crate) fn done(tx: &mut Overlay<'_>, cmd: &OutboxDone) -> Result<CommandResult> {
    let g = tx.group();
    let mut removed = 0u32;
    for (index, user) in &cmd.delivered {
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
    cmd: &UserConv,
    log_index: u64,
) -> Result<CommandResult> {
    let UserConv {
        user,
        conv_id: conv,
        joined,
        version,
    } = cmd;
    let (joined, version) = (*joined, *version);
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
