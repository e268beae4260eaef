//! The node's one RocksDB instance and its group-commit writer, from which every group's log
//! store ([`Store::log_store`], in `log_store.rs`) and state machine ([`Store::state_machine`],
//! in `state_machine.rs`) are made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, ReadOptions, DB,
};

use crate::errors::{Result, StoreError};
pub use crate::group_commit::WriterStats;
use crate::group_commit::{cf_handle, BatchLimits, GroupCommitWriter};
use crate::keys::{self, CF_RAFT};
use crate::signal::GroupSignal;
use crate::GroupId;

/// A key and value read from RocksDB.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Runs RocksDB work that can wait (a scan that reads from disk, a write that joins a write
/// group led by another group's fsync) on a blocking thread, so that no tokio worker waits
/// for it and no heartbeat that worker would send is late because of someone else's disk.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::TaskFailed {
            what,
            reason: e.to_string(),
        }),
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub batch_limits: BatchLimits,
    /// The most log-entry bytes one replication read returns (always at least one entry).
    ///
    /// openraft 0.9 sends what `limited_get_log_entries` returns as one AppendEntries and
    /// must hear back within one heartbeat interval, so this bounds how long a follower
    /// takes to receive, fsync and answer one request, whatever the entries' sizes.
    pub replication_max_bytes: usize,
    /// The most log-entry bytes a replication read that *seeks* returns: the first read of a
    /// replication stream, or one that jumps ahead of where the previous read ended.
    ///
    /// A new leader does not know what a follower holds; openraft 0.9 finds out by a binary
    /// search that sends ranges of up to `max_payload_entries` entries, most of which the
    /// follower usually has. The transport checks such a range with one empty probe when the
    /// follower has said it holds it, and that needs the whole range's log ids at once: read
    /// in `replication_max_bytes` pieces, it would take one round trip per piece. What is
    /// actually sent stays bounded by `replication_max_bytes`: the transport sends a prefix
    /// of a larger read (see `bongsu-node`'s transport).
    pub seek_read_max_bytes: usize,
    /// The most bytes of state one write batch of a snapshot install holds: with openraft's
    /// chunk size, what bounds the memory a snapshot needs (see [`crate::snapshot`]).
    pub snapshot_batch_bytes: usize,
}

/// See [`StoreOptions::replication_max_bytes`].
pub const DEFAULT_REPLICATION_MAX_BYTES: usize = 1 << 20;
/// See [`StoreOptions::seek_read_max_bytes`].
pub const DEFAULT_SEEK_READ_MAX_BYTES: usize = 8 << 20;
/// See [`StoreOptions::snapshot_batch_bytes`].
pub const DEFAULT_SNAPSHOT_BATCH_BYTES: usize = 4 << 20;
/// The directory, inside the store's, that holds snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            batch_limits: BatchLimits::default(),
            replication_max_bytes: DEFAULT_REPLICATION_MAX_BYTES,
            seek_read_max_bytes: DEFAULT_SEEK_READ_MAX_BYTES,
            snapshot_batch_bytes: DEFAULT_SNAPSHOT_BATCH_BYTES,
        }
    }
}

/// One RocksDB shared by every Raft group of a node.
pub struct Store {
    db: Arc<DB>,
    writer: GroupCommitWriter,
    path: PathBuf,
    signal: GroupSignal,
    replication_max_bytes: usize,
    seek_read_max_bytes: usize,
    snapshot_batch_bytes: usize,
    snapshot_dir: PathBuf,
    /// The cluster version as the node last read it from the meta group (see
    /// [`crate::version`]); decides the format snapshots are built in.
    cluster_version: std::sync::atomic::AtomicU32,
    /// Numbers the files snapshots are received into.
    received: std::sync::atomic::AtomicU64,
    /// Serializes writes of snapshots (a build being saved, an install), so that an older
    /// build never lands after a newer install (see `StateMachineStore::save_snapshot`).
    pub(crate) snapshot_lock: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Arc<Self>> {
        let path = path.as_ref().to_path_buf();
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        // After a crash, replay the write-ahead log up to the first torn record and stop there:
        // everything acknowledged was fsynced before it, so it is all before that point.
        o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        o.set_max_background_jobs(2);
        o.set_keep_log_file_num(4);
        o.set_max_total_wal_size(256 << 20);
        // Reuse finished WAL files instead of growing new ones: an fdatasync of an overwritten
        // block does not also have to commit a file-size change, which makes every group
        // commit cheaper. RocksDB writes recyclable records with the log number in each
        // header, so point-in-time recovery never mistakes an old file's tail for new data
        // (the crash test covers this).
        o.set_recycle_log_file_num(4);
        let cfs = keys::ALL_CFS.map(|name| {
            let mut c = Options::default();
            c.set_write_buffer_size(32 << 20);
            ColumnFamilyDescriptor::new(name, c)
        });
        let db = DB::open_cf_descriptors(&o, &path, cfs).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        crate::migrate::ensure_format(&db, &path.display().to_string())?;
        let db = Arc::new(db);
        let snapshot_dir = path.join(SNAPSHOT_DIR);
        crate::snapshot::clean_dir(&db, &snapshot_dir)?;
        let writer = GroupCommitWriter::start(db.clone(), opts.batch_limits);
        Ok(Arc::new(Self {
            db,
            writer,
            path,
            signal: GroupSignal::default(),
            replication_max_bytes: opts.replication_max_bytes.max(1),
            seek_read_max_bytes: opts
                .seek_read_max_bytes
                .max(opts.replication_max_bytes.max(1)),
            snapshot_batch_bytes: opts.snapshot_batch_bytes.max(1),
            snapshot_dir,
            received: std::sync::atomic::AtomicU64::new(0),
            cluster_version: std::sync::atomic::AtomicU32::new(crate::version::MIN_CLUSTER_VERSION),
            snapshot_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Which groups flagged work for the node when they applied or installed a snapshot (see
    /// [`GroupSignal`]; the messaging outbox is what flags it, see [`crate::apply`]).
    pub fn group_signal(&self) -> &GroupSignal {
        &self.signal
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See [`StoreOptions::replication_max_bytes`].
    pub fn replication_max_bytes(&self) -> usize {
        self.replication_max_bytes
    }

    /// See [`StoreOptions::seek_read_max_bytes`].
    pub fn seek_read_max_bytes(&self) -> usize {
        self.seek_read_max_bytes
    }

    /// See [`StoreOptions::snapshot_batch_bytes`].
    pub fn snapshot_batch_bytes(&self) -> usize {
        self.snapshot_batch_bytes
    }

    /// The cluster version the node runs in (see [`crate::version`]).
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the cluster version read from the meta group.
    pub fn set_cluster_version(&self, version: u32) {
        self.cluster_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where snapshot files live.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// A fresh name for a file a snapshot is received into.
    pub(crate) fn receive_name(&self, group: GroupId) -> String {
        let n = self
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{}{group}-{}-{n}.tmp",
            crate::snapshot::RECEIVING,
            std::process::id()
        )
    }

    /// Every group that has Raft state (a vote or log) on this node, in order.
    pub fn groups(&self) -> Result<Vec<GroupId>> {
        let mut out: Vec<GroupId> = Vec::new();
        for cf in [CF_RAFT, keys::CF_LOG] {
            let mut from = Vec::new();
            loop {
                let mut it = self.db.iterator_cf(
                    cf_handle(&self.db, cf),
                    IteratorMode::From(&from, Direction::Forward),
                );
                let Some(item) = it.next() else { break };
                let (k, _) = item.map_err(|source| StoreError::RocksDb {
                    group: 0,
                    op: "scan groups",
                    source,
                })?;
                let Some(g) = k
                    .get(..8)
                    .and_then(|p| <[u8; 8]>::try_from(p).ok())
                    .map(u64::from_be_bytes)
                else {
                    return Err(StoreError::Corrupt {
                        group: 0,
                        key: keys::display_key(&k),
                        what: "group prefix",
                        reason: "key shorter than 8 bytes".into(),
                    });
                };
                out.push(g);
                from = keys::group_end(g);
                if from.len() != 8 {
                    break;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Deletes what a group left on this node once the node no longer hosts it (its replica
    /// moved away and the membership change committed): its log, its state, its snapshot
    /// (record and file), and its committed and purged marks. Its vote stays (a few bytes), so
    /// that the node never votes twice in a term it already voted in. Run it only after the
    /// group was shut down.
    pub async fn drop_group(self: &Arc<Self>, group: GroupId) -> Result<()> {
        use crate::group_commit::Op;
        let sm = self.state_machine(group, crate::SmConfig::default());
        let _writing = self.snapshot_lock.lock().await;
        let record = sm.record()?;
        let end = keys::group_end(group);
        let ops = vec![
            Op::DeleteRange {
                cf: keys::CF_LOG,
                from: keys::group_prefix(group).to_vec(),
                to: end.clone(),
            },
            Op::DeleteRange {
                cf: keys::CF_SM,
                from: keys::sm_key(group, &[]),
                to: end,
            },
            Op::Delete {
                cf: keys::CF_SNAP,
                key: keys::snap_key(group).to_vec(),
            },
            Op::Delete {
                cf: CF_RAFT,
                key: keys::raft_key(group, keys::RAFT_COMMITTED).to_vec(),
            },
            Op::Delete {
                cf: CF_RAFT,
                key: keys::raft_key(group, keys::RAFT_PURGED).to_vec(),
            },
        ];
        self.writer.write(group, ops).await?;
        if let Some(r) = record {
            let _ = std::fs::remove_file(self.snapshot_dir.join(&r.file));
        }
        Ok(())
    }

    /// Whether the group has any log entry or state-machine key on this node.
    pub fn group_has_data(&self, group: GroupId) -> Result<bool> {
        let end = keys::group_end(group);
        let log = self
            .scan(group, keys::CF_LOG, &keys::group_prefix(group), &end, false)
            .next()
            .transpose()?
            .is_some();
        let sm = self
            .scan(group, keys::CF_SM, &keys::sm_key(group, &[]), &end, false)
            .next()
            .transpose()?
            .is_some();
        Ok(log || sm)
    }

    /// Flushes every column family's memtable and compacts it fully, so that what is on disk
    /// is only live data in SST files (for measurements such as `make bench-store`'s disk
    /// cost per message; a running node never needs it).
    pub fn flush_and_compact(&self) -> Result<()> {
        for name in keys::ALL_CFS {
            let cf = cf_handle(&self.db, name);
            self.db.flush_cf(cf).map_err(|source| StoreError::RocksDb {
                group: 0,
                op: "flush",
                source,
            })?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// The bytes of SST files in each column family.
    pub fn sst_bytes(&self) -> Result<Vec<(&'static str, u64)>> {
        keys::ALL_CFS
            .iter()
            .map(|name| {
                let bytes = self
                    .db
                    .property_int_value_cf(
                        cf_handle(&self.db, name),
                        "rocksdb.total-sst-files-size",
                    )
                    .map_err(|source| StoreError::RocksDb {
                        group: 0,
                        op: "read a property",
                        source,
                    })?
                    .unwrap_or(0);
                Ok((*name, bytes))
            })
            .collect()
    }

    /// What the group-commit writer has done so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn writer(&self) -> &GroupCommitWriter {
        &self.writer
    }

    /// Writes `ops` atomically without fsync, from the caller's (blocking) thread. For
    /// state-machine batches: they need no fsync (the log they come from is durable and they
    /// carry their applied index), so they must not wait for another group's fsync either.
    /// They still land in the write-ahead log after the log entries they apply, which were
    /// written before the entries could commit.
    pub(crate) fn write_unsynced(
        &self,
        group: GroupId,
        ops: &[crate::group_commit::Op],
    ) -> Result<()> {
        let batch = crate::group_commit::batch_of(&self.db, ops);
        self.db.write(batch).map_err(|source| StoreError::RocksDb {
            group,
            op: "write",
            source,
        })
    }

    pub(crate) fn get(&self, group: GroupId, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(cf_handle(&self.db, cf), key)
            .map_err(|source| StoreError::RocksDb {
                group,
                op: "get",
                source,
            })
    }

    /// Iterates `[from, to)` of a column family, in key order or reversed.
    pub(crate) fn scan(
        &self,
        group: GroupId,
        cf: &str,
        from: &[u8],
        to: &[u8],
        reverse: bool,
    ) -> impl Iterator<Item = Result<KeyValue>> + '_ {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from.to_vec());
        ro.set_iterate_upper_bound(to.to_vec());
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        self.db
            .iterator_cf_opt(cf_handle(&self.db, cf), ro, mode)
            .map(move |r| {
                r.map_err(|source| StoreError::RocksDb {
                    group,
                    op: "scan",
                    source,
                })
            })
    }
}
