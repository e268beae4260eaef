//! The snapshot format: every state-machine key of one group (without its group prefix) and
//! its value, with a version and a checksum (from [`crate::codec`]).
//!
//! Keys are stored without the group prefix so a snapshot installs into the same group on any
//! node. A snapshot is decoded and checked completely before installing it touches anything.

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::errors::{Result, StoreError};
use crate::keys::TAG_APPLIED;
use crate::{GroupId, NodeId, NodeInfo};

pub const FORMAT_VERSION: u32 = 1;

/// The bytes openraft ships between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub format: u32,
    /// State-machine entries as (key without group prefix, value), in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SnapshotData {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes and validates snapshot bytes received for `group`.
    pub fn from_bytes(group: GroupId, bytes: &[u8]) -> Result<Self> {
        let data: SnapshotData =
            decode(group, b"snapshot", "snapshot data", bytes).map_err(|e| {
                StoreError::BadSnapshot {
                    group,
                    reason: e.to_string(),
                }
            })?;
        if data.format != FORMAT_VERSION {
            return Err(StoreError::BadSnapshot {
                group,
                reason: format!("unknown format {}", data.format),
            });
        }
        for w in data.entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(StoreError::BadSnapshot {
                    group,
                    reason: "keys out of order".into(),
                });
            }
        }
        if data
            .entries
            .iter()
            .any(|(k, _)| k.is_empty() || k[0] == TAG_APPLIED)
        {
            return Err(StoreError::BadSnapshot {
                group,
                reason: "snapshot carries an applied-state key".into(),
            });
        }
        Ok(data)
    }
}

/// A snapshot as kept in the `snap` column family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, NodeInfo>,
    pub data: Vec<u8>,
}
