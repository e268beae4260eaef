//! Replicas agree: after the cluster settled, every replica of a shard has applied the same
//! index and holds the same state (equal digests).
//!
//! The reference of a shard is the (applied index, digest) most of its replicas report; each
//! replica that differs from it is one violation naming the node.

use std::collections::BTreeMap;

use crate::check::Violation;
use crate::history::History;

pub const PROPERTY: &str = "replicas_identical";

pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for (&shard, replicas) in &h.final_state.replicas {
        let mut groups: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
        for r in replicas {
            groups
                .entry((r.applied_index, r.digest))
                .or_default()
                .push(r.node);
        }
        // Most replicas win; on a tie, the one that applied furthest.
        let Some((&(ref_index, ref_digest), ref_nodes)) =
            groups.iter().max_by_key(|((index, digest), nodes)| {
                (nodes.len(), *index, std::cmp::Reverse(*digest))
            })
        else {
            continue;
        };
        for r in replicas {
            if (r.applied_index, r.digest) == (ref_index, ref_digest) {
                continue;
            }
            let detail = if r.applied_index != ref_index {
                format!(
                    "shard {shard}: node {} applied index {} (digest {:016x}) while nodes {ref_nodes:?} applied index {ref_index} (digest {ref_digest:016x})",
                    r.node, r.applied_index, r.digest
                )
            } else {
                format!(
                    "shard {shard}: node {} has digest {:016x} at applied index {} while nodes {ref_nodes:?} have digest {ref_digest:016x}",
                    r.node, r.digest, r.applied_index
                )
            };
            out.push(Violation {
                property: PROPERTY,
                conv: None,
                detail,
            });
        }
    }
    out
}
