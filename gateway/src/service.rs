//! The gateway's operations, independent of the wire: gRPC (`grpc.rs`), HTTP/JSON (`http.rs`)
//! and WebSocket (`ws.rs`) all call these, so authorization and validation happen once.
//!
//! Requests and replies are the public protobuf types of `bongsu.v1`; ids inside them are
//! validated here (through `bongsu_proto::model`) before anything is sent to a node.

use std::pin::Pin;
use std::sync::Arc;

use bongsu_proto::model::{DeviceId, UserId};
use bongsu_proto::v1;
use futures::Stream;

use crate::config::Config;
use crate::errors::Result;
use crate::limits::RateLimits;

/// Who is calling: established from a verified access token by [`Gateway::authenticate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: UserId,
    pub device: DeviceId,
}

/// Live events for one device, in order, gap-free and duplicate-free per conversation.
pub type PushStream = Pin<Box<dyn Stream<Item = Result<v1::PushEvent>> + Send>>;

/// One gateway: node routing, token keys and the push hub, shared by every front end.
pub struct Gateway {
    pub config: Config,
    pub limits: RateLimits,
}

impl Gateway {
    /// Connects to the nodes, starts watching the shard map and signing keys, and returns at
    /// once; [`Gateway::ready`] says when requests can be served.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let limits = RateLimits::new(&config);
        Ok(Arc::new(Gateway { config, limits }))
    }

    /// True once the shard map and at least one signing key are known.
    pub fn ready(&self) -> bool {
        todo!()
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
        let _ = token;
        todo!()
    }

    pub async fn sign_up(&self, req: v1::SignUpRequest) -> Result<v1::Session> {
        let _ = req;
        todo!()
    }

    pub async fn sign_in(&self, req: v1::SignInRequest) -> Result<v1::Session> {
        let _ = req;
        todo!()
    }

    pub async fn refresh(&self, req: v1::RefreshRequest) -> Result<v1::Session> {
        let _ = req;
        todo!()
    }

    pub async fn list_devices(&self, c: &Caller) -> Result<v1::ListDevicesReply> {
        let _ = c;
        todo!()
    }

    pub async fn revoke_device(
        &self,
        c: &Caller,
        req: v1::RevokeDeviceRequest,
    ) -> Result<v1::RevokeDeviceReply> {
        let _ = (c, req);
        todo!()
    }

    pub async fn lookup_users(
        &self,
        c: &Caller,
        req: v1::LookupUsersRequest,
    ) -> Result<v1::LookupUsersReply> {
        let _ = (c, req);
        todo!()
    }

    pub async fn create_conversation(
        &self,
        c: &Caller,
        req: v1::CreateConversationRequest,
    ) -> Result<v1::Conversation> {
        let _ = (c, req);
        todo!()
    }

    pub async fn get_conversation(
        &self,
        c: &Caller,
        req: v1::GetConversationRequest,
    ) -> Result<v1::Conversation> {
        let _ = (c, req);
        todo!()
    }

    pub async fn change_members(
        &self,
        c: &Caller,
        req: v1::ChangeMembersRequest,
    ) -> Result<v1::Conversation> {
        let _ = (c, req);
        todo!()
    }

    pub async fn list_conversations(&self, c: &Caller) -> Result<v1::ListConversationsReply> {
        let _ = c;
        todo!()
    }

    pub async fn send(&self, c: &Caller, req: v1::SendRequest) -> Result<v1::SendReply> {
        let _ = (c, req);
        todo!()
    }

    pub async fn history(&self, c: &Caller, req: v1::HistoryRequest) -> Result<v1::HistoryReply> {
        let _ = (c, req);
        todo!()
    }

    pub async fn mark_read(
        &self,
        c: &Caller,
        req: v1::MarkReadRequest,
    ) -> Result<v1::MarkReadReply> {
        let _ = (c, req);
        todo!()
    }

    pub async fn sync(&self, c: &Caller, req: v1::SyncRequest) -> Result<v1::SyncReply> {
        let _ = (c, req);
        todo!()
    }

    /// Catch-up from the cursors, then live events; ends when the client goes away.
    pub async fn subscribe(&self, c: &Caller, req: v1::SubscribeRequest) -> Result<PushStream> {
        let _ = (c, req);
        todo!()
    }
}
