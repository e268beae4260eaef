//! Users end to end: accounts written and read back through the internal API, members'
//! conversation lists kept by the cross-shard outbox, a user's shard streaming JOINED and
//! READ events, a removal streamed by both the conversation's and the user's shard with one
//! version, conversation headers, and the token-signing key in the shard map.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bongsu_proto::internal::{
    user_event, write_reply, write_request, AddDevice, ChangeMembers, ClaimHandle,
    ConversationInfoRequest, CreateAccount, GetAccountReply, GetAccountRequest, MoveCursor,
    ResolveHandleRequest, SubscribeEvent, SubscribeRequest, UserConversationsRequest,
    WatchShardMapRequest, WriteRequest,
};
use bongsu_proto::model::{shard_of, ClientMsgId, ConvId, DeviceId, UserId};
use bongsu_proto::v1;

use crate::harness::{spec, Cluster};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, create, Failure, TestClient};
use bongsu_testkit::writers::conv_on_shard;

const SHARDS: u32 = 8;
/// How long a membership change may take to reach a member's list (eventually consistent).
const OUTBOX_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_user_index_and_signing_keys() -> Result<()> {
    bounded(Duration::from_secs(120), users("users-3x1")).await
}

fn failed(f: Failure) -> anyhow::Error {
    anyhow!("{f}")
}

/// The first user id at or after `base` whose state lives in `shard`.
fn user_on_shard(shard: u32, base: u128) -> UserId {
    (base..)
        .map(UserId::from_u128)
        .find(|u| shard_of(&u.0, SHARDS) == shard)
        .expect("FNV-1a reaches every shard within a few ids")
}

fn write(cmd: write_request::Command) -> WriteRequest {
    WriteRequest { command: Some(cmd) }
}

async fn account_write(client: &TestClient, cmd: write_request::Command) -> Result<Vec<u8>> {
    let reply = client.write(write(cmd), None).await.map_err(failed)?.reply;
    match reply.result {
        Some(write_reply::Result::UserId(u)) => Ok(u),
        other => bail!("account write answered {other:?}"),
    }
}

async fn sign_up(client: &TestClient, user: UserId, handle: &str) -> Result<()> {
    let id = account_write(
        client,
        write_request::Command::ClaimHandle(ClaimHandle {
            handle: handle.into(),
            user_id: user.0.to_vec(),
        }),
    )
    .await?;
    ensure!(id == user.0, "claim answered another user");
    account_write(
        client,
        write_request::Command::CreateAccount(CreateAccount {
            user_id: user.0.to_vec(),
            handle: handle.into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        }),
    )
    .await?;
    account_write(
        client,
        write_request::Command::AddDevice(AddDevice {
            user_id: user.0.to_vec(),
            device_id: DeviceId::from_u128(u128::from_be_bytes(user.0) + 1)
                .0
                .to_vec(),
            name: format!("{handle}'s phone"),
            kind: v1::DeviceKind::Phone as i32,
            refresh_hash: vec![7; 32],
        }),
    )
    .await?;
    Ok(())
}

async fn resolve(client: &TestClient, handle: &str) -> Result<Vec<u8>> {
    let req = ResolveHandleRequest {
        handle: handle.into(),
    };
    let r = client
        .call(None, req, |mut api, req| async move {
            api.resolve_handle(req).await
        })
        .await
        .map_err(failed)?;
    Ok(r.reply.user_id)
}

async fn account(client: &TestClient, user: UserId) -> Result<GetAccountReply> {
    let req = GetAccountRequest {
        user_id: user.0.to_vec(),
    };
    let r = client
        .call(None, req, |mut api, req| async move {
            api.get_account(req).await
        })
        .await
        .map_err(failed)?;
    Ok(r.reply)
}

/// The user's conversations with read cursors.
async fn conversations(client: &TestClient, user: UserId) -> Result<Vec<(ConvId, u64)>> {
    let req = UserConversationsRequest {
        user: user.0.to_vec(),
    };
    let r = client
        .call(None, req, |mut api, req| async move {
            api.user_conversations(req).await
        })
        .await
        .map_err(failed)?;
    r.reply
        .conversations
        .into_iter()
        .map(|c| {
            let id = ConvId::try_from(c.conv_id.as_slice()).map_err(|e| anyhow!("{e}"))?;
            Ok((id, c.read_seq))
        })
        .collect()
}

/// Polls the user's list until `pred` holds, within the outbox's allowance.
async fn wait_list(
    client: &TestClient,
    user: UserId,
    what: &str,
    pred: impl Fn(&[(ConvId, u64)]) -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let list = conversations(client, user).await?;
        if pred(&list) {
            return Ok(());
        }
        if started.elapsed() > OUTBOX_WITHIN {
            bail!("{user}'s list {what}: not within {OUTBOX_WITHIN:?}; it is {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event on the stream.
async fn next_event(stream: &mut tonic::Streaming<SubscribeEvent>) -> Result<SubscribeEvent> {
    let ev = tokio::time::timeout(OUTBOX_WITHIN, stream.message())
        .await
        .context("no event in time")??
        .context("the stream ended")?;
    ensure!(
        ev.message.is_some() == ev.user_events.is_empty(),
        "an event with both parts or neither: {ev:?}"
    );
    Ok(ev)
}

/// The next user event on a user's shard stream (one per entry there), skipping messages.
async fn next_user_event(
    stream: &mut tonic::Streaming<SubscribeEvent>,
) -> Result<(u64, bongsu_proto::internal::UserEvent)> {
    loop {
        let mut ev = next_event(stream).await?;
        if let Some(u) = ev.user_events.pop() {
            ensure!(
                ev.user_events.is_empty(),
                "several user events in one entry of a user's shard: {ev:?}"
            );
            return Ok((ev.log_index, u));
        }
    }
}

async fn users(name: &str) -> Result<()> {
    let mut cluster = Cluster::start(name, spec(3, 1).shards(SHARDS)).await?;
    let client = cluster.client()?.with_deadline(Duration::from_secs(10));
    // Three users and their conversation on four different shards, so that deliveries cross
    // shards, and the conversation's shard led by another node than Alice's, so that at least
    // one delivery goes node to node.
    let alice = user_on_shard(0, 1_000);
    let bob = user_on_shard(1, 2_000);
    let carol = user_on_shard(2, 3_000);
    let leaders = cluster.wait_all_leaders(Duration::from_secs(10)).await?;
    let leader = |s: u32| {
        leaders
            .get(&crate::harness::shard_group(s))
            .map(|l| l.leader)
    };
    let conv_shard = (3..SHARDS)
        .find(|s| leader(*s) != leader(0))
        .context("every shard is led by one node")?;
    let conv = conv_on_shard(conv_shard, SHARDS, 4_000);

    // Accounts.
    sign_up(&client, alice, "Alice").await?;
    sign_up(&client, bob, "bob").await?;
    sign_up(&client, carol, "carol_k").await?;
    // A retried sign-up is harmless.
    sign_up(&client, bob, "bob").await?;
    let taken = client
        .write(
            write(write_request::Command::ClaimHandle(ClaimHandle {
                handle: "ALICE".into(),
                user_id: bob.0.to_vec(),
            })),
            None,
        )
        .await;
    ensure!(
        matches!(&taken, Err(f) if f.code == "HANDLE_TAKEN"),
        "claiming a taken handle: {taken:?}"
    );
    for bad in [
        write_request::Command::ClaimHandle(ClaimHandle {
            handle: "a b".into(),
            user_id: bob.0.to_vec(),
        }),
        write_request::Command::AddDevice(AddDevice {
            user_id: bob.0.to_vec(),
            device_id: vec![9; 16],
            name: "tablet".into(),
            kind: v1::DeviceKind::Unspecified as i32,
            refresh_hash: vec![7; 32],
        }),
        write_request::Command::AddDevice(AddDevice {
            user_id: bob.0.to_vec(),
            device_id: vec![9; 16],
            name: "tablet".into(),
            kind: v1::DeviceKind::Tablet as i32,
            refresh_hash: vec![7; 31],
        }),
    ] {
        let r = client.write(write(bad.clone()), None).await;
        ensure!(
            matches!(&r, Err(f) if f.code == "INVALID_ARGUMENT"),
            "{bad:?}: {r:?}"
        );
    }
    ensure!(
        resolve(&client, " alice ").await? == alice.0,
        "resolve alice"
    );
    ensure!(
        resolve(&client, "nobody_here").await?.is_empty(),
        "an unknown handle resolved"
    );
    let a = account(&client, alice).await?;
    ensure!(a.found && a.handle == "alice", "alice's account: {a:?}");
    ensure!(a.password_hash.starts_with("$argon2id$"), "password hash");
    ensure!(
        a.devices.len() == 1
            && a.devices[0].kind == v1::DeviceKind::Phone as i32
            && a.devices[0].refresh_hash == vec![7; 32]
            && !a.devices[0].revoked,
        "alice's devices: {:?}",
        a.devices
    );
    let nobody = account(&client, UserId::from_u128(u128::MAX)).await?;
    ensure!(!nobody.found && nobody.handle.is_empty(), "{nobody:?}");

    // Alice's shard, followed from now on.
    let api = cluster.node(cluster.ids()[0]).api_addr.clone();
    let mut api = bongsu_testkit::chat::node_api(&api)?;
    let mut alice_events = api
        .subscribe(SubscribeRequest {
            shard: 0,
            after_index: 0,
            from_latest: true,
        })
        .await?
        .into_inner();

    // A group of three: every member's list shows it.
    client
        .write(
            create(conv, v1::ConversationKind::Group, alice, &[bob, carol]),
            None,
        )
        .await
        .map_err(failed)?;
    for u in [alice, bob, carol] {
        wait_list(&client, u, "shows the new group", |l| {
            l.iter().any(|(c, _)| *c == conv)
        })
        .await?;
    }
    let (joined_at, joined) = next_user_event(&mut alice_events).await?;
    ensure!(
        joined.kind == user_event::Kind::Joined as i32
            && joined.user == alice.0
            && joined.conv_id == conv.0,
        "first user event: {joined:?}"
    );

    // Alice reads the first message: her list and her shard's stream show the cursor.
    client
        .write(append(conv, bob, ClientMsgId::from_u128(1), "hi all"), None)
        .await
        .map_err(failed)?;
    client
        .write(
            write(write_request::Command::MoveCursor(MoveCursor {
                user: alice.0.to_vec(),
                conv_id: conv.0.to_vec(),
                seq: 1,
            })),
            None,
        )
        .await
        .map_err(failed)?;
    let (read_at, read) = next_user_event(&mut alice_events).await?;
    ensure!(
        read.kind == user_event::Kind::Read as i32 && read.seq == 1 && read_at > joined_at,
        "second user event: {read:?} at {read_at}"
    );
    ensure!(
        conversations(&client, alice).await? == vec![(conv, 1)],
        "alice's cursor in her list"
    );

    // The conversation's header, as Bob sees it.
    let unknown = conv_on_shard(conv_shard, SHARDS, 9_000);
    let req = ConversationInfoRequest {
        conv_ids: vec![conv.0.to_vec(), unknown.0.to_vec()],
        user: bob.0.to_vec(),
        with_members: true,
    };
    let info = client
        .call(None, req, |mut api, req| async move {
            api.conversation_info(req).await
        })
        .await
        .map_err(failed)?
        .reply;
    let i = info.infos.first().context("no info")?;
    ensure!(
        i.found
            && i.kind == v1::ConversationKind::Group as i32
            && i.owner == alice.0
            && i.member_count == 3
            && i.last_seq == 1
            && i.role == "member"
            && i.last_message.as_ref().map(|m| m.body.as_slice()) == Some(b"hi all".as_slice())
            && i.members.len() == 3
            && i.members
                .iter()
                .any(|m| m.user == alice.0 && m.role == "owner"),
        "conversation info: {i:?}"
    );
    ensure!(
        info.infos.len() == 2 && !info.infos[1].found && info.infos[1].conv_id == unknown.0,
        "an unknown conversation: {:?}",
        info.infos.get(1)
    );
    let mixed = ConversationInfoRequest {
        conv_ids: vec![conv.0.to_vec(), conv_on_shard(6, SHARDS, 4_000).0.to_vec()],
        user: bob.0.to_vec(),
        with_members: false,
    };
    let r = client
        .call(None, mixed, |mut api, req| async move {
            api.conversation_info(req).await
        })
        .await;
    ensure!(
        matches!(&r, Err(f) if f.code == "INVALID_ARGUMENT"),
        "ids of two shards: {r:?}"
    );

    // Carol is removed: it leaves her list, and only hers. The conversation's shard streams
    // her LEFT at the removal's own index, before the message sent right after it, and her
    // shard's LEFT (from the outbox) carries that index as its version too.
    let subscribe = |shard| {
        let mut api = api.clone();
        async move {
            let req = SubscribeRequest {
                shard,
                after_index: 0,
                from_latest: true,
            };
            anyhow::Ok(api.subscribe(req).await?.into_inner())
        }
    };
    let mut conv_events = subscribe(conv_shard).await?;
    let mut carol_events = subscribe(shard_of(&carol.0, SHARDS)).await?;
    client
        .write(
            write(write_request::Command::ChangeMembers(ChangeMembers {
                conv_id: conv.0.to_vec(),
                actor: alice.0.to_vec(),
                add: vec![],
                remove: vec![carol.0.to_vec()],
            })),
            None,
        )
        .await
        .map_err(failed)?;
    client
        .write(append(conv, bob, ClientMsgId::from_u128(2), "bye"), None)
        .await
        .map_err(failed)?;
    // A replica that lags may start its stream "from latest" before "hi all": skip that.
    let removal = loop {
        let ev = next_event(&mut conv_events).await?;
        match &ev.message {
            Some(m) if m.seq == 1 => {}
            _ => break ev,
        }
    };
    let left_as = |u: &bongsu_proto::internal::UserEvent, version: u64| {
        u.kind == user_event::Kind::Left as i32
            && u.user == carol.0
            && u.conv_id == conv.0
            && u.seq == version
    };
    ensure!(
        removal.user_events.len() == 1 && left_as(&removal.user_events[0], removal.log_index),
        "the conversation's stream after the removal: {removal:?}"
    );
    let bye = next_event(&mut conv_events).await?;
    ensure!(
        bye.log_index > removal.log_index && bye.message.as_ref().is_some_and(|m| m.seq == 2),
        "the message after the removal: {bye:?}"
    );
    // Likewise Carol's JOINED, from when the group was created.
    let left = loop {
        let (_, u) = next_user_event(&mut carol_events).await?;
        if u.kind != user_event::Kind::Joined as i32 {
            break u;
        }
    };
    ensure!(
        left_as(&left, removal.log_index),
        "carol's shard's LEFT, version {}: {left:?}",
        removal.log_index
    );
    wait_list(&client, carol, "drops the group", |l| {
        !l.iter().any(|(c, _)| *c == conv)
    })
    .await?;
    for u in [alice, bob] {
        ensure!(
            conversations(&client, u)
                .await?
                .iter()
                .any(|(c, _)| *c == conv),
            "{u} lost the group"
        );
    }

    // The meta leader added a signing key; the shard map carries it.
    let mut maps = api
        .watch_shard_map(WatchShardMapRequest {})
        .await?
        .into_inner();
    let started = Instant::now();
    loop {
        let map = tokio::time::timeout(OUTBOX_WITHIN, maps.message())
            .await
            .context("no shard map in time")??
            .context("the map stream ended")?;
        if let Some(k) = map.signing_keys.iter().find(|k| k.retired_at_ms == 0) {
            ensure!(
                k.seed.len() == 32 && k.public_key.len() == 32 && !k.kid.is_empty(),
                "signing key {}: seed {} bytes, public {} bytes",
                k.kid,
                k.seed.len(),
                k.public_key.len()
            );
            break;
        }
        ensure!(
            started.elapsed() < OUTBOX_WITHIN,
            "no signing key in the shard map"
        );
    }
    cluster.pass();
    Ok(())
}
