//! A write overlay over one group's stored state: a batch of entries sees its own earlier
//! writes, and everything lands in RocksDB as one atomic batch at the end.

use std::collections::BTreeMap;
use std::ops::Bound;

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

    /// Keys of `[from, to)` that exist as this batch sees them (the stored ones with the batch's
    /// own writes and deletes over them), in key order, at most `limit`, with their raw values.
    /// What a scan returns therefore does not depend on where batch boundaries fall, so every
    /// replica sees the same.
    pub(crate) fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut stored = self.store.scan(self.group, CF_SM, from, to, false);
        let mut head = stored.next().transpose()?;
        let mut pending = self
            .writes
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let pending_first = match (&head, pending.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((sk, _)), Some((pk, _))) => pk.as_slice() <= &sk[..],
            };
            if pending_first {
                let Some((k, v)) = pending.next() else { break };
                if head.as_ref().is_some_and(|(sk, _)| &sk[..] == k.as_slice()) {
                    head = stored.next().transpose()?;
                }
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                }
            } else if let Some((k, v)) = head.take() {
                out.push((k.to_vec(), v.to_vec()));
                head = stored.next().transpose()?;
            }
        }
        Ok(out)
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
