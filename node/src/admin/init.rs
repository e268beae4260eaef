//! `init`: bootstrapping a cluster from a list of running nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bongsu_proto::internal::{AdoptRequest, HelloRequest, InitRequest, NodeIdentity};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{
    ClusterConfig, MetaCommand, NodeRecord, NodeState, ShardRecord, META_GROUP,
};
use bongsu_raft_store::NodeInfo;
use openraft::error::{InitializeError, RaftError};

use crate::cluster::{admin_client, identity, info_of};
use crate::errors::{NodeError, Result};
use crate::node::Node;
use crate::placement::{self, NodeDesc};

/// A node as the meta group registers it, from what it says of itself.
pub(super) fn record(id: &NodeIdentity) -> NodeRecord {
    NodeRecord {
        node_id: id.node_id,
        dc: id.dc.clone(),
        raft_addr: id.raft_addr.clone(),
        api_addr: id.api_addr.clone(),
        admin_addr: id.admin_addr.clone(),
        state: NodeState::Active,
    }
}

/// The meta group's voters: this node (which initializes the group, so it must be one) and
/// then nodes of other datacenters, round-robin, never more than a minority per datacenter.
fn meta_voters(
    me: &NodeIdentity,
    nodes: &[NodeIdentity],
    replicas: usize,
) -> Result<Vec<NodeIdentity>> {
    let cap = replicas / 2; // the most voters one datacenter may hold without a majority
    let mut by_dc: BTreeMap<&str, Vec<&NodeIdentity>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.node_id != me.node_id) {
        by_dc.entry(n.dc.as_str()).or_default().push(n);
    }
    let mut chosen = vec![me.clone()];
    let mut per_dc: BTreeMap<String, usize> = BTreeMap::from([(me.dc.clone(), 1)]);
    let mut round = 0;
    while chosen.len() < replicas && round < nodes.len() {
        for (dc, list) in &by_dc {
            if chosen.len() == replicas {
                break;
            }
            let used = per_dc.get(*dc).copied().unwrap_or(0);
            if let Some(n) = list.get(round) {
                if used < cap {
                    per_dc.insert(dc.to_string(), used + 1);
                    chosen.push((*n).clone());
                }
            }
        }
        round += 1;
    }
    if chosen.len() < replicas || per_dc.len() < 3.min(replicas) {
        return Err(NodeError::rejected(
            ErrorCode::InvalidArgument,
            format!("cannot place {replicas} meta voters over these nodes without a datacenter majority"),
        ));
    }
    Ok(chosen)
}

impl Node {
    /// Bootstraps a cluster: learns who the nodes are, initializes the meta group, and records
    /// the configuration and initial shard map; shard groups then start on every node.
    pub async fn init_cluster(&self, req: InitRequest) -> Result<u64> {
        if self.meta().config.is_some() {
            return Err(NodeError::rejected(
                ErrorCode::AlreadyInitialized,
                "the cluster is initialized already",
            ));
        }
        let shards = if req.shards == 0 { 64 } else { req.shards };
        let replicas = if req.replicas == 0 { 3 } else { req.replicas };
        let me = identity(self);
        let mut nodes = vec![me.clone()];
        for addr in req.node_admin_addrs.iter().filter(|a| **a != me.admin_addr) {
            let id = admin_client(&self.security, addr)
                .await?
                .hello(HelloRequest {})
                .await
                .map_err(|s| {
                    NodeError::Unavailable(format!(
                        "node at {addr} did not answer: {}",
                        s.message()
                    ))
                })?;
            nodes.push(id.into_inner());
        }
        let ids: BTreeSet<u64> = nodes.iter().map(|n| n.node_id).collect();
        if ids.len() != nodes.len() {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                "two nodes share a node id",
            ));
        }
        let descs: Vec<NodeDesc> = nodes
            .iter()
            .map(|n| NodeDesc {
                id: n.node_id,
                dc: n.dc.clone(),
                state: placement::NodeState::Active,
            })
            .collect();
        let placed = placement::initial_placement(&descs, shards, replicas)
            .map_err(|e| NodeError::rejected(ErrorCode::InvalidArgument, e.to_string()))?;
        let voters = meta_voters(&me, &nodes, replicas as usize)?;
        let meta = self.ensure_group(META_GROUP).await?;
        // Every first node's data directory is admitted to the new cluster before the meta
        // group starts: a node answers no Raft traffic until it is (invariant 8). A retried
        // init whose meta group started already keeps the cluster id it admitted them with.
        let cluster_id = match self.data_identity().cluster_id {
            Some(c) if meta.raft.is_initialized().await.unwrap_or(false) => c,
            _ => rand::random::<u128>(),
        };
        for addr in req.node_admin_addrs.iter().filter(|a| **a != me.admin_addr) {
            admin_client(&self.security, addr)
                .await?
                .adopt(AdoptRequest {
                    cluster_id: cluster_id.to_be_bytes().to_vec(),
                })
                .await
                .map_err(|s| NodeError::from_status(&s))?;
        }
        self.adopt(cluster_id)?;
        let members: BTreeMap<u64, NodeInfo> = voters
            .iter()
            .map(|n| (n.node_id, info_of(&record(n))))
            .collect();
        match meta.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(voters = ?voters.iter().map(|v| v.node_id).collect::<Vec<_>>(), "initialized the meta group")
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(NodeError::Raft(format!("initialize the meta group: {e}"))),
        }
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let config = ClusterConfig {
            shards,
            replicas,
            max_body_bytes: bongsu_proto::model::DEFAULT_MAX_BODY_BYTES as u32,
            max_group_members: 3000,
            created_at_ms,
        };
        let shards = placed
            .into_iter()
            .map(|s| ShardRecord {
                shard: s.shard,
                voters: s.voters,
                learners: s.learners,
                epoch: 0,
            })
            .collect();
        self.propose_meta(MetaCommand::Init {
            config,
            nodes: nodes.iter().map(record).collect(),
            shards,
        })
        .await
    }
}
