//! One device's push stream: the device's user shard (for its JOINED, LEFT and READ events)
//! and the shards of its conversations (their messages, and LEFT when its user is removed),
//! turned into `PushEvent`s.
//!
//! A session also re-checks that its device was not revoked, every
//! [`crate::auth::Auth::device_check_every`], through the gateway's device cache (so usually
//! without a lookup), and ends with `UNAUTHENTICATED` when it was: a stream authenticated once
//! does not outlive a sign-out by more than about twice `device_check_secs` (a "not revoked"
//! cached just before the revocation is trusted for one more period).
//!
//! Order of work, which is what makes delivery gap-free: a session registers with the hub for
//! a shard and waits until that upstream streams *before* it reads what it missed from the
//! nodes, so everything applied after the read arrives live, and everything before it is in
//! the read. Overlap between the two is dropped by seq.
//!
//! # Membership: two shards, one version
//!
//! A session learns that its user joined or left a conversation from user events, which come
//! from two shards:
//!
//! - the user's shard streams JOINED and LEFT when the conversation shard's outbox delivers
//!   them: eventually, about 100 ms later, or much later while that shard has no quorum;
//! - the conversation's shard streams LEFT at the `ChangeMembers` entry itself, in log order
//!   with the conversation's messages. The session follows that shard for the messages
//!   anyway, so it untracks the conversation before it is offered any message appended after
//!   the removal: a removed member's open streams get nothing more (ARCHITECTURE.md invariant 7),
//!   however late the outbox is. Additions are not streamed there; a new member is not yet
//!   following that shard for the conversation, and a late JOINED only delays, never leaks.
//!
//! The same removal therefore arrives twice (untracking is idempotent), and a removal
//! followed quickly by a re-addition can arrive in either order, since the two shards stream
//! independently. Both events of one change carry its version in `seq`: the log index of the
//! change in the conversation's shard, which only grows. The session keeps the newest
//! version it has seen per conversation ([`Membership`]) and ignores a JOINED or LEFT that is
//! older, so a late LEFT never undoes a newer JOINED, nor a late JOINED a newer LEFT.
//! A resynchronization reads the user's conversation list, which may still show a
//! conversation the session already saw a LEFT for; the conversation's shard has the last
//! word there (`ConversationInfo`), and a conversation it refuses is dropped before it is
//! announced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bongsu_proto::internal::user_event::Kind as UserEventKind;
use bongsu_proto::internal::SubscribeEvent;
use bongsu_proto::model::{ConvId, DeviceId, UserId};
use bongsu_proto::{v1, ErrorCode};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::StreamMap;
use tracing::Instrument;

use super::HubEvent;
use crate::auth::Caller;
use crate::errors::ApiError;
use crate::push::PushStream;
use crate::service::Gateway;

/// Events buffered for one device before the gateway waits on it.
const OUT_BUFFER: usize = 256;
/// A device that does not take an event for this long is disconnected (`RESOURCE_EXHAUSTED`)
/// rather than buffered without bound.
const SLOW_CLIENT: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Messages read per catch-up call.
const CATCH_UP_PAGE: u32 = 1000;
/// Device checks in a row that may fail for want of an answer (the user's shard unreachable)
/// before the stream ends with that error. A failed lookup is no sign of a revocation, and
/// ending every stream of a shard's users during its election would only make them all
/// reconnect at once; but a device whose status stays unknown must not stream for ever.
const UNANSWERED_CHECKS: u32 = 3;

/// Where each conversation of a device stands: the last seq delivered.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    last: HashMap<ConvId, u64>,
}

/// What to do with a message of seq `seq`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The next one: deliver it (the position has moved).
    Deliver,
    /// Delivered before: drop it.
    Duplicate,
    /// Messages after the position are missing: read them first.
    Gap,
    /// Not a conversation of this device.
    Foreign,
}

impl Delivery {
    pub fn track(&mut self, conv: ConvId, from: u64) -> bool {
        if self.last.contains_key(&conv) {
            return false;
        }
        self.last.insert(conv, from);
        true
    }

    pub fn forget(&mut self, conv: &ConvId) -> bool {
        self.last.remove(conv).is_some()
    }

    pub fn position(&self, conv: &ConvId) -> Option<u64> {
        self.last.get(conv).copied()
    }

    /// Moves a position back to `last_seq` if it is past it.
    pub fn clamp(&mut self, conv: &ConvId, last_seq: u64) {
        if let Some(p) = self.last.get_mut(conv) {
            *p = (*p).min(last_seq);
        }
    }

    pub fn offer(&mut self, conv: &ConvId, seq: u64) -> Offer {
        let Some(last) = self.last.get_mut(conv) else {
            return Offer::Foreign;
        };
        if seq <= *last {
            Offer::Duplicate
        } else if seq == *last + 1 {
            *last = seq;
            Offer::Deliver
        } else {
            Offer::Gap
        }
    }

    pub fn convs(&self) -> Vec<ConvId> {
        self.last.keys().copied().collect()
    }
}

/// The newest membership version (the log index of a change in the conversation's shard)
/// seen per conversation, to drop JOINED and LEFT events that arrive after a newer one.
/// Kept after a conversation is untracked, which is when a stale JOINED would do harm; it
/// grows by one entry per conversation whose membership changed during the session.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    newest: HashMap<ConvId, u64>,
}

impl Membership {
    /// Whether a JOINED or LEFT of `version` is to be acted on: not older than one seen
    /// before. The same version again is the same change heard from the other shard; acting
    /// on it again is harmless, so it passes.
    pub fn admit(&mut self, conv: ConvId, version: u64) -> bool {
        let newest = self.newest.entry(conv).or_insert(version);
        if version < *newest {
            return false;
        }
        *newest = version;
        true
    }
}

/// Why a session stopped.
enum End {
    /// The client went away: nothing to tell anyone.
    Gone,
    Error(ApiError),
}

impl From<ApiError> for End {
    fn from(e: ApiError) -> Self {
        End::Error(e)
    }
}

type Step<T = ()> = std::result::Result<T, End>;

/// Starts a session for `c` and returns its stream of events: buffered events first, then the
/// error that ended the session, if any.
pub(crate) fn session(gw: Arc<Gateway>, c: Caller, cursors: HashMap<ConvId, u64>) -> PushStream {
    let (tx, rx) = mpsc::channel(OUT_BUFFER);
    let (end_tx, end_rx) = oneshot::channel::<ApiError>();
    let span = tracing::info_span!("push_session", user = %c.user, device = %c.device);
    tokio::spawn(
        async move {
            let mut s = Session {
                gw,
                user: c.user,
                device: c.device,
                unanswered: 0,
                user_shard: 0,
                cursors,
                delivery: Delivery::default(),
                membership: Membership::default(),
                shard_of: HashMap::new(),
                streams: StreamMap::new(),
                waiting: Vec::new(),
                out: tx,
            };
            match s.run().await {
                Ok(()) | Err(End::Gone) => tracing::debug!("push session ended"),
                Err(End::Error(e)) => {
                    tracing::info!(error = %e, "push session ended with an error");
                    let _ = end_tx.send(e);
                }
            }
        }
        .instrument(span),
    );
    let last = futures::stream::once(end_rx).filter_map(|r| async move { r.ok().map(Err) });
    Box::pin(ReceiverStream::new(rx).map(Ok).chain(last))
}

struct Session {
    gw: Arc<Gateway>,
    user: UserId,
    device: DeviceId,
    /// Device checks that failed in a row without saying whether the device is revoked.
    unanswered: u32,
    user_shard: u32,
    /// The device's cursors from the request, used when a conversation is first tracked.
    cursors: HashMap<ConvId, u64>,
    delivery: Delivery,
    membership: Membership,
    shard_of: HashMap<ConvId, u32>,
    streams: StreamMap<u32, BroadcastStream<HubEvent>>,
    /// Upstreams joined but not yet confirmed streaming.
    waiting: Vec<watch::Receiver<bool>>,
    out: mpsc::Sender<v1::PushEvent>,
}

impl Session {
    async fn run(&mut self) -> Step {
        self.user_shard = self.gw.router.shard(&self.user.0).await?;
        self.join_shard(self.user_shard);
        self.resync(true).await?;
        let now = tokio::time::Instant::now();
        let mut heartbeat = tokio::time::interval_at(now + HEARTBEAT, HEARTBEAT);
        let every = self.gw.auth.device_check_every();
        let mut device_check = tokio::time::interval_at(now + every, every);
        // After a slow check, wait a whole period again rather than checking twice in a row.
        device_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.out.closed() => return Err(End::Gone),
                item = self.streams.next() => match item {
                    Some((_, Ok(HubEvent::Entry(ev)))) => self.on_entry(&ev).await?,
                    Some((shard, Ok(HubEvent::Resync))) => {
                        tracing::debug!(shard, "resynchronizing after an upstream restart");
                        self.resync(false).await?;
                    }
                    Some((shard, Err(BroadcastStreamRecvError::Lagged(n)))) => {
                        tracing::debug!(shard, missed = n, "resynchronizing after falling behind");
                        self.resync(false).await?;
                    }
                    Some((shard, Ok(HubEvent::Failed))) => {
                        return Err(End::Error(ApiError::unavailable(format!(
                            "live updates of shard {shard} stopped; reconnect with your cursors"
                        ))));
                    }
                    None => {
                        return Err(End::Error(ApiError::unavailable("live updates stopped")));
                    }
                },
                _ = device_check.tick() => self.check_device().await?,
                _ = heartbeat.tick() => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                    self.emit(v1::push_event::Event::HeartbeatMs(now)).await?;
                }
            }
        }
    }

    /// Ends the session with `UNAUTHENTICATED` if the device was revoked since it started.
    async fn check_device(&mut self) -> Step {
        match self.gw.auth.check_device(self.user, self.device).await {
            Ok(()) => {
                self.unanswered = 0;
                Ok(())
            }
            Err(e) if e.code == ErrorCode::Unauthenticated => {
                tracing::info!("ending the push stream of a revoked device");
                Err(e.into())
            }
            Err(e) => {
                self.unanswered += 1;
                if self.unanswered >= UNANSWERED_CHECKS {
                    return Err(e.into());
                }
                tracing::debug!(error = %e, "cannot check the device yet; trying again later");
                Ok(())
            }
        }
    }

    fn join_shard(&mut self, shard: u32) {
        if self.streams.contains_key(&shard) {
            return;
        }
        let sub = self.gw.push.join(shard);
        self.waiting.push(sub.live);
        self.streams.insert(shard, BroadcastStream::new(sub.rx));
    }

    /// Drops a shard that no tracked conversation (nor the user) lives in any more.
    fn leave_shard_if_unused(&mut self, shard: u32) {
        if shard != self.user_shard && !self.shard_of.values().any(|&s| s == shard) {
            self.streams.remove(&shard);
        }
    }

    /// Waits until every joined upstream streams: only then is a read from the nodes sure to
    /// overlap what arrives live.
    async fn wait_live(&mut self) -> Step {
        let deadline = self.gw.router.request_timeout();
        for mut live in std::mem::take(&mut self.waiting) {
            match tokio::time::timeout(deadline, live.wait_for(|l| *l)).await {
                Ok(Ok(_)) => {}
                _ => {
                    return Err(End::Error(ApiError::unavailable(
                        "live updates are not available yet; reconnect",
                    )))
                }
            }
        }
        Ok(())
    }

    async fn track(&mut self, conv: ConvId) -> Step<bool> {
        let from = self.cursors.get(&conv).copied().unwrap_or(0);
        if !self.delivery.track(conv, from) {
            return Ok(false);
        }
        let shard = self.gw.router.shard(&conv.0).await?;
        self.shard_of.insert(conv, shard);
        self.join_shard(shard);
        Ok(true)
    }

    async fn untrack(&mut self, conv: &ConvId, tell: bool) -> Step {
        if !self.delivery.forget(conv) {
            return Ok(());
        }
        if let Some(shard) = self.shard_of.remove(conv) {
            self.leave_shard_if_unused(shard);
        }
        if tell {
            self.emit(v1::push_event::Event::Left(conv.0.to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Brings the session in line with the nodes: the user's conversation list, then every
    /// conversation's messages past its position. Used at the start (`initial`: nothing is
    /// announced) and whenever live events may have been missed.
    async fn resync(&mut self, initial: bool) -> Step {
        let list = self.gw.user_conversations(&self.user).await?;
        let mut joined = Vec::new();
        for (conv, read_seq) in &list {
            if self.track(*conv).await? && !initial {
                joined.push((*conv, *read_seq));
            }
        }
        for conv in self.delivery.convs() {
            if !list.iter().any(|(c, _)| *c == conv) {
                self.untrack(&conv, !initial).await?;
            }
        }
        self.wait_live().await?;
        let convs = self.delivery.convs();
        let infos = self.gw.conv_infos(&self.user, &convs, false).await?;
        let mut behind = Vec::new();
        for conv in convs {
            match infos.get(&conv).filter(|i| i.found && !i.role.is_empty()) {
                Some(info) => {
                    // A cursor past the end (a confused client) would hide every new message.
                    self.delivery.clamp(&conv, info.last_seq);
                    if self
                        .delivery
                        .position(&conv)
                        .is_some_and(|p| p < info.last_seq)
                    {
                        behind.push(conv);
                    }
                }
                // The user's list lags the conversation's shard (outbox): it has the last word.
                // A conversation the list still shows after the session saw its removal is
                // dropped before it is announced, so the device hears nothing about it.
                None => {
                    let announced = !initial && !joined.iter().any(|(c, _)| *c == conv);
                    self.untrack(&conv, announced).await?;
                }
            }
        }
        joined.retain(|(c, _)| self.delivery.position(c).is_some());
        if !joined.is_empty() {
            for s in self.gw.summaries(&self.user, &joined).await? {
                self.emit(v1::push_event::Event::Joined(s)).await?;
            }
        }
        for conv in behind {
            self.catch_up(&conv).await?;
        }
        Ok(())
    }

    /// Reads and delivers everything after the conversation's position.
    async fn catch_up(&mut self, conv: &ConvId) -> Step {
        loop {
            let Some(pos) = self.delivery.position(conv) else {
                return Ok(());
            };
            let page = match self
                .gw
                .read(&self.user, conv, pos + 1, 0, CATCH_UP_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e)
                    if matches!(
                        e.code,
                        ErrorCode::NotMember | ErrorCode::UnknownConversation
                    ) =>
                {
                    return self.untrack(conv, true).await;
                }
                Err(e) => return Err(e.into()),
            };
            let mut progressed = false;
            for m in page.messages {
                if self.delivery.offer(conv, m.seq) == Offer::Deliver {
                    progressed = true;
                    self.emit(v1::push_event::Event::Message(m)).await?;
                }
            }
            let now = self.delivery.position(conv).unwrap_or(0);
            if !progressed || now >= page.last_seq {
                return Ok(());
            }
        }
    }

    async fn on_entry(&mut self, ev: &SubscribeEvent) -> Step {
        if let Some(m) = &ev.message {
            let Ok(conv) = ConvId::try_from(m.conv_id.as_slice()) else {
                tracing::warn!(
                    log_index = ev.log_index,
                    "a node streamed a message without a valid conversation id"
                );
                return Ok(());
            };
            match self.delivery.offer(&conv, m.seq) {
                Offer::Deliver => self.emit(v1::push_event::Event::Message(m.clone())).await?,
                Offer::Gap => {
                    self.catch_up(&conv).await?;
                    // The read covers this message too (it was applied, so committed); if the
                    // leader's page stopped short, it is still the next one.
                    if self.delivery.offer(&conv, m.seq) == Offer::Deliver {
                        self.emit(v1::push_event::Event::Message(m.clone())).await?;
                    }
                }
                Offer::Duplicate | Offer::Foreign => {}
            }
        }
        // In a user's shard one event (this user's or another's); in a conversation's shard
        // one LEFT per member a `ChangeMembers` removed.
        for u in &ev.user_events {
            if u.user != self.user.0 {
                continue;
            }
            let Ok(conv) = ConvId::try_from(u.conv_id.as_slice()) else {
                tracing::warn!(
                    log_index = ev.log_index,
                    "a node streamed a user event without a valid conversation id"
                );
                continue;
            };
            let kind = UserEventKind::try_from(u.kind);
            if matches!(kind, Ok(UserEventKind::Joined | UserEventKind::Left))
                && !self.membership.admit(conv, u.seq)
            {
                tracing::debug!(
                    log_index = ev.log_index,
                    version = u.seq,
                    "ignoring a membership event older than one already seen"
                );
                continue;
            }
            match kind {
                Ok(UserEventKind::Joined) if self.track(conv).await? => {
                    self.wait_live().await?;
                    if let Some(s) = self.gw.summaries(&self.user, &[(conv, 0)]).await?.pop() {
                        self.emit(v1::push_event::Event::Joined(s)).await?;
                    }
                    self.catch_up(&conv).await?;
                }
                Ok(UserEventKind::Left) => self.untrack(&conv, true).await?,
                Ok(UserEventKind::Read) if self.delivery.position(&conv).is_some() => {
                    self.emit(v1::push_event::Event::Read(v1::ReadEvent {
                        conv_id: conv.0.to_vec(),
                        read_seq: u.seq,
                    }))
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands one event to the device, waiting at most [`SLOW_CLIENT`] for room.
    async fn emit(&mut self, event: v1::push_event::Event) -> Step {
        let ev = v1::PushEvent { event: Some(event) };
        match tokio::time::timeout(SLOW_CLIENT, self.out.send(ev)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Error(ApiError::exhausted(
                "the client reads events too slowly; reconnect with your cursors",
                Duration::from_secs(1),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ConvId = ConvId([1; 16]);
    const B: ConvId = ConvId([2; 16]);

    #[test]
    fn offers_by_seq() {
        let mut d = Delivery::default();
        assert!(d.track(A, 3));
        assert!(!d.track(A, 0), "tracking twice keeps the position");
        let table = [
            (A, 2, Offer::Duplicate),
            (A, 3, Offer::Duplicate),
            (A, 4, Offer::Deliver),
            (A, 4, Offer::Duplicate),
            (A, 6, Offer::Gap),
            (A, 5, Offer::Deliver),
            (A, 6, Offer::Deliver),
            (B, 1, Offer::Foreign),
        ];
        for (i, (conv, seq, want)) in table.into_iter().enumerate() {
            assert_eq!(d.offer(&conv, seq), want, "step {i}: seq {seq}");
        }
        assert_eq!(d.position(&A), Some(6));
        d.clamp(&A, 9);
        assert_eq!(d.position(&A), Some(6), "clamping never moves forward");
        d.clamp(&A, 5);
        assert_eq!(d.offer(&A, 6), Offer::Deliver);
        assert!(d.forget(&A));
        assert_eq!(d.offer(&A, 7), Offer::Foreign);
    }

    /// A removal heard from both shards, and a removal and re-addition heard in either order:
    /// the newest change wins.
    #[test]
    fn membership_events_older_than_one_seen_are_ignored() {
        let mut m = Membership::default();
        // Removed at 10 (the conversation's shard), then the same removal from the user's.
        assert!(m.admit(A, 10));
        assert!(m.admit(A, 10), "the same change again passes");
        // Re-added at 12 by the user's shard; the conversation's LEFT of 10 arrives late.
        assert!(m.admit(A, 12));
        assert!(!m.admit(A, 10), "a late LEFT undid a newer JOINED");
        // Removed again at 15 via the conversation's shard; the JOINED of 12 arrives late.
        assert!(m.admit(A, 15));
        assert!(!m.admit(A, 12), "a late JOINED undid a newer LEFT");
        // Conversations are independent.
        assert!(m.admit(B, 1));
        assert!(!m.admit(A, 14));
    }

    /// A live stream that repeats, skips and reorders, mended by reads of the log: the device
    /// gets 1..=n exactly once, in order.
    #[test]
    fn gaps_are_filled_from_the_log_and_duplicates_dropped() {
        let log: Vec<u64> = (1..=10).collect();
        let live = [1, 2, 2, 5, 3, 4, 9, 10, 6, 10];
        let mut d = Delivery::default();
        d.track(A, 0);
        let mut got = Vec::new();
        for seq in live {
            match d.offer(&A, seq) {
                Offer::Deliver => got.push(seq),
                Offer::Gap => {
                    // What catch_up does: read after the position up to what the log has now.
                    for &s in log.iter().filter(|&&s| s <= seq) {
                        if d.offer(&A, s) == Offer::Deliver {
                            got.push(s);
                        }
                    }
                }
                Offer::Duplicate | Offer::Foreign => {}
            }
        }
        assert_eq!(got, log);
    }
}
