//! bongsu-client: the Rust SDK over the public gRPC API (`bongsu.v1`).
