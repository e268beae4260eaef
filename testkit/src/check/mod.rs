//! One checker per safety property, each a pure function from a recorded [`History`] to the
//! list of [`Violation`]s it found; an empty list means the property held.
//!
//! The checkers share no state and can be run in any order or alone.
//! Where two properties could both describe one event, the checkers split the work so that
//! each event is reported once: a message a read saw that the final log holds at another seq is
//! a reorder ([`same_order`]); one the final log does not hold at all has vanished
//! ([`no_vanished_read`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, OpKind, Outcome, Seen};
use crate::serde_hex::fmt_u128;

pub mod no_duplicate;
pub mod no_lost_ack;
pub mod no_vanished_read;
pub mod non_member;
pub mod replicas_identical;
pub mod same_order;

#[cfg(test)]
mod tests;

/// A checker: a property name and the function that checks it.
pub type Checker = (&'static str, fn(&History) -> Vec<Violation>);

/// Every checker, in the order [`check_all`] runs them.
pub const CHECKERS: &[Checker] = &[
    (no_lost_ack::PROPERTY, no_lost_ack::check),
    (no_duplicate::PROPERTY, no_duplicate::check),
    (same_order::PROPERTY, same_order::check),
    (no_vanished_read::PROPERTY, no_vanished_read::check),
    (replicas_identical::PROPERTY, replicas_identical::check),
    (non_member::PROPERTY, non_member::check),
];

/// One breach of a safety property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The checker's property name, e.g. `no_lost_ack`.
    pub property: &'static str,
    /// The conversation it concerns, if it concerns one.
    #[serde(serialize_with = "crate::serde_hex::opt_u128")]
    pub conv: Option<u128>,
    /// What happened, naming the operations, seqs and nodes involved.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.conv {
            Some(conv) => write!(
                f,
                "{} conv={}: {}",
                self.property,
                fmt_u128(conv),
                self.detail
            ),
            None => write!(f, "{}: {}", self.property, self.detail),
        }
    }
}

/// Counts over one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Sends acknowledged with a seq (each ack counts, retries included).
    pub acked: usize,
    /// [`no_lost_ack`] violations.
    pub lost: usize,
    /// [`no_duplicate`] violations.
    pub duplicated: usize,
    /// [`same_order`] plus [`no_vanished_read`] violations.
    pub reordered: usize,
    /// [`replicas_identical`] violations.
    pub replica_mismatches: usize,
    /// [`non_member`] violations.
    pub non_member_leaks: usize,
}

/// The verdict on one history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub summary: Summary,
    /// Every violation, grouped by checker in [`CHECKERS`] order.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether no checker found anything.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every checker over `h`.
pub fn check_all(h: &History) -> Report {
    let mut summary = Summary {
        acked: h
            .ops
            .iter()
            .filter(|op| op.kind.is_send() && matches!(op.outcome, Outcome::Sent { .. }))
            .count(),
        ..Summary::default()
    };
    let mut violations = Vec::new();
    for (property, check) in CHECKERS {
        let found = check(h);
        let count = match *property {
            no_lost_ack::PROPERTY => &mut summary.lost,
            no_duplicate::PROPERTY => &mut summary.duplicated,
            same_order::PROPERTY | no_vanished_read::PROPERTY => &mut summary.reordered,
            replicas_identical::PROPERTY => &mut summary.replica_mismatches,
            non_member::PROPERTY => &mut summary.non_member_leaks,
            other => unreachable!("checker {other} has no summary count"),
        };
        *count += found.len();
        violations.extend(found);
    }
    Report {
        summary,
        violations,
    }
}

/// The message of `log` at `seq`. Logs are normally dense (`log[i].seq == i + 1`), which is
/// tried first; a log that is not is searched, so that checkers other than [`same_order`] still
/// give sensible answers about it.
pub(crate) fn at_seq(log: &[Seen], seq: u64) -> Option<&Seen> {
    let dense = seq
        .checked_sub(1)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| log.get(i));
    match dense {
        Some(m) if m.seq == seq => Some(m),
        _ => log.iter().find(|m| m.seq == seq),
    }
}

/// The seqs at which `log` holds the same message as `m`.
pub(crate) fn seqs_of(log: &[Seen], m: &Seen) -> Vec<u64> {
    log.iter()
        .filter(|x| x.same_message(m))
        .map(|x| x.seq)
        .collect()
}

/// A message for a violation's detail: `sender=… client_msg_id=… crc=…`.
pub(crate) fn fmt_msg(m: &Seen) -> String {
    format!(
        "sender={} client_msg_id={} crc={:08x}",
        fmt_u128(m.sender),
        fmt_u128(m.client_msg_id),
        m.body_crc
    )
}

/// The successful reads of `h`: the op id, its conversation, `from_seq` and what it saw.
pub(crate) fn successful_reads(h: &History) -> impl Iterator<Item = (u64, u128, u64, &[Seen])> {
    h.ops.iter().filter_map(|op| match (&op.kind, &op.outcome) {
        (OpKind::Read { conv, from_seq, .. }, Outcome::ReadOk { messages }) => {
            Some((op.id, *conv, *from_seq, messages.as_slice()))
        }
        _ => None,
    })
}

/// At most `n` items of a list for a violation's detail, and how many more there were.
pub(crate) fn fmt_some<T: fmt::Display>(items: &[T], n: usize) -> String {
    let shown: Vec<String> = items.iter().take(n).map(ToString::to_string).collect();
    match items.len().saturating_sub(n) {
        0 => shown.join("; "),
        more => format!("{}; and {more} more", shown.join("; ")),
    }
}
