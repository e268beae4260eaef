//! The HTTP layer in process, without a cluster: everything here is answered before a node
//! would be asked (bad input, missing tokens, limits, static routes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use clap::Parser;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::config::Config;

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    config: Config,
}

async fn app(extra: &[&str]) -> Router {
    let mut args = vec!["gw", "--nodes=127.0.0.1:1", "--insecure-plaintext"];
    args.extend_from_slice(extra);
    let gw = Gateway::start(Args::parse_from(args).config)
        .await
        .expect("a gateway starts without reaching its nodes");
    router(gw)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<no code>")
            .to_string()
    }
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    call_from(app, req, Ipv4Addr::new(10, 0, 0, 1)).await
}

async fn call_from(app: &Router, mut req: Request<Body>, ip: Ipv4Addr) -> Reply {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(IpAddr::V4(ip), 40000)));
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a body")
        .to_vec();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn request(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).expect("a valid request")
}

fn post_json(path: &str, body: &str) -> Request<Body> {
    request(
        Method::POST,
        path,
        Some("application/json"),
        body.to_string(),
    )
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_stable_codes() {
    let app = app(&[]).await;
    let signup =
        json!({"handle": "jisoo", "password": "pw", "device": {"kind": "phone", "name": "p"}});
    let table: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            post_json("/v1/auth/signup", "{"),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "wrong content type",
            request(
                Method::POST,
                "/v1/auth/signup",
                Some("text/plain"),
                signup.to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "no content type",
            request(Method::POST, "/v1/auth/signin", None, signup.to_string()),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "missing field",
            post_json("/v1/auth/signup", r#"{"handle":"jisoo","password":"pw"}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown enum name",
            post_json(
                "/v1/auth/signup",
                r#"{"handle":"jisoo","password":"pw","device":{"kind":"fax","name":"f"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "body over the limit",
            post_json(
                "/v1/auth/signin",
                &format!(r#"{{"handle":"{}"}}"#, "a".repeat(JSON_BODY_LIMIT)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
        ),
        (
            "body over the limit, streamed without a length",
            request(
                Method::POST,
                "/v1/auth/refresh",
                Some("application/json"),
                Body::from_stream(futures::stream::iter(
                    (0..JSON_BODY_LIMIT / 1024 + 1)
                        .map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])),
                )),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
        ),
        (
            "no token",
            request(Method::GET, "/v1/conversations", None, Body::empty()),
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (
            "not a bearer token",
            Request::get("/v1/devices")
                .header(header::AUTHORIZATION, "Basic YTpi")
                .body(Body::empty())
                .expect("valid"),
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (
            "unknown route",
            request(Method::GET, "/v2/nothing", None, Body::empty()),
            StatusCode::NOT_FOUND,
            "INVALID_ARGUMENT",
        ),
        (
            "wrong method",
            request(Method::PUT, "/v1/sync", None, Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_ARGUMENT",
        ),
        (
            "WebSocket route without an upgrade",
            request(Method::GET, "/v1/ws", None, Body::empty()),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
    ];
    for (what, req, status, code) in table {
        let r = call(&app, req).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.code(), code, "{what}");
        assert!(r.json()["error"]["message"].is_string(), "{what}");
        assert_eq!(
            r.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn health_info_openapi_and_the_web_client_are_served() {
    let app = app(&["--id=gw7", "--dc=dc2"]).await;
    let r = call(&app, request(Method::GET, "/healthz", None, Body::empty())).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, request(Method::GET, "/v1/info", None, Body::empty())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["gateway_id"], "gw7");
    assert_eq!(r.json()["dc"], "dc2");
    let r = call(
        &app,
        request(Method::GET, "/v1/openapi.json", None, Body::empty()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/api.js", "text/javascript; charset=utf-8"),
    ] {
        let r = call(&app, request(Method::GET, path, None, Body::empty())).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            r.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(ct),
            "{path}"
        );
        assert_eq!(
            r.headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-cache"),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn the_web_client_can_come_from_a_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("app.js"), "// from disk").expect("write");
    let flag = format!("--web-dir={}", dir.path().display());
    let app = app(&[&flag]).await;
    let r = call(&app, request(Method::GET, "/app.js", None, Body::empty())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"// from disk");
    let r = call(
        &app,
        request(Method::GET, "/style.css", None, Body::empty()),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UNAVAILABLE");
}

#[tokio::test]
async fn auth_attempts_and_addresses_are_rate_limited() {
    let app = app(&["--auth-rate-per-min=2", "--ip-rate=3"]).await;
    let attempt = || post_json("/v1/auth/signin", "{");
    // The first two attempts are let through (and fail on their body); the third is limited
    // before the body is read.
    for _ in 0..2 {
        assert_eq!(call(&app, attempt()).await.code(), "INVALID_ARGUMENT");
    }
    let r = call(&app, attempt()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "RESOURCE_EXHAUSTED");
    let secs: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&secs), "{secs}");
    // Another address has its own allowance.
    let other = call_from(&app, attempt(), Ipv4Addr::new(10, 0, 0, 2)).await;
    assert_eq!(other.code(), "INVALID_ARGUMENT");

    // Every request counts against the per-address limit (3/s, bursts of 6): a fresh
    // address gets 6 health checks through, then 429s.
    let ip = Ipv4Addr::new(10, 0, 0, 3);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = call_from(
            &app,
            request(Method::GET, "/healthz", None, Body::empty()),
            ip,
        )
        .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn deadlines_and_shedding_answer_unavailable_but_spare_websockets() {
    let mut args = vec![
        "gw",
        "--nodes=127.0.0.1:1",
        "--insecure-plaintext",
        "--request-timeout-ms=100",
        "--max-concurrency=1",
    ];
    args.extend_from_slice(&["--ip-rate=0"]);
    let gw = Gateway::start(Args::parse_from(args).config)
        .await
        .expect("a gateway starts without reaching its nodes");
    let sleep = |ms: u64| {
        axum::routing::get(move || async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            "done"
        })
    };
    let app = with_middleware(
        Router::new().route("/slow", sleep(1000)),
        Router::new().route("/long", sleep(300)),
        gw,
    );
    let get = |path: &str| request(Method::GET, path, None, Body::empty());

    let r = call(&app, get("/slow")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UNAVAILABLE");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("100 ms")),
        "{:?}",
        r.json()
    );

    // The long-lived route is not cut at the deadline; while it holds the only slot, another
    // request is shed at once with a hint to retry.
    let long = tokio::spawn({
        let app = app.clone();
        async move { call(&app, get("/long")).await.status }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let shed = call(&app, get("/long")).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.code(), "UNAVAILABLE");
    assert_eq!(
        shed.headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(long.await.expect("joins"), StatusCode::OK);
}

#[tokio::test]
async fn the_web_client_forbids_framing_and_foreign_or_inline_scripts() {
    let app = app(&[]).await;
    for path in ["/", "/app.js", "/api.js", "/style.css"] {
        let r = call(&app, request(Method::GET, path, None, Body::empty())).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let csp = r
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp:?} lacks {directive}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    }
}
