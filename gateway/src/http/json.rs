//! The JSON shapes of the HTTP API and the WebSocket stream, and their conversions to and from
//! the public protobuf types that [`crate::Gateway`] takes and returns.
//!
//! Ids travel as 32 lowercase hex digits (the `Display` of `bongsu_proto::model` ids) and enums
//! as snake_case names (the model's own kind enums). Conversions only translate: every rule
//! about what is allowed lives in `bongsu_proto::model` (checked by the gateway service for
//! HTTP and gRPC alike, and again by the nodes), and the fields that rules govern take their
//! OpenAPI schema from `model::schema`, built from the same constants.

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bongsu_proto::model::schema;
use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, UserId};
pub use bongsu_proto::model::{ConversationKind, DeviceKind, MessageKind};
use bongsu_proto::{v1, ErrorCode, ModelError};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::errors::{ApiError, Result};

/// Parses a hex id from a request, naming `field` (e.g. `members[2]`) when it is malformed.
pub fn parse_id<T: FromStr<Err = ModelError> + Id16>(s: &str, field: &str) -> Result<Vec<u8>> {
    T::from_str(s)
        .map(|id| id.to_vec())
        .map_err(|e| ApiError::new(e.code, format!("{field}: {}", e.reason)))
}

/// The bytes of a model id, for the protobuf request.
pub trait Id16 {
    fn to_vec(&self) -> Vec<u8>;
}

macro_rules! id16 {
    ($($t:ty),*) => {$(
        impl Id16 for $t {
            fn to_vec(&self) -> Vec<u8> {
                self.as_bytes().to_vec()
            }
        }
    )*};
}
id16!(ConvId, UserId, DeviceId, ClientMsgId);

fn parse_ids<T: FromStr<Err = ModelError> + Id16>(
    ids: &[String],
    field: &str,
) -> Result<Vec<Vec<u8>>> {
    ids.iter()
        .enumerate()
        .map(|(i, s)| parse_id::<T>(s, &format!("{field}[{i}]")))
        .collect()
}

/// An id from a node's reply, printed like the model's `Display` (lowercase hex).
fn hex_id(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A reply from a node that this gateway cannot represent; nodes validate what they store, so
/// this means a version mismatch or a bug, and the client is told so instead of given a guess.
fn corrupt(what: &str, value: i32) -> ApiError {
    ApiError::new(
        ErrorCode::CorruptData,
        format!("the cluster replied with an unknown {what} {value}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Kinds

/// A kind from a node's reply. Nodes store only kinds they validated, so an unknown number
/// means a version mismatch or a bug (`CORRUPT_DATA`), not a client's mistake.
fn reply_kind<K: TryFrom<i32>>(v: i32, what: &str) -> Result<K> {
    K::try_from(v).map_err(|_| corrupt(what, v))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Every failed call answers with this body, the HTTP status that goes with its code, and
/// `Retry-After` (seconds) on `RESOURCE_EXHAUSTED` and on a shed `UNAVAILABLE`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: StableCode,
    /// For humans; may change between versions. Match on `code`.
    pub message: String,
}

/// A stable error code; the list is built from `bongsu_proto::ErrorCode::ALL`, so it cannot
/// drift from what the server sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StableCode(pub String);

impl PartialSchema for StableCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "Stable error code: never changes meaning once released.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl ToSchema for StableCode {}

// ---------------------------------------------------------------------------------------------
// Auth and devices

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    #[schema(schema_with = schema::device_name)]
    pub name: String,
}

/// Sign-up and sign-in: a handle and a password, nothing else about the person.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(schema_with = schema::handle)]
    pub handle: String,
    #[schema(schema_with = schema::password)]
    pub password: String,
    pub device: DeviceInfo,
}

impl Credentials {
    fn parts(self) -> (String, String, Option<v1::DeviceInfo>) {
        let device = v1::DeviceInfo {
            kind: v1::DeviceKind::from(self.device.kind) as i32,
            name: self.device.name,
        };
        (self.handle, self.password, Some(device))
    }

    pub fn into_sign_up(self) -> v1::SignUpRequest {
        let (handle, password, device) = self.parts();
        v1::SignUpRequest {
            handle,
            password,
            device,
        }
    }

    pub fn into_sign_in(self) -> v1::SignInRequest {
        let (handle, password, device) = self.parts();
        v1::SignInRequest {
            handle,
            password,
            device,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// A signed-in device. Send `access_token` as `Authorization: Bearer …`; before
/// `access_expires_at_ms`, trade `refresh_token` for a new session (a spent refresh token is accepted once more
/// within 60 s, in case its reply was lost).
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    #[schema(example = "9f3c2b1a00000000000000000000beef")]
    pub user_id: String,
    pub handle: String,
    pub device_id: String,
    pub access_token: String,
    pub access_expires_at_ms: u64,
    pub refresh_token: String,
}

impl From<v1::Session> for Session {
    fn from(s: v1::Session) -> Self {
        Session {
            user_id: hex_id(&s.user_id),
            handle: s.handle,
            device_id: hex_id(&s.device_id),
            access_token: s.access_token,
            access_expires_at_ms: s.access_expires_at_ms,
            refresh_token: s.refresh_token,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Device {
    pub device_id: String,
    pub kind: DeviceKind,
    pub name: String,
    pub created_at_ms: u64,
    pub revoked: bool,
    /// The device that made this call.
    pub current: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Devices {
    pub devices: Vec<Device>,
}

impl TryFrom<v1::ListDevicesReply> for Devices {
    type Error = ApiError;

    fn try_from(r: v1::ListDevicesReply) -> Result<Self> {
        let devices = r
            .devices
            .into_iter()
            .map(|d| {
                Ok(Device {
                    device_id: hex_id(&d.device_id),
                    kind: reply_kind(d.kind, "device kind")?,
                    name: d.name,
                    created_at_ms: d.created_at_ms,
                    revoked: d.revoked,
                    current: d.current,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Devices { devices })
    }
}

/// An empty object: the call did what it says.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub gateway_id: String,
    pub dc: String,
    pub version: String,
}

impl From<v1::ServerInfoReply> for Info {
    fn from(r: v1::ServerInfoReply) -> Self {
        Info {
            gateway_id: r.gateway_id,
            dc: r.dc,
            version: r.version,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users and conversations

#[derive(Debug, Deserialize, ToSchema)]
pub struct LookupBody {
    #[serde(default)]
    #[schema(schema_with = schema::lookup_handles)]
    pub handles: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = schema::lookup_ids)]
    pub user_ids: Vec<String>,
}

impl LookupBody {
    pub fn into_proto(self) -> Result<v1::LookupUsersRequest> {
        Ok(v1::LookupUsersRequest {
            user_ids: parse_ids::<UserId>(&self.user_ids, "user_ids")?,
            handles: self.handles,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub user_id: String,
    pub handle: String,
}

/// The users found; unknown handles and ids are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Users {
    pub users: Vec<User>,
}

impl From<v1::LookupUsersReply> for Users {
    fn from(r: v1::LookupUsersReply) -> Self {
        let users = r
            .users
            .into_iter()
            .map(|u| User {
                user_id: hex_id(&u.user_id),
                handle: u.handle,
            })
            .collect();
        Users { users }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateConversationBody {
    /// Picked by the client (a random UUID), so a retried create is a no-op.
    #[schema(schema_with = schema::id)]
    pub conv_id: String,
    #[schema(schema_with = schema::creatable_kind)]
    pub kind: ConversationKind,
    /// The other members (exactly one for `direct`); the caller is always a member.
    #[schema(schema_with = schema::ids)]
    pub members: Vec<String>,
}

impl CreateConversationBody {
    pub fn into_proto(self) -> Result<v1::CreateConversationRequest> {
        Ok(v1::CreateConversationRequest {
            conv_id: parse_id::<ConvId>(&self.conv_id, "conv_id")?,
            kind: v1::ConversationKind::from(self.kind) as i32,
            members: parse_ids::<UserId>(&self.members, "members")?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeMembersBody {
    #[serde(default)]
    #[schema(schema_with = schema::ids)]
    pub add: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = schema::ids)]
    pub remove: Vec<String>,
}

impl ChangeMembersBody {
    pub fn into_proto(self, conv_id: Vec<u8>) -> Result<v1::ChangeMembersRequest> {
        Ok(v1::ChangeMembersRequest {
            conv_id,
            add: parse_ids::<UserId>(&self.add, "add")?,
            remove: parse_ids::<UserId>(&self.remove, "remove")?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub user_id: String,
    pub handle: String,
    /// `owner`, `member` or `follower`.
    pub role: String,
}

fn members(ms: Vec<v1::Member>) -> Vec<Member> {
    ms.into_iter()
        .map(|m| Member {
            user_id: hex_id(&m.user_id),
            handle: m.handle,
            role: m.role,
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    pub conv_id: String,
    pub kind: ConversationKind,
    pub members: Vec<Member>,
    pub last_seq: u64,
    pub created_at_ms: u64,
}

impl TryFrom<v1::Conversation> for Conversation {
    type Error = ApiError;

    fn try_from(c: v1::Conversation) -> Result<Self> {
        Ok(Conversation {
            conv_id: hex_id(&c.conv_id),
            kind: reply_kind(c.kind, "conversation kind")?,
            members: members(c.members),
            last_seq: c.last_seq,
            created_at_ms: c.created_at_ms,
        })
    }
}

/// One conversation in the caller's list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationSummary {
    pub conv_id: String,
    pub kind: ConversationKind,
    pub last_seq: u64,
    /// The caller's read cursor (shared by all their devices).
    pub read_seq: u64,
    pub unread: u64,
    /// The newest message, or null when there is none.
    pub last_message: Option<Message>,
    /// Members' handles, for display (up to 10).
    pub members: Vec<Member>,
}

impl TryFrom<v1::ConversationSummary> for ConversationSummary {
    type Error = ApiError;

    fn try_from(s: v1::ConversationSummary) -> Result<Self> {
        Ok(ConversationSummary {
            conv_id: hex_id(&s.conv_id),
            kind: reply_kind(s.kind, "conversation kind")?,
            last_seq: s.last_seq,
            read_seq: s.read_seq,
            unread: s.unread,
            last_message: s.last_message.map(Message::try_from).transpose()?,
            members: members(s.members),
        })
    }
}

/// The caller's conversations. Eventually consistent: a conversation someone else added the
/// caller to shows up within moments, not in the same instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversations {
    pub conversations: Vec<ConversationSummary>,
}

impl TryFrom<v1::ListConversationsReply> for Conversations {
    type Error = ApiError;

    fn try_from(r: v1::ListConversationsReply) -> Result<Self> {
        let conversations = r
            .conversations
            .into_iter()
            .map(ConversationSummary::try_from)
            .collect::<Result<_>>()?;
        Ok(Conversations { conversations })
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// One message of a conversation's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub conv_id: String,
    /// Dense per conversation: 1, 2, 3, …
    pub seq: u64,
    pub sender: String,
    pub device: String,
    pub client_msg_id: String,
    pub kind: MessageKind,
    /// The body of `text`, `link_card` and `system` messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body of `sealed` messages (ciphertext, standard base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub sent_at_ms: u64,
}

impl TryFrom<v1::Message> for Message {
    type Error = ApiError;

    fn try_from(m: v1::Message) -> Result<Self> {
        let kind: MessageKind = reply_kind(m.kind, "message kind")?;
        // Nodes only store UTF-8 for text kinds; should one ever not be, its bytes are still
        // delivered (as base64) rather than dropping a message from a gap-free log.
        let (text, body_base64) = match kind {
            MessageKind::Sealed => (None, Some(BASE64.encode(&m.body))),
            _ => match String::from_utf8(m.body) {
                Ok(text) => (Some(text), None),
                Err(e) => (None, Some(BASE64.encode(e.as_bytes()))),
            },
        };
        Ok(Message {
            conv_id: hex_id(&m.conv_id),
            seq: m.seq,
            sender: hex_id(&m.sender),
            device: hex_id(&m.device),
            client_msg_id: hex_id(&m.client_msg_id),
            kind,
            text,
            body_base64,
            sent_at_ms: m.sent_at_ms,
        })
    }
}

/// A send. Give the body as `text` (UTF-8 kinds) or as `body_base64` (`sealed`), not both
/// (and neither as `null`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendBody {
    /// Picked by the client; a retry with the same id returns the first seq.
    #[schema(schema_with = schema::id)]
    pub client_msg_id: String,
    #[schema(schema_with = schema::sendable_kind)]
    pub kind: MessageKind,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schema::text)]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schema::body_base64)]
    pub body_base64: Option<String>,
}

/// An optional field that, when given, is a value: `null` is refused like any other wrong
/// type, as the schema (a non-null string) says.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl SendBody {
    pub fn into_proto(self, conv_id: Vec<u8>) -> Result<v1::SendRequest> {
        let client_msg_id = parse_id::<ClientMsgId>(&self.client_msg_id, "client_msg_id")?;
        let body = match (self.text, self.body_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => BASE64
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::invalid(format!("body_base64: {e}")))?,
            _ => {
                return Err(ApiError::invalid(
                    "give exactly one of text and body_base64",
                ))
            }
        };
        Ok(v1::SendRequest {
            conv_id,
            client_msg_id,
            kind: v1::MessageKind::from(self.kind) as i32,
            body,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    pub seq: u64,
    /// True when an earlier send with the same client_msg_id stored the message.
    pub duplicate: bool,
}

impl From<v1::SendReply> for Sent {
    fn from(r: v1::SendReply) -> Self {
        Sent {
            seq: r.seq,
            duplicate: r.duplicate,
        }
    }
}

/// A page of history: messages with seq > `after` (oldest first), or with `before` the newest
/// ones with seq < `before`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub after: Option<u64>,
    pub before: Option<u64>,
    #[param(schema_with = schema::history_limit)]
    pub limit: Option<u32>,
}

impl HistoryQuery {
    pub fn into_proto(self, conv_id: Vec<u8>) -> v1::HistoryRequest {
        v1::HistoryRequest {
            conv_id,
            after: self.after.unwrap_or(0),
            before: self.before.unwrap_or(0),
            limit: self.limit.unwrap_or(0),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub messages: Vec<Message>,
    pub last_seq: u64,
}

fn messages(ms: Vec<v1::Message>) -> Result<Vec<Message>> {
    ms.into_iter().map(Message::try_from).collect()
}

impl TryFrom<v1::HistoryReply> for History {
    type Error = ApiError;

    fn try_from(r: v1::HistoryReply) -> Result<Self> {
        Ok(History {
            messages: messages(r.messages)?,
            last_seq: r.last_seq,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MarkReadBody {
    /// Every message up to this seq counts as read.
    pub seq: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadCursor {
    /// The cursor after the call (it never moves back).
    pub read_seq: u64,
}

/// Where a device is: conversation id → the last seq it has.
pub type Cursors = BTreeMap<String, u64>;

/// Cursors from a request, as protobuf; `field` names the JSON object in errors.
pub fn parse_cursors(cursors: &Cursors, field: &str) -> Result<Vec<v1::Cursor>> {
    cursors
        .iter()
        .map(|(conv, &seq)| {
            Ok(v1::Cursor {
                conv_id: parse_id::<ConvId>(conv, &format!("{field}.{conv}"))?,
                seq,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SyncBody {
    /// Conversations not named start from seq 0.
    #[serde(default)]
    #[schema(schema_with = schema::cursors)]
    pub cursors: Cursors,
    #[serde(default)]
    #[schema(schema_with = schema::sync_limit)]
    pub limit_per_conversation: u32,
}

impl SyncBody {
    pub fn into_proto(self) -> Result<v1::SyncRequest> {
        Ok(v1::SyncRequest {
            cursors: parse_cursors(&self.cursors, "cursors")?,
            limit_per_conversation: self.limit_per_conversation,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationSync {
    pub conversation: ConversationSummary,
    /// Messages after the device's cursor, oldest first.
    pub messages: Vec<Message>,
    /// More remain: sync again with the new cursor.
    pub has_more: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sync {
    pub conversations: Vec<ConversationSync>,
}

impl TryFrom<v1::SyncReply> for Sync {
    type Error = ApiError;

    fn try_from(r: v1::SyncReply) -> Result<Self> {
        let conversations = r
            .conversations
            .into_iter()
            .map(|c| {
                let summary = c.conversation.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::CorruptData,
                        "the cluster sent a sync entry without its conversation",
                    )
                })?;
                Ok(ConversationSync {
                    conversation: ConversationSummary::try_from(summary)?,
                    messages: messages(c.messages)?,
                    has_more: c.has_more,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Sync { conversations })
    }
}

#[cfg(test)]
mod tests;
