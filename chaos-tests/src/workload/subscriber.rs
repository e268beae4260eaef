//! Subscribers: one per shard, following the shard's applied messages through the node API's
//! `Subscribe` stream, as a gateway pushing live messages to devices would. When its stream
//! breaks or falls silent it resumes on another replica after the last Raft log index it saw,
//! so a failover must neither skip nor repeat a message.
//!
//! What a subscriber was delivered is recorded as reads: per conversation, each run of
//! deliveries is one successful read whose `from_seq` is the seq the subscriber expected next.
//! The checkers then hold push to the same rules as reads: dense seqs from the expected one
//! (no gap, no repeat), in the final log at the same seq, nothing that vanishes.
//!
//! This follows shards, which only the node API offers; a gateway client would subscribe per
//! device and resume by seq instead, and would replace this module rather than implement the
//! [`ChatClient`](super::ChatClient) trait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::SubscribeRequest;
use tonic::transport::Channel;

use super::Recorder;
use crate::history::{Ms, OpKind, Outcome, Seen};
use bongsu_testkit::chat::{node_api, seen};

/// A stream with no delivery for this long is given up for another replica (the workload
/// writes to every shard many times a second).
const IDLE: Duration = Duration::from_millis(1500);
/// How often deliveries are recorded.
const FLUSH: Duration = Duration::from_millis(500);

pub struct Subscriber {
    pub shard: u32,
    /// The user id the recorded reads carry.
    pub user: u128,
    pub client_no: u32,
    nodes: Vec<(u64, NodeApiClient<Channel>)>,
}

impl Subscriber {
    pub fn new(
        shard: u32,
        user: u128,
        client_no: u32,
        nodes: &[(u64, String)],
    ) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for (id, addr) in nodes {
            out.push((*id, node_api(addr)?));
        }
        anyhow::ensure!(!out.is_empty(), "a subscriber needs at least one node");
        Ok(Self {
            shard,
            user,
            client_no,
            nodes: out,
        })
    }

    /// Follows the shard until `stop`.
    pub async fn run(self, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
        let mut after: u64 = 0;
        let mut next: BTreeMap<u128, u64> = BTreeMap::new();
        let mut batch = Batch::default();
        let mut at = self.shard as usize % self.nodes.len();
        while !stop.load(Ordering::Relaxed) {
            let mut api = self.nodes[at].1.clone();
            let req = SubscribeRequest {
                shard: self.shard,
                after_index: after,
                from_latest: false,
            };
            let stream =
                match tokio::time::timeout(Duration::from_secs(1), api.subscribe(req)).await {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    // Not hosted here, not reachable, or no answer: try the next node.
                    _ => None,
                };
            if let Some(mut stream) = stream {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let ev = match tokio::time::timeout(IDLE, stream.message()).await {
                        Ok(Ok(Some(ev))) => ev,
                        _ => break,
                    };
                    let Some(m) = ev.message else { continue };
                    after = after.max(ev.log_index);
                    let conv = <[u8; 16]>::try_from(m.conv_id.as_slice())
                        .map(u128::from_be_bytes)
                        .unwrap_or(u128::MAX);
                    let s = seen(&m);
                    let expected = next.entry(conv).or_insert(1);
                    batch.add(conv, *expected, s, rec.now());
                    *expected = s.seq + 1;
                    if batch.age(rec.now()) >= FLUSH.as_millis() as Ms {
                        batch.flush(&self, &rec);
                    }
                }
                batch.flush(&self, &rec);
            }
            at = (at + 1) % self.nodes.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        batch.flush(&self, &rec);
    }
}

/// Deliveries not yet recorded: per conversation, the seq expected at the start of the run,
/// the messages, and when the first arrived.
#[derive(Default)]
struct Batch {
    runs: BTreeMap<u128, (u64, Vec<Seen>, Ms)>,
    started: Option<Ms>,
}

impl Batch {
    fn add(&mut self, conv: u128, expected: u64, m: Seen, now: Ms) {
        self.started.get_or_insert(now);
        self.runs
            .entry(conv)
            .or_insert_with(|| (expected, Vec::new(), now))
            .1
            .push(m);
    }

    fn age(&self, now: Ms) -> Ms {
        self.started.map_or(0, |s| now.saturating_sub(s))
    }

    fn flush(&mut self, sub: &Subscriber, rec: &Recorder) {
        let now = rec.now();
        for (conv, (from_seq, messages, first)) in std::mem::take(&mut self.runs) {
            let kind = OpKind::Read {
                conv,
                shard: sub.shard,
                reader: sub.user,
                member: true,
                from_seq,
            };
            rec.record(
                sub.client_no,
                first,
                Some(now),
                kind,
                Outcome::ReadOk { messages },
                None,
            );
        }
        self.started = None;
    }
}
