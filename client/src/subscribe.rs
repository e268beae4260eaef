//! A push subscription that outlives the gateway it started on.
//!
//! A background task holds one Subscribe stream at a time. When the stream breaks (the gateway
//! died, the connection went quiet, the server ended it), the task opens a new one, on the next
//! gateway if the old one looks gone, naming the last seq it handed over per conversation; the
//! server replays from there. Whatever the server sends twice across that seam is dropped by
//! [`Cursors`], and a jump in seqs is filled from History, so the application sees each
//! conversation as one unbroken sequence.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bongsu_proto::model::{ConvId, Message};
use bongsu_proto::v1;
use bongsu_proto::v1::messenger_client::MessengerClient;
use bongsu_proto::v1::push_event::Event as Push;
use bongsu_proto::ErrorCode;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::cursors::{Cursors, Verdict};
use crate::errors::{Error, Result};
use crate::types::{ConversationSummary, Event};

/// Events buffered between the connection task and the application; when the application
/// falls behind, the task stops reading and HTTP/2 flow control slows the gateway down.
const BUFFER: usize = 1024;

/// What the connection task shares with the application.
#[derive(Default)]
struct Shared {
    cursors: Mutex<Cursors>,
    endpoint: Mutex<String>,
    reconnects: AtomicU64,
    duplicates_dropped: AtomicU64,
    gaps_filled: AtomicU64,
}

/// Live events of the signed-in user, resumed across gateway failures.
///
/// It ends only when dropped or after an error that retrying cannot fix (e.g. the session was
/// revoked); that error is its last item. Transient failures are never items.
pub struct Subscription {
    rx: mpsc::Receiver<Result<Event>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// How many times the stream was opened again after breaking.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// The gateway the current (or last) stream is on.
    pub fn endpoint(&self) -> String {
        lock(&self.shared.endpoint).clone()
    }

    /// Messages the server sent again after a reconnect, dropped here.
    pub fn duplicates_dropped(&self) -> u64 {
        self.shared.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Messages fetched from History because the stream skipped them.
    pub fn gaps_filled(&self) -> u64 {
        self.shared.gaps_filled.load(Ordering::Relaxed)
    }

    /// The last seq handed over per conversation: save it to resume later with
    /// [`Client::subscribe_from`].
    pub fn positions(&self) -> Vec<(ConvId, u64)> {
        lock(&self.shared.cursors).positions().collect()
    }
}

impl Stream for Subscription {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Live events from now on: positions start at each conversation's current last seq.
    pub async fn subscribe(&self) -> Result<Subscription> {
        let now = self.list_conversations().await?;
        Ok(self.subscribe_from(now.into_iter().map(|c| (c.id, c.last_seq))))
    }

    /// Events after the given positions (everything missed first, then live). Conversations
    /// not named start wherever the server starts them.
    pub fn subscribe_from(
        &self,
        positions: impl IntoIterator<Item = (ConvId, u64)>,
    ) -> Subscription {
        let shared = Arc::new(Shared {
            cursors: Mutex::new(Cursors::from_positions(positions)),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(
            Pump {
                client: self.clone(),
                shared: shared.clone(),
                tx,
            }
            .run(),
        );
        Subscription { rx, shared, task }
    }
}

/// Why one stream stopped.
enum Stop {
    /// Open another one after a pause (the server's `Retry-After` if it gave one, else the
    /// backoff), on the next gateway if `switch`.
    Reconnect {
        switch: bool,
        wait: Option<std::time::Duration>,
    },
    /// The application went away, or a fatal error was handed over: stop for good.
    Done,
}

struct Pump {
    client: Client,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Event>>,
}

impl Pump {
    async fn run(self) {
        let opts = self.client.options().clone();
        let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max);
        let mut opened_before = false;
        let mut refreshed = false;
        loop {
            let (idx, ch) = self.client.pick();
            let stop = match self.open(ch).await {
                Ok(stream) => {
                    refreshed = false;
                    *lock(&self.shared.endpoint) = self.client.endpoints()[idx].clone();
                    if opened_before {
                        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(endpoint = %self.client.endpoints()[idx], "subscription resumed");
                    }
                    opened_before = true;
                    self.pump(stream, &mut backoff).await
                }
                Err((e, token)) if e.code() == Some(ErrorCode::Unauthenticated) && !refreshed => {
                    refreshed = true;
                    match self.client.refresh_after(&token).await {
                        Ok(()) => continue,
                        Err(e) => self.fail(e).await,
                    }
                }
                Err((e, _)) => self.judge(e).await,
            };
            match stop {
                Stop::Done => return,
                Stop::Reconnect { switch, wait } => {
                    if switch {
                        self.client.rotate_from(idx);
                    }
                    let pause = backoff.next_delay();
                    tokio::time::sleep(wait.map_or(pause, |w| w.max(pause))).await;
                }
            }
        }
    }

    /// Opens one stream from the current positions; on failure also returns the token used,
    /// so that a rejected token is refreshed exactly once.
    async fn open(
        &self,
        ch: tonic::transport::Channel,
    ) -> Result<tonic::Streaming<v1::PushEvent>, (Error, String)> {
        let token = self
            .client
            .access_token()
            .await
            .map_err(|e| (e, String::new()))?;
        let cursors = lock(&self.shared.cursors)
            .positions()
            .map(|(c, s)| v1::Cursor {
                conv_id: c.0.to_vec(),
                seq: s,
            })
            .collect();
        let mut req = tonic::Request::new(v1::SubscribeRequest { cursors });
        match format!("Bearer {token}").parse() {
            Ok(v) => {
                req.metadata_mut().insert("authorization", v);
            }
            Err(_) => return Err((Error::NotSignedIn, token)),
        }
        let limit = self.client.options().attempt_timeout;
        match tokio::time::timeout(limit, MessengerClient::new(ch).subscribe(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err((Error::from(s), token)),
            Err(_) => Err((Error::Timeout(limit), token)),
        }
    }

    /// Reads one stream until it breaks.
    async fn pump(
        &self,
        mut stream: tonic::Streaming<v1::PushEvent>,
        backoff: &mut Backoff,
    ) -> Stop {
        let idle = self.client.options().idle_timeout;
        loop {
            match tokio::time::timeout(idle, stream.message()).await {
                Err(_) => {
                    tracing::warn!(
                        ?idle,
                        "subscription heard nothing, not even a heartbeat; reconnecting"
                    );
                    return Stop::Reconnect {
                        switch: true,
                        wait: None,
                    };
                }
                Ok(Ok(None)) => {
                    tracing::debug!("the gateway ended the subscription; reconnecting");
                    return Stop::Reconnect {
                        switch: false,
                        wait: None,
                    };
                }
                Ok(Err(status)) => {
                    let e = Error::from(status);
                    if e.code() == Some(ErrorCode::Unauthenticated) {
                        // The token expired under a long-lived stream: opening the next one
                        // refreshes it.
                        return Stop::Reconnect {
                            switch: false,
                            wait: None,
                        };
                    }
                    return self.judge(e).await;
                }
                Ok(Ok(Some(ev))) => {
                    // The connection works: the next break is retried quickly again.
                    backoff.reset();
                    if let Some(stop) = self.handle(ev).await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Hands one server event to the application; `Some` ends this stream.
    async fn handle(&self, ev: v1::PushEvent) -> Option<Stop> {
        let event = match ev.event? {
            Push::HeartbeatMs(_) => return None,
            Push::Message(m) => return self.message(m).await,
            Push::Joined(s) => ConversationSummary::try_from(s).map(Event::Joined),
            Push::Left(c) => ConvId::try_from(c.as_slice())
                .map_err(Error::from)
                .map(|conv| {
                    lock(&self.shared.cursors).remove(&conv);
                    Event::Left(conv)
                }),
            Push::Read(r) => ConvId::try_from(r.conv_id.as_slice())
                .map_err(Error::from)
                .map(|conv| Event::Read {
                    conv,
                    read_seq: r.read_seq,
                }),
        };
        // A malformed event is reported but does not end the subscription.
        self.emit(event).await
    }

    async fn message(&self, m: v1::Message) -> Option<Stop> {
        let m = match Message::try_from(m) {
            Ok(m) => m,
            Err(e) => return self.emit(Err(e.into())).await,
        };
        let verdict = lock(&self.shared.cursors).judge(&m.conv_id, m.seq);
        match verdict {
            Verdict::Deliver => self.deliver(m).await,
            Verdict::Duplicate => {
                self.shared
                    .duplicates_dropped
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Gap { from, to } => {
                tracing::warn!(conv_id = %m.conv_id, from, to, "subscription skipped seqs; filling from history");
                let missing = match self.client.history_range(m.conv_id, from, to).await {
                    Ok(ms) => ms,
                    // Positions did not move: the next stream resumes before the gap.
                    Err(e) => return Some(self.judge(e).await),
                };
                for old in missing {
                    if lock(&self.shared.cursors).judge(&old.conv_id, old.seq) == Verdict::Deliver {
                        self.shared.gaps_filled.fetch_add(1, Ordering::Relaxed);
                        if let Some(stop) = self.deliver(old).await {
                            return Some(stop);
                        }
                    }
                }
                if lock(&self.shared.cursors).judge(&m.conv_id, m.seq) == Verdict::Deliver {
                    return self.deliver(m).await;
                }
                None
            }
        }
    }

    async fn deliver(&self, m: Message) -> Option<Stop> {
        lock(&self.shared.cursors).advance(m.conv_id, m.seq);
        self.emit(Ok(Event::Message(m))).await
    }

    async fn emit(&self, ev: Result<Event>) -> Option<Stop> {
        match self.tx.send(ev).await {
            Ok(()) => None,
            Err(_) => Some(Stop::Done),
        }
    }

    /// Decides what a failure means for the subscription.
    async fn judge(&self, e: Error) -> Stop {
        if e.is_retryable() {
            tracing::debug!(error = %e, "subscription broke; reconnecting");
            Stop::Reconnect {
                switch: e.should_switch_gateway(),
                wait: e.retry_after(),
            }
        } else {
            self.fail(e).await
        }
    }

    async fn fail(&self, e: Error) -> Stop {
        tracing::warn!(error = %e, "subscription failed for good");
        let _ = self.tx.send(Err(e)).await;
        Stop::Done
    }
}
