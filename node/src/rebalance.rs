//! Balancing in the background: the meta leader moves replicas (joins, drains, balance), and
//! every node hands each shard it leads to that shard's preferred leader (`voters[0]`), so
//! leaders spread as placement intends and return to a datacenter that comes back.
//!
//! One step at a time, each step re-planned from the current shard map, every replica move
//! keeping the placement rules (checked by `placement::check` in the tests after every step).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bongsu_proto::internal::StatusRequest;
use bongsu_raft_store::meta::{
    shard_group, MetaCommand, MetaSnapshot, NodeState, ShardRecord, META_GROUP,
};
use bongsu_raft_store::{GroupId, NodeId};

use crate::cluster::admin_client;
use crate::errors::Result;
use crate::node::Node;
use crate::placement::{self, Move};

/// A group whose leadership was just moved is left alone this long.
const TRANSFER_COOLDOWN: Duration = Duration::from_secs(5);

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(preferred_leaders(node.clone()));
    tokio::spawn(rebalancer(node));
}

fn active(meta: &MetaSnapshot, id: NodeId) -> bool {
    meta.node(id).is_some_and(|n| n.state == NodeState::Active)
}

/// Hands leaderships this node holds to where the shard map wants them, one per tick.
async fn preferred_leaders(node: Arc<Node>) {
    let mut last: HashMap<GroupId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let meta = node.meta();
        if meta.config.is_none() {
            continue;
        }
        let mut wanted: Vec<(GroupId, NodeId)> = Vec::new();
        for s in &meta.shards {
            let g = shard_group(s.shard);
            if let (Ok(_), Some(&p)) = (node.leading(g), s.voters.first()) {
                if p != node.id() && node.is_live(p) && active(&meta, p) {
                    wanted.push((g, p));
                }
            }
        }
        // The meta group has no preferred leader, but a draining node gives it away.
        if node.leading(META_GROUP).is_ok() && !active(&meta, node.id()) {
            let h = node.group(META_GROUP);
            let voters: Vec<NodeId> = h
                .map(|h| h.membership().voter_ids().collect())
                .unwrap_or_default();
            if let Some(v) = voters
                .into_iter()
                .find(|v| *v != node.id() && node.is_live(*v) && active(&meta, *v))
            {
                wanted.insert(0, (META_GROUP, v));
            }
        }
        for (g, to) in wanted {
            if last
                .get(&g)
                .is_some_and(|t| t.elapsed() < TRANSFER_COOLDOWN)
            {
                continue;
            }
            last.insert(g, Instant::now());
            match node.transfer_leader(g, to).await {
                Ok(l) => tracing::info!(
                    group = g,
                    leader = l,
                    "moved leadership to its preferred node"
                ),
                Err(e) => tracing::debug!(group = g, to, error = %e, "leadership transfer"),
            }
            break;
        }
    }
}

/// On the meta leader: one rebalancing step per tick.
async fn rebalancer(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if node.leading(META_GROUP).is_err() {
            continue;
        }
        if let Err(e) = step(&node).await {
            tracing::warn!(error = %e, "rebalance step");
        }
    }
}

async fn set_replicas(
    node: &Node,
    s: &ShardRecord,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
) -> Result<u64> {
    node.propose_meta(MetaCommand::SetReplicas {
        shard: s.shard,
        voters,
        learners,
        expected_epoch: s.epoch,
    })
    .await
}

/// The voters of a group as its members report them, from any node that hosts it.
async fn group_voters(
    node: &Node,
    meta: &MetaSnapshot,
    s: &ShardRecord,
) -> Option<BTreeSet<NodeId>> {
    let g = shard_group(s.shard);
    if let Some(h) = node.group(g) {
        return Some(h.membership().voter_ids().collect());
    }
    for id in s.voters.iter().chain(&s.learners) {
        let Some(n) = meta.node(*id) else { continue };
        let Ok(mut c) = admin_client(&node.security, &n.admin_addr).await else {
            continue;
        };
        let Ok(st) = c.status(StatusRequest {}).await else {
            continue;
        };
        if let Some(gs) = st
            .into_inner()
            .groups
            .into_iter()
            .find(|gs| gs.group == g && gs.leader != 0)
        {
            return Some(gs.voters.into_iter().collect());
        }
    }
    None
}

/// Does one thing, if anything needs doing: finish an interrupted move, then move preferred
/// leaderships, then move one replica.
pub async fn step(node: &Node) -> Result<bool> {
    let meta = node.meta();
    let Some(cfg) = meta.config.clone() else {
        return Ok(false);
    };
    if let Some(s) = meta.shards.iter().find(|s| !s.learners.is_empty()) {
        return finish_interrupted_move(node, &meta, s).await;
    }
    if replace_meta_voter(node, &meta).await? {
        return Ok(true);
    }
    let (nodes, shards) = placement::from_meta(&meta);
    if let Some((shard, to)) = placement::preferred_leader_moves(&nodes, &shards)
        .into_iter()
        .next()
    {
        promote_leader(node, &meta.shards[shard as usize], to).await?;
        return Ok(true);
    }
    match placement::plan_move(&nodes, &shards, cfg.replicas) {
        None => Ok(false),
        Some(Move::PromoteLeader { shard, to }) => {
            promote_leader(node, &meta.shards[shard as usize], to).await?;
            Ok(true)
        }
        Some(Move::Replace { shard, from, to }) => {
            if !node.is_live(to) {
                // Not onto a node that does not answer; re-planned next tick.
                return Ok(false);
            }
            move_replica(node, &meta.shards[shard as usize], from, to).await?;
            Ok(true)
        }
    }
}

/// A shard listing learners is a move that an earlier meta leader did not finish: makes the
/// map agree with the group's own membership.
async fn finish_interrupted_move(
    node: &Node,
    meta: &MetaSnapshot,
    s: &ShardRecord,
) -> Result<bool> {
    let Some(actual) = group_voters(node, meta, s).await else {
        return Ok(false);
    };
    let mut voters: Vec<NodeId> = s
        .voters
        .iter()
        .copied()
        .filter(|v| actual.contains(v))
        .collect();
    for v in &actual {
        if !voters.contains(v) {
            // The newcomer takes the rank of the voter it replaced.
            let pos = s
                .voters
                .iter()
                .position(|old| !actual.contains(old))
                .unwrap_or(voters.len());
            voters.insert(pos.min(voters.len()), *v);
        }
    }
    set_replicas(node, s, voters, Vec::new()).await?;
    Ok(true)
}

/// Makes `to` the shard's preferred leader (`voters[0]`).
async fn promote_leader(node: &Node, s: &ShardRecord, to: NodeId) -> Result<()> {
    let mut voters = s.voters.clone();
    voters.retain(|v| *v != to);
    voters.insert(0, to);
    set_replicas(node, s, voters, s.learners.clone()).await?;
    Ok(())
}

/// Moves the shard's replica on `from` to `to`, recording each stage in the map.
async fn move_replica(node: &Node, s: &ShardRecord, from: NodeId, to: NodeId) -> Result<()> {
    let shard = s.shard;
    tracing::info!(shard, from, to, "moving replica");
    // 1. List the newcomer, so it starts the group and can be caught up.
    set_replicas(node, s, s.voters.clone(), vec![to]).await?;
    let listed_epoch = s.epoch + 1;
    // 2. The group's leader adds it, waits for it, and swaps it in.
    let moved = node.move_replica(shard_group(shard), from, to).await;
    // 3. Record the outcome (or, on failure, forget the newcomer).
    // Compare-and-set against the entry written in step 1: if anyone changed the shard since,
    // this fails with STALE_EPOCH and the interrupted-move path reconciles the map with the
    // group's real membership.
    let listed = ShardRecord {
        epoch: listed_epoch,
        ..s.clone()
    };
    match moved {
        Ok(_) => {
            let voters = s
                .voters
                .iter()
                .map(|v| if *v == from { to } else { *v })
                .collect();
            set_replicas(node, &listed, voters, Vec::new()).await?;
        }
        Err(e) => {
            tracing::warn!(shard, from, to, error = %e, "replica move failed; will re-plan");
            set_replicas(node, &listed, s.voters.clone(), Vec::new()).await?;
        }
    }
    Ok(())
}

/// The meta group's voters live on Active nodes too: a voter on a draining or removed node is
/// replaced by a live Active node, of the same datacenter if there is one, else of a
/// datacenter that stays below a majority.
async fn replace_meta_voter(node: &Node, meta: &MetaSnapshot) -> Result<bool> {
    let Ok(h) = node.leading(META_GROUP) else {
        return Ok(false);
    };
    let membership = h.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    // The leader's own voter seat is handled by moving the leadership first.
    let Some(out) = voters
        .iter()
        .copied()
        .find(|v| *v != node.id() && !active(meta, *v))
    else {
        return Ok(false);
    };
    let out_dc = meta.node(out).map(|n| n.dc.clone()).unwrap_or_default();
    let mut per_dc: HashMap<String, usize> = HashMap::new();
    for v in voters.iter().filter(|v| **v != out) {
        if let Some(n) = meta.node(*v) {
            *per_dc.entry(n.dc.clone()).or_default() += 1;
        }
    }
    let cap = voters.len() / 2;
    let mut candidates: Vec<_> = meta
        .nodes
        .iter()
        .filter(|n| {
            n.state == NodeState::Active && !voters.contains(&n.node_id) && node.is_live(n.node_id)
        })
        .filter(|n| per_dc.get(&n.dc).copied().unwrap_or(0) < cap)
        .collect();
    candidates.sort_by_key(|n| (n.dc != out_dc, n.node_id));
    let Some(to) = candidates.first() else {
        return Ok(false);
    };
    tracing::info!(from = out, to = to.node_id, "moving a meta voter");
    h.raft
        .add_learner(to.node_id, crate::cluster::info_of(to), false)
        .await
        .map_err(|e| {
            crate::errors::NodeError::Unavailable(format!("meta: add learner {}: {e}", to.node_id))
        })?;
    node.wait_caught_up(&h, to.node_id).await?;
    let mut next = voters.clone();
    next.remove(&out);
    next.insert(to.node_id);
    h.raft.change_membership(next, true).await.map_err(|e| {
        crate::errors::NodeError::Unavailable(format!("meta: change membership: {e}"))
    })?;
    Ok(true)
}
