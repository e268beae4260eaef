//! Group commit: one writer thread turns the concurrent writes of every group into one RocksDB
//! write batch and one fsync.
//!
//! Callers hand over a [`WriteRequest`] and wait for its completion. The writer blocks for the
//! first request, then takes every request already queued (up to a limit), writes them as one
//! fsynced batch, and completes them all. (Writes that need no fsync do not come here: see
//! `Store::write_unsynced`.) While one fsync
//! is in flight the next batch gathers in the queue, so the number of fsyncs per second stays
//! near the disk's sync rate while the number of appends per fsync grows with the load.
//!
//! If a write fails the writer is poisoned: it completes that batch and every later request
//! with an error and never writes again. A node that cannot fsync must stop, not go on with
//! possibly lost data (ARCHITECTURE.md invariant 6).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::oneshot;

use crate::errors::{Result, StoreError};
use crate::GroupId;

/// One change to RocksDB.
#[derive(Debug)]
pub enum Op {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// Deletes keys in `[from, to)`.
    DeleteRange {
        cf: &'static str,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
            Op::DeleteRange { from, to, .. } => from.len() + to.len(),
        }
    }
}

/// A set of changes that must land atomically, and whoever waits for them.
pub struct WriteRequest {
    pub group: GroupId,
    pub ops: Vec<Op>,
    pub done: oneshot::Sender<Result<()>>,
}

/// Counters of what the writer did, for benchmarks and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// RocksDB write batches written, each with one fsync.
    pub batches: u64,
    /// Requests completed (one per append, vote, purge, ...).
    pub requests: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
}

/// Limits on how much one batch gathers, so one batch never delays the first request in it
/// for long.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_requests: usize,
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_requests: 4096,
            max_bytes: 16 << 20,
        }
    }
}

/// Handle to the writer thread. Dropping it stops the thread after the queue drains.
pub struct GroupCommitWriter {
    tx: Option<Sender<WriteRequest>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommitWriter {
    pub fn start(db: Arc<DB>, limits: BatchLimits) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("raft-store-writer".into())
            .spawn(move || run(db, rx, limits, c))
            .expect("spawning the writer thread at startup");
        Self {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        }
    }

    fn submit(&self, group: GroupId, ops: Vec<Op>) -> Result<oneshot::Receiver<Result<()>>> {
        let (done, rx) = oneshot::channel();
        let tx = self.tx.as_ref().expect("sender lives until drop");
        tx.send(WriteRequest { group, ops, done })
            .map_err(|_| StoreError::WriterFailed("the writer thread has exited".into()))?;
        Ok(rx)
    }

    /// Writes `ops` atomically and returns once they are fsynced.
    pub async fn write(&self, group: GroupId, ops: Vec<Op>) -> Result<()> {
        let rx = self.submit(group, ops)?;
        rx.await
            .map_err(|_| StoreError::WriterFailed("the writer dropped a request".into()))?
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }
}

impl Drop for GroupCommitWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            // A panic in the writer thread has already been reported by the panic hook.
            let _ = t.join();
        }
    }
}

fn run(db: Arc<DB>, rx: Receiver<WriteRequest>, limits: BatchLimits, counters: Arc<Counters>) {
    let mut poisoned: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut bytes: usize = first.ops.iter().map(Op::size).sum();
        let mut reqs = vec![first];
        while reqs.len() < limits.max_requests && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.ops.iter().map(Op::size).sum::<usize>();
                    reqs.push(r);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let result = match &poisoned {
            Some(reason) => Err(reason.clone()),
            None => write_batch(&db, &reqs),
        };
        if let Err(reason) = &result {
            if poisoned.is_none() {
                tracing::error!(error = %reason, "raft-store write failed; acknowledging nothing from now on");
                poisoned = Some(reason.clone());
            }
        } else {
            counters.batches.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .requests
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        for r in reqs {
            let res = result.clone().map_err(StoreError::WriterFailed);
            // The waiter may have gone away (e.g. a cancelled request); nothing to tell it then.
            let _ = r.done.send(res);
        }
    }
}

/// One RocksDB batch holding `ops` in order.
pub(crate) fn batch_of<'a>(db: &DB, ops: impl IntoIterator<Item = &'a Op>) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for op in ops {
        match op {
            Op::Put { cf, key, value } => batch.put_cf(cf_handle(db, cf), key, value),
            Op::Delete { cf, key } => batch.delete_cf(cf_handle(db, cf), key),
            Op::DeleteRange { cf, from, to } => batch.delete_range_cf(cf_handle(db, cf), from, to),
        }
    }
    batch
}

fn write_batch(db: &DB, reqs: &[WriteRequest]) -> Result<(), String> {
    let batch = batch_of(db, reqs.iter().flat_map(|r| &r.ops));
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    crate::failpoints::log_before_fsync()?;
    db.write_opt(batch, &wo).map_err(|e| e.to_string())
}

pub(crate) fn cf_handle<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the store opens")
}
