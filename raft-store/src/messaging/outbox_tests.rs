//! Tests of the outbox (conversation shard side), the user conversation index and user events
//! (user shard side), and the merged subscriber stream.

use bongsu_proto::model::{ConversationKind, UserId};
use bongsu_proto::ErrorCode;

use super::layout::{OutboxEntry, UserConvRecord, UserEvent, UserEventKind};
use super::tests::{conv, create, members, send, view, Harness, ALICE, BOB, CAROL, DAVE};
use super::*;
use crate::{Command, CommandResult, SmConfig};

/// The outbox as (log index, user, conv byte, joined).
fn outbox(h: &Harness) -> Vec<(u64, UserId, u8, bool)> {
    view(&h.sm)
        .outbox(10_000)
        .unwrap()
        .into_iter()
        .map(|p| (p.log_index, p.user, p.entry.conv.0[0], p.entry.joined))
        .collect()
}

fn user_conv(user: UserId, c: u8, joined: bool, version: u64) -> Command {
    Command::UserConv(UserConv {
        user,
        conv_id: conv(c),
        joined,
        version,
    })
}

/// Every user event of the shard's stream, with its log index.
fn user_events(h: &Harness) -> Vec<(u64, UserEvent)> {
    view(&h.sm)
        .shard_events_after(0, 10_000)
        .unwrap()
        .into_iter()
        .flat_map(|(i, e)| match e {
            ShardEvent::Users(us) => {
                assert!(!us.is_empty(), "an empty user event list at {i}");
                us.into_iter().map(|u| (i, u)).collect()
            }
            ShardEvent::Message(_) => Vec::new(),
        })
        .collect()
}

fn event(user: UserId, c: u8, kind: UserEventKind, seq: u64) -> UserEvent {
    UserEvent {
        user,
        conv: conv(c),
        kind,
        seq,
    }
}

#[tokio::test]
async fn creating_records_every_member_once_and_a_repeat_nothing() {
    let mut h = Harness::new(SmConfig::default());
    let signal = h.sm.view_store();
    assert!(signal.group_signal().dirty().is_empty());
    // Entry 1; the creator is listed among the members too, and counts once.
    h.run(create(
        1,
        ConversationKind::Group,
        ALICE,
        &[BOB, CAROL, ALICE],
    ))
    .await;
    let mut want = vec![(1, ALICE, 1, true), (1, BOB, 1, true), (1, CAROL, 1, true)];
    want.sort();
    assert_eq!(outbox(&h), want);
    assert_eq!(signal.group_signal().dirty(), vec![h.sm.group()]);

    // A retried creation succeeds and records nothing more.
    let state = h.state();
    assert_eq!(
        h.run(create(1, ConversationKind::Group, ALICE, &[BOB, CAROL]))
            .await,
        CommandResult::Created {
            conv_id: conv(1),
            existed: true
        }
    );
    assert_eq!(h.state(), state);

    // A channel records its owner.
    h.run(create(2, ConversationKind::Channel, DAVE, &[])).await;
    assert!(outbox(&h).contains(&(3, DAVE, 2, true)));
}

#[tokio::test]
async fn membership_changes_record_who_joined_and_left() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await; // 1
    h.run(Command::OutboxDone(OutboxDone {
        delivered: vec![(1, ALICE), (1, BOB)],
    }))
    .await; // 2
    assert!(view(&h.sm).outbox_is_empty().unwrap());

    // Entry 3: Carol and Dave join, Bob is removed; Alice (already in) is not recorded.
    h.run(members(1, ALICE, &[CAROL, DAVE, ALICE], &[BOB]))
        .await;
    assert_eq!(
        outbox(&h),
        vec![(3, BOB, 1, false), (3, CAROL, 1, true), (3, DAVE, 1, true)]
    );

    // The same change again changes nobody: nothing recorded.
    let state = h.state();
    assert_eq!(
        h.run(members(1, ALICE, &[CAROL, DAVE], &[BOB])).await,
        CommandResult::MembersChanged { member_count: 3 }
    );
    assert_eq!(h.state(), state);

    // Leaving by oneself is recorded too.
    h.run(members(1, DAVE, &[], &[DAVE])).await; // 5
    assert!(outbox(&h).contains(&(5, DAVE, 1, false)));
}

#[tokio::test]
async fn rejected_membership_commands_record_nothing() {
    let cfg = SmConfig {
        max_group_members: 3,
        ..SmConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    h.run(create(2, ConversationKind::Direct, ALICE, &[BOB]))
        .await;
    let state = h.state();
    let table: Vec<(&str, Command, ErrorCode)> = vec![
        (
            "non-member adds",
            members(1, CAROL, &[DAVE], &[]),
            ErrorCode::NotMember,
        ),
        (
            "member removes another",
            members(1, BOB, &[], &[ALICE]),
            ErrorCode::NotOwner,
        ),
        (
            "too many",
            members(1, ALICE, &[CAROL, DAVE], &[]),
            ErrorCode::TooManyMembers,
        ),
        (
            "direct changes",
            members(2, ALICE, &[CAROL], &[]),
            ErrorCode::DirectImmutable,
        ),
        (
            "unknown conversation",
            members(9, ALICE, &[CAROL], &[]),
            ErrorCode::UnknownConversation,
        ),
        (
            "exists with another creator",
            create(1, ConversationKind::Group, BOB, &[ALICE]),
            ErrorCode::ConversationExists,
        ),
        (
            "group too big",
            create(3, ConversationKind::Group, ALICE, &[BOB, CAROL, DAVE]),
            ErrorCode::TooManyMembers,
        ),
    ];
    for (name, cmd, code) in table {
        match h.run(cmd).await {
            CommandResult::Rejected(r) => assert_eq!(r.code, code, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(h.state(), state, "{name} changed the state");
    }
}

#[tokio::test]
async fn outbox_done_deletes_exactly_the_named_entries() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB, CAROL]))
        .await;
    h.run(create(2, ConversationKind::Group, DAVE, &[])).await;
    assert_eq!(
        h.run(Command::OutboxDone(OutboxDone {
            delivered: vec![(1, BOB), (2, DAVE), (1, DAVE), (7, ALICE)],
        }))
        .await,
        CommandResult::OutboxCleared { removed: 2 }
    );
    assert_eq!(outbox(&h), vec![(1, ALICE, 1, true), (1, CAROL, 1, true)]);
    // A repeated acknowledgement (a pump that crashed before seeing the first) is a no-op.
    let state = h.state();
    assert_eq!(
        h.run(Command::OutboxDone(OutboxDone {
            delivered: vec![(1, BOB)],
        }))
        .await,
        CommandResult::OutboxCleared { removed: 0 }
    );
    assert_eq!(h.state(), state);
}

#[tokio::test]
async fn user_index_takes_newer_versions_and_ignores_stale_ones() {
    let mut h = Harness::new(SmConfig::default());
    let v = view(&h.sm);
    // Entry 1: Bob joined conv 1 at version 10.
    assert_eq!(
        h.run(user_conv(BOB, 1, true, 10)).await,
        CommandResult::UserIndexed { changed: true }
    );
    assert_eq!(v.user_conversations(&BOB).unwrap(), vec![(conv(1), 0)]);
    assert_eq!(
        v.user_conv(&BOB, &conv(1)).unwrap(),
        Some(UserConvRecord {
            joined: true,
            version: 10
        })
    );

    // Redelivery and older deliveries change nothing, not even the event stream.
    let state = h.state();
    for (joined, version) in [(true, 10), (false, 9), (true, 3)] {
        assert_eq!(
            h.run(user_conv(BOB, 1, joined, version)).await,
            CommandResult::UserIndexed { changed: false }
        );
        assert_eq!(h.state(), state, "version {version} changed the state");
    }

    // Entry 5: removed at version 12; a late "joined" of version 11 stays ignored.
    h.run(user_conv(BOB, 1, false, 12)).await;
    h.run(user_conv(BOB, 1, true, 11)).await;
    assert!(v.user_conversations(&BOB).unwrap().is_empty());

    // A removal that overtakes its addition: no event (the list never showed it), and the
    // addition arriving afterwards is stale.
    assert_eq!(
        h.run(user_conv(CAROL, 2, false, 20)).await,
        CommandResult::UserIndexed { changed: false }
    );
    h.run(user_conv(CAROL, 2, true, 19)).await;
    assert!(v.user_conversations(&CAROL).unwrap().is_empty());

    // Re-joining after leaving (version 30) lists it again, with the kept read cursor.
    h.run(Command::MoveCursor(MoveCursor {
        user: BOB,
        conv_id: conv(1),
        seq: 4,
    }))
    .await; // 9
    h.run(user_conv(BOB, 1, true, 30)).await; // 10
    assert_eq!(v.user_conversations(&BOB).unwrap(), vec![(conv(1), 4)]);

    assert_eq!(
        user_events(&h),
        vec![
            (1, event(BOB, 1, UserEventKind::Joined, 10)),
            (5, event(BOB, 1, UserEventKind::Left, 12)),
            (9, event(BOB, 1, UserEventKind::Read, 4)),
            (10, event(BOB, 1, UserEventKind::Joined, 30)),
        ]
    );
}

/// A removal is in the conversation's own stream at the `ChangeMembers` entry, every removed
/// member in one event, before any message appended afterwards; additions are not (they
/// reach the added user's shard through the outbox), and nothing is recorded for a change
/// that removes nobody or is rejected.
#[tokio::test]
async fn removals_are_left_events_in_the_conversations_stream() {
    let mut h = Harness::new(SmConfig::default());
    h.run_all(vec![
        create(1, ConversationKind::Group, ALICE, &[BOB, CAROL]), // 1
        send(1, BOB, 1, "before"),                                // 2
        // Dave joins, Bob and Carol are removed, Alice (the owner, not removed) stays.
        members(1, ALICE, &[DAVE], &[BOB, CAROL]), // 3
        send(1, ALICE, 2, "after"),                // 4
    ])
    .await;
    let left = |u, version| event(u, 1, UserEventKind::Left, version);
    assert_eq!(
        user_events(&h),
        vec![(3, left(BOB, 3)), (3, left(CAROL, 3))]
    );
    let order: Vec<(u64, &str)> = view(&h.sm)
        .shard_events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|(i, e)| match e {
            ShardEvent::Message(_) => (i, "message"),
            ShardEvent::Users(_) => (i, "users"),
        })
        .collect();
    assert_eq!(
        order,
        vec![(2, "message"), (3, "users"), (4, "message")],
        "one event per log index, the removal between the messages around it"
    );
    // Resuming right after the removal skips it; resuming before it starts with it.
    let after = view(&h.sm).shard_events_after(2, 1).unwrap();
    assert!(matches!(&after[..], [(3, ShardEvent::Users(us))] if us.len() == 2));

    // Repeating the removal removes nobody: nothing recorded, not even an empty list.
    let state = h.state();
    h.run(members(1, ALICE, &[], &[BOB, CAROL])).await; // 5
    assert_eq!(h.state(), state, "a repeated removal changed the state");
    // Rejected: Dave may not remove Alice; unknown conversation; a direct conversation.
    h.run(create(2, ConversationKind::Direct, ALICE, &[BOB]))
        .await; // 6
    let state = h.state();
    for cmd in [
        members(1, DAVE, &[], &[ALICE]),
        members(9, ALICE, &[], &[BOB]),
        members(2, ALICE, &[], &[BOB]),
    ] {
        assert!(matches!(h.run(cmd).await, CommandResult::Rejected(_)));
        assert_eq!(h.state(), state, "a rejected removal changed the state");
    }
    // Leaving by oneself is a removal too, at its own index.
    h.run(members(1, DAVE, &[], &[DAVE])).await; // 10
    assert_eq!(
        user_events(&h),
        vec![(3, left(BOB, 3)), (3, left(CAROL, 3)), (10, left(DAVE, 10))]
    );
}

#[tokio::test]
async fn only_forward_cursor_moves_are_read_events() {
    let mut h = Harness::new(SmConfig::default());
    let mv = |seq| {
        Command::MoveCursor(MoveCursor {
            user: ALICE,
            conv_id: conv(1),
            seq,
        })
    };
    h.run(mv(5)).await; // 1
    let state = h.state();
    h.run(mv(3)).await; // 2: backwards
    h.run(mv(5)).await; // 3: same place
    assert_eq!(h.state(), state);
    h.run(mv(8)).await; // 4
    assert_eq!(
        user_events(&h),
        vec![
            (1, event(ALICE, 1, UserEventKind::Read, 5)),
            (4, event(ALICE, 1, UserEventKind::Read, 8)),
        ]
    );
}

#[tokio::test]
async fn the_stream_merges_messages_and_user_events_in_log_order() {
    let mut h = Harness::new(SmConfig::default());
    h.run_all(vec![
        create(1, ConversationKind::Group, ALICE, &[BOB]), // 1: no event
        send(1, ALICE, 1, "a"),                            // 2
        user_conv(ALICE, 1, true, 1),                      // 3
        send(1, BOB, 2, "b"),                              // 4
        Command::MoveCursor(MoveCursor {
            user: ALICE,
            conv_id: conv(1),
            seq: 2,
        }), // 5
        send(1, ALICE, 1, "a (retry)"),                    // 6: duplicate, no event
        send(1, BOB, 3, "c"),                              // 7
    ])
    .await;
    let v = view(&h.sm);
    let summary = |evs: Vec<(u64, ShardEvent)>| -> Vec<(u64, String)> {
        evs.into_iter()
            .map(|(i, e)| {
                let what = match e {
                    ShardEvent::Message(m) => format!("m{}", m.seq),
                    ShardEvent::Users(us) => us
                        .iter()
                        .map(|u| format!("{:?}", u.kind))
                        .collect::<Vec<_>>()
                        .join("+"),
                };
                (i, what)
            })
            .collect()
    };
    let all = summary(v.shard_events_after(0, 100).unwrap());
    let want: Vec<(u64, String)> = [(2, "m1"), (3, "Joined"), (4, "m2"), (5, "Read"), (7, "m3")]
        .into_iter()
        .map(|(i, s)| (i, s.to_string()))
        .collect();
    assert_eq!(all, want);
    // Pages and resumption by index.
    assert_eq!(summary(v.shard_events_after(0, 2).unwrap()), want[..2]);
    assert_eq!(summary(v.shard_events_after(3, 2).unwrap()), want[2..4]);
    assert_eq!(summary(v.shard_events_after(5, 100).unwrap()), want[4..]);
    assert!(v.shard_events_after(7, 100).unwrap().is_empty());
    assert_eq!(v.applied_index().unwrap(), 7);
}

#[tokio::test]
async fn batches_without_outbox_entries_do_not_mark_the_group() {
    let mut h = Harness::new(SmConfig::default());
    h.run(user_conv(BOB, 1, true, 10)).await;
    h.run(Command::MoveCursor(MoveCursor {
        user: BOB,
        conv_id: conv(1),
        seq: 1,
    }))
    .await;
    assert!(h.sm.view_store().group_signal().dirty().is_empty());
    let entry: OutboxEntry = OutboxEntry {
        conv: conv(1),
        joined: true,
    };
    h.run(create(1, ConversationKind::Direct, ALICE, &[BOB]))
        .await;
    assert_eq!(view(&h.sm).outbox(1).unwrap()[0].entry, entry);
    assert_eq!(h.sm.view_store().group_signal().dirty(), vec![3]);
}

/// The pump skips the users of a destination it cannot reach: what is left is read in order,
/// up to the limit, looking at no more entries than it is allowed to.
#[tokio::test]
async fn outbox_reads_can_skip_users_and_stay_bounded() {
    let mut h = Harness::new(SmConfig::default());
    for c in 1..=3u8 {
        h.run(create(c, ConversationKind::Group, ALICE, &[BOB, CAROL]))
            .await;
    }
    let v = view(&h.sm);
    let users = |ps: Vec<PendingDelivery>| -> Vec<(u64, UserId)> {
        ps.into_iter().map(|p| (p.log_index, p.user)).collect()
    };
    let mut want: Vec<(u64, UserId)> = (1..=3u64).flat_map(|i| [(i, BOB), (i, CAROL)]).collect();
    want.sort();
    // ALICE's destination is unreachable: her entries, first of each conversation in key
    // order or not, are passed over and the rest come in order.
    let got = users(v.outbox_skipping(10, 100, |u| *u == ALICE).unwrap());
    assert_eq!(got, want);
    assert_eq!(
        users(v.outbox_skipping(2, 100, |u| *u == ALICE).unwrap()),
        want[..2].to_vec()
    );
    // Nine entries in all; looking at four finds only those of them not skipped.
    let seen = users(v.outbox_skipping(10, 4, |u| *u == ALICE).unwrap());
    assert!(
        seen.len() < 4 && seen.iter().all(|(_, u)| *u != ALICE),
        "{seen:?}"
    );
    assert_eq!(v.outbox(100).unwrap().len(), 9);
}
