//! Messaging end to end on a healthy cluster: conversations on many shards, appends entering
//! through every node, linearizable reads, idempotent retries, stable error codes, and every
//! group's voters spread over three datacenters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bongsu_proto::internal::{write_reply, ReadRequest};
use bongsu_proto::model::{shard_of, ClientMsgId, ConvId, UserId};
use bongsu_proto::{v1, ErrorCode};
use rand::seq::SliceRandom;

use crate::harness::{plain, shard_group, spec, Cluster, Spec, META_GROUP};
use bongsu_testkit::bounded;
use bongsu_testkit::client::{append, appended, create, read_from};
use bongsu_testkit::writers::conv_on_shard;

/// Messages appended to each conversation.
const MESSAGES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_three_dcs_one_node_each() -> Result<()> {
    bounded(
        Duration::from_secs(90),
        messaging("basic-3x1", spec(3, 1).shards(8)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_three_dcs_two_nodes_each() -> Result<()> {
    bounded(
        Duration::from_secs(90),
        messaging("basic-3x2", spec(3, 2).shards(16)),
    )
    .await
}

struct Conv {
    id: ConvId,
    kind: v1::ConversationKind,
    members: Vec<UserId>,
}

/// What a test expects a conversation to hold: per seq, the sender, client message id and body.
type Expected = Vec<(UserId, ClientMsgId, String)>;

fn expect_code<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, bongsu_testkit::client::Failure>,
    code: ErrorCode,
) -> Result<()> {
    match r {
        Err(f) if f.code == code.as_str() => Ok(()),
        other => anyhow::bail!("{what}: expected {code}, got {other:?}"),
    }
}

async fn messaging(name: &str, spec: Spec) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(name, spec).await?;
    let shards = cluster.spec.shards;
    let client = cluster.client()?;
    let ids = client.node_ids();

    check_voter_spread(&mut cluster).await?;

    // Six conversations on six distinct shards: four groups and two direct chats.
    let users: Vec<UserId> = (1..=6)
        .map(|i| UserId::from_u128(0x05e2_0000 + i))
        .collect();
    let mut used = BTreeSet::new();
    let mut convs = Vec::new();
    for (i, shard) in (0..shards)
        .step_by((shards as usize / 6).max(1))
        .take(6)
        .enumerate()
    {
        let id = conv_on_shard(shard, shards, 0xc0_0000_0000 + (i as u128) * 0x1_0000);
        used.insert(shard_of(&id.0, shards));
        let (kind, members) = if i < 4 {
            (
                v1::ConversationKind::Group,
                vec![users[i], users[(i + 1) % 6], users[(i + 2) % 6], users[5]],
            )
        } else {
            (
                v1::ConversationKind::Direct,
                vec![users[i], users[(i + 3) % 6]],
            )
        };
        convs.push(Conv { id, kind, members });
    }
    ensure!(used.len() >= 4, "conversations cover only shards {used:?}");

    // Each write enters through a random node: a shuffled deck of the nodes, dealt one per
    // write, so every node is an entry point equally often.
    let mut deck: Vec<u64> = Vec::new();
    let mut next_entry = || {
        if deck.is_empty() {
            deck = ids.clone();
            deck.shuffle(&mut rand::rng());
        }
        deck.pop()
    };
    for c in &convs {
        let r = client
            .write(
                create(c.id, c.kind, c.members[0], &c.members[1..]),
                next_entry(),
            )
            .await?;
        ensure!(
            r.reply.result == Some(write_reply::Result::Created(true)),
            "create {}: {:?}",
            c.id,
            r.reply
        );
        ensure!(
            r.reply.shard == shard_of(&c.id.0, shards),
            "create {} went to shard {}",
            c.id,
            r.reply.shard
        );
    }

    // Appends, interleaved over the conversations, each entering through the next node in turn
    // and reaching the shard leader by following hints.
    let mut expected: BTreeMap<ConvId, Expected> = BTreeMap::new();
    let mut answered_by: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut followed_hint = 0;
    let leaders_before = cluster.leaders().await;
    for n in 0..MESSAGES {
        for (ci, c) in convs.iter().enumerate() {
            let sender = c.members[n % c.members.len()];
            let cmid = ClientMsgId::from_u128(((ci as u128) << 64) | n as u128 | 0xfeed_0000_0000);
            let body = format!("conv {ci} message {n} from {sender} ✉");
            let r = client
                .write(append(c.id, sender, cmid, &body), next_entry())
                .await
                .with_context(|| format!("append {n} to conv {ci}"))?;
            let a = appended(&r.reply)
                .with_context(|| format!("append {n} to conv {ci}: {:?}", r.reply))?;
            ensure!(
                !a.duplicate && a.seq == n as u64 + 1,
                "append {n} to conv {ci}: got seq {} duplicate {}",
                a.seq,
                a.duplicate
            );
            answered_by.entry(r.reply.shard).or_default().insert(r.node);
            if r.attempts > 1 {
                followed_hint += 1;
            }
            expected.entry(c.id).or_default().push((sender, cmid, body));
        }
    }
    let appends = convs.len() * MESSAGES;
    ensure!(
        followed_hint > 0 && followed_hint < appends,
        "{followed_hint} of {appends} writes needed a second node"
    );
    // Every write was answered by its shard's leader: where leadership did not move meanwhile
    // (nothing is harmed here, but a rebalancer may move leaders), by that one node.
    let leaders_after = cluster.leaders().await;
    for (shard, nodes) in &answered_by {
        let g = shard_group(*shard);
        let (Some(before), Some(after)) = (leaders_before.get(&g), leaders_after.get(&g)) else {
            continue;
        };
        if before.leader == after.leader && before.status.term == after.status.term {
            ensure!(
                nodes.len() == 1 && nodes.contains(&after.leader),
                "shard {shard}: answered by {nodes:?}, led by {}",
                after.leader
            );
        }
    }

    // Read everything back through any node, as a member.
    for (ci, c) in convs.iter().enumerate() {
        let reader = *c.members.last().expect("conversations have members");
        let msgs = client
            .read_all(c.id, reader, next_entry())
            .await
            .with_context(|| format!("read conv {ci}"))?;
        check_messages(c.id, &msgs, &expected[&c.id]).with_context(|| format!("conv {ci}"))?;
    }

    // Pages: from a seq forwards, and the newest before a seq, both in seq order.
    let c0 = &convs[0];
    let page = client
        .read(read_from(c0.id, c0.members[1], 3, 2), next_entry())
        .await?
        .reply;
    ensure!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [3, 4],
        "from_seq 3 limit 2: {:?}",
        page.messages
    );
    ensure!(
        page.last_seq == MESSAGES as u64,
        "last_seq {}",
        page.last_seq
    );
    let before = ReadRequest {
        conv_id: c0.id.0.to_vec(),
        user: c0.members[1].0.to_vec(),
        from_seq: 0,
        before_seq: 6,
        limit: 2,
    };
    let page = client.read(before, next_entry()).await?.reply;
    ensure!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [4, 5],
        "before_seq 6 limit 2: {:?}",
        page.messages
    );

    // A retried send (same sender and client message id) through another node returns the
    // original seq, marked duplicate, and adds nothing.
    for (ci, c) in convs.iter().enumerate() {
        let (sender, cmid, body) = expected[&c.id][2].clone();
        let r = client
            .write(append(c.id, sender, cmid, &body), next_entry())
            .await?;
        let a = appended(&r.reply).context("retried append")?;
        ensure!(
            a.seq == 3 && a.duplicate,
            "conv {ci}: retry gave seq {} duplicate {}",
            a.seq,
            a.duplicate
        );
    }
    let msgs = client.read_all(c0.id, c0.members[0], None).await?;
    check_messages(c0.id, &msgs, &expected[&c0.id]).context("conv 0 after retries")?;

    // Stable codes: non-members, unknown conversations, a direct chat of three.
    let outsider = UserId::from_u128(0x0bad);
    let stray = ClientMsgId::from_u128(0x0bad);
    for c in &convs {
        expect_code(
            "non-member append",
            client
                .write(append(c.id, outsider, stray, "hi"), next_entry())
                .await,
            ErrorCode::NotMember,
        )?;
        expect_code(
            "non-member read",
            client
                .read(read_from(c.id, outsider, 1, 10), next_entry())
                .await,
            ErrorCode::NotMember,
        )?;
    }
    let unknown = (0..)
        .map(|i| ConvId::from_u128(0xdead_0000 + i))
        .find(|id| !convs.iter().any(|c| c.id == *id))
        .expect("ids");
    expect_code(
        "append to unknown",
        client
            .write(append(unknown, users[0], stray, "hi"), next_entry())
            .await,
        ErrorCode::UnknownConversation,
    )?;
    expect_code(
        "read of unknown",
        client
            .read(read_from(unknown, users[0], 1, 10), next_entry())
            .await,
        ErrorCode::UnknownConversation,
    )?;
    let three = create(
        unknown,
        v1::ConversationKind::Direct,
        users[0],
        &users[1..3],
    );
    expect_code(
        "direct chat of three",
        client.write(three, next_entry()).await,
        ErrorCode::InvalidMembers,
    )?;
    // Rejections change nothing.
    let msgs = client.read_all(c0.id, c0.members[0], None).await?;
    check_messages(c0.id, &msgs, &expected[&c0.id]).context("conv 0 after rejected writes")?;
    expect_code(
        "unknown after a rejected create",
        client.read(read_from(unknown, users[0], 1, 10), None).await,
        ErrorCode::UnknownConversation,
    )?;

    check_voter_spread(&mut cluster).await?;
    check_hints(&mut cluster).await?;
    eprintln!(
        "{name}: {} conversations on {} shards, {} appends ({followed_hint} followed a hint), checked in {} ms",
        convs.len(),
        used.len(),
        appends,
        started.elapsed().as_millis()
    );
    cluster.pass();
    Ok(())
}

/// Dense seqs from 1, in order, with the expected sender, client message id and body.
fn check_messages(conv: ConvId, msgs: &[v1::Message], expected: &Expected) -> Result<()> {
    ensure!(
        msgs.len() == expected.len(),
        "{} messages, expected {}",
        msgs.len(),
        expected.len()
    );
    for (i, (m, (sender, cmid, body))) in msgs.iter().zip(expected).enumerate() {
        ensure!(m.seq == i as u64 + 1, "message {i} has seq {}", m.seq);
        ensure!(m.conv_id == conv.0, "seq {}: conv {:?}", m.seq, m.conv_id);
        ensure!(
            m.sender == sender.0 && m.client_msg_id == cmid.0,
            "seq {}: sender or client_msg_id differ",
            m.seq
        );
        ensure!(
            m.body == body.as_bytes(),
            "seq {}: body {:?}, expected {body:?}",
            m.seq,
            String::from_utf8_lossy(&m.body)
        );
        ensure!(
            m.kind == v1::MessageKind::Text as i32 && m.sent_at_ms > 0,
            "seq {}: kind {} sent_at {}",
            m.seq,
            m.kind,
            m.sent_at_ms
        );
    }
    Ok(())
}

/// Every group (meta included) has `replicas` voters, each in a different datacenter, as its
/// leader sees it; and every node reports the datacenter the harness gave it.
async fn check_voter_spread(cluster: &mut Cluster) -> Result<()> {
    let replicas = cluster.spec.replicas as usize;
    for (id, st) in cluster.statuses().await {
        let map = st.map.as_ref().context("status without a shard map")?;
        for n in &map.nodes {
            ensure!(
                n.dc == cluster.node(n.node_id).dc_name(),
                "node {id} places node {} in {}",
                n.node_id,
                n.dc
            );
        }
        ensure!(
            map.nodes.len() == cluster.nodes.len(),
            "node {id} knows {} nodes",
            map.nodes.len()
        );
    }
    let leaders = cluster.wait_all_leaders(Duration::from_secs(10)).await?;
    for group in cluster.all_groups() {
        let voters = &leaders[&group].status.voters;
        let dcs: BTreeSet<u8> = voters.iter().map(|v| cluster.dc_of(*v)).collect();
        let label = if group == META_GROUP {
            "meta".to_string()
        } else {
            format!("shard {}", group - 1)
        };
        ensure!(
            voters.len() == replicas && dcs.len() == replicas,
            "{label}: voters {voters:?} in {dcs:?}"
        );
    }
    Ok(())
}

/// Asked directly (no retries), every replica of a shard that is not its leader answers
/// `NOT_LEADER` with the leader's internal API address; a node that does not host the shard
/// answers `NOT_LEADER` too, with or without a hint.
async fn check_hints(cluster: &mut Cluster) -> Result<()> {
    let shards = cluster.spec.shards;
    let probe = cluster.client()?.with_deadline(Duration::ZERO);
    cluster.wait_settled(Duration::from_secs(10)).await?;
    let leaders = cluster.wait_all_leaders(Duration::from_secs(10)).await?;
    let mut unhinted = Vec::new();
    for shard in 0..shards {
        let led = &leaders[&shard_group(shard)];
        let leader_api = cluster.node(led.leader).api_addr.clone();
        let conv = conv_on_shard(shard, shards, 0x4141_0000);
        let req = read_from(conv, UserId::from_u128(1), 1, 1);
        for id in cluster.ids().into_iter().filter(|id| *id != led.leader) {
            let f = match probe.read(req.clone(), Some(id)).await {
                Ok(a) => anyhow::bail!(
                    "shard {shard}: node {id} answered a read though node {} leads: {:?}",
                    led.leader,
                    a.reply
                ),
                Err(f) => f,
            };
            ensure!(
                f.code == ErrorCode::NotLeader.as_str() && f.node == id,
                "shard {shard}: node {id} answered {f}"
            );
            let hosts = led.status.voters.contains(&id) || led.status.learners.contains(&id);
            match (&f.leader_hint, hosts) {
                (Some(h), _) => ensure!(
                    *h == leader_api,
                    "shard {shard}: node {id} hints {h}, leader {} is at {leader_api}",
                    led.leader
                ),
                (None, true) => anyhow::bail!("shard {shard}: replica {id} gave no leader hint"),
                (None, false) => unhinted.push((shard, id)),
            }
        }
    }
    if !unhinted.is_empty() {
        eprintln!(
            "note: nodes that do not host a shard give no leader hint (shard, node): {unhinted:?}"
        );
    }
    Ok(())
}

/// The plain `bongsu-node` (what `make run` and operators run) forms a cluster and serves, and
/// refuses to switch on failpoints or network fault rules: those work only in
/// `bongsu-node-chaos`, which every other cluster test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_node_refuses_failpoints_and_fault_rules() -> Result<()> {
    bounded(Duration::from_secs(90), async {
        let mut cluster = Cluster::start("plain", plain(spec(3, 1).shards(2))).await?;
        let client = cluster.client()?;
        let conv = conv_on_shard(0, 2, 0x91a1_0000);
        let sender = UserId::from_u128(0x91a1);
        client
            .write(create(conv, v1::ConversationKind::Group, sender, &[]), None)
            .await
            .context("create a conversation on the plain node")?;
        let r = client
            .write(
                append(conv, sender, ClientMsgId::from_u128(1), "plain"),
                None,
            )
            .await
            .context("append on the plain node")?;
        ensure!(
            appended(&r.reply).is_some_and(|a| a.seq == 1),
            "{:?}",
            r.reply
        );
        for node in cluster.ids() {
            let mut admin = cluster.admin_client(node, Duration::from_secs(5))?;
            let fp = admin
                .set_failpoint(bongsu_proto::internal::SetFailpointRequest {
                    name: "log_before_fsync".into(),
                    enabled: true,
                })
                .await;
            let faults = admin
                .set_faults(bongsu_proto::internal::SetFaultsRequest {
                    rules: vec![bongsu_proto::internal::FaultRule {
                        dc: "dc2".into(),
                        direction: "both".into(),
                        action: "drop".into(),
                        delay_ms: 0,
                    }],
                })
                .await;
            for (what, r) in [("SetFailpoint", fp.err()), ("SetFaults", faults.err())] {
                let s = r.with_context(|| format!("node {node} accepted {what}"))?;
                ensure!(
                    s.code() == tonic::Code::FailedPrecondition
                        && ErrorCode::of_status(&s) == Some(ErrorCode::FailedPrecondition),
                    "node {node}: {what} answered {:?} {}",
                    s.code(),
                    s.message()
                );
            }
        }
        // Nothing was switched on: writes still go through.
        let r = client
            .write(
                append(conv, sender, ClientMsgId::from_u128(2), "still"),
                None,
            )
            .await
            .context("append after the refused calls")?;
        ensure!(
            appended(&r.reply).is_some_and(|a| a.seq == 2),
            "{:?}",
            r.reply
        );
        cluster.pass();
        Ok(())
    })
    .await
}
