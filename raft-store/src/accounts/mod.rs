//! Accounts, handles and devices: the state behind sign-up, sign-in and per-device tokens.
//!
//! People sign up with a handle and a password only: no phone number, real name, birthday or
//! address is asked for or stored (the 2011 Nate/Cyworld breach leaked exactly those for 35 M
//! people). The server keeps an argon2id hash of the password (computed by the gateway, never
//! the password), and per device a SHA-256 of its current refresh token, so a stolen database
//! yields no credential.
//!
//! Where things live: a handle claim in the shard of `handle_key(handle)`, the account and its
//! devices in the shard of the user id. Sign-up claims the handle first (idempotent for the
//! same user id), then creates the account; a retry of either is harmless.
//!
//! State layout in the `sm` column family, after the group prefix:
//!
//! | tag | rest of key | value |
//! | --- | --- | --- |
//! | `20` | handle (UTF-8) | user id |
//! | `21` | user | [`AccountRecord`] |
//! | `22` | user · device | [`DeviceRecord`] |

mod apply;
mod view;

use bongsu_proto::model::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

pub(crate) use apply::apply;
pub use view::AccountView;

pub use bongsu_proto::model::handle_key;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub handle: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    pub created_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Phone,
    Tablet,
    Pc,
    Web,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub kind: DeviceKind,
    pub created_at_ms: u64,
    /// SHA-256 of the device's current refresh token.
    pub refresh_hash: [u8; 32],
    pub revoked: bool,
}

/// Changes to accounts, applied by the shard that owns the handle or the user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountCommand {
    ClaimHandle {
        handle: String,
        user_id: UserId,
    },
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
    /// Replaces the refresh token hash if `old_hash` is the current one (refresh tokens are
    /// single-use: a replayed one fails).
    RotateRefresh {
        user_id: UserId,
        device_id: DeviceId,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
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
            AccountCommand::ClaimHandle { handle, user_id } => {
                write!(f, "ClaimHandle({handle} for {user_id})")
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
