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
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
