//! One group's Raft log, vote and committed index: openraft's `RaftLogStorage`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, Vote};
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode};
use crate::errors::{Result, StoreError};
use crate::group_commit::Op;
use crate::keys::{
    self, log_key, raft_key, CF_LOG, CF_RAFT, RAFT_COMMITTED, RAFT_PURGED, RAFT_VOTE,
};
use crate::store::Store;
use crate::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};

/// The log of one group in the node's shared store. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    group: GroupId,
    /// Where this reader's previous replication read ended (the next index), and whether it
    /// was a seek; see [`StoreOptions::seek_read_max_bytes`](crate::StoreOptions).
    cursor: Option<(u64, bool)>,
}

impl Store {
    /// The log storage of one group.
    pub fn log_store(self: &Arc<Self>, group: GroupId) -> LogStore {
        LogStore {
            store: self.clone(),
            group,
            cursor: None,
        }
    }
}

impl LogStore {
    /// Whether a replication read from `start` seeks: the reader's first, one that jumps
    /// ahead of where the previous read ended, or one that continues a seek (the probe
    /// answered for all of it). A read that goes back (a retry, a conflict, a prefix sent)
    /// does not.
    fn seeks(&self, start: u64) -> bool {
        match self.cursor {
            None => true,
            Some((next, seek)) => start > next || (start == next && seek),
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Appends entries and returns once they are fsynced (through the group-commit writer).
    /// Returns the last appended log id.
    pub async fn append_durable(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Option<LogId>> {
        let (ops, last) = self.append_ops(entries);
        if ops.is_empty() {
            return Ok(None);
        }
        self.store.writer().write(self.group, ops).await?;
        Ok(last)
    }

    fn append_ops(&self, entries: impl IntoIterator<Item = Entry>) -> (Vec<Op>, Option<LogId>) {
        let mut last = None;
        let ops = entries
            .into_iter()
            .map(|e| {
                let id = *e.get_log_id();
                last = Some(id);
                Op::Put {
                    cf: CF_LOG,
                    key: log_key(self.group, id.index).to_vec(),
                    value: encode(&e),
                }
            })
            .collect();
        (ops, last)
    }

    /// Reads entries with index in `[start, end)`, checking that each is stored under its own
    /// index.
    pub fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Entry>> {
        self.read_entries_limited(start, end, usize::MAX)
    }

    /// Reads entries from `start` on, below `end`, stopping before the encoded entries would
    /// pass `max_bytes`; the first entry is always returned, whatever its size.
    pub fn read_entries_limited(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let from = log_key(self.group, start);
        let to = log_key(self.group, end);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.store.scan(self.group, CF_LOG, &from, &to, false) {
            let (k, v) = item?;
            bytes = bytes.saturating_add(v.len());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            let entry: Entry = decode(self.group, &k, "log entry", &v)?;
            if keys::parse_log_key(&k).map(|(_, i)| i) != Some(entry.log_id.index) {
                return Err(StoreError::Corrupt {
                    group: self.group,
                    key: keys::display_key(&k),
                    what: "log entry",
                    reason: format!("entry says index {}", entry.log_id.index),
                });
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn read_raft<T: DeserializeOwned>(&self, tag: u8, what: &'static str) -> Result<Option<T>> {
        let key = raft_key(self.group, tag);
        match self.store.get(self.group, CF_RAFT, &key)? {
            None => Ok(None),
            Some(v) => decode(self.group, &key, what, &v).map(Some),
        }
    }

    /// The last purged log id and the last log id (the purged one if the log is empty).
    pub fn log_state(&self) -> Result<(Option<LogId>, Option<LogId>)> {
        let purged: Option<LogId> = self.read_raft(RAFT_PURGED, "last purged log id")?;
        let from = log_key(self.group, 0);
        let to = keys::group_end(self.group);
        let last = match self.store.scan(self.group, CF_LOG, &from, &to, true).next() {
            None => purged,
            Some(item) => {
                let (k, v) = item?;
                let e: Entry = decode(self.group, &k, "log entry", &v)?;
                Some(e.log_id)
            }
        };
        Ok((purged, last))
    }

    pub fn vote(&self) -> Result<Option<Vote<NodeId>>> {
        self.read_raft(RAFT_VOTE, "vote")
    }

    pub fn committed(&self) -> Result<Option<LogId>> {
        Ok(self
            .read_raft::<Option<LogId>>(RAFT_COMMITTED, "committed log id")?
            .flatten())
    }

    fn raft_op(&self, tag: u8, value: Vec<u8>) -> Op {
        Op::Put {
            cf: CF_RAFT,
            key: raft_key(self.group, tag).to_vec(),
            value,
        }
    }
}

fn range_to_indexes<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&x) => x.saturating_add(1),
        Bound::Excluded(&x) => x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_indexes(&range);
        // Reads of entries no longer in a memtable wait for the disk: off the runtime, so a
        // catching-up follower's reads never delay the heartbeats a worker sends.
        let this = self.clone();
        crate::store::off_runtime("read log", move || this.read_entries(start, end))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    /// What replication sends in one AppendEntries: bounded in bytes, not only in entries
    /// (see [`crate::StoreOptions::replication_max_bytes`]).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let seek = self.seeks(start);
        let max = if seek {
            self.store.seek_read_max_bytes()
        } else {
            self.store.replication_max_bytes()
        };
        let this = self.clone();
        let entries = crate::store::off_runtime("read log for replication", move || {
            this.read_entries_limited(start, end, max)
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        if let Some(last) = entries.last() {
            self.cursor = Some((last.log_id.index + 1, seek));
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self
            .log_state()
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// One reader per replication stream (openraft asks for one per follower and leadership),
    /// each with its own cursor.
    async fn get_log_reader(&mut self) -> Self::LogReader {
        Self {
            cursor: None,
            ..self.clone()
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let op = self.raft_op(RAFT_VOTE, encode(vote));
        self.store
            .writer()
            .write(self.group, vec![op])
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.vote()
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // The committed index is a hint that lets a restarted node apply sooner; Raft does not
        // need it durable, so it is written without fsync and without waiting for the group
        // commit (openraft's core waits for this call).
        let op = self.raft_op(RAFT_COMMITTED, encode(&committed));
        let (store, group) = (self.store.clone(), self.group);
        crate::store::off_runtime("save committed", move || store.write_unsynced(group, &[op]))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.committed()
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The entries become readable and durable together when the writer's batch lands, so
        // waiting here keeps openraft's rule that appended entries are readable on return.
        match self.append_durable(entries).await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let op = Op::DeleteRange {
            cf: CF_LOG,
            from: log_key(self.group, log_id.index).to_vec(),
            to: keys::group_end(self.group),
        };
        self.store
            .writer()
            .write(self.group, vec![op])
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark and the deletion land in one batch, so a crash never leaves a log
        // whose first entry disagrees with its purge mark.
        let ops = vec![
            Op::Put {
                cf: CF_RAFT,
                key: raft_key(self.group, RAFT_PURGED).to_vec(),
                value: encode(&log_id),
            },
            Op::DeleteRange {
                cf: CF_LOG,
                from: log_key(self.group, 0).to_vec(),
                to: log_key(self.group, log_id.index.saturating_add(1)).to_vec(),
            },
        ];
        self.store
            .writer()
            .write(self.group, ops)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
