//! A write overlay over one group's stored state: a batch of entries sees its own earlier
//! writes, and everything lands in RocksDB as one atomic batch at the end.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode, encode};
use crate::errors::Result;
use crate::group_commit::Op;
use crate::keys::CF_SM;
use crate::store::Store;
use crate::GroupId;

/// Pending writes of one apply batch over the stored state.
pub(crate) struct Overlay<'a> {
    store: &'a Store,
    group: GroupId,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Set when apply flagged work for the node beyond the group's state, so that the group is
    /// marked in the store's [`GroupSignal`](crate::GroupSignal) once the batch is written.
    signalled: bool,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(store: &'a Store, group: GroupId) -> Self {
        Self {
            store,
            group,
            writes: BTreeMap::new(),
            signalled: false,
        }
    }

    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        let raw = match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.store.get(self.group, CF_SM, key)?,
        };
        raw.map(|v| decode(self.group, key, what, &v)).transpose()
    }

    pub(crate) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(encode(value)));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Flags the batch: once written, its group is marked in the store's
    /// [`GroupSignal`](crate::GroupSignal).
    pub(crate) fn signal(&mut self) {
        self.signalled = true;
    }

    pub(crate) fn signalled(&self) -> bool {
        self.signalled
    }

    pub(crate) fn into_ops(self) -> Vec<Op> {
        self.writes
            .into_iter()
            .map(|(key, v)| match v {
                Some(value) => Op::Put {
                    cf: CF_SM,
                    key,
                    value,
                },
                None => Op::Delete { cf: CF_SM, key },
            })
            .collect()
    }
}
