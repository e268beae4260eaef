//! The faults, each injected, held and healed on a running cluster under the workload, and
//! recorded in the history as one [`Fault`] (or one per kill for repeated kills).

use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;

use crate::harness::{Cluster, Exit};
use crate::history::{CatchUp, Fault};
use crate::workload::{ChatClient, Workload};

/// How long a restarted node may take to catch up with its groups' leaders.
const CATCH_UP: Duration = Duration::from_secs(40);
/// How long a datacenter that was down for `dc-return-backlog`'s hold (a minute of writes at
/// half the cluster's capacity) may take to catch up.
pub const BACKLOG_CATCH_UP: Duration = Duration::from_secs(180);
/// How long a node with a failing fsync may take to stop by itself. It stops within about
/// 100 ms of its next write; writes arrive every few milliseconds.
const FAIL_STOP_BOUND: Duration = Duration::from_secs(5);
/// How long a node whose disk is full may take to stop by itself: its next write to the
/// write-ahead log fails, but the log's files may have room left in blocks they already hold
/// (recycled logs), so the first failing write may be the memtable flush that needs a new
/// file.
pub const DISK_FULL_STOP_BOUND: Duration = Duration::from_secs(90);
/// The exit code of a node that stopped because a group failed (see `node/src/quiesce.rs`).
const FAIL_STOP_CODE: i32 = 70;
/// How often the outage of `dc-return-backlog` reports its backlog.
const BACKLOG_REPORT: Duration = Duration::from_secs(15);

/// Every fault a scenario can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL every node of a datacenter, later start them again.
    DcKill,
    /// Cut a datacenter off from the others, later heal.
    DcPartition,
    /// SIGSTOP every node of a datacenter, later SIGCONT.
    DcPause,
    /// SIGKILL the meta group's leader, later start it again.
    MetaLeaderKill,
    /// Restart every node in turn (SIGTERM, start, wait until caught up).
    RollingRestart,
    /// Three times: SIGKILL the node leading the most shards, start it again.
    LeaderKills,
    /// Make one node's fsync fail: it must stop by itself and never acknowledge what it lost.
    FsyncFail,
    /// Make one node's fsync 200 ms slower.
    SlowDisk,
    /// SIGKILL every node of a datacenter for a long hold under load (a minute), restart it,
    /// and measure how it catches up with the backlog.
    DcReturnBacklog,
    /// Fill one node's disk (a small tmpfs mounted at its data directory; simulated with the
    /// `log_before_fsync` failpoint where nothing can be mounted): it must stop by itself;
    /// free the disk and restart it.
    DiskFull,
}

/// Which datacenter or node a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The datacenter (or node) leading the most shards.
    Busiest,
    Dc(u8),
    Node(u64),
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::DcKill,
        FaultKind::DcPartition,
        FaultKind::DcPause,
        FaultKind::MetaLeaderKill,
        FaultKind::RollingRestart,
        FaultKind::LeaderKills,
        FaultKind::FsyncFail,
        FaultKind::SlowDisk,
        FaultKind::DcReturnBacklog,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::DcKill => "dc-kill",
            FaultKind::DcPartition => "dc-partition",
            FaultKind::DcPause => "dc-pause",
            FaultKind::MetaLeaderKill => "meta-leader-kill",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::LeaderKills => "leader-kills",
            FaultKind::FsyncFail => "fsync-fail",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::DcReturnBacklog => "dc-return-backlog",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::DcKill => "SIGKILL every node of the datacenter leading the most shards, restart it after the hold",
            FaultKind::DcPartition => "cut the datacenter leading the most shards off from the others, heal after the hold",
            FaultKind::DcPause => "SIGSTOP every node of the datacenter leading the most shards, SIGCONT after the hold",
            FaultKind::MetaLeaderKill => "SIGKILL the meta group's leader, restart it after the hold",
            FaultKind::RollingRestart => "restart every node in turn, each once the previous one caught up",
            FaultKind::LeaderKills => "three times: SIGKILL the node leading the most shards, restart it",
            FaultKind::FsyncFail => "fail fsync on the node leading the most shards: it must fail-stop; restart it",
            FaultKind::SlowDisk => "add 200 ms to every fsync of the node leading the most shards for the hold",
            FaultKind::DcReturnBacklog => "SIGKILL every node of the datacenter leading the most shards for a minute under load, restart it, measure its catch-up",
            FaultKind::DiskFull => "fill the disk of the first node of the last datacenter (a tmpfs; simulated without root): it must fail-stop; free it, restart it",
        }
    }
}

/// What a fault needs from the run.
pub struct Env<'a, C: ChatClient> {
    pub cluster: &'a mut Cluster,
    pub workload: &'a Workload<C>,
    pub faults: &'a mut Vec<Fault>,
    /// Safety or liveness problems found while injecting (the run fails on any).
    pub problems: &'a mut Vec<String>,
    /// Nodes expected to exit by themselves, with the time from which they may.
    pub expected_exits: &'a mut Vec<(u64, u64)>,
    pub rng: &'a mut StdRng,
}

impl<C: ChatClient> Env<'_, C> {
    fn now(&self) -> u64 {
        self.cluster.now_ms()
    }

    /// Prints a progress line, stamped with the run's time.
    pub fn say(&self, line: &str) {
        eprintln!("chaos: [{:>7.3}s] {line}", self.now() as f64 / 1000.0);
    }

    async fn pick_dc(&mut self, target: Target) -> (u8, String) {
        let (busiest, led) = self.cluster.busiest_dc().await;
        let d = match target {
            Target::Dc(d) => d,
            Target::Node(id) => self.cluster.dc_of(id),
            Target::Busiest => busiest,
        };
        let counts = self.cluster.shard_leader_counts().await;
        let here: usize = self
            .cluster
            .dc_nodes(d)
            .iter()
            .map(|id| counts.get(id).copied().unwrap_or(0))
            .sum();
        let shards = self.cluster.spec.shards;
        let mut why = if d == busiest && target == Target::Busiest {
            format!("leads {led} of {shards} shards, the most (ties go to the lowest number)")
        } else {
            format!("leads {here} of {shards} shards")
        };
        let meta = self.cluster.meta_leader().await;
        if let Some(m) = meta.filter(|m| self.cluster.dc_of(*m) == d) {
            why.push_str(&format!(" and the meta group (node {m})"));
        }
        (d, why)
    }

    async fn pick_node(&mut self, target: Target) -> (u64, String) {
        let counts = self.cluster.shard_leader_counts().await;
        let (busiest, _) = self.cluster.busiest_node().await;
        let id = match target {
            Target::Node(id) => id,
            Target::Dc(d) => self.cluster.dc_nodes(d)[0],
            Target::Busiest => busiest,
        };
        (
            id,
            format!(
                "leads {} of {} shards",
                counts.get(&id).copied().unwrap_or(0),
                self.cluster.spec.shards
            ),
        )
    }

    fn open(&mut self, name: &str, target: String) -> usize {
        self.faults.push(Fault {
            name: name.into(),
            start: self.now(),
            end: None,
            target,
            catch_up: None,
        });
        self.faults.len() - 1
    }

    fn close(&mut self, i: usize) {
        self.faults[i].end = Some(self.now());
    }

    async fn catch_up(&mut self, ids: &[u64]) {
        for id in ids {
            if let Err(e) = self.cluster.wait_caught_up(*id, CATCH_UP).await {
                self.problems
                    .push(format!("restarted node did not catch up: {e:#}"));
            }
        }
    }

    /// Injects `kind`, holds it for `hold`, heals it.
    pub async fn apply(&mut self, kind: FaultKind, target: Target, hold: Duration) -> Result<()> {
        match kind {
            FaultKind::DcKill => self.dc_kill(target, hold).await,
            FaultKind::DcPartition => self.dc_partition(target, hold).await,
            FaultKind::DcPause => self.dc_pause(target, hold).await,
            FaultKind::MetaLeaderKill => self.meta_leader_kill(hold).await,
            FaultKind::RollingRestart => self.rolling_restart().await,
            FaultKind::LeaderKills => self.leader_kills(hold).await,
            FaultKind::FsyncFail => self.fsync_fail(target, hold).await,
            FaultKind::SlowDisk => self.slow_disk(target, hold).await,
            FaultKind::DcReturnBacklog => self.dc_return_backlog(target, hold).await,
            FaultKind::DiskFull => self.disk_full(target, hold).await,
        }
    }

    /// dc-kill: every node of the datacenter SIGKILLed, restarted after `hold`; its nodes
    /// must catch up.
    async fn dc_kill(&mut self, target: Target, hold: Duration) -> Result<()> {
        let (d, why) = self.pick_dc(target).await;
        let ids = self.cluster.dc_nodes(d);
        let f = self.open(FaultKind::DcKill.name(), format!("dc{d}"));
        self.cluster.kill_dc(d)?;
        self.say(&format!("dc-kill: SIGKILLed dc{d} (nodes {ids:?}; {why})"));
        tokio::time::sleep(hold).await;
        self.cluster.restart_dc(d).await?;
        self.close(f);
        self.say(&format!("dc-kill: dc{d} restarted"));
        self.catch_up(&ids).await;
        Ok(())
    }

    /// dc-partition: the datacenter cut off from the others (as the cluster's network mode
    /// does it), healed after `hold`; its nodes must catch up.
    async fn dc_partition(&mut self, target: Target, hold: Duration) -> Result<()> {
        let (d, why) = self.pick_dc(target).await;
        let f = self.open(FaultKind::DcPartition.name(), format!("dc{d}"));
        self.cluster.partition(d).await?;
        self.say(&format!(
            "dc-partition: dc{d} cut off ({why}; {} mode)",
            self.cluster.mode.name()
        ));
        tokio::time::sleep(hold).await;
        self.cluster.heal_partition().await?;
        self.close(f);
        self.say(&format!("dc-partition: dc{d} healed"));
        let ids = self.cluster.dc_nodes(d);
        self.catch_up(&ids).await;
        Ok(())
    }

    /// dc-pause: every node of the datacenter SIGSTOPped, SIGCONTed after `hold`; its nodes
    /// must catch up.
    async fn dc_pause(&mut self, target: Target, hold: Duration) -> Result<()> {
        let (d, why) = self.pick_dc(target).await;
        let f = self.open(FaultKind::DcPause.name(), format!("dc{d}"));
        self.cluster.pause_dc(d)?;
        self.say(&format!("dc-pause: SIGSTOPped dc{d} ({why})"));
        tokio::time::sleep(hold).await;
        self.cluster.resume_dc(d)?;
        self.close(f);
        self.say(&format!("dc-pause: dc{d} resumed"));
        let ids = self.cluster.dc_nodes(d);
        self.catch_up(&ids).await;
        Ok(())
    }

    /// meta-leader-kill: the meta group's leader (whatever the target) SIGKILLed, restarted
    /// after `hold`. A meta group without a leader ends the scenario with an error: there is
    /// no one to kill.
    async fn meta_leader_kill(&mut self, hold: Duration) -> Result<()> {
        let id = match self.cluster.meta_leader().await {
            Some(id) => id,
            None => anyhow::bail!("meta-leader-kill: the meta group has no leader"),
        };
        let f = self.open(FaultKind::MetaLeaderKill.name(), format!("n{id}"));
        self.cluster.kill_with(id, libc::SIGKILL)?;
        self.say(&format!(
            "meta-leader-kill: SIGKILLed node {id} (dc{})",
            self.cluster.dc_of(id)
        ));
        tokio::time::sleep(hold).await;
        self.cluster.restart(id).await?;
        self.close(f);
        self.say(&format!("meta-leader-kill: node {id} restarted"));
        self.catch_up(&[id]).await;
        Ok(())
    }

    /// rolling-restart: every node in turn SIGTERMed and restarted, the next one once it
    /// caught up; one fault over all of them (no hold: the restarts are the fault).
    async fn rolling_restart(&mut self) -> Result<()> {
        let ids = self.cluster.ids();
        let f = self.open(
            FaultKind::RollingRestart.name(),
            format!("n{}..n{}", ids[0], ids[ids.len() - 1]),
        );
        for id in ids {
            self.cluster.kill_with(id, libc::SIGTERM)?;
            self.cluster.restart(id).await?;
            self.catch_up(&[id]).await;
            self.say(&format!(
                "rolling-restart: node {id} restarted and caught up"
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.close(f);
        Ok(())
    }

    /// leader-kills: three rounds of SIGKILLing the node leading the most shards at the time
    /// (whatever the target), each restarted after a third of `hold` and recorded as its own
    /// `leader-kill` fault.
    async fn leader_kills(&mut self, hold: Duration) -> Result<()> {
        for round in 1..=3 {
            let (id, why) = self.pick_node(Target::Busiest).await;
            let f = self.open("leader-kill", format!("n{id}"));
            self.cluster.kill_with(id, libc::SIGKILL)?;
            self.say(&format!(
                "leader-kills: round {round}: SIGKILLed node {id} ({why})"
            ));
            tokio::time::sleep(hold / 3).await;
            self.cluster.restart(id).await?;
            self.close(f);
            self.catch_up(&[id]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// fsync-fail: the node's fsync fails, it must stop by itself (see
    /// [`Env::fail_fsync`]).
    async fn fsync_fail(&mut self, target: Target, hold: Duration) -> Result<()> {
        let (id, why) = self.pick_node(target).await;
        self.fail_fsync(FaultKind::FsyncFail.name(), id, &why, hold)
            .await
    }

    /// slow-disk: `log_slow_fsync` (200 ms more per fsync) on the node for `hold`.
    async fn slow_disk(&mut self, target: Target, hold: Duration) -> Result<()> {
        let (id, why) = self.pick_node(target).await;
        let f = self.open(FaultKind::SlowDisk.name(), format!("n{id}"));
        self.cluster
            .set_failpoint(id, "log_slow_fsync", true)
            .await?;
        self.say(&format!("slow-disk: log_slow_fsync on node {id} ({why})"));
        tokio::time::sleep(hold).await;
        self.cluster
            .set_failpoint(id, "log_slow_fsync", false)
            .await?;
        self.close(f);
        self.say(&format!("slow-disk: node {id} back to normal"));
        Ok(())
    }

    /// Waits up to `bound` for node `id` to stop by itself after a storage fault switched on
    /// at `on`, calling `meanwhile` every 50 ms, and judges how it stopped: it must exit with
    /// [`FAIL_STOP_CODE`]. Returns its exit; a node that did not stop is SIGKILLed (and a
    /// problem recorded).
    async fn wait_fail_stop(
        &mut self,
        what: &str,
        id: u64,
        on: u64,
        bound: Duration,
        mut meanwhile: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<Option<Exit>> {
        let deadline = std::time::Instant::now() + bound;
        let exit = loop {
            if let Some(e) = self.cluster.wait_exit(id, Duration::from_millis(50)).await {
                break Some(e);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            meanwhile(self)?;
        };
        match &exit {
            Some(e) if e.status.code() == Some(FAIL_STOP_CODE) => {
                let cause = self
                    .cluster
                    .node(id)
                    .log_tail(200)
                    .lines()
                    .rev()
                    .find(|l| l.contains("stopping the node"))
                    .map(|l| format!("; its log: {}", l.trim()))
                    .unwrap_or_default();
                self.say(&format!(
                    "{what}: node {id} stopped by itself {} ms after the fault (exit code {FAIL_STOP_CODE}){cause}",
                    e.noticed_ms - on
                ));
            }
            Some(e) => self.problems.push(format!(
                "{what}: {} ({} ms after the fault), expected exit code {FAIL_STOP_CODE}",
                e.describe(),
                e.noticed_ms - on
            )),
            None => {
                self.problems.push(format!(
                    "{what}: node {id} did not stop within {bound:?} of the fault"
                ));
                self.cluster.kill_with(id, libc::SIGKILL)?;
            }
        }
        Ok(exit)
    }

    /// Says how many sends node `id` acknowledged after a storage fault switched on at `on`
    /// (among the acks from index `acks_before` on).
    fn late_acks(&self, what: &str, id: u64, on: u64, acks_before: usize) {
        let late: Vec<_> = self.workload.recorder.acks()[acks_before..]
            .iter()
            .filter(|a| a.node == id && a.at > on)
            .copied()
            .collect();
        if !late.is_empty() {
            // Entries made durable before the fault may still be acknowledged after it;
            // whether anything acknowledged was lost is the no_lost_ack checker's call.
            self.say(&format!(
                "{what}: node {id} acknowledged {} send(s) after the fault, the last {} ms after",
                late.len(),
                late.iter().map(|a| a.at - on).max().unwrap_or(0)
            ));
        }
    }

    /// fsync-fail (and disk-full where no disk can be mounted): `log_before_fsync` on node
    /// `id`, which must stop by itself; restart it after the hold.
    async fn fail_fsync(&mut self, name: &str, id: u64, why: &str, hold: Duration) -> Result<()> {
        let acks_before = self.workload.recorder.acks().len();
        // The fault is recorded from the moment the node stopped: writes it had already made
        // durable may still be acknowledged between the failpoint and the stop, and would
        // hide the outage from the RTO (first ack after the fault's start).
        let f = self.open(name, format!("n{id}"));
        let on = self.now();
        self.expected_exits.push((id, on));
        self.cluster
            .set_failpoint(id, "log_before_fsync", true)
            .await?;
        self.say(&format!("{name}: log_before_fsync on node {id} ({why})"));
        if let Some(e) = self
            .wait_fail_stop(name, id, on, FAIL_STOP_BOUND, |_| Ok(()))
            .await?
        {
            if e.status.code() == Some(FAIL_STOP_CODE) {
                self.faults[f].start = e.noticed_ms;
            }
        }
        self.late_acks(name, id, on, acks_before);
        let left = Duration::from_millis(on + hold.as_millis() as u64)
            .saturating_sub(Duration::from_millis(self.now()));
        tokio::time::sleep(left).await;
        self.cluster.restart(id).await?;
        self.close(f);
        self.say(&format!(
            "{name}: node {id} restarted (failpoints off in the new process)"
        ));
        self.catch_up(&[id]).await;
        Ok(())
    }

    /// dc-return-backlog: the datacenter down for `hold` under load, then its catch-up
    /// measured (see [`CatchUp`]).
    async fn dc_return_backlog(&mut self, target: Target, hold: Duration) -> Result<()> {
        let name = FaultKind::DcReturnBacklog.name();
        let (d, why) = self.pick_dc(target).await;
        let ids = self.cluster.dc_nodes(d);
        let f = self.open(name, format!("dc{d}"));
        let down = self.faults[f].start;
        self.cluster.kill_dc(d)?;
        self.say(&format!(
            "{name}: SIGKILLed dc{d} (nodes {ids:?}; {why}); down for {} s under load",
            hold.as_secs()
        ));
        let back_at = std::time::Instant::now() + hold;
        loop {
            let left = back_at.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(BACKLOG_REPORT)).await;
            if !back_at
                .saturating_duration_since(std::time::Instant::now())
                .is_zero()
            {
                let b = self.workload.recorder.acked_between(down, self.now());
                self.say(&format!(
                    "{name}: dc{d} down for {:.0} s: backlog {:.1} MB in {} sends so far",
                    (self.now() - down) as f64 / 1000.0,
                    b.bytes as f64 / 1e6,
                    b.msgs
                ));
            }
        }
        let restarted = self.now();
        let backlog = self.workload.recorder.acked_between(down, restarted);
        self.cluster.restart_dc(d).await?;
        self.close(f);
        self.say(&format!(
            "{name}: dc{d} restarted after {:.1} s down; backlog {:.1} MB in {} sends acknowledged meanwhile; {} ms to answer",
            (restarted - down) as f64 / 1000.0,
            backlog.bytes as f64 / 1e6,
            backlog.msgs,
            self.now() - restarted
        ));
        let mut all = true;
        for id in &ids {
            if let Err(e) = self.cluster.wait_caught_up(*id, BACKLOG_CATCH_UP).await {
                all = false;
                self.problems
                    .push(format!("{name}: restarted node did not catch up: {e:#}"));
            }
        }
        let c = CatchUp {
            restarted,
            caught_up: all.then(|| self.now()),
            backlog_bytes: backlog.bytes,
            backlog_msgs: backlog.msgs,
        };
        self.faults[f].catch_up = Some(c);
        match (c.catch_up_ms(), c.bytes_per_s()) {
            (Some(ms), Some(rate)) => self.say(&format!(
                "{name}: dc{d} caught up {ms} ms after its restart: catch_up_ms={ms} catch_up_bytes_per_s={rate} ({:.1} MB/s: the backlog over the catch-up time)",
                rate as f64 / 1e6
            )),
            _ => self.say(&format!(
                "{name}: dc{d} did not catch up within {BACKLOG_CATCH_UP:?} of its restart"
            )),
        }
        Ok(())
    }

    /// disk-full: the node with the small disk (see `harness::disk`) gets its disk filled,
    /// must stop by itself, and is restarted with the ballast gone after the hold. Where no
    /// disk could be mounted, the `log_before_fsync` failpoint stands in, and the run says so.
    async fn disk_full(&mut self, target: Target, hold: Duration) -> Result<()> {
        let name = FaultKind::DiskFull.name();
        let planned = self.cluster.disk_full_node;
        if self.cluster.small_disk.is_none() {
            let (id, why) = match planned {
                Some(id) => (id, self.leads(id).await),
                None => self.pick_node(target).await,
            };
            let reason = self
                .cluster
                .small_disk_unavailable
                .clone()
                .unwrap_or_else(|| "this run mounted no small disk".into());
            self.say(&format!(
                "{name}: SIMULATED: node {id}'s disk is not really filled ({reason}); the log_before_fsync failpoint fails its next write instead"
            ));
            return self.fail_fsync("disk-full-simulated", id, &why, hold).await;
        }
        let id = self
            .cluster
            .small_disk
            .as_ref()
            .map(|d| d.node)
            .expect("checked above");
        let why = self.leads(id).await;
        let acks_before = self.workload.recorder.acks().len();
        let f = self.open(name, format!("n{id}"));
        let on = self.now();
        self.expected_exits.push((id, on));
        let disk = self.cluster.small_disk.as_ref().expect("checked above");
        let (total, free) = disk.usage()?;
        let added = disk.fill()?;
        self.cluster.node(id).note(&format!(
            "disk-full: ballast of {added} bytes written; the disk is full"
        ));
        self.say(&format!(
            "{name}: node {id}'s disk ({} MiB tmpfs, {} MiB used by the node) filled with a {} MiB ballast ({why})",
            total >> 20,
            (total - free) >> 20,
            added >> 20
        ));
        // Whatever the node frees (say, an old write-ahead log) the ballast takes at once, so
        // the disk stays full until the node stops.
        let mut topped = 0u64;
        let exit = self
            .wait_fail_stop(name, id, on, DISK_FULL_STOP_BOUND, |env| {
                if let Some(d) = env.cluster.small_disk.as_ref() {
                    topped += d.fill()?;
                }
                Ok(())
            })
            .await?;
        if topped > 0 {
            self.say(&format!(
                "{name}: the ballast took {topped} more bytes the node freed before it stopped"
            ));
        }
        if let Some(e) = exit.filter(|e| e.status.code() == Some(FAIL_STOP_CODE)) {
            self.faults[f].start = e.noticed_ms;
        }
        self.late_acks(name, id, on, acks_before);
        let stopped = self.faults[f].start.max(on);
        let left = Duration::from_millis(stopped + hold.as_millis() as u64)
            .saturating_sub(Duration::from_millis(self.now()));
        tokio::time::sleep(left).await;
        let freed = self
            .cluster
            .small_disk
            .as_ref()
            .expect("checked above")
            .remove_ballast()?;
        self.cluster.restart(id).await?;
        self.close(f);
        self.say(&format!(
            "{name}: ballast removed ({} MiB freed), node {id} restarted",
            freed >> 20
        ));
        self.catch_up(&[id]).await;
        Ok(())
    }

    /// "leads N of M shards" for node `id`.
    async fn leads(&mut self, id: u64) -> String {
        let counts = self.cluster.shard_leader_counts().await;
        format!(
            "leads {} of {} shards",
            counts.get(&id).copied().unwrap_or(0),
            self.cluster.spec.shards
        )
    }

    /// A random target for the mix: half the time the busiest, otherwise a random datacenter
    /// or node.
    pub fn random_target(&mut self, kind: FaultKind) -> Target {
        let busiest = self.rng.random_bool(0.5);
        match kind {
            // These choose their own victims (disk-full: the node given the small disk).
            FaultKind::MetaLeaderKill
            | FaultKind::RollingRestart
            | FaultKind::LeaderKills
            | FaultKind::DiskFull => Target::Busiest,
            _ if busiest => Target::Busiest,
            FaultKind::FsyncFail | FaultKind::SlowDisk => {
                let ids = self.cluster.ids();
                Target::Node(ids[self.rng.random_range(0..ids.len())])
            }
            _ => Target::Dc(self.rng.random_range(1..=self.cluster.spec.dcs)),
        }
    }
}
