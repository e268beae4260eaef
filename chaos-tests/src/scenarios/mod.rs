//! Named scenarios and the run that carries one out: start a cluster, start the workload,
//! measure the cluster's capacity and hold the workload to half of it, inject the scenario's
//! faults one after another, heal everything, stop the workload, read back the final state,
//! judge the history, and write the report.
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
use crate::harness::{disk_full_node, Cluster, Mode, SmallDiskPlan, Spec, SMALL_DISK_BYTES};
use crate::history::{FinalState, History, Load, Ms, OpKind, Outcome};
use crate::report::{write_json, write_svg};
use crate::workload::{NodeClient, Recorder, Workload, WorkloadSpec};
use crate::Report;
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
        // A minute of writes for the datacenter to catch up on.
        FaultKind::DcReturnBacklog => Duration::from_secs(60),
        // From the moment the node stopped.
        FaultKind::DiskFull => Duration::from_secs(5),
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
            "dc-return-backlog",
            "disk-full",
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

    /// Whether the scenario may fill a disk, so that a node must get a small disk before it
    /// starts.
    pub fn needs_small_disk(&self) -> bool {
        match &self.plan {
            Plan::Fixed { steps, .. } => steps.iter().any(|s| s.kind == FaultKind::DiskFull),
            Plan::Mix { .. } => true,
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
    pub writers_per_shard: u32,
    /// How long writers send without a pause to measure the cluster's capacity.
    pub calibration: Duration,
    /// The share of the measured capacity (in body bytes per second) the workload is then
    /// held to.
    pub load_share_percent: u32,
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

/// Bounds the whole of one scenario, so that a stuck cluster ends the run by itself: start,
/// calibration, reading back and judging, plus per fault its hold and what it may wait for.
fn time_limit(s: &Scenario, cfg: &RunConfig) -> Duration {
    let base = Duration::from_secs(120) + cfg.calibration + cfg.warmup + cfg.cooldown;
    match &s.plan {
        Plan::Fixed { steps, .. } => {
            base + steps
                .iter()
                .map(|st| {
                    st.hold
                        + Duration::from_secs(60)
                        + match st.kind {
                            FaultKind::DcReturnBacklog => faults::BACKLOG_CATCH_UP,
                            FaultKind::DiskFull => faults::DISK_FULL_STOP_BOUND,
                            _ => Duration::ZERO,
                        }
                })
                .sum::<Duration>()
        }
        Plan::Mix { duration } => base + *duration + Duration::from_secs(180),
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
    let limit = time_limit(s, cfg);
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
    let started = Instant::now();
    let epoch = Instant::now();
    let mut cluster = start_cluster(s, cfg, dir, started, epoch).await?;
    let (recorder, mut workload, wspec) = start_workload(cfg, &cluster, epoch).await?;
    let (mut load, load_from) = calibrate(cfg, &workload, &wspec, epoch).await;
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
        inject(&mut env, &s.plan, epoch).await?;
    }

    heal(cfg, &mut cluster, &workload, &mut problems).await?;
    workload.stop().await;
    achieved_load(&recorder, &mut load, load_from, &wspec, epoch);
    let final_state = read_final_state(&workload, &mut cluster, epoch).await?;
    problems.extend(unexpected_exits(&mut cluster, &expected_exits));

    let history = History {
        scenario: s.name.clone(),
        seed: cfg.seed,
        load: Some(load),
        faults,
        ops: recorder.take_ops(),
        final_state,
    };
    let report = check_all(&history);
    let line = summary_line(&history, &report);
    let rto_lines = rto_lines(&history);
    problems.extend(judge(&history, &report, wspec.mix.max));
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

/// Prints a progress line, stamped with the time since `epoch` (the run's clock, which the
/// history and the faults' lines use too).
fn say(epoch: Instant, line: &str) {
    eprintln!("chaos: [{:>7.3}s] {line}", epoch.elapsed().as_secs_f64());
}

/// Says what runs and starts its cluster in the scenario's network mode, returning once every
/// group has a leader known to its replicas. A scenario that may fill a disk gets a small one
/// for the node it fills, mounted before that node starts.
async fn start_cluster(
    s: &Scenario,
    cfg: &RunConfig,
    dir: &Path,
    started: Instant,
    epoch: Instant,
) -> Result<Cluster> {
    let mode = s.mode.unwrap_or(cfg.mode);
    say(
        epoch,
        &format!(
            "scenario {}: {} dc x {} nodes, {} shards, {} mode, seed {}, in {}",
            s.name,
            cfg.spec.dcs,
            cfg.spec.nodes_per_dc,
            cfg.spec.shards,
            mode.name(),
            cfg.seed,
            dir.display()
        ),
    );
    // A node stores about every body the workload writes (its half of the shards, in the log
    // and in the state machine): a long mix gets room for its duration too.
    let small_disk = s.needs_small_disk().then(|| SmallDiskPlan {
        node: disk_full_node(&cfg.spec),
        size: match &s.plan {
            Plan::Fixed { .. } => SMALL_DISK_BYTES,
            Plan::Mix { duration } => SMALL_DISK_BYTES + duration.as_secs() * (8 << 20),
        },
    });
    let cluster = Cluster::start_with_disk(
        cfg.spec.clone(),
        mode,
        &dir.join("nodes"),
        &cfg.node_binary,
        epoch,
        small_disk,
    )
    .await
    .context("start the cluster")?;
    say(
        epoch,
        &format!(
            "cluster up: every group has a leader known to its replicas ({} ms)",
            started.elapsed().as_millis()
        ),
    );
    Ok(cluster)
}

/// Starts the recorded workload on the cluster (writers, readers, one subscriber per shard and
/// the non-member prober) and waits until every shard takes writes, so that the calibration
/// measures the whole cluster. Returns the recorder, the workload and its spec.
async fn start_workload(
    cfg: &RunConfig,
    cluster: &Cluster,
    epoch: Instant,
) -> Result<(Arc<Recorder>, Workload<NodeClient>, WorkloadSpec)> {
    let recorder = Arc::new(Recorder::new(epoch));
    let client = Arc::new(NodeClient::new(
        &cluster.api_addrs(),
        cfg.spec.shards,
        Duration::from_millis(2500),
        Duration::from_millis(600),
    )?);
    let mut wspec = WorkloadSpec::new(cfg.spec.shards, cfg.seed);
    wspec.writers_per_shard = cfg.writers_per_shard;
    let mut workload = Workload::start(client, wspec.clone(), recorder.clone())
        .await
        .context("start the workload")?;
    workload.subscribe_shards(&cluster.api_addrs())?;
    say(
        epoch,
        &format!(
            "workload: {} writers, {} readers, {} shard subscribers, 1 non-member prober, {} conversations over {} shards; bodies: 60 % under 1 KiB, 30 % 1-16 KiB, 10 % 16 KiB to {} B (the limit; mean {:.0} B)",
            wspec.writers(),
            wspec.readers,
            cfg.spec.shards,
            workload.convs.len(),
            cfg.spec.shards,
            wspec.mix.max,
            wspec.mix.mean()
        ),
    );
    workload
        .wait_all_writing(Duration::from_secs(1), Duration::from_secs(20))
        .await
        .context("wait for every shard to take writes")?;
    Ok((recorder, workload, wspec))
}

/// Measures the cluster's capacity with the writers unthrottled and holds the workload to the
/// configured share of it (see [`Workload::calibrate`]). Returns the load and the time from
/// which the achieved load is averaged.
async fn calibrate(
    cfg: &RunConfig,
    workload: &Workload<NodeClient>,
    wspec: &WorkloadSpec,
    epoch: Instant,
) -> (Load, Ms) {
    say(
        epoch,
        &format!(
            "calibration: {} writers sending without a pause for {:.1} s",
            wspec.writers(),
            cfg.calibration.as_secs_f64()
        ),
    );
    let load = workload
        .calibrate(cfg.calibration, cfg.load_share_percent)
        .await;
    let load_from = workload.recorder.now();
    say(
        epoch,
        &format!(
            "calibration: capacity {:.2} MB/s ({} bytes/s, {} msgs/s acknowledged); rate held to {} %: {:.2} MB/s ({} bytes/s, about {} msgs/s) through one gate shared by every writer",
            load.capacity_bytes_per_s as f64 / 1e6,
            load.capacity_bytes_per_s,
            load.capacity_msgs_per_s,
            load.share_percent,
            load.rate_bytes_per_s as f64 / 1e6,
            load.rate_bytes_per_s,
            load.rate_msgs_per_s
        ),
    );
    (load, load_from)
}

/// Applies the plan's faults through `env`: a fixed plan's in order with its gap between them,
/// a mix's drawn from the run's seed until its duration (from `epoch`) has passed.
async fn inject(env: &mut faults::Env<'_, NodeClient>, plan: &Plan, epoch: Instant) -> Result<()> {
    match plan {
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
                tokio::time::sleep(Duration::from_millis(env.rng.random_range(1500..=4000))).await;
            }
        }
    }
    Ok(())
}

/// Heals whatever is left, lets the workload run on for the cooldown, and checks that every
/// shard takes writes again (a cluster that does not is a problem, not an error: the run
/// still reads back and judges what it has).
async fn heal(
    cfg: &RunConfig,
    cluster: &mut Cluster,
    workload: &Workload<NodeClient>,
    problems: &mut Vec<String>,
) -> Result<()> {
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
    Ok(())
}

/// Once the workload stopped: records in `load` what was acknowledged per second on average
/// from `load_from` (the end of the calibration) on, and says what the workload did.
fn achieved_load(
    recorder: &Recorder,
    load: &mut Load,
    load_from: Ms,
    wspec: &WorkloadSpec,
    epoch: Instant,
) {
    let load_to = recorder.now();
    let (acked, unacked, reads_ok, reads_failed) = recorder.counts();
    let achieved = recorder.acked_between(load_from, load_to);
    (load.achieved_bytes_per_s, load.achieved_msgs_per_s) = achieved.per_s(load_to - load_from);
    let at_limit = recorder.acked_of_len(wspec.mix.max as u64);
    let all = recorder.acked_between(0, load_to);
    say(
        epoch,
        &format!(
            "workload stopped: {acked} sends acked ({:.1} MB of bodies, {at_limit} of them at the {} B limit), {unacked} not, {reads_ok} reads ok, {reads_failed} not; after the calibration {:.2} MB/s ({} msgs/s) acknowledged on average",
            all.bytes as f64 / 1e6,
            wspec.mix.max,
            load.achieved_bytes_per_s as f64 / 1e6,
            load.achieved_msgs_per_s
        ),
    );
}

/// The final state: every conversation read in full from its leader, every replica's digest.
/// Also says how much data each node holds on disk.
async fn read_final_state(
    workload: &Workload<NodeClient>,
    cluster: &mut Cluster,
    epoch: Instant,
) -> Result<FinalState> {
    let read_started = Instant::now();
    let logs = workload
        .final_logs(Duration::from_secs(120))
        .await
        .context("read the final logs")?;
    say(
        epoch,
        &format!(
            "final logs read: {} messages in {} conversations in {} ms",
            logs.values().map(Vec::len).sum::<usize>(),
            logs.len(),
            read_started.elapsed().as_millis()
        ),
    );
    let digest_started = Instant::now();
    let (replicas, unsettled) = cluster.replica_digests(Duration::from_secs(120)).await;
    if !unsettled.is_empty() {
        say(
            epoch,
            &format!(
                "replicas did not reach one applied index: {}",
                unsettled.join("; ")
            ),
        );
    } else {
        say(
            epoch,
            &format!(
                "replica digests taken in {} ms",
                digest_started.elapsed().as_millis()
            ),
        );
    }

    say(
        epoch,
        &format!(
            "node data on disk: {}",
            cluster
                .data_sizes()
                .iter()
                .map(|(id, b)| format!("n{id} {:.0} MB", *b as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(FinalState { logs, replicas })
}

/// Nodes that stopped by themselves are a problem unless a fault asked for it: one problem
/// per exit of a node not in `expected` (node, from when) by then.
fn unexpected_exits(cluster: &mut Cluster, expected: &[(u64, u64)]) -> Vec<String> {
    cluster.poll_exits();
    let mut problems = Vec::new();
    for e in cluster.exits.iter().filter(|e| !e.expected) {
        let allowed = expected
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
    problems
}

/// One `rto:` line per fault: its write-unavailability window over the shards.
fn rto_lines(history: &History) -> Vec<String> {
    rto_all(history)
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
        .collect()
}

/// Everything in the judged history that fails the run, in this order: no send acknowledged
/// at all, sends refused as too large (`max_body` is the workload's largest body), the
/// checkers' violations, and shards that never took a write again after a fault.
fn judge(history: &History, report: &Report, max_body: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if report.summary.acked == 0 {
        problems.push("the workload got no send acknowledged".into());
    }
    // The mix's largest bodies are the node's limit: a refusal for size means the two differ.
    let too_large = history
        .ops
        .iter()
        .filter(|op| {
            matches!(op.kind, OpKind::Send { .. })
                && matches!(&op.outcome, Outcome::Failed { code } if code == "MESSAGE_TOO_LARGE")
        })
        .count();
    if too_large > 0 {
        problems.push(format!(
            "{too_large} send(s) refused with MESSAGE_TOO_LARGE: the workload's largest body ({max_body} B) is over the cluster's limit"
        ));
    }
    problems.extend(report.violations.iter().map(|v| v.to_string()));
    for r in rto_all(history) {
        if r.unrecovered > 0 {
            problems.push(format!(
                "fault {} {}: {} shard(s) never took a write again",
                r.fault, r.target, r.unrecovered
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            mode: Mode::Portable,
            spec: Spec::new(3, 2).shards(12),
            out: PathBuf::from("/nonexistent"),
            node_binary: PathBuf::from("/nonexistent"),
            seed: 1,
            warmup: Duration::from_secs(2),
            cooldown: Duration::from_secs(3),
            writers_per_shard: 4,
            calibration: Duration::from_secs(4),
            load_share_percent: 50,
        }
    }

    #[test]
    fn ci_runs_every_fault_with_the_new_ones_after_the_first_three() {
        for mode in [Mode::Portable, Mode::Netns] {
            let names: Vec<String> = Scenario::ci(mode).into_iter().map(|s| s.name).collect();
            assert_eq!(names[..3], ["dc-kill", "dc-partition", "fsync-fail"]);
            for k in FaultKind::ALL {
                assert!(
                    names.iter().any(|n| n == k.name()),
                    "{} missing from {names:?}",
                    k.name()
                );
            }
            assert_eq!(
                names.iter().any(|n| n == "dc-partition-portable"),
                mode == Mode::Netns
            );
        }
    }

    #[test]
    fn new_scenarios_by_name() {
        let b = Scenario::named("dc-return-backlog").expect("a known name");
        let Plan::Fixed { steps, .. } = &b.plan else {
            panic!("a named scenario is a fixed plan")
        };
        assert_eq!(steps[0].kind, FaultKind::DcReturnBacklog);
        assert_eq!(steps[0].hold, Duration::from_secs(60));
        assert!(!b.needs_small_disk());

        let d = Scenario::named("disk-full").expect("a known name");
        assert!(d.needs_small_disk());
        assert!(Scenario::named("dc-kill,disk-full")
            .expect("known names")
            .needs_small_disk());
        assert!(Scenario::mix(Duration::from_secs(60)).needs_small_disk());
        assert!(!Scenario::named("fsync-fail")
            .expect("a known name")
            .needs_small_disk());
    }

    #[test]
    fn time_limits_cover_the_holds_and_waits() {
        let c = cfg();
        let kill = time_limit(&Scenario::named("dc-kill").expect("known"), &c);
        let backlog = time_limit(&Scenario::named("dc-return-backlog").expect("known"), &c);
        // The backlog's minute down plus its catch-up bound, beyond a plain kill.
        assert!(backlog >= kill + Duration::from_secs(55) + faults::BACKLOG_CATCH_UP);
        let disk = time_limit(&Scenario::named("disk-full").expect("known"), &c);
        assert!(disk >= kill + faults::DISK_FULL_STOP_BOUND);
        // Everything starts with the calibration.
        assert!(kill > c.calibration + c.warmup + c.cooldown + Duration::from_secs(60));
    }
}
