//! The OpenAPI 3 description of the HTTP API, served at `/v1/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes and the JSON types' `ToSchema`, so it cannot drift from
//! the code.

use bongsu_proto::model::schema;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::http::json::*;
use crate::http::{handlers, JSON_BODY_LIMIT};
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
    modifiers(&CommonResponses, &Rules),
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

/// What the derived schemas cannot say on their own, from `bongsu_proto::model::schema`: the
/// rules that tie two fields together (a send has exactly one of `text` and `body_base64`; a
/// membership change adds or removes someone), and the id pattern of every path parameter.
struct Rules;

impl Modify for Rules {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let tie = |schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>,
                   name: &str,
                   rule: Schema| {
            if let Some(object) = schemas.remove(name) {
                schemas.insert(name.to_string(), schema::both(object, rule).into());
            }
        };
        tie(
            &mut components.schemas,
            "SendBody",
            schema::exactly_one_of("text", "body_base64"),
        );
        tie(
            &mut components.schemas,
            "ChangeMembersBody",
            schema::some_items_in_one_of("add", "remove"),
        );
        for op in operations(doc) {
            for p in op.parameters.iter_mut().flatten() {
                if p.parameter_in == ParameterIn::Path && p.name.ends_with("_id") {
                    p.schema = Some(schema::id().into());
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations(doc: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.delete,
            &mut item.put,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
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
        for op in operations(doc) {
            add_common(op);
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
    if op.request_body.is_some() {
        common.push((
            "413",
            error(
                &format!("`MESSAGE_TOO_LARGE`: the request body is over {JSON_BODY_LIMIT} bytes"),
                false,
            ),
        ));
    }
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
mod tests;
