//! The files a chaos run leaves behind: a JSON report holding the verdict and the whole
//! history (so it can be re-checked offline with [`History::load`]), and the timeline plot.

use std::path::Path;

use serde::Serialize;

use crate::check::{Report, Summary, Violation};
use crate::figures::{rto_all, summary_line, timeline, FaultRto, Second};
use crate::history::{History, Load, Ms};
use crate::svg::timeline_svg;
use bongsu_testkit::errors::{HistoryError, Result};

/// The JSON report of one run.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub scenario: &'a str,
    pub seed: u64,
    /// The line the run printed (see [`summary_line`]).
    pub summary_line: String,
    /// Whether no checker found a violation.
    pub clean: bool,
    pub summary: Summary,
    pub violations: &'a [Violation],
    pub timeline: Vec<Second>,
    /// The write-unavailability windows of every fault, in the order of `history.faults`.
    pub rto: Vec<FaultRto>,
    /// The calibrated load (also in `history.load`).
    pub load: Option<Load>,
    /// Every fault that measured how its nodes caught up (also in `history.faults`).
    pub catch_up: Vec<CatchUpFigures>,
    pub history: &'a History,
}

/// A fault's catch-up (see [`crate::history::CatchUp`]) with its figures worked out.
#[derive(Debug, Serialize)]
pub struct CatchUpFigures {
    pub fault: String,
    pub target: String,
    pub restarted: Ms,
    pub caught_up: Option<Ms>,
    pub catch_up_ms: Option<Ms>,
    pub catch_up_bytes_per_s: Option<u64>,
    pub backlog_bytes: u64,
    pub backlog_msgs: u64,
    /// How the rate is computed.
    pub method: &'static str,
}

const CATCH_UP_METHOD: &str = "catch_up_ms runs from the restart of the fault's nodes until the last of them had applied, \
     in every group it hosts, what that group's leader had applied; catch_up_bytes_per_s is backlog_bytes (message bodies \
     acknowledged while the nodes were down, which one datacenter must receive since it holds a replica of every shard) \
     divided by catch_up_ms; writes acknowledged during the catch-up are not counted, so it is a lower bound";

impl<'a> RunReport<'a> {
    pub fn new(history: &'a History, report: &'a Report) -> Self {
        RunReport {
            scenario: &history.scenario,
            seed: history.seed,
            summary_line: summary_line(history, report),
            clean: report.is_clean(),
            summary: report.summary,
            violations: &report.violations,
            timeline: timeline(history),
            rto: rto_all(history),
            load: history.load,
            catch_up: history
                .faults
                .iter()
                .filter_map(|f| {
                    let c = f.catch_up?;
                    Some(CatchUpFigures {
                        fault: f.name.clone(),
                        target: f.target.clone(),
                        restarted: c.restarted,
                        caught_up: c.caught_up,
                        catch_up_ms: c.catch_up_ms(),
                        catch_up_bytes_per_s: c.bytes_per_s(),
                        backlog_bytes: c.backlog_bytes,
                        backlog_msgs: c.backlog_msgs,
                        method: CATCH_UP_METHOD,
                    })
                })
                .collect(),
            history,
        }
    }
}

/// Writes the JSON report of `history` judged by `report` to `path`.
pub fn write_json(path: &Path, history: &History, report: &Report) -> Result<()> {
    let json =
        serde_json::to_string_pretty(&RunReport::new(history, report)).map_err(|source| {
            HistoryError::Encode {
                what: "run report",
                source,
            }
        })?;
    write(path, json)
}

/// Writes the timeline plot of `history` (see [`timeline_svg`]) to `path`.
pub fn write_svg(path: &Path, history: &History, report: &Report) -> Result<()> {
    write(path, timeline_svg(history, report))
}

fn write(path: &Path, contents: String) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| HistoryError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_all;
    use bongsu_testkit::testing::clean_history;

    #[test]
    fn written_report_loads_back_as_the_same_history() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let h = clean_history();
        let report = check_all(&h);
        let path = dir.path().join("run.json");
        write_json(&path, &h, &report).expect("write the report");

        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read it back"))
                .expect("valid JSON");
        assert_eq!(value["clean"], true);
        assert_eq!(value["summary"]["acked"], 5);
        assert_eq!(value["summary_line"], summary_line(&h, &report));
        assert!(value["timeline"].as_array().is_some_and(|t| !t.is_empty()));
        assert_eq!(value["rto"][0]["fault"], "dc-kill");

        assert_eq!(
            History::load(&path).expect("load the history from the report"),
            h
        );
        assert_eq!(
            check_all(&History::load(&path).expect("load again")),
            report
        );
    }

    #[test]
    fn report_carries_load_and_catch_up() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let mut h = clean_history();
        h.load = Some(Load {
            writers: 48,
            calibration_ms: 4000,
            capacity_bytes_per_s: 10_000_000,
            capacity_msgs_per_s: 1500,
            share_percent: 50,
            rate_bytes_per_s: 5_000_000,
            rate_msgs_per_s: 750,
            achieved_bytes_per_s: 4_800_000,
            achieved_msgs_per_s: 700,
        });
        h.faults[0].catch_up = Some(crate::history::CatchUp {
            restarted: 3000,
            caught_up: Some(5000),
            backlog_bytes: 8_000_000,
            backlog_msgs: 1000,
        });
        let report = check_all(&h);
        let path = dir.path().join("run.json");
        write_json(&path, &h, &report).expect("write the report");
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read it back"))
                .expect("valid JSON");
        assert_eq!(value["load"]["capacity_bytes_per_s"], 10_000_000);
        assert_eq!(value["load"]["rate_msgs_per_s"], 750);
        assert_eq!(value["catch_up"][0]["fault"], "dc-kill");
        assert_eq!(value["catch_up"][0]["catch_up_ms"], 2000);
        assert_eq!(value["catch_up"][0]["catch_up_bytes_per_s"], 4_000_000);
        assert!(value["summary_line"].as_str().is_some_and(|l| l
            .contains("rate_bytes_per_s=5000000")
            && l.contains("catch_up_ms=2000")));
        assert_eq!(History::load(&path).expect("load the history"), h);
    }

    #[test]
    fn writes_svg() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let h = clean_history();
        let path = dir.path().join("run.svg");
        write_svg(&path, &h, &check_all(&h)).expect("write the plot");
        let svg = std::fs::read_to_string(&path).expect("read it back");
        assert!(svg.contains("dc-kill dc2"));
        assert!(svg.contains("Sends per second") && svg.contains("Reads per second"));
    }

    #[test]
    fn write_errors_name_the_path() {
        let h = clean_history();
        let err = write_json(Path::new("/nonexistent/dir/run.json"), &h, &check_all(&h))
            .expect_err("cannot write there");
        assert!(
            err.to_string().contains("/nonexistent/dir/run.json"),
            "{err}"
        );
    }
}
