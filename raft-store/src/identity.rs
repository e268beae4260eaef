//! Who this data directory belongs to: the node id it was created for, its incarnation (a
//! random id minted when the directory was created, so a wiped or replaced directory is a new
//! incarnation even under the same node id) and the cluster it was admitted to.
//!
//! A node answers Raft traffic only once its directory is *admitted* (ARCHITECTURE.md
//! invariant 8): by an `init` that created the cluster with it, or by a join the meta group
//! accepted for this incarnation. The meta group records every node's incarnation and refuses
//! a join from a new incarnation of a node id it already has, so a node that lost its log and
//! vote can never vote as if it remembered them.
//!
//! Stored in its own column family (`node`), one key, written with fsync; the value starts
//! with a format number so later releases can read it.

use rocksdb::WriteOptions;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::errors::{Result, StoreError};
use crate::group_commit::cf_handle;
use crate::keys::CF_NODE;
use crate::store::Store;
use crate::NodeId;

const IDENTITY_KEY: &[u8] = b"identity";
/// The format of [`DataIdentity`] written by this release.
pub const IDENTITY_FORMAT: u16 = 1;

/// The identity of a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// [`IDENTITY_FORMAT`] when written; a release refuses a format it does not know.
    pub format: u16,
    pub node_id: NodeId,
    /// Minted when the directory was created (or, for a directory written before identities
    /// existed, when this release first opened it).
    pub incarnation: u128,
    /// The cluster the directory was admitted to; `None` until admitted, or for a directory
    /// from before cluster ids that has not yet learned its cluster's.
    pub cluster_id: Option<u128>,
    /// Whether the directory was admitted to a cluster (see the module docs). A directory that
    /// is not answers no Raft traffic.
    pub admitted: bool,
}

impl DataIdentity {
    /// A directory nobody has admitted yet.
    pub fn fresh(node_id: NodeId, incarnation: u128) -> Self {
        Self {
            format: IDENTITY_FORMAT,
            node_id,
            incarnation,
            cluster_id: None,
            admitted: false,
        }
    }
}

impl Store {
    /// The directory's identity, if one was written.
    pub fn identity(&self) -> Result<Option<DataIdentity>> {
        let Some(bytes) = self.get(0, CF_NODE, IDENTITY_KEY)? else {
            return Ok(None);
        };
        let id: DataIdentity = decode(0, IDENTITY_KEY, "data identity", &bytes)?;
        if id.format != IDENTITY_FORMAT {
            return Err(StoreError::Corrupt {
                group: 0,
                key: "identity".into(),
                what: "data identity",
                reason: format!(
                    "format {} is not one this release reads ({IDENTITY_FORMAT})",
                    id.format
                ),
            });
        }
        Ok(Some(id))
    }

    /// Writes the directory's identity and fsyncs it before returning.
    pub fn set_identity(&self, id: &DataIdentity) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db()
            .put_cf_opt(cf_handle(self.db(), CF_NODE), IDENTITY_KEY, encode(id), &wo)
            .map_err(|source| StoreError::RocksDb {
                group: 0,
                op: "write identity",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn identity_survives_reopen_and_a_store_starts_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.identity().unwrap(), None);
        let mut id = DataIdentity::fresh(7, 0x1234);
        store.set_identity(&id).unwrap();
        id.admitted = true;
        id.cluster_id = Some(99);
        store.set_identity(&id).unwrap();
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.identity().unwrap(), Some(id));
        // The identity is no group's Raft state.
        assert!(store.groups().unwrap().is_empty());
    }

    #[test]
    fn an_unknown_format_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut id = DataIdentity::fresh(7, 1);
        id.format = IDENTITY_FORMAT + 1;
        store.set_identity(&id).unwrap();
        let err = store.identity().unwrap_err().to_string();
        assert!(err.contains("format 2"), "{err}");
    }
}
