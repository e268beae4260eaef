//! The write path's failpoints, armed as `bongsu-node-chaos` arms them.

use bongsu_raft_store::{failpoints, Store, StoreOptions};

use crate::support::entries;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_poisons_the_writer_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let log = store.log_store(1);
    log.append_durable(entries(1, 3)).await.unwrap();

    failpoints::arm();
    failpoints::set("log_before_fsync", true).unwrap();
    let err = log
        .append_durable(entries(1, 5).into_iter().skip(3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    failpoints::set("log_before_fsync", false).unwrap();

    // Fail-stop: nothing is acknowledged after a failed fsync, even once the disk "recovers".
    let again = log
        .append_durable(entries(1, 5).into_iter().skip(3))
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("stopped after a failed write"),
        "{again}"
    );
    assert_eq!(
        log.read_entries(0, 100).unwrap().len(),
        3,
        "the failed batch must not be visible"
    );
    assert!(failpoints::set("no_such_point", true).is_err());
}
