//! What the parent knows (the [`History`] of everything the children reported) and the
//! checkers that hold a reopened store against it.
//!
//! Each checker is one safety property: a function from the recorded history and what the
//! store returned to a list of violations, so a failure names every broken property at once
//! instead of the first assertion that tripped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use bongsu_raft_store::{Entry, LogId, LogStore, Store, StoreOptions};

use crate::workload::{entry, Report, GROUPS};

/// At most this many violations are listed per checker and group; the rest are counted.
const MAX_LISTED: usize = 8;

/// Everything the children have reported, over all rounds so far.
#[derive(Default)]
pub struct History {
    groups: HashMap<u64, GroupHistory>,
}

#[derive(Default)]
struct GroupHistory {
    /// The term of every acknowledged entry, by index.
    acked: BTreeMap<u64, u64>,
    /// The highest acknowledged vote term.
    acked_vote: Option<u64>,
    /// The last index and vote term the previous reopen showed. The child is killed, not the
    /// machine, so whatever one reopen showed is in the OS's hands and must still be there at
    /// the next, acknowledged or not.
    shown_last: Option<u64>,
    shown_vote: Option<u64>,
    /// The append that was in flight when this round's child was killed: `first..=last` of
    /// `term`, neither acknowledged nor known to have failed.
    in_flight: Option<(u64, u64, u64)>,
}

/// What one round added to the history.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundStats {
    pub acked_entries: u64,
    pub acked_votes: u64,
}

impl History {
    /// Adds one child's reports, in the order it printed them.
    pub fn record_round(&mut self, reports: &[Report]) -> anyhow::Result<RoundStats> {
        let mut stats = RoundStats::default();
        for g in self.groups.values_mut() {
            g.in_flight = None;
        }
        for &r in reports {
            match r {
                Report::Append {
                    group,
                    first,
                    last,
                    term,
                } => {
                    let g = self.group_mut(group)?;
                    // Each group's task waits for one append before it starts the next.
                    ensure!(
                        g.in_flight.is_none(),
                        "group {group}: APPEND {first}..={last} while {:?} was in flight",
                        g.in_flight
                    );
                    g.in_flight = Some((first, last, term));
                }
                Report::Ack { group, last } => {
                    let g = self.group_mut(group)?;
                    let Some((first, pending_last, term)) = g.in_flight.take() else {
                        bail!("group {group}: ACK {last} with no APPEND in flight");
                    };
                    ensure!(
                        last == pending_last,
                        "group {group}: ACK {last} for APPEND {first}..={pending_last}"
                    );
                    for index in first..=last {
                        // The next child continues after the last entry the store has, which
                        // includes every acknowledged one, so no index is written twice.
                        let before = g.acked.insert(index, term);
                        ensure!(
                            before.is_none(),
                            "group {group}: entry {index} acknowledged again (terms {before:?}, {term})"
                        );
                    }
                    stats.acked_entries += last - first + 1;
                }
                Report::Vote { group, term } => {
                    let g = self.group_mut(group)?;
                    g.acked_vote = g.acked_vote.max(Some(term));
                    stats.acked_votes += 1;
                }
            }
        }
        Ok(stats)
    }

    fn group_mut(&mut self, group: u64) -> anyhow::Result<&mut GroupHistory> {
        ensure!(GROUPS.contains(&group), "report for unknown group {group}");
        Ok(self.groups.entry(group).or_default())
    }

    pub fn acked_entries(&self) -> usize {
        self.groups.values().map(|g| g.acked.len()).sum()
    }
}

/// One broken property.
#[derive(Debug)]
pub struct Violation {
    pub group: u64,
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group {}: {}: {}",
            self.group, self.property, self.detail
        )
    }
}

/// What the check saw, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observed {
    /// The most entries any group had after its last acknowledged one.
    pub max_unacked_tail: u64,
    /// Appends in flight at the kill, and how many of them the reopened store shows: both
    /// outcomes occurring is what shows the kills land inside the write path.
    pub in_flight: u64,
    pub in_flight_landed: u64,
}

/// Opens the store at `dir`, checks every group against `history`, closes the store again,
/// and remembers what it showed for the next round.
pub fn check_store(
    dir: &Path,
    history: &mut History,
) -> anyhow::Result<(Vec<Violation>, Observed)> {
    let store = Store::open(dir, StoreOptions::default())
        .with_context(|| format!("reopen the store at {}", dir.display()))?;
    let mut violations = Vec::new();
    let mut observed = Observed::default();
    for group in GROUPS {
        let h = history.groups.entry(group).or_default();
        let state = match GroupState::read(&store.log_store(group)) {
            Ok(state) => state,
            Err(e) => {
                violations.push(Violation {
                    group,
                    property: "readable",
                    detail: format!("{e:#}"),
                });
                continue;
            }
        };
        let before = violations.len();
        for (property, found) in [
            ("no lost acknowledged entry", no_lost_entry(&state, h)),
            ("no lost vote", no_lost_vote(&state, h)),
            ("contiguous log", contiguous(&state)),
            ("intact entries", intact(group, &state)),
            ("atomic appends", atomic_in_flight_append(&state, h)),
        ] {
            let more = found.len().saturating_sub(MAX_LISTED);
            violations.extend(found.into_iter().take(MAX_LISTED).map(|detail| Violation {
                group,
                property,
                detail,
            }));
            if more > 0 {
                violations.push(Violation {
                    group,
                    property,
                    detail: format!("... and {more} more"),
                });
            }
        }
        let last = state.entries.last().map(|e| e.log_id.index);
        let max_acked = h.acked.last_key_value().map(|(&i, _)| i);
        let tail = match (last, max_acked) {
            (Some(last), Some(acked)) => last.saturating_sub(acked),
            (Some(last), None) => last + 1,
            (None, _) => 0,
        };
        observed.max_unacked_tail = observed.max_unacked_tail.max(tail);
        if let Some((first, _, term)) = h.in_flight {
            observed.in_flight += 1;
            if state
                .find(first)
                .is_some_and(|e| e.log_id.leader_id.term == term)
            {
                observed.in_flight_landed += 1;
            }
        }
        // Only a store that passed is a baseline for the next round; after a violation the
        // test stops anyway.
        if violations.len() == before {
            h.shown_last = last;
            h.shown_vote = state.vote_term;
        }
    }
    // Every LogStore made above is gone; this is the last reference, so the store closes here
    // and the next child can take the RocksDB lock.
    ensure!(
        std::sync::Arc::strong_count(&store) == 1,
        "something still holds the store open"
    );
    drop(store);
    Ok((violations, observed))
}

/// One group as the reopened store returns it.
struct GroupState {
    purged: Option<LogId>,
    last: Option<LogId>,
    entries: Vec<Entry>,
    vote_term: Option<u64>,
}

impl GroupState {
    fn read(log: &LogStore) -> anyhow::Result<Self> {
        let (purged, last) = log.log_state().context("log_state")?;
        let entries = log
            .read_entries(0, u64::MAX)
            .context("read_entries(0, u64::MAX)")?;
        let vote_term = log.vote().context("vote")?.map(|v| v.leader_id.get_term());
        Ok(Self {
            purged,
            last,
            entries,
            vote_term,
        })
    }

    fn find(&self, index: u64) -> Option<&Entry> {
        // The index is the position in a contiguous log from 0; `contiguous` reports any other
        // shape, and then this lookup just finds nothing.
        let e = self.entries.get(usize::try_from(index).ok()?)?;
        (e.log_id.index == index).then_some(e)
    }
}

/// Every acknowledged entry is there with the term it was written in, and so is every entry
/// an earlier reopen showed.
fn no_lost_entry(state: &GroupState, h: &GroupHistory) -> Vec<String> {
    let mut out = Vec::new();
    for (&index, &term) in &h.acked {
        match state.find(index) {
            None => out.push(format!(
                "acknowledged entry {index} (term {term}) is missing"
            )),
            Some(e) if e.log_id.leader_id.term != term => out.push(format!(
                "acknowledged entry {index} was written in term {term}, now has term {}",
                e.log_id.leader_id.term
            )),
            Some(_) => {}
        }
    }
    if let Some(shown) = h.shown_last {
        let last = state.entries.last().map(|e| e.log_id.index);
        if last < Some(shown) {
            out.push(format!(
                "the previous reopen showed entries up to {shown}, now the log ends at {last:?}"
            ));
        }
    }
    out
}

/// The stored vote is at least the highest acknowledged one and never goes back.
fn no_lost_vote(state: &GroupState, h: &GroupHistory) -> Vec<String> {
    let mut out = Vec::new();
    if state.vote_term < h.acked_vote {
        out.push(format!(
            "vote {:?} was acknowledged, the store has {:?}",
            h.acked_vote, state.vote_term
        ));
    }
    if state.vote_term < h.shown_vote {
        out.push(format!(
            "the previous reopen showed vote {:?}, the store has {:?}",
            h.shown_vote, state.vote_term
        ));
    }
    out
}

/// Indexes run 0, 1, 2, … with no hole, and `log_state` agrees with what reading returns.
/// Nothing is ever purged in this test.
fn contiguous(state: &GroupState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = state.purged {
        out.push(format!(
            "nothing was purged, yet log_state reports purged {p}"
        ));
    }
    for (pos, e) in state.entries.iter().enumerate() {
        if e.log_id.index != pos as u64 {
            out.push(format!(
                "entry at position {pos} has index {} (a hole or a reordering)",
                e.log_id.index
            ));
            break;
        }
    }
    let read_last = state.entries.last().map(|e| e.log_id);
    if state.last != read_last {
        out.push(format!(
            "log_state says the last log id is {:?}, reading ends at {read_last:?}",
            state.last
        ));
    }
    out
}

/// Every entry present, acknowledged or not, is exactly the entry that was written at its
/// index; terms never go down along the log, and none is above the stored vote (the child
/// votes for a term before writing any entry of it).
fn intact(group: u64, state: &GroupState) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev_term = 0;
    for e in &state.entries {
        let (index, term) = (e.log_id.index, e.log_id.leader_id.term);
        // Index and term come from the entry itself, so this compares the payload, body
        // included, with the one written at that index.
        if *e != entry(group, term, index) {
            out.push(format!("entry {index} (term {term}) has a payload other than the one written at that index"));
        }
        if term < prev_term {
            out.push(format!(
                "entry {index} has term {term}, after an entry of term {prev_term}"
            ));
        }
        if Some(term) > state.vote_term {
            out.push(format!(
                "entry {index} has term {term}, above the stored vote {:?}",
                state.vote_term
            ));
        }
        prev_term = term;
    }
    out
}

/// The append in flight at the kill landed whole or not at all: one call to `append_durable`
/// is one write batch, so a reopen must never show part of it.
fn atomic_in_flight_append(state: &GroupState, h: &GroupHistory) -> Vec<String> {
    let Some((first, last, term)) = h.in_flight else {
        return Vec::new();
    };
    let landed = (first..=last)
        .filter(|&i| {
            state
                .find(i)
                .is_some_and(|e| e.log_id.leader_id.term == term)
        })
        .count();
    let len = (last - first + 1) as usize;
    if landed == 0 || landed == len {
        Vec::new()
    } else {
        vec![format!(
            "{landed} of the {len} entries of the unacknowledged append {first}..={last} (term {term}) are visible"
        )]
    }
}
