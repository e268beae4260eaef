//! Cluster life on one node: proposing to the meta group from anywhere, following the shard
//! map (start, initialize and stop groups), joining, and peer liveness.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::raft_transport_client::RaftTransportClient;
use bongsu_proto::internal::{JoinRequest, MetaProposeRequest, NodeIdentity, PingRequest};
use bongsu_proto::tls::{Role, Security};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{shard_group, MetaCommand, NodeRecord, META_GROUP};
use bongsu_raft_store::{Command, CommandResult, GroupId, NodeId, NodeInfo};
use openraft::error::{ClientWriteError, InitializeError, RaftError};

use crate::errors::{NodeError, Result};
use crate::node::Node;

/// How long a meta proposal keeps looking for a leader before giving up.
const META_DEADLINE: Duration = Duration::from_secs(10);

pub fn info_of(n: &NodeRecord) -> NodeInfo {
    NodeInfo {
        addr: n.raft_addr.clone(),
        dc: n.dc.clone(),
        admin_addr: n.admin_addr.clone(),
    }
}

pub fn identity(node: &Node) -> NodeIdentity {
    let c = &node.cfg;
    NodeIdentity {
        node_id: c.node_id,
        dc: c.dc.clone(),
        raft_addr: c.raft_addr.clone(),
        api_addr: c.api_addr.clone(),
        admin_addr: c.admin_addr.clone(),
        admitted: node.admitted(),
        binary_version: bongsu_raft_store::version::BINARY_VERSION,
    }
}

/// A client of another node's admin API, whose certificate must name a node of the cluster
/// (the caller may not know which one yet: a seed).
pub async fn admin_client(
    security: &Security,
    addr: &str,
) -> Result<AdminClient<tonic::transport::Channel>> {
    let ep = Security::endpoint(addr)
        .map_err(|e| NodeError::Unavailable(format!("bad address {addr}: {e}")))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(15));
    let ch = security
        .connect(ep, &Role::any_node())
        .await
        .map_err(|e| NodeError::Unavailable(format!("connect {addr}: {e:?}")))?;
    Ok(AdminClient::new(ch))
}

impl Node {
    /// Writes a command to a group this node leads; `NOT_LEADER` otherwise.
    pub async fn write_local(&self, group: GroupId, cmd: Command) -> Result<(CommandResult, u64)> {
        // Before leadership: whichever node is asked, the cluster cannot take it yet.
        crate::upgrade::gate(&self.meta(), &cmd)?;
        let h = self.leading(group)?;
        if self.is_transferring(group) {
            return Err(NodeError::Unavailable(format!(
                "group {group} is handing over its leadership; retry"
            )));
        }
        h.wake();
        match h.raft.client_write(cmd).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader(group))
            }
            Err(e) => Err(NodeError::Unavailable(format!("group {group}: {e}"))),
        }
    }

    /// Proposes a meta command through whichever node leads the meta group, retrying while
    /// there is none, and returns the shard-map version after it.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + META_DEADLINE;
        loop {
            let attempt = match self
                .write_local(META_GROUP, Command::Meta(cmd.clone()))
                .await
            {
                Ok((CommandResult::MapChanged { version }, _)) => return Ok(version),
                Ok((CommandResult::Rejected(r), _)) => {
                    return Err(NodeError::Rejected {
                        code: r.code,
                        reason: r.reason,
                    })
                }
                Ok((other, _)) => {
                    return Err(NodeError::Raft(format!("unexpected meta result {other:?}")))
                }
                Err(NodeError::NotLeader { .. }) => match self.leader_of(META_GROUP) {
                    Some((leader, info)) if leader != self.id() => {
                        self.forward_meta(&info.admin_addr, &cmd).await
                    }
                    _ => Err(NodeError::Unavailable(
                        "the meta group has no leader".into(),
                    )),
                },
                Err(e) => Err(e),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(e @ NodeError::Rejected { .. }) => return Err(e),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "meta proposal retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn forward_meta(&self, admin_addr: &str, cmd: &MetaCommand) -> Result<u64> {
        let bytes = postcard::to_allocvec(cmd).map_err(|e| NodeError::Raft(e.to_string()))?;
        let reply = admin_client(&self.security, admin_addr)
            .await?
            .meta_propose(MetaProposeRequest { command: bytes })
            .await;
        match reply {
            Ok(r) => Ok(r.into_inner().version),
            Err(s) => Err(NodeError::from_status(&s)),
        }
    }

    /// Brings the groups hosted here in line with the shard map.
    pub async fn reconcile(&self) -> Result<()> {
        let meta = self.meta();
        if meta.config.is_none() {
            return Ok(());
        }
        let me = self.id();
        for s in &meta.shards {
            let g = shard_group(s.shard);
            let mine = s.voters.contains(&me) || s.learners.contains(&me);
            if mine {
                let h = self.ensure_group(g).await?;
                // Each new shard is initialized once, by its preferred leader; later changes of
                // its replicas go through Raft membership changes, never through this.
                if s.epoch == 0
                    && s.voters.first() == Some(&me)
                    && !h.raft.is_initialized().await.unwrap_or(true)
                {
                    let members: BTreeMap<NodeId, NodeInfo> = s
                        .voters
                        .iter()
                        .filter_map(|v| meta.node(*v).map(|n| (*v, info_of(n))))
                        .collect();
                    match h.raft.initialize(members).await {
                        Ok(()) => tracing::info!(group = g, "initialized shard group"),
                        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                        Err(e) => tracing::warn!(group = g, error = %e, "initialize shard group"),
                    }
                }
            } else if self.group(g).is_some() {
                // A replica being moved away stays listed until the group's membership change
                // has committed (the rebalancer records the move only then), so once the map
                // drops this node the group no longer needs it. The group itself may never
                // tell this node: a leader stops replicating to removed voters.
                tracing::info!(group = g, "stopping group no longer placed here");
                self.stop_group(g).await;
                // Its data is no use here any more (retention, ARCHITECTURE.md invariant 10).
                match self.store.drop_group(g).await {
                    Ok(()) => tracing::info!(group = g, "deleted the group's data"),
                    Err(e) => tracing::warn!(group = g, error = %e, "delete the group's data"),
                }
            }
        }
        // The meta leader makes every registered node a meta learner, so that every node has
        // the shard map locally.
        if let Ok(h) = self.leading(META_GROUP) {
            let membership = h.membership();
            for n in &meta.nodes {
                if n.state == bongsu_raft_store::meta::NodeState::Removed {
                    self.drop_meta_learner(n.node_id).await;
                } else if membership.get_node(&n.node_id).is_none() {
                    if let Err(e) = h.raft.add_learner(n.node_id, info_of(n), false).await {
                        tracing::warn!(node = n.node_id, error = %e, "add meta learner");
                    }
                }
            }
        }
        Ok(())
    }

    /// On the meta leader: removes a removed node from the meta group's membership.
    pub async fn drop_meta_learner(&self, node_id: u64) {
        let Ok(h) = self.leading(META_GROUP) else {
            return;
        };
        let membership = h.membership();
        if membership.get_node(&node_id).is_none() || membership.voter_ids().any(|v| v == node_id) {
            return;
        }
        let change = openraft::ChangeMembers::RemoveNodes(std::iter::once(node_id).collect());
        if let Err(e) = h.raft.change_membership(change, false).await {
            tracing::warn!(node = node_id, error = %e, "drop meta learner");
        }
    }
}

/// Starts following the shard map, pinging peers and (on first boot with seeds) joining.
pub fn spawn(node: Arc<Node>) {
    tokio::spawn(follow_meta(node.clone()));
    tokio::spawn(liveness(node.clone()));
    tokio::spawn(crate::identity::record(node.clone()));
    tokio::spawn(join(node));
}

/// Re-reads the meta state whenever the meta group applies something, and reconciles; also
/// once a second, so a failed step is retried.
async fn follow_meta(node: Arc<Node>) {
    let Some(meta) = node.group(META_GROUP) else {
        return;
    };
    let mut metrics = meta.raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        match node.refresh_meta() {
            Ok(_) => {
                if let Err(e) = node.reconcile().await {
                    tracing::warn!(error = %e, "reconcile");
                }
            }
            Err(e) => tracing::error!(error = %e, "read meta state"),
        }
    }
}

/// Pings every known peer each interval: one call per node pair, whatever the group count.
async fn liveness(node: Arc<Node>) {
    let interval = Duration::from_millis(node.cfg.timing.liveness_interval_ms);
    let mut clients: HashMap<String, RaftTransportClient<tonic::transport::Channel>> =
        HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (id, info) in node.known_peers() {
            let client = match clients.get(&info.addr) {
                Some(c) => c.clone(),
                None => {
                    let Ok(ep) = Security::endpoint(&info.addr) else {
                        continue;
                    };
                    let ch = node
                        .security
                        .channel(ep.connect_timeout(interval), &Role::Node(id).server_name());
                    let c = RaftTransportClient::new(ch);
                    clients.insert(info.addr.clone(), c.clone());
                    c
                }
            };
            let node = node.clone();
            tokio::spawn(async move {
                if !node.faults.pass(&info.dc, true).await {
                    return;
                }
                let mut c = client;
                let ping = c.ping(PingRequest {
                    from_node: node.id(),
                    to_node: id,
                });
                if let Ok(Ok(_)) = tokio::time::timeout(interval * 2, ping).await {
                    crate::transport::server::RaftHost::heard_from(node.as_ref(), id);
                }
            });
        }
    }
}

/// On first boot with seeds: asks them to register this node until the meta state shows it,
/// and admits the data directory once the meta group accepted it. A refusal for this node id
/// (`NODE_REPLACED`: the id is a member and this directory is not its data) or for this
/// directory (`CLUSTER_MISMATCH`) stops the process with [`EXIT_REFUSED`].
async fn join(node: Arc<Node>) {
    if node.cfg.seeds.is_empty() {
        return;
    }
    loop {
        if node.admitted() && node.meta().node(node.id()).is_some() {
            return;
        }
        for seed in &node.cfg.seeds {
            let id = node.data_identity();
            let req = JoinRequest {
                node: Some(identity(&node)),
                incarnation: id.incarnation.to_be_bytes().to_vec(),
                cluster_id: id
                    .cluster_id
                    .map(|c| c.to_be_bytes().to_vec())
                    .unwrap_or_default(),
                admitted: id.admitted,
            };
            let reply = match admin_client(&node.security, seed).await {
                Ok(mut c) => c.join(req).await,
                Err(e) => {
                    tracing::debug!(%seed, error = %e, "join");
                    continue;
                }
            };
            match reply {
                Ok(r) => match <[u8; 16]>::try_from(r.into_inner().cluster_id.as_slice()) {
                    Ok(c) => {
                        if let Err(e) = node.admit_joined(u128::from_be_bytes(c)) {
                            tracing::error!(error = %e, "store the admitted identity");
                            continue;
                        }
                        tracing::info!(%seed, "registered with the cluster");
                        break;
                    }
                    Err(_) => tracing::warn!(%seed, "join reply without a cluster id"),
                },
                Err(s) => match ErrorCode::of_status(&s) {
                    Some(code @ (ErrorCode::NodeReplaced | ErrorCode::ClusterMismatch)) => {
                        tracing::error!(%seed, %code, "the cluster refused this node: {}", s.message());
                        eprintln!("bongsu-node: {code}: {}", s.message());
                        std::process::exit(EXIT_REFUSED);
                    }
                    _ => tracing::info!(%seed, error = %s.message(), "join"),
                },
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The exit code of a node the cluster refused to admit (sysexits' `EX_CONFIG`): restarting it
/// as it is cannot help; see the message it printed.
pub const EXIT_REFUSED: i32 = 78;
