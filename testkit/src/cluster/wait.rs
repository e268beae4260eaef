//! Waiting for the cluster: until a node answers, every group has a leader, every replica
//! knows it, a node has caught up, the groups match a shard map, or a node exits.
//!
//! Each wait polls the nodes' status every [`POLL`] and fails after its timeout saying what
//! it was still waiting for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bongsu_proto::internal::{ClusterStatus, GroupStatus, HelloRequest, ShardMap};

use super::status::{leaders_of, Led};
use super::{shard_group, Cluster, Exit, META_GROUP};

/// How often the kit asks nodes for their status while waiting for something.
pub const POLL: Duration = Duration::from_millis(50);
/// How long a node may take from spawn to answering on its admin port.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times a node is spawned again when it exits at once (another process took a port
/// between the kit finding it free and the node binding it).
const SPAWN_ATTEMPTS: u32 = 4;

/// A wait's deadline: [`Patience::wait`] fails once it has passed, naming the goal and the
/// last reason given, and otherwise pauses for [`POLL`].
struct Patience {
    goal: String,
    timeout: Duration,
    deadline: Instant,
}

impl Patience {
    fn new(goal: impl Into<String>, timeout: Duration) -> Self {
        let goal = goal.into();
        Self {
            goal,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    async fn wait(&self, why: String) -> Result<()> {
        if Instant::now() >= self.deadline {
            bail!("{} after {:?}: {why}", self.goal, self.timeout);
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

impl Cluster {
    /// Waits until node `id` answers on its admin port. A node that exits first is spawned
    /// again, on fresh ports when `may_move` (before the cluster knows its addresses).
    pub(crate) async fn wait_answering(&mut self, id: u64, may_move: bool) -> Result<()> {
        let mut attempts = 1;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let now = self.now_ms();
            if let Some(exit) = self.node_mut(id).poll_exit(now) {
                self.exits.push(exit.clone());
                if attempts >= SPAWN_ATTEMPTS {
                    let tail = self.node(id).log_tail(20);
                    bail!(
                        "{} at start, {attempts} times; log:\n{tail}",
                        exit.describe()
                    );
                }
                attempts += 1;
                self.respawn(id, may_move).await?;
                continue;
            }
            let mut admin = self.node_mut(id).admin()?;
            if admin.hello(HelloRequest {}).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} did not answer on its admin port {} within {READY_TIMEOUT:?}",
                    self.node(id).admin_addr
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Spawns a node that exited at start again: on fresh ports when it may move and picks
    /// its own, otherwise on the same ones after a pause.
    async fn respawn(&mut self, id: u64, may_move: bool) -> Result<()> {
        let n = self.node_mut(id);
        if may_move && n.netns.is_none() {
            n.assign_ports()?;
            n.write_config()?;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.node_mut(id).spawn()
    }

    /// Notices nodes that exited by themselves since the last look; returns the new exits.
    pub fn poll_exits(&mut self) -> Vec<Exit> {
        let now = self.now_ms();
        let new: Vec<Exit> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.poll_exit(now))
            .collect();
        self.exits.extend(new.iter().cloned());
        new
    }

    /// Waits up to `timeout` for node `id` to exit by itself.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.now_ms();
            if let Some(e) = self.node_mut(id).poll_exit(now) {
                self.exits.push(e.clone());
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the meta group and every shard group have a leader; returns them.
    pub async fn wait_all_leaders(&mut self, timeout: Duration) -> Result<BTreeMap<u64, Led>> {
        let p = Patience::new("groups without a leader", timeout);
        loop {
            let found = self.leaders().await;
            let missing: Vec<u64> = self
                .all_groups()
                .into_iter()
                .filter(|g| !found.contains_key(g))
                .collect();
            if missing.is_empty() {
                return Ok(found);
            }
            p.wait(format!("{missing:?}")).await?;
        }
    }

    /// Waits until every group has a leader that every running node hosting the group names,
    /// and every running node answers.
    pub async fn wait_settled(&mut self, timeout: Duration) -> Result<()> {
        let p = Patience::new("not settled", timeout);
        loop {
            let statuses = self.statuses().await;
            let mut unsettled = self.unsettled(&statuses);
            let missing: Vec<u64> = self
                .nodes
                .iter()
                .filter(|n| n.running() && !n.paused && !statuses.contains_key(&n.id))
                .map(|n| n.id)
                .collect();
            if !missing.is_empty() {
                unsettled.push(format!("nodes {missing:?} do not answer status"));
            }
            if unsettled.is_empty() {
                return Ok(());
            }
            p.wait(unsettled.join("; ")).await?;
        }
    }

    /// The groups without a leader, or with a replica naming another leader.
    fn unsettled(&self, statuses: &BTreeMap<u64, ClusterStatus>) -> Vec<String> {
        let leaders = leaders_of(statuses);
        let mut out = Vec::new();
        for group in self.all_groups() {
            let Some(led) = leaders.get(&group) else {
                out.push(format!("group {group}: no leader"));
                continue;
            };
            for (id, st) in statuses {
                let named = st
                    .groups
                    .iter()
                    .find(|g| g.group == group)
                    .map(|g| g.leader);
                if named.is_some_and(|l| l != led.leader) {
                    out.push(format!(
                        "group {group}: node {id} names {} not {}",
                        named.unwrap_or_default(),
                        led.leader
                    ));
                }
            }
        }
        out
    }

    /// Waits until node `id` hosts every group whose leader lists it as a voter or learner,
    /// and has applied in each at least what that leader had applied.
    pub async fn wait_caught_up(&mut self, id: u64, timeout: Duration) -> Result<()> {
        let p = Patience::new(format!("node {id} not caught up"), timeout);
        loop {
            let leaders = self.leaders().await;
            let behind = match self.status(id).await {
                Err(e) => vec![format!("{e:#}")],
                Ok(st) => self.behind(id, &st.groups, &leaders),
            };
            if behind.is_empty() {
                return Ok(());
            }
            p.wait(behind.join("; ")).await?;
        }
    }

    /// The groups in which node `id` (whose groups are `mine`) lacks what `leaders` applied.
    fn behind(&self, id: u64, mine: &[GroupStatus], leaders: &BTreeMap<u64, Led>) -> Vec<String> {
        let mine: BTreeMap<u64, &GroupStatus> = mine.iter().map(|g| (g.group, g)).collect();
        let mut behind = Vec::new();
        for group in self.all_groups() {
            let Some(led) = leaders.get(&group) else {
                behind.push(format!("group {group}: no leader"));
                continue;
            };
            let member = led.status.voters.contains(&id) || led.status.learners.contains(&id);
            if !member || led.leader == id {
                continue;
            }
            match mine.get(&group) {
                None => behind.push(format!("group {group}: not hosted")),
                Some(g) if g.applied_index < led.status.applied_index => behind.push(format!(
                    "group {group}: applied {} < leader {}'s {}",
                    g.applied_index, led.leader, led.status.applied_index
                )),
                Some(_) => {}
            }
        }
        behind
    }

    /// Waits until each shard's leader reports the map's voters and no learners, and every
    /// running node hosts exactly the meta group and the shards the map places on it.
    pub async fn wait_groups_match(&mut self, map: &ShardMap, timeout: Duration) -> Result<()> {
        let p = Patience::new(
            format!("groups disagree with map version {}", map.version),
            timeout,
        );
        loop {
            let mut wrong = leaders_disagree(map, &self.leaders().await);
            for (id, st) in self.statuses().await {
                let hosted: BTreeSet<u64> = st.groups.iter().map(|g| g.group).collect();
                let placed = placed_on(map, id);
                if hosted != placed {
                    wrong.push(format!(
                        "node {id} hosts groups {hosted:?}, the map places {placed:?}"
                    ));
                }
            }
            if wrong.is_empty() {
                return Ok(());
            }
            p.wait(format!("\n{}", wrong.join("\n"))).await?;
        }
    }
}

/// The shards whose leader's voters and learners differ from the map's.
fn leaders_disagree(map: &ShardMap, leaders: &BTreeMap<u64, Led>) -> Vec<String> {
    let mut wrong = Vec::new();
    for s in &map.shards {
        let want: BTreeSet<u64> = s.voters.iter().copied().collect();
        let Some(l) = leaders.get(&shard_group(s.shard)) else {
            wrong.push(format!("shard {}: no leader", s.shard));
            continue;
        };
        let voters: BTreeSet<u64> = l.status.voters.iter().copied().collect();
        if voters != want || !l.status.learners.is_empty() {
            wrong.push(format!(
                "shard {}: leader {} has voters {voters:?} learners {:?}, the map {want:?}",
                s.shard, l.leader, l.status.learners
            ));
        }
    }
    wrong
}

/// The groups the map places on node `id`: the meta group and its shards.
fn placed_on(map: &ShardMap, id: u64) -> BTreeSet<u64> {
    std::iter::once(META_GROUP)
        .chain(
            map.shards
                .iter()
                .filter(|s| s.voters.contains(&id) || s.learners.contains(&id))
                .map(|s| shard_group(s.shard)),
        )
        .collect()
}
