//! Drain: an operator drains the node that leads the most shards (a meta voter on a tie) of a
//! 3 dc x 2 node cluster while every shard takes a continuous stream of appends.
//! The node ends with no replica, no leadership and no meta voter seat; the placement rules
//! hold in every version of the shard map; every write is acknowledged within the client's
//! deadline and nothing acknowledged is lost; the node is then safe to stop. A drain that
//! could never finish (3 dc x 1 node: nowhere to move) is refused and changes nothing.
//!
//! Prints `drain: shards=16 moved_replicas=N max_write_gap_ms=X`, where the gap is the worst
//! shard's longest time between two acknowledged writes over the whole test (informational).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::{DrainRequest, SafeToStopRequest, ShardMap, StatusRequest};
use bongsu_proto::ErrorCode;

use crate::harness::{
    judge_maps, replica_counts, shard_group, spec, Cluster, MapHistory, MapRecorder, META_GROUP,
};
use bongsu_testkit::bounded;
use bongsu_testkit::writers::ShardWriters;

const SHARDS: u32 = 16;
/// The drained node must end with nothing within this long of the drain.
const DRAIN_BOUND: Duration = Duration::from_secs(90);
/// One write keeps retrying this long: a write that is not acknowledged within it failed.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the groups get to agree with the final map.
const CONVERGE_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_ends_with_nothing() -> Result<()> {
    bounded(Duration::from_secs(180), drain("drain-3x2")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_that_cannot_finish_is_refused() -> Result<()> {
    bounded(Duration::from_secs(60), refused("drain-refused-3x1")).await
}

async fn drain(name: &str) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec(3, 2).shards(SHARDS)).await?;
    let replicas = cluster.spec.replicas;
    let maps = cluster.record_shard_maps(&cluster.ids());
    maps.wait_started(cluster.ids().len(), Duration::from_secs(10))
        .await?;

    let client = Arc::new(cluster.client()?.with_deadline(WRITE_DEADLINE));
    let mut writers = ShardWriters::start(client, SHARDS, 0xd4a1_0000_0000).await?;
    writers.wait_all_writing(Duration::from_secs(10)).await?;

    // The node leading the most shards, on a tie a meta voter (the meta leader first), so that
    // the drain moves leaderships, replicas and, usually, a meta voter seat.
    let leaders = cluster.wait_all_leaders(Duration::from_secs(10)).await?;
    let meta = leaders
        .get(&META_GROUP)
        .context("the meta group has no leader")?;
    let (meta_leader, meta_voters) = (meta.leader, meta.status.voters.clone());
    let led = |id: u64| {
        leaders
            .iter()
            .filter(|(g, l)| **g != META_GROUP && l.leader == id)
            .count()
    };
    let victim = cluster
        .ids()
        .into_iter()
        .max_by_key(|id| {
            (
                led(*id),
                meta_voters.contains(id),
                *id == meta_leader,
                std::cmp::Reverse(*id),
            )
        })
        .context("no nodes")?;
    let initial = maps.latest().context("no shard map streamed")?.map;
    let held = replica_counts(&initial).get(&victim).copied().unwrap_or(0);

    let drained_at = Instant::now();
    let outcome: Result<(ShardMap, Duration)> = async {
        let mut admin = cluster.admin_client(victim, Duration::from_secs(30))?;
        let r = admin
            .drain(DrainRequest { node_id: victim })
            .await
            .with_context(|| format!("drain node {victim}"))?;
        ensure!(
            r.get_ref().state == "draining",
            "drain of node {victim} answered state {:?}",
            r.get_ref().state
        );
        let last = wait_drained(&mut cluster, &maps, victim).await?;
        let took = drained_at.elapsed();
        // Writes go on for a moment after the drain has finished.
        writers.wait_all_writing(Duration::from_secs(10)).await?;
        Ok((last, took))
    }
    .await;
    writers.stop().await;
    let (last, took) = outcome?;

    // The placement rules held in every version streamed.
    let MapHistory {
        seen,
        missed,
        with_learners,
    } = judge_maps(&maps, initial.version, last.version, SHARDS, replicas)?;

    // The groups follow the final map (the drained node hosts only the meta group, as a
    // learner), and stopping the drained node now is safe, as the node itself and another
    // node see it.
    cluster.wait_groups_match(&last, CONVERGE_BOUND).await?;
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != victim)
        .context("one node only")?;
    for asked in [victim, other] {
        let mut admin = cluster.admin_client(asked, Duration::from_secs(10))?;
        let r = admin
            .safe_to_stop(SafeToStopRequest {
                node_id: victim,
                dc: String::new(),
            })
            .await?
            .into_inner();
        ensure!(
            r.safe,
            "node {asked} says stopping drained node {victim} is not safe: {}",
            r.reasons.join("; ")
        );
    }

    let summary = writers.verify().await?;
    let moved: usize = initial
        .shards
        .iter()
        .zip(&last.shards)
        .map(|(a, b)| b.voters.iter().filter(|v| !a.voters.contains(v)).count())
        .sum();
    println!(
        "drain: shards={SHARDS} moved_replicas={moved} max_write_gap_ms={}",
        summary.max_gap.as_millis()
    );
    eprintln!(
        "{name}: drained node {victim} ({}, led {} of {SHARDS} shards, held {held} replicas, meta {}) in {} ms; \
         map versions {}..={} ({} streamed, {with_learners} with moves in flight, not streamed by any node: {missed:?}); \
         {} acknowledged appends ({} needed more than one node, {} answered as duplicates), worst gap on shard {}; {} s in all",
        cluster.dc_of(victim),
        led(victim),
        if victim == meta_leader {
            "leader"
        } else if meta_voters.contains(&victim) {
            "voter"
        } else {
            "learner"
        },
        took.as_millis(),
        initial.version,
        last.version,
        seen.len(),
        summary.acked,
        summary.retried,
        summary.duplicates,
        summary.max_gap_shard,
        started.elapsed().as_secs()
    );
    ensure!(
        moved == held,
        "{moved} replicas moved, but node {victim} held {held}"
    );
    ensure!(
        summary.lost == 0 && summary.problems.is_empty(),
        "lost_acked={}; problems:\n{}",
        summary.lost,
        summary.problems.join("\n")
    );

    // The drained node kept none of the shards' data (ARCHITECTURE.md invariant 10): stopped,
    // its store holds no log entry and no state of any shard group.
    cluster.kill(victim)?;
    let store = bongsu_raft_store::Store::open(
        cluster.node(victim).data_path().join("store"),
        bongsu_raft_store::StoreOptions::default(),
    )?;
    let kept: Vec<u64> = (0..SHARDS)
        .map(shard_group)
        .filter(|g| store.group_has_data(*g).unwrap_or(true))
        .collect();
    ensure!(
        kept.is_empty(),
        "drained node {victim} still holds data of groups {kept:?}"
    );
    cluster.pass();
    Ok(())
}

/// Waits until the newest map shows `victim` draining with no replica, no running node names
/// it the leader of any group, and the meta group's leader does not count it among its voters.
async fn wait_drained(cluster: &mut Cluster, maps: &MapRecorder, victim: u64) -> Result<ShardMap> {
    let deadline = Instant::now() + DRAIN_BOUND;
    loop {
        let mut why = Vec::new();
        let last = maps.latest().map(|v| v.map);
        match &last {
            None => why.push("no map".to_string()),
            Some(map) => {
                let state = map
                    .nodes
                    .iter()
                    .find(|n| n.node_id == victim)
                    .map(|n| n.state.as_str());
                if state != Some("draining") {
                    why.push(format!(
                        "version {}: node {victim} is {state:?}",
                        map.version
                    ));
                }
                let held: Vec<u32> = map
                    .shards
                    .iter()
                    .filter(|s| s.voters.contains(&victim) || s.learners.contains(&victim))
                    .map(|s| s.shard)
                    .collect();
                if !held.is_empty() {
                    why.push(format!(
                        "version {}: node {victim} holds shards {held:?}",
                        map.version
                    ));
                }
            }
        }
        let statuses = cluster.statuses().await;
        for (id, st) in &statuses {
            let led: Vec<u64> = st
                .groups
                .iter()
                .filter(|g| g.leader == victim)
                .map(|g| g.group)
                .collect();
            if !led.is_empty() {
                why.push(format!(
                    "node {id} names node {victim} the leader of groups {led:?}"
                ));
            }
        }
        let leaders = cluster.leaders().await;
        match leaders.get(&META_GROUP) {
            None => why.push("the meta group has no leader".to_string()),
            Some(l) if l.status.voters.contains(&victim) => why.push(format!(
                "meta leader {} counts node {victim} among voters {:?}",
                l.leader, l.status.voters
            )),
            Some(_) => {}
        }
        if why.is_empty() {
            return last.context("no map");
        }
        if Instant::now() >= deadline {
            bail!(
                "node {victim} not drained within {DRAIN_BOUND:?}:\n{}",
                why.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With one node per datacenter, no replica of a drained node has anywhere to go: the drain is
/// refused with `FAILED_PRECONDITION` and changes nothing.
async fn refused(name: &str) -> Result<()> {
    let mut cluster = Cluster::start(name, spec(3, 1).shards(4)).await?;
    let before = cluster
        .status(1)
        .await?
        .map
        .context("status without a map")?;
    for (asked, target) in [(1, 2), (2, 2)] {
        let mut admin = cluster.admin_client(asked, Duration::from_secs(30))?;
        match admin.drain(DrainRequest { node_id: target }).await {
            Ok(r) => bail!(
                "node {asked} accepted draining node {target}: {:?}",
                r.into_inner()
            ),
            Err(s) => {
                let code = s
                    .metadata()
                    .get("bongsu-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                ensure!(
                    s.code() == tonic::Code::FailedPrecondition && code == ErrorCode::FailedPrecondition.as_str(),
                    "node {asked}, drain node {target}: expected FAILED_PRECONDITION, got {:?} / {code:?}: {}",
                    s.code(),
                    s.message()
                );
                eprintln!(
                    "{name}: node {asked} refused to drain node {target}: {}",
                    s.message()
                );
            }
        }
    }
    // An unknown node is a different refusal.
    let mut admin = cluster.admin_client(1, Duration::from_secs(30))?;
    match admin.drain(DrainRequest { node_id: 99 }).await {
        Ok(r) => bail!(
            "draining unknown node 99 was accepted: {:?}",
            r.into_inner()
        ),
        Err(s) => {
            let code = s
                .metadata()
                .get("bongsu-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ensure!(
                code == ErrorCode::UnknownNode.as_str(),
                "drain node 99: expected UNKNOWN_NODE, got {code:?}: {}",
                s.message()
            );
        }
    }
    // Nothing changed: same map version, every node still active, on every node.
    for id in cluster.ids() {
        let mut admin = cluster.admin_client(id, Duration::from_secs(5))?;
        let map = admin
            .status(StatusRequest {})
            .await?
            .into_inner()
            .map
            .context("status without a map")?;
        ensure!(
            map.version == before.version,
            "node {id}: map version {} after refused drains, {} before",
            map.version,
            before.version
        );
        ensure!(
            map.node_states.iter().all(|s| s == "active"),
            "node {id}: node states {:?} after refused drains",
            map.node_states
        );
    }
    cluster.pass();
    Ok(())
}
