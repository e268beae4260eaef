//! Two people and three devices through every operation of the gRPC API.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::v1::{self, push_event::Event};

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_whole_flow_two_people_three_devices() -> Result<()> {
    let env = Env::start("grpc-flow", Opts::default()).await?;
    bounded(Duration::from_secs(120), async {
        let urls = env.grpc_urls();
        let mut alice = sign_up(&urls[0], "alice").await?;
        let mut bob = sign_up(&urls[1], "bob").await?;
        let mut alice2 = sign_in(&urls[2], "alice").await?;
        ensure!(
            alice2.user() == alice.user(),
            "the same user on both devices"
        );
        ensure!(alice2.session.device_id != alice.session.device_id);
        let mut bob_auth = bob.auth.clone();
        expect_code(
            bob_auth
                .sign_up(v1::SignUpRequest {
                    handle: "Alice".into(),
                    password: "another-password".into(),
                    device: device_info("x"),
                })
                .await,
            "HANDLE_TAKEN",
            "sign up with a taken handle",
        )?;

        // Alice's second device listens from the start: a joined event, then live messages.
        let mut push = alice2
            .api
            .subscribe(alice2.req(v1::SubscribeRequest { cursors: vec![] }))
            .await?
            .into_inner();

        let found = alice
            .api
            .lookup_users(alice.req(v1::LookupUsersRequest {
                handles: vec!["BOB".into(), "nobody_here".into()],
                user_ids: vec![alice.user()],
            }))
            .await?
            .into_inner();
        ensure!(found.users.len() == 2, "{found:?}");
        ensure!(found
            .users
            .iter()
            .any(|u| u.handle == "bob" && u.user_id == bob.user()));

        let direct = create(&mut alice, v1::ConversationKind::Direct, vec![bob.user()]).await?;
        // Creating again with the same id is a no-op.
        ensure!(
            create_again(&mut alice, &direct, vec![bob.user()])
                .await?
                .len()
                == 2
        );
        let group = create(&mut bob, v1::ConversationKind::Group, vec![alice.user()]).await?;
        expect_code(
            alice
                .api
                .create_conversation(alice.req(v1::CreateConversationRequest {
                    conv_id: id(2),
                    kind: v1::ConversationKind::Direct as i32,
                    members: vec![bob.user(), id(3)],
                }))
                .await,
            "INVALID_MEMBERS",
            "a direct conversation with two others",
        )?;
        expect_code(
            alice
                .api
                .create_conversation(alice.req(v1::CreateConversationRequest {
                    conv_id: id(2),
                    kind: v1::ConversationKind::Group as i32,
                    members: vec![id(3)],
                }))
                .await,
            "UNKNOWN_USER",
            "a group with a user who does not exist",
        )?;

        // Sends: a retry with the same client_msg_id returns the first seq.
        let mut seqs = Vec::new();
        for i in 1..=5 {
            let req = text(&direct, &format!("hello {i}"));
            let first = alice.api.send(alice.req(req.clone())).await?.into_inner();
            let again = alice.api.send(alice.req(req)).await?.into_inner();
            ensure!(!first.duplicate && again.duplicate, "{first:?} {again:?}");
            ensure!(
                first.seq == again.seq && first.seq == i,
                "seq {first:?} {again:?}"
            );
            seqs.push(first.seq);
        }
        bob.api.send(bob.req(text(&group, "group hi"))).await?;
        expect_code(
            alice
                .api
                .send(alice.req(v1::SendRequest {
                    body: vec![0xff, 0xfe],
                    ..text(&direct, "")
                }))
                .await,
            "INVALID_ARGUMENT",
            "text that is not UTF-8",
        )?;
        expect_code(
            alice
                .api
                .send(alice.req(v1::SendRequest {
                    body: vec![b'x'; 64 * 1024 + 1],
                    ..text(&direct, "")
                }))
                .await,
            "MESSAGE_TOO_LARGE",
            "a body over the limit",
        )?;

        // Live: the second device got both conversations and the messages in order.
        let mut joined = Vec::new();
        let mut live = Vec::new();
        while live.len() < 5 || joined.len() < 2 {
            match next_event(&mut push, Duration::from_secs(10)).await? {
                Some(Event::Joined(s)) => joined.push(s.conv_id),
                Some(Event::Message(m)) if m.conv_id == direct => live.push(m.seq),
                Some(_) => {}
                None => bail!("push: joined {} and {:?} within 10 s", joined.len(), live),
            }
        }
        ensure!(live == seqs, "live seqs {live:?}");
        ensure!(joined.contains(&direct) && joined.contains(&group));

        // History after and before.
        let h = bob
            .api
            .history(bob.req(v1::HistoryRequest {
                conv_id: direct.clone(),
                after: 2,
                before: 0,
                limit: 2,
            }))
            .await?
            .into_inner();
        ensure!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [3, 4] && h.last_seq == 5);
        let h = bob
            .api
            .history(bob.req(v1::HistoryRequest {
                conv_id: direct.clone(),
                after: 0,
                before: 5,
                limit: 2,
            }))
            .await?
            .into_inner();
        ensure!(
            h.messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [3, 4],
            "{h:?}"
        );

        // Bob's list: unread counts, the last message, handles.
        let list = eventually("bob's list has both conversations", || {
            let mut api = bob.api.clone();
            let req = bob.req(v1::ListConversationsRequest {});
            async move {
                let l = api.list_conversations(req).await?.into_inner();
                Ok((l.conversations.len() == 2).then_some(l))
            }
        })
        .await?;
        let d = list
            .conversations
            .iter()
            .find(|c| c.conv_id == direct)
            .context("the direct conversation is listed")?;
        ensure!(d.unread == 5 && d.last_seq == 5 && d.read_seq == 0, "{d:?}");
        ensure!(d
            .last_message
            .as_ref()
            .is_some_and(|m| m.body == b"hello 5"));
        let mut handles: Vec<_> = d.members.iter().map(|m| m.handle.as_str()).collect();
        handles.sort();
        ensure!(handles == ["alice", "bob"], "{handles:?}");

        // Mark read: clamped to the last seq, never backwards, and pushed to the other device.
        let r = bob
            .api
            .mark_read(bob.req(v1::MarkReadRequest {
                conv_id: direct.clone(),
                seq: 3,
            }))
            .await?
            .into_inner();
        ensure!(r.read_seq == 3);
        let r = bob
            .api
            .mark_read(bob.req(v1::MarkReadRequest {
                conv_id: direct.clone(),
                seq: 99,
            }))
            .await?
            .into_inner();
        ensure!(r.read_seq == 5, "clamped to last_seq: {r:?}");
        let r = bob
            .api
            .mark_read(bob.req(v1::MarkReadRequest {
                conv_id: direct.clone(),
                seq: 1,
            }))
            .await?
            .into_inner();
        ensure!(r.read_seq == 5, "never backwards: {r:?}");
        alice2
            .api
            .mark_read(alice2.req(v1::MarkReadRequest {
                conv_id: group.clone(),
                seq: 1,
            }))
            .await?;
        loop {
            match next_event(&mut push, Duration::from_secs(10)).await? {
                Some(Event::Read(r)) if r.conv_id == group => {
                    ensure!(r.read_seq == 1);
                    break;
                }
                Some(_) => {}
                None => bail!("no read event within 10 s"),
            }
        }
        let list = bob
            .api
            .list_conversations(bob.req(v1::ListConversationsRequest {}))
            .await?
            .into_inner();
        let d = list
            .conversations
            .iter()
            .find(|c| c.conv_id == direct)
            .context("listed")?;
        ensure!(d.unread == 0 && d.read_seq == 5, "{d:?}");

        // Sync from cursors: only what is new, with has_more when the page is full.
        let s = alice
            .api
            .sync(alice.req(v1::SyncRequest {
                cursors: vec![v1::Cursor {
                    conv_id: direct.clone(),
                    seq: 2,
                }],
                limit_per_conversation: 2,
            }))
            .await?
            .into_inner();
        ensure!(s.conversations.len() == 2, "{s:?}");
        let d = s
            .conversations
            .iter()
            .find(|c| c.conversation.as_ref().is_some_and(|x| x.conv_id == direct))
            .context("direct in sync")?;
        ensure!(d.messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [3, 4] && d.has_more);
        let g = s
            .conversations
            .iter()
            .find(|c| c.conversation.as_ref().is_some_and(|x| x.conv_id == group))
            .context("group in sync")?;
        ensure!(g.messages.len() == 1 && !g.has_more);

        // A device that resumes from its cursor gets what it missed, then live, no duplicates.
        let mut resumed = bob
            .api
            .subscribe(bob.req(v1::SubscribeRequest {
                cursors: vec![
                    v1::Cursor {
                        conv_id: direct.clone(),
                        seq: 3,
                    },
                    v1::Cursor {
                        conv_id: group.clone(),
                        seq: 1,
                    },
                ],
            }))
            .await?
            .into_inner();
        alice.api.send(alice.req(text(&direct, "hello 6"))).await?;
        let got = messages_until(&mut resumed, &direct, "hello 6").await?;
        ensure!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>() == [4, 5, 6],
            "{got:?}"
        );

        // Devices: both of alice's, the caller marked.
        let devs = alice2
            .auth
            .list_devices(alice2.req(v1::ListDevicesRequest {}))
            .await?
            .into_inner();
        ensure!(devs.devices.len() == 2);
        ensure!(devs.devices.iter().filter(|d| d.current).count() == 1);
        let info = alice
            .auth
            .server_info(v1::ServerInfoRequest {})
            .await?
            .into_inner();
        ensure!(info.dc == "dc1", "{info:?}");
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}

async fn create_again(
    d: &mut Device,
    conv: &[u8],
    members: Vec<Vec<u8>>,
) -> Result<Vec<v1::Member>> {
    Ok(d.api
        .create_conversation(d.req(v1::CreateConversationRequest {
            conv_id: conv.to_vec(),
            kind: v1::ConversationKind::Direct as i32,
            members,
        }))
        .await
        .context("create the same conversation again")?
        .into_inner()
        .members)
}
