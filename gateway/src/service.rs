//! The gateway's operations, independent of the wire: gRPC (`grpc.rs`), HTTP/JSON (`http.rs`)
//! and WebSocket (`ws.rs`) all call these, so authorization and validation happen once.
//!
//! Requests and replies are the public protobuf types of `bongsu.v1`; ids inside them are
//! validated here (through `bongsu_proto::model`) before anything is sent to a node.
//!
//! Authorization: the nodes refuse reads and appends by non-members themselves; what lives in
//! another shard than the conversation (the caller's read cursor, conversation list) is checked
//! here against the conversation's shard first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bongsu_proto::internal::{
    write_reply, write_request, AppendMessage, ChangeMembers, ConvInfo, ConversationInfoRequest,
    CreateConversation, MemberRole, MoveCursor, ReadReply, ReadRequest, UserConversationsRequest,
};
use bongsu_proto::model::requests::{
    self as req, Append, History, Lookup, NewConversation, Page, Subscribe,
};
use bongsu_proto::model::{ConvId, ConversationKind, UserId};
use bongsu_proto::{v1, ErrorCode};
use tracing::instrument;

use crate::auth::{Auth, Caller};
use crate::config::Config;
use crate::errors::{ApiError, Result};
use crate::limits::RateLimits;
use crate::push::{PushHub, PushStream};
use crate::router::Router;

/// Members shown in a conversation summary.
const SUMMARY_MEMBERS: usize = 10;
/// Node calls one request makes at once (conversations of a Sync, members to look up).
const FAN_OUT: usize = 16;
/// Past this many cached handles the cache starts over (memory stays bounded).
const HANDLE_CACHE_MAX: usize = 100_000;

fn conv_id(bytes: &[u8]) -> Result<ConvId> {
    Ok(ConvId::try_from(bytes)?)
}

/// A node replied with something this gateway cannot read: a version mismatch or a bug.
fn bad_reply(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CorruptData,
        format!("a node sent a malformed {what}"),
    )
}

/// One gateway: node routing, token keys and the push hub, shared by every front end.
pub struct Gateway {
    pub config: Config,
    pub limits: RateLimits,
    pub(crate) router: Arc<Router>,
    pub(crate) auth: Auth,
    pub(crate) push: Arc<PushHub>,
    /// User id → handle, for member lists (handles never change once claimed).
    handles: Mutex<HashMap<UserId, String>>,
    /// Itself, for the push sessions that outlive the call that started them.
    me: Weak<Gateway>,
}

impl Gateway {
    /// Connects to the nodes, starts watching the shard map and signing keys, and returns at
    /// once; [`Gateway::ready`] says when requests can be served.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        anyhow::ensure!(!config.nodes.is_empty(), "--nodes names no node");
        let limits = RateLimits::new(&config);
        let security = bongsu_proto::tls::Security::for_tool(
            config.tls_dir.as_deref(),
            config.insecure_plaintext,
            bongsu_proto::tls::Role::Gateway,
        )?;
        let router = Router::start(config.clone(), security);
        let auth = Auth::new(&config, router.clone());
        let push = PushHub::new(router.clone(), config.dc.clone());
        Ok(Arc::new_cyclic(|me| Gateway {
            config,
            limits,
            router,
            auth,
            push,
            handles: Mutex::new(HashMap::new()),
            me: me.clone(),
        }))
    }

    /// True once the shard map and at least one signing key are known.
    pub fn ready(&self) -> bool {
        self.router.map().shard_count() > 0 && self.auth.keys().can_sign()
    }

    pub fn info(&self) -> v1::ServerInfoReply {
        v1::ServerInfoReply {
            gateway_id: self.config.id.clone(),
            dc: self.config.dc.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Verifies an access token (signature, expiry, device not revoked); `UNAUTHENTICATED`
    /// otherwise. `token` is the bare token, without `Bearer `.
    pub async fn authenticate(&self, token: &str) -> Result<Caller> {
        self.auth.authenticate(token).await
    }

    pub async fn sign_up(&self, req: v1::SignUpRequest) -> Result<v1::Session> {
        self.auth.sign_up(req).await
    }

    pub async fn sign_in(&self, req: v1::SignInRequest) -> Result<v1::Session> {
        self.auth.sign_in(req).await
    }

    pub async fn refresh(&self, req: v1::RefreshRequest) -> Result<v1::Session> {
        self.auth.refresh(req).await
    }

    pub async fn list_devices(&self, c: &Caller) -> Result<v1::ListDevicesReply> {
        self.auth.list_devices(c).await
    }

    pub async fn revoke_device(
        &self,
        c: &Caller,
        req: v1::RevokeDeviceRequest,
    ) -> Result<v1::RevokeDeviceReply> {
        self.auth.revoke_device(c, req).await
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device))]
    pub async fn lookup_users(
        &self,
        c: &Caller,
        req: v1::LookupUsersRequest,
    ) -> Result<v1::LookupUsersReply> {
        let Lookup {
            handles,
            user_ids: ids,
        } = Lookup::try_from(req)?;
        let by_handle = all_bounded(
            handles
                .into_iter()
                .map(|h| self.user_by_handle(h))
                .collect(),
        )
        .await?;
        let by_id = all_bounded(ids.into_iter().map(|u| self.user_by_id(u)).collect()).await?;
        let mut seen = HashSet::new();
        let users = by_handle
            .into_iter()
            .chain(by_id)
            .flatten()
            .filter(|(u, _)| seen.insert(*u))
            .map(|(u, handle)| v1::User {
                user_id: u.0.to_vec(),
                handle,
            })
            .collect();
        Ok(v1::LookupUsersReply { users })
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn create_conversation(
        &self,
        c: &Caller,
        req: v1::CreateConversationRequest,
    ) -> Result<v1::Conversation> {
        let NewConversation {
            conv,
            kind,
            members: asked,
        } = NewConversation::try_from(req)?;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        let mut members = Vec::new();
        for u in asked {
            if u != c.user && !members.contains(&u) {
                members.push(u);
            }
        }
        if kind == ConversationKind::Direct && members.len() != 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidMembers,
                "a direct conversation has exactly one other member",
            ));
        }
        self.require_users(&members).await?;
        self.router
            .write(
                &conv.0,
                write_request::Command::Create(CreateConversation {
                    conv_id: conv.0.to_vec(),
                    kind: v1::ConversationKind::from(kind) as i32,
                    creator: c.user.0.to_vec(),
                    members: members.iter().map(|u| u.0.to_vec()).collect(),
                }),
            )
            .await?;
        self.conversation(c, conv, false).await
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn get_conversation(
        &self,
        c: &Caller,
        req: v1::GetConversationRequest,
    ) -> Result<v1::Conversation> {
        let conv = conv_id(&req.conv_id)?;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        self.conversation(c, conv, false).await
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn change_members(
        &self,
        c: &Caller,
        req: v1::ChangeMembersRequest,
    ) -> Result<v1::Conversation> {
        let req::ChangeMembers { conv, add, remove } = req::ChangeMembers::try_from(req)?;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        self.require_users(&add).await?;
        self.router
            .write(
                &conv.0,
                write_request::Command::ChangeMembers(ChangeMembers {
                    conv_id: conv.0.to_vec(),
                    actor: c.user.0.to_vec(),
                    add: add.iter().map(|u| u.0.to_vec()).collect(),
                    remove: remove.iter().map(|u| u.0.to_vec()).collect(),
                }),
            )
            .await?;
        // A caller who just left still gets the outcome of their own change.
        self.conversation(c, conv, remove.contains(&c.user)).await
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device))]
    pub async fn list_conversations(&self, c: &Caller) -> Result<v1::ListConversationsReply> {
        let list = self.user_conversations(&c.user).await?;
        Ok(v1::ListConversationsReply {
            conversations: self.summaries(&c.user, &list).await?,
        })
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn send(&self, c: &Caller, req: v1::SendRequest) -> Result<v1::SendReply> {
        let send = req::Send::try_from(req)?;
        let conv = send.conv;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        let append = Append {
            sender: c.user,
            device: c.device,
            send,
        };
        let reply = self
            .router
            .write(
                &conv.0,
                write_request::Command::Append(AppendMessage::from(append)),
            )
            .await?;
        match reply.result {
            Some(write_reply::Result::Appended(a)) => Ok(v1::SendReply {
                seq: a.seq,
                duplicate: a.duplicate,
            }),
            _ => Err(bad_reply("append reply")),
        }
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn history(&self, c: &Caller, req: v1::HistoryRequest) -> Result<v1::HistoryReply> {
        let History { conv, page, limit } = History::try_from(req)?;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        let reply = match page {
            Page::Before(before) => self.read(&c.user, &conv, 0, before, limit).await?,
            Page::After(after) => {
                self.read(&c.user, &conv, after.saturating_add(1), 0, limit)
                    .await?
            }
        };
        Ok(v1::HistoryReply {
            messages: reply.messages,
            last_seq: reply.last_seq,
        })
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device, conv_id))]
    pub async fn mark_read(
        &self,
        c: &Caller,
        req: v1::MarkReadRequest,
    ) -> Result<v1::MarkReadReply> {
        let conv = conv_id(&req.conv_id)?;
        tracing::Span::current().record("conv_id", tracing::field::display(&conv));
        // The cursor lives in the caller's shard, which cannot see the conversation: the
        // conversation's shard says whether the caller may read it and how far there is.
        let info = self.member_info(&c.user, &conv, false).await?;
        let reply = self
            .router
            .write(
                &c.user.0,
                write_request::Command::MoveCursor(MoveCursor {
                    user: c.user.0.to_vec(),
                    conv_id: conv.0.to_vec(),
                    seq: req.seq.min(info.last_seq),
                }),
            )
            .await?;
        match reply.result {
            Some(write_reply::Result::Cursor(read_seq)) => Ok(v1::MarkReadReply { read_seq }),
            _ => Err(bad_reply("cursor reply")),
        }
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device))]
    pub async fn sync(&self, c: &Caller, req: v1::SyncRequest) -> Result<v1::SyncReply> {
        let req::Sync { cursors, limit } = req::Sync::try_from(req)?;
        let cursors: HashMap<ConvId, u64> = cursors.into_iter().collect();
        let list = self.user_conversations(&c.user).await?;
        let summaries = self.summaries(&c.user, &list).await?;
        let conversations = all_bounded(
            summaries
                .into_iter()
                .map(|s| self.sync_one(&c.user, s, &cursors, limit))
                .collect(),
        )
        .await?;
        Ok(v1::SyncReply { conversations })
    }

    /// Catch-up from the cursors, then live events; ends when the client goes away.
    #[instrument(skip_all, fields(user = %c.user, device = %c.device))]
    pub async fn subscribe(&self, c: &Caller, req: v1::SubscribeRequest) -> Result<PushStream> {
        let cursors = Subscribe::try_from(req)?.cursors.into_iter().collect();
        let gw = self
            .me
            .upgrade()
            .ok_or_else(|| ApiError::unavailable("the gateway is shutting down"))?;
        Ok(crate::push::session(gw, *c, cursors))
    }
}

/// Node calls shared by the operations above and by push sessions.
impl Gateway {
    /// Messages of a conversation the reader belongs to (the node checks membership).
    pub(crate) async fn read(
        &self,
        user: &UserId,
        conv: &ConvId,
        from_seq: u64,
        before_seq: u64,
        limit: u32,
    ) -> Result<ReadReply> {
        let shard = self.router.shard(&conv.0).await?;
        let req = ReadRequest {
            conv_id: conv.0.to_vec(),
            user: user.0.to_vec(),
            from_seq,
            before_seq,
            limit,
        };
        self.router
            .call(shard, |mut n| {
                let req = req.clone();
                async move { n.read(req).await }
            })
            .await
    }

    /// The conversations a user joined, with their read cursors.
    pub(crate) async fn user_conversations(&self, user: &UserId) -> Result<Vec<(ConvId, u64)>> {
        let shard = self.router.shard(&user.0).await?;
        let req = UserConversationsRequest {
            user: user.0.to_vec(),
        };
        let reply = self
            .router
            .call(shard, |mut n| {
                let req = req.clone();
                async move { n.user_conversations(req).await }
            })
            .await?;
        reply
            .conversations
            .into_iter()
            .map(|uc| {
                Ok((
                    conv_id(&uc.conv_id).map_err(|_| bad_reply("conversation id"))?,
                    uc.read_seq,
                ))
            })
            .collect()
    }

    /// Headers of many conversations and `user`'s role in each: one call per shard, shards in
    /// parallel. Conversations the node does not return are left out.
    pub(crate) async fn conv_infos(
        &self,
        user: &UserId,
        convs: &[ConvId],
        with_members: bool,
    ) -> Result<HashMap<ConvId, ConvInfo>> {
        let mut by_shard: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        for c in convs {
            by_shard
                .entry(self.router.shard(&c.0).await?)
                .or_default()
                .push(c.0.to_vec());
        }
        let replies = all_bounded(
            by_shard
                .into_iter()
                .map(|(shard, conv_ids)| {
                    self.conv_info_call(
                        shard,
                        ConversationInfoRequest {
                            conv_ids,
                            user: user.0.to_vec(),
                            with_members,
                        },
                    )
                })
                .collect(),
        )
        .await?;
        let mut out = HashMap::new();
        for info in replies.into_iter().flatten() {
            let id = conv_id(&info.conv_id).map_err(|_| bad_reply("conversation id"))?;
            out.insert(id, info);
        }
        Ok(out)
    }

    /// The header of one conversation `user` belongs to: `UNKNOWN_CONVERSATION` or
    /// `NOT_MEMBER` otherwise.
    async fn member_info(
        &self,
        user: &UserId,
        conv: &ConvId,
        with_members: bool,
    ) -> Result<ConvInfo> {
        let info = self
            .conv_infos(user, &[*conv], with_members)
            .await?
            .remove(conv)
            .filter(|i| i.found)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownConversation,
                    format!("no conversation {conv}"),
                )
            })?;
        if info.role.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NotMember,
                format!("not a member of {conv}"),
            ));
        }
        Ok(info)
    }

    /// A conversation with every member's handle. `even_if_left` skips the membership check
    /// for a caller who just removed themselves.
    async fn conversation(
        &self,
        c: &Caller,
        conv: ConvId,
        even_if_left: bool,
    ) -> Result<v1::Conversation> {
        let info = match self.member_info(&c.user, &conv, true).await {
            Ok(i) => i,
            Err(e) if even_if_left && e.code == ErrorCode::NotMember => self
                .conv_infos(&c.user, &[conv], true)
                .await?
                .remove(&conv)
                .ok_or(e)?,
            Err(e) => return Err(e),
        };
        Ok(v1::Conversation {
            conv_id: conv.0.to_vec(),
            kind: info.kind,
            members: self.members(&info, usize::MAX).await?,
            last_seq: info.last_seq,
            created_at_ms: info.created_at_ms,
        })
    }

    /// Summaries of conversations `user` is still a member of (the list in the user's shard
    /// is updated through an outbox, so the conversation's shard has the last word).
    pub(crate) async fn summaries(
        &self,
        user: &UserId,
        list: &[(ConvId, u64)],
    ) -> Result<Vec<v1::ConversationSummary>> {
        let ids: Vec<ConvId> = list.iter().map(|(c, _)| *c).collect();
        let mut infos = self.conv_infos(user, &ids, true).await?;
        let mut pending = Vec::with_capacity(list.len());
        for (conv, read_seq) in list {
            if let Some(info) = infos.remove(conv).filter(|i| i.found && !i.role.is_empty()) {
                pending.push(self.summary(info, *read_seq));
            }
        }
        all_bounded(pending).await
    }

    async fn summary(&self, info: ConvInfo, read_seq: u64) -> Result<v1::ConversationSummary> {
        let read_seq = read_seq.min(info.last_seq);
        Ok(v1::ConversationSummary {
            members: self.members(&info, SUMMARY_MEMBERS).await?,
            conv_id: info.conv_id,
            kind: info.kind,
            last_seq: info.last_seq,
            read_seq,
            unread: info.last_seq - read_seq,
            last_message: info.last_message,
        })
    }

    async fn members(&self, info: &ConvInfo, at_most: usize) -> Result<Vec<v1::Member>> {
        all_bounded(
            info.members
                .iter()
                .take(at_most)
                .map(|m| self.member(m))
                .collect(),
        )
        .await
    }

    async fn member(&self, m: &MemberRole) -> Result<v1::Member> {
        let user = UserId::try_from(m.user.as_slice()).map_err(|_| bad_reply("member id"))?;
        Ok(v1::Member {
            user_id: m.user.clone(),
            handle: self.handle_of(&user).await?.unwrap_or_default(),
            role: m.role.clone(),
        })
    }

    /// A user's handle, from the cache or the user's shard; `None` for no such account.
    pub(crate) async fn handle_of(&self, user: &UserId) -> Result<Option<String>> {
        if let Some(h) = self
            .handles
            .lock()
            .expect("handle cache lock poisoned")
            .get(user)
        {
            return Ok(Some(h.clone()));
        }
        let Some(account) = self.router.account(user).await? else {
            return Ok(None);
        };
        let mut cache = self.handles.lock().expect("handle cache lock poisoned");
        if cache.len() >= HANDLE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(*user, account.handle.clone());
        Ok(Some(account.handle))
    }

    /// `UNKNOWN_USER` unless every one of `users` has an account.
    async fn require_users(&self, users: &[UserId]) -> Result<()> {
        all_bounded(users.iter().map(|u| self.require_user(u)).collect())
            .await
            .map(|_| ())
    }

    async fn require_user(&self, user: &UserId) -> Result<()> {
        match self.handle_of(user).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                ErrorCode::UnknownUser,
                format!("no user {user}"),
            )),
        }
    }

    async fn user_by_handle(&self, handle: String) -> Result<Option<(UserId, String)>> {
        Ok(self
            .router
            .resolve_handle(&handle)
            .await?
            .map(|u| (u, handle)))
    }

    async fn user_by_id(&self, user: UserId) -> Result<Option<(UserId, String)>> {
        Ok(self.handle_of(&user).await?.map(|h| (user, h)))
    }

    async fn conv_info_call(
        &self,
        shard: u32,
        req: ConversationInfoRequest,
    ) -> Result<Vec<ConvInfo>> {
        let reply = self
            .router
            .call(shard, |mut n| {
                let req = req.clone();
                async move { n.conversation_info(req).await }
            })
            .await?;
        Ok(reply.infos)
    }

    /// One conversation of a Sync: its summary, and messages after the device's cursor.
    async fn sync_one(
        &self,
        user: &UserId,
        summary: v1::ConversationSummary,
        cursors: &HashMap<ConvId, u64>,
        limit: u32,
    ) -> Result<v1::ConversationSync> {
        let conv = conv_id(&summary.conv_id).map_err(|_| bad_reply("conversation id"))?;
        let after = cursors.get(&conv).copied().unwrap_or(0);
        let mut sync = v1::ConversationSync {
            messages: Vec::new(),
            has_more: false,
            conversation: None,
        };
        if summary.last_seq > after {
            let r = self
                .read(user, &conv, after.saturating_add(1), 0, limit)
                .await?;
            let reached = r.messages.last().map_or(after, |m| m.seq);
            sync.has_more = reached < r.last_seq;
            sync.messages = r.messages;
        }
        sync.conversation = Some(summary);
        Ok(sync)
    }
}

/// Runs futures at most [`FAN_OUT`] at a time, keeping their order; the first error wins.
///
/// It takes the futures already built: an iterator that borrows (a closure over references)
/// held across the awaits here would make the caller's future not `Send`.
async fn all_bounded<T, F>(futs: Vec<F>) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut it = futs.into_iter();
    let mut out = Vec::new();
    loop {
        let chunk: Vec<F> = it.by_ref().take(FAN_OUT).collect();
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend(futures::future::try_join_all(chunk).await?);
    }
}
