//! A small client of the nodes' internal API for the cluster tests: one attempt at a time, so
//! that a test can tell which node answered and how many it asked.
//!
//! It sends each call to one node, follows `NOT_LEADER` leader hints, and otherwise moves on
//! to the next node, pausing briefly after each round of all nodes, until its deadline; any
//! other stable code ends the call. Retrying writes is safe because they are idempotent: an append carries its
//! `client_msg_id`, and creating a conversation that exists with the same kind and creator is
//! a success.
//! (The chaos workload's client, [`crate::chat::NodeClient`], runs attempts side by side
//! instead, and keeps a leader cache per shard.)

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    write_reply, write_request, AppendMessage, Appended, CreateConversation, ReadReply,
    ReadRequest, WriteReply, WriteRequest,
};
use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, UserId, CODE_KEY, LEADER_ADDR_KEY};
use bongsu_proto::tls::{Role, Security};
use bongsu_proto::v1;
use rand::Rng;
use tonic::transport::Channel;

/// Following hints without a pause is bounded so that two nodes pointing at each other (a
/// stale hint) cannot make the client spin.
const MAX_HINT_HOPS: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// A successful call and who answered it.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub reply: T,
    /// The node that answered (the shard's leader for writes and reads).
    pub node: u64,
    /// How many nodes were asked, this one included.
    pub attempts: u32,
}

/// A call that failed for good: a stable code other than `NOT_LEADER`/`UNAVAILABLE`, or the
/// last error seen when the deadline passed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The node's stable code (`NOT_MEMBER`, ...), or `TRANSPORT(<grpc code>)` when the call
    /// never reached a node's handler.
    pub code: String,
    pub message: String,
    pub node: u64,
    pub attempts: u32,
    pub gave_up: bool,
    /// The leader's internal API address, when the last answer was `NOT_LEADER` with a hint.
    pub leader_hint: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from node {} after {} attempts",
            self.code, self.node, self.attempts
        )?;
        if self.gave_up {
            write!(f, " (deadline passed)")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Failure {}

struct Entry {
    id: u64,
    api_addr: String,
    api: NodeApiClient<Channel>,
}

pub struct TestClient {
    nodes: Vec<Entry>,
    /// How long one call keeps retrying.
    pub deadline: Duration,
}

impl TestClient {
    pub fn new(nodes: Vec<(u64, String)>) -> Result<Self> {
        let mut out = Vec::new();
        for (id, api_addr) in nodes {
            let ep = Security::endpoint(&api_addr)?
                .connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(2))
                .tcp_nodelay(true);
            let channel = crate::pki::gateway().channel(ep, &Role::Node(id).server_name());
            out.push(Entry {
                id,
                api_addr,
                api: NodeApiClient::new(channel),
            });
        }
        Ok(Self {
            nodes: out,
            deadline: Duration::from_secs(5),
        })
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|e| e.id).collect()
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|e| e.id == id)
    }

    /// Applies a write; `first` is the node to try first (a random one when `None`).
    pub async fn write(
        &self,
        req: WriteRequest,
        first: Option<u64>,
    ) -> Result<Answer<WriteReply>, Failure> {
        self.call(
            first,
            req,
            |mut api, req| async move { api.write(req).await },
        )
        .await
    }

    /// A linearizable read on the conversation's shard leader.
    pub async fn read(
        &self,
        req: ReadRequest,
        first: Option<u64>,
    ) -> Result<Answer<ReadReply>, Failure> {
        self.call(
            first,
            req,
            |mut api, req| async move { api.read(req).await },
        )
        .await
    }

    /// Every message of a conversation, page by page.
    pub async fn read_all(
        &self,
        conv: ConvId,
        user: UserId,
        first: Option<u64>,
    ) -> Result<Vec<v1::Message>, Failure> {
        let mut out: Vec<v1::Message> = Vec::new();
        loop {
            let from_seq = out.last().map(|m| m.seq + 1).unwrap_or(1);
            let req = ReadRequest {
                conv_id: conv.0.to_vec(),
                user: user.0.to_vec(),
                from_seq,
                before_seq: 0,
                limit: 1000,
            };
            let page = self.read(req, first).await?.reply;
            let done = page.messages.is_empty()
                || page.messages.last().is_some_and(|m| m.seq >= page.last_seq);
            out.extend(page.messages);
            if done {
                return Ok(out);
            }
        }
    }

    /// Any call, sent like writes and reads are: hints followed, retried until the deadline.
    pub async fn call<Req, Rep, F, Fut>(
        &self,
        first: Option<u64>,
        req: Req,
        f: F,
    ) -> Result<Answer<Rep>, Failure>
    where
        Req: Clone,
        F: Fn(NodeApiClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Rep>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut at = first
            .and_then(|id| self.index_of(id))
            .unwrap_or_else(|| rand::rng().random_range(0..self.nodes.len()));
        let mut attempts = 0;
        let mut hops = 0;
        // Nodes asked since the last pause: the client pauses once per round of every node, so
        // that it finds a new leader quickly even where most nodes do not host the shard.
        let mut round = 0;
        let mut backoff = BACKOFF_MIN;
        loop {
            attempts += 1;
            let entry = &self.nodes[at];
            let status = match f(entry.api.clone(), req.clone()).await {
                Ok(r) => {
                    return Ok(Answer {
                        reply: r.into_inner(),
                        node: entry.id,
                        attempts,
                    })
                }
                Err(s) => s,
            };
            let code = status
                .metadata()
                .get(CODE_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let hint_addr = status
                .metadata()
                .get(LEADER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry = matches!(
                code.as_deref(),
                None | Some("NOT_LEADER") | Some("UNAVAILABLE")
            );
            let gave_up = retry && started.elapsed() >= self.deadline;
            if !retry || gave_up {
                return Err(Failure {
                    code: code.unwrap_or_else(|| format!("TRANSPORT({:?})", status.code())),
                    message: status.message().to_string(),
                    node: entry.id,
                    attempts,
                    gave_up,
                    leader_hint: hint_addr,
                });
            }
            let hint =
                hint_addr.and_then(|addr| self.nodes.iter().position(|e| e.api_addr == addr));
            match hint {
                Some(h) if h != at && hops < MAX_HINT_HOPS => {
                    hops += 1;
                    at = h;
                }
                _ => {
                    hops = 0;
                    round += 1;
                    at = (at + 1) % self.nodes.len();
                    if round >= self.nodes.len() {
                        round = 0;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }
}

/// The appended seq and duplicate flag of a write reply, if it was an append.
pub fn appended(reply: &WriteReply) -> Option<Appended> {
    match &reply.result {
        Some(write_reply::Result::Appended(a)) => Some(*a),
        _ => None,
    }
}

pub fn create(
    conv: ConvId,
    kind: v1::ConversationKind,
    creator: UserId,
    members: &[UserId],
) -> WriteRequest {
    WriteRequest {
        command: Some(write_request::Command::Create(CreateConversation {
            conv_id: conv.0.to_vec(),
            kind: kind as i32,
            creator: creator.0.to_vec(),
            members: members.iter().map(|u| u.0.to_vec()).collect(),
        })),
    }
}

pub fn append(
    conv: ConvId,
    sender: UserId,
    client_msg_id: ClientMsgId,
    body: &str,
) -> WriteRequest {
    WriteRequest {
        command: Some(write_request::Command::Append(AppendMessage {
            conv_id: conv.0.to_vec(),
            sender: sender.0.to_vec(),
            device: DeviceId::from_u128(u128::from_be_bytes(sender.0) ^ 0xd)
                .0
                .to_vec(),
            client_msg_id: client_msg_id.0.to_vec(),
            kind: v1::MessageKind::Text as i32,
            body: body.as_bytes().to_vec(),
        })),
    }
}

pub fn read_from(conv: ConvId, user: UserId, from_seq: u64, limit: u32) -> ReadRequest {
    ReadRequest {
        conv_id: conv.0.to_vec(),
        user: user.0.to_vec(),
        from_seq,
        before_seq: 0,
        limit,
    }
}
