//! Which machine applies a command: the dispatch from [`Command`] to [`crate::messaging`],
//! [`crate::meta`] and [`crate::accounts`], the three machines every group runs.
//!
//! Every group runs all three over one key space, kept apart by the first byte (tag) of each
//! `sm` key after the group prefix:
//!
//! | tags | owner |
//! | --- | --- |
//! | `00` | the engine: applied log id and membership ([`crate::keys::TAG_APPLIED`]) |
//! | `01`–`0a` | [`crate::messaging`] (its module docs list them) |
//! | `10`–`16` | [`crate::meta`]: cluster configuration, nodes, shards, map version, signing keys, cluster id, incarnations |
//! | `20`–`22` | [`crate::accounts`]: handles, accounts, devices |
//!
//! A machine's effects beyond its group reach the node through the store's
//! [`GroupSignal`](crate::GroupSignal): the messaging machine flags each batch that adds
//! outbox entries, and the node's outbox pump waits on the signal.

use crate::command::Command;
use crate::errors::Result;
use crate::overlay::Overlay;
use crate::result::CommandResult;
use crate::{accounts, messaging, meta, SmConfig};

/// Applies `cmd`, carried by the entry at `log_index`, to the batch `tx`.
pub(crate) fn apply(
    tx: &mut Overlay<'_>,
    cfg: &SmConfig,
    cmd: &Command,
    log_index: u64,
) -> Result<CommandResult> {
    use messaging::{apply as m, outbox, retention};
    match cmd {
        Command::CreateConversation(c) => m::create(tx, cfg, c, log_index),
        Command::ChangeMembers(c) => m::change_members(tx, cfg, c, log_index),
        Command::Append(c) => m::append(tx, cfg, c, log_index),
        Command::MoveCursor(c) => m::move_cursor(tx, c, log_index),
        Command::UserConv(c) => outbox::user_conv(tx, c, log_index),
        Command::OutboxDone(c) => outbox::done(tx, c),
        Command::Prune(c) => retention::prune(tx, c, log_index),
        Command::Meta(c) => meta::apply(tx, c),
        Command::Account(c) => accounts::apply(tx, c),
    }
}
