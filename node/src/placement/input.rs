//! Placement's input from the meta state, or from the shard map the node publishes: the node
//! registry and the shard map in the planner's terms.

use bongsu_proto::internal::ShardMap;
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
        .map(|s| replicas(s.shard, &s.voters, &s.learners))
        .collect();
    (nodes, shards)
}

/// The published shard map (what `WatchShardMap` streams) in the planner's terms; an error
/// names a node whose state is not one the meta group writes.
pub fn from_map(map: &ShardMap) -> Result<(Vec<NodeDesc>, Vec<ShardReplicas>), String> {
    let nodes = map
        .nodes
        .iter()
        .map(|n| {
            let state = meta::NodeState::parse(&n.state).ok_or_else(|| {
                format!(
                    "map version {}: node {} has unknown state {:?}",
                    map.version, n.node_id, n.state
                )
            })?;
            Ok(NodeDesc {
                id: n.node_id,
                dc: n.dc.clone(),
                state: node_state(state),
            })
        })
        .collect::<Result<_, String>>()?;
    let shards = map
        .shards
        .iter()
        .map(|s| replicas(s.shard, &s.voters, &s.learners))
        .collect();
    Ok((nodes, shards))
}

fn replicas(shard: u32, voters: &[u64], learners: &[u64]) -> ShardReplicas {
    ShardReplicas {
        shard,
        voters: voters.to_vec(),
        learners: learners.to_vec(),
    }
}
