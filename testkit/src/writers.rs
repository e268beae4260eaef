//! A continuous write load for the cluster tests, and its verdict.
//!
//! [`ShardWriters`] writes into one conversation per shard, each with a writer that appends one
//! message at a time until stopped, sending each write first to the node that answered the
//! previous one (as a gateway with a leader cache would). Afterwards every conversation is
//! read back in full and judged by the history checkers ([`crate::check`]), the same code that
//! judges a chaos run: nothing acknowledged lost, nothing stored twice, one order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bongsu_proto::model::{shard_of, ClientMsgId, ConvId, UserId};
use bongsu_proto::v1;

use crate::chat::{body_crc, seen};
use crate::check::{no_duplicate, no_lost_ack, same_order, Checker};
use crate::client::{append, appended, create, TestClient};
use crate::history::{FinalState, History, Ms, Op, OpKind, Outcome};

/// The user every writer sends as, and the member that reads the conversations back.
pub const SENDER: u128 = 0x5717_0001;
pub const READER: u128 = 0x5717_0002;

/// The properties a writer's conversation is judged by.
const CHECKERS: [Checker; 3] = [
    (no_lost_ack::PROPERTY, no_lost_ack::check),
    (no_duplicate::PROPERTY, no_duplicate::check),
    (same_order::PROPERTY, same_order::check),
];

/// The first conversation id at or after `base` that lives in `shard`.
pub fn conv_on_shard(shard: u32, shards: u32, base: u128) -> ConvId {
    (base..)
        .map(ConvId::from_u128)
        .find(|c| shard_of(&c.0, shards) == shard)
        .expect("FNV-1a reaches every shard within a few ids")
}

/// One acknowledged append.
#[derive(Debug, Clone)]
pub struct Ack {
    pub cmid: ClientMsgId,
    pub seq: u64,
    pub duplicate: bool,
    pub body: String,
    /// When the write was first sent, and when its acknowledgement arrived.
    pub sent: Instant,
    pub at: Instant,
    /// The node that acknowledged it.
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

pub struct ShardWriter {
    pub shard: u32,
    pub conv: ConvId,
    pub history: Arc<Mutex<WriteHistory>>,
    task: tokio::task::JoinHandle<()>,
}

impl ShardWriter {
    fn history(&self) -> WriteHistory {
        self.history.lock().expect("history lock").clone()
    }
}

/// What [`ShardWriters::verify`] found.
#[derive(Debug, Default)]
pub struct WriteSummary {
    pub acked: usize,
    /// Acknowledged writes that took more than one node (hints followed or retries).
    pub retried: usize,
    /// Acknowledged as duplicates of an earlier attempt of the same send.
    pub duplicates: usize,
    /// Writes that went unanswered (each is also a problem).
    pub unanswered: usize,
    /// Acknowledged appends missing or altered when read back.
    pub lost: usize,
    /// The worst shard's longest time between consecutive acknowledgements.
    pub max_gap: Duration,
    pub max_gap_shard: u32,
    /// Everything wrong, one line each: the checkers' violations, writes that failed or went
    /// unanswered.
    pub problems: Vec<String>,
}

/// How one shard came through a kill.
#[derive(Debug, Clone, Copy)]
pub struct Resumed {
    /// From the last acknowledgement before the kill to the first after it.
    pub gap: Duration,
    /// From the kill to the first acknowledgement after it.
    pub after_kill: Duration,
}

/// See the module docs.
pub struct ShardWriters {
    client: Arc<TestClient>,
    stop: Arc<AtomicBool>,
    writers: Vec<ShardWriter>,
    /// The clock of the histories the writers are judged by.
    epoch: Instant,
}

impl ShardWriters {
    /// Creates a conversation on each of `shards` shards (ids from `base`) and starts writing.
    pub async fn start(client: Arc<TestClient>, shards: u32, base: u128) -> Result<Self> {
        Self::start_padded(client, shards, base, 0).await
    }

    /// [`ShardWriters::start`], with bodies padded to `body_len` bytes.
    pub async fn start_padded(
        client: Arc<TestClient>,
        shards: u32,
        base: u128,
        body_len: usize,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for shard in 0..shards {
            let conv = create_conversation(&client, shard, shards, base).await?;
            let history = Arc::new(Mutex::new(WriteHistory::default()));
            let task = tokio::spawn(write_loop(
                Loop {
                    client: client.clone(),
                    shard,
                    conv,
                    body_len,
                },
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
            epoch: Instant::now(),
        })
    }

    pub fn writers(&self) -> &[ShardWriter] {
        &self.writers
    }

    /// Acknowledged writes so far, per shard.
    pub fn ack_counts(&self) -> Vec<usize> {
        self.writers
            .iter()
            .map(|w| w.history.lock().expect("history lock").acks.len())
            .collect()
    }

    /// Waits until every shard has acknowledged a write since this call.
    pub async fn wait_all_writing(&self, timeout: Duration) -> Result<()> {
        let before = self.ack_counts();
        let deadline = Instant::now() + timeout;
        while self
            .ack_counts()
            .iter()
            .zip(&before)
            .any(|(now, then)| now <= then)
        {
            ensure!(
                Instant::now() < deadline,
                "shards not writing within {timeout:?}: {before:?} -> {:?}",
                self.ack_counts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Per shard: how it came through the kill at `kill`, or `None` if it has not
    /// acknowledged a write after it yet.
    pub fn resumed(&self, kill: Instant) -> BTreeMap<u32, Option<Resumed>> {
        self.writers
            .iter()
            .map(|w| {
                let h = w.history.lock().expect("history lock");
                let before = h.acks.iter().rev().find(|a| a.at <= kill).map(|a| a.at);
                let after = h.acks.iter().find(|a| a.at > kill).map(|a| a.at);
                let r = after.map(|after| Resumed {
                    gap: after - before.unwrap_or(kill),
                    after_kill: after - kill,
                });
                (w.shard, r)
            })
            .collect()
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

    /// Reads every conversation back in full (after [`ShardWriters::stop`]) and judges it
    /// with its writer's acknowledgements (see [`judge`]); writes that failed or went
    /// unanswered are problems too.
    pub async fn verify(&self) -> Result<WriteSummary> {
        let mut sum = WriteSummary::default();
        for w in &self.writers {
            let h = w.history();
            let shard = w.shard;
            sum.problems.extend(
                h.errors
                    .iter()
                    .map(|e| format!("shard {shard}: failed {e}")),
            );
            sum.problems.extend(
                h.unanswered
                    .iter()
                    .map(|e| format!("shard {shard}: unanswered {e}")),
            );
            sum.unanswered += h.unanswered.len();
            sum.acked += h.acks.len();
            sum.retried += h.acks.iter().filter(|a| a.attempts > 1).count();
            sum.duplicates += h.acks.iter().filter(|a| a.duplicate).count();
            let gap = h.max_gap();
            if gap >= sum.max_gap {
                (sum.max_gap, sum.max_gap_shard) = (gap, shard);
            }
            let msgs = read_back(&self.client, shard, w.conv).await?;
            let v = judge(shard, w.conv, self.epoch, &msgs, &h.acks);
            sum.lost += v.lost;
            sum.problems.extend(v.problems);
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

/// Creates the group conversation of `shard` (the first id from `base` on it), written by
/// [`SENDER`] and read by [`READER`].
pub async fn create_conversation(
    client: &TestClient,
    shard: u32,
    shards: u32,
    base: u128,
) -> Result<ConvId> {
    let conv = conv_on_shard(shard, shards, base);
    let req = create(
        conv,
        v1::ConversationKind::Group,
        UserId::from_u128(SENDER),
        &[UserId::from_u128(READER)],
    );
    let r = client
        .write(req, None)
        .await
        .map_err(|f| anyhow::anyhow!("create the conversation of shard {shard}: {f}"))?;
    ensure!(
        r.reply.shard == shard,
        "the conversation for shard {shard} went to shard {}",
        r.reply.shard
    );
    Ok(conv)
}

/// Every message of a writer's conversation, read as [`READER`].
pub async fn read_back(client: &TestClient, shard: u32, conv: ConvId) -> Result<Vec<v1::Message>> {
    client
        .read_all(conv, UserId::from_u128(READER), None)
        .await
        .map_err(|f| anyhow::anyhow!("read the conversation of shard {shard}: {f}"))
}

/// One writer's job.
struct Loop {
    client: Arc<TestClient>,
    shard: u32,
    conv: ConvId,
    body_len: usize,
}

/// The body of message `n` of a shard's writer: it names both, padded to `len` bytes.
pub fn body(shard: u32, n: u64, len: usize) -> String {
    let mut body = format!("shard {shard} message {n}");
    if body.len() < len {
        body.push(' ');
        body.extend(std::iter::repeat_n('x', len - body.len()));
    }
    body
}

/// The client message id of message `n` of a shard's writer.
pub fn cmid(shard: u32, n: u64) -> ClientMsgId {
    ClientMsgId::from_u128(((shard as u128 + 1) << 96) | n as u128)
}

async fn write_loop(w: Loop, stop: Arc<AtomicBool>, history: Arc<Mutex<WriteHistory>>) {
    let sender = UserId::from_u128(SENDER);
    let mut prefer = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (cmid, body) = (cmid(w.shard, n), body(w.shard, n, w.body_len));
        let sent = Instant::now();
        let r = w
            .client
            .write(append(w.conv, sender, cmid, &body), prefer)
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
                        sent,
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

/// The verdict on one conversation.
#[derive(Debug, Default)]
pub struct Judged {
    /// Acknowledged appends missing or altered in the conversation.
    pub lost: usize,
    /// Every violation, one line each, naming the shard.
    pub problems: Vec<String>,
}

/// Judges a conversation (`msgs`, read back in full) against the acknowledgements of the one
/// client that wrote it, sequentially, with the history checkers: `no_lost_ack` (every
/// acknowledged append is stored at its seq with its body), `no_duplicate` (no client
/// message id is stored twice) and `same_order` (seqs dense from 1, the client's acknowledged
/// seqs increasing). Times are taken from `epoch`.
pub fn judge(
    shard: u32,
    conv: ConvId,
    epoch: Instant,
    msgs: &[v1::Message],
    acks: &[Ack],
) -> Judged {
    let conv_id = u128::from_be_bytes(conv.0);
    let ms = |t: Instant| -> Ms { t.saturating_duration_since(epoch).as_millis() as Ms };
    let ops = acks
        .iter()
        .enumerate()
        .map(|(i, a)| Op {
            id: i as u64,
            client: shard,
            invoke: ms(a.sent),
            complete: Some(ms(a.at)),
            kind: OpKind::Send {
                conv: conv_id,
                shard,
                sender: SENDER,
                client_msg_id: u128::from_be_bytes(a.cmid.0),
                body_crc: body_crc(a.body.as_bytes()),
            },
            outcome: Outcome::Sent {
                seq: a.seq,
                duplicate: a.duplicate,
            },
        })
        .collect();
    let mut final_state = FinalState::default();
    final_state
        .logs
        .insert(conv_id, msgs.iter().map(seen).collect());
    let h = History {
        scenario: format!("shard {shard}"),
        seed: 0,
        load: None,
        faults: Vec::new(),
        ops,
        final_state,
    };
    let mut out = Judged::default();
    for (property, check) in CHECKERS {
        let found = check(&h);
        if property == no_lost_ack::PROPERTY {
            out.lost += found.len();
        }
        out.problems
            .extend(found.iter().map(|v| format!("shard {shard}: {v}")));
    }
    out
}
