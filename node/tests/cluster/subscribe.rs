//! Shard subscriptions: a replica streams what its shard applied, in log order, and a
//! subscriber that resumes after a log index gets exactly what came after it: no gap, no
//! duplicate.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bongsu_proto::internal::{SubscribeEvent, SubscribeRequest};
use bongsu_proto::model::{ClientMsgId, UserId};
use bongsu_proto::v1;

use crate::harness::{spec, Cluster};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, create};
use bongsu_testkit::writers::conv_on_shard;

const SHARDS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_without_gaps_or_duplicates() -> Result<()> {
    bounded(Duration::from_secs(60), subscribe("subscribe-3x1")).await
}

async fn next_events(
    stream: &mut tonic::Streaming<SubscribeEvent>,
    n: usize,
) -> Result<Vec<SubscribeEvent>> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .context("no event within 5 s")??
            .context("the stream ended")?;
        out.push(ev);
    }
    Ok(out)
}

async fn subscribe(name: &str) -> Result<()> {
    let mut cluster = Cluster::start(name, spec(3, 1).shards(SHARDS)).await?;
    let client = cluster.client()?;
    let shard = 3;
    let conv = conv_on_shard(shard, SHARDS, 500);
    let (alice, bob) = (UserId::from_u128(1), UserId::from_u128(2));
    client
        .write(
            create(conv, v1::ConversationKind::Group, alice, &[bob]),
            None,
        )
        .await
        .map_err(|f| anyhow::anyhow!("{f:?}"))?;

    // Subscribe on a replica that does not lead the shard: any replica serves subscriptions.
    let leaders = cluster.leaders().await;
    let leader = leaders
        .get(&crate::harness::shard_group(shard))
        .map(|l| l.leader)
        .context("shard has a leader")?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("a follower")?;
    let api = cluster.node(follower).api_addr.clone();
    let mut api = bongsu_testkit::chat::node_api(&api)?;
    let mut live = api
        .subscribe(SubscribeRequest {
            shard,
            after_index: 0,
            from_latest: false,
        })
        .await?
        .into_inner();

    for i in 0..6u128 {
        let who = if i % 2 == 0 { alice } else { bob };
        client
            .write(
                append(conv, who, ClientMsgId::from_u128(100 + i), &format!("m{i}")),
                None,
            )
            .await
            .map_err(|f| anyhow::anyhow!("{f:?}"))?;
    }
    // A retried send must not show up twice.
    client
        .write(append(conv, alice, ClientMsgId::from_u128(100), "m0"), None)
        .await
        .map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let events = next_events(&mut live, 6).await?;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.message.as_ref().map(|m| m.seq).unwrap_or(0))
        .collect();
    ensure!(
        seqs == vec![1, 2, 3, 4, 5, 6],
        "live stream delivered seqs {seqs:?}"
    );
    ensure!(
        events.windows(2).all(|w| w[0].log_index < w[1].log_index),
        "log indexes do not increase"
    );
    ensure!(
        events[2].message.as_ref().map(|m| m.body.as_slice()) == Some(b"m2".as_slice()),
        "wrong body"
    );
    let extra = tokio::time::timeout(Duration::from_millis(500), live.message()).await;
    ensure!(
        extra.is_err(),
        "the retried send was delivered again: {extra:?}"
    );

    // Resume after the third event: exactly the last three, then new ones live.
    let mut resumed = api
        .subscribe(SubscribeRequest {
            shard,
            after_index: events[2].log_index,
            from_latest: false,
        })
        .await?
        .into_inner();
    client
        .write(append(conv, bob, ClientMsgId::from_u128(200), "m6"), None)
        .await
        .map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let got = next_events(&mut resumed, 4).await?;
    let seqs: Vec<u64> = got
        .iter()
        .map(|e| e.message.as_ref().map(|m| m.seq).unwrap_or(0))
        .collect();
    ensure!(
        seqs == vec![4, 5, 6, 7],
        "resumed stream delivered seqs {seqs:?}"
    );
    cluster.pass();
    Ok(())
}
