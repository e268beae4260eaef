//! `bench-gateway`: what the gateway adds to a write, measured against the node in one run.
//!
//! One run starts a three-datacenter cluster with the test kit (one `bongsu-node` per
//! datacenter on `127.0.d.x`, 8 shards, 3 replicas) and one `bongsu-gateway` per datacenter
//! on `127.0.d.100`, with the per-user, per-IP and sign-in rate limits off
//! (`--user-rate=0 --ip-rate=0 --auth-rate-per-min=0`: 0 turns a limit off, see
//! `gateway/src/limits.rs`). Then, with 256-byte text messages, for `--seconds` each:
//!
//! - `node-seq`: one writer sending `Append` through the internal `NodeApi.Write` straight to
//!   the shard leader (following `NOT_LEADER`): the reference;
//! - `grpc-seq`: one signed-in device sending through the dc1 gateway's `Messenger.Send`;
//! - `node-pipe`: `--concurrency` writers on the node API, over the same conversations as
//!   the pipelined gateway cases (a reference for them, not asked of the gateway);
//! - `grpc-pipe`: `--concurrency` senders (several users, one conversation each, spread
//!   evenly over the shards) through the dc1 gateway's gRPC API;
//! - `http-pipe`: the same through `POST /v1/conversations/{id}/messages` (HTTP/JSON);
//! - `push`: a device subscribed on the dc2 gateway, a sender on dc1: the time from the start
//!   of a send to the push arriving, over `--push-messages` messages sent one at a time.
//!
//! Every case prints one line, `bench-gateway: case=NAME msgs_per_sec=… p50_ms=… p99_ms=…
//! …`; `ratio_vs_node` is the case's msgs/s divided by `node-seq`'s, measured in the same run.
//! `cpu_*` fields are percent of one core over the case, from `/proc/<pid>/stat`, for the
//! dc1 gateway, the three nodes together and this benchmark process itself (which shares the
//! machine's cores with them).
//!
//! The binaries are taken from beside this example (`target/release/`); build them with
//! `cargo build --release --workspace --bins` (the plain `bongsu-node` is measured, as
//! operators run it). The run takes its turn with the node and API tests through
//! their lock file (`target/tmp/bongsu-cluster-tests.lock`) so that none skews another.
//! Data and logs are kept in `--dir` (`nodes/n<id>/`, `gw<d>.log`), wiped at the start.
//! Every process is a child that dies with this one (`PR_SET_PDEATHSIG`) and is killed by PID
//! when the run ends.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{write_reply, write_request, AppendMessage, WriteRequest};
use bongsu_proto::model::shard_of;
use bongsu_proto::model::{CODE_KEY, LEADER_ADDR_KEY};
use bongsu_proto::v1::auth_client::AuthClient;
use bongsu_proto::v1::messenger_client::MessengerClient;
use bongsu_proto::v1::{self, push_event::Event};
use bongsu_proto::ErrorCode;
use bongsu_testkit::cluster::{Cluster, Spec};
use bongsu_testkit::gateway::start_gateways;
use bongsu_testkit::{process, turn};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Barrier};
use tonic::transport::{Channel, Endpoint};

/// Datacenters, one node and one gateway each.
const DCS: u8 = 3;
const SHARDS: u32 = 8;
const BODY_BYTES: usize = 256;
/// Users the pipelined senders are spread over (each sends in its own conversations).
const MAX_USERS: usize = 16;
/// Unmeasured sends per sender before a case starts (wakes quiesced groups, fills pools).
const WARMUP_SEQ: usize = 50;
const WARMUP_PIPE: usize = 5;
/// Deadline of one send; a send that takes longer counts as an error.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a push may take before the run gives up on it.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Latency and throughput of sends through the gateway, against the node")]
struct Args {
    /// Directory for the nodes' data and every log (wiped at start, kept afterwards).
    #[arg(long, default_value = "data/bench-gateway")]
    dir: PathBuf,
    /// Seconds measured per case.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent senders of the pipelined cases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages of the push case, sent one at a time.
    #[arg(long, default_value_t = 500)]
    push_messages: usize,
    /// Cases to run, comma-separated (node-seq, grpc-seq, node-pipe, grpc-pipe, http-pipe,
    /// push), or `all`. Ratios need node-seq (and node-pipe) in the same run.
    #[arg(long, default_value = "all")]
    cases: String,
}

impl Args {
    fn runs(&self, case: &str) -> bool {
        self.cases == "all" || self.cases.split(',').any(|c| c.trim() == case)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// User plus system CPU ticks of a process (0 once it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    process::cpu_ticks(pid).unwrap_or(0)
}

/// CPU of the processes a case is charged to: the dc1 gateway, the nodes, this benchmark.
#[derive(Clone)]
struct CpuProbe {
    gateway: u32,
    nodes: Vec<u32>,
    me: u32,
    ticks_per_sec: f64,
}

struct CpuMark {
    at: Instant,
    gateway: u64,
    nodes: u64,
    me: u64,
}

impl CpuProbe {
    fn mark(&self) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            gateway: cpu_ticks(self.gateway),
            nodes: self.nodes.iter().map(|p| cpu_ticks(*p)).sum(),
            me: cpu_ticks(self.me),
        }
    }

    /// `cpu_gw_pct=… cpu_nodes_pct=… cpu_bench_pct=…` since `m`.
    fn since(&self, m: &CpuMark) -> String {
        let wall = m.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / self.ticks_per_sec / wall * 100.0;
        let now = self.mark();
        format!(
            "cpu_gw_pct={:.0} cpu_nodes_pct={:.0} cpu_bench_pct={:.0}",
            pct(m.gateway, now.gateway),
            pct(m.nodes, now.nodes),
            pct(m.me, now.me)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

async fn channel(url: &str) -> Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connect to {url}"))
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

/// The stable code of a failed call.
fn code(s: &tonic::Status) -> String {
    s.metadata()
        .get(CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

/// One signed-in device with its own connection to a gateway.
#[derive(Clone)]
struct Device {
    user: Vec<u8>,
    device: Vec<u8>,
    token: String,
    api: MessengerClient<Channel>,
}

impl Device {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        with_token(&self.token, msg)
    }
}

fn password(handle: &str) -> String {
    format!("{handle}-bench-password")
}

fn device_info() -> Option<v1::DeviceInfo> {
    Some(v1::DeviceInfo {
        kind: v1::DeviceKind::Pc as i32,
        name: "bench".into(),
    })
}

fn device_of(ch: Channel, s: v1::Session) -> Device {
    Device {
        user: s.user_id,
        device: s.device_id,
        token: s.access_token,
        api: MessengerClient::new(ch),
    }
}

async fn sign_up(url: &str, handle: String) -> Result<Device> {
    let ch = channel(url).await?;
    let s = AuthClient::new(ch.clone())
        .sign_up(v1::SignUpRequest {
            handle: handle.clone(),
            password: password(&handle),
            device: device_info(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("sign up {handle}: {} {}", code(&s), s.message()))?
        .into_inner();
    Ok(device_of(ch, s))
}

/// A conversation id on `shard` (of [`SHARDS`]), so that senders spread evenly.
fn conv_on_shard(shard: u32) -> Vec<u8> {
    loop {
        let id: [u8; 16] = rand::random();
        if shard_of(&id, SHARDS) == shard {
            return id.to_vec();
        }
    }
}

async fn create_group(owner: &Device, conv: Vec<u8>, members: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let mut api = owner.api.clone();
    api.create_conversation(owner.req(v1::CreateConversationRequest {
        conv_id: conv.clone(),
        kind: v1::ConversationKind::Group as i32,
        members,
    }))
    .await
    .map_err(|s| anyhow::anyhow!("create a conversation: {} {}", code(&s), s.message()))?;
    Ok(conv)
}

fn body() -> String {
    (0..BODY_BYTES)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect()
}

/// Writes straight to shard leaders through the internal `NodeApi`, as the gateway's router
/// does: one cached channel per node, the last leader of each shard remembered, `NOT_LEADER`
/// followed to the node it names, otherwise every node tried in turn.
#[derive(Clone)]
struct NodeWriter {
    addrs: Vec<String>,
    clients: HashMap<String, NodeApiClient<Channel>>,
    leaders: HashMap<u32, String>,
}

impl NodeWriter {
    async fn connect(addrs: &[String]) -> Result<NodeWriter> {
        let mut clients = HashMap::new();
        for a in addrs {
            clients.insert(a.clone(), bongsu_testkit::chat::node_api(a)?);
        }
        Ok(NodeWriter {
            addrs: addrs.to_vec(),
            clients,
            leaders: HashMap::new(),
        })
    }

    async fn append(&mut self, sender: &Device, conv: &[u8], body: &str) -> Result<u64> {
        let conv16: [u8; 16] = conv.try_into().context("a 16-byte conversation id")?;
        let shard = shard_of(&conv16, SHARDS);
        let req = WriteRequest {
            command: Some(write_request::Command::Append(AppendMessage {
                conv_id: conv.to_vec(),
                sender: sender.user.clone(),
                device: sender.device.clone(),
                client_msg_id: rand::random::<[u8; 16]>().to_vec(),
                kind: v1::MessageKind::Text as i32,
                body: body.as_bytes().to_vec(),
            })),
        };
        let mut next: Option<String> = self.leaders.get(&shard).cloned();
        let mut last = String::new();
        for attempt in 0..(4 * self.addrs.len()) {
            let addr = next
                .take()
                .unwrap_or_else(|| self.addrs[attempt % self.addrs.len()].clone());
            let Some(client) = self.clients.get(&addr) else {
                // A leader this writer has no channel to: not one of the cluster's nodes.
                last = format!("leader {addr} is not a known node");
                continue;
            };
            let mut client = client.clone();
            match client.write(req.clone()).await {
                Ok(r) => {
                    self.leaders.insert(shard, addr);
                    return match r.into_inner().result {
                        Some(write_reply::Result::Appended(a)) => Ok(a.seq),
                        other => bail!("unexpected write reply {other:?}"),
                    };
                }
                Err(s) if code(&s) == ErrorCode::NotLeader.as_str() => {
                    self.leaders.remove(&shard);
                    next = s
                        .metadata()
                        .get(LEADER_ADDR_KEY)
                        .and_then(|v| v.to_str().ok())
                        .filter(|a| !a.is_empty() && *a != addr)
                        .map(str::to_string);
                    last = format!("{addr}: NOT_LEADER {}", s.message());
                    if next.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    last = format!("{addr}: {} {}", code(&s), s.message());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(s) => bail!(
                    "append on {addr}: {} {:?} {}",
                    code(&s),
                    s.code(),
                    s.message()
                ),
            }
        }
        bail!("no leader of shard {shard} accepted the append; last: {last}")
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

type SendFut = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
/// One sender: each call sends one message and resolves when it is acknowledged.
type Sender = Box<dyn FnMut() -> SendFut + Send>;

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

struct Outcome {
    hist: Histogram<u64>,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Outcome {
    fn msgs_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs every sender in its own task: `warmup` unmeasured sends each, then all start together
/// and send back to back for `dur`. Throughput counts acknowledged sends over the time from the
/// common start until the last sender's last acknowledgement.
async fn measure(senders: Vec<Sender>, warmup: usize, dur: Duration) -> Result<Outcome> {
    let n = senders.len();
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for mut send in senders {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..warmup {
                match tokio::time::timeout(SEND_TIMEOUT, send()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.context(format!("warm-up send {i}"))),
                    Err(_) => bail!("warm-up send {i} took over {SEND_TIMEOUT:?}"),
                }
            }
            barrier.wait().await;
            let start = Instant::now();
            let deadline = start + dur;
            let mut hist = histogram();
            let (mut acked, mut errors, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match tokio::time::timeout(SEND_TIMEOUT, send()).await {
                    Ok(Ok(())) => {
                        record(&mut hist, t0.elapsed());
                        acked += 1;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("over {SEND_TIMEOUT:?}"));
                    }
                }
            }
            Ok((hist, acked, errors, first_error, start, Instant::now()))
        }));
    }
    let mut out = Outcome {
        hist: histogram(),
        acked: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    let (mut first_start, mut last_end): (Option<Instant>, Option<Instant>) = (None, None);
    for t in tasks {
        let (hist, acked, errors, first_error, start, end) =
            t.await.context("a sender panicked")??;
        out.hist.add(&hist).context("merge histograms")?;
        out.acked += acked;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
        first_start = Some(first_start.map_or(start, |s| s.min(start)));
        last_end = Some(last_end.map_or(end, |e| e.max(end)));
    }
    if let (Some(s), Some(e)) = (first_start, last_end) {
        out.elapsed = e.duration_since(s);
    }
    Ok(out)
}

fn report(case: &str, o: &Outcome, node_seq: f64, extra: &str) {
    let ratio = if node_seq > 0.0 {
        o.msgs_per_sec() / node_seq
    } else {
        f64::NAN
    };
    let err = match &o.first_error {
        Some(e) => format!(" first_error={e:?}"),
        None => String::new(),
    };
    println!(
        "bench-gateway: case={case} msgs_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} ratio_vs_node={ratio:.3} acked={} errors={}{extra}{err}",
        o.msgs_per_sec(),
        o.ms(0.5),
        o.ms(0.99),
        o.hist.max() as f64 / 1000.0,
        o.acked,
        o.errors,
    );
}

fn node_sender(w: &NodeWriter, dev: &Device, conv: &[u8], text: &Arc<str>) -> Sender {
    let (w, dev, conv, text) = (w.clone(), dev.clone(), conv.to_vec(), text.clone());
    let w = Arc::new(tokio::sync::Mutex::new(w));
    Box::new(move || {
        let (w, dev, conv, text) = (w.clone(), dev.clone(), conv.clone(), text.clone());
        Box::pin(async move {
            // Uncontended: one sender owns this writer.
            w.lock().await.append(&dev, &conv, &text).await.map(|_| ())
        })
    })
}

fn grpc_sender(dev: &Device, conv: &[u8], text: &Arc<str>) -> Sender {
    let (dev, conv, text) = (dev.clone(), conv.to_vec(), text.clone());
    Box::new(move || {
        let req = dev.req(v1::SendRequest {
            conv_id: conv.clone(),
            client_msg_id: rand::random::<[u8; 16]>().to_vec(),
            kind: v1::MessageKind::Text as i32,
            body: text.as_bytes().to_vec(),
        });
        let mut api = dev.api.clone();
        Box::pin(async move {
            api.send(req)
                .await
                .map(|_| ())
                .map_err(|s| anyhow::anyhow!("send: {} {}", code(&s), s.message()))
        })
    })
}

fn http_sender(
    http: &reqwest::Client,
    base: &str,
    dev: &Device,
    conv: &[u8],
    text: &Arc<str>,
) -> Sender {
    let url = format!("{base}/v1/conversations/{}/messages", hex(conv));
    let auth = format!("Bearer {}", dev.token);
    let (http, text) = (http.clone(), text.clone());
    Box::new(move || {
        let body = serde_json::json!({
            "client_msg_id": hex(&rand::random::<[u8; 16]>()),
            "kind": "text",
            "text": &*text,
        });
        let req = http.post(&url).header("authorization", &auth).json(&body);
        Box::pin(async move {
            let r = req.send().await.context("POST a message")?;
            let status = r.status();
            let bytes = r.bytes().await.context("read the reply")?;
            if !status.is_success() {
                bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
            }
            Ok(())
        })
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A device subscribed on one gateway, a sender on another: send start to push arrival.
async fn push_case(
    sender: &Device,
    subscriber: &Device,
    conv: &[u8],
    text: &Arc<str>,
    messages: usize,
) -> Result<(Histogram<u64>, Histogram<u64>)> {
    let mut api = subscriber.api.clone();
    let mut stream = api
        .subscribe(subscriber.req(v1::SubscribeRequest {
            cursors: vec![v1::Cursor {
                conv_id: conv.to_vec(),
                seq: 0,
            }],
        }))
        .await
        .map_err(|s| anyhow::anyhow!("subscribe: {} {}", code(&s), s.message()))?
        .into_inner();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let want = conv.to_vec();
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(v1::PushEvent {
                    event: Some(Event::Message(m)),
                })) if m.conv_id == want => {
                    if tx.send((m.client_msg_id, Instant::now())).is_err() {
                        return Ok(());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the push stream ended"),
                Err(s) => bail!("the push stream failed: {} {}", code(&s), s.message()),
            }
        }
    });
    let mut send = grpc_sender_with_id(sender, conv, text);
    let mut ack = histogram();
    let mut push = histogram();
    let result: Result<()> = async {
        for i in 0..(WARMUP_PIPE + messages) {
            let cmid: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
            let t0 = Instant::now();
            send(cmid.clone())
                .await
                .with_context(|| format!("push case: send {i}"))?;
            let acked = t0.elapsed();
            let arrived = tokio::time::timeout(PUSH_TIMEOUT, async {
                while let Some((id, at)) = rx.recv().await {
                    if id == cmid {
                        return Some(at);
                    }
                }
                None
            })
            .await;
            let at = match arrived {
                Ok(Some(at)) => at,
                Ok(None) => bail!("push case: the subscriber stopped at message {i}"),
                Err(_) => bail!("push case: message {i} was not pushed within {PUSH_TIMEOUT:?}"),
            };
            if i >= WARMUP_PIPE {
                record(&mut ack, acked);
                record(&mut push, at.saturating_duration_since(t0));
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() && reader.is_finished() {
        if let Ok(Err(e)) = reader.await {
            return Err(e.context("push case"));
        }
    } else {
        reader.abort();
    }
    result?;
    Ok((push, ack))
}

/// Like [`grpc_sender`], with the client message id given by the caller.
fn grpc_sender_with_id(
    dev: &Device,
    conv: &[u8],
    text: &Arc<str>,
) -> impl FnMut(Vec<u8>) -> SendFut {
    let (dev, conv, text) = (dev.clone(), conv.to_vec(), text.clone());
    move |cmid| {
        let req = dev.req(v1::SendRequest {
            conv_id: conv.clone(),
            client_msg_id: cmid,
            kind: v1::MessageKind::Text as i32,
            body: text.as_bytes().to_vec(),
        });
        let mut api = dev.api.clone();
        Box::pin(async move {
            api.send(req)
                .await
                .map(|_| ())
                .map_err(|s| anyhow::anyhow!("send: {} {}", code(&s), s.message()))
        })
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let dur = Duration::from_secs_f64(args.seconds);
    let node_bin = process::binary("bongsu-node")?;
    let gw_bin = process::binary("bongsu-gateway")?;
    let started = Instant::now();
    let note = |what: &str| {
        eprintln!(
            "bench-gateway: {:>6.1} s  {what}",
            started.elapsed().as_secs_f64()
        )
    };

    let _turn = turn::take_turn("bench-gateway").await?;
    let nodes_dir = args.dir.join("nodes");
    if nodes_dir.exists() {
        fs::remove_dir_all(&nodes_dir).with_context(|| format!("wipe {}", nodes_dir.display()))?;
    }
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    for dc in 1..=DCS {
        let _ = fs::remove_file(args.dir.join(format!("gw{dc}.log")));
    }

    let spec = Spec::new(DCS, 1).shards(SHARDS).binary(&node_bin);
    let cluster = Cluster::start_in("bench-gateway", spec, &nodes_dir)
        .await
        .context("start a three-datacenter cluster")?;
    let node_addrs: Vec<String> = cluster.api_addrs().into_iter().map(|(_, a)| a).collect();
    note(&format!(
        "{DCS} nodes up, {SHARDS} shards x {DCS} replicas; logs in {}/n<id>/",
        nodes_dir.display()
    ));

    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(SEND_TIMEOUT)
        .build()?;
    let no_limits = ["--user-rate=0", "--ip-rate=0", "--auth-rate-per-min=0"].map(String::from);
    let gateways = start_gateways(&gw_bin, &args.dir, DCS, &node_addrs, &no_limits, None).await?;
    note(&format!(
        "{DCS} gateways ready (rate limits off), logs in {}/gw<d>.log",
        args.dir.display()
    ));
    let (gw1, gw2) = (gateways[0].grpc_url.clone(), gateways[1].grpc_url.clone());
    let probe = CpuProbe {
        gateway: gateways[0]
            .pid()
            .context("the dc1 gateway is not running")?,
        nodes: cluster.nodes.iter().filter_map(|n| n.pid()).collect(),
        me: std::process::id(),
        ticks_per_sec: process::clock_ticks_per_sec(),
    };

    // Users (argon2 on sign-up: a few at a time) and one conversation per sender.
    let users = args.concurrency.clamp(1, MAX_USERS);
    let mut devs: Vec<Device> = Vec::new();
    for chunk in (0..users).collect::<Vec<_>>().chunks(4) {
        let ups = chunk
            .iter()
            .map(|i| sign_up(&gw1, format!("bench_user_{i}")));
        for d in futures::future::join_all(ups).await {
            devs.push(d?);
        }
    }
    let mut convs: Vec<Vec<u8>> = Vec::new();
    for i in 0..args.concurrency {
        let owner = &devs[i % users];
        convs.push(create_group(owner, conv_on_shard(i as u32 % SHARDS), vec![]).await?);
    }
    // Push: a sender on dc1, a second user who listens on dc2.
    let listener = sign_up(&gw2, "bench_listener".to_string()).await?;
    let push_conv = create_group(&devs[0], conv_on_shard(1), vec![listener.user.clone()]).await?;
    note(&format!(
        "{users} users, {} conversations over {SHARDS} shards; {BODY_BYTES}-byte text messages, {:.1} s per case",
        convs.len(),
        args.seconds
    ));

    let text: Arc<str> = body().into();
    let writer = NodeWriter::connect(&node_addrs).await?;

    // What the processes burn with nothing sent: background work shows up in every case.
    let cpu = probe.mark();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = probe.since(&cpu);
    println!("bench-gateway: case=idle seconds=1 {idle}");
    let idle_nodes: f64 = idle
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("cpu_nodes_pct="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if idle_nodes > 50.0 {
        println!(
            "warning: the nodes burn {idle_nodes:.0} % of a core with nothing sent; every figure of this run is skewed by it"
        );
    }

    let (mut node_seq, mut node_p50, mut node_pipe) = (f64::NAN, f64::NAN, f64::NAN);
    // 1. Node direct, sequential: the reference.
    if args.runs("node-seq") {
        let cpu = probe.mark();
        let o = measure(
            vec![node_sender(&writer, &devs[0], &convs[0], &text)],
            WARMUP_SEQ,
            dur,
        )
        .await?;
        let cpu = probe.since(&cpu);
        node_seq = o.msgs_per_sec();
        node_p50 = o.ms(0.5);
        report("node-seq", &o, node_seq, &format!(" {cpu}"));
    }

    // 2. Gateway gRPC, sequential, same conversation.
    if args.runs("grpc-seq") {
        let cpu = probe.mark();
        let o = measure(
            vec![grpc_sender(&devs[0], &convs[0], &text)],
            WARMUP_SEQ,
            dur,
        )
        .await?;
        let cpu = probe.since(&cpu);
        report(
            "grpc-seq",
            &o,
            node_seq,
            &format!(" overhead_p50_ms={:.3} {cpu}", o.ms(0.5) - node_p50),
        );
    }

    // Reference for the pipelined cases: the node API with the same senders.
    if args.runs("node-pipe") {
        let senders = (0..args.concurrency)
            .map(|i| node_sender(&writer, &devs[i % users], &convs[i], &text))
            .collect();
        let cpu = probe.mark();
        let o = measure(senders, WARMUP_PIPE, dur).await?;
        let cpu = probe.since(&cpu);
        node_pipe = o.msgs_per_sec();
        report(
            "node-pipe",
            &o,
            node_seq,
            &format!(" concurrency={} {cpu}", args.concurrency),
        );
    }

    // 3. Gateway gRPC, pipelined: each user's device has its own connection.
    if args.runs("grpc-pipe") {
        let senders = (0..args.concurrency)
            .map(|i| grpc_sender(&devs[i % users], &convs[i], &text))
            .collect();
        let cpu = probe.mark();
        let o = measure(senders, WARMUP_PIPE, dur).await?;
        let cpu = probe.since(&cpu);
        report(
            "grpc-pipe",
            &o,
            node_seq,
            &format!(
                " ratio_vs_node_pipe={:.3} concurrency={} {cpu}",
                o.msgs_per_sec() / node_pipe.max(1e-9),
                args.concurrency
            ),
        );
    }

    // 4. Gateway HTTP/JSON, pipelined (HTTP/1.1 keep-alive: one connection per sender).
    if args.runs("http-pipe") {
        let base = gateways[0].http_url.clone();
        let senders = (0..args.concurrency)
            .map(|i| http_sender(&http, &base, &devs[i % users], &convs[i], &text))
            .collect();
        let cpu = probe.mark();
        let o = measure(senders, WARMUP_PIPE, dur).await?;
        let cpu = probe.since(&cpu);
        report(
            "http-pipe",
            &o,
            node_seq,
            &format!(
                " ratio_vs_node_pipe={:.3} concurrency={} {cpu}",
                o.msgs_per_sec() / node_pipe.max(1e-9),
                args.concurrency
            ),
        );
    }

    // 5. Push: sender on dc1, subscriber on dc2.
    let mut failed = None;
    if args.runs("push") {
        let t0 = Instant::now();
        match push_case(&devs[0], &listener, &push_conv, &text, args.push_messages).await {
            Ok((push, ack)) => println!(
                "bench-gateway: case=push msgs={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} ack_p50_ms={:.3} ack_p99_ms={:.3} from=dc1 to=dc2 seconds={:.1}",
                push.len(),
                push.value_at_quantile(0.5) as f64 / 1000.0,
                push.value_at_quantile(0.99) as f64 / 1000.0,
                push.max() as f64 / 1000.0,
                ack.value_at_quantile(0.5) as f64 / 1000.0,
                ack.value_at_quantile(0.99) as f64 / 1000.0,
                t0.elapsed().as_secs_f64(),
            ),
            Err(e) => {
                println!("bench-gateway: case=push failed error={:?}", format!("{e:#}"));
                failed = Some(e);
            }
        }
    }

    for g in &gateways {
        let text = fs::read_to_string(&g.log).unwrap_or_default();
        let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
        let error = text.lines().filter(|l| l.contains(" ERROR ")).count();
        println!(
            "log: gateway={} warn={warn} error={error} path={}",
            g.id,
            g.log.display()
        );
    }
    note("done; stopping the gateways and nodes");
    drop(gateways);
    drop(cluster);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
