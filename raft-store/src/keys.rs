//! Key layout: four column families shared by every group, keys prefixed by the group id, and
//! one for the node itself.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `log` | group(8) · index(8) | one log entry |
//! | `raft` | group(8) · tag(1) | vote, committed log id, last purged log id |
//! | `sm` | group(8) · tag(1) · … | state machine: tag `00` the applied state, the rest its machines' (see [`crate::apply`]) |
//! | `snap` | group(8) · `01` | the group's current snapshot: meta and the name of its file (see [`crate::snapshot`]) |
//! | `node` | `identity` | the data directory's identity (see [`crate::identity`]) |
//!
//! All integers are big-endian so that RocksDB's bytewise order is numeric order, which makes
//! a group's log one contiguous range and "last entry" one reverse seek.
//! Column families per group were rejected: each carries its own memtables and flush work, and
//! thousands of them per node would cost far more memory and background IO than prefixes do.

use crate::GroupId;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_SM: &str = "sm";
pub const CF_SNAP: &str = "snap";
/// The node's own records, not any group's: the data directory's identity.
pub const CF_NODE: &str = "node";
pub const ALL_CFS: [&str; 5] = [CF_LOG, CF_RAFT, CF_SM, CF_SNAP, CF_NODE];

pub const RAFT_VOTE: u8 = 1;
pub const RAFT_COMMITTED: u8 = 2;
pub const RAFT_PURGED: u8 = 3;

/// The `sm` tag of a group's applied log id and membership, written with every apply batch;
/// snapshots leave it out (each install writes its own).
pub const TAG_APPLIED: u8 = 0x00;

pub fn group_prefix(group: GroupId) -> [u8; 8] {
    group.to_be_bytes()
}

/// The first key after every key of `group`, as an exclusive upper bound.
pub fn group_end(group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // The largest group id: every key of it starts with eight 0xff bytes, and no 9-byte
        // string of 0xff is shorter, so this bound is above all of them.
        None => vec![0xff; 32],
    }
}

pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Splits a log key into group and index; `None` if it is not 16 bytes.
pub fn parse_log_key(key: &[u8]) -> Option<(GroupId, u64)> {
    let g: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let i: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    (key.len() == 16).then(|| (u64::from_be_bytes(g), u64::from_be_bytes(i)))
}

pub fn raft_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag;
    k
}

/// Builds a state-machine key: group prefix, then the given parts in order.
pub fn sm_key(group: GroupId, parts: &[&[u8]]) -> Vec<u8> {
    let len = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(&group.to_be_bytes());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The `snap` key of a group's snapshot record.
pub fn snap_key(g: GroupId) -> [u8; 9] {
    raft_key(g, crate::snapshot::RECORD_TAG)
}

pub fn applied_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_APPLIED]])
}

/// The exclusive end of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: nothing sorts after it except longer keys; callers never pass such a prefix
    // because every prefix here starts with a group id below u64::MAX or a tag below 0xff.
    vec![0xff; prefix.len() + 1]
}

/// Renders a key for error messages: hex, so any byte string prints.
pub fn display_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let keys = [
            log_key(1, 5),
            log_key(1, 300),
            log_key(2, 0),
            log_key(2, u64::MAX - 1),
        ];
        let mut sorted = keys;
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(log_key(1, u64::MAX - 1).as_slice() < group_end(1).as_slice());
        assert!(log_key(u64::MAX, u64::MAX).as_slice() < group_end(u64::MAX).as_slice());
        assert_eq!(parse_log_key(&log_key(7, 9)), Some((7, 9)));
        assert_eq!(parse_log_key(&[1, 2, 3]), None);
    }
}
