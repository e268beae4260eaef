//! HTTP/JSON under `/v1` (OpenAPI at `/v1/openapi.json`), the WebSocket push stream at
//! `/v1/ws`, `/healthz`, `/readyz`, and the web client at `/`.
//!
//! The tower stack, outermost first: a trace span per request (method and path, never the
//! query; `user` and `device` once authenticated); JSON error bodies for anything a layer or
//! axum answers in plain text; the per-address rate limit; load shedding above
//! `max_concurrency` requests in flight (503 `UNAVAILABLE` with `Retry-After: 1`); the body
//! limit; and, for everything but the WebSocket, whose connections are meant to last, the
//! request deadline (503 `UNAVAILABLE`).

pub mod extract;
pub mod handlers;
pub mod json;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{BoxError, Router};
use bongsu_proto::model::DEFAULT_MAX_BODY_BYTES;
use bongsu_proto::ErrorCode;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::errors::ApiError;
use crate::limits::tower_error;
use crate::service::Gateway;
use crate::{openapi, web, ws};

/// The largest JSON request body: a message body at the limit (the model's
/// `DEFAULT_MAX_BODY_BYTES`, the one body limit of the cluster), base64-encoded or escaped,
/// plus room for the rest of the request. Larger is 413 before any parsing.
pub const JSON_BODY_LIMIT: usize = DEFAULT_MAX_BODY_BYTES * 2 + 16 * 1024;

/// Serves HTTP on `addr` until the process ends.
pub async fn serve(gw: Arc<Gateway>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("bind HTTP on {addr}: {e}"))?;
    tracing::info!(%addr, "serving HTTP/JSON, WebSocket and the web client");
    axum::serve(
        listener,
        router(gw).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("serve HTTP on {addr}: {e}"))
}

/// Every route with its middleware. Handlers read the client address from
/// `ConnectInfo<SocketAddr>`, which [`serve`] provides.
pub fn router(gw: Arc<Gateway>) -> Router {
    let doc = Arc::new(
        serde_json::to_vec(&openapi::document()).expect("the OpenAPI document serializes"),
    );
    let api = Router::new()
        .route("/v1/auth/signup", post(handlers::sign_up))
        .route("/v1/auth/signin", post(handlers::sign_in))
        .route("/v1/auth/refresh", post(handlers::refresh))
        .route("/v1/devices", get(handlers::list_devices))
        .route("/v1/devices/{device_id}", delete(handlers::revoke_device))
        .route("/v1/info", get(handlers::info))
        .route("/v1/users/lookup", post(handlers::lookup_users))
        .route(
            "/v1/conversations",
            post(handlers::create_conversation).get(handlers::list_conversations),
        )
        .route(
            "/v1/conversations/{conv_id}",
            get(handlers::get_conversation),
        )
        .route(
            "/v1/conversations/{conv_id}/members",
            post(handlers::change_members),
        )
        .route(
            "/v1/conversations/{conv_id}/messages",
            post(handlers::send).get(handlers::history),
        )
        .route(
            "/v1/conversations/{conv_id}/read",
            post(handlers::mark_read),
        )
        .route("/v1/sync", post(handlers::sync))
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.to_vec()) }
            }),
        )
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .merge(web::routes());
    let push = Router::new().route("/v1/ws", get(ws::upgrade));
    with_middleware(api, push, gw)
}

/// The middleware around `api` (request routes, with the deadline) and `push` (long-lived
/// WebSocket routes, without it); see the module docs for the order.
fn with_middleware(
    api: Router<Arc<Gateway>>,
    push: Router<Arc<Gateway>>,
    gw: Arc<Gateway>,
) -> Router {
    let config = &gw.config;
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let api = api.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |e: BoxError| async move {
                tower_error(&*e, timeout)
            }))
            .layer(TimeoutLayer::new(timeout)),
    );

    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            tracing::info_span!(
                "http",
                method = %req.method(),
                path = %req.uri().path(),
                user = tracing::field::Empty,
                device = tracing::field::Empty,
            )
        })
        // 5xx here means a node or quorum was not reachable in time: worth a warning, and the
        // operator's alerts watch rates, not single lines.
        .on_failure(DefaultOnFailure::new().level(Level::WARN));
    let shared = ServiceBuilder::new()
        .layer(trace)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(gw.clone(), per_ip_limit))
        .layer(HandleErrorLayer::new(move |e: BoxError| async move {
            tower_error(&*e, timeout)
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(
            config.max_concurrency.max(1),
        ))
        .layer(middleware::from_fn_with_state(
            JSON_BODY_LIMIT,
            drain_oversize,
        ))
        .layer(RequestBodyLimitLayer::new(JSON_BODY_LIMIT))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));

    api.merge(push).layer(shared).with_state(gw)
}

/// Bodies up to this size that are over the limit are read to the end before the 413 goes out.
const DRAIN_MAX: usize = 4 * 1024 * 1024;

/// A request that announces a body over the limit gets `413 MESSAGE_TOO_LARGE`. Answering while
/// the client is still uploading and then closing the connection makes many clients (reqwest,
/// browsers) report a reset instead of the answer, so a moderately large body is read and
/// dropped first; a huge one is refused at once, and its sender sees what it sees.
async fn drain_oversize(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match announced {
        Some(n) if n > limit && n <= DRAIN_MAX => {
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_MAX).await;
            ApiError::new(
                ErrorCode::MessageTooLarge,
                format!("the request body is {n} bytes; this gateway accepts at most {limit}"),
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// The per-address limit, on every request.
async fn per_ip_limit(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if let Err(e) = gw.limits.check_ip(addr.ip()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Replaces a plain-text error response (axum's 404 and 405, the body limit's 413, a failed
/// WebSocket upgrade) by the JSON error body, keeping its status, so every error a client
/// sees has a stable code.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let what = status.canonical_reason().unwrap_or("error");
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::MessageTooLarge,
            "the request body is larger than this gateway accepts",
        ),
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated(what),
        StatusCode::TOO_MANY_REQUESTS => ApiError::new(ErrorCode::ResourceExhausted, what),
        StatusCode::NOT_FOUND => ApiError::invalid("no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::invalid("this route does not take that method"),
        s if s.is_server_error() => ApiError::unavailable(what),
        _ => ApiError::invalid(what),
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let mut out = err.into_response();
    *out.status_mut() = status;
    for (name, value) in [(header::ALLOW, allow), (header::RETRY_AFTER, retry_after)] {
        if let Some(v) = value {
            out.headers_mut().insert(name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests;
