//! The outbox pump: delivers a conversation shard's membership changes to the shards of the
//! users they concern (see `bongsu_raft_store::messaging::outbox` for the state side).
//!
//! Only the leader of a shard pumps its outbox. Apply marks a group in the store's
//! [`GroupSignal`] when it adds entries (the messaging machine is what flags it), so the pump
//! looks only at groups with something to deliver: an idle group is never read, woken or
//! written. A marked group whose leader is elsewhere stays marked and is looked at again every
//! second (one leadership check and one seek), so that a replica that becomes leader picks up
//! what its predecessor left.
//!
//! Each delivery becomes a `UserConv` command in the user's shard: proposed here when this
//! node leads that shard, else sent to its leader over the admin API's `Deliver` (node to
//! node only, never reachable from gateways), following `NOT_LEADER` hints. Delivered entries
//! are then deleted with `OutboxDone`. A crash between the two repeats a delivery, which the
//! user's shard ignores by version.
//!
//! Deliveries go per destination: a user shard whose delivery failed is left out of the next
//! rounds for its own backoff ([`Blocked`]), and the rounds go on delivering to the others
//! past its entries (the user's shard orders what it gets by version, so skipping ahead
//! reorders nothing that matters).
//!
//! [`GroupSignal`]: bongsu_raft_store::GroupSignal

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bongsu_proto::internal::admin_client::AdminClient;
use bongsu_proto::internal::{DeliverRequest, Delivery};
use bongsu_proto::model::{shard_of, ConvId, UserId};
use bongsu_proto::tls::{Role, Security};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::messaging::{OutboxDone, PendingDelivery, UserConv};
use bongsu_raft_store::meta::shard_group;
use bongsu_raft_store::{Command, CommandResult, GroupId, NodeId};
use futures::future::join_all;
use tonic::transport::Channel;

use crate::errors::{NodeError, Result, LEADER_ID_KEY};
use crate::node::{GroupHandle, Node};

/// Outbox entries read and delivered per round.
const BATCH: usize = 256;
/// Outbox entries one round looks at, at most, to find [`BATCH`] for reachable destinations.
const SCAN: usize = 16 * BATCH;
/// How often marked groups this node does not lead are looked at again.
const RECHECK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Leader hints followed per delivery attempt before backing off.
const MAX_HOPS: usize = 4;

/// One delivery, validated: what the user's shard applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserConvChange {
    pub user: UserId,
    pub conv: ConvId,
    pub joined: bool,
    pub version: u64,
}

impl From<&PendingDelivery> for UserConvChange {
    fn from(p: &PendingDelivery) -> Self {
        Self {
            user: p.user,
            conv: p.entry.conv,
            joined: p.entry.joined,
            version: p.log_index,
        }
    }
}

/// Admin clients by address, connected lazily and reused across deliveries.
struct Clients(Security, Mutex<HashMap<String, AdminClient<Channel>>>);

impl Clients {
    fn get(&self, addr: &str) -> Result<AdminClient<Channel>> {
        let mut map = self.1.lock().expect("admin clients lock poisoned");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = Security::endpoint(addr)
            .map_err(|e| NodeError::Unavailable(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5));
        let c = AdminClient::new(self.0.channel(ep, &Role::any_node()));
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(run(node));
}

async fn run(node: Arc<Node>) {
    let signal = || node.store.group_signal();
    // Entries left by an earlier run of this process were marked in its memory only.
    for h in node.groups() {
        match h.messaging().outbox_is_empty() {
            Ok(true) => {}
            Ok(false) => signal().mark(h.group),
            Err(e) => tracing::error!(group = h.group, error = %e, "read outbox"),
        }
    }
    let clients = Arc::new(Clients(node.security.clone(), Mutex::default()));
    let mut pumps: HashMap<GroupId, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = signal().marked() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
        pumps.retain(|_, t| !t.is_finished());
        for g in signal().dirty() {
            if pumps.contains_key(&g) {
                continue;
            }
            let Some(h) = node.group(g) else {
                // Not hosted here any more; whoever hosts it pumps it.
                signal().clear(g);
                continue;
            };
            if node.leading(g).is_ok() {
                let task = tokio::spawn(pump(node.clone(), h, clients.clone()));
                pumps.insert(g, task);
            } else {
                settle(&node, &h);
            }
        }
    }
}

/// Clears the group's mark if its outbox is empty. Clearing comes before the check: an apply
/// that adds entries in between marks the group again, so no mark is lost. A group still
/// holding entries stays marked *without* a wake-up (`keep`): its leader drains it, and waking
/// the loop here would make it re-read the same group at once, forever.
fn settle(node: &Node, h: &GroupHandle) -> bool {
    let signal = node.store.group_signal();
    signal.clear(h.group);
    match h.messaging().outbox_is_empty() {
        Ok(true) => true,
        Ok(false) => {
            signal.keep(h.group);
            false
        }
        Err(e) => {
            tracing::error!(group = h.group, error = %e, "read outbox");
            signal.keep(h.group);
            false
        }
    }
}

/// Destinations (user shards) whose last delivery failed: each is left out of the rounds
/// until its own backoff has passed, so that one unreachable shard does not hold back the
/// deliveries to every other (no head-of-line blocking). A destination stays listed, with its
/// backoff, until a delivery to it succeeds, so one that keeps failing waits longer each time.
#[derive(Default)]
pub struct Blocked(HashMap<u32, (Instant, Duration)>);

impl Blocked {
    /// Whether `shard` is still left out at `now`.
    pub fn is_blocked(&self, shard: u32, now: Instant) -> bool {
        self.0.get(&shard).is_some_and(|(until, _)| *until > now)
    }

    /// A delivery to `shard` failed: left out for twice as long as last time (from
    /// [`BACKOFF_MIN`] to [`BACKOFF_MAX`]).
    pub fn failed(&mut self, shard: u32, now: Instant) {
        let backoff = self
            .0
            .get(&shard)
            .map_or(BACKOFF_MIN, |(_, b)| (*b * 2).min(BACKOFF_MAX));
        self.0.insert(shard, (now + backoff, backoff));
    }

    /// A delivery to `shard` succeeded: its backoff starts over.
    pub fn delivered(&mut self, shard: u32) {
        self.0.remove(&shard);
    }

    /// When the first destination left out at `now` may be tried again.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.0
            .values()
            .map(|(until, _)| *until)
            .filter(|until| *until > now)
            .min()
    }
}

/// Delivers the group's outbox while this node leads it and something is in it.
#[tracing::instrument(skip_all, fields(node_id = node.id(), group_id = h.group))]
async fn pump(node: Arc<Node>, h: GroupHandle, clients: Arc<Clients>) {
    let mut blocked = Blocked::default();
    let mut error_backoff = BACKOFF_MIN;
    loop {
        if node.leading(h.group).is_err() {
            return; // the group stays marked; its new leader pumps
        }
        match round(&node, &h, &clients, &mut blocked).await {
            Ok(Round::Empty) => {
                if settle(&node, &h) {
                    return;
                }
            }
            Ok(Round::Delivered) => error_backoff = BACKOFF_MIN,
            Ok(Round::AllBlocked) => {
                let now = Instant::now();
                let until = blocked.next_retry(now).unwrap_or(now + BACKOFF_MIN);
                tokio::time::sleep_until(until.into()).await;
            }
            Err(_) => {
                tokio::time::sleep(error_backoff).await;
                error_backoff = (error_backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

enum Round {
    Empty,
    /// Every destination looked at was tried (some may have failed and are now blocked).
    Delivered,
    /// Entries wait, but only for destinations that are blocked.
    AllBlocked,
}

async fn round(
    node: &Node,
    h: &GroupHandle,
    clients: &Clients,
    blocked: &mut Blocked,
) -> Result<Round> {
    let shards = node.shard_count()?;
    let now = Instant::now();
    let pending = h.messaging().outbox_skipping(BATCH, SCAN, |u| {
        blocked.is_blocked(shard_of(&u.0, shards), now)
    })?;
    if pending.is_empty() {
        return Ok(if h.messaging().outbox_is_empty()? {
            Round::Empty
        } else {
            Round::AllBlocked
        });
    }
    let mut by_shard: BTreeMap<u32, Vec<&PendingDelivery>> = BTreeMap::new();
    for p in &pending {
        by_shard
            .entry(shard_of(&p.user.0, shards))
            .or_default()
            .push(p);
    }
    let results = join_all(by_shard.iter().map(|(shard, items)| async move {
        let changes: Vec<UserConvChange> = items.iter().map(|p| UserConvChange::from(*p)).collect();
        (
            *shard,
            items,
            deliver(node, clients, *shard, &changes).await,
        )
    }))
    .await;
    let mut delivered = Vec::new();
    for (shard, items, r) in results {
        match r {
            Ok(()) => {
                blocked.delivered(shard);
                delivered.extend(items.iter().map(|p| (p.log_index, p.user)));
            }
            Err(e) => {
                tracing::debug!(shard, error = %e, "outbox delivery failed; will retry");
                blocked.failed(shard, Instant::now());
            }
        }
    }
    if !delivered.is_empty() {
        let n = delivered.len();
        match node
            .write_local(h.group, Command::OutboxDone(OutboxDone { delivered }))
            .await?
        {
            (CommandResult::OutboxCleared { .. }, _) => {
                tracing::debug!(entries = n, "outbox delivered")
            }
            (other, _) => {
                return Err(NodeError::Raft(format!(
                    "unexpected OutboxDone result {other:?}"
                )))
            }
        }
    }
    Ok(Round::Delivered)
}

/// Delivers changes for users of one shard: locally when this node leads it, else to its
/// leader.
async fn deliver(
    node: &Node,
    clients: &Clients,
    shard: u32,
    changes: &[UserConvChange],
) -> Result<()> {
    // Chaos builds only: a test holds deliveries back to see what does not depend on them.
    if let Some(d) = bongsu_raft_store::failpoints::outbox_delay() {
        tokio::time::sleep(d).await;
    }
    let group = shard_group(shard);
    if node.leading(group).is_ok() {
        return node.apply_deliveries(shard, changes).await;
    }
    let req = DeliverRequest {
        shard,
        deliveries: changes
            .iter()
            .map(|c| Delivery {
                user: c.user.0.to_vec(),
                conv_id: c.conv.0.to_vec(),
                joined: c.joined,
                version: c.version,
            })
            .collect(),
    };
    let meta = node.meta();
    // Who to ask: the leader this node knows of, then the shard's voters in map order
    // (the preferred leader first), each replaced by the leader it names.
    let mut candidates: Vec<NodeId> = node
        .leader_of(group)
        .map(|(id, _)| id)
        .into_iter()
        .collect();
    if let Some(s) = meta.shards.get(shard as usize) {
        candidates.extend(s.voters.iter().filter(|v| node.is_live(**v)));
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(*c));
    let mut last = NodeError::Unavailable(format!("shard {shard} has no known leader"));
    let mut hops = 0;
    let mut queue = candidates
        .into_iter()
        .collect::<std::collections::VecDeque<_>>();
    while let Some(target) = queue.pop_front() {
        if hops >= MAX_HOPS {
            break;
        }
        hops += 1;
        if target == node.id() {
            // The map names this node, but it does not lead the shard (checked above).
            continue;
        }
        let Some(addr) = meta.node(target).map(|n| n.admin_addr.clone()) else {
            continue;
        };
        match clients.get(&addr)?.deliver(req.clone()).await {
            Ok(_) => return Ok(()),
            Err(s) => {
                let hint = s
                    .metadata()
                    .get(LEADER_ID_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<NodeId>().ok());
                if let Some(leader) = hint.filter(|l| *l != target) {
                    queue.push_front(leader);
                }
                last = NodeError::from_status(&s);
            }
        }
    }
    Err(last)
}

impl Node {
    /// Applies outbox deliveries to a user shard this node leads: one `UserConv` command each,
    /// proposed together so that they share the group commit.
    pub async fn apply_deliveries(&self, shard: u32, changes: &[UserConvChange]) -> Result<()> {
        let shards = self.shard_count()?;
        // Checked before anything is proposed, so a bad batch changes nothing.
        if let Some(c) = changes
            .iter()
            .find(|c| shard_of(&c.user.0, shards) != shard)
        {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                format!("user {} is not in shard {shard}", c.user),
            ));
        }
        let group = shard_group(shard);
        let results = join_all(changes.iter().map(|c| {
            self.write_local(
                group,
                Command::UserConv(UserConv {
                    user: c.user,
                    conv_id: c.conv,
                    joined: c.joined,
                    version: c.version,
                }),
            )
        }))
        .await;
        for r in results {
            match r? {
                (CommandResult::UserIndexed { .. }, _) => {}
                (other, _) => {
                    return Err(NodeError::Raft(format!(
                        "unexpected UserConv result {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_destination_is_left_out_for_its_own_growing_backoff() {
        let t0 = Instant::now();
        let mut b = Blocked::default();
        b.failed(3, t0);
        assert!(b.is_blocked(3, t0) && !b.is_blocked(4, t0));
        assert_eq!(b.next_retry(t0), Some(t0 + BACKOFF_MIN));
        // Another destination failing does not change the first one's wait.
        b.failed(4, t0);
        b.failed(4, t0);
        assert_eq!(b.next_retry(t0), Some(t0 + BACKOFF_MIN));
        let later = t0 + BACKOFF_MIN;
        assert!(!b.is_blocked(3, later) && b.is_blocked(4, later));
        assert_eq!(b.next_retry(later), Some(t0 + BACKOFF_MIN * 2));
        // Failing again doubles, up to the cap; a success starts over.
        for _ in 0..20 {
            b.failed(3, t0);
        }
        assert_eq!(b.next_retry(t0 + BACKOFF_MIN * 2), Some(t0 + BACKOFF_MAX));
        b.delivered(3);
        b.failed(3, t0);
        assert!(!b.is_blocked(3, later));
    }
}
