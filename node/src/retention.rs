//! Retention's proposer: on the shards this node leads, proposes `Prune` so that events and
//! dedup keys nobody needs any more are deleted (the rules and why they are safe are in
//! `bongsu_raft_store::messaging::retention`; ARCHITECTURE.md invariant 10).
//!
//! Every [`PERIOD`] the loop notes each hosted shard's applied index (at most one sample per
//! [`SAMPLE_GAP`]), so that it knows, from its own memory, which index it had applied
//! [`EVENT_MIN_AGE`] ago: events up to that index are at least that old. A shard this node
//! leads gets `Prune { events_before: that index + 1, now_ms }` when the store says it would
//! delete something (`prune_pending`, a seek or two), and again while the result says more is
//! left, up to [`MAX_ENTRIES_PER_ROUND`] entries per round; a shard left with more to prune
//! brings the next round forward to [`CATCH_UP`]. So a busy shard's pruning is paced by how
//! fast its `Prune` entries commit (each deleting up to 1,024 keys, the bookkeeping of 512
//! messages), not by the period. An idle shard with nothing to prune is read, never woken or
//! written.
//!
//! A node that has just started, or just became leader of a shard it did not host an hour ago,
//! knows no old enough index yet and prunes nothing until it does: memory lost is retention
//! delayed, never shortened. The dedup window is enforced by the state machine itself, on the
//! clock in the command.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bongsu_raft_store::messaging::Prune;
use bongsu_raft_store::meta::META_GROUP;
use bongsu_raft_store::version::CLUSTER_V2;
use bongsu_raft_store::{Command, CommandResult, GroupId};

use crate::errors::{NodeError, Result};
use crate::node::{GroupHandle, Node};

/// How old events are, at least, before they may be pruned: a subscriber (a gateway's
/// upstream) can resume from any position it reached within this time.
pub const EVENT_MIN_AGE: Duration = Duration::from_secs(60 * 60);
/// How often hosted shards are looked at.
const PERIOD: Duration = Duration::from_secs(60);
/// How soon the next round comes when a shard was left with more to prune.
const CATCH_UP: Duration = Duration::from_secs(1);
/// The least time between two samples of one shard's applied index, so that catch-up rounds
/// do not fill memory with samples.
const SAMPLE_GAP: Duration = Duration::from_secs(30);
/// `Prune` entries proposed per shard per round, at most; each deletes a bounded number of
/// keys (`PRUNE_MAX_DELETES`), and the next round goes on.
const MAX_ENTRIES_PER_ROUND: usize = 256;

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(run(node));
}

/// Applied indexes this node saw over time, per group.
#[derive(Default)]
pub struct Samples {
    by_group: HashMap<GroupId, VecDeque<(Instant, u64)>>,
}

impl Samples {
    /// Notes that `group` had applied `applied` at `now` (unless its last sample is more
    /// recent than [`SAMPLE_GAP`]), and returns the events cut-off: one past the newest index
    /// seen applied at least `min_age` before `now` (nothing if no sample is that old yet).
    /// Only the newest old sample is kept, so memory stays one sample per gap per `min_age`.
    pub fn observe(
        &mut self,
        group: GroupId,
        now: Instant,
        applied: u64,
        min_age: Duration,
    ) -> Option<u64> {
        let seen = self.by_group.entry(group).or_default();
        if seen
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_GAP)
        {
            seen.push_back((now, applied));
        }
        let old_enough = |t: &Instant| now.saturating_duration_since(*t) >= min_age;
        while seen.len() > 1 && seen.get(1).is_some_and(|(t, _)| old_enough(t)) {
            seen.pop_front();
        }
        seen.front()
            .filter(|(t, _)| old_enough(t))
            .map(|(_, index)| index + 1)
    }

    /// Forgets groups no longer hosted here.
    pub fn retain(&mut self, hosted: &HashSet<GroupId>) {
        self.by_group.retain(|g, _| hosted.contains(g));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run(node: Arc<Node>) {
    let mut samples = Samples::default();
    let mut behind = false;
    loop {
        tokio::time::sleep(if behind { CATCH_UP } else { PERIOD }).await;
        behind = false;
        let groups: Vec<GroupHandle> = node
            .groups()
            .into_iter()
            .filter(|h| h.group != META_GROUP)
            .collect();
        samples.retain(&groups.iter().map(|h| h.group).collect());
        // `Prune` is a command of cluster version 2: a node of the release before could not
        // read it (ARCHITECTURE.md invariant 11).
        if node.meta().cluster_version < CLUSTER_V2 {
            continue;
        }
        let now = Instant::now();
        for h in groups {
            let applied = match h.messaging().applied_index() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(group = h.group, error = %e, "read applied index");
                    continue;
                }
            };
            let Some(events_before) = samples.observe(h.group, now, applied, EVENT_MIN_AGE) else {
                continue;
            };
            if node.leading(h.group).is_err() {
                continue;
            }
            match prune(&node, &h, events_before).await {
                Ok(more) => behind |= more,
                Err(e) => tracing::warn!(group = h.group, error = %e, "prune; will retry"),
            }
        }
    }
}

/// Proposes one `Prune` on a shard group this node leads, for an operator (the admin API):
/// what it removed, the oldest event index kept, and whether more is left.
pub async fn prune_once(
    node: &Node,
    group: GroupId,
    events_before: u64,
) -> Result<(u64, u64, bool)> {
    if group == META_GROUP {
        return Err(NodeError::rejected(
            bongsu_proto::ErrorCode::InvalidArgument,
            "the meta group has no messaging state to prune",
        ));
    }
    let cmd = Command::Prune(Prune {
        events_before,
        now_ms: now_ms(),
    });
    match node.write_local(group, cmd).await?.0 {
        CommandResult::Pruned {
            removed,
            events_from,
            more,
        } => Ok((removed as u64, events_from, more)),
        CommandResult::Rejected(r) => Err(NodeError::rejected(r.code, r.reason)),
        other => Err(NodeError::Raft(format!("prune answered {other:?}"))),
    }
}

/// Proposes `Prune` entries on a group this node leads while the store says they would delete
/// something, at most [`MAX_ENTRIES_PER_ROUND`]; returns whether more is left.
async fn prune(node: &Node, h: &GroupHandle, events_before: u64) -> Result<bool> {
    for _ in 0..MAX_ENTRIES_PER_ROUND {
        let now_ms = now_ms();
        if !h.messaging().prune_pending(events_before, now_ms)? {
            return Ok(false);
        }
        let cmd = Command::Prune(Prune {
            events_before,
            now_ms,
        });
        match node.write_local(h.group, cmd).await?.0 {
            CommandResult::Pruned {
                removed,
                events_from,
                more,
            } => {
                tracing::debug!(group = h.group, removed, events_from, more, "pruned");
                if !more {
                    return Ok(false);
                }
            }
            CommandResult::Rejected(r) => return Err(NodeError::rejected(r.code, r.reason)),
            other => return Err(NodeError::Raft(format!("prune answered {other:?}"))),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_cut_off_is_what_was_applied_at_least_the_minimum_age_ago() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        let at = |mins: u64| t0 + Duration::from_secs(60 * mins);
        // Nothing is old enough during the first hour.
        assert_eq!(s.observe(1, at(0), 10, HOUR), None);
        assert_eq!(s.observe(1, at(30), 500, HOUR), None);
        assert_eq!(s.observe(1, at(59), 900, HOUR), None);
        // At an hour, what was applied at the start is old enough.
        assert_eq!(s.observe(1, at(60), 1000, HOUR), Some(11));
        // Later, the newest sample at least an hour old.
        assert_eq!(s.observe(1, at(95), 1200, HOUR), Some(501));
        assert_eq!(s.observe(1, at(125), 1300, HOUR), Some(1001));
        // Older samples were dropped: the queue holds an hour of samples and one more.
        assert!(s.by_group[&1].len() <= 4, "{:?}", s.by_group[&1]);
    }

    #[test]
    fn catch_up_rounds_do_not_add_samples() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(1, t0, 10, HOUR), None);
        // Rounds a second apart sample nothing new, so the cut-off stays where it was.
        for secs in 1..20 {
            s.observe(1, t0 + Duration::from_secs(secs), 10 + secs, HOUR);
        }
        assert_eq!(s.by_group[&1].len(), 1);
        assert_eq!(s.observe(1, t0 + HOUR, 5000, HOUR), Some(11));
        assert_eq!(s.by_group[&1].len(), 2);
    }

    #[test]
    fn groups_are_independent_and_forgotten_when_gone() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(1, t0, 10, HOUR), None);
        assert_eq!(s.observe(2, t0 + HOUR, 20, HOUR), None);
        assert_eq!(s.observe(1, t0 + HOUR, 30, HOUR), Some(11));
        s.retain(&HashSet::from([2]));
        // Group 1 starts over: a new leader of it waits an hour again.
        assert_eq!(s.observe(1, t0 + 2 * HOUR, 40, HOUR), None);
        assert_eq!(s.observe(2, t0 + 2 * HOUR, 50, HOUR), Some(21));
    }
}
