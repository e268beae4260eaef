//! One `bongsu-node-chaos` process of a chaos cluster: its configuration, its log, and the
//! signals the harness sends it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bongsu_proto::internal::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// How a node stopped, as the harness saw it.
#[derive(Clone, Debug)]
pub struct Exit {
    pub node: u64,
    pub status: ExitStatus,
    /// The harness killed it (SIGKILL or SIGTERM); otherwise it exited by itself.
    pub expected: bool,
    /// Milliseconds since the harness started, when the exit was noticed.
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

pub struct NodeProc {
    pub id: u64,
    /// Datacenter number, from 1.
    pub dc: u8,
    pub ip: Ipv4Addr,
    pub raft_addr: String,
    pub api_addr: String,
    pub admin_addr: String,
    pub dir: PathBuf,
    /// The network namespace the node runs in (netns mode).
    pub netns: Option<String>,
    child: Option<Child>,
    /// The harness sent the running process a signal that ends it.
    killing: bool,
    pub paused: bool,
    pub starts: u32,
    admin: Option<AdminClient<Channel>>,
}

impl NodeProc {
    pub fn new(id: u64, dc: u8, ip: Ipv4Addr, dir: PathBuf, netns: Option<String>) -> Self {
        Self {
            id,
            dc,
            ip,
            raft_addr: String::new(),
            api_addr: String::new(),
            admin_addr: String::new(),
            dir,
            netns,
            child: None,
            killing: false,
            paused: false,
            starts: 0,
            admin: None,
        }
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

    /// Fixed ports (each node has its own address in netns mode).
    pub fn fixed_ports(&mut self) {
        self.raft_addr = format!("{}:7100", self.ip);
        self.api_addr = format!("{}:7200", self.ip);
        self.admin_addr = format!("{}:7300", self.ip);
        self.admin = None;
    }

    /// Three free ports on the node's loopback address (portable mode). Another process may
    /// take one before the node binds it; the harness then picks again.
    pub fn pick_ports(&mut self) -> Result<()> {
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 3 {
            let l = TcpListener::bind((self.ip, 0))
                .with_context(|| format!("bind a free port on {}", self.ip))?;
            ports.insert(l.local_addr()?.port());
        }
        let p: Vec<u16> = ports.into_iter().collect();
        self.raft_addr = format!("{}:{}", self.ip, p[0]);
        self.api_addr = format!("{}:{}", self.ip, p[1]);
        self.admin_addr = format!("{}:{}", self.ip, p[2]);
        self.admin = None;
        Ok(())
    }

    pub fn write_config(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).with_context(|| format!("create {}", self.dir.display()))?;
        let text = format!(
            "node_id = {}\ndc = {:?}\ndata_dir = {:?}\nraft_addr = {:?}\napi_addr = {:?}\nadmin_addr = {:?}\n",
            self.id,
            self.dc_name(),
            self.data_path().display().to_string(),
            self.raft_addr,
            self.api_addr,
            self.admin_addr,
        );
        fs::write(self.config_path(), text)
            .with_context(|| format!("write {}", self.config_path().display()))
    }

    /// Appends a line to the node's log, so that its log tells what the harness did to it.
    pub fn note(&self, line: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let day_ms = now.as_millis() % 86_400_000;
        let (h, m, s, ms) = (
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000,
        );
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = writeln!(
                f,
                "=== {h:02}:{m:02}:{s:02}.{ms:03}Z chaos harness: {line} ==="
            );
        }
    }

    pub fn spawn(&mut self, binary: &Path) -> Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.id);
        }
        self.starts += 1;
        self.note(&format!(
            "start #{} (raft {}, api {}, admin {})",
            self.starts, self.raft_addr, self.api_addr, self.admin_addr
        ));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("open {}", self.log_path().display()))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` enters the namespace and execs the node, so the child's PID
                // is the node's own.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("NO_COLOR", "1")
            .env_remove("BONGSU_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The node's own log filter, unless BONGSU_NODE_LOG asks for another (for example
        // `info,openraft=info` to see elections).
        match std::env::var("BONGSU_NODE_LOG") {
            Ok(filter) => cmd.env("RUST_LOG", filter),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        // SAFETY: prctl is async-signal-safe and touches none of the parent's state. The node
        // dies with the harness even when the harness is killed, so no node outlives its run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawn node {} ({})", self.id, binary.display()))?,
        );
        self.killing = false;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("node {} is not running", self.id)
        };
        // SAFETY: kill(2) on the PID of a child this harness spawned and has not reaped, so
        // the PID cannot belong to another process.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            bail!(
                "signal {sig} to node {} (pid {pid}): {}",
                self.id,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
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
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`: our own unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// The node's admin client; calls give up after a second, so that a stopped node does not
    /// hold up the harness.
    pub fn admin(&mut self) -> Result<AdminClient<Channel>> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        let a = admin_client(&self.admin_addr, Duration::from_secs(1))?;
        self.admin = Some(a.clone());
        Ok(a)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// An admin client whose calls give up after `timeout`.
pub fn admin_client(addr: &str, timeout: Duration) -> Result<AdminClient<Channel>> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout);
    Ok(AdminClient::new(ep.connect_lazy()))
}
