//! Leader kill under load: SIGKILL the node that leads the most shards while every shard takes
//! a continuous stream of appends; writes resume on every shard, the killed node restarts and
//! catches up, and nothing acknowledged is lost.
//!
//! Prints `node-failover: trials=T gap_ms_p50=X gap_ms_max=Y lost_acked=N` (3 dc x 1 node; the
//! 3 dc x 2 nodes variant labels its line `node-failover (3 dc x 2 nodes)`), where a trial's gap
//! is the worst shard's time from its last acknowledgement before the kill to its first after
//! it. The gap is a benchmark figure and is not asserted; that every shard resumes within
//! [`RESUME_BOUND`] and that no acknowledged message is lost are.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::model::{ClientMsgId, ConvId, UserId};
use bongsu_proto::v1;

use crate::client::{append, appended, create, TestClient};
use crate::harness::{shard_group, Cluster, Spec, META_GROUP};
use crate::{bounded, conv_on_shard};

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
        leader_kill("failover-3x1", "node-failover", Spec::new(3, 1).shards(8)),
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
            Spec::new(3, 2).shards(12),
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
        idle_leader_kill("failover-idle-3x1", Spec::new(3, 1).shards(8)),
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
        let msgs = client
            .read_all(*conv, UserId::from_u128(READER), None)
            .await
            .with_context(|| format!("read shard {shard}"))?;
        problems.extend(check_shard(shard as u32, &msgs, &acks[shard], &mut lost));
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

/// One acknowledged append.
#[derive(Debug, Clone)]
pub struct Ack {
    cmid: ClientMsgId,
    seq: u64,
    duplicate: bool,
    body: String,
    pub at: Instant,
    /// When the write that this acknowledges was first sent.
    pub sent: Instant,
    /// How many nodes were asked (hints followed and retries).
    pub attempts: u32,
    pub node: u64,
}

/// What one shard's writer has seen.
#[derive(Default)]
pub struct History {
    pub acks: Vec<Ack>,
    /// Writes that never got an answer before their deadline (their fate is unknown).
    pub unanswered: Vec<String>,
    /// Answers that were not a successful append.
    pub errors: Vec<String>,
}

pub struct Writer {
    pub shard: u32,
    pub conv: ConvId,
    pub history: Arc<Mutex<History>>,
    pub task: tokio::task::JoinHandle<()>,
}

pub const SENDER: u128 = 0x5e4d_0001;
pub const READER: u128 = 0x5e4d_0002;

/// Appends to one conversation, one write at a time, until `stop`; each write goes first to
/// the node that answered the previous one, as a gateway with a leader cache would do.
/// Bodies name the writer and the message and are padded to `body_len` bytes.
pub async fn write_loop(
    client: Arc<TestClient>,
    writer: u32,
    conv: ConvId,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    body_len: usize,
) {
    let sender = UserId::from_u128(SENDER);
    let mut prefer = None;
    let mut n: u64 = 0;
    let shard = writer;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cmid = ClientMsgId::from_u128(((shard as u128 + 1) << 96) | n as u128);
        let mut body = format!("shard {shard} message {n}");
        if body.len() < body_len {
            body.push(' ');
            body.extend(std::iter::repeat_n('x', body_len - body.len()));
        }
        let sent = Instant::now();
        let r = client
            .write(append(conv, sender, cmid, &body), prefer)
            .await;
        let at = Instant::now();
        let mut h = history.lock().expect("history lock");
        match r {
            Ok(a) => match appended(&a.reply) {
                Some(ap) => {
                    prefer = Some(a.node);
                    h.acks.push(Ack {
                        cmid,
                        seq: ap.seq,
                        duplicate: ap.duplicate,
                        body,
                        at,
                        sent,
                        attempts: a.attempts,
                        node: a.node,
                    });
                }
                None => h
                    .errors
                    .push(format!("message {n}: unexpected reply {:?}", a.reply)),
            },
            Err(f) if f.gave_up => h.unanswered.push(format!("message {n}: {f}")),
            Err(f) => h.errors.push(format!("message {n}: {f}")),
        }
    }
}

/// Creates one conversation per shard (ids from `base`) and starts its writer, with bodies
/// padded to `body_len`; the writers run until `stop`.
pub async fn start_writers(
    client: &Arc<TestClient>,
    shards: u32,
    base: u128,
    stop: &Arc<AtomicBool>,
    body_len: usize,
) -> Result<Vec<Writer>> {
    let mut writers = Vec::new();
    for shard in 0..shards {
        let conv = conv_on_shard(shard, shards, base);
        let members = [UserId::from_u128(READER)];
        let r = client
            .write(
                create(
                    conv,
                    v1::ConversationKind::Group,
                    UserId::from_u128(SENDER),
                    &members,
                ),
                None,
            )
            .await
            .with_context(|| format!("create the conversation of shard {shard}"))?;
        ensure!(
            r.reply.shard == shard,
            "conversation for shard {shard} went to shard {}",
            r.reply.shard
        );
        let history = Arc::new(Mutex::new(History::default()));
        let task = tokio::spawn(write_loop(
            client.clone(),
            shard,
            conv,
            stop.clone(),
            history.clone(),
            body_len,
        ));
        writers.push(Writer {
            shard,
            conv,
            history,
            task,
        });
    }
    Ok(writers)
}

/// Stops the writers, waiting for each one's write in flight (at most `deadline` and a bit).
pub async fn stop_writers(stop: &AtomicBool, writers: &mut [Writer], deadline: Duration) {
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        if tokio::time::timeout(deadline + Duration::from_secs(5), &mut w.task)
            .await
            .is_err()
        {
            w.task.abort();
        }
    }
}

/// How one shard came through a kill.
#[derive(Debug, Clone, Copy)]
pub struct Resumed {
    /// From the last acknowledgement before the kill to the first after it.
    pub gap: Duration,
    /// From the kill to the first acknowledgement after it.
    pub after_kill: Duration,
}

/// Per shard: how it came through the kill at `kill`, or `None` if it has not acknowledged a
/// write after it yet.
pub fn resumed(writers: &[Writer], kill: Instant) -> BTreeMap<u32, Option<Resumed>> {
    writers
        .iter()
        .map(|w| {
            let h = w.history.lock().expect("history lock");
            let before = h
                .acks
                .iter()
                .rev()
                .find(|a| a.at <= kill)
                .map(|a| a.at)
                .unwrap_or(kill);
            let after = h.acks.iter().find(|a| a.at > kill).map(|a| a.at);
            (
                w.shard,
                after.map(|after| Resumed {
                    gap: after - before,
                    after_kill: after - kill,
                }),
            )
        })
        .collect()
}

pub fn ack_count(writers: &[Writer]) -> Vec<usize> {
    writers
        .iter()
        .map(|w| w.history.lock().expect("history lock").acks.len())
        .collect()
}

/// Runs the trials and prints `<label>: trials=...`.
async fn leader_kill(name: &str, label: &str, spec: Spec) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec).await?;
    let shards = cluster.spec.shards;
    let client = Arc::new(cluster.client()?.with_deadline(WRITE_DEADLINE));

    // One conversation per shard, each with its own writer.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = start_writers(&client, shards, 0xfa11_0000_0000, &stop, 0).await?;

    let mut trial_gaps = Vec::new();
    let outcome: Result<()> = async {
        for trial in 1..=TRIALS {
            // Steady writing first: every shard has acknowledged writes since the last trial.
            let before = ack_count(&writers);
            tokio::time::sleep(STEADY).await;
            let deadline = Instant::now() + RESUME_BOUND;
            while ack_count(&writers).iter().zip(&before).any(|(now, then)| now <= then) {
                if Instant::now() >= deadline {
                    bail!("trial {trial}: shards not writing before the kill: {:?} -> {:?}", before, ack_count(&writers));
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
                let r = resumed(&writers, kill);
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

    stop_writers(&stop, &mut writers, WRITE_DEADLINE).await;
    outcome?;

    // Nothing acknowledged is lost: read every conversation in full from its leader.
    let reader = UserId::from_u128(READER);
    let mut lost = 0usize;
    let mut problems = Vec::new();
    let (mut acked, mut duplicates, mut unanswered) = (0, 0, 0);
    for w in &writers {
        let acks = {
            let h = w.history.lock().expect("history lock");
            unanswered += h.unanswered.len();
            problems.extend(h.errors.iter().map(|e| format!("shard {}: {e}", w.shard)));
            problems.extend(
                h.unanswered
                    .iter()
                    .map(|e| format!("shard {}: unanswered {e}", w.shard)),
            );
            h.acks.clone()
        };
        acked += acks.len();
        duplicates += acks.iter().filter(|a| a.duplicate).count();
        let msgs = client
            .read_all(w.conv, reader, None)
            .await
            .with_context(|| format!("read the conversation of shard {}", w.shard))?;
        problems.extend(check_shard(w.shard, &msgs, &acks, &mut lost));
    }
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

/// Checks one conversation against its writer's acknowledgements: seqs are dense from 1; every
/// acknowledged append is stored at its seq with its body; no client message id is stored
/// twice; a sequential writer's acknowledged seqs increase. Returns the problems found and
/// adds the acknowledged appends missing or altered to `lost`.
pub fn check_shard(
    shard: u32,
    msgs: &[v1::Message],
    acks: &[Ack],
    lost: &mut usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.seq != i as u64 + 1 {
            problems.push(format!(
                "shard {shard}: message {i} has seq {} (not dense)",
                m.seq
            ));
            break;
        }
    }
    let mut by_cmid: HashMap<&[u8], &v1::Message> = HashMap::new();
    for m in msgs {
        if let Some(first) = by_cmid.insert(m.client_msg_id.as_slice(), m) {
            problems.push(format!(
                "shard {shard}: client_msg_id stored twice, at seqs {} and {}",
                first.seq, m.seq
            ));
        }
    }
    for a in acks {
        match by_cmid.get(a.cmid.0.as_slice()) {
            Some(m) if m.seq == a.seq && m.body == a.body.as_bytes() => {}
            Some(m) => {
                *lost += 1;
                problems.push(format!(
                    "shard {shard}: acked {:?} at seq {} (node {}), stored at seq {} with body {:?}",
                    a.body,
                    a.seq,
                    a.node,
                    m.seq,
                    String::from_utf8_lossy(&m.body)
                ));
            }
            None => {
                *lost += 1;
                problems.push(format!(
                    "shard {shard}: acked {:?} at seq {} (node {}) is missing",
                    a.body, a.seq, a.node
                ));
            }
        }
    }
    for pair in acks.windows(2) {
        if pair[1].seq <= pair[0].seq {
            problems.push(format!(
                "shard {shard}: acked seqs go back: {} then {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }
    problems
}
