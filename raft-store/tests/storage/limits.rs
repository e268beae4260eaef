//! Replication reads are bounded in bytes: openraft sends what `limited_get_log_entries`
//! returns as one AppendEntries, so no request may grow with the entries' sizes.

use bongsu_raft_store::{Store, StoreOptions};
use openraft::storage::{RaftLogReader, RaftLogStorage};

use crate::support::{append_cmd, entry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_stop_at_the_byte_bound_but_never_return_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 << 10;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            replication_max_bytes: max,
            // Seeks read no more than other reads here (see the next test for the difference).
            seek_read_max_bytes: max,
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

/// A read that seeks (a reader's first, a jump ahead, or one continuing a seek) may return up
/// to `seek_read_max_bytes`, so that the transport can check a whole range with one probe; a
/// read that goes back (a retry, or the rest after a prefix was sent) or continues a normal
/// read stays within `replication_max_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeking_reads_return_more_and_reads_that_go_back_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            replication_max_bytes: 256 << 10,
            seek_read_max_bytes: 1 << 20,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let group = 4;
    let mut log = store.log_store(group);
    let big = vec![b'x'; 62_000];
    let all: Vec<_> = (1..=100u64)
        .map(|i| entry(1, i, append_cmd(1, 7, i as u128, &big)))
        .collect();
    log.append_durable(all).await.unwrap();

    let mut reader = log.get_log_reader().await;
    // (start, indexes returned, why): 62 KB entries, 16 fit in 1 MiB and 4 in 256 KiB.
    let steps: [(u64, std::ops::RangeInclusive<u64>, &str); 7] = [
        (10, 10..=25, "a reader's first read seeks"),
        (
            26,
            26..=41,
            "continuing a seek (the probe took it all) seeks",
        ),
        (30, 30..=33, "going back (a prefix was sent) does not"),
        (34, 34..=37, "continuing a normal read does not"),
        (34, 34..=37, "a retry does not"),
        (60, 60..=75, "jumping ahead (a binary search step) seeks"),
        (5, 5..=8, "going back to the start (a conflict) does not"),
    ];
    for (start, want, why) in steps {
        let got: Vec<u64> = reader
            .limited_get_log_entries(start, 101)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, want.collect::<Vec<_>>(), "{why}");
    }
    // A new reader (a new replication stream) starts with a seek again.
    let mut fresh = log.get_log_reader().await;
    assert_eq!(
        fresh.limited_get_log_entries(9, 101).await.unwrap().len(),
        16
    );
}
