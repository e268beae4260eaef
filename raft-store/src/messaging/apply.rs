//! Applying one command to a shard's state, through a write overlay so that a batch of
//! entries sees its own earlier writes and lands in RocksDB as one atomic batch.

use std::collections::BTreeSet;

use bongsu_proto::model::{validate_body, ConvId, ConversationKind, Message, UserId};
use bongsu_proto::ErrorCode;

use super::command::{AppendMessage, Command, CommandResult};
use super::layout::{self, ConvRecord, Role, UserEvent, UserEventKind};
use super::outbox;
use super::SmConfig;
use crate::errors::Result;
use crate::overlay::Overlay;

/// `log_index` is the Raft index of the entry carrying `cmd`; appends record it so that
/// subscribers can resume after an index.
pub(crate) fn apply_in(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    cmd: &Command,
    log_index: u64,
) -> Result<CommandResult> {
    match cmd {
        Command::CreateConversation {
            conv_id,
            kind,
            creator,
            members,
            at_ms,
        } => create(tx, cfg, log_index, conv_id, *kind, creator, members, *at_ms),
        Command::ChangeMembers {
            conv_id,
            actor,
            add,
            remove,
            ..
        } => change_members(tx, cfg, log_index, conv_id, actor, add, remove),
        Command::Append(m) => append(tx, cfg, m, log_index),
        Command::MoveCursor { user, conv_id, seq } => {
            move_cursor(tx, user, conv_id, *seq, log_index)
        }
        Command::Meta(m) => crate::meta::apply(tx, m),
        Command::Account(a) => crate::accounts::apply(tx, a),
        Command::UserConv {
            user,
            conv_id,
            joined,
            version,
        } => outbox::user_conv(tx, user, conv_id, *joined, *version, log_index),
        Command::OutboxDone { delivered } => outbox::done(tx, delivered),
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    log_index: u64,
    conv_id: &ConvId,
    kind: ConversationKind,
    creator: &UserId,
    members: &[UserId],
    at_ms: u64,
) -> Result<CommandResult> {
    let g = tx.group();
    if let Some(existing) = tx.get::<ConvRecord>(&layout::conv_key(g, conv_id), "conversation")? {
        if existing.kind == kind && existing.owner == *creator {
            return Ok(CommandResult::Created {
                conv_id: *conv_id,
                existed: true,
            });
        }
        // A direct conversation's id may be derived from its two members, so the other person
        // creating "the same" conversation is a repeat too, not a conflict.
        if existing.kind == ConversationKind::Direct && kind == ConversationKind::Direct {
            let mut pair: BTreeSet<UserId> = members.iter().copied().collect();
            pair.insert(*creator);
            let mut same = pair.len() == 2;
            for u in &pair {
                same = same
                    && tx
                        .get::<Role>(&layout::member_key(g, conv_id, u), "member")?
                        .is_some();
            }
            if same {
                return Ok(CommandResult::Created {
                    conv_id: *conv_id,
                    existed: true,
                });
            }
        }
        return Ok(CommandResult::reject(
            ErrorCode::ConversationExists,
            format!("conversation {conv_id} exists"),
        ));
    }
    let mut all: BTreeSet<UserId> = members.iter().copied().collect();
    all.insert(*creator);
    match kind {
        ConversationKind::Direct if all.len() != 2 => {
            return Ok(CommandResult::reject(
                ErrorCode::InvalidMembers,
                format!(
                    "a direct conversation has exactly 2 distinct members, got {}",
                    all.len()
                ),
            ));
        }
        ConversationKind::Group if all.len() > cfg.max_group_members as usize => {
            return Ok(CommandResult::reject(
                ErrorCode::TooManyMembers,
                format!(
                    "{} members is over the limit of {}",
                    all.len(),
                    cfg.max_group_members
                ),
            ));
        }
        _ => {}
    }
    for user in &all {
        let role = match (kind, user == creator) {
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
        kind,
        owner: *creator,
        member_count: all.len() as u32,
        last_seq: 0,
        created_at_ms: at_ms,
    };
    tx.put(layout::conv_key(g, conv_id), &rec);
    Ok(CommandResult::Created {
        conv_id: *conv_id,
        existed: false,
    })
}

fn change_members(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    log_index: u64,
    conv_id: &ConvId,
    actor: &UserId,
    add: &[UserId],
    remove: &[UserId],
) -> Result<CommandResult> {
    let g = tx.group();
    let Some(mut rec) = tx.get::<ConvRecord>(&layout::conv_key(g, conv_id), "conversation")? else {
        return Ok(CommandResult::reject(
            ErrorCode::UnknownConversation,
            format!("no conversation {conv_id}"),
        ));
    };
    let is_owner = rec.owner == *actor;
    match rec.kind {
        ConversationKind::Direct => {
            return Ok(CommandResult::reject(
                ErrorCode::DirectImmutable,
                "direct conversations keep their two members",
            ));
        }
        ConversationKind::Group => {
            let actor_role: Option<Role> =
                tx.get(&layout::member_key(g, conv_id, actor), "member")?;
            if actor_role.is_none() {
                return Ok(CommandResult::reject(
                    ErrorCode::NotMember,
                    format!("{actor} is not a member"),
                ));
            }
            if !is_owner && remove.iter().any(|u| u != actor) {
                return Ok(CommandResult::reject(
                    ErrorCode::NotOwner,
                    "only the owner removes other members",
                ));
            }
        }
        ConversationKind::Channel => {
            // Following and unfollowing is something people do for themselves; the owner may
            // also remove (block) followers.
            if !is_owner && (add.iter().any(|u| u != actor) || remove.iter().any(|u| u != actor)) {
                return Ok(CommandResult::reject(
                    ErrorCode::NotOwner,
                    "only the owner changes other followers",
                ));
            }
            if remove.contains(&rec.owner) {
                return Ok(CommandResult::reject(
                    ErrorCode::InvalidMembers,
                    "a channel keeps its owner",
                ));
            }
        }
    }
    // Work out the end state before writing anything.
    let mut added = BTreeSet::new();
    for u in add {
        if tx
            .get::<Role>(&layout::member_key(g, conv_id, u), "member")?
            .is_none()
            && !remove.contains(u)
        {
            added.insert(*u);
        }
    }
    let mut removed = BTreeSet::new();
    for u in remove {
        if tx
            .get::<Role>(&layout::member_key(g, conv_id, u), "member")?
            .is_some()
        {
            removed.insert(*u);
        }
    }
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
    // The removed members' open streams follow this shard for the conversation's messages, and
    // the LEFT that the outbox delivers to their own shards comes later (unboundedly later if
    // such a shard has no quorum). Recorded here, at this entry's index, the removal reaches
    // them in log order, before any message appended after it. The version is this index,
    // the same one the outbox delivery carries.
    if !removed.is_empty() {
        let left: Vec<UserEvent> = removed
            .iter()
            .map(|u| UserEvent {
                user: *u,
                conv: *conv_id,
                kind: UserEventKind::Left,
                seq: log_index,
            })
            .collect();
        tx.put(layout::user_event_key(g, log_index), &left);
    }
    rec.member_count = new_count as u32;
    tx.put(layout::conv_key(g, conv_id), &rec);
    Ok(CommandResult::MembersChanged {
        member_count: rec.member_count,
    })
}

fn append(
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

fn move_cursor(
    tx: &mut Overlay<'_>,
    user: &UserId,
    conv: &ConvId,
    seq: u64,
    log_index: u64,
) -> Result<CommandResult> {
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
