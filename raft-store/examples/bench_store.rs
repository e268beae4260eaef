//! `make bench-store`: how close the store's durable appends come to the disk's sync rate.
//!
//! One run measures, on the disk that holds `--dir`:
//! 1. the raw sync rate: 256-byte overwrites of a preallocated file with one `fdatasync` each,
//!    which is the ceiling for a store that syncs once per entry;
//! 2. the store's durable append throughput and latency with 256-byte message bodies, for
//!    each `--groups` count, every group appending one entry at a time and waiting for it;
//! 3. what a stored message costs on disk: appends of 256 bytes (random printable text) to one
//!    conversation applied to two stores side by side, one that never prunes and one where the
//!    leader's `Prune` entries follow the appends (retention: dedup keys and events pruned
//!    once the 24 h dedup window has passed, on a simulated clock of `--disk-ms-between`
//!    milliseconds per message); at each count of `--disk-messages` both logs are purged,
//!    both stores compacted, and their SST bytes divided by the count.
//!
//! The ratio of the two says whether group commit works: one group can at best come near the
//! raw rate (one entry per sync), while many concurrent groups should share each sync and go
//! well past it.
//! Both are measured in the same run because the raw rate of a shared or virtual disk drifts
//! from hour to hour, and a ratio against yesterday's number means little.
//!
//! The last lines of output are one summary per case, in a fixed format that scripts parse:
//! `bench-store: groups=G appends_per_sec=N p50_ms=X p99_ms=Y syncs_per_sec_raw=F ratio=R`.
//! Targets are reported but never fail the run: this is a benchmark, not a test.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, DeviceId, MessageKind, UserId};
use bongsu_raft_store::messaging::{AppendMessage, CreateConversation, Prune, DEDUP_WINDOW_MS};
use bongsu_raft_store::{
    Command, CommandResult, Entry, LogStore, StateMachineStore, Store, StoreOptions, WriterStats,
};
use clap::Parser;
use hdrhistogram::Histogram;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

// The node binary uses mimalloc too: the writer thread frees buffers that tokio threads
// allocated, which glibc's allocator handles slowly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORD_BYTES: usize = 256;
/// Large enough that the overwrites do not keep hitting the same few blocks in a drive cache,
/// small enough to allocate in well under a second.
const RAW_FILE_BYTES: u64 = 64 << 20;
/// Latencies are recorded in microseconds; anything beyond a minute is a stall worth
/// clamping rather than a number to report precisely.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(about = "Raw fdatasync rate of a disk against the store's durable append rate")]
struct Args {
    /// Directory on the disk to measure; scratch files and stores are created and removed
    /// under it.
    #[arg(long, default_value = "data/bench-store")]
    dir: PathBuf,
    /// Measured seconds per case (the raw sync rate and each group count).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds each store case runs before measuring, so RocksDB's first WAL file, memtable
    /// allocation and the thread pool are not counted.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Group counts to measure, one store case each.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    groups: Vec<usize>,
    /// Message counts at which the disk-cost case measures, in increasing order (`0` skips
    /// the case).
    #[arg(long, value_delimiter = ',', default_value = "50000,100000,200000")]
    disk_messages: Vec<u64>,
    /// Simulated milliseconds between two messages of the disk-cost case: the dedup window
    /// (24 h) then holds 86,400,000 / this many messages, whose dedup keys and events are kept
    /// by retention.
    #[arg(long, default_value_t = 60_000)]
    disk_ms_between: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.warmup >= 0.0, "--warmup must not be negative");
    anyhow::ensure!(
        !args.groups.is_empty() && !args.groups.contains(&0),
        "--groups must be positive counts"
    );
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let measured = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);

    let raw = raw_sync_rate(&args.dir.join("raw"), measured)?;
    println!(
        "raw: {} syncs of {RECORD_BYTES} B in {:.2} s: {:.0} syncs/s, p50 {:.3} ms, p99 {:.3} ms",
        raw.syncs,
        raw.elapsed.as_secs_f64(),
        raw.per_sec(),
        ms(raw.latency.value_at_quantile(0.50)),
        ms(raw.latency.value_at_quantile(0.99)),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    let mut cases = Vec::new();
    for &groups in &args.groups {
        let path = args.dir.join(format!("store-g{groups}"));
        let case = runtime.block_on(store_case(&path, groups, warmup, measured))?;
        let writer = case.writer;
        println!(
            "store: groups={groups} {} appends in {:.2} s; writer: {} synced batches, {:.1} appends/fsync, {:.0} fsyncs/s",
            case.appends,
            case.elapsed.as_secs_f64(),
            writer.batches,
            writer.requests as f64 / writer.batches.max(1) as f64,
            writer.batches as f64 / case.elapsed.as_secs_f64(),
        );
        cases.push(case);
    }

    // The ratio uses the rate measured before the cases, as specified; this second, shorter
    // look only shows whether the disk itself changed speed meanwhile (on shared virtual disks
    // it can move by half within minutes), in which case the ratios deserve a rerun.
    let recheck = raw_sync_rate(&args.dir.join("raw"), measured.min(Duration::from_secs(1)))?;
    let drift = recheck.per_sec() / raw.per_sec() - 1.0;
    println!(
        "raw-recheck: {:.0} syncs/s after the store cases ({:+.0}% against the rate the ratios use){}",
        recheck.per_sec(),
        drift * 100.0,
        if drift.abs() > 0.2 { "; the disk's speed drifted, ratios are uncertain" } else { "" },
    );

    // Targets from the issue that asked for this benchmark, derived from the peers (etcd, NATS
    // JetStream) measured on the same kind of machine.
    for case in &cases {
        let ratio = case.per_sec() / raw.per_sec();
        let p99 = ms(case.latency.value_at_quantile(0.99));
        let verdict = match case.groups {
            1 => Some((
                ratio >= 0.5,
                "ratio >= 0.5".to_string(),
                format!("ratio {ratio:.2}"),
            )),
            64 => Some((
                ratio >= 8.0 && p99 < 5.0,
                "ratio >= 8 and p99 < 5 ms".to_string(),
                format!("ratio {ratio:.2}, p99 {p99:.3} ms"),
            )),
            _ => None,
        };
        match verdict {
            Some((met, want, got)) => {
                println!(
                    "target: groups={} {} ({want}; got {got})",
                    case.groups,
                    if met { "met" } else { "missed" }
                )
            }
            None => println!("target: groups={} none set", case.groups),
        }
    }
    let checkpoints: Vec<u64> = args
        .disk_messages
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .collect();
    anyhow::ensure!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "--disk-messages must be increasing counts"
    );
    anyhow::ensure!(
        args.disk_ms_between > 0,
        "--disk-ms-between must be positive"
    );
    let disk = if checkpoints.is_empty() {
        Vec::new()
    } else {
        let d = runtime.block_on(disk_case(&args.dir, &checkpoints, args.disk_ms_between))?;
        for p in &d {
            for (mode, r) in [("kept", &p.kept), ("pruned", &p.pruned)] {
                println!(
                    "disk: {} messages of {RECORD_BYTES} B applied, the log purged, {mode}: {} B in SST files ({})",
                    p.messages,
                    r.total(),
                    r.by_cf
                        .iter()
                        .map(|(cf, b)| format!("{cf} {b} B"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
        d
    };
    for case in &cases {
        println!(
            "bench-store: groups={} appends_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} syncs_per_sec_raw={:.1} ratio={:.2}",
            case.groups,
            case.per_sec(),
            ms(case.latency.value_at_quantile(0.50)),
            ms(case.latency.value_at_quantile(0.99)),
            raw.per_sec(),
            case.per_sec() / raw.per_sec(),
        );
    }
    let window = DEDUP_WINDOW_MS / args.disk_ms_between;
    for p in &disk {
        // `none`: messages, their dedup keys and their events all stay, the cost of a message
        // whose bookkeeping is kept forever. `pruned`: dedup keys and events older than the
        // dedup window are gone, so only the last `window` messages still carry them.
        println!(
            "bench-store: disk_bytes_per_message={:.1} messages={} body_bytes={RECORD_BYTES} retention=none",
            p.kept.total() as f64 / p.messages as f64,
            p.messages,
        );
        println!(
            "bench-store: disk_bytes_per_message={:.1} messages={} body_bytes={RECORD_BYTES} retention=pruned window_messages={window}",
            p.pruned.total() as f64 / p.messages as f64,
            p.messages,
        );
    }
    std::io::stdout().flush().context("flush stdout")?;
    Ok(())
}

struct DiskResult {
    by_cf: Vec<(&'static str, u64)>,
}

impl DiskResult {
    fn total(&self) -> u64 {
        self.by_cf.iter().map(|(_, b)| b).sum()
    }
}

/// Both stores measured after the same messages.
struct DiskPoint {
    messages: u64,
    kept: DiskResult,
    pruned: DiskResult,
}

/// One store of the disk-cost case: a group's log and state machine, fed entry by entry.
struct DiskStore {
    store: Arc<Store>,
    log: LogStore,
    sm: StateMachineStore,
    next: u64,
    last: Option<LogId<u64>>,
}

impl DiskStore {
    fn open(path: &Path) -> Result<Self> {
        remove_stale(path)?;
        let store = Store::open(path, StoreOptions::default())
            .with_context(|| format!("open store at {}", path.display()))?;
        let group = 1;
        Ok(Self {
            log: store.log_store(group),
            sm: store.state_machine(group, bongsu_raft_store::SmConfig::default()),
            store,
            next: 1,
            last: None,
        })
    }

    /// Appends the commands to the log (durably) and applies them, as a replica does.
    async fn run(&mut self, cmds: Vec<Command>) -> Result<Vec<CommandResult>> {
        let entries: Vec<Entry> = cmds
            .into_iter()
            .map(|cmd| {
                let e = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next),
                    payload: EntryPayload::Normal(cmd),
                };
                self.next += 1;
                e
            })
            .collect();
        self.last = self
            .log
            .append_durable(entries.clone())
            .await?
            .or(self.last);
        Ok(self.sm.apply_entries(entries).await?)
    }

    /// Prunes as a shard's leader would with its clock at `now_ms`: `Prune` entries cutting at
    /// their own index, while each says more is left.
    async fn prune(&mut self, now_ms: u64) -> Result<()> {
        loop {
            let cmd = Command::Prune(Prune {
                events_before: self.next,
                now_ms,
            });
            match self.run(vec![cmd]).await?.pop() {
                Some(CommandResult::Pruned { more: true, .. }) => {}
                Some(CommandResult::Pruned { more: false, .. }) => return Ok(()),
                other => anyhow::bail!("a prune answered {other:?}"),
            }
        }
    }

    /// Purges the log up to the last entry (as openraft does after a snapshot), flushes and
    /// compacts, and measures the SST files.
    async fn measure(&mut self) -> Result<DiskResult> {
        use openraft::storage::RaftLogStorage;
        if let Some(last) = self.last {
            self.log.purge(last).await.context("purge the log")?;
        }
        self.store.flush_and_compact()?;
        Ok(DiskResult {
            by_cf: self.store.sst_bytes()?,
        })
    }
}

/// What storing messages costs on disk, with and without retention: the same appends to one
/// conversation go through the log and the state machine of two stores as on a replica; one
/// store also applies `Prune` entries after every thousand appends, with the clock the
/// messages carry (`ms_between` apart). At each checkpoint both are measured.
async fn disk_case(dir: &Path, checkpoints: &[u64], ms_between: u64) -> Result<Vec<DiskPoint>> {
    let (kept_path, pruned_path) = (dir.join("store-disk"), dir.join("store-disk-pruned"));
    let result = async {
        let mut kept = DiskStore::open(&kept_path)?;
        let mut pruned = DiskStore::open(&pruned_path)?;
        let create = Command::CreateConversation(CreateConversation {
            conv_id: ConvId::from_u128(1),
            kind: ConversationKind::Group,
            creator: UserId::from_u128(1),
            members: vec![UserId::from_u128(2)],
            at_ms: 0,
        });
        kept.run(vec![create.clone()]).await?;
        pruned.run(vec![create]).await?;
        // Bodies of random printable text: repeated bytes would compress to almost nothing
        // and understate the cost.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut sent = 0u64;
        let mut points = Vec::new();
        for &target in checkpoints {
            while sent < target {
                let n = (target - sent).min(1000);
                let chunk: Vec<Command> = (sent + 1..=sent + n)
                    .map(|i| {
                        let mut m = append_message(0, i, i * ms_between);
                        for b in m.body.iter_mut() {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            *b = b' ' + (seed % 95) as u8;
                        }
                        Command::Append(m)
                    })
                    .collect();
                sent += n;
                kept.run(chunk.clone()).await?;
                pruned.run(chunk).await?;
                pruned.prune(sent * ms_between).await?;
            }
            points.push(DiskPoint {
                messages: sent,
                kept: kept.measure().await?,
                pruned: pruned.measure().await?,
            });
        }
        anyhow::Ok(points)
    }
    .await;
    let _ = fs::remove_dir_all(&kept_path);
    let _ = fs::remove_dir_all(&pruned_path);
    result
}

struct RawResult {
    syncs: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl RawResult {
    fn per_sec(&self) -> f64 {
        self.syncs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Overwrites consecutive 256-byte records of a preallocated file, one `fdatasync` each.
///
/// The file is written in full and fsynced first: overwriting allocated, initialised blocks
/// lets `fdatasync` skip the metadata (size, extent) update, so this measures the disk's
/// flush latency alone, which is also what RocksDB's recycled WAL files approach.
fn raw_sync_rate(dir: &Path, measured: Duration) -> Result<RawResult> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("sync.dat");
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        preallocate(&mut file, RAW_FILE_BYTES)
            .with_context(|| format!("preallocate {}", path.display()))?;

        let record = [0xa5u8; RECORD_BYTES];
        let mut latency = new_histogram();
        let mut offset = 0u64;
        let mut syncs = 0u64;
        let start = Instant::now();
        let end = start + measured;
        let mut now = start;
        while now < end {
            file.write_all_at(&record, offset)
                .context("write a raw record")?;
            file.sync_data().context("fdatasync the raw file")?;
            let done = Instant::now();
            record_us(&mut latency, done - now);
            now = done;
            syncs += 1;
            offset = (offset + RECORD_BYTES as u64) % RAW_FILE_BYTES;
        }
        Ok(RawResult {
            syncs,
            elapsed: now - start,
            latency,
        })
    })();
    // Remove the scratch file whether or not the measurement worked; a failure to remove it
    // is not worth hiding the measurement for.
    let _ = fs::remove_dir_all(dir);
    result
}

fn preallocate(file: &mut File, bytes: u64) -> Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < bytes {
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    file.sync_all()?;
    Ok(())
}

struct StoreResult {
    groups: usize,
    appends: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// What the group-commit writer did during the measured period only.
    writer: WriterStats,
}

impl StoreResult {
    fn per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `groups` concurrent appenders against a fresh store, each waiting for every append to
/// be durable before sending the next, as a Raft leader with one entry in flight per group
/// would.
async fn store_case(
    path: &Path,
    groups: usize,
    warmup: Duration,
    measured: Duration,
) -> Result<StoreResult> {
    remove_stale(path)?;
    let result = async {
        let store = Store::open(path, StoreOptions::default())
            .with_context(|| format!("open store at {}", path.display()))?;
        let start = Instant::now() + warmup;
        let end = start + measured;

        let mut tasks = Vec::with_capacity(groups);
        for g in 0..groups {
            let log = store.log_store(g as u64 + 1);
            tasks.push(tokio::spawn(async move {
                let mut latency = new_histogram();
                let mut appends = 0u64;
                let mut index = 1u64;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    log.append_durable([append_entry(g as u64, index)])
                        .await
                        .with_context(|| {
                            format!("append entry {index} of group {}", log.group())
                        })?;
                    let done = Instant::now();
                    // Count what completes inside the window, so throughput is completions per
                    // measured second whichever appends straddle its edges.
                    if done >= start && done < end {
                        record_us(&mut latency, done - sent);
                        appends += 1;
                    }
                    index += 1;
                }
                anyhow::Ok((latency, appends))
            }));
        }

        tokio::time::sleep_until(start.into()).await;
        let before = store.writer_stats();
        tokio::time::sleep_until(end.into()).await;
        let after = store.writer_stats();

        let mut latency = new_histogram();
        let mut appends = 0;
        for t in tasks {
            let (h, n) = t.await.context("join an appender task")??;
            latency.add(h).expect("histograms share bounds");
            appends += n;
        }
        let writer = WriterStats {
            batches: after.batches - before.batches,
            requests: after.requests - before.requests,
        };
        // Dropping the last handle joins the writer thread and closes RocksDB before the
        // directory goes away.
        drop(store);
        anyhow::Ok(StoreResult {
            groups,
            appends,
            elapsed: measured,
            latency,
            writer,
        })
    }
    .await;
    let _ = fs::remove_dir_all(path);
    result
}

/// Removes a store a previous, interrupted run left at `path`.
fn remove_stale(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path)
            .with_context(|| format!("remove the stale store at {}", path.display()))?;
    }
    Ok(())
}

/// A log entry carrying one 256-byte text message, the shape of a typical chat append.
fn append_entry(group: u64, index: u64) -> Entry {
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Append(append_message(group, index, at_ms))),
    }
}

/// One 256-byte text message in the group's conversation, its client message id made from
/// `n`.
fn append_message(group: u64, n: u64, at_ms: u64) -> AppendMessage {
    AppendMessage {
        conv_id: ConvId::from_u128(group as u128 + 1),
        sender: UserId::from_u128(1),
        device: DeviceId::from_u128(1),
        client_msg_id: ClientMsgId::from_u128(((group as u128) << 64) | n as u128),
        kind: MessageKind::Text,
        body: vec![b'x'; RECORD_BYTES],
        at_ms,
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid fixed histogram bounds")
}

fn record_us(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
