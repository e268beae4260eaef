//! The Rust SDK (`bongsu-client`) against a real deployment: one user on three devices (sync,
//! push, shared read state), a subscriber that keeps every message in order while its gateway
//! is SIGKILLed, and the `bongsu` CLI on top of it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_client::{
    text_of, Client, ConvId, DeviceInfo, DeviceKind, ErrorCode, Event, Session, Subscription,
};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::bounded;
use crate::harness::{Env, Opts};

const PASSWORD: &str = "correct horse battery staple";

/// The gateways with `first` (0-based) first: a device prefers "its" datacenter and falls
/// back on the others in order.
fn preferring(urls: &[String], first: usize) -> Vec<String> {
    let mut v = urls.to_vec();
    v.rotate_left(first % urls.len());
    v
}

async fn device(urls: Vec<String>) -> Result<Client> {
    Client::connect(urls.clone())
        .await
        .with_context(|| format!("connect to {urls:?}"))
}

/// Retries `f` until it returns `Some`, for state that spreads through the cluster's outbox.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sees_conversation(c: &Client, conv: ConvId) -> Result<()> {
    eventually(
        "the conversation in the list",
        Duration::from_secs(15),
        || async move {
            let list = c.list_conversations().await?;
            Ok(list.iter().any(|s| s.id == conv).then_some(()))
        },
    )
    .await
}

/// The next event that `pick` accepts, within `timeout`; other events are skipped.
async fn next_matching<T>(
    sub: &mut Subscription,
    timeout: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::time::timeout_at(deadline, sub.next())
            .await
            .context("no matching event in time")?
            .context("the subscription ended")?
            .context("the subscription failed")?;
        if let Some(v) = pick(&ev) {
            return Ok(v);
        }
    }
}

/// The (seq, text) of the next message of `conv`.
async fn next_message(sub: &mut Subscription, conv: ConvId) -> Result<(u64, String)> {
    next_matching(sub, Duration::from_secs(15), |ev| match ev {
        Event::Message(m) if m.conv_id == conv => {
            Some((m.seq, text_of(m).unwrap_or_default().to_string()))
        }
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_on_three_devices_shares_messages_and_read_state() -> Result<()> {
    bounded(Duration::from_secs(150), async {
        let env = Env::start("sdk-multi-device", Opts::default()).await?;
        let urls = env.grpc_urls();
        // Alice's phone prefers dc1, her tablet dc2, her PC (online later) dc3.
        let phone = device(preferring(&urls, 0)).await?;
        let tablet = device(preferring(&urls, 1)).await?;
        let bob = device(preferring(&urls, 2)).await?;
        let alice = phone
            .sign_up(
                "alice",
                PASSWORD,
                DeviceInfo::new(DeviceKind::Phone, "phone"),
            )
            .await?;
        tablet
            .sign_in(
                "alice",
                PASSWORD,
                DeviceInfo::new(DeviceKind::Tablet, "tablet"),
            )
            .await?;
        bob.sign_up("bob", PASSWORD, DeviceInfo::new(DeviceKind::Pc, "bob's pc"))
            .await?;
        assert_ne!(
            phone.session().map(|s| s.device_id),
            tablet.session().map(|s| s.device_id),
            "each sign-in is its own device"
        );

        let bob_user = phone
            .lookup_handle("bob")
            .await?
            .context("bob can be found by handle")?;
        let conv = phone.create_direct(bob_user.id).await?.id;
        // Creating it again from the other side finds the same conversation.
        assert_eq!(bob.create_direct(alice.user_id).await?.id, conv);
        sees_conversation(&tablet, conv).await?;

        let mut live = tablet.subscribe().await?;
        let sent = phone.send_text(conv, "hi bob, from my phone").await?;
        assert_eq!((sent.seq, sent.duplicate), (1, false));
        // The same client message id again is the same message.
        let again = phone
            .send(
                conv,
                bongsu_client::MessageKind::Text,
                b"hi bob, from my phone".to_vec(),
                sent.client_msg_id,
            )
            .await?;
        assert_eq!((again.seq, again.duplicate), (1, true));
        assert_eq!(
            next_message(&mut live, conv).await?,
            (1, "hi bob, from my phone".to_string())
        );
        bob.send_text(conv, "hi alice").await?;
        assert_eq!(
            next_message(&mut live, conv).await?,
            (2, "hi alice".to_string())
        );
        ensure!(
            live.endpoint() == urls[1],
            "the tablet's push came through dc2, not {}",
            live.endpoint()
        );

        // The PC signs in only now and catches up, once by Sync and once by Subscribe.
        let pc = device(preferring(&urls, 2)).await?;
        pc.sign_in("alice", PASSWORD, DeviceInfo::new(DeviceKind::Pc, "pc"))
            .await?;
        let synced = pc.sync(&[], 0).await?;
        let c = synced
            .iter()
            .find(|c| c.conversation.id == conv)
            .context("sync returns the conversation")?;
        let got: Vec<(u64, &str)> = c
            .messages
            .iter()
            .map(|m| (m.seq, text_of(m).unwrap_or_default()))
            .collect();
        assert_eq!(got, vec![(1, "hi bob, from my phone"), (2, "hi alice")]);
        assert!(!c.has_more);
        let mut resumed = pc.subscribe_from([(conv, 0)]);
        assert_eq!(next_message(&mut resumed, conv).await?.0, 1);
        assert_eq!(next_message(&mut resumed, conv).await?.0, 2);
        // Resuming after seq 1 gives only seq 2.
        let mut from_one = pc.subscribe_from([(conv, 1)]);
        assert_eq!(next_message(&mut from_one, conv).await?.0, 2);

        // Reading on the phone clears the unread count everywhere and is pushed to the tablet.
        assert_eq!(phone.mark_read(conv, 2).await?, 2);
        let read = next_matching(&mut live, Duration::from_secs(15), |ev| match ev {
            Event::Read { conv: c, read_seq } if *c == conv => Some(*read_seq),
            _ => None,
        })
        .await?;
        assert_eq!(read, 2);
        for (name, d) in [("tablet", &tablet), ("pc", &pc)] {
            eventually(
                &format!("unread 0 on the {name}"),
                Duration::from_secs(10),
                || async move {
                    let list = d.list_conversations().await?;
                    let s = list.iter().find(|s| s.id == conv).context("listed")?;
                    Ok((s.unread == 0 && s.read_seq == 2).then_some(()))
                },
            )
            .await?;
        }
        // The read cursor never moves back.
        assert_eq!(tablet.mark_read(conv, 1).await?, 2);
        env.pass();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_keeps_every_message_when_its_gateway_is_killed() -> Result<()> {
    const N: u64 = 200;
    const KILL_AT: u64 = 70;
    bounded(Duration::from_secs(180), async {
        let mut env = Env::start("sdk-stateless", Opts::default()).await?;
        let urls = env.grpc_urls();
        let reader = device(urls.clone()).await?;
        reader
            .sign_up("reader", PASSWORD, DeviceInfo::new(DeviceKind::Phone, "phone"))
            .await?;
        // The writer never uses dc1: its sends must not depend on the gateway being killed.
        let writer = device(urls[1..].to_vec()).await?;
        writer
            .sign_up("writer", PASSWORD, DeviceInfo::new(DeviceKind::Pc, "pc"))
            .await?;
        let conv = writer.create_group(&[reader.me()?]).await?.id;
        sees_conversation(&reader, conv).await?;

        let mut sub = reader.subscribe().await?;
        let opened = &sub;
        eventually("the subscription to open", Duration::from_secs(10), || async move {
            Ok((!opened.endpoint().is_empty()).then_some(()))
        })
        .await?;
        ensure!(sub.endpoint() == urls[0], "subscribed through {}", sub.endpoint());

        let progress = Arc::new(AtomicU64::new(0));
        let sender = tokio::spawn({
            let progress = progress.clone();
            async move {
                for i in 1..=N {
                    let sent = writer.send_text(conv, &format!("m{i}")).await?;
                    ensure!(sent.seq == i, "message {i} got seq {}", sent.seq);
                    progress.store(i, Ordering::Relaxed);
                    // About 40 a second, under the per-user rate limit.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                anyhow::Ok(())
            }
        });

        let mut got = Vec::new();
        let mut killed = false;
        while (got.len() as u64) < N {
            if !killed && progress.load(Ordering::Relaxed) >= KILL_AT {
                env.kill_gateway(1);
                killed = true;
            }
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Err(_) => continue,
                Ok(None) => bail!("the subscription ended after {} messages", got.len()),
                Ok(Some(ev)) => {
                    if let Event::Message(m) = ev.context("the subscription failed")? {
                        ensure!(m.conv_id == conv, "a message of another conversation");
                        ensure!(
                            text_of(&m) == Some(format!("m{}", m.seq).as_str()),
                            "seq {} carries {:?}",
                            m.seq,
                            text_of(&m)
                        );
                        got.push(m.seq);
                    }
                }
            }
        }
        sender.await.context("the sender panicked")??;
        ensure!(killed, "the gateway was killed while messages flowed");
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(got, want, "every seq once, in order");
        eprintln!(
            "sdk-stateless: {} reconnect(s), now on {}, {} duplicate(s) dropped, {} filled from history",
            sub.reconnects(),
            sub.endpoint(),
            sub.duplicates_dropped(),
            sub.gaps_filled()
        );
        ensure!(sub.reconnects() >= 1, "the subscription reconnected");
        ensure!(sub.endpoint() != urls[0], "it left the killed gateway");
        // Resuming from the cursors is the server's promise; the SDK's history fill is only a
        // safety net and must not have been needed.
        assert_eq!(sub.gaps_filled(), 0, "the server resumed without a gap");

        // Nothing lived in the killed gateway: it comes back and serves the same history.
        env.restart_gateway(1).await?;
        let fresh = device(vec![urls[0].clone()]).await?;
        fresh
            .sign_in("reader", PASSWORD, DeviceInfo::new(DeviceKind::Web, "web"))
            .await?;
        let all = fresh.history_range(conv, 1, N).await?;
        assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), want);
        env.pass();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_refresh_by_themselves_and_spent_tokens_get_one_more_chance() -> Result<()> {
    bounded(Duration::from_secs(120), async {
        let env = Env::start("sdk-refresh", Opts::default()).await?;
        let urls = env.grpc_urls();
        let first = device(urls.clone()).await?;
        let s = first
            .sign_up(
                "carol",
                PASSWORD,
                DeviceInfo::new(DeviceKind::Phone, "phone"),
            )
            .await?;
        // An access token the gateway rejects, though the client believes it valid: the SDK
        // refreshes once on UNAUTHENTICATED and the call goes through.
        let rejected = Session {
            access_token: "not-a-token".into(),
            access_expires_at_ms: u64::MAX,
            ..s.clone()
        };
        let c = device(urls.clone()).await?.with_session(rejected.clone());
        let saved = Arc::new(AtomicU64::new(0));
        c.on_session_change({
            let saved = saved.clone();
            move |_| {
                saved.fetch_add(1, Ordering::Relaxed);
            }
        });
        c.list_conversations().await?;
        let renewed = c.session().context("still signed in")?;
        assert_ne!(renewed.refresh_token, s.refresh_token);
        assert_ne!(renewed.access_token, "not-a-token");
        assert_eq!(
            saved.load(Ordering::Relaxed),
            1,
            "the new session was handed over"
        );

        // The refresh token spent just now is accepted once more, because the reply carrying
        // `renewed` could have been lost: that rotates again, and the refresh token issued in
        // between (renewed's) dies.
        let replay = device(urls.clone()).await?.with_session(rejected.clone());
        replay
            .list_conversations()
            .await
            .context("the token spent just now, as if the reply had been lost")?;
        let replayed = replay.session().context("still signed in")?;
        assert_ne!(replayed.refresh_token, s.refresh_token);
        assert_ne!(replayed.refresh_token, renewed.refresh_token);
        let in_between = device(urls.clone()).await?.with_session(Session {
            access_token: "not-a-token".into(),
            access_expires_at_ms: u64::MAX,
            ..renewed
        });
        let err = in_between
            .list_conversations()
            .await
            .err()
            .context("the refresh token issued in between must not work")?;
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err}");
        // The spent token's second chance is used up.
        let third = device(urls.clone()).await?.with_session(rejected);
        let err = third
            .list_conversations()
            .await
            .err()
            .context("a spent refresh token presented a third time must not work")?;
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err}");

        // An expiring token is refreshed before use, once for many concurrent calls.
        let expiring = Session {
            access_expires_at_ms: 0,
            ..replayed
        };
        let busy = device(urls).await?.with_session(expiring);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let busy = busy.clone();
                tokio::spawn(async move { busy.list_conversations().await })
            })
            .collect();
        for call in calls {
            call.await??;
        }
        let after = busy.session().context("still signed in")?;
        ensure!(after.access_expires_at_ms > 0, "the token was refreshed");
        env.pass();
        Ok(())
    })
    .await
}

/// The `bongsu` binary beside the gateway binary (a workspace build makes both).
fn cli_binary() -> Result<PathBuf> {
    bongsu_testkit::process::binary("bongsu")
}

fn cli(bin: &Path, gateways: &str, session: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env("BONGSU_GATEWAY", gateways)
        .env("BONGSU_SESSION", session)
        .env("BONGSU_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run_cli(bin: &Path, gateways: &str, session: &Path, args: &[&str]) -> Result<String> {
    let out = cli(bin, gateways, session)
        .args(args)
        .output()
        .await
        .with_context(|| format!("run bongsu {args:?}"))?;
    ensure!(
        out.status.success(),
        "bongsu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_signs_up_sends_and_tails() -> Result<()> {
    let bin = cli_binary()?;
    bounded(Duration::from_secs(150), async {
        let env = Env::start("sdk-cli", Opts::default()).await?;
        let gateways = env.grpc_urls().join(",");
        let dir = tempfile::tempdir()?;
        let (alice, bob) = (dir.path().join("alice.json"), dir.path().join("bob.json"));
        run_cli(&bin, &gateways, &alice, &["signup", "alice"]).await?;
        run_cli(&bin, &gateways, &bob, &["signup", "bob"]).await?;
        let first = run_cli(&bin, &gateways, &alice, &["send", "bob", "hello", "bob"]).await?;
        ensure!(first.contains("seq 1"), "first send: {first}");
        // The direct conversation is found again, not created twice.
        let second = run_cli(&bin, &gateways, &alice, &["send", "@bob", "again"]).await?;
        ensure!(second.contains("seq 2"), "second send: {second}");
        let (b, g, s) = (&bin, &gateways, &bob);
        eventually(
            "bob's conversation list",
            Duration::from_secs(15),
            || async move {
                let list = run_cli(b, g, s, &["conversations"]).await?;
                Ok(list.contains("alice").then_some(list))
            },
        )
        .await?;

        let mut tail = cli(&bin, &gateways, &bob)
            .args(["tail", "--count", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start bongsu tail")?;
        let stderr = tail.stderr.take().context("tail's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(l) = lines.next_line().await? {
                if l.contains("listening") {
                    return anyhow::Ok(());
                }
            }
            bail!("tail exited before listening")
        })
        .await
        .context("tail did not start listening")??;
        run_cli(&bin, &gateways, &alice, &["send", "bob", "live", "now"]).await?;
        let out = tokio::time::timeout(Duration::from_secs(15), tail.wait_with_output())
            .await
            .context("tail did not exit after one message")??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "tail failed: {stdout}");
        ensure!(
            stdout.trim() == "[@alice] alice: live now",
            "tail printed {stdout:?}"
        );
        // The session file holds tokens: only its owner may read it.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bob)?.permissions().mode();
        ensure!(mode & 0o077 == 0, "session file mode {mode:o}");
        let list = run_cli(&bin, &gateways, &bob, &["conversations"]).await?;
        ensure!(list.contains("alice: live now"), "bob's list: {list}");
        env.pass();
        Ok(())
    })
    .await
}
