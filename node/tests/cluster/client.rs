//! A small client of the nodes' internal API, for tests only (the real SDK comes later).
//!
//! It sends each call to one node, follows `NOT_LEADER` leader hints, and otherwise moves on
//! to the next node, pausing briefly after each round of all nodes, until its deadline; any
//! other stable code ends the call. Retrying writes is safe because they are idempotent: an append carries its
//! `client_msg_id`, and creating a conversation that exists with the same kind and creator is
//! a success.
//!
//! [`ShardWriters`] puts a continuous write load on every shard and checks afterwards that
//! nothing acknowledged was lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    write_reply, write_request, AppendMessage, Appended, CreateConversation, ReadReply,
    ReadRequest, WriteReply, WriteRequest,
};
use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, UserId};
use bongsu_proto::v1;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};

const CODE_KEY: &str = "bongsu-code";
const LEADER_ADDR_KEY: &str = "bongsu-leader-addr";
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
            let ep = Endpoint::from_shared(format!("http://{api_addr}"))?
                .connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(2))
                .tcp_nodelay(true);
            out.push(Entry {
                id,
                api_addr,
                api: NodeApiClient::new(ep.connect_lazy()),
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

/// One acknowledged append of a [`ShardWriters`] writer.
#[derive(Debug, Clone)]
pub struct Ack {
    pub cmid: ClientMsgId,
    pub seq: u64,
    pub duplicate: bool,
    pub body: String,
    pub at: Instant,
    pub node: u64,
    /// Nodes asked before one acknowledged it (1: the first).
    pub attempts: u32,
}

/// What one shard's writer has seen.
#[derive(Debug, Default, Clone)]
pub struct WriteHistory {
    pub acks: Vec<Ack>,
    /// Writes that got no answer before the client's deadline (their fate is unknown).
    pub unanswered: Vec<String>,
    /// Answers that were not a successful append.
    pub errors: Vec<String>,
}

impl WriteHistory {
    /// The longest time between two consecutive acknowledgements.
    pub fn max_gap(&self) -> Duration {
        self.acks
            .windows(2)
            .map(|p| p[1].at - p[0].at)
            .max()
            .unwrap_or_default()
    }
}

struct ShardWriter {
    shard: u32,
    conv: ConvId,
    history: Arc<Mutex<WriteHistory>>,
    task: tokio::task::JoinHandle<()>,
}

/// What [`ShardWriters::verify`] found.
#[derive(Debug, Default)]
pub struct WriteSummary {
    pub acked: usize,
    /// Acknowledged writes that took more than one node (hints followed or retries).
    pub retried: usize,
    /// Acknowledged as duplicates of an earlier attempt of the same send.
    pub duplicates: usize,
    /// Acknowledged appends missing or altered when read back.
    pub lost: usize,
    /// The worst shard's longest time between consecutive acknowledgements.
    pub max_gap: Duration,
    pub max_gap_shard: u32,
    /// Everything wrong, one line each: lost or altered messages, seqs that are not dense,
    /// writes that failed or went unanswered.
    pub problems: Vec<String>,
}

const WRITER_SENDER: u128 = 0x5717_0001;
const WRITER_READER: u128 = 0x5717_0002;

/// A continuous write load: one conversation per shard, each with a writer that appends one
/// message at a time until stopped, sending each write first to the node that answered the
/// previous one (as a gateway with a leader cache would).
pub struct ShardWriters {
    client: Arc<TestClient>,
    stop: Arc<AtomicBool>,
    writers: Vec<ShardWriter>,
}

impl ShardWriters {
    /// Creates a conversation on each of `shards` shards (ids from `base`) and starts writing.
    pub async fn start(client: Arc<TestClient>, shards: u32, base: u128) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for shard in 0..shards {
            let conv = crate::conv_on_shard(shard, shards, base);
            let req = create(
                conv,
                v1::ConversationKind::Group,
                UserId::from_u128(WRITER_SENDER),
                &[UserId::from_u128(WRITER_READER)],
            );
            let r = client
                .write(req, None)
                .await
                .map_err(|f| anyhow::anyhow!("create the conversation of shard {shard}: {f}"))?;
            anyhow::ensure!(
                r.reply.shard == shard,
                "the conversation for shard {shard} went to shard {}",
                r.reply.shard
            );
            let history = Arc::new(Mutex::new(WriteHistory::default()));
            let task = tokio::spawn(shard_write_loop(
                client.clone(),
                shard,
                conv,
                stop.clone(),
                history.clone(),
            ));
            writers.push(ShardWriter {
                shard,
                conv,
                history,
                task,
            });
        }
        Ok(Self {
            client,
            stop,
            writers,
        })
    }

    /// Acknowledged writes so far, per shard.
    pub fn ack_counts(&self) -> Vec<usize> {
        self.writers
            .iter()
            .map(|w| w.history.lock().expect("history lock").acks.len())
            .collect()
    }

    /// Waits until every shard has acknowledged a write since this call.
    pub async fn wait_all_writing(&self, timeout: Duration) -> anyhow::Result<()> {
        let before = self.ack_counts();
        let deadline = Instant::now() + timeout;
        while self
            .ack_counts()
            .iter()
            .zip(&before)
            .any(|(now, then)| now <= then)
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "shards not writing within {timeout:?}: {before:?} -> {:?}",
                self.ack_counts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the writers after their current write.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let grace = self.client.deadline + Duration::from_secs(5);
        for w in &mut self.writers {
            if tokio::time::timeout(grace, &mut w.task).await.is_err() {
                w.task.abort();
            }
        }
    }

    /// Reads every conversation back in full (after [`ShardWriters::stop`]) and checks it
    /// against its writer's acknowledgements: seqs dense from 1, every acknowledged append
    /// stored at its seq with its body, no client message id stored twice, acknowledged seqs
    /// increasing, and no write that failed or went unanswered.
    pub async fn verify(&self) -> anyhow::Result<WriteSummary> {
        let mut sum = WriteSummary::default();
        for w in &self.writers {
            let h = w.history.lock().expect("history lock").clone();
            sum.problems.extend(
                h.errors
                    .iter()
                    .map(|e| format!("shard {}: failed {e}", w.shard)),
            );
            sum.problems.extend(
                h.unanswered
                    .iter()
                    .map(|e| format!("shard {}: unanswered {e}", w.shard)),
            );
            sum.acked += h.acks.len();
            sum.retried += h.acks.iter().filter(|a| a.attempts > 1).count();
            sum.duplicates += h.acks.iter().filter(|a| a.duplicate).count();
            let gap = h.max_gap();
            if gap >= sum.max_gap {
                (sum.max_gap, sum.max_gap_shard) = (gap, w.shard);
            }
            let msgs = self
                .client
                .read_all(w.conv, UserId::from_u128(WRITER_READER), None)
                .await
                .map_err(|f| anyhow::anyhow!("read the conversation of shard {}: {f}", w.shard))?;
            sum.problems
                .extend(check_history(w.shard, &msgs, &h.acks, &mut sum.lost));
        }
        Ok(sum)
    }
}

impl Drop for ShardWriters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.writers {
            w.task.abort();
        }
    }
}

async fn shard_write_loop(
    client: Arc<TestClient>,
    shard: u32,
    conv: ConvId,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<WriteHistory>>,
) {
    let sender = UserId::from_u128(WRITER_SENDER);
    let mut prefer = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cmid = ClientMsgId::from_u128(((shard as u128 + 1) << 96) | n as u128);
        let body = format!("shard {shard} message {n}");
        let r = client
            .write(append(conv, sender, cmid, &body), prefer)
            .await;
        let at = Instant::now();
        let mut h = history.lock().expect("history lock");
        match r {
            Ok(a) => match appended(&a.reply) {
                Some(ap) => {
                    prefer = Some(a.node);
                    h.acks.push(Ack {
                        cmid,
                        seq: ap.seq,
                        duplicate: ap.duplicate,
                        body,
                        at,
                        node: a.node,
                        attempts: a.attempts,
                    });
                }
                None => h
                    .errors
                    .push(format!("message {n}: unexpected reply {:?}", a.reply)),
            },
            Err(f) if f.gave_up => h.unanswered.push(format!("message {n}: {f}")),
            Err(f) => h.errors.push(format!("message {n}: {f}")),
        }
    }
}

/// Checks one conversation against its writer's acknowledgements; adds the acknowledged
/// appends missing or altered to `lost` and returns every problem found.
fn check_history(shard: u32, msgs: &[v1::Message], acks: &[Ack], lost: &mut usize) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((i, m)) = msgs
        .iter()
        .enumerate()
        .find(|(i, m)| m.seq != *i as u64 + 1)
    {
        problems.push(format!(
            "shard {shard}: message {i} has seq {} (not dense)",
            m.seq
        ));
    }
    let mut by_cmid: HashMap<&[u8], &v1::Message> = HashMap::new();
    for m in msgs {
        if let Some(first) = by_cmid.insert(m.client_msg_id.as_slice(), m) {
            problems.push(format!(
                "shard {shard}: client_msg_id stored twice, at seqs {} and {}",
                first.seq, m.seq
            ));
        }
    }
    for a in acks {
        match by_cmid.get(a.cmid.0.as_slice()) {
            Some(m) if m.seq == a.seq && m.body == a.body.as_bytes() => {}
            Some(m) => {
                *lost += 1;
                problems.push(format!(
                    "shard {shard}: acked {:?} at seq {} (node {}), stored at seq {} with body {:?}",
                    a.body,
                    a.seq,
                    a.node,
                    m.seq,
                    String::from_utf8_lossy(&m.body)
                ));
            }
            None => {
                *lost += 1;
                problems.push(format!(
                    "shard {shard}: acked {:?} at seq {} (node {}) is missing",
                    a.body, a.seq, a.node
                ));
            }
        }
    }
    for pair in acks.windows(2) {
        if pair[1].seq <= pair[0].seq {
            problems.push(format!(
                "shard {shard}: acked seqs go back: {} then {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }
    problems
}
