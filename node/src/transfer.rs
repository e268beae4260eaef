//! Moving leadership and replicas of one group: leader transfer and replica moves, both run
//! on the group's leader (requests that reach another node are forwarded there).
//!
//! openraft 0.9 has no leader-transfer call, and its followers refuse to vote while their
//! leader lease (`election_max_ms` since they last heard from the leader) runs. So a transfer
//! is: the leader stops heartbeats and refuses new writes for the group (clients retry:
//! sends are idempotent), waits until the target holds its whole log, and asks the target to
//! campaign; the leader steps down when it grants the target's vote. A leader's own lease is
//! set only when it is elected, so a leader of some standing grants at once, and with up to
//! three voters the target campaigns at once; with more, once the other followers' leases
//! have run out. Drains and leader returns move one group at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use bongsu_proto::internal::{CampaignRequest, MoveReplicaRequest, TransferLeaderRequest};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::{GroupId, NodeId, NodeInfo};
use openraft::{RaftMetrics, ServerState};

use crate::cluster::{admin_client, info_of};
use crate::errors::{NodeError, Result};
use crate::node::{GroupHandle, Node};

/// A target further behind than this is not handed leadership.
const MAX_TRANSFER_LAG: u64 = 64;
/// How long a learner may take to catch up before a move gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// One leader transfer under way.
struct Handover {
    group: GroupId,
    to: NodeId,
    /// The target's address.
    info: NodeInfo,
    /// How many voters the group has.
    voters: usize,
    /// How long a follower refuses to vote after hearing from its leader, with a margin.
    lease: Duration,
    /// When heartbeats stopped.
    stopped: tokio::time::Instant,
    /// The term this node leads in.
    term: u64,
}

/// The target of a transfer, checked: a voter, caught up within [`MAX_TRANSFER_LAG`], with an
/// address. Returns its address and the group's voter count.
fn transfer_target(
    m: &RaftMetrics<NodeId, NodeInfo>,
    group: GroupId,
    to: NodeId,
) -> Result<(NodeInfo, usize)> {
    let membership = m.membership_config.membership();
    if !membership.voter_ids().any(|v| v == to) {
        return Err(NodeError::rejected(
            ErrorCode::FailedPrecondition,
            format!("node {to} is not a voter of group {group}"),
        ));
    }
    let last = m.last_log_index.unwrap_or(0);
    let matched = matched_index(m, to).unwrap_or(0);
    if last.saturating_sub(matched) > MAX_TRANSFER_LAG {
        return Err(NodeError::rejected(
            ErrorCode::FailedPrecondition,
            format!(
                "node {to} is {} entries behind in group {group}",
                last - matched
            ),
        ));
    }
    let Some(info) = membership.get_node(&to).cloned() else {
        return Err(NodeError::rejected(
            ErrorCode::UnknownNode,
            format!("no address for node {to}"),
        ));
    };
    Ok((info, membership.voter_ids().count()))
}

/// The last log index the leader knows `node` holds.
fn matched_index(m: &RaftMetrics<NodeId, NodeInfo>, node: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&node).cloned())
        .flatten()
        .map(|l| l.index)
}

/// The target campaigns only once it holds every entry: a candidate with a shorter log is
/// refused, and with its own timer off (it follows a live leader) it would not try again, so
/// writes would pause until the transfer gave up. New writes are refused meanwhile, so the
/// leader's last index stops moving; the wait overlaps the lease the target must wait out
/// anyway.
/// While it lives, a group on this node takes no new writes and sends no heartbeats (the
/// first phase of a transfer). Dropped on every way out of the transfer, an error, a panic or
/// the admin call being cancelled (which drops the transfer's future mid-way), it turns both
/// back on, so a group is never stranded as "transferring".
struct Transferring<'a> {
    node: &'a Node,
    h: &'a GroupHandle,
}

impl<'a> Transferring<'a> {
    fn start(node: &'a Node, h: &'a GroupHandle) -> Self {
        node.set_transferring(h.group, true);
        h.raft.runtime_config().heartbeat(false);
        Self { node, h }
    }
}

impl Drop for Transferring<'_> {
    fn drop(&mut self) {
        self.h.raft.runtime_config().heartbeat(true);
        self.node.set_transferring(self.h.group, false);
    }
}

async fn wait_target_holds_log(metrics: &mut Metrics, t: &Handover) -> Result<()> {
    loop {
        let caught_up = {
            let m = metrics.borrow_and_update();
            m.state != ServerState::Leader || matched_index(&m, t.to) >= m.last_log_index
        };
        if caught_up {
            return Ok(());
        }
        if tokio::time::timeout_at(t.stopped + t.lease * 2, metrics.changed())
            .await
            .is_err()
        {
            return Err(NodeError::Unavailable(format!(
                "group {}: node {} did not catch up for the transfer",
                t.group, t.to
            )));
        }
    }
}

/// Waits until this node follows a new leader (the target, normally), and gives up at once if
/// this node is elected again instead.
async fn wait_takeover(metrics: &mut Metrics, t: &Handover) -> Result<NodeId> {
    let deadline = tokio::time::Instant::now() + t.lease * 5;
    loop {
        let (state, leader, now) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_leader, m.current_term)
        };
        if state != ServerState::Leader {
            if let Some(l) = leader {
                return Ok(l);
            }
        } else if now > t.term {
            // The target's election failed and this node was elected again: writes must not
            // wait out the deadline below.
            return Err(NodeError::Unavailable(format!(
                "group {}: node {} did not take over; this node leads again",
                t.group, t.to
            )));
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(NodeError::Unavailable(format!(
                    "group {}: node {} did not take over",
                    t.group, t.to
                )))
            }
        }
    }
}

/// Swaps voter `from` for `to` (a caught-up learner) in one membership change; returns the new
/// voters.
async fn swap_voter(h: &GroupHandle, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
    let group = h.group;
    // The voter set may have changed while the learner caught up (another move): start from
    // it again.
    let mut voters: BTreeSet<NodeId> = h.membership().voter_ids().collect();
    if !voters.contains(&from) {
        return Err(NodeError::rejected(
            ErrorCode::StaleEpoch,
            format!("group {group}: node {from} left meanwhile"),
        ));
    }
    voters.remove(&from);
    voters.insert(to);
    h.raft
        .change_membership(voters.clone(), false)
        .await
        .map_err(|e| NodeError::Unavailable(format!("group {group}: change membership: {e}")))?;
    Ok(voters.into_iter().collect())
}

/// A group's metrics as openraft publishes them.
type Metrics = tokio::sync::watch::Receiver<RaftMetrics<NodeId, NodeInfo>>;

impl Node {
    /// Where to forward a request for `group`: its leader if this node knows it, else a live
    /// replica from the shard map, which does.
    fn leader_admin(&self, group: GroupId) -> Result<String> {
        if let Some((id, info)) = self.leader_of(group) {
            if id != self.id() {
                return Ok(info.admin_addr);
            }
        }
        if self.group(group).is_none() {
            let meta = self.meta();
            let shard = bongsu_raft_store::meta::group_shard(group)
                .and_then(|s| meta.shards.get(s as usize));
            if let Some(s) = shard {
                let replica = s
                    .voters
                    .iter()
                    .find(|v| **v != self.id() && self.is_live(**v));
                if let Some(n) = replica.and_then(|v| meta.node(*v)) {
                    return Ok(n.admin_addr.clone());
                }
            }
        }
        Err(NodeError::Unavailable(format!(
            "group {group} has no leader to forward to"
        )))
    }

    /// Hands leadership of `group` to voter `to`; returns the new leader. Phases: check the
    /// target, stop heartbeats and new writes, then [`Node::hand_over`]; heartbeats and
    /// writes resume whatever happened, a cancelled call included ([`Transferring`]).
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<NodeId> {
        let h = match self.leading(group) {
            Ok(h) => h,
            Err(_) => return self.forward_transfer(group, to).await,
        };
        if to == self.id() {
            return Ok(to);
        }
        let m = h.raft.metrics().borrow().clone();
        let (info, voters) = transfer_target(&m, group, to)?;
        let handover = Handover {
            group,
            to,
            info,
            voters,
            lease: Duration::from_millis(self.cfg.timing.election_max_ms + 50),
            stopped: tokio::time::Instant::now(),
            term: m.current_term,
        };
        let result = {
            let _stopped = Transferring::start(self, &h);
            self.hand_over(&h, &handover).await
        };
        let leader = result?;
        tracing::info!(
            group,
            from = self.id(),
            to = leader,
            "leadership transferred"
        );
        Ok(leader)
    }

    async fn forward_transfer(&self, group: GroupId, to: NodeId) -> Result<NodeId> {
        let addr = self.leader_admin(group)?;
        let r = admin_client(&self.security, &addr)
            .await?
            .transfer_leader(TransferLeaderRequest { group, to_node: to })
            .await
            .map_err(|s| NodeError::from_status(&s))?;
        Ok(r.into_inner().leader)
    }

    /// With heartbeats and new writes stopped: waits until every proposal is in the log and
    /// the target holds all of it, asks the target to campaign, and waits for it to win.
    async fn hand_over(&self, h: &GroupHandle, t: &Handover) -> Result<NodeId> {
        let group = t.group;
        // A write that passed the check just before the flag went up may still be on its way
        // into the log. openraft's core takes requests in order: once this one is answered,
        // every proposal sent before it is in the log, and the last index below is final.
        tokio::time::sleep(Duration::from_millis(1)).await;
        h.raft
            .with_raft_state(|_| ())
            .await
            .map_err(|e| NodeError::Raft(format!("group {group}: {e}")))?;
        let mut metrics = h.raft.metrics();
        wait_target_holds_log(&mut metrics, t).await?;
        // openraft 0.9 sets a leader's own lease only when it is elected, so once it has led
        // for a lease it grants a vote to a candidate with its whole log at once. With up to
        // three voters, that vote and the target's own are a majority: the target need not
        // wait for the other followers' leases to run out.
        let quick = t.voters <= 3 && self.leading_for(group).is_some_and(|d| d > t.lease);
        let delay = if quick {
            Duration::ZERO
        } else {
            t.lease.saturating_sub(t.stopped.elapsed())
        };
        admin_client(&self.security, &t.info.admin_addr)
            .await?
            .campaign(CampaignRequest {
                group,
                delay_ms: delay.as_millis() as u64,
            })
            .await
            .map_err(|s| NodeError::from_status(&s))?;
        wait_takeover(&mut metrics, t).await
    }

    /// Starts an election for `group` after `delay` (run on a transfer's target).
    pub fn campaign(&self, group: GroupId, delay: Duration) -> Result<()> {
        let h = self.group(group).ok_or_else(|| {
            NodeError::rejected(
                ErrorCode::FailedPrecondition,
                format!("group {group} is not hosted here"),
            )
        })?;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = h.raft.trigger().elect().await {
                tracing::warn!(group = h.group, error = %e, "campaign");
            }
        });
        Ok(())
    }

    /// Replaces voter `from` of `group` by `to`: `to` joins as a learner, catches up, and one
    /// membership change swaps the two, so the group never has fewer than its voters.
    pub async fn move_replica(
        &self,
        group: GroupId,
        from: NodeId,
        to: NodeId,
    ) -> Result<Vec<NodeId>> {
        let h = match self.leading(group) {
            Ok(h) => h,
            Err(_) => return self.forward_move(group, from, to).await,
        };
        let membership = h.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&to) && !voters.contains(&from) {
            return Ok(voters.into_iter().collect()); // done before
        }
        if !voters.contains(&from) {
            return Err(NodeError::rejected(
                ErrorCode::FailedPrecondition,
                format!("node {from} is not a voter of group {group}"),
            ));
        }
        if from == self.id() {
            // A leader does not remove itself: hand over first, then let the new leader move.
            let other = voters
                .iter()
                .copied()
                .find(|v| *v != from && *v != to && self.is_live(*v));
            let other = other.ok_or_else(|| {
                NodeError::Unavailable(format!("group {group}: no live voter to take over"))
            })?;
            self.transfer_leader(group, other).await?;
            return self.forward_move(group, from, to).await;
        }
        self.add_caught_up_learner(&h, to).await?;
        let voters = swap_voter(&h, from, to).await?;
        tracing::info!(group, from, to, "replica moved");
        Ok(voters)
    }

    /// Adds `to` to the group as a learner and waits until it holds the log; takes it out again
    /// if it does not get there.
    async fn add_caught_up_learner(&self, h: &GroupHandle, to: NodeId) -> Result<()> {
        let group = h.group;
        let info: NodeInfo = self.meta().node(to).map(info_of).ok_or_else(|| {
            NodeError::rejected(
                ErrorCode::UnknownNode,
                format!("node {to} is not registered"),
            )
        })?;
        if !self.is_live(to) {
            return Err(NodeError::Unavailable(format!(
                "group {group}: node {to} is not live"
            )));
        }
        h.raft
            .add_learner(to, info, false)
            .await
            .map_err(|e| NodeError::Unavailable(format!("group {group}: add learner {to}: {e}")))?;
        // openraft's own "blocking" add only waits until the learner is within 5,000 entries,
        // which an empty node is while the group is young: wait for the real thing.
        if let Err(e) = self.wait_caught_up(h, to).await {
            // Leave no half-added learner behind for the leader to keep feeding.
            let drop = openraft::ChangeMembers::RemoveNodes(std::iter::once(to).collect());
            if let Err(e2) = h.raft.change_membership(drop, false).await {
                tracing::warn!(group, node = to, error = %e2, "remove learner after a failed move");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits until the leader has replicated its whole log (within a few entries) to `node`,
    /// which must stay live; a new voter must hold the data before it counts toward a quorum.
    pub async fn wait_caught_up(&self, h: &GroupHandle, node: NodeId) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        let mut metrics = h.raft.metrics();
        loop {
            let (last, matched, leading) = {
                let m = metrics.borrow_and_update();
                (
                    m.last_log_index.unwrap_or(0),
                    matched_index(&m, node),
                    m.state == ServerState::Leader,
                )
            };
            if !leading {
                return Err(NodeError::Unavailable(format!(
                    "group {}: lost leadership while {node} caught up",
                    h.group
                )));
            }
            if matched.is_some_and(|m| last.saturating_sub(m) <= MAX_TRANSFER_LAG) {
                return Ok(());
            }
            if !self.is_live(node) {
                return Err(NodeError::Unavailable(format!(
                    "group {}: node {node} went down while catching up",
                    h.group
                )));
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(NodeError::Unavailable(format!("group {} stopped", h.group)))
                }
                Err(_) => {
                    return Err(NodeError::Unavailable(format!(
                        "group {}: node {node} did not catch up",
                        h.group
                    )))
                }
            }
        }
    }

    async fn forward_move(&self, group: GroupId, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
        // The leader may have just changed; give the group a moment to settle.
        for _ in 0..20 {
            if self.leading(group).is_err() {
                if let Ok(addr) = self.leader_admin(group) {
                    let r = admin_client(&self.security, &addr)
                        .await?
                        .move_replica(MoveReplicaRequest {
                            group,
                            from_node: from,
                            to_node: to,
                        })
                        .await
                        .map_err(|s| NodeError::from_status(&s))?;
                    return Ok(r.into_inner().voters);
                }
            } else {
                return Box::pin(self.move_replica(group, from, to)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(NodeError::Unavailable(format!(
            "group {group} has no leader"
        )))
    }
}
