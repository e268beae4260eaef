//! Accounts, handles and devices: the state behind sign-up, sign-in and per-device tokens.
//!
//! People sign up with a handle and a password only: no phone number, real name, birthday or
//! address is asked for or stored (the 2011 Nate/Cyworld breach leaked exactly those for 35 M
//! people). The server keeps an argon2id hash of the password (computed by the gateway, never
//! the password), and per device a SHA-256 of its current refresh token (and of the one it
//! replaced, for [`REFRESH_REUSE_MS`]), so a stolen database yields no credential.
//!
//! Where things live: a handle claim in the shard of `handle_key(handle)`, the account and its
//! devices in the shard of the user id. No shard sees both, so sign-up is a sequence of
//! single-shard commands: claim the handle for a fresh user id, create the account, confirm
//! the claim, then add the first device. Each step is idempotent, so a retry of any is
//! harmless.
//!
//! # Claims that are never confirmed
//!
//! A gateway can die (or time out) after the claim and before the confirmation. Without more,
//! the handle would stay claimed by a user id that may have no account, and be lost for good.
//! So a claim is a [`HandleRecord`] `{user_id, claimed_at_ms, confirmed}`, and:
//!
//! - **N1.** `ClaimHandle` by another user id replaces the owner only if the claim is
//!   unconfirmed and older than [`CLAIM_GRACE_MS`] (the command's `at_ms`, stamped by the
//!   proposing node, against `claimed_at_ms`). Otherwise `HANDLE_TAKEN`.
//! - **N2.** `ConfirmHandle` succeeds only for the user id that holds the claim, and a confirmed
//!   claim is never replaced (N1) nor unconfirmed again.
//! - **G1.** A gateway issues a session (sign-up or sign-in) for a user only after
//!   `ConfirmHandle` for that user and the account's handle succeeded; sign-in, once the
//!   password is right, confirms a claim it finds unconfirmed (the sign-up's confirmation was
//!   lost).
//! - **G2.** Before a sign-up claims a handle held by an unconfirmed claim, the gateway reads
//!   the old owner's account and, if it exists with that handle, confirms it for the old owner
//!   and answers `HANDLE_TAKEN` instead of claiming.
//!
//! Why no account that anyone ever used loses its handle: every decision about one handle is a
//! command in one Raft log, applied in one order by every replica. By G1 a user ever got a
//! session only after their `ConfirmHandle` applied; by N2 nothing applied after it can replace
//! them. The only users that can be displaced are those whose confirmation had not applied when
//! the takeover did, and that confirmation then fails, so their sign-up (or sign-in) ends
//! without a session. This argument uses no clock and no cross-shard read: the race between
//! a late confirmation and a takeover is settled by the order of the handle's log.
//!
//! What the clock and G2 are for: not losing a sign-up that is merely slow, or whose last step
//! alone was lost. The grace period keeps any in-flight sign-up (each step bounded by the
//! request deadline, seconds) from being displaced, and G2 turns an account that was created but
//! not confirmed into a confirmed one before anyone may take its handle. What is left to a
//! takeover is a claim whose account did not exist when G2 looked, ten minutes after the claim:
//! in practice a sign-up that died before `CreateAccount`. If a stalled `CreateAccount` still
//! lands afterwards, its account is unreachable (sign-in resolves the handle to the new owner,
//! and its own confirmation is refused), never a second owner of the handle.
//!
//! State layout in the `sm` column family, after the group prefix:
//!
//! | tag | rest of key | value |
//! | --- | --- | --- |
//! | `20` | handle (UTF-8) | [`HandleRecord`] |
//! | `21` | user | [`AccountRecord`] |
//! | `22` | user · device | [`DeviceRecord`] |

mod apply;
mod view;

use bongsu_proto::model::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

pub(crate) use apply::apply;
pub use view::AccountView;

pub use bongsu_proto::model::handle_key;

/// How long an unconfirmed claim is protected from a takeover by another user id. A sign-up's
/// steps each end within the gateway's request deadline (seconds), so a claim still
/// unconfirmed after ten minutes belongs to a sign-up that died; the margin is that large so
/// that a slow step, a leader change, or wall clocks of successive leaders disagreeing by a
/// few seconds (the stamps come from whichever node proposed) never let a takeover overtake a
/// sign-up that is still going. Safety does not rest on it (see the module docs), only
/// liveness of slow sign-ups. A constant, not a setting: every replica must decide alike.
pub const CLAIM_GRACE_MS: u64 = 10 * 60 * 1000;

/// How long after a rotation the refresh token it spent is still accepted, once, in place of
/// the current one. A refresh whose reply is lost (a flaky mobile network) leaves the client
/// with only the spent token; without this window its next attempt would sign the person
/// out. Accepting the spent token rotates again, so the token issued by the lost reply dies.
///
/// The trade-off: someone who stole a refresh token and races its owner within these 60 s
/// gets a session too. It is visible rather than silent: whichever of the two rotated first
/// finds its token dead at its next refresh (UNAUTHENTICATED), and revoking the device kills
/// both at once. A constant, not a setting: every replica must decide alike.
pub const REFRESH_REUSE_MS: u64 = 60 * 1000;

/// Who holds a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRecord {
    pub user_id: UserId,
    /// `at_ms` of the claim that made this user the owner (a retried claim keeps it).
    pub claimed_at_ms: u64,
    /// Set once the owner's account exists; from then on the claim is never replaced.
    pub confirmed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub handle: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    pub created_at_ms: u64,
}

/// The model's one definition; stored by variant index (postcard), as before it moved.
pub use bongsu_proto::model::DeviceKind;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub kind: DeviceKind,
    pub created_at_ms: u64,
    /// SHA-256 of the device's current refresh token.
    pub refresh_hash: [u8; 32],
    pub revoked: bool,
    /// The token the last rotation spent, while it may still be presented once more (see
    /// [`REFRESH_REUSE_MS`]). `None` after sign-in and once that second chance was used.
    pub previous_refresh: Option<PreviousRefresh>,
}

/// A spent refresh token's hash and when it was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousRefresh {
    /// SHA-256 of the spent token.
    pub hash: [u8; 32],
    /// `at_ms` of the rotation that spent it (the proposing node's clock).
    pub rotated_at_ms: u64,
}

/// Changes to accounts, applied by the shard that owns the handle or the user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountCommand {
    /// Claims a handle for a user id, or takes over an unconfirmed claim older than
    /// [`CLAIM_GRACE_MS`].
    ClaimHandle {
        handle: String,
        user_id: UserId,
        at_ms: u64,
    },
    /// Marks the claim confirmed, if `user_id` holds it. Sent only once the account exists.
    ConfirmHandle { handle: String, user_id: UserId },
    CreateAccount {
        user_id: UserId,
        handle: String,
        password_hash: String,
        at_ms: u64,
    },
    AddDevice {
        user_id: UserId,
        device_id: DeviceId,
        name: String,
        kind: DeviceKind,
        refresh_hash: [u8; 32],
        at_ms: u64,
    },
    /// Replaces the refresh token hash if `old_hash` is the current one, or the one the last
    /// rotation spent, presented once within [`REFRESH_REUSE_MS`] of `at_ms` (its reply may
    /// have been lost). Any other token fails: refresh tokens are otherwise single-use.
    RotateRefresh {
        user_id: UserId,
        device_id: DeviceId,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        at_ms: u64,
    },
    RevokeDevice {
        user_id: UserId,
        device_id: DeviceId,
    },
}

/// Password hashes and token hashes never reach logs.
impl std::fmt::Debug for AccountCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountCommand::ClaimHandle {
                handle, user_id, ..
            } => write!(f, "ClaimHandle({handle} for {user_id})"),
            AccountCommand::ConfirmHandle { handle, user_id } => {
                write!(f, "ConfirmHandle({handle} for {user_id})")
            }
            AccountCommand::CreateAccount {
                user_id, handle, ..
            } => write!(f, "CreateAccount({user_id} {handle})"),
            AccountCommand::AddDevice {
                user_id,
                device_id,
                kind,
                ..
            } => write!(f, "AddDevice({user_id} {device_id} {kind:?})"),
            AccountCommand::RotateRefresh {
                user_id, device_id, ..
            } => write!(f, "RotateRefresh({user_id} {device_id})"),
            AccountCommand::RevokeDevice { user_id, device_id } => {
                write!(f, "RevokeDevice({user_id} {device_id})")
            }
        }
    }
}

#[cfg(test)]
mod tests;
