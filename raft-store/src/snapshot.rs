//! Snapshots as files, streamed in bounded memory (ARCHITECTURE.md invariant 9).
//!
//! A snapshot is every state-machine key of one group (without its group prefix, so it
//! installs into the same group on any node) and its value, in key order, written to a file
//! in the store's `snapshots` directory from a RocksDB point-in-time view. openraft sends the
//! file in chunks of `snapshot_max_chunk_size` bytes; the receiver writes the chunks to a file
//! of its own, checks the whole file, then streams it into the group's key range in write
//! batches of at most [`crate::StoreOptions::snapshot_batch_bytes`]. No step holds more than
//! one chunk, one batch or one entry: a shard's state is never in memory whole, and no single
//! RocksDB value holds a snapshot (RocksDB refuses values above 4 GiB).
//!
//! File format, version [`FORMAT_VERSION`] ([`FORMAT_RELEASE_1`] holds values as release 1
//! stored them), all integers little-endian:
//!
//! | part | bytes |
//! | --- | --- |
//! | header | [`MAGIC`] (8), format (u32), group it was built from (u64) |
//! | each entry | key length (u32, at most [`MAX_KEY`]), value length (u32, at most [`MAX_VALUE`]), key, value |
//! | trailer | `u32::MAX`, entry count (u64), CRC-32 of every byte before it (u32) |
//!
//! A file is checked completely (lengths, key order, no applied-state key, count, checksum,
//! nothing after the trailer) before installing it touches anything.
//!
//! The group's current snapshot is a [`SnapshotRecord`] in the `snap` column family (key:
//! group prefix · [`RECORD_TAG`]) naming its file. An install first records itself as
//! `installing`, fsynced, then replaces the state in batches, then writes the applied state
//! and the finished record in one fsynced batch: a crash in between leaves a record that
//! [`crate::StateMachineStore`] finishes from the file before the group starts.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::codec::{current_to_legacy, is_current, legacy_to_current};
use crate::errors::{Result, StoreError};
use crate::keys::TAG_APPLIED;
use crate::{GroupId, NodeId, NodeInfo};

/// The file format this release writes once the cluster version is 2: values in this
/// release's format ([`crate::codec`]).
pub const FORMAT_VERSION: u32 = 3;
/// The file format of release 1, whose values had no format byte. This release reads it
/// (converting each value) and writes it while the cluster version is 1, so that a node of
/// release 1 can still install a snapshot built by a node of this one during an upgrade.
pub const FORMAT_RELEASE_1: u32 = 2;
pub const MAGIC: [u8; 8] = *b"BONGSNAP";
/// The longest key a snapshot may carry (state-machine keys are tens of bytes).
pub const MAX_KEY: u32 = 4096;
/// The longest value a snapshot may carry: far above any state-machine value (a message body
/// is at most 64 KiB), low enough that a corrupt length cannot make a reader allocate much.
pub const MAX_VALUE: u32 = 16 << 20;
const END: u32 = u32::MAX;
const HEADER_LEN: usize = 8 + 4 + 8;
/// Read and write buffer of a snapshot file.
pub(crate) const IO_BUF: usize = 256 << 10;

/// The `snap` column family key of a group's [`SnapshotRecord`]: the group prefix, then this.
/// (Before format 2 a whole snapshot was one value under the bare group prefix.)
pub const RECORD_TAG: u8 = 0x01;

/// Names of files being received start with this; any left at startup are dropped.
pub const RECEIVING: &str = "recv-";

/// The group's current snapshot, as recorded in the `snap` column family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta<NodeId, NodeInfo>,
    /// The file's name in the store's snapshot directory.
    pub file: String,
    /// The file is being installed into the group's state: the state is not the snapshot's
    /// yet, and the install must be finished before the group serves or applies anything.
    pub installing: bool,
}

/// A snapshot file, as openraft reads it to send and writes it to receive
/// ([`crate::TypeConfig`]'s `SnapshotData`). It knows its path, so that an install can check
/// and keep the very file that was received.
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// A file being received is removed when dropped unless an install kept it.
    temporary: bool,
}

impl SnapshotFile {
    pub(crate) async fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(Self {
            file,
            path,
            temporary: false,
        })
    }

    /// A new file to receive a snapshot into; removed when dropped unless [`Self::keep`].
    pub(crate) async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(Self {
            file,
            path,
            temporary: true,
        })
    }

    /// Whether dropping this removes the file (a file being received).
    pub(crate) fn temporary(&self) -> bool {
        self.temporary
    }

    /// Keeps the file when this is dropped.
    pub(crate) fn keep(&mut self) {
        self.temporary = false;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes what was written and fsyncs it.
    pub(crate) async fn sync(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary {
            // Best effort: whatever is left is removed when the store next opens.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotFile({})", self.path.display())
    }
}

pub(crate) fn io_err(group: GroupId, what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::SnapshotIo {
        group,
        reason: format!("{what} {}: {e}", path.display()),
    }
}

/// Writes a snapshot file entry by entry, through a fixed buffer.
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    /// Values are written as release 1 stored them ([`FORMAT_RELEASE_1`]).
    legacy: bool,
    crc: crc32fast::Hasher,
    count: u64,
    bytes: u64,
    group: GroupId,
    path: PathBuf,
}

impl SnapshotWriter {
    /// A new file; `format` is [`FORMAT_VERSION`] or [`FORMAT_RELEASE_1`].
    pub(crate) fn create(group: GroupId, path: &Path, format: u32) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_err(group, "create", path, e))?;
        let mut w = Self {
            out: BufWriter::with_capacity(IO_BUF, file),
            legacy: format == FORMAT_RELEASE_1,
            crc: crc32fast::Hasher::new(),
            count: 0,
            bytes: 0,
            group,
            path: path.to_path_buf(),
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&format.to_le_bytes());
        header.extend_from_slice(&group.to_le_bytes());
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| io_err(self.group, "write", &self.path, e))
    }

    /// Appends one entry; keys must come in strictly increasing order.
    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let converted;
        let value = if self.legacy {
            converted = current_to_legacy(value).ok_or_else(|| StoreError::BadSnapshot {
                group: self.group,
                reason: "a stored value does not convert to release 1's format".into(),
            })?;
            &converted[..]
        } else {
            value
        };
        if key.len() > MAX_KEY as usize || value.len() > MAX_VALUE as usize {
            return Err(StoreError::BadSnapshot {
                group: self.group,
                reason: format!(
                    "an entry of {} key bytes and {} value bytes is over the format's limits",
                    key.len(),
                    value.len()
                ),
            });
        }
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and fsyncs the file. Returns its size in bytes.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.put(&END.to_le_bytes())?;
        self.put(&self.count.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out
            .write_all(&crc.to_le_bytes())
            .map_err(|e| io_err(self.group, "write", &self.path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(self.group, "flush", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_err(self.group, "fsync", &self.path, e))?;
        Ok(self.bytes + 4)
    }
}

/// Reads a snapshot file entry by entry, checking it as it goes: lengths, key order, no
/// applied-state key; at the end, the count, the checksum and that nothing follows.
pub(crate) struct SnapshotReader {
    input: BufReader<File>,
    /// The file holds values as release 1 stored them; [`Self::next_entry`] converts them.
    legacy: bool,
    crc: crc32fast::Hasher,
    count: u64,
    group: GroupId,
    key: Vec<u8>,
    value: Vec<u8>,
    first: bool,
    done: bool,
}

impl SnapshotReader {
    pub(crate) fn open(group: GroupId, path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| io_err(group, "open", path, e))?;
        let mut r = Self {
            input: BufReader::with_capacity(IO_BUF, file),
            legacy: false,
            crc: crc32fast::Hasher::new(),
            count: 0,
            group,
            key: Vec::new(),
            value: Vec::new(),
            first: true,
            done: false,
        };
        let mut header = [0u8; HEADER_LEN];
        r.take(&mut header)?;
        if header[..8] != MAGIC {
            return Err(r.bad("not a snapshot file (bad magic)"));
        }
        let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        match format {
            FORMAT_VERSION => {}
            FORMAT_RELEASE_1 => r.legacy = true,
            newer if newer > FORMAT_VERSION => {
                return Err(r.bad(format!(
                    "format {newer} is newer than this release reads ({FORMAT_VERSION})"
                )))
            }
            other => return Err(r.bad(format!("unknown format {other}"))),
        }
        Ok(r)
    }

    fn bad(&self, reason: impl Into<String>) -> StoreError {
        StoreError::BadSnapshot {
            group: self.group,
            reason: reason.into(),
        }
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.bad("the file ends early")
            } else {
                StoreError::SnapshotIo {
                    group: self.group,
                    reason: format!("read: {e}"),
                }
            }
        })?;
        self.crc.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The next entry (key without group prefix, value), or `None` after a valid trailer.
    /// The slices are valid until the next call.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        if self.done {
            return Ok(None);
        }
        let klen = self.u32()?;
        if klen == END {
            let mut count = [0u8; 8];
            self.take(&mut count)?;
            let count = u64::from_le_bytes(count);
            let computed = self.crc.clone().finalize();
            let mut stored = [0u8; 4];
            self.input
                .read_exact(&mut stored)
                .map_err(|_| self.bad("the file ends before its checksum"))?;
            let stored = u32::from_le_bytes(stored);
            if stored != computed {
                return Err(self.bad(format!(
                    "checksum mismatch: stored {stored:08x}, computed {computed:08x}"
                )));
            }
            if count != self.count {
                return Err(self.bad(format!(
                    "trailer counts {count} entries, the file holds {}",
                    self.count
                )));
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra).unwrap_or(0) != 0 {
                return Err(self.bad("bytes after the trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        let vlen = self.u32()?;
        if klen == 0 || klen > MAX_KEY || vlen > MAX_VALUE {
            return Err(self.bad(format!(
                "entry {} has key length {klen} and value length {vlen}",
                self.count
            )));
        }
        let mut key = vec![0u8; klen as usize];
        self.take(&mut key)?;
        if key[0] == TAG_APPLIED {
            return Err(self.bad("snapshot carries an applied-state key"));
        }
        if !self.first && key <= self.key {
            return Err(self.bad("keys out of order"));
        }
        self.first = false;
        self.key = key;
        self.value.resize(vlen as usize, 0);
        let mut value = std::mem::take(&mut self.value);
        let read = self.take(&mut value);
        self.value = value;
        read?;
        self.count += 1;
        // Every value is one the store could read: its own checksum holds, and a value of
        // release 1 is converted to this release's format.
        if self.legacy {
            self.value = legacy_to_current(&self.value)
                .ok_or_else(|| self.bad(format!("value {} fails its checksum", self.count)))?;
        } else if !is_current(&self.value) {
            return Err(self.bad(format!("value {} fails its checksum or format", self.count)));
        }
        Ok(Some((&self.key, &self.value)))
    }
}

/// Checks a whole snapshot file without keeping any of it. Returns its entry count.
pub(crate) fn check_file(group: GroupId, path: &Path) -> Result<u64> {
    let mut r = SnapshotReader::open(group, path)?;
    while r.next_entry()?.is_some() {}
    Ok(r.count)
}

/// Prepares the snapshot directory when the store opens: creates it, drops records of the
/// format before files (openraft rebuilds a snapshot at startup when the log was purged and
/// none is stored), and deletes every file no record names (left by a crash or an abandoned
/// transfer).
pub(crate) fn clean_dir(db: &rocksdb::DB, dir: &Path) -> Result<()> {
    let rocks = |op, source| StoreError::RocksDb {
        group: 0,
        op,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io_err(0, "create", dir, e))?;
    let cf = crate::group_commit::cf_handle(db, crate::keys::CF_SNAP);
    let mut keep = std::collections::HashSet::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item.map_err(|e| rocks("scan snapshots", e))?;
        let group = k
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if k.len() == 8 {
            tracing::info!(group, "dropping a snapshot of the format before files");
            db.delete_cf(cf, &k)
                .map_err(|e| rocks("drop old snapshot", e))?;
            continue;
        }
        let record: SnapshotRecord = crate::codec::decode(group, &k, "snapshot record", &v)?;
        keep.insert(record.file);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(0, "list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(0, "list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            tracing::info!(file = %name, "removing a snapshot file no group uses");
            std::fs::remove_file(entry.path())
                .map_err(|e| io_err(0, "remove", &entry.path(), e))?;
        }
    }
    Ok(())
}

/// Fsyncs a directory, so that a file created or renamed in it survives a crash.
pub(crate) fn sync_dir(group: GroupId, dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(group, "fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;

    fn write_as(dir: &Path, format: u32, entries: &[(&[u8], &str)]) -> PathBuf {
        let path = dir.join("s.snap");
        let _ = std::fs::remove_file(&path);
        let mut w = SnapshotWriter::create(5, &path, format).unwrap();
        for (k, v) in entries {
            w.entry(k, &encode(v)).unwrap();
        }
        w.finish().unwrap();
        path
    }

    fn write(dir: &Path, entries: &[(&[u8], &str)]) -> PathBuf {
        write_as(dir, FORMAT_VERSION, entries)
    }

    fn read_all(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut r = SnapshotReader::open(5, path)?;
        let mut out = Vec::new();
        while let Some((k, v)) = r.next_entry()? {
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn round_trip_and_every_single_byte_flip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entries: [(&[u8], &str); 3] = [(b"\x01a", "one"), (b"\x01b", ""), (b"\x03", "x")];
        let path = write(dir.path(), &entries);
        let back = read_all(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], (b"\x01a".to_vec(), encode(&"one")));
        assert_eq!(check_file(5, &path).unwrap(), 3);

        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(check_file(5, &path).is_err(), "flip at byte {i} passed");
        }
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(check_file(5, &path).is_err(), "cut at {cut} passed");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(check_file(5, &path).is_err());
    }

    #[test]
    fn a_release_1_file_reads_as_this_releases_values() {
        let dir = tempfile::tempdir().unwrap();
        let entries: [(&[u8], &str); 2] = [(b"\x01a", "one"), (b"\x01b", "two")];
        let path = write_as(dir.path(), FORMAT_RELEASE_1, &entries);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(raw[8..12], FORMAT_RELEASE_1.to_le_bytes());
        let back = read_all(&path).unwrap();
        assert_eq!(back[1], (b"\x01b".to_vec(), encode(&"two")));
        // A newer release's file is refused by name.
        let mut newer = raw.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        std::fs::write(&path, &newer).unwrap();
        let err = check_file(5, &path).unwrap_err().to_string();
        assert!(err.contains("newer than this release"), "{err}");
    }

    #[test]
    fn out_of_order_keys_and_applied_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &[(b"\x02", "a"), (b"\x01", "b")]);
        let err = check_file(5, &path).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
        let path = write(dir.path(), &[(&[TAG_APPLIED, 1], "a")]);
        let err = check_file(5, &path).unwrap_err().to_string();
        assert!(err.contains("applied-state"), "{err}");
    }

    #[test]
    fn a_huge_length_is_refused_before_anything_is_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.snap");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = check_file(5, &path).unwrap_err().to_string();
        assert!(err.contains("value length"), "{err}");
    }
}
