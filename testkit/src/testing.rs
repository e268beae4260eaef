//! Hand-made histories for the unit tests.

use std::collections::BTreeMap;

use crate::history::{
    Fault, FinalState, History, Load, Ms, Op, OpKind, Outcome, ReplicaDigest, Seen,
};

pub const CONV_A: u128 = 0x0a0a_0000_0000_0000_0000_0000_0000_00aa;
pub const CONV_B: u128 = 0x0b0b_0000_0000_0000_0000_0000_0000_00bb;
pub const SHARD_A: u32 = 1;
pub const SHARD_B: u32 = 2;
pub const ALICE: u128 = 0xa11ce;
pub const BOB: u128 = 0xb0b;
pub const EVE: u128 = 0xe7e;

/// The body CRC of the test message with client message id `cmid`.
pub fn crc(cmid: u128) -> u32 {
    (cmid as u32).wrapping_mul(0x9e37_79b9)
}

pub fn msg(seq: u64, sender: u128, cmid: u128) -> Seen {
    Seen {
        seq,
        sender,
        client_msg_id: cmid,
        body_crc: crc(cmid),
    }
}

pub fn sent(seq: u64) -> Outcome {
    Outcome::Sent {
        seq,
        duplicate: false,
    }
}

pub fn failed(code: &str) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
    }
}

pub fn read_ok(messages: &[Seen]) -> Outcome {
    Outcome::ReadOk {
        messages: messages.to_vec(),
    }
}

/// A send answered 5 ms after it was issued, or never if it timed out.
pub fn send(
    id: u64,
    invoke: Ms,
    conv: u128,
    shard: u32,
    sender: u128,
    cmid: u128,
    outcome: Outcome,
) -> Op {
    let complete = (outcome != Outcome::Timeout).then_some(invoke + 5);
    let kind = OpKind::Send {
        conv,
        shard,
        sender,
        client_msg_id: cmid,
        body_crc: crc(cmid),
    };
    Op {
        id,
        client: sender as u32,
        invoke,
        complete,
        kind,
        outcome,
    }
}

/// A read answered 3 ms after it was issued, or never if it timed out.
#[allow(clippy::too_many_arguments)] // One argument per field of the op, as in `send`.
pub fn read(
    id: u64,
    invoke: Ms,
    conv: u128,
    shard: u32,
    reader: u128,
    member: bool,
    from_seq: u64,
    outcome: Outcome,
) -> Op {
    let complete = (outcome != Outcome::Timeout).then_some(invoke + 3);
    Op {
        id,
        client: reader as u32,
        invoke,
        complete,
        kind: OpKind::Read {
            conv,
            shard,
            reader,
            member,
            from_seq,
        },
        outcome,
    }
}

pub fn replicas(applied_index: u64, digest: u64) -> Vec<ReplicaDigest> {
    (1..=3)
        .map(|node| ReplicaDigest {
            node,
            applied_index,
            digest,
        })
        .collect()
}

/// A history that breaks nothing, with a little of everything: acks, a timed-out send whose
/// message landed, a failed send retried, member and non-member reads, one healed fault.
pub fn clean_history() -> History {
    let ops = vec![
        send(1, 100, CONV_A, SHARD_A, ALICE, 1, sent(1)),
        send(2, 200, CONV_A, SHARD_A, ALICE, 2, sent(2)),
        send(3, 1200, CONV_A, SHARD_A, BOB, 3, sent(3)),
        send(4, 2100, CONV_A, SHARD_A, BOB, 4, Outcome::Timeout),
        send(5, 1300, CONV_B, SHARD_B, ALICE, 5, sent(1)),
        send(6, 2200, CONV_B, SHARD_B, ALICE, 6, failed("UNAVAILABLE")),
        send(7, 3300, CONV_B, SHARD_B, ALICE, 6, sent(2)),
        read(
            8,
            3400,
            CONV_A,
            SHARD_A,
            BOB,
            true,
            2,
            read_ok(&[msg(2, ALICE, 2), msg(3, BOB, 3), msg(4, BOB, 4)]),
        ),
        read(
            9,
            3500,
            CONV_A,
            SHARD_A,
            EVE,
            false,
            1,
            failed("NOT_MEMBER"),
        ),
        read(10, 2500, CONV_B, SHARD_B, ALICE, true, 1, Outcome::Timeout),
    ];
    let logs = BTreeMap::from([
        (
            CONV_A,
            vec![
                msg(1, ALICE, 1),
                msg(2, ALICE, 2),
                msg(3, BOB, 3),
                msg(4, BOB, 4),
            ],
        ),
        (CONV_B, vec![msg(1, ALICE, 5), msg(2, ALICE, 6)]),
    ]);
    History {
        scenario: "dc-kill".to_owned(),
        seed: 42,
        load: None,
        faults: vec![Fault {
            name: "dc-kill".to_owned(),
            start: 2000,
            end: Some(3000),
            target: "dc2".to_owned(),
            catch_up: None,
        }],
        ops,
        final_state: FinalState {
            logs,
            replicas: BTreeMap::from([(SHARD_A, replicas(12, 0xd1)), (SHARD_B, replicas(9, 0xd2))]),
        },
    }
}

/// The final log of `conv`.
pub fn log(h: &mut History, conv: u128) -> &mut Vec<Seen> {
    h.final_state
        .logs
        .get_mut(&conv)
        .expect("the test history has this conversation")
}

/// The next free op id.
pub fn next_id(h: &History) -> u64 {
    h.ops.iter().map(|op| op.id).max().unwrap_or(0) + 1
}

/// The successful read (op 8) of the clean history.
pub fn read_result(h: &mut History) -> &mut Vec<Seen> {
    let op = h
        .ops
        .iter_mut()
        .find(|op| op.id == 8)
        .expect("op 8 is the member read");
    match &mut op.outcome {
        Outcome::ReadOk { messages } => messages,
        other => panic!("op 8 is a successful read, not {other:?}"),
    }
}

/// A calibrated load as a scenario records it: 12 MB/s measured, half of it offered.
pub fn sample_load() -> Load {
    Load {
        writers: 48,
        calibration_ms: 4000,
        capacity_bytes_per_s: 12_000_000,
        capacity_msgs_per_s: 1700,
        share_percent: 50,
        rate_bytes_per_s: 6_000_000,
        rate_msgs_per_s: 850,
        achieved_bytes_per_s: 5_900_000,
        achieved_msgs_per_s: 840,
    }
}
