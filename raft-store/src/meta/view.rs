//! Reads of the meta state.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::apply::{
    cluster_id_key, cluster_version_key, config_key, version_key, TAG_INCARNATION, TAG_KEY,
    TAG_NODE, TAG_SHARD,
};
use super::{ClusterConfig, NodeRecord, ShardRecord, SigningKey};
use crate::codec::decode;
use crate::errors::Result;
use crate::keys::{prefix_end, sm_key, CF_SM};
use crate::store::Store;
use crate::{GroupId, NodeId};

/// Everything in the meta state at one applied point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSnapshot {
    pub version: u64,
    pub config: Option<ClusterConfig>,
    pub nodes: Vec<NodeRecord>,
    pub shards: Vec<ShardRecord>,
    /// In key-id order.
    pub signing_keys: Vec<SigningKey>,
    /// The cluster's id, once a node recorded it (ARCHITECTURE.md invariant 8).
    pub cluster_id: Option<u128>,
    /// Each node's recorded data-directory incarnation.
    pub incarnations: BTreeMap<NodeId, u128>,
    /// What the cluster as a whole may do (see [`crate::version`]); 1 until raised.
    pub cluster_version: u32,
}

impl Default for MetaSnapshot {
    fn default() -> Self {
        Self {
            version: 0,
            config: None,
            nodes: Vec::new(),
            shards: Vec::new(),
            signing_keys: Vec::new(),
            cluster_id: None,
            incarnations: BTreeMap::new(),
            cluster_version: crate::version::CLUSTER_V1,
        }
    }
}

impl MetaSnapshot {
    pub fn node(&self, id: u64) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.node_id == id)
    }
}

#[derive(Clone)]
pub struct MetaView {
    store: Arc<Store>,
    group: GroupId,
}

impl MetaView {
    pub fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        self.store
            .get(self.group, CF_SM, key)?
            .map(|v| decode(self.group, key, what, &v))
            .transpose()
    }

    fn list<T: serde::de::DeserializeOwned>(&self, tag: u8, what: &'static str) -> Result<Vec<T>> {
        let from = sm_key(self.group, &[&[tag]]);
        let to = prefix_end(&from);
        self.store
            .scan(self.group, CF_SM, &from, &to, false)
            .map(|item| {
                let (k, v) = item?;
                decode(self.group, &k, what, &v)
            })
            .collect()
    }

    /// Every recorded incarnation, by node.
    fn incarnations(&self) -> Result<BTreeMap<NodeId, u128>> {
        Ok(self
            .list::<(NodeId, u128)>(TAG_INCARNATION, "incarnation")?
            .into_iter()
            .collect())
    }

    pub fn version(&self) -> Result<u64> {
        Ok(self
            .get(&version_key(self.group), "map version")?
            .unwrap_or(0))
    }

    /// The whole meta state at one version. Every change bumps the version in the same atomic
    /// batch, so reading it before and after the scan tells whether an apply raced the scan.
    pub fn snapshot(&self) -> Result<MetaSnapshot> {
        loop {
            let version = self.version()?;
            let snap = MetaSnapshot {
                version,
                config: self.get(&config_key(self.group), "cluster config")?,
                nodes: self.list(TAG_NODE, "node")?,
                shards: self.list(TAG_SHARD, "shard")?,
                signing_keys: self.list(TAG_KEY, "signing key")?,
                cluster_id: self.get(&cluster_id_key(self.group), "cluster id")?,
                incarnations: self.incarnations()?,
                cluster_version: self
                    .get(&cluster_version_key(self.group), "cluster version")?
                    .unwrap_or(crate::version::CLUSTER_V1),
            };
            if self.version()? == version {
                return Ok(snap);
            }
        }
    }
}
