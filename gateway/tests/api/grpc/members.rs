//! Group membership changes as members and outsiders see them, and the rate limits, in one
//! deployment with tight limits (`--user-rate=2 --auth-rate-per-min=3`, per gateway).
//!
//! The membership part is not about limits: its calls go through [`paced`], which waits out
//! `RESOURCE_EXHAUSTED` the way a well-behaved client does, so it only gets slower.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::v1::{self, push_event::Event};
use tonic::{Response, Status};

use bongsu_testkit::cluster::Cluster;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_membership_changes_and_rate_limits() -> Result<()> {
    let opts = Opts {
        gateway_args: vec!["--user-rate=2".into(), "--auth-rate-per-min=3".into()],
        ..Opts::default()
    };
    let mut env = Env::start("grpc-members", opts).await?;
    bounded(Duration::from_secs(180), async {
        let urls = env.grpc_urls();
        let a = sign_up(&urls[0], "anna").await?;
        let b = sign_up(&urls[1], "bora").await?;
        let c = sign_up(&urls[2], "chul").await?;
        // First, while the minute of anna's sign-up is young (one attempt refills every 20 s).
        let r = auth_limit(&urls[0]).await.context("the sign-in limit")?;
        membership(&mut env.cluster, &a, &b, &c)
            .await
            .context("membership changes")?;
        user_limit(r).await.context("the per-user limit")
    })
    .await?;
    env.pass();
    Ok(())
}

/// The `retry-after` of a refused call, in seconds.
fn retry_after(s: &Status) -> Option<u64> {
    s.metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Calls `f` until the rate limit lets it through (for 30 s at most), sleeping `retry-after`
/// between tries; any other outcome is returned as it is.
async fn paced<T, F, Fut>(f: F) -> std::result::Result<T, Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<Response<T>, Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Err(s) if code(&s) == "RESOURCE_EXHAUSTED" && Instant::now() < deadline => {
                let wait = retry_after(&s).unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            r => return r.map(Response::into_inner),
        }
    }
}

/// `paced!(device, method, request)`: one Messenger call of `device`, paced. The request is
/// built once, so a retried Send keeps its client_msg_id.
macro_rules! paced {
    ($d:expr, $method:ident, $msg:expr) => {{
        let msg = $msg;
        let d = &$d;
        paced(|| {
            let mut api = d.api.clone();
            let req = d.req(msg.clone());
            async move { api.$method(req).await }
        })
        .await
    }};
}

fn listed(l: &v1::ListConversationsReply, conv: &[u8]) -> bool {
    l.conversations.iter().any(|c| c.conv_id == conv)
}

/// How long the `outbox_slow_delivery` failpoint holds a delivery back
/// (`bongsu_raft_store::failpoints::OUTBOX_DELAY`, which this crate does not depend on).
const OUTBOX_DELAY: Duration = Duration::from_secs(1);

/// Switches `outbox_slow_delivery` on every node: membership changes then reach users'
/// shards only after [`OUTBOX_DELAY`].
async fn slow_outbox(cluster: &mut Cluster, on: bool) -> Result<()> {
    for id in cluster.ids() {
        cluster
            .set_failpoint(id, "outbox_slow_delivery", on)
            .await?;
    }
    Ok(())
}

async fn membership(cluster: &mut Cluster, a: &Device, b: &Device, c: &Device) -> Result<()> {
    let group = id(1);
    paced!(
        a,
        create_conversation,
        v1::CreateConversationRequest {
            conv_id: group.clone(),
            kind: v1::ConversationKind::Group as i32,
            members: vec![b.user()],
        }
    )?;
    for body in ["before 1", "before 2"] {
        paced!(a, send, text(&group, body))?;
    }

    // C listens with no cursors, then A adds C: a joined event, then the whole history.
    let mut c_push = paced!(c, subscribe, v1::SubscribeRequest { cursors: vec![] })?;
    let mut b_push = paced!(b, subscribe, v1::SubscribeRequest { cursors: vec![] })?;
    paced!(
        a,
        change_members,
        v1::ChangeMembersRequest {
            conv_id: group.clone(),
            add: vec![c.user()],
            remove: vec![],
        }
    )?;
    match next_event(&mut c_push, Duration::from_secs(10)).await? {
        Some(Event::Joined(s)) if s.conv_id == group => {
            ensure!(
                s.members.iter().any(|m| m.user_id == c.user()),
                "C is a member in the joined event: {s:?}"
            );
        }
        other => bail!("C's first event: expected joined, got {other:?}"),
    }
    paced!(a, send, text(&group, "after C joined"))?;
    let got = messages_until(&mut c_push, &group, "after C joined").await?;
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    ensure!(
        seqs == [1, 2, 3],
        "C's messages in seq order from 1: {seqs:?}"
    );
    ensure!(got[0].body == b"before 1" && got[1].body == b"before 2");
    eventually("C's list shows the group", || async {
        let l = paced!(c, list_conversations, v1::ListConversationsRequest {})?;
        Ok(listed(&l, &group).then_some(()))
    })
    .await?;

    // A removes B and A and C send at once: B's stream says left and gets none of them (the
    // removal is in the conversation's own stream, ahead of them, however long the outbox
    // takes to reach B's shard); C gets them all. B reads and writes nothing more, and B's
    // list forgets the group. The outbox is held back meanwhile, so that B's own shard hears
    // of the removal only well after the sends, as when that shard has no quorum: on a quick
    // local cluster it would otherwise often win the race and hide a leak. A wait lets A's
    // and C's allowances refill first, so that the sends follow the removal without waiting
    // out the rate limit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    slow_outbox(cluster, true).await?;
    paced!(
        a,
        change_members,
        v1::ChangeMembersRequest {
            conv_id: group.clone(),
            add: vec![],
            remove: vec![b.user()],
        }
    )?;
    let after: Vec<String> = (1..=6).map(|i| format!("after B left {i}")).collect();
    for (i, body) in after.iter().enumerate() {
        let sender = if i % 2 == 0 { a } else { c };
        paced!(sender, send, text(&group, body))?;
    }
    let mut left = false;
    loop {
        // After the left event, silence for longer than the outbox is held back: the LEFT
        // that B's own shard streams later must not be announced again either.
        let wait = if left {
            OUTBOX_DELAY + Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        match next_event(&mut b_push, wait).await? {
            Some(Event::Left(conv)) if conv == group && !left => left = true,
            // What was sent while B was a member (the catch-up), and only before the left.
            Some(Event::Message(m)) if m.conv_id == group && m.seq <= 3 && !left => {}
            Some(other) => bail!("B's stream (left seen: {left}): {other:?}"),
            None if left => break,
            None => bail!("no left event for B within 10 s"),
        }
    }
    slow_outbox(cluster, false).await?;
    let last = after.last().context("no message sent")?;
    let got = messages_until(&mut c_push, &group, last).await?;
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    ensure!(
        seqs == (4..=9).collect::<Vec<u64>>(),
        "C's messages after B left: {seqs:?}"
    );
    expect_code(
        paced!(
            b,
            history,
            v1::HistoryRequest {
                conv_id: group.clone(),
                ..Default::default()
            }
        ),
        "NOT_MEMBER",
        "history of a removed member",
    )?;
    expect_code(
        paced!(b, send, text(&group, "still here?")),
        "NOT_MEMBER",
        "send by a removed member",
    )?;
    expect_code(
        paced!(
            b,
            mark_read,
            v1::MarkReadRequest {
                conv_id: group.clone(),
                seq: 4,
            }
        ),
        "NOT_MEMBER",
        "mark read by a removed member",
    )?;
    expect_code(
        paced!(
            b,
            get_conversation,
            v1::GetConversationRequest {
                conv_id: group.clone(),
            }
        ),
        "NOT_MEMBER",
        "get by a removed member",
    )?;
    eventually("B's list forgets the group", || async {
        let l = paced!(b, list_conversations, v1::ListConversationsRequest {})?;
        Ok((!listed(&l, &group)).then_some(()))
    })
    .await?;
    // Nobody else was affected: C still reads everything, the last message included.
    let h = paced!(
        c,
        history,
        v1::HistoryRequest {
            conv_id: group.clone(),
            ..Default::default()
        }
    )?;
    ensure!(
        h.last_seq == 9 && h.messages.len() == 9,
        "C's history: {h:?}"
    );

    // A non-member cannot change the group (not even to add themselves back), and a direct
    // conversation keeps its two members.
    expect_code(
        paced!(
            b,
            change_members,
            v1::ChangeMembersRequest {
                conv_id: group.clone(),
                add: vec![b.user()],
                remove: vec![],
            }
        ),
        "NOT_MEMBER",
        "a non-member's change",
    )?;
    let direct = id(2);
    paced!(
        a,
        create_conversation,
        v1::CreateConversationRequest {
            conv_id: direct.clone(),
            kind: v1::ConversationKind::Direct as i32,
            members: vec![b.user()],
        }
    )?;
    expect_code(
        paced!(
            a,
            change_members,
            v1::ChangeMembersRequest {
                conv_id: direct.clone(),
                add: vec![c.user()],
                remove: vec![],
            }
        ),
        "DIRECT_IMMUTABLE",
        "adding to a direct conversation",
    )?;
    let g = paced!(
        a,
        get_conversation,
        v1::GetConversationRequest { conv_id: direct }
    )?;
    ensure!(g.members.len() == 2, "the direct conversation: {g:?}");
    Ok(())
}

/// Sign-ups and sign-ins per IP on gw1: anna's (1), rami's (2), a wrong password (3); the
/// fourth is refused. Returns rami.
async fn auth_limit(url: &str) -> Result<Device> {
    let mut r = sign_up(url, "rami").await?;
    let wrong = r
        .auth
        .sign_in(v1::SignInRequest {
            handle: "rami".into(),
            password: "not-the-password".into(),
            device: device_info("x"),
        })
        .await;
    expect_code(wrong, "UNAUTHENTICATED", "a wrong password")?;
    let refused = r
        .auth
        .sign_up(v1::SignUpRequest {
            handle: "too_many".into(),
            password: "too_many-secret-pw".into(),
            device: device_info("x"),
        })
        .await;
    match &refused {
        Err(s) if code(s) == "RESOURCE_EXHAUSTED" => {
            let after = retry_after(s);
            ensure!(
                after.is_some_and(|s| (1..=60).contains(&s)),
                "retry-after {after:?}"
            );
        }
        other => bail!("a fourth sign-up in a minute: {other:?}"),
    }
    let found = paced!(
        r,
        lookup_users,
        v1::LookupUsersRequest {
            handles: vec!["too_many".into(), "rami".into()],
            user_ids: vec![],
        }
    )?;
    ensure!(
        found.users.len() == 1 && found.users[0].handle == "rami",
        "the refused sign-up made no account: {found:?}"
    );
    Ok(r)
}

async fn user_limit(mut r: Device) -> Result<()> {
    // Per user: 2/s with bursts of 4. From a full allowance, send until refused.
    let conv = id(3);
    paced!(
        r,
        create_conversation,
        v1::CreateConversationRequest {
            conv_id: conv.clone(),
            kind: v1::ConversationKind::Group as i32,
            members: vec![],
        }
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut accepted = Vec::new();
    let refusal = loop {
        ensure!(accepted.len() < 20, "20 sends in a burst were all accepted");
        let req = text(&conv, &format!("burst {}", accepted.len()));
        match r.api.send(r.req(req.clone())).await {
            Ok(reply) => accepted.push((req.client_msg_id, reply.into_inner().seq)),
            Err(s) => break s,
        }
    };
    ensure!(
        code(&refusal) == "RESOURCE_EXHAUSTED" && refusal.code() == tonic::Code::ResourceExhausted,
        "the refusal: {} {refusal:?}",
        code(&refusal)
    );
    let wait = retry_after(&refusal).context("retry-after on the refusal")?;
    ensure!(wait >= 1, "retry-after {wait}");
    ensure!(
        (4..=6).contains(&accepted.len()),
        "a burst of 4 (and what refilled meanwhile) is accepted, got {}",
        accepted.len()
    );
    // Exactly the accepted sends were stored, with the seqs they were given.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let h = paced!(
        r,
        history,
        v1::HistoryRequest {
            conv_id: conv.clone(),
            ..Default::default()
        }
    )?;
    let stored: Vec<(Vec<u8>, u64)> = h
        .messages
        .into_iter()
        .map(|m| (m.client_msg_id, m.seq))
        .collect();
    ensure!(
        stored == accepted,
        "stored {stored:?}, accepted {accepted:?}"
    );
    Ok(())
}
