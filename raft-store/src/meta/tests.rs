//! Meta state machine tests on a real RocksDB.

use bongsu_proto::ErrorCode;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::{Command, CommandResult, Entry, SmConfig, Store, StoreOptions};

fn node(id: u64, dc: &str) -> NodeRecord {
    NodeRecord {
        node_id: id,
        dc: dc.into(),
        raft_addr: format!("127.0.0.{id}:7000"),
        api_addr: String::new(),
        admin_addr: String::new(),
        state: NodeState::Active,
    }
}

fn init(shards: u32) -> MetaCommand {
    MetaCommand::Init {
        config: ClusterConfig {
            shards,
            replicas: 3,
            max_body_bytes: 65536,
            max_group_members: 100,
            created_at_ms: 1,
        },
        nodes: vec![node(1, "dc1"), node(2, "dc2"), node(3, "dc3")],
        shards: (0..shards)
            .map(|s| ShardRecord {
                shard: s,
                voters: vec![1, 2, 3],
                learners: vec![],
                epoch: 0,
            })
            .collect(),
    }
}

#[tokio::test]
async fn meta_commands_build_the_map_and_bump_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let sm = store.state_machine(META_GROUP, SmConfig::default());
    let view = MetaView::new(store.clone(), META_GROUP);
    let mut index = 0;
    let mut run = |cmd: MetaCommand| {
        index += 1;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Meta(cmd)),
        };
        let mut sm = sm.clone();
        async move { sm.apply(vec![e]).await.unwrap().pop().unwrap() }
    };
    let rejected = |r: CommandResult| match r {
        CommandResult::Rejected(r) => r.code,
        other => panic!("expected a rejection, got {other:?}"),
    };

    assert_eq!(
        rejected(
            run(MetaCommand::SetReplicas {
                shard: 0,
                voters: vec![1],
                learners: vec![],
                expected_epoch: 0
            })
            .await
        ),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(run(init(4)).await, CommandResult::MapChanged { version: 1 });
    assert_eq!(rejected(run(init(4)).await), ErrorCode::AlreadyInitialized);
    let snap = view.snapshot().unwrap();
    assert_eq!(
        (snap.version, snap.nodes.len(), snap.shards.len()),
        (1, 3, 4)
    );
    assert_eq!(
        snap.config.as_ref().unwrap().sm_config().max_group_members,
        100
    );

    // Join: a new node registers; re-registering keeps its state; a datacenter cannot change.
    assert_eq!(
        run(MetaCommand::RegisterNode(node(4, "dc1"))).await,
        CommandResult::MapChanged { version: 2 }
    );
    run(MetaCommand::SetNodeState {
        node_id: 4,
        state: NodeState::Draining,
    })
    .await;
    let mut moved = node(4, "dc1");
    moved.raft_addr = "127.0.0.44:7000".into();
    run(MetaCommand::RegisterNode(moved)).await;
    let n4 = view.snapshot().unwrap().node(4).cloned().unwrap();
    assert_eq!(
        (n4.state, n4.raft_addr.as_str()),
        (NodeState::Draining, "127.0.0.44:7000")
    );
    assert_eq!(
        rejected(run(MetaCommand::RegisterNode(node(4, "dc2"))).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        rejected(
            run(MetaCommand::SetNodeState {
                node_id: 9,
                state: NodeState::Removed
            })
            .await
        ),
        ErrorCode::UnknownNode
    );

    // Replica changes are compare-and-set on the shard's epoch.
    let set = |epoch| MetaCommand::SetReplicas {
        shard: 2,
        voters: vec![4, 2, 3],
        learners: vec![],
        expected_epoch: epoch,
    };
    assert!(matches!(
        run(set(0)).await,
        CommandResult::MapChanged { .. }
    ));
    assert_eq!(rejected(run(set(0)).await), ErrorCode::StaleEpoch);
    let before = view.snapshot().unwrap();
    assert_eq!(
        rejected(
            run(MetaCommand::SetReplicas {
                shard: 2,
                voters: vec![9],
                learners: vec![],
                expected_epoch: 1
            })
            .await
        ),
        ErrorCode::UnknownNode
    );
    assert_eq!(
        view.snapshot().unwrap(),
        before,
        "a rejected command changed the map"
    );
    let s2 = &before.shards[2];
    assert_eq!((s2.voters.clone(), s2.epoch), (vec![4, 2, 3], 1));

    // Signing keys: added once, retired, never logged.
    let key = SigningKey {
        kid: "k1".into(),
        seed: [7; 32],
        public: [8; 32],
        created_at_ms: 5,
        retired_at_ms: None,
    };
    assert!(matches!(
        run(MetaCommand::AddSigningKey(key.clone())).await,
        CommandResult::MapChanged { .. }
    ));
    assert!(
        matches!(
            run(MetaCommand::AddSigningKey(key.clone())).await,
            CommandResult::MapChanged { .. }
        ),
        "a retry"
    );
    let other = SigningKey {
        seed: [9; 32],
        ..key.clone()
    };
    assert_eq!(
        rejected(run(MetaCommand::AddSigningKey(other)).await),
        ErrorCode::InvalidArgument
    );
    run(MetaCommand::RetireSigningKey {
        kid: "k1".into(),
        at_ms: 9,
    })
    .await;
    let keys = view.snapshot().unwrap().signing_keys;
    assert_eq!((keys.len(), keys[0].retired_at_ms), (1, Some(9)));
    assert!(
        !format!("{:?}", keys[0]).contains("7, 7"),
        "key material in Debug output"
    );
}
