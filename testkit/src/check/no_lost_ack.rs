//! No acknowledged send is lost: every send answered with a seq is in the final log of its
//! conversation at exactly that seq, as the same message (sender, client message id, body).
//!
//! This is architecture invariant 1 (no ack before a majority has fsynced) seen from outside.

use crate::check::{at_seq, fmt_msg, seqs_of, Violation};
use crate::history::{History, OpKind, Outcome, Seen};

pub const PROPERTY: &str = "no_lost_ack";

pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for op in &h.ops {
        let (
            &OpKind::Send {
                conv,
                sender,
                client_msg_id,
                body_crc,
                ..
            },
            &Outcome::Sent { seq, .. },
        ) = (&op.kind, &op.outcome)
        else {
            continue;
        };
        let acked = Seen {
            seq,
            sender,
            client_msg_id,
            body_crc,
        };
        let what = format!(
            "op {} (client {}) was acked with seq {seq} for {}",
            op.id,
            op.client,
            fmt_msg(&acked)
        );
        let detail = match h.final_state.logs.get(&conv) {
            None => format!("{what}, but the conversation has no final log"),
            Some(log) => match at_seq(log, seq) {
                Some(m) if m.same_message(&acked) => continue,
                Some(m) => format!(
                    "{what}, but the final log has {} there{}",
                    fmt_msg(m),
                    elsewhere(log, &acked)
                ),
                None => format!(
                    "{what}, but the final log ({} messages) has no seq {seq}{}",
                    log.len(),
                    elsewhere(log, &acked)
                ),
            },
        };
        out.push(Violation {
            property: PROPERTY,
            conv: Some(conv),
            detail,
        });
    }
    out
}

fn elsewhere(log: &[Seen], m: &Seen) -> String {
    match seqs_of(log, m).as_slice() {
        [] => " and nowhere else".to_owned(),
        seqs => format!(" (the message is at seq {seqs:?})"),
    }
}
