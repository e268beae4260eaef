//! A cluster of real node processes in several datacenters, driven through the nodes' admin
//! and internal gRPC APIs.
//!
//! Node `k` of datacenter `d` lives at a [`Site`]: `127.0.d.k` on loopback with three free
//! ports (Raft, internal API, admin), or an address of its own in a network namespace (a chaos
//! run's netns mode) with fixed ports. It keeps its configuration, data and log in `n<id>/`
//! under the cluster's directory. Every node is a child that dies with the process that
//! started it (`PR_SET_PDEATHSIG`); dropping the [`Cluster`] kills the nodes it still runs.
//!
//! A test's cluster ([`Cluster::start`]) takes its turn with the other cluster tests (see
//! [`crate::turn`]) and lives in a temporary directory under `target/tmp`; unless the test
//! called [`Cluster::pass`], dropping it prints the tail of every node's log and keeps the
//! directory for a post-mortem (`BONGSU_KEEP_CLUSTER` keeps it always).
//!
//! - [`status`]: the nodes' status, each group's leader, leader counts;
//! - [`wait`]: waiting until nodes answer, groups have leaders, replicas caught up;
//! - [`digests`]: every replica's digest of every shard, for the final state of a history.

pub mod digests;
pub mod status;
pub mod wait;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::{FaultRule, InitRequest, SetFailpointRequest, SetFaultsRequest};
use tonic::transport::Channel;

pub use crate::node::{admin_client, Exit, NodeProc, Site};
pub use bongsu_proto::model::{shard_group, META_GROUP};
pub use status::Led;

use crate::client::TestClient;
use crate::maps::MapRecorder;
use crate::process;

/// How many lines of each node's log a failed test prints.
const LOG_TAIL_LINES: usize = 60;
/// How long `init` and the first elections may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shape of a cluster and what it runs.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dcs: u8,
    pub nodes_per_dc: u8,
    pub shards: u32,
    pub replicas: u32,
    /// The node binary; by default `BONGSU_NODE_BIN` (to run against another build), or else
    /// `bongsu-node-chaos` beside the running executable (see [`process::binary`]).
    pub binary: Option<PathBuf>,
    /// The nodes' `RUST_LOG`; by default their own.
    pub log_filter: Option<String>,
    /// How long the kit's admin calls (status, hello) wait for a node: short, so that a
    /// stopped node does not hold up a wait.
    pub status_timeout: Duration,
    /// Environment variables every node process gets.
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// `dcs` datacenters of `nodes_per_dc` nodes each, 8 shards of 3 replicas.
    pub fn new(dcs: u8, nodes_per_dc: u8) -> Self {
        Self {
            dcs,
            nodes_per_dc,
            shards: 8,
            replicas: 3,
            binary: None,
            log_filter: None,
            status_timeout: Duration::from_secs(1),
            env: Vec::new(),
        }
    }

    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    pub fn status_timeout(mut self, timeout: Duration) -> Self {
        self.status_timeout = timeout;
        self
    }

    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    /// Sets an environment variable in every node process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn resolve_binary(&self) -> Result<PathBuf> {
        match (&self.binary, std::env::var_os("BONGSU_NODE_BIN")) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(b)) => Ok(b.into()),
            (None, None) => process::binary("bongsu-node-chaos"),
        }
    }

    /// The id of node `k` (from 1) of datacenter `d`.
    pub fn node_id(&self, d: u8, k: u8) -> u64 {
        (d as u64 - 1) * self.nodes_per_dc as u64 + k as u64
    }
}

/// Where the nodes of a cluster live, by datacenter and number within it.
pub type Sites = Arc<dyn Fn(u8, u8) -> Site + Send + Sync>;

/// A test's temporary directory and its turn (see the module docs).
struct Scratch {
    dir: tempfile::TempDir,
    _turn: File,
}

pub struct Cluster {
    pub name: String,
    pub spec: Spec,
    pub nodes: Vec<NodeProc>,
    pub dir: PathBuf,
    pub binary: PathBuf,
    /// The cluster's clock: every time it records is milliseconds since this.
    pub epoch: Instant,
    /// Every node exit noticed, in order.
    pub exits: Vec<Exit>,
    sites: Sites,
    scratch: Option<Scratch>,
    passed: bool,
}

impl Cluster {
    /// A test's cluster of loopback nodes, started and initialized (see the module docs).
    pub async fn start(name: &str, spec: Spec) -> Result<Cluster> {
        let turn = crate::turn::take_turn(&format!("cluster {name}")).await?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("cluster-{name}-"))
            .tempdir_in(process::target_tmp()?)
            .context("create the cluster directory")?;
        let mut c = Cluster::create(name, spec, dir.path(), Arc::new(Site::loopback))?;
        c.scratch = Some(Scratch { dir, _turn: turn });
        c.launch().await?;
        Ok(c)
    }

    /// A cluster of loopback nodes in `dir`, started and initialized, for a tool that keeps
    /// its directory (a benchmark).
    pub async fn start_in(name: &str, spec: Spec, dir: &Path) -> Result<Cluster> {
        let mut c = Cluster::create(name, spec, dir, Arc::new(Site::loopback))?;
        c.launch().await?;
        Ok(c)
    }

    /// The cluster's nodes, each with its addresses and configuration, none started yet.
    pub fn create(name: &str, spec: Spec, dir: &Path, sites: Sites) -> Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        eprintln!(
            "cluster {name}: {} dc x {} nodes, {} shards, in {}",
            spec.dcs,
            spec.nodes_per_dc,
            spec.shards,
            dir.display()
        );
        let mut c = Cluster {
            name: name.to_string(),
            binary: spec.resolve_binary()?,
            spec,
            nodes: Vec::new(),
            dir: dir.to_path_buf(),
            epoch: Instant::now(),
            exits: Vec::new(),
            sites,
            scratch: None,
            passed: false,
        };
        for d in 1..=c.spec.dcs {
            for k in 1..=c.spec.nodes_per_dc {
                let n = c.new_node(c.spec.node_id(d, k), d, k, Vec::new())?;
                c.nodes.push(n);
            }
        }
        Ok(c)
    }

    /// Node `id`, number `k` of datacenter `d`, with its ports and configuration.
    fn new_node(&self, id: u64, d: u8, k: u8, seeds: Vec<String>) -> Result<NodeProc> {
        let dir = self.dir.join(format!("n{id}"));
        let mut n = NodeProc::new(id, d, (self.sites)(d, k), dir, self.binary.clone());
        n.seeds = seeds;
        n.env = self.spec.env.clone();
        n.log_filter(self.spec.log_filter.clone());
        n.status_timeout = self.spec.status_timeout;
        n.assign_ports()?;
        n.write_config()?;
        Ok(n)
    }

    /// [`Cluster::boot`] and [`Cluster::init`].
    pub async fn launch(&mut self) -> Result<()> {
        self.boot().await?;
        self.init().await
    }

    /// Starts every node and waits until each answers on its admin port.
    pub async fn boot(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            n.spawn()?;
        }
        for id in self.ids() {
            self.wait_answering(id, true).await?;
        }
        Ok(())
    }

    /// Initializes the cluster through the first node and waits until every group has a
    /// leader that all its replicas know.
    pub async fn init(&mut self) -> Result<()> {
        self.init_within(INIT_TIMEOUT).await
    }

    /// [`Cluster::init`], with `timeout` for the call and for each wait (a cluster of many
    /// groups takes longer).
    pub async fn init_within(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let req = InitRequest {
            node_admin_addrs: self.nodes.iter().map(|n| n.admin_addr.clone()).collect(),
            shards: self.spec.shards,
            replicas: self.spec.replicas,
        };
        let first = self.nodes[0].id;
        let r = self
            .admin_client(first, timeout)?
            .init(req)
            .await
            .map_err(|s| {
                anyhow::anyhow!("init through node {first}: {:?} {}", s.code(), s.message())
            })?;
        eprintln!(
            "cluster {}: initialized, shard map version {}",
            self.name,
            r.into_inner().shard_map_version
        );
        self.wait_all_leaders(timeout)
            .await
            .context("wait for every group to elect a leader")?;
        let elected = started.elapsed();
        self.wait_settled(timeout)
            .await
            .context("wait for every replica to know its leader")?;
        eprintln!(
            "cluster {}: every group has a leader {} ms after init, known to all its replicas at {} ms",
            self.name,
            elected.as_millis(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Marks the test as passed: the directory is removed and no logs are printed on drop.
    pub fn pass(&mut self) {
        self.passed = true;
    }

    /// Milliseconds since the cluster's epoch.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The ids of the nodes running now.
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.id)
            .collect()
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node ids come from this cluster")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeProc {
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

    /// `(node id, internal API address)` of every node, alternating datacenters (dc1's first
    /// node, dc2's first, dc3's first, dc1's second, …): a client that moves on to the next
    /// node in this order leaves the datacenter that did not answer.
    pub fn api_addrs(&self) -> Vec<(u64, String)> {
        let mut nodes: Vec<&NodeProc> = self.nodes.iter().collect();
        nodes.sort_by_key(|n| (self.dc_nodes(n.dc).iter().position(|id| *id == n.id), n.dc));
        nodes
            .into_iter()
            .map(|n| (n.id, n.api_addr.clone()))
            .collect()
    }

    /// A test client that knows every node's internal API, in node order.
    pub fn client(&self) -> Result<TestClient> {
        TestClient::new(
            self.nodes
                .iter()
                .map(|n| (n.id, n.api_addr.clone()))
                .collect(),
        )
    }

    /// An admin client of node `id` whose calls may take up to `timeout` (the kit's own
    /// client gives up after a second, too soon for calls that propose to the meta group).
    pub fn admin_client(&self, id: u64, timeout: Duration) -> Result<AdminClient<Channel>> {
        admin_client(&self.node(id).admin_addr, timeout)
    }

    /// Starts recording every shard map that `WatchShardMap` delivers on each of `ids`.
    pub fn record_shard_maps(&self, ids: &[u64]) -> MapRecorder {
        MapRecorder::start(
            ids.iter()
                .map(|id| (*id, self.node(*id).api_addr.clone()))
                .collect(),
        )
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.kill_with(id, libc::SIGKILL)
    }

    /// Ends node `id` with `sig` (SIGKILL, or SIGTERM for a restart) and reaps it.
    pub fn kill_with(&mut self, id: u64, sig: libc::c_int) -> Result<()> {
        let now = self.now_ms();
        if let Some(e) = self.node_mut(id).kill(sig, now)? {
            self.exits.push(e);
        }
        Ok(())
    }

    /// SIGKILLs every node of datacenter `d`.
    pub fn kill_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            self.kill(id)?;
        }
        Ok(())
    }

    /// Starts a stopped or killed node again with the same id, directory and addresses, and
    /// waits until it answers on its admin port.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).spawn()?;
        self.wait_answering(id, false).await
    }

    /// Starts every stopped node of datacenter `d` at once, then waits for each to answer.
    pub async fn restart_dc(&mut self, d: u8) -> Result<()> {
        let ids: Vec<u64> = self
            .dc_nodes(d)
            .into_iter()
            .filter(|id| !self.node(*id).running())
            .collect();
        for id in &ids {
            self.node_mut(*id).spawn()?;
        }
        for id in ids {
            self.wait_answering(id, false).await?;
        }
        Ok(())
    }

    /// SIGSTOPs node `id`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).pause()
    }

    /// SIGCONTs a paused node.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).resume()
    }

    pub fn pause_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            self.pause(id)?;
        }
        Ok(())
    }

    pub fn resume_dc(&mut self, d: u8) -> Result<()> {
        for id in self.dc_nodes(d) {
            if self.node(id).running() {
                self.resume(id)?;
            }
        }
        Ok(())
    }

    /// Adds a node to datacenter `dc` (its next site, the next free id) that will join
    /// through the running nodes' admin APIs as seeds. It gets its ports and configuration
    /// now, so that clients made before it starts know its address; [`Cluster::start_node`]
    /// starts it.
    pub fn add_node(&mut self, dc: u8) -> Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let k = self.dc_nodes(dc).len() + 1;
        let k = u8::try_from(k).context("too many nodes in one datacenter")?;
        let seeds = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.admin_addr.clone())
            .collect();
        let n = self.new_node(id, dc, k, seeds)?;
        self.nodes.push(n);
        Ok(id)
    }

    /// Starts a node made by [`Cluster::add_node`] and waits until it answers on its admin
    /// port (on the ports it was given: clients already know them).
    pub async fn start_node(&mut self, id: u64) -> Result<()> {
        self.restart(id).await
    }

    /// Switches a failpoint of node `id` (`log_before_fsync`, `log_slow_fsync`,
    /// `outbox_slow_delivery`); only `bongsu-node-chaos` accepts it.
    pub async fn set_failpoint(&mut self, id: u64, name: &str, enabled: bool) -> Result<()> {
        let state = if enabled { "on" } else { "off" };
        self.node(id).note(&format!("failpoint {name} {state}"));
        let req = SetFailpointRequest {
            name: name.into(),
            enabled,
        };
        self.node_mut(id)
            .admin()?
            .set_failpoint(req)
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

    /// Replaces the network fault rules of every running node, each with its own rules, at
    /// once; only `bongsu-node-chaos` accepts them.
    pub async fn set_faults(&mut self, rules: impl Fn(&NodeProc) -> Vec<FaultRule>) -> Result<()> {
        let calls: Vec<_> = self
            .nodes
            .iter_mut()
            .filter(|n| n.running())
            .map(|n| (n.id, rules(n), n.admin()))
            .map(|(id, rules, admin)| async move {
                admin?
                    .set_faults(SetFaultsRequest { rules })
                    .await
                    .map_err(|s| {
                        anyhow::anyhow!(
                            "set fault rules on node {id}: {:?} {}",
                            s.code(),
                            s.message()
                        )
                    })
            })
            .collect();
        for r in futures::future::join_all(calls).await {
            r?;
        }
        Ok(())
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
                    "----- cluster {}: node {} (dc{}, {}) log tail: {} -----\n{}",
                    self.name,
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_now();
        }
        let Some(scratch) = self.scratch.take() else {
            return;
        };
        if !self.passed {
            eprintln!("{}", self.log_tails(LOG_TAIL_LINES));
        }
        if !self.passed || std::env::var_os("BONGSU_KEEP_CLUSTER").is_some() {
            let path = scratch.dir.keep();
            eprintln!(
                "cluster {}: kept {} for debugging",
                self.name,
                path.display()
            );
        }
    }
}
