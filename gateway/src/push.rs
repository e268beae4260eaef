//! Live delivery: one upstream `Subscribe` per shard per gateway ([`PushHub`]), shared by every
//! connected device through a broadcast channel, and one session per device stream that turns
//! a shard's events into the device's events, gap-free and duplicate-free per conversation.
//!
//! The hub is only a cache of what nodes stream: when an upstream fails it resumes after the
//! last log index on another replica, and when it cannot resume that way (no position, or the
//! shard pruned the events after it: `EVENTS_PRUNED`) it tells sessions to resynchronize from
//! the nodes (linearizable reads), which is always correct, only slower.
//! Gaps and duplicates are decided per conversation by seq (ARCHITECTURE.md invariant 5), never by
//! log index, so a hub restart cannot lose or repeat a message.
//!
//! # Removed members
//!
//! A `ChangeMembers` that removes someone records a LEFT user event in the conversation's own
//! shard, at its log index, so the upstream that carries the conversation's messages carries
//! the removal in order with them, and a session of the removed user stops before any message
//! appended after it (ARCHITECTURE.md invariant 7), whether or not the outbox has reached the
//! user's shard yet. The user's shard streams its own LEFT later; both carry one membership
//! version, and the session keeps the newest per conversation (see the `session` module).

mod session;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bongsu_proto::internal::{SubscribeEvent, SubscribeRequest};
use bongsu_proto::{v1, ErrorCode};
use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::errors::Result;
use crate::router::{jitter, Router};

pub(crate) use session::session;

/// Live events for one device, in order, gap-free and duplicate-free per conversation.
pub type PushStream = Pin<Box<dyn Stream<Item = Result<v1::PushEvent>> + Send>>;

/// Events one shard may have in flight to its slowest session; a session further behind
/// resynchronizes from the nodes instead of holding memory.
const HUB_BUFFER: usize = 4096;
/// An upstream that cannot be re-established for this long is given up: its sessions end with
/// `UNAVAILABLE` and their clients reconnect, perhaps to another gateway.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);
/// How often an idle upstream checks whether anybody still listens.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What a shard's upstream tells its sessions.
#[derive(Clone, Debug)]
pub(crate) enum HubEvent {
    /// One applied entry of the shard, in log order.
    Entry(Arc<SubscribeEvent>),
    /// Entries may have been missed (the upstream restarted without a known position).
    Resync,
    /// The upstream is gone for good.
    Failed,
}

struct Upstream {
    /// Tells apart an upstream from its successor, so a stopping task never removes the new
    /// one's entry.
    generation: u64,
    tx: broadcast::Sender<HubEvent>,
    live: watch::Receiver<bool>,
}

/// A session's handle on one shard: events, and whether the upstream is streaming yet.
pub(crate) struct Subscription {
    pub rx: broadcast::Receiver<HubEvent>,
    pub live: watch::Receiver<bool>,
}

/// Upstream subscriptions of this gateway, one per shard that a connected device needs.
pub struct PushHub {
    router: Arc<Router>,
    dc: String,
    shards: Mutex<HashMap<u32, Upstream>>,
    generations: std::sync::atomic::AtomicU64,
    me: Weak<PushHub>,
}

impl PushHub {
    pub fn new(router: Arc<Router>, dc: String) -> Arc<PushHub> {
        Arc::new_cyclic(|me| PushHub {
            router,
            dc,
            shards: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// Registers interest in a shard, starting its upstream if this is the first.
    pub(crate) fn join(&self, shard: u32) -> Subscription {
        let mut shards = self.shards.lock().expect("push hub lock poisoned");
        if let Some(u) = shards.get(&shard) {
            return Subscription {
                rx: u.tx.subscribe(),
                live: u.live.clone(),
            };
        }
        let (tx, rx) = broadcast::channel(HUB_BUFFER);
        let (live_tx, live) = watch::channel(false);
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shards.insert(
            shard,
            Upstream {
                generation,
                tx: tx.clone(),
                live: live.clone(),
            },
        );
        tokio::spawn(upstream(self.me.clone(), shard, generation, tx, live_tx));
        Subscription { rx, live }
    }

    /// Shards with a running upstream (for tests and status).
    pub fn active_shards(&self) -> usize {
        self.shards.lock().expect("push hub lock poisoned").len()
    }

    /// Removes the shard's entry if it is still this generation's and nobody listens, or
    /// unconditionally when `failed`. True when the upstream should stop.
    fn retire(&self, shard: u32, generation: u64, failed: bool) -> bool {
        let mut shards = self.shards.lock().expect("push hub lock poisoned");
        let Some(u) = shards.get(&shard) else {
            return true;
        };
        if u.generation != generation {
            return true;
        }
        if failed || u.tx.receiver_count() == 0 {
            shards.remove(&shard);
            return true;
        }
        false
    }
}

/// Streams one shard from a replica (this datacenter's first) into the broadcast channel,
/// resuming after the last log index seen on another replica when the stream breaks.
async fn upstream(
    hub: Weak<PushHub>,
    shard: u32,
    generation: u64,
    tx: broadcast::Sender<HubEvent>,
    live: watch::Sender<bool>,
) {
    let mut after: Option<u64> = None;
    let mut streamed_before = false;
    let mut next = 0usize;
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(h) = hub.upgrade() else { return };
        if h.retire(shard, generation, false) {
            tracing::debug!(shard, "push upstream stopped: no session needs it");
            return;
        }
        if failing_since.is_some_and(|t| t.elapsed() > GIVE_UP_AFTER) {
            tracing::warn!(
                shard,
                "push upstream given up: no replica streams the shard"
            );
            h.retire(shard, generation, true);
            let _ = tx.send(HubEvent::Failed);
            return;
        }
        let replicas = h.router.map().replicas(shard, &h.dc);
        let target = (!replicas.is_empty()).then(|| replicas[next % replicas.len()].clone());
        next += 1;
        let mut client = match target.as_deref().map(|a| h.router.client(a)) {
            Some(Ok(c)) => Some(c),
            _ => None,
        };
        let timeout = h.router.request_timeout();
        drop(h);
        let (Some(addr), Some(client)) = (target, client.as_mut()) else {
            failing_since.get_or_insert_with(Instant::now);
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        let req = SubscribeRequest {
            shard,
            after_index: after.unwrap_or(0),
            from_latest: after.is_none(),
        };
        let opened = tokio::time::timeout(timeout, client.subscribe(req)).await;
        let mut stream = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => {
                tracing::debug!(shard, node = %addr, error = %e, "cannot subscribe");
                failing_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                failing_since.get_or_insert_with(Instant::now);
                continue;
            }
        };
        tracing::debug!(shard, node = %addr, ?after, "push upstream streaming");
        failing_since = None;
        backoff = Duration::from_millis(50);
        if streamed_before && after.is_none() {
            // Started over "from latest": whatever was applied in between is unknown.
            let _ = tx.send(HubEvent::Resync);
        }
        streamed_before = true;
        let _ = live.send(true);
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep(IDLE_CHECK) => {
                    if tx.receiver_count() == 0 {
                        break;
                    }
                    continue;
                }
            };
            match msg {
                Ok(Some(ev)) => {
                    if after.is_some_and(|a| ev.log_index <= a) {
                        continue;
                    }
                    after = Some(ev.log_index);
                    if tx.send(HubEvent::Entry(Arc::new(ev))).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    tracing::info!(shard, node = %addr, "push upstream ended; resuming elsewhere");
                    break;
                }
                Err(e) if ErrorCode::of_status(&e) == Some(ErrorCode::EventsPruned) => {
                    // The shard no longer keeps the events after our position (retention):
                    // start over from the latest entry, and the sessions resynchronize.
                    tracing::warn!(shard, node = %addr, error = %e, "push upstream fell behind retention; resynchronizing");
                    after = None;
                    break;
                }
                Err(e) => {
                    tracing::info!(shard, node = %addr, error = %e, "push upstream failed; resuming elsewhere");
                    break;
                }
            }
        }
    }
}
