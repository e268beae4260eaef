//! Encoding of values stored in RocksDB: a format byte ([`VALUE_FORMAT`]), postcard (compact
//! serde), then a CRC-32 of both.
//!
//! A value whose format this release does not know (a newer release wrote it) is an error
//! that says so; the format byte is what lets a later release read this one's values and
//! change its own. Values of release 1 had no format byte ([`legacy_to_current`] converts
//! them when the store is first opened by this release).
//!
//! RocksDB checksums its own blocks and WAL records, which catches media errors; the CRC here
//! catches a value that was written wrong or overwritten by something else. Decoding never
//! panics: a bad value is a [`StoreError::Corrupt`] naming the group and key.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::errors::{Result, StoreError};
use crate::keys::display_key;
use crate::version::VALUE_FORMAT;
use crate::GroupId;

const CRC_LEN: usize = 4;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on a full fixed buffer or a type serde cannot express; neither
    // happens with `to_extend` into a Vec and the plain data types stored here.
    let mut out = postcard::to_extend(value, vec![VALUE_FORMAT])
        .expect("postcard encodes plain data into a growable buffer");
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode<T: DeserializeOwned>(
    group: GroupId,
    key: &[u8],
    what: &'static str,
    bytes: &[u8],
) -> Result<T> {
    let corrupt = |reason: String| StoreError::Corrupt {
        group,
        key: display_key(key),
        what,
        reason,
    };
    if bytes.len() < CRC_LEN {
        return Err(corrupt(format!(
            "{} bytes is shorter than a checksum",
            bytes.len()
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes(crc.try_into().expect("split_at left exactly CRC_LEN bytes"));
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let (format, body) = body
        .split_first()
        .ok_or_else(|| corrupt("no format byte".into()))?;
    if *format != VALUE_FORMAT {
        return Err(corrupt(format!(
            "value format {format}, this release reads format {VALUE_FORMAT}: {}",
            if *format > VALUE_FORMAT {
                "written by a newer release"
            } else {
                "not a value of this store"
            }
        )));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// A value as release 1 stored it (postcard, then a CRC-32), in this release's format; `None`
/// if its checksum does not hold.
pub fn legacy_to_current(bytes: &[u8]) -> Option<Vec<u8>> {
    let body = legacy_body(bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    Some(out)
}

/// This release's value in release 1's format (for a snapshot sent while the cluster still
/// runs version 1); `None` if its checksum or format does not hold.
pub fn current_to_legacy(bytes: &[u8]) -> Option<Vec<u8>> {
    let all = legacy_body(bytes)?;
    let (format, body) = all.split_first()?;
    if *format != VALUE_FORMAT {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    Some(out)
}

/// Whether `bytes` is a value in this release's format whose checksum holds (without
/// decoding or copying it).
pub fn is_current(bytes: &[u8]) -> bool {
    legacy_body(bytes).is_some_and(|all| all.first() == Some(&VALUE_FORMAT))
}

/// The bytes before a valid trailing CRC-32.
fn legacy_body(bytes: &[u8]) -> Option<&[u8]> {
    let at = bytes.len().checked_sub(CRC_LEN)?;
    let (body, crc) = bytes.split_at(at);
    (u32::from_le_bytes(crc.try_into().ok()?) == crc32fast::hash(body)).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_flip_is_caught() {
        let value = (7u64, "hello".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&value);
        let back: (u64, String, Vec<u8>) = decode(1, b"k", "test", &bytes).unwrap();
        assert_eq!(back, value);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let err = decode::<(u64, String, Vec<u8>)>(3, b"\x01\x02", "test", &bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("group 3") && msg.contains("0102"), "{msg}");
        }
        assert!(decode::<u64>(1, b"k", "test", &[1, 2]).is_err());
    }

    #[test]
    fn a_newer_format_is_refused_by_name_and_release_1_values_convert_both_ways() {
        let value = (7u64, "hello".to_string());
        let current = encode(&value);
        assert_eq!(current[0], VALUE_FORMAT);
        let mut newer = current.clone();
        newer[0] = VALUE_FORMAT + 1;
        let len = newer.len();
        let crc = crc32fast::hash(&newer[..len - CRC_LEN]).to_le_bytes();
        newer[len - CRC_LEN..].copy_from_slice(&crc);
        let err = decode::<(u64, String)>(1, b"k", "test", &newer).unwrap_err();
        assert!(err.to_string().contains("newer release"), "{err}");

        let legacy = current_to_legacy(&current).unwrap();
        assert_eq!(
            &legacy[..legacy.len() - CRC_LEN],
            &current[1..current.len() - CRC_LEN]
        );
        assert!(decode::<(u64, String)>(1, b"k", "test", &legacy).is_err());
        assert_eq!(legacy_to_current(&legacy).unwrap(), current);
        assert_eq!(legacy_to_current(&current[1..]), None);
        assert!(is_current(&current) && !is_current(&legacy) && !is_current(&newer));
    }
}
