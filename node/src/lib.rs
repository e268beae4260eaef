//! A bongsu node: hosts the meta group and many shard groups (multi-raft) on one RocksDB.
//!
//! The node carries every group's Raft traffic to a peer over one gRPC stream, keeps node
//! liveness with one ping per peer, serves the internal API gateways use, and the admin API
//! operators use. It must not depend on the gateway.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod failstop;
pub mod faults;
pub mod identity;
pub mod links;
pub mod node;
pub mod outbox;
pub mod placement;
pub mod quiesce;
pub mod reads;
pub mod rebalance;
pub mod retention;
pub mod server;
pub mod signing;
pub mod transfer;
pub mod transport;
pub mod upgrade;

pub use errors::{NodeError, Result};
