//! What a Raft log entry carries: [`Command`], one enum over the commands of every state
//! machine, each variant holding its machine's own command type ([`crate::messaging`],
//! [`crate::meta`], [`crate::accounts`]). [`crate::apply`] hands each to its machine.
//!
//! The encoding is postcard (serde) of this enum, in log entries and in proposals forwarded
//! between nodes: a variant's number is its position, and a variant holding a struct encodes
//! exactly as a variant with those fields would. So variants are only ever added at the end,
//! and the bytes of every kind are pinned by `tests/storage/encoding.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::accounts::AccountCommand;
use crate::messaging::{
    AppendMessage, ChangeMembers, CreateConversation, MoveCursor, OutboxDone, Prune, UserConv,
};
use crate::meta::MetaCommand;

/// A change to a group, proposed through Raft and applied by every replica.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateConversation(CreateConversation),
    ChangeMembers(ChangeMembers),
    Append(AppendMessage),
    MoveCursor(MoveCursor),
    /// A change to the cluster's own state; only the meta group applies these.
    Meta(MetaCommand),
    /// Sign-up, devices and refresh tokens.
    Account(AccountCommand),
    UserConv(UserConv),
    OutboxDone(OutboxDone),
    /// Retention: a shard's leader prunes events and dedup keys nobody needs any more.
    Prune(Prune),
}

impl Command {
    /// The cluster version from which this command may be proposed (see [`crate::version`]):
    /// a node of an older release cannot read it.
    pub fn min_cluster_version(&self) -> u32 {
        // `SetClusterVersion` is what raises the version, so it cannot wait for it: its
        // proposer checks first that every node runs a binary that reads it.
        match self {
            Command::Prune(_) => crate::version::CLUSTER_V2,
            _ => crate::version::CLUSTER_V1,
        }
    }
}

/// Formats commands without their bodies: message bodies never reach logs (ARCHITECTURE.md
/// invariant 7); each command type's own `Debug` leaves them out.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateConversation(c) => write!(f, "CreateConversation({c:?})"),
            Command::ChangeMembers(c) => write!(f, "ChangeMembers({c:?})"),
            Command::Append(m) => write!(f, "Append({m:?})"),
            Command::MoveCursor(c) => write!(f, "MoveCursor({c:?})"),
            Command::Meta(m) => write!(f, "Meta({m:?})"),
            Command::Account(a) => write!(f, "Account({a:?})"),
            Command::UserConv(d) => write!(f, "UserConv({d:?})"),
            Command::OutboxDone(d) => write!(f, "OutboxDone({d:?})"),
            Command::Prune(p) => write!(f, "Prune({p:?})"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
