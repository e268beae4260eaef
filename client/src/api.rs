//! Typed methods for every call of the `Auth` and `Messenger` services.

use std::sync::atomic::{AtomicU32, Ordering};

use bongsu_proto::model::{
    ClientMsgId, ConvId, ConversationKind, DeviceId, Message, MessageKind, UserId,
};
use bongsu_proto::v1;
use bongsu_proto::v1::auth_client::AuthClient;
use bongsu_proto::v1::messenger_client::MessengerClient;
use bongsu_proto::ErrorCode;

use crate::client::Client;
use crate::errors::{Error, Result};
use crate::session::Session;
use crate::types::{
    direct_conv_id, new_client_msg_id, new_conv_id, Conversation, ConversationSummary, DeviceInfo,
    DeviceKind, History, SyncedConversation, User,
};

/// The answer to a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    /// An earlier attempt with the same client message id had stored it already.
    pub duplicate: bool,
    pub client_msg_id: ClientMsgId,
}

/// One of the caller's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    /// `None` for a kind this SDK does not know.
    pub kind: Option<DeviceKind>,
    pub name: String,
    pub created_at_ms: u64,
    pub revoked: bool,
    /// The device making the call.
    pub current: bool,
}

fn ids(v: &[UserId]) -> Vec<Vec<u8>> {
    v.iter().map(|i| i.0.to_vec()).collect()
}

impl Client {
    /// Creates an account and signs this device in; the client keeps the session.
    ///
    /// If an attempt's answer was lost and a retry finds the handle taken, the account is
    /// most likely the one the lost attempt created: the client then signs in with the same
    /// password, which fails cleanly if the handle is really someone else's.
    pub async fn sign_up(
        &self,
        handle: &str,
        password: &str,
        device: DeviceInfo,
    ) -> Result<Session> {
        let req = v1::SignUpRequest {
            handle: handle.to_string(),
            password: password.to_string(),
            device: Some(device.clone().into()),
        };
        let attempts = AtomicU32::new(0);
        let r = self
            .retry("sign_up", |ch| {
                attempts.fetch_add(1, Ordering::Relaxed);
                let req = req.clone();
                async move {
                    AuthClient::new(ch)
                        .sign_up(req)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Error::from)
                }
            })
            .await;
        match r {
            Ok(s) => self.adopt(s),
            Err(e)
                if e.code() == Some(ErrorCode::HandleTaken)
                    && attempts.load(Ordering::Relaxed) > 1 =>
            {
                self.sign_in(handle, password, device).await
            }
            Err(e) => Err(e),
        }
    }

    /// Signs this device in to an existing account; the client keeps the session.
    pub async fn sign_in(
        &self,
        handle: &str,
        password: &str,
        device: DeviceInfo,
    ) -> Result<Session> {
        let req = v1::SignInRequest {
            handle: handle.to_string(),
            password: password.to_string(),
            device: Some(device.into()),
        };
        let s = self
            .retry("sign_in", |ch| {
                let req = req.clone();
                async move {
                    AuthClient::new(ch)
                        .sign_in(req)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Error::from)
                }
            })
            .await?;
        self.adopt(s)
    }

    fn adopt(&self, s: v1::Session) -> Result<Session> {
        let s = Session::try_from(s)?;
        self.set_session(s.clone());
        Ok(s)
    }

    /// The signed-in user, or [`Error::NotSignedIn`].
    pub fn me(&self) -> Result<UserId> {
        Ok(self.session().ok_or(Error::NotSignedIn)?.user_id)
    }

    /// Every device of the caller, revoked ones included.
    pub async fn list_devices(&self) -> Result<Vec<Device>> {
        let r = self
            .call(
                "list_devices",
                v1::ListDevicesRequest {},
                |ch, r| async move { AuthClient::new(ch).list_devices(r).await },
            )
            .await?;
        r.devices
            .into_iter()
            .map(|d| {
                Ok(Device {
                    id: DeviceId::try_from(d.device_id.as_slice())?,
                    kind: DeviceKind::try_from(d.kind).ok(),
                    name: d.name,
                    created_at_ms: d.created_at_ms,
                    revoked: d.revoked,
                    current: d.current,
                })
            })
            .collect()
    }

    /// Revokes one of the caller's devices.
    pub async fn revoke_device(&self, device: DeviceId) -> Result<()> {
        let req = v1::RevokeDeviceRequest {
            device_id: device.0.to_vec(),
        };
        self.call("revoke_device", req, |ch, r| async move {
            AuthClient::new(ch).revoke_device(r).await
        })
        .await?;
        Ok(())
    }

    /// Looks users up by handle and by id; unknown ones are left out.
    pub async fn lookup_users(&self, handles: &[&str], user_ids: &[UserId]) -> Result<Vec<User>> {
        let req = v1::LookupUsersRequest {
            handles: handles.iter().map(|h| h.to_string()).collect(),
            user_ids: ids(user_ids),
        };
        let r = self
            .call("lookup_users", req, |ch, r| async move {
                MessengerClient::new(ch).lookup_users(r).await
            })
            .await?;
        r.users.into_iter().map(User::try_from).collect()
    }

    /// The user with this handle, if there is one.
    pub async fn lookup_handle(&self, handle: &str) -> Result<Option<User>> {
        let users = self.lookup_users(&[handle], &[]).await?;
        let wanted = handle.trim().to_ascii_lowercase();
        Ok(users
            .into_iter()
            .find(|u| u.handle.eq_ignore_ascii_case(&wanted)))
    }

    /// Creates a conversation with an id the caller chose; repeating it is a no-op.
    pub async fn create_conversation(
        &self,
        conv: ConvId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<Conversation> {
        let req = v1::CreateConversationRequest {
            conv_id: conv.0.to_vec(),
            kind: v1::ConversationKind::from(kind) as i32,
            members: ids(members),
        };
        let c = self
            .call("create_conversation", req, |ch, r| async move {
                MessengerClient::new(ch).create_conversation(r).await
            })
            .await?;
        Conversation::try_from(c)
    }

    /// The direct conversation with `other`, created if needed. Its id is derived from both
    /// users ([`direct_conv_id`]), so both sides and every device find the same one.
    pub async fn create_direct(&self, other: UserId) -> Result<Conversation> {
        let me = self.me()?;
        let conv = direct_conv_id(me, other);
        match self
            .create_conversation(conv, ConversationKind::Direct, &[other])
            .await
        {
            // The other side created it first: the server may count that as "created
            // differently" (another creator), but it is the same pair, so it is the one.
            Err(e) if e.code() == Some(ErrorCode::ConversationExists) => {
                let c = self.get_conversation(conv).await?;
                let pair = |u: UserId| c.members.iter().any(|m| m.user == u);
                if c.kind == ConversationKind::Direct && pair(me) && pair(other) {
                    Ok(c)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    /// A new group with the caller and `members`, under a fresh random id.
    pub async fn create_group(&self, members: &[UserId]) -> Result<Conversation> {
        self.create_conversation(new_conv_id(), ConversationKind::Group, members)
            .await
    }

    pub async fn get_conversation(&self, conv: ConvId) -> Result<Conversation> {
        let req = v1::GetConversationRequest {
            conv_id: conv.0.to_vec(),
        };
        let c = self
            .call("get_conversation", req, |ch, r| async move {
                MessengerClient::new(ch).get_conversation(r).await
            })
            .await?;
        Conversation::try_from(c)
    }

    /// Adds and removes members of a group.
    pub async fn change_members(
        &self,
        conv: ConvId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<Conversation> {
        let req = v1::ChangeMembersRequest {
            conv_id: conv.0.to_vec(),
            add: ids(add),
            remove: ids(remove),
        };
        let c = self
            .call("change_members", req, |ch, r| async move {
                MessengerClient::new(ch).change_members(r).await
            })
            .await?;
        Conversation::try_from(c)
    }

    /// The caller's conversations with unread counts (eventually consistent: a conversation
    /// someone else just added the caller to may take a moment to appear).
    pub async fn list_conversations(&self) -> Result<Vec<ConversationSummary>> {
        let r = self
            .call(
                "list_conversations",
                v1::ListConversationsRequest {},
                |ch, r| async move { MessengerClient::new(ch).list_conversations(r).await },
            )
            .await?;
        r.conversations
            .into_iter()
            .map(ConversationSummary::try_from)
            .collect()
    }

    /// Appends a message under the caller's idempotency key. Retries (on a lost connection,
    /// a leader change, a rate limit) reuse the key, so the message is stored once and the
    /// answer is its one seq.
    pub async fn send(
        &self,
        conv: ConvId,
        kind: MessageKind,
        body: Vec<u8>,
        client_msg_id: ClientMsgId,
    ) -> Result<Sent> {
        let req = v1::SendRequest {
            conv_id: conv.0.to_vec(),
            client_msg_id: client_msg_id.0.to_vec(),
            kind: v1::MessageKind::from(kind) as i32,
            body,
        };
        let r = self
            .call("send", req, |ch, r| async move {
                MessengerClient::new(ch).send(r).await
            })
            .await?;
        Ok(Sent {
            seq: r.seq,
            duplicate: r.duplicate,
            client_msg_id,
        })
    }

    /// Sends a text message under a fresh idempotency key.
    pub async fn send_text(&self, conv: ConvId, text: &str) -> Result<Sent> {
        self.send(
            conv,
            MessageKind::Text,
            text.as_bytes().to_vec(),
            new_client_msg_id(),
        )
        .await
    }

    /// Up to `limit` messages with seq > `after`, oldest first (the server's default limit
    /// when `limit` is 0).
    pub async fn history(&self, conv: ConvId, after: u64, limit: u32) -> Result<History> {
        self.history_page(conv, after, 0, limit).await
    }

    /// Up to `limit` of the newest messages with seq < `before`.
    pub async fn history_before(&self, conv: ConvId, before: u64, limit: u32) -> Result<History> {
        self.history_page(conv, 0, before, limit).await
    }

    async fn history_page(
        &self,
        conv: ConvId,
        after: u64,
        before: u64,
        limit: u32,
    ) -> Result<History> {
        let req = v1::HistoryRequest {
            conv_id: conv.0.to_vec(),
            after,
            before,
            limit,
        };
        let h = self
            .call("history", req, |ch, r| async move {
                MessengerClient::new(ch).history(r).await
            })
            .await?;
        History::try_from(h)
    }

    /// Every message in `conv` with seq in `from..=to`, page by page.
    pub async fn history_range(&self, conv: ConvId, from: u64, to: u64) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut after = from.saturating_sub(1);
        while after < to {
            let page = self.history(conv, after, 1000).await?;
            let Some(last) = page.messages.last().map(|m| m.seq) else {
                break;
            };
            if last <= after {
                // A server that does not move forward would loop forever.
                return Err(Error::missing("history progress"));
            }
            out.extend(page.messages.into_iter().filter(|m| m.seq <= to));
            after = last;
        }
        Ok(out)
    }

    /// Moves the caller's read cursor (shared by all of their devices) to `seq`; it never
    /// moves back. Returns the cursor after the call.
    pub async fn mark_read(&self, conv: ConvId, seq: u64) -> Result<u64> {
        let req = v1::MarkReadRequest {
            conv_id: conv.0.to_vec(),
            seq,
        };
        let r = self
            .call("mark_read", req, |ch, r| async move {
                MessengerClient::new(ch).mark_read(r).await
            })
            .await?;
        Ok(r.read_seq)
    }

    /// Everything new in the caller's conversations after the given positions (conversations
    /// not named start from seq 0), at most `limit_per_conversation` messages each (the
    /// server's default when 0).
    pub async fn sync(
        &self,
        cursors: &[(ConvId, u64)],
        limit_per_conversation: u32,
    ) -> Result<Vec<SyncedConversation>> {
        let req = v1::SyncRequest {
            cursors: cursors
                .iter()
                .map(|(c, s)| v1::Cursor {
                    conv_id: c.0.to_vec(),
                    seq: *s,
                })
                .collect(),
            limit_per_conversation,
        };
        let r = self
            .call("sync", req, |ch, r| async move {
                MessengerClient::new(ch).sync(r).await
            })
            .await?;
        r.conversations
            .into_iter()
            .map(SyncedConversation::try_from)
            .collect()
    }
}
