//! Storage tests against a real RocksDB on disk: openraft's conformance suite, isolation of
//! groups sharing one RocksDB, corruption handling and reopening.

mod conformance;
mod corruption;
mod encoding;
mod failpoints;
mod isolation;
mod limits;
mod snapshots;
mod support;
