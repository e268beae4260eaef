//! The chaos workload's client: the three calls a chat client makes (create a group, send,
//! read), behind the [`ChatClient`] trait so that a gateway client can replace [`NodeClient`]
//! without touching the workload or the scenarios.
//!
//! [`NodeClient`] talks to the nodes' internal API the way a gateway would: it keeps a leader
//! cache per shard shared by every workload task, follows `NOT_LEADER` hints, starts another
//! attempt on the next node when one does not answer within a per-attempt timeout (keeping the
//! first one), and retries until the call's deadline. Retrying a send is safe: sends are
//! idempotent by client message id.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    write_reply, write_request, AppendMessage, CreateConversation, ReadRequest, WriteRequest,
};
use bongsu_proto::model::{
    shard_of, ClientMsgId, ConvId, DeviceId, UserId, CODE_KEY, LEADER_ID_KEY,
};
use bongsu_proto::tls::{Role, Security};
use bongsu_proto::v1;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use tonic::transport::Channel;

use crate::history::Seen;

/// Hints followed in a row without a pause, so that two nodes naming each other (stale
/// hints) cannot make the client spin.
const MAX_HINT_HOPS: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(80);
/// Attempts of one call running at once (see [`NodeClient::call`]).
const MAX_IN_FLIGHT: usize = 3;
/// The largest answer a client takes from a node: a page of 1000 messages of the largest
/// body (64 KiB) fits, as for the gateway. tonic's default (4 MiB) would refuse a page of a
/// few dozen large bodies.
pub const MAX_DECODE: usize = 128 * 1024 * 1024;

/// A message to send.
#[derive(Clone, Debug)]
pub struct OutMsg {
    pub conv: u128,
    pub sender: u128,
    pub device: u128,
    pub client_msg_id: u128,
    pub body: Vec<u8>,
}

/// An acknowledged send.
#[derive(Clone, Copy, Debug)]
pub struct SendAck {
    pub seq: u64,
    pub duplicate: bool,
    /// The node that acknowledged it.
    pub node: u64,
}

/// One page of a conversation.
#[derive(Clone, Debug)]
pub struct ReadPage {
    pub messages: Vec<Seen>,
    pub last_seq: u64,
}

/// A call that did not succeed.
#[derive(Clone, Debug)]
pub struct CallError {
    /// The stable code of the last answer (`NOT_MEMBER`, `UNAVAILABLE`, …), `TIMEOUT` when the
    /// last attempt got no answer, or `TRANSPORT(<grpc code>)` when it never reached a handler.
    pub code: String,
    pub message: String,
    /// The deadline passed while the client was still retrying.
    pub gave_up: bool,
    /// Whether some attempt may have been applied (it went unanswered, or failed in a way that
    /// does not rule it out). A send that fails this way is a timeout: its fate is unknown.
    pub maybe_applied: bool,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if self.gave_up {
            write!(f, " (deadline passed)")?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

/// What the workload needs from a messaging client. Every call retries internally until its
/// own deadline and then gives up with a [`CallError`].
pub trait ChatClient: Send + Sync + 'static {
    /// Creates a group conversation; creating one that exists the same way succeeds.
    fn create_group(
        &self,
        conv: u128,
        creator: u128,
        members: &[u128],
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    fn send(&self, msg: &OutMsg) -> impl Future<Output = Result<SendAck, CallError>> + Send;
    /// Messages of `conv` with seq >= `from_seq`, at most `limit`, read linearizably as `reader`.
    fn read(
        &self,
        conv: u128,
        reader: u128,
        from_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<ReadPage, CallError>> + Send;
}

/// A lazily connected client of a node's internal API at `addr` (`ip:port`), as the
/// workload uses it: keep-alive pings notice a node that is gone within a second or two,
/// and answers may be as large as [`MAX_DECODE`].
pub fn node_api(addr: &str) -> anyhow::Result<NodeApiClient<Channel>> {
    let ep = Security::endpoint(addr)?
        .connect_timeout(Duration::from_millis(250))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1));
    let channel = crate::pki::gateway().channel(ep, &Role::any_node());
    Ok(NodeApiClient::new(channel).max_decoding_message_size(MAX_DECODE))
}

/// The CRC-32 of a body, as the history records it.
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// A message as the history records it.
pub fn seen(m: &v1::Message) -> Seen {
    Seen {
        seq: m.seq,
        sender: id128(&m.sender),
        client_msg_id: id128(&m.client_msg_id),
        body_crc: body_crc(&m.body),
    }
}

fn id128(b: &[u8]) -> u128 {
    // Ids on the wire are 16 bytes; a malformed one (which the checkers will then report as a
    // different message) must not stop the run.
    <[u8; 16]>::try_from(b)
        .map(u128::from_be_bytes)
        .unwrap_or(u128::MAX)
}

struct Node {
    id: u64,
    api: NodeApiClient<Channel>,
}

/// A [`ChatClient`] over the nodes' internal API (see the module docs).
pub struct NodeClient {
    nodes: Vec<Node>,
    shards: u32,
    /// Shard → index into `nodes` of the node that last answered for it.
    leaders: Mutex<HashMap<u32, usize>>,
    deadline: Duration,
    attempt_timeout: Duration,
}

impl NodeClient {
    /// A client of the nodes `(id, internal API address)` of a cluster of `shards` shards; each
    /// call retries for up to `deadline`, and starts another attempt when one has not answered
    /// within `attempt_timeout`. Without a hint the client moves on to the next node in the
    /// given order, so an order that alternates datacenters gets away from a lost one fastest.
    pub fn new(
        nodes: &[(u64, String)],
        shards: u32,
        deadline: Duration,
        attempt_timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!nodes.is_empty(), "a client needs at least one node");
        let mut out = Vec::new();
        for (id, addr) in nodes {
            out.push(Node {
                id: *id,
                api: node_api(addr)?,
            });
        }
        Ok(Self {
            nodes: out,
            shards,
            leaders: Mutex::new(HashMap::new()),
            deadline,
            attempt_timeout,
        })
    }

    pub fn shard_of(&self, conv: u128) -> u32 {
        shard_of(&conv.to_be_bytes(), self.shards)
    }

    fn cached(&self, shard: u32) -> Option<usize> {
        self.leaders
            .lock()
            .expect("leader cache lock")
            .get(&shard)
            .copied()
    }

    fn remember(&self, shard: u32, at: usize) {
        self.leaders
            .lock()
            .expect("leader cache lock")
            .insert(shard, at);
    }

    /// One call, retried until the deadline. An attempt that gets no answer within
    /// `attempt_timeout` is not abandoned: another attempt starts on the next node beside it
    /// (at most [`MAX_IN_FLIGHT`] at once), and the first answer wins. A leader that is cut off
    /// or paused is thus passed over quickly, while a slow but working one still answers.
    async fn call<Req, Rep, F, Fut>(
        &self,
        shard: u32,
        req: Req,
        f: F,
    ) -> Result<(Rep, u64), CallError>
    where
        Req: Clone,
        F: Fn(NodeApiClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Rep>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.deadline);
        let n = self.nodes.len();
        let mut target = self
            .cached(shard)
            .unwrap_or_else(|| rand::rng().random_range(0..n));
        let (mut hops, mut round, mut backoff) = (0, 0, BACKOFF_MIN);
        let mut maybe_applied = false;
        let mut last: Option<(String, String)> = None;
        let mut in_flight = FuturesUnordered::new();
        let mut busy: Vec<usize> = Vec::new();
        let mut next_launch = Some(tokio::time::Instant::now());
        loop {
            let launch = async {
                match next_launch {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let (code, message) = last.unwrap_or_else(|| ("TIMEOUT".into(), "no answer".into()));
                    // Attempts still in flight may yet be applied.
                    return Err(CallError { code, message, gave_up: true, maybe_applied: maybe_applied || !in_flight.is_empty() });
                }
                _ = launch, if in_flight.len() < MAX_IN_FLIGHT => {
                    // Never two attempts on one node: pick the next free one.
                    while busy.contains(&target) {
                        target = (target + 1) % n;
                    }
                    let at = target;
                    let node = &self.nodes[at];
                    busy.push(at);
                    let call = f(node.api.clone(), req.clone());
                    in_flight.push(async move { (at, call.await) });
                    // Unless an answer comes first, the next attempt starts on the next node
                    // after the attempt timeout.
                    target = (at + 1) % n;
                    next_launch = Some(tokio::time::Instant::now() + self.attempt_timeout);
                }
                Some((at, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    busy.retain(|b| *b != at);
                    let node = &self.nodes[at];
                    let status = match result {
                        Ok(rep) => {
                            self.remember(shard, at);
                            return Ok((rep.into_inner(), node.id));
                        }
                        Err(status) => status,
                    };
                    let md = status.metadata();
                    let code = md.get(CODE_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
                    let hint = md
                        .get(LEADER_ID_KEY)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .and_then(|id| self.nodes.iter().position(|e| e.id == id));
                    match code.as_deref() {
                        // The node refused without proposing anything.
                        Some("NOT_LEADER") => {}
                        // A leader's write failed after it may have been proposed, or the call
                        // broke off in transport.
                        Some("UNAVAILABLE") | None => maybe_applied = true,
                        Some(other) => {
                            return Err(CallError {
                                code: other.to_string(),
                                message: format!("node {}: {}", node.id, status.message()),
                                gave_up: false,
                                maybe_applied: maybe_applied || !in_flight.is_empty(),
                            })
                        }
                    }
                    let code = code.unwrap_or_else(|| format!("TRANSPORT({:?})", status.code()));
                    last = Some((code, format!("node {}: {}", node.id, status.message())));
                    let now = tokio::time::Instant::now();
                    match hint {
                        Some(h) if h != at && hops < MAX_HINT_HOPS && !busy.contains(&h) => {
                            hops += 1;
                            target = h;
                            next_launch = Some(now);
                        }
                        _ => {
                            hops = 0;
                            round += 1;
                            target = (at + 1) % n;
                            next_launch = Some(now);
                            if round >= n {
                                // A whole round without a leader: pause before the next.
                                round = 0;
                                next_launch = Some(now + backoff);
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl ChatClient for NodeClient {
    async fn create_group(
        &self,
        conv: u128,
        creator: u128,
        members: &[u128],
    ) -> Result<(), CallError> {
        let req = WriteRequest {
            command: Some(write_request::Command::Create(CreateConversation {
                conv_id: ConvId::from_u128(conv).0.to_vec(),
                kind: v1::ConversationKind::Group as i32,
                creator: UserId::from_u128(creator).0.to_vec(),
                members: members
                    .iter()
                    .map(|m| UserId::from_u128(*m).0.to_vec())
                    .collect(),
            })),
        };
        self.call(self.shard_of(conv), req, |mut api, req| async move {
            api.write(req).await
        })
        .await
        .map(|_| ())
    }

    async fn send(&self, msg: &OutMsg) -> Result<SendAck, CallError> {
        let req = WriteRequest {
            command: Some(write_request::Command::Append(AppendMessage {
                conv_id: ConvId::from_u128(msg.conv).0.to_vec(),
                sender: UserId::from_u128(msg.sender).0.to_vec(),
                device: DeviceId::from_u128(msg.device).0.to_vec(),
                client_msg_id: ClientMsgId::from_u128(msg.client_msg_id).0.to_vec(),
                kind: v1::MessageKind::Text as i32,
                body: msg.body.clone(),
            })),
        };
        let (reply, node) = self
            .call(self.shard_of(msg.conv), req, |mut api, req| async move {
                api.write(req).await
            })
            .await?;
        match reply.result {
            Some(write_reply::Result::Appended(a)) => Ok(SendAck {
                seq: a.seq,
                duplicate: a.duplicate,
                node,
            }),
            other => Err(CallError {
                code: "UNEXPECTED_REPLY".into(),
                message: format!("node {node} answered a send with {other:?}"),
                gave_up: false,
                maybe_applied: true,
            }),
        }
    }

    async fn read(
        &self,
        conv: u128,
        reader: u128,
        from_seq: u64,
        limit: u32,
    ) -> Result<ReadPage, CallError> {
        let req = ReadRequest {
            conv_id: ConvId::from_u128(conv).0.to_vec(),
            user: UserId::from_u128(reader).0.to_vec(),
            from_seq,
            before_seq: 0,
            limit,
        };
        let (reply, _) = self
            .call(self.shard_of(conv), req, |mut api, req| async move {
                api.read(req).await
            })
            .await?;
        Ok(ReadPage {
            messages: reply.messages.iter().map(seen).collect(),
            last_seq: reply.last_seq,
        })
    }
}
