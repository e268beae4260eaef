//! The workload: many concurrent clients sending messages with unique ids into many
//! conversations, readers reading them back linearizably, subscribers following every shard's
//! live stream, and one outsider probing conversations it is not a member of. Every operation is recorded into the [`History`]'s
//! form: invocation, answer (or none), and outcome, with times since the run's epoch.
//!
//! Message bodies are real payloads: their sizes follow [`BodyMix`] (most under 1 KiB, one in
//! ten from 16 KiB up to the 64 KiB limit). The load is set by measurement, not by pauses:
//! writers start with nothing holding them back, [`Workload::calibrate`] measures the body
//! bytes the cluster acknowledges per second that way, and then sets the one [`RateGate`]
//! every writer passes to a share (half) of it. Sizes are chosen for a two-core machine that
//! also runs the nodes: sixteen writers per shard ([`DEFAULT_WRITERS_PER_SHARD`]), a few
//! readers, each operation with a deadline of a few seconds. A send that timed out is retried with the same client message id (as a
//! real client would), so that idempotence across failovers is exercised.
//!
//! [`History`]: crate::history::History

pub mod body;
pub mod gate;
pub mod subscriber;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use futures::StreamExt;

use crate::history::{Load, Ms, Op, OpKind, Outcome, Seen};
pub use body::BodyMix;
pub use bongsu_testkit::chat::{
    body_crc, CallError, ChatClient, NodeClient, OutMsg, ReadPage, SendAck,
};
pub use gate::RateGate;

/// Messages per page when the final logs are read back (a page of the largest bodies is then
/// about 16 MiB).
const FINAL_PAGE: u32 = 250;
/// Conversations whose final logs are read at once.
const FINAL_READS_AT_ONCE: usize = 4;

/// The workload's shape.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Writers per shard. Each writer sends only into its own shard's conversations, so that
    /// a shard that stops taking writes holds up only its own writers: the gaps the history
    /// shows on the other shards are theirs, not a client stuck elsewhere. A writer has one
    /// send in flight at a time and no pause of its own: the shared [`RateGate`] paces it.
    pub writers_per_shard: u32,
    pub readers: u32,
    /// Conversations per shard.
    pub convs_per_shard: u32,
    pub shards: u32,
    /// The sizes of message bodies.
    pub mix: BodyMix,
    /// Pause between a reader's reads.
    pub read_pause: Duration,
    /// Pause between the outsider's probes.
    pub probe_pause: Duration,
    /// How many times a writer re-sends a message that timed out before moving on.
    pub resends: u32,
    pub seed: u64,
}

impl WorkloadSpec {
    pub fn writers(&self) -> u32 {
        self.writers_per_shard * self.shards
    }

    pub fn new(shards: u32, seed: u64) -> Self {
        Self {
            writers_per_shard: DEFAULT_WRITERS_PER_SHARD,
            readers: 3,
            convs_per_shard: 2,
            shards,
            mix: BodyMix::cluster_default(),
            read_pause: Duration::from_millis(60),
            probe_pause: Duration::from_millis(200),
            resends: 2,
            seed,
        }
    }
}

/// Writers per shard (192 with 12 shards): what saturates a two-core machine that also runs
/// the six nodes. Measured with the calibration on such a machine: already at 4 per shard the
/// CPU is busy, and the acknowledged bytes per second still rise with more writers in flight
/// (bigger group commits and Raft batches), from about 8 MB/s at 4 per shard to 11-12 MB/s at
/// 16; at 32 per shard they fall again (about 7 MB/s) as client work and queueing crowd out
/// the nodes.
pub const DEFAULT_WRITERS_PER_SHARD: u32 = 16;

const USER_TAG: u128 = 0xc4a0_5000 << 96;

pub fn writer_id(i: u32) -> u128 {
    USER_TAG | (1 << 64) | i as u128
}

pub fn reader_id(i: u32) -> u128 {
    USER_TAG | (2 << 64) | i as u128
}

/// The user that is a member of no conversation.
pub fn outsider_id() -> u128 {
    USER_TAG | (3 << 64)
}

/// The user id the recorded deliveries of shard `shard`'s subscriber carry.
pub fn subscriber_id(shard: u32) -> u128 {
    USER_TAG | (4 << 64) | shard as u128
}

/// `per_shard` conversation ids in every shard, derived from the seed, as (conv, shard).
pub fn conversations(shards: u32, per_shard: u32, seed: u64) -> Vec<(u128, u32)> {
    let mut left: BTreeMap<u32, u32> = (0..shards).map(|s| (s, per_shard)).collect();
    let mut out = Vec::new();
    let base = (0xc0 << 120) | ((seed as u128) << 32);
    for i in 0u128.. {
        if left.values().all(|n| *n == 0) {
            break;
        }
        let conv = base | i;
        let shard = bongsu_proto::model::shard_of(&conv.to_be_bytes(), shards);
        if let Some(n) = left.get_mut(&shard).filter(|n| **n > 0) {
            *n -= 1;
            out.push((conv, shard));
        }
    }
    out
}

/// An acknowledged send and who acknowledged it (the history does not keep nodes).
#[derive(Clone, Copy, Debug)]
pub struct AckBy {
    pub op: u64,
    pub at: Ms,
    pub node: u64,
    pub shard: u32,
    /// The body's length.
    pub bytes: u64,
    /// The node recognised a retry of a message it already had.
    pub duplicate: bool,
}

/// Acknowledged sends (duplicates not counted) and their body bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acked {
    pub msgs: u64,
    pub bytes: u64,
}

impl Acked {
    /// Per second over `ms` milliseconds: (bytes/s, msgs/s).
    pub fn per_s(&self, ms: Ms) -> (u64, u64) {
        let ms = ms.max(1);
        (self.bytes * 1000 / ms, self.msgs * 1000 / ms)
    }
}

/// Collects operations as they complete.
pub struct Recorder {
    epoch: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    acks: Mutex<Vec<AckBy>>,
}

impl Recorder {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            next_id: AtomicU64::new(1),
            ops: Mutex::new(Vec::new()),
            acks: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> Ms {
        self.epoch.elapsed().as_millis() as Ms
    }

    fn record(
        &self,
        client: u32,
        invoke: Ms,
        complete: Option<Ms>,
        kind: OpKind,
        outcome: Outcome,
        acked: Option<(SendAck, u64)>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let (Some((ack, bytes)), Some(at)) = (acked, complete) {
            self.acks.lock().expect("recorder lock").push(AckBy {
                op: id,
                at,
                node: ack.node,
                shard: kind.shard(),
                bytes,
                duplicate: ack.duplicate,
            });
        }
        self.ops.lock().expect("recorder lock").push(Op {
            id,
            client,
            invoke,
            complete,
            kind,
            outcome,
        });
    }

    /// Every acknowledged send so far, with the node that acknowledged it.
    pub fn acks(&self) -> Vec<AckBy> {
        self.acks.lock().expect("recorder lock").clone()
    }

    /// What was acknowledged with an ack time in `(from, to]` (duplicates not counted).
    pub fn acked_between(&self, from: Ms, to: Ms) -> Acked {
        let mut out = Acked::default();
        for a in self.acks.lock().expect("recorder lock").iter() {
            if a.at > from && a.at <= to && !a.duplicate {
                out.msgs += 1;
                out.bytes += a.bytes;
            }
        }
        out
    }

    /// How many acknowledged bodies were exactly `len` bytes long.
    pub fn acked_of_len(&self, len: u64) -> usize {
        self.acks
            .lock()
            .expect("recorder lock")
            .iter()
            .filter(|a| a.bytes == len && !a.duplicate)
            .count()
    }

    /// The time of the latest ack per shard.
    pub fn last_ack_per_shard(&self) -> BTreeMap<u32, Ms> {
        let mut out = BTreeMap::new();
        for a in self.acks.lock().expect("recorder lock").iter() {
            let e = out.entry(a.shard).or_insert(a.at);
            *e = (*e).max(a.at);
        }
        out
    }

    /// Counts of operations so far: (sends acked, sends not acked, reads ok, reads not ok).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let ops = self.ops.lock().expect("recorder lock");
        let mut c = (0, 0, 0, 0);
        for op in ops.iter() {
            match (op.kind.is_send(), op.outcome.is_ok()) {
                (true, true) => c.0 += 1,
                (true, false) => c.1 += 1,
                (false, true) => c.2 += 1,
                (false, false) => c.3 += 1,
            }
        }
        c
    }

    /// Every operation, ordered by id.
    pub fn take_ops(&self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut *self.ops.lock().expect("recorder lock"));
        ops.sort_by_key(|o| o.id);
        ops
    }
}

/// A running workload.
pub struct Workload<C: ChatClient> {
    pub client: Arc<C>,
    pub recorder: Arc<Recorder>,
    pub spec: WorkloadSpec,
    pub convs: Vec<(u128, u32)>,
    /// The gate every writer passes (open until [`Workload::calibrate`] sets it).
    pub gate: Arc<RateGate>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<C: ChatClient> Workload<C> {
    /// Creates the conversations (every writer and reader a member, the outsider not) and
    /// starts every client.
    pub async fn start(
        client: Arc<C>,
        spec: WorkloadSpec,
        recorder: Arc<Recorder>,
    ) -> Result<Self> {
        let convs = conversations(spec.shards, spec.convs_per_shard, spec.seed);
        let members: Vec<u128> = (0..spec.writers())
            .map(writer_id)
            .chain((0..spec.readers).map(reader_id))
            .collect();
        let creates = convs.iter().map(|(conv, _)| {
            let (client, members) = (client.clone(), members.clone());
            let conv = *conv;
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match client.create_group(conv, writer_id(0), &members).await {
                        Ok(()) => return Ok(()),
                        Err(e) if e.gave_up && Instant::now() < deadline => continue,
                        Err(e) => anyhow::bail!("create conversation {conv:032x}: {e}"),
                    }
                }
            }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(RateGate::open());
        let mut tasks = Vec::new();
        let conv_ids: Arc<Vec<(u128, u32)>> = Arc::new(convs.clone());
        let mut client_no = 0u32;
        for w in 0..spec.writers() {
            let ctx = Ctx {
                client: client.clone(),
                rec: recorder.clone(),
                stop: stop.clone(),
                convs: conv_ids.clone(),
                spec: spec.clone(),
                gate: gate.clone(),
            };
            tasks.push(tokio::spawn(writer(ctx, w, client_no)));
            client_no += 1;
        }
        for r in 0..spec.readers {
            let ctx = Ctx {
                client: client.clone(),
                rec: recorder.clone(),
                stop: stop.clone(),
                convs: conv_ids.clone(),
                spec: spec.clone(),
                gate: gate.clone(),
            };
            tasks.push(tokio::spawn(reader(ctx, reader_id(r), true, client_no)));
            client_no += 1;
        }
        let ctx = Ctx {
            client: client.clone(),
            rec: recorder.clone(),
            stop: stop.clone(),
            convs: conv_ids.clone(),
            spec: spec.clone(),
            gate: gate.clone(),
        };
        tasks.push(tokio::spawn(reader(ctx, outsider_id(), false, client_no)));
        Ok(Self {
            client,
            recorder,
            spec,
            convs,
            gate,
            stop,
            tasks,
        })
    }

    /// Starts one subscriber per shard over the nodes `(id, internal API address)` (see
    /// [`subscriber`]).
    pub fn subscribe_shards(&mut self, nodes: &[(u64, String)]) -> Result<()> {
        let first = self.spec.writers() + self.spec.readers + 1;
        for shard in 0..self.spec.shards {
            let sub =
                subscriber::Subscriber::new(shard, subscriber_id(shard), first + shard, nodes)?;
            self.tasks.push(tokio::spawn(
                sub.run(self.recorder.clone(), self.stop.clone()),
            ));
        }
        Ok(())
    }

    /// Waits until every shard has acknowledged a send within the last `fresh`.
    pub async fn wait_all_writing(&self, fresh: Duration, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.recorder.now();
            let last = self.recorder.last_ack_per_shard();
            let stale: Vec<u32> = (0..self.spec.shards)
                .filter(|s| {
                    last.get(s)
                        .is_none_or(|t| now.saturating_sub(*t) > fresh.as_millis() as u64)
                })
                .collect();
            if stale.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "shards {stale:?} acknowledged no send within {fresh:?} for {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Measures the cluster's capacity and holds the workload to `share_percent` of it.
    ///
    /// With the gate open, writers send without any pause; the body bytes (and sends)
    /// acknowledged during `window` are the capacity. The gate is then set to `share_percent`
    /// of those bytes per second; the send rate that means is worked out at the calibration's
    /// mean body size. Call it once every shard takes writes.
    pub async fn calibrate(&self, window: Duration, share_percent: u32) -> Load {
        let from = self.recorder.now();
        tokio::time::sleep(window).await;
        let to = self.recorder.now();
        let acked = self.recorder.acked_between(from, to);
        let (capacity_bytes_per_s, capacity_msgs_per_s) = acked.per_s(to - from);
        // A cluster that acknowledged nothing still gets a gate, at one largest body per
        // second, so that the run goes on and reports what it saw.
        let rate_bytes_per_s =
            (capacity_bytes_per_s * share_percent as u64 / 100).max(self.spec.mix.max as u64);
        self.gate.set_rate(rate_bytes_per_s);
        let rate_msgs_per_s = match acked.bytes {
            0 => 0,
            b => rate_bytes_per_s * acked.msgs / b,
        };
        Load {
            writers: self.spec.writers(),
            calibration_ms: to - from,
            capacity_bytes_per_s,
            capacity_msgs_per_s,
            share_percent,
            rate_bytes_per_s,
            rate_msgs_per_s,
            achieved_bytes_per_s: 0,
            achieved_msgs_per_s: 0,
        }
    }

    /// Stops every client after its current operation (each is bounded by its deadline).
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &mut self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), &mut *t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }

    /// The complete log of every conversation, read linearizably (page by page) as a member,
    /// a few conversations at a time.
    pub async fn final_logs(&self, timeout: Duration) -> Result<BTreeMap<u128, Vec<Seen>>> {
        let deadline = Instant::now() + timeout;
        let reads = self
            .convs
            .iter()
            .map(|(conv, _)| self.final_log(*conv, deadline));
        let logs: Vec<Result<(u128, Vec<Seen>)>> = futures::stream::iter(reads)
            .buffer_unordered(FINAL_READS_AT_ONCE)
            .collect()
            .await;
        logs.into_iter().collect()
    }

    async fn final_log(&self, conv: u128, deadline: Instant) -> Result<(u128, Vec<Seen>)> {
        let mut log: Vec<Seen> = Vec::new();
        loop {
            let from = log.last().map(|m| m.seq + 1).unwrap_or(1);
            match self.client.read(conv, reader_id(0), from, FINAL_PAGE).await {
                Ok(page) => {
                    let done = page.messages.is_empty()
                        || page.messages.last().is_some_and(|m| m.seq >= page.last_seq);
                    log.extend(page.messages);
                    if done {
                        return Ok((conv, log));
                    }
                }
                Err(e) if e.gave_up && Instant::now() < deadline => continue,
                Err(e) => anyhow::bail!("read the final log of conversation {conv:032x}: {e}"),
            }
        }
    }
}

impl<C: ChatClient> Drop for Workload<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Ctx<C> {
    client: Arc<C>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    convs: Arc<Vec<(u128, u32)>>,
    spec: WorkloadSpec,
    gate: Arc<RateGate>,
}

fn jitter(rng: &mut StdRng, d: Duration) -> Duration {
    d.mul_f64(rng.random_range(0.5..1.5))
}

/// Sends one message at a time into a random conversation of shard `w % shards`, each with a
/// new client message id and a body from the mix; a send that timed out is sent again (same
/// id and body) up to `resends` times. Every send, resends included, first passes the gate
/// with its body's bytes.
async fn writer<C: ChatClient>(ctx: Ctx<C>, w: u32, client_no: u32) {
    let mut rng = StdRng::seed_from_u64(ctx.spec.seed ^ (0x5717 + w as u64));
    let sender = writer_id(w);
    let mine: Vec<(u128, u32)> = ctx
        .convs
        .iter()
        .copied()
        .filter(|(_, s)| *s == w % ctx.spec.shards)
        .collect();
    let mut n: u64 = 0;
    let mut pending: Option<(OutMsg, u32, u32)> = None;
    while !ctx.stop.load(Ordering::Relaxed) {
        let (msg, shard, tries) = match pending.take() {
            Some(p) => p,
            None => {
                n += 1;
                let (conv, shard) = mine[rng.random_range(0..mine.len())];
                let body = ctx.spec.mix.body(&mut rng, w, n);
                let msg = OutMsg {
                    conv,
                    sender,
                    device: sender ^ 0xd,
                    client_msg_id: ((w as u128 + 1) << 64) | n as u128,
                    body,
                };
                (msg, shard, 0)
            }
        };
        let kind = OpKind::Send {
            conv: msg.conv,
            shard,
            sender,
            client_msg_id: msg.client_msg_id,
            body_crc: body_crc(&msg.body),
        };
        let bytes = msg.body.len() as u64;
        ctx.gate.pass(bytes).await;
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        let invoke = ctx.rec.now();
        let r = ctx.client.send(&msg).await;
        let done = ctx.rec.now();
        match r {
            Ok(a) => ctx.rec.record(
                client_no,
                invoke,
                Some(done),
                kind,
                Outcome::Sent {
                    seq: a.seq,
                    duplicate: a.duplicate,
                },
                Some((a, bytes)),
            ),
            Err(e) if e.maybe_applied => {
                ctx.rec
                    .record(client_no, invoke, None, kind, Outcome::Timeout, None);
                if tries < ctx.spec.resends {
                    pending = Some((msg, shard, tries + 1));
                }
            }
            Err(e) => {
                ctx.rec.record(
                    client_no,
                    invoke,
                    Some(done),
                    kind,
                    Outcome::Failed { code: e.code },
                    None,
                );
                // A definite refusal comes back at once; do not spin on them.
                tokio::time::sleep(jitter(&mut rng, Duration::from_millis(40))).await;
            }
        }
    }
}

/// Reads random conversations from a little before their last known seq. A non-member reader
/// (`member == false`) must be refused every time.
async fn reader<C: ChatClient>(ctx: Ctx<C>, user: u128, member: bool, client_no: u32) {
    let mut rng = StdRng::seed_from_u64(ctx.spec.seed ^ (user as u64));
    let mut known: BTreeMap<u128, u64> = BTreeMap::new();
    let pause = if member {
        ctx.spec.read_pause
    } else {
        ctx.spec.probe_pause
    };
    while !ctx.stop.load(Ordering::Relaxed) {
        let (conv, shard) = ctx.convs[rng.random_range(0..ctx.convs.len())];
        let last = known.get(&conv).copied().unwrap_or(0);
        let from_seq = last.saturating_sub(rng.random_range(0..20)).max(1);
        let kind = OpKind::Read {
            conv,
            shard,
            reader: user,
            member,
            from_seq,
        };
        let invoke = ctx.rec.now();
        let r = ctx.client.read(conv, user, from_seq, 50).await;
        let done = ctx.rec.now();
        match r {
            Ok(page) => {
                known.insert(conv, page.last_seq);
                ctx.rec.record(
                    client_no,
                    invoke,
                    Some(done),
                    kind,
                    Outcome::ReadOk {
                        messages: page.messages,
                    },
                    None,
                );
            }
            Err(e) if e.gave_up => {
                ctx.rec
                    .record(client_no, invoke, None, kind, Outcome::Timeout, None)
            }
            Err(e) => ctx.rec.record(
                client_no,
                invoke,
                Some(done),
                kind,
                Outcome::Failed { code: e.code },
                None,
            ),
        }
        tokio::time::sleep(jitter(&mut rng, pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_cover_every_shard() {
        let convs = conversations(12, 2, 42);
        assert_eq!(convs.len(), 24);
        for s in 0..12 {
            assert_eq!(convs.iter().filter(|(_, shard)| *shard == s).count(), 2);
        }
        for (conv, shard) in &convs {
            assert_eq!(
                bongsu_proto::model::shard_of(&conv.to_be_bytes(), 12),
                *shard
            );
        }
        assert_ne!(conversations(12, 2, 43), convs, "the seed changes the ids");
    }

    #[test]
    fn users_are_distinct() {
        let mut ids: Vec<u128> = (0..30)
            .map(writer_id)
            .chain((0..5).map(reader_id))
            .chain([outsider_id()])
            .chain((0..16).map(subscriber_id))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 52);
    }
}
