//! The connection to a set of gateways, the session, and the one retry loop every call uses.
//!
//! Gateways are stateless and interchangeable, so the client keeps one lazily connected
//! channel per endpoint and uses one at a time; when a call fails in a way that says "this
//! gateway is gone" it moves to the next. Every call the SDK makes is idempotent (sends carry a
//! client message id, creates a client-chosen conversation id), so retrying is always safe.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bongsu_proto::v1;
use bongsu_proto::v1::auth_client::AuthClient;
use bongsu_proto::ErrorCode;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::errors::{Error, Result};
use crate::session::Session;

/// Timeouts and retry pacing. The defaults suit an interactive client.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long to wait for a TCP connection to a gateway.
    pub connect_timeout: Duration,
    /// How long one attempt of a call may take before it is abandoned and retried.
    pub attempt_timeout: Duration,
    /// How long a call keeps retrying in total before its last error is returned.
    pub call_deadline: Duration,
    /// The first retry delay; it doubles up to `backoff_max` (with jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A subscription that hears nothing (not even a heartbeat, sent every 15 s) for this
    /// long is taken for dead and reconnected.
    pub idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
            call_deadline: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(40),
        }
    }
}

type SessionListener = Arc<dyn Fn(&Session) + Send + Sync>;

struct Inner {
    urls: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the gateway in use.
    current: AtomicUsize,
    opts: Options,
    session: Mutex<Option<Session>>,
    /// Held while refreshing: the refresh token works once, so two refreshes must never race.
    refresh_lock: tokio::sync::Mutex<()>,
    listener: Mutex<Option<SessionListener>>,
}

/// A client of one bongsu deployment, signed in as one device (or not yet).
///
/// Cheap to clone; clones share the connection, the session and the gateway in use.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Locks a std mutex; a panic elsewhere while holding it leaves plain data that is still valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects to the first of `endpoints` (gRPC URLs such as `http://127.0.1.1:8081`, e.g.
    /// one per datacenter) that answers, with default [`Options`].
    pub async fn connect(endpoints: Vec<String>) -> Result<Client> {
        Self::connect_with(endpoints, Options::default()).await
    }

    pub async fn connect_with(endpoints: Vec<String>, opts: Options) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let mut channels = Vec::with_capacity(endpoints.len());
        for url in &endpoints {
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::InvalidEndpoint {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .connect_timeout(opts.connect_timeout)
                .tcp_nodelay(true)
                // Keepalives notice a gateway that vanished without closing the connection
                // (a lost datacenter rather than a killed process).
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        let client = Client {
            inner: Arc::new(Inner {
                urls: endpoints,
                channels,
                current: AtomicUsize::new(0),
                opts,
                session: Mutex::new(None),
                refresh_lock: tokio::sync::Mutex::new(()),
                listener: Mutex::new(None),
            }),
        };
        // Start on the first gateway that answers, so that the first real call does not pay
        // for a dead one; ServerInfo needs no token.
        client.server_info().await?;
        Ok(client)
    }

    /// Uses a saved session (from [`Client::session`]) instead of signing in.
    pub fn with_session(self, session: Session) -> Self {
        *lock(&self.inner.session) = Some(session);
        self
    }

    /// The current session, to save: it changes whenever the access token is refreshed.
    pub fn session(&self) -> Option<Session> {
        lock(&self.inner.session).clone()
    }

    /// Calls `f` with every new session (after sign-in and after each refresh), so that an
    /// application can save it at once: the old refresh token no longer works.
    pub fn on_session_change(&self, f: impl Fn(&Session) + Send + Sync + 'static) {
        *lock(&self.inner.listener) = Some(Arc::new(f));
    }

    /// The gRPC URL of the gateway in use.
    pub fn endpoint(&self) -> String {
        let (i, _) = self.pick();
        self.inner.urls[i].clone()
    }

    /// Every gateway this client knows, in order of preference.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.urls
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub(crate) fn set_session(&self, s: Session) {
        *lock(&self.inner.session) = Some(s.clone());
        let listener = lock(&self.inner.listener).clone();
        if let Some(f) = listener {
            f(&s);
        }
    }

    pub(crate) fn pick(&self) -> (usize, Channel) {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.channels.len();
        (i, self.inner.channels[i].clone())
    }

    /// Moves off gateway `failed`, unless another caller already did: a burst of failures
    /// from one dead gateway moves the client one step, not past a good gateway.
    pub(crate) fn rotate_from(&self, failed: usize) {
        let next = (failed + 1) % self.inner.channels.len();
        if self
            .inner
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!(from = %self.inner.urls[failed], to = %self.inner.urls[next], "switching gateway");
        }
    }

    /// Runs `attempt` against the gateway in use until it succeeds, fails for good, or the
    /// call deadline passes. A failure that says the gateway is gone moves to the next gateway
    /// at once (each gateway once) before backing off; `RESOURCE_EXHAUSTED` waits as long as
    /// the server asked.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let opts = &self.inner.opts;
        let deadline = Instant::now() + opts.call_deadline;
        let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max);
        let mut switched = 0;
        loop {
            let (idx, ch) = self.pick();
            let limit = opts
                .attempt_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let err = match tokio::time::timeout(limit, attempt(ch)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => Error::Timeout(limit),
            };
            if !err.is_retryable() || Instant::now() >= deadline {
                return Err(err);
            }
            if err.should_switch_gateway() {
                self.rotate_from(idx);
                switched += 1;
                if switched < self.inner.channels.len() {
                    tracing::debug!(what, error = %err, "retrying on the next gateway");
                    continue;
                }
            }
            switched = 0;
            let wait = err.retry_after().unwrap_or_else(|| backoff.next_delay());
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            tracing::debug!(what, error = %err, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// An authenticated call: adds the access token (refreshing it first when it is about to
    /// expire, and once more if the gateway rejects it) and retries like [`Client::retry`].
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        what: &'static str,
        req: Req,
        f: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let f = &f;
        let req = &req;
        self.retry(what, |ch| async move {
            let token = self.access_token().await?;
            match f(ch.clone(), authorized(req.clone(), &token)?).await {
                Ok(r) => Ok(r.into_inner()),
                Err(status) => {
                    let e = Error::from(status);
                    if e.code() != Some(ErrorCode::Unauthenticated) {
                        return Err(e);
                    }
                    // The token may have expired in flight, or clocks differ: refresh once.
                    self.refresh_after(&token).await?;
                    let token = self.access_token().await?;
                    f(ch, authorized(req.clone(), &token)?)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Error::from)
                }
            }
        })
        .await
    }

    /// A valid access token, refreshed first if it is close to expiry.
    pub(crate) async fn access_token(&self) -> Result<String> {
        let s = self.session().ok_or(Error::NotSignedIn)?;
        if !s.needs_refresh(SystemTime::now()) {
            return Ok(s.access_token);
        }
        self.refresh_after(&s.access_token).await?;
        Ok(self.session().ok_or(Error::NotSignedIn)?.access_token)
    }

    /// Replaces the access token `stale` with a fresh one, unless someone else did already.
    ///
    /// The refresh runs in its own task: if the caller gives up half-way (a timeout, a dropped
    /// future), the new single-use refresh token is still stored instead of lost.
    pub(crate) async fn refresh_after(&self, stale: &str) -> Result<()> {
        let this = self.clone();
        let stale = stale.to_string();
        let task = tokio::spawn(async move {
            let _only_one = this.inner.refresh_lock.lock().await;
            let s = this.session().ok_or(Error::NotSignedIn)?;
            if s.access_token != stale {
                return Ok(());
            }
            let req = v1::RefreshRequest {
                refresh_token: s.refresh_token.clone(),
            };
            let reply = this
                .retry("refresh", |ch| {
                    let req = req.clone();
                    async move {
                        AuthClient::new(ch)
                            .refresh(req)
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(Error::from)
                    }
                })
                .await?;
            this.set_session(Session::try_from(reply)?);
            Ok(())
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Transport {
                code: tonic::Code::Cancelled,
                message: format!("token refresh did not finish: {e}"),
            }),
        }
    }

    /// Which gateway and datacenter answer; needs no session.
    pub async fn server_info(&self) -> Result<v1::ServerInfoReply> {
        self.retry("server_info", |ch| async move {
            AuthClient::new(ch)
                .server_info(v1::ServerInfoRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(Error::from)
        })
        .await
    }
}

/// Puts `authorization: Bearer <token>` on a request.
fn authorized<T>(msg: T, token: &str) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    let value = format!("Bearer {token}").parse().map_err(|_| Error::Api {
        code: ErrorCode::Unauthenticated,
        message: "the access token is not valid metadata".into(),
        retry_after: None,
    })?;
    r.metadata_mut().insert("authorization", value);
    Ok(r)
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint())
            .field("session", &self.session())
            .finish_non_exhaustive()
    }
}
