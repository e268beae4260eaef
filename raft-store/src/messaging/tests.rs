//! State machine tests on a real RocksDB in a temporary directory.

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, DeviceId, MessageKind, UserId};
use bongsu_proto::ErrorCode;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::{Command, CommandResult, Entry, SmConfig, StateMachineStore, Store, StoreOptions};

pub(super) struct Harness {
    _dir: tempfile::TempDir,
    pub(super) sm: StateMachineStore,
    pub(super) next_index: u64,
}

impl Harness {
    pub(super) fn new(cfg: SmConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let sm = store.state_machine(3, cfg);
        Self {
            _dir: dir,
            sm,
            next_index: 1,
        }
    }

    pub(super) async fn run(&mut self, cmd: Command) -> CommandResult {
        self.run_all(vec![cmd]).await.pop().unwrap()
    }

    /// Applies the commands as one batch of consecutive entries.
    pub(super) async fn run_all(&mut self, cmds: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<Entry> = cmds
            .into_iter()
            .map(|c| {
                let e = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next_index),
                    payload: EntryPayload::Normal(c),
                };
                self.next_index += 1;
                e
            })
            .collect();
        self.sm.apply(entries).await.unwrap()
    }

    /// Every state-machine key and value of the group except the applied index.
    pub(super) fn state(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.sm.state_entries().unwrap()
    }
}

/// The messaging state of the group `sm` applies to.
pub(super) fn view(sm: &StateMachineStore) -> MessagingView {
    MessagingView::new(sm.view_store(), sm.group())
}

pub(super) const ALICE: UserId = UserId([0xa1; 16]);
pub(super) const BOB: UserId = UserId([0xb0; 16]);
pub(super) const CAROL: UserId = UserId([0xc0; 16]);
pub(super) const DAVE: UserId = UserId([0xd0; 16]);

pub(super) fn conv(n: u8) -> ConvId {
    ConvId([n; 16])
}

pub(super) fn create(
    c: u8,
    kind: ConversationKind,
    creator: UserId,
    members: &[UserId],
) -> Command {
    Command::CreateConversation(CreateConversation {
        conv_id: conv(c),
        kind,
        creator,
        members: members.to_vec(),
        at_ms: 10,
    })
}

pub(super) fn members(c: u8, actor: UserId, add: &[UserId], remove: &[UserId]) -> Command {
    Command::ChangeMembers(ChangeMembers {
        conv_id: conv(c),
        actor,
        add: add.to_vec(),
        remove: remove.to_vec(),
        at_ms: 11,
    })
}

pub(super) fn send_kind(
    c: u8,
    sender: UserId,
    cmid: u128,
    kind: MessageKind,
    body: &[u8],
) -> Command {
    Command::Append(AppendMessage {
        conv_id: conv(c),
        sender,
        device: DeviceId::from_u128(1),
        client_msg_id: ClientMsgId::from_u128(cmid),
        kind,
        body: body.to_vec(),
        at_ms: 12,
    })
}

pub(super) fn send(c: u8, sender: UserId, cmid: u128, body: &str) -> Command {
    send_kind(c, sender, cmid, MessageKind::Text, body.as_bytes())
}

fn appended(seq: u64) -> CommandResult {
    CommandResult::Appended {
        seq,
        duplicate: false,
    }
}

#[tokio::test]
async fn read_pages_stop_at_the_byte_bound() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    let big = "x".repeat(60_000);
    let cmds: Vec<Command> = (0..40u128).map(|i| send(1, ALICE, i, &big)).collect();
    h.run_all(cmds).await;
    let v = view(&h.sm);
    let per_page = super::READ_MAX_BYTES / 60_000;
    // (from or before, limit, expected seqs)
    let cases: [(bool, u64, usize, std::ops::RangeInclusive<u64>); 4] = [
        (true, 1, 1000, 1..=per_page as u64),
        (true, 30, 1000, 30..=40),
        (false, 41, 1000, (41 - per_page as u64)..=40),
        (true, 5, 3, 5..=7),
    ];
    for (forward, at, limit, want) in cases {
        let page = if forward {
            v.read_from(&conv(1), at, limit)
        } else {
            v.read_before(&conv(1), at, limit)
        }
        .unwrap();
        let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            want.collect::<Vec<_>>(),
            "forward={forward} at={at} limit={limit}"
        );
    }
    // One message larger than the bound on its own would still be returned, alone: the
    // body limit keeps that from happening, but a page is never empty while messages remain.
    assert_eq!(v.read_from(&conv(1), 40, 1000).unwrap().len(), 1);
}

#[tokio::test]
async fn appends_get_dense_seqs_and_read_back_in_order() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    h.run(create(2, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    // Interleave two conversations in one batch: each keeps its own dense sequence.
    let mut cmds = Vec::new();
    for i in 0..10u128 {
        cmds.push(send(
            1,
            if i % 2 == 0 { ALICE } else { BOB },
            i,
            &format!("one {i}"),
        ));
        cmds.push(send(2, ALICE, 100 + i, &format!("two {i}")));
    }
    let results = h.run_all(cmds).await;
    let seqs: Vec<u64> = results
        .iter()
        .map(|r| match r {
            CommandResult::Appended {
                seq,
                duplicate: false,
            } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=10).flat_map(|s| [s, s]).collect::<Vec<_>>());

    let v = view(&h.sm);
    assert_eq!(v.last_seq(&conv(1)).unwrap(), Some(10));
    let all = v.read_from(&conv(1), 1, 100).unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[3].body, b"one 3");
    assert_eq!(all[3].sender, BOB);
    assert_eq!(
        v.read_from(&conv(1), 4, 3)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(
        v.read_before(&conv(1), 4, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        v.read_before(&conv(1), 11, 2)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![9, 10]
    );
    assert!(v.read_from(&conv(1), 11, 10).unwrap().is_empty());
    assert_eq!(v.read_from(&conv(2), 1, 100).unwrap().len(), 10);
    assert_eq!(v.last_seq(&conv(9)).unwrap(), None);

    // Subscribers resume by log index: entries 1-2 created conversations, 3.. appended.
    let events = v.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 20);
    assert_eq!(
        events.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (3..=22).collect::<Vec<_>>()
    );
    assert_eq!((events[2].1.conv_id, events[2].1.seq), (conv(1), 2));
    let resumed = v.events_after(10, 3).unwrap();
    assert_eq!(
        resumed.iter().map(|(i, m)| (*i, m.seq)).collect::<Vec<_>>(),
        vec![(11, 5), (12, 5), (13, 6)]
    );
}

#[tokio::test]
async fn repeated_client_msg_id_returns_the_original_seq_and_stores_nothing() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    assert_eq!(h.run(send(1, ALICE, 77, "first")).await, appended(1));
    assert_eq!(h.run(send(1, BOB, 5, "bob")).await, appended(2));
    let state = h.state();
    // A retry, even with another body, is the same message.
    assert_eq!(
        h.run(send(1, ALICE, 77, "first (retry)")).await,
        CommandResult::Appended {
            seq: 1,
            duplicate: true
        }
    );
    assert_eq!(h.state(), state);
    // Retries inside one batch dedup against each other too.
    let r = h
        .run_all(vec![send(1, ALICE, 78, "a"), send(1, ALICE, 78, "a")])
        .await;
    assert_eq!(
        r,
        vec![
            appended(3),
            CommandResult::Appended {
                seq: 3,
                duplicate: true
            }
        ]
    );
    // The key is (sender, client_msg_id): another sender's same id is another message.
    assert_eq!(h.run(send(1, BOB, 77, "bob's 77")).await, appended(4));
    assert_eq!(
        view(&h.sm).read_from(&conv(1), 1, 10).unwrap()[0].body,
        b"first"
    );
    // Only first appends are events: a subscriber never sees a retry twice.
    let seqs: Vec<u64> = view(&h.sm)
        .events_after(0, 100)
        .unwrap()
        .iter()
        .map(|(_, m)| m.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn the_other_member_creating_a_direct_conversation_is_a_repeat() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Direct, ALICE, &[BOB]))
        .await;
    let before = h.state();
    let again = h
        .run(create(1, ConversationKind::Direct, BOB, &[ALICE]))
        .await;
    assert_eq!(
        again,
        CommandResult::Created {
            conv_id: conv(1),
            existed: true
        }
    );
    assert_eq!(h.state(), before, "a repeat changes nothing");
}

#[tokio::test]
async fn rejections_have_stable_codes_and_change_nothing() {
    let cfg = SmConfig {
        max_body_bytes: 32,
        max_group_members: 3,
    };
    let mut h = Harness::new(cfg);
    h.run(create(1, ConversationKind::Direct, ALICE, &[BOB]))
        .await;
    h.run(create(2, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    h.run(create(3, ConversationKind::Channel, ALICE, &[]))
        .await;
    h.run(members(3, BOB, &[BOB], &[])).await;
    h.run(send(2, ALICE, 1, "hi")).await;

    let table: Vec<(&str, Command, ErrorCode)> = vec![
        (
            "direct with one member",
            create(10, ConversationKind::Direct, ALICE, &[]),
            ErrorCode::InvalidMembers,
        ),
        (
            "direct with three",
            create(10, ConversationKind::Direct, ALICE, &[BOB, CAROL]),
            ErrorCode::InvalidMembers,
        ),
        (
            "group over the limit",
            create(10, ConversationKind::Group, ALICE, &[BOB, CAROL, DAVE]),
            ErrorCode::TooManyMembers,
        ),
        (
            "id taken by another creator",
            create(2, ConversationKind::Group, BOB, &[]),
            ErrorCode::ConversationExists,
        ),
        (
            "direct id taken by another pair",
            create(1, ConversationKind::Direct, CAROL, &[BOB]),
            ErrorCode::ConversationExists,
        ),
        (
            "id taken with another kind",
            create(2, ConversationKind::Channel, ALICE, &[]),
            ErrorCode::ConversationExists,
        ),
        (
            "append to unknown",
            send(9, ALICE, 1, "x"),
            ErrorCode::UnknownConversation,
        ),
        (
            "non-member appends",
            send(2, CAROL, 1, "x"),
            ErrorCode::NotMember,
        ),
        (
            "non-member in direct",
            send(1, CAROL, 1, "x"),
            ErrorCode::NotMember,
        ),
        (
            "follower posts to channel",
            send(3, BOB, 1, "x"),
            ErrorCode::NotOwner,
        ),
        (
            "body over the limit",
            send(2, ALICE, 2, &"x".repeat(33)),
            ErrorCode::MessageTooLarge,
        ),
        (
            "text not utf-8",
            send_kind(2, ALICE, 3, MessageKind::Text, &[0xff, 0xfe]),
            ErrorCode::InvalidArgument,
        ),
        (
            "change members of direct",
            members(1, ALICE, &[CAROL], &[]),
            ErrorCode::DirectImmutable,
        ),
        (
            "change members of unknown",
            members(9, ALICE, &[CAROL], &[]),
            ErrorCode::UnknownConversation,
        ),
        (
            "non-member adds",
            members(2, CAROL, &[CAROL], &[]),
            ErrorCode::NotMember,
        ),
        (
            "member removes another",
            members(2, BOB, &[], &[ALICE]),
            ErrorCode::NotOwner,
        ),
        (
            "group grows over the limit",
            members(2, BOB, &[CAROL, DAVE], &[]),
            ErrorCode::TooManyMembers,
        ),
        (
            "follower adds another",
            members(3, BOB, &[CAROL], &[]),
            ErrorCode::NotOwner,
        ),
        (
            "owner leaves channel",
            members(3, ALICE, &[], &[ALICE]),
            ErrorCode::InvalidMembers,
        ),
    ];
    for (name, cmd, code) in table {
        let before = h.state();
        match h.run(cmd).await {
            CommandResult::Rejected(r) => assert_eq!(r.code, code, "{name}: {}", r.reason),
            other => panic!("{name}: expected {code}, got {other:?}"),
        }
        assert_eq!(h.state(), before, "{name} changed the state");
    }
}

#[tokio::test]
async fn membership_rules_for_each_kind() {
    let mut h = Harness::new(SmConfig::default());
    // Creating twice is an idempotent retry.
    assert_eq!(
        h.run(create(2, ConversationKind::Group, ALICE, &[BOB]))
            .await,
        CommandResult::Created {
            conv_id: conv(2),
            existed: false
        }
    );
    assert_eq!(
        h.run(create(2, ConversationKind::Group, ALICE, &[BOB]))
            .await,
        CommandResult::Created {
            conv_id: conv(2),
            existed: true
        }
    );
    let v = view(&h.sm);
    assert_eq!(v.conversation(&conv(2)).unwrap().unwrap().member_count, 2);

    // A member adds someone; the new member may then write; a member leaves and may not.
    assert_eq!(
        h.run(members(2, BOB, &[CAROL], &[])).await,
        CommandResult::MembersChanged { member_count: 3 }
    );
    assert_eq!(h.run(send(2, CAROL, 1, "hello")).await, appended(1));
    assert_eq!(
        h.run(members(2, BOB, &[], &[BOB])).await,
        CommandResult::MembersChanged { member_count: 2 }
    );
    assert!(
        matches!(h.run(send(2, BOB, 2, "still here?")).await, CommandResult::Rejected(r) if r.code == ErrorCode::NotMember)
    );
    // The owner removes others; adding an existing member changes nothing.
    assert_eq!(
        h.run(members(2, ALICE, &[CAROL], &[])).await,
        CommandResult::MembersChanged { member_count: 2 }
    );
    assert_eq!(
        h.run(members(2, ALICE, &[], &[CAROL])).await,
        CommandResult::MembersChanged { member_count: 1 }
    );
    assert_eq!(
        v.members(&conv(2)).unwrap(),
        vec![(ALICE, layout::Role::Owner)]
    );

    // Channels: people follow and unfollow themselves; the owner posts and may remove anyone.
    h.run(create(3, ConversationKind::Channel, ALICE, &[]))
        .await;
    assert_eq!(
        h.run(members(3, BOB, &[BOB], &[])).await,
        CommandResult::MembersChanged { member_count: 2 }
    );
    assert_eq!(
        h.run(members(3, CAROL, &[CAROL], &[])).await,
        CommandResult::MembersChanged { member_count: 3 }
    );
    assert_eq!(h.run(send(3, ALICE, 1, "post")).await, appended(1));
    assert_eq!(
        h.run(members(3, CAROL, &[], &[CAROL])).await,
        CommandResult::MembersChanged { member_count: 2 }
    );
    assert_eq!(
        h.run(members(3, ALICE, &[], &[BOB])).await,
        CommandResult::MembersChanged { member_count: 1 }
    );
    assert_eq!(v.role(&conv(3), &BOB).unwrap(), None);
    assert_eq!(v.role(&conv(3), &ALICE).unwrap(), Some(layout::Role::Owner));

    // Sealed (secret chat) bodies are opaque bytes.
    h.run(create(1, ConversationKind::Direct, ALICE, &[BOB]))
        .await;
    assert_eq!(
        h.run(send_kind(
            1,
            BOB,
            1,
            MessageKind::Sealed,
            &[0xff, 0x00, 0xfe]
        ))
        .await,
        appended(1)
    );
}

#[tokio::test]
async fn read_cursors_only_move_forward() {
    let mut h = Harness::new(SmConfig::default());
    let cursor = |seq| {
        Command::MoveCursor(MoveCursor {
            user: BOB,
            conv_id: conv(1),
            seq,
        })
    };
    assert_eq!(
        h.run(cursor(5)).await,
        CommandResult::CursorMoved { seq: 5 }
    );
    assert_eq!(
        h.run(cursor(3)).await,
        CommandResult::CursorMoved { seq: 5 }
    );
    assert_eq!(
        h.run(cursor(9)).await,
        CommandResult::CursorMoved { seq: 9 }
    );
    assert_eq!(view(&h.sm).cursor(&BOB, &conv(1)).unwrap(), 9);
    assert_eq!(view(&h.sm).cursor(&ALICE, &conv(1)).unwrap(), 0);
}

/// A mixed workload used by the snapshot and determinism tests.
fn workload() -> Vec<Command> {
    let mut cmds = vec![
        create(1, ConversationKind::Direct, ALICE, &[BOB]),
        create(2, ConversationKind::Group, ALICE, &[BOB, CAROL]),
        create(3, ConversationKind::Channel, DAVE, &[]),
        members(3, ALICE, &[ALICE], &[]),
    ];
    for i in 0..200u128 {
        let who = [ALICE, BOB, CAROL][i as usize % 3];
        cmds.push(send(2, who, i, &format!("group message {i}")));
        if i % 7 == 0 {
            cmds.push(send(1, BOB, i, "direct"));
            cmds.push(send(2, who, i, "retry"));
        }
        if i % 50 == 0 {
            cmds.push(send(3, DAVE, i, "channel post"));
            cmds.push(Command::MoveCursor(MoveCursor {
                user: ALICE,
                conv_id: conv(2),
                seq: i as u64,
            }));
        }
    }
    cmds.push(members(2, CAROL, &[], &[CAROL]));
    cmds.push(send(2, CAROL, 999, "rejected: left"));
    // Cross-shard state: a delivery into a user's index, and part of the outbox delivered.
    cmds.push(Command::UserConv(UserConv {
        user: BOB,
        conv_id: conv(9),
        joined: true,
        version: 4,
    }));
    cmds.push(Command::OutboxDone(OutboxDone {
        delivered: vec![(1, ALICE)],
    }));
    cmds
}

#[tokio::test]
async fn the_same_log_gives_the_same_state_on_every_replica() {
    let mut a = Harness::new(SmConfig::default());
    let mut b = Harness::new(SmConfig::default());
    let cmds = workload();
    // Different batching of the same entries must not matter.
    let ra = a.run_all(cmds.clone()).await;
    let mut rb = Vec::new();
    for chunk in cmds.chunks(13) {
        rb.extend(b.run_all(chunk.to_vec()).await);
    }
    assert_eq!(ra, rb);
    assert_eq!(a.state(), b.state());
    assert!(!a.state().is_empty());
}

/// A replica that applied [`workload`], and the snapshot it builds of that state.
async fn leader_snapshot() -> (Harness, openraft::storage::Snapshot<crate::TypeConfig>) {
    let mut leader = Harness::new(SmConfig::default());
    leader.run_all(workload()).await;
    let snap = leader
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    (leader, snap)
}

#[tokio::test]
async fn snapshot_round_trip_equals_the_live_state() {
    let (mut leader, snap) = leader_snapshot().await;
    assert_eq!(
        snap.meta.last_log_id.map(|l| l.index),
        Some(leader.next_index - 1)
    );

    let mut follower = Harness::new(SmConfig::default());
    follower
        .run(create(7, ConversationKind::Group, BOB, &[]))
        .await; // state the snapshot replaces
    let mut buf = follower.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    follower.sm.install_snapshot(&snap.meta, buf).await.unwrap();

    assert_eq!(follower.state(), leader.state());
    assert_eq!(follower.sm.applied().unwrap(), leader.sm.applied().unwrap());
    let (fv, lv) = (view(&follower.sm), view(&leader.sm));
    assert!(fv.conversation(&conv(7)).unwrap().is_none());
    assert_eq!(
        fv.read_from(&conv(2), 1, 1000).unwrap(),
        lv.read_from(&conv(2), 1, 1000).unwrap()
    );
    assert_eq!(fv.cursor(&ALICE, &conv(2)).unwrap(), 150);
    // The outbox, the user index and user events travel with the snapshot.
    assert_eq!(fv.outbox(1000).unwrap(), lv.outbox(1000).unwrap());
    assert!(!fv.outbox_is_empty().unwrap());
    assert_eq!(fv.user_conversations(&BOB).unwrap(), vec![(conv(9), 0)]);
    assert_eq!(
        fv.shard_events_after(0, 10_000).unwrap(),
        lv.shard_events_after(0, 10_000).unwrap()
    );
    let current = follower.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);

    // Both go on identically from there.
    follower.next_index = leader.next_index;
    let next = vec![send(2, ALICE, 5000, "after the snapshot")];
    assert_eq!(
        leader.run_all(next.clone()).await,
        follower.run_all(next).await
    );
    assert_eq!(follower.state(), leader.state());
}

/// A snapshot build runs beside the state machine: if a newer snapshot was installed while it
/// ran, saving the older build must not replace the installed one.
#[tokio::test]
async fn an_older_snapshot_build_never_replaces_a_newer_install() {
    let (leader, newer) = leader_snapshot().await;

    let mut follower = Harness::new(SmConfig::default());
    follower
        .run(create(7, ConversationKind::Group, BOB, &[]))
        .await;
    // The follower starts a build of its own (older) state, then installs the leader's.
    let mut older_build = follower.sm.get_snapshot_builder().await;
    let mut buf = follower.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *newer.snapshot;
    follower
        .sm
        .install_snapshot(&newer.meta, buf)
        .await
        .unwrap();
    let older = older_build.build_snapshot().await.unwrap();
    assert!(older.meta.last_log_id < newer.meta.last_log_id);

    let stored = follower
        .sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot is stored");
    assert_eq!(stored.meta, newer.meta);
    assert_eq!(follower.state(), leader.state());
}
