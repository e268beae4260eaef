//! OpenAPI schemas of the values the rules in `rules.rs` govern, built from the same constants
//! (feature `openapi`). The gateway's JSON types point their fields here (`schema_with`), so
//! the document served at `/v1/openapi.json` states the patterns, lengths and bounds the model
//! enforces.
//!
//! Lengths: handles, passwords and device names are counted in characters, as a schema counts
//! them, so those rules are stated exactly. A message body's limit is in bytes (what storage
//! and the network carry): its `maxLength` is the byte limit itself (more characters always
//! means more bytes), so what the schema forbids is always refused, and a text it allows can
//! still be over the limit in bytes: 413 `MESSAGE_TOO_LARGE`, as its description says.

use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;

use crate::model::{
    ConversationKind, MessageKind, DEFAULT_MAX_BODY_BYTES, DEVICE_NAME_MAX, HANDLE_PATTERN,
    HISTORY_DEFAULT, HISTORY_MAX, ID_PATTERN, LOOKUP_MAX, PASSWORD_MAX, PASSWORD_MIN, SYNC_DEFAULT,
    SYNC_MAX,
};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))
}

fn integer(max: u32) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(0))
        .maximum(Some(max))
}

/// An id: [`ID_PATTERN`].
pub fn id() -> Schema {
    string()
        .pattern(Some(ID_PATTERN))
        .description(Some(
            "32 hex digits (either case), or a UUID's 8-4-4-4-12 form; answered as 32 lowercase hex digits.",
        ))
        .examples(["0123456789abcdef0123456789abcdef"])
        .into()
}

/// A list of ids (members to add or remove, the members of a new conversation).
pub fn ids() -> Schema {
    ArrayBuilder::new().items(RefOr::T(id())).into()
}

/// The ids of one lookup.
pub fn lookup_ids() -> Schema {
    ArrayBuilder::new()
        .items(RefOr::T(id()))
        .max_items(Some(LOOKUP_MAX))
        .into()
}

/// The handles of one lookup: any strings (one that cannot be a handle is simply not found).
pub fn lookup_handles() -> Schema {
    ArrayBuilder::new()
        .items(string())
        .max_items(Some(LOOKUP_MAX))
        .into()
}

/// A handle: [`HANDLE_PATTERN`].
pub fn handle() -> Schema {
    string()
        .pattern(Some(HANDLE_PATTERN))
        .description(Some(
            "3 to 32 of a-z, 0-9, '_' and '.' (not first or last); compared in lowercase, surrounding whitespace ignored.",
        ))
        .examples(["jisoo"])
        .into()
}

/// A password: [`PASSWORD_MIN`] to [`PASSWORD_MAX`] characters.
pub fn password() -> Schema {
    string()
        .min_length(Some(PASSWORD_MIN))
        .max_length(Some(PASSWORD_MAX))
        .description(Some(format!(
            "{PASSWORD_MIN} to {PASSWORD_MAX} characters (checked at sign-up)."
        )))
        .into()
}

/// A device name: at most [`DEVICE_NAME_MAX`] characters.
pub fn device_name() -> Schema {
    string()
        .max_length(Some(DEVICE_NAME_MAX))
        .description(Some(format!(
            "Shown in the device list, e.g. \"Jisoo's phone\"; at most {DEVICE_NAME_MAX} characters."
        )))
        .into()
}

/// The kinds of conversation a client may create.
pub fn creatable_kind() -> Schema {
    let names = ConversationKind::CREATABLE.iter().map(|k| k.json_name());
    string()
        .enum_values(Some(names))
        .description(Some("`direct` (two people, fixed) or `group`."))
        .into()
}

/// The kinds of message a client may send.
pub fn sendable_kind() -> Schema {
    let names = MessageKind::SENDABLE.iter().map(|k| k.json_name());
    string()
        .enum_values(Some(names))
        .description(Some(
            "`text` and `link_card` bodies are UTF-8, `sealed` bodies ciphertext; `system` messages are written by the server only.",
        ))
        .into()
}

/// A text body: at most [`DEFAULT_MAX_BODY_BYTES`] bytes of UTF-8.
pub fn text() -> Schema {
    string()
        .max_length(Some(DEFAULT_MAX_BODY_BYTES))
        .description(Some(format!(
            "The body of a text-like kind, at most {DEFAULT_MAX_BODY_BYTES} bytes of UTF-8 (over it: 413 MESSAGE_TOO_LARGE)."
        )))
        .into()
}

/// The padded standard base64 alphabet, as the gateway decodes it.
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// A binary body in base64: at most [`DEFAULT_MAX_BODY_BYTES`] bytes once decoded.
pub fn body_base64() -> Schema {
    string()
        .pattern(Some(BASE64_PATTERN))
        .max_length(Some(DEFAULT_MAX_BODY_BYTES.div_ceil(3) * 4))
        .description(Some(format!(
            "A body (e.g. `sealed` ciphertext) in padded standard base64, at most {DEFAULT_MAX_BODY_BYTES} bytes decoded (over it: 413 MESSAGE_TOO_LARGE)."
        )))
        .into()
}

/// Exactly one of the properties `a` and `b` (both non-null when present).
pub fn exactly_one_of(a: &str, b: &str) -> Schema {
    let has = |p: &str| ObjectBuilder::new().required(p);
    OneOfBuilder::new().item(has(a)).item(has(b)).into()
}

/// At least one of the array properties `a` and `b` is present and not empty.
pub fn some_items_in_one_of(a: &str, b: &str) -> Schema {
    let nonempty = |p: &str| {
        ObjectBuilder::new()
            .required(p)
            .property(p, ArrayBuilder::new().min_items(Some(1)))
    };
    AnyOfBuilder::new()
        .item(nonempty(a))
        .item(nonempty(b))
        .into()
}

/// An object schema with one of the constraints above added.
pub fn both(object: impl Into<RefOr<Schema>>, constraint: Schema) -> Schema {
    AllOfBuilder::new().item(object).item(constraint).into()
}

/// A history page size.
pub fn history_limit() -> Schema {
    integer(HISTORY_MAX)
        .description(Some(format!(
            "At most this many (absent or 0: {HISTORY_DEFAULT}; above {HISTORY_MAX}: 400), and at most about 1 MiB of messages (at least one): continue from the last seq until `last_seq`."
        )))
        .into()
}

/// Messages per conversation in one sync.
pub fn sync_limit() -> Schema {
    integer(SYNC_MAX)
        .description(Some(format!(
            "Messages per conversation at most (absent or 0: {SYNC_DEFAULT}; above {SYNC_MAX}: 400), and at most about 1 MiB of them per conversation."
        )))
        .into()
}

/// Cursors: conversation id → the last seq a device has.
pub fn cursors() -> Schema {
    ObjectBuilder::new()
        .property_names(Some(id()))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(0)),
        ))
        .description(Some(
            "Conversation id → the last seq the device has; conversations not named start from seq 0.",
        ))
        .examples([serde_json::json!({"0123456789abcdef0123456789abcdef": 41})])
        .into()
}
