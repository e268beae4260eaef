//! Fail-stop: a node whose storage failed stops, rather than go on with data it may have lost.
//!
//! openraft stops a group on a storage error (a failed fsync, a full disk). The node then
//! exits with [`EXIT_CODE`]: the other replicas serve, and an operator (or the supervisor)
//! brings the node back once its disk is sound. Exiting is the only safe answer: a write the
//! node acknowledged to its group may not be on disk, so it must not vote or lead again from
//! this process's memory.

use bongsu_raft_store::{GroupId, NodeId};

/// The exit code of a node that stopped because a group's storage failed.
pub const EXIT_CODE: i32 = 70;

/// Exits the process if `running` says the group stopped for any reason but a shutdown.
pub fn on_group_state(group: GroupId, running: &Result<(), openraft::error::Fatal<NodeId>>) {
    if let Err(e) = running {
        if !matches!(e, openraft::error::Fatal::Stopped) {
            tracing::error!(group, error = %e, "group failed; stopping the node");
            std::process::exit(EXIT_CODE);
        }
    }
}
