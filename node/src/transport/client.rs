//! The sending side: two links per peer node (a control lane and a bulk lane), shared by all
//! groups.
//!
//! Why two: a follower that catches up receives megabytes of entries, and openraft 0.9 gives
//! every AppendEntries one heartbeat interval to be answered. If heartbeats and votes waited
//! behind that data on one connection, a healthy leader would look dead and a follower would
//! campaign. So votes, heartbeats and small appends take the control lane; large appends and
//! snapshot chunks take the bulk lane, which has its own connection and a budget of bytes in
//! flight per peer (the catch-up throttle: live traffic to other peers and to this one's
//! control lane keeps its latency). A request openraft gave up on before it left is dropped,
//! not sent late, so a backlog never turns into a queue of stale copies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bongsu_proto::internal::raft_transport_client::RaftTransportClient;
use bongsu_proto::internal::{raft_reply, RaftBatch, RaftKind, RaftMessage, RaftReplyBatch};
use bongsu_proto::tls::{Role, Security};
use bongsu_raft_store::version::FRAME_FORMAT;
use bongsu_raft_store::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::probe::{self, Claims};
use crate::faults::Faults;

/// How many queued RPCs go into one frame at most.
const MAX_BATCH: usize = 256;
/// The most bytes one frame carries (a frame always carries at least one RPC).
const MAX_FRAME_BYTES: usize = 4 << 20;
/// AppendEntries payloads up to this size take the control lane.
const CONTROL_MAX_BYTES: usize = 64 << 10;
/// Bytes of bulk-lane requests in flight to one peer at most, in KiB permits.
const BULK_BUDGET_KIB: u32 = 8 << 10;
/// HTTP/2 flow-control windows: large enough that a cross-datacenter round trip does not cap a
/// catch-up at a few megabytes per second (the defaults are 64 KiB).
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
const NOT_HOSTED_PAUSE: Duration = Duration::from_millis(20);

type Reply = Result<Vec<u8>, Failure>;

/// Why an RPC got no answer from the group.
#[derive(Debug, Clone)]
enum Failure {
    /// The peer or the stream is gone: openraft backs off before trying again.
    Unreachable(String),
    /// The peer runs but has not started the group yet: worth retrying at once.
    NotHosted(String),
}

struct Outgoing {
    group: u64,
    kind: RaftKind,
    payload: Vec<u8>,
    reply: oneshot::Sender<Reply>,
    /// The bulk lane's share of its byte budget, held until the reply arrives.
    permit: Option<OwnedSemaphorePermit>,
}

/// Which connection to a peer an RPC takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Votes, heartbeats and small appends: never behind bulk data.
    Control,
    /// Large appends and snapshot chunks, under a per-peer budget of bytes in flight.
    Bulk,
}

impl Lane {
    fn of(kind: RaftKind, bytes: usize) -> Lane {
        match kind {
            RaftKind::InstallSnapshot => Lane::Bulk,
            RaftKind::AppendEntries if bytes > CONTROL_MAX_BYTES => Lane::Bulk,
            _ => Lane::Control,
        }
    }
}

/// Counters an operator (and the tests) read through the admin status.
#[derive(Default)]
pub struct TransportStats {
    pub largest_append_bytes: AtomicU64,
    pub append_bytes_sent: AtomicU64,
    pub append_bytes_received: AtomicU64,
    pub bulk_requests: AtomicU64,
    pub bulk_bytes_sent: AtomicU64,
    pub dropped_stale: AtomicU64,
    pub probes: AtomicU64,
    pub probes_matched: AtomicU64,
    pub appends_cut: AtomicU64,
}

impl TransportStats {
    pub fn to_proto(&self) -> bongsu_proto::internal::TransportStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        bongsu_proto::internal::TransportStats {
            largest_append_bytes: get(&self.largest_append_bytes),
            append_bytes_sent: get(&self.append_bytes_sent),
            append_bytes_received: get(&self.append_bytes_received),
            bulk_requests: get(&self.bulk_requests),
            bulk_bytes_sent: get(&self.bulk_bytes_sent),
            dropped_stale: get(&self.dropped_stale),
            probes: get(&self.probes),
            probes_matched: get(&self.probes_matched),
            appends_cut: get(&self.appends_cut),
        }
    }
}

/// The links to every peer this node talks to.
pub struct Transport {
    me: NodeId,
    security: Security,
    links: Mutex<HashMap<(NodeId, Lane), Arc<PeerLink>>>,
    faults: Arc<Faults>,
    pub stats: Arc<TransportStats>,
    /// What each follower said it holds: decides when an append is checked with an empty
    /// probe first (see [`super::probe`]).
    claims: Arc<Claims>,
}

impl Transport {
    pub fn new(me: NodeId, security: Security, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(Self {
            me,
            security,
            links: Mutex::new(HashMap::new()),
            faults,
            stats: Arc::new(TransportStats::default()),
            claims: Arc::new(Claims::default()),
        })
    }

    /// The link to `node` on `lane`, created on first use and re-created if its address
    /// changed.
    pub fn link(&self, node: NodeId, info: &NodeInfo, lane: Lane) -> Arc<PeerLink> {
        let mut links = self.links.lock().expect("transport lock poisoned");
        if let Some(l) = links.get(&(node, lane)) {
            if l.addr == info.addr {
                return l.clone();
            }
        }
        let l = PeerLink::start(
            self.me,
            self.security.clone(),
            node,
            info.addr.clone(),
            info.dc.clone(),
            self.faults.clone(),
            self.stats.clone(),
            lane,
        );
        links.insert((node, lane), l.clone());
        l
    }
}

/// One peer on one lane: a queue drained by a task that owns the connection and the stream.
pub struct PeerLink {
    addr: String,
    dc: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    faults: Arc<Faults>,
    stats: Arc<TransportStats>,
    /// The bulk lane's budget of bytes in flight (KiB permits); none on the control lane.
    budget: Option<Arc<Semaphore>>,
}

impl PeerLink {
    fn start(
        me: NodeId,
        security: Security,
        target: NodeId,
        addr: String,
        dc: String,
        faults: Arc<Faults>,
        stats: Arc<TransportStats>,
        lane: Lane,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_link(
            me,
            security,
            target,
            addr.clone(),
            rx,
            stats.clone(),
        ));
        Arc::new(Self {
            addr,
            dc,
            tx,
            faults,
            stats,
            budget: (lane == Lane::Bulk)
                .then(|| Arc::new(Semaphore::new(BULK_BUDGET_KIB as usize))),
        })
    }

    async fn call(
        &self,
        group: u64,
        kind: RaftKind,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let deadline = tokio::time::Instant::now() + ttl;
        if !self.faults.pass(&self.dc, true).await {
            // A partition loses the message: the caller hears nothing until its deadline.
            tokio::time::sleep_until(deadline).await;
            return Err(CallError::Timeout);
        }
        let permit = match &self.budget {
            None => None,
            Some(budget) => {
                let kib = payload
                    .len()
                    .div_ceil(1024)
                    .clamp(1, BULK_BUDGET_KIB as usize) as u32;
                match tokio::time::timeout_at(deadline, budget.clone().acquire_many_owned(kib))
                    .await
                {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(_)) => return Err(CallError::Unreachable("link closed".into())),
                    // The peer has not taken the bytes already in flight: this one would only
                    // add to the backlog. openraft sends it again.
                    Err(_) => {
                        self.stats.dropped_stale.fetch_add(1, Ordering::Relaxed);
                        return Err(CallError::Timeout);
                    }
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                group,
                kind,
                payload,
                reply,
                permit,
            })
            .map_err(|_| CallError::Unreachable("link closed".into()))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(_)) => Err(CallError::Unreachable("link dropped the call".into())),
            Ok(Ok(Err(Failure::Unreachable(e)))) => Err(CallError::Unreachable(e)),
            Ok(Ok(Err(Failure::NotHosted(e)))) => Err(CallError::NotHosted(e)),
            Ok(Ok(Ok(bytes))) => Ok(bytes),
        }
    }
}

enum CallError {
    Unreachable(String),
    NotHosted(String),
    Timeout,
}

/// Replies awaited, by request id, each with the budget its request holds.
type Pending = Arc<Mutex<HashMap<u64, (oneshot::Sender<Reply>, Option<OwnedSemaphorePermit>)>>>;

fn fail_all(pending: &Pending, why: &str) {
    let drained: Vec<_> = pending
        .lock()
        .expect("pending lock poisoned")
        .drain()
        .collect();
    for (_, (tx, _permit)) in drained {
        let _ = tx.send(Err(Failure::Unreachable(why.to_string())));
    }
}

/// One link to a peer node: (re)connects, sends what is queued as batched frames and matches
/// the replies, until the link's queue is closed.
async fn run_link(
    me: NodeId,
    security: Security,
    target: NodeId,
    addr: String,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    stats: Arc<TransportStats>,
) {
    let next_id = AtomicU64::new(1);
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .http2_keep_alive_interval(Duration::from_secs(1)),
            Err(e) => {
                tracing::error!(target_node = target, %addr, error = %e, "bad peer address");
                return;
            }
        };
        let server_name = Role::Node(target).server_name();
        let channel = security.connect(endpoint, &server_name);
        let (btx, inbound) = match open_exchange(channel).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(target_node = target, %addr, error = %e, "cannot reach peer");
                // Fail what is queued now rather than let it wait out its timeout: openraft
                // backs off on `Unreachable` and tries again.
                while let Ok(o) = rx.try_recv() {
                    let _ = o.reply.send(Err(Failure::Unreachable(format!(
                        "node {target} at {addr} unreachable: {e}"
                    ))));
                }
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let mut reader = tokio::spawn(read_replies(inbound, pending.clone()));
        let why = loop {
            let first = tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => o,
                    None => break "link closed".to_string(),
                },
                r = &mut reader => break r.unwrap_or_else(|e| e.to_string()),
            };
            let batch = gather(first, &mut rx, &stats);
            if batch.is_empty() {
                continue;
            }
            let messages = register(batch, &pending, &next_id);
            if btx
                .send(RaftBatch {
                    from_node: me,
                    to_node: target,
                    messages,
                    format: FRAME_FORMAT,
                })
                .await
                .is_err()
            {
                break "stream closed".to_string();
            }
        };
        reader.abort();
        tracing::debug!(target_node = target, %addr, reason = %why, "peer stream down");
        fail_all(&pending, &format!("stream to node {target} broke: {why}"));
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// Connects and opens the link's one `Exchange` stream: the sender of request frames and the
/// stream of reply frames.
async fn open_exchange(
    channel: impl std::future::Future<
        Output = Result<tonic::transport::Channel, tonic::transport::Error>,
    >,
) -> Result<(mpsc::Sender<RaftBatch>, tonic::Streaming<RaftReplyBatch>), String> {
    let channel = channel.await.map_err(|e| format!("{e:?}"))?;
    let (btx, brx) = mpsc::channel::<RaftBatch>(64);
    let inbound = RaftTransportClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
        .exchange(ReceiverStream::new(brx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok((btx, inbound))
}

/// Hands each reply to the request waiting for it, until the stream ends; returns why.
async fn read_replies(mut inbound: tonic::Streaming<RaftReplyBatch>, pending: Pending) -> String {
    loop {
        match inbound.message().await {
            Ok(Some(batch)) => {
                for r in batch.replies {
                    let waiting = pending.lock().expect("pending lock poisoned").remove(&r.id);
                    // The request's budget is released here, with the reply.
                    if let Some((tx, _permit)) = waiting {
                        let res = match r.result {
                            Some(raft_reply::Result::Payload(p)) => Ok(p),
                            Some(raft_reply::Result::Unreachable(e)) => {
                                Err(Failure::Unreachable(e))
                            }
                            Some(raft_reply::Result::NotHosted(e)) => Err(Failure::NotHosted(e)),
                            None => Err(Failure::Unreachable("empty reply".to_string())),
                        };
                        let _ = tx.send(res);
                    }
                }
            }
            Ok(None) => return "stream ended".to_string(),
            Err(e) => return e.to_string(),
        }
    }
}

/// One frame's requests: `first` and whatever is queued behind it, up to [`MAX_BATCH`]
/// requests and until [`MAX_FRAME_BYTES`] are gathered, without the ones openraft gave up on.
fn gather(
    first: Outgoing,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    stats: &TransportStats,
) -> Vec<Outgoing> {
    let mut batch = vec![first];
    let mut bytes = batch[0].payload.len();
    while batch.len() < MAX_BATCH && bytes < MAX_FRAME_BYTES {
        match rx.try_recv() {
            Ok(o) => {
                bytes += o.payload.len();
                batch.push(o);
            }
            Err(_) => break,
        }
    }
    // openraft stopped waiting for these (a timeout): sending them now would only put stale
    // copies ahead of their retries.
    let before = batch.len();
    batch.retain(|o| !o.reply.is_closed());
    let dropped = before - batch.len();
    if dropped > 0 {
        stats
            .dropped_stale
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }
    batch
}

/// Gives each request an id and keeps its reply channel (and budget) until the reply comes.
fn register(batch: Vec<Outgoing>, pending: &Pending, next_id: &AtomicU64) -> Vec<RaftMessage> {
    let mut p = pending.lock().expect("pending lock poisoned");
    batch
        .into_iter()
        .map(|o| {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            p.insert(id, (o.reply, o.permit));
            RaftMessage {
                id,
                group: o.group,
                kind: o.kind as i32,
                payload: o.payload,
            }
        })
        .collect()
}

/// A request as the transport carries it (postcard).
fn encode<Req: Serialize>(req: &Req) -> Result<Vec<u8>, NetworkError> {
    postcard::to_allocvec(req).map_err(|e| NetworkError::new(&e))
}

/// Makes openraft's per-(group, peer) clients.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    pub group: u64,
    pub transport: Arc<Transport>,
    /// The most entry bytes one AppendEntries carries (at least one entry always goes).
    pub max_append_bytes: usize,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupConn;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupConn {
        GroupConn {
            group: self.group,
            target,
            control: self.transport.link(target, node, Lane::Control),
            bulk: self.transport.link(target, node, Lane::Bulk),
            claims: self.transport.claims.clone(),
            max_append_bytes: self.max_append_bytes,
        }
    }
}

/// openraft's client for one group and one peer.
pub struct GroupConn {
    group: u64,
    target: NodeId,
    control: Arc<PeerLink>,
    bulk: Arc<PeerLink>,
    claims: Arc<Claims>,
    max_append_bytes: usize,
}

impl GroupConn {
    fn stats(&self) -> &TransportStats {
        &self.control.stats
    }

    async fn rpc<Req, Resp, E>(
        &self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.send(kind, encode(req).map_err(RPCError::Network)?, option)
            .await
    }

    /// Sends an encoded request and decodes the reply.
    async fn send<Resp, E>(
        &self,
        kind: RaftKind,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let len = payload.len();
        let lane = Lane::of(kind, len);
        let link = match lane {
            Lane::Control => &self.control,
            Lane::Bulk => &self.bulk,
        };
        let stats = &link.stats;
        if kind == RaftKind::AppendEntries {
            stats
                .largest_append_bytes
                .fetch_max(len as u64, Ordering::Relaxed);
            stats
                .append_bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
        }
        if lane == Lane::Bulk {
            stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
            stats
                .bulk_bytes_sent
                .fetch_add(len as u64, Ordering::Relaxed);
        }
        let bytes = match link
            .call(self.group, kind, payload, option.hard_ttl())
            .await
        {
            Ok(b) => b,
            Err(CallError::Unreachable(e)) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e),
                )));
            }
            // A network error, not `Unreachable`: openraft retries it without its 500 ms backoff.
            Err(CallError::NotHosted(e)) => {
                // openraft retries a network error at once; a short pause keeps a replica that
                // is about to start the group from being flooded meanwhile.
                tokio::time::sleep(NOT_HOSTED_PAUSE).await;
                return Err(RPCError::Network(NetworkError::new(
                    &std::io::Error::other(e),
                )));
            }
            // Reported as a network error so that openraft retries it like any transient failure.
            Err(CallError::Timeout) => {
                return Err(RPCError::Network(NetworkError::new(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no reply from node {} in {:?}",
                        self.target,
                        option.hard_ttl()
                    ),
                ))));
            }
        };
        let res: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        // See `super::probe`: what the follower said it holds is asked for first, with an
        // empty append the follower checks against its own log.
        let claims = &self.claims;
        if let Some(at) = probe::probe_point(claims.get(self.group, self.target), &rpc.entries) {
            let probe = AppendEntriesRequest::<TypeConfig> {
                vote: rpc.vote,
                prev_log_id: Some(at),
                leader_commit: rpc.leader_commit,
                entries: Vec::new(),
            };
            self.stats().probes.fetch_add(1, Ordering::Relaxed);
            match self.rpc(RaftKind::AppendEntries, &probe, &option).await? {
                AppendEntriesResponse::Success => {
                    self.stats().probes_matched.fetch_add(1, Ordering::Relaxed);
                    claims.raise(self.group, self.target, at);
                    return Ok(probe::probed(at, &rpc.entries));
                }
                AppendEntriesResponse::HigherVote(v) => {
                    return Ok(AppendEntriesResponse::HigherVote(v))
                }
                // Not an answer an empty append gets; send the request as it is.
                AppendEntriesResponse::PartialSuccess(_) => {}
                AppendEntriesResponse::Conflict => claims.forget(self.group, self.target),
            }
        }
        // The request is encoded once; only one above the bound (a seek read the probe did not
        // answer) is measured entry by entry, cut, and encoded again.
        let mut rpc = rpc;
        let mut payload = encode(&rpc).map_err(RPCError::Network)?;
        let mut cut = false;
        if payload.len() > self.max_append_bytes {
            let keep = probe::prefix_within(&rpc.entries, self.max_append_bytes);
            if keep < rpc.entries.len() {
                rpc.entries.truncate(keep);
                payload = encode(&rpc).map_err(RPCError::Network)?;
                cut = true;
                self.stats().appends_cut.fetch_add(1, Ordering::Relaxed);
            }
        }
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let resp: AppendEntriesResponse<NodeId> =
            self.send(RaftKind::AppendEntries, payload, &option).await?;
        Ok(match resp {
            AppendEntriesResponse::Success => {
                if let Some(l) = last {
                    claims.raise(self.group, self.target, l);
                }
                // The follower holds the prefix that went; openraft sends the rest next.
                if cut {
                    AppendEntriesResponse::PartialSuccess(last)
                } else {
                    AppendEntriesResponse::Success
                }
            }
            AppendEntriesResponse::PartialSuccess(m) => {
                if let Some(l) = m {
                    claims.raise(self.group, self.target, l);
                }
                AppendEntriesResponse::PartialSuccess(m)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RaftKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let resp: VoteResponse<NodeId> = self.rpc(RaftKind::Vote, &rpc, &option).await?;
        // What the voter holds: a newly elected leader probes it before sending it entries.
        if let Some(l) = resp.last_log_id {
            self.claims.raise(self.group, self.target, l);
        }
        Ok(resp)
    }
}
