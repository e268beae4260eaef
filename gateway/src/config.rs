//! Gateway settings: flags, or the same names as `BONGSU_GATEWAY_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a gateway needs to start. It keeps no state of its own, so there is no data
/// directory: any number of gateways with the same node list are interchangeable.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// A name for this gateway, shown by ServerInfo and in traces.
    #[arg(long, env = "BONGSU_GATEWAY_ID", default_value = "gw")]
    pub id: String,
    /// The datacenter this gateway runs in (shown to clients; preferred for reads and push).
    #[arg(long, env = "BONGSU_GATEWAY_DC", default_value = "dc1")]
    pub dc: String,
    /// Internal API addresses of some nodes (comma-separated, any datacenters); the rest are
    /// learned from the shard map.
    #[arg(
        long,
        env = "BONGSU_GATEWAY_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// The gateway's TLS directory for its calls to nodes: `ca.pem` (the cluster CA), and a
    /// `cert.pem` naming `gateway.bongsu.internal` with its `key.pem`. Read again when the
    /// files change, so certificates rotate without a restart.
    #[arg(long, env = "BONGSU_GATEWAY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Talk plain text to nodes that run without TLS (a local development cluster only).
    #[arg(long, env = "BONGSU_GATEWAY_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Where the public gRPC API listens.
    #[arg(
        long,
        env = "BONGSU_GATEWAY_GRPC_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub grpc_addr: SocketAddr,
    /// Where HTTP/JSON, WebSocket, the web client and health checks listen.
    #[arg(
        long,
        env = "BONGSU_GATEWAY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,
    /// Serve the web client from this directory instead of the copy built into the binary.
    #[arg(long, env = "BONGSU_GATEWAY_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "BONGSU_GATEWAY_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,
    /// How long a device's "not revoked" status is cached: a revoked device's access tokens
    /// stop working within this many seconds on every gateway.
    #[arg(long, env = "BONGSU_GATEWAY_DEVICE_CHECK_SECS", default_value_t = 5)]
    pub device_check_secs: u64,
    /// Deadline of one request, retries included, in milliseconds.
    #[arg(
        long,
        env = "BONGSU_GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub request_timeout_ms: u64,
    /// Requests served at once per API (gRPC, HTTP); beyond it new requests are shed.
    #[arg(long, env = "BONGSU_GATEWAY_MAX_CONCURRENCY", default_value_t = 1024)]
    pub max_concurrency: usize,
    /// Requests per second one user may make (sustained; bursts up to twice as many).
    #[arg(long, env = "BONGSU_GATEWAY_USER_RATE", default_value_t = 50)]
    pub user_rate: u32,
    /// Requests per second one client IP address may make (sustained; bursts up to twice).
    #[arg(long, env = "BONGSU_GATEWAY_IP_RATE", default_value_t = 200)]
    pub ip_rate: u32,
    /// Sign-ups and sign-ins per minute from one IP address (password guessing is slow).
    #[arg(long, env = "BONGSU_GATEWAY_AUTH_RATE_PER_MIN", default_value_t = 60)]
    pub auth_rate_per_min: u32,
}
