//! The receiving side: hands each RPC of a batch to its group and streams replies back.

use std::sync::Arc;

use bongsu_proto::internal::raft_transport_server::RaftTransport;
use bongsu_proto::internal::{
    raft_reply, PingReply, PingRequest, RaftBatch, RaftKind, RaftMessage, RaftReply, RaftReplyBatch,
};
use bongsu_raft_store::version::FRAME_FORMAT;
use bongsu_raft_store::{NodeId, TypeConfig};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::Raft;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the transport server needs from the node.
pub trait RaftHost: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    fn dc(&self) -> &str;
    fn raft(&self, group: u64) -> Option<Raft<TypeConfig>>;
    /// Called for every frame and ping from a peer: it is alive.
    fn heard_from(&self, node: NodeId);
    /// Called for every frame and ping a peer sent us (not for our pings it answered): it
    /// can reach us.
    fn contacted_by(&self, node: NodeId);
    /// The datacenter of a node, if known.
    fn dc_of(&self, node: NodeId) -> Option<String>;
    fn faults(&self) -> &crate::faults::Faults;
    /// The transport's counters (bytes received are counted here).
    fn transport_stats(&self) -> &super::client::TransportStats;
    /// `Some(why)` while this node must answer no Raft traffic: its data directory was never
    /// admitted to a cluster (ARCHITECTURE.md invariant 8).
    fn raft_refusal(&self, from: NodeId) -> Option<String>;
}

/// Whether the fault rules let traffic from `node` in.
async fn admitted<H: RaftHost>(host: &H, node: NodeId) -> bool {
    if host.faults().is_empty() {
        return true;
    }
    match host.dc_of(node) {
        Some(dc) => host.faults().pass(&dc, false).await,
        None => true,
    }
}

pub struct RaftService<H> {
    host: Arc<H>,
}

impl<H: RaftHost> RaftService<H> {
    pub fn new(host: Arc<H>) -> Self {
        Self { host }
    }
}

async fn handle<H: RaftHost>(host: &H, from: NodeId, m: RaftMessage) -> RaftReply {
    let result = match host.raft(m.group) {
        None => raft_reply::Result::NotHosted(format!(
            "group {} is not hosted on node {} yet",
            m.group,
            host.node_id()
        )),
        Some(raft) => match dispatch(&raft, from, m.kind, &m.payload).await {
            Ok(bytes) => raft_reply::Result::Payload(bytes),
            Err(e) => raft_reply::Result::Unreachable(e),
        },
    };
    RaftReply {
        id: m.id,
        result: Some(result),
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    postcard::from_bytes(payload).map_err(|e| format!("undecodable raft payload: {e}"))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| format!("unencodable raft reply: {e}"))
}

/// Refuses a request whose vote names another node than the one that sent it: a node leads
/// and campaigns only as itself (its certificate proved `from`).
fn check_sender(vote: &openraft::Vote<NodeId>, from: NodeId) -> Result<(), String> {
    match vote.leader_id().voted_for() {
        Some(id) if id == from => Ok(()),
        other => Err(format!(
            "node {from} sent a request in the name of {other:?}: refused"
        )),
    }
}

async fn dispatch(
    raft: &Raft<TypeConfig>,
    from: NodeId,
    kind: i32,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    match RaftKind::try_from(kind) {
        Ok(RaftKind::AppendEntries) => {
            let req: AppendEntriesRequest<TypeConfig> = decode(payload)?;
            check_sender(&req.vote, from)?;
            encode(&raft.append_entries(req).await)
        }
        Ok(RaftKind::Vote) => {
            let req: VoteRequest<NodeId> = decode(payload)?;
            check_sender(&req.vote, from)?;
            encode(&raft.vote(req).await)
        }
        Ok(RaftKind::InstallSnapshot) => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(payload)?;
            check_sender(&req.vote, from)?;
            encode(&raft.install_snapshot(req).await)
        }
        _ => Err(format!("unknown raft message kind {kind}")),
    }
}

/// Why a frame of `format` is refused: one from a newer release may carry payloads this one
/// would misread. Release 1 sent no format (0); this release reads it and its own.
fn frame_refusal(format: u32, from: u64) -> Option<String> {
    (format > FRAME_FORMAT).then(|| {
        let why = format!(
            "node {from} sends transport format {format}; this release reads up to {FRAME_FORMAT}: upgrade this node"
        );
        tracing::warn!("{why}");
        why
    })
}

#[tonic::async_trait]
impl<H: RaftHost> RaftTransport for RaftService<H> {
    type ExchangeStream = ReceiverStream<Result<RaftReplyBatch, Status>>;

    async fn exchange(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        // The node the caller's certificate names: every frame must come from it.
        let peer = crate::links::peer_node(&req)?;
        let mut inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel(64);
        let refuse_tx = out_tx.clone();
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<RaftReply>();
        // Batch replies the same way requests are batched.
        tokio::spawn(async move {
            while let Some(first) = reply_rx.recv().await {
                let mut replies = vec![first];
                while let Ok(r) = reply_rx.try_recv() {
                    replies.push(r);
                }
                let batch = RaftReplyBatch {
                    replies,
                    format: FRAME_FORMAT,
                };
                if out_tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        });
        let host = self.host.clone();
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) | Err(_) => return,
                };
                if let Some(peer) = peer.filter(|p| *p != batch.from_node) {
                    tracing::warn!(
                        peer,
                        claimed = batch.from_node,
                        "raft frames in another node's name: stream refused"
                    );
                    let _ = refuse_tx
                        .send(Err(crate::links::check_claim_status(peer, batch.from_node)))
                        .await;
                    return;
                }
                if batch.to_node != host.node_id() {
                    // A peer with a stale address book: answer nothing it could mistake for ours.
                    for m in batch.messages {
                        let _ = reply_tx.send(RaftReply {
                            id: m.id,
                            result: Some(raft_reply::Result::Unreachable(format!(
                                "this is node {}, not node {}",
                                host.node_id(),
                                batch.to_node
                            ))),
                        });
                    }
                    continue;
                }
                if !admitted(host.as_ref(), batch.from_node).await {
                    continue; // lost in the (simulated) partition: the sender times out
                }
                if let Some(why) = frame_refusal(batch.format, batch.from_node) {
                    for m in batch.messages {
                        let _ = reply_tx.send(RaftReply {
                            id: m.id,
                            result: Some(raft_reply::Result::Unreachable(why.clone())),
                        });
                    }
                    continue;
                }
                if let Some(why) = host.raft_refusal(batch.from_node) {
                    for m in batch.messages {
                        let _ = reply_tx.send(RaftReply {
                            id: m.id,
                            result: Some(raft_reply::Result::Unreachable(why.clone())),
                        });
                    }
                    continue;
                }
                host.heard_from(batch.from_node);
                host.contacted_by(batch.from_node);
                let appended: usize = batch
                    .messages
                    .iter()
                    .filter(|m| m.kind == RaftKind::AppendEntries as i32)
                    .map(|m| m.payload.len())
                    .sum();
                host.transport_stats()
                    .append_bytes_received
                    .fetch_add(appended as u64, std::sync::atomic::Ordering::Relaxed);
                let from = batch.from_node;
                for m in batch.messages {
                    let host = host.clone();
                    let reply_tx = reply_tx.clone();
                    tokio::spawn(async move {
                        let _ = reply_tx.send(handle(host.as_ref(), from, m).await);
                    });
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        crate::links::check_claim(&req, req.get_ref().from_node)?;
        let req = req.into_inner();
        if req.to_node != 0 && req.to_node != self.host.node_id() {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not {}",
                self.host.node_id(),
                req.to_node
            )));
        }
        if !admitted(self.host.as_ref(), req.from_node).await {
            return Err(Status::unavailable("dropped by a fault rule"));
        }
        self.host.heard_from(req.from_node);
        self.host.contacted_by(req.from_node);
        Ok(Response::new(PingReply {
            node_id: self.host.node_id(),
            dc: self.host.dc().to_string(),
        }))
    }
}
