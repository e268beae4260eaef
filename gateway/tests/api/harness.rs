//! A real bongsu deployment for API tests: three datacenters with one `bongsu-node` each
//! (portable mode of the chaos harness: datacenter `d` is `127.0.d.x`) and one
//! `bongsu-gateway` process per datacenter on `127.0.d.100`.
//!
//! Everything is a child process that dies with the test (`PR_SET_PDEATHSIG`) and is killed
//! by PID when the [`Env`] is dropped; logs are printed then if the test failed.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bongsu_chaos::harness::{Cluster, Mode, Spec};

/// Options of one deployment.
#[derive(Clone, Debug)]
pub struct Opts {
    pub shards: u32,
    /// Extra flags for every gateway (e.g. `--user-rate=2`).
    pub gateway_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            shards: 8,
            gateway_args: Vec::new(),
        }
    }
}

/// One gateway process.
pub struct GatewayProc {
    /// 1, 2 or 3.
    pub dc: u8,
    pub id: String,
    /// `http://127.0.d.100:port` of the public gRPC API.
    pub grpc_url: String,
    /// `http://127.0.d.100:port` of HTTP/JSON, WebSocket and the web client.
    pub http_url: String,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl GatewayProc {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child this harness spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(gateway_binary());
        cmd.args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the gateway dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("spawn bongsu-gateway")?);
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http
                .get(format!("{}/readyz", self.http_url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway {} not ready within {timeout:?}; log:\n{}",
                    self.id,
                    tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The gateway binary built with this test.
pub fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bongsu-gateway"))
}

/// The node binary beside it, with failpoints armed (the outbox failpoint holds a membership
/// change back in one test); a workspace build makes it.
fn node_binary() -> Result<PathBuf> {
    let bin = gateway_binary().with_file_name("bongsu-node-chaos");
    if !bin.exists() {
        bail!(
            "{} not found: build the workspace first (`cargo nextest run --release --workspace` or `make test`)",
            bin.display()
        );
    }
    Ok(bin)
}

fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind a free port on {ip}"))?;
    Ok(l.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Three datacenters, one node and one gateway in each.
pub struct Env {
    pub name: String,
    pub cluster: Cluster,
    pub gateways: Vec<GatewayProc>,
    /// Where this test may write what it wants kept (screenshots): `target/test-output/<name>`.
    pub out_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
    passed: bool,
    _turn: File,
}

impl Env {
    pub async fn start(name: &str, opts: Opts) -> Result<Env> {
        let turn = take_turn().await?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bongsu-api-{name}-"))
            .tempdir()
            .context("create a temporary directory")?;
        let spec = Spec {
            dcs: 3,
            nodes_per_dc: 1,
            shards: opts.shards,
            replicas: 3,
        };
        let cluster = Cluster::start(
            spec,
            Mode::Portable,
            &dir.path().join("nodes"),
            &node_binary()?,
            Instant::now(),
        )
        .await
        .context("start a three-datacenter cluster")?;
        let nodes: Vec<String> = cluster.api_addrs().into_iter().map(|(_, a)| a).collect();
        let mut gateways = Vec::new();
        for dc in 1..=3u8 {
            let ip = Ipv4Addr::new(127, 0, dc, 100);
            let (grpc, http) = (free_port(ip)?, free_port(ip)?);
            let id = format!("gw{dc}");
            let mut args = vec![
                format!("--id={id}"),
                format!("--dc=dc{dc}"),
                format!("--nodes={}", nodes.join(",")),
                format!("--grpc-addr={ip}:{grpc}"),
                format!("--http-addr={ip}:{http}"),
            ];
            args.extend(opts.gateway_args.iter().cloned());
            let mut g = GatewayProc {
                dc,
                id: id.clone(),
                grpc_url: format!("http://{ip}:{grpc}"),
                http_url: format!("http://{ip}:{http}"),
                log: dir.path().join(format!("{id}.log")),
                args,
                child: None,
            };
            g.spawn()?;
            gateways.push(g);
        }
        for g in &gateways {
            g.wait_ready(Duration::from_secs(20)).await?;
        }
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("test-output")
            .join(name);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("create {}", out_dir.display()))?;
        Ok(Env {
            name: name.to_string(),
            cluster,
            gateways,
            out_dir,
            dir: Some(dir),
            passed: false,
            _turn: turn,
        })
    }

    /// gRPC URLs of every running gateway, in datacenter order.
    pub fn grpc_urls(&self) -> Vec<String> {
        self.gateways
            .iter()
            .filter(|g| g.running())
            .map(|g| g.grpc_url.clone())
            .collect()
    }

    pub fn http_urls(&self) -> Vec<String> {
        self.gateways
            .iter()
            .filter(|g| g.running())
            .map(|g| g.http_url.clone())
            .collect()
    }

    /// SIGKILLs the gateway of datacenter `dc`.
    pub fn kill_gateway(&mut self, dc: u8) {
        if let Some(g) = self.gateways.iter_mut().find(|g| g.dc == dc) {
            g.kill();
        }
    }

    /// Starts the gateway of datacenter `dc` again, on the same addresses.
    pub async fn restart_gateway(&mut self, dc: u8) -> Result<()> {
        let g = self
            .gateways
            .iter_mut()
            .find(|g| g.dc == dc)
            .context("no such gateway")?;
        g.spawn()?;
        g.wait_ready(Duration::from_secs(20)).await
    }

    /// Marks the test passed: the temporary directory is removed on drop instead of kept and
    /// printed.
    pub fn pass(mut self) {
        self.passed = true;
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            g.kill();
        }
        if !self.passed {
            for g in &self.gateways {
                eprintln!("--- {} log (last 60 lines) ---\n{}", g.id, tail(&g.log, 60));
            }
            eprintln!("{}", self.cluster.log_tails(40));
            if let Some(d) = self.dir.take() {
                eprintln!("api test {}: kept {}", self.name, d.keep().display());
            }
        }
    }
}

/// API tests start real clusters on a 2-core machine; they take turns with each other and
/// with the node's cluster tests (same lock file) so none of them skews another's timing.
async fn take_turn() -> Result<File> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bongsu-cluster-tests.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a file descriptor this closure owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f)
    })
    .await?
}
