//! Raft transport over gRPC: every group's Raft RPCs to one peer share one stream.
//!
//! openraft 0.9 talks to each (group, peer) pair through its own `RaftNetwork` client. Here
//! those clients are thin handles onto one [`client::PeerLink`] per peer node, which keeps one
//! HTTP/2 connection and one bidirectional `Exchange` stream, batches whatever is queued into
//! one `RaftBatch` frame, and matches replies by id. Replies return as each RPC completes, so
//! a group waiting on a slow fsync does not delay the others.
//!
//! Payloads are openraft's request and response types, postcard-encoded. Snapshots travel as
//! openraft's chunked `install_snapshot` RPCs on the same stream.

pub mod client;
pub mod probe;
pub mod server;

pub use client::{GroupNetworkFactory, Transport};
pub use server::RaftService;
