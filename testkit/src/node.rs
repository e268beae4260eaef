//! One node process of a cluster, running or not: its addresses, configuration, log, and the
//! signals sent to it.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::tls::{Role, Security};
use tonic::transport::Channel;

use crate::process;

/// How a node stopped, as the kit saw it.
#[derive(Clone, Debug)]
pub struct Exit {
    pub node: u64,
    pub status: ExitStatus,
    /// The kit ended it (SIGKILL or SIGTERM); otherwise it exited by itself.
    pub expected: bool,
    /// Milliseconds since the cluster's epoch, when the exit was noticed.
    pub noticed_ms: u64,
}

impl Exit {
    pub fn describe(&self) -> String {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("node {} exited with code {code}", self.node),
            (_, Some(sig)) => format!("node {} was killed by signal {sig}", self.node),
            _ => format!("node {} stopped: {}", self.node, self.status),
        }
    }
}

/// Where a node lives: its address and, in a chaos run's netns mode, the network namespace
/// it runs in (such a node has the address to itself, so it takes fixed ports).
#[derive(Clone, Debug)]
pub struct Site {
    pub ip: Ipv4Addr,
    pub netns: Option<String>,
}

impl Site {
    /// Node `k` of datacenter `d` on loopback: `127.0.d.k`.
    pub fn loopback(d: u8, k: u8) -> Site {
        Site {
            ip: Ipv4Addr::new(127, 0, d, k),
            netns: None,
        }
    }
}

pub struct NodeProc {
    pub id: u64,
    /// Datacenter number, from 1.
    pub dc: u8,
    pub ip: Ipv4Addr,
    pub raft_addr: String,
    pub api_addr: String,
    pub admin_addr: String,
    pub dir: PathBuf,
    /// The network namespace the node runs in (a chaos run's netns mode).
    pub netns: Option<String>,
    /// Admin addresses the node registers through on first boot (`seeds`); empty for the
    /// nodes a cluster starts with, which `init` registers.
    pub seeds: Vec<String>,
    /// Environment variables the process gets.
    pub env: Vec<(String, String)>,
    binary: PathBuf,
    /// `RUST_LOG` for the node; `None` leaves the node's own default.
    log_filter: Option<String>,
    child: Option<Child>,
    /// The kit sent the running process a signal that ends it.
    killing: bool,
    pub paused: bool,
    pub starts: u32,
    /// How long the calls of [`NodeProc::admin`] may take.
    pub status_timeout: Duration,
    admin: Option<AdminClient<Channel>>,
}

impl NodeProc {
    pub fn new(id: u64, dc: u8, site: Site, dir: PathBuf, binary: PathBuf) -> Self {
        Self {
            id,
            dc,
            ip: site.ip,
            raft_addr: String::new(),
            api_addr: String::new(),
            admin_addr: String::new(),
            dir,
            netns: site.netns,
            seeds: Vec::new(),
            env: Vec::new(),
            binary,
            log_filter: None,
            child: None,
            killing: false,
            paused: false,
            starts: 0,
            status_timeout: Duration::from_secs(1),
            admin: None,
        }
    }

    /// Runs another binary from the next start on (a rolling upgrade).
    pub fn set_binary(&mut self, binary: impl Into<PathBuf>) {
        self.binary = binary.into();
    }

    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Sets the node's `RUST_LOG`.
    pub fn log_filter(&mut self, filter: Option<String>) {
        self.log_filter = filter;
    }

    pub fn dc_name(&self) -> String {
        format!("dc{}", self.dc)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Ports: fixed ones (7100, 7200, 7300) for a node with an address of its own (netns),
    /// otherwise three free ports on its loopback address.
    pub fn assign_ports(&mut self) -> Result<()> {
        let p = match self.netns {
            Some(_) => vec![7100, 7200, 7300],
            None => process::free_ports(self.ip, 3)?,
        };
        self.raft_addr = format!("{}:{}", self.ip, p[0]);
        self.api_addr = format!("{}:{}", self.ip, p[1]);
        self.admin_addr = format!("{}:{}", self.ip, p[2]);
        self.admin = None;
        Ok(())
    }

    /// Writes `node.toml`: identity, data directory, addresses, and seeds if any.
    pub fn write_config(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).with_context(|| format!("create {}", self.dir.display()))?;
        let mut text = format!(
            "node_id = {}\ndc = {:?}\ndata_dir = {:?}\nraft_addr = {:?}\napi_addr = {:?}\nadmin_addr = {:?}\n",
            self.id,
            self.dc_name(),
            self.data_path().display().to_string(),
            self.raft_addr,
            self.api_addr,
            self.admin_addr,
        );
        if !self.seeds.is_empty() {
            text += &format!("seeds = {:?}\n", self.seeds);
        }
        fs::write(self.config_path(), text)
            .with_context(|| format!("write {}", self.config_path().display()))
    }

    /// Appends a line to the node's log, so that its log tells what the kit did to it.
    pub fn note(&self, line: &str) {
        process::note(&self.log_path(), "harness", line);
    }

    /// The command that runs the node: its binary, inside its namespace when it has one.
    fn command(&self) -> Command {
        let bin = &self.binary;
        let mut cmd = match &self.netns {
            // `ip netns exec` enters the namespace and execs the node, so the child's PID is
            // the node's own.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env_remove("BONGSU_CONFIG")
            .env_remove("BONGSU_TLS_DIR")
            .env_remove("BONGSU_INSECURE_PLAINTEXT");
        // Through the environment, which a release without TLS ignores.
        if crate::pki::plaintext() {
            cmd.env("BONGSU_INSECURE_PLAINTEXT", "true");
        } else {
            cmd.env("BONGSU_TLS_DIR", crate::pki::pki().dir(Role::Node(self.id)));
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // BONGSU_NODE_LOG asks for another filter (`info,openraft=info` to see elections).
        match std::env::var("BONGSU_NODE_LOG")
            .ok()
            .or(self.log_filter.clone())
        {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        cmd
    }

    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.id);
        }
        self.starts += 1;
        self.note(&format!(
            "start #{} (raft {}, api {}, admin {})",
            self.starts, self.raft_addr, self.api_addr, self.admin_addr
        ));
        let child = process::spawn(&mut self.command(), &self.log_path(), libc::SIGKILL)
            .with_context(|| format!("spawn node {} ({})", self.id, self.binary.display()))?;
        self.child = Some(child);
        self.killing = false;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let Some(child) = &self.child else {
            bail!("node {} is not running", self.id)
        };
        process::signal(child, sig).with_context(|| format!("node {}", self.id))
    }

    /// SIGKILL (or SIGTERM), then reaps the process.
    pub fn kill(&mut self, sig: libc::c_int, now_ms: u64) -> Result<Option<Exit>> {
        if self.child.is_none() {
            return Ok(None);
        }
        self.killing = true;
        self.signal(sig)?;
        if self.paused && sig != libc::SIGKILL {
            // A stopped process acts on SIGTERM only once continued.
            self.signal(libc::SIGCONT)?;
        }
        let mut child = self.child.take().expect("checked above");
        let status = child
            .wait()
            .with_context(|| format!("reap node {}", self.id))?;
        self.paused = false;
        self.note(&format!("killed with signal {sig}"));
        Ok(Some(Exit {
            node: self.id,
            status,
            expected: true,
            noticed_ms: now_ms,
        }))
    }

    /// SIGSTOP: the node keeps its sockets but answers nothing.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        self.note("SIGSTOP");
        Ok(())
    }

    pub fn resume(&mut self) -> Result<()> {
        if self.paused {
            self.signal(libc::SIGCONT)?;
            self.paused = false;
            self.note("SIGCONT");
        }
        Ok(())
    }

    /// The exit of a node that stopped by itself since the last look, if it did.
    pub fn poll_exit(&mut self, now_ms: u64) -> Option<Exit> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        self.paused = false;
        self.note(&format!("exited by itself: {status}"));
        Some(Exit {
            node: self.id,
            status,
            expected: self.killing,
            noticed_ms: now_ms,
        })
    }

    /// Kills the process (if any) without waiting for anything else; for cleanup.
    pub fn kill_now(&mut self) {
        if let Some(c) = self.child.take() {
            process::stop(c, libc::SIGKILL);
        }
    }

    /// The node's admin client; calls give up after `status_timeout` (a second by default),
    /// so that a stopped node does not hold up the kit.
    pub fn admin(&mut self) -> Result<AdminClient<Channel>> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        let a = admin_client(&self.admin_addr, self.status_timeout)?;
        self.admin = Some(a.clone());
        Ok(a)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }
}

/// An admin client whose calls give up after `timeout`.
pub fn admin_client(addr: &str, timeout: Duration) -> Result<AdminClient<Channel>> {
    let ep = Security::endpoint(addr)?
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout);
    Ok(AdminClient::new(
        crate::pki::operator().channel(ep, &Role::any_node()),
    ))
}
