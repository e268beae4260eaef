//! One group's state machine: openraft's `RaftStateMachine`, with snapshots. What a command
//! does is the state-machine root's business ([`crate::apply`]); this module applies batches
//! of entries atomically, keeps the applied state, and builds and installs snapshots.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, SnapshotMeta, StoredMembership,
};

use crate::applied::AppliedState;
use crate::codec::{decode, encode};
use crate::errors::Result;
use crate::group_commit::Op;
use crate::keys::{self, applied_key, CF_SM, CF_SNAP, TAG_APPLIED};
use crate::overlay::Overlay;
use crate::result::CommandResult;
use crate::snapshot::{SnapshotData, StoredSnapshot, FORMAT_VERSION};
use crate::store::Store;
use crate::{Entry, GroupId, LogId, NodeId, NodeInfo, SmConfig, StorageError, TypeConfig};

/// The state machine of one group in the node's shared store. Cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<Store>,
    group: GroupId,
    cfg: SmConfig,
}

impl Store {
    /// The state machine of one group.
    pub fn state_machine(self: &Arc<Self>, group: GroupId, cfg: SmConfig) -> StateMachineStore {
        StateMachineStore {
            store: self.clone(),
            group,
            cfg,
        }
    }
}

impl StateMachineStore {
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The store this state machine lives in, for the machines' views of the same group.
    pub fn view_store(&self) -> Arc<Store> {
        self.store.clone()
    }

    pub fn applied(&self) -> Result<AppliedState> {
        crate::applied::read(&self.store, self.group)
    }

    /// Applies entries: one overlay for the whole batch, one atomic RocksDB write at the end,
    /// on a blocking thread (its reads and its write can wait on the disk).
    pub async fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<CommandResult>> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        crate::store::off_runtime("apply", move || this.apply_now(entries)).await
    }

    fn apply_now(&self, entries: Vec<Entry>) -> Result<Vec<CommandResult>> {
        let mut applied = self.applied()?;
        let mut tx = Overlay::new(&self.store, self.group);
        let mut results = Vec::new();
        for e in entries {
            applied.last_applied = Some(e.log_id);
            let r = match &e.payload {
                EntryPayload::Blank => CommandResult::Empty,
                EntryPayload::Normal(cmd) => {
                    crate::apply::apply(&mut tx, &self.cfg, cmd, e.log_id.index)?
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    CommandResult::Empty
                }
            };
            results.push(r);
        }
        if results.is_empty() {
            return Ok(results);
        }
        tx.put(applied_key(self.group), &applied);
        let signalled = tx.signalled();
        // The state is rebuilt from the log after a crash (the applied id is in the same batch),
        // so it needs no fsync of its own, and it does not queue behind the group commit.
        self.store.write_unsynced(self.group, &tx.into_ops())?;
        if signalled {
            self.store.group_signal().mark(self.group);
        }
        Ok(results)
    }

    /// Collects the group's whole state at the current applied point.
    pub(crate) fn collect_snapshot(&self) -> Result<(SnapshotMeta<NodeId, NodeInfo>, Vec<u8>)> {
        let applied = self.applied()?;
        let from = keys::sm_key(self.group, &[]);
        let to = keys::group_end(self.group);
        let mut entries = Vec::new();
        for item in self.store.scan(self.group, CF_SM, &from, &to, false) {
            let (k, v) = item?;
            let rest = &k[8..];
            if rest.first() == Some(&TAG_APPLIED) {
                continue;
            }
            entries.push((rest.to_vec(), v.to_vec()));
        }
        let data = SnapshotData {
            format: FORMAT_VERSION,
            entries,
        }
        .to_bytes();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}-{nanos}", self.group, id.leader_id.term, id.index),
            None => format!("{}-none-{nanos}", self.group),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        Ok((meta, data))
    }

    /// A digest of the group's whole state (every key and value but the applied index), with
    /// the applied index it was taken at: replicas at the same index must have equal digests.
    pub fn digest(&self) -> Result<(u64, u64)> {
        let applied = self.applied()?.last_applied.map(|l| l.index).unwrap_or(0);
        let from = keys::sm_key(self.group, &[]);
        let to = keys::group_end(self.group);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for item in self.store.scan(self.group, CF_SM, &from, &to, false) {
            let (k, v) = item?;
            if k.get(8) == Some(&TAG_APPLIED) {
                continue;
            }
            eat(&k[8..]);
            eat(&v);
        }
        Ok((applied, h))
    }

    /// Stores a built snapshot unless the group already has one at least as new: a build runs
    /// beside the state machine, and an install that replaced the state meanwhile (with a newer
    /// snapshot) must not be overwritten by it. Returns whether it was stored.
    pub(crate) async fn save_snapshot(&self, snap: &StoredSnapshot) -> Result<bool> {
        let _writing = self.store.snapshot_lock.lock().await;
        if let Some(current) = self.current_snapshot()? {
            if current.meta.last_log_id >= snap.meta.last_log_id {
                tracing::info!(
                    group = self.group,
                    built = ?snap.meta.last_log_id,
                    stored = ?current.meta.last_log_id,
                    "a newer snapshot is stored; the built one is not saved"
                );
                return Ok(false);
            }
        }
        let op = Op::Put {
            cf: CF_SNAP,
            key: keys::group_prefix(self.group).to_vec(),
            value: encode(snap),
        };
        self.store.writer().write(self.group, vec![op]).await?;
        Ok(true)
    }

    pub fn current_snapshot(&self) -> Result<Option<StoredSnapshot>> {
        let key = keys::group_prefix(self.group);
        self.store
            .get(self.group, CF_SNAP, &key)?
            .map(|v| decode(self.group, &key, "snapshot", &v))
            .transpose()
    }

    /// Replaces the group's state with a snapshot's, atomically.
    pub async fn install(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let data = SnapshotData::from_bytes(self.group, &bytes)?;
        let mut ops = vec![Op::DeleteRange {
            cf: CF_SM,
            from: keys::sm_key(self.group, &[]),
            to: keys::group_end(self.group),
        }];
        for (k, v) in data.entries {
            ops.push(Op::Put {
                cf: CF_SM,
                key: keys::sm_key(self.group, &[&k]),
                value: v,
            });
        }
        let applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        ops.push(Op::Put {
            cf: CF_SM,
            key: applied_key(self.group),
            value: encode(&applied),
        });
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        ops.push(Op::Put {
            cf: CF_SNAP,
            key: keys::group_prefix(self.group).to_vec(),
            value: encode(&stored),
        });
        {
            let _writing = self.store.snapshot_lock.lock().await;
            self.store.writer().write(self.group, ops).await?;
        }
        // The installed state may hold work for the node (undelivered outbox entries, say).
        self.store.group_signal().mark(self.group);
        Ok(())
    }
}

fn sm_err(e: crate::StoreError) -> StorageError {
    e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read)
}

/// Builds a snapshot from state collected when openraft asked for the builder, so the state
/// machine may go on applying while the snapshot is saved.
pub struct SnapshotBuilder {
    sm: StateMachineStore,
    collected: Result<(SnapshotMeta<NodeId, NodeInfo>, Vec<u8>)>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let collected = std::mem::replace(
            &mut self.collected,
            Ok((SnapshotMeta::default(), Vec::new())),
        );
        let (meta, data) =
            collected.map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.sm.save_snapshot(&stored).await.map_err(|e| {
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, NodeInfo>), StorageError> {
        let a = self.applied().map_err(sm_err)?;
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The scan reads the group's whole state: off the runtime. openraft waits for this
        // call before it applies more, so the state collected is the applied point's.
        let this = self.clone();
        let collected =
            crate::store::off_runtime("collect snapshot", move || this.collect_snapshot()).await;
        SnapshotBuilder {
            sm: self.clone(),
            collected,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.into_inner())
            .await
            .map_err(|e| {
                e.into_storage(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Write,
                )
            })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let s = self.current_snapshot().map_err(sm_err)?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
