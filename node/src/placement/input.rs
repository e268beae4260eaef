//! Placement's input from the meta state: the node registry and the shard map in the
//! planner's terms.

use bongsu_raft_store::meta::{self, MetaSnapshot};

use super::{NodeDesc, NodeState, ShardReplicas};

pub fn node_state(s: meta::NodeState) -> NodeState {
    match s {
        meta::NodeState::Active => NodeState::Active,
        meta::NodeState::Draining => NodeState::Draining,
        meta::NodeState::Removed => NodeState::Removed,
    }
}

/// The meta state in the placement planner's terms.
pub fn from_meta(meta: &MetaSnapshot) -> (Vec<NodeDesc>, Vec<ShardReplicas>) {
    let nodes = meta
        .nodes
        .iter()
        .map(|n| NodeDesc {
            id: n.node_id,
            dc: n.dc.clone(),
            state: node_state(n.state),
        })
        .collect();
    let shards = meta
        .shards
        .iter()
        .map(|s| ShardReplicas {
            shard: s.shard,
            voters: s.voters.clone(),
            learners: s.learners.clone(),
        })
        .collect();
    (nodes, shards)
}
