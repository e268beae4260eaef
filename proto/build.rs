//! Compiles the `.proto` files with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/bongsu/v1/messaging.proto",
        "proto/bongsu/v1/api.proto",
        "proto/bongsu/internal/v1/raft.proto",
        "proto/bongsu/internal/v1/node.proto",
        "proto/bongsu/internal/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Messages always; gRPC clients and servers (tonic) only with the `grpc` feature, so that
    // crates that only store or validate messages (raft-store) do not depend on tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
