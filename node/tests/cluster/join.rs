//! Join: a seventh node joins a 3 dc x 2 node cluster while every shard takes a continuous
//! stream of appends. The rebalancer moves replicas onto it, the placement rules hold in every
//! version of the shard map along the way (learners included), each shard's Raft membership
//! ends as the map says, and nothing acknowledged is lost.
//!
//! Prints `join: shards=16 moved_replicas=N map_versions=V new_node_replicas=K
//! max_write_gap_ms=X settled_ms=Y`, where the gap is the worst shard's longest time between
//! two acknowledged writes and `settled_ms` runs from starting the node to the last map change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::{ReadyRequest, ShardMap};

use crate::harness::{judge_maps, replica_counts, spec, Cluster, MapHistory, MapRecorder};
use bongsu_testkit::bounded;
use bongsu_testkit::writers::ShardWriters;

const SHARDS: u32 = 16;
/// The datacenter the new node joins.
const JOIN_DC: u8 = 1;
/// The new node's share: 16 shards x 3 replicas put 16 replicas in its datacenter, over 3 nodes.
const MIN_SHARE: usize = 4;
/// The map must reach the new node's share and stop changing within this long of its start.
const SETTLE_BOUND: Duration = Duration::from_secs(60);
/// The map counts as settled once it has not changed for this long.
const STABLE: Duration = Duration::from_secs(3);
/// One write keeps retrying this long.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the groups and the new node get to agree with the settled map.
const CONVERGE_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventh_node_takes_its_share() -> Result<()> {
    bounded(Duration::from_secs(150), join("join-3x2")).await
}

async fn join(name: &str) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec(3, 2).shards(SHARDS)).await?;
    let replicas = cluster.spec.replicas;
    let new_id = cluster.add_node(JOIN_DC)?;
    let originals: Vec<u64> = cluster.running_ids();

    // Watch the map on every node, the newcomer included (its stream starts once it runs), so
    // that a version one node skips is still seen on another.
    let maps = cluster.record_shard_maps(&cluster.ids());
    maps.wait_started(originals.len(), Duration::from_secs(10))
        .await?;
    let initial = maps.latest().context("no shard map streamed")?.map;

    // The client knows the newcomer's address already: it will lead some shards.
    let client = Arc::new(cluster.client()?.with_deadline(WRITE_DEADLINE));
    let mut writers = ShardWriters::start(client, SHARDS, 0x101e_0000_0000).await?;
    writers.wait_all_writing(Duration::from_secs(10)).await?;

    let start = Instant::now();
    let outcome: Result<(ShardMap, Duration)> = async {
        cluster
            .start_node(new_id)
            .await
            .with_context(|| format!("start node {new_id}"))?;
        let settled = wait_for_share(&maps, new_id, JOIN_DC).await?;
        let settled_after = settled.1.saturating_duration_since(start);
        // Writes go on for a moment after the last change, through the final layout.
        writers.wait_all_writing(Duration::from_secs(10)).await?;
        Ok((settled.0, settled_after))
    }
    .await;
    writers.stop().await;
    let (last, settled_after) = outcome?;

    // The placement rules held in every version streamed, from before the join to the end.
    let MapHistory {
        seen,
        missed,
        with_learners,
    } = judge_maps(&maps, initial.version, last.version, SHARDS, replicas)?;
    ensure!(
        with_learners > 0,
        "no streamed map version had a move in flight (learners listed); versions {:?}",
        seen
    );

    // The new node holds its share, balanced within its datacenter.
    let counts = replica_counts(&last);
    let dc = format!("dc{JOIN_DC}");
    let dc_counts: BTreeMap<u64, usize> = last
        .nodes
        .iter()
        .filter(|n| n.dc == dc)
        .map(|n| (n.node_id, counts.get(&n.node_id).copied().unwrap_or(0)))
        .collect();
    let mine = dc_counts.get(&new_id).copied().unwrap_or(0);
    ensure!(mine >= MIN_SHARE, "node {new_id} holds {mine} replicas, expected at least {MIN_SHARE}: {dc} holds {dc_counts:?}");
    let (lo, hi) = (
        dc_counts.values().min().copied().unwrap_or(0),
        dc_counts.values().max().copied().unwrap_or(0),
    );
    ensure!(
        hi - lo <= 1,
        "{dc}'s replica counts differ by more than 1: {dc_counts:?}"
    );

    // Every shard's Raft membership is what the map says, and every node runs exactly the
    // groups the map places on it.
    cluster.wait_groups_match(&last, CONVERGE_BOUND).await?;

    // The new node reports itself caught up.
    let ready_in = wait_ready(&cluster, new_id).await?;

    let summary = writers.verify().await?;
    let moved: usize = initial
        .shards
        .iter()
        .zip(&last.shards)
        .map(|(a, b)| b.voters.iter().filter(|v| !a.voters.contains(v)).count())
        .sum();
    let preferred = last
        .shards
        .iter()
        .filter(|s| s.voters.first() == Some(&new_id))
        .count();
    println!(
        "join: shards={SHARDS} moved_replicas={moved} map_versions={} new_node_replicas={mine} max_write_gap_ms={} settled_ms={}",
        seen.len(),
        summary.max_gap.as_millis(),
        settled_after.as_millis()
    );
    eprintln!(
        "{name}: node {new_id} joined {dc} ({dc} replicas {dc_counts:?}, preferred leader of {preferred} shards), \
         map versions {}..={} ({} streamed, {with_learners} with moves in flight, not streamed by any node: {missed:?}), ready {} ms after settling; \
         {} acknowledged appends ({} needed more than one node, {} answered as duplicates), worst gap on shard {}; {} s in all",
        initial.version,
        last.version,
        seen.len(),
        ready_in.as_millis(),
        summary.acked,
        summary.retried,
        summary.duplicates,
        summary.max_gap_shard,
        started.elapsed().as_secs()
    );
    ensure!(
        summary.lost == 0 && summary.problems.is_empty(),
        "lost_acked={}; problems:\n{}",
        summary.lost,
        summary.problems.join("\n")
    );
    cluster.pass();
    Ok(())
}

/// Waits until the newest map has registered `new_id`, has no move in flight, gives `new_id`
/// at least [`MIN_SHARE`] replicas with `dc`'s nodes within one of each other, and has not
/// changed for [`STABLE`]. Returns that map and when it first appeared.
async fn wait_for_share(maps: &MapRecorder, new_id: u64, dc: u8) -> Result<(ShardMap, Instant)> {
    let deadline = Instant::now() + SETTLE_BOUND;
    let dc = format!("dc{dc}");
    loop {
        let why = match maps.latest() {
            None => "no map".to_string(),
            Some(v) => {
                let map = &v.map;
                let counts = replica_counts(map);
                let in_dc: BTreeMap<u64, usize> = map
                    .nodes
                    .iter()
                    .filter(|n| n.dc == dc)
                    .map(|n| (n.node_id, counts.get(&n.node_id).copied().unwrap_or(0)))
                    .collect();
                let moving: Vec<u32> = map
                    .shards
                    .iter()
                    .filter(|s| !s.learners.is_empty())
                    .map(|s| s.shard)
                    .collect();
                let spread =
                    in_dc.values().max().unwrap_or(&0) - in_dc.values().min().unwrap_or(&0);
                let quiet = maps.since_last_change().unwrap_or_default();
                if !map.nodes.iter().any(|n| n.node_id == new_id) {
                    format!("version {}: node {new_id} not registered", map.version)
                } else if !moving.is_empty() {
                    format!("version {}: shards {moving:?} have learners", map.version)
                } else if in_dc.get(&new_id).copied().unwrap_or(0) < MIN_SHARE || spread > 1 {
                    format!("version {}: {dc} holds {in_dc:?}", map.version)
                } else if quiet < STABLE {
                    format!(
                        "version {}: changed {} ms ago",
                        map.version,
                        quiet.as_millis()
                    )
                } else {
                    return Ok((v.map, v.first_seen));
                }
            }
        };
        if Instant::now() >= deadline {
            bail!(
                "the map did not settle with node {new_id}'s share within {SETTLE_BOUND:?}: {why}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until `Admin.Ready` on `id` says ready; returns how long that took.
async fn wait_ready(cluster: &Cluster, id: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut admin = cluster.admin_client(id, Duration::from_secs(20))?;
    loop {
        let why = match admin.ready(ReadyRequest {}).await {
            Ok(r) if r.get_ref().ready => return Ok(started.elapsed()),
            Ok(r) => r.into_inner().reasons.join("; "),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        if started.elapsed() >= CONVERGE_BOUND {
            bail!("node {id} not ready after {CONVERGE_BOUND:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A newcomer that stops answering right after registering (SIGSTOP) must not become a voter
/// of any shard: a move waits for the learner to catch up before swapping it in.
///
/// openraft 0.9's `add_learner(.., blocking = true)` returns as soon as the learner is within
/// `replication_lag_threshold` (default 5,000) entries, even with nothing replicated; this test
/// caught `move_replica` promoting such an empty learner, before it waited for real catch-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_newcomer_is_not_made_a_voter() -> Result<()> {
    bounded(
        Duration::from_secs(60),
        stopped_newcomer("join-stopped-3x2"),
    )
    .await
}

/// How long the test watches the map with the newcomer stopped.
const STOPPED_FOR: Duration = Duration::from_secs(6);

async fn stopped_newcomer(name: &str) -> Result<()> {
    let mut cluster = Cluster::start(name, spec(3, 2).shards(SHARDS)).await?;
    let new_id = cluster.add_node(JOIN_DC)?;
    let maps = cluster.record_shard_maps(&cluster.running_ids());
    maps.wait_started(cluster.running_ids().len(), Duration::from_secs(10))
        .await?;
    cluster.start_node(new_id).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !maps
        .latest()
        .is_some_and(|v| v.map.nodes.iter().any(|n| n.node_id == new_id))
    {
        ensure!(Instant::now() < deadline, "node {new_id} did not register");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.pause(new_id)?;
    let paused = Instant::now();
    tokio::time::sleep(STOPPED_FOR).await;
    // Where the newest map (and any version since the pause) lists the stopped node as a voter.
    let versions = maps.versions();
    let since: Vec<&ShardMap> = versions
        .values()
        .filter(|v| v.first_seen > paused)
        .map(|v| &v.map)
        .collect();
    let first = since
        .iter()
        .find(|m| m.shards.iter().any(|s| s.voters.contains(&new_id)))
        .map(|m| m.version);
    let promoted: Vec<String> = since
        .last()
        .map(|m| {
            m.shards
                .iter()
                .filter(|s| s.voters.contains(&new_id))
                .map(|s| format!("shard {} voters {:?}", s.shard, s.voters))
                .collect()
        })
        .unwrap_or_default();
    let in_raft: Vec<u64> = cluster
        .leaders()
        .await
        .into_iter()
        .filter(|(g, l)| *g != crate::harness::META_GROUP && l.status.voters.contains(&new_id))
        .map(|(g, _)| g - 1)
        .collect();
    cluster.resume(new_id)?;
    ensure!(
        first.is_none() && in_raft.is_empty(),
        "node {new_id}, stopped since it registered, became a voter of shards {in_raft:?} in Raft, in the map from version {first:?}; \
         the newest map: {}",
        promoted.join("; ")
    );
    cluster.pass();
    Ok(())
}
