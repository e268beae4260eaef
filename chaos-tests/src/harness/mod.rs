//! The chaos cluster: real `bongsu-node-chaos` processes in several datacenters, and the
//! faults the scenarios inject into them.
//!
//! Two network modes ([`Mode`]):
//!
//! - [`Mode::Portable`]: datacenters are loopback address groups ([`portable`]); a partition
//!   is a set of drop rules in the nodes' own transport, sent through the admin API;
//! - [`Mode::Netns`] (root only): each datacenter is a network namespace joined to a bridge by
//!   a veth pair ([`netns`]); a partition is the datacenter's link taken down in the kernel.
//!
//! In both, killing a datacenter is SIGKILL to each of its node processes, pausing one is
//! SIGSTOP, and storage faults are the nodes' failpoints switched on through the admin API.
//! One node may get a small disk of its own ([`disk`]: a tmpfs at its data directory, root
//! only) that the `disk-full` fault really fills.
//! Every node is a child of the harness that dies with it (`PR_SET_PDEATHSIG`); dropping the
//! [`Cluster`] kills the nodes and removes the namespaces, links and mounts the run made.

pub mod disk;
pub mod netns;
pub mod portable;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bongsu_proto::internal::{
    ClusterStatus, GroupStatus, HelloRequest, InitRequest, SetFailpointRequest, SetFaultsRequest,
    StatusRequest,
};

use crate::history::ReplicaDigest;
pub use process::{Exit, NodeProc};

pub use bongsu_proto::model::{shard_group, META_GROUP};

/// How long a node may take from spawn to answering on its admin port.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// Spawns with fresh ports when a node exits at once (portable mode: a port was taken).
const SPAWN_ATTEMPTS: u32 = 4;
/// How long a node may take to hash the state of every group it hosts.
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the datacenters are networked (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Portable,
    Netns,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Portable => "portable",
            Mode::Netns => "netns",
        }
    }

    /// `auto` is netns when running as root and `ip netns` works, portable otherwise; the
    /// second value says why portable was chosen.
    pub fn choose(requested: &str) -> Result<(Mode, Option<String>)> {
        match requested {
            "portable" => Ok((Mode::Portable, None)),
            "netns" => match netns::available() {
                Ok(()) => Ok((Mode::Netns, None)),
                Err(why) => bail!("netns mode was asked for but cannot work here: {why}"),
            },
            "auto" | "" => match netns::available() {
                Ok(()) => Ok((Mode::Netns, None)),
                Err(why) => Ok((
                    Mode::Portable,
                    Some(format!(
                        "netns mode unavailable ({why}); using portable mode"
                    )),
                )),
            },
            other => bail!("unknown network mode {other:?}: use auto, portable or netns"),
        }
    }
}

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dcs: u8,
    pub nodes_per_dc: u8,
    pub shards: u32,
    pub replicas: u32,
}

/// A small disk for one node (see [`disk`]).
#[derive(Clone, Copy, Debug)]
pub struct SmallDiskPlan {
    pub node: u64,
    /// Bytes.
    pub size: u64,
}

/// The small disk's size: room for what a node writes in a scenario at half the cluster's
/// capacity, and little enough RAM when the ballast fills it.
pub const SMALL_DISK_BYTES: u64 = 1 << 30;

/// The node `disk-full` fills: the first node of the last datacenter.
pub fn disk_full_node(spec: &Spec) -> u64 {
    (spec.dcs as u64 - 1) * spec.nodes_per_dc as u64 + 1
}

/// A shard group's leader and that leader's view of it.
#[derive(Clone, Debug)]
pub struct Led {
    pub leader: u64,
    pub status: GroupStatus,
}

pub struct Cluster {
    pub spec: Spec,
    pub mode: Mode,
    pub nodes: Vec<NodeProc>,
    binary: PathBuf,
    pub dir: PathBuf,
    /// The run's clock: every time the harness records is milliseconds since this.
    epoch: Instant,
    /// Every node exit noticed, in order.
    pub exits: Vec<Exit>,
    /// The datacenter currently cut off, if any.
    partitioned: Option<u8>,
    /// The node the run planned a small disk for (`disk-full`), whether or not it got one.
    pub disk_full_node: Option<u64>,
    /// That node's small disk, when it could be mounted. Dropped (unmounted) after the nodes
    /// are killed.
    pub small_disk: Option<disk::SmallDisk>,
    /// Why a planned small disk could not be mounted.
    pub small_disk_unavailable: Option<String>,
    /// Dropped after the nodes are killed (see `Drop`).
    netns: Option<netns::Netns>,
}

impl Cluster {
    /// Starts every node, checks that the binary has the chaos hooks, initializes the cluster
    /// and waits until every group has a leader known to all its replicas.
    pub async fn start(
        spec: Spec,
        mode: Mode,
        dir: &Path,
        binary: &Path,
        epoch: Instant,
    ) -> Result<Cluster> {
        Self::start_with_disk(spec, mode, dir, binary, epoch, None).await
    }

    /// [`Cluster::start`], and with `small_disk` that node's data directory is first mounted
    /// as a small disk (see [`disk`]); where that cannot be done (not root, mounting not
    /// allowed) the cluster starts without it and says why in `small_disk_unavailable`.
    pub async fn start_with_disk(
        spec: Spec,
        mode: Mode,
        dir: &Path,
        binary: &Path,
        epoch: Instant,
        small_disk: Option<SmallDiskPlan>,
    ) -> Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let netns = match mode {
            Mode::Netns => Some(netns::Netns::create(spec.dcs, spec.nodes_per_dc)?),
            Mode::Portable => None,
        };
        let mut nodes = Vec::new();
        let mut small = None;
        let mut small_unavailable = None;
        for d in 1..=spec.dcs {
            for k in 1..=spec.nodes_per_dc {
                let id = (d as u64 - 1) * spec.nodes_per_dc as u64 + k as u64;
                let ndir = dir.join(format!("n{id}"));
                let mut n = match &netns {
                    Some(ns) => {
                        let mut n = NodeProc::new(
                            id,
                            d,
                            netns::Netns::node_ip(d, k),
                            ndir,
                            Some(ns.namespace(d)),
                        );
                        n.fixed_ports();
                        n
                    }
                    None => {
                        let mut n = NodeProc::new(id, d, portable::node_ip(d, k), ndir, None);
                        n.pick_ports()?;
                        n
                    }
                };
                n.write_config()?;
                if let Some(plan) = small_disk.filter(|p| p.node == id) {
                    // SAFETY: geteuid has no preconditions.
                    let root = unsafe { libc::geteuid() } == 0;
                    if !root {
                        small_unavailable =
                            Some("not running as root: no tmpfs can be mounted".to_string());
                    } else {
                        match disk::SmallDisk::mount(id, &n.data_path(), plan.size) {
                            Ok(sd) => {
                                eprintln!("chaos: small disk: {}", sd.describe());
                                n.note(&format!(
                                    "data directory is a {} MiB tmpfs",
                                    plan.size >> 20
                                ));
                                small = Some(sd);
                            }
                            Err(e) => small_unavailable = Some(format!("{e:#}")),
                        }
                    }
                    if let Some(why) = &small_unavailable {
                        eprintln!("chaos: small disk: node {id} gets none ({why}); disk-full will be SIMULATED with the log_before_fsync failpoint");
                    }
                }
                n.spawn(binary)?;
                nodes.push(n);
            }
        }
        let mut c = Cluster {
            spec,
            mode,
            nodes,
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            epoch,
            exits: Vec::new(),
            partitioned: None,
            disk_full_node: small_disk.map(|p| p.node),
            small_disk: small,
            small_disk_unavailable: small_unavailable,
            netns,
        };
        if let Some(ns) = &c.netns {
            eprintln!("chaos: netns: {}", ns.describe());
        }
        for id in c.ids() {
            c.wait_answering(id, true).await?;
        }
        c.check_chaos_build().await?;
        let admins: Vec<String> = c.nodes.iter().map(|n| n.admin_addr.clone()).collect();
        let req = InitRequest {
            node_admin_addrs: admins,
            shards: c.spec.shards,
            replicas: c.spec.replicas,
        };
        let mut admin = process::admin_client(&c.nodes[0].admin_addr, Duration::from_secs(30))?;
        admin
            .init(req)
            .await
            .map_err(|s| anyhow::anyhow!("init through node 1: {:?} {}", s.code(), s.message()))?;
        c.wait_all_leaders(Duration::from_secs(30))
            .await
            .context("wait for every group to elect a leader")?;
        c.wait_settled(Duration::from_secs(30))
            .await
            .context("wait for every replica to know its leader")?;
        Ok(c)
    }

    /// Milliseconds since the run's epoch.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Fails with a clear message unless the node binary has its fault rules armed
    /// (`bongsu-node-chaos`; the plain node answers `SetFaults` with FAILED_PRECONDITION).
    async fn check_chaos_build(&mut self) -> Result<()> {
        let mut admin = self.nodes[0].admin()?;
        match admin
            .set_faults(SetFaultsRequest { rules: Vec::new() })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => bail!(
                "{} has no fault rules ({}); chaos runs need bongsu-node-chaos, built by \
                 `cargo build --release --workspace --all-targets` (or `make chaos-ci`)",
                self.binary.display(),
                s.message()
            ),
            Err(s) => bail!("SetFaults on node 1: {:?} {}", s.code(), s.message()),
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node ids come from this cluster")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node ids come from this cluster")
    }

    pub fn dc_of(&self, id: u64) -> u8 {
        self.node(id).dc
    }

    /// The nodes of datacenter `d`.
    pub fn dc_nodes(&self, d: u8) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.dc == d)
            .map(|n| n.id)
            .collect()
    }

    /// `(node id, internal API address)` of every node, for clients, alternating datacenters
    /// (dc1's first node, dc2's first, dc3's first, dc1's second, …): a client that moves on to
    /// the next node in this order leaves the datacenter that did not answer.
    pub fn api_addrs(&self) -> Vec<(u64, String)> {
        let mut nodes: Vec<&NodeProc> = self.nodes.iter().collect();
        nodes.sort_by_key(|n| (self.dc_nodes(n.dc).iter().position(|id| *id == n.id), n.dc));
        nodes
            .into_iter()
            .map(|n| (n.id, n.api_addr.clone()))
            .collect()
    }

    /// Waits until the node answers on its admin port. A node that exits at once is spawned
    /// again, on fresh ports when `may_move` (portable mode, before the cluster knows them).
    async fn wait_answering(&mut self, id: u64, may_move: bool) -> Result<()> {
        let binary = self.binary.clone();
        let portable = self.mode == Mode::Portable;
        let mut attempts = 1;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let now = self.now_ms();
            if let Some(exit) = self.node_mut(id).poll_exit(now) {
                let tail = self.node(id).log_tail(20);
                self.exits.push(exit.clone());
                if attempts >= SPAWN_ATTEMPTS {
                    bail!(
                        "{} at start, {attempts} times; log:\n{tail}",
                        exit.describe()
                    );
                }
                attempts += 1;
                let n = self.node_mut(id);
                if may_move && portable {
                    n.pick_ports()?;
                    n.write_config()?;
                } else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                n.spawn(&binary)?;
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

    /// Ends node `id` with `sig` (SIGKILL, or SIGTERM for a restart) and reaps it.
    pub fn kill(&mut self, id: u64, sig: libc::c_int) -> Result<()> {
        let now = self.now_ms();
        if let Some(e) = self.node_mut(id).kill(sig, now)? {
            self.exits.push(e);
        }
        Ok(())
    }

    /// SIGKILLs every node of datacenter `d`.
    pub fn kill_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            self.kill(id, libc::SIGKILL)?;
        }
        Ok(())
    }

    /// Starts node `id` again (same id, directory and addresses) and waits until it answers.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        let binary = self.binary.clone();
        self.node_mut(id).spawn(&binary)?;
        self.wait_answering(id, false).await
    }

    /// Starts every stopped node of datacenter `d` at once, then waits for each to answer.
    pub async fn restart_dc(&mut self, d: u8) -> Result<()> {
        let binary = self.binary.clone();
        let ids: Vec<u64> = self
            .dc_nodes(d)
            .into_iter()
            .filter(|id| !self.node(*id).running())
            .collect();
        for id in &ids {
            self.node_mut(*id).spawn(&binary)?;
        }
        for id in ids {
            self.wait_answering(id, false).await?;
        }
        Ok(())
    }

    pub fn pause_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            self.node_mut(id).pause()?;
        }
        Ok(())
    }

    pub fn resume_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            if self.node(id).running() {
                self.node_mut(id).resume()?;
            }
        }
        Ok(())
    }

    /// Cuts datacenter `d` off from the others: its link goes down (netns), or every node
    /// drops traffic across the cut (portable).
    pub async fn partition(&mut self, d: u8) -> Result<()> {
        self.partitioned = Some(d);
        for id in self.dc_nodes(d) {
            self.node(id).note(&format!(
                "partition: dc{d} cut off ({} mode)",
                self.mode.name()
            ));
        }
        match &self.netns {
            Some(ns) => ns.link_down(d),
            None => {
                let dcs = self.spec.dcs;
                let calls: Vec<_> = self
                    .nodes
                    .iter_mut()
                    .filter(|n| n.running())
                    .map(|n| (n.id, portable::partition_rules(n.dc, d, dcs), n.admin()))
                    .collect();
                set_faults_all(calls).await
            }
        }
    }

    /// Undoes [`Cluster::partition`].
    pub async fn heal_partition(&mut self) -> Result<()> {
        let Some(d) = self.partitioned.take() else {
            return Ok(());
        };
        for id in self.dc_nodes(d) {
            self.node(id).note("partition healed");
        }
        match &self.netns {
            Some(ns) => ns.heal_all(),
            None => {
                let calls: Vec<_> = self
                    .nodes
                    .iter_mut()
                    .filter(|n| n.running())
                    .map(|n| (n.id, Vec::new(), n.admin()))
                    .collect();
                set_faults_all(calls).await
            }
        }
    }

    /// Switches a failpoint of node `id` (`log_before_fsync`, `log_slow_fsync`,
    /// `outbox_slow_delivery`).
    pub async fn set_failpoint(&mut self, id: u64, name: &str, enabled: bool) -> Result<()> {
        self.node(id).note(&format!(
            "failpoint {name} {}",
            if enabled { "on" } else { "off" }
        ));
        let mut admin = self.node_mut(id).admin()?;
        admin
            .set_failpoint(SetFailpointRequest {
                name: name.into(),
                enabled,
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "set failpoint {name} on node {id}: {:?} {}",
                    s.code(),
                    s.message()
                )
            })?;
        Ok(())
    }

    /// Undoes every fault: resumes paused nodes, heals the partition, empties a full small
    /// disk, starts stopped nodes. Failpoints die with the processes they were set in; a slow
    /// disk is switched off by the scenario that switched it on.
    pub async fn heal_all(&mut self) -> Result<()> {
        for d in 1..=self.spec.dcs {
            self.resume_dc(d)?;
        }
        self.heal_partition().await?;
        // A full disk left by a fault that did not finish would stop its node again.
        if let Some(d) = &self.small_disk {
            d.remove_ballast()?;
        }
        self.poll_exits();
        for id in self.ids() {
            if !self.node(id).running() {
                self.restart(id).await?;
            }
        }
        Ok(())
    }

    /// The status of every running node that answers.
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
        let mut out: BTreeMap<u64, Led> = BTreeMap::new();
        for (id, st) in self.statuses().await {
            for g in st.groups.into_iter().filter(|g| g.leader == id) {
                if out.get(&g.group).is_none_or(|l| l.status.term < g.term) {
                    out.insert(
                        g.group,
                        Led {
                            leader: id,
                            status: g,
                        },
                    );
                }
            }
        }
        out
    }

    fn all_groups(&self) -> Vec<u64> {
        std::iter::once(META_GROUP)
            .chain((0..self.spec.shards).map(shard_group))
            .collect()
    }

    /// How many shard groups each node leads now.
    pub async fn shard_leader_counts(&mut self) -> BTreeMap<u64, usize> {
        let mut counts: BTreeMap<u64, usize> = self.ids().into_iter().map(|id| (id, 0)).collect();
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

    /// Waits until the meta group and every shard group have a leader.
    pub async fn wait_all_leaders(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            let missing: Vec<u64> = self
                .all_groups()
                .into_iter()
                .filter(|g| !leaders.contains_key(g))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("groups without a leader after {timeout:?}: {missing:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every group has a leader that every running node hosting the group names.
    pub async fn wait_settled(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            let mut leaders: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for (id, st) in &statuses {
                for g in st.groups.iter().filter(|g| g.leader == *id) {
                    if leaders.get(&g.group).is_none_or(|(_, term)| *term < g.term) {
                        leaders.insert(g.group, (*id, g.term));
                    }
                }
            }
            let mut unsettled = Vec::new();
            for group in self.all_groups() {
                let Some((leader, _)) = leaders.get(&group) else {
                    unsettled.push(format!("group {group}: no leader"));
                    continue;
                };
                for (id, st) in &statuses {
                    if let Some(g) = st.groups.iter().find(|g| g.group == group) {
                        if g.leader != *leader {
                            unsettled.push(format!(
                                "group {group}: node {id} names {} not {leader}",
                                g.leader
                            ));
                        }
                    }
                }
            }
            let missing: Vec<u64> = self
                .nodes
                .iter()
                .filter(|n| n.running() && !statuses.contains_key(&n.id))
                .map(|n| n.id)
                .collect();
            if !missing.is_empty() {
                unsettled.push(format!("nodes {missing:?} do not answer status"));
            }
            if unsettled.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not settled after {timeout:?}: {}", unsettled.join("; "));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `id` hosts every group whose leader lists it, and has applied in each
    /// at least what that leader had applied.
    pub async fn wait_caught_up(&mut self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            let why = match self.statuses().await.remove(&id) {
                None => format!("node {id} does not answer status"),
                Some(st) => {
                    let mine: BTreeMap<u64, &GroupStatus> =
                        st.groups.iter().map(|g| (g.group, g)).collect();
                    let mut behind = Vec::new();
                    for group in self.all_groups() {
                        let Some(led) = leaders.get(&group) else {
                            behind.push(format!("group {group}: no leader"));
                            continue;
                        };
                        let member =
                            led.status.voters.contains(&id) || led.status.learners.contains(&id);
                        if !member || led.leader == id {
                            continue;
                        }
                        match mine.get(&group) {
                            None => behind.push(format!("group {group}: not hosted")),
                            Some(g) if g.applied_index < led.status.applied_index => {
                                behind.push(format!(
                                    "group {group}: applied {} < leader {}'s {}",
                                    g.applied_index, led.leader, led.status.applied_index
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                    if behind.is_empty() {
                        return Ok(());
                    }
                    behind.join("; ")
                }
            };
            if Instant::now() >= deadline {
                bail!("node {id} not caught up after {timeout:?}: {why}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

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
                let (id, admin) = (n.id, process::admin_client(&n.admin_addr, DIGEST_TIMEOUT));
                async move {
                    let r = match admin {
                        Ok(mut a) => a
                            .group_digests(bongsu_proto::internal::GroupDigestsRequest {})
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

    /// The bytes under each node's data directory, by node id.
    pub fn data_sizes(&self) -> Vec<(u64, u64)> {
        fn size(p: &Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            if !meta.is_dir() {
                return meta.len();
            }
            std::fs::read_dir(p)
                .map(|entries| entries.flatten().map(|e| size(&e.path())).sum())
                .unwrap_or(0)
        }
        self.nodes
            .iter()
            .map(|n| (n.id, size(&n.data_path())))
            .collect()
    }

    /// Removes the nodes' data directories (their logs stay), after a run that passed.
    pub fn remove_data(&self) {
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(n.data_path());
        }
    }

    /// The tail of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "----- node {} (dc{}, {}) {} -----\n{}",
                    n.id,
                    n.dc,
                    n.ip,
                    n.log_path().display(),
                    n.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn set_faults_all(
    calls: Vec<(
        u64,
        Vec<bongsu_proto::internal::FaultRule>,
        Result<bongsu_proto::internal::admin_client::AdminClient<tonic::transport::Channel>>,
    )>,
) -> Result<()> {
    let futs = calls.into_iter().map(|(id, rules, admin)| async move {
        let mut admin = admin?;
        admin
            .set_faults(SetFaultsRequest { rules })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "set fault rules on node {id}: {:?} {}",
                    s.code(),
                    s.message()
                )
            })?;
        Ok::<(), anyhow::Error>(())
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_now();
        }
        // `netns` is dropped after this, with no process left in the namespaces.
    }
}
