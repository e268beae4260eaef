//! The checkers, checked: each case breaks the clean history in one way and names what every
//! checker must report about it.

use super::*;
use crate::history::{Op, Outcome, ReplicaDigest};
use crate::testing::*;

struct Case {
    name: &'static str,
    /// Turns the clean history into the one under test.
    mutate: fn(&mut History),
    /// How many violations each property must report; unlisted properties report none.
    expect: &'static [(&'static str, usize)],
    /// Text the violations' details must contain, e.g. the node that differs.
    mentions: &'static [&'static str],
}

fn push(h: &mut History, op: impl FnOnce(u64) -> Op) {
    let id = next_id(h);
    h.ops.push(op(id));
}

const CASES: &[Case] = &[
    Case {
        name: "clean history",
        mutate: |_| {},
        expect: &[],
        mentions: &[],
    },
    Case {
        name: "order: a client's later ack has a lower seq",
        mutate: |h| push(h, |id| send(id, 250, CONV_A, SHARD_A, ALICE, 99, sent(1))),
        expect: &[(no_lost_ack::PROPERTY, 1), (same_order::PROPERTY, 1)],
        mentions: &["acked seqs go back: op 2 got seq 2"],
    },
    Case {
        name: "lost ack: the conversation's log lost an acked message",
        mutate: |h| log(h, CONV_B).truncate(1),
        expect: &[(no_lost_ack::PROPERTY, 1)],
        mentions: &["op 7", "has no seq 2"],
    },
    Case {
        name: "lost ack: the conversation has no final log",
        mutate: |h| {
            h.final_state.logs.remove(&CONV_B);
        },
        expect: &[(no_lost_ack::PROPERTY, 2)],
        mentions: &["no final log"],
    },
    Case {
        name: "lost ack: another message took its seq",
        mutate: |h| log(h, CONV_B)[0] = msg(1, BOB, 77),
        expect: &[(no_lost_ack::PROPERTY, 1)],
        mentions: &["op 5", "nowhere else"],
    },
    Case {
        name: "lost ack: same sender and id, different body",
        mutate: |h| log(h, CONV_B)[0].body_crc ^= 1,
        expect: &[(no_lost_ack::PROPERTY, 1)],
        mentions: &["op 5"],
    },
    Case {
        name: "duplicate: an acked message stored twice",
        mutate: |h| log(h, CONV_A).push(msg(5, ALICE, 1)),
        expect: &[(no_duplicate::PROPERTY, 1)],
        mentions: &["seqs [1, 5]", "op 1 acked seq 1"],
    },
    Case {
        name: "duplicate: two acks of one message with different seqs",
        mutate: |h| {
            log(h, CONV_A).push(msg(5, ALICE, 1));
            push(h, |id| send(id, 3600, CONV_A, SHARD_A, ALICE, 1, sent(5)));
        },
        expect: &[(no_duplicate::PROPERTY, 1)],
        mentions: &["seqs [1, 5]", "acks disagree"],
    },
    Case {
        name: "duplicate: a retry acked with a seq the log does not hold it at",
        mutate: |h| {
            push(h, |id| {
                send(
                    id,
                    3600,
                    CONV_A,
                    SHARD_A,
                    ALICE,
                    1,
                    Outcome::Sent {
                        seq: 3,
                        duplicate: true,
                    },
                )
            })
        },
        expect: &[(no_lost_ack::PROPERTY, 1), (no_duplicate::PROPERTY, 1)],
        mentions: &[
            "acks disagree: seq 1 by ops [1], seq 3 by ops [11]",
            "(dedup hit)",
        ],
    },
    Case {
        name: "timeout: a timed-out send present once is fine",
        mutate: |_| {},
        expect: &[],
        mentions: &[],
    },
    Case {
        name: "timeout: a timed-out send that never landed is fine",
        mutate: |h| log(h, CONV_A).truncate(3),
        // The read saw seq 4 before it was lost, which only a read can be blamed for.
        expect: &[(no_vanished_read::PROPERTY, 1)],
        mentions: &["read op 8"],
    },
    Case {
        name: "timeout: a timed-out send that never landed and was never read is fine",
        mutate: |h| {
            log(h, CONV_A).truncate(3);
            read_result(h).truncate(2);
        },
        expect: &[],
        mentions: &[],
    },
    Case {
        name: "timeout: a timed-out send retried and acked with its original seq is fine",
        mutate: |h| {
            push(h, |id| {
                send(
                    id,
                    3600,
                    CONV_A,
                    SHARD_A,
                    BOB,
                    4,
                    Outcome::Sent {
                        seq: 4,
                        duplicate: true,
                    },
                )
            })
        },
        expect: &[],
        mentions: &[],
    },
    Case {
        name: "timeout: a timed-out send present twice is a duplicate",
        mutate: |h| log(h, CONV_A).push(msg(5, BOB, 4)),
        expect: &[(no_duplicate::PROPERTY, 1)],
        mentions: &["seqs [4, 5]", "op 4 timed out"],
    },
    Case {
        name: "reorder: a read saw two messages in the other order",
        mutate: |h| {
            let r = read_result(h);
            r[0] = msg(2, BOB, 3);
            r[1] = msg(3, ALICE, 2);
        },
        expect: &[(same_order::PROPERTY, 1)],
        mentions: &["read op 8", "which the final log has at seq [3]"],
    },
    Case {
        name: "reorder: the final log swapped two acked messages",
        mutate: |h| {
            let l = log(h, CONV_A);
            l[1] = msg(2, BOB, 3);
            l[2] = msg(3, ALICE, 2);
        },
        // Both acks now point at the wrong message, and the read saw the acked order.
        expect: &[(no_lost_ack::PROPERTY, 2), (same_order::PROPERTY, 1)],
        mentions: &["op 2 (client", "(the message is at seq [3])", "read op 8"],
    },
    Case {
        name: "gap: the final log is out of order",
        mutate: |h| log(h, CONV_A).swap(1, 2),
        expect: &[(same_order::PROPERTY, 1)],
        mentions: &["the final log is not dense: expected seq 2, found seq 3"],
    },
    Case {
        name: "gap: the final log skips a seq",
        mutate: |h| log(h, CONV_A)[3].seq = 5,
        expect: &[(same_order::PROPERTY, 2), (no_vanished_read::PROPERTY, 0)],
        mentions: &["expected seq 4, found seq 5"],
    },
    Case {
        name: "gap: a read skipped a seq",
        mutate: |h| {
            read_result(h).remove(1);
        },
        expect: &[(same_order::PROPERTY, 1)],
        mentions: &["expected seq 3, got seq 4 (a gap)"],
    },
    Case {
        name: "gap: a read started after the seq it asked for",
        mutate: |h| {
            read_result(h).remove(0);
        },
        expect: &[(same_order::PROPERTY, 1)],
        mentions: &["expected seq 2, got seq 3 (a gap)"],
    },
    Case {
        name: "gap: a read went backwards",
        mutate: |h| read_result(h).push(msg(3, BOB, 3)),
        expect: &[(same_order::PROPERTY, 1)],
        mentions: &["expected seq 5, got seq 3 (out of order)"],
    },
    Case {
        name: "vanished: a read saw a message past the end of the final log",
        mutate: |h| read_result(h).push(msg(5, ALICE, 99)),
        expect: &[(no_vanished_read::PROPERTY, 1)],
        mentions: &["seq 5", "client_msg_id=00000000000000000000000000000063"],
    },
    Case {
        name: "vanished: a read saw a message later overwritten at its seq",
        mutate: |h| read_result(h)[1] = msg(3, EVE, 98),
        expect: &[(no_vanished_read::PROPERTY, 1)],
        mentions: &["read op 8", "seq 3"],
    },
    Case {
        name: "vanished: a read saw messages of a conversation that has no final log",
        mutate: |h| {
            let id = next_id(h);
            let conv = 0xdead;
            h.ops.push(read(
                id,
                3000,
                conv,
                9,
                ALICE,
                true,
                1,
                read_ok(&[msg(1, ALICE, 1)]),
            ));
        },
        expect: &[(no_vanished_read::PROPERTY, 1)],
        mentions: &["final log (0 messages)"],
    },
    Case {
        name: "non-member: a non-member read returned data",
        mutate: |h| h.ops[8].outcome = read_ok(&[msg(1, ALICE, 1)]),
        expect: &[(non_member::PROPERTY, 1)],
        mentions: &[
            "non-member 00000000000000000000000000000e7e",
            "returned 1 message",
        ],
    },
    Case {
        name: "non-member: a non-member read succeeded with nothing to return",
        mutate: |h| h.ops[8].outcome = read_ok(&[]),
        expect: &[(non_member::PROPERTY, 1)],
        mentions: &["instead of failing with NOT_MEMBER"],
    },
    Case {
        name: "non-member: a non-member read that failed otherwise leaked nothing",
        mutate: |h| h.ops[8].outcome = failed("UNAVAILABLE"),
        expect: &[],
        mentions: &[],
    },
    Case {
        name: "replicas: one replica's digest differs",
        mutate: |h| h.final_state.replicas.get_mut(&SHARD_A).expect("shard A")[1].digest = 0xbad,
        expect: &[(replicas_identical::PROPERTY, 1)],
        mentions: &[
            "shard 1: node 2 has digest 0000000000000bad",
            "nodes [1, 3]",
        ],
    },
    Case {
        name: "replicas: one replica is behind",
        mutate: |h| {
            h.final_state.replicas.get_mut(&SHARD_B).expect("shard B")[2] = ReplicaDigest {
                node: 3,
                applied_index: 8,
                digest: 0xd0,
            }
        },
        expect: &[(replicas_identical::PROPERTY, 1)],
        mentions: &[
            "shard 2: node 3 applied index 8",
            "nodes [1, 2] applied index 9",
        ],
    },
    Case {
        name: "replicas: all three differ",
        mutate: |h| {
            let r = h.final_state.replicas.get_mut(&SHARD_B).expect("shard B");
            r[1].digest = 0xe1;
            r[2].digest = 0xe2;
        },
        expect: &[(replicas_identical::PROPERTY, 2)],
        mentions: &[],
    },
];

#[test]
fn checkers() {
    for case in CASES {
        let mut h = clean_history();
        (case.mutate)(&mut h);
        let report = check_all(&h);
        for (property, _) in CHECKERS {
            let want = case
                .expect
                .iter()
                .find(|(p, _)| p == property)
                .map_or(0, |(_, n)| *n);
            let got: Vec<&Violation> = report
                .violations
                .iter()
                .filter(|v| v.property == *property)
                .collect();
            assert_eq!(got.len(), want, "{}: {property}: {got:#?}", case.name);
        }
        let all: String = report.violations.iter().map(|v| format!("{v}\n")).collect();
        for text in case.mentions {
            assert!(
                all.contains(text),
                "{}: expected {text:?} in\n{all}",
                case.name
            );
        }
    }
}

#[test]
fn reports_a_lost_ack_a_duplicate_and_a_reorder_in_one_history() {
    let mut h = clean_history();
    log(&mut h, CONV_B).truncate(1); // lost: op 7's seq 2
    log(&mut h, CONV_A).push(msg(5, ALICE, 2)); // duplicate of seq 2
    let r = read_result(&mut h); // reorder: the read saw 2 and 3 swapped
    r[0] = msg(2, BOB, 3);
    r[1] = msg(3, ALICE, 2);

    let report = check_all(&h);
    let properties: Vec<&str> = report.violations.iter().map(|v| v.property).collect();
    assert_eq!(
        properties,
        [
            no_lost_ack::PROPERTY,
            no_duplicate::PROPERTY,
            same_order::PROPERTY
        ],
        "{report:#?}"
    );
    assert_eq!(report.violations[0].conv, Some(CONV_B));
    assert_eq!(report.violations[1].conv, Some(CONV_A));
    assert_eq!(
        report.summary,
        Summary {
            acked: 5,
            lost: 1,
            duplicated: 1,
            reordered: 1,
            replica_mismatches: 0,
            non_member_leaks: 0
        }
    );
    assert!(!report.is_clean());
}

#[test]
fn summary_counts_each_property() {
    let mut h = clean_history();
    read_result(&mut h).push(msg(5, ALICE, 99)); // vanished counts as reordered
    h.ops[8].outcome = read_ok(&[msg(1, ALICE, 1)]);
    h.final_state.replicas.get_mut(&SHARD_A).expect("shard A")[0].digest = 1;
    let report = check_all(&h);
    assert_eq!(
        report.summary,
        Summary {
            acked: 5,
            lost: 0,
            duplicated: 0,
            reordered: 1,
            replica_mismatches: 1,
            non_member_leaks: 1
        }
    );
}

#[test]
fn clean_history_is_clean() {
    let report = check_all(&clean_history());
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(
        report.summary,
        Summary {
            acked: 5,
            ..Summary::default()
        }
    );
}

#[test]
fn violation_display_names_property_and_conversation() {
    let v = Violation {
        property: "no_lost_ack",
        conv: Some(0xab),
        detail: "gone".into(),
    };
    assert_eq!(
        v.to_string(),
        "no_lost_ack conv=000000000000000000000000000000ab: gone"
    );
    let v = Violation {
        property: "replicas_identical",
        conv: None,
        detail: "differs".into(),
    };
    assert_eq!(v.to_string(), "replicas_identical: differs");
}
