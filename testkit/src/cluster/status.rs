//! What the nodes say about themselves: their status, each group's leader, and how the
//! leaderships are spread.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use bongsu_proto::internal::{ClusterStatus, GroupStatus, StatusRequest};

use super::{shard_group, Cluster, META_GROUP};

/// A group's leader and that leader's own view of the group.
#[derive(Clone, Debug)]
pub struct Led {
    pub leader: u64,
    pub status: GroupStatus,
}

impl Cluster {
    /// The status of node `id`.
    pub async fn status(&mut self, id: u64) -> Result<ClusterStatus> {
        let mut admin = self.node_mut(id).admin()?;
        let s = admin
            .status(StatusRequest {})
            .await
            .with_context(|| format!("status of node {id}"))?;
        Ok(s.into_inner())
    }

    /// The status of every running node that answers (paused nodes are not asked).
    pub async fn statuses(&mut self) -> BTreeMap<u64, ClusterStatus> {
        let calls: Vec<_> = self
            .nodes
            .iter_mut()
            .filter(|n| n.running() && !n.paused)
            .filter_map(|n| Some((n.id, n.admin().ok()?)))
            .map(|(id, mut admin)| async move { (id, admin.status(StatusRequest {}).await) })
            .collect();
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.ok().map(|s| (id, s.into_inner())))
            .collect()
    }

    /// Each group's leader as claimed by the node that leads it (the highest term wins when a
    /// deposed leader has not noticed yet).
    pub async fn leaders(&mut self) -> BTreeMap<u64, Led> {
        leaders_of(&self.statuses().await)
    }

    /// The meta group and every shard group.
    pub fn all_groups(&self) -> Vec<u64> {
        std::iter::once(META_GROUP)
            .chain((0..self.spec.shards).map(shard_group))
            .collect()
    }

    /// How many shard groups each running node leads now (nodes leading none included).
    pub async fn shard_leader_counts(&mut self) -> BTreeMap<u64, usize> {
        let mut counts: BTreeMap<u64, usize> =
            self.running_ids().into_iter().map(|id| (id, 0)).collect();
        for (group, led) in self.leaders().await {
            if group != META_GROUP {
                *counts.entry(led.leader).or_default() += 1;
            }
        }
        counts
    }

    /// The datacenter whose nodes lead the most shards (the lowest number on a tie), and how
    /// many it leads.
    pub async fn busiest_dc(&mut self) -> (u8, usize) {
        let mut per_dc: BTreeMap<u8, usize> = (1..=self.spec.dcs).map(|d| (d, 0)).collect();
        for (id, n) in self.shard_leader_counts().await {
            *per_dc.entry(self.dc_of(id)).or_default() += n;
        }
        per_dc
            .into_iter()
            .max_by_key(|(d, n)| (*n, std::cmp::Reverse(*d)))
            .unwrap_or((1, 0))
    }

    /// The node leading the most shards (the lowest id on a tie), and how many it leads.
    pub async fn busiest_node(&mut self) -> (u64, usize) {
        self.shard_leader_counts()
            .await
            .into_iter()
            .max_by_key(|(id, n)| (*n, std::cmp::Reverse(*id)))
            .unwrap_or((1, 0))
    }

    pub async fn meta_leader(&mut self) -> Option<u64> {
        self.leaders().await.get(&META_GROUP).map(|l| l.leader)
    }
}

/// Each group's leader among `statuses` (see [`Cluster::leaders`]).
pub fn leaders_of(statuses: &BTreeMap<u64, ClusterStatus>) -> BTreeMap<u64, Led> {
    let mut out: BTreeMap<u64, Led> = BTreeMap::new();
    for (id, st) in statuses {
        for g in st.groups.iter().filter(|g| g.leader == *id) {
            if out.get(&g.group).is_none_or(|l| l.status.term < g.term) {
                let led = Led {
                    leader: *id,
                    status: g.clone(),
                };
                out.insert(g.group, led);
            }
        }
    }
    out
}
