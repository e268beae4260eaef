//! The store's format, checked when it opens, and the one-time rewrite of a store of release 1
//! (values without a format byte) into this release's format (ARCHITECTURE.md invariant 11).
//!
//! The format is a raw `u32` (little-endian) under [`FORMAT_KEY`] in the `node` column family.
//! A store without it is either new (nothing in it: the format is written) or of release 1:
//! every value of every column family is converted ([`crate::codec::legacy_to_current`]), in
//! batches that each also record how far the rewrite got ([`PROGRESS_KEY`]), so a crash in
//! the middle resumes after the last batch instead of converting a value twice. The format is
//! written, fsynced, in the batch that ends the rewrite. A store of a newer format is refused.

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::codec::legacy_to_current;
use crate::errors::{Result, StoreError};
use crate::group_commit::cf_handle;
use crate::keys::{self, CF_NODE};
use crate::version::STORE_FORMAT;

/// The store's format, in the `node` column family.
pub const FORMAT_KEY: &[u8] = b"store-format";
/// How far a rewrite got: the column family's index in [`keys::ALL_CFS`], then the last key
/// converted.
const PROGRESS_KEY: &[u8] = b"store-rewrite";
/// Bytes of values per rewrite batch.
const BATCH_BYTES: usize = 4 << 20;

fn rocks(op: &'static str) -> impl Fn(rocksdb::Error) -> StoreError {
    move |source| StoreError::RocksDb {
        group: 0,
        op,
        source,
    }
}

fn is_own(cf: &str, key: &[u8]) -> bool {
    cf == CF_NODE && (key == FORMAT_KEY || key == PROGRESS_KEY)
}

/// Checks the store's format, writes it on a new store, and rewrites a store of release 1.
/// Returns how many values were converted.
pub(crate) fn ensure_format(db: &DB, path: &str) -> Result<u64> {
    let node = cf_handle(db, CF_NODE);
    if let Some(v) = db
        .get_cf(node, FORMAT_KEY)
        .map_err(rocks("read store format"))?
    {
        let format = <[u8; 4]>::try_from(v.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| StoreError::Corrupt {
                group: 0,
                key: keys::display_key(FORMAT_KEY),
                what: "store format",
                reason: format!("{} bytes", v.len()),
            })?;
        if format > STORE_FORMAT {
            return Err(StoreError::NewerStore {
                path: path.to_string(),
                format,
                known: STORE_FORMAT,
            });
        }
        if format == STORE_FORMAT {
            return Ok(0);
        }
    }
    let progress = db
        .get_cf(node, PROGRESS_KEY)
        .map_err(rocks("read rewrite progress"))?;
    let empty = progress.is_none()
        && keys::ALL_CFS.iter().all(|cf| {
            db.iterator_cf(cf_handle(db, cf), IteratorMode::Start)
                .next()
                .is_none()
        });
    if !empty {
        return rewrite(db, path, progress);
    }
    finish(db, WriteBatch::default())?;
    Ok(0)
}

fn finish(db: &DB, mut batch: WriteBatch) -> Result<()> {
    let node = cf_handle(db, CF_NODE);
    batch.delete_cf(node, PROGRESS_KEY);
    batch.put_cf(node, FORMAT_KEY, STORE_FORMAT.to_le_bytes());
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)
        .map_err(rocks("write store format"))
}

fn rewrite(db: &DB, path: &str, progress: Option<Vec<u8>>) -> Result<u64> {
    let (start_cf, mut after) = match progress.as_deref() {
        Some([cf, key @ ..]) => (*cf as usize, Some(key.to_vec())),
        _ => (0, None),
    };
    tracing::warn!(
        path,
        resuming = progress.is_some(),
        "rewriting a store of release 1 into this release's format (once)"
    );
    let node = cf_handle(db, CF_NODE);
    let mut converted = 0u64;
    for (i, name) in keys::ALL_CFS.iter().enumerate().skip(start_cf) {
        let cf = cf_handle(db, name);
        let from = after.take().unwrap_or_default();
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut batch = WriteBatch::default();
        let mut bytes = 0usize;
        for item in db.iterator_cf(cf, mode) {
            let (k, v) = item.map_err(rocks("scan for rewrite"))?;
            if is_own(name, &k) || (!from.is_empty() && *k == *from) {
                continue;
            }
            let current = legacy_to_current(&v).ok_or_else(|| StoreError::Corrupt {
                group: k
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0),
                key: keys::display_key(&k),
                what: "value of release 1",
                reason: "its checksum does not hold".into(),
            })?;
            bytes += k.len() + current.len();
            batch.put_cf(cf, &k, current);
            converted += 1;
            if bytes >= BATCH_BYTES {
                let mut mark = vec![i as u8];
                mark.extend_from_slice(&k);
                batch.put_cf(node, PROGRESS_KEY, mark);
                db.write(std::mem::take(&mut batch))
                    .map_err(rocks("rewrite"))?;
                bytes = 0;
            }
        }
        // The next column family starts from its beginning.
        batch.put_cf(node, PROGRESS_KEY, [(i + 1) as u8]);
        db.write(batch).map_err(rocks("rewrite"))?;
    }
    finish(db, WriteBatch::default())?;
    tracing::warn!(
        path,
        converted,
        "store rewritten into this release's format"
    );
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{current_to_legacy, decode, encode};

    fn open(dir: &std::path::Path) -> DB {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        DB::open_cf(&o, dir, keys::ALL_CFS).unwrap()
    }

    #[test]
    fn a_release_1_store_is_rewritten_once_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        assert_eq!(
            ensure_format(&db, "t").unwrap(),
            0,
            "a new store has nothing to convert"
        );
        drop(db);

        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let values: Vec<(String, u64)> = (0..3000).map(|i| (format!("v{i}"), i)).collect();
        for (i, v) in values.iter().enumerate() {
            let cf = cf_handle(&db, keys::ALL_CFS[i % 5]);
            let legacy = current_to_legacy(&encode(v)).unwrap();
            db.put_cf(cf, (i as u64).to_be_bytes(), legacy).unwrap();
        }
        // A crash halfway: the progress mark says the first column family is done.
        db.put_cf(cf_handle(&db, CF_NODE), PROGRESS_KEY, [1u8])
            .unwrap();
        let first = cf_handle(&db, keys::ALL_CFS[0]);
        for (i, v) in values.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
            db.put_cf(first, (i as u64).to_be_bytes(), encode(v))
                .unwrap();
        }
        assert_eq!(ensure_format(&db, "t").unwrap(), 2400);
        for (i, v) in values.iter().enumerate() {
            let cf = cf_handle(&db, keys::ALL_CFS[i % 5]);
            let k = (i as u64).to_be_bytes();
            let raw = db.get_cf(cf, k).unwrap().unwrap();
            let back: (String, u64) = decode(0, &k, "t", &raw).unwrap();
            assert_eq!(&back, v);
        }
        assert_eq!(ensure_format(&db, "t").unwrap(), 0, "rewritten twice");

        db.put_cf(cf_handle(&db, CF_NODE), FORMAT_KEY, 9u32.to_le_bytes())
            .unwrap();
        let err = ensure_format(&db, "t").unwrap_err().to_string();
        assert!(err.contains("newer release"), "{err}");
    }
}
