//! Snapshot files (ARCHITECTURE.md invariant 9): an install streams into the group in small
//! batches and survives a crash in the middle; files nothing names are removed at open.

use bongsu_proto::model::{ConvId, ConversationKind, UserId};
use bongsu_raft_store::codec::encode;
use bongsu_raft_store::keys::{self, CF_SM, CF_SNAP};
use bongsu_raft_store::messaging::CreateConversation;
use bongsu_raft_store::snapshot::SnapshotRecord;
use bongsu_raft_store::{Command, SmConfig, Store, StoreOptions};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use crate::support::{append_cmd, entry};

const GROUP: u64 = 8;

/// A conversation and `n` appends to it, as entries 1..=n+1.
fn workload(n: u64) -> Vec<bongsu_raft_store::Entry> {
    let create = Command::CreateConversation(CreateConversation {
        conv_id: ConvId::from_u128(3),
        kind: ConversationKind::Group,
        creator: UserId::from_u128(7),
        members: vec![],
        at_ms: 1,
    });
    std::iter::once(entry(1, 1, create))
        .chain((1..=n).map(|i| entry(1, i + 1, append_cmd(3, 7, i as u128, &[b'x'; 500]))))
        .collect()
}

/// Batches far smaller than the state: an install takes many.
fn small_batches() -> StoreOptions {
    StoreOptions {
        snapshot_batch_bytes: 8 << 10,
        ..StoreOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_a_crash_interrupted_is_finished_when_the_group_starts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(a.path(), small_batches()).unwrap();
    let mut lsm = leader.state_machine(GROUP, SmConfig::default());
    lsm.apply(workload(400)).await.unwrap();
    let snap = lsm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let want = lsm.state_entries().unwrap();
    assert!(want.len() > 400);

    let record = {
        let follower = Store::open(b.path(), small_batches()).unwrap();
        let mut fsm = follower.state_machine(GROUP, SmConfig::default());
        let mut file = fsm.begin_receiving_snapshot().await.unwrap();
        *file = *snap.snapshot;
        fsm.install_snapshot(&snap.meta, file).await.unwrap();
        assert_eq!(fsm.state_entries().unwrap(), want);
        let record = fsm
            .record()
            .unwrap()
            .expect("an installed snapshot is recorded");
        assert!(!record.installing);
        record
    };
    // The crash: the install was recorded and the old state deleted, the batches after that
    // and the final one never landed. A stray file from an abandoned transfer is there too.
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(false);
        let db = rocksdb::DB::open_cf(&o, b.path(), keys::ALL_CFS).unwrap();
        let interrupted = SnapshotRecord {
            installing: true,
            ..record.clone()
        };
        db.put_cf(
            db.cf_handle(CF_SNAP).unwrap(),
            keys::snap_key(GROUP),
            encode(&interrupted),
        )
        .unwrap();
        let sm = db.cf_handle(CF_SM).unwrap();
        db.delete_range_cf(sm, keys::sm_key(GROUP, &[]), keys::group_end(GROUP))
            .unwrap();
    }
    let stray = b.path().join("snapshots").join("recv-8-1-1.tmp");
    std::fs::write(&stray, b"half a snapshot").unwrap();

    let follower = Store::open(b.path(), small_batches()).unwrap();
    assert!(!stray.exists(), "a file no record names survived the open");
    assert!(b.path().join("snapshots").join(&record.file).exists());
    let mut fsm = follower.state_machine(GROUP, SmConfig::default());
    let (applied, _) = fsm.applied_state().await.unwrap();
    assert_eq!(applied, snap.meta.last_log_id);
    assert_eq!(fsm.state_entries().unwrap(), want);
    assert!(!fsm.record().unwrap().unwrap().installing);
    let current = fsm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_replaces_the_old_file_and_the_old_format_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut sm = store.state_machine(GROUP, SmConfig::default());
        let all = workload(20);
        sm.apply(all[..10].to_vec()).await.unwrap();
        let first = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let first_file = sm.record().unwrap().unwrap().file;
        sm.apply(all[10..].to_vec()).await.unwrap();
        let second = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert!(second.meta.last_log_id > first.meta.last_log_id);
        let files: Vec<_> = std::fs::read_dir(store.snapshot_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            files,
            vec![sm.record().unwrap().unwrap().file],
            "{first_file} kept"
        );
    }
    // A snapshot stored the old way (one value under the bare group prefix) is dropped.
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(false);
        let db = rocksdb::DB::open_cf(&o, dir.path(), keys::ALL_CFS).unwrap();
        db.put_cf(
            db.cf_handle(CF_SNAP).unwrap(),
            keys::group_prefix(GROUP + 1),
            b"old",
        )
        .unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let sm = store.state_machine(GROUP, SmConfig::default());
    assert!(sm.record().unwrap().is_some());
    drop((sm, store));
    let mut o = rocksdb::Options::default();
    o.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&o, dir.path(), keys::ALL_CFS).unwrap();
    let left = db
        .get_cf(
            db.cf_handle(CF_SNAP).unwrap(),
            keys::group_prefix(GROUP + 1),
        )
        .unwrap();
    assert!(left.is_none(), "the old-format snapshot was kept");
}
