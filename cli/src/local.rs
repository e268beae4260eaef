//! `bongsu run`: a local cluster, three datacenters on one machine.
//!
//! Datacenter `d` is the loopback address group `127.0.d.x`; node `k` of it listens on
//! `127.0.d.k` with the same ports everywhere (Raft 7100, internal API 7200, admin 7300), so
//! addresses are easy to read and to type. Each datacenter also gets a gateway on
//! `127.0.d.1` (HTTP and the web client on 8080, gRPC on 8081) that knows every node. Data and
//! logs live under `--dir`; running again with the same directory restarts the same cluster
//! instead of creating a new one.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::{HelloRequest, InitRequest, StatusRequest};
use bongsu_proto::tls::{Credentials, DevCa, Role, Security, CERT_FILE};
use bongsu_testkit::gateway::GatewayProc;
use bongsu_testkit::process;

mod gateway;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Where the nodes keep their data and logs.
    #[arg(long, default_value = "data/local")]
    pub dir: PathBuf,
    /// Nodes in each of the three datacenters.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_dc: u32,
    /// Shards of a new cluster (ignored when the directory holds one already).
    #[arg(long, default_value_t = 16)]
    pub shards: u32,
    /// The node binary; by default `bongsu-node` next to this program.
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// The gateway binary; by default `bongsu-gateway` next to this program.
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
}

struct LocalNode {
    id: u32,
    dc: u32,
    host: String,
    child: Child,
}

impl LocalNode {
    fn admin(&self) -> String {
        format!("{}:7300", self.host)
    }
}

/// Children are stopped with the cluster, also when `bongsu run` itself is killed.
struct Nodes(Vec<LocalNode>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = process::signal(&n.child, libc::SIGTERM);
        }
        for n in &mut self.0 {
            let _ = n.child.wait();
        }
    }
}

/// A binary given on the command line, or the one named `name` next to this program.
fn sibling_binary(arg: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    match arg {
        Some(b) if b.exists() => Ok(b),
        Some(b) => bail!("{} not found", b.display()),
        None => process::binary(name),
    }
}

/// Gateways are stopped before the nodes (this value is declared after them, so it is dropped
/// first): clients see their gateway go, not the cluster behind it.
struct Gateways(Vec<GatewayProc>);

impl Drop for Gateways {
    fn drop(&mut self) {
        for g in &mut self.0 {
            g.kill();
        }
    }
}

/// The local cluster's development CA (`<dir>/certs/ca`, created on the first run) and the
/// credentials it issued: one directory per node, one for the gateways, one for the operator
/// tools (`bongsu status` finds it by default). Missing credentials are issued again; the
/// CA's key never leaves `<dir>/certs/ca`.
pub fn local_pki(dir: &Path, node_ids: &[u32]) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    let ca = DevCa::open_or_create(&certs.join("ca"), "local")
        .context("create the local cluster's development CA")?;
    let roles = node_ids
        .iter()
        .map(|id| Role::Node(u64::from(*id)))
        .chain([Role::Gateway, Role::Operator]);
    for role in roles {
        let d = certs.join(role_dir(role));
        if !d.join(CERT_FILE).exists() {
            ca.issue(role, &d, &[], &[])
                .with_context(|| format!("issue credentials for {role}"))?;
        }
    }
    Ok(certs)
}

/// The directory under `<dir>/certs` holding `role`'s credentials.
pub fn role_dir(role: Role) -> String {
    role.label()
}

fn spawn(bin: &Path, dir: &Path, id: u32, dc: u32, host: &str) -> anyhow::Result<Child> {
    let ndir = dir.join(format!("n{id}"));
    std::fs::create_dir_all(&ndir).with_context(|| format!("create {}", ndir.display()))?;
    let log = ndir.join("node.log");
    // A fresh log per run (the gateways' logs are appended to).
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(bin);
    cmd.args([
        "run",
        "--node-id",
        &id.to_string(),
        "--dc",
        &format!("dc{dc}"),
    ])
    .arg("--data-dir")
    .arg(&ndir)
    .arg("--tls-dir")
    .arg(dir.join("certs").join(role_dir(Role::Node(u64::from(id)))))
    .args([
        "--raft-addr",
        &format!("{host}:7100"),
        "--api-addr",
        &format!("{host}:7200"),
        "--admin-addr",
        &format!("{host}:7300"),
    ]);
    process::spawn(&mut cmd, &log, libc::SIGTERM).with_context(|| format!("start node {id}"))
}

/// Whether something already listens on `addr`.
async fn in_use(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The operator's credentials of the local cluster, loaded once.
static OPERATOR: std::sync::OnceLock<Security> = std::sync::OnceLock::new();

async fn admin(addr: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let security = OPERATOR
        .get()
        .context("the operator's credentials are not loaded")?;
    let ep = Security::endpoint(addr)?.connect_timeout(Duration::from_millis(300));
    Ok(AdminClient::new(
        security.connect(ep, &Role::any_node()).await?,
    ))
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Starts the nodes, makes a new cluster of them (or restarts the one in `--dir`), starts the
/// gateways, and keeps it all running until Ctrl-C.
pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    let bin = sibling_binary(a.node_bin, "bongsu-node")?;
    let gw_bin = sibling_binary(a.gateway_bin, "bongsu-gateway")?;
    ensure_addresses_free().await?;
    let ids: Vec<u32> = (1..=a.nodes_per_dc * 3).collect();
    let certs = local_pki(&a.dir, &ids)?;
    let operator = Credentials::load(&certs.join(role_dir(Role::Operator)), Some(Role::Operator))
        .context("load the operator's credentials")?;
    let _ = OPERATOR.set(Security::Mutual(operator));
    let fresh = !a.dir.join("n1").exists();
    let mut nodes = start_nodes(&bin, &a.dir, a.nodes_per_dc)?;
    wait_nodes_answer(&nodes, &a.dir).await?;
    let first = nodes.0[0].admin();
    if fresh {
        init(&nodes, &first, a.shards).await?;
    } else {
        println!("bongsu: restarting the cluster in {}", a.dir.display());
    }
    wait_leaders(&first).await?;
    let mut gateways = start_gateways(&gw_bin, &a.dir, &nodes).await?;
    print_summary(a.nodes_per_dc, &a.dir, &nodes, &gateways, &first);
    supervise(&mut nodes, &mut gateways, &a.dir).await
}

/// Fails when another `bongsu run` on this machine holds the same fixed addresses: our nodes
/// would fail to bind while the readiness checks below talked to the other cluster.
async fn ensure_addresses_free() -> anyhow::Result<()> {
    for dc in 1..=3 {
        for addr in [
            format!("127.0.{dc}.1:7300"),
            format!("127.0.{dc}.1:{}", gateway::GRPC_PORT),
        ] {
            if in_use(&addr).await {
                bail!(
                    "{addr} is taken: is another `bongsu run` going on this machine? \
                     Stop it first (Ctrl-C in its terminal); `bongsu status` shows its state"
                );
            }
        }
    }
    Ok(())
}

/// Starts `nodes_per_dc` nodes in each datacenter, numbered across them: node `k` of
/// datacenter `d` is `(k - 1) * 3 + d` on `127.0.d.k`, so nodes 1 to 3 are the first of each.
fn start_nodes(bin: &Path, dir: &Path, nodes_per_dc: u32) -> anyhow::Result<Nodes> {
    let mut nodes = Nodes(Vec::new());
    for k in 1..=nodes_per_dc {
        for dc in 1..=3 {
            let id = (k - 1) * 3 + dc;
            let host = format!("127.0.{dc}.{k}");
            let child = spawn(bin, dir, id, dc, &host)?;
            nodes.0.push(LocalNode {
                id,
                dc,
                host,
                child,
            });
        }
    }
    Ok(nodes)
}

/// Waits until every node answers on its admin API; one that does not within 20 s is named,
/// with its log.
async fn wait_nodes_answer(nodes: &Nodes, dir: &Path) -> anyhow::Result<()> {
    for n in &nodes.0 {
        let addr = n.admin();
        wait_until(
            &format!("node {} at {addr}", n.id),
            Duration::from_secs(20),
            || {
                let addr = addr.clone();
                async move {
                    match admin(&addr).await {
                        Ok(mut c) => c.hello(HelloRequest {}).await.is_ok(),
                        Err(_) => false,
                    }
                }
            },
        )
        .await
        .with_context(|| {
            format!(
                "node {} did not start; see {}",
                n.id,
                dir.join(format!("n{}/node.log", n.id)).display()
            )
        })?;
    }
    Ok(())
}

/// Makes a new cluster of every node, with `shards` shards of three replicas, through the
/// admin API at `first`.
async fn init(nodes: &Nodes, first: &str, shards: u32) -> anyhow::Result<()> {
    let all: Vec<String> = nodes.0.iter().map(|n| n.admin()).collect();
    let r = admin(first)
        .await?
        .init(InitRequest {
            node_admin_addrs: all,
            shards,
            replicas: 3,
        })
        .await
        .map_err(|s| anyhow::anyhow!("init: {}", s.message()))?;
    println!(
        "bongsu: new cluster, {} shards (shard map version {})",
        shards,
        r.into_inner().shard_map_version
    );
    Ok(())
}

/// Waits until every shard has a leader, as the node at `first` sees it, so that the cluster
/// takes writes by the time its gateways start.
async fn wait_leaders(first: &str) -> anyhow::Result<()> {
    wait_until(
        "every shard to elect a leader",
        Duration::from_secs(30),
        || {
            let first = first.to_owned();
            async move {
                let Ok(mut c) = admin(&first).await else {
                    return false;
                };
                let Ok(s) = c.status(StatusRequest {}).await else {
                    return false;
                };
                let s = s.into_inner();
                !s.groups.is_empty() && s.groups.iter().all(|g| g.leader != 0)
            }
        },
    )
    .await
}

/// Starts one gateway per datacenter, each knowing every node's internal API, and waits until
/// all of them are ready.
async fn start_gateways(bin: &Path, dir: &Path, nodes: &Nodes) -> anyhow::Result<Gateways> {
    let api_addrs: Vec<String> = nodes.0.iter().map(|n| format!("{}:7200", n.host)).collect();
    let mut gateways = Gateways(Vec::new());
    for dc in 1..=3 {
        let mut gw = gateway::local(bin, dir, dc, &api_addrs)?;
        gw.spawn()?;
        gateways.0.push(gw);
    }
    for g in &mut gateways.0 {
        let log = g.log.display().to_string();
        g.wait_ready(Duration::from_secs(30))
            .await
            .with_context(|| format!("the dc{} gateway did not become ready; see {log}", g.dc))?;
    }
    Ok(gateways)
}

/// Tells the user where the cluster is (web client, gRPC API, nodes, data and logs) and what to
/// try with it.
fn print_summary(nodes_per_dc: u32, dir: &Path, nodes: &Nodes, gateways: &Gateways, first: &str) {
    println!();
    println!("bongsu: local cluster up: 3 datacenters, {nodes_per_dc} node(s) each");
    println!();
    println!("  web client (open any; they are interchangeable):");
    for g in &gateways.0 {
        println!("    dc{}  {}/", g.dc, g.http_url);
    }
    println!("  gRPC API (the SDK and the CLI use all three):");
    for g in &gateways.0 {
        println!("    dc{}  {}", g.dc, g.grpc_url);
    }
    println!("  nodes:");
    for n in &nodes.0 {
        println!(
            "    dc{}  node {:<2} internal API {}:7200  admin {}:7300",
            n.dc, n.id, n.host, n.host
        );
    }
    println!("  data and logs: {}", dir.display());
    println!(
        "  TLS: every link is mutual TLS from the development CA in {}",
        dir.join("certs").display()
    );
    println!();
    println!("  try:  bongsu signup alice    bongsu send bob 'hi'    bongsu tail");
    println!("        bongsu status --admin {first}");
    println!();
    println!("Ctrl-C stops the cluster; `bongsu run` again with the same --dir restarts it.");
}

/// Runs until Ctrl-C, checking the children twice a second: a node that exits ends the run
/// with an error naming its log; a gateway that exits is started again.
async fn supervise(nodes: &mut Nodes, gateways: &mut Gateways, dir: &Path) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("bongsu: stopping");
                return Ok(());
            }
            _ = tick.tick() => {
                for n in &mut nodes.0 {
                    if let Ok(Some(status)) = n.child.try_wait() {
                        bail!("node {} exited ({status}); see {}", n.id, dir.join(format!("n{}/node.log", n.id)).display());
                    }
                }
                for g in &mut gateways.0 {
                    let Some(status) = g.exited() else { continue };
                    // A gateway holds nothing, so losing one is a drill, not a disaster: start
                    // it again (clients have moved to the other gateways meanwhile). One that
                    // exits by itself right after being restarted is broken, and restarting it
                    // again would only spin.
                    let crash_loop = g.restarts > 0
                        && g.started.elapsed() < Duration::from_secs(10)
                        && status.signal().is_none();
                    if crash_loop {
                        bail!("the dc{} gateway exited ({status}) right after starting; see {}", g.dc, g.log.display());
                    }
                    println!("bongsu: the dc{} gateway exited ({status}); starting it again", g.dc);
                    g.restarts += 1;
                    g.spawn()?;
                }
            }
        }
    }
}
