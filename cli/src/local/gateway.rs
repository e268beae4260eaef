//! The gateways of `bongsu run`: one per datacenter on `127.0.d.1`, HTTP and the web client on
//! 8080, gRPC on 8081, each knowing every node's internal API.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 8081;

pub struct LocalGateway {
    pub dc: u32,
    /// `127.0.d.1:8080`
    pub http: String,
    /// `127.0.d.1:8081`
    pub grpc: String,
    pub log: PathBuf,
    pub child: Child,
    pub started: Instant,
    /// How many times `bongsu run` started it again after it exited.
    pub restarts: u32,
}

/// Starts the gateway of datacenter `dc`, its log in `<dir>/gw<dc>/gateway.log`.
pub fn spawn(bin: &Path, dir: &Path, dc: u32, nodes: &[String]) -> anyhow::Result<LocalGateway> {
    let gdir = dir.join(format!("gw{dc}"));
    std::fs::create_dir_all(&gdir).with_context(|| format!("create {}", gdir.display()))?;
    let log_path = gdir.join("gateway.log");
    // Appended to, so that a restarted cluster keeps the previous run's story.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let host = format!("127.0.{dc}.1");
    let (http, grpc) = (format!("{host}:{HTTP_PORT}"), format!("{host}:{GRPC_PORT}"));
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--id=gw{dc}"))
        .arg(format!("--dc=dc{dc}"))
        .arg(format!("--nodes={}", nodes.join(",")))
        .arg(format!("--grpc-addr={grpc}"))
        .arg(format!("--http-addr={http}"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl in the child before exec, async-signal-safe: the gateway dies with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start the dc{dc} gateway ({})", bin.display()))?;
    Ok(LocalGateway {
        dc,
        http,
        grpc,
        log: log_path,
        child,
        started: Instant::now(),
        restarts: 0,
    })
}

/// Whether `GET /readyz` on `addr` answers 200. One request over a plain TCP connection is
/// all this needs, so no HTTP client library is pulled in for it.
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
