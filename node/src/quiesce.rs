//! Quiescing idle groups, and elections driven by node liveness.
//!
//! Per-group heartbeats do not scale: 1,000 groups × 2 followers × 20 heartbeats a second is
//! 40,000 messages a second from one node. As in CockroachDB, a group with no new entries
//! for a while stops its timers: its followers first stop electing and ticking, then its
//! leader stops heartbeating and ticking. A new entry wakes it (the leader on the write, the
//! followers when the entry arrives). What a quiesced group loses is its own failure
//! detector, so node liveness (one ping per node pair) stands in: when a peer's pings lapse,
//! the surviving voters of every group it led wake up and start an election at once,
//! staggered by rank so that they do not split the vote.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bongsu_raft_store::{GroupId, NodeId};
use openraft::ServerState;

use crate::node::{GroupHandle, Node};

/// Followers quiesce first, so that a leader never goes quiet while its followers still expect
/// heartbeats (they would elect a new leader for nothing).
const FOLLOWER_IDLE: Duration = Duration::from_secs(2);
const LEADER_IDLE: Duration = Duration::from_secs(3);
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Delay between the ranks of voters that campaign after their leader's node died.
const RANK_STAGGER: Duration = Duration::from_millis(60);

struct Activity {
    last_index: Option<u64>,
    leader: Option<NodeId>,
    since: Instant,
    quiesced: bool,
    campaigned_for: Option<NodeId>,
    /// Elections switched off because fewer than a majority of the group's voters answer pings.
    isolated: bool,
}

/// The parts of a group's metrics this loop reads.
struct Snapshot {
    running_state: Result<(), openraft::error::Fatal<NodeId>>,
    current_term: u64,
    last_log_index: Option<u64>,
    current_leader: Option<NodeId>,
    state: ServerState,
    membership_config: Arc<openraft::StoredMembership<NodeId, bongsu_raft_store::NodeInfo>>,
    replication: Option<std::collections::BTreeMap<NodeId, Option<openraft::LogId<NodeId>>>>,
}

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(run(node));
}

impl Snapshot {
    /// Cheap for a quiet group: the fields are read under the watch's lock, and the
    /// membership is an `Arc`.
    fn of(h: &GroupHandle) -> Self {
        let b = h.raft.metrics();
        let m = b.borrow();
        Snapshot {
            running_state: m.running_state.clone(),
            current_term: m.current_term,
            last_log_index: m.last_log_index,
            current_leader: m.current_leader,
            state: m.state,
            membership_config: m.membership_config.clone(),
            replication: if m.state == ServerState::Leader {
                m.replication.clone()
            } else {
                None
            },
        }
    }

    fn voters(&self) -> Vec<NodeId> {
        self.membership_config.membership().voter_ids().collect()
    }
}

/// What the loop keeps between rounds.
struct Loop {
    node: Arc<Node>,
    groups: HashMap<GroupId, Activity>,
    was_live: HashMap<NodeId, bool>,
    /// How long a restarted node waits to hear from a leader before its groups may campaign.
    startup_grace: Duration,
}

async fn run(node: Arc<Node>) {
    let t = &node.cfg.timing;
    let startup_grace = Duration::from_millis(t.liveness_timeout_ms * 2 + t.election_max_ms);
    let mut l = Loop {
        node,
        groups: HashMap::new(),
        was_live: HashMap::new(),
        startup_grace,
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        l.round().await;
    }
}

/// One group in one round: what the phases below read.
struct Round<'a> {
    node: &'a Node,
    h: &'a GroupHandle,
    m: &'a Snapshot,
    voters: Voters,
    /// Past the grace period a restarted node gives its leaders to make contact.
    settled: bool,
}

/// A group's voters as this node sees them this round.
struct Voters {
    me: bool,
    /// A majority of the group's voters answers pings.
    quorum: bool,
    all: Vec<NodeId>,
}

impl Loop {
    async fn round(&mut self) {
        let hosted = self.node.groups();
        self.groups
            .retain(|g, _| hosted.iter().any(|h| h.group == *g));
        let returned = self.returned_peers();
        for h in hosted {
            self.group(&h, &returned).await;
        }
    }

    /// Peers that just came back (restarted, or a healed partition).
    fn returned_peers(&mut self) -> Vec<NodeId> {
        let mut returned = Vec::new();
        for id in self.node.known_peers().into_keys() {
            let live = self.node.is_live(id);
            if live && !self.was_live.insert(id, live).unwrap_or(true) {
                returned.push(id);
            }
        }
        returned
    }

    async fn group(&mut self, h: &GroupHandle, returned: &[NodeId]) {
        let m = Snapshot::of(h);
        crate::failstop::on_group_state(h.group, &m.running_state);
        let node = self.node.clone();
        node.note_leading(h.group, m.state == ServerState::Leader);
        // Returned peers hear at once from the quiet groups this node leads, so they learn
        // their leader instead of campaigning.
        if m.state == ServerState::Leader
            && returned
                .iter()
                .any(|p| m.membership_config.membership().get_node(p).is_some())
        {
            let _ = h.raft.trigger().heartbeat().await;
        }
        let settled = node.started.elapsed() > self.startup_grace;
        let a = self.activity(h, &m);
        let all = m.voters();
        let live = all.iter().filter(|v| node.is_live(**v)).count();
        let voters = Voters {
            me: all.contains(&node.id()),
            quorum: live * 2 > all.len(),
            all,
        };
        let r = Round {
            node: &node,
            h,
            m: &m,
            voters,
            settled,
        };
        r.gate_elections(a);
        if r.liveness_campaign(a) {
            return;
        }
        if a.quiesced || node.is_transferring(h.group) {
            return;
        }
        r.quiesce_if_idle(a);
    }

    /// The group's activity record, brought up to date with `m`: new entries wake quiesced
    /// timers, and so does an outside wake (a linearizable read).
    fn activity(&mut self, h: &GroupHandle, m: &Snapshot) -> &mut Activity {
        let a = self.groups.entry(h.group).or_insert(Activity {
            last_index: m.last_log_index,
            leader: m.current_leader,
            since: Instant::now(),
            quiesced: false,
            campaigned_for: None,
            isolated: false,
        });
        let index_changed = a.last_index != m.last_log_index;
        if index_changed || a.leader != m.current_leader {
            a.last_index = m.last_log_index;
            a.leader = m.current_leader;
            a.since = Instant::now();
            a.campaigned_for = None;
        }
        // New entries mean an active leader: the group's timers go back on. A mere leader
        // change does not turn elections on: a restarted node that just learned its leader
        // (which may be quiet) would otherwise time out and depose it.
        if index_changed && a.quiesced {
            h.wake();
            a.quiesced = false;
        }
        // Woken from outside (a linearizable read): idle again from now, and quiesced
        // again after the idle period, instead of heartbeating until the next write.
        if h.woken.swap(false, std::sync::atomic::Ordering::AcqRel) && a.quiesced {
            a.quiesced = false;
            a.since = Instant::now();
        }
        a
    }
}

impl Round<'_> {
    /// Switches the group's own election timer on or off: the pre-vote rules (see
    /// ARCHITECTURE.md, "Failure detection and quiescing").
    fn gate_elections(&self, a: &mut Activity) {
        let Round {
            node,
            h,
            m,
            voters,
            settled,
        } = self;
        let settled = *settled;
        let leader = m.current_leader;
        // openraft 0.9 has no pre-vote. A voter that cannot reach a majority of its group
        // (a partitioned or freshly restarted node) could only win nothing and, campaigning
        // anyway, inflate its term and depose a healthy leader once it reconnects. Node
        // liveness stands in for the pre-vote round: no majority answering pings, no
        // elections. Elections come back on with new entries or a liveness-triggered
        // campaign, never just because peers answer again.
        if voters.me && m.state != ServerState::Leader && !voters.quorum && !a.isolated {
            h.raft.runtime_config().elect(false);
            a.isolated = true;
        }
        if voters.quorum {
            a.isolated = false;
        }
        // A voter whose leader is still a voter of the group and whose node reaches this one by
        // itself never starts an election of its own. A follower that lags (a node returning
        // after an outage, catching up megabytes) could otherwise time out while its appends
        // are under way, campaign with a higher term, and depose a healthy leader the moment
        // that leader hears the term. Elections come back when the leader's node stops
        // answering (the liveness campaign), when no leader is known, or when the leader left
        // the voters.
        let follows_live_leader = m.state != ServerState::Leader
            && leader
                .is_some_and(|l| l != node.id() && node.reaches_us(l) && voters.all.contains(&l));
        if voters.me && follows_live_leader {
            h.raft.runtime_config().elect(false);
        } else if voters.me
            && voters.quorum
            && settled
            && !a.quiesced
            && m.state == ServerState::Follower
            && leader.is_some_and(|l| l != node.id())
        {
            // The leader does not reach this node (dead, or a link that works only the other
            // way): openraft's own timer may elect if its appends stop too.
            h.raft.runtime_config().elect(true);
        }
        let leader_left = leader.is_some_and(|l| l != node.id() && !voters.all.contains(&l));
        if (leader.is_none() || leader_left)
            && m.state != ServerState::Leader
            && settled
            && voters.quorum
        {
            // No leader heard of since the grace period, and a majority answers: let the group
            // elect one.
            h.wake();
        }
    }

    /// The leader's node stopped answering pings: campaign now, by rank. Returns whether a
    /// campaign was started this round.
    fn liveness_campaign(&self, a: &mut Activity) -> bool {
        let Round {
            node,
            h,
            m,
            voters,
            settled,
        } = self;
        let Some(l) = m.current_leader else {
            return false;
        };
        if !*settled
            || !voters.quorum
            || l == node.id()
            || !voters.me
            || node.is_live(l)
            || a.campaigned_for == Some(l)
        {
            return false;
        }
        a.campaigned_for = Some(l);
        a.quiesced = false;
        let rank = voters
            .all
            .iter()
            .filter(|v| **v != l && node.is_live(**v))
            .position(|v| *v == node.id())
            .unwrap_or(0);
        // Voters refuse to vote while their leader lease runs (until `election_max_ms` after
        // they last heard from the leader); an election before that only burns a term, so
        // wait for it.
        let lease = Duration::from_millis(node.cfg.timing.election_max_ms + 20);
        let heard = node.last_heard(l).unwrap_or(lease);
        let delay = lease.saturating_sub(heard) + RANK_STAGGER * rank as u32;
        let h = (*h).clone();
        let term = m.current_term;
        tokio::spawn(async move {
            h.wake();
            tokio::time::sleep(delay).await;
            // Someone of lower rank may have won meanwhile, or be campaigning: a higher term
            // here means this node voted in another election, and campaigning over it would
            // split the vote and cost a round of election timeouts (and the winner's first
            // writes: a follower that moved to a higher term refuses them). If that election
            // fails, this node's own timer (woken above) runs the next one.
            let (leader, now) = {
                let m = h.raft.metrics();
                let m = m.borrow();
                (m.current_leader, m.current_term)
            };
            if leader == Some(l) && now == term {
                if let Err(e) = h.raft.trigger().elect().await {
                    tracing::warn!(group = h.group, error = %e, "liveness election");
                }
            }
        });
        true
    }

    /// Stops the timers of a group that has been idle long enough: followers first, then the
    /// leader once every follower holds its whole log.
    fn quiesce_if_idle(&self, a: &mut Activity) {
        let Round { node, h, m, .. } = self;
        let idle = a.since.elapsed();
        let leader = m.current_leader;
        match m.state {
            ServerState::Leader if idle >= LEADER_IDLE => {
                let last = m.last_log_index;
                let caught_up = m
                    .replication
                    .as_ref()
                    .is_some_and(|r| r.values().all(|matched| matched.map(|l| l.index) == last));
                if caught_up {
                    let rc = h.raft.runtime_config();
                    rc.heartbeat(false);
                    rc.tick(false);
                    a.quiesced = true;
                }
            }
            ServerState::Follower
                if idle >= FOLLOWER_IDLE && leader.is_some_and(|l| node.is_live(l)) =>
            {
                let rc = h.raft.runtime_config();
                rc.elect(false);
                rc.tick(false);
                a.quiesced = true;
            }
            ServerState::Learner if idle >= FOLLOWER_IDLE => {
                h.raft.runtime_config().tick(false);
                a.quiesced = true;
            }
            _ => {}
        }
    }
}
