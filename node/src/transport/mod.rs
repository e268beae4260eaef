//! Raft transport over gRPC: every group's Raft RPCs to one peer share two links.
//!
//! openraft 0.9 talks to each (group, peer) pair through its own `RaftNetwork` client. Here
//! those clients are thin handles onto two [`client::PeerLink`]s per peer node, a control lane
//! (votes, heartbeats, small appends) and a bulk lane (large appends, snapshot chunks); each
//! keeps one HTTP/2 connection and one bidirectional `Exchange` stream, batches whatever is
//! queued into one `RaftBatch` frame, and matches replies by id. Replies return as each RPC
//! completes, so a group waiting on a slow fsync does not delay the others. Before sending a
//! follower entries it may already hold, the client asks it ([`probe`]).
//!
//! Payloads are openraft's request and response types, postcard-encoded. Snapshots travel as
//! openraft's chunked `install_snapshot` RPCs on the bulk lane.

pub mod client;
pub mod probe;
pub mod server;

pub use client::{GroupNetworkFactory, Transport};
pub use server::RaftService;
