//! Everyone sees one order: every final log has dense seqs 1..n, every successful read
//! returned dense, increasing seqs starting at the seq it asked for, each holding the message
//! the final log holds at that seq, and the acknowledged sends of one client into one
//! conversation got increasing seqs (a client issues one operation at a time, so each send was
//! applied after the one acknowledged before it).
//!
//! This is architecture invariant 5 (each conversation is one totally ordered log with dense
//! seqs). A message a read saw that the final log holds at a different seq is reported here;
//! one the final log does not hold at all is left to [`super::no_vanished_read`].

use std::collections::BTreeMap;

use crate::check::{at_seq, fmt_msg, fmt_some, seqs_of, successful_reads, Violation};
use crate::history::{History, OpKind, Outcome};

pub const PROPERTY: &str = "same_order";

pub fn check(h: &History) -> Vec<Violation> {
    let mut out = acks_go_back(h);

    for (&conv, log) in &h.final_state.logs {
        for (expected, m) in (1..).zip(log) {
            if m.seq != expected {
                out.push(Violation {
                    property: PROPERTY,
                    conv: Some(conv),
                    detail: format!(
                        "the final log is not dense: expected seq {expected}, found seq {}",
                        m.seq
                    ),
                });
                break;
            }
        }
    }

    for (op, conv, from_seq, seen) in successful_reads(h) {
        let mut problems = Vec::new();
        for (expected, m) in (from_seq.max(1)..).zip(seen) {
            if m.seq != expected {
                let why = if m.seq > expected {
                    "a gap"
                } else {
                    "out of order"
                };
                problems.push(format!(
                    "expected seq {expected}, got seq {} ({why})",
                    m.seq
                ));
                break;
            }
        }
        if let Some(log) = h.final_state.logs.get(&conv) {
            for m in seen {
                let moved_to = seqs_of(log, m);
                let here = at_seq(log, m.seq);
                if here.is_some_and(|x| x.same_message(m)) || moved_to.is_empty() {
                    continue;
                }
                let now = here.map(fmt_msg).unwrap_or_else(|| "nothing".to_owned());
                problems.push(format!(
                    "saw {} at seq {}, which the final log has at seq {moved_to:?} (and {now} at seq {})",
                    fmt_msg(m),
                    m.seq,
                    m.seq
                ));
            }
        }
        if !problems.is_empty() {
            out.push(Violation {
                property: PROPERTY,
                conv: Some(conv),
                detail: format!(
                    "read op {op} from seq {from_seq}: {}",
                    fmt_some(&problems, 4)
                ),
            });
        }
    }
    out
}

/// Acknowledged sends of one client into one conversation whose seq is not above the seq of
/// the client's previous acknowledged send of another message there.
fn acks_go_back(h: &History) -> Vec<Violation> {
    let mut ops: Vec<_> = h.ops.iter().collect();
    ops.sort_by_key(|op| (op.invoke, op.id));
    // (client, conv) -> (seq, client message id, op) of the last acknowledged send.
    let mut last: BTreeMap<(u32, u128), (u64, u128, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in ops {
        let (
            &OpKind::Send {
                conv,
                client_msg_id,
                ..
            },
            &Outcome::Sent { seq, .. },
        ) = (&op.kind, &op.outcome)
        else {
            continue;
        };
        let prev = last.insert((op.client, conv), (seq, client_msg_id, op.id));
        if let Some((prev_seq, prev_cmid, prev_op)) = prev {
            if prev_cmid != client_msg_id && seq <= prev_seq {
                out.push(Violation {
                    property: PROPERTY,
                    conv: Some(conv),
                    detail: format!(
                        "client {}'s acked seqs go back: op {prev_op} got seq {prev_seq}, then op {} seq {seq}",
                        op.client, op.id
                    ),
                });
            }
        }
    }
    out
}
