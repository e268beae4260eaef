//! Only members read: a read by someone who is not a member of the conversation never
//! succeeds.
//!
//! This is architecture invariant 7. The expected answer is `NOT_MEMBER`; any other definite
//! failure or a timeout (both normal while faults are injected) leaks nothing and passes. A
//! success is a violation even when it returned no messages, since the server did not refuse.

use crate::check::{fmt_msg, Violation};
use crate::history::{History, OpKind, Outcome};
use crate::serde_hex::fmt_u128;

pub const PROPERTY: &str = "non_member";

pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for op in &h.ops {
        let (
            &OpKind::Read {
                conv,
                reader,
                member: false,
                from_seq,
                ..
            },
            Outcome::ReadOk { messages },
        ) = (&op.kind, &op.outcome)
        else {
            continue;
        };
        let what = format!(
            "read op {} by non-member {} from seq {from_seq} succeeded",
            op.id,
            fmt_u128(reader)
        );
        let detail = match messages.first() {
            None => format!("{what} (with no messages) instead of failing with NOT_MEMBER"),
            Some(first) => format!(
                "{what} and returned {} message(s), the first seq {} {}",
                messages.len(),
                first.seq,
                fmt_msg(first)
            ),
        };
        out.push(Violation {
            property: PROPERTY,
            conv: Some(conv),
            detail,
        });
    }
    out
}
