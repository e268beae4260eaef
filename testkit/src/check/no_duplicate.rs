//! No message is stored twice: a (sender, client message id) pair appears at most once in a
//! conversation's final log, and every ack of it carries the same seq.
//!
//! This is architecture invariant 4 (sends are idempotent). It also covers sends that timed
//! out: a timed-out send may be in the log or not, but a retry must never add it a second time.

use std::collections::BTreeMap;

use crate::check::{fmt_some, Violation};
use crate::history::{History, OpKind, Outcome};
use crate::serde_hex::fmt_u128;

pub const PROPERTY: &str = "no_duplicate";

pub fn check(h: &History) -> Vec<Violation> {
    // One entry per (conv, sender, client message id) that breaks the property, so that a
    // message applied twice is one violation however many ways it shows.
    let mut found: BTreeMap<(u128, u128, u128), Vec<String>> = BTreeMap::new();

    for (&conv, log) in &h.final_state.logs {
        let mut seqs: BTreeMap<(u128, u128), Vec<u64>> = BTreeMap::new();
        for m in log {
            seqs.entry((m.sender, m.client_msg_id))
                .or_default()
                .push(m.seq);
        }
        for ((sender, cmid), seqs) in seqs {
            if seqs.len() > 1 {
                found
                    .entry((conv, sender, cmid))
                    .or_default()
                    .push(format!("the final log holds it at seqs {seqs:?}"));
            }
        }
    }

    // Every send attempt of a message, to say in the detail how the duplicate came about.
    let mut attempts: BTreeMap<(u128, u128, u128), Vec<String>> = BTreeMap::new();
    let mut acks: BTreeMap<(u128, u128, u128), BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for op in &h.ops {
        let OpKind::Send {
            conv,
            sender,
            client_msg_id,
            ..
        } = op.kind
        else {
            continue;
        };
        let key = (conv, sender, client_msg_id);
        let attempt = match &op.outcome {
            Outcome::Sent { seq, duplicate } => {
                acks.entry(key)
                    .or_default()
                    .entry(*seq)
                    .or_default()
                    .push(op.id);
                format!(
                    "op {} acked seq {seq}{}",
                    op.id,
                    if *duplicate { " (dedup hit)" } else { "" }
                )
            }
            Outcome::Timeout => format!("op {} timed out", op.id),
            Outcome::Failed { code } => format!("op {} failed with {code}", op.id),
            Outcome::ReadOk { .. } => format!("op {} answered like a read", op.id),
        };
        attempts.entry(key).or_default().push(attempt);
    }
    for (key, by_seq) in acks {
        if by_seq.len() > 1 {
            let list: Vec<String> = by_seq
                .iter()
                .map(|(seq, ops)| format!("seq {seq} by ops {ops:?}"))
                .collect();
            found
                .entry(key)
                .or_default()
                .push(format!("its acks disagree: {}", list.join(", ")));
        }
    }

    found
        .into_iter()
        .map(|((conv, sender, cmid), problems)| {
            let sends = attempts
                .get(&(conv, sender, cmid))
                .map(|a| fmt_some(a, 8))
                .unwrap_or_else(|| "none".to_owned());
            Violation {
                property: PROPERTY,
                conv: Some(conv),
                detail: format!(
                    "sender={} client_msg_id={}: {}; sends: {sends}",
                    fmt_u128(sender),
                    fmt_u128(cmid),
                    problems.join("; ")
                ),
            }
        })
        .collect()
}
