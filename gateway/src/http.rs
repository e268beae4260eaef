//! HTTP/JSON under `/v1` (OpenAPI at `/v1/openapi.json`), the WebSocket push stream at
//! `/v1/ws`, `/healthz`, `/readyz`, and the web client at `/`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::service::Gateway;

/// Serves HTTP on `addr` until the process ends.
pub async fn serve(gw: Arc<Gateway>, addr: SocketAddr) -> anyhow::Result<()> {
    let _ = (gw, addr);
    todo!()
}
