//! Encoding of values stored in RocksDB: postcard (compact serde) followed by a CRC-32 of it.
//!
//! RocksDB checksums its own blocks and WAL records, which catches media errors; the CRC here
//! catches a value that was written wrong or overwritten by something else. Decoding never
//! panics: a bad value is a [`StoreError::Corrupt`] naming the group and key.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::errors::{Result, StoreError};
use crate::keys::display_key;
use crate::GroupId;

const CRC_LEN: usize = 4;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on a full fixed buffer or a type serde cannot express; neither
    // happens with `to_extend` into a Vec and the plain data types stored here.
    let mut out = postcard::to_extend(value, Vec::with_capacity(64))
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
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
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
}
