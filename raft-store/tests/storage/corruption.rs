//! A corrupt value in RocksDB is a clear error naming the group and the key, never a panic,
//! whichever path reads it.

use std::path::Path;
use tokio::io::AsyncWriteExt;

use bongsu_proto::model::{ConvId, ConversationKind, UserId};
use bongsu_raft_store::keys::{self, CF_LOG, CF_RAFT, CF_SM};
use bongsu_raft_store::messaging::{layout, CreateConversation};
use bongsu_raft_store::{Command, SmConfig, Store, StoreOptions};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};

use crate::support::{append_cmd, entries, entry, view};

/// Overwrites one value with garbage through a plain RocksDB handle, as a bad disk or a buggy
/// tool would.
fn clobber(dir: &Path, cf: &str, key: &[u8], value: &[u8]) {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&o, dir, keys::ALL_CFS).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

const GROUP: u64 = 42;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_log_entry_vote_and_state_are_errors_naming_group_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let conv = ConvId::from_u128(5);
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .log_store(GROUP)
            .append_durable(entries(GROUP, 10))
            .await
            .unwrap();
        store
            .log_store(GROUP)
            .save_vote(&openraft::Vote::new(3, 1))
            .await
            .unwrap();
        let mut sm = store.state_machine(GROUP, SmConfig::default());
        sm.apply(vec![
            entry(
                1,
                1,
                Command::CreateConversation(CreateConversation {
                    conv_id: conv,
                    kind: ConversationKind::Group,
                    creator: UserId::from_u128(7),
                    members: vec![],
                    at_ms: 1,
                }),
            ),
            entry(1, 2, append_cmd(5, 7, 1, b"hello")),
        ])
        .await
        .unwrap();
    }
    let log_key = keys::log_key(GROUP, 4);
    clobber(dir.path(), CF_LOG, &log_key, b"\xde\xad\xbe\xef garbage");
    let vote_key = keys::raft_key(GROUP, keys::RAFT_VOTE);
    clobber(dir.path(), CF_RAFT, &vote_key, &[0x01]);
    let conv_key = layout::conv_key(GROUP, &conv);
    clobber(dir.path(), CF_SM, &conv_key, &[0xff; 12]);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut ls = store.log_store(GROUP);
    let expect = |msg: String, key: &[u8]| {
        assert!(
            msg.contains(&format!("group {GROUP}")),
            "no group in: {msg}"
        );
        assert!(msg.contains(&keys::display_key(key)), "no key in: {msg}");
    };

    // Reading around the bad entry works; reading across it fails clearly.
    assert_eq!(ls.read_entries(1, 4).unwrap().len(), 3);
    expect(ls.read_entries(1, 11).unwrap_err().to_string(), &log_key);
    let through_openraft = ls.try_get_log_entries(0..11).await.unwrap_err();
    expect(format!("{through_openraft:?}"), &log_key);

    expect(ls.vote().unwrap_err().to_string(), &vote_key);
    assert!(ls.read_vote().await.is_err());

    // The state machine refuses to apply over a state it cannot read.
    let mut sm = store.state_machine(GROUP, SmConfig::default());
    expect(
        view(&sm).conversation(&conv).unwrap_err().to_string(),
        &conv_key,
    );
    let err = sm
        .apply(vec![entry(1, 3, append_cmd(5, 7, 2, b"again"))])
        .await
        .unwrap_err();
    expect(format!("{err:?}"), &conv_key);
    assert_eq!(
        sm.applied().unwrap().last_applied.map(|l| l.index),
        Some(2),
        "failed apply moved the applied index"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut sm = store.state_machine(GROUP, SmConfig::default());
    sm.apply(vec![entry(
        1,
        1,
        Command::CreateConversation(CreateConversation {
            conv_id: ConvId::from_u128(9),
            kind: ConversationKind::Channel,
            creator: UserId::from_u128(1),
            members: vec![],
            at_ms: 1,
        }),
    )])
    .await
    .unwrap();
    let before = sm.applied().unwrap();
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(crate::support::log_id(2, 50)),
        ..Default::default()
    };
    for bad in [vec![], vec![1, 2, 3, 4, 5], vec![0xff; 64]] {
        let mut file = sm.begin_receiving_snapshot().await.unwrap();
        file.write_all(&bad).await.unwrap();
        let err = sm.install_snapshot(&meta, file).await.unwrap_err();
        assert!(
            format!("{err:?}").contains("snapshot for group 42 is invalid"),
            "{err:?}"
        );
    }
    assert_eq!(sm.applied().unwrap(), before);
    assert!(
        sm.record().unwrap().is_none(),
        "a bad snapshot was recorded"
    );
    let left: Vec<_> = std::fs::read_dir(store.snapshot_dir()).unwrap().collect();
    assert!(
        left.is_empty(),
        "refused snapshot files were left: {left:?}"
    );
    assert!(view(&sm)
        .conversation(&ConvId::from_u128(9))
        .unwrap()
        .is_some());
}
