//! What operators ask a node: its status, whether it is ready (caught up), and whether
//! stopping a node or a datacenter now is safe.

use std::collections::BTreeMap;

use bongsu_proto::internal::{
    ClusterStatus, GroupStatus, NodeIdentity, NodeLiveness, ReadyReply, SafeToStopReply,
    SafeToStopRequest, ShardMapSummary, StatusRequest,
};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{group_shard, MetaSnapshot};

use crate::cluster::admin_client;
use crate::errors::{NodeError, Result};
use crate::node::{GroupHandle, Node};
use crate::placement;

impl Node {
    /// This node's view: its groups, its peers' liveness, the shard map and the transport's
    /// counters.
    pub fn status(&self) -> ClusterStatus {
        let meta = self.meta();
        let groups = self.groups().iter().map(|h| self.group_status(h)).collect();
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
            map: Some(map_summary(&meta)),
            groups,
            liveness,
            transport: Some(self.transport().stats.to_proto()),
            cluster_version: meta.cluster_version,
            binary_version: bongsu_raft_store::version::BINARY_VERSION,
        }
    }

    /// One group's leader, term, indexes, members and (on its leader) each follower's lag.
    fn group_status(&self, h: &GroupHandle) -> GroupStatus {
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
        GroupStatus {
            group: h.group,
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            voters,
            learners,
            follower_lag,
            transferring: self.is_transferring(h.group),
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
        let (descs, shards) = placement::from_meta(&meta);
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
                    shard_label(g.group),
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

/// The shard map's version, shard count and node registry.
fn map_summary(meta: &MetaSnapshot) -> ShardMapSummary {
    ShardMapSummary {
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
                admitted: meta.incarnations.contains_key(&n.node_id),
                // A member's binary is known only by asking it (Hello).
                binary_version: 0,
            })
            .collect(),
        node_states: meta
            .nodes
            .iter()
            .map(|n| n.state.as_str().to_string())
            .collect(),
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
                reasons.push(format!("{}: no leader known", shard_label(g.group)));
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
            let status = match admin_client(&self.security, &addr).await {
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
                        shard_label(g.group)
                    )),
                    None => reasons.push(format!(
                        "{}: node {leader} does not report this replica",
                        shard_label(g.group)
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

/// Which shard a group id is, for logs and status (`None` for the meta group).
fn shard_label(group: u64) -> String {
    match group_shard(group) {
        Some(s) => format!("shard {s}"),
        None => "meta".to_string(),
    }
}
