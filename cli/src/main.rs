//! `bongsu`: the one command people type.
//!
//! - `bongsu run`: a local cluster of three datacenters on this machine (datacenters are the
//!   loopback address groups 127.0.1.x, 127.0.2.x, 127.0.3.x) with a gateway and the web
//!   client in each, data under a local directory.
//! - `bongsu certs`: a development CA and the TLS credentials of a cluster's processes.
//! - `bongsu status`: a cluster's shards, leaders, lag and liveness, from any node.
//! - `bongsu signup`, `login`, `send`, `tail`, `conversations`: chatting from a terminal,
//!   through the Rust SDK (`bongsu-client`), against any gateways (`--gateway`, repeatable;
//!   the local cluster's by default).

mod account;
mod certs;
mod chat;
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
    /// Start a local three-datacenter cluster with its gateways and keep it running until
    /// Ctrl-C.
    Run(local::RunArgs),
    /// Create a development CA (once) and issue TLS credentials from it: `node-<id>`,
    /// `gateway`, `operator`.
    Certs(certs::CertsArgs),
    /// Show a cluster's state as one node sees it.
    Status(status::StatusArgs),
    /// Create an account (a handle and a password, nothing else) and sign this terminal in.
    Signup(account::AuthArgs),
    /// Sign this terminal in to an existing account.
    Login(account::AuthArgs),
    /// Send a text message to a person (by handle) or a conversation (by id).
    Send(chat::SendArgs),
    /// Print messages as they arrive, across gateway failures, until Ctrl-C.
    Tail(chat::TailArgs),
    /// List your conversations with unread counts.
    Conversations(chat::ListArgs),
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
        Cmd::Certs(a) => certs::run(a),
        Cmd::Status(a) => status::run(a).await,
        Cmd::Signup(a) => account::signup(a).await,
        Cmd::Login(a) => account::login(a).await,
        Cmd::Send(a) => chat::send(a).await,
        Cmd::Tail(a) => chat::tail(a).await,
        Cmd::Conversations(a) => chat::conversations(a).await,
    }
}
