//! A node that comes back with an empty data directory under its old id must never vote as if
//! it remembered (ARCHITECTURE.md invariant 8).
//!
//! Voters A, B and C of one shard. C is cut off; an entry is committed on A and B only. B
//! restarts with its directory wiped; A is killed; C, which lacks the entry, is reconnected to
//! B and campaigns. Without the identity check B grants its vote, C wins and the committed
//! entry is overwritten on every replica once A returns. With it, B answers no Raft traffic,
//! C cannot win, and once A returns the entry is still there. The test runs both ways, so it
//! shows that it can fail. Then B, given seeds, asks to join under its old id and is refused
//! with `NODE_REPLACED`, naming the way out.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_node::cluster::EXIT_REFUSED;
use bongsu_node::identity::UNSAFE_SKIP_ENV;
use bongsu_proto::internal::{CampaignRequest, FaultRule, HelloRequest};
use bongsu_proto::model::{ClientMsgId, ConvId, UserId};
use bongsu_proto::v1;

use crate::harness::{shard_group, spec, Cluster, META_GROUP};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, appended, create};

const GROUP: u64 = 1; // shard 0, the only one
/// How long C keeps campaigning: long enough for a vote B would grant.
const CAMPAIGN_FOR: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_voter_never_votes_and_the_committed_entry_survives() -> Result<()> {
    bounded(Duration::from_secs(240), run(true)).await
}

/// The same scenario with the check switched off (`bongsu-node-chaos` only): the entry is
/// lost, which is what the check prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_identity_check_a_wiped_voter_loses_a_committed_entry() -> Result<()> {
    bounded(Duration::from_secs(240), run(false)).await
}

fn drop_dc(dc: String) -> FaultRule {
    FaultRule {
        dc,
        direction: "both".into(),
        action: "drop".into(),
        delay_ms: 0,
    }
}

async fn run(protected: bool) -> Result<()> {
    let name = if protected { "wiped" } else { "wiped-unsafe" };
    let mut sp = spec(3, 1).shards(1);
    if !protected {
        sp = sp.env(UNSAFE_SKIP_ENV, "1");
    }
    let mut cluster = Cluster::start(name, sp).await?;
    let leaders = cluster.wait_all_leaders(Duration::from_secs(30)).await?;
    let a = leaders.get(&GROUP).context("shard 0 has no leader")?.leader;
    let others: Vec<u64> = cluster.ids().into_iter().filter(|n| *n != a).collect();
    let (b, c) = (others[0], others[1]);
    let dc = |cluster: &Cluster, id: u64| cluster.node(id).dc_name();
    let (dc_a, dc_b, dc_c) = (dc(&cluster, a), dc(&cluster, b), dc(&cluster, c));
    eprintln!("A = node {a} (shard leader), B = node {b} (wiped), C = node {c} (cut off)");

    let client = cluster.client()?.with_deadline(Duration::from_secs(20));
    let conv = ConvId::from_u128(0x3170_0001);
    let (alice, bob) = (UserId::from_u128(0xa11ce), UserId::from_u128(0xb0b));
    client
        .write(
            create(conv, v1::ConversationKind::Group, alice, &[alice, bob]),
            Some(a),
        )
        .await
        .map_err(|f| anyhow::anyhow!("create: {f:?}"))?;

    // C is cut off from A and B; the entry commits on A and B only.
    let (to_c, from_c) = (dc_c.clone(), (dc_a.clone(), dc_b.clone()));
    cluster
        .set_faults(|n| {
            if n.id == c {
                vec![drop_dc(from_c.0.clone()), drop_dc(from_c.1.clone())]
            } else {
                vec![drop_dc(to_c.clone())]
            }
        })
        .await?;
    let body = "committed on A and B only";
    let reply = client
        .write(
            append(conv, alice, ClientMsgId::from_u128(0x5e1), body),
            Some(a),
        )
        .await
        .map_err(|f| anyhow::anyhow!("append: {f:?}"))?;
    let seq = appended(&reply.reply).context("append reply")?.seq;
    eprintln!("acknowledged seq {seq} through node {}", reply.node);

    // B loses its disk and comes back empty under its old id; A dies.
    cluster.kill(b)?;
    let wiped = cluster.node(b).data_path();
    std::fs::remove_dir_all(&wiped).with_context(|| format!("wipe {}", wiped.display()))?;
    cluster.node(b).note("data directory wiped");
    cluster.restart(b).await?;
    cluster.kill(a)?;
    // B and C reach each other again; A stays unreachable (and dead).
    let dc_a2 = dc_a.clone();
    cluster.set_faults(|_| vec![drop_dc(dc_a2.clone())]).await?;

    // C, which lacks the entry, campaigns and asks B for its vote.
    let won = campaign(&mut cluster, c).await?;
    let admitted = cluster
        .node_mut(b)
        .admin()?
        .hello(HelloRequest {})
        .await?
        .into_inner()
        .admitted;
    if protected {
        ensure!(
            won.is_none(),
            "node {c} won the shard with the wiped node {b}'s vote: {won:?}"
        );
        ensure!(!admitted, "the wiped node {b} says it was admitted");
        let log = std::fs::read_to_string(cluster.node(b).log_path())?;
        ensure!(
            log.contains("must not vote") && log.contains("new node id"),
            "the wiped node's log does not say why it refuses and what to do:\n{}",
            cluster.node(b).log_tail(30)
        );
    } else {
        ensure!(
            won.is_some(),
            "without the check, node {c} should have won the shard with the wiped node's vote; the scenario did not happen"
        );
    }

    // A returns; every partition heals.
    cluster.restart(a).await?;
    cluster.set_faults(|_| Vec::new()).await?;
    let messages = client
        .read_all(conv, alice, None)
        .await
        .map_err(|f| anyhow::anyhow!("read back: {f:?}"))?;
    let kept = messages
        .iter()
        .any(|m| m.seq == seq && m.body == body.as_bytes());
    eprintln!(
        "after A's return the conversation holds {} messages; the acknowledged one is {}",
        messages.len(),
        if kept { "there" } else { "LOST" }
    );
    if protected {
        ensure!(kept, "the acknowledged message (seq {seq}) was lost");
        refused_join(&mut cluster, b).await?;
    } else {
        ensure!(
            !kept,
            "without the check the acknowledged message survived; the test would not catch the bug"
        );
    }
    cluster.pass();
    Ok(())
}

/// Has `c` campaign for the meta group (which B must follow to host the shard) and for the
/// shard, once a second, until it leads the shard or [`CAMPAIGN_FOR`] has passed. Returns how
/// long it took to win, or `None`.
async fn campaign(cluster: &mut Cluster, c: u64) -> Result<Option<Duration>> {
    let started = Instant::now();
    while started.elapsed() < CAMPAIGN_FOR {
        let leaders = cluster.leaders().await;
        if leaders.get(&GROUP).is_some_and(|l| l.leader == c) {
            return Ok(Some(started.elapsed()));
        }
        let mut admin = cluster.node_mut(c).admin()?;
        for group in [META_GROUP, GROUP] {
            if leaders.get(&group).is_some_and(|l| l.leader == c) {
                continue;
            }
            if let Err(s) = admin.campaign(CampaignRequest { group, delay_ms: 0 }).await {
                eprintln!("campaign for group {group}: {}", s.message());
            }
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Ok(None)
}

/// B, given the members as seeds, asks to join under its old id: the cluster refuses with
/// `NODE_REPLACED` and B exits with [`EXIT_REFUSED`], saying what to do.
async fn refused_join(cluster: &mut Cluster, b: u64) -> Result<()> {
    cluster.kill(b)?;
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != b && n.running())
        .map(|n| n.admin_addr.clone())
        .collect();
    let n = cluster.node_mut(b);
    n.seeds = seeds;
    n.write_config()?;
    n.spawn()?;
    let Some(exit) = cluster.wait_exit(b, Duration::from_secs(30)).await else {
        bail!(
            "node {b} kept running after asking to join under its old id:\n{}",
            cluster.node(b).log_tail(20)
        );
    };
    ensure!(
        exit.status.code() == Some(EXIT_REFUSED),
        "{}",
        exit.describe()
    );
    let log = std::fs::read_to_string(cluster.node(b).log_path())?;
    ensure!(
        log.contains("NODE_REPLACED") && log.contains("new node id"),
        "the refusal does not name the way out:\n{}",
        cluster.node(b).log_tail(20)
    );
    Ok(())
}

#[test]
fn group_of_shard_zero() {
    assert_eq!(shard_group(0), GROUP);
}
