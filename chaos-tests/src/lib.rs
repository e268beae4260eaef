//! bongsu's chaos tests: what a chaos run recorded, whether it broke a safety property, and
//! what it looked like.
//!
//! A chaos run starts real node processes in several datacenters, drives a workload of sends
//! and reads against them while faults are injected, heals, and then reads back the final state.
//! Everything it saw is kept in a [`History`]; this crate judges a history after the fact:
//!
//! - [`history`]: the recorded operations, faults and final state, as JSON that can be loaded
//!   again to re-check a failed run offline ([`History::from_json`]);
//! - [`check`]: one checker per safety property, each a function from a history to a list of
//!   [`Violation`]s, and [`check::check_all`] running them all;
//! - [`figures`]: numbers derived from a history: the per-second timeline, the write
//!   unavailability window (RTO) per fault and shard, the one-line summary;
//! - [`report`] and [`svg`]: the JSON report and the timeline plot written beside a run.
//!
//! The other half runs the experiments: [`harness`] (real node processes, datacenters as
//! network namespaces or loopback address groups), [`workload`] (clients that record every
//! operation) and [`scenarios`] (the named faults and the run that judges them).
//!
//! The checkers and figures are pure functions of the history: they never talk to a cluster.
//! `history`, `check`, `figures`, `report` and `svg` must not use the harness, the workload,
//! the node or the network stack, so that a recorded history can be re-checked offline
//! (`bongsu-chaos check report.json`) with exactly the code that judged it.

pub mod check;
pub mod errors;
pub mod figures;
pub mod history;
pub mod report;
mod serde_hex;
pub mod svg;

#[cfg(test)]
mod testing;

pub use check::{check_all, Report, Summary, Violation};
pub use errors::{ChaosError, Result};
pub use history::{
    CatchUp, Fault, FinalState, History, Load, Ms, Op, OpKind, Outcome, ReplicaDigest, Seen,
};
pub mod harness;
pub mod scenarios;
pub mod workload;
