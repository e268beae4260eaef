//! Durable storage for many Raft groups sharing one RocksDB instance per node.
//!
//! A node hosts hundreds or thousands of Raft groups (multi-raft). Giving each its own RocksDB
//! would mean one write-ahead log, one fsync stream and one set of background threads per
//! group; instead every group lives in the same four column families under an 8-byte
//! big-endian group-id key prefix (see [`keys`]), and all log appends go through one writer
//! thread that merges concurrent appends of every group into one write batch and one fsync
//! ([`group_commit`]).
//!
//! This crate provides, per group:
//! - [`LogStore`]: openraft's [`RaftLogStorage`](openraft::storage::RaftLogStorage): log
//!   entries, vote, committed index, truncate and purge;
//! - [`StateMachineStore`]: openraft's [`RaftStateMachine`](openraft::storage::RaftStateMachine),
//!   with snapshots.
//!
//! The crate has two halves. The engine (`store`, `log_store`, `state_machine`, `applied`,
//! `snapshot`, `group_commit`, `keys`, `overlay`, `signal`, `codec`, `identity`) stores and applies entries without
//! knowing what they mean. The state machine it applies is defined by its root, [`command`]
//! (what an entry carries) and [`apply`] (which machine applies it), over three sibling
//! machines that never import one another: [`messaging`] (conversations, messages, the
//! outbox), [`meta`] (the cluster's own state) and [`accounts`] (handles, accounts, devices).
//! [`result`] is the result every machine returns.
//!
//! Invariant: an append is reported durable to openraft only after the RocksDB write-ahead log
//! holding it has been fsynced (ARCHITECTURE.md invariant 1). A failed write poisons the
//! writer, and nothing is acknowledged after it (fail-stop, invariant 6).
//!
//! This crate must not depend on networking (tonic, the node, the gateway): it is the storage
//! layer only.

pub mod accounts;
pub mod applied;
pub mod apply;
pub mod codec;
pub mod command;
pub mod errors;
pub mod failpoints;
pub mod group_commit;
pub mod identity;
pub mod keys;
pub mod log_store;
pub mod messaging;
pub mod meta;
pub mod migrate;
mod overlay;
pub mod result;
pub mod signal;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod version;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use command::Command;
pub use errors::{Result, StoreError};
pub use log_store::LogStore;
pub use result::{CommandResult, Rejection};
pub use signal::GroupSignal;
pub use state_machine::StateMachineStore;
pub use store::{Store, StoreOptions, WriterStats, DEFAULT_REPLICATION_MAX_BYTES};

/// Identifies one Raft group on a node. The meta group and every shard group have one.
pub type GroupId = u64;

/// Identifies a node in the cluster.
pub type NodeId = u64;

/// Limits the state machine enforces. They decide what is accepted, so every replica of a
/// group must apply with the same values: nodes take them from the cluster configuration
/// chosen at init ([`meta::ClusterConfig`]), never from local flags; [`messaging`] enforces
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmConfig {
    pub max_body_bytes: usize,
    pub max_group_members: u32,
}

impl Default for SmConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: bongsu_proto::model::DEFAULT_MAX_BODY_BYTES,
            max_group_members: 3000,
        }
    }
}

/// What the cluster knows about a node: where to reach it and which datacenter it is in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the node's Raft transport, `host:port`.
    pub addr: String,
    /// Datacenter (zone) label; placement never puts a majority of a group in one.
    pub dc: String,
    /// Address of the node's admin API, so that requests can be forwarded to a group's leader
    /// before the node registry knows the node.
    pub admin_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.dc)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration shared by every group on every node.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of [`TypeConfig`].
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of [`TypeConfig`].
pub type LogId = openraft::LogId<NodeId>;
/// The openraft storage error of [`TypeConfig`].
pub type StorageError = openraft::StorageError<NodeId>;
