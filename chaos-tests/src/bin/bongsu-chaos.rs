//! `bongsu-chaos`: runs chaos scenarios against real `bongsu-node-chaos` processes in three
//! datacenters and judges what the workload saw.
//!
//! - `bongsu-chaos ci`: the scenarios `make chaos-ci` runs (every fault once);
//! - `bongsu-chaos run --scenario dc-partition,slow-disk`: named faults, in order;
//! - `bongsu-chaos mix --duration 120 --seed 42`: a randomized mix (`make chaos`);
//! - `bongsu-chaos check data/chaos/dc-kill/report.json`: re-judge a recorded history offline.
//!
//! Every scenario first measures the cluster's capacity (writers sending without a pause for
//! `--calibration-secs`) and then holds the workload to `--load-share` percent of it, in body
//! bytes per second; bodies follow the workload's size mix (up to the 64 KiB limit).
//!
//! Each scenario prints one line
//! `chaos: scenario=NAME acked=N lost=0 duplicated=0 reordered=0 rto_ms_p99=X rto_ms_max=Y
//! capacity_bytes_per_s=C capacity_msgs_per_s=M rate_bytes_per_s=R rate_msgs_per_s=S`
//! (and `catch_up_ms=T catch_up_bytes_per_s=B` for `dc-return-backlog`)
//! and writes `report.json` and `timeline.svg` into `<out>/<scenario>/`; the command fails if
//! any checker found a violation or the cluster did not recover.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bongsu_chaos::harness::{disk, netns, Mode, Spec};
use bongsu_chaos::scenarios::{self, FaultKind, RunConfig, RunResult, Scenario};
use bongsu_chaos::{check_all, figures, History};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bongsu-chaos",
    about = "Chaos scenarios against a three-datacenter bongsu cluster"
)]
struct Cli {
    /// Network mode: netns (root; datacenters as network namespaces), portable (loopback
    /// address groups, faults in the nodes' transport) or auto.
    #[arg(long, env = "BONGSU_CHAOS_MODE", default_value = "auto", global = true)]
    mode: String,
    /// Where each scenario writes `<out>/<scenario>/{report.json,timeline.svg,nodes/}`.
    #[arg(long, default_value = "data/chaos", global = true)]
    out: PathBuf,
    /// The node binary (with fault rules and failpoints armed); defaults to
    /// `bongsu-node-chaos` beside this executable.
    #[arg(long, env = "BONGSU_NODE_BIN", global = true)]
    node_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 3, global = true)]
    dcs: u8,
    #[arg(long, default_value_t = 2, global = true)]
    nodes_per_dc: u8,
    #[arg(long, default_value_t = 12, global = true)]
    shards: u32,
    /// Writers per shard (each with one send in flight).
    #[arg(long, default_value_t = bongsu_chaos::workload::DEFAULT_WRITERS_PER_SHARD, global = true)]
    writers_per_shard: u32,
    /// Seconds of sending without a pause that measure the cluster's capacity.
    #[arg(long, default_value_t = 4.0, global = true)]
    calibration_secs: f64,
    /// The share of the measured capacity (percent, in body bytes per second) the workload
    /// is held to afterwards.
    #[arg(long, default_value_t = 50, global = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    load_share: u32,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The CI scenarios: every fault once on a fresh cluster (dc-kill, dc-partition and
    /// fsync-fail first, then dc-return-backlog and disk-full), and in netns mode the
    /// partition again in portable mode.
    Ci {
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Named faults in order, on one cluster (comma-separated; `list` shows the names).
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// A randomized mix of every fault for a while.
    Mix {
        /// Seconds.
        #[arg(long, default_value_t = 120)]
        duration: u64,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Lists the faults.
    List,
    /// Re-runs the checkers on a recorded history (a report.json or a bare history).
    Check { file: PathBuf },
}

/// No scenario starts after this much of a run; each one is bounded by itself too. The `ci`
/// list takes about a quarter of an hour with calibrated loads and its minute-long outage.
const RUN_LIMIT: Duration = Duration::from_secs(2400);

fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// The node binary: the flag, or `bongsu-node-chaos` (failpoints armed) beside this
/// executable.
fn node_binary(flag: Option<PathBuf>) -> Result<PathBuf> {
    let Some(path) = flag else {
        return bongsu_testkit::process::binary("bongsu-node-chaos");
    };
    if !path.is_file() {
        bail!("no node binary at {} (--node-bin)", path.display());
    }
    Ok(path)
}

/// A link to the node binary under the output directory, so that a build writing a new
/// binary to the same path during the run does not
/// change what the run starts; a copy where a link cannot be made.
fn pin_binary(path: &Path, out: &Path) -> Result<PathBuf> {
    let dir = out.join(".bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let pinned = dir.join("bongsu-node-chaos");
    let _ = std::fs::remove_file(&pinned);
    if std::fs::hard_link(path, &pinned).is_err() {
        std::fs::copy(path, &pinned)
            .with_context(|| format!("copy {} to {}", path.display(), pinned.display()))?;
    }
    Ok(pinned)
}

/// Chaos runs take turns on a machine: they measure failover times, and netns mode uses one
/// address range.
fn take_turn() -> Result<std::fs::File> {
    bongsu_testkit::turn::lock(&std::env::temp_dir().join("bongsu-chaos.lock"), "chaos")
}

fn print_result(r: &RunResult) {
    println!("{}", r.line);
    for l in &r.rto_lines {
        println!("{l}");
    }
    eprintln!(
        "chaos: scenario {} {} in {:.1} s; report {}, plot {}",
        r.scenario,
        if r.passed() { "passed" } else { "FAILED" },
        r.took.as_secs_f64(),
        r.dir.join("report.json").display(),
        r.dir.join("timeline.svg").display()
    );
    if r.scenario == "dc-kill" || r.scenario == "dc-return-backlog" {
        // The target, printed and not asserted: speed depends on the machine.
        let met = match r.rto_p99 {
            Some(p99) if p99 < 1000 => format!("met ({p99} ms)"),
            Some(p99) => format!("missed ({p99} ms)"),
            None => "not measured".into(),
        };
        eprintln!(
            "chaos: {} target rto_ms_p99 < 1000 across all shards: {met}",
            r.scenario
        );
    }
    for p in r.problems.iter().take(40) {
        eprintln!("chaos:   problem: {p}");
    }
    if r.problems.len() > 40 {
        eprintln!(
            "chaos:   … and {} more problems (all in the report)",
            r.problems.len() - 40
        );
    }
}

async fn run_all(cli: Cli) -> Result<bool> {
    // Only commands that start clusters need a network mode.
    let (mode, note) = match cli.cmd {
        Cmd::List | Cmd::Check { .. } => (Mode::Portable, None),
        _ => Mode::choose(&cli.mode)?,
    };
    let (scenarios, seed): (Vec<Scenario>, u64) = match cli.cmd {
        Cmd::List => {
            for k in FaultKind::ALL {
                println!("{:<18} {}", k.name(), k.describe());
            }
            return Ok(true);
        }
        Cmd::Check { file } => {
            let h = History::load(&file).with_context(|| format!("load {}", file.display()))?;
            let report = check_all(&h);
            println!("{}", figures::summary_line(&h, &report));
            for v in &report.violations {
                println!("  {v}");
            }
            return Ok(report.is_clean());
        }
        Cmd::Ci { seed } => (Scenario::ci(mode), seed.unwrap_or_else(time_seed)),
        Cmd::Run { scenario, seed } => (
            vec![Scenario::named(&scenario)?],
            seed.unwrap_or_else(time_seed),
        ),
        Cmd::Mix { duration, seed } => (
            vec![Scenario::mix(Duration::from_secs(duration))],
            seed.unwrap_or_else(time_seed),
        ),
    };
    // The seed first, so that a failing run can be repeated.
    println!("chaos: seed={seed}");
    let node_bin = node_binary(cli.node_bin)?;
    if let Some(note) = note {
        eprintln!("chaos: note: {note}");
    }
    let _turn = take_turn()?;
    let node_bin = pin_binary(&node_bin, &cli.out)?;
    if mode == Mode::Netns {
        for gone in netns::clean_stale() {
            eprintln!("chaos: removed {gone} left by an earlier run");
        }
    }
    for gone in disk::clean_stale() {
        eprintln!("chaos: unmounted the {gone} left by an earlier run");
    }
    let cfg = RunConfig {
        mode,
        spec: Spec::new(cli.dcs, cli.nodes_per_dc).shards(cli.shards),
        out: cli.out,
        node_binary: node_bin,
        seed,
        warmup: Duration::from_secs(2),
        cooldown: Duration::from_secs(3),
        writers_per_shard: cli.writers_per_shard.max(1),
        calibration: Duration::from_secs_f64(cli.calibration_secs.clamp(0.5, 60.0)),
        load_share_percent: cli.load_share,
    };
    let started = Instant::now();
    let mut results = Vec::new();
    for s in &scenarios {
        if started.elapsed() > RUN_LIMIT {
            println!(
                "chaos: scenario={} FAILED: not started, the run took over {RUN_LIMIT:?}",
                s.name
            );
            return Ok(false);
        }
        match scenarios::run(s, &cfg).await {
            Ok(r) => {
                print_result(&r);
                results.push(r);
            }
            Err(e) => {
                println!("chaos: scenario={} FAILED: {e:#}", s.name);
                return Ok(false);
            }
        }
    }
    // The pinned binary would otherwise keep an old build alive on disk.
    let _ = std::fs::remove_file(&cfg.node_binary);
    let passed = results.iter().all(RunResult::passed);
    eprintln!(
        "chaos: {} scenario(s) in {:.1} s, {} mode, seed {seed}: {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        mode.name(),
        if passed { "all passed" } else { "FAILED" }
    );
    // The plain closing line test runners use, so CI logs read the same as nextest's.
    let ok = results.iter().filter(|r| r.passed()).count();
    println!("chaos: {ok} passed, {} failed", results.len() - ok);
    Ok(passed)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos: listen for SIGTERM: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // On Ctrl-C or SIGTERM the run is dropped, which kills the nodes and removes the
    // namespaces and links it made.
    let outcome = tokio::select! {
        r = run_all(cli) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
