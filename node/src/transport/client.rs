//! The sending side: one link per peer node, shared by all groups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bongsu_proto::internal::raft_transport_client::RaftTransportClient;
use bongsu_proto::internal::{raft_reply, RaftBatch, RaftKind, RaftMessage};
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
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::faults::Faults;

/// How many queued RPCs go into one frame at most.
const MAX_BATCH: usize = 256;
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
}

/// The links to every peer this node talks to.
pub struct Transport {
    me: NodeId,
    links: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    faults: Arc<Faults>,
}

impl Transport {
    pub fn new(me: NodeId, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(Self {
            me,
            links: Mutex::new(HashMap::new()),
            faults,
        })
    }

    /// The link to `node`, created on first use and re-created if its address changed.
    pub fn link(&self, node: NodeId, info: &NodeInfo) -> Arc<PeerLink> {
        let mut links = self.links.lock().expect("transport lock poisoned");
        if let Some(l) = links.get(&node) {
            if l.addr == info.addr {
                return l.clone();
            }
        }
        let l = PeerLink::start(
            self.me,
            node,
            info.addr.clone(),
            info.dc.clone(),
            self.faults.clone(),
        );
        links.insert(node, l.clone());
        l
    }
}

/// One peer: a queue drained by a task that owns the connection and the stream.
pub struct PeerLink {
    addr: String,
    dc: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    faults: Arc<Faults>,
}

impl PeerLink {
    fn start(
        me: NodeId,
        target: NodeId,
        addr: String,
        dc: String,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_link(me, target, addr.clone(), rx));
        Arc::new(Self {
            addr,
            dc,
            tx,
            faults,
        })
    }

    async fn call(
        &self,
        group: u64,
        kind: RaftKind,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallError> {
        if !self.faults.pass(&self.dc, true).await {
            // A partition loses the message: the caller hears nothing until its deadline.
            tokio::time::sleep(ttl).await;
            return Err(CallError::Timeout);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                group,
                kind,
                payload,
                reply,
            })
            .map_err(|_| CallError::Unreachable("link closed".into()))?;
        match tokio::time::timeout(ttl, rx).await {
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

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

fn fail_all(pending: &Pending, why: &str) {
    let drained: Vec<_> = pending
        .lock()
        .expect("pending lock poisoned")
        .drain()
        .collect();
    for (_, tx) in drained {
        let _ = tx.send(Err(Failure::Unreachable(why.to_string())));
    }
}

async fn run_link(
    me: NodeId,
    target: NodeId,
    addr: String,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let next_id = AtomicU64::new(1);
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1)),
            Err(e) => {
                tracing::error!(target_node = target, %addr, error = %e, "bad peer address");
                return;
            }
        };
        let stream = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let (btx, brx) = mpsc::channel::<RaftBatch>(64);
            let inbound = RaftTransportClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20)
                .exchange(ReceiverStream::new(brx))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            Ok::<_, String>((btx, inbound))
        };
        let (btx, mut inbound) = match stream.await {
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
        let reader_pending = pending.clone();
        let mut reader = tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        for r in batch.replies {
                            let tx = reader_pending
                                .lock()
                                .expect("pending lock poisoned")
                                .remove(&r.id);
                            if let Some(tx) = tx {
                                let res = match r.result {
                                    Some(raft_reply::Result::Payload(p)) => Ok(p),
                                    Some(raft_reply::Result::Unreachable(e)) => {
                                        Err(Failure::Unreachable(e))
                                    }
                                    Some(raft_reply::Result::NotHosted(e)) => {
                                        Err(Failure::NotHosted(e))
                                    }
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
        });
        let why = loop {
            let first = tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => o,
                    None => break "link closed".to_string(),
                },
                r = &mut reader => break r.unwrap_or_else(|e| e.to_string()),
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(o) => batch.push(o),
                    Err(_) => break,
                }
            }
            let messages: Vec<RaftMessage> = {
                let mut p = pending.lock().expect("pending lock poisoned");
                batch
                    .into_iter()
                    .map(|o| {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        p.insert(id, o.reply);
                        RaftMessage {
                            id,
                            group: o.group,
                            kind: o.kind as i32,
                            payload: o.payload,
                        }
                    })
                    .collect()
            };
            if btx
                .send(RaftBatch {
                    from_node: me,
                    to_node: target,
                    messages,
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

/// Makes openraft's per-(group, peer) clients.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    pub group: u64,
    pub transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupConn;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupConn {
        GroupConn {
            group: self.group,
            target,
            link: self.transport.link(target, node),
        }
    }
}

/// openraft's client for one group and one peer.
pub struct GroupConn {
    group: u64,
    target: NodeId,
    link: Arc<PeerLink>,
}

impl GroupConn {
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
        let payload =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = match self
            .link
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
        self.rpc(RaftKind::AppendEntries, &rpc, &option).await
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
        self.rpc(RaftKind::Vote, &rpc, &option).await
    }
}
