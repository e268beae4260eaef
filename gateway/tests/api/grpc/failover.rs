//! A datacenter dies under a connected device.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bongsu_proto::v1;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

/// A datacenter's node dies under a connected device: its gateway routes writes to the new
/// leaders and resumes the shard streams on replicas elsewhere, and the device sees every
/// message once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_push_and_writes_survive_losing_a_datacenter() -> Result<()> {
    let mut env = Env::start("grpc-dc-loss", Opts::default()).await?;
    let urls = env.grpc_urls();
    let mut alice = sign_up(&urls[1], "alice").await?;
    let mut bob = sign_up(&urls[0], "bob").await?;
    let conv = create(&mut alice, v1::ConversationKind::Direct, vec![bob.user()]).await?;
    alice.api.send(alice.req(text(&conv, "before"))).await?;
    let mut push = bob
        .api
        .subscribe(bob.req(v1::SubscribeRequest { cursors: vec![] }))
        .await?
        .into_inner();
    let got = messages_until(&mut push, &conv, "before").await?;
    ensure!(got.iter().map(|m| m.seq).collect::<Vec<_>>() == [1]);

    env.cluster.kill_dc(1)?;
    bounded(Duration::from_secs(60), async {
        for i in 2..=4 {
            let r = alice
                .api
                .send(alice.req(text(&conv, &format!("after {i}"))))
                .await
                .with_context(|| format!("send {i} after losing dc1"))?
                .into_inner();
            ensure!(r.seq == i, "{r:?}");
        }
        let got = messages_until(&mut push, &conv, "after 4").await?;
        ensure!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>() == [2, 3, 4],
            "{got:?}"
        );
        let h = bob
            .api
            .history(bob.req(v1::HistoryRequest {
                conv_id: conv.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        ensure!(h.messages.len() == 4 && h.last_seq == 4);
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}
