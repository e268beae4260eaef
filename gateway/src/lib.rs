//! bongsu-gateway: the stateless front door of bongsu.
//!
//! A gateway serves the public API (gRPC `bongsu.v1`, HTTP/JSON under `/v1`, WebSocket push)
//! and the web client. It holds no state but caches (shard map and leader hints, token-signing
//! keys, device status, sessions of connected devices): any gateway in any datacenter serves
//! any request, and killing one loses nothing (ARCHITECTURE.md invariant 3). Everything durable goes
//! through the nodes' internal API to shard leaders.
//!
//! This crate must not depend on storage or Raft crates: it only speaks the internal gRPC API.

pub mod auth;
pub mod config;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod openapi;
pub mod push;
pub mod router;
pub mod service;
pub mod web;
pub mod ws;

pub use auth::Caller;
pub use config::Config;
pub use errors::{ApiError, Result};
pub use service::Gateway;

/// Starts the gateway and serves gRPC and HTTP until one of them fails.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let gw = Gateway::start(config.clone()).await?;
    tokio::try_join!(
        grpc::serve(gw.clone(), config.grpc_addr),
        http::serve(gw, config.http_addr),
    )?;
    Ok(())
}
