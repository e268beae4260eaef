//! A real bongsu deployment for API tests: the test kit's cluster of three datacenters with
//! one `bongsu-node-chaos` each (datacenter `d` is `127.0.d.x`; the outbox failpoint holds a
//! membership change back in one test) and one `bongsu-gateway` process per datacenter on
//! `127.0.d.100` (`bongsu_testkit::gateway`).
//!
//! Everything is a child process that dies with the test (`PR_SET_PDEATHSIG`) and is killed
//! when the [`Env`] is dropped; logs are printed then, and the directory kept, if the test
//! failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bongsu_testkit::cluster::{Cluster, Spec};
use bongsu_testkit::gateway::{start_gateways, GatewayProc};

/// Options of one deployment.
#[derive(Clone, Debug)]
pub struct Opts {
    pub shards: u32,
    /// Extra flags for every gateway (e.g. `--user-rate=2`).
    pub gateway_args: Vec<String>,
    /// `RUST_LOG` of every node and gateway; their own defaults when `None`.
    pub log_filter: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            shards: 8,
            gateway_args: Vec::new(),
            log_filter: None,
        }
    }
}

/// The gateway binary built with this test.
pub fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bongsu-gateway"))
}

/// Three datacenters, one node and one gateway in each.
pub struct Env {
    pub name: String,
    pub cluster: Cluster,
    pub gateways: Vec<GatewayProc>,
    /// Where this test may write what it wants kept (screenshots): `target/test-output/<name>`.
    pub out_dir: PathBuf,
    passed: bool,
}

impl Env {
    /// Starts the cluster (taking its turn with the other cluster tests) and the gateways.
    pub async fn start(name: &str, opts: Opts) -> Result<Env> {
        let mut spec = Spec::new(3, 1).shards(opts.shards);
        if let Some(f) = &opts.log_filter {
            spec = spec.log_filter(f);
        }
        let cluster = Cluster::start(&format!("api-{name}"), spec)
            .await
            .context("start a three-datacenter cluster")?;
        let nodes: Vec<String> = cluster.api_addrs().into_iter().map(|(_, a)| a).collect();
        let gateways = start_gateways(
            &gateway_binary(),
            &cluster.dir,
            3,
            &nodes,
            &opts.gateway_args,
            opts.log_filter.as_deref(),
        )
        .await?;
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
            passed: false,
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
        self.cluster.pass();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            g.kill();
        }
        if !self.passed {
            for g in &self.gateways {
                eprintln!(
                    "--- api test {}: {} log (last 60 lines) ---\n{}",
                    self.name,
                    g.id,
                    g.log_tail(60)
                );
            }
        }
    }
}
