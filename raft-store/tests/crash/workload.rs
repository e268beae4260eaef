//! What the child writes and the parent expects: the groups, the entries, and the line
//! protocol in which the child reports what it has acknowledged.
//!
//! Every entry is a pure function of its group and index (only its term depends on the run),
//! so the checker can rebuild the exact entry it expects and compare it with what the store
//! returns, byte for byte, without the child having to tell it anything but indexes.

use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, MessageKind, UserId};
use bongsu_raft_store::messaging::AppendMessage;
use bongsu_raft_store::{Command, Entry, NodeId};

/// The groups the child writes. They are far apart in key space on purpose: the two smallest
/// are adjacent prefixes, and the two largest sit just under `u64::MAX`, where an off-by-one
/// in a range bound would let one group's scan run into its neighbour's keys.
pub const GROUPS: [u64; 6] = [1, 2, 1000, 1 << 40, u64::MAX - 2, u64::MAX - 1];

/// The node id the child writes votes and log ids as.
pub const NODE_ID: NodeId = 7;

/// Entries per group between two vote changes (a new "term").
pub const ENTRIES_PER_TERM: u64 = 50;

/// The largest number of entries the child appends in one call.
pub const MAX_BATCH: u64 = 5;

/// The entry expected at `index` of `group`, written in `term`.
pub fn entry(group: u64, term: u64, index: u64) -> Entry {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, NODE_ID), index),
        payload: openraft::EntryPayload::Normal(Command::Append(message(group, index))),
    }
}

fn message(group: u64, index: u64) -> AppendMessage {
    let key = (u128::from(group) << 64) | u128::from(index);
    AppendMessage {
        conv_id: ConvId::from_u128(u128::from(group)),
        sender: UserId::from_u128(u128::from(index % 17)),
        device: DeviceId::from_u128(key ^ 0x5a5a),
        client_msg_id: ClientMsgId::from_u128(key),
        // Sealed bodies are opaque bytes, which is what the filler is.
        kind: MessageKind::Sealed,
        body: body(group, index),
        at_ms: 1_700_000_000_000 + index,
    }
}

/// A readable header naming the entry, then 200 to 300 bytes in all of filler that differs for
/// every (group, index), so that an entry stored under the wrong key, or a torn or mixed-up
/// value, cannot compare equal to the expected one.
fn body(group: u64, index: u64) -> Vec<u8> {
    let mut state = splitmix64(group ^ splitmix64(index));
    let len = 200 + (state % 101) as usize;
    let mut out = format!("group={group} index={index} ").into_bytes();
    while out.len() < len {
        state = splitmix64(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SplitMix64: a tiny, well-mixed deterministic generator, enough to make filler that no
/// two entries share.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One line of the child's report, printed whole with a single write to a pipe, so lines of
/// concurrent tasks never interleave and a kill never leaves half of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `APPEND <group> <first> <last> <term>`: printed just before appending entries
    /// `first..=last` of `term`; the append may or may not land.
    Append {
        group: u64,
        first: u64,
        last: u64,
        term: u64,
    },
    /// `ACK <group> <last>`: the store said the append ending at `last` is durable.
    Ack { group: u64, last: u64 },
    /// `VOTE <group> <term>`: the store said a vote of `term` is durable.
    Vote { group: u64, term: u64 },
}

impl Report {
    /// The line for this report, newline included.
    pub fn line(&self) -> String {
        match self {
            Report::Append {
                group,
                first,
                last,
                term,
            } => format!("APPEND {group} {first} {last} {term}\n"),
            Report::Ack { group, last } => format!("ACK {group} {last}\n"),
            Report::Vote { group, term } => format!("VOTE {group} {term}\n"),
        }
    }

    /// Parses one line without its newline. `None` if it is not a report at all (the child is
    /// a libtest binary and prints its own lines too); an error if it claims to be one but
    /// does not parse, which is a bug in this test.
    pub fn parse(line: &str) -> Option<Result<Report, String>> {
        let mut words = line.split(' ');
        let kind = words.next()?;
        if !["APPEND", "ACK", "VOTE"].contains(&kind) {
            return None;
        }
        let nums: Result<Vec<u64>, _> = words.map(str::parse::<u64>).collect();
        let report = match (kind, nums.as_deref()) {
            ("APPEND", Ok(&[group, first, last, term])) if first <= last => Report::Append {
                group,
                first,
                last,
                term,
            },
            ("ACK", Ok(&[group, last])) => Report::Ack { group, last },
            ("VOTE", Ok(&[group, term])) => Report::Vote { group, term },
            _ => return Some(Err(format!("malformed report line {line:?}"))),
        };
        Some(Ok(report))
    }
}

#[test]
fn reports_round_trip_and_bodies_differ() {
    let reports = [
        Report::Append {
            group: u64::MAX - 1,
            first: 5,
            last: 9,
            term: 3,
        },
        Report::Ack {
            group: u64::MAX - 1,
            last: 9,
        },
        Report::Vote {
            group: 1000,
            term: 12,
        },
    ];
    for r in reports {
        let line = r.line();
        assert_eq!(Report::parse(line.trim_end_matches('\n')), Some(Ok(r)));
    }
    assert_eq!(Report::parse("running 1 test"), None);
    assert!(matches!(Report::parse("ACK 1"), Some(Err(_))));
    assert!(matches!(Report::parse("ACK 1 2 "), Some(Err(_))));
    assert!(matches!(Report::parse("APPEND 1 9 5 1"), Some(Err(_))));
    assert!(body(1, 2) != body(2, 1) && body(1, 2) == body(1, 2));
    assert!((200..=300).contains(&body(u64::MAX - 1, 0).len()));
}
