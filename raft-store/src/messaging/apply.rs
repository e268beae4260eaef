//! Applying one messaging command to a shard's state, through a write overlay so that a batch
//! of entries sees its own earlier writes and lands in RocksDB as one atomic batch. One
//! function per command; [`crate::apply`] calls them. `log_index` is the Raft index of the
//! entry carrying the command: appends record it so that subscribers can resume after an
//! index, and membership changes key their outbox entries by it.

use std::collections::BTreeSet;

use bongsu_proto::model::{validate_body, ConvId, ConversationKind, Message, UserId};
use bongsu_proto::ErrorCode;

use super::command::{AppendMessage, ChangeMembers, CreateConversation, MoveCursor};
use super::layout::{self, ConvRecord, Role, UserEvent, UserEventKind};
use super::outbox;
use crate::errors::Result;
use crate::overlay::Overlay;
use crate::result::{CommandResult, Rejection, Verdict};
use crate::SmConfig;

pub(crate) fn create(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    cmd: &CreateConversation,
    log_index: u64,
) -> Result<CommandResult> {
    let g = tx.group();
    let conv_id = &cmd.conv_id;
    if let Some(existing) = tx.get::<ConvRecord>(&layout::conv_key(g, conv_id), "conversation")? {
        return if is_repeat(tx, cmd, &existing)? {
            Ok(CommandResult::Created {
                conv_id: *conv_id,
                existed: true,
            })
        } else {
            Ok(CommandResult::reject(
                ErrorCode::ConversationExists,
                format!("conversation {conv_id} exists"),
            ))
        };
    }
    let mut all: BTreeSet<UserId> = cmd.members.iter().copied().collect();
    all.insert(cmd.creator);
    if let Err(r) = check_new_members(cfg, cmd.kind, all.len()) {
        return Ok(CommandResult::Rejected(r));
    }
    for user in &all {
        let role = match (cmd.kind, *user == cmd.creator) {
            (ConversationKind::Channel, true) => Role::Owner,
            (ConversationKind::Channel, false) => Role::Follower,
            (ConversationKind::Group, true) => Role::Owner,
            _ => Role::Member,
        };
        tx.put(layout::member_key(g, conv_id, user), &role);
        // Every member's conversation list (in their own shard) learns of it via the outbox.
        outbox::record(tx, log_index, user, conv_id, true);
    }
    let rec = ConvRecord {
        kind: cmd.kind,
        owner: cmd.creator,
        member_count: all.len() as u32,
        last_seq: 0,
        created_at_ms: cmd.at_ms,
    };
    tx.put(layout::conv_key(g, conv_id), &rec);
    Ok(CommandResult::Created {
        conv_id: *conv_id,
        existed: false,
    })
}

/// Whether creating a conversation that exists repeats its creation: the same creator and kind,
/// or, since a direct conversation's id may be derived from its two members, the other person
/// creating "the same" direct conversation.
fn is_repeat(tx: &Overlay<'_>, cmd: &CreateConversation, existing: &ConvRecord) -> Result<bool> {
    if existing.kind == cmd.kind && existing.owner == cmd.creator {
        return Ok(true);
    }
    if existing.kind != ConversationKind::Direct || cmd.kind != ConversationKind::Direct {
        return Ok(false);
    }
    let mut pair: BTreeSet<UserId> = cmd.members.iter().copied().collect();
    pair.insert(cmd.creator);
    let mut same = pair.len() == 2;
    for u in &pair {
        same = same
            && tx
                .get::<Role>(&layout::member_key(tx.group(), &cmd.conv_id, u), "member")?
                .is_some();
    }
    Ok(same)
}

/// A new conversation's member count: exactly two for a direct one, at most the limit for a
/// group.
fn check_new_members(cfg: &SmConfig, kind: ConversationKind, count: usize) -> Verdict {
    match kind {
        ConversationKind::Direct if count != 2 => Err(Rejection::new(
            ErrorCode::InvalidMembers,
            format!("a direct conversation has exactly 2 distinct members, got {count}"),
        )),
        ConversationKind::Group if count > cfg.max_group_members as usize => Err(Rejection::new(
            ErrorCode::TooManyMembers,
            format!(
                "{count} members is over the limit of {}",
                cfg.max_group_members
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn change_members(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    cmd: &ChangeMembers,
    log_index: u64,
) -> Result<CommandResult> {
    let g = tx.group();
    let conv_id = &cmd.conv_id;
    let Some(mut rec) = tx.get::<ConvRecord>(&layout::conv_key(g, conv_id), "conversation")? else {
        return Ok(CommandResult::reject(
            ErrorCode::UnknownConversation,
            format!("no conversation {conv_id}"),
        ));
    };
    if let Err(r) = may_change_members(tx, &rec, cmd)? {
        return Ok(CommandResult::Rejected(r));
    }
    // Work out the end state before writing anything.
    let (added, removed) = real_changes(tx, cmd)?;
    let new_count = rec.member_count as u64 + added.len() as u64 - removed.len() as u64;
    if rec.kind == ConversationKind::Group && new_count > cfg.max_group_members as u64 {
        return Ok(CommandResult::reject(
            ErrorCode::TooManyMembers,
            format!(
                "{new_count} members is over the limit of {}",
                cfg.max_group_members
            ),
        ));
    }
    let role = if rec.kind == ConversationKind::Channel {
        Role::Follower
    } else {
        Role::Member
    };
    // Only real changes reach the outbox: a repeated change adds and removes nobody, so it
    // records nothing and the members' lists see each change once.
    for u in &added {
        tx.put(layout::member_key(g, conv_id, u), &role);
        outbox::record(tx, log_index, u, conv_id, true);
    }
    for u in &removed {
        tx.delete(layout::member_key(g, conv_id, u));
        outbox::record(tx, log_index, u, conv_id, false);
    }
    record_removals(tx, conv_id, &removed, log_index);
    rec.member_count = new_count as u32;
    tx.put(layout::conv_key(g, conv_id), &rec);
    Ok(CommandResult::MembersChanged {
        member_count: rec.member_count,
    })
}

/// Who may change a conversation's members: nobody a direct one's; in a group, members, and
/// only the owner removes others; in a channel, people follow and unfollow for themselves,
/// the owner may also remove (block) followers, and the owner stays.
fn may_change_members(tx: &Overlay<'_>, rec: &ConvRecord, cmd: &ChangeMembers) -> Result<Verdict> {
    let ChangeMembers {
        conv_id,
        actor,
        add,
        remove,
        ..
    } = cmd;
    let is_owner = rec.owner == *actor;
    let refuse = |code, reason: &str| Ok(Err(Rejection::new(code, reason)));
    match rec.kind {
        ConversationKind::Direct => refuse(
            ErrorCode::DirectImmutable,
            "direct conversations keep their two members",
        ),
        ConversationKind::Group => {
            let actor_role: Option<Role> =
                tx.get(&layout::member_key(tx.group(), conv_id, actor), "member")?;
            if actor_role.is_none() {
                return refuse(ErrorCode::NotMember, &format!("{actor} is not a member"));
            }
            if !is_owner && remove.iter().any(|u| u != actor) {
                return refuse(ErrorCode::NotOwner, "only the owner removes other members");
            }
            Ok(Ok(()))
        }
        ConversationKind::Channel => {
            if !is_owner && (add.iter().any(|u| u != actor) || remove.iter().any(|u| u != actor)) {
                return refuse(
                    ErrorCode::NotOwner,
                    "only the owner changes other followers",
                );
            }
            if remove.contains(&rec.owner) {
                return refuse(ErrorCode::InvalidMembers, "a channel keeps its owner");
            }
            Ok(Ok(()))
        }
    }
}

/// The members a change really adds (not members yet, and not also removed) and really
/// removes (members now).
fn real_changes(
    tx: &Overlay<'_>,
    cmd: &ChangeMembers,
) -> Result<(BTreeSet<UserId>, BTreeSet<UserId>)> {
    let is_member = |u: &UserId| -> Result<bool> {
        Ok(tx
            .get::<Role>(&layout::member_key(tx.group(), &cmd.conv_id, u), "member")?
            .is_some())
    };
    let mut added = BTreeSet::new();
    for u in &cmd.add {
        if !is_member(u)? && !cmd.remove.contains(u) {
            added.insert(*u);
        }
    }
    let mut removed = BTreeSet::new();
    for u in &cmd.remove {
        if is_member(u)? {
            removed.insert(*u);
        }
    }
    Ok((added, removed))
}

/// The removed members' open streams follow this shard for the conversation's messages, and
/// the LEFT that the outbox delivers to their own shards comes later (unboundedly later if
/// such a shard has no quorum). Recorded here, at this entry's index, the removal reaches them
/// in log order, before any message appended after it. The version is this index, the same
/// one the outbox delivery carries.
fn record_removals(
    tx: &mut Overlay<'_>,
    conv_id: &ConvId,
    removed: &BTreeSet<UserId>,
    log_index: u64,
) {
    if removed.is_empty() {
        return;
    }
    let left: Vec<UserEvent> = removed
        .iter()
        .map(|u| UserEvent {
            user: *u,
            conv: *conv_id,
            kind: UserEventKind::Left,
            seq: log_index,
        })
        .collect();
    tx.put(layout::user_event_key(tx.group(), log_index), &left);
}

pub(crate) fn append(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    m: &AppendMessage,
    log_index: u64,
) -> Result<CommandResult> {
    let g = tx.group();
    let conv = &m.conv_id;
    let Some(mut rec) = tx.get::<ConvRecord>(&layout::conv_key(g, conv), "conversation")? else {
        return Ok(CommandResult::reject(
            ErrorCode::UnknownConversation,
            format!("no conversation {conv}"),
        ));
    };
    if tx
        .get::<Role>(&layout::member_key(g, conv, &m.sender), "member")?
        .is_none()
    {
        return Ok(CommandResult::reject(
            ErrorCode::NotMember,
            format!("{} is not a member of {conv}", m.sender),
        ));
    }
    if rec.kind == ConversationKind::Channel && rec.owner != m.sender {
        return Ok(CommandResult::reject(
            ErrorCode::NotOwner,
            "only the channel's owner posts",
        ));
    }
    let dedup_key = layout::dedup_key(g, conv, &m.sender, &m.client_msg_id);
    if let Some(seq) = tx.get::<u64>(&dedup_key, "dedup")? {
        return Ok(CommandResult::Appended {
            seq,
            duplicate: true,
        });
    }
    if let Err(e) = validate_body(m.kind, &m.body, cfg.max_body_bytes) {
        return Ok(CommandResult::reject(e.code, e.reason));
    }
    rec.last_seq += 1;
    let seq = rec.last_seq;
    let msg = Message {
        conv_id: *conv,
        seq,
        sender: m.sender,
        device: m.device,
        client_msg_id: m.client_msg_id,
        kind: m.kind,
        body: m.body.clone(),
        sent_at_ms: m.at_ms,
    };
    tx.put(layout::message_key(g, conv, seq), &msg);
    tx.put(dedup_key, &seq);
    tx.put(layout::conv_key(g, conv), &rec);
    tx.put(layout::event_key(g, log_index), &(*conv, seq));
    Ok(CommandResult::Appended {
        seq,
        duplicate: false,
    })
}

pub(crate) fn move_cursor(
    tx: &mut Overlay<'_>,
    cmd: &MoveCursor,
    log_index: u64,
) -> Result<CommandResult> {
    let MoveCursor {
        user,
        conv_id: conv,
        seq,
    } = cmd;
    let seq = *seq;
    let g = tx.group();
    let key = layout::cursor_key(g, user, conv);
    let current: u64 = tx.get(&key, "cursor")?.unwrap_or(0);
    if seq <= current {
        return Ok(CommandResult::CursorMoved { seq: current });
    }
    tx.put(key, &seq);
    // The user's other devices learn of the move from the user's shard's event stream.
    tx.put(
        layout::user_event_key(g, log_index),
        &vec![UserEvent {
            user: *user,
            conv: *conv,
            kind: UserEventKind::Read,
            seq,
        }],
    );
    Ok(CommandResult::CursorMoved { seq })
}
