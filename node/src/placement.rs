//! Placement: which nodes hold each shard's voters, and the rebalancer's next step.
//!
//! Everything here is a pure function of the node registry and the shard map that the meta
//! group replicates: no IO, no async, no randomness, no hash-map iteration order.
//! Every node that plans from the same meta state therefore plans the same step, and a test can
//! replay a plan step by step.
//!
//! # Rules
//!
//! Architecture invariant 2 ("no single-datacenter dependency") applied to a shard with R voters.
//! [`check`] reports every breach, and every [`Move`] the planner proposes keeps them:
//!
//! - R is odd and at least 3: an even R buys no extra fault tolerance, and R = 1 has none.
//! - A shard has exactly R distinct voters, each a registered node that is not Removed.
//! - No datacenter holds a majority (more than R/2) of a shard's voters, so losing any one
//!   datacenter leaves a quorum. R = 3 means three datacenters; R = 5 over three means 2-2-1.
//! - A shard's voters span at least min(3, R) datacenters.
//! - The map holds shards 0..n, each exactly once.
//!
//! Draining nodes may still hold replicas: that is work for the rebalancer, not a breach.
//!
//! # Balance
//!
//! - Replicas: within a datacenter, Active nodes' replica counts differ by at most 1 (there is
//!   always a legal move inside a datacenter, so the planner can reach this).
//!   Across datacenters the rules usually fix the split (R = 3 over three datacenters gives each
//!   datacenter one replica of every shard, however many nodes it has); the planner still takes
//!   any legal move from a node to one holding two or more fewer.
//! - Preferred leaders (`voters[0]`): as even over datacenters as the shards' voters allow,
//!   because losing a datacenter stalls writes in exactly the shards it led until they elect
//!   again; then as even over nodes as that allows; then the fewest changes from the current
//!   map. With every shard spanning every datacenter (R = 3 or 5 over three), datacenter
//!   counts differ by at most 1. [`preferred_leader_moves`] computes this exactly (a
//!   minimum-cost flow), and [`initial_placement`] hands out maps that already satisfy it.
//!
//! # Moves
//!
//! The node carries out a [`Move::Replace`] as add learner, catch up, promote, remove old.
//! A shard that has learners has such a change in flight, so the planner leaves it alone until
//! the change completes; one membership change per shard at a time.

mod input;

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use input::{from_map, from_meta, node_state};

/// A node's id in the registry of the meta group.
pub type NodeId = u64;

/// Where a node is in its life.
/// Only Active nodes receive replicas or preferred leaderships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Takes replicas and leaderships.
    Active,
    /// Still serves what it holds while the rebalancer moves everything off it.
    Draining,
    /// Gone for good; holding anything is a breach.
    Removed,
}

/// One entry of the node registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesc {
    pub id: NodeId,
    pub dc: String,
    pub state: NodeState,
}

/// The replicas of one shard; `voters[0]` is the shard's preferred leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReplicas {
    pub shard: u32,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ShardReplicas {
    /// Where the shard's leader should be, if the shard has any voter.
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.voters.first().copied()
    }

    /// Whether `id` holds a replica of this shard, as a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// Why no initial placement exists for a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "replication factor {replicas} is not supported: use an odd number of at least 3 \
         (3, 5, 7), so that a quorum survives losing any one datacenter"
    )]
    ReplicationFactor { replicas: u32 },
    #[error("a cluster needs at least 1 shard, got 0")]
    NoShards,
    #[error("node {id} is registered more than once")]
    DuplicateNode { id: NodeId },
    #[error("{active} active node(s) cannot hold {replicas} distinct voters per shard")]
    TooFewNodes { active: usize, replicas: u32 },
    #[error(
        "active nodes span {found} datacenter(s) ({dcs}); at least 3 are needed so that no \
         datacenter holds a majority of a shard"
    )]
    TooFewDatacenters { found: usize, dcs: String },
    #[error(
        "with at most {per_dc} voter(s) per datacenter, the active nodes can hold only \
         {capacity} voters of a shard, but {replicas} are needed; add nodes to the smaller \
         datacenters"
    )]
    DatacenterCapacity {
        replicas: u32,
        per_dc: usize,
        capacity: usize,
    },
}

/// The names of the rules [`check`] enforces, as they appear in [`Violation::rule`].
pub mod rule {
    pub const REPLICATION_FACTOR: &str = "replication-factor";
    pub const DUPLICATE_REGISTRATION: &str = "duplicate-registration";
    pub const SHARD_NUMBERS: &str = "shard-numbers";
    pub const VOTER_COUNT: &str = "voter-count";
    pub const DUPLICATE_NODE: &str = "duplicate-node";
    pub const UNKNOWN_NODE: &str = "unknown-node";
    pub const REMOVED_NODE: &str = "removed-node";
    pub const DC_MAJORITY: &str = "dc-majority";
    pub const DC_SPREAD: &str = "dc-spread";
}

/// One broken rule; `shard` is `None` for rules about the registry or the map as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub shard: Option<u32>,
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            Some(shard) => write!(f, "shard {shard}: {}: {}", self.rule, self.detail),
            None => write!(f, "{}: {}", self.rule, self.detail),
        }
    }
}

/// One step of the rebalancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// `to` takes `from`'s place in the shard: a voter's rank (so a preferred leader stays
    /// first), or a learner's.
    Replace {
        shard: u32,
        from: NodeId,
        to: NodeId,
    },
    /// `to`, already a voter, becomes the shard's preferred leader (`voters[0]`).
    PromoteLeader { shard: u32, to: NodeId },
}

/// The registry as the planners see it: Active nodes get dense indices in id order and the
/// datacenters with an Active node dense indices in name order, so balance bookkeeping is
/// plain vectors and every iteration order is fixed.
struct Topology<'a> {
    /// Every registered node; the first registration of a duplicated id wins.
    registered: BTreeMap<NodeId, &'a NodeDesc>,
    duplicates: Vec<NodeId>,
    /// Active node ids, ascending.
    active: Vec<NodeId>,
    index: BTreeMap<NodeId, usize>,
    /// The datacenter index of each Active node.
    dc_of: Vec<usize>,
    /// Datacenters with at least one Active node, ascending.
    dcs: Vec<&'a str>,
    /// The Active nodes of each datacenter, ascending.
    members: Vec<Vec<usize>>,
}

impl<'a> Topology<'a> {
    fn new(nodes: &'a [NodeDesc]) -> Self {
        let mut registered: BTreeMap<NodeId, &'a NodeDesc> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        for node in nodes {
            match registered.entry(node.id) {
                Entry::Occupied(_) => {
                    duplicates.insert(node.id);
                }
                Entry::Vacant(slot) => {
                    slot.insert(node);
                }
            }
        }
        let active_nodes: Vec<&NodeDesc> = registered
            .values()
            .copied()
            .filter(|n| n.state == NodeState::Active)
            .collect();
        let dcs: Vec<&str> = active_nodes
            .iter()
            .map(|n| n.dc.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut members = vec![Vec::new(); dcs.len()];
        let mut dc_of = Vec::with_capacity(active_nodes.len());
        for (i, node) in active_nodes.iter().enumerate() {
            let dc = dcs
                .binary_search(&node.dc.as_str())
                .expect("dcs was built from the datacenters of the active nodes");
            dc_of.push(dc);
            members[dc].push(i);
        }
        let active: Vec<NodeId> = active_nodes.iter().map(|n| n.id).collect();
        let index = active.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        Topology {
            registered,
            duplicates: duplicates.into_iter().collect(),
            active,
            index,
            dc_of,
            dcs,
            members,
        }
    }

    fn dc_name(&self, id: NodeId) -> Option<&'a str> {
        self.registered.get(&id).map(|n| n.dc.as_str())
    }

    fn state(&self, id: NodeId) -> Option<NodeState> {
        self.registered.get(&id).map(|n| n.state)
    }

    fn active_index(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).copied()
    }
}

fn replication_factor_ok(replicas: u32) -> bool {
    replicas >= 3 && replicas % 2 == 1
}

/// The most voters of one shard a datacenter may hold: a majority would make it a single
/// point of failure.
fn max_per_dc(voters: usize) -> usize {
    voters / 2
}

/// Places `shards` shards of `replicas` voters each on the Active nodes.
///
/// Per shard, datacenters take slots one at a time, least loaded per node first (within the
/// per-datacenter limit), and inside a datacenter the node with the fewest replicas takes
/// the slot; so a datacenter's replicas go round-robin over its nodes.
/// Ties go to the node that has shared the fewest shards with the shard's other voters; a
/// plain round-robin in every datacenter at once would make copysets ({1, 3, 5} and
/// {2, 4, 6} on 3 x 2 nodes), and a drained node's leaderships could then only go to the two
/// nodes of its own copyset.
/// Preferred leaders are then balanced exactly as [`preferred_leader_moves`] would, so a fresh
/// map needs no leader moves.
pub fn initial_placement(
    nodes: &[NodeDesc],
    shards: u32,
    replicas: u32,
) -> Result<Vec<ShardReplicas>, PlacementError> {
    let topo = Topology::new(nodes);
    let per_dc = check_placeable(&topo, shards, replicas)?;
    let r = replicas as usize;
    let mut loads = Loads::new(&topo);
    let mut map = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let slots = loads.datacenter_slots(&topo, r, per_dc);
        let (voters, lead_dc) = loads.pick_voters(&topo, &slots);
        loads.node_leaders[voters[0]] += 1;
        loads.dc_leaders[lead_dc] += 1;
        map.push(ShardReplicas {
            shard,
            voters: voters.iter().map(|&v| topo.active[v]).collect(),
            learners: Vec::new(),
        });
    }

    let leaders = balance_leaders(&topo, &map);
    for (entry, leader) in map.iter_mut().zip(leaders) {
        let leader = leader.map(|l| topo.active[l]);
        entry.voters.sort_by_key(|&v| (Some(v) != leader, v));
    }
    Ok(map)
}

/// Whether `shards` shards of `replicas` voters can be placed on these nodes at all; returns
/// the most voters one datacenter may hold.
fn check_placeable(topo: &Topology, shards: u32, replicas: u32) -> Result<usize, PlacementError> {
    if !replication_factor_ok(replicas) {
        return Err(PlacementError::ReplicationFactor { replicas });
    }
    if shards == 0 {
        return Err(PlacementError::NoShards);
    }
    if let Some(&id) = topo.duplicates.first() {
        return Err(PlacementError::DuplicateNode { id });
    }
    let r = replicas as usize;
    if topo.active.len() < r {
        return Err(PlacementError::TooFewNodes {
            active: topo.active.len(),
            replicas,
        });
    }
    if topo.dcs.len() < 3 {
        return Err(PlacementError::TooFewDatacenters {
            found: topo.dcs.len(),
            dcs: topo.dcs.join(", "),
        });
    }
    let per_dc = max_per_dc(r);
    let capacity: usize = topo.members.iter().map(|m| m.len().min(per_dc)).sum();
    if capacity < r {
        return Err(PlacementError::DatacenterCapacity {
            replicas,
            per_dc,
            capacity,
        });
    }

    Ok(per_dc)
}

/// What initial placement has handed out so far: replicas and preferred leaders per node and
/// per datacenter, and how many shards each pair of nodes holds together.
struct Loads {
    node_replicas: Vec<usize>,
    node_leaders: Vec<usize>,
    dc_replicas: Vec<usize>,
    dc_leaders: Vec<usize>,
    together: Vec<Vec<usize>>,
}

impl Loads {
    fn new(topo: &Topology) -> Self {
        Self {
            node_replicas: vec![0usize; topo.active.len()],
            node_leaders: vec![0usize; topo.active.len()],
            dc_replicas: vec![0usize; topo.dcs.len()],
            dc_leaders: vec![0usize; topo.dcs.len()],
            together: vec![vec![0usize; topo.active.len()]; topo.active.len()],
        }
    }

    /// How many of a shard's `r` voters each datacenter gets: each slot to the datacenter with
    /// the fewest replicas for its size, within the per-datacenter limit.
    fn datacenter_slots(&mut self, topo: &Topology, r: usize, per_dc: usize) -> Vec<usize> {
        // Comparing load/size as cross products keeps it in integers. Every pick uses one unit
        // of the capacity checked by `check_placeable`, so a slot is always left.
        let mut slots = vec![0usize; topo.dcs.len()];
        for _ in 0..r {
            let dc = (0..topo.dcs.len())
                .filter(|&d| slots[d] < per_dc.min(topo.members[d].len()))
                .min_by(|&a, &b| {
                    let (sa, sb) = (topo.members[a].len(), topo.members[b].len());
                    (self.dc_replicas[a] * sb)
                        .cmp(&(self.dc_replicas[b] * sa))
                        .then(a.cmp(&b))
                })
                .expect("per-datacenter capacity was checked to cover every slot");
            slots[dc] += 1;
            self.dc_replicas[dc] += 1;
        }
        slots
    }

    /// The shard's voters (indexes into `topo.active`), the preferred leader first, and the
    /// datacenter that leads.
    fn pick_voters(&mut self, topo: &Topology, slots: &[usize]) -> (Vec<usize>, usize) {
        // The datacenter with the fewest leaders leads; its least-loaded node takes the lead.
        let lead_dc = (0..topo.dcs.len())
            .filter(|&d| slots[d] > 0)
            .min_by_key(|&d| (self.dc_leaders[d], d))
            .expect("a shard has at least 3 slots");
        let mut voters: Vec<usize> = Vec::with_capacity(slots.iter().sum());
        for dc in std::iter::once(lead_dc).chain(0..topo.dcs.len()) {
            let want = if dc == lead_dc && voters.is_empty() {
                1
            } else {
                slots[dc]
            };
            let have = voters.iter().filter(|&&v| topo.dc_of[v] == dc).count();
            for _ in have..want {
                // Among the least-loaded nodes, the one that has shared the fewest shards with
                // the voters chosen so far: shards then mix over all node combinations, so a
                // node that fails or drains hands its leaderships and replicas to many peers.
                let node = topo.members[dc]
                    .iter()
                    .copied()
                    .filter(|n| !voters.contains(n))
                    .min_by_key(|&n| {
                        let shared: usize = voters.iter().map(|&v| self.together[v][n]).sum();
                        (self.node_replicas[n], shared, self.node_leaders[n], n)
                    })
                    .expect("slots never exceed the datacenter's node count");
                self.node_replicas[node] += 1;
                for &v in &voters {
                    self.together[v][node] += 1;
                    self.together[node][v] += 1;
                }
                voters.push(node);
            }
        }
        (voters, lead_dc)
    }
}

/// Every rule the registry and shard map break, one entry per breach, in map order.
pub fn check(nodes: &[NodeDesc], shards: &[ShardReplicas], replicas: u32) -> Vec<Violation> {
    let topo = Topology::new(nodes);
    let mut out = Vec::new();
    let whole = |rule, detail| Violation {
        shard: None,
        rule,
        detail,
    };
    for id in &topo.duplicates {
        out.push(whole(
            rule::DUPLICATE_REGISTRATION,
            format!("node {id} is registered more than once"),
        ));
    }
    if !replication_factor_ok(replicas) {
        out.push(whole(
            rule::REPLICATION_FACTOR,
            format!("replication factor {replicas} is not an odd number of at least 3"),
        ));
    }
    check_numbering(shards, &mut out);
    for entry in shards {
        check_shard(&topo, entry, replicas, &mut out);
    }
    out
}

fn check_numbering(shards: &[ShardReplicas], out: &mut Vec<Violation>) {
    let n = shards.len();
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for entry in shards {
        *seen.entry(entry.shard).or_default() += 1;
    }
    let mut push = |shard, detail| {
        out.push(Violation {
            shard: Some(shard),
            rule: rule::SHARD_NUMBERS,
            detail,
        });
    };
    for (&shard, &times) in &seen {
        if shard as usize >= n {
            push(
                shard,
                format!("shard number {shard} is outside 0..{n} (the map has {n} entries)"),
            );
        }
        if times > 1 {
            push(
                shard,
                format!("shard {shard} appears {times} times in the map"),
            );
        }
    }
    for shard in 0..u32::try_from(n).unwrap_or(u32::MAX) {
        if !seen.contains_key(&shard) {
            push(
                shard,
                format!("shard {shard} is missing from a map of {n} entries"),
            );
        }
    }
}

fn check_shard(
    topo: &Topology<'_>,
    entry: &ShardReplicas,
    replicas: u32,
    out: &mut Vec<Violation>,
) {
    let mut push = |rule, detail| {
        out.push(Violation {
            shard: Some(entry.shard),
            rule,
            detail,
        })
    };
    if entry.voters.len() != replicas as usize {
        push(
            rule::VOTER_COUNT,
            format!("has {} voters, expected {replicas}", entry.voters.len()),
        );
    }
    let voters = tally(&entry.voters);
    let learners = tally(&entry.learners);
    for (role, ids) in [("voters", &voters), ("learners", &learners)] {
        for (id, times) in ids.iter().filter(|(_, &t)| t > 1) {
            push(
                rule::DUPLICATE_NODE,
                format!("node {id} is listed {times} times among {role}"),
            );
        }
    }
    for id in learners.keys().filter(|id| voters.contains_key(id)) {
        push(
            rule::DUPLICATE_NODE,
            format!("node {id} is both a voter and a learner"),
        );
    }
    for (role, ids) in [("voter", &voters), ("learner", &learners)] {
        for &id in ids.keys() {
            match topo.state(id) {
                None => push(
                    rule::UNKNOWN_NODE,
                    format!("{role} {id} is not a registered node"),
                ),
                Some(NodeState::Removed) => {
                    push(rule::REMOVED_NODE, format!("{role} {id} is Removed"))
                }
                Some(_) => {}
            }
        }
    }
    for (rule, detail) in dc_problems(topo, &entry.voters, replicas) {
        push(rule, detail);
    }
}

fn tally(ids: &[NodeId]) -> BTreeMap<NodeId, usize> {
    let mut counts = BTreeMap::new();
    for &id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// The distinct voters of a shard, grouped by datacenter, and how many distinct voters there
/// are. Unregistered voters have no datacenter; [`check`] reports them on their own.
fn voters_by_dc<'a>(
    topo: &Topology<'a>,
    voters: &[NodeId],
) -> (usize, BTreeMap<&'a str, Vec<NodeId>>) {
    let distinct: BTreeSet<NodeId> = voters.iter().copied().collect();
    let mut by_dc: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for &id in &distinct {
        if let Some(dc) = topo.dc_name(id) {
            by_dc.entry(dc).or_default().push(id);
        }
    }
    (distinct.len(), by_dc)
}

fn dc_rules_hold(topo: &Topology<'_>, voters: &[NodeId], replicas: u32) -> bool {
    let (n, by_dc) = voters_by_dc(topo, voters);
    by_dc.values().all(|ids| ids.len() <= max_per_dc(n)) && by_dc.len() >= replicas.min(3) as usize
}

fn dc_problems(
    topo: &Topology<'_>,
    voters: &[NodeId],
    replicas: u32,
) -> Vec<(&'static str, String)> {
    let (n, by_dc) = voters_by_dc(topo, voters);
    let mut out = Vec::new();
    for (dc, ids) in by_dc.iter().filter(|(_, ids)| ids.len() > max_per_dc(n)) {
        out.push((
            rule::DC_MAJORITY,
            format!(
                "{dc} holds {} of {n} voters (nodes {}); a datacenter may hold at most {}",
                ids.len(),
                join(ids),
                max_per_dc(n)
            ),
        ));
    }
    let need = replicas.min(3) as usize;
    if by_dc.len() < need {
        let names: Vec<&str> = by_dc.keys().copied().collect();
        out.push((
            rule::DC_SPREAD,
            format!(
                "voters span {} datacenter(s) ({}); at least {need} are required",
                by_dc.len(),
                names.join(", ")
            ),
        ));
    }
    out
}

fn join(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replicas (voters and learners) held by each Active node.
fn replica_load(topo: &Topology<'_>, shards: &[ShardReplicas]) -> Vec<usize> {
    let mut load = vec![0; topo.active.len()];
    for entry in shards {
        let held: BTreeSet<NodeId> = entry
            .voters
            .iter()
            .chain(&entry.learners)
            .copied()
            .collect();
        for i in held.into_iter().filter_map(|id| topo.active_index(id)) {
            load[i] += 1;
        }
    }
    load
}

/// Whether putting `to` in place of `voters[pos]` keeps the datacenter rules.
/// A move onto a node the shard already holds is never legal.
fn keeps_rules(
    topo: &Topology<'_>,
    entry: &ShardReplicas,
    pos: usize,
    to: NodeId,
    replicas: u32,
) -> bool {
    if entry.contains(to) {
        return false;
    }
    let mut voters = entry.voters.clone();
    voters[pos] = to;
    dc_rules_hold(topo, &voters, replicas)
}

/// The rebalancer's next step, or `None` when there is nothing it can improve.
///
/// First every voter on a Draining, Removed or unregistered node moves to an Active node,
/// the same datacenter preferred, then the least loaded.
/// Then, while a legal move takes a replica from a node to one holding at least two fewer, the
/// most loaded node gives one to the least loaded.
/// Each such move lowers the sum of squared loads, so repeating plan-and-apply ends.
/// Both phases move non-leader replicas before preferred leaders, so leadership moves less.
/// Ties break on the lowest shard number, then the lowest node id.
/// Voters a planner cannot move (no Active node keeps the rules) stay put; the caller sees them
/// still held when `None` comes back.
pub fn plan_move(nodes: &[NodeDesc], shards: &[ShardReplicas], replicas: u32) -> Option<Move> {
    let topo = Topology::new(nodes);
    let load = replica_load(&topo, shards);
    let mut movable: Vec<&ShardReplicas> =
        shards.iter().filter(|e| e.learners.is_empty()).collect();
    movable.sort_by_key(|e| e.shard);

    for leader_rank in [false, true] {
        for entry in &movable {
            for (pos, &from) in entry.voters.iter().enumerate() {
                if (pos == 0) != leader_rank || topo.active_index(from).is_some() {
                    continue;
                }
                let from_dc = topo.dc_name(from);
                let target = (0..topo.active.len())
                    .filter(|&c| keeps_rules(&topo, entry, pos, topo.active[c], replicas))
                    .min_by_key(|&c| (Some(topo.dcs[topo.dc_of[c]]) != from_dc, load[c], c));
                if let Some(c) = target {
                    return Some(Move::Replace {
                        shard: entry.shard,
                        from,
                        to: topo.active[c],
                    });
                }
            }
        }
    }

    let mut sources: Vec<usize> = (0..topo.active.len()).collect();
    sources.sort_by_key(|&i| (Reverse(load[i]), i));
    let mut targets = sources.clone();
    targets.sort_by_key(|&i| (load[i], i));
    for &a in &sources {
        for &b in &targets {
            if load[a] < load[b] + 2 {
                break;
            }
            let (from, to) = (topo.active[a], topo.active[b]);
            for leader_rank in [false, true] {
                for entry in &movable {
                    let Some(pos) = entry.voters.iter().position(|&v| v == from) else {
                        continue;
                    };
                    if (pos == 0) == leader_rank && keeps_rules(&topo, entry, pos, to, replicas) {
                        return Some(Move::Replace {
                            shard: entry.shard,
                            from,
                            to,
                        });
                    }
                }
            }
        }
    }
    None
}

/// Preferred-leader changes, as (shard, new `voters[0]`) sorted by shard, that take the
/// map to the nearest leader layout that is as even as possible: every preferred leadership
/// on an Active voter, datacenter counts as even as the shards' voters allow, node counts as
/// even as possible among those, and the fewest changes that get there.
/// Empty when the map is already there.
///
/// The moves may be applied all at once or one at a time with a fresh plan after each: every
/// applied move brings the map exactly one move closer to the nearest even layout, so the
/// plans converge in as many moves as the first plan listed, and a half-applied plan is
/// finished, never undone.
pub fn preferred_leader_moves(nodes: &[NodeDesc], shards: &[ShardReplicas]) -> Vec<(u32, NodeId)> {
    let topo = Topology::new(nodes);
    let leaders = balance_leaders(&topo, shards);
    let mut moves: Vec<(u32, NodeId)> = shards
        .iter()
        .zip(leaders)
        .filter_map(|(entry, leader)| {
            let leader = topo.active[leader?];
            (entry.preferred_leader() != Some(leader)).then_some((entry.shard, leader))
        })
        .collect();
    moves.sort_unstable();
    moves
}

/// The balanced preferred leader (an Active node index) of each shard, `None` for a shard
/// with no Active voter.
///
/// This is a minimum-cost flow: each shard sends one unit to one of its Active voters, each
/// node passes its units to its datacenter. The cost, compared lexicographically, is
/// (sum of squared datacenter counts, sum of squared node counts, shards whose leader
/// changed). Sums of squares are convex, so an assignment is optimal exactly when its
/// residual graph has no negative cycle; this starts from the current leaders (shards led
/// by non-Active nodes take their least-loaded Active voter) and cancels negative cycles
/// until none is left. Each cancellation lowers the cost, so the loop ends.
///
/// Optimal for the first two terms means even "as far as possible" in the strong sense:
/// no other assignment has a lower maximum, or lower sum of squares, per datacenter. The
/// third term picks, among those, the one nearest the current map; that is what makes
/// applying a plan one move at a time converge (see [`preferred_leader_moves`]).
fn balance_leaders(topo: &Topology<'_>, shards: &[ShardReplicas]) -> Vec<Option<usize>> {
    let voters: Vec<Vec<usize>> = shards
        .iter()
        .map(|entry| {
            let mut active: Vec<usize> = Vec::with_capacity(entry.voters.len());
            for i in entry.voters.iter().filter_map(|&id| topo.active_index(id)) {
                if !active.contains(&i) {
                    active.push(i);
                }
            }
            active
        })
        .collect();
    let current: Vec<Option<usize>> = shards
        .iter()
        .map(|e| e.preferred_leader().and_then(|id| topo.active_index(id)))
        .collect();
    let mut leader = current.clone();

    let (mut node_count, mut dc_count) = leader_counts(topo, &leader);
    for (s, candidates) in voters.iter().enumerate() {
        if leader[s].is_some() {
            continue;
        }
        let best = candidates
            .iter()
            .copied()
            .min_by_key(|&v| (dc_count[topo.dc_of[v]], node_count[v], v));
        if let Some(v) = best {
            leader[s] = Some(v);
            node_count[v] += 1;
            dc_count[topo.dc_of[v]] += 1;
        }
    }

    while let Some(cycle) = negative_cycle(topo, &voters, &current, &leader) {
        for (s, to) in cycle {
            leader[s] = Some(to);
        }
    }
    leader
}

fn leader_counts(topo: &Topology<'_>, leader: &[Option<usize>]) -> (Vec<usize>, Vec<usize>) {
    let mut node_count = vec![0; topo.active.len()];
    let mut dc_count = vec![0; topo.dcs.len()];
    for &l in leader.iter().flatten() {
        node_count[l] += 1;
        dc_count[topo.dc_of[l]] += 1;
    }
    (node_count, dc_count)
}

/// (datacenter sum of squares, node sum of squares, changed shards); tuples compare
/// lexicographically, which is the priority order.
type Cost = (i64, i64, i64);

/// An edge of the residual graph; `shard` is the (shard, new leader) it stands for, if any.
struct Arc {
    from: usize,
    to: usize,
    cost: Cost,
    shard: Option<(usize, usize)>,
}

/// A negative cycle of the residual graph of [`balance_leaders`], as the (shard, new leader)
/// steps it takes, or `None` when the assignment is optimal.
///
/// Vertices: Active nodes `0..n`, datacenters `n..n + d`, a sink `n + d`. Arcs: a node gives
/// a shard it leads to another Active voter of it; a node takes one more leadership (node to
/// its datacenter) or gives one up (datacenter to node); a datacenter takes one more (to the
/// sink) or gives one up (from the sink). Count arcs cost the change in the sum of squares.
/// A simple cycle changes every count by at most one, so those marginal costs are exact, and
/// it passes each node once, so it moves each shard at most once.
fn negative_cycle(
    topo: &Topology<'_>,
    voters: &[Vec<usize>],
    current: &[Option<usize>],
    leader: &[Option<usize>],
) -> Option<Vec<(usize, usize)>> {
    let (n, d) = (topo.active.len(), topo.dcs.len());
    let sink = n + d;
    let (node_count, dc_count) = leader_counts(topo, leader);
    let mut arcs = Vec::new();
    for (s, l) in leader.iter().enumerate() {
        let Some(x) = *l else { continue };
        let changed = |v: usize| i64::from(current[s] != Some(v));
        for &y in voters[s].iter().filter(|&&y| y != x) {
            let cost = (0, 0, changed(y) - changed(x));
            arcs.push(Arc {
                from: x,
                to: y,
                cost,
                shard: Some((s, y)),
            });
        }
    }
    // The sum of squares grows by 2c + 1 when a count c goes up and by 1 - 2c when it goes down.
    for (v, &c) in node_count.iter().enumerate() {
        let (c, dc) = (c as i64, n + topo.dc_of[v]);
        arcs.push(Arc {
            from: v,
            to: dc,
            cost: (0, 2 * c + 1, 0),
            shard: None,
        });
        if c > 0 {
            arcs.push(Arc {
                from: dc,
                to: v,
                cost: (0, 1 - 2 * c, 0),
                shard: None,
            });
        }
    }
    for (k, &c) in dc_count.iter().enumerate() {
        let c = c as i64;
        arcs.push(Arc {
            from: n + k,
            to: sink,
            cost: (2 * c + 1, 0, 0),
            shard: None,
        });
        if c > 0 {
            arcs.push(Arc {
                from: sink,
                to: n + k,
                cost: (1 - 2 * c, 0, 0),
                shard: None,
            });
        }
    }

    // Bellman-Ford from a virtual source at distance zero from every vertex: a relaxation in
    // round `vertices` means a negative cycle, found by walking back `vertices` parents.
    let vertices = sink + 1;
    let mut dist: Vec<Cost> = vec![(0, 0, 0); vertices];
    let mut parent: Vec<Option<usize>> = vec![None; vertices];
    let mut relaxed = None;
    for _ in 0..vertices {
        relaxed = None;
        for (i, arc) in arcs.iter().enumerate() {
            let (a, b) = (dist[arc.from], arc.cost);
            let through = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
            if through < dist[arc.to] {
                dist[arc.to] = through;
                parent[arc.to] = Some(i);
                relaxed = Some(arc.to);
            }
        }
        relaxed?;
    }
    // Every vertex on a relaxed path has a parent, so the `?`s below cannot fire.
    let mut v = relaxed?;
    for _ in 0..vertices {
        v = arcs[parent[v]?].from;
    }
    let start = v;
    let mut steps = Vec::new();
    loop {
        let arc = &arcs[parent[v]?];
        steps.extend(arc.shard);
        v = arc.from;
        if v == start {
            return Some(steps);
        }
    }
}

/// Applies one move to a shard map, as the meta group would once the node carried it out.
/// Returns false, changing nothing, when the move does not fit the map (no such shard, `from`
/// not in it, `to` not a voter).
pub fn apply_move(shards: &mut [ShardReplicas], mv: &Move) -> bool {
    match *mv {
        Move::Replace { shard, from, to } => {
            let Some(entry) = shards.iter_mut().find(|e| e.shard == shard) else {
                return false;
            };
            let slot = entry
                .voters
                .iter_mut()
                .chain(entry.learners.iter_mut())
                .find(|id| **id == from);
            match slot {
                Some(slot) => {
                    *slot = to;
                    true
                }
                None => false,
            }
        }
        Move::PromoteLeader { shard, to } => {
            let Some(entry) = shards.iter_mut().find(|e| e.shard == shard) else {
                return false;
            };
            match entry.voters.iter().position(|&v| v == to) {
                Some(pos) => {
                    entry.voters.swap(0, pos);
                    true
                }
                None => false,
            }
        }
    }
}

/// Why stopping `stopping` while `down` are already down would leave a shard without a voter
/// majority: one reason per shard that holds a stopping voter, sorted by shard; empty means
/// safe. Voters on Removed or unregistered nodes count as down.
pub fn safe_to_stop(
    nodes: &[NodeDesc],
    shards: &[ShardReplicas],
    stopping: &[NodeId],
    down: &[NodeId],
) -> Vec<String> {
    let topo = Topology::new(nodes);
    let mut ordered: Vec<&ShardReplicas> = shards.iter().collect();
    ordered.sort_by_key(|e| e.shard);
    let mut reasons = Vec::new();
    for entry in ordered {
        let voters: BTreeSet<NodeId> = entry.voters.iter().copied().collect();
        let stopped: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|id| stopping.contains(id))
            .collect();
        if stopped.is_empty() {
            continue;
        }
        let already: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|id| {
                !stopping.contains(id)
                    && (down.contains(id)
                        || matches!(topo.state(*id), None | Some(NodeState::Removed)))
            })
            .collect();
        let up = voters.len() - stopped.len() - already.len();
        let needed = voters.len() / 2 + 1;
        if up < needed {
            let mut reason = format!(
                "shard {}: only {up} of {} voters would stay up, {needed} needed for a majority \
                 (stopping {}",
                entry.shard,
                voters.len(),
                join(&stopped)
            );
            if !already.is_empty() {
                reason.push_str(&format!("; already down {}", join(&already)));
            }
            reason.push(')');
            reasons.push(reason);
        }
    }
    reasons
}

#[cfg(test)]
mod tests;
