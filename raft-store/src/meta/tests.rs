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

/// A meta state machine on a real RocksDB, applying one command per log entry.
struct Meta {
    _dir: tempfile::TempDir,
    sm: crate::StateMachineStore,
    view: MetaView,
    index: u64,
}

impl Meta {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        Meta {
            sm: store.state_machine(META_GROUP, SmConfig::default()),
            view: MetaView::new(store, META_GROUP),
            _dir: dir,
            index: 0,
        }
    }

    async fn run(&mut self, cmd: MetaCommand) -> CommandResult {
        self.index += 1;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Command::Meta(cmd)),
        };
        self.sm.apply(vec![e]).await.unwrap().pop().unwrap()
    }
}

#[tokio::test]
async fn meta_commands_build_the_map_and_bump_its_version() {
    let mut m = Meta::new();
    let view = m.view.clone();
    let rejected = |r: CommandResult| match r {
        CommandResult::Rejected(r) => r.code,
        other => panic!("expected a rejection, got {other:?}"),
    };

    assert_eq!(
        rejected(
            m.run(MetaCommand::SetReplicas {
                shard: 0,
                voters: vec![1],
                learners: vec![],
                expected_epoch: 0
            })
            .await
        ),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        m.run(init(4)).await,
        CommandResult::MapChanged { version: 1 }
    );
    assert_eq!(
        rejected(m.run(init(4)).await),
        ErrorCode::AlreadyInitialized
    );
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
        m.run(MetaCommand::RegisterNode(node(4, "dc1"))).await,
        CommandResult::MapChanged { version: 2 }
    );
    m.run(MetaCommand::SetNodeState {
        node_id: 4,
        state: NodeState::Draining,
    })
    .await;
    let mut moved = node(4, "dc1");
    moved.raft_addr = "127.0.0.44:7000".into();
    m.run(MetaCommand::RegisterNode(moved)).await;
    let n4 = view.snapshot().unwrap().node(4).cloned().unwrap();
    assert_eq!(
        (n4.state, n4.raft_addr.as_str()),
        (NodeState::Draining, "127.0.0.44:7000")
    );
    assert_eq!(
        rejected(m.run(MetaCommand::RegisterNode(node(4, "dc2"))).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        rejected(
            m.run(MetaCommand::SetNodeState {
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
        m.run(set(0)).await,
        CommandResult::MapChanged { .. }
    ));
    assert_eq!(rejected(m.run(set(0)).await), ErrorCode::StaleEpoch);
    let before = view.snapshot().unwrap();
    assert_eq!(
        rejected(
            m.run(MetaCommand::SetReplicas {
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
        m.run(MetaCommand::AddSigningKey(key.clone())).await,
        CommandResult::MapChanged { .. }
    ));
    assert!(
        matches!(
            m.run(MetaCommand::AddSigningKey(key.clone())).await,
            CommandResult::MapChanged { .. }
        ),
        "a retry"
    );
    let other = SigningKey {
        seed: [9; 32],
        ..key.clone()
    };
    assert_eq!(
        rejected(m.run(MetaCommand::AddSigningKey(other)).await),
        ErrorCode::InvalidArgument
    );
    m.run(MetaCommand::RetireSigningKey {
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

fn record(node_id: u64, incarnation: u128, cluster_id: u128, admitted: bool) -> MetaCommand {
    MetaCommand::RecordIncarnation {
        node_id,
        incarnation,
        cluster_id,
        adopt_cluster: false,
        admitted,
    }
}

/// ARCHITECTURE.md invariant 8: a member's data directory is recorded once; a new directory
/// under a member's id is refused, whether or not the member's own was recorded yet.
#[tokio::test]
async fn incarnations_refuse_a_new_directory_under_a_members_id() {
    let mut m = Meta::new();
    let view = m.view.clone();
    let code = |r: CommandResult| match r {
        CommandResult::Rejected(r) => Some((r.code, r.reason)),
        _ => None,
    };
    const CLUSTER: u128 = 0xc1;
    assert!(code(m.run(init(1)).await).is_none());
    // Node 1 records its admitted directory; again is a no-op.
    assert!(code(m.run(record(1, 0x11, CLUSTER, true)).await).is_none());
    assert!(code(m.run(record(1, 0x11, CLUSTER, true)).await).is_none());
    // Another directory as node 1, admitted or not, is refused and named.
    let (c, reason) = code(m.run(record(1, 0x12, CLUSTER, true)).await).unwrap();
    assert_eq!(c, ErrorCode::NodeReplaced);
    assert!(reason.contains("new node id"), "{reason}");
    // Node 2 is a member whose directory was never recorded: a new, never-admitted directory
    // under its id is refused too.
    let (c, _) = code(m.run(record(2, 0x21, CLUSTER, false)).await).unwrap();
    assert_eq!(c, ErrorCode::NodeReplaced);
    // A node the cluster does not know may join with a new directory.
    assert!(code(m.run(record(9, 0x91, CLUSTER, false)).await).is_none());
    // Another cluster's directory is refused; one that holds no id adopts the cluster's.
    let (c, _) = code(m.run(record(3, 0x31, 0xbad, true)).await).unwrap();
    assert_eq!(c, ErrorCode::ClusterMismatch);
    assert!(code(
        m.run(MetaCommand::RecordIncarnation {
            node_id: 3,
            incarnation: 0x31,
            cluster_id: 0xbad,
            adopt_cluster: true,
            admitted: true,
        })
        .await
    )
    .is_none());
    let snap = view.snapshot().unwrap();
    assert_eq!(snap.cluster_id, Some(CLUSTER));
    assert_eq!(
        snap.incarnations.into_iter().collect::<Vec<_>>(),
        vec![(1, 0x11), (3, 0x31), (9, 0x91)]
    );
}

#[tokio::test]
async fn the_cluster_version_only_rises() {
    let mut m = Meta::new();
    assert!(matches!(
        m.run(init(1)).await,
        CommandResult::MapChanged { .. }
    ));
    assert_eq!(
        m.view.snapshot().unwrap().cluster_version,
        crate::version::CLUSTER_V1
    );
    let raised = m
        .run(MetaCommand::SetClusterVersion {
            version: crate::version::CLUSTER_V2,
        })
        .await;
    assert!(
        matches!(raised, CommandResult::MapChanged { .. }),
        "{raised:?}"
    );
    assert_eq!(
        m.view.snapshot().unwrap().cluster_version,
        crate::version::CLUSTER_V2
    );
    for version in [crate::version::CLUSTER_V1, crate::version::CLUSTER_V2] {
        let before = m.view.snapshot().unwrap();
        match m.run(MetaCommand::SetClusterVersion { version }).await {
            CommandResult::Rejected(r) => {
                assert_eq!(r.code, ErrorCode::FailedPrecondition);
                assert!(r.reason.contains("never goes down"), "{}", r.reason);
            }
            other => panic!("version {version} after 2: {other:?}"),
        }
        assert_eq!(
            m.view.snapshot().unwrap(),
            before,
            "a refusal changed the state"
        );
    }
}
