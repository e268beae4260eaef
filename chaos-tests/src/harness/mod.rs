//! The chaos cluster: the test kit's cluster of `bongsu-node-chaos` processes in several
//! datacenters, and the faults the scenarios inject into them.
//!
//! Two network modes ([`Mode`]):
//!
//! - [`Mode::Portable`]: datacenters are loopback address groups ([`portable`]); a partition
//!   is a set of drop rules in the nodes' own transport, sent through the admin API;
//! - [`Mode::Netns`] (root only): each datacenter is a network namespace joined to a bridge by
//!   a veth pair ([`netns`]); a partition is the datacenter's link taken down in the kernel.
//!
//! In both, killing a datacenter is SIGKILL to each of its node processes, pausing one is
//! SIGSTOP, and storage faults are the nodes' failpoints switched on through the admin API
//! (all of which the kit's [`bongsu_testkit::Cluster`] does, which [`Cluster`] derefs to).
//! One node may get a small disk of its own ([`disk`]: a tmpfs at its data directory, root
//! only) that the `disk-full` fault really fills.
//! Dropping the [`Cluster`] kills the nodes and then removes the namespaces, links and mounts
//! the run made.

pub mod disk;
pub mod netns;
pub mod portable;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use bongsu_proto::internal::SetFaultsRequest;
use bongsu_testkit::cluster::Sites;
pub use bongsu_testkit::cluster::{shard_group, Led, Spec, META_GROUP};
pub use bongsu_testkit::node::{Exit, NodeProc, Site};

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

pub struct Cluster {
    /// Declared first, so dropped first: the nodes are killed before their disk is unmounted
    /// and their namespaces removed.
    inner: bongsu_testkit::Cluster,
    pub mode: Mode,
    /// The datacenter currently cut off, if any.
    partitioned: Option<u8>,
    /// The node the run planned a small disk for (`disk-full`), whether or not it got one.
    pub disk_full_node: Option<u64>,
    /// That node's small disk, when it could be mounted.
    pub small_disk: Option<disk::SmallDisk>,
    /// Why a planned small disk could not be mounted.
    pub small_disk_unavailable: Option<String>,
    netns: Option<netns::Netns>,
}

impl Deref for Cluster {
    type Target = bongsu_testkit::Cluster;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
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
        let netns = match mode {
            Mode::Netns => Some(netns::Netns::create(spec.dcs, spec.nodes_per_dc)?),
            Mode::Portable => None,
        };
        if let Some(ns) = &netns {
            eprintln!("chaos: netns: {}", ns.describe());
        }
        let sites = sites(netns.as_ref());
        let mut inner = bongsu_testkit::Cluster::create("chaos", spec.binary(binary), dir, sites)?;
        inner.epoch = epoch;
        let (small, unavailable) = match small_disk {
            Some(plan) => mount_small_disk(inner.node(plan.node), plan),
            None => (None, None),
        };
        let mut c = Cluster {
            inner,
            mode,
            partitioned: None,
            disk_full_node: small_disk.map(|p| p.node),
            small_disk: small,
            small_disk_unavailable: unavailable,
            netns,
        };
        c.inner.boot().await?;
        c.check_chaos_build().await?;
        c.inner.init().await?;
        Ok(c)
    }

    /// Fails with a clear message unless the node binary has its fault rules armed
    /// (`bongsu-node-chaos`; the plain node answers `SetFaults` with FAILED_PRECONDITION).
    async fn check_chaos_build(&mut self) -> Result<()> {
        let mut admin = self.inner.nodes[0].admin()?;
        match admin
            .set_faults(SetFaultsRequest { rules: Vec::new() })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => bail!(
                "{} has no fault rules ({}); chaos runs need bongsu-node-chaos, built by \
                 `cargo build --release --workspace --all-targets` (or `make chaos-ci`)",
                self.inner.binary.display(),
                s.message()
            ),
            Err(s) => bail!("SetFaults on node 1: {:?} {}", s.code(), s.message()),
        }
    }

    /// Cuts datacenter `d` off from the others: its link goes down (netns), or every node
    /// drops traffic across the cut (portable).
    pub async fn partition(&mut self, d: u8) -> Result<()> {
        self.partitioned = Some(d);
        for id in self.dc_nodes(d) {
            let line = format!("partition: dc{d} cut off ({} mode)", self.mode.name());
            self.node(id).note(&line);
        }
        match &self.netns {
            Some(ns) => ns.link_down(d),
            None => {
                let dcs = self.spec.dcs;
                let rules = move |n: &NodeProc| portable::partition_rules(n.dc, d, dcs);
                self.inner.set_faults(rules).await
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
            None => self.inner.set_faults(|_| Vec::new()).await,
        }
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
}

/// Where the nodes live: loopback address groups, or each datacenter's namespace.
fn sites(netns: Option<&netns::Netns>) -> Sites {
    match netns {
        None => Arc::new(Site::loopback),
        Some(ns) => {
            let names: Vec<String> = (1..=ns.dcs()).map(|d| ns.namespace(d)).collect();
            Arc::new(move |d, k| Site {
                ip: netns::Netns::node_ip(d, k),
                netns: names.get(d as usize - 1).cloned(),
            })
        }
    }
}

/// Mounts the planned small disk at the node's data directory, or says why it cannot be.
fn mount_small_disk(
    n: &NodeProc,
    plan: SmallDiskPlan,
) -> (Option<disk::SmallDisk>, Option<String>) {
    // SAFETY: geteuid has no preconditions.
    let mounted = if unsafe { libc::geteuid() } != 0 {
        Err("not running as root: no tmpfs can be mounted".to_string())
    } else {
        disk::SmallDisk::mount(n.id, &n.data_path(), plan.size).map_err(|e| format!("{e:#}"))
    };
    match mounted {
        Ok(sd) => {
            eprintln!("chaos: small disk: {}", sd.describe());
            n.note(&format!(
                "data directory is a {} MiB tmpfs",
                plan.size >> 20
            ));
            (Some(sd), None)
        }
        Err(why) => {
            eprintln!("chaos: small disk: node {} gets none ({why}); disk-full will be SIMULATED with the log_before_fsync failpoint", n.id);
            (None, Some(why))
        }
    }
}
