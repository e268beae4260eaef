//! Validated requests: every public request (`bongsu.v1`) and every write a gateway forwards to
//! a node (`bongsu.internal.v1`) becomes one of these through `TryFrom` before anything acts on
//! it. The gateway converts what clients send; the node converts what gateways forward with the
//! same code, so a rule is written once and both ends enforce it.

use crate::errors::{ModelError, Result};
use crate::internal;
use crate::model::{
    check_password, normalize_handle, page_limit, validate_body, ClientMsgId, ConvId,
    ConversationKind, DeviceId, DeviceKind, MessageKind, UserId, DEFAULT_MAX_BODY_BYTES,
    DEVICE_NAME_MAX, HISTORY_DEFAULT, HISTORY_MAX, LOOKUP_MAX, SYNC_DEFAULT, SYNC_MAX,
};
use crate::v1;

fn ids<T>(list: &[Vec<u8>]) -> Result<Vec<T>>
where
    T: for<'a> TryFrom<&'a [u8], Error = ModelError>,
{
    list.iter().map(|b| T::try_from(b.as_slice())).collect()
}

fn cursors(list: &[v1::Cursor]) -> Result<Vec<(ConvId, u64)>> {
    list.iter()
        .map(|c| Ok((ConvId::try_from(c.conv_id.as_slice())?, c.seq)))
        .collect()
}

/// A device introducing itself at sign-up or sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub kind: DeviceKind,
    /// At most [`DEVICE_NAME_MAX`] characters.
    pub name: String,
}

impl TryFrom<Option<v1::DeviceInfo>> for Device {
    type Error = ModelError;

    fn try_from(d: Option<v1::DeviceInfo>) -> Result<Self> {
        let d = d.ok_or_else(|| ModelError::invalid("device", "missing"))?;
        let kind = DeviceKind::try_from(d.kind).map_err(|_| {
            ModelError::invalid("device.kind", "required (PHONE, TABLET, PC or WEB)")
        })?;
        if d.name.chars().count() > DEVICE_NAME_MAX {
            return Err(ModelError::invalid(
                "device.name",
                format!("at most {DEVICE_NAME_MAX} characters"),
            ));
        }
        Ok(Device { kind, name: d.name })
    }
}

impl From<Device> for v1::DeviceInfo {
    fn from(d: Device) -> Self {
        v1::DeviceInfo {
            kind: v1::DeviceKind::from(d.kind) as i32,
            name: d.name,
        }
    }
}

/// A sign-up: a free handle (normalized), a password within the length rules, a device.
#[derive(Clone, Debug)]
pub struct SignUp {
    pub handle: String,
    pub password: String,
    pub device: Device,
}

impl TryFrom<v1::SignUpRequest> for SignUp {
    type Error = ModelError;

    fn try_from(r: v1::SignUpRequest) -> Result<Self> {
        let handle = normalize_handle(&r.handle)?;
        check_password(&r.password)?;
        let device = Device::try_from(r.device)?;
        Ok(SignUp {
            handle,
            password: r.password,
            device,
        })
    }
}

/// A sign-in. A handle that cannot exist is `None`: the caller answers it as it answers a
/// handle nobody owns, so a sign-in never tells which rule a handle broke.
#[derive(Clone, Debug)]
pub struct SignIn {
    pub handle: Option<String>,
    pub password: String,
    pub device: Device,
}

impl TryFrom<v1::SignInRequest> for SignIn {
    type Error = ModelError;

    fn try_from(r: v1::SignInRequest) -> Result<Self> {
        Ok(SignIn {
            device: Device::try_from(r.device)?,
            handle: normalize_handle(&r.handle).ok(),
            password: r.password,
        })
    }
}

/// Users to look up by handle and by id, at most [`LOOKUP_MAX`] of each. Handles that cannot
/// exist are dropped: they are simply not found, like handles nobody owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub handles: Vec<String>,
    pub user_ids: Vec<UserId>,
}

impl TryFrom<v1::LookupUsersRequest> for Lookup {
    type Error = ModelError;

    fn try_from(r: v1::LookupUsersRequest) -> Result<Self> {
        for (field, n) in [("handles", r.handles.len()), ("user_ids", r.user_ids.len())] {
            if n > LOOKUP_MAX {
                return Err(ModelError::invalid(field, format!("at most {LOOKUP_MAX}")));
            }
        }
        Ok(Lookup {
            user_ids: ids(&r.user_ids)?,
            handles: r
                .handles
                .iter()
                .filter_map(|h| normalize_handle(h).ok())
                .collect(),
        })
    }
}

/// A conversation to create: a kind a client may create, and the other members (ids checked;
/// who they are is the caller's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConversation {
    pub conv: ConvId,
    pub kind: ConversationKind,
    pub members: Vec<UserId>,
}

impl TryFrom<v1::CreateConversationRequest> for NewConversation {
    type Error = ModelError;

    fn try_from(r: v1::CreateConversationRequest) -> Result<Self> {
        let kind = ConversationKind::try_from(r.kind)
            .ok()
            .filter(|k| ConversationKind::CREATABLE.contains(k))
            .ok_or_else(|| ModelError::invalid("kind", "must be DIRECT or GROUP"))?;
        Ok(NewConversation {
            conv: ConvId::try_from(r.conv_id.as_slice())?,
            kind,
            members: ids(&r.members)?,
        })
    }
}

/// Members to add and to remove; at least one of the two lists is not empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeMembers {
    pub conv: ConvId,
    pub add: Vec<UserId>,
    pub remove: Vec<UserId>,
}

impl TryFrom<v1::ChangeMembersRequest> for ChangeMembers {
    type Error = ModelError;

    fn try_from(r: v1::ChangeMembersRequest) -> Result<Self> {
        let conv = ConvId::try_from(r.conv_id.as_slice())?;
        let (add, remove) = (ids(&r.add)?, ids(&r.remove)?);
        if add.is_empty() && remove.is_empty() {
            return Err(ModelError::invalid("add", "add and remove are both empty"));
        }
        Ok(ChangeMembers { conv, add, remove })
    }
}

/// A message a client sends: a kind clients may send, and a body within the cluster's limit
/// ([`DEFAULT_MAX_BODY_BYTES`]) that is UTF-8 for text kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub conv: ConvId,
    pub client_msg_id: ClientMsgId,
    pub kind: MessageKind,
    pub body: Vec<u8>,
}

impl TryFrom<v1::SendRequest> for Send {
    type Error = ModelError;

    fn try_from(r: v1::SendRequest) -> Result<Self> {
        let conv = ConvId::try_from(r.conv_id.as_slice())?;
        let client_msg_id = ClientMsgId::try_from(r.client_msg_id.as_slice())?;
        let kind = MessageKind::try_from(r.kind)?;
        if !MessageKind::SENDABLE.contains(&kind) {
            return Err(ModelError::invalid(
                "kind",
                "SYSTEM messages are written by the server only",
            ));
        }
        validate_body(kind, &r.body, DEFAULT_MAX_BODY_BYTES)?;
        Ok(Send {
            conv,
            client_msg_id,
            kind,
            body: r.body,
        })
    }
}

/// Which end of a conversation's log a history page starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// Oldest first, from the seq after this one.
    After(u64),
    /// The newest messages before this seq.
    Before(u64),
}

/// A page of a conversation's history, at most [`HISTORY_MAX`] messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    pub conv: ConvId,
    pub page: Page,
    pub limit: u32,
}

impl TryFrom<v1::HistoryRequest> for History {
    type Error = ModelError;

    fn try_from(r: v1::HistoryRequest) -> Result<Self> {
        Ok(History {
            conv: ConvId::try_from(r.conv_id.as_slice())?,
            page: match r.before {
                0 => Page::After(r.after),
                before => Page::Before(before),
            },
            limit: page_limit("limit", r.limit, HISTORY_DEFAULT, HISTORY_MAX)?,
        })
    }
}

/// Catch-up across the caller's conversations from a device's cursors, at most [`SYNC_MAX`]
/// messages per conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    pub cursors: Vec<(ConvId, u64)>,
    pub limit: u32,
}

impl TryFrom<v1::SyncRequest> for Sync {
    type Error = ModelError;

    fn try_from(r: v1::SyncRequest) -> Result<Self> {
        Ok(Sync {
            cursors: cursors(&r.cursors)?,
            limit: page_limit(
                "limit_per_conversation",
                r.limit_per_conversation,
                SYNC_DEFAULT,
                SYNC_MAX,
            )?,
        })
    }
}

/// Live events from a device's cursors on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub cursors: Vec<(ConvId, u64)>,
}

impl TryFrom<v1::SubscribeRequest> for Subscribe {
    type Error = ModelError;

    fn try_from(r: v1::SubscribeRequest) -> Result<Self> {
        Ok(Subscribe {
            cursors: cursors(&r.cursors)?,
        })
    }
}

/// A message a gateway forwards to the conversation's shard: who sent it (from the verified
/// token), and the validated [`Send`]. The node converts the forwarded write back with
/// [`TryFrom`], checking the same rules again, since a gateway is a client of the node too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub sender: UserId,
    pub device: DeviceId,
    pub send: Send,
}

impl From<Append> for internal::AppendMessage {
    fn from(a: Append) -> Self {
        internal::AppendMessage {
            conv_id: a.send.conv.0.to_vec(),
            sender: a.sender.0.to_vec(),
            device: a.device.0.to_vec(),
            client_msg_id: a.send.client_msg_id.0.to_vec(),
            kind: v1::MessageKind::from(a.send.kind) as i32,
            body: a.send.body,
        }
    }
}

impl TryFrom<internal::AppendMessage> for Append {
    type Error = ModelError;

    fn try_from(m: internal::AppendMessage) -> Result<Self> {
        Ok(Append {
            sender: UserId::try_from(m.sender.as_slice())?,
            device: DeviceId::try_from(m.device.as_slice())?,
            send: Send::try_from(v1::SendRequest {
                conv_id: m.conv_id,
                client_msg_id: m.client_msg_id,
                kind: m.kind,
                body: m.body,
            })?,
        })
    }
}
