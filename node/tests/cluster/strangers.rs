//! Nothing answers a stranger (ARCHITECTURE.md invariant 12): on a running cluster, a caller
//! without a certificate of the cluster's CA is refused on every port before any handler
//! runs, and a caller with one reaches only the calls its role may make. A node certificate
//! speaks only for its own node: Raft frames, votes, pings and joins in another node's name
//! are refused.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::raft_transport_client::RaftTransportClient;
use bongsu_proto::internal::{
    raft_reply, write_request, AppendMessage, DrainRequest, JoinRequest, MetaProposeRequest,
    NodeIdentity, PingRequest, RaftBatch, RaftKind, RaftMessage, ReadRequest, StatusRequest,
    WatchShardMapRequest, WriteRequest,
};
use bongsu_proto::tls::{DevCa, Role, Security};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::TypeConfig;
use bongsu_testkit::bounded;
use bongsu_testkit::pki::pki;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, Vote};
use tonic::transport::Channel;
use tonic::Status;

use crate::harness::{spec, Cluster};

/// How a call ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The connection was refused: no server code ran.
    Door,
    /// The server refused the caller's role or claimed identity.
    Denied,
    /// A handler ran (and may have refused the request's content).
    Reached,
}

fn outcome<T>(r: &Result<T, Status>) -> Outcome {
    match r {
        Ok(_) => Outcome::Reached,
        Err(s) => match ErrorCode::of_status(s) {
            Some(ErrorCode::PermissionDenied) => Outcome::Denied,
            Some(_) => Outcome::Reached,
            // Without bongsu's code: tonic's own connection errors mean the call never
            // reached a bongsu server; anything else came from a handler's plain checks.
            None if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Internal
            ) =>
            {
                Outcome::Door
            }
            None => Outcome::Reached,
        },
    }
}

/// The addresses of node 1 that every attempt targets.
struct Target {
    raft: String,
    api: String,
    admin: String,
}

fn channel(security: &Security, addr: &str) -> Result<Channel> {
    let ep = Security::endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    Ok(security.channel(ep, &Role::any_node()))
}

fn raft_frame(from: u64, to: u64, kind: RaftKind, claimed_leader: u64) -> Result<RaftBatch> {
    let vote = Vote::<u64>::new(1_000_000, claimed_leader);
    let payload = match kind {
        RaftKind::AppendEntries => postcard::to_allocvec(&AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        })?,
        RaftKind::Vote => postcard::to_allocvec(&VoteRequest::<u64>::new(vote, None))?,
        RaftKind::InstallSnapshot => {
            postcard::to_allocvec(&InstallSnapshotRequest::<TypeConfig> {
                vote,
                meta: SnapshotMeta::default(),
                offset: 0,
                data: vec![],
                done: false,
            })?
        }
        RaftKind::Unspecified => vec![],
    };
    Ok(RaftBatch {
        from_node: from,
        to_node: to,
        messages: vec![RaftMessage {
            id: 1,
            group: 0,
            kind: kind as i32,
            payload,
        }],
        format: 2,
    })
}

/// Sends one frame on a fresh Exchange stream and returns the first reply, or the error.
async fn exchange(
    security: &Security,
    addr: &str,
    frame: RaftBatch,
) -> Result<Result<raft_reply::Result, Status>> {
    let mut c = RaftTransportClient::new(channel(security, addr)?);
    let replies = match c.exchange(tokio_stream::iter(vec![frame])).await {
        Ok(r) => r,
        Err(s) => return Ok(Err(s)),
    };
    let mut replies = replies.into_inner();
    Ok(
        match tokio::time::timeout(Duration::from_secs(5), replies.message()).await {
            Ok(Ok(Some(batch))) => batch
                .replies
                .into_iter()
                .next()
                .and_then(|r| r.result)
                .context("an empty reply")
                .map(Ok)?,
            Ok(Ok(None)) => Err(Status::unavailable("stream ended without a reply")),
            Ok(Err(s)) => Err(s),
            Err(_) => Err(Status::unavailable("no reply in 5 s")),
        },
    )
}

/// Every attempt the must-show list names, as `security`, against node 1; the outcome of each.
async fn attempts(security: &Security, t: &Target) -> Result<Vec<(&'static str, Outcome)>> {
    let mut out = Vec::new();
    let mut admin = AdminClient::new(channel(security, &t.admin)?);
    let mut api = NodeApiClient::new(channel(security, &t.api)?);

    let join = admin
        .join(JoinRequest {
            node: Some(NodeIdentity {
                node_id: 99,
                dc: "dc1".into(),
                raft_addr: "127.0.9.9:1".into(),
                api_addr: "127.0.9.9:2".into(),
                admin_addr: "127.0.9.9:3".into(),
                admitted: false,
                binary_version: 2,
            }),
            incarnation: vec![7; 16],
            cluster_id: vec![],
            admitted: false,
        })
        .await;
    out.push(("join", outcome(&join)));
    for (name, kind) in [
        ("raft append", RaftKind::AppendEntries),
        ("vote", RaftKind::Vote),
        ("snapshot install", RaftKind::InstallSnapshot),
    ] {
        let r = exchange(security, &t.raft, raft_frame(2, 1, kind, 2)?).await?;
        out.push((name, outcome(&r)));
    }
    let propose = admin
        .meta_propose(MetaProposeRequest {
            command: vec![0xff, 0xff],
        })
        .await;
    out.push(("meta propose", outcome(&propose)));
    let watch = match api.watch_shard_map(WatchShardMapRequest {}).await {
        Ok(r) => r.into_inner().message().await.map(|_| ()),
        Err(s) => Err(s),
    };
    out.push(("watch the shard map", outcome(&watch)));
    let write = api
        .write(WriteRequest {
            command: Some(write_request::Command::Append(AppendMessage {
                conv_id: vec![0x5a; 16],
                sender: vec![0x11; 16],
                device: vec![0x22; 16],
                client_msg_id: vec![0x33; 16],
                kind: 1,
                body: b"from a stranger".to_vec(),
            })),
        })
        .await;
    out.push(("write as a user", outcome(&write)));
    let read = api
        .read(ReadRequest {
            conv_id: vec![0x5a; 16],
            user: vec![0x11; 16],
            from_seq: 1,
            before_seq: 0,
            limit: 10,
        })
        .await;
    out.push(("read a conversation", outcome(&read)));
    let drain = admin.drain(DrainRequest { node_id: 99 }).await;
    out.push(("drain a node", outcome(&drain)));
    Ok(out)
}

fn expect(
    who: &str,
    got: &[(&'static str, Outcome)],
    want: impl Fn(&str) -> Outcome,
) -> Result<()> {
    let wrong: Vec<String> = got
        .iter()
        .filter(|(what, o)| *o != want(what))
        .map(|(what, o)| format!("{what}: {o:?}, expected {:?}", want(what)))
        .collect();
    ensure!(wrong.is_empty(), "{who}: {}", wrong.join("; "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_refuses_strangers_and_roles_reach_only_their_calls() -> Result<()> {
    bounded(Duration::from_secs(120), strangers()).await
}

async fn strangers() -> Result<()> {
    let mut cluster = Cluster::start("strangers", spec(3, 1).shards(4)).await?;
    let n1 = cluster.node(1);
    let t = Target {
        raft: n1.raft_addr.clone(),
        api: n1.api_addr.clone(),
        admin: n1.admin_addr.clone(),
    };
    let mut operator = cluster.admin_client(1, Duration::from_secs(5))?;
    let before = operator.status(StatusRequest {}).await?.into_inner();
    let version = before
        .map
        .as_ref()
        .map(|m| m.version)
        .context("a shard map")?;

    // Plain text, to TLS ports.
    let got = attempts(&Security::Plaintext, &t).await?;
    expect("plain text", &got, |_| Outcome::Door)?;

    // A certificate from another CA, naming node 2 (it trusts the cluster's CA, so only the
    // node's refusal can stop it).
    let elsewhere = tempfile::tempdir()?;
    let foreign = DevCa::open_or_create(&elsewhere.path().join("ca"), "foreign")?;
    let dir = elsewhere.path().join("impostor");
    foreign.issue(Role::Node(2), &dir, &[], &[pki().ca().cert_pem()])?;
    let impostor = Security::Mutual(bongsu_proto::tls::Credentials::load(&dir, None)?);
    let got = attempts(&impostor, &t).await?;
    expect("a foreign CA's node certificate", &got, |_| Outcome::Door)?;

    // A gateway: the internal API only.
    let gateway = pki().security(Role::Gateway);
    let got = attempts(&gateway, &t).await?;
    expect("a gateway", &got, |what| match what {
        "watch the shard map" | "write as a user" | "read a conversation" => Outcome::Reached,
        _ => Outcome::Denied,
    })?;

    // An operator: the operator's admin calls only, never messages.
    let op = pki().security(Role::Operator);
    let got = attempts(&op, &t).await?;
    expect("an operator", &got, |what| match what {
        "drain a node" => Outcome::Reached,
        _ => Outcome::Denied,
    })?;

    // Node 2's certificate speaks for node 2 only.
    let node2 = pki().security(Role::Node(2));
    let r = exchange(
        &node2,
        &t.raft,
        raft_frame(3, 1, RaftKind::AppendEntries, 3)?,
    )
    .await?;
    ensure!(
        outcome(&r) == Outcome::Denied,
        "frames from node 2's certificate claiming node 3: {r:?}"
    );
    for kind in [
        RaftKind::AppendEntries,
        RaftKind::Vote,
        RaftKind::InstallSnapshot,
    ] {
        match exchange(&node2, &t.raft, raft_frame(2, 1, kind, 3)?).await? {
            Ok(raft_reply::Result::Unreachable(why)) if why.contains("in the name of") => {}
            other => anyhow::bail!("{kind:?} from node 2 in node 3's name: {other:?}"),
        }
    }
    let mut as_node2 = AdminClient::new(channel(&node2, &t.admin)?);
    let mut identity = before
        .map
        .as_ref()
        .and_then(|m| m.nodes.iter().find(|n| n.node_id == 3))
        .map(|n| NodeIdentity {
            node_id: 3,
            dc: n.dc.clone(),
            raft_addr: "127.0.9.9:1".into(),
            api_addr: "127.0.9.9:2".into(),
            admin_addr: "127.0.9.9:3".into(),
            admitted: true,
            binary_version: 2,
        })
        .context("node 3 in the map")?;
    let join = as_node2
        .join(JoinRequest {
            node: Some(identity.clone()),
            incarnation: vec![1; 16],
            cluster_id: vec![],
            admitted: true,
        })
        .await;
    ensure!(
        outcome(&join) == Outcome::Denied,
        "node 2 re-registering node 3: {join:?}"
    );
    identity.node_id = 2;
    let mut raft2 = RaftTransportClient::new(channel(&node2, &t.raft)?);
    let ping = raft2
        .ping(PingRequest {
            from_node: 3,
            to_node: 1,
        })
        .await;
    ensure!(
        outcome(&ping) == Outcome::Denied,
        "node 2 pinging as node 3: {ping:?}"
    );
    let ping = raft2
        .ping(PingRequest {
            from_node: 2,
            to_node: 1,
        })
        .await;
    ensure!(ping.is_ok(), "node 2 pinging as itself: {ping:?}");

    // Nothing changed: the same map, no node 99, node 3 at its own addresses, and the
    // cluster still takes writes.
    let after = operator.status(StatusRequest {}).await?.into_inner();
    let map = after.map.context("a shard map")?;
    ensure!(
        map.version == version,
        "shard map moved from {version} to {}",
        map.version
    );
    ensure!(
        map.nodes.iter().all(|n| n.node_id != 99),
        "node 99 registered"
    );
    let n3 = map
        .nodes
        .iter()
        .find(|n| n.node_id == 3)
        .context("node 3")?;
    ensure!(
        !n3.raft_addr.starts_with("127.0.9.9"),
        "node 3's address was changed: {n3:?}"
    );
    let client = cluster.client()?;
    cluster_still_writes(&client).await?;
    cluster.pass();
    Ok(())
}

async fn cluster_still_writes(client: &bongsu_testkit::client::TestClient) -> Result<()> {
    use bongsu_proto::model::{ClientMsgId, ConvId, UserId};
    use bongsu_testkit::client::{append, create};
    let conv = ConvId::from_u128(0x5afe);
    let (a, b) = (UserId::from_u128(1), UserId::from_u128(2));
    client
        .write(
            create(conv, bongsu_proto::v1::ConversationKind::Direct, a, &[b]),
            None,
        )
        .await
        .map_err(|f| anyhow::anyhow!("create: {f:?}"))?;
    client
        .write(
            append(conv, a, ClientMsgId::from_u128(1), "still here"),
            None,
        )
        .await
        .map_err(|f| anyhow::anyhow!("append: {f:?}"))?;
    Ok(())
}
