//! What applying a command did: the one result type every machine returns, and the rejection
//! that carries a refused command's stable code.
//!
//! Kept apart from [`crate::command`] so that the machines, which all return it, do not depend
//! on the root that depends on them.

use bongsu_proto::model::{ConvId, UserId};
use bongsu_proto::ErrorCode;
use serde::{Deserialize, Serialize};

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Created {
        conv_id: ConvId,
        existed: bool,
    },
    MembersChanged {
        member_count: u32,
    },
    /// The message's seq; `duplicate` when it was stored by an earlier send with the same id.
    Appended {
        seq: u64,
        duplicate: bool,
    },
    /// The cursor after the command (unchanged if the command tried to move it back).
    CursorMoved {
        seq: u64,
    },
    /// An account command succeeded for this user.
    Account {
        user_id: UserId,
    },
    /// A user's conversation index took (`changed`) or ignored (stale version) a delivery.
    UserIndexed {
        changed: bool,
    },
    /// How many of the named outbox entries existed and were deleted.
    OutboxCleared {
        removed: u32,
    },
    /// The meta group's shard map after the command.
    MapChanged {
        version: u64,
    },
    /// The command broke a rule and changed nothing.
    Rejected(Rejection),
    /// Raft's own entries (blank, membership) have no messaging result.
    Empty,
    /// What a `Prune` did: keys deleted, the shard's retention watermark after it (events of
    /// log indexes below `events_from` are gone, the rest kept), and whether more under the
    /// same cut-off is left for another entry (the per-entry bound was reached).
    Pruned {
        removed: u32,
        events_from: u64,
        more: bool,
    },
}

/// Why a command was refused, with its stable code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

impl CommandResult {
    pub(crate) fn reject(code: ErrorCode, reason: impl Into<String>) -> Self {
        CommandResult::Rejected(Rejection::new(code, reason))
    }
}

/// Either the command may go ahead, or why it may not. Checks return this, so that a command's
/// rules read as a list of checks before its writes.
pub(crate) type Verdict = std::result::Result<(), Rejection>;

/// The outcome of a check that refuses: `return refuse(code, reason)` reads as the rule.
pub(crate) fn refuse(code: ErrorCode, reason: impl Into<String>) -> crate::errors::Result<Verdict> {
    Ok(Err(Rejection::new(code, reason)))
}
