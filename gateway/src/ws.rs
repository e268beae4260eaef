//! Live events over WebSocket at `GET /v1/ws`.
//!
//! The client's first text frame is `{"type":"subscribe","token":…,"cursors":{conv_id: seq}}`:
//! the access token travels in the frame rather than the URL so it stays out of access logs.
//! The server answers `{"type":"ready"}`, then relays [`Gateway::subscribe`]'s stream (missed
//! messages first, then live ones, gap-free and duplicate-free per conversation) as
//! [`ServerFrame`]s. Any failure is one `{"type":"error",…}` frame and a close; on
//! `UNAVAILABLE` the client reconnects with the last seq it saw per conversation and loses
//! nothing.
//!
//! A client that stops reading is not buffered for without bound: frames queue in a bounded
//! channel in front of the socket, and a client that leaves it full for [`SLOW_CLIENT`] is cut
//! off (it resumes from its cursors when it reconnects).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    close_code, CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade,
};
use axum::extract::State;
use axum::response::Response;
use bongsu_proto::v1::push_event::Event;
use bongsu_proto::{v1, ErrorCode};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::errors::{ApiError, Result};
use crate::http::json::{self, parse_cursors, ConversationSummary, Cursors, StableCode};
use crate::service::Gateway;

/// How long a new connection may take to send its subscribe frame.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(10);
/// Frames queued for one client at most.
const BUFFER: usize = 256;
/// A client that leaves the buffer full this long is too slow and is disconnected.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);
/// One write (a batch of frames) to the socket may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written before one flush, so a catch-up burst is not one syscall per message.
const BATCH: usize = 64;
/// The largest frame a client may send (a subscribe frame with many cursors).
const MAX_CLIENT_FRAME: usize = 1024 * 1024;

/// What a client sends: exactly one subscribe frame, first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        /// An access token, as for `Authorization: Bearer`.
        token: String,
        /// The last seq the client has per conversation; live events start after it.
        #[serde(default)]
        #[schema(schema_with = bongsu_proto::model::schema::cursors)]
        cursors: Cursors,
    },
}

/// What the server sends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authenticated and subscribed: events follow.
    Ready,
    /// A message, in seq order per conversation.
    Message { message: json::Message },
    /// The caller was added to a conversation (or created one).
    Joined { conversation: ConversationSummary },
    /// The caller left or was removed from a conversation.
    Left { conv_id: String },
    /// The caller's read cursor moved (from any of their devices).
    Read { conv_id: String, read_seq: u64 },
    /// Sent on an idle stream so both ends know the connection is alive.
    Heartbeat { at_ms: u64 },
    /// The last frame before the server closes the connection.
    Error { code: StableCode, message: String },
}

impl ServerFrame {
    /// The frame for one push event, or `None` for an empty event.
    pub fn from_event(ev: v1::PushEvent) -> Result<Option<ServerFrame>> {
        Ok(Some(match ev.event {
            None => return Ok(None),
            Some(Event::Message(m)) => ServerFrame::Message {
                message: m.try_into()?,
            },
            Some(Event::Joined(s)) => ServerFrame::Joined {
                conversation: s.try_into()?,
            },
            Some(Event::Left(conv_id)) => ServerFrame::Left {
                conv_id: hex::encode(conv_id),
            },
            Some(Event::Read(r)) => ServerFrame::Read {
                conv_id: hex::encode(r.conv_id),
                read_seq: r.read_seq,
            },
            Some(Event::HeartbeatMs(at_ms)) => ServerFrame::Heartbeat { at_ms },
        }))
    }

    fn error(e: &ApiError) -> ServerFrame {
        ServerFrame::Error {
            code: StableCode(e.code.as_str().to_string()),
            message: e.message.clone(),
        }
    }

    fn to_ws(&self) -> WsMessage {
        // Serializing these plain structs cannot fail; should it ever, the client gets an
        // error frame it can act on rather than a silently missing one.
        let text = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"UNAVAILABLE","message":"encode a frame: {e}"}}"#)
        });
        WsMessage::Text(text.into())
    }
}

/// Upgrades to a WebSocket carrying live events.
///
/// Send `{"type":"subscribe","token":"<access token>","cursors":{"<conv_id>":<seq>}}` first;
/// see `ClientFrame` and `ServerFrame` for every frame. Close codes: 1008 after
/// `UNAUTHENTICATED`/`INVALID_ARGUMENT`/`NOT_MEMBER`, 1013 after `UNAVAILABLE` or
/// `RESOURCE_EXHAUSTED` (reconnect with your cursors).
#[utoipa::path(get, path = "/v1/ws", tag = "push",
    responses((status = 101, description = "Switching to the WebSocket protocol")))]
pub async fn upgrade(State(gw): State<Arc<Gateway>>, ws: WebSocketUpgrade) -> Response {
    // The session outlives the request; it keeps the request's span (method, path, and the
    // user and device once authenticated) so its logs can be found with the connection's.
    let span = tracing::Span::current();
    ws.max_message_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| session(gw, socket).instrument(span))
}

async fn session(gw: Arc<Gateway>, socket: WebSocket) {
    let (sink, mut incoming) = socket.split();
    let (tx, rx) = mpsc::channel::<WsMessage>(BUFFER);
    let mut writer = tokio::spawn(write_frames(sink, rx));
    let outcome = relay(&gw, &mut incoming, &tx, &mut writer).await;
    match outcome {
        Ok(()) => {}
        Err(Ended::Failed(e)) => {
            tracing::debug!(code = %e.code, "closing the push stream: {}", e.message);
            let close = CloseFrame {
                code: match e.code {
                    ErrorCode::Unavailable
                    | ErrorCode::ResourceExhausted
                    | ErrorCode::NotLeader => close_code::AGAIN,
                    _ => close_code::POLICY,
                },
                reason: e.code.as_str().into(),
            };
            // The error frame and the close go through the same queue, after what was already
            // queued; if the client is not reading, the writer's timeout ends it.
            if tx.try_send(ServerFrame::error(&e).to_ws()).is_ok() {
                let _ = tx.try_send(WsMessage::Close(Some(close)));
            }
        }
        Err(Ended::TooSlow) => {
            tracing::info!("disconnecting a client that does not read its push stream");
            writer.abort();
        }
    }
    drop(tx);
    let _ = writer.await;
}

enum Ended {
    /// Tell the client why, then close.
    Failed(ApiError),
    /// The client is not reading: just drop the connection.
    TooSlow,
}

impl From<ApiError> for Ended {
    fn from(e: ApiError) -> Self {
        Ended::Failed(e)
    }
}

/// Subscribes and relays events until the client leaves (`Ok`) or something fails.
async fn relay(
    gw: &Gateway,
    incoming: &mut SplitStream<WebSocket>,
    tx: &mpsc::Sender<WsMessage>,
    writer: &mut tokio::task::JoinHandle<()>,
) -> std::result::Result<(), Ended> {
    let Some((token, cursors)) = first_frame(incoming).await? else {
        return Ok(());
    };
    let caller = authenticate(gw, &token).await?;
    let req = v1::SubscribeRequest {
        cursors: parse_cursors(&cursors, "cursors")?,
    };
    let mut events = gw.subscribe(&caller, req).await?;
    queue(tx, ServerFrame::Ready.to_ws()).await?;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if let Some(frame) = ServerFrame::from_event(ev)? {
                        queue(tx, frame.to_ws()).await?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ApiError::unavailable(
                        "the event stream ended; reconnect with your cursors",
                    )
                    .into())
                }
            },
            msg = incoming.next() => match msg {
                // Gone, or closing: axum answers a close frame by itself.
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Ok(()),
                // Pings are answered with pongs by the WebSocket layer.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))) => {
                    return Err(ApiError::invalid(
                        "only one subscribe frame is expected; reconnect to change cursors",
                    )
                    .into())
                }
            },
            // The writer stops when a write fails or times out: the client is gone.
            _ = &mut *writer => return Ok(()),
        }
    }
}

/// Waits for the subscribe frame; `None` when the client leaves first.
async fn first_frame(incoming: &mut SplitStream<WebSocket>) -> Result<Option<(String, Cursors)>> {
    let deadline = tokio::time::Instant::now() + SUBSCRIBE_WITHIN;
    loop {
        let msg = tokio::time::timeout_at(deadline, incoming.next())
            .await
            .map_err(|_| {
                ApiError::unauthenticated(format!(
                    "no subscribe frame within {} s",
                    SUBSCRIBE_WITHIN.as_secs()
                ))
            })?;
        let text = match msg {
            None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(WsMessage::Binary(_))) => {
                return Err(ApiError::invalid(
                    "the subscribe frame must be a text frame",
                ))
            }
            Some(Ok(WsMessage::Text(t))) => t,
        };
        return match parse_client_frame(text.as_str())? {
            ClientFrame::Subscribe { token, cursors } => Ok(Some((token, cursors))),
        };
    }
}

/// A client frame; serde's message names what was wrong without echoing the token.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame> {
    serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("bad subscribe frame: {e}")))
}

async fn authenticate(gw: &Gateway, token: &str) -> Result<Caller> {
    let caller = gw.authenticate(token).await?;
    let span = tracing::Span::current();
    span.record("user", tracing::field::display(caller.user));
    span.record("device", tracing::field::display(caller.device));
    gw.limits.check_user(&caller.user)?;
    Ok(caller)
}

/// Queues a frame, waiting at most [`SLOW_CLIENT`] for room.
async fn queue(tx: &mpsc::Sender<WsMessage>, msg: WsMessage) -> std::result::Result<(), Ended> {
    match tokio::time::timeout(SLOW_CLIENT, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        // The writer has stopped: the client is gone, and relay notices it next.
        Ok(Err(_)) => Ok(()),
        Err(_) => Err(Ended::TooSlow),
    }
}

/// Writes queued frames in batches until the queue closes or a write fails or stalls.
async fn write_frames(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<WsMessage>,
) {
    while let Some(first) = rx.recv().await {
        let batch = async {
            let mut closing = matches!(first, WsMessage::Close(_));
            sink.feed(first).await?;
            for _ in 1..BATCH {
                match rx.try_recv() {
                    Ok(msg) => {
                        closing |= matches!(msg, WsMessage::Close(_));
                        sink.feed(msg).await?;
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await?;
            Ok::<_, axum::Error>(closing)
        };
        match tokio::time::timeout(WRITE_TIMEOUT, batch).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) | Ok(Err(_)) | Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ev: Event) -> serde_json::Value {
        let f = ServerFrame::from_event(v1::PushEvent { event: Some(ev) })
            .expect("converts")
            .expect("a frame");
        serde_json::to_value(&f).expect("serializable")
    }

    #[test]
    fn push_events_become_tagged_frames() {
        let conv = vec![0xab; 16];
        let m = v1::Message {
            conv_id: conv.clone(),
            seq: 7,
            sender: vec![1; 16],
            device: vec![2; 16],
            client_msg_id: vec![3; 16],
            kind: v1::MessageKind::Text as i32,
            body: "안녕".as_bytes().to_vec(),
            sent_at_ms: 99,
        };
        let v = frame(Event::Message(m));
        assert_eq!(v["type"], "message");
        assert_eq!(v["message"]["conv_id"], "ab".repeat(16));
        assert_eq!(v["message"]["seq"], 7);
        assert_eq!(v["message"]["text"], "안녕");
        assert_eq!(
            frame(Event::Read(v1::ReadEvent {
                conv_id: conv.clone(),
                read_seq: 3
            })),
            serde_json::json!({"type": "read", "conv_id": "ab".repeat(16), "read_seq": 3})
        );
        assert_eq!(
            frame(Event::Left(conv.clone())),
            serde_json::json!({"type": "left", "conv_id": "ab".repeat(16)})
        );
        assert_eq!(
            frame(Event::HeartbeatMs(5)),
            serde_json::json!({"type": "heartbeat", "at_ms": 5})
        );
        assert_eq!(
            serde_json::to_value(ServerFrame::Ready).expect("serializable"),
            serde_json::json!({"type": "ready"})
        );
        let err = serde_json::to_value(ServerFrame::error(&ApiError::unauthenticated("expired")))
            .expect("serializable");
        assert_eq!(
            err,
            serde_json::json!({"type": "error", "code": "UNAUTHENTICATED", "message": "expired"})
        );
        let none = ServerFrame::from_event(v1::PushEvent { event: None }).expect("converts");
        assert!(none.is_none());
    }

    #[test]
    fn client_frames_are_parsed_strictly() {
        let ok = parse_client_frame(r#"{"type":"subscribe","token":"t","cursors":{"ab":1}}"#);
        assert!(
            matches!(ok, Ok(ClientFrame::Subscribe { ref token, ref cursors }) if token == "t" && cursors["ab"] == 1)
        );
        let no_cursors = parse_client_frame(r#"{"type":"subscribe","token":"t"}"#);
        assert!(
            matches!(no_cursors, Ok(ClientFrame::Subscribe { ref cursors, .. }) if cursors.is_empty())
        );
        for bad in [
            "",
            "{",
            r#"{"type":"publish"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","token":"t","cursors":[1]}"#,
        ] {
            let err = parse_client_frame(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
        }
        // Bad ids in cursors are caught before anything is subscribed.
        let cursors = Cursors::from([("zz".to_string(), 1)]);
        let err = parse_cursors(&cursors, "cursors").expect_err("bad id");
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with("cursors.zz"), "{}", err.message);
    }
}
