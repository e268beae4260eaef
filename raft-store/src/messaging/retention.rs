//! Retention of the messaging bookkeeping: the subscriber events (tags `06` and `09`) and the
//! dedup keys (`04`) that every append adds, pruned once nobody needs them (ARCHITECTURE.md
//! invariant 10). Messages themselves (`03`) are kept.
//!
//! # The rules
//!
//! - **Dedup window.** A dedup key stays at least [`DEDUP_WINDOW_MS`] (24 hours) after its
//!   message's `at_ms`: a `Prune` deletes it only when `at_ms + DEDUP_WINDOW_MS <= now_ms`
//!   of the prune. A resend inside the window returns the original seq (invariant 4); after
//!   it the key may be gone, and the same client message id is then stored as a new message.
//!   Both times come inside commands (the proposers' clocks), so the window is exact in log
//!   terms and, in wall-clock terms, off by at most the skew between leaders' clocks.
//! - **Events.** Events are pruned in log-index order, from the bottom, and the shard keeps
//!   one watermark ([`RetentionRecord`]'s `events_from`): every event below it is gone, every
//!   event at or above it is kept. A prune never passes a message whose dedup window is still
//!   open (the event is how pruning finds the dedup key, in log order), so events of
//!   messages live at least as long as their dedup keys; below that, the proposer decides the
//!   cut-off (`events_before`), which the node keeps at least an hour behind what it applied
//!   (`node/src/retention.rs`).
//! - **Resume.** A subscriber resuming after log index `a` with `a + 1 < events_from` would
//!   miss events, so the read refuses with [`EventsPruned`] (the node answers `EVENTS_PRUNED`)
//!   instead of silently skipping them; the subscriber resynchronizes from History (messages
//!   are kept) and subscribes from the latest entry. The refusal is decided after the scan,
//!   against the watermark read then, so a prune that lands during the read cannot make it
//!   return a stream with a hole.
//! - **Membership tombstones are kept.** A user's `08` record with `joined == false` is what
//!   stops an older, late `UserConv { joined: true }` from bringing the conversation back.
//!   Such a delivery can come arbitrarily late: an outbox entry stays in the conversation's
//!   shard until `OutboxDone`, and a leader change before that redelivers it, however long
//!   the conversation's shard was without quorum; a deposed leader's pump may also still have
//!   a `Deliver` in flight. The user's shard cannot tell from its own state that no older
//!   delivery for that (user, conversation) can still arrive, so no rule that reads only its
//!   state can drop a tombstone safely, and they stay (one small key per conversation a user
//!   ever left, not per message).
//!
//! # Deterministic and bounded
//!
//! Pruning is a command, [`Prune`], so it happens at the same log index on every replica, and
//! apply reads only the shard's state and the command: every replica deletes the same keys
//! (tested by digest). Its scans see the apply batch's own pending writes
//! (`Overlay::scan`), so where batch boundaries fall does not matter. One entry deletes at
//! most [`PRUNE_MAX_DELETES`] keys, so one entry never makes a large write batch; its result
//! says whether more is left, and the proposer proposes again.

use bongsu_proto::model::{ConvId, Message};
use bongsu_proto::ErrorCode;

use super::command::Prune;
use super::layout::{self, RetentionRecord};
use super::read::{corrupt, MessagingView};
use crate::codec::decode;
use crate::errors::Result;
use crate::overlay::Overlay;
use crate::result::CommandResult;
use crate::GroupId;

/// How long a dedup key is kept after its message's `at_ms`, at least: 24 hours.
pub const DEDUP_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The most keys one `Prune` entry deletes.
pub const PRUNE_MAX_DELETES: usize = 1024;

/// A resume that would skip pruned events: the events after `after_index` start below
/// `events_from`, the oldest log index whose events the shard keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "events after log index {after_index} were pruned (the shard keeps events from index \
     {events_from}); resynchronize and subscribe from the latest entry"
)]
pub struct EventsPruned {
    pub after_index: u64,
    pub events_from: u64,
}

/// One prunable event found by the scans, in log-index order.
enum Found {
    /// A message event: its key and the message it names.
    Message {
        key: Vec<u8>,
        conv: ConvId,
        seq: u64,
    },
    /// A user event list: its key.
    Users { key: Vec<u8> },
}

/// Why a prune stopped before its cut-off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing below the cut-off is left.
    Done,
    /// The per-entry bound was reached; more is left under the cut-off.
    Bound,
    /// A message whose dedup window is still open; nothing more until time passes.
    Window,
}

fn index_of(group: GroupId, key: &[u8], what: &'static str) -> Result<u64> {
    key.get(9..17)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(group, key, what))
}

/// The events below a cut-off, from the watermark up, in log-index order.
struct Prunable {
    found: Vec<(u64, Found)>,
    /// When a scan stopped at its limit, the highest index up to which `found` is complete:
    /// later events of that tag may have been left out.
    complete_upto: Option<u64>,
}

/// Reads the events of `[from, before)` as the batch sees them, at most
/// [`PRUNE_MAX_DELETES`] of each tag.
fn prunable(tx: &Overlay<'_>, from: u64, before: u64) -> Result<Prunable> {
    let g = tx.group();
    let limit = PRUNE_MAX_DELETES;
    let messages = tx.scan(
        &layout::event_key(g, from),
        &layout::event_key(g, before),
        limit,
    )?;
    let users = tx.scan(
        &layout::user_event_key(g, from),
        &layout::user_event_key(g, before),
        limit,
    )?;
    let mut complete_upto: Option<u64> = None;
    let mut note_full = |list_len: usize, i: usize, index: u64| {
        if list_len >= limit && i + 1 == list_len {
            complete_upto = Some(complete_upto.map_or(index, |c| c.min(index)));
        }
    };
    let mut found = Vec::with_capacity(messages.len() + users.len());
    for (i, (k, v)) in messages.iter().enumerate() {
        let index = index_of(g, k, "event")?;
        let (conv, seq): (ConvId, u64) = decode(g, k, "event", v)?;
        note_full(messages.len(), i, index);
        found.push((
            index,
            Found::Message {
                key: k.clone(),
                conv,
                seq,
            },
        ));
    }
    for (i, (k, _)) in users.iter().enumerate() {
        let index = index_of(g, k, "user events")?;
        note_full(users.len(), i, index);
        found.push((index, Found::Users { key: k.clone() }));
    }
    found.sort_by_key(|(index, _)| *index);
    Ok(Prunable {
        found,
        complete_upto,
    })
}

/// Applies a [`Prune`] carried by the entry at `log_index`.
pub(crate) fn prune(tx: &mut Overlay<'_>, cmd: &Prune, log_index: u64) -> Result<CommandResult> {
    let g = tx.group();
    let Prune {
        events_before,
        now_ms,
    } = *cmd;
    if events_before > log_index {
        return Ok(CommandResult::reject(
            ErrorCode::InvalidArgument,
            format!("cannot prune events up to {events_before} from entry {log_index}"),
        ));
    }
    let watermark: RetentionRecord = tx
        .get(&layout::retention_key(g), "retention")?
        .unwrap_or_default();
    let from = watermark.events_from;
    if events_before <= from {
        return Ok(CommandResult::Pruned {
            removed: 0,
            events_from: from,
            more: false,
        });
    }
    let Prunable {
        found,
        complete_upto,
    } = prunable(tx, from, events_before)?;
    let mut removed = 0usize;
    let mut events_from = from;
    let mut stop = Stop::Done;
    for (index, item) in found {
        if complete_upto.is_some_and(|c| index > c) {
            stop = Stop::Bound;
            break;
        }
        if removed + 2 > PRUNE_MAX_DELETES {
            stop = Stop::Bound;
            events_from = index;
            break;
        }
        match item {
            Found::Users { key } => {
                tx.delete(key);
                removed += 1;
            }
            Found::Message { key, conv, seq } => {
                let msg: Message = tx
                    .get(&layout::message_key(g, &conv, seq), "message")?
                    .ok_or_else(|| corrupt(g, &key, "event without its message"))?;
                if msg.sent_at_ms.saturating_add(DEDUP_WINDOW_MS) > now_ms {
                    stop = Stop::Window;
                    events_from = index;
                    break;
                }
                // Only the key this message made: after the window, a resend of the same id
                // may have stored a newer message whose key must stay.
                let dedup = layout::dedup_key(g, &conv, &msg.sender, &msg.client_msg_id);
                if tx.get::<u64>(&dedup, "dedup")? == Some(seq) {
                    tx.delete(dedup);
                    removed += 1;
                }
                tx.delete(key);
                removed += 1;
            }
        }
        events_from = index + 1;
    }
    if stop == Stop::Done && complete_upto.is_some() {
        // Every event found was pruned, but a scan stopped at its limit: more may follow.
        stop = Stop::Bound;
    }
    if stop == Stop::Done {
        events_from = events_before;
    }
    let events_from = events_from.max(from);
    if events_from != from {
        tx.put(layout::retention_key(g), &RetentionRecord { events_from });
    }
    Ok(CommandResult::Pruned {
        removed: removed as u32,
        events_from,
        more: stop == Stop::Bound,
    })
}

impl MessagingView {
    /// The oldest log index whose events the shard keeps (0 while nothing was pruned): every
    /// event below it is gone, every one at or above it is kept.
    pub fn events_from(&self) -> Result<u64> {
        Ok(self
            .get::<RetentionRecord>(&layout::retention_key(self.group), "retention")?
            .unwrap_or_default()
            .events_from)
    }

    /// Refuses a resume after `after_index` that the events kept cannot serve whole.
    pub(super) fn check_resume(
        &self,
        after_index: u64,
    ) -> Result<std::result::Result<(), EventsPruned>> {
        let events_from = self.events_from()?;
        if after_index.saturating_add(1) < events_from {
            return Ok(Err(EventsPruned {
                after_index,
                events_from,
            }));
        }
        Ok(Ok(()))
    }

    /// Whether a [`Prune`] with this cut-off and clock would delete anything now: one seek
    /// into each event tag from the watermark, and the oldest message read if it comes first.
    /// The node proposes only then, so an idle shard is never woken for nothing.
    pub fn prune_pending(&self, events_before: u64, now_ms: u64) -> Result<bool> {
        let from = self.events_from()?;
        if events_before <= from {
            return Ok(false);
        }
        // Log indexes in [from, events_before).
        let (after, upto) = (from.saturating_sub(1), events_before - 1);
        let message = self
            .by_log_index::<(ConvId, u64)>(layout::event_key, after, upto, 1, "event")?
            .pop();
        let users = self
            .by_log_index::<Vec<layout::UserEvent>>(
                layout::user_event_key,
                after,
                upto,
                1,
                "user events",
            )?
            .pop();
        match (message, users) {
            (None, None) => Ok(false),
            (None, Some(_)) => Ok(true),
            (Some((m, ..)), Some((u, ..))) if u < m => Ok(true),
            (Some((_, key, (conv, seq))), _) => {
                let msg = self
                    .read_from(&conv, seq, 1)?
                    .into_iter()
                    .next()
                    .filter(|msg| msg.seq == seq)
                    .ok_or_else(|| corrupt(self.group, &key, "event without its message"))?;
                Ok(msg.sent_at_ms.saturating_add(DEDUP_WINDOW_MS) <= now_ms)
            }
        }
    }
}
