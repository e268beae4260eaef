//! Nothing a read showed disappears: every message any read saw, at any time during the faults,
//! is in the final log.
//!
//! A read that shows an uncommitted entry (say, from a deposed leader) breaks this when the
//! entry is later overwritten. A seen message the final log holds at another seq is a reorder
//! and reported by [`super::same_order`]; this checker reports the ones it does not hold at all.

use crate::check::{fmt_msg, fmt_some, successful_reads, Violation};
use crate::history::{History, Seen};

pub const PROPERTY: &str = "no_vanished_read";

pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for (op, conv, from_seq, seen) in successful_reads(h) {
        let log: &[Seen] = h.final_state.logs.get(&conv).map_or(&[], Vec::as_slice);
        let vanished: Vec<String> = seen
            .iter()
            .filter(|m| !log.iter().any(|x| x.same_message(m)))
            .map(|m| format!("seq {} {}", m.seq, fmt_msg(m)))
            .collect();
        if !vanished.is_empty() {
            out.push(Violation {
                property: PROPERTY,
                conv: Some(conv),
                detail: format!(
                    "read op {op} from seq {from_seq} saw {} message(s) the final log ({} messages) does not hold: {}",
                    vanished.len(),
                    log.len(),
                    fmt_some(&vanished, 4)
                ),
            });
        }
    }
    out
}
