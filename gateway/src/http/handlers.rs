//! One handler per HTTP route: extract, translate to the protobuf request, call the one
//! [`Gateway`] method, translate the reply. Authorization and validation happen in the service,
//! so an HTTP client gets exactly the answers a gRPC client gets.
//!
//! The `#[utoipa::path]` attributes are the OpenAPI description of each route; errors every
//! route can return (400, 401, 429, 503) are added to all of them in [`crate::openapi`].

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::extract::{ApiJson, ApiQuery, AuthAttempt, Authed, ConvPath, DevicePath};
use super::json::*;
use crate::errors::{ApiError, Result};
use crate::service::Gateway;

type Gw = State<Arc<Gateway>>;

/// Creates an account (a handle and a password, nothing else) and signs this device in.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "Signed up and signed in", body = Session),
        (status = 409, description = "`HANDLE_TAKEN`", body = ErrorBody),
    ))]
pub async fn sign_up(
    State(gw): Gw,
    _: AuthAttempt,
    ApiJson(b): ApiJson<Credentials>,
) -> Result<Json<Session>> {
    Ok(Json(gw.sign_up(b.into_sign_up()).await?.into()))
}

/// Signs a new device in.
#[utoipa::path(post, path = "/v1/auth/signin", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = Session),
    ))]
pub async fn sign_in(
    State(gw): Gw,
    _: AuthAttempt,
    ApiJson(b): ApiJson<Credentials>,
) -> Result<Json<Session>> {
    Ok(Json(gw.sign_in(b.into_sign_in()).await?.into()))
}

/// Trades a refresh token for a new session of the same device; a spent one is accepted once
/// more within 60 s (its reply may have been lost), which kills the one issued in between.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and refresh token", body = Session),
    ))]
pub async fn refresh(
    State(gw): Gw,
    _: AuthAttempt,
    ApiJson(b): ApiJson<RefreshBody>,
) -> Result<Json<Session>> {
    let req = bongsu_proto::v1::RefreshRequest {
        refresh_token: b.refresh_token,
    };
    Ok(Json(gw.refresh(req).await?.into()))
}

/// Every device of the caller, revoked ones included.
#[utoipa::path(get, path = "/v1/devices", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller's devices", body = Devices)))]
pub async fn list_devices(State(gw): Gw, Authed(c): Authed) -> Result<Json<Devices>> {
    Ok(Json(gw.list_devices(&c).await?.try_into()?))
}

/// Revokes one of the caller's devices: its refresh token stops working at once, its access
/// tokens within the gateways' device check interval.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "auth", security(("bearer" = [])),
    params(("device_id" = String, Path, description = "32 hex digits")),
    responses((status = 200, description = "Revoked", body = Empty)))]
pub async fn revoke_device(
    State(gw): Gw,
    Authed(c): Authed,
    DevicePath(device_id): DevicePath,
) -> Result<Json<Empty>> {
    let req = bongsu_proto::v1::RevokeDeviceRequest { device_id };
    gw.revoke_device(&c, req).await?;
    Ok(Json(Empty {}))
}

/// Which gateway and datacenter answered; needs no token.
#[utoipa::path(get, path = "/v1/info", tag = "ops",
    responses((status = 200, description = "This gateway", body = Info)))]
pub async fn info(State(gw): Gw) -> Json<Info> {
    Json(gw.info().into())
}

/// Looks users up by handle or id; unknown ones are left out.
#[utoipa::path(post, path = "/v1/users/lookup", tag = "messenger", security(("bearer" = [])),
    request_body = LookupBody,
    responses((status = 200, description = "The users found", body = Users)))]
pub async fn lookup_users(
    State(gw): Gw,
    Authed(c): Authed,
    ApiJson(b): ApiJson<LookupBody>,
) -> Result<Json<Users>> {
    Ok(Json(gw.lookup_users(&c, b.into_proto()?).await?.into()))
}

/// Creates a direct or group conversation; repeating it with the same id is a no-op.
#[utoipa::path(post, path = "/v1/conversations", tag = "messenger", security(("bearer" = [])),
    request_body = CreateConversationBody,
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 404, description = "`UNKNOWN_USER`: a member does not exist", body = ErrorBody),
        (status = 409, description = "`CONVERSATION_EXISTS`: the id is taken by a different conversation", body = ErrorBody),
    ))]
pub async fn create_conversation(
    State(gw): Gw,
    Authed(c): Authed,
    ApiJson(b): ApiJson<CreateConversationBody>,
) -> Result<Json<Conversation>> {
    Ok(Json(
        gw.create_conversation(&c, b.into_proto()?)
            .await?
            .try_into()?,
    ))
}

/// The caller's conversations with unread counts.
///
/// Eventually consistent: the list is updated from conversation shards through an outbox, so
/// a conversation someone else added the caller to shows up within moments, not in the same
/// instant.
#[utoipa::path(get, path = "/v1/conversations", tag = "messenger", security(("bearer" = [])),
    responses((status = 200, description = "The caller's conversations", body = Conversations)))]
pub async fn list_conversations(State(gw): Gw, Authed(c): Authed) -> Result<Json<Conversations>> {
    Ok(Json(gw.list_conversations(&c).await?.try_into()?))
}

/// One conversation and its members.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}", tag = "messenger", security(("bearer" = [])),
    params(("conv_id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 403, description = "`NOT_MEMBER`", body = ErrorBody),
        (status = 404, description = "`UNKNOWN_CONVERSATION`", body = ErrorBody),
    ))]
pub async fn get_conversation(
    State(gw): Gw,
    Authed(c): Authed,
    ConvPath(conv_id): ConvPath,
) -> Result<Json<Conversation>> {
    let req = bongsu_proto::v1::GetConversationRequest { conv_id };
    Ok(Json(gw.get_conversation(&c, req).await?.try_into()?))
}

/// Adds and removes members of a group (removing oneself is leaving).
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/members", tag = "messenger",
    security(("bearer" = [])), request_body = ChangeMembersBody,
    params(("conv_id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, description = "The conversation after the change", body = Conversation),
        (status = 400, description = "`DIRECT_IMMUTABLE`, `INVALID_MEMBERS`, `TOO_MANY_MEMBERS`", body = ErrorBody),
        (status = 403, description = "`NOT_MEMBER`", body = ErrorBody),
        (status = 404, description = "`UNKNOWN_CONVERSATION`, `UNKNOWN_USER`", body = ErrorBody),
    ))]
pub async fn change_members(
    State(gw): Gw,
    Authed(c): Authed,
    ConvPath(conv_id): ConvPath,
    ApiJson(b): ApiJson<ChangeMembersBody>,
) -> Result<Json<Conversation>> {
    Ok(Json(
        gw.change_members(&c, b.into_proto(conv_id)?)
            .await?
            .try_into()?,
    ))
}

/// Appends a message. Idempotent by (sender, `client_msg_id`): a retry returns the first seq.
/// Acknowledged only once a majority of datacenters has it on disk.
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/messages", tag = "messenger",
    security(("bearer" = [])), request_body = SendBody,
    params(("conv_id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, description = "Stored", body = Sent),
        (status = 403, description = "`NOT_MEMBER`, `NOT_OWNER`", body = ErrorBody),
        (status = 404, description = "`UNKNOWN_CONVERSATION`", body = ErrorBody),
        (status = 413, description = "`MESSAGE_TOO_LARGE`", body = ErrorBody),
    ))]
pub async fn send(
    State(gw): Gw,
    Authed(c): Authed,
    ConvPath(conv_id): ConvPath,
    ApiJson(b): ApiJson<SendBody>,
) -> Result<Json<Sent>> {
    Ok(Json(gw.send(&c, b.into_proto(conv_id)?).await?.into()))
}

/// A page of a conversation's log by seq.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages", tag = "messenger",
    security(("bearer" = [])),
    params(("conv_id" = String, Path, description = "32 hex digits"), HistoryQuery),
    responses(
        (status = 200, description = "Messages, oldest first", body = History),
        (status = 403, description = "`NOT_MEMBER`", body = ErrorBody),
        (status = 404, description = "`UNKNOWN_CONVERSATION`", body = ErrorBody),
    ))]
pub async fn history(
    State(gw): Gw,
    Authed(c): Authed,
    ConvPath(conv_id): ConvPath,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>> {
    Ok(Json(
        gw.history(&c, q.into_proto(conv_id)).await?.try_into()?,
    ))
}

/// Moves the caller's read cursor (shared by all their devices) forward.
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/read", tag = "messenger",
    security(("bearer" = [])), request_body = MarkReadBody,
    params(("conv_id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, description = "The read cursor after the call", body = ReadCursor),
        (status = 403, description = "`NOT_MEMBER`", body = ErrorBody),
        (status = 404, description = "`UNKNOWN_CONVERSATION`", body = ErrorBody),
    ))]
pub async fn mark_read(
    State(gw): Gw,
    Authed(c): Authed,
    ConvPath(conv_id): ConvPath,
    ApiJson(b): ApiJson<MarkReadBody>,
) -> Result<Json<ReadCursor>> {
    let req = bongsu_proto::v1::MarkReadRequest {
        conv_id,
        seq: b.seq,
    };
    let r = gw.mark_read(&c, req).await?;
    Ok(Json(ReadCursor {
        read_seq: r.read_seq,
    }))
}

/// Everything new across the caller's conversations since the given cursors. Like the
/// conversation list, which conversations appear is eventually consistent.
#[utoipa::path(post, path = "/v1/sync", tag = "messenger", security(("bearer" = [])),
    request_body = SyncBody,
    responses((status = 200, description = "New messages per conversation", body = Sync)))]
pub async fn sync(
    State(gw): Gw,
    Authed(c): Authed,
    ApiJson(b): ApiJson<SyncBody>,
) -> Result<Json<Sync>> {
    Ok(Json(gw.sync(&c, b.into_proto()?).await?.try_into()?))
}

/// 200 while the process runs (liveness).
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Empty)))]
pub async fn healthz() -> Json<Empty> {
    Json(Empty {})
}

/// 200 once the gateway knows the shard map and a token-signing key (readiness).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Empty),
        (status = 503, description = "`UNAVAILABLE`: not ready yet", body = ErrorBody),
    ))]
pub async fn readyz(State(gw): Gw) -> Result<Json<Empty>> {
    if gw.ready() {
        Ok(Json(Empty {}))
    } else {
        Err(ApiError::unavailable(
            "not ready: the shard map or the token-signing keys are not known yet",
        ))
    }
}
