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

pub use bongsu_testkit::bounded;
