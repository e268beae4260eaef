//! One group's state machine: openraft's `RaftStateMachine`, with snapshots. What a command
//! does is the state-machine root's business ([`crate::apply`]); this module applies batches
//! of entries atomically, keeps the applied state, and builds and installs snapshots as files
//! (see [`crate::snapshot`]).

use std::fs::File;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, SnapshotMeta, StoredMembership,
};

use rocksdb::{IteratorMode, ReadOptions};
use tokio::sync::oneshot;

use crate::applied::AppliedState;
use crate::codec::{decode, encode};
use crate::errors::{Result, StoreError};
use crate::group_commit::{cf_handle, Op};
use crate::keys::{self, applied_key, CF_SM, CF_SNAP, TAG_APPLIED};
use crate::overlay::Overlay;
use crate::result::CommandResult;
use crate::snapshot::{SnapshotFile, SnapshotReader, SnapshotRecord, SnapshotWriter};
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

    /// Writes the group's state at the current applied point to a new snapshot file, from a
    /// RocksDB point-in-time view, entry by entry through a fixed buffer. `captured` hears as
    /// soon as the view is taken (with the applied state it holds), so the state machine may
    /// go on applying while the file is written. Returns the file's name and size.
    fn build_file(
        &self,
        captured: oneshot::Sender<Result<SnapshotMeta<NodeId, NodeInfo>>>,
    ) -> Result<Built> {
        let db = self.store.db();
        let view = db.snapshot();
        let sm = cf_handle(db, CF_SM);
        let rocks = |op, source| StoreError::RocksDb {
            group: self.group,
            op,
            source,
        };
        let applied = match view.get_cf(sm, applied_key(self.group)) {
            Err(e) => Err(rocks("read applied state", e)),
            Ok(None) => Ok(AppliedState::default()),
            Ok(Some(v)) => decode(self.group, &applied_key(self.group), "applied state", &v),
        };
        let meta = applied.map(|a| self.meta_of(a));
        let meta = match meta {
            Ok(meta) => {
                let _ = captured.send(Ok(meta.clone()));
                meta
            }
            Err(e) => {
                let _ = captured.send(Err(StoreError::TaskFailed {
                    what: "build snapshot",
                    reason: e.to_string(),
                }));
                return Err(e);
            }
        };
        let name = format!("{}.snap", meta.snapshot_id);
        let path = self.store.snapshot_dir().join(&name);
        // While the cluster runs version 1 a node of release 1 may have to install this.
        let format = if self.store.cluster_version() >= crate::version::CLUSTER_V2 {
            crate::snapshot::FORMAT_VERSION
        } else {
            crate::snapshot::FORMAT_RELEASE_1
        };
        let mut out = SnapshotWriter::create(self.group, &path, format)?;
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&view);
        ro.set_iterate_lower_bound(keys::sm_key(self.group, &[&[TAG_APPLIED + 1]]));
        ro.set_iterate_upper_bound(keys::group_end(self.group));
        // A scan of a whole shard must not push the live working set out of the block cache.
        ro.fill_cache(false);
        let written = (|| {
            for item in db.iterator_cf_opt(sm, ro, IteratorMode::Start) {
                let (k, v) = item.map_err(|e| rocks("scan for snapshot", e))?;
                out.entry(&k[8..], &v)?;
            }
            out.finish()
        })();
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        crate::snapshot::sync_dir(self.group, self.store.snapshot_dir())?;
        Ok((meta, name, bytes))
    }

    /// The meta of a snapshot of the given applied state, with a fresh id (which names its
    /// file: only digits and dashes).
    fn meta_of(&self, applied: AppliedState) -> SnapshotMeta<NodeId, NodeInfo> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}-{nanos}", self.group, id.leader_id.term, id.index),
            None => format!("{}-0-0-{nanos}", self.group),
        };
        SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        }
    }

    /// Every state-machine key (without group prefix) and value of the group but the applied
    /// state, in key order: for tests that compare replicas.
    pub fn state_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let from = keys::sm_key(self.group, &[&[TAG_APPLIED + 1]]);
        let to = keys::group_end(self.group);
        self.store
            .scan(self.group, CF_SM, &from, &to, false)
            .map(|item| item.map(|(k, v)| (k[8..].to_vec(), v.to_vec())))
            .collect()
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

    /// Records a built snapshot as the group's current one unless the group already has one
    /// at least as new: a build runs beside the state machine, and an install that replaced
    /// the state meanwhile (with a newer snapshot) must not be overwritten by it. Returns
    /// whether it was recorded; if not, the built file is removed.
    pub(crate) async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        file: &str,
    ) -> Result<bool> {
        let _writing = self.store.snapshot_lock.lock().await;
        let current = self.record()?;
        if let Some(current) = &current {
            if current.meta.last_log_id >= meta.last_log_id {
                tracing::info!(
                    group = self.group,
                    built = ?meta.last_log_id,
                    stored = ?current.meta.last_log_id,
                    "a newer snapshot is stored; the built one is not saved"
                );
                self.remove_file(file);
                return Ok(false);
            }
        }
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: file.to_string(),
            installing: false,
        };
        self.store
            .writer()
            .write(self.group, vec![self.record_op(&record)])
            .await?;
        if let Some(old) = current {
            self.remove_file(&old.file);
        }
        Ok(true)
    }

    fn record_op(&self, record: &SnapshotRecord) -> Op {
        Op::Put {
            cf: CF_SNAP,
            key: keys::snap_key(self.group).to_vec(),
            value: encode(record),
        }
    }

    fn remove_file(&self, name: &str) {
        let path = self.store.snapshot_dir().join(name);
        if let Err(e) = std::fs::remove_file(&path) {
            // What is left is removed when the store next opens.
            tracing::warn!(group = self.group, file = %path.display(), error = %e, "could not remove a snapshot file");
        }
    }

    /// The group's snapshot record, if it has one.
    pub fn record(&self) -> Result<Option<SnapshotRecord>> {
        let key = keys::snap_key(self.group);
        self.store
            .get(self.group, CF_SNAP, &key)?
            .map(|v| decode(self.group, &key, "snapshot record", &v))
            .transpose()
    }

    /// The group's current snapshot, its file open for reading.
    pub async fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>> {
        // A build being saved may replace the file between reading the record and opening
        // it; the record read after that names the new one.
        for _ in 0..3 {
            let Some(record) = self.record()? else {
                return Ok(None);
            };
            if record.installing {
                return Ok(None);
            }
            let path = self.store.snapshot_dir().join(&record.file);
            match SnapshotFile::open(path.clone()).await {
                Ok(file) => {
                    return Ok(Some(Snapshot {
                        meta: record.meta,
                        snapshot: Box::new(file),
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::snapshot::io_err(self.group, "open", &path, e)),
            }
        }
        Err(StoreError::SnapshotIo {
            group: self.group,
            reason: "the recorded snapshot file keeps disappearing".into(),
        })
    }

    /// A new file to receive a snapshot into.
    pub async fn receive_file(&self) -> Result<SnapshotFile> {
        let path = self
            .store
            .snapshot_dir()
            .join(self.store.receive_name(self.group));
        SnapshotFile::create(path.clone())
            .await
            .map_err(|e| crate::snapshot::io_err(self.group, "create", &path, e))
    }

    /// Replaces the group's state with a received snapshot's. The file is checked whole
    /// first; a bad one changes nothing. Then the install is recorded (fsynced), the state
    /// replaced in bounded batches, and the applied state and finished record written in one
    /// fsynced batch. A crash in between is finished by [`Self::finish_install`] at startup.
    pub async fn install(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        mut data: SnapshotFile,
    ) -> Result<()> {
        let src = data.path().to_path_buf();
        data.sync()
            .await
            .map_err(|e| crate::snapshot::io_err(self.group, "fsync", &src, e))?;
        let _writing = self.store.snapshot_lock.lock().await;
        let name = format!(
            "{}.snap",
            self.meta_of(AppliedState {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            })
            .snapshot_id
        );
        let dst = self.store.snapshot_dir().join(&name);
        let owned = data.temporary() && src.parent() == Some(self.store.snapshot_dir());
        let group = self.group;
        let checked = {
            let (src, dst) = (src.clone(), dst.clone());
            let dir = self.store.snapshot_dir().to_path_buf();
            crate::store::off_runtime("check snapshot", move || {
                crate::snapshot::check_file(group, &src)?;
                // The received file becomes the group's snapshot file; one that is not this
                // store's own (a test handing over another store's) is copied.
                if owned {
                    std::fs::rename(&src, &dst)
                        .map_err(|e| crate::snapshot::io_err(group, "rename", &src, e))?;
                } else {
                    std::fs::copy(&src, &dst)
                        .map_err(|e| crate::snapshot::io_err(group, "copy", &src, e))?;
                    File::open(&dst)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| crate::snapshot::io_err(group, "fsync", &dst, e))?;
                }
                crate::snapshot::sync_dir(group, &dir)
            })
            .await
        };
        if owned && checked.is_ok() {
            data.keep();
        }
        drop(data);
        checked?;
        let previous = self.record()?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: name,
            installing: true,
        };
        self.store
            .writer()
            .write(self.group, vec![self.record_op(&record)])
            .await?;
        if let Some(old) = previous.filter(|p| p.file != record.file) {
            self.remove_file(&old.file);
        }
        self.finish_install(record).await?;
        // The installed state may hold work for the node (undelivered outbox entries, say).
        self.store.group_signal().mark(self.group);
        Ok(())
    }

    /// Replaces the group's state with the recorded snapshot file's, in batches of at most
    /// `snapshot_batch_bytes`, then writes the applied state and the finished record in one
    /// fsynced batch. Run again from the start, it reaches the same state.
    async fn finish_install(&self, mut record: SnapshotRecord) -> Result<()> {
        let this = self.clone();
        let file = record.file.clone();
        let bytes = std::fs::metadata(self.store.snapshot_dir().join(&file))
            .map(|m| m.len())
            .unwrap_or(0);
        let started = std::time::Instant::now();
        let entries =
            crate::store::off_runtime("install snapshot", move || this.stream_into_state(&file))
                .await?;
        let applied = AppliedState {
            last_applied: record.meta.last_log_id,
            membership: record.meta.last_membership.clone(),
        };
        record.installing = false;
        let ops = vec![
            Op::Put {
                cf: CF_SM,
                key: applied_key(self.group),
                value: encode(&applied),
            },
            self.record_op(&record),
        ];
        // The fsync of this batch makes the unsynced batches before it durable too: they are
        // earlier in the same write-ahead log.
        self.store.writer().write(self.group, ops).await?;
        tracing::info!(
            group = self.group,
            entries,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            last_log_id = ?record.meta.last_log_id,
            "installed a snapshot"
        );
        Ok(())
    }

    fn stream_into_state(&self, file: &str) -> Result<u64> {
        let path = self.store.snapshot_dir().join(file);
        let mut reader = SnapshotReader::open(self.group, &path)?;
        let limit = self.store.snapshot_batch_bytes();
        let mut ops = vec![Op::DeleteRange {
            cf: CF_SM,
            from: keys::sm_key(self.group, &[]),
            to: keys::group_end(self.group),
        }];
        let mut bytes = 0usize;
        let mut entries = 0u64;
        while let Some((k, v)) = reader.next_entry()? {
            bytes += k.len() + v.len() + 16;
            ops.push(Op::Put {
                cf: CF_SM,
                key: keys::sm_key(self.group, &[k]),
                value: v.to_vec(),
            });
            entries += 1;
            if bytes >= limit {
                self.store.write_unsynced(self.group, &ops)?;
                ops.clear();
                bytes = 0;
            }
        }
        if !ops.is_empty() {
            self.store.write_unsynced(self.group, &ops)?;
        }
        Ok(entries)
    }

    /// Finishes an install a crash interrupted, before the group starts: its state is
    /// partly replaced until then.
    pub async fn recover(&self) -> Result<()> {
        if let Some(record) = self.record()?.filter(|r| r.installing) {
            tracing::warn!(
                group = self.group,
                last_log_id = ?record.meta.last_log_id,
                "finishing a snapshot install a restart interrupted"
            );
            self.finish_install(record).await?;
        }
        Ok(())
    }
}

fn sm_err(e: crate::StoreError) -> StorageError {
    e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read)
}

/// A snapshot file written: its meta, its name and its size in bytes.
type Built = (SnapshotMeta<NodeId, NodeInfo>, String, u64);

/// Finishes a snapshot whose point-in-time view was taken when openraft asked for the
/// builder, so the state machine may go on applying while the file is written.
pub struct SnapshotBuilder {
    sm: StateMachineStore,
    captured: Result<SnapshotMeta<NodeId, NodeInfo>>,
    task: Option<tokio::task::JoinHandle<Result<Built>>>,
}

impl SnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot<TypeConfig>> {
        let captured = std::mem::replace(
            &mut self.captured,
            Err(StoreError::TaskFailed {
                what: "build snapshot",
                reason: "built twice".into(),
            }),
        );
        captured?;
        let task = self.task.take().ok_or_else(|| StoreError::TaskFailed {
            what: "build snapshot",
            reason: "built twice".into(),
        })?;
        let (meta, name, bytes) = task.await.map_err(|e| StoreError::TaskFailed {
            what: "build snapshot",
            reason: e.to_string(),
        })??;
        let path = self.sm.store.snapshot_dir().join(&name);
        // Opened before saving: if a newer snapshot is stored meanwhile, the built file is
        // removed but this handle still reads it.
        let file = SnapshotFile::open(path.clone())
            .await
            .map_err(|e| crate::snapshot::io_err(self.sm.group, "open", &path, e))?;
        let saved = self.sm.save_snapshot(&meta, &name).await?;
        tracing::info!(group = self.sm.group, bytes, saved, last_log_id = ?meta.last_log_id, "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build()
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, NodeInfo>), StorageError> {
        // openraft asks this first when a group starts: an interrupted install is finished
        // before anything reads the state.
        self.recover()
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
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
        // The point-in-time view is taken on a blocking thread that then writes the file;
        // openraft waits for this call before it applies more, so the view is the applied
        // point's, and it does not wait for the file.
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let task = tokio::task::spawn_blocking(move || this.build_file(tx));
        let captured = rx.await.unwrap_or_else(|_| {
            Err(StoreError::TaskFailed {
                what: "build snapshot",
                reason: "the build stopped before taking its view".into(),
            })
        });
        SnapshotBuilder {
            sm: self.clone(),
            captured,
            task: Some(task),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        self.receive_file()
            .await
            .map(Box::new)
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        self.install(meta, *snapshot).await.map_err(|e| {
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot().await.map_err(sm_err)
    }
}
