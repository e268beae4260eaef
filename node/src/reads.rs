//! Linearizable reads for the gateway's conversation list: a user's conversations (from the
//! user's shard) and conversation headers (from the conversations' shard).

use bongsu_proto::internal as pb;
use bongsu_proto::model::{shard_of, ConvId, UserId};
use bongsu_proto::{v1, ErrorCode, ModelError};
use bongsu_raft_store::messaging::layout::Role;
use bongsu_raft_store::meta::shard_group;

use crate::errors::{NodeError, Result};
use crate::node::Node;

/// Most conversations one ConversationInfo call describes.
const MAX_INFOS: usize = 1000;

fn bad(e: ModelError) -> NodeError {
    NodeError::rejected(e.code, e.to_string())
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Owner => "owner",
        Role::Member => "member",
        Role::Follower => "follower",
    }
}

impl Node {
    /// The conversations a user belongs to, with the user's read cursors. Filled through the
    /// conversations' outboxes, so a change shows up moments after it committed.
    pub async fn user_conversations(
        &self,
        req: pb::UserConversationsRequest,
    ) -> Result<pb::UserConversationsReply> {
        let user = UserId::try_from(req.user.as_slice()).map_err(bad)?;
        let group = shard_group(shard_of(&user.0, self.shard_count()?));
        let h = self.linearizable(group).await?;
        let conversations = h
            .messaging()
            .user_conversations(&user)?
            .into_iter()
            .map(|(conv, read_seq)| pb::UserConversation {
                conv_id: conv.0.to_vec(),
                read_seq,
            })
            .collect();
        Ok(pb::UserConversationsReply { conversations })
    }

    /// Headers of conversations that all live in one shard, read on its leader.
    pub async fn conversation_info(
        &self,
        req: pb::ConversationInfoRequest,
    ) -> Result<pb::ConversationInfoReply> {
        let shards = self.shard_count()?;
        if req.conv_ids.len() > MAX_INFOS {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                format!("conv_ids: at most {MAX_INFOS}"),
            ));
        }
        let convs = req
            .conv_ids
            .iter()
            .map(|b| ConvId::try_from(b.as_slice()).map_err(bad))
            .collect::<Result<Vec<_>>>()?;
        // An empty user matches nobody: the reply then carries no role.
        let user = if req.user.is_empty() {
            None
        } else {
            Some(UserId::try_from(req.user.as_slice()).map_err(bad)?)
        };
        let Some(first) = convs.first() else {
            return Ok(pb::ConversationInfoReply::default());
        };
        let shard = shard_of(&first.0, shards);
        if let Some(other) = convs.iter().find(|c| shard_of(&c.0, shards) != shard) {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                format!("conv_ids: {other} is not in shard {shard} like {first}"),
            ));
        }
        let h = self.linearizable(shard_group(shard)).await?;
        let view = h.messaging();
        let mut infos = Vec::with_capacity(convs.len());
        for conv in convs {
            let Some(c) = view.conversation(&conv)? else {
                infos.push(pb::ConvInfo {
                    conv_id: conv.0.to_vec(),
                    ..Default::default()
                });
                continue;
            };
            let role = match &user {
                Some(u) => view.role(&conv, u)?.map(role_name).unwrap_or(""),
                None => "",
            };
            let last_message = if c.last_seq > 0 {
                view.read_from(&conv, c.last_seq, 1)?
                    .into_iter()
                    .next()
                    .map(v1::Message::from)
            } else {
                None
            };
            let members = if req.with_members {
                view.members(&conv)?
                    .into_iter()
                    .map(|(u, r)| pb::MemberRole {
                        user: u.0.to_vec(),
                        role: role_name(r).to_string(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            infos.push(pb::ConvInfo {
                conv_id: conv.0.to_vec(),
                found: true,
                kind: v1::ConversationKind::from(c.kind) as i32,
                owner: c.owner.0.to_vec(),
                member_count: c.member_count,
                last_seq: c.last_seq,
                created_at_ms: c.created_at_ms,
                role: role.to_string(),
                last_message,
                members,
            });
        }
        Ok(pb::ConversationInfoReply { infos })
    }
}
