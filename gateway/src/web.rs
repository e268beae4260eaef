//! The web client: four static files built into the binary from `gateway/web/`, or read from
//! `--web-dir` on every request when set (for working on the client without rebuilding).
//!
//! `Cache-Control: no-cache` makes browsers revalidate on every load, so a gateway upgrade
//! never leaves a page running old JavaScript against a newer API.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bongsu_proto::ErrorCode;

use crate::errors::ApiError;
use crate::service::Gateway;

/// What the page may load and run: its own scripts and styles only (no inline script, no
/// `eval`, nothing from another origin), calls and the WebSocket to the gateway that served
/// it, and no framing by any site (clickjacking). A script injected into a message could
/// still not run, which is what keeps the session the page holds in `localStorage` out of an
/// attacker's reach (ARCHITECTURE.md, the web client).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// A file of the client: where it is served, its name on disk, its type, its built-in copy.
struct Asset {
    route: &'static str,
    file: &'static str,
    content_type: &'static str,
    embedded: &'static str,
}

static ASSETS: [Asset; 4] = [
    Asset {
        route: "/",
        file: "index.html",
        content_type: "text/html; charset=utf-8",
        embedded: include_str!("../web/index.html"),
    },
    Asset {
        route: "/style.css",
        file: "style.css",
        content_type: "text/css; charset=utf-8",
        embedded: include_str!("../web/style.css"),
    },
    Asset {
        route: "/app.js",
        file: "app.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_str!("../web/app.js"),
    },
    Asset {
        route: "/api.js",
        file: "api.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_str!("../web/api.js"),
    },
];

/// Routes for the four files.
pub fn routes() -> Router<Arc<Gateway>> {
    ASSETS.iter().fold(Router::new(), |r, asset| {
        r.route(
            asset.route,
            get(move |State(gw): State<Arc<Gateway>>| serve(gw.config.web_dir.clone(), asset)),
        )
    })
}

async fn serve(dir: Option<PathBuf>, asset: &'static Asset) -> Response {
    let body = match dir {
        None => asset.embedded.to_string(),
        Some(dir) => match tokio::fs::read_to_string(dir.join(asset.file)).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(file = asset.file, "read the web client from --web-dir: {e}");
                return ApiError::new(
                    ErrorCode::Unavailable,
                    format!("{} is not available", asset.file),
                )
                .into_response();
            }
        },
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}
