//! A small HTTP/JSON and WebSocket client for the tests, with the checks they share.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::{SinkExt, StreamExt};
use reqwest::header::RETRY_AFTER;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// One reply: status, `Retry-After` if any, and the JSON body (`Null` when not JSON).
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) retry_after: Option<u64>,
    pub(super) body: Value,
}

impl Reply {
    pub(super) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

/// A client of one gateway's HTTP API.
#[derive(Clone)]
pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

impl Api {
    pub(super) fn new(base: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    pub(super) async fn raw(&self, req: reqwest::RequestBuilder) -> Result<Reply> {
        let resp = req
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .context("send an HTTP request")?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await.context("read a reply")?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.raw(req).await
    }

    /// A call that must succeed; its JSON body.
    pub(super) async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let r = self.call(method, path, token, body).await?;
        ensure!(r.status == 200, "{what}: {} {}", r.status, r.body);
        Ok(r.body)
    }

    /// A call that must fail with `status` and `code`.
    pub(super) async fn fails(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        status: u16,
        code: &str,
    ) -> Result<Reply> {
        let what = format!("{method} {path}");
        let r = self.call(method, path, token, body).await?;
        ensure!(
            r.status == status && r.code() == code,
            "{what}: expected {status} {code}, got {} {}",
            r.status,
            r.body
        );
        ensure!(
            r.body["error"]["message"].is_string(),
            "{what}: no message in {}",
            r.body
        );
        Ok(r)
    }

    pub(super) async fn signup(&self, handle: &str, kind: &str) -> Result<Session> {
        let body = json!({"handle": handle, "password": format!("pw-{handle}"), "device": {"kind": kind, "name": format!("{handle}'s {kind}")}});
        Session::parse(
            self.ok(Method::POST, "/v1/auth/signup", None, Some(body))
                .await?,
        )
    }

    pub(super) async fn signin(&self, handle: &str, kind: &str) -> Result<Session> {
        let body = json!({"handle": handle, "password": format!("pw-{handle}"), "device": {"kind": kind, "name": format!("{handle}'s {kind}")}});
        Session::parse(
            self.ok(Method::POST, "/v1/auth/signin", None, Some(body))
                .await?,
        )
    }

    pub(super) async fn history(&self, s: &Session, conv: &str, query: &str) -> Result<Vec<Value>> {
        let path = format!("/v1/conversations/{conv}/messages?{query}");
        let body = self.ok(Method::GET, &path, Some(&s.token), None).await?;
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }

    pub(super) async fn send(&self, s: &Session, conv: &str, text: &str) -> Result<u64> {
        let body = json!({"client_msg_id": new_id(), "kind": "text", "text": text});
        let r = self
            .ok(
                Method::POST,
                &format!("/v1/conversations/{conv}/messages"),
                Some(&s.token),
                Some(body),
            )
            .await?;
        r["seq"].as_u64().context("seq in a send reply")
    }
}

pub(super) struct Session {
    pub(super) user_id: String,
    pub(super) device_id: String,
    pub(super) token: String,
    pub(super) refresh: String,
}

impl Session {
    pub(super) fn parse(v: Value) -> Result<Session> {
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("{k} in {v}"))
        };
        let s = Session {
            user_id: field("user_id")?,
            device_id: field("device_id")?,
            token: field("access_token")?,
            refresh: field("refresh_token")?,
        };
        ensure!(is_id(&s.user_id) && is_id(&s.device_id), "ids in {v}");
        ensure!(
            v["access_expires_at_ms"].as_u64().is_some_and(|t| t > 0),
            "expiry in {v}"
        );
        Ok(s)
    }
}

pub(super) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(super) fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

pub(super) fn handle(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

pub(super) fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter_map(|m| m["seq"].as_u64()).collect()
}

/// Polls `check` until it returns `Some` (eventually consistent reads).
pub(super) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The caller's summary of `conv` from the conversation list, once it shows up.
pub(super) async fn summary(api: &Api, s: &Session, conv: &str) -> Result<Option<Value>> {
    let list = api
        .ok(Method::GET, "/v1/conversations", Some(&s.token), None)
        .await?;
    Ok(list["conversations"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["conv_id"] == conv).cloned()))
}

/// A WebSocket push client.
pub(super) struct Push {
    pub(super) ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Push {
    /// Connects and sends the subscribe frame (without waiting for `ready`).
    pub(super) async fn open(base: &str, token: &str, cursors: Value) -> Result<Push> {
        let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connect to {url}"))?;
        let frame = json!({"type": "subscribe", "token": token, "cursors": cursors});
        ws.send(WsMessage::text(frame.to_string())).await?;
        Ok(Push { ws })
    }

    /// Connects, subscribes and waits for `ready`.
    pub(super) async fn ready(base: &str, token: &str, cursors: Value) -> Result<Push> {
        let mut p = Push::open(base, token, cursors).await?;
        let first = p.next(Duration::from_secs(10)).await?;
        ensure!(
            first.as_ref().is_some_and(|f| f["type"] == "ready"),
            "expected ready, got {first:?}"
        );
        Ok(p)
    }

    /// The next JSON frame; `None` once the server closed or nothing came within `wait`.
    pub(super) async fn next(&mut self, wait: Duration) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                WsMessage::Text(t) => return Ok(Some(serde_json::from_str(t.as_str())?)),
                WsMessage::Close(_) => return Ok(None),
                _ => continue,
            }
        }
    }

    /// Message frames of `conv` until one with seq `until`; fails on anything out of order.
    pub(super) async fn messages_until(&mut self, conv: &str, until: u64) -> Result<Vec<u64>> {
        let mut got = Vec::new();
        while got.last() != Some(&until) {
            let f = self
                .next(Duration::from_secs(15))
                .await?
                .with_context(|| format!("stream ended after {got:?}, waiting for seq {until}"))?;
            ensure!(f["type"] != "error", "error frame {f}");
            if f["type"] == "message" && f["message"]["conv_id"] == conv {
                got.push(f["message"]["seq"].as_u64().context("seq")?);
            }
        }
        Ok(got)
    }
}
