//! Starts a node: store, groups, background work and the three gRPC servers.

use std::net::SocketAddr;
use std::sync::Arc;

use bongsu_proto::internal::admin_server::AdminServer;
use bongsu_proto::internal::node_api_server::NodeApiServer;
use bongsu_proto::internal::raft_transport_server::RaftTransportServer;
use bongsu_proto::tls::Authorize;
use tonic::transport::Server;

use crate::admin::AdminService;
use crate::api::ApiService;
use crate::config::NodeConfig;
use crate::errors::{NodeError, Result};
use crate::node::Node;
use crate::transport::RaftService;

const MAX_MESSAGE: usize = 256 << 20;

fn addr(s: &str, field: &'static str) -> Result<SocketAddr> {
    s.parse().map_err(|e| NodeError::Config {
        field,
        reason: format!("{s:?}: {e}"),
    })
}

/// Starts the node's background work: following the shard map, liveness and joining, the
/// rebalancer and preferred leaders, quiescing, the outbox pump, retention and the signing-key
/// check.
fn spawn_background(node: Arc<Node>) {
    crate::cluster::spawn(node.clone());
    crate::rebalance::spawn(node.clone());
    crate::quiesce::spawn(node.clone());
    crate::outbox::spawn(node.clone());
    crate::retention::spawn(node.clone());
    crate::upgrade::spawn(node.clone());
    crate::signing::spawn(node);
}

/// Runs a node until one of its servers stops (which is an error) or the process is killed.
pub async fn run(cfg: NodeConfig) -> Result<()> {
    let raft_addr = addr(&cfg.raft_addr, "raft_addr")?;
    let api_addr = addr(&cfg.api_addr, "api_addr")?;
    let admin_addr = addr(&cfg.admin_addr, "admin_addr")?;
    let node = Node::open(cfg).await?;
    tracing::info!(node_id = node.id(), dc = %node.cfg.dc, %raft_addr, %api_addr, %admin_addr, "node starting");

    // Catch-up streams megabytes per request: the default 64 KiB HTTP/2 windows would cap it at
    // a few round trips' worth per second across datacenters.
    let listen = |addr: SocketAddr| {
        let security = node.security.clone();
        async move {
            security
                .bind(addr)
                .await
                .map_err(|e| NodeError::Unavailable(format!("listen on {addr}: {e}")))
        }
    };
    let (raft_in, api_in, admin_in) = (
        listen(raft_addr).await?,
        listen(api_addr).await?,
        listen(admin_addr).await?,
    );
    let authorize = Authorize::new(crate::links::allowed);
    let raft = Server::builder()
        .layer(authorize.clone())
        .initial_stream_window_size(crate::transport::client::STREAM_WINDOW)
        .initial_connection_window_size(crate::transport::client::CONNECTION_WINDOW)
        .add_service(
            RaftTransportServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        );
    let api = Server::builder()
        .layer(authorize.clone())
        .add_service(NodeApiServer::new(ApiService::new(node.clone())));
    let admin = Server::builder()
        .layer(authorize)
        .add_service(AdminServer::new(AdminService::new(node.clone())));
    let raft = tokio::spawn(raft.serve_with_incoming(raft_in));
    let api = tokio::spawn(api.serve_with_incoming(api_in));
    let admin = tokio::spawn(admin.serve_with_incoming(admin_in));
    spawn_background(node.clone());
    tracing::info!(node_id = node.id(), "node ready");

    let (which, res) = tokio::select! {
        r = raft => ("raft", r),
        r = api => ("api", r),
        r = admin => ("admin", r),
    };
    let res = res.map_err(|e| NodeError::Unavailable(format!("{which} server task: {e}")))?;
    res.map_err(|e| NodeError::Unavailable(format!("{which} server: {e}")))?;
    Err(NodeError::Unavailable(format!("{which} server stopped")))
}
