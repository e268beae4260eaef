//! Serde helpers that write 128-bit ids and 64-bit digests as fixed-width hex strings.
//!
//! JSON numbers are not a safe home for them: serde_json handles `u128` only outside
//! `flatten`/untagged contexts, and most other JSON readers round anything above 2^53.
//! Strings also make ids in a history easy to grep for.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::Deserialize;

/// Formats a 128-bit id as the 32 hex digits it is stored as.
pub fn fmt_u128(v: u128) -> String {
    format!("{v:032x}")
}

fn parse<T, E: de::Error>(
    s: &str,
    max_digits: usize,
    parse: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Result<T, E> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty()
        || digits.len() > max_digits
        || !digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(E::custom(format_args!(
            "expected up to {max_digits} hex digits, got {s:?}"
        )));
    }
    parse(digits, 16).map_err(E::custom)
}

/// `#[serde(with = "crate::serde_hex::u128")]`: a `u128` as 32 hex digits.
pub mod u128 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt_u128(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s, 32, ::core::primitive::u128::from_str_radix)
    }
}

/// `#[serde(with = "crate::serde_hex::u64")]`: a `u64` as 16 hex digits.
pub mod u64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s, 16, ::core::primitive::u64::from_str_radix)
    }
}

/// `#[serde(with = "crate::serde_hex::u128_keys")]`: a `BTreeMap<u128, V>` as a JSON object
/// keyed by 32 hex digits.
pub mod u128_keys {
    use super::*;
    use serde::Serialize;

    pub fn serialize<S, V>(map: &BTreeMap<u128, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        V: Serialize,
    {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(&fmt_u128(*k), v)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D, V>(d: D) -> Result<BTreeMap<u128, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de>,
    {
        struct Visitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> de::Visitor<'de> for Visitor<V> {
            type Value = BTreeMap<u128, V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map keyed by 128-bit hex ids")
            }

            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    let id = parse(&key, 32, ::core::primitive::u128::from_str_radix)?;
                    if map.insert(id, access.next_value()?).is_some() {
                        return Err(de::Error::custom(format_args!("duplicate id {key}")));
                    }
                }
                Ok(map)
            }
        }

        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// `#[serde(serialize_with = "crate::serde_hex::opt_u128")]`: an `Option<u128>` as 32 hex
/// digits or null.
pub fn opt_u128<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&fmt_u128(*v)),
        None => s.serialize_none(),
    }
}
