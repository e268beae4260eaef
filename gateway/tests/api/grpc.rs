//! The public gRPC API against a real deployment: the whole flow of two people and their
//! devices, who may see what, and what happens to revoked, expired and forged tokens.
//!
//! Errors are checked by their stable code (`bongsu-code` metadata), never by message text.
//!
//! - [`flow`]: two people, three devices, every operation;
//! - [`access`]: who may see what; revoked, expired, forged and spent tokens;
//! - [`bad_input`]: bytes that are not protobuf, malformed ids, bodies that break the rules;
//! - [`failover`]: a datacenter dies under a connected device;
//! - [`members`]: groups gain and lose members; rate limits;
//! - [`signup`]: sign-ups that died halfway do not lose handles nor take them;
//! - [`secrets`]: no password, token or message text reaches any process's log.

mod access;
mod bad_input;
mod failover;
mod flow;
mod members;
mod secrets;
mod signup;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bongsu_proto::v1::auth_client::AuthClient;
use bongsu_proto::v1::messenger_client::MessengerClient;
use bongsu_proto::v1::{self, push_event::Event};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// One signed-in device with clients to one gateway.
pub(super) struct Device {
    pub auth: AuthClient<Channel>,
    pub api: MessengerClient<Channel>,
    pub session: v1::Session,
}

impl Device {
    pub fn user(&self) -> Vec<u8> {
        self.session.user_id.clone()
    }

    /// A request carrying this device's access token.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        with_token(&self.session.access_token, msg)
    }
}

pub(super) fn with_token<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

/// The stable code of a failed call.
pub(super) fn code(s: &Status) -> String {
    s.metadata()
        .get("bongsu-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

/// Asserts that a call failed with `want`.
pub(super) fn expect_code<T: std::fmt::Debug>(
    r: std::result::Result<T, Status>,
    want: &str,
    what: &str,
) -> Result<()> {
    match r {
        Ok(v) => bail!("{what}: expected {want}, got {v:?}"),
        Err(s) if code(&s) == want => Ok(()),
        Err(s) => bail!("{what}: expected {want}, got {} ({s:?})", code(&s)),
    }
}

pub(super) fn device_info(name: &str) -> Option<v1::DeviceInfo> {
    Some(v1::DeviceInfo {
        kind: v1::DeviceKind::Phone as i32,
        name: name.to_string(),
    })
}

pub(super) async fn clients(url: &str) -> Result<(AuthClient<Channel>, MessengerClient<Channel>)> {
    let ch = Channel::from_shared(url.to_string())?
        .connect()
        .await
        .with_context(|| format!("connect to {url}"))?;
    Ok((AuthClient::new(ch.clone()), MessengerClient::new(ch)))
}

pub(super) async fn sign_up(url: &str, handle: &str) -> Result<Device> {
    let (mut auth, api) = clients(url).await?;
    let session = auth
        .sign_up(v1::SignUpRequest {
            handle: handle.to_string(),
            password: format!("{handle}-secret-pw"),
            device: device_info("phone"),
        })
        .await
        .with_context(|| format!("sign up {handle}"))?
        .into_inner();
    Ok(Device { auth, api, session })
}

pub(super) async fn sign_in(url: &str, handle: &str) -> Result<Device> {
    let (mut auth, api) = clients(url).await?;
    let session = auth
        .sign_in(v1::SignInRequest {
            handle: handle.to_string(),
            password: format!("{handle}-secret-pw"),
            device: device_info("laptop"),
        })
        .await
        .with_context(|| format!("sign in {handle}"))?
        .into_inner();
    Ok(Device { auth, api, session })
}

pub(super) fn id(n: u8) -> Vec<u8> {
    let mut b = rand::random::<[u8; 16]>();
    b[0] = n;
    b.to_vec()
}

pub(super) fn text(conv: &[u8], body: &str) -> v1::SendRequest {
    v1::SendRequest {
        conv_id: conv.to_vec(),
        client_msg_id: id(0),
        kind: v1::MessageKind::Text as i32,
        body: body.as_bytes().to_vec(),
    }
}

/// Polls `f` until it returns `Some`, for eventually consistent views (conversation lists).
pub(super) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event that is not a heartbeat, or `None` after `wait`.
pub(super) async fn next_event(
    s: &mut Streaming<v1::PushEvent>,
    wait: Duration,
) -> Result<Option<Event>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.message()).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => bail!("push stream failed: {} {e:?}", code(&e)),
            Ok(Ok(None)) => bail!("push stream ended"),
            Ok(Ok(Some(v1::PushEvent {
                event: Some(Event::HeartbeatMs(_)),
            }))) => continue,
            Ok(Ok(Some(v1::PushEvent { event: Some(e) }))) => return Ok(Some(e)),
            Ok(Ok(Some(_))) => bail!("an empty push event"),
        }
    }
}

/// Messages of `conv` from the stream until one with body `last` (others are skipped).
pub(super) async fn messages_until(
    s: &mut Streaming<v1::PushEvent>,
    conv: &[u8],
    last: &str,
) -> Result<Vec<v1::Message>> {
    let mut got = Vec::new();
    loop {
        match next_event(s, Duration::from_secs(10)).await? {
            Some(Event::Message(m)) if m.conv_id == conv => {
                let done = m.body == last.as_bytes();
                got.push(m);
                if done {
                    return Ok(got);
                }
            }
            Some(_) => {}
            None => bail!("no message {last:?} within 10 s; got {got:?}"),
        }
    }
}

pub(super) async fn create(
    d: &mut Device,
    kind: v1::ConversationKind,
    members: Vec<Vec<u8>>,
) -> Result<Vec<u8>> {
    let conv = id(1);
    let c = d
        .api
        .create_conversation(d.req(v1::CreateConversationRequest {
            conv_id: conv.clone(),
            kind: kind as i32,
            members,
        }))
        .await
        .context("create a conversation")?
        .into_inner();
    ensure!(c.conv_id == conv);
    Ok(conv)
}
