//! The rules a request must follow, each stated once: the validation below and the HTTP API's
//! OpenAPI schema (`schema.rs`, feature `openapi`) are both built from these constants, so the
//! document says exactly what the servers check.

use crate::errors::{ModelError, Result};
use crate::model::{ErrorCode, MessageKind};

/// The largest message body, in bytes (64 KiB): the cluster configuration written at init, and
/// what every gateway checks before a send reaches a node.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// An id: 32 hex digits (either case), or a UUID's 8-4-4-4-12 form.
pub const ID_PATTERN: &str = "^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";
/// What [`ID_PATTERN`] says, for error messages.
pub const ID_RULE: &str = "must be 32 hex digits (or a UUID's 8-4-4-4-12 form)";

/// The value of an id written as [`ID_PATTERN`] says, `None` for anything else.
pub fn parse_hex_id(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let hex = match b.len() {
        32 => s.to_string(),
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => s.replace('-', ""),
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// The shortest and longest handles people may pick.
pub const HANDLE_MIN: usize = 3;
pub const HANDLE_MAX: usize = 32;
/// A handle as sent: ASCII letters (compared in lowercase), digits, `_` and `.`, not starting
/// or ending with `.`, [`HANDLE_MIN`] to [`HANDLE_MAX`] long, with surrounding ASCII whitespace
/// ignored.
pub const HANDLE_PATTERN: &str =
    "^[ \\t\\n\\f\\r]*[A-Za-z0-9_][A-Za-z0-9_.]{1,30}[A-Za-z0-9_][ \\t\\n\\f\\r]*$";

/// Normalizes and checks a handle (see [`HANDLE_PATTERN`]). Handles are the only identity
/// people give (no phone number, real name, birthday or address), so they are kept simple
/// enough to read out loud.
pub fn normalize_handle(handle: &str) -> Result<String> {
    let h = handle.trim_ascii().to_ascii_lowercase();
    let bad = |why: &str| {
        Err(ModelError {
            code: ErrorCode::InvalidArgument,
            field: "handle",
            reason: why.to_string(),
        })
    };
    if h.len() < HANDLE_MIN || h.len() > HANDLE_MAX {
        return bad(&format!("must be {HANDLE_MIN} to {HANDLE_MAX} characters"));
    }
    if !h
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'.')
    {
        return bad("may hold only letters a-z, digits, '_' and '.'");
    }
    if h.starts_with('.') || h.ends_with('.') {
        return bad("may not start or end with '.'");
    }
    Ok(h)
}

/// Password length in characters, at least and at most (characters, not bytes, so a schema can
/// state the rule exactly and a Korean password is not held to a third of the length). Long
/// enough for a passphrase, short enough (at most 1 KiB of UTF-8) that hashing one is cheap.
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 256;

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(ModelError::invalid(
            "password",
            format!("must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

/// The longest device name, in characters (what the accounts state machine checks too).
pub const DEVICE_NAME_MAX: usize = 64;

/// Handles, and ids, in one user lookup.
pub const LOOKUP_MAX: usize = 100;

/// History page size when the client names none, and the most it may ask for.
pub const HISTORY_DEFAULT: u32 = 50;
pub const HISTORY_MAX: u32 = 1000;

/// Messages per conversation in one sync, by default and at most.
pub const SYNC_DEFAULT: u32 = 100;
pub const SYNC_MAX: u32 = 1000;

/// A page size from a request: `0` means the default; above `max` is refused (never silently
/// cut, so a client learns the bound instead of mistaking a short page for the end).
pub fn page_limit(field: &'static str, asked: u32, default: u32, max: u32) -> Result<u32> {
    match asked {
        0 => Ok(default),
        n if n > max => Err(ModelError::invalid(field, format!("at most {max}"))),
        n => Ok(n),
    }
}

/// Checks a body against the size limit and, for text kinds, UTF-8.
pub fn validate_body(kind: MessageKind, body: &[u8], max_bytes: usize) -> Result<()> {
    if body.len() > max_bytes {
        return Err(ModelError {
            code: ErrorCode::MessageTooLarge,
            field: "body",
            reason: format!("{} bytes is over the limit of {max_bytes}", body.len()),
        });
    }
    if kind.requires_utf8() && std::str::from_utf8(body).is_err() {
        return Err(ModelError::invalid("body", "text is not valid UTF-8"));
    }
    Ok(())
}
