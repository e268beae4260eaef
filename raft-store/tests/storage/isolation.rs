//! Per-group operations touch only their own group, and a reopened store holds every group
//! exactly as it was.

use bongsu_proto::model::{ConvId, ConversationKind, UserId};
use bongsu_raft_store::messaging::CreateConversation;
use bongsu_raft_store::{Command, CommandResult, SmConfig, Store, StoreOptions};
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::Vote;

use crate::support::{append_cmd, entries, entry, log_id, view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_purge_vote_and_snapshot_stay_inside_their_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (a, b) = (10u64, 11u64);
    let mut la = store.log_store(a);
    let mut lb = store.log_store(b);
    la.append_durable(entries(a, 30)).await.unwrap();
    lb.append_durable(entries(b, 30)).await.unwrap();
    lb.save_vote(&Vote::new(4, 2)).await.unwrap();
    lb.save_committed(Some(log_id(1, 25))).await.unwrap();
    let b_before = lb.read_entries(0, u64::MAX).unwrap();

    la.save_vote(&Vote::new(9, 3)).await.unwrap();
    la.truncate(log_id(1, 21)).await.unwrap();
    la.purge(log_id(1, 5)).await.unwrap();
    la.save_committed(Some(log_id(1, 18))).await.unwrap();

    let a_left: Vec<u64> = la
        .read_entries(0, u64::MAX)
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(a_left, (6..=20).collect::<Vec<_>>());
    assert_eq!(
        la.log_state().unwrap(),
        (Some(log_id(1, 5)), Some(log_id(1, 20)))
    );
    assert_eq!(lb.read_entries(0, u64::MAX).unwrap(), b_before);
    assert_eq!(lb.log_state().unwrap(), (None, Some(log_id(1, 30))));
    assert_eq!(lb.vote().unwrap(), Some(Vote::new(4, 2)));
    assert_eq!(la.vote().unwrap(), Some(Vote::new(9, 3)));
    assert_eq!(lb.committed().unwrap(), Some(log_id(1, 25)));

    // State machines: apply to both, snapshot one, install it over the other's state.
    let mut sa = store.state_machine(a, SmConfig::default());
    let mut sb = store.state_machine(b, SmConfig::default());
    let (alice, bob) = (UserId::from_u128(7), UserId::from_u128(8));
    let create = |conv: u128| {
        Command::CreateConversation(CreateConversation {
            conv_id: ConvId::from_u128(conv),
            kind: ConversationKind::Group,
            creator: alice,
            members: vec![bob],
            at_ms: 1,
        })
    };
    sa.apply(vec![
        entry(1, 1, create(a as u128)),
        entry(1, 2, append_cmd(a as u128, 7, 1, b"for a")),
    ])
    .await
    .unwrap();
    sb.apply(vec![
        entry(1, 1, create(b as u128)),
        entry(1, 2, append_cmd(b as u128, 7, 1, b"for b")),
    ])
    .await
    .unwrap();
    let snap = sa
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));

    // Group c (new) installs a's snapshot: it gets a's state and b keeps its own.
    let mut sc = store.state_machine(12, SmConfig::default());
    let mut buf = sc.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    sc.install_snapshot(&snap.meta, buf).await.unwrap();
    let vc = view(&sc);
    assert_eq!(
        vc.read_from(&ConvId::from_u128(a as u128), 1, 10).unwrap()[0].body,
        b"for a"
    );
    assert_eq!(sc.applied_state().await.unwrap().0, Some(log_id(1, 2)));
    let vb = view(&sb);
    assert_eq!(
        vb.read_from(&ConvId::from_u128(b as u128), 1, 10).unwrap()[0].body,
        b"for b"
    );
    assert!(vb
        .conversation(&ConvId::from_u128(a as u128))
        .unwrap()
        .is_none());
    assert!(
        sb.get_current_snapshot().await.unwrap().is_none(),
        "b never built a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_restores_every_group_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let groups = [0u64, 1, 63, 64, 9_999, u64::MAX - 1];
    let mut expected = Vec::new();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for (i, g) in groups.iter().enumerate() {
            let mut ls = store.log_store(*g);
            ls.append_durable(entries(*g, 5 + i as u64)).await.unwrap();
            ls.save_vote(&Vote::new(i as u64 + 1, 1)).await.unwrap();
            let mut sm = store.state_machine(*g, SmConfig::default());
            let r = sm
                .apply(vec![entry(
                    1,
                    1,
                    Command::CreateConversation(CreateConversation {
                        conv_id: ConvId::from_u128(*g as u128),
                        kind: ConversationKind::Direct,
                        creator: UserId::from_u128(1),
                        members: vec![UserId::from_u128(2)],
                        at_ms: 5,
                    }),
                )])
                .await
                .unwrap();
            assert!(matches!(
                r[0],
                CommandResult::Created { existed: false, .. }
            ));
            expected.push((
                ls.read_entries(0, u64::MAX).unwrap(),
                ls.vote().unwrap(),
                sm.applied().unwrap(),
            ));
        }
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.groups().unwrap(), groups.to_vec());
    for (g, (log, vote, applied)) in groups.iter().zip(expected) {
        let ls = store.log_store(*g);
        assert_eq!(ls.read_entries(0, u64::MAX).unwrap(), log, "group {g} log");
        assert_eq!(ls.vote().unwrap(), vote, "group {g} vote");
        let sm = store.state_machine(*g, SmConfig::default());
        assert_eq!(sm.applied().unwrap(), applied, "group {g} applied state");
        assert_eq!(
            view(&sm)
                .conversation(&ConvId::from_u128(*g as u128))
                .unwrap()
                .unwrap()
                .member_count,
            2
        );
    }
}
