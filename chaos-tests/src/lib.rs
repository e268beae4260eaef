//! bongsu's chaos tests: faults injected into a real cluster under a recorded workload, and
//! what the run looked like.
//!
//! A chaos run starts real node processes in several datacenters, drives a workload of sends
//! and reads against them while faults are injected, heals, and then reads back the final state.
//! Everything it saw is kept in a [`History`], judged after the fact by the test kit's
//! checkers ([`check`], re-exported from `bongsu_testkit` with [`history`]); this crate adds
//! what a chaos run shows:
//!
//! - [`figures`]: numbers derived from a history: the per-second timeline, the write
//!   unavailability window (RTO) per fault and shard, the one-line summary;
//! - [`report`] and [`svg`]: the JSON report and the timeline plot written beside a run.
//!
//! The other half runs the experiments: [`harness`] (the kit's cluster with datacenters as
//! network namespaces or loopback address groups, partitions and a small disk),
//! [`workload`] (clients that record every operation) and [`scenarios`] (the named faults and
//! the run that judges them).
//!
//! The figures, like the checkers, are pure functions of the history: they never talk to a
//! cluster. `figures`, `report` and `svg` must not use the harness, the workload, the node or
//! the network stack, so that a recorded history can be re-checked offline
//! (`bongsu-chaos check report.json`) with exactly the code that judged it.

pub mod figures;
pub mod harness;
pub mod report;
pub mod scenarios;
pub mod svg;
pub mod workload;

pub use bongsu_testkit::history::{
    CatchUp, Fault, FinalState, History, Load, Ms, Op, OpKind, Outcome, ReplicaDigest, Seen,
};
pub use bongsu_testkit::{check, check_all, history, HistoryError, Report, Summary, Violation};
