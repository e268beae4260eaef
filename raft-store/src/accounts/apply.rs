//! Applying account commands; every check comes before any write.

use bongsu_proto::model::{normalize_handle, DeviceId, UserId};
use bongsu_proto::ErrorCode;

use super::{
    AccountCommand, AccountRecord, DeviceKind, DeviceRecord, HandleRecord, PreviousRefresh,
    CLAIM_GRACE_MS, REFRESH_REUSE_MS,
};
use crate::errors::Result;
use crate::keys::sm_key;
use crate::overlay::Overlay;
use crate::result::{refuse, CommandResult, Verdict};
use crate::GroupId;

pub(crate) const TAG_HANDLE: u8 = 0x20;
pub(crate) const TAG_ACCOUNT: u8 = 0x21;
pub(crate) const TAG_DEVICE: u8 = 0x22;

pub(crate) fn handle_key(g: GroupId, handle: &str) -> Vec<u8> {
    sm_key(g, &[&[TAG_HANDLE], handle.as_bytes()])
}
pub(crate) fn account_key(g: GroupId, user: &UserId) -> Vec<u8> {
    sm_key(g, &[&[TAG_ACCOUNT], &user.0])
}
pub(crate) fn device_key(g: GroupId, user: &UserId, device: &DeviceId) -> Vec<u8> {
    sm_key(g, &[&[TAG_DEVICE], &user.0, &device.0])
}
pub(crate) fn device_prefix(g: GroupId, user: &UserId) -> Vec<u8> {
    sm_key(g, &[&[TAG_DEVICE], &user.0])
}

/// The longest device name, in characters: the model's rule, checked again where it is stored.
const MAX_DEVICE_NAME: usize = bongsu_proto::model::DEVICE_NAME_MAX;

/// Whether a claim by another user id at `at_ms` may replace `h`: never a confirmed claim,
/// and an unconfirmed one only once its grace period is over. A stamp earlier than the claim
/// (clocks of successive leaders differ) counts as no time passed.
fn takeover_allowed(h: &HandleRecord, at_ms: u64) -> bool {
    !h.confirmed && at_ms.saturating_sub(h.claimed_at_ms) > CLAIM_GRACE_MS
}

/// Whether `hash` is the token the last rotation spent and may still stand in for the current
/// one at `at_ms`. A stamp earlier than the rotation (clocks of successive leaders differ)
/// counts as no time passed.
fn reuse_allowed(d: &DeviceRecord, hash: &[u8; 32], at_ms: u64) -> bool {
    d.previous_refresh.is_some_and(|p| {
        p.hash == *hash && at_ms.saturating_sub(p.rotated_at_ms) <= REFRESH_REUSE_MS
    })
}

/// Applies one account command; every success answers with the user it was for.
pub(crate) fn apply(tx: &mut Overlay<'_>, cmd: &AccountCommand) -> Result<CommandResult> {
    let (user_id, verdict) = match cmd {
        AccountCommand::ClaimHandle {
            handle,
            user_id,
            at_ms,
        } => (user_id, claim_handle(tx, handle, user_id, *at_ms)?),
        AccountCommand::ConfirmHandle { handle, user_id } => {
            (user_id, confirm_handle(tx, handle, user_id)?)
        }
        AccountCommand::CreateAccount {
            user_id,
            handle,
            password_hash,
            at_ms,
        } => (
            user_id,
            create_account(tx, user_id, handle, password_hash, *at_ms)?,
        ),
        AccountCommand::AddDevice {
            user_id,
            device_id,
            name,
            kind,
            refresh_hash,
            at_ms,
        } => (
            user_id,
            add_device(tx, user_id, device_id, name, *kind, refresh_hash, *at_ms)?,
        ),
        AccountCommand::RotateRefresh {
            user_id,
            device_id,
            old_hash,
            new_hash,
            at_ms,
        } => (
            user_id,
            rotate_refresh(tx, user_id, device_id, old_hash, new_hash, *at_ms)?,
        ),
        AccountCommand::RevokeDevice { user_id, device_id } => {
            (user_id, revoke_device(tx, user_id, device_id)?)
        }
    };
    Ok(match verdict {
        Ok(()) => CommandResult::Account { user_id: *user_id },
        Err(r) => CommandResult::Rejected(r),
    })
}

/// Rule N1 of the module docs.
fn claim_handle(
    tx: &mut Overlay<'_>,
    handle: &str,
    user_id: &UserId,
    at_ms: u64,
) -> Result<Verdict> {
    let handle = match normalize_handle(handle) {
        Ok(h) => h,
        Err(e) => return refuse(e.code, e.reason),
    };
    let key = handle_key(tx.group(), &handle);
    match tx.get::<HandleRecord>(&key, "handle")? {
        // A retry by the owner: the original claim time stands, so retrying cannot extend the
        // grace period of a claim that is never confirmed.
        Some(h) if h.user_id == *user_id => {}
        Some(h) if !takeover_allowed(&h, at_ms) => {
            return refuse(ErrorCode::HandleTaken, format!("handle {handle} is taken"));
        }
        // Free, or an abandoned unconfirmed claim: this user becomes the owner.
        Some(_) | None => tx.put(
            key,
            &HandleRecord {
                user_id: *user_id,
                claimed_at_ms: at_ms,
                confirmed: false,
            },
        ),
    }
    Ok(Ok(()))
}

/// Rule N2 of the module docs.
fn confirm_handle(tx: &mut Overlay<'_>, handle: &str, user_id: &UserId) -> Result<Verdict> {
    let handle = match normalize_handle(handle) {
        Ok(h) => h,
        Err(e) => return refuse(e.code, e.reason),
    };
    let key = handle_key(tx.group(), &handle);
    match tx.get::<HandleRecord>(&key, "handle")? {
        Some(h) if h.user_id == *user_id => {
            if !h.confirmed {
                tx.put(
                    key,
                    &HandleRecord {
                        confirmed: true,
                        ..h
                    },
                );
            }
            Ok(Ok(()))
        }
        // The claim was taken over (or another sign-up won the handle): this user's sign-up
        // must not end with a session.
        Some(_) => refuse(ErrorCode::HandleTaken, format!("handle {handle} is taken")),
        None => refuse(
            ErrorCode::FailedPrecondition,
            format!("handle {handle} is not claimed"),
        ),
    }
}

fn create_account(
    tx: &mut Overlay<'_>,
    user_id: &UserId,
    handle: &str,
    password_hash: &str,
    at_ms: u64,
) -> Result<Verdict> {
    let key = account_key(tx.group(), user_id);
    if let Some(existing) = tx.get::<AccountRecord>(&key, "account")? {
        if existing.handle == handle {
            return Ok(Ok(()));
        }
        return refuse(
            ErrorCode::InvalidArgument,
            format!("user {user_id} exists with another handle"),
        );
    }
    if !password_hash.starts_with("$argon2id$") {
        return refuse(
            ErrorCode::InvalidArgument,
            "password_hash: not an argon2id PHC string",
        );
    }
    tx.put(
        key,
        &AccountRecord {
            handle: handle.to_string(),
            password_hash: password_hash.to_string(),
            created_at_ms: at_ms,
        },
    );
    Ok(Ok(()))
}

fn add_device(
    tx: &mut Overlay<'_>,
    user_id: &UserId,
    device_id: &DeviceId,
    name: &str,
    kind: DeviceKind,
    refresh_hash: &[u8; 32],
    at_ms: u64,
) -> Result<Verdict> {
    let g = tx.group();
    if tx
        .get::<AccountRecord>(&account_key(g, user_id), "account")?
        .is_none()
    {
        return refuse(ErrorCode::UnknownUser, format!("no user {user_id}"));
    }
    if name.chars().count() > MAX_DEVICE_NAME {
        return refuse(
            ErrorCode::InvalidArgument,
            format!("device name over {MAX_DEVICE_NAME} characters"),
        );
    }
    let key = device_key(g, user_id, device_id);
    match tx.get::<DeviceRecord>(&key, "device")? {
        // A retried sign-in with the same token is the same device.
        Some(d) if d.refresh_hash == *refresh_hash && !d.revoked => {}
        Some(_) => {
            return refuse(
                ErrorCode::InvalidArgument,
                format!("device {device_id} exists"),
            )
        }
        None => tx.put(
            key,
            &DeviceRecord {
                name: name.to_string(),
                kind,
                created_at_ms: at_ms,
                refresh_hash: *refresh_hash,
                revoked: false,
                previous_refresh: None,
            },
        ),
    }
    Ok(Ok(()))
}

fn rotate_refresh(
    tx: &mut Overlay<'_>,
    user_id: &UserId,
    device_id: &DeviceId,
    old_hash: &[u8; 32],
    new_hash: &[u8; 32],
    at_ms: u64,
) -> Result<Verdict> {
    let key = device_key(tx.group(), user_id, device_id);
    let Some(mut d) = tx.get::<DeviceRecord>(&key, "device")? else {
        return refuse(ErrorCode::Unauthenticated, "unknown device");
    };
    if d.revoked {
        return refuse(ErrorCode::Unauthenticated, "the device was signed out");
    }
    if d.refresh_hash == *new_hash {
        return Ok(Ok(())); // a retried rotation
    }
    let previous_refresh = if d.refresh_hash == *old_hash {
        // The normal case: the spent token gets its second chance from now on.
        Some(PreviousRefresh {
            hash: *old_hash,
            rotated_at_ms: at_ms,
        })
    } else if reuse_allowed(&d, old_hash, at_ms) {
        // The reply of the last rotation was lost (or a thief is racing the owner): rotating
        // again kills the token that reply carried. The second chance is used up, so the
        // spent token cannot keep minting sessions, and a stale retry of that earlier
        // rotation cannot kill the token issued now.
        None
    } else {
        return refuse(
            ErrorCode::Unauthenticated,
            "refresh token already used or wrong",
        );
    };
    d.refresh_hash = *new_hash;
    d.previous_refresh = previous_refresh;
    tx.put(key, &d);
    Ok(Ok(()))
}

fn revoke_device(tx: &mut Overlay<'_>, user_id: &UserId, device_id: &DeviceId) -> Result<Verdict> {
    let key = device_key(tx.group(), user_id, device_id);
    let Some(mut d) = tx.get::<DeviceRecord>(&key, "device")? else {
        return refuse(ErrorCode::InvalidArgument, format!("no device {device_id}"));
    };
    if !d.revoked {
        d.revoked = true;
        tx.put(key, &d);
    }
    Ok(Ok(()))
}
