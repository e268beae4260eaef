//! API tests: real node and gateway processes in three datacenters (see [`harness`]).
//!
//! - [`grpc`]: the whole flow through the public gRPC API, authorization, revocation;
//! - [`http`]: the same through HTTP/JSON and WebSocket, every bad input, rate limits;
//! - [`sdk`]: the Rust SDK: multi-device sync and push, and a device that resumes on another
//!   gateway after its gateway is killed;
//! - [`browser`]: two people chat through the web client in headless Chromium.

mod browser;
mod grpc;
mod harness;
mod http;
mod sdk;

use std::future::Future;
use std::time::Duration;

/// Runs a test body with a hard time limit, so that a stuck deployment ends the test by itself.
pub async fn bounded<F: Future<Output = anyhow::Result<()>>>(
    limit: Duration,
    body: F,
) -> anyhow::Result<()> {
    match tokio::time::timeout(limit, body).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the test did not finish within {limit:?}"),
    }
}
