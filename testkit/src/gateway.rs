//! Gateway processes: one per datacenter, each knowing every node's internal API.
//!
//! The API tests and `bench-gateway` put them on `127.0.d.100` with free ports
//! ([`start_gateways`]); `bongsu run` on `127.0.d.1` with fixed ones. A gateway is ready when
//! `GET /readyz` answers 200, asked over a plain TCP connection so that the kit needs no HTTP
//! client library.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bongsu_proto::tls::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process;

/// One gateway process, running or not.
pub struct GatewayProc {
    /// 1, 2 or 3.
    pub dc: u8,
    pub id: String,
    /// `ip:port` of the public gRPC API, and its `http://` URL.
    pub grpc_addr: String,
    pub grpc_url: String,
    /// `ip:port` of HTTP/JSON, WebSocket and the web client, and its `http://` URL.
    pub http_addr: String,
    pub http_url: String,
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    /// The gateway's `RUST_LOG`; `None` leaves its own default.
    pub log_filter: Option<String>,
    /// What the gateway receives when this process dies (SIGKILL for tests, SIGTERM for
    /// `bongsu run`), and what ends it when it is stopped or dropped.
    signal: libc::c_int,
    child: Option<Child>,
    /// When it was last started.
    pub started: Instant,
    /// How many times it was started again after it exited.
    pub restarts: u32,
}

/// Where a gateway listens and who it is.
pub struct GatewaySpec<'a> {
    pub binary: &'a Path,
    pub dc: u8,
    pub ip: Ipv4Addr,
    /// gRPC and HTTP ports.
    pub ports: (u16, u16),
    /// Every node's internal API address.
    pub nodes: &'a [String],
    pub log: PathBuf,
    /// Flags beyond identity, nodes and addresses (e.g. `--user-rate=0`).
    pub extra_args: &'a [String],
    /// The gateway's TLS directory for its calls to nodes; `None` for plain text.
    pub tls_dir: Option<&'a Path>,
    pub signal: libc::c_int,
}

impl GatewayProc {
    /// A gateway as `spec` describes it, not started yet.
    pub fn new(spec: GatewaySpec<'_>) -> GatewayProc {
        let dc = spec.dc;
        let id = format!("gw{dc}");
        let grpc_addr = format!("{}:{}", spec.ip, spec.ports.0);
        let http_addr = format!("{}:{}", spec.ip, spec.ports.1);
        let mut args = vec![
            format!("--id={id}"),
            format!("--dc=dc{dc}"),
            format!("--nodes={}", spec.nodes.join(",")),
            format!("--grpc-addr={grpc_addr}"),
            format!("--http-addr={http_addr}"),
        ];
        match spec.tls_dir {
            Some(dir) => args.push(format!("--tls-dir={}", dir.display())),
            None => args.push("--insecure-plaintext".into()),
        }
        args.extend(spec.extra_args.iter().cloned());
        GatewayProc {
            dc,
            id,
            grpc_url: format!("http://{grpc_addr}"),
            http_url: format!("http://{http_addr}"),
            grpc_addr,
            http_addr,
            log: spec.log,
            binary: spec.binary.to_path_buf(),
            args,
            log_filter: None,
            signal: spec.signal,
            child: None,
            started: Instant::now(),
            restarts: 0,
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the gateway (again), its output appended to its log.
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("gateway {} is already running", self.id);
        }
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args);
        match &self.log_filter {
            Some(f) => cmd.env("RUST_LOG", f),
            None => cmd.env_remove("RUST_LOG"),
        };
        let child = process::spawn(&mut cmd, &self.log, self.signal)
            .with_context(|| format!("start gateway {} ({})", self.id, self.binary.display()))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    /// Ends the gateway with its signal and reaps it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            process::stop(c, self.signal);
        }
    }

    /// `Some(status)` once the process has exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Waits until `/readyz` answers 200; fails at once if the gateway exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "gateway {} exited at start ({status}); log:\n{}",
                    self.id,
                    self.log_tail(30)
                );
            }
            if ready(&self.http_addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway {} not ready within {timeout:?}; log:\n{}",
                    self.id,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log, lines)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One gateway per datacenter `1..=dcs` on `127.0.d.100` with free ports, logging to
/// `<dir>/gw<d>.log`, started and ready; `log_filter` is their `RUST_LOG` (their own default
/// when `None`).
pub async fn start_gateways(
    binary: &Path,
    dir: &Path,
    dcs: u8,
    nodes: &[String],
    extra_args: &[String],
    log_filter: Option<&str>,
) -> Result<Vec<GatewayProc>> {
    let mut gateways = Vec::new();
    let tls_dir = (!crate::pki::plaintext()).then(|| crate::pki::pki().dir(Role::Gateway));
    for dc in 1..=dcs {
        let ip = Ipv4Addr::new(127, 0, dc, 100);
        let p = process::free_ports(ip, 2)?;
        let mut g = GatewayProc::new(GatewaySpec {
            binary,
            dc,
            ip,
            ports: (p[0], p[1]),
            nodes,
            log: dir.join(format!("gw{dc}.log")),
            extra_args,
            tls_dir: tls_dir.as_deref(),
            signal: libc::SIGKILL,
        });
        g.log_filter = log_filter.map(str::to_string);
        g.spawn()?;
        gateways.push(g);
    }
    for g in &mut gateways {
        g.wait_ready(Duration::from_secs(30)).await?;
    }
    Ok(gateways)
}

/// Whether `GET /readyz` on `addr` answers 200 within a second.
pub async fn ready(addr: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.ok()?;
        Some(status_is_ok(&head[..n]))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// Reads the status line of an HTTP/1.x response: `HTTP/1.1 200 OK`.
fn status_is_ok(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    matches!(
        (parts.next(), parts.next()),
        (Some(v), Some(b"200")) if v.starts_with(b"HTTP/1.")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let table: [(&[u8], bool); 6] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", true),
            (b"HTTP/1.0 200 OK\r\n", true),
            (b"HTTP/1.1 503 Service Unavailable\r\n", false),
            (b"HTTP/1.1 2000 nope\r\n", false),
            (b"garbage", false),
            (b"", false),
        ];
        for (head, ok) in table {
            assert_eq!(status_is_ok(head), ok, "{}", String::from_utf8_lossy(head));
        }
    }
}
