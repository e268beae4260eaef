//! Rolling upgrades: the cluster version (ARCHITECTURE.md invariant 11,
//! `bongsu_raft_store::version`).
//!
//! A command a release adds may be proposed only once the cluster version has it
//! ([`gate`], on every proposal), so a node of the release before never meets a command it
//! cannot read. The version rises by itself: the meta leader asks every node that is not
//! removed which version its binary runs (`Hello`), and once all of them run at least its own,
//! proposes `SetClusterVersion` ([`spawn`]). A node that is down holds the version where it
//! is, as it must: it may come back with the old binary. After the version rises, a binary
//! below it refuses to start ([`check_binary`]): the cluster cannot go back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bongsu_proto::internal::HelloRequest;
use bongsu_proto::tls::Security;
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{MetaCommand, MetaSnapshot, NodeState, META_GROUP};
use bongsu_raft_store::version::{BINARY_VERSION, CLUSTER_V1};
use bongsu_raft_store::Command;

use crate::cluster::admin_client;
use crate::errors::{NodeError, Result};
use crate::node::Node;

/// How often the meta leader looks whether the version can rise.
const PERIOD: Duration = Duration::from_secs(2);
/// How long one node has to answer `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the meta leader says what holds the version back.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Refuses to run this binary in a cluster whose version is above what it runs.
pub fn check_binary(meta: &MetaSnapshot) -> Result<()> {
    if meta.cluster_version > BINARY_VERSION {
        return Err(NodeError::Config {
            field: "binary",
            reason: format!(
                "the cluster runs version {}, this binary runs up to version {BINARY_VERSION}; \
                 start this node with the release the cluster was upgraded to (a cluster \
                 version never goes back down)",
                meta.cluster_version
            ),
        });
    }
    Ok(())
}

/// Refuses a command the cluster version does not allow yet, with `UPGRADE_NOT_FINISHED`.
pub fn gate(meta: &MetaSnapshot, cmd: &Command) -> Result<()> {
    let needs = cmd.min_cluster_version();
    if needs > meta.cluster_version {
        return Err(NodeError::rejected(
            ErrorCode::UpgradeNotFinished,
            format!(
                "this needs cluster version {needs}; the cluster runs version {} until every \
                 node runs a release that has it",
                meta.cluster_version
            ),
        ));
    }
    Ok(())
}

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut reported: Option<Instant> = None;
        loop {
            tokio::time::sleep(PERIOD).await;
            if node.meta().cluster_version >= BINARY_VERSION || node.leading(META_GROUP).is_err() {
                continue;
            }
            match behind(&node).await {
                Ok(()) => raise(&node).await,
                Err(why) => {
                    if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                        reported = Some(Instant::now());
                        tracing::info!(
                            cluster_version = node.meta().cluster_version,
                            binary_version = BINARY_VERSION,
                            "the cluster version stays: {why}"
                        );
                    }
                }
            }
        }
    });
}

/// `Ok` when every node that is not removed runs at least this binary's version; otherwise
/// what holds it back.
async fn behind(node: &Node) -> std::result::Result<(), String> {
    let meta = node.meta();
    if meta.config.is_none() {
        return Err("the cluster is not initialized".into());
    }
    let mut waiting = Vec::new();
    for n in meta.nodes.iter().filter(|n| n.state != NodeState::Removed) {
        let version = if n.node_id == node.id() {
            Ok(BINARY_VERSION)
        } else {
            binary_version(&node.security, &n.admin_addr).await
        };
        match version {
            Ok(v) if v >= BINARY_VERSION => {}
            Ok(v) => waiting.push(format!("node {} runs version {v}", n.node_id)),
            Err(e) => waiting.push(format!("node {} did not answer ({e})", n.node_id)),
        }
    }
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join(", "))
    }
}

/// The version a node's binary runs; release 1 did not say, and runs version 1.
async fn binary_version(security: &Security, addr: &str) -> Result<u32> {
    let mut c = admin_client(security, addr).await?;
    let reply = tokio::time::timeout(HELLO_TIMEOUT, c.hello(HelloRequest {}))
        .await
        .map_err(|_| NodeError::Unavailable(format!("{addr}: no answer")))?
        .map_err(|s| NodeError::from_status(&s))?;
    Ok(reply.into_inner().binary_version.max(CLUSTER_V1))
}

async fn raise(node: &Node) {
    let from = node.meta().cluster_version;
    match node
        .propose_meta(MetaCommand::SetClusterVersion {
            version: BINARY_VERSION,
        })
        .await
    {
        Ok(_) => tracing::warn!(
            from,
            to = BINARY_VERSION,
            "every node runs version {BINARY_VERSION}: the cluster version is raised (for good)"
        ),
        Err(e) => tracing::warn!(error = %e, "raising the cluster version failed; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bongsu_raft_store::messaging::Prune;
    use bongsu_raft_store::version::CLUSTER_V2;

    fn meta(cluster_version: u32) -> MetaSnapshot {
        MetaSnapshot {
            cluster_version,
            ..MetaSnapshot::default()
        }
    }

    #[test]
    fn a_new_command_waits_for_the_cluster_version() {
        let prune = Command::Prune(Prune {
            events_before: 1,
            now_ms: 1,
        });
        match gate(&meta(CLUSTER_V1), &prune) {
            Err(NodeError::Rejected { code, reason }) => {
                assert_eq!(code, ErrorCode::UpgradeNotFinished);
                assert!(reason.contains("every node"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(gate(&meta(CLUSTER_V2), &prune).is_ok());
        // Raising the version cannot wait for itself; release 1's commands never wait.
        let raise = Command::Meta(MetaCommand::SetClusterVersion {
            version: CLUSTER_V2,
        });
        assert!(gate(&meta(CLUSTER_V1), &raise).is_ok());
    }

    #[test]
    fn a_binary_below_the_cluster_version_refuses_to_start() {
        assert!(check_binary(&meta(CLUSTER_V1)).is_ok());
        assert!(check_binary(&meta(BINARY_VERSION)).is_ok());
        let err = check_binary(&meta(BINARY_VERSION + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("never goes back"), "{err}");
    }
}
