//! The data directory's identity on a running node (ARCHITECTURE.md invariant 8): which
//! incarnation of the node this directory is, whether it was admitted to a cluster, and the
//! refusal of Raft traffic until it was.
//!
//! A directory is admitted by an `init` that creates the cluster with it ([`Node::adopt`]),
//! or by a join the meta group accepted for its incarnation (`cluster::join`). Once admitted,
//! the node makes sure the meta group has its incarnation recorded ([`record`]), so a later
//! directory under the same node id (a wiped or replaced disk) is refused when it asks to join,
//! and never answers a vote request meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bongsu_proto::internal::JoinRequest;
use bongsu_proto::ErrorCode;
use bongsu_raft_store::identity::DataIdentity;
use bongsu_raft_store::meta::MetaCommand;
use bongsu_raft_store::Store;

use crate::config::NodeConfig;
use crate::errors::{NodeError, Result};
use crate::node::Node;

/// The environment switch that turns the check off, honoured only by `bongsu-node-chaos`: the
/// wiped-disk test runs with it to show that without the check a committed entry is lost.
pub const UNSAFE_SKIP_ENV: &str = "BONGSU_CHAOS_UNSAFE_SKIP_IDENTITY_CHECK";

/// How often a node that is not admitted logs that it refused Raft traffic.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(5);

/// The directory's identity as this process starts: the stored one, or a new one for a new
/// directory. A directory written before identities existed (it has Raft state but no
/// identity) is an admitted member: it gets an incarnation now, and learns its cluster's id
/// when it records it.
pub fn open(store: &Store, cfg: &NodeConfig) -> Result<DataIdentity> {
    if let Some(id) = store.identity()? {
        if id.node_id != cfg.node_id {
            return Err(NodeError::Config {
                field: "node_id",
                reason: format!(
                    "the data directory {} belongs to node {}, not {}: start it with node_id {} or give node {} its own directory",
                    cfg.data_dir.display(),
                    id.node_id,
                    cfg.node_id,
                    id.node_id,
                    cfg.node_id
                ),
            });
        }
        return Ok(id);
    }
    let mut id = DataIdentity::fresh(cfg.node_id, rand::random());
    id.admitted = !store.groups()?.is_empty();
    store.set_identity(&id)?;
    tracing::info!(
        incarnation = %format!("{:032x}", id.incarnation),
        admitted = id.admitted,
        "new data directory identity"
    );
    Ok(id)
}

/// A 16-byte id (cluster id, incarnation) from the wire.
pub(crate) fn id16(bytes: &[u8], field: &str) -> Result<u128> {
    <[u8; 16]>::try_from(bytes)
        .map(u128::from_be_bytes)
        .map_err(|_| {
            NodeError::rejected(
                ErrorCode::InvalidArgument,
                format!("{field}: 16 bytes, not {}", bytes.len()),
            )
        })
}

/// The meta command that records `incarnation` as node `node_id`'s data directory. A
/// directory that holds no cluster id (`held`) offers `candidate` (or a fresh id) and adopts
/// whichever the meta group has.
fn record_incarnation(
    node_id: u64,
    incarnation: u128,
    held: Option<u128>,
    candidate: Option<u128>,
    admitted: bool,
) -> MetaCommand {
    MetaCommand::RecordIncarnation {
        node_id,
        incarnation,
        cluster_id: held.or(candidate).unwrap_or_else(rand::random),
        adopt_cluster: held.is_none(),
        admitted,
    }
}

/// Whether the unsafe switch is on (only ever in `bongsu-node-chaos`).
pub fn unsafe_skip() -> bool {
    bongsu_raft_store::failpoints::armed() && std::env::var_os(UNSAFE_SKIP_ENV).is_some()
}

/// The identity state a node keeps in memory.
pub struct IdentityState {
    pub id: DataIdentity,
    last_refusal_log: Option<Instant>,
}

impl IdentityState {
    pub fn new(id: DataIdentity) -> Self {
        Self {
            id,
            last_refusal_log: None,
        }
    }
}

impl Node {
    pub fn data_identity(&self) -> DataIdentity {
        self.identity.lock().expect("identity lock poisoned").id
    }

    /// Whether this node answers Raft traffic (see the module docs).
    pub fn admitted(&self) -> bool {
        self.data_identity().admitted || self.skip_identity_check
    }

    /// `None` if Raft traffic from `from` may be handled; otherwise why not, logged now and
    /// then so that an operator sees a node that lost its data.
    pub fn raft_refusal(&self, from: u64) -> Option<String> {
        if self.admitted() {
            return None;
        }
        let mut st = self.identity.lock().expect("identity lock poisoned");
        let why = format!(
            "node {} refuses Raft traffic: its data directory ({:032x}) was never admitted to a cluster",
            st.id.node_id, st.id.incarnation
        );
        if st
            .last_refusal_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY)
        {
            st.last_refusal_log = Some(Instant::now());
            tracing::error!(
                from,
                data_dir = %self.cfg.data_dir.display(),
                "node {0} is addressed as a cluster member, but its data directory is new: it holds none of the member's log or votes and must not vote. If node {0}'s data was lost (a wiped or replaced disk), start this process under a new node id (it joins as a new node), then drain and remove node {0} (`bongsu-node drain --admin <any member> --node-id {0}`, then `bongsu-node remove ...`); or stop it and restore the member's data directory",
                st.id.node_id
            );
        }
        Some(why)
    }

    /// Admits this directory to `cluster_id` (from the `init` that creates the cluster).
    /// Refused if it holds Raft state of another cluster; idempotent for the same one.
    pub fn adopt(&self, cluster_id: u128) -> Result<()> {
        let mut st = self.identity.lock().expect("identity lock poisoned");
        if st.id.admitted && st.id.cluster_id == Some(cluster_id) {
            return Ok(());
        }
        if st.id.admitted && !self.store.groups()?.is_empty() {
            return Err(NodeError::rejected(
                ErrorCode::ClusterMismatch,
                format!(
                    "node {} holds the Raft state of another cluster ({}); it cannot be part of a new one",
                    st.id.node_id,
                    st.id
                        .cluster_id
                        .map(|c| format!("{c:032x}"))
                        .unwrap_or_else(|| "id not recorded".into())
                ),
            ));
        }
        let mut id = st.id;
        id.admitted = true;
        id.cluster_id = Some(cluster_id);
        self.store.set_identity(&id)?;
        st.id = id;
        tracing::info!(cluster = %format!("{cluster_id:032x}"), "data directory admitted by init");
        Ok(())
    }

    /// Admits this directory after the meta group accepted its join.
    pub(crate) fn admit_joined(&self, cluster_id: u128) -> Result<()> {
        let mut st = self.identity.lock().expect("identity lock poisoned");
        let mut id = st.id;
        id.admitted = true;
        id.cluster_id = Some(cluster_id);
        if id != st.id {
            self.store.set_identity(&id)?;
            st.id = id;
            tracing::info!(cluster = %format!("{cluster_id:032x}"), "data directory admitted by join");
        }
        Ok(())
    }

    /// The meta command that records this directory's incarnation.
    pub(crate) fn record_command(&self) -> MetaCommand {
        let id = self.data_identity();
        record_incarnation(id.node_id, id.incarnation, id.cluster_id, None, id.admitted)
    }

    /// On a join's seed: has the meta group record the joining directory's incarnation, which
    /// it refuses for a new directory under a member's id (`NODE_REPLACED`), and returns the
    /// cluster's id.
    pub(crate) async fn admit_join(&self, req: &JoinRequest) -> Result<u128> {
        let node_id = req.node.as_ref().map(|n| n.node_id).unwrap_or(0);
        let incarnation = id16(&req.incarnation, "incarnation")?;
        let held = (!req.cluster_id.is_empty())
            .then(|| id16(&req.cluster_id, "cluster_id"))
            .transpose()?;
        self.propose_meta(record_incarnation(
            node_id,
            incarnation,
            held,
            self.meta().cluster_id,
            req.admitted,
        ))
        .await?;
        // This node's view of the meta state may trail the commit by an apply.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            self.refresh_meta()?;
            if let Some(c) = self.meta().cluster_id {
                return Ok(c);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Unavailable(
                    "the cluster id is not applied here yet; retry".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Once admitted, makes sure the meta group records this directory's incarnation (and this
/// node knows its cluster's id); retried each second until it has. A refusal means this
/// directory is not the member's (restored from another incarnation?): logged, and the node
/// stops recording.
pub async fn record(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let id = node.data_identity();
        let meta = node.meta();
        if !id.admitted || meta.config.is_none() {
            continue;
        }
        if meta.incarnations.get(&id.node_id) == Some(&id.incarnation) {
            match (id.cluster_id, meta.cluster_id) {
                (Some(_), _) => return,
                (None, Some(c)) => {
                    if let Err(e) = node.admit_joined(c) {
                        tracing::warn!(error = %e, "store the cluster id");
                    }
                    continue;
                }
                (None, None) => {}
            }
        }
        match node.propose_meta(node.record_command()).await {
            Ok(_) => {}
            Err(e @ NodeError::Rejected { .. }) => {
                tracing::error!(error = %e, "the meta group refused this data directory's incarnation");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "record incarnation; retrying"),
        }
    }
}
