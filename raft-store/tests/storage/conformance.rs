//! openraft's own storage conformance suite, run twice at once against one shared RocksDB.
//!
//! Every test of the suite gets a fresh group id in the same store, and two suites run in
//! parallel threads, so a group that read or deleted another group's keys would break them.
//! A bystander group written before the suites must be byte-for-byte unchanged after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bongsu_raft_store::{
    LogStore, SmConfig, StateMachineStore, StorageError, Store, StoreOptions, TypeConfig,
};
use openraft::testing::{StoreBuilder, Suite};

use crate::support::entries;

struct SharedStoreBuilder {
    store: Arc<Store>,
    next_group: AtomicU64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for SharedStoreBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let g = self.next_group.fetch_add(1, Ordering::Relaxed);
        Ok((
            (),
            self.store.log_store(g),
            self.store.state_machine(g, SmConfig::default()),
        ))
    }
}

#[test]
fn openraft_suite_passes_for_two_groups_sharing_one_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();

    // A bystander between the two suites' group ranges.
    const BYSTANDER: u64 = 500_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bystander = store.log_store(BYSTANDER);
    rt.block_on(bystander.append_durable(entries(BYSTANDER, 20)))
        .unwrap();
    let before = bystander.read_entries(0, u64::MAX).unwrap();

    let suites: Vec<_> = [1u64, 1_000_000]
        .into_iter()
        .map(|first_group| {
            let builder = SharedStoreBuilder {
                store: store.clone(),
                next_group: AtomicU64::new(first_group),
            };
            std::thread::spawn(move || Suite::test_all(builder).map_err(|e| e.to_string()))
        })
        .collect();
    for s in suites {
        s.join()
            .expect("suite thread panicked")
            .expect("openraft storage suite failed");
    }

    assert_eq!(
        bystander.read_entries(0, u64::MAX).unwrap(),
        before,
        "another group's log changed"
    );
    let groups = store.groups().unwrap();
    assert!(groups.contains(&BYSTANDER));
    assert!(
        groups.iter().any(|g| *g >= 1_000_000),
        "second suite wrote no group: {groups:?}"
    );
}
