//! Numbers derived from a history for people: the per-second timeline, how long each fault
//! kept each shard from taking writes (RTO), and the one-line summary a run prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::Report;
use crate::history::{Fault, History, Ms, OpKind, Outcome};

/// What happened during one second of the run.
///
/// An operation counts in the second its answer came; one that never got an answer counts
/// in the second it was issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run started: this covers `[second * 1000, second * 1000 + 1000)` ms.
    pub second: u64,
    pub send_ok: u32,
    /// Sends that failed or timed out.
    pub send_failed: u32,
    pub read_ok: u32,
    /// Reads that failed or timed out.
    pub read_failed: u32,
}

/// One entry per second from 0 to the end of the run, empty seconds included.
pub fn timeline(h: &History) -> Vec<Second> {
    let seconds = h.run_end() / 1000 + 1;
    let mut out: Vec<Second> = (0..seconds)
        .map(|second| Second {
            second,
            ..Second::default()
        })
        .collect();
    for op in &h.ops {
        // A non-member's read refused with NOT_MEMBER is the system working: not a failure.
        if let (OpKind::Read { member: false, .. }, Outcome::Failed { code }) =
            (&op.kind, &op.outcome)
        {
            if code == "NOT_MEMBER" {
                continue;
            }
        }
        let i = usize::try_from(op.settled_at() / 1000).expect("run_end covers every op");
        let s = &mut out[i];
        let count = match (op.kind.is_send(), op.outcome.is_ok()) {
            (true, true) => &mut s.send_ok,
            (true, false) => &mut s.send_failed,
            (false, true) => &mut s.read_ok,
            (false, false) => &mut s.read_failed,
        };
        *count += 1;
    }
    out
}

/// How long one fault kept one shard from acknowledging writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRto {
    pub shard: u32,
    /// The last send ack on the shard at or before the fault started; `None` if there was
    /// none, in which case the window starts at the fault.
    pub last_ack_before: Option<Ms>,
    /// The first send ack on the shard after the fault started; `None` if none came.
    pub first_ack_after: Option<Ms>,
    /// The write-unavailability window: from the last ack before to the first ack after (or
    /// the end of the run when none came).
    pub window_ms: Ms,
    /// False when no ack came after the fault before the run ended: the window is then only
    /// a lower bound.
    pub recovered: bool,
}

/// The write-unavailability windows of one fault over every shard the workload wrote to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRto {
    pub fault: String,
    pub target: String,
    pub start: Ms,
    pub shards: Vec<ShardRto>,
    /// Nearest-rank percentiles of `window_ms` over `shards`; `None` when no shard was written.
    pub p50_ms: Option<Ms>,
    pub p99_ms: Option<Ms>,
    pub max_ms: Option<Ms>,
    /// Shards that never took a write again before the run ended.
    pub unrecovered: usize,
}

/// The write-unavailability window of every shard the workload sent to, for `fault`.
///
/// A shard's window runs from its last send ack (`complete`) at or before `fault.start` to
/// its first send ack after it, so it includes the workload's ordinary gap between two acks.
pub fn rto(h: &History, fault: &Fault) -> FaultRto {
    let mut shards: BTreeMap<u32, (Option<Ms>, Option<Ms>)> = BTreeMap::new();
    for op in &h.ops {
        if let OpKind::Send { shard, .. } = op.kind {
            let (before, after) = shards.entry(shard).or_default();
            match op.ack_time() {
                Some(t) if t <= fault.start => *before = (*before).max(Some(t)),
                Some(t) => *after = Some(after.map_or(t, |a| a.min(t))),
                None => {}
            }
        }
    }
    let end = h.run_end();
    let shards: Vec<ShardRto> = shards
        .into_iter()
        .map(|(shard, (last_ack_before, first_ack_after))| {
            let from = last_ack_before.unwrap_or(fault.start);
            ShardRto {
                shard,
                last_ack_before,
                first_ack_after,
                window_ms: first_ack_after.unwrap_or(end.max(from)) - from,
                recovered: first_ack_after.is_some(),
            }
        })
        .collect();
    let mut windows: Vec<Ms> = shards.iter().map(|s| s.window_ms).collect();
    windows.sort_unstable();
    FaultRto {
        fault: fault.name.clone(),
        target: fault.target.clone(),
        start: fault.start,
        p50_ms: nearest_rank(&windows, 50),
        p99_ms: nearest_rank(&windows, 99),
        max_ms: windows.last().copied(),
        unrecovered: shards.iter().filter(|s| !s.recovered).count(),
        shards,
    }
}

/// [`rto`] for every fault, in the order they appear in the history.
pub fn rto_all(h: &History) -> Vec<FaultRto> {
    h.faults.iter().map(|f| rto(h, f)).collect()
}

/// The nearest-rank `percent`-th percentile of an ascending list: the smallest value with at
/// least `percent`% of the list at or below it.
pub fn nearest_rank(sorted: &[Ms], percent: u32) -> Option<Ms> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (usize::try_from(percent).expect("a percentage fits in usize") * n)
        .div_ceil(100)
        .clamp(1, n);
    Some(sorted[rank - 1])
}

/// The line a run prints at its end:
/// `chaos: scenario=NAME acked=N lost=0 duplicated=0 reordered=0 rto_ms_p99=X rto_ms_max=Y`,
/// followed, when the history has them, by the calibrated load
/// (`capacity_bytes_per_s=… capacity_msgs_per_s=… rate_bytes_per_s=… rate_msgs_per_s=…`) and
/// the first measured catch-up (`catch_up_ms=… catch_up_bytes_per_s=…`).
///
/// The RTO is that of the scenario's main fault, the first in the history; `none` when there
/// is no fault or no shard was written. A catch-up that never finished shows `none`.
pub fn summary_line(h: &History, report: &Report) -> String {
    let main = h.faults.first().map(|f| rto(h, f));
    let show = |v: Option<Ms>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let s = &report.summary;
    let mut line = format!(
        "chaos: scenario={} acked={} lost={} duplicated={} reordered={} rto_ms_p99={} rto_ms_max={}",
        h.scenario,
        s.acked,
        s.lost,
        s.duplicated,
        s.reordered,
        show(main.as_ref().and_then(|r| r.p99_ms)),
        show(main.as_ref().and_then(|r| r.max_ms)),
    );
    if let Some(l) = &h.load {
        line.push_str(&format!(
            " capacity_bytes_per_s={} capacity_msgs_per_s={} rate_bytes_per_s={} rate_msgs_per_s={}",
            l.capacity_bytes_per_s, l.capacity_msgs_per_s, l.rate_bytes_per_s, l.rate_msgs_per_s
        ));
    }
    if let Some(c) = h.faults.iter().find_map(|f| f.catch_up) {
        line.push_str(&format!(
            " catch_up_ms={} catch_up_bytes_per_s={}",
            show(c.catch_up_ms()),
            show(c.bytes_per_s())
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_all, Summary};
    use crate::history::Outcome;
    use bongsu_testkit::testing::*;

    #[test]
    fn timeline_of_clean_history() {
        let t = timeline(&clean_history());
        let row = |second, send_ok, send_failed, read_ok, read_failed| Second {
            second,
            send_ok,
            send_failed,
            read_ok,
            read_failed,
        };
        assert_eq!(
            t,
            [
                row(0, 2, 0, 0, 0), // ops 1, 2
                row(1, 2, 0, 0, 0), // ops 3, 5
                row(2, 0, 2, 0, 1), // op 4 timed out (counted when issued), op 6 failed, read 10 timed out
                row(3, 1, 0, 1, 0), // op 7, read 8; non-member read 9 refused (NOT_MEMBER): not a failure
            ]
        );
    }

    #[test]
    fn timeline_of_empty_history_is_one_empty_second() {
        let mut h = clean_history();
        h.ops.clear();
        h.faults.clear();
        assert_eq!(timeline(&h), [Second::default()]);
    }

    /// Shard by shard: when the acks around a fault at 1,000 ms came, and the window expected.
    #[test]
    fn rto_windows() {
        let mut h = clean_history();
        h.ops.clear();
        h.faults = vec![Fault {
            name: "dc-kill".into(),
            start: 1000,
            end: Some(2000),
            target: "dc1".into(),
            catch_up: None,
        }];
        // (shard, invoke, answer): `send` answers 5 ms after invoking.
        let sends: &[(u32, Ms, Outcome)] = &[
            // Shard 1: the ack exactly at the fault counts as before it. 995+5 .. 1495+5: 500 ms.
            (1, 895, sent(1)),
            (1, 995, sent(2)),
            (1, 1045, failed("UNAVAILABLE")),
            (1, 1495, sent(3)),
            (1, 1595, sent(4)),
            // Shard 2: 945+5 .. 2295+5: 1,350 ms.
            (2, 945, sent(1)),
            (2, 1500, Outcome::Timeout),
            (2, 2295, sent(2)),
            // Shard 3: a send issued before the fault and acked after it ends the window:
            // 395+5 .. 1195+5: 800 ms.
            (3, 395, sent(1)),
            (3, 1195, sent(2)),
            // Shard 4: never acked again; the window runs to the end of the run (5,000 ms): 4,200.
            (4, 795, sent(1)),
            (4, 1100, Outcome::Timeout),
            (4, 4995, failed("UNAVAILABLE")),
            // Shard 5: no ack before the fault; the window starts at the fault: 100 ms.
            (5, 1095, sent(1)),
        ];
        for (i, (shard, invoke, outcome)) in sends.iter().enumerate() {
            h.ops.push(send(
                i as u64,
                *invoke,
                CONV_A,
                *shard,
                ALICE,
                i as u128,
                outcome.clone(),
            ));
        }
        assert_eq!(h.run_end(), 5000);

        let r = rto(&h, &h.faults[0]);
        let shard = |shard, last_ack_before, first_ack_after, window_ms, recovered| ShardRto {
            shard,
            last_ack_before,
            first_ack_after,
            window_ms,
            recovered,
        };
        assert_eq!(
            r.shards,
            [
                shard(1, Some(1000), Some(1500), 500, true),
                shard(2, Some(950), Some(2300), 1350, true),
                shard(3, Some(400), Some(1200), 800, true),
                shard(4, Some(800), None, 4200, false),
                shard(5, None, Some(1100), 100, true),
            ]
        );
        // Sorted windows: 100, 500, 800, 1350, 4200. Nearest rank: p50 is the 3rd, p99 the 5th.
        assert_eq!(
            (r.p50_ms, r.p99_ms, r.max_ms, r.unrecovered),
            (Some(800), Some(4200), Some(4200), 1)
        );
        assert_eq!(
            (r.fault.as_str(), r.target.as_str(), r.start),
            ("dc-kill", "dc1", 1000)
        );

        // The history has no final logs, so take the counts as given; the line takes its RTO
        // from the first fault.
        let report = Report {
            summary: Summary {
                acked: 10,
                ..Summary::default()
            },
            violations: Vec::new(),
        };
        assert_eq!(
            summary_line(&h, &report),
            "chaos: scenario=dc-kill acked=10 lost=0 duplicated=0 reordered=0 rto_ms_p99=4200 rto_ms_max=4200"
        );
    }

    #[test]
    fn rto_of_clean_history() {
        let h = clean_history();
        let r = rto_all(&h);
        assert_eq!(r.len(), 1);
        // Shard 1: last ack 1,205 (op 3) before the fault at 2,000, none after: to the end
        // of the run (3,503). Shard 2: 1,305 .. 3,305 (op 7, the retry).
        let windows: Vec<(u32, Ms, bool)> = r[0]
            .shards
            .iter()
            .map(|s| (s.shard, s.window_ms, s.recovered))
            .collect();
        assert_eq!(windows, [(SHARD_A, 2298, false), (SHARD_B, 2000, true)]);
        assert_eq!(
            (r[0].p50_ms, r[0].p99_ms, r[0].max_ms),
            (Some(2000), Some(2298), Some(2298))
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Ms> = (1..=100).collect();
        let ten: Vec<Ms> = (1..=10).collect();
        for (list, percent, want) in [
            (&[][..], 99, None),
            (&[7][..], 50, Some(7)),
            (&[7][..], 99, Some(7)),
            (&[1, 2, 3, 4][..], 50, Some(2)),
            (&[1, 2, 3, 4][..], 99, Some(4)),
            (&hundred[..], 99, Some(99)),
            (&hundred[..], 50, Some(50)),
            (&hundred[..], 100, Some(100)),
            (&hundred[..], 0, Some(1)),
            (&ten[..], 99, Some(10)),
            (&ten[..], 90, Some(9)),
        ] {
            assert_eq!(nearest_rank(list, percent), want, "p{percent} of {list:?}");
        }
    }

    #[test]
    fn summary_line_with_load_and_catch_up() {
        let mut h = clean_history();
        h.load = Some(sample_load());
        let base = "chaos: scenario=dc-kill acked=5 lost=0 duplicated=0 reordered=0 rto_ms_p99=2298 rto_ms_max=2298";
        let load = " capacity_bytes_per_s=12000000 capacity_msgs_per_s=1700 rate_bytes_per_s=6000000 rate_msgs_per_s=850";
        assert_eq!(summary_line(&h, &check_all(&h)), format!("{base}{load}"));
        h.faults[0].catch_up = Some(crate::history::CatchUp {
            restarted: 3000,
            caught_up: Some(3400),
            backlog_bytes: 2_000_000,
            backlog_msgs: 300,
        });
        assert_eq!(
            summary_line(&h, &check_all(&h)),
            format!("{base}{load} catch_up_ms=400 catch_up_bytes_per_s=5000000")
        );
        h.faults[0].catch_up.as_mut().expect("set above").caught_up = None;
        assert_eq!(
            summary_line(&h, &check_all(&h)),
            format!("{base}{load} catch_up_ms=none catch_up_bytes_per_s=none")
        );
    }

    #[test]
    fn summary_line_without_faults_or_with_violations() {
        let mut h = clean_history();
        h.faults.clear();
        log(&mut h, CONV_B).truncate(1);
        log(&mut h, CONV_A).push(msg(5, ALICE, 1));
        assert_eq!(
            summary_line(&h, &check_all(&h)),
            "chaos: scenario=dc-kill acked=5 lost=1 duplicated=1 reordered=0 rto_ms_p99=none rto_ms_max=none"
        );
    }
}
