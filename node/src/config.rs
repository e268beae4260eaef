//! Node configuration: a TOML file, overridden by `BONGSU_*` environment variables, overridden
//! by flags. Every value is checked at startup and a bad one is an error naming its field.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::errors::{NodeError, Result};

/// Raft and liveness timing, in milliseconds.
///
/// Failover time is about `election_max_ms` (the leader lease: a follower refuses to vote for
/// another node until this long after it last heard from its leader) plus one round trip to
/// elect and one to commit. Keep `heartbeat_ms` several times the round trip between
/// datacenters, and `election_min_ms` at least 3 heartbeats, so a delayed heartbeat does not
/// start an election.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// How often each node pings each peer.
    pub liveness_interval_ms: u64,
    /// A peer not heard from for this long is considered down: the groups it led start an
    /// election at once instead of waiting for their own timers.
    pub liveness_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_min_ms: 250,
            election_max_ms: 400,
            liveness_interval_ms: 100,
            liveness_timeout_ms: 300,
        }
    }
}

/// Snapshots: when a group takes one, and how much memory moving one may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Snapshots {
    /// The memory, in MiB, that building, sending, receiving or installing one snapshot may
    /// use beyond the node's own, whatever the shard's size: chunks on the wire and write
    /// batches of an install are an eighth of it each (see [`Snapshots::chunk_bytes`]).
    pub memory_budget_mb: u64,
    /// A group takes a snapshot after this many log entries since its last one.
    pub every_entries: u64,
    /// Log entries kept behind a snapshot, so a follower a little behind catches up from
    /// the log instead of a whole snapshot.
    pub keep_entries: u64,
}

impl Default for Snapshots {
    fn default() -> Self {
        Self {
            memory_budget_mb: 64,
            every_entries: 20_000,
            keep_entries: 2_000,
        }
    }
}

impl Snapshots {
    /// The bytes of one snapshot chunk on the wire: an eighth of the budget, at most 4 MiB
    /// (the transport's largest frame).
    pub fn chunk_bytes(&self) -> u64 {
        ((self.memory_budget_mb << 20) / 8).min(4 << 20)
    }

    /// The most bytes of state one write batch of an install holds.
    pub fn batch_bytes(&self) -> usize {
        ((self.memory_budget_mb << 20) / 8) as usize
    }
}

/// How the node's ports and its calls to other processes are secured (ARCHITECTURE.md
/// invariant 12).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The directory with `ca.pem` (the cluster CA), `cert.pem` (this node's certificate,
    /// naming `node-<node_id>.bongsu.internal`) and `key.pem`. Read again when the files
    /// change, so certificates rotate without a restart.
    pub dir: Option<PathBuf>,
    /// Plain text on every port, with no peer identity: only for a local development
    /// cluster. Never together with `dir`.
    pub insecure_plaintext: bool,
}

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u64,
    pub dc: String,
    pub data_dir: PathBuf,
    /// Raft transport: listened on and advertised to peers.
    pub raft_addr: String,
    /// Internal API for gateways.
    pub api_addr: String,
    /// Admin API for operators and other nodes.
    pub admin_addr: String,
    /// Admin addresses of existing nodes, asked to register this node on first boot.
    #[serde(default)]
    pub seeds: Vec<String>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub snapshots: Snapshots,
    #[serde(default)]
    pub tls: Tls,
}

/// Values that override the file, from the environment or flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    #[arg(long, env = "BONGSU_NODE_ID")]
    pub node_id: Option<u64>,
    #[arg(long, env = "BONGSU_DC")]
    pub dc: Option<String>,
    #[arg(long, env = "BONGSU_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "BONGSU_RAFT_ADDR")]
    pub raft_addr: Option<String>,
    #[arg(long, env = "BONGSU_API_ADDR")]
    pub api_addr: Option<String>,
    #[arg(long, env = "BONGSU_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Comma-separated admin addresses of existing nodes.
    #[arg(long, env = "BONGSU_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// `snapshots.memory_budget_mb`.
    #[arg(long, env = "BONGSU_SNAPSHOT_BUDGET_MB")]
    pub snapshot_budget_mb: Option<u64>,
    /// `snapshots.every_entries`.
    #[arg(long, env = "BONGSU_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// `snapshots.keep_entries`.
    #[arg(long, env = "BONGSU_SNAPSHOT_KEEP")]
    pub snapshot_keep: Option<u64>,
    /// `tls.dir`.
    #[arg(long, env = "BONGSU_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// `tls.insecure_plaintext`.
    #[arg(long, env = "BONGSU_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> NodeError {
    NodeError::Config {
        field,
        reason: reason.into(),
    }
}

/// Removes the sub-table `key` from `table` (empty when absent), so overrides can be merged
/// into it; a value that is not a table is an error naming `key`.
fn take_table(table: &mut toml::Table, key: &'static str) -> Result<toml::Table> {
    match table.remove(key) {
        Some(toml::Value::Table(t)) => Ok(t),
        Some(other) => Err(invalid(
            key,
            format!("must be a table, not {}", other.type_str()),
        )),
        None => Ok(toml::Table::new()),
    }
}

impl NodeConfig {
    /// Reads the file (if any), applies the overrides and validates the result.
    pub fn load(file: Option<&std::path::Path>, o: &Overrides) -> Result<Self> {
        let mut table: toml::Table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid("config", format!("read {}: {e}", path.display())))?;
                text.parse().map_err(|e: toml::de::Error| {
                    invalid("config", format!("{}: {}", path.display(), e.message()))
                })?
            }
            None => toml::Table::new(),
        };
        let mut set = |k: &str, v: Option<toml::Value>| {
            if let Some(v) = v {
                table.insert(k.to_string(), v);
            }
        };
        set("node_id", o.node_id.map(|v| toml::Value::Integer(v as i64)));
        set("dc", o.dc.clone().map(toml::Value::String));
        set(
            "data_dir",
            o.data_dir
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
        );
        set("raft_addr", o.raft_addr.clone().map(toml::Value::String));
        set("api_addr", o.api_addr.clone().map(toml::Value::String));
        set("admin_addr", o.admin_addr.clone().map(toml::Value::String));
        set(
            "seeds",
            o.seeds
                .clone()
                .map(|s| toml::Value::Array(s.into_iter().map(toml::Value::String).collect())),
        );
        let mut snapshots = take_table(&mut table, "snapshots")?;
        for (key, value) in [
            ("memory_budget_mb", o.snapshot_budget_mb),
            ("every_entries", o.snapshot_every),
            ("keep_entries", o.snapshot_keep),
        ] {
            if let Some(v) = value {
                let v = i64::try_from(v).map_err(|_| invalid("snapshots", "value too large"))?;
                snapshots.insert(key.to_string(), toml::Value::Integer(v));
            }
        }
        table.insert("snapshots".into(), toml::Value::Table(snapshots));
        let mut tls = take_table(&mut table, "tls")?;
        if let Some(dir) = &o.tls_dir {
            tls.insert("dir".into(), toml::Value::String(dir.display().to_string()));
        }
        if o.insecure_plaintext {
            tls.insert("insecure_plaintext".into(), toml::Value::Boolean(true));
        }
        table.insert("tls".into(), toml::Value::Table(tls));
        let cfg: NodeConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid("config", e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be a positive integer"));
        }
        if self.dc.is_empty()
            || !self
                .dc
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(invalid(
                "dc",
                format!("{:?} must be letters, digits, '-' or '_'", self.dc),
            ));
        }
        for (field, addr) in [
            ("raft_addr", &self.raft_addr),
            ("api_addr", &self.api_addr),
            ("admin_addr", &self.admin_addr),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(field, format!("{addr:?} is not host:port: {e}")))?;
        }
        for s in &self.seeds {
            s.parse::<SocketAddr>()
                .map_err(|e| invalid("seeds", format!("{s:?} is not host:port: {e}")))?;
        }
        let t = &self.timing;
        if t.heartbeat_ms == 0 || t.heartbeat_ms >= t.election_min_ms {
            return Err(invalid(
                "timing.heartbeat_ms",
                "must be positive and below timing.election_min_ms",
            ));
        }
        if t.election_min_ms >= t.election_max_ms {
            return Err(invalid(
                "timing.election_min_ms",
                "must be below timing.election_max_ms",
            ));
        }
        if t.liveness_interval_ms == 0 || t.liveness_timeout_ms <= t.liveness_interval_ms {
            return Err(invalid(
                "timing.liveness_timeout_ms",
                "must be above timing.liveness_interval_ms",
            ));
        }
        let sn = &self.snapshots;
        if !(4..=4096).contains(&sn.memory_budget_mb) {
            return Err(invalid(
                "snapshots.memory_budget_mb",
                "must be between 4 and 4096",
            ));
        }
        if sn.every_entries == 0 {
            return Err(invalid("snapshots.every_entries", "must be positive"));
        }
        match (&self.tls.dir, self.tls.insecure_plaintext) {
            (None, false) => {
                return Err(invalid(
                    "tls.dir",
                    "required: a directory with ca.pem, cert.pem and key.pem (or \
                     tls.insecure_plaintext = true, for a local development cluster only)",
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    "tls.insecure_plaintext",
                    "cannot be set together with tls.dir",
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    const GOOD: &str = r#"
node_id = 1
dc = "dc1"
data_dir = "data/n1"
raft_addr = "127.0.1.1:7100"
api_addr = "127.0.1.1:7200"
admin_addr = "127.0.1.1:7300"
tls = { insecure_plaintext = true }
"#;

    #[test]
    fn file_then_overrides() {
        let f = write(GOOD);
        let cfg = NodeConfig::load(Some(f.path()), &Overrides::default()).unwrap();
        assert_eq!(
            (cfg.node_id, cfg.dc.as_str(), cfg.timing.heartbeat_ms),
            (1, "dc1", 50)
        );
        let o = Overrides {
            node_id: Some(7),
            seeds: Some(vec!["127.0.2.1:7300".into()]),
            ..Default::default()
        };
        let cfg = NodeConfig::load(Some(f.path()), &o).unwrap();
        assert_eq!((cfg.node_id, cfg.seeds.len()), (7, 1));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: &[(&str, &str)] = &[
            ("node_id = 0", "node_id"),
            ("dc = \"dc 1\"", "dc"),
            ("raft_addr = \"nowhere\"", "raft_addr"),
            ("admin_addr = \"127.0.0.1\"", "admin_addr"),
            ("seeds = [\"x\"]", "seeds"),
            ("[timing]\nheartbeat_ms = 500", "timing.heartbeat_ms"),
            ("[timing]\nelection_min_ms = 900", "timing.election_min_ms"),
            (
                "[timing]\nliveness_timeout_ms = 10",
                "timing.liveness_timeout_ms",
            ),
            (
                "[snapshots]\nmemory_budget_mb = 1",
                "snapshots.memory_budget_mb",
            ),
            ("[snapshots]\nevery_entries = 0", "snapshots.every_entries"),
            ("tls = {}", "tls.dir"),
            (
                "tls = { dir = \"certs\", insecure_plaintext = true }",
                "tls.insecure_plaintext",
            ),
            ("colour = \"blue\"", "config"),
            ("node_id = \"one\"", "config"),
        ];
        for (change, field) in cases {
            let key = change.split([' ', '\n']).next().unwrap();
            let text: String = if key.starts_with('[') {
                format!("{GOOD}\n{change}\n")
            } else {
                GOOD.lines()
                    .filter(|l| !l.starts_with(&format!("{key} ")))
                    .chain([*change])
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let f = write(&text);
            match NodeConfig::load(Some(f.path()), &Overrides::default()) {
                Err(NodeError::Config { field: got, reason }) => {
                    assert_eq!(got, *field, "{change}: {reason}")
                }
                other => panic!("{change}: expected an error naming {field}, got {other:?}"),
            }
        }
        let missing = NodeConfig::load(None, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(missing.contains("node_id"), "{missing}");
    }
}
