//! Applying meta commands. Checks come first; a rejected command writes nothing.

use bongsu_proto::ErrorCode;

use super::{MetaCommand, NodeRecord, NodeState, ShardRecord, SigningKey};
use crate::errors::Result;
use crate::keys::sm_key;
use crate::messaging::CommandResult;
use crate::overlay::Overlay;
use crate::GroupId;

pub(crate) const TAG_CONFIG: u8 = 0x10;
pub(crate) const TAG_NODE: u8 = 0x11;
pub(crate) const TAG_SHARD: u8 = 0x12;
pub(crate) const TAG_VERSION: u8 = 0x13;
pub(crate) const TAG_KEY: u8 = 0x14;

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
pub(crate) fn version_key(g: GroupId) -> Vec<u8> {
    sm_key(g, &[&[TAG_VERSION]])
}

/// Applies one meta command.
pub(crate) fn apply(tx: &mut Overlay<'_>, cmd: &MetaCommand) -> Result<CommandResult> {
    let g = tx.group();
    let initialized = tx
        .get::<super::ClusterConfig>(&config_key(g), "cluster config")?
        .is_some();
    match cmd {
        MetaCommand::Init {
            config,
            nodes,
            shards,
        } => {
            if initialized {
                return Ok(CommandResult::reject(
                    ErrorCode::AlreadyInitialized,
                    "the cluster is initialized already",
                ));
            }
            if shards.len() != config.shards as usize
                || shards
                    .iter()
                    .enumerate()
                    .any(|(i, s)| s.shard as usize != i)
            {
                return Ok(CommandResult::reject(
                    ErrorCode::InvalidArgument,
                    "shards must be numbered 0..n, once each",
                ));
            }
            if let Some(bad) = shards
                .iter()
                .flat_map(|s| s.voters.iter().chain(&s.learners))
                .find(|n| !nodes.iter().any(|r| r.node_id == **n))
            {
                return Ok(CommandResult::reject(
                    ErrorCode::UnknownNode,
                    format!("node {bad} is placed but not listed"),
                ));
            }
            tx.put(config_key(g), config);
            for n in nodes {
                tx.put(node_key(g, n.node_id), n);
            }
            for s in shards {
                tx.put(shard_key(g, s.shard), s);
            }
        }
        MetaCommand::RegisterNode(rec) => {
            let key = node_key(g, rec.node_id);
            let mut rec = rec.clone();
            match tx.get::<NodeRecord>(&key, "node")? {
                Some(old) if old.dc != rec.dc => {
                    return Ok(CommandResult::reject(
                        ErrorCode::InvalidArgument,
                        format!(
                            "node {} is registered in datacenter {}, not {}",
                            rec.node_id, old.dc, rec.dc
                        ),
                    ));
                }
                Some(old) if old.state == NodeState::Removed => {
                    return Ok(CommandResult::reject(
                        ErrorCode::FailedPrecondition,
                        format!("node {} was removed", rec.node_id),
                    ));
                }
                Some(old) => rec.state = old.state,
                None => rec.state = NodeState::Active,
            }
            tx.put(key, &rec);
        }
        MetaCommand::SetNodeState { node_id, state } => {
            let key = node_key(g, *node_id);
            let Some(mut rec) = tx.get::<NodeRecord>(&key, "node")? else {
                return Ok(CommandResult::reject(
                    ErrorCode::UnknownNode,
                    format!("no node {node_id}"),
                ));
            };
            rec.state = *state;
            tx.put(key, &rec);
        }
        MetaCommand::SetReplicas {
            shard,
            voters,
            learners,
            expected_epoch,
        } => {
            if !initialized {
                return Ok(CommandResult::reject(
                    ErrorCode::FailedPrecondition,
                    "the cluster is not initialized",
                ));
            }
            let key = shard_key(g, *shard);
            let Some(old) = tx.get::<ShardRecord>(&key, "shard")? else {
                return Ok(CommandResult::reject(
                    ErrorCode::InvalidArgument,
                    format!("no shard {shard}"),
                ));
            };
            if old.epoch != *expected_epoch {
                return Ok(CommandResult::reject(
                    ErrorCode::StaleEpoch,
                    format!(
                        "shard {shard} is at epoch {}, not {expected_epoch}",
                        old.epoch
                    ),
                ));
            }
            for n in voters.iter().chain(learners) {
                if tx.get::<NodeRecord>(&node_key(g, *n), "node")?.is_none() {
                    return Ok(CommandResult::reject(
                        ErrorCode::UnknownNode,
                        format!("no node {n}"),
                    ));
                }
            }
            let rec = ShardRecord {
                shard: *shard,
                voters: voters.clone(),
                learners: learners.clone(),
                epoch: old.epoch + 1,
            };
            tx.put(key, &rec);
        }
        MetaCommand::AddSigningKey(k) => {
            if k.kid.is_empty() || k.kid.len() > 64 {
                return Ok(CommandResult::reject(
                    ErrorCode::InvalidArgument,
                    "kid: 1 to 64 bytes",
                ));
            }
            let key = signing_key_key(g, &k.kid);
            match tx.get::<SigningKey>(&key, "signing key")? {
                Some(old) if old.seed == k.seed && old.public == k.public => {}
                Some(_) => {
                    return Ok(CommandResult::reject(
                        ErrorCode::InvalidArgument,
                        format!("key {} exists", k.kid),
                    ))
                }
                None => tx.put(key, k),
            }
        }
        MetaCommand::RetireSigningKey { kid, at_ms } => {
            let key = signing_key_key(g, kid);
            let Some(mut k) = tx.get::<SigningKey>(&key, "signing key")? else {
                return Ok(CommandResult::reject(
                    ErrorCode::InvalidArgument,
                    format!("no key {kid}"),
                ));
            };
            if k.retired_at_ms.is_none() {
                k.retired_at_ms = Some(*at_ms);
                tx.put(key, &k);
            }
        }
    }
    let version = tx.get::<u64>(&version_key(g), "map version")?.unwrap_or(0) + 1;
    tx.put(version_key(g), &version);
    Ok(CommandResult::MapChanged { version })
}
