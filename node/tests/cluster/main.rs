//! Cluster tests: real `bongsu-node` processes on loopback, each datacenter an address group
//! (`127.0.<dc>.<node>`), driven through the nodes' internal and admin gRPC APIs.
//!
//! - [`harness`] starts, kills, restarts and watches the processes;
//! - [`client`] is a test-only client that follows leader hints and retries idempotently;
//! - [`basic`] checks messaging end to end and replica placement over datacenters;
//! - [`failover`] SIGKILLs shard leaders under a continuous write load and checks that writes
//!   resume and nothing acknowledged is lost;
//! - [`large`] sends 60 KB messages at full speed through a voter's loss and return: writes
//!   never pause for a second, replication requests stay bounded in bytes;
//! - [`join`] adds a node under a continuous write load and checks that it takes its share of
//!   replicas with the placement rules holding in every shard map version;
//! - [`drain`] drains a node under a continuous write load and checks that it ends with
//!   nothing, and that a drain that could never finish is refused;
//! - [`users`] creates accounts and resolves them, checks that members' conversation lists
//!   follow membership changes through the cross-shard outbox, that a user's shard streams
//!   JOINED and READ events, and that the shard map carries a signing key.
//!
//! Cluster tests take turns (a file lock), so that one does not skew another's timing.

mod basic;
mod client;
mod drain;
mod failover;
mod harness;
mod join;
mod large;
mod subscribe;
mod users;

use std::future::Future;
use std::time::Duration;

use bongsu_proto::model::{shard_of, ConvId};

/// The first conversation id at or after `base` that lives in `shard`.
pub fn conv_on_shard(shard: u32, shards: u32, base: u128) -> ConvId {
    (base..)
        .map(ConvId::from_u128)
        .find(|c| shard_of(&c.0, shards) == shard)
        .expect("FNV-1a reaches every shard within a few ids")
}

/// Runs a test body with a hard time limit, so that a stuck cluster ends the test by itself
/// (the body owns its cluster, which kills its nodes and prints their logs when dropped).
pub async fn bounded<F: Future<Output = anyhow::Result<()>>>(
    limit: Duration,
    body: F,
) -> anyhow::Result<()> {
    match tokio::time::timeout(limit, body).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the test did not finish within {limit:?}"),
    }
}
