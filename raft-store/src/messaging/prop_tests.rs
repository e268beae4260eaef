//! Property tests of the messaging state machine: random command sequences over a small
//! universe (three conversations, four people, a handful of client message ids), applied on
//! a real RocksDB. Whatever the sequence:
//! - seqs are dense: a conversation's messages are exactly 1..=last, each stored once;
//! - dedup is exact: a repeated (sender, client message id) gets the first send's seq back as
//!   a duplicate, a new one the next seq;
//! - membership holds: only a member appends, only a member changes members, a direct chat's
//!   members never change;
//! - a rejected command changes nothing;
//! - two replicas applying the same log in different batches agree, result for result and
//!   key for key.

use std::collections::{BTreeMap, BTreeSet};

use bongsu_proto::model::{ConversationKind, UserId};
use bongsu_proto::ErrorCode;
use proptest::prelude::*;

use super::tests::{conv, create, members, send, view, Harness, ALICE, BOB, CAROL, DAVE};
use crate::{Command, CommandResult, SmConfig};

const PEOPLE: [UserId; 4] = [ALICE, BOB, CAROL, DAVE];

#[derive(Clone, Debug)]
enum Op {
    Create {
        c: u8,
        direct: bool,
        creator: usize,
        others: Vec<usize>,
    },
    Members {
        c: u8,
        actor: usize,
        add: Vec<usize>,
        remove: Vec<usize>,
    },
    Send {
        c: u8,
        sender: usize,
        cmid: u8,
    },
}

fn people() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..PEOPLE.len(), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1..=3u8, any::<bool>(), 0..PEOPLE.len(), people()).prop_map(
            |(c, direct, creator, others)| Op::Create { c, direct, creator, others }
        ),
        1 => (1..=3u8, 0..PEOPLE.len(), people(), people()).prop_map(
            |(c, actor, add, remove)| Op::Members { c, actor, add, remove }
        ),
        4 => (1..=3u8, 0..PEOPLE.len(), 0..6u8).prop_map(|(c, sender, cmid)| Op::Send {
            c,
            sender,
            cmid
        }),
    ]
}

fn who(ix: &[usize]) -> Vec<UserId> {
    let mut v: Vec<UserId> = ix.iter().map(|i| PEOPLE[*i]).collect();
    v.sort_by_key(|u| u.0);
    v.dedup();
    v
}

fn command(op: &Op) -> Command {
    match op {
        Op::Create {
            c,
            direct,
            creator,
            others,
        } => {
            let kind = if *direct {
                ConversationKind::Direct
            } else {
                ConversationKind::Group
            };
            create(*c, kind, PEOPLE[*creator], &who(others))
        }
        Op::Members {
            c,
            actor,
            add,
            remove,
        } => members(*c, PEOPLE[*actor], &who(add), &who(remove)),
        Op::Send { c, sender, cmid } => send(
            *c,
            PEOPLE[*sender],
            u128::from(*cmid),
            &format!("{c}/{sender}/{cmid}"),
        ),
    }
}

/// What the checks remember of the sequence so far.
#[derive(Default)]
struct Model {
    last: BTreeMap<u8, u64>,
    sent: BTreeMap<(u8, usize, u8), u64>,
    direct: BTreeSet<u8>,
}

fn code(r: &CommandResult) -> Option<ErrorCode> {
    match r {
        CommandResult::Rejected(rej) => Some(rej.code),
        _ => None,
    }
}

async fn run(ops: Vec<Op>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let mut a = Harness::new(SmConfig::default());
    let mut model = Model::default();
    let mut results = Vec::new();
    for op in &ops {
        let before = a.state();
        let members_before: BTreeSet<UserId> = match op {
            Op::Members { c, .. } | Op::Send { c, .. } => view(&a.sm)
                .members(&conv(*c))
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .into_iter()
                .map(|(u, _)| u)
                .collect(),
            Op::Create { .. } => BTreeSet::new(),
        };
        let r = a.run(command(op)).await;
        if code(&r).is_some() {
            prop_assert_eq!(
                &a.state(),
                &before,
                "{:?} was rejected ({:?}) but changed state",
                op,
                r
            );
        }
        match (op, &r) {
            (Op::Create { c, direct, .. }, CommandResult::Created { existed: false, .. }) => {
                prop_assert!(!model.last.contains_key(c), "{:?} created twice", c);
                model.last.insert(*c, 0);
                if *direct {
                    model.direct.insert(*c);
                }
            }
            (Op::Members { c, actor, .. }, CommandResult::MembersChanged { member_count }) => {
                prop_assert!(
                    members_before.contains(&PEOPLE[*actor]),
                    "a non-member changed {:?}'s members",
                    c
                );
                prop_assert!(!model.direct.contains(c), "a direct chat's members changed");
                let now = view(&a.sm)
                    .members(&conv(*c))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(now.len() as u32, *member_count);
            }
            (Op::Send { c, sender, cmid }, r) => {
                let expected = if !model.last.contains_key(c) {
                    Err(ErrorCode::UnknownConversation)
                } else if !members_before.contains(&PEOPLE[*sender]) {
                    Err(ErrorCode::NotMember)
                } else if let Some(seq) = model.sent.get(&(*c, *sender, *cmid)) {
                    Ok((*seq, true))
                } else {
                    Ok((model.last[c] + 1, false))
                };
                match (expected, r) {
                    (
                        Ok((seq, dup)),
                        CommandResult::Appended {
                            seq: got,
                            duplicate,
                        },
                    ) => {
                        prop_assert_eq!((seq, dup), (*got, *duplicate), "{:?}", op);
                        if !dup {
                            model.last.insert(*c, seq);
                            model.sent.insert((*c, *sender, *cmid), seq);
                        }
                    }
                    (Err(want), r) => prop_assert_eq!(Some(want), code(r), "{:?}", op),
                    (want, got) => {
                        prop_assert!(false, "{:?}: expected {:?}, got {:?}", op, want, got)
                    }
                }
            }
            _ => {}
        }
        results.push(r);
    }

    // Dense seqs, each message the send that got its seq.
    let v = view(&a.sm);
    for (c, last) in &model.last {
        let msgs = v
            .read_from(&conv(*c), 1, 1000)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        prop_assert_eq!(seqs, (1..=*last).collect::<Vec<_>>());
        for ((cc, sender, cmid), seq) in &model.sent {
            if cc == c {
                let m = &msgs[(*seq - 1) as usize];
                prop_assert_eq!(m.sender, PEOPLE[*sender]);
                let body = format!("{c}/{sender}/{cmid}");
                prop_assert_eq!(&m.body, body.as_bytes());
            }
        }
    }

    // Another replica, the same log in other batches: the same results and the same keys.
    let mut b = Harness::new(SmConfig::default());
    let mut cmds: Vec<Command> = ops.iter().map(command).collect();
    let mut b_results = Vec::new();
    let mut cuts = cuts.into_iter();
    while !cmds.is_empty() {
        let n = cuts.next().unwrap_or(cmds.len()).clamp(1, cmds.len());
        let rest = cmds.split_off(n);
        b_results.extend(b.run_all(cmds).await);
        cmds = rest;
    }
    prop_assert_eq!(results, b_results);
    prop_assert!(a.state() == b.state(), "the replicas' keys differ");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_keeps_the_messaging_rules(
        ops in proptest::collection::vec(op(), 1..40),
        cuts in proptest::collection::vec(1..8usize, 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, cuts))?;
    }
}
