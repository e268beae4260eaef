//! `bongsu`: the one command people type.
//!
//! - `bongsu run`: a local cluster of three datacenters on this machine (datacenters are the
//!   loopback address groups 127.0.1.x, 127.0.2.x, 127.0.3.x), data under a local directory.
//! - `bongsu status`: a cluster's shards, leaders, lag and liveness, from any node.

mod local;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bongsu",
    about = "bongsu: a messaging cluster that survives losing a datacenter"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local three-datacenter cluster and keep it running until Ctrl-C.
    Run(local::RunArgs),
    /// Show a cluster's state as one node sees it.
    Status(status::StatusArgs),
}

#[tokio::main]
async fn main() {
    // Errors print as one line of causes, never as a backtrace: these are messages for people.
    if let Err(e) = real_main().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => local::run(a).await,
        Cmd::Status(a) => status::run(a).await,
    }
}
