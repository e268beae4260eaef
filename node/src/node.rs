//! The node: its groups, its view of the meta state, and peer liveness.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bongsu_proto::ErrorCode;
use bongsu_raft_store::messaging::MessagingView;
use bongsu_raft_store::meta::{group_shard, MetaSnapshot, MetaView, META_GROUP};
use bongsu_raft_store::{
    GroupId, NodeId, NodeInfo, SmConfig, StateMachineStore, Store, StoreOptions, TypeConfig,
};
use openraft::{Membership, Raft, ServerState};
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::errors::{NodeError, Result};
use crate::faults::Faults;
use crate::identity::IdentityState;
use crate::transport::server::RaftHost;
use crate::transport::{GroupNetworkFactory, Transport};

/// One Raft group hosted here.
#[derive(Clone)]
pub struct GroupHandle {
    pub group: GroupId,
    pub raft: Raft<TypeConfig>,
    pub sm: StateMachineStore,
    /// Set when something outside the quiescing loop (a linearizable read) turned the group's
    /// timers back on, so the loop quiesces it again once it is idle.
    pub woken: Arc<std::sync::atomic::AtomicBool>,
}

impl GroupHandle {
    /// Read access to the group's messaging state.
    pub fn messaging(&self) -> MessagingView {
        MessagingView::new(self.sm.view_store(), self.group)
    }

    /// The group's membership as this replica knows it (the last one in its log).
    pub fn membership(&self) -> Membership<NodeId, NodeInfo> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Turns the group's timers back on; the quiescing loop (`quiesce.rs`) turns them off again
    /// once the group has been idle for a while.
    pub fn wake(&self) {
        self.woken.store(true, std::sync::atomic::Ordering::Release);
        let rc = self.raft.runtime_config();
        rc.tick(true);
        rc.heartbeat(true);
        rc.elect(true);
    }
}

/// A running node.
pub struct Node {
    pub cfg: NodeConfig,
    pub store: Arc<Store>,
    /// Network fault rules (chaos builds only).
    pub faults: Arc<Faults>,
    /// How this node's ports and calls are secured (ARCHITECTURE.md invariant 12).
    pub security: bongsu_proto::tls::Security,
    transport: Arc<Transport>,
    raft_config: Arc<openraft::Config>,
    groups: RwLock<HashMap<GroupId, GroupHandle>>,
    /// Serializes group creation: two Raft instances of one group on one store would corrupt it.
    create_lock: tokio::sync::Mutex<()>,
    meta_tx: watch::Sender<Arc<MetaSnapshot>>,
    heard: Mutex<HashMap<NodeId, Instant>>,
    /// When each peer last sent us something by itself (a frame or a ping).
    contacted: Mutex<HashMap<NodeId, Instant>>,
    pub started: Instant,
    /// Groups handing their leadership over: they take no new writes meanwhile.
    transferring: Mutex<HashSet<GroupId>>,
    /// Since when this node has led each group it leads (as first seen by the quiescing
    /// loop, so never earlier than openraft's own moment of election).
    leading: Mutex<HashMap<GroupId, Instant>>,
    /// The data directory's identity; Raft traffic is refused until it is admitted
    /// (`identity.rs`, ARCHITECTURE.md invariant 8).
    pub(crate) identity: Mutex<IdentityState>,
    /// `bongsu-node-chaos` only, to show what the identity check prevents.
    pub(crate) skip_identity_check: bool,
}

impl Node {
    pub(crate) fn shard_count(&self) -> Result<u32> {
        if !self.admitted() && self.meta().config.is_none() {
            // A node whose data directory was never admitted may be a wiped member the
            // cluster is serving without: a client should try another node.
            return Err(NodeError::Unavailable(format!(
                "node {} is not admitted to a cluster (its data directory is new); try another node",
                self.id()
            )));
        }
        self.meta()
            .config
            .as_ref()
            .map(|c| c.shards)
            .ok_or_else(|| {
                NodeError::rejected(
                    ErrorCode::FailedPrecondition,
                    "the cluster is not initialized",
                )
            })
    }

    /// The group, once a linearizable read may run on it: confirms leadership with a quorum
    /// (read index) and waits until that index is applied. `NOT_LEADER` with a hint otherwise.
    pub async fn linearizable(&self, group: GroupId) -> Result<GroupHandle> {
        let h = self.leading(group)?;
        // A read index needs a heartbeat round; a quiesced group must be awake for it.
        h.wake();
        h.raft
            .ensure_linearizable()
            .await
            .map_err(|_| self.not_leader(group))?;
        Ok(h)
    }

    /// Opens the store and starts the meta group and every group that has state here.
    pub async fn open(cfg: NodeConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let store = Store::open(
            cfg.data_dir.join("store"),
            StoreOptions {
                snapshot_batch_bytes: cfg.snapshots.batch_bytes(),
                ..StoreOptions::default()
            },
        )?;
        let identity = crate::identity::open(&store, &cfg)?;
        let skip_identity_check = crate::identity::unsafe_skip();
        if skip_identity_check {
            tracing::warn!("UNSAFE: the data-directory identity check is off (chaos test switch)");
        }
        let t = &cfg.timing;
        let raft_config = openraft::Config {
            cluster_name: "bongsu".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            // Chunks of a snapshot travel as separate RPCs on the bulk lane, a fixed share
            // of the snapshot memory budget each.
            snapshot_max_chunk_size: cfg.snapshots.chunk_bytes(),
            // One chunk's RPC; the last one's answer waits for the install, which streams
            // the whole shard into RocksDB.
            install_snapshot_timeout: 30_000,
            max_payload_entries: 512,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshots.every_entries),
            max_in_snapshot_log_to_keep: cfg.snapshots.keep_entries,
            purge_batch_size: 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config {
            field: "timing",
            reason: e.to_string(),
        })?;
        let meta = MetaView::new(store.clone(), META_GROUP).snapshot()?;
        crate::upgrade::check_binary(&meta)?;
        store.set_cluster_version(meta.cluster_version);
        let (meta_tx, _) = watch::channel(Arc::new(meta));
        let faults = Arc::new(Faults::default());
        let security = crate::links::security(&cfg)?;
        let node = Arc::new(Self {
            transport: Transport::new(cfg.node_id, security.clone(), faults.clone()),
            security,
            faults,
            cfg,
            store,
            raft_config: Arc::new(raft_config),
            groups: RwLock::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            meta_tx,
            heard: Mutex::new(HashMap::new()),
            contacted: Mutex::new(HashMap::new()),
            started: Instant::now(),
            transferring: Mutex::new(HashSet::new()),
            leading: Mutex::new(HashMap::new()),
            identity: Mutex::new(IdentityState::new(identity)),
            skip_identity_check,
        });
        // A restarted node must not disrupt healthy leaders: its groups do not campaign until
        // they have heard from their leader or found they have none (see `quiesce`).
        for g in std::iter::once(META_GROUP).chain(node.store.groups()?) {
            let h = node.ensure_group(g).await?;
            h.raft.runtime_config().elect(false);
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// How this node appears in Raft memberships.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            addr: self.cfg.raft_addr.clone(),
            dc: self.cfg.dc.clone(),
            admin_addr: self.cfg.admin_addr.clone(),
        }
    }

    /// The state-machine limits: the cluster's, once the meta group knows them.
    fn sm_config(&self) -> SmConfig {
        self.meta()
            .config
            .as_ref()
            .map(|c| c.sm_config())
            .unwrap_or_default()
    }

    /// Starts the group if it is not running yet.
    pub async fn ensure_group(&self, group: GroupId) -> Result<GroupHandle> {
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        let _creating = self.create_lock.lock().await;
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        let sm = self.store.state_machine(group, self.sm_config());
        let net = GroupNetworkFactory {
            group,
            transport: self.transport.clone(),
            max_append_bytes: self.store.replication_max_bytes(),
        };
        let raft = Raft::new(
            self.id(),
            self.raft_config.clone(),
            net,
            self.store.log_store(group),
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(format!("start group {group}: {e}")))?;
        let handle = GroupHandle {
            group,
            raft,
            sm,
            woken: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        self.groups
            .write()
            .expect("groups lock poisoned")
            .insert(group, handle.clone());
        Ok(handle)
    }

    pub fn group(&self, group: GroupId) -> Option<GroupHandle> {
        self.groups
            .read()
            .expect("groups lock poisoned")
            .get(&group)
            .cloned()
    }

    pub fn groups(&self) -> Vec<GroupHandle> {
        let mut v: Vec<_> = self
            .groups
            .read()
            .expect("groups lock poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|g| g.group);
        v
    }

    /// Stops a group this node no longer hosts. Its data stays until the group is re-created
    /// here or cleaned up.
    pub async fn stop_group(&self, group: GroupId) {
        let h = self
            .groups
            .write()
            .expect("groups lock poisoned")
            .remove(&group);
        // Led again later, the group starts a new leadership (and a new lease).
        self.note_leading(group, false);
        if let Some(h) = h {
            if let Err(e) = h.raft.shutdown().await {
                tracing::warn!(group, error = %e, "group shutdown");
            }
        }
    }

    pub fn meta(&self) -> Arc<MetaSnapshot> {
        self.meta_tx.borrow().clone()
    }

    pub fn watch_meta(&self) -> watch::Receiver<Arc<MetaSnapshot>> {
        self.meta_tx.subscribe()
    }

    /// Re-reads the meta state after the meta group applied something.
    pub fn refresh_meta(&self) -> Result<bool> {
        let snap = MetaView::new(self.store.clone(), META_GROUP).snapshot()?;
        let changed = snap.version != self.meta().version;
        if changed {
            self.store.set_cluster_version(snap.cluster_version);
            self.meta_tx.send_replace(Arc::new(snap));
        }
        Ok(changed)
    }

    /// The leader of a group as this node knows it, with its NodeInfo.
    pub fn leader_of(&self, group: GroupId) -> Option<(NodeId, NodeInfo)> {
        let h = self.group(group)?;
        let m = h.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let info = m
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()?;
        Some((leader, info))
    }

    /// `NOT_LEADER` for a group, with the leader's internal API address when known. A node
    /// that does not host the group names a live replica from the map, preferring the shard's
    /// preferred leader: usually right, and one hop from right otherwise.
    pub fn not_leader(&self, group: GroupId) -> NodeError {
        let meta = self.meta();
        let leader = match self.leader_of(group) {
            Some((id, info)) => Some((
                id,
                meta.node(id)
                    .map(|n| n.api_addr.clone())
                    .unwrap_or(info.addr),
            )),
            None if self.group(group).is_none() => group_shard(group)
                .and_then(|s| meta.shards.get(s as usize))
                .and_then(|s| s.voters.iter().find(|v| self.is_live(**v)))
                .and_then(|id| meta.node(*id))
                .map(|n| (n.node_id, n.api_addr.clone())),
            None => None,
        };
        NodeError::NotLeader { group, leader }
    }

    /// Fails with `NOT_LEADER` unless this node leads `group`.
    pub fn leading(&self, group: GroupId) -> Result<GroupHandle> {
        let h = self.group(group).ok_or_else(|| self.not_leader(group))?;
        let m = h.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(self.not_leader(group));
        }
        Ok(h)
    }

    pub fn set_transferring(&self, group: GroupId, on: bool) {
        let mut t = self.transferring.lock().expect("transfer lock poisoned");
        if on {
            t.insert(group);
        } else {
            t.remove(&group);
        }
    }

    /// Records whether this node leads `group` now.
    pub fn note_leading(&self, group: GroupId, leads: bool) {
        let mut l = self.leading.lock().expect("leading lock poisoned");
        if leads {
            l.entry(group).or_insert_with(Instant::now);
        } else {
            l.remove(&group);
        }
    }

    /// How long this node has led `group`, at least (`None` if it does not lead it).
    pub fn leading_for(&self, group: GroupId) -> Option<Duration> {
        let l = self.leading.lock().expect("leading lock poisoned");
        l.get(&group).map(|t| t.elapsed())
    }

    pub fn is_transferring(&self, group: GroupId) -> bool {
        self.transferring
            .lock()
            .expect("transfer lock poisoned")
            .contains(&group)
    }

    /// Whether `node` answered within the liveness timeout (this node is always live).
    pub fn is_live(&self, node: NodeId) -> bool {
        node == self.id()
            || self
                .last_heard(node)
                .is_some_and(|d| d < Duration::from_millis(self.cfg.timing.liveness_timeout_ms))
    }

    /// Whether `node` reached this node by itself lately (within two election timeouts, and
    /// at least the liveness timeout). Unlike [`Node::is_live`] this needs traffic from `node`
    /// to here, so a link that works only from here to `node` does not count. The window is
    /// wider than the liveness timeout on purpose: it keeps a follower from campaigning
    /// against a leader whose pings are merely late on a loaded machine, while a leader that
    /// really died is replaced by the liveness campaign, which does not wait for it.
    pub fn reaches_us(&self, node: NodeId) -> bool {
        let t = &self.cfg.timing;
        let window = Duration::from_millis(t.liveness_timeout_ms.max(2 * t.election_max_ms));
        node == self.id()
            || self
                .contacted
                .lock()
                .expect("liveness lock poisoned")
                .get(&node)
                .is_some_and(|at| at.elapsed() < window)
    }

    pub fn last_heard(&self, node: NodeId) -> Option<Duration> {
        self.heard
            .lock()
            .expect("liveness lock poisoned")
            .get(&node)
            .map(|t| t.elapsed())
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// Every member of every group's membership, and every registered node: who to ping.
    pub fn known_peers(&self) -> BTreeMap<NodeId, NodeInfo> {
        let mut peers = BTreeMap::new();
        for n in &self.meta().nodes {
            peers.insert(
                n.node_id,
                NodeInfo {
                    addr: n.raft_addr.clone(),
                    dc: n.dc.clone(),
                    admin_addr: n.admin_addr.clone(),
                },
            );
        }
        if let Some(meta) = self.group(META_GROUP) {
            for (id, info) in meta.membership().nodes() {
                peers.entry(*id).or_insert_with(|| info.clone());
            }
        }
        peers.remove(&self.id());
        peers
    }
}

impl RaftHost for Node {
    fn node_id(&self) -> NodeId {
        self.id()
    }

    fn dc(&self) -> &str {
        &self.cfg.dc
    }

    fn raft(&self, group: u64) -> Option<Raft<TypeConfig>> {
        self.group(group).map(|g| g.raft)
    }

    fn heard_from(&self, node: NodeId) {
        self.heard
            .lock()
            .expect("liveness lock poisoned")
            .insert(node, Instant::now());
    }

    fn contacted_by(&self, node: NodeId) {
        self.contacted
            .lock()
            .expect("liveness lock poisoned")
            .insert(node, Instant::now());
    }

    fn dc_of(&self, node: NodeId) -> Option<String> {
        self.meta()
            .node(node)
            .map(|n| n.dc.clone())
            .or_else(|| self.known_peers().get(&node).map(|i| i.dc.clone()))
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    fn transport_stats(&self) -> &crate::transport::client::TransportStats {
        &self.transport.stats
    }

    fn raft_refusal(&self, from: NodeId) -> Option<String> {
        Node::raft_refusal(self, from)
    }
}
