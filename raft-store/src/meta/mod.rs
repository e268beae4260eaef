//! The meta group's state machine: cluster configuration, node registry and shard map.
//!
//! The meta group is a Raft group like the shards, with voters in at least three datacenters,
//! so the cluster's own bookkeeping survives the loss of any one of them (ARCHITECTURE.md invariant
//! 2). This module only records decisions; which node should host what (placement and
//! rebalancing) is decided by the node and proposed here as commands.
//!
//! Every change bumps the shard-map version, which gateways and nodes watch.
//! `SetReplicas` is a compare-and-set on the shard's epoch, so two rebalancer steps planned
//! from the same map cannot both land.

mod apply;
mod view;

use serde::{Deserialize, Serialize};

pub(crate) use apply::apply;
pub use view::{MetaSnapshot, MetaView};

use crate::NodeId;

/// The group numbering (meta group 0, shard `s` is group `s + 1`) is defined once, in
/// `bongsu_proto::model`, for the nodes, the tools and the test harnesses alike.
pub use bongsu_proto::model::{group_shard, shard_group, META_GROUP};

/// Chosen at init, fixed for the cluster's life: every replica applies with these values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub shards: u32,
    pub replicas: u32,
    pub max_body_bytes: u32,
    pub max_group_members: u32,
    pub created_at_ms: u64,
}

impl ClusterConfig {
    pub fn sm_config(&self) -> crate::SmConfig {
        crate::SmConfig {
            max_body_bytes: self.max_body_bytes as usize,
            max_group_members: self.max_group_members,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Active,
    /// Leaders and then replicas are being moved off; nothing new is placed here.
    Draining,
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }

    /// The inverse of `as_str` (the shard map names states by these strings).
    pub fn parse(s: &str) -> Option<NodeState> {
        [NodeState::Active, NodeState::Draining, NodeState::Removed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// A node as registered in the meta group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    pub dc: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub admin_addr: String,
    pub state: NodeState,
}

/// Where one shard's replicas live. `voters[0]` is where its leader should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub shard: u32,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Bumped by every change of this shard's replicas.
    pub epoch: u64,
}

/// A token-signing key (Ed25519). Every gateway in every datacenter signs and verifies access
/// tokens with the keys kept here, so no single service has to be reachable to sign in or to
/// check a token (ARCHITECTURE.md invariant 2).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id, carried in every token so verifiers pick the right key.
    pub kid: String,
    /// The Ed25519 secret seed. Nodes are trusted infrastructure; the seed never leaves the
    /// cluster's internal APIs.
    pub seed: [u8; 32],
    pub public: [u8; 32],
    pub created_at_ms: u64,
    /// Set when the key stops signing; it still verifies tokens issued before.
    pub retired_at_ms: Option<u64>,
}

/// Key material never reaches logs.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey({}, created {}, retired {:?})",
            self.kid, self.created_at_ms, self.retired_at_ms
        )
    }
}

/// A change to the meta state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets the configuration, the first nodes and the initial shard map, once.
    Init {
        config: ClusterConfig,
        nodes: Vec<NodeRecord>,
        shards: Vec<ShardRecord>,
    },
    /// Adds a node, or updates the addresses of a known one (keeping its state).
    RegisterNode(NodeRecord),
    SetNodeState {
        node_id: NodeId,
        state: NodeState,
    },
    /// Replaces a shard's replicas if its epoch is still `expected_epoch`.
    SetReplicas {
        shard: u32,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        expected_epoch: u64,
    },
    /// Adds a signing key (idempotent for the same key id and material).
    AddSigningKey(SigningKey),
    /// Stops a key from signing new tokens.
    RetireSigningKey {
        kid: String,
        at_ms: u64,
    },
    /// Records which incarnation of a node's data directory is the member, and the cluster's
    /// id if none is recorded yet (ARCHITECTURE.md invariant 8). Refused with `NODE_REPLACED`
    /// when the node id is a member under another incarnation, or is a member and this
    /// directory was never admitted (a wiped or replaced disk asking to join under the old
    /// id); with `CLUSTER_MISMATCH` when the directory belongs to another cluster.
    RecordIncarnation {
        node_id: NodeId,
        incarnation: u128,
        /// The cluster id the directory holds, or a fresh candidate if it holds none.
        cluster_id: u128,
        /// The directory holds no cluster id: take the recorded one instead of refusing.
        adopt_cluster: bool,
        /// The directory was admitted before (it records itself), rather than asking to be.
        admitted: bool,
    },
    /// Raises the cluster version (see [`crate::version`]); never lowers it. Proposed by the
    /// meta leader once every node runs a binary of that version.
    SetClusterVersion {
        version: u32,
    },
}

#[cfg(test)]
mod tests;
