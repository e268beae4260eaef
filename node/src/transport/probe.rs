//! Asking a follower what it holds before sending it entries again, and keeping what does go
//! within the byte bound.
//!
//! A leader does not know what a follower holds. openraft 0.9 finds out with a binary search
//! over the log at the start of every leadership (and again after a timeout), and sends every
//! entry of each range it tries (up to `max_payload_entries`: tens of megabytes of large
//! messages), although the follower usually has them all. That alone held a shard's writes
//! for about a second after each leader change under load.
//!
//! Where the follower has said it holds an entry of the range (its vote reply carries its last
//! log id; every answer to an append says how far it matched), the transport first sends an
//! empty append whose `prev_log_id` is that entry. The follower answers success only if it
//! holds that very log id, and by Raft's log matching property then every entry before it
//! too. The answer openraft gets is the follower's own, checked against its log, never
//! assumed; a conflict forgets the claim and sends the request as it is.
//!
//! What is sent stays bounded: a request larger than the byte bound (the log reader returns
//! more only when it seeks, see `StoreOptions::seek_read_max_bytes`) goes as its longest
//! prefix within the bound, and openraft hears that the follower took the prefix.

use std::collections::HashMap;
use std::sync::Mutex;

use bongsu_raft_store::{Entry, LogId, NodeId};
use openraft::raft::AppendEntriesResponse;

/// Per (group, follower): the last log id the follower said it holds.
#[derive(Default)]
pub struct Claims {
    map: Mutex<HashMap<(u64, NodeId), LogId>>,
}

impl Claims {
    pub fn get(&self, group: u64, node: NodeId) -> Option<LogId> {
        let map = self.map.lock().expect("claims lock poisoned");
        map.get(&(group, node)).copied()
    }

    /// Records that `node` said it holds `log_id`; the highest index said wins (a lower one
    /// is only where an answer happened to stop, not where the follower's log ends).
    pub fn raise(&self, group: u64, node: NodeId, log_id: LogId) {
        let mut map = self.map.lock().expect("claims lock poisoned");
        let c = map.entry((group, node)).or_insert(log_id);
        if log_id.index >= c.index {
            *c = log_id;
        }
    }

    /// Drops what `node` said: it answered a conflict, so its log is not what it was.
    pub fn forget(&self, group: u64, node: NodeId) {
        let mut map = self.map.lock().expect("claims lock poisoned");
        map.remove(&(group, node));
    }
}

/// The entry of `entries` to probe for, given what the follower claims to hold: the last one
/// the claim covers. None when the claim does not reach the first entry, or when the request
/// is a single entry the follower has (sending it costs the same round trip).
pub fn probe_point(claim: Option<LogId>, entries: &[Entry]) -> Option<LogId> {
    let claim = claim?;
    let first = entries.first()?.log_id.index;
    let last = entries.last()?.log_id.index;
    if claim.index < first || (entries.len() == 1 && claim.index >= last) {
        return None;
    }
    let at = claim.index.min(last);
    entries
        .get(usize::try_from(at - first).ok()?)
        .map(|e| e.log_id)
}

/// What openraft hears when the follower accepted a probe at `at`, an entry of `entries`:
/// everything up to `at` is there.
pub fn probed(at: LogId, entries: &[Entry]) -> AppendEntriesResponse<NodeId> {
    if entries.last().map(|e| e.log_id) == Some(at) {
        AppendEntriesResponse::Success
    } else {
        AppendEntriesResponse::PartialSuccess(Some(at))
    }
}

/// How many leading entries fit within `max_bytes` encoded (at least one, whatever its size).
pub fn prefix_within(entries: &[Entry], max_bytes: usize) -> usize {
    let mut bytes = 0usize;
    entries
        .iter()
        .position(|e| {
            let size = postcard::experimental::serialized_size(e).unwrap_or(usize::MAX);
            bytes = bytes.saturating_add(size);
            bytes > max_bytes
        })
        .unwrap_or(entries.len())
        .max(1)
        .min(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, MessageKind, UserId};
    use bongsu_raft_store::messaging::AppendMessage;
    use bongsu_raft_store::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn sized(term: u64, index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(Command::Append(AppendMessage {
                conv_id: ConvId::from_u128(1),
                sender: UserId::from_u128(2),
                device: DeviceId::from_u128(3),
                client_msg_id: ClientMsgId::from_u128(index as u128),
                kind: MessageKind::Text,
                body: vec![b'x'; bytes],
                at_ms: 1,
            })),
        }
    }

    fn range(first: u64, last: u64) -> Vec<Entry> {
        (first..=last).map(|i| blank(2, i)).collect()
    }

    #[test]
    fn probes_the_last_entry_the_claim_covers() {
        let entries = range(10, 20);
        // No claim, or one short of the first entry: nothing to ask, send.
        assert_eq!(probe_point(None, &entries), None);
        assert_eq!(probe_point(Some(id(2, 9)), &entries), None);
        // A claim inside the range: probe there; beyond it: probe the last entry.
        assert_eq!(probe_point(Some(id(2, 14)), &entries), Some(id(2, 14)));
        assert_eq!(probe_point(Some(id(2, 10)), &entries), Some(id(2, 10)));
        assert_eq!(probe_point(Some(id(3, 99)), &entries), Some(id(2, 20)));
        // The probe carries the leader's log id, not the claim's: the follower checks it.
        assert_eq!(probe_point(Some(id(1, 15)), &entries), Some(id(2, 15)));
        // A single entry goes as it is; an empty request has nothing to probe.
        assert_eq!(probe_point(Some(id(2, 30)), &range(10, 10)), None);
        assert_eq!(probe_point(Some(id(2, 30)), &[]), None);
    }

    #[test]
    fn an_accepted_probe_answers_up_to_its_entry() {
        let entries = range(10, 20);
        assert!(matches!(
            probed(id(2, 20), &entries),
            AppendEntriesResponse::Success
        ));
        match probed(id(2, 14), &entries) {
            AppendEntriesResponse::PartialSuccess(Some(m)) => assert_eq!(m, id(2, 14)),
            other => panic!("expected a partial success at 14, got {other:?}"),
        }
    }

    #[test]
    fn claims_keep_the_highest_index_until_a_conflict() {
        let c = Claims::default();
        c.raise(1, 2, id(2, 50));
        c.raise(1, 2, id(2, 40));
        assert_eq!(c.get(1, 2), Some(id(2, 50)));
        c.raise(1, 2, id(3, 60));
        assert_eq!(c.get(1, 2), Some(id(3, 60)));
        // Other groups and followers are separate.
        assert_eq!(c.get(1, 3), None);
        assert_eq!(c.get(2, 2), None);
        c.forget(1, 2);
        assert_eq!(c.get(1, 2), None);
    }

    #[test]
    fn prefixes_stay_within_the_bound_and_never_empty() {
        let entries: Vec<Entry> = (1..=10).map(|i| sized(2, i, 60_000)).collect();
        // Four 60 KB entries fit in 256 KiB, a fifth would not.
        assert_eq!(prefix_within(&entries, 256 << 10), 4);
        // An entry above the bound on its own still goes, alone.
        assert_eq!(prefix_within(&entries, 1_000), 1);
        // Everything fits: everything goes.
        assert_eq!(prefix_within(&entries, 1 << 20), 10);
        assert_eq!(prefix_within(&range(1, 500), 1 << 20), 500);
        assert_eq!(prefix_within(&[], 1 << 20), 0);
    }
}
