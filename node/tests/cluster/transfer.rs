//! A leader transfer whose admin call is cancelled must not strand the group: the old leader
//! stops taking writes and heartbeating for the handover, and must start again however the
//! transfer ends.
//!
//! The target is cut off from the leader and one message is written without it, so the
//! handover waits for the target to catch up; the caller gives up after a moment, which drops
//! the transfer mid-way on the leader. Afterwards no node may still call the group
//! "transferring", and writes must go through.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::internal::{FaultRule, TransferLeaderRequest};
use bongsu_proto::model::{ClientMsgId, ConvId, UserId};
use bongsu_proto::v1;

use crate::harness::{spec, Cluster};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, create};

const GROUP: u64 = 1; // shard 0, the only one
/// How long the caller waits for the transfer before it cancels the call.
const CALLER_PATIENCE: Duration = Duration::from_millis(150);
/// How long a stranded flag would have to clear by itself: several transfer timeouts.
const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transfer_leaves_no_group_transferring() -> Result<()> {
    bounded(Duration::from_secs(120), run()).await
}

async fn run() -> Result<()> {
    let mut cluster = Cluster::start("transfer-cancel", spec(3, 1).shards(1)).await?;
    let leaders = cluster.wait_all_leaders(Duration::from_secs(30)).await?;
    let leader = leaders.get(&GROUP).context("shard 0 has no leader")?.leader;
    let target = cluster
        .ids()
        .into_iter()
        .find(|n| *n != leader)
        .context("no follower")?;
    let client = cluster.client()?.with_deadline(Duration::from_secs(20));
    let conv = ConvId::from_u128(0x7a45_0001);
    let alice = UserId::from_u128(0xa11ce);
    client
        .write(
            create(conv, v1::ConversationKind::Group, alice, &[alice]),
            Some(leader),
        )
        .await
        .map_err(|f| anyhow::anyhow!("create: {f:?}"))?;

    // The target falls behind by one message, so the handover waits for it.
    let target_dc = cluster.node(target).dc_name();
    cluster
        .set_faults(|n| {
            if n.id == leader {
                vec![FaultRule {
                    dc: target_dc.clone(),
                    direction: "both".into(),
                    action: "drop".into(),
                    delay_ms: 0,
                }]
            } else {
                Vec::new()
            }
        })
        .await?;
    client
        .write(
            append(conv, alice, ClientMsgId::from_u128(1), "before"),
            Some(leader),
        )
        .await
        .map_err(|f| anyhow::anyhow!("append: {f:?}"))?;

    let mut admin = cluster.node_mut(leader).admin()?;
    let call = admin.transfer_leader(TransferLeaderRequest {
        group: GROUP,
        to_node: target,
    });
    match tokio::time::timeout(CALLER_PATIENCE, call).await {
        Err(_) => {} // cancelled mid-way, as intended
        Ok(r) => bail!("the transfer ended before the caller gave up: {r:?}"),
    }
    cluster.set_faults(|_| Vec::new()).await?;

    // No node calls the group transferring for long, and writes go through.
    let started = Instant::now();
    loop {
        let stuck: Vec<u64> = cluster
            .statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.groups.iter().any(|g| g.group == GROUP && g.transferring))
            .map(|(id, _)| id)
            .collect();
        if stuck.is_empty() {
            break;
        }
        ensure!(
            started.elapsed() < SETTLE,
            "node(s) {stuck:?} still hold group {GROUP} as transferring {} ms after the call was cancelled",
            started.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 2..=4u128 {
        client
            .write(
                append(conv, alice, ClientMsgId::from_u128(i), "after"),
                Some(leader),
            )
            .await
            .map_err(|f| anyhow::anyhow!("append after the cancelled transfer: {f:?}"))?;
    }
    cluster.pass();
    Ok(())
}
