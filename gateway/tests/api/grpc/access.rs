//! Only members see a conversation; revoked, expired, forged and spent tokens are refused (a
//! refresh token spent just now gets one more chance, in case its reply was lost).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::v1;
use tonic::Request;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_only_members_see_a_conversation_and_revoked_devices_are_out() -> Result<()> {
    let opts = Opts {
        gateway_args: vec!["--device-check-secs=1".into()],
        ..Opts::default()
    };
    let env = Env::start("grpc-authz", opts).await?;
    bounded(Duration::from_secs(120), async {
        let urls = env.grpc_urls();
        let mut alice = sign_up(&urls[0], "alice").await?;
        let bob = sign_up(&urls[1], "bob").await?;
        let mut mallory = sign_up(&urls[2], "mallory").await?;
        let conv = create(&mut alice, v1::ConversationKind::Direct, vec![bob.user()]).await?;
        let group = create(&mut alice, v1::ConversationKind::Group, vec![bob.user()]).await?;
        alice.api.send(alice.req(text(&conv, "secret"))).await?;

        // Mallory listens with a cursor naming the conversation, hoping to be sent it.
        let mut push = mallory
            .api
            .subscribe(mallory.req(v1::SubscribeRequest {
                cursors: vec![v1::Cursor {
                    conv_id: conv.clone(),
                    seq: 0,
                }],
            }))
            .await?
            .into_inner();

        let m = &mut mallory;
        expect_code(
            m.api
                .get_conversation(m.req(v1::GetConversationRequest {
                    conv_id: conv.clone(),
                }))
                .await,
            "NOT_MEMBER",
            "get",
        )?;
        expect_code(
            m.api
                .history(m.req(v1::HistoryRequest {
                    conv_id: conv.clone(),
                    ..Default::default()
                }))
                .await,
            "NOT_MEMBER",
            "history",
        )?;
        expect_code(
            m.api.send(m.req(text(&conv, "let me in"))).await,
            "NOT_MEMBER",
            "send",
        )?;
        expect_code(
            m.api
                .mark_read(m.req(v1::MarkReadRequest {
                    conv_id: conv.clone(),
                    seq: 1,
                }))
                .await,
            "NOT_MEMBER",
            "mark read",
        )?;
        expect_code(
            m.api
                .change_members(m.req(v1::ChangeMembersRequest {
                    conv_id: group.clone(),
                    add: vec![m.user()],
                    remove: vec![],
                }))
                .await,
            "NOT_MEMBER",
            "add oneself to someone else's group",
        )?;
        expect_code(
            m.api
                .get_conversation(m.req(v1::GetConversationRequest { conv_id: id(9) }))
                .await,
            "UNKNOWN_CONVERSATION",
            "an unknown conversation",
        )?;
        let s = m
            .api
            .sync(m.req(v1::SyncRequest {
                cursors: vec![v1::Cursor {
                    conv_id: conv.clone(),
                    seq: 0,
                }],
                limit_per_conversation: 0,
            }))
            .await?
            .into_inner();
        ensure!(s.conversations.is_empty(), "mallory's sync: {s:?}");
        let l = m
            .api
            .list_conversations(m.req(v1::ListConversationsRequest {}))
            .await?
            .into_inner();
        ensure!(l.conversations.is_empty(), "mallory's list: {l:?}");
        alice
            .api
            .send(alice.req(text(&conv, "more secrets")))
            .await?;
        match next_event(&mut push, Duration::from_secs(2)).await? {
            None => {}
            Some(e) => bail!("mallory was pushed {e:?}"),
        }

        // Tokens: garbage, forged (another key), missing.
        let mut api = alice.api.clone();
        for (what, token) in [
            ("garbage", "not-a-token".to_string()),
            (
                "forged",
                forged_token(
                    &alice.session.access_token,
                    &alice.session.user_id,
                    &alice.session.device_id,
                ),
            ),
            ("tampered", tamper(&alice.session.access_token)),
        ] {
            expect_code(
                api.list_conversations(with_token(&token, v1::ListConversationsRequest {}))
                    .await,
                "UNAUTHENTICATED",
                what,
            )?;
        }
        expect_code(
            api.list_conversations(Request::new(v1::ListConversationsRequest {}))
                .await,
            "UNAUTHENTICATED",
            "no token",
        )?;

        // Refresh rotates the refresh token. The token just spent is accepted once more, for
        // REFRESH_REUSE_MS, because the reply carrying its successor could have been lost on
        // the client's network; that rotates again and kills the successor. Anything older
        // is refused.
        let mut auth = alice.auth.clone();
        let old = alice.session.refresh_token.clone();
        let refresh = |token: &str| v1::RefreshRequest {
            refresh_token: token.to_string(),
        };
        let lost = auth.refresh(refresh(&old)).await?.into_inner();
        ensure!(lost.refresh_token != old && lost.device_id == alice.session.device_id);
        let again = auth
            .refresh(refresh(&old))
            .await
            .context("the token spent just now, as if the reply had been lost")?
            .into_inner();
        ensure!(
            again.refresh_token != old
                && again.refresh_token != lost.refresh_token
                && again.device_id == alice.session.device_id
        );
        expect_code(
            auth.refresh(refresh(&lost.refresh_token)).await,
            "UNAUTHENTICATED",
            "the token issued in between, once its predecessor was presented again",
        )?;
        expect_code(
            auth.refresh(refresh(&old)).await,
            "UNAUTHENTICATED",
            "a spent refresh token presented a third time",
        )?;
        let fresh = auth
            .refresh(refresh(&again.refresh_token))
            .await?
            .into_inner();
        expect_code(
            auth.refresh(refresh(&old)).await,
            "UNAUTHENTICATED",
            "a refresh token two rotations old",
        )?;
        expect_code(
            auth.refresh(v1::RefreshRequest {
                refresh_token: "x.y.z".into(),
            })
            .await,
            "UNAUTHENTICATED",
            "a malformed refresh token",
        )?;
        api.list_conversations(with_token(
            &fresh.access_token,
            v1::ListConversationsRequest {},
        ))
        .await
        .context("the refreshed access token works")?;

        // Revocation from another device: the revoked device's tokens stop working on every
        // gateway within device_check_secs (1 s here), its refresh token at once, and its
        // open push stream ends within about twice that.
        let mut alice_push = alice
            .api
            .subscribe(alice.req(v1::SubscribeRequest { cursors: vec![] }))
            .await?
            .into_inner();
        let mut bob_api = bob.api.clone();
        bob_api
            .send(bob.req(text(&conv, "before the sign-out")))
            .await?;
        messages_until(&mut alice_push, &conv, "before the sign-out").await?;
        let alice2 = sign_in(&urls[1], "alice").await?;
        let mut auth2 = alice2.auth.clone();
        auth2
            .revoke_device(alice2.req(v1::RevokeDeviceRequest {
                device_id: alice.session.device_id.clone(),
            }))
            .await?;
        let revoked_at = std::time::Instant::now();
        let ended = loop {
            // Events may still arrive until the session's next device check.
            match tokio::time::timeout(Duration::from_secs(6), alice_push.message()).await {
                Err(_) => bail!("the revoked device's stream still open after 6 s"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => bail!("the revoked device's stream ended without an error"),
                Ok(Err(s)) => break s,
            }
        };
        ensure!(
            code(&ended) == "UNAUTHENTICATED",
            "the revoked device's stream ended with {} ({ended:?})",
            code(&ended)
        );
        ensure!(
            revoked_at.elapsed() < Duration::from_secs(4),
            "the revoked device's stream ended {:?} after the revocation",
            revoked_at.elapsed()
        );
        bob_api
            .send(bob.req(text(&conv, "after the sign-out")))
            .await?;
        let after = tokio::time::timeout(Duration::from_secs(2), alice_push.message()).await;
        if let Ok(Ok(Some(e))) = after {
            bail!("the revoked device was pushed {e:?} after its stream ended");
        }
        expect_code(
            auth.refresh(v1::RefreshRequest {
                refresh_token: fresh.refresh_token.clone(),
            })
            .await,
            "UNAUTHENTICATED",
            "the refresh token of a revoked device",
        )?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for url in &urls {
            let (_, mut api) = clients(url).await?;
            expect_code(
                api.list_conversations(with_token(
                    &fresh.access_token,
                    v1::ListConversationsRequest {},
                ))
                .await,
                "UNAUTHENTICATED",
                &format!("a revoked device's token at {url}"),
            )?;
        }
        let devs = auth2
            .list_devices(alice2.req(v1::ListDevicesRequest {}))
            .await?
            .into_inner();
        ensure!(devs
            .devices
            .iter()
            .any(|d| d.device_id == alice.session.device_id && d.revoked));
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_expired_access_tokens_are_rejected() -> Result<()> {
    let opts = Opts {
        gateway_args: vec!["--access-ttl-secs=1".into()],
        ..Opts::default()
    };
    let env = Env::start("grpc-expiry", opts).await?;
    bounded(Duration::from_secs(60), async {
        let urls = env.grpc_urls();
        let d = sign_up(&urls[0], "shortlived").await?;
        let mut api = d.api.clone();
        api.list_conversations(d.req(v1::ListConversationsRequest {}))
            .await
            .context("a fresh token works")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        expect_code(
            api.list_conversations(d.req(v1::ListConversationsRequest {}))
                .await,
            "UNAUTHENTICATED",
            "an expired token",
        )?;
        // The refresh token still gets a new one.
        let mut auth = d.auth.clone();
        let s = auth
            .refresh(v1::RefreshRequest {
                refresh_token: d.session.refresh_token.clone(),
            })
            .await?
            .into_inner();
        api.list_conversations(with_token(&s.access_token, v1::ListConversationsRequest {}))
            .await
            .context("the refreshed token works")?;
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}

/// A well-formed v4.public token for the right user and device, naming the cluster's key id
/// (taken from a real token's footer) but signed with a key the cluster never had.
fn forged_token(real: &str, user: &[u8], device: &[u8]) -> String {
    use base64::Engine;
    use pasetors::claims::Claims;
    use pasetors::keys::AsymmetricSecretKey;
    let footer = real.rsplit('.').next().expect("a footer");
    let footer = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(footer)
        .expect("base64 footer");
    let seed = rand::random::<[u8; 32]>();
    let mut key = seed.to_vec();
    key.extend_from_slice(
        &ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let sk = AsymmetricSecretKey::<pasetors::version4::V4>::from(&key).expect("a key");
    let mut claims = Claims::new().expect("claims");
    claims.subject(&hex::encode(user)).expect("sub");
    claims
        .add_additional("dev", hex::encode(device))
        .expect("dev");
    let payload = claims.to_string().expect("json");
    pasetors::version4::PublicToken::sign(&sk, payload.as_bytes(), Some(&footer), None)
        .expect("sign")
}

/// The token with one character of its signed part changed.
fn tamper(token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    let i = "v4.public.".len() + 5;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("ascii")
}
