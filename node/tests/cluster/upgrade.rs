//! A rolling upgrade from the previous release (ARCHITECTURE.md invariant 11).
//!
//! Three nodes in three datacenters run the previous release's `bongsu-node` (built from this
//! repository's history by `make previous-release`; `BONGSU_PREVIOUS_NODE` names it) and take
//! a continuous write load on two shards. One node at a time is stopped and started again on
//! the same data directory with this release's binary: it rewrites its store into the
//! versioned format once and catches up, and writes go on. While any node runs the previous
//! release the cluster version stays 1 and a command this release adds is refused with
//! `UPGRADE_NOT_FINISHED`; once all three run this release the meta leader raises the version
//! to 2 and the same command is accepted. Asserted: the old nodes really are the previous
//! release (they report no binary version), every shard takes writes after every step, no
//! acknowledged message is lost, and the replicas' digests agree at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::{HelloRequest, PruneRequest};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::version::{BINARY_VERSION, CLUSTER_V1, CLUSTER_V2};
use bongsu_testkit::bounded;
use bongsu_testkit::writers::ShardWriters;

use crate::harness::{node_bin, plain, shard_group, spec, Cluster};

/// Where `make previous-release` puts the previous release's node.
const PREVIOUS_ENV: &str = "BONGSU_PREVIOUS_NODE";
const SHARDS: u32 = 2;
const WRITING: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_from_the_previous_release_loses_nothing() -> Result<()> {
    bounded(Duration::from_secs(300), run()).await
}

fn previous_binary() -> Result<PathBuf> {
    let Some(path) = std::env::var_os(PREVIOUS_ENV).map(PathBuf::from) else {
        bail!(
            "{PREVIOUS_ENV} is not set: run this test through `make test`, or run \
             `make previous-release` and set {PREVIOUS_ENV} to the binary it prints"
        );
    };
    ensure!(
        path.is_file(),
        "{} does not exist: run `make previous-release`",
        path.display()
    );
    Ok(path)
}

async fn binary_version(cluster: &mut Cluster, id: u64) -> Result<u32> {
    Ok(cluster
        .node_mut(id)
        .admin()?
        .hello(HelloRequest {})
        .await
        .with_context(|| format!("hello to node {id}"))?
        .into_inner()
        .binary_version)
}

async fn run() -> Result<()> {
    // The previous release had no TLS: a cluster of it upgrades in plain text (TLS is turned on
    // after the upgrade, as ARCHITECTURE.md invariant 12 says).
    bongsu_testkit::pki::use_plaintext();
    let previous = previous_binary()?;
    let current = node_bin(env!("CARGO_BIN_EXE_bongsu-node"));
    let sp = plain(spec(3, 1)).shards(SHARDS).binary(&previous);
    let mut cluster = Cluster::start("upgrade", sp).await?;
    cluster.wait_all_leaders(Duration::from_secs(30)).await?;
    for id in cluster.ids() {
        ensure!(
            binary_version(&mut cluster, id).await? == 0,
            "node {id} runs {}, which reports a binary version: not the previous release",
            previous.display()
        );
    }

    let client = Arc::new(cluster.client()?.with_deadline(Duration::from_secs(20)));
    let mut writers = ShardWriters::start(client, SHARDS, 0x0960_0000).await?;
    writers.wait_all_writing(WRITING).await?;

    let ids = cluster.ids();
    for (step, id) in ids.iter().copied().enumerate() {
        let started = Instant::now();
        cluster.kill_with(id, libc::SIGTERM)?;
        cluster.node_mut(id).set_binary(&current);
        cluster.node(id).note("upgraded to this release's binary");
        cluster.restart(id).await?;
        cluster.wait_caught_up(id, Duration::from_secs(60)).await?;
        writers.wait_all_writing(WRITING).await?;
        ensure!(binary_version(&mut cluster, id).await? == BINARY_VERSION);
        eprintln!(
            "node {id} upgraded and caught up in {:?}; every shard is writing",
            started.elapsed()
        );
        if step + 1 < ids.len() {
            let st = cluster.status(id).await?;
            ensure!(
                st.cluster_version == CLUSTER_V1,
                "the cluster version is {} with nodes still on the previous release",
                st.cluster_version
            );
            match gated_command(&mut cluster, id).await? {
                Err(ErrorCode::UpgradeNotFinished) => {}
                other => bail!(
                    "a command of cluster version {CLUSTER_V2} in a mixed cluster: {other:?}, \
                     expected UPGRADE_NOT_FINISHED"
                ),
            }
        }
    }

    // Every node runs this release: the meta leader raises the version.
    let started = Instant::now();
    loop {
        let versions: Vec<u32> = cluster
            .statuses()
            .await
            .values()
            .map(|s| s.cluster_version)
            .collect();
        if versions.len() == ids.len() && versions.iter().all(|v| *v == CLUSTER_V2) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the cluster version did not rise to {CLUSTER_V2}: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("cluster version {CLUSTER_V2} after {:?}", started.elapsed());
    let accepted = gated_command(&mut cluster, ids[0]).await?;
    ensure!(
        accepted.is_ok(),
        "the command of cluster version {CLUSTER_V2} is refused after the upgrade: {accepted:?}"
    );

    writers.wait_all_writing(WRITING).await?;
    writers.stop().await;
    let summary = writers.verify().await?;
    eprintln!(
        "upgrade: acked={} lost={} max_gap_ms={}",
        summary.acked,
        summary.lost,
        summary.max_gap.as_millis()
    );
    ensure!(
        summary.lost == 0 && summary.problems.is_empty(),
        "{:?}",
        summary.problems
    );
    cluster
        .ensure_replicas_identical(3, Duration::from_secs(60))
        .await?;
    cluster.pass();
    Ok(())
}

/// Proposes `Prune`, a command this release added, on shard 0 through its leader, after
/// checking that node `id` refuses it the same way when it does not lead: `Err(code)` if
/// refused.
async fn gated_command(cluster: &mut Cluster, id: u64) -> Result<Result<(), ErrorCode>> {
    let group = shard_group(0);
    let leaders = cluster.leaders().await;
    let leader = leaders.get(&group).context("shard 0 has no leader")?.leader;
    let mut tried = Vec::new();
    for node in [id, leader] {
        if tried.contains(&node) {
            continue;
        }
        tried.push(node);
        let mut admin = cluster.node_mut(node).admin()?;
        match admin
            .prune(PruneRequest {
                group,
                events_before: 0,
            })
            .await
        {
            Ok(_) => return Ok(Ok(())),
            Err(s) => match ErrorCode::of_status(&s) {
                // Only the leader proposes; ask it.
                Some(ErrorCode::NotLeader) if node != leader => continue,
                Some(code) => return Ok(Err(code)),
                None => bail!("prune through node {node}: {s}"),
            },
        }
    }
    bail!("shard 0's leader {leader} answered NOT_LEADER")
}
