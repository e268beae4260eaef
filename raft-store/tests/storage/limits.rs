//! Replication reads are bounded in bytes: openraft sends what `limited_get_log_entries`
//! returns as one AppendEntries, so no request may grow with the entries' sizes.

use bongsu_raft_store::{Store, StoreOptions};
use openraft::storage::RaftLogReader;

use crate::support::{append_cmd, entry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_stop_at_the_byte_bound_but_never_return_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 << 10;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            replication_max_bytes: max,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let group = 3;
    let mut log = store.log_store(group);
    // 60 KiB bodies, then one body larger than the bound on its own, then small ones.
    let big = vec![b'x'; 60 << 10];
    let huge = vec![b'y'; max + 1];
    let mut all = Vec::new();
    for i in 1..=20u64 {
        all.push(entry(1, i, append_cmd(1, 7, i as u128, &big)));
    }
    all.push(entry(1, 21, append_cmd(1, 7, 21, &huge)));
    for i in 22..=40u64 {
        all.push(entry(1, i, append_cmd(1, 7, i as u128, b"small")));
    }
    log.append_durable(all).await.unwrap();

    // (start, end, expected indexes returned)
    let cases: [(u64, u64, std::ops::RangeInclusive<u64>); 5] = [
        // 60 KiB entries: four fit under 256 KiB, the fifth would pass it.
        (1, 21, 1..=4),
        (17, 41, 17..=20),
        // An entry larger than the bound alone still goes, alone.
        (21, 41, 21..=21),
        // Small entries: the range's end bounds first.
        (22, 41, 22..=40),
        (5, 6, 5..=5),
    ];
    for (start, end, want) in cases {
        let got: Vec<u64> = log
            .limited_get_log_entries(start, end)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, want.collect::<Vec<_>>(), "range {start}..{end}");
    }
    // The unbounded read still returns everything.
    assert_eq!(log.read_entries(1, 41).unwrap().len(), 40);
}
