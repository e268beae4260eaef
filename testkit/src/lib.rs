//! bongsu's test kit: everything the cluster, API, chaos and benchmark runs share.
//!
//! - running processes: [`process`] (spawning with `PR_SET_PDEATHSIG`, the workspace's
//!   binaries, free ports, logs), [`turn`] (the lock that makes cluster runs take turns),
//!   [`node`] and [`cluster`] (node processes in several datacenters: start, kill, restart,
//!   pause, add a node, status, leaders, waits), [`maps`] (the shard-map recorder) and
//!   [`gateway`] (gateway processes);
//! - talking to them: [`client`] (the cluster tests' node API client), [`chat`] (the chaos
//!   workload's client) and [`writers`] (a write load on every shard, judged afterwards);
//! - judging what happened: [`history`] (what a run recorded, as JSON) and [`check`] (one
//!   checker per safety property), the one judge of histories: the chaos scenarios and the
//!   cluster tests' writers both call it.
//!
//! The kit talks to processes only through their gRPC APIs: it depends on neither the node,
//! the storage, RocksDB nor openraft, so the gateway's tests and the CLI use it without
//! compiling them. `history` and `check` never touch a cluster, so a saved history is re-judged
//! offline by the same code.

pub mod chat;
pub mod check;
pub mod client;
pub mod cluster;
pub mod errors;
pub mod gateway;
pub mod history;
pub mod maps;
pub mod node;
pub mod pki;
pub mod process;
mod serde_hex;
pub mod testing;
pub mod turn;
pub mod writers;

pub use check::{check_all, Report, Summary, Violation};
pub use cluster::{Cluster, Spec};
pub use errors::HistoryError;
pub use history::{
    CatchUp, Fault, FinalState, History, Load, Ms, Op, OpKind, Outcome, ReplicaDigest, Seen,
};

use std::future::Future;
use std::time::Duration;

/// Runs a test body with a hard time limit, so that a stuck cluster ends the test by itself
/// (the body owns its cluster, which kills its processes and prints their logs when dropped).
/// Time spent waiting for the cluster tests' turn ([`turn`]) does not count: under a busy
/// `make test` a test may wait minutes for others before its own cluster starts.
pub async fn bounded<F: Future<Output = anyhow::Result<()>>>(
    limit: Duration,
    body: F,
) -> anyhow::Result<()> {
    let mut body = std::pin::pin!(body);
    let start = tokio::time::Instant::now();
    let waited_before = turn::waited();
    let mut deadline = start + limit;
    loop {
        match tokio::time::timeout_at(deadline, &mut body).await {
            Ok(r) => return r,
            Err(_) => {
                let waited = turn::waited().saturating_sub(waited_before);
                let extended = start + limit + waited;
                if extended > deadline {
                    deadline = extended;
                    continue;
                }
                anyhow::bail!(
                    "the test did not finish within {limit:?} (not counting {waited:?} waiting for its turn)"
                )
            }
        }
    }
}
