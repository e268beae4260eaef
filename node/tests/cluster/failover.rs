//! Leader kill under load: SIGKILL the node that leads the most shards while every shard takes
//! a continuous stream of appends; writes resume on every shard, the killed node restarts and
//! catches up, and nothing acknowledged is lost.
//!
//! Prints `node-failover: trials=T gap_ms_p50=X gap_ms_max=Y lost_acked=N` (3 dc x 1 node; the
//! 3 dc x 2 nodes variant labels its line `node-failover (3 dc x 2 nodes)`), where a trial's gap
//! is the worst shard's time from its last acknowledgement before the kill to its first after
//! it. The gap is a benchmark figure and is not asserted; that every shard resumes within
//! [`RESUME_BOUND`] and that no acknowledged message is lost are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::model::{ClientMsgId, ConvId, UserId};
use bongsu_proto::v1;

use crate::harness::{shard_group, spec, Cluster, Spec, META_GROUP};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, appended, create};
use bongsu_testkit::writers::conv_on_shard;
use bongsu_testkit::writers::{judge, read_back, Ack, Resumed, ShardWriters, READER, SENDER};

const TRIALS: usize = 5;
/// Every shard must take a write again within this long after the kill.
const RESUME_BOUND: Duration = Duration::from_secs(15);
/// The restarted node must catch up within this long.
const CATCH_UP_BOUND: Duration = Duration::from_secs(30);
/// Steady writing before each kill, so every shard has recent acknowledgements.
const STEADY: Duration = Duration::from_millis(1000);
/// One write keeps retrying this long; longer than [`RESUME_BOUND`], so that a writer only
/// gives up on a write when the test has failed anyway.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);

/// The benchmark figure: three datacenters of one node each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_ack() -> Result<()> {
    bounded(
        Duration::from_secs(180),
        leader_kill("failover-3x1", "node-failover", spec(3, 1).shards(8)),
    )
    .await
}

/// Two nodes per datacenter: a shard's replicas are on half the nodes, so the client also
/// meets nodes that do not host the shard at all while it looks for the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_ack_two_nodes_per_dc() -> Result<()> {
    bounded(
        Duration::from_secs(180),
        leader_kill(
            "failover-3x2",
            "node-failover (3 dc x 2 nodes)",
            spec(3, 2).shards(12),
        ),
    )
    .await
}

/// Leader kill while the groups are idle: they have quiesced (no heartbeats, no election
/// timers), so only node liveness can notice the dead leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leader_kill_resumes_every_shard() -> Result<()> {
    bounded(
        Duration::from_secs(150),
        idle_leader_kill("failover-idle-3x1", spec(3, 1).shards(8)),
    )
    .await
}

/// How long the groups are left without writes before a kill: longer than a leader takes to
/// quiesce (3 s in `node/src/quiesce.rs`).
const IDLE: Duration = Duration::from_secs(4);
const IDLE_TRIALS: usize = 3;

/// Per trial: let every group go idle, kill the node leading the most shards, then write once
/// to every shard at the same time, each write sent first to the shard's last known leader (a
/// gateway's cache), and time until every shard has acknowledged. Prints
/// `node-failover-idle: trials=T resume_ms_p50=X resume_ms_max=Y lost_acked=N`.
async fn idle_leader_kill(name: &str, spec: Spec) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec).await?;
    let shards = cluster.spec.shards;
    let client = Arc::new(cluster.client()?.with_deadline(WRITE_DEADLINE));
    let sender = UserId::from_u128(SENDER);
    let convs: Vec<ConvId> = (0..shards)
        .map(|s| conv_on_shard(s, shards, 0x1d1e_0000_0000))
        .collect();
    let mut acks: Vec<Vec<Ack>> = vec![Vec::new(); shards as usize];
    let mut last_leader: Vec<Option<u64>> = vec![None; shards as usize];
    for (shard, conv) in convs.iter().enumerate() {
        let r = client
            .write(
                create(
                    *conv,
                    v1::ConversationKind::Group,
                    sender,
                    &[UserId::from_u128(READER)],
                ),
                None,
            )
            .await?;
        last_leader[shard] = Some(r.node);
    }

    let mut resume_times = Vec::new();
    for trial in 1..=IDLE_TRIALS {
        // One write per shard, all at once; returns how long after `from` each was acknowledged.
        let round = |n: u64, from: Instant, last_leader: Vec<Option<u64>>| {
            let calls = convs.iter().enumerate().map(|(shard, conv)| {
                let client = client.clone();
                let cmid = ClientMsgId::from_u128(((shard as u128 + 1) << 96) | n as u128);
                let body = format!("idle shard {shard} message {n}");
                let (conv, prefer) = (*conv, last_leader[shard]);
                async move {
                    let r = client
                        .write(append(conv, sender, cmid, &body), prefer)
                        .await;
                    let at = Instant::now();
                    (
                        shard,
                        r.map(|a| {
                            (
                                a.node,
                                appended(&a.reply),
                                at - from,
                                Ack {
                                    cmid,
                                    seq: 0,
                                    duplicate: false,
                                    body,
                                    at,
                                    sent: from,
                                    attempts: a.attempts,
                                    node: a.node,
                                },
                            )
                        }),
                    )
                }
            });
            futures::future::join_all(calls)
        };
        // Writes before the pause, so that every group has a recent entry and then goes idle.
        for (shard, r) in round(trial as u64 * 2 - 1, Instant::now(), last_leader.clone()).await {
            let (node, ap, _, mut ack) = r.with_context(|| {
                format!("trial {trial}: write to shard {shard} before the pause")
            })?;
            let ap = ap.context("append reply")?;
            ack.seq = ap.seq;
            ack.duplicate = ap.duplicate;
            acks[shard].push(ack);
            last_leader[shard] = Some(node);
        }
        tokio::time::sleep(IDLE).await;

        let counts = cluster.shard_leader_counts().await;
        let (&victim, &led) = counts
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .context("no running node")?;
        let kill = Instant::now();
        cluster.kill(victim)?;
        let mut worst = Duration::ZERO;
        let mut failed = Vec::new();
        for (shard, r) in round(trial as u64 * 2, kill, last_leader.clone()).await {
            match r {
                Ok((node, Some(ap), took, mut ack)) => {
                    ack.seq = ap.seq;
                    ack.duplicate = ap.duplicate;
                    acks[shard].push(ack);
                    last_leader[shard] = Some(node);
                    worst = worst.max(took);
                }
                Ok((_, None, _, _)) => failed.push(format!("shard {shard}: not an append reply")),
                Err(f) => failed.push(format!("shard {shard}: {f}")),
            }
        }
        ensure!(
            failed.is_empty(),
            "trial {trial}: after killing node {victim}: {}",
            failed.join("; ")
        );
        ensure!(
            worst <= RESUME_BOUND,
            "trial {trial}: a shard took {worst:?} to take a write after the kill"
        );
        resume_times.push(worst);
        let restart = Instant::now();
        cluster
            .restart(victim)
            .await
            .with_context(|| format!("trial {trial}: restart node {victim}"))?;
        cluster
            .wait_caught_up(victim, CATCH_UP_BOUND)
            .await
            .with_context(|| format!("trial {trial}"))?;
        eprintln!(
            "idle trial {trial}: killed node {victim} (led {led} of {shards} shards) after {} ms idle, \
             every shard took a write {} ms after the kill; restarted and caught up in {} ms",
            IDLE.as_millis(),
            worst.as_millis(),
            restart.elapsed().as_millis()
        );
    }

    let mut lost = 0;
    let mut problems = Vec::new();
    for (shard, conv) in convs.iter().enumerate() {
        let msgs = read_back(&client, shard as u32, *conv).await?;
        let v = judge(shard as u32, *conv, started, &msgs, &acks[shard]);
        lost += v.lost;
        problems.extend(v.problems);
    }
    let mut sorted = resume_times.clone();
    sorted.sort();
    println!(
        "node-failover-idle: trials={} resume_ms_p50={} resume_ms_max={} lost_acked={lost}",
        sorted.len(),
        sorted[(sorted.len() - 1) / 2].as_millis(),
        sorted.last().copied().unwrap_or_default().as_millis()
    );
    eprintln!("{name}: {} s in all", started.elapsed().as_secs());
    ensure!(
        lost == 0 && problems.is_empty(),
        "lost_acked={lost}; problems:\n{}",
        problems.join("\n")
    );
    cluster.pass();
    Ok(())
}

/// Runs the trials and prints `<label>: trials=...`.
async fn leader_kill(name: &str, label: &str, spec: Spec) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec).await?;
    let shards = cluster.spec.shards;
    let client = Arc::new(cluster.client()?.with_deadline(WRITE_DEADLINE));

    // One conversation per shard, each with its own writer.
    let mut writers = ShardWriters::start(client.clone(), shards, 0xfa11_0000_0000).await?;

    let mut trial_gaps = Vec::new();
    let outcome: Result<()> = async {
        for trial in 1..=TRIALS {
            // Steady writing first: every shard has acknowledged writes since the last trial.
            let before = writers.ack_counts();
            tokio::time::sleep(STEADY).await;
            let deadline = Instant::now() + RESUME_BOUND;
            while writers.ack_counts().iter().zip(&before).any(|(now, then)| now <= then) {
                if Instant::now() >= deadline {
                    bail!("trial {trial}: shards not writing before the kill: {:?} -> {:?}", before, writers.ack_counts());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            let leaders = cluster.leaders().await;
            let counts = cluster.shard_leader_counts().await;
            let (&victim, &led) = counts.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).context("no running node")?;
            let led_shards: Vec<u32> =
                (0..shards).filter(|s| leaders.get(&shard_group(*s)).is_some_and(|l| l.leader == victim)).collect();
            let meta = leaders.get(&META_GROUP).map(|l| l.leader) == Some(victim);
            let kill = Instant::now();
            cluster.kill(victim)?;

            // Writes resume on every shard.
            let shards_resumed: BTreeMap<u32, Resumed> = loop {
                let r = writers.resumed(kill);
                if r.values().all(Option::is_some) {
                    break r.into_iter().filter_map(|(s, r)| Some((s, r?))).collect();
                }
                if kill.elapsed() >= RESUME_BOUND {
                    let stuck: Vec<u32> = r.iter().filter(|(_, v)| v.is_none()).map(|(s, _)| *s).collect();
                    bail!("trial {trial}: shards {stuck:?} took no write within {RESUME_BOUND:?} of killing node {victim}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let (worst_shard, worst) =
                shards_resumed.iter().map(|(s, r)| (*s, r.gap)).max_by_key(|(_, g)| *g).expect("there are shards");
            let resumed_after = shards_resumed.values().map(|r| r.after_kill).max().unwrap_or_default();
            trial_gaps.push(worst);

            let restart = Instant::now();
            cluster.restart(victim).await.with_context(|| format!("trial {trial}: restart node {victim}"))?;
            cluster.wait_caught_up(victim, CATCH_UP_BOUND).await.with_context(|| format!("trial {trial}"))?;
            eprintln!(
                "trial {trial}: killed node {victim} ({}, led {led} of {shards} shards {led_shards:?}{}), \
                 worst gap {} ms on shard {worst_shard}, all shards took writes again {} ms after the kill, \
                 restarted and caught up in {} ms",
                cluster.dc_of(victim),
                if meta { " and meta" } else { "" },
                worst.as_millis(),
                resumed_after.as_millis(),
                restart.elapsed().as_millis(),
            );
        }
        Ok(())
    }
    .await;

    writers.stop().await;
    outcome?;

    // Nothing acknowledged is lost: read every conversation in full from its leader.
    let summary = writers.verify().await?;
    let (lost, problems) = (summary.lost, summary.problems);
    let (acked, duplicates, unanswered) = (summary.acked, summary.duplicates, summary.unanswered);
    let mut sorted = trial_gaps.clone();
    sorted.sort();
    let p50 = sorted
        .get((sorted.len().saturating_sub(1)) / 2)
        .copied()
        .unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    println!(
        "{label}: trials={} gap_ms_p50={} gap_ms_max={} lost_acked={lost}",
        trial_gaps.len(),
        p50.as_millis(),
        max.as_millis()
    );
    eprintln!(
        "{name}: {acked} acknowledged appends ({duplicates} answered as duplicates of a retried send, \
         {unanswered} unanswered), gaps {:?} ms, {} s in all",
        trial_gaps.iter().map(|g| g.as_millis()).collect::<Vec<_>>(),
        started.elapsed().as_secs()
    );
    ensure!(
        lost == 0 && problems.is_empty(),
        "lost_acked={lost}; problems:\n{}",
        problems.join("\n")
    );
    cluster.pass();
    Ok(())
}
