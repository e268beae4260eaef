//! The admin API: cluster init and join, status, and operator questions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bongsu_proto::internal::admin_server::Admin;
use bongsu_proto::internal::*;
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{
    ClusterConfig, MetaCommand, MetaSnapshot, NodeRecord, NodeState, ShardRecord, META_GROUP,
};
use bongsu_raft_store::NodeInfo;
use openraft::error::{InitializeError, RaftError};
use tonic::{Request, Response, Status};

use crate::cluster::{admin_client, identity, info_of};
use crate::errors::{NodeError, Result};
use crate::node::Node;
use crate::placement::{self, NodeDesc};

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn record(id: &NodeIdentity) -> NodeRecord {
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
        let shards = if req.shards == 0 { 64 } else { req.shards };
        let replicas = if req.replicas == 0 { 3 } else { req.replicas };
        let me = identity(self);
        let mut nodes = vec![me.clone()];
        for addr in req.node_admin_addrs.iter().filter(|a| **a != me.admin_addr) {
            let id = admin_client(addr)
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

    pub fn status(&self) -> ClusterStatus {
        let meta = self.meta();
        let mut groups = Vec::new();
        for h in self.groups() {
            let m = h.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let learners: Vec<u64> = membership.learner_ids().collect();
            let last = m.last_log_index.unwrap_or(0);
            let follower_lag = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, matched)| {
                            (
                                *id,
                                last.saturating_sub(matched.map(|l| l.index).unwrap_or(0)),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let commit_index = self
                .store
                .log_store(h.group)
                .committed()
                .ok()
                .flatten()
                .map(|l| l.index)
                .unwrap_or(0);
            groups.push(GroupStatus {
                group: h.group,
                leader: m.current_leader.unwrap_or(0),
                term: m.current_term,
                commit_index,
                applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                voters,
                learners,
                follower_lag,
            });
        }
        let liveness = meta
            .nodes
            .iter()
            .map(|n| NodeLiveness {
                node_id: n.node_id,
                live: self.is_live(n.node_id),
                last_seen_ms_ago: if n.node_id == self.id() {
                    0
                } else {
                    self.last_heard(n.node_id)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(u64::MAX)
                },
            })
            .collect();
        ClusterStatus {
            node_id: self.id(),
            dc: self.cfg.dc.clone(),
            map: Some(ShardMapSummary {
                version: meta.version,
                shard_count: meta.config.as_ref().map(|c| c.shards).unwrap_or(0),
                nodes: meta
                    .nodes
                    .iter()
                    .map(|n| NodeIdentity {
                        node_id: n.node_id,
                        dc: n.dc.clone(),
                        raft_addr: n.raft_addr.clone(),
                        api_addr: n.api_addr.clone(),
                        admin_addr: n.admin_addr.clone(),
                    })
                    .collect(),
                node_states: meta
                    .nodes
                    .iter()
                    .map(|n| n.state.as_str().to_string())
                    .collect(),
            }),
            groups,
            liveness,
            transport: Some(self.transport().stats.to_proto()),
        }
    }

    /// Whether stopping a node or a datacenter now would leave any group without a quorum,
    /// counting nodes that are already down and replicas that are too far behind to count.
    pub fn safe_to_stop(&self, req: &SafeToStopRequest) -> Result<SafeToStopReply> {
        let meta = self.meta();
        let stopping: Vec<u64> = match (req.node_id, req.dc.as_str()) {
            (0, "") => {
                return Err(NodeError::rejected(
                    ErrorCode::InvalidArgument,
                    "give one of node_id and dc",
                ))
            }
            (0, dc) => meta
                .nodes
                .iter()
                .filter(|n| n.dc == dc)
                .map(|n| n.node_id)
                .collect(),
            (id, "") => vec![id],
            _ => {
                return Err(NodeError::rejected(
                    ErrorCode::InvalidArgument,
                    "give only one of node_id and dc",
                ))
            }
        };
        if stopping.is_empty() || stopping.iter().any(|id| meta.node(*id).is_none()) {
            return Err(NodeError::rejected(
                ErrorCode::UnknownNode,
                "no such node or datacenter",
            ));
        }
        let down: Vec<u64> = meta
            .nodes
            .iter()
            .map(|n| n.node_id)
            .filter(|id| !self.is_live(*id))
            .collect();
        let (descs, shards) = placement_input(&meta);
        let mut reasons = placement::safe_to_stop(&descs, &shards, &stopping, &down);
        // A replica far behind its leader would not help a quorum soon: count it as down for
        // the groups this node leads (the only ones whose lag it knows).
        const LAG_LIMIT: u64 = 1000;
        for g in self.status().groups {
            if g.leader != self.id() {
                continue;
            }
            let up_to_date = g
                .voters
                .iter()
                .filter(|v| !stopping.contains(v) && !down.contains(v))
                .filter(|v| {
                    **v == self.id() || g.follower_lag.get(v).is_some_and(|lag| *lag <= LAG_LIMIT)
                })
                .count();
            if up_to_date * 2 <= g.voters.len() && !stopping.contains(&self.id()) {
                reasons.push(format!(
                    "{}: only {up_to_date} of {} voters would remain caught up",
                    crate::api::shard_label(g.group),
                    g.voters.len()
                ));
            }
        }
        Ok(SafeToStopReply {
            safe: reasons.is_empty(),
            reasons,
        })
    }
}

/// A replica this many entries behind its leader still counts as caught up.
const READY_LAG: u64 = 100;

impl Node {
    /// Asks the leader of every group hosted here (one Status call per peer node) how far
    /// behind this node's replica is.
    pub async fn ready(&self) -> ReadyReply {
        let me = self.id();
        let mut reasons = Vec::new();
        if self.meta().config.is_none() {
            reasons.push(
                "the cluster is not initialized (or this node has not received the shard map)"
                    .to_string(),
            );
        }
        let mine = self.status();
        let mut leaders: BTreeMap<u64, Vec<GroupStatus>> = BTreeMap::new();
        for g in &mine.groups {
            if g.leader == 0 {
                reasons.push(format!(
                    "{}: no leader known",
                    crate::api::shard_label(g.group)
                ));
            } else if g.leader != me {
                leaders.entry(g.leader).or_default().push(g.clone());
            }
        }
        for (leader, groups) in leaders {
            let Some(addr) = self
                .leader_of(groups[0].group)
                .map(|(_, info)| info.admin_addr)
            else {
                continue;
            };
            let status = match admin_client(&addr).await {
                Ok(mut c) => c
                    .status(StatusRequest {})
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| s.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            let status = match status {
                Ok(s) => s,
                Err(e) => {
                    reasons.push(format!("leader node {leader} did not answer: {e}"));
                    continue;
                }
            };
            for g in groups {
                let theirs = status
                    .groups
                    .iter()
                    .find(|s| s.group == g.group && s.leader == leader);
                match theirs.and_then(|s| s.follower_lag.get(&me).copied()) {
                    Some(lag) if lag <= READY_LAG => {}
                    Some(lag) => reasons.push(format!(
                        "{}: {lag} entries behind node {leader}",
                        crate::api::shard_label(g.group)
                    )),
                    None => reasons.push(format!(
                        "{}: node {leader} does not report this replica",
                        crate::api::shard_label(g.group)
                    )),
                }
            }
        }
        ReadyReply {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

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
            if h.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == node_id)
            {
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

    /// On the meta leader: removes a removed node from the meta group's membership.
    pub async fn drop_meta_learner(&self, node_id: u64) {
        let Ok(h) = self.leading(META_GROUP) else {
            return;
        };
        let membership = h
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        if membership.get_node(&node_id).is_none() || membership.voter_ids().any(|v| v == node_id) {
            return;
        }
        let change = openraft::ChangeMembers::RemoveNodes(std::iter::once(node_id).collect());
        if let Err(e) = h.raft.change_membership(change, false).await {
            tracing::warn!(node = node_id, error = %e, "drop meta learner");
        }
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
        let (mut nodes, mut shards) = placement_input(&meta);
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

pub fn placement_state(s: NodeState) -> placement::NodeState {
    match s {
        NodeState::Active => placement::NodeState::Active,
        NodeState::Draining => placement::NodeState::Draining,
        NodeState::Removed => placement::NodeState::Removed,
    }
}

/// The meta state in the placement planner's terms.
pub fn placement_input(meta: &MetaSnapshot) -> (Vec<NodeDesc>, Vec<placement::ShardReplicas>) {
    let nodes = meta
        .nodes
        .iter()
        .map(|n| NodeDesc {
            id: n.node_id,
            dc: n.dc.clone(),
            state: placement_state(n.state),
        })
        .collect();
    let shards = meta
        .shards
        .iter()
        .map(|s| placement::ShardReplicas {
            shard: s.shard,
            voters: s.voters.clone(),
            learners: s.learners.clone(),
        })
        .collect();
    (nodes, shards)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let version = self.node.init_cluster(req.into_inner()).await?;
        Ok(Response::new(InitReply {
            shard_map_version: version,
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let id = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node: missing"))?;
        if id.node_id == 0 || id.dc.is_empty() || id.raft_addr.is_empty() {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                "node: needs node_id, dc and raft_addr",
            )
            .into());
        }
        let version = self
            .node
            .propose_meta(MetaCommand::RegisterNode(record(&id)))
            .await?;
        Ok(Response::new(JoinReply {
            shard_map_version: version,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.node.status()))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        let r = req.into_inner();
        let leader = self.node.transfer_leader(r.group, r.to_node).await?;
        Ok(Response::new(TransferLeaderReply { leader }))
    }

    async fn move_replica(
        &self,
        req: Request<MoveReplicaRequest>,
    ) -> Result<Response<MoveReplicaReply>, Status> {
        let r = req.into_inner();
        let voters = self
            .node
            .move_replica(r.group, r.from_node, r.to_node)
            .await?;
        Ok(Response::new(MoveReplicaReply { voters }))
    }

    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        let r = req.into_inner();
        self.node
            .campaign(r.group, std::time::Duration::from_millis(r.delay_ms))?;
        Ok(Response::new(CampaignReply {}))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let node_id = req.into_inner().node_id;
        self.node.check_drain(node_id)?;
        self.node
            .propose_meta(MetaCommand::SetNodeState {
                node_id,
                state: NodeState::Draining,
            })
            .await?;
        Ok(Response::new(DrainReply {
            state: NodeState::Draining.as_str().into(),
        }))
    }

    async fn remove(&self, req: Request<RemoveRequest>) -> Result<Response<RemoveReply>, Status> {
        let node_id = req.into_inner().node_id;
        self.node.remove_node(node_id).await?;
        Ok(Response::new(RemoveReply {}))
    }

    async fn safe_to_stop(
        &self,
        req: Request<SafeToStopRequest>,
    ) -> Result<Response<SafeToStopReply>, Status> {
        Ok(Response::new(self.node.safe_to_stop(&req.into_inner())?))
    }

    async fn ready(&self, _: Request<ReadyRequest>) -> Result<Response<ReadyReply>, Status> {
        Ok(Response::new(self.node.ready().await))
    }

    async fn group_digests(
        &self,
        _: Request<GroupDigestsRequest>,
    ) -> Result<Response<GroupDigestsReply>, Status> {
        let mut groups = Vec::new();
        for h in self.node.groups() {
            let (applied_index, digest) = h.sm.digest().map_err(NodeError::from)?;
            let last_log_index = h.raft.metrics().borrow().last_log_index.unwrap_or(0);
            groups.push(GroupDigest {
                group: h.group,
                applied_index,
                digest,
                last_log_index,
            });
        }
        Ok(Response::new(GroupDigestsReply {
            node_id: self.node.id(),
            groups,
        }))
    }

    async fn set_failpoint(
        &self,
        req: Request<SetFailpointRequest>,
    ) -> Result<Response<SetFailpointReply>, Status> {
        let r = req.into_inner();
        bongsu_raft_store::failpoints::set(&r.name, r.enabled)
            .map_err(|e| NodeError::rejected(ErrorCode::FailedPrecondition, e))?;
        tracing::warn!(failpoint = %r.name, enabled = r.enabled, "failpoint switched");
        Ok(Response::new(SetFailpointReply {}))
    }

    async fn set_faults(
        &self,
        req: Request<SetFaultsRequest>,
    ) -> Result<Response<SetFaultsReply>, Status> {
        let r = req.into_inner();
        self.node.faults.set(&r.rules)?;
        tracing::warn!(rules = r.rules.len(), "network fault rules replaced");
        Ok(Response::new(SetFaultsReply {}))
    }

    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<NodeIdentity>, Status> {
        Ok(Response::new(identity(&self.node)))
    }

    async fn meta_propose(
        &self,
        req: Request<MetaProposeRequest>,
    ) -> Result<Response<MetaProposeReply>, Status> {
        let cmd: MetaCommand = postcard::from_bytes(&req.into_inner().command).map_err(|e| {
            NodeError::rejected(ErrorCode::InvalidArgument, format!("command: {e}"))
        })?;
        let version = self.node.propose_meta(cmd).await?;
        Ok(Response::new(MetaProposeReply { version }))
    }

    async fn deliver(
        &self,
        req: Request<DeliverRequest>,
    ) -> Result<Response<DeliverReply>, Status> {
        let req = req.into_inner();
        let bad = |e: bongsu_proto::ModelError| NodeError::rejected(e.code, e.to_string());
        let changes = req
            .deliveries
            .iter()
            .map(|d| {
                Ok(crate::outbox::UserConvChange {
                    user: bongsu_proto::model::UserId::try_from(d.user.as_slice()).map_err(bad)?,
                    conv: bongsu_proto::model::ConvId::try_from(d.conv_id.as_slice())
                        .map_err(bad)?,
                    joined: d.joined,
                    version: d.version,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.node.apply_deliveries(req.shard, &changes).await?;
        Ok(Response::new(DeliverReply {}))
    }
}
