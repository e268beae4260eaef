//! `bongsu-gateway`: see the crate docs of `bongsu_gateway`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bongsu-gateway",
    version,
    about = "bongsu's stateless public API gateway"
)]
struct Args {
    #[command(flatten)]
    config: bongsu_gateway::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    bongsu_gateway::run(args.config).await
}
