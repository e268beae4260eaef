//! The internal API gateways use: writes and linearizable reads on shard leaders, shard
//! subscriptions and the shard map. Account writes and reads are in [`crate::accounts`], the
//! conversation-list reads in [`crate::reads`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bongsu_proto::internal::node_api_server::NodeApi;
use bongsu_proto::internal::{
    self as pb, write_reply, write_request, ReadReply, ReadRequest, ShardMap, SubscribeEvent,
    SubscribeRequest, WatchShardMapRequest, WriteReply, WriteRequest,
};
use bongsu_proto::model::requests::Append;
use bongsu_proto::model::{shard_of, ConvId, ConversationKind, UserId};
use bongsu_proto::{v1, ErrorCode, ModelError};
use bongsu_raft_store::messaging::layout::UserEventKind;
use bongsu_raft_store::messaging::{
    AppendMessage, ChangeMembers, CreateConversation, MoveCursor, ShardEvent,
};
use bongsu_raft_store::meta::{shard_group, MetaSnapshot};
use bongsu_raft_store::{Command, CommandResult};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::errors::{NodeError, Result};
use crate::node::Node;

/// Largest page a read returns.
const MAX_READ: u32 = 1000;

pub struct ApiService {
    node: Arc<Node>,
}

impl ApiService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn bad(e: ModelError) -> NodeError {
    NodeError::Rejected {
        code: e.code,
        reason: e.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn users(list: &[Vec<u8>]) -> Result<Vec<UserId>> {
    list.iter()
        .map(|b| UserId::try_from(b.as_slice()).map_err(bad))
        .collect()
}

/// Validates a write and turns it into a command, with the id that decides its shard.
fn command(req: WriteRequest) -> Result<([u8; 16], Command)> {
    let at_ms = now_ms();
    let cmd = req
        .command
        .ok_or_else(|| NodeError::rejected(ErrorCode::InvalidArgument, "command: missing"))?;
    Ok(match cmd {
        write_request::Command::Create(c) => {
            let conv_id = ConvId::try_from(c.conv_id.as_slice()).map_err(bad)?;
            let kind = ConversationKind::try_from(c.kind).map_err(bad)?;
            let creator = UserId::try_from(c.creator.as_slice()).map_err(bad)?;
            (
                conv_id.0,
                Command::CreateConversation(CreateConversation {
                    conv_id,
                    kind,
                    creator,
                    members: users(&c.members)?,
                    at_ms,
                }),
            )
        }
        write_request::Command::ChangeMembers(c) => {
            let conv_id = ConvId::try_from(c.conv_id.as_slice()).map_err(bad)?;
            let actor = UserId::try_from(c.actor.as_slice()).map_err(bad)?;
            (
                conv_id.0,
                Command::ChangeMembers(ChangeMembers {
                    conv_id,
                    actor,
                    add: users(&c.add)?,
                    remove: users(&c.remove)?,
                    at_ms,
                }),
            )
        }
        write_request::Command::Append(m) => {
            // The same validated request the gateway built from the client's send: a
            // gateway is a client of the node too, so the node checks the rules again.
            let Append {
                sender,
                device,
                send,
            } = Append::try_from(m).map_err(bad)?;
            let msg = AppendMessage {
                conv_id: send.conv,
                sender,
                device,
                client_msg_id: send.client_msg_id,
                kind: send.kind,
                body: send.body,
                at_ms,
            };
            (send.conv.0, Command::Append(msg))
        }
        write_request::Command::MoveCursor(c) => {
            let user = UserId::try_from(c.user.as_slice()).map_err(bad)?;
            let conv_id = ConvId::try_from(c.conv_id.as_slice()).map_err(bad)?;
            // A read cursor is the user's own state: it lives in the user's shard.
            (
                user.0,
                Command::MoveCursor(MoveCursor {
                    user,
                    conv_id,
                    seq: c.seq,
                }),
            )
        }
        // A variant this node does not know (a newer proto) is refused rather than guessed at.
        other => crate::accounts::command(&other, at_ms)?.ok_or_else(|| {
            NodeError::rejected(ErrorCode::InvalidArgument, "command: not supported")
        })?,
    })
}

impl Node {
    /// Applies a validated write on the shard that owns it.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteReply> {
        let (key, cmd) = command(req)?;
        let shard = shard_of(&key, self.shard_count()?);
        let (res, log_index) = self.write_local(shard_group(shard), cmd).await?;
        let result = match res {
            CommandResult::Created { .. } => write_reply::Result::Created(true),
            CommandResult::MembersChanged { member_count } => {
                write_reply::Result::MemberCount(member_count)
            }
            CommandResult::Appended { seq, duplicate } => {
                write_reply::Result::Appended(pb::Appended { seq, duplicate })
            }
            CommandResult::CursorMoved { seq } => write_reply::Result::Cursor(seq),
            CommandResult::Account { user_id } => write_reply::Result::UserId(user_id.0.to_vec()),
            CommandResult::Rejected(r) => {
                return Err(NodeError::Rejected {
                    code: r.code,
                    reason: r.reason,
                })
            }
            other => return Err(NodeError::Raft(format!("unexpected result {other:?}"))),
        };
        Ok(WriteReply {
            shard,
            log_index,
            result: Some(result),
        })
    }

    /// A linearizable page of a conversation's messages, for members only.
    pub async fn read(&self, req: ReadRequest) -> Result<ReadReply> {
        let conv = ConvId::try_from(req.conv_id.as_slice()).map_err(bad)?;
        let user = UserId::try_from(req.user.as_slice()).map_err(bad)?;
        let group = shard_group(shard_of(&conv.0, self.shard_count()?));
        let h = self.linearizable(group).await?;
        let view = h.messaging();
        let Some(info) = view.conversation(&conv)? else {
            return Err(NodeError::rejected(
                ErrorCode::UnknownConversation,
                format!("no conversation {conv}"),
            ));
        };
        if view.role(&conv, &user)?.is_none() {
            return Err(NodeError::rejected(
                ErrorCode::NotMember,
                format!("{user} is not a member of {conv}"),
            ));
        }
        let limit = req.limit.clamp(1, MAX_READ) as usize;
        let messages = if req.before_seq > 0 {
            view.read_before(&conv, req.before_seq, limit)?
        } else {
            view.read_from(&conv, req.from_seq.max(1), limit)?
        };
        Ok(ReadReply {
            messages: messages.into_iter().map(v1::Message::from).collect(),
            last_seq: info.last_seq,
        })
    }

    pub fn shard_map(&self, meta: &MetaSnapshot) -> ShardMap {
        ShardMap {
            version: meta.version,
            shard_count: meta.config.as_ref().map(|c| c.shards).unwrap_or(0),
            nodes: meta
                .nodes
                .iter()
                .map(|n| pb::NodeEntry {
                    node_id: n.node_id,
                    dc: n.dc.clone(),
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                    admin_addr: n.admin_addr.clone(),
                    state: n.state.as_str().to_string(),
                })
                .collect(),
            shards: meta
                .shards
                .iter()
                .map(|s| pb::ShardEntry {
                    shard: s.shard,
                    voters: s.voters.clone(),
                    learners: s.learners.clone(),
                    leader_hint: self
                        .leader_of(shard_group(s.shard))
                        .map(|(id, _)| id)
                        .unwrap_or(0),
                })
                .collect(),
            signing_keys: meta
                .signing_keys
                .iter()
                .map(|k| pb::SigningKeyEntry {
                    kid: k.kid.clone(),
                    seed: k.seed.to_vec(),
                    public_key: k.public.to_vec(),
                    created_at_ms: k.created_at_ms,
                    retired_at_ms: k.retired_at_ms.unwrap_or(0),
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl NodeApi for ApiService {
    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        Ok(Response::new(self.node.write(req.into_inner()).await?))
    }

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        Ok(Response::new(self.node.read(req.into_inner()).await?))
    }

    async fn resolve_handle(
        &self,
        req: Request<pb::ResolveHandleRequest>,
    ) -> Result<Response<pb::ResolveHandleReply>, Status> {
        Ok(Response::new(
            self.node.resolve_handle(req.into_inner()).await?,
        ))
    }

    async fn get_account(
        &self,
        req: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountReply>, Status> {
        Ok(Response::new(
            self.node.get_account(req.into_inner()).await?,
        ))
    }

    async fn user_conversations(
        &self,
        req: Request<pb::UserConversationsRequest>,
    ) -> Result<Response<pb::UserConversationsReply>, Status> {
        Ok(Response::new(
            self.node.user_conversations(req.into_inner()).await?,
        ))
    }

    async fn conversation_info(
        &self,
        req: Request<pb::ConversationInfoRequest>,
    ) -> Result<Response<pb::ConversationInfoReply>, Status> {
        Ok(Response::new(
            self.node.conversation_info(req.into_inner()).await?,
        ))
    }

    type SubscribeStream = ReceiverStream<Result<SubscribeEvent, Status>>;

    /// Streams what a shard applied (messages, user events of the users it holds, and the
    /// removals from the conversations it holds) from any replica that hosts it, one event per
    /// log index in log-index order, resuming after `after_index` (or after the
    /// newest applied entry with `from_latest`); the stream waits for new entries and ends
    /// when the client goes away. A resume from events retention pruned ends the stream with
    /// `EVENTS_PRUNED` (ARCHITECTURE.md invariant 10).
    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = req.into_inner();
        let group = shard_group(req.shard);
        let h = self
            .node
            .group(group)
            .ok_or_else(|| self.node.not_leader(group))?;
        let mut after = if req.from_latest {
            h.messaging().applied_index().map_err(NodeError::from)?
        } else {
            req.after_index
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut metrics = h.raft.metrics();
            loop {
                let events = match h.messaging().resume_after(after, 256) {
                    Ok(Ok(e)) => e,
                    Ok(Err(pruned)) => {
                        let e = NodeError::rejected(ErrorCode::EventsPruned, pruned.to_string());
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(NodeError::from(e).into())).await;
                        return;
                    }
                };
                if events.is_empty() {
                    tokio::select! {
                        r = metrics.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                        // The state machine can apply without a metrics change being seen.
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
                for (index, ev) in events {
                    after = index;
                    if tx.send(Ok(subscribe_event(index, ev))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchShardMapStream = ReceiverStream<Result<ShardMap, Status>>;

    async fn watch_shard_map(
        &self,
        _: Request<WatchShardMapRequest>,
    ) -> Result<Response<Self::WatchShardMapStream>, Status> {
        let node = self.node.clone();
        let mut rx = node.watch_meta();
        let (tx, out) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let map = node.shard_map(&rx.borrow_and_update().clone());
                if tx.send(Ok(map)).await.is_err() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}

/// One event per log index: several user events of one entry travel together, so that a
/// subscriber resuming after an index never skips or repeats part of an entry.
fn subscribe_event(log_index: u64, ev: ShardEvent) -> SubscribeEvent {
    match ev {
        ShardEvent::Message(m) => SubscribeEvent {
            log_index,
            message: Some(m.into()),
            user_events: Vec::new(),
        },
        ShardEvent::Users(us) => SubscribeEvent {
            log_index,
            message: None,
            user_events: us
                .into_iter()
                .map(|u| {
                    let kind = match u.kind {
                        UserEventKind::Joined => pb::user_event::Kind::Joined,
                        UserEventKind::Left => pb::user_event::Kind::Left,
                        UserEventKind::Read => pb::user_event::Kind::Read,
                    };
                    pb::UserEvent {
                        user: u.user.0.to_vec(),
                        conv_id: u.conv.0.to_vec(),
                        kind: kind as i32,
                        seq: u.seq,
                    }
                })
                .collect(),
        },
    }
}
