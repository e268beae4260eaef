//! The gateways of `bongsu run`: one per datacenter on `127.0.d.1`, HTTP and the web client on
//! 8080, gRPC on 8081, each knowing every node's internal API. They are the test kit's gateway
//! processes (`bongsu_testkit::gateway`) on fixed addresses, stopped with SIGTERM.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use bongsu_proto::tls::Role;
use bongsu_testkit::gateway::{GatewayProc, GatewaySpec};

pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 8081;

/// The gateway of datacenter `dc`, not started yet; its log (appended to, so that a restarted
/// cluster keeps the previous run's story) is `<dir>/gw<dc>/gateway.log`.
pub fn local(bin: &Path, dir: &Path, dc: u32, nodes: &[String]) -> anyhow::Result<GatewayProc> {
    let gdir = dir.join(format!("gw{dc}"));
    std::fs::create_dir_all(&gdir).with_context(|| format!("create {}", gdir.display()))?;
    let dc = u8::try_from(dc).context("datacenter number")?;
    Ok(GatewayProc::new(GatewaySpec {
        binary: bin,
        dc,
        ip: Ipv4Addr::new(127, 0, dc, 1),
        ports: (GRPC_PORT, HTTP_PORT),
        nodes,
        log: gdir.join("gateway.log"),
        extra_args: &[],
        tls_dir: Some(&dir.join("certs").join(super::role_dir(Role::Gateway))),
        signal: libc::SIGTERM,
    }))
}
