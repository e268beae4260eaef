//! The replicas' own account of their state: every replica's digest of every shard, taken
//! once the workload has stopped, for the final state a history is judged against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bongsu_proto::internal::GroupDigestsRequest;

use super::{admin_client, shard_group, Cluster, META_GROUP};
use crate::history::ReplicaDigest;

/// How long a node may take to hash the state of every group it hosts.
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Every replica's digest of every shard, once all replicas of each shard have applied the
    /// same index (the workload must have stopped). After `timeout` it returns what it has, and
    /// the shards that never agreed on an applied index, so that the replicas checker judges.
    ///
    /// A digest hashes a replica's whole state, which takes a while once the bodies are large:
    /// the harness first waits, by the cheap status call, until the replicas of every shard
    /// have applied their leader's commit index, and only then asks each node for its digests,
    /// once, with [`DIGEST_TIMEOUT`] to answer.
    pub async fn replica_digests(
        &mut self,
        timeout: Duration,
    ) -> (BTreeMap<u32, Vec<ReplicaDigest>>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            let behind = self.applied_disagree().await;
            if !behind.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let (digests, unsettled) = self.digests_once().await;
            if unsettled.is_empty() || Instant::now() >= deadline {
                return (digests, unsettled);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (as [`Cluster::replica_digests`]) until every shard's replicas settle, then fails
    /// unless each shard has `replicas` replicas with one digest.
    pub async fn ensure_replicas_identical(
        &mut self,
        replicas: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (digests, unsettled) = self.replica_digests(timeout).await;
        anyhow::ensure!(
            unsettled.is_empty(),
            "replicas never settled: {unsettled:?}"
        );
        for (shard, got) in &digests {
            anyhow::ensure!(
                got.len() == replicas && got.iter().all(|r| r.digest == got[0].digest),
                "shard {shard}: replicas differ: {got:?}"
            );
        }
        Ok(())
    }

    /// The shards whose running replicas have not all applied their leader's commit index.
    async fn applied_disagree(&mut self) -> Vec<String> {
        let leaders = self.leaders().await;
        let statuses = self.statuses().await;
        let mut out = Vec::new();
        for shard in 0..self.spec.shards {
            let group = shard_group(shard);
            let Some(led) = leaders.get(&group) else {
                out.push(format!("shard {shard}: no leader"));
                continue;
            };
            let applied: Vec<(u64, u64)> = statuses
                .iter()
                .filter_map(|(id, st)| {
                    let g = st.groups.iter().find(|g| g.group == group)?;
                    Some((*id, g.applied_index))
                })
                .collect();
            let voters_answer = led
                .status
                .voters
                .iter()
                .all(|v| applied.iter().any(|(id, _)| id == v));
            if !voters_answer || applied.iter().any(|(_, a)| *a != led.status.commit_index) {
                out.push(format!(
                    "shard {shard}: leader {} committed {}, applied {applied:?}",
                    led.leader, led.status.commit_index
                ));
            }
        }
        out
    }

    /// Every running node's digests, asked once (see [`Cluster::replica_digests`]), and the
    /// shards whose replicas do not report one applied index covering every log entry.
    async fn digests_once(&mut self) -> (BTreeMap<u32, Vec<ReplicaDigest>>, Vec<String>) {
        let leaders = self.leaders().await;
        let calls: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| {
                let (id, admin) = (n.id, admin_client(&n.admin_addr, DIGEST_TIMEOUT));
                async move {
                    let r = match admin {
                        Ok(mut a) => a
                            .group_digests(GroupDigestsRequest {})
                            .await
                            .map_err(|s| s.message().to_string()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    (id, r)
                }
            })
            .collect();
        let mut per_shard: BTreeMap<u32, Vec<(ReplicaDigest, u64)>> = BTreeMap::new();
        let mut unsettled = Vec::new();
        for (id, r) in futures::future::join_all(calls).await {
            match r {
                Ok(rep) => {
                    for g in rep
                        .into_inner()
                        .groups
                        .into_iter()
                        .filter(|g| g.group != META_GROUP)
                    {
                        let d = ReplicaDigest {
                            node: id,
                            applied_index: g.applied_index,
                            digest: g.digest,
                        };
                        per_shard
                            .entry((g.group - 1) as u32)
                            .or_default()
                            .push((d, g.last_log_index));
                    }
                }
                Err(message) => unsettled.push(format!("node {id}: {message}")),
            }
        }
        for shard in 0..self.spec.shards {
            let reps = per_shard.get(&shard).map(Vec::as_slice).unwrap_or(&[]);
            let voters = leaders
                .get(&shard_group(shard))
                .map(|l| l.status.voters.clone())
                .unwrap_or_default();
            let applied: Vec<u64> = reps.iter().map(|(d, _)| d.applied_index).collect();
            let last_log = reps.iter().map(|(_, l)| *l).max().unwrap_or(0);
            let hosts_all = voters
                .iter()
                .all(|v| reps.iter().any(|(d, _)| d.node == *v));
            if voters.is_empty()
                || !hosts_all
                || applied.iter().any(|a| *a != applied[0] || *a < last_log)
            {
                unsettled.push(format!(
                    "shard {shard}: voters {voters:?}, applied {:?}, last log index {last_log}",
                    reps.iter()
                        .map(|(d, _)| (d.node, d.applied_index))
                        .collect::<Vec<_>>()
                ));
            }
        }
        let digests = per_shard
            .into_iter()
            .map(|(s, v)| (s, v.into_iter().map(|(d, _)| d).collect()))
            .collect();
        (digests, unsettled)
    }
}
