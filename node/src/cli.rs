//! The `bongsu-node` command line: run a node, or bootstrap and operate a cluster of running
//! nodes. Both node binaries (`bongsu-node`, and `bongsu-node-chaos` with failpoints armed)
//! are this and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{NodeConfig, Overrides};
use anyhow::{bail, Context};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::{
    DrainRequest, InitRequest, ReadyRequest, RemoveRequest, SafeToStopRequest, StatusRequest,
};
use bongsu_proto::tls::{Role, Security};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bongsu-node",
    about = "A bongsu node: many Raft groups on one RocksDB"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Run {
        /// TOML configuration file; every field can also come from BONGSU_* or a flag.
        #[arg(long, env = "BONGSU_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Bootstrap a new cluster from running nodes (at least three datacenters).
    Init {
        /// Admin address of the node that performs the init.
        #[command(flatten)]
        admin: AdminTarget,
        /// Admin addresses of all the first nodes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        #[arg(long, default_value_t = 64)]
        shards: u32,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
    },
    /// Print a node's view of the cluster.
    Status {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Move every replica and leadership off a node (it stays registered, as draining).
    Drain {
        #[command(flatten)]
        admin: AdminTarget,
        #[arg(long)]
        node_id: u64,
    },
    /// Remove a drained node from the cluster for good.
    Remove {
        #[command(flatten)]
        admin: AdminTarget,
        #[arg(long)]
        node_id: u64,
    },
    /// Exit 0 when the node is caught up with every group it hosts (a readiness probe).
    Ready {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Would stopping this node, or this whole datacenter, leave any group without a quorum?
    SafeToStop {
        #[command(flatten)]
        admin: AdminTarget,
        #[arg(long, default_value_t = 0)]
        node_id: u64,
        #[arg(long, default_value = "")]
        dc: String,
    },
}

/// A node's admin API and the operator credentials to reach it with.
#[derive(clap::Args)]
struct AdminTarget {
    /// Admin address of a node.
    #[arg(long)]
    admin: String,
    /// The operator's TLS directory: ca.pem, and a cert.pem naming
    /// `operator.bongsu.internal` with its key.pem.
    #[arg(long, env = "BONGSU_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Talk plain text to a development cluster that runs without TLS.
    #[arg(long, env = "BONGSU_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
}

async fn admin(t: &AdminTarget) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let addr = &t.admin;
    let security = Security::for_tool(t.tls_dir.as_deref(), t.insecure_plaintext, Role::Operator)?;
    let ep = Security::endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60));
    Ok(AdminClient::new(
        security
            .connect(ep, &Role::any_node())
            .await
            .with_context(|| format!("connect to admin API at {addr}"))?,
    ))
}

/// Runs the command line; errors print as one line of causes, never as a backtrace (these are
/// messages for people), and exit 1.
pub fn main() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(real_main()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft logs every failed RPC to a down peer at ERROR, dozens per lost node and
                // without the group id; the node reports peer liveness itself. Set RUST_LOG to
                // see them.
                .unwrap_or_else(|_| {
                    "info,openraft=warn,openraft::replication=off,openraft::core::raft_core=off,h2=warn,tower=warn".into()
                }),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn real_main() -> anyhow::Result<()> {
    init_logging();
    match Cli::parse().cmd {
        Cmd::Run { config, overrides } => {
            let cfg = NodeConfig::load(config.as_deref(), &overrides)
                .context("load node configuration")?;
            crate::server::run(cfg).await.context("run node")?;
        }
        Cmd::Init {
            admin: addr,
            nodes,
            shards,
            replicas,
        } => init(&addr, nodes, shards, replicas).await?,
        Cmd::Status { admin: addr } => {
            let s = admin(&addr)
                .await?
                .status(StatusRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?;
            println!("{:#?}", s.into_inner());
        }
        Cmd::Ready { admin: addr } => ready(&addr).await?,
        Cmd::Remove {
            admin: addr,
            node_id,
        } => {
            admin(&addr)
                .await?
                .remove(RemoveRequest { node_id })
                .await
                .map_err(|s| anyhow::anyhow!("remove: {}", s.message()))?;
            println!("node {node_id}: removed");
        }
        Cmd::Drain {
            admin: addr,
            node_id,
        } => {
            let r = admin(&addr)
                .await?
                .drain(DrainRequest { node_id })
                .await
                .map_err(|s| anyhow::anyhow!("drain: {}", s.message()))?;
            println!("node {node_id}: {}", r.into_inner().state);
        }
        Cmd::SafeToStop {
            admin: addr,
            node_id,
            dc,
        } => safe_to_stop(&addr, node_id, dc).await?,
    }
    Ok(())
}

async fn init(
    addr: &AdminTarget,
    nodes: Vec<String>,
    shards: u32,
    replicas: u32,
) -> anyhow::Result<()> {
    if nodes.is_empty() {
        bail!("--nodes: give the admin addresses of the first nodes");
    }
    let reply = admin(addr)
        .await?
        .init(InitRequest {
            node_admin_addrs: nodes,
            shards,
            replicas,
        })
        .await
        .map_err(|s| anyhow::anyhow!("init: {}", s.message()))?;
    println!(
        "initialized: shard map version {}",
        reply.into_inner().shard_map_version
    );
    Ok(())
}

/// Prints whether the node is caught up; exits with 1 when it is not.
async fn ready(addr: &AdminTarget) -> anyhow::Result<()> {
    let r = admin(addr)
        .await?
        .ready(ReadyRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("ready: {}", s.message()))?
        .into_inner();
    println!("ready: {}", r.ready);
    for reason in &r.reasons {
        println!("  {reason}");
    }
    if !r.ready {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints whether stopping the node or datacenter is safe; exits with 3 when it is not.
async fn safe_to_stop(addr: &AdminTarget, node_id: u64, dc: String) -> anyhow::Result<()> {
    let r = admin(addr)
        .await?
        .safe_to_stop(SafeToStopRequest { node_id, dc })
        .await
        .map_err(|s| anyhow::anyhow!("safe-to-stop: {}", s.message()))?
        .into_inner();
    println!("safe: {}", r.safe);
    for reason in r.reasons {
        println!("  {reason}");
    }
    if !r.safe {
        std::process::exit(3);
    }
    Ok(())
}
