//! Applying meta commands. Checks come first; a rejected command writes nothing.

use bongsu_proto::ErrorCode;

use super::{ClusterConfig, MetaCommand, NodeRecord, NodeState, ShardRecord, SigningKey};
use crate::errors::Result;
use crate::keys::sm_key;
use crate::overlay::Overlay;
use crate::result::{refuse, CommandResult, Verdict};
use crate::{GroupId, NodeId};

pub(crate) const TAG_CONFIG: u8 = 0x10;
pub(crate) const TAG_NODE: u8 = 0x11;
pub(crate) const TAG_SHARD: u8 = 0x12;
pub(crate) const TAG_VERSION: u8 = 0x13;
pub(crate) const TAG_KEY: u8 = 0x14;
pub(crate) const TAG_CLUSTER_ID: u8 = 0x15;
pub(crate) const TAG_INCARNATION: u8 = 0x16;
pub(crate) const TAG_CLUSTER_VERSION: u8 = 0x17;

pub(crate) fn config_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_CONFIG]])
}
pub(crate) fn node_key(g: GroupId, node: u64) -> Vec<u8> {
    sm_key(g, &[&[TAG_NODE], &node.to_be_bytes()])
}
pub(crate) fn shard_key(g: GroupId, shard: u32) -> Vec<u8> {
    sm_key(g, &[&[TAG_SHARD], &shard.to_be_bytes()])
}
pub(crate) fn signing_key_key(g: GroupId, kid: &str) -> Vec<u8> {
    sm_key(g, &[&[TAG_KEY], kid.as_bytes()])
}
pub(crate) fn cluster_id_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_CLUSTER_ID]])
}
pub(crate) fn incarnation_key(g: GroupId, node: u64) -> Vec<u8> {
    sm_key(g, &[&[TAG_INCARNATION], &node.to_be_bytes()])
}
pub(crate) fn cluster_version_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_CLUSTER_VERSION]])
}
pub(crate) fn version_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_VERSION]])
}

/// Applies one meta command: its checks, then its writes. Every change bumps the shard-map
/// version, which gateways and nodes watch.
pub(crate) fn apply(tx: &mut Overlay<'_>, cmd: &MetaCommand) -> Result<CommandResult> {
    let g = tx.group();
    let initialized = tx
        .get::<ClusterConfig>(&config_key(g), "cluster config")?
        .is_some();
    let verdict = match cmd {
        MetaCommand::Init {
            config,
            nodes,
            shards,
        } => init(tx, initialized, config, nodes, shards)?,
        MetaCommand::RegisterNode(rec) => register_node(tx, rec)?,
        MetaCommand::SetNodeState { node_id, state } => set_node_state(tx, *node_id, *state)?,
        MetaCommand::SetReplicas {
            shard,
            voters,
            learners,
            expected_epoch,
        } => set_replicas(tx, initialized, *shard, voters, learners, *expected_epoch)?,
        MetaCommand::AddSigningKey(k) => add_signing_key(tx, k)?,
        MetaCommand::RetireSigningKey { kid, at_ms } => retire_signing_key(tx, kid, *at_ms)?,
        MetaCommand::RecordIncarnation {
            node_id,
            incarnation,
            cluster_id,
            adopt_cluster,
            admitted,
        } => record_incarnation(
            tx,
            *node_id,
            *incarnation,
            *cluster_id,
            *adopt_cluster,
            *admitted,
        )?,
        MetaCommand::SetClusterVersion { version } => set_cluster_version(tx, *version)?,
    };
    if let Err(r) = verdict {
        return Ok(CommandResult::Rejected(r));
    }
    let version = tx.get::<u64>(&version_key(g), "map version")?.unwrap_or(0) + 1;
    tx.put(version_key(g), &version);
    Ok(CommandResult::MapChanged { version })
}

fn init(
    tx: &mut Overlay<'_>,
    initialized: bool,
    config: &ClusterConfig,
    nodes: &[NodeRecord],
    shards: &[ShardRecord],
) -> Result<Verdict> {
    if initialized {
        return refuse(
            ErrorCode::AlreadyInitialized,
            "the cluster is initialized already",
        );
    }
    if shards.len() != config.shards as usize
        || shards
            .iter()
            .enumerate()
            .any(|(i, s)| s.shard as usize != i)
    {
        return refuse(
            ErrorCode::InvalidArgument,
            "shards must be numbered 0..n, once each",
        );
    }
    if let Some(bad) = shards
        .iter()
        .flat_map(|s| s.voters.iter().chain(&s.learners))
        .find(|n| !nodes.iter().any(|r| r.node_id == **n))
    {
        return refuse(
            ErrorCode::UnknownNode,
            format!("node {bad} is placed but not listed"),
        );
    }
    let g = tx.group();
    tx.put(config_key(g), config);
    for n in nodes {
        tx.put(node_key(g, n.node_id), n);
    }
    for s in shards {
        tx.put(shard_key(g, s.shard), s);
    }
    Ok(Ok(()))
}

/// Adds a node, or updates a known one's addresses keeping its state; a node never moves to
/// another datacenter, and a removed one never comes back.
fn register_node(tx: &mut Overlay<'_>, rec: &NodeRecord) -> Result<Verdict> {
    let key = node_key(tx.group(), rec.node_id);
    let mut rec = rec.clone();
    match tx.get::<NodeRecord>(&key, "node")? {
        Some(old) if old.dc != rec.dc => {
            return refuse(
                ErrorCode::InvalidArgument,
                format!(
                    "node {} is registered in datacenter {}, not {}",
                    rec.node_id, old.dc, rec.dc
                ),
            );
        }
        Some(old) if old.state == NodeState::Removed => {
            return refuse(
                ErrorCode::FailedPrecondition,
                format!("node {} was removed", rec.node_id),
            );
        }
        Some(old) => rec.state = old.state,
        None => rec.state = NodeState::Active,
    }
    tx.put(key, &rec);
    Ok(Ok(()))
}

/// The cluster version only rises.
fn set_cluster_version(tx: &mut Overlay<'_>, version: u32) -> Result<Verdict> {
    let key = cluster_version_key(tx.group());
    let current = tx
        .get::<u32>(&key, "cluster version")?
        .unwrap_or(crate::version::CLUSTER_V1);
    if version <= current {
        return refuse(
            ErrorCode::FailedPrecondition,
            format!("the cluster version is {current} already; it never goes down"),
        );
    }
    tx.put(key, &version);
    Ok(Ok(()))
}

fn set_node_state(tx: &mut Overlay<'_>, node_id: NodeId, state: NodeState) -> Result<Verdict> {
    let key = node_key(tx.group(), node_id);
    let Some(mut rec) = tx.get::<NodeRecord>(&key, "node")? else {
        return refuse(ErrorCode::UnknownNode, format!("no node {node_id}"));
    };
    rec.state = state;
    tx.put(key, &rec);
    Ok(Ok(()))
}

/// Compare-and-set on the shard's epoch, so that two rebalancer steps planned from the same
/// map cannot both land.
fn set_replicas(
    tx: &mut Overlay<'_>,
    initialized: bool,
    shard: u32,
    voters: &[NodeId],
    learners: &[NodeId],
    expected_epoch: u64,
) -> Result<Verdict> {
    if !initialized {
        return refuse(
            ErrorCode::FailedPrecondition,
            "the cluster is not initialized",
        );
    }
    let g = tx.group();
    let key = shard_key(g, shard);
    let Some(old) = tx.get::<ShardRecord>(&key, "shard")? else {
        return refuse(ErrorCode::InvalidArgument, format!("no shard {shard}"));
    };
    if old.epoch != expected_epoch {
        return refuse(
            ErrorCode::StaleEpoch,
            format!(
                "shard {shard} is at epoch {}, not {expected_epoch}",
                old.epoch
            ),
        );
    }
    for n in voters.iter().chain(learners) {
        if tx.get::<NodeRecord>(&node_key(g, *n), "node")?.is_none() {
            return refuse(ErrorCode::UnknownNode, format!("no node {n}"));
        }
    }
    let rec = ShardRecord {
        shard,
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        epoch: old.epoch + 1,
    };
    tx.put(key, &rec);
    Ok(Ok(()))
}

/// Idempotent for the same key id and material.
fn add_signing_key(tx: &mut Overlay<'_>, k: &SigningKey) -> Result<Verdict> {
    if k.kid.is_empty() || k.kid.len() > 64 {
        return refuse(ErrorCode::InvalidArgument, "kid: 1 to 64 bytes");
    }
    let key = signing_key_key(tx.group(), &k.kid);
    match tx.get::<SigningKey>(&key, "signing key")? {
        Some(old) if old.seed == k.seed && old.public == k.public => {}
        Some(_) => {
            return refuse(ErrorCode::InvalidArgument, format!("key {} exists", k.kid));
        }
        None => tx.put(key, k),
    }
    Ok(Ok(()))
}

/// A retired key keeps its first retirement time.
fn retire_signing_key(tx: &mut Overlay<'_>, kid: &str, at_ms: u64) -> Result<Verdict> {
    let key = signing_key_key(tx.group(), kid);
    let Some(mut k) = tx.get::<SigningKey>(&key, "signing key")? else {
        return refuse(ErrorCode::InvalidArgument, format!("no key {kid}"));
    };
    if k.retired_at_ms.is_none() {
        k.retired_at_ms = Some(at_ms);
        tx.put(key, &k);
    }
    Ok(Ok(()))
}

/// See [`MetaCommand::RecordIncarnation`]. Idempotent for the recorded incarnation.
fn record_incarnation(
    tx: &mut Overlay<'_>,
    node_id: NodeId,
    incarnation: u128,
    cluster_id: u128,
    adopt_cluster: bool,
    admitted: bool,
) -> Result<Verdict> {
    let g = tx.group();
    let recorded_cluster = tx.get::<u128>(&cluster_id_key(g), "cluster id")?;
    if let Some(c) = recorded_cluster {
        if c != cluster_id && !adopt_cluster {
            return refuse(
                ErrorCode::ClusterMismatch,
                format!(
                    "node {node_id}'s data directory belongs to cluster {cluster_id:032x}, not to this cluster ({c:032x})"
                ),
            );
        }
    }
    let replaced = |why: String| {
        refuse(
            ErrorCode::NodeReplaced,
            format!(
                "{why}: it holds none of the member's log or votes (a wiped or replaced disk?) and must not act as node {node_id}. Restore the member's data directory, or start this one under a new node id and drain and remove node {node_id}"
            ),
        )
    };
    let key = incarnation_key(g, node_id);
    // The value names the node too, so the registry reads back without parsing keys.
    match tx.get::<(NodeId, u128)>(&key, "incarnation")? {
        Some((_, i)) if i == incarnation => {}
        Some((_, i)) => {
            return replaced(format!(
                "node {node_id} is a member as data directory {i:032x}, and this is directory {incarnation:032x}"
            ))
        }
        None => {
            let registered = tx.get::<NodeRecord>(&node_key(g, node_id), "node")?.is_some();
            if registered && !admitted {
                return replaced(format!(
                    "node {node_id} is a member, and this data directory ({incarnation:032x}) is new"
                ));
            }
            tx.put(key, &(node_id, incarnation));
        }
    }
    if recorded_cluster.is_none() {
        tx.put(cluster_id_key(g), &cluster_id);
    }
    Ok(Ok(()))
}
