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

/// Turns a group's timers back on; the quiescing loop turns them off again once the group has
/// been idle for a while.
pub fn wake(h: &GroupHandle) {
    h.woken.store(true, std::sync::atomic::Ordering::Release);
    let rc = h.raft.runtime_config();
    rc.tick(true);
    rc.heartbeat(true);
    rc.elect(true);
}

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(run(node));
}

async fn run(node: Arc<Node>) {
    let mut groups: HashMap<GroupId, Activity> = HashMap::new();
    let mut was_live: HashMap<NodeId, bool> = HashMap::new();
    // How long a restarted node waits to hear from a leader before its groups may campaign.
    let t = &node.cfg.timing;
    let startup_grace = Duration::from_millis(t.liveness_timeout_ms * 2 + t.election_max_ms);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let hosted = node.groups();
        groups.retain(|g, _| hosted.iter().any(|h| h.group == *g));
        // Peers that just came back (restarted, or a healed partition) hear at once from the
        // quiet groups this node leads, so they learn their leader instead of campaigning.
        let mut returned = Vec::new();
        for id in node.known_peers().into_keys() {
            let live = node.is_live(id);
            if live && !was_live.insert(id, live).unwrap_or(true) {
                returned.push(id);
            }
        }
        for h in hosted {
            // Cheap for a quiet group: the fields are read under the watch's lock, and the
            // membership is an `Arc`.
            let m = {
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
            };
            if let Err(e) = &m.running_state {
                // A group stops on a storage error (say, a failed fsync). The node must not go
                // on with data it may have lost: fail-stop, and let the other replicas serve.
                if !matches!(e, openraft::error::Fatal::Stopped) {
                    tracing::error!(group = h.group, error = %e, "group failed; stopping the node");
                    std::process::exit(70);
                }
            }
            node.note_leading(h.group, m.state == ServerState::Leader);
            let a = groups.entry(h.group).or_insert(Activity {
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
                wake(&h);
                a.quiesced = false;
            }
            // Woken from outside (a linearizable read): idle again from now, and quiesced
            // again after the idle period, instead of heartbeating until the next write.
            if h.woken.swap(false, std::sync::atomic::Ordering::AcqRel) && a.quiesced {
                a.quiesced = false;
                a.since = Instant::now();
            }
            let leader = m.current_leader;
            if m.state == ServerState::Leader
                && returned
                    .iter()
                    .any(|p| m.membership_config.membership().get_node(p).is_some())
            {
                let _ = h.raft.trigger().heartbeat().await;
            }
            let is_voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == node.id());
            // openraft 0.9 has no pre-vote. A voter that cannot reach a majority of its group
            // (a partitioned or freshly restarted node) could only win nothing and, campaigning
            // anyway, inflate its term and depose a healthy leader once it reconnects. Node
            // liveness stands in for the pre-vote round: no majority answering pings, no
            // elections.
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            let live_voters = voters.iter().filter(|v| node.is_live(**v)).count();
            let has_quorum = live_voters * 2 > voters.len();
            // Elections come back on with new entries or a liveness-triggered campaign, never
            // just because peers answer again.
            if is_voter && m.state != ServerState::Leader && !has_quorum && !a.isolated {
                h.raft.runtime_config().elect(false);
                a.isolated = true;
            }
            if has_quorum {
                a.isolated = false;
            }
            // Pre-vote, built from node liveness (openraft 0.9 has none): a voter whose leader
            // is still a voter of the group and whose node reaches this one by itself never
            // starts an election of its own. A follower that lags (a node returning after an
            // outage, catching up megabytes) could otherwise time out while its appends are
            // under way, campaign with a higher term, and depose a healthy leader the moment
            // that leader hears the term. Elections come back when the leader's node stops
            // answering (the liveness campaign below), when no leader is known, or when the
            // leader left the voters.
            let follows_live_leader = m.state != ServerState::Leader
                && leader
                    .is_some_and(|l| l != node.id() && node.reaches_us(l) && voters.contains(&l));
            let settled = node.started.elapsed() > startup_grace;
            if is_voter && follows_live_leader {
                h.raft.runtime_config().elect(false);
            } else if is_voter
                && has_quorum
                && settled
                && !a.quiesced
                && m.state == ServerState::Follower
                && leader.is_some_and(|l| l != node.id())
            {
                // The leader does not reach this node (dead, or a link that works only the
                // other way): openraft's own timer may elect if its appends stop too.
                h.raft.runtime_config().elect(true);
            }
            let leader_left = leader.is_some_and(|l| l != node.id() && !voters.contains(&l));
            if (leader.is_none() || leader_left)
                && m.state != ServerState::Leader
                && settled
                && has_quorum
            {
                // No leader heard of since the grace period, and a majority answers: let the
                // group elect one.
                wake(&h);
            }
            // The leader's node stopped answering pings: campaign now, by rank.
            if let Some(l) = leader {
                if settled
                    && has_quorum
                    && l != node.id()
                    && is_voter
                    && !node.is_live(l)
                    && a.campaigned_for != Some(l)
                {
                    a.campaigned_for = Some(l);
                    a.quiesced = false;
                    let rank = m
                        .membership_config
                        .membership()
                        .voter_ids()
                        .filter(|v| *v != l && node.is_live(*v))
                        .position(|v| v == node.id())
                        .unwrap_or(0);
                    // Voters refuse to vote while their leader lease runs (until `election_max_ms`
                    // after they last heard from the leader); an election before that only
                    // burns a term, so wait for it.
                    let lease = Duration::from_millis(node.cfg.timing.election_max_ms + 20);
                    let heard = node.last_heard(l).unwrap_or(lease);
                    let delay = lease.saturating_sub(heard) + RANK_STAGGER * rank as u32;
                    let h = h.clone();
                    let term = m.current_term;
                    tokio::spawn(async move {
                        wake(&h);
                        tokio::time::sleep(delay).await;
                        // Someone of lower rank may have won meanwhile, or be campaigning: a
                        // higher term here means this node voted in another election, and
                        // campaigning over it would split the vote and cost a round of
                        // election timeouts (and the winner's first writes: a follower that
                        // moved to a higher term refuses them). If that election fails, this
                        // node's own timer (woken above) runs the next one.
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
                    continue;
                }
            }
            if a.quiesced || node.is_transferring(h.group) {
                continue;
            }
            let idle = a.since.elapsed();
            match m.state {
                ServerState::Leader if idle >= LEADER_IDLE => {
                    let last = m.last_log_index;
                    let caught_up = m.replication.as_ref().is_some_and(|r| {
                        r.values().all(|matched| matched.map(|l| l.index) == last)
                    });
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
}
