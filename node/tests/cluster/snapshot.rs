//! A shard several times larger than the snapshot memory budget moves by snapshot in bounded
//! memory (ARCHITECTURE.md invariant 9).
//!
//! Three nodes, one shard, a budget of [`BUDGET_MB`] and a snapshot every
//! [`SNAPSHOT_EVERY`] entries. A follower is killed; the shard takes [`STATE_MB`] of 60 KB
//! messages, its log purged behind each snapshot, so the follower can only come back through
//! a snapshot. The leader's peak-memory mark is reset (`/proc/<pid>/clear_refs`), more
//! entries make it build a snapshot of the whole state, and the follower is started again: it
//! receives and installs that snapshot and catches up. Asserted, from `/proc/<pid>/status`:
//! the follower's peak resident memory (`VmHWM`) over its whole life, and the leader's peak
//! above its resident memory at the reset, stay under the budget plus [`FIXED_OVERHEAD_MB`];
//! the follower logged that it installed a snapshot; no acknowledged message is lost and the
//! replicas' digests agree. With the whole state in memory (as before), the follower alone
//! would hold the received snapshot, its decoding and the write batch: several times
//! `STATE_MB`, far above the bound. Figures: `node-snapshot-memory: state_mb=… budget_mb=…
//! snapshot_bytes=… follower_peak_mb=… leader_rss_mb=… leader_peak_mb=… catch_up_ms=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bongsu_testkit::bounded;
use bongsu_testkit::writers::ShardWriters;

use crate::harness::{spec, Cluster};

const GROUP: u64 = 1; // shard 0, the only one
const BUDGET_MB: u64 = 16;
const SNAPSHOT_EVERY: u64 = 200;
/// The shard's state: sixteen times the budget.
const STATE_MB: u64 = 256;
const BODY: usize = 60_000;
/// What a node takes beyond a snapshot's budget whatever the shard's size: its runtime, and
/// RocksDB's memtables (32 MiB each, two per column family at most while one flushes) and
/// block cache, which an install fills as any write load would.
const FIXED_OVERHEAD_MB: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_larger_than_the_budget_moves_by_snapshot_in_bounded_memory() -> Result<()> {
    bounded(Duration::from_secs(420), run()).await
}

/// `VmHWM` and `VmRSS` of a process, in MiB.
fn memory_mb(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kb / 1024)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets the process's peak resident memory to its current one.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset the peak memory of {pid}"))
}

fn count(log: &std::path::Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches(what).count())
        .unwrap_or(0)
}

async fn run() -> Result<()> {
    let sp = spec(3, 1)
        .shards(1)
        .env("BONGSU_SNAPSHOT_BUDGET_MB", &BUDGET_MB.to_string())
        .env("BONGSU_SNAPSHOT_EVERY", &SNAPSHOT_EVERY.to_string())
        .env("BONGSU_SNAPSHOT_KEEP", "20");
    let mut cluster = Cluster::start("snapshot-memory", sp).await?;
    let leaders = cluster.wait_all_leaders(Duration::from_secs(30)).await?;
    let leader = leaders.get(&GROUP).context("shard 0 has no leader")?.leader;
    let follower = *cluster
        .ids()
        .iter()
        .find(|n| **n != leader)
        .context("a follower")?;
    eprintln!("leader node {leader}, follower node {follower} (killed, then fed a snapshot)");
    cluster.kill(follower)?;

    let client = Arc::new(cluster.client()?.with_deadline(Duration::from_secs(20)));
    let target = (STATE_MB << 20) as usize / BODY;
    let mut writers = ShardWriters::start_padded(client.clone(), 1, 0x5a_0000, BODY).await?;
    let started = Instant::now();
    while writers.ack_counts()[0] < target {
        ensure!(
            started.elapsed() < Duration::from_secs(240),
            "only {} of {target} large messages acknowledged in 240 s",
            writers.ack_counts()[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writers.stop().await;
    eprintln!(
        "{} messages of {BODY} bytes in {:?}",
        writers.ack_counts()[0],
        started.elapsed()
    );

    // The leader's peak is measured from here: building a snapshot of the whole state and
    // sending it.
    let leader_pid = cluster.node(leader).pid().context("leader pid")?;
    let leader_log = cluster.node(leader).log_path();
    let built_before = count(&leader_log, "built a snapshot");
    reset_peak(leader_pid)?;
    let (_, leader_rss) = memory_mb(leader_pid)?;
    // Small writes past the next snapshot point: the leader builds one of everything.
    let mut small = ShardWriters::start(client.clone(), 1, 0x5b_0000).await?;
    let started = Instant::now();
    while count(&leader_log, "built a snapshot") == built_before {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the leader built no snapshot within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    small.stop().await;

    let follower_log = cluster.node(follower).log_path();
    let installed_before = count(&follower_log, "installed a snapshot");
    let started = Instant::now();
    cluster.restart(follower).await?;
    let follower_pid = cluster.node(follower).pid().context("follower pid")?;
    cluster
        .wait_caught_up(follower, Duration::from_secs(180))
        .await?;
    let catch_up = started.elapsed();
    let (follower_peak, _) = memory_mb(follower_pid)?;
    let (leader_peak, _) = memory_mb(leader_pid)?;
    // The largest snapshot the follower installed since its restart, from its log.
    let log = std::fs::read_to_string(&follower_log)?;
    let snapshot_bytes: u64 = log
        .lines()
        .filter(|l| l.contains("installed a snapshot"))
        .skip(installed_before)
        .filter_map(|l| {
            l.split("bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "node-snapshot-memory: state_mb={STATE_MB} budget_mb={BUDGET_MB} \
         snapshot_bytes={snapshot_bytes} follower_peak_mb={follower_peak} \
         leader_rss_mb={leader_rss} leader_peak_mb={leader_peak} catch_up_ms={}",
        catch_up.as_millis()
    );

    ensure!(
        count(&follower_log, "installed a snapshot") > installed_before,
        "the follower caught up without installing a snapshot; the test did not test it"
    );
    ensure!(
        snapshot_bytes >= (STATE_MB << 20) * 3 / 4,
        "the follower installed {snapshot_bytes} bytes at most, less than the state written"
    );
    let bound = BUDGET_MB + FIXED_OVERHEAD_MB;
    // The bound is below the snapshot's own size: a node that held the snapshot whole, even
    // once, would break it.
    ensure!(
        snapshot_bytes >> 20 > bound,
        "the snapshot ({snapshot_bytes} bytes) would fit under the bound ({bound} MiB): the \
         test would not catch a snapshot held in memory"
    );
    ensure!(
        follower_peak < bound,
        "the follower peaked at {follower_peak} MiB receiving and installing a {STATE_MB} MB \
         shard; the bound is {bound} MiB"
    );
    ensure!(
        leader_peak < leader_rss + bound,
        "the leader peaked at {leader_peak} MiB building and sending the snapshot, from \
         {leader_rss} MiB; the bound is {bound} MiB above that"
    );

    let summary = writers.verify().await?;
    ensure!(
        summary.lost == 0,
        "acknowledged messages lost: {:?}",
        summary.problems
    );
    cluster
        .ensure_replicas_identical(3, Duration::from_secs(60))
        .await?;
    cluster.pass();
    Ok(())
}
