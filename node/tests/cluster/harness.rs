//! A cluster of real `bongsu-node` processes on loopback, one address group per datacenter.
//!
//! Node `k` of datacenter `d` listens on `127.0.d.k` (three free ports: Raft, internal API,
//! admin), keeps its data, its configuration and its log in `n<id>/` under one directory for
//! the cluster, and is a child of the test process only. Dropping the [`Cluster`] kills every
//! node it still runs; unless the test called [`Cluster::pass`], it also prints the tail of
//! every node's log and keeps the directory for a post-mortem.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
pub use bongsu_node::config::Timing;
use bongsu_node::placement::{check, NodeDesc, NodeState, ShardReplicas};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    ClusterStatus, GroupStatus, HelloRequest, InitRequest, ShardMap, StatusRequest,
    WatchShardMapRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::client::TestClient;

pub use bongsu_proto::model::{shard_group, META_GROUP};

/// How long a node may take from spawn to answering on its admin port.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the harness asks nodes for their status while waiting for something.
const POLL: Duration = Duration::from_millis(50);
/// A status call to a stopped (SIGSTOP) node must not hold up a wait for long.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How many times a node is spawned again with fresh ports when it exits at once (another
/// process took a port between the harness finding it free and the node binding it).
const SPAWN_ATTEMPTS: u32 = 4;
/// How many lines of each node's log a failed test prints.
const LOG_TAIL_LINES: usize = 60;

/// The shape of a cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    pub dcs: u8,
    pub nodes_per_dc: u8,
    pub shards: u32,
    pub replicas: u32,
    pub timing: Timing,
    /// The node binary: `bongsu-node-chaos` (failpoints and fault rules armed) unless a test
    /// asks for the plain one.
    pub binary: &'static str,
}

impl Spec {
    /// `dcs` datacenters of `nodes_per_dc` nodes each, 8 shards of 3 replicas, default timing.
    pub fn new(dcs: u8, nodes_per_dc: u8) -> Self {
        Self {
            dcs,
            nodes_per_dc,
            shards: 8,
            replicas: 3,
            timing: Timing::default(),
            binary: env!("CARGO_BIN_EXE_bongsu-node-chaos"),
        }
    }

    /// Runs the plain `bongsu-node`, the binary `make run` and operators run.
    pub fn plain_binary(mut self) -> Self {
        self.binary = env!("CARGO_BIN_EXE_bongsu-node");
        self
    }

    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }
}

/// One node of the cluster, running or not.
pub struct NodeProc {
    pub id: u64,
    pub dc: String,
    pub ip: Ipv4Addr,
    pub raft_addr: String,
    pub api_addr: String,
    pub admin_addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    admin: Option<AdminClient<Channel>>,
    starts: u32,
    binary: &'static str,
    /// Admin addresses the node registers through on first boot (`--seeds`); empty for the
    /// nodes the cluster starts with, which `init` registers.
    pub seeds: Vec<String>,
}

impl NodeProc {
    fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Picks three free ports on this node's address. Another process may take one before the
    /// node binds it; [`Cluster::spawn_until_ready`] then picks again.
    fn pick_ports(&mut self) -> Result<()> {
        let mut ports = BTreeSet::new();
        while ports.len() < 3 {
            let l = TcpListener::bind((self.ip, 0))
                .with_context(|| format!("bind a free port on {}", self.ip))?;
            ports.insert(l.local_addr()?.port());
        }
        let p: Vec<u16> = ports.into_iter().collect();
        self.raft_addr = format!("{}:{}", self.ip, p[0]);
        self.api_addr = format!("{}:{}", self.ip, p[1]);
        self.admin_addr = format!("{}:{}", self.ip, p[2]);
        self.admin = None;
        Ok(())
    }

    fn write_config(&self, timing: &Timing) -> Result<()> {
        let t = timing;
        let seeds = if self.seeds.is_empty() {
            String::new()
        } else {
            format!(
                "seeds = [{}]\n",
                self.seeds
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let text = format!(
            "node_id = {}\ndc = {:?}\ndata_dir = {:?}\nraft_addr = {:?}\napi_addr = {:?}\nadmin_addr = {:?}\n{seeds}\n\
             [timing]\nheartbeat_ms = {}\nelection_min_ms = {}\nelection_max_ms = {}\n\
             liveness_interval_ms = {}\nliveness_timeout_ms = {}\n",
            self.id,
            self.dc,
            self.dir.join("data").display().to_string(),
            self.raft_addr,
            self.api_addr,
            self.admin_addr,
            t.heartbeat_ms,
            t.election_min_ms,
            t.election_max_ms,
            t.liveness_interval_ms,
            t.liveness_timeout_ms,
        );
        fs::write(self.config_path(), text)
            .with_context(|| format!("write {}", self.config_path().display()))
    }

    /// Appends a line to the node's log, stamped like the node's own lines (UTC).
    fn note(&self, line: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let day_ms = now.as_millis() % 86_400_000;
        let (h, m, sec, ms) = (
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000,
        );
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = writeln!(f, "=== {h:02}:{m:02}:{sec:02}.{ms:03}Z harness: {line} ===");
        }
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        self.note(&format!(
            "start #{} (raft {}, api {}, admin {})",
            self.starts, self.raft_addr, self.api_addr, self.admin_addr
        ));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("open {}", self.log_path().display()))?;
        // BONGSU_NODE_BIN runs the tests against another build of the node (an older release,
        // say, to show that a test fails there); by default, the binary built with the tests.
        let bin = std::env::var_os("BONGSU_NODE_BIN").unwrap_or_else(|| self.binary.into());
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env(
                "RUST_LOG",
                std::env::var("BONGSU_NODE_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn,h2=warn,tower=warn".into()),
            )
            .env("NO_COLOR", "1")
            .env_remove("BONGSU_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state. The
        // node dies with the test process even when the test process is killed (a timeout),
        // so no node outlives its test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("spawn bongsu-node")?);
        Ok(())
    }

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("node {} is not running", self.id)
        };
        // SAFETY: kill(2) on the PID of a child this harness spawned and has not reaped yet, so
        // the PID cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if rc != 0 {
            bail!(
                "signal {sig} to node {} (pid {pid}): {}",
                self.id,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`: our own unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    fn admin(&mut self) -> Result<AdminClient<Channel>> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{}", self.admin_addr))?
            .connect_timeout(Duration::from_millis(300))
            .timeout(STATUS_TIMEOUT);
        let a = AdminClient::new(ep.connect_lazy());
        self.admin = Some(a.clone());
        Ok(a)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The leader of one group and that leader's own view of it.
#[derive(Debug, Clone)]
pub struct Led {
    pub leader: u64,
    pub status: GroupStatus,
}

/// A running test cluster.
pub struct Cluster {
    pub name: String,
    pub spec: Spec,
    pub nodes: Vec<NodeProc>,
    dir: Option<tempfile::TempDir>,
    passed: bool,
    /// Cluster tests take turns (see [`take_turn`]); held until the cluster is dropped.
    _turn: File,
}

/// Cluster tests measure timing on a small machine, and nextest runs tests in parallel
/// processes: an exclusive lock on a file in the target directory makes them take turns.
async fn take_turn() -> Result<File> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bongsu-cluster-tests.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a file descriptor this closure owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("cluster: waiting for another cluster test to finish");
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                bail!(
                    "lock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(f)
    })
    .await?
}

impl Cluster {
    /// Starts every node, initializes the cluster through the first node and waits until
    /// every group has a leader.
    pub async fn start(name: &str, spec: Spec) -> Result<Cluster> {
        let turn = take_turn().await?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("cluster-{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .context("create the cluster directory")?;
        eprintln!(
            "cluster {name}: {} dc x {} nodes, {} shards, in {}",
            spec.dcs,
            spec.nodes_per_dc,
            spec.shards,
            dir.path().display()
        );
        let mut nodes = Vec::new();
        for d in 1..=spec.dcs {
            for k in 1..=spec.nodes_per_dc {
                let id = (d as u64 - 1) * spec.nodes_per_dc as u64 + k as u64;
                let node_dir = dir.path().join(format!("n{id}"));
                fs::create_dir_all(&node_dir)?;
                nodes.push(NodeProc {
                    id,
                    dc: format!("dc{d}"),
                    ip: Ipv4Addr::new(127, 0, d, k),
                    raft_addr: String::new(),
                    api_addr: String::new(),
                    admin_addr: String::new(),
                    dir: node_dir,
                    child: None,
                    admin: None,
                    starts: 0,
                    binary: spec.binary,
                    seeds: Vec::new(),
                });
            }
        }
        let mut c = Cluster {
            name: name.to_string(),
            spec,
            nodes,
            dir: Some(dir),
            passed: false,
            _turn: turn,
        };
        for i in 0..c.nodes.len() {
            c.nodes[i].pick_ports()?;
            c.nodes[i].write_config(&c.spec.timing)?;
            c.nodes[i].spawn()?;
        }
        for i in 0..c.nodes.len() {
            let id = c.nodes[i].id;
            c.spawn_until_ready(id, true).await?;
        }
        let admins: Vec<String> = c.nodes.iter().map(|n| n.admin_addr.clone()).collect();
        let req = InitRequest {
            node_admin_addrs: admins,
            shards: c.spec.shards,
            replicas: c.spec.replicas,
        };
        let first = c.nodes[0].id;
        let mut admin = c.node_mut(first).admin()?;
        let init = tokio::time::timeout(
            Duration::from_secs(30),
            admin.init(tonic::Request::new(req)),
        )
        .await;
        match init {
            Ok(Ok(r)) => eprintln!(
                "cluster {name}: initialized, shard map version {}",
                r.into_inner().shard_map_version
            ),
            Ok(Err(s)) => bail!("init through node {first}: {:?} {}", s.code(), s.message()),
            Err(_) => bail!("init through node {first}: no answer in 30 s"),
        }
        c.wait_all_leaders(Duration::from_secs(20))
            .await
            .context("wait for every group to elect a leader")?;
        let elected = started.elapsed();
        c.wait_settled(Duration::from_secs(20))
            .await
            .context("wait for every replica to know its leader")?;
        eprintln!(
            "cluster {name}: every group has a leader {} ms after start, known to all its replicas at {} ms",
            elected.as_millis(),
            started.elapsed().as_millis()
        );
        Ok(c)
    }

    /// Marks the test as passed: the directory is removed and no logs are printed on drop.
    pub fn pass(&mut self) {
        self.passed = true;
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

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn dc_of(&self, id: u64) -> &str {
        &self.node(id).dc
    }

    /// A test client that knows every node's internal API.
    pub fn client(&self) -> Result<TestClient> {
        TestClient::new(
            self.nodes
                .iter()
                .map(|n| (n.id, n.api_addr.clone()))
                .collect(),
        )
    }

    /// Waits until the node answers on its admin port; if it exits first (a port was taken),
    /// spawns it again, on fresh ports when `may_move` (only before the cluster knows them).
    async fn spawn_until_ready(&mut self, id: u64, may_move: bool) -> Result<()> {
        let timing = self.spec.timing.clone();
        let mut attempts = 1;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.node_mut(id).exited() {
                let n = self.node_mut(id);
                n.child = None;
                n.note(&format!("exited at start: {status}"));
                if attempts >= SPAWN_ATTEMPTS {
                    bail!(
                        "node {id} exited at start {attempts} times; last: {status}; log:\n{}",
                        n.log_tail(20)
                    );
                }
                attempts += 1;
                if may_move {
                    n.pick_ports()?;
                    n.write_config(&timing)?;
                } else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                n.spawn()?;
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

    /// SIGKILLs a node and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id);
        n.signal(libc::SIGKILL)?;
        if let Some(mut c) = n.child.take() {
            c.wait().with_context(|| format!("reap node {id}"))?;
        }
        n.note("SIGKILL");
        Ok(())
    }

    /// Starts a stopped or killed node again with the same id, directory and ports, and waits
    /// until it answers on its admin port.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id);
        if n.child.is_some() {
            bail!("node {id} is still running");
        }
        n.spawn()?;
        self.spawn_until_ready(id, false).await
    }

    /// SIGSTOPs a node: it keeps its sockets but answers nothing.
    #[allow(dead_code)]
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.node(id).signal(libc::SIGSTOP)?;
        self.node(id).note("SIGSTOP");
        Ok(())
    }

    /// SIGCONTs a paused node.
    #[allow(dead_code)]
    pub fn resume(&mut self, id: u64) -> Result<()> {
        self.node(id).signal(libc::SIGCONT)?;
        self.node(id).note("SIGCONT");
        Ok(())
    }

    pub async fn status(&mut self, id: u64) -> Result<ClusterStatus> {
        let mut admin = self.node_mut(id).admin()?;
        let s = admin
            .status(StatusRequest {})
            .await
            .with_context(|| format!("status of node {id}"))?;
        Ok(s.into_inner())
    }

    /// The status of every running node that answers.
    pub async fn statuses(&mut self) -> BTreeMap<u64, ClusterStatus> {
        let mut out = BTreeMap::new();
        let running: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect();
        let calls = running.into_iter().filter_map(|id| {
            let mut admin = self.node_mut(id).admin().ok()?;
            Some(async move { (id, admin.status(StatusRequest {}).await) })
        });
        for (id, r) in futures::future::join_all(calls).await {
            if let Ok(s) = r {
                out.insert(id, s.into_inner());
            }
        }
        out
    }

    /// Each group's leader, as claimed by the running node that leads it (the highest term
    /// wins if a deposed leader has not noticed yet).
    pub async fn leaders(&mut self) -> BTreeMap<u64, Led> {
        let mut out: BTreeMap<u64, Led> = BTreeMap::new();
        for (id, st) in self.statuses().await {
            for g in st.groups {
                if g.leader != id {
                    continue;
                }
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

    pub fn all_groups(&self) -> Vec<u64> {
        std::iter::once(META_GROUP)
            .chain((0..self.spec.shards).map(shard_group))
            .collect()
    }

    /// Waits until the meta group and every shard group have a leader.
    pub async fn wait_all_leaders(&mut self, timeout: Duration) -> Result<BTreeMap<u64, Led>> {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            let missing: Vec<u64> = self
                .all_groups()
                .into_iter()
                .filter(|g| !leaders.contains_key(g))
                .collect();
            if missing.is_empty() {
                return Ok(leaders);
            }
            if Instant::now() >= deadline {
                bail!("groups without a leader after {timeout:?}: {missing:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every group has a leader and every running node that hosts the group names
    /// that leader.
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
            if unsettled.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not settled after {timeout:?}: {}", unsettled.join("; "));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many shard groups each running node leads (nodes leading none included).
    pub async fn shard_leader_counts(&mut self) -> BTreeMap<u64, usize> {
        let mut counts: BTreeMap<u64, usize> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| (n.id, 0))
            .collect();
        for (group, led) in self.leaders().await {
            if group != META_GROUP {
                *counts.entry(led.leader).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until `id` hosts every group whose leader lists it as a voter or learner, and has
    /// applied, in each, at least what that group's leader had applied just before.
    pub async fn wait_caught_up(&mut self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut why;
        loop {
            let leaders = self.leaders().await;
            why = match self.status(id).await {
                Err(e) => format!("{e:#}"),
                Ok(st) => {
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

    /// The ids of the nodes the harness runs now.
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Adds a node to datacenter `dc` (`127.0.<dc>.<next>`, the next free id) that will join
    /// through the running nodes' admin APIs as seeds. It gets its ports and configuration
    /// now, so that clients made before it starts know its address; [`Cluster::start_node`]
    /// starts it.
    pub fn add_node(&mut self, dc: u8) -> Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let dc_name = format!("dc{dc}");
        let k = self.nodes.iter().filter(|n| n.dc == dc_name).count() + 1;
        let k = u8::try_from(k).context("too many nodes in one datacenter")?;
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.admin_addr.clone())
            .collect();
        let root = self
            .dir
            .as_ref()
            .context("the cluster directory is gone")?
            .path()
            .to_path_buf();
        let node_dir = root.join(format!("n{id}"));
        fs::create_dir_all(&node_dir)?;
        let mut n = NodeProc {
            id,
            dc: dc_name,
            ip: Ipv4Addr::new(127, 0, dc, k),
            raft_addr: String::new(),
            api_addr: String::new(),
            admin_addr: String::new(),
            dir: node_dir,
            child: None,
            admin: None,
            starts: 0,
            binary: self.spec.binary,
            seeds,
        };
        n.pick_ports()?;
        n.write_config(&self.spec.timing)?;
        self.nodes.push(n);
        Ok(id)
    }

    /// Starts a node made by [`Cluster::add_node`] and waits until it answers on its admin
    /// port (on the ports it was given: clients already know them).
    pub async fn start_node(&mut self, id: u64) -> Result<()> {
        self.restart(id).await
    }

    /// An admin client of node `id` whose calls may take up to `timeout` (the harness's own
    /// client gives up after a second, too soon for calls that propose to the meta group).
    pub fn admin_client(&self, id: u64, timeout: Duration) -> Result<AdminClient<Channel>> {
        let ep = Endpoint::from_shared(format!("http://{}", self.node(id).admin_addr))?
            .connect_timeout(Duration::from_millis(300))
            .timeout(timeout);
        Ok(AdminClient::new(ep.connect_lazy()))
    }

    /// Waits until each shard's leader reports the map's voters and no learners, and every
    /// running node hosts exactly the meta group and the shards the map places on it.
    pub async fn wait_groups_match(&mut self, map: &ShardMap, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut wrong = Vec::new();
            let leaders = self.leaders().await;
            for s in &map.shards {
                let want: BTreeSet<u64> = s.voters.iter().copied().collect();
                match leaders.get(&shard_group(s.shard)) {
                    None => wrong.push(format!("shard {}: no leader", s.shard)),
                    Some(l) => {
                        let voters: BTreeSet<u64> = l.status.voters.iter().copied().collect();
                        if voters != want || !l.status.learners.is_empty() {
                            wrong.push(format!(
                                "shard {}: leader {} has voters {voters:?} learners {:?}, the map {want:?}",
                                s.shard, l.leader, l.status.learners
                            ));
                        }
                    }
                }
            }
            for (id, st) in self.statuses().await {
                let hosted: BTreeSet<u64> = st.groups.iter().map(|g| g.group).collect();
                let placed: BTreeSet<u64> = std::iter::once(META_GROUP)
                    .chain(
                        map.shards
                            .iter()
                            .filter(|s| s.voters.contains(&id) || s.learners.contains(&id))
                            .map(|s| shard_group(s.shard)),
                    )
                    .collect();
                if hosted != placed {
                    wrong.push(format!(
                        "node {id} hosts groups {hosted:?}, the map places {placed:?}"
                    ));
                }
            }
            if wrong.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "groups disagree with map version {} after {timeout:?}:\n{}",
                    map.version,
                    wrong.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts recording every shard map that `WatchShardMap` delivers on each of `ids`.
    pub fn record_shard_maps(&self, ids: &[u64]) -> MapRecorder {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let tasks = ids
            .iter()
            .map(|id| {
                tokio::spawn(watch_map(
                    *id,
                    self.node(*id).api_addr.clone(),
                    recorded.clone(),
                ))
            })
            .collect();
        MapRecorder { recorded, tasks }
    }

    fn print_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "----- cluster {}: node {} ({}, {}) log tail: {} -----\n{}",
                self.name,
                n.id,
                n.dc,
                n.ip,
                n.log_path().display(),
                n.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_now();
        }
        let keep = std::env::var_os("BONGSU_KEEP_CLUSTER").is_some();
        if !self.passed {
            self.print_logs();
        }
        if !self.passed || keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "cluster {}: kept {} for debugging",
                    self.name,
                    path.display()
                );
            }
        }
    }
}

/// Every shard map version some node delivered, as first delivered.
#[derive(Default)]
struct Recorded {
    versions: BTreeMap<u64, MapVersion>,
    /// The newest version each watched node delivered.
    latest: BTreeMap<u64, u64>,
    /// Two nodes that delivered different maps under one version.
    conflicts: Vec<String>,
    /// When a version newer than every one before was first delivered.
    last_change: Option<Instant>,
}

/// One version of the shard map and who delivered it.
#[derive(Debug, Clone)]
pub struct MapVersion {
    /// The map, with each shard's `leader_hint` cleared: that is each node's own view of
    /// leadership, not part of the replicated map.
    pub map: ShardMap,
    pub first_seen: Instant,
    pub seen_by: BTreeSet<u64>,
}

/// Records the shard maps that nodes stream through `WatchShardMap` (the current map, then
/// every change), until dropped. A node that applies several changes at once streams only
/// the last, so versions may be missing; watching several nodes fills most gaps.
pub struct MapRecorder {
    recorded: Arc<Mutex<Recorded>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MapRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().expect("map recorder lock")
    }

    /// Every version delivered so far, in order.
    pub fn versions(&self) -> BTreeMap<u64, MapVersion> {
        self.lock().versions.clone()
    }

    /// The newest version delivered so far.
    pub fn latest(&self) -> Option<MapVersion> {
        self.lock().versions.values().next_back().cloned()
    }

    /// The newest version each watched node delivered.
    pub fn latest_per_node(&self) -> BTreeMap<u64, u64> {
        self.lock().latest.clone()
    }

    /// How long ago the newest version was first delivered.
    pub fn since_last_change(&self) -> Option<Duration> {
        self.lock().last_change.map(|t| t.elapsed())
    }

    /// Versions two nodes delivered with different contents (should never happen).
    pub fn conflicts(&self) -> Vec<String> {
        self.lock().conflicts.clone()
    }

    /// Waits until each of `nodes` watched nodes has delivered its current map.
    pub async fn wait_started(&self, nodes: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.lock().latest.len() < nodes {
            if Instant::now() >= deadline {
                bail!(
                    "only nodes {:?} streamed a shard map within {timeout:?}",
                    self.latest_per_node().keys()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

impl Drop for MapRecorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Streams node `id`'s shard maps into `recorded`, reconnecting whenever the stream ends.
async fn watch_map(id: u64, api_addr: String, recorded: Arc<Mutex<Recorded>>) {
    loop {
        // No request timeout: the stream lives as long as the test.
        if let Ok(ep) = Endpoint::from_shared(format!("http://{api_addr}")) {
            let mut api = NodeApiClient::new(
                ep.connect_timeout(Duration::from_millis(300))
                    .connect_lazy(),
            );
            if let Ok(r) = api.watch_shard_map(WatchShardMapRequest {}).await {
                let mut stream = r.into_inner();
                while let Ok(Some(mut map)) = stream.message().await {
                    // A node that has not received the map yet (a newcomer) streams version 0.
                    if map.version == 0 {
                        continue;
                    }
                    for s in &mut map.shards {
                        s.leader_hint = 0;
                    }
                    let now = Instant::now();
                    let mut rec = recorded.lock().expect("map recorder lock");
                    rec.latest.insert(id, map.version);
                    let newest = rec.versions.keys().next_back().copied();
                    match rec.versions.get_mut(&map.version) {
                        Some(v) => {
                            v.seen_by.insert(id);
                            if v.map != map {
                                let first = v.seen_by.iter().next().copied().unwrap_or(0);
                                let c = format!(
                                    "version {}: node {id} delivered {map:?}, node {first} {:?}",
                                    map.version, v.map
                                );
                                rec.conflicts.push(c);
                            }
                        }
                        None => {
                            if newest.is_none_or(|n| map.version > n) {
                                rec.last_change = Some(now);
                            }
                            let version = map.version;
                            rec.versions.insert(
                                version,
                                MapVersion {
                                    map,
                                    first_seen: now,
                                    seen_by: BTreeSet::from([id]),
                                },
                            );
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The shard map as `placement::check` takes it.
pub fn placement_input(map: &ShardMap) -> Result<(Vec<NodeDesc>, Vec<ShardReplicas>)> {
    let mut nodes = Vec::new();
    for n in &map.nodes {
        let state = match n.state.as_str() {
            "active" => NodeState::Active,
            "draining" => NodeState::Draining,
            "removed" => NodeState::Removed,
            other => bail!(
                "map version {}: node {} has unknown state {other:?}",
                map.version,
                n.node_id
            ),
        };
        nodes.push(NodeDesc {
            id: n.node_id,
            dc: n.dc.clone(),
            state,
        });
    }
    let shards = map
        .shards
        .iter()
        .map(|s| ShardReplicas {
            shard: s.shard,
            voters: s.voters.clone(),
            learners: s.learners.clone(),
        })
        .collect();
    Ok((nodes, shards))
}

/// `placement::check` on every recorded version, as one line per violation; also every
/// version whose shard count is not `shards`.
pub fn placement_violations(
    versions: &BTreeMap<u64, MapVersion>,
    shards: u32,
    replicas: u32,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (version, v) in versions {
        if v.map.shard_count != shards || v.map.shards.len() != shards as usize {
            out.push(format!(
                "version {version}: {} shards listed, shard_count {}",
                v.map.shards.len(),
                v.map.shard_count
            ));
        }
        let (nodes, shard_list) = placement_input(&v.map)?;
        out.extend(
            check(&nodes, &shard_list, replicas)
                .into_iter()
                .map(|x| format!("version {version}: {x}")),
        );
    }
    Ok(out)
}

/// How many shards each registered node holds a replica of, as a voter or a learner.
pub fn replica_counts(map: &ShardMap) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = map.nodes.iter().map(|n| (n.node_id, 0)).collect();
    for s in &map.shards {
        let held: BTreeSet<u64> = s.voters.iter().chain(&s.learners).copied().collect();
        for id in held {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}
