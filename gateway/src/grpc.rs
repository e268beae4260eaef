//! The public gRPC API (`bongsu.v1.Auth`, `bongsu.v1.Messenger`) over [`Gateway`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::service::Gateway;

/// Serves gRPC on `addr` until the process ends.
pub async fn serve(gw: Arc<Gateway>, addr: SocketAddr) -> anyhow::Result<()> {
    let _ = (gw, addr);
    todo!()
}
