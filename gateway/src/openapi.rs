//! The OpenAPI 3 description of the HTTP API, served at `/v1/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes and the JSON types' `ToSchema`, so it cannot drift from
//! the code.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::http::handlers;
use crate::http::json::*;
use crate::ws;

const DESCRIPTION: &str = "\
The public HTTP/JSON API of bongsu, the same operations as the gRPC API `bongsu.v1`.

Authentication: every operation marked with the `bearer` scheme needs \
`Authorization: Bearer <access_token>` from a session (sign up, sign in or refresh).

Ids are 32 lowercase hex digits. Clients pick conversation ids and client message ids \
themselves (random UUIDs), so every create and send can be retried safely.

Errors: every failure answers `{\"error\": {\"code\", \"message\"}}` with a stable `code` \
(see the `StableCode` schema) and the HTTP status that goes with it: 400 `INVALID_ARGUMENT` \
(also malformed JSON, wrong content type, missing fields, unknown enum names, bad ids), \
401 `UNAUTHENTICATED`, 403 `NOT_MEMBER`/`NOT_OWNER`, 404 `UNKNOWN_*`, 409 `HANDLE_TAKEN`/\
`CONVERSATION_EXISTS`, 413 `MESSAGE_TOO_LARGE`, 429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`.

Rate limits: per client address on every request, per user after authentication, and a low \
per-address limit on sign-up, sign-in and refresh. Over a limit: 429 `RESOURCE_EXHAUSTED` \
with `Retry-After` in seconds.

Overload: a gateway at its concurrency limit sheds new requests with 503 `UNAVAILABLE` and \
`Retry-After: 1` (the gateway is full, not the caller at fault: another gateway can serve \
it); a request that outlives the gateway's deadline is 503 `UNAVAILABLE` too. Both are safe \
to retry, sends included (they are idempotent).

Consistency: sends are acknowledged once durable on a majority of datacenters, and each \
conversation is one ordered log with dense seqs. Conversation lists and sync's set of \
conversations are eventually consistent: joining a conversation someone else created shows \
up within moments.

Live events: `GET /v1/ws` upgrades to a WebSocket; see `ClientFrame` and `ServerFrame`.";

#[derive(OpenApi)]
#[openapi(
    info(title = "bongsu", description = DESCRIPTION),
    paths(
        handlers::sign_up,
        handlers::sign_in,
        handlers::refresh,
        handlers::list_devices,
        handlers::revoke_device,
        handlers::info,
        handlers::lookup_users,
        handlers::create_conversation,
        handlers::list_conversations,
        handlers::get_conversation,
        handlers::change_members,
        handlers::send,
        handlers::history,
        handlers::mark_read,
        handlers::sync,
        handlers::healthz,
        handlers::readyz,
        ws::upgrade,
    ),
    components(schemas(ErrorBody, StableCode, ws::ClientFrame, ws::ServerFrame)),
    modifiers(&CommonResponses),
    tags(
        (name = "auth", description = "Accounts, sessions and devices"),
        (name = "messenger", description = "Conversations and messages"),
        (name = "push", description = "Live events over WebSocket"),
        (name = "ops", description = "Health and identity of this gateway"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Adds the bearer scheme, and the errors any operation can answer, to every operation: 400
/// for bad input, 401 where a token is needed, 429 and 503 with `Retry-After`.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                add_common(op);
            }
        }
    }
}

fn add_common(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut common = vec![
        ("400", error("`INVALID_ARGUMENT`: malformed JSON or id, wrong content type, missing field, unknown enum name, a value that breaks a rule", false)),
        ("429", error("`RESOURCE_EXHAUSTED`: over a rate limit; retry after `Retry-After` seconds", true)),
        ("503", error("`UNAVAILABLE`: no quorum or leader in time, the request deadline passed, or the gateway is shedding load (then with `Retry-After`); safe to retry", true)),
    ];
    if secured {
        common.push(("401", error("`UNAUTHENTICATED`: the access token is missing, malformed, expired or its device revoked", false)));
    }
    for (status, resp) in common {
        // A route's own description of a status (e.g. 400 `DIRECT_IMMUTABLE`) comes first.
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(resp);
    }
}

fn error(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut b = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        b = b.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    b.build().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves under `/v1`, `/healthz` and `/readyz`.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/v1/auth/signup"),
        ("post", "/v1/auth/signin"),
        ("post", "/v1/auth/refresh"),
        ("get", "/v1/devices"),
        ("delete", "/v1/devices/{device_id}"),
        ("get", "/v1/info"),
        ("post", "/v1/users/lookup"),
        ("post", "/v1/conversations"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{conv_id}"),
        ("post", "/v1/conversations/{conv_id}/members"),
        ("post", "/v1/conversations/{conv_id}/messages"),
        ("get", "/v1/conversations/{conv_id}/messages"),
        ("post", "/v1/conversations/{conv_id}/read"),
        ("post", "/v1/sync"),
        ("get", "/v1/ws"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ];

    #[test]
    fn every_route_is_documented_with_its_errors() {
        let doc = serde_json::to_value(document()).expect("serializable");
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is missing");
            for status in ["400", "429", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let open = ["/v1/auth/", "/v1/info", "/healthz", "/readyz", "/v1/ws"];
            assert_eq!(
                secured,
                !open.iter().any(|p| path.starts_with(p)),
                "{method} {path}"
            );
            assert_eq!(
                op["responses"]["401"].is_object(),
                secured,
                "{method} {path}"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().map_or(0, |m| m.len()))
            .sum();
        assert_eq!(documented, ROUTES.len(), "an undocumented extra operation");
        let codes = &doc["components"]["schemas"]["StableCode"]["enum"];
        assert!(codes
            .as_array()
            .is_some_and(|c| c.len() == bongsu_proto::ErrorCode::ALL.len()));
        assert_eq!(
            doc["paths"]["/v1/conversations/{conv_id}/messages"]["post"]["responses"]["429"]
                ["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
    }

    #[test]
    fn the_document_says_lists_are_eventually_consistent() {
        let doc = serde_json::to_value(document()).expect("serializable");
        let list = doc["paths"]["/v1/conversations"]["get"]["description"]
            .as_str()
            .unwrap_or("");
        assert!(list.contains("Eventually consistent"), "{list}");
    }
}
