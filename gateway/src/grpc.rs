//! The public gRPC API (`bongsu.v1.Auth`, `bongsu.v1.Messenger`) over [`Gateway`].
//!
//! This file only translates: metadata to a [`Caller`], rate limits, and [`ApiError`] to
//! `tonic::Status` (through `errors.rs`). The tower stack around both services sheds load
//! beyond `max_concurrency` at once (a full gateway answers `UNAVAILABLE` with `retry-after`
//! so the client tries another) and bounds every call by the request deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bongsu_proto::v1;
use bongsu_proto::v1::auth_server::{Auth, AuthServer};
use bongsu_proto::v1::messenger_server::{Messenger, MessengerServer};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::BoxError;
use tower_http::trace::TraceLayer;

use crate::auth::Caller;
use crate::errors::{ApiError, Result};
use crate::limits::tower_error;
use crate::service::Gateway;

/// Extra time tonic's own deadline allows over ours: it is a backstop that answers without a
/// stable code, so ours must always fire first.
const BACKSTOP: Duration = Duration::from_secs(1);

/// Serves gRPC on `addr` until the process ends.
pub async fn serve(gw: Arc<Gateway>, addr: SocketAddr) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(gw.config.request_timeout_ms.max(1));
    let stack = tower::ServiceBuilder::new()
        .layer(TraceLayer::new_for_grpc())
        .map_response(stable_code_on_tonic_errors)
        .map_err(move |e: BoxError| -> BoxError {
            Box::new(Status::from(tower_error(&*e, timeout)))
        })
        .layer(LoadShedLayer::new())
        // Global, not per connection: the limit protects this process and the nodes behind it.
        .layer(GlobalConcurrencyLimitLayer::new(
            gw.config.max_concurrency.max(1),
        ))
        .layer(TimeoutLayer::new(timeout));
    let svc = GrpcApi { gw };
    tracing::info!(%addr, "serving gRPC");
    tonic::transport::Server::builder()
        .timeout(timeout + BACKSTOP)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(stack)
        .add_service(AuthServer::new(svc.clone()))
        .add_service(MessengerServer::new(svc))
        .serve(addr)
        .await
        .map_err(|e| anyhow::anyhow!("serve gRPC on {addr}: {e}"))
}

/// tonic answers some failures itself, before any code of ours runs, with no stable code: a
/// request that is not valid protobuf is `INTERNAL` "failed to decode Protobuf message". Those
/// answers are trailers-only (the status is in the headers), so they are fixed here: a decode
/// failure is the client's `INVALID_ARGUMENT`, and any other bare status gets the stable code
/// its gRPC code maps to.
fn stable_code_on_tonic_errors<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let h = resp.headers_mut();
    let Some(status) = h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return resp;
    };
    if status == tonic::Code::Ok as i32 || h.contains_key(crate::errors::CODE_KEY) {
        return resp;
    }
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let code = if status == tonic::Code::Internal as i32 && message.contains("decode") {
        h.insert(
            "grpc-status",
            axum::http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
        bongsu_proto::ErrorCode::InvalidArgument
    } else {
        ApiError::from(Status::new(tonic::Code::from(status), "")).code
    };
    h.insert(
        crate::errors::CODE_KEY,
        axum::http::HeaderValue::from_static(code.as_str()),
    );
    resp
}

#[derive(Clone)]
struct GrpcApi {
    gw: Arc<Gateway>,
}

fn remote_ip<T>(req: &Request<T>) -> IpAddr {
    req.remote_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

impl GrpcApi {
    /// Every call: the per-IP limit.
    fn open<T>(&self, req: &Request<T>) -> Result<()> {
        self.gw.limits.check_ip(remote_ip(req))
    }

    /// Sign-up, sign-in and refresh: also the (much lower) per-IP limit on credentials.
    fn open_auth<T>(&self, req: &Request<T>) -> Result<()> {
        self.open(req)?;
        self.gw.limits.check_auth(remote_ip(req))
    }

    /// Calls that need a signed-in device: the bearer token, then the caller's limit.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        self.open(req)?;
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| ApiError::unauthenticated("missing authorization metadata"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("authorization must be `Bearer <token>`"))?;
        let caller = self.gw.authenticate(token).await?;
        self.gw.limits.check_user(&caller.user)?;
        Ok(caller)
    }
}

fn reply<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

type PushStream = Pin<Box<dyn Stream<Item = std::result::Result<v1::PushEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Auth for GrpcApi {
    async fn sign_up(
        &self,
        req: Request<v1::SignUpRequest>,
    ) -> std::result::Result<Response<v1::Session>, Status> {
        self.open_auth(&req)?;
        reply(self.gw.sign_up(req.into_inner()).await)
    }

    async fn sign_in(
        &self,
        req: Request<v1::SignInRequest>,
    ) -> std::result::Result<Response<v1::Session>, Status> {
        self.open_auth(&req)?;
        reply(self.gw.sign_in(req.into_inner()).await)
    }

    async fn refresh(
        &self,
        req: Request<v1::RefreshRequest>,
    ) -> std::result::Result<Response<v1::Session>, Status> {
        self.open_auth(&req)?;
        reply(self.gw.refresh(req.into_inner()).await)
    }

    async fn list_devices(
        &self,
        req: Request<v1::ListDevicesRequest>,
    ) -> std::result::Result<Response<v1::ListDevicesReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.list_devices(&c).await)
    }

    async fn revoke_device(
        &self,
        req: Request<v1::RevokeDeviceRequest>,
    ) -> std::result::Result<Response<v1::RevokeDeviceReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.revoke_device(&c, req.into_inner()).await)
    }

    async fn server_info(
        &self,
        req: Request<v1::ServerInfoRequest>,
    ) -> std::result::Result<Response<v1::ServerInfoReply>, Status> {
        self.open(&req)?;
        Ok(Response::new(self.gw.info()))
    }
}

#[tonic::async_trait]
impl Messenger for GrpcApi {
    async fn lookup_users(
        &self,
        req: Request<v1::LookupUsersRequest>,
    ) -> std::result::Result<Response<v1::LookupUsersReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.lookup_users(&c, req.into_inner()).await)
    }

    async fn create_conversation(
        &self,
        req: Request<v1::CreateConversationRequest>,
    ) -> std::result::Result<Response<v1::Conversation>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.create_conversation(&c, req.into_inner()).await)
    }

    async fn get_conversation(
        &self,
        req: Request<v1::GetConversationRequest>,
    ) -> std::result::Result<Response<v1::Conversation>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.get_conversation(&c, req.into_inner()).await)
    }

    async fn change_members(
        &self,
        req: Request<v1::ChangeMembersRequest>,
    ) -> std::result::Result<Response<v1::Conversation>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.change_members(&c, req.into_inner()).await)
    }

    async fn list_conversations(
        &self,
        req: Request<v1::ListConversationsRequest>,
    ) -> std::result::Result<Response<v1::ListConversationsReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.list_conversations(&c).await)
    }

    async fn send(
        &self,
        req: Request<v1::SendRequest>,
    ) -> std::result::Result<Response<v1::SendReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.send(&c, req.into_inner()).await)
    }

    async fn history(
        &self,
        req: Request<v1::HistoryRequest>,
    ) -> std::result::Result<Response<v1::HistoryReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.history(&c, req.into_inner()).await)
    }

    async fn mark_read(
        &self,
        req: Request<v1::MarkReadRequest>,
    ) -> std::result::Result<Response<v1::MarkReadReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.mark_read(&c, req.into_inner()).await)
    }

    async fn sync(
        &self,
        req: Request<v1::SyncRequest>,
    ) -> std::result::Result<Response<v1::SyncReply>, Status> {
        let c = self.caller(&req).await?;
        reply(self.gw.sync(&c, req.into_inner()).await)
    }

    type SubscribeStream = PushStream;

    async fn subscribe(
        &self,
        req: Request<v1::SubscribeRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        let c = self.caller(&req).await?;
        let events = self.gw.subscribe(&c, req.into_inner()).await?;
        let events: PushStream = Box::pin(events.map(|r| r.map_err(Status::from)));
        Ok(Response::new(events))
    }
}
