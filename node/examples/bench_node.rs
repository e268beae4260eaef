//! `make bench-node`: what idle Raft groups cost one node process.
//!
//! One run starts three real `bongsu-node` processes, one per datacenter (`127.0.1.1`,
//! `127.0.2.1`, `127.0.3.1`), initializes a cluster of `--groups - 1` shards with three
//! replicas each, so that every node hosts `--groups` groups (the shards and the meta group),
//! and waits until every group has a leader.
//! Then nothing is written: after `--settle` seconds, by which time every group should have
//! quiesced (see `node/src/quiesce.rs`), it measures each node's CPU time over `--seconds`
//! from `/proc/<pid>/stat` and its resident memory from `/proc/<pid>/status`.
//!
//! For context it also reports, labelled `node-busy-ramp:`, the CPU of the first `--ramp`
//! seconds right after the last group elected its leader, when most groups still heartbeat.
//! Groups that were elected early may already be quiet by then, so this understates what
//! 1,000 groups that never quiesce would cost; it is informational only.
//!
//! The last lines of output have a fixed format that scripts parse:
//! `node: id=N cpu_pct=X rss_mb=Y ...` per node, then
//! `node-idle: groups=G cpu_pct=X rss_mb=Y` with the maximum over the nodes, then `target:`.
//! The target (under 5 % of a core per node) is reported but never fails the run: this is a
//! benchmark, not a test.
//!
//! Each node keeps its data and its log in `n<id>/` under `--dir`; those are wiped at the
//! start and kept afterwards for a look at the logs. The nodes are killed when the run ends,
//! however it ends, and die with this process if it is killed.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::ClusterStatus;
use bongsu_testkit::cluster::{Cluster, NodeProc, Site, Spec};
use bongsu_testkit::process;
use clap::Parser;

/// The target: one node hosting 1,000 idle groups uses under 5 % of a core.
const TARGET_CPU_PCT: f64 = 5.0;
/// Datacenters, one node each; every group has one voter per datacenter.
const NODES: u8 = 3;
/// A status call covers every hosted group, so it is allowed more than a ping.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Resolution of the peak CPU figure within the measured window.
const PEAK_SLICE: Duration = Duration::from_secs(1);
/// How many WARN/ERROR lines of each node's log are shown.
const LOG_SAMPLES: usize = 3;

#[derive(Parser, Debug)]
#[command(about = "CPU and memory of a node process hosting many idle Raft groups")]
struct Args {
    /// Directory for the nodes' data and logs (`n<id>/`, wiped at start, kept afterwards).
    #[arg(long, default_value = "data/bench-node")]
    dir: PathBuf,
    /// Groups per node: the meta group plus `groups - 1` shards, each with a voter on every node.
    #[arg(long, default_value_t = 1000)]
    groups: u32,
    /// Seconds of idle CPU measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds between the last group electing its leader and the idle measurement, for
    /// every group to quiesce.
    #[arg(long, default_value_t = 8.0)]
    settle: f64,
    /// Seconds of the settle time, from its start, reported as `node-busy-ramp:` (0: none).
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds to wait for every group to have a leader after init.
    #[arg(long, default_value_t = 45.0)]
    leader_timeout: f64,
    /// The node binary; by default `bongsu-node` in the directory above this example's.
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

/// Cumulative CPU time and resident memory of one process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_ticks: u64,
}

/// A `kB` field of `/proc/<pid>/status`, or a plain count such as `Threads`.
fn status_field(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .with_context(|| format!("{path} has no {key}"))?;
    let value = line
        .split_whitespace()
        .next()
        .with_context(|| format!("{path}: {key} is empty"))?;
    value
        .parse()
        .with_context(|| format!("parse {path}: {key} {value:?}"))
}

fn sample(pid: u32) -> Result<Sample> {
    Ok(Sample {
        at: Instant::now(),
        cpu_ticks: process::cpu_ticks(pid)?,
    })
}

/// Percent of one core used between two samples.
fn cpu_pct(a: Sample, b: Sample, ticks_per_sec: f64) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_sec / wall * 100.0
}

fn samples(cluster: &Cluster) -> Result<Vec<Sample>> {
    cluster.nodes.iter().map(|n| sample(pid(n)?)).collect()
}

fn pid(n: &NodeProc) -> Result<u32> {
    n.pid()
        .with_context(|| format!("node {} is not running", n.id))
}

fn sleep_secs(s: f64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs_f64(s.max(0.0)))
}

/// The node binary: `--node-bin`, or `bongsu-node` beside this example's directory.
fn node_bin(args: &Args) -> Result<PathBuf> {
    match &args.node_bin {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => bail!("no node binary at {} (--node-bin)", p.display()),
        None => process::binary("bongsu-node"),
    }
}

/// Every node's status; a node that does not answer is an error.
async fn statuses(cluster: &mut Cluster) -> Result<BTreeMap<u64, ClusterStatus>> {
    let st = cluster.statuses().await;
    let missing: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| !st.contains_key(id))
        .collect();
    ensure!(missing.is_empty(), "nodes {missing:?} do not answer status");
    Ok(st)
}

/// (group, node) → (leader, term, commit index), to tell whether anything happened in a window.
fn group_states(st: &BTreeMap<u64, ClusterStatus>) -> BTreeMap<(u64, u64), (u64, u64, u64)> {
    st.iter()
        .flat_map(|(id, s)| {
            s.groups
                .iter()
                .map(move |g| ((g.group, *id), (g.leader, g.term, g.commit_index)))
        })
        .collect()
}

/// How many WARN and ERROR lines a node's log has, and a few of them.
fn scan_log(n: &NodeProc) -> (usize, usize, Vec<String>) {
    let text = fs::read_to_string(n.log_path()).unwrap_or_default();
    let (mut warn, mut error, mut shown) = (0, 0, Vec::new());
    for line in text.lines() {
        // tracing's fmt layer: `<timestamp>  WARN <target>: ...` (level padded to five).
        let level = line.split_whitespace().nth(1).unwrap_or("");
        match level {
            "WARN" => warn += 1,
            "ERROR" => error += 1,
            _ => continue,
        }
        if shown.len() < LOG_SAMPLES {
            shown.push(line.chars().take(240).collect());
        }
    }
    (warn, error, shown)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.groups >= 2,
        "--groups must be at least 2 (the meta group and one shard)"
    );
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    ensure!(
        args.settle >= 0.0 && args.ramp >= 0.0,
        "--settle and --ramp must not be negative"
    );
    let bin = node_bin(&args)?;
    let started = Instant::now();
    let ticks = process::clock_ticks_per_sec();
    let shards = args.groups - 1;
    let note = |what: &str| {
        eprintln!(
            "bench-node: {:>6.1} s  {what}",
            started.elapsed().as_secs_f64()
        )
    };

    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    for id in 1..=NODES {
        let dir = args.dir.join(format!("n{id}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("wipe {}", dir.display()))?;
        }
    }
    let spec = Spec::new(NODES, 1)
        .shards(shards)
        .binary(&bin)
        .log_filter("info,openraft=warn,h2=warn,tower=warn")
        .status_timeout(STATUS_TIMEOUT);
    let mut cluster = Cluster::create("bench-node", spec, &args.dir, Arc::new(Site::loopback))?;
    cluster.boot().await?;
    note(&format!(
        "{NODES} nodes up ({}), logs in {}/n<id>/node.log",
        bin.display(),
        args.dir.display()
    ));
    cluster
        .init_within(Duration::from_secs_f64(args.leader_timeout))
        .await
        .context("initialize and wait for every group to elect a leader")?;
    let st = statuses(&mut cluster).await?;
    let all_led = Instant::now();
    let ramp_from = samples(&cluster)?;
    let hosted: BTreeMap<u64, usize> = st.iter().map(|(id, s)| (*id, s.groups.len())).collect();
    note(&format!(
        "every one of {} groups has a leader; settling {} s",
        args.groups, args.settle
    ));

    let ramp = args.ramp.min(args.settle);
    if ramp > 0.0 {
        sleep_secs(ramp).await;
        let to = samples(&cluster)?;
        let pct: Vec<f64> = ramp_from
            .iter()
            .zip(&to)
            .map(|(a, b)| cpu_pct(*a, *b, ticks))
            .collect();
        let max = pct.iter().cloned().fold(0.0, f64::max);
        let per: Vec<String> = cluster
            .nodes
            .iter()
            .zip(&pct)
            .map(|(n, p)| format!("n{}={p:.2}", n.id))
            .collect();
        println!(
            "node-busy-ramp: groups={} seconds={ramp:.1} cpu_pct={max:.2} ({}) (informational)",
            args.groups,
            per.join(" ")
        );
    }
    tokio::time::sleep_until((all_led + Duration::from_secs_f64(args.settle)).into()).await;

    // Status calls cost the nodes CPU, so they are made just outside the measured window.
    let before = group_states(
        &statuses(&mut cluster)
            .await
            .context("status before the idle window")?,
    );
    note(&format!("measuring idle CPU for {} s", args.seconds));
    let first = samples(&cluster)?;
    let window_end = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut prev = first.clone();
    let mut peak = vec![0.0f64; cluster.nodes.len()];
    while Instant::now() < window_end {
        let left = window_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(PEAK_SLICE)).await;
        let now = samples(&cluster)?;
        for (i, (a, b)) in prev.iter().zip(&now).enumerate() {
            // A slice much shorter than a second is too coarse in clock ticks to be a peak.
            if b.at.duration_since(a.at) >= PEAK_SLICE / 2 {
                peak[i] = peak[i].max(cpu_pct(*a, *b, ticks));
            }
        }
        prev = now;
    }
    let last = prev;
    let mut rss_mb = Vec::new();
    let mut threads = Vec::new();
    for n in &cluster.nodes {
        let pid = pid(n)?;
        rss_mb.push(status_field(pid, "VmRSS")? as f64 / 1024.0);
        threads.push(status_field(pid, "Threads")?);
    }
    let after_st = statuses(&mut cluster)
        .await
        .context("status after the idle window")?;
    let after = group_states(&after_st);

    // Anything that moved during the window means the groups were not all idle.
    let (mut term_changes, mut leader_changes, mut commits) = (0, 0, 0);
    for (k, (leader, term, commit)) in &after {
        if let Some((l0, t0, c0)) = before.get(k) {
            term_changes += usize::from(term != t0);
            leader_changes += usize::from(leader != l0);
            commits += usize::from(commit != c0);
        }
    }
    // The first election of a group is term 1; a higher term is an election that startup load
    // (missed heartbeats, votes split) made necessary.
    let mut max_term: BTreeMap<u64, u64> = BTreeMap::new();
    for ((group, _), (_, term, _)) in &after {
        let t = max_term.entry(*group).or_default();
        *t = (*t).max(*term);
    }
    let reelected = max_term.values().filter(|t| **t > 1).count();
    let highest = max_term.values().copied().max().unwrap_or(0);
    println!(
        "idle-check: replicas={} term_changes={term_changes} leader_changes={leader_changes} commit_advances={commits} (all 0 when idle); \
         startup: groups_reelected={reelected} max_term={highest}",
        after.len()
    );
    for n in &cluster.nodes {
        let (warn, error, shown) = scan_log(n);
        println!(
            "log: id={} warn={warn} error={error} path={}",
            n.id,
            n.log_path().display()
        );
        for line in shown {
            println!("log:   {line}");
        }
    }

    let mut max_cpu = 0.0f64;
    let mut max_rss = 0.0f64;
    for (i, n) in cluster.nodes.iter().enumerate() {
        let cpu = cpu_pct(first[i], last[i], ticks);
        let groups = after_st.get(&n.id).map(|s| s.groups.len()).unwrap_or(0);
        let leads = after_st
            .get(&n.id)
            .map(|s| s.groups.iter().filter(|g| g.leader == n.id).count())
            .unwrap_or(0);
        println!(
            "node: id={} cpu_pct={cpu:.2} rss_mb={:.1} dc={} groups={groups} leads={leads} peak_1s_cpu_pct={:.1} threads={} rss_kb_per_group={:.0}",
            n.id,
            rss_mb[i],
            n.dc_name(),
            peak[i],
            threads[i],
            rss_mb[i] * 1024.0 / groups.max(1) as f64,
        );
        max_cpu = max_cpu.max(cpu);
        max_rss = max_rss.max(rss_mb[i]);
    }
    let min_hosted = hosted.values().copied().min().unwrap_or(0);
    if min_hosted != args.groups as usize {
        println!(
            "warning: asked for {} groups per node, but a node hosts only {min_hosted}",
            args.groups
        );
    }
    println!("node-idle: groups={min_hosted} cpu_pct={max_cpu:.2} rss_mb={max_rss:.1}");
    let met = if max_cpu < TARGET_CPU_PCT {
        "met"
    } else {
        "missed"
    };
    println!("target: idle cpu_pct < {TARGET_CPU_PCT:.0} per node with {} groups: {met} (max {max_cpu:.2})", args.groups);
    note("done; stopping the nodes");
    drop(cluster);
    Ok(())
}
