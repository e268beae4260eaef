//! Membership: draining a node (refused when it could never finish) and removing a drained
//! one.

use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{MetaCommand, NodeState, META_GROUP};

use crate::errors::{NodeError, Result};
use crate::node::Node;
use crate::placement;

impl Node {
    /// Removes a drained node: it must hold no shard replica and no meta voter seat. It is
    /// marked removed (it can never re-register) and dropped from the meta group's learners.
    pub async fn remove_node(&self, node_id: u64) -> Result<()> {
        let meta = self.meta();
        let Some(rec) = meta.node(node_id) else {
            return Err(NodeError::rejected(
                ErrorCode::UnknownNode,
                format!("no node {node_id}"),
            ));
        };
        if rec.state == NodeState::Active {
            return Err(NodeError::rejected(
                ErrorCode::FailedPrecondition,
                format!("node {node_id} is active: drain it first"),
            ));
        }
        let held = meta
            .shards
            .iter()
            .filter(|s| s.voters.contains(&node_id) || s.learners.contains(&node_id))
            .count();
        if held > 0 {
            return Err(NodeError::rejected(
                ErrorCode::FailedPrecondition,
                format!("node {node_id} still holds {held} shard replicas; wait for the drain to finish"),
            ));
        }
        if let Some(h) = self.group(META_GROUP) {
            if h.membership().voter_ids().any(|v| v == node_id) {
                return Err(NodeError::rejected(
                    ErrorCode::FailedPrecondition,
                    format!("node {node_id} is still a meta voter; wait for the drain to finish"),
                ));
            }
        }
        self.propose_meta(MetaCommand::SetNodeState {
            node_id,
            state: NodeState::Removed,
        })
        .await?;
        // The meta leader drops it from the meta learners (retried by reconcile if this fails).
        self.drop_meta_learner(node_id).await;
        Ok(())
    }

    /// Refuses a drain that could never finish: plays the rebalancer's moves on a copy of the
    /// map and checks that the node ends with no replica.
    pub fn check_drain(&self, node_id: u64) -> Result<()> {
        let meta = self.meta();
        let cfg = meta
            .config
            .as_ref()
            .ok_or_else(|| NodeError::rejected(ErrorCode::FailedPrecondition, "not initialized"))?;
        if meta.node(node_id).is_none() {
            return Err(NodeError::rejected(
                ErrorCode::UnknownNode,
                format!("no node {node_id}"),
            ));
        }
        // The map as it will be once the drain is recorded and any move in flight settled.
        let (mut nodes, mut shards) = placement::from_meta(&meta);
        for n in nodes.iter_mut().filter(|n| n.id == node_id) {
            n.state = placement::NodeState::Draining;
        }
        for s in &mut shards {
            s.learners.clear();
        }
        let bound = shards.len() * cfg.replicas as usize * 4 + 16;
        for _ in 0..bound {
            let Some(mv) = placement::plan_move(&nodes, &shards, cfg.replicas) else {
                break;
            };
            if !placement::apply_move(&mut shards, &mv) {
                break;
            }
        }
        let left = shards.iter().filter(|s| s.contains(node_id)).count();
        if left > 0 {
            return Err(NodeError::rejected(
                ErrorCode::FailedPrecondition,
                format!("node {node_id} cannot be drained: {left} shards would have nowhere to move without breaking placement (add a node to its datacenter first)"),
            ));
        }
        Ok(())
    }
}
