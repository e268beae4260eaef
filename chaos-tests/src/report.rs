//! The files a chaos run leaves behind: a JSON report holding the verdict and the whole
//! history (so it can be re-checked offline with [`History::load`]), and the timeline plot.

use std::path::Path;

use serde::Serialize;

use crate::check::{Report, Summary, Violation};
use crate::errors::{ChaosError, Result};
use crate::figures::{rto_all, summary_line, timeline, FaultRto, Second};
use crate::history::History;
use crate::svg::timeline_svg;

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
    pub history: &'a History,
}

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
            history,
        }
    }
}

/// Writes the JSON report of `history` judged by `report` to `path`.
pub fn write_json(path: &Path, history: &History, report: &Report) -> Result<()> {
    let json =
        serde_json::to_string_pretty(&RunReport::new(history, report)).map_err(|source| {
            ChaosError::Encode {
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
    std::fs::write(path, contents).map_err(|source| ChaosError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_all;
    use crate::testing::clean_history;

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
