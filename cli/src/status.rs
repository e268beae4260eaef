//! `bongsu status`: one table of groups and one of nodes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::Context;
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::StatusRequest;
use bongsu_proto::tls::{Role, Security};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Admin address of any node.
    #[arg(long, default_value = "127.0.1.1:7300", env = "BONGSU_ADMIN")]
    pub admin: String,
    /// The operator's TLS directory (ca.pem, and a cert.pem naming
    /// `operator.bongsu.internal` with its key.pem); by default the local cluster's,
    /// `data/local/certs/operator`.
    #[arg(
        long,
        env = "BONGSU_TLS_DIR",
        default_value = "data/local/certs/operator"
    )]
    pub tls_dir: PathBuf,
    /// Talk plain text to a development cluster that runs without TLS.
    #[arg(long, env = "BONGSU_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

pub async fn run(a: StatusArgs) -> anyhow::Result<()> {
    let security = if a.insecure_plaintext {
        Security::Plaintext
    } else {
        Security::for_tool(Some(&a.tls_dir), false, Role::Operator)?
    };
    let ep = Security::endpoint(&a.admin)?.connect_timeout(Duration::from_secs(2));
    let mut c = AdminClient::new(
        security
            .connect(ep, &Role::any_node())
            .await
            .with_context(|| format!("connect to {}", a.admin))?,
    );
    let s = c
        .status(StatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?
        .into_inner();
    let map = s.map.unwrap_or_default();
    let mut out = String::new();
    writeln!(
        out,
        "node {} ({}) sees shard map version {}, {} shards",
        s.node_id, s.dc, map.version, map.shard_count
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<6} {:<6} {:<10} {:<8} {:<15}",
        "node", "dc", "state", "live", "admin"
    )?;
    for (n, state) in map.nodes.iter().zip(map.node_states.iter()) {
        let live = s
            .liveness
            .iter()
            .find(|l| l.node_id == n.node_id)
            .map(|l| l.live)
            .unwrap_or(false);
        writeln!(
            out,
            "{:<6} {:<6} {:<10} {:<8} {:<15}",
            n.node_id,
            n.dc,
            state,
            if live { "yes" } else { "NO" },
            n.admin_addr
        )?;
    }
    writeln!(out)?;
    writeln!(out, "groups hosted on node {}:", s.node_id)?;
    writeln!(
        out,
        "{:<8} {:<7} {:<6} {:<9} {:<9} {:<12} lag",
        "group", "leader", "term", "commit", "applied", "voters"
    )?;
    for g in &s.groups {
        let name = if g.group == 0 {
            "meta".to_string()
        } else {
            format!("shard {}", g.group - 1)
        };
        let lag: Vec<String> = g
            .follower_lag
            .iter()
            .map(|(n, l)| format!("{n}:{l}"))
            .collect();
        let voters: Vec<String> = g.voters.iter().map(|v| v.to_string()).collect();
        writeln!(
            out,
            "{:<8} {:<7} {:<6} {:<9} {:<9} {:<12} {}",
            name,
            if g.leader == 0 {
                "-".to_string()
            } else {
                g.leader.to_string()
            },
            g.term,
            g.commit_index,
            g.applied_index,
            voters.join(","),
            lag.join(" ")
        )?;
    }
    // A closed pipe (`bongsu status | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}
