//! Named scenarios and the run that carries one out: start a cluster, start the workload,
//! inject the scenario's faults one after another, heal everything, stop the workload, read
//! back the final state, judge the history, and write the report.
//!
//! Scenarios compose: a scenario is a list of faults applied in turn
//! (`dc-partition,fsync-fail`), and the randomized mix ([`mix_plan`]) is a scenario whose faults
//! are drawn from a seed.

pub mod faults;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::check_all;
use crate::figures::{rto, rto_all, summary_line};
use crate::harness::{Cluster, Mode, Spec};
use crate::history::{FinalState, History};
use crate::report::{write_json, write_svg};
use crate::workload::{NodeClient, Recorder, Workload, WorkloadSpec};
pub use faults::{FaultKind, Target};

/// One step of a scenario: a fault, its target, and how long it is held.
#[derive(Clone, Debug)]
pub struct Step {
    pub kind: FaultKind,
    pub target: Target,
    pub hold: Duration,
}

/// What to run.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Faults in this order, with `gap` of plain workload between them.
    Fixed { steps: Vec<Step>, gap: Duration },
    /// Random faults drawn from the seed until `duration` has passed.
    Mix { duration: Duration },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub plan: Plan,
    /// Runs in this network mode whatever the run's mode is.
    pub mode: Option<Mode>,
}

/// The hold each fault gets in a named scenario: long enough for every shard to fail over and
/// for the writes on the other side to show.
fn default_hold(kind: FaultKind) -> Duration {
    match kind {
        FaultKind::DcKill | FaultKind::DcPartition | FaultKind::DcPause => Duration::from_secs(5),
        FaultKind::MetaLeaderKill | FaultKind::SlowDisk => Duration::from_secs(4),
        FaultKind::LeaderKills => Duration::from_secs(3),
        FaultKind::FsyncFail => Duration::from_secs(3),
        FaultKind::RollingRestart => Duration::ZERO,
    }
}

impl Scenario {
    /// A scenario of the named faults, in order (`dc-kill`, `dc-partition,fsync-fail`, …).
    pub fn named(spec: &str) -> Result<Scenario> {
        let mut steps = Vec::new();
        for name in spec
            .split([',', '+'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let kind = FaultKind::parse(name).with_context(|| {
                format!(
                    "unknown scenario {name:?}; known: {}",
                    FaultKind::ALL.map(FaultKind::name).join(", ")
                )
            })?;
            steps.push(Step {
                kind,
                target: Target::Busiest,
                hold: default_hold(kind),
            });
        }
        anyhow::ensure!(!steps.is_empty(), "no scenario named");
        Ok(Scenario {
            name: spec.replace([',', '+'], "+"),
            plan: Plan::Fixed {
                steps,
                gap: Duration::from_secs(3),
            },
            mode: None,
        })
    }

    /// The scenarios `make chaos-ci` runs: every fault once, each on a fresh cluster, the
    /// three the issue names first. In netns mode the partition also runs in portable mode,
    /// so that the nodes' own fault rules are exercised too.
    pub fn ci(mode: Mode) -> Vec<Scenario> {
        let mut out: Vec<Scenario> = [
            "dc-kill",
            "dc-partition",
            "fsync-fail",
            "dc-pause",
            "meta-leader-kill",
            "leader-kills",
            "slow-disk",
            "rolling-restart",
        ]
        .iter()
        .map(|n| Scenario::named(n).expect("known names"))
        .collect();
        if mode == Mode::Netns {
            let mut p = Scenario::named("dc-partition").expect("a known name");
            p.name = "dc-partition-portable".into();
            p.mode = Some(Mode::Portable);
            out.insert(3, p);
        }
        out
    }

    pub fn mix(duration: Duration) -> Scenario {
        Scenario {
            name: "mix".into(),
            plan: Plan::Mix { duration },
            mode: None,
        }
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub mode: Mode,
    pub spec: Spec,
    /// Each scenario writes into `<out>/<scenario>/`.
    pub out: PathBuf,
    pub node_binary: PathBuf,
    pub seed: u64,
    /// Plain workload before the first fault and after the last.
    pub warmup: Duration,
    pub cooldown: Duration,
}

/// How a scenario went.
#[derive(Debug)]
pub struct RunResult {
    pub scenario: String,
    /// The `chaos: scenario=…` line.
    pub line: String,
    /// One line per fault: its write-unavailability window over the shards.
    pub rto_lines: Vec<String>,
    /// Everything that fails the run: checker violations and harness findings.
    pub problems: Vec<String>,
    pub dir: PathBuf,
    pub took: Duration,
    /// The main (first) fault's write-unavailability window over the shards, p99, in ms.
    pub rto_p99: Option<u64>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Bounds the whole of one scenario, so that a stuck cluster ends the run by itself.
fn time_limit(s: &Scenario) -> Duration {
    match &s.plan {
        Plan::Fixed { steps, .. } => Duration::from_secs(90 + 60 * steps.len() as u64),
        Plan::Mix { duration } => *duration + Duration::from_secs(180),
    }
}

/// Runs one scenario on a fresh cluster (see the module docs).
pub async fn run(s: &Scenario, cfg: &RunConfig) -> Result<RunResult> {
    let dir = cfg.out.join(&s.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("remove the previous run in {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let limit = time_limit(s);
    match tokio::time::timeout(limit, run_in(s, cfg, &dir)).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!(
            "scenario {} did not finish within {limit:?}; node logs are in {}",
            s.name,
            dir.display()
        ),
    }
}

async fn run_in(s: &Scenario, cfg: &RunConfig, dir: &Path) -> Result<RunResult> {
    let mode = s.mode.unwrap_or(cfg.mode);
    let started = Instant::now();
    let epoch = Instant::now();
    let say = |line: &str| eprintln!("chaos: [{:>7.3}s] {line}", epoch.elapsed().as_secs_f64());
    say(&format!(
        "scenario {}: {} dc x {} nodes, {} shards, {} mode, seed {}, in {}",
        s.name,
        cfg.spec.dcs,
        cfg.spec.nodes_per_dc,
        cfg.spec.shards,
        mode.name(),
        cfg.seed,
        dir.display()
    ));
    let mut cluster = Cluster::start(
        cfg.spec.clone(),
        mode,
        &dir.join("nodes"),
        &cfg.node_binary,
        epoch,
    )
    .await
    .context("start the cluster")?;
    say(&format!(
        "cluster up: every group has a leader known to its replicas ({} ms)",
        started.elapsed().as_millis()
    ));

    let recorder = Arc::new(Recorder::new(epoch));
    let client = Arc::new(NodeClient::new(
        &cluster.api_addrs(),
        cfg.spec.shards,
        Duration::from_millis(2500),
        Duration::from_millis(600),
    )?);
    let wspec = WorkloadSpec::new(cfg.spec.shards, cfg.seed);
    let mut workload = Workload::start(client, wspec.clone(), recorder.clone())
        .await
        .context("start the workload")?;
    workload.subscribe_shards(&cluster.api_addrs())?;
    say(&format!(
        "workload: {} writers, {} readers, {} shard subscribers, 1 non-member prober, {} conversations over {} shards",
        wspec.writers(),
        wspec.readers,
        cfg.spec.shards,
        workload.convs.len(),
        cfg.spec.shards
    ));
    workload
        .wait_all_writing(Duration::from_secs(1), Duration::from_secs(20))
        .await
        .context("wait for every shard to take writes")?;
    tokio::time::sleep(cfg.warmup).await;

    let mut faults = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut expected_exits: Vec<(u64, u64)> = Vec::new();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    {
        let mut env = faults::Env {
            cluster: &mut cluster,
            workload: &workload,
            faults: &mut faults,
            problems: &mut problems,
            expected_exits: &mut expected_exits,
            rng: &mut rng,
        };
        match &s.plan {
            Plan::Fixed { steps, gap } => {
                for (i, step) in steps.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(*gap).await;
                    }
                    env.apply(step.kind, step.target, step.hold).await?;
                }
            }
            Plan::Mix { duration } => {
                let end = epoch + *duration;
                // Leave room after the last fault for the cooldown.
                while Instant::now() + Duration::from_secs(10) < end {
                    let kind = FaultKind::ALL[env.rng.random_range(0..FaultKind::ALL.len())];
                    let target = env.random_target(kind);
                    let hold = Duration::from_millis(env.rng.random_range(2000..=6000));
                    env.say(&format!(
                        "mix: next fault {} (target {target:?}, hold {} ms)",
                        kind.name(),
                        hold.as_millis()
                    ));
                    env.apply(kind, target, hold).await?;
                    tokio::time::sleep(Duration::from_millis(env.rng.random_range(1500..=4000)))
                        .await;
                }
            }
        }
    }

    // Heal whatever is left, let the workload run on, and check that every shard takes
    // writes again.
    cluster.heal_all().await.context("heal the cluster")?;
    tokio::time::sleep(cfg.cooldown).await;
    if let Err(e) = cluster.wait_settled(Duration::from_secs(30)).await {
        problems.push(format!("the cluster did not settle after healing: {e:#}"));
    }
    if let Err(e) = workload
        .wait_all_writing(Duration::from_secs(1), Duration::from_secs(20))
        .await
    {
        problems.push(format!(
            "writes did not resume everywhere after healing: {e:#}"
        ));
    }
    workload.stop().await;
    let (acked, unacked, reads_ok, reads_failed) = recorder.counts();
    say(&format!("workload stopped: {acked} sends acked, {unacked} not, {reads_ok} reads ok, {reads_failed} not"));

    // The final state: every conversation read in full from its leader, every replica's digest.
    let logs = workload
        .final_logs(Duration::from_secs(30))
        .await
        .context("read the final logs")?;
    let (replicas, unsettled) = cluster.replica_digests(Duration::from_secs(30)).await;
    if !unsettled.is_empty() {
        say(&format!(
            "replicas did not reach one applied index: {}",
            unsettled.join("; ")
        ));
    }

    // Nodes that stopped by themselves are a problem unless a fault asked for it.
    cluster.poll_exits();
    for e in cluster.exits.iter().filter(|e| !e.expected) {
        let allowed = expected_exits
            .iter()
            .any(|(id, from)| *id == e.node && e.noticed_ms >= *from);
        if !allowed {
            problems.push(format!(
                "{} at {} ms without being asked to",
                e.describe(),
                e.noticed_ms
            ));
        }
    }

    let history = History {
        scenario: s.name.clone(),
        seed: cfg.seed,
        faults,
        ops: recorder.take_ops(),
        final_state: FinalState { logs, replicas },
    };
    let report = check_all(&history);
    let line = summary_line(&history, &report);
    let rto_lines: Vec<String> = rto_all(&history)
        .iter()
        .map(|r| {
            let show = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
            format!(
                "  rto: fault={} target={} at_ms={} shards={} rto_ms_p50={} rto_ms_p99={} rto_ms_max={} unrecovered={}",
                r.fault,
                r.target,
                r.start,
                r.shards.len(),
                show(r.p50_ms),
                show(r.p99_ms),
                show(r.max_ms),
                r.unrecovered
            )
        })
        .collect();
    if report.summary.acked == 0 {
        problems.push("the workload got no send acknowledged".into());
    }
    problems.extend(report.violations.iter().map(|v| v.to_string()));
    for r in rto_all(&history) {
        if r.unrecovered > 0 {
            problems.push(format!(
                "fault {} {}: {} shard(s) never took a write again",
                r.fault, r.target, r.unrecovered
            ));
        }
    }
    write_json(&dir.join("report.json"), &history, &report)?;
    write_svg(&dir.join("timeline.svg"), &history, &report)?;
    if problems.is_empty() {
        cluster.remove_data();
    } else {
        eprintln!("{}", cluster.log_tails(30));
    }
    drop(cluster);
    Ok(RunResult {
        scenario: s.name.clone(),
        line,
        rto_lines,
        problems,
        dir: dir.to_path_buf(),
        took: started.elapsed(),
        rto_p99: history.faults.first().and_then(|f| rto(&history, f).p99_ms),
    })
}
