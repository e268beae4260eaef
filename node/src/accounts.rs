//! Accounts on the internal API: account writes turned into commands (with the id that places
//! them on a shard), and the linearizable reads gateways sign people in with.

use bongsu_proto::internal::{self as pb, write_request};
use bongsu_proto::model::{handle_key, normalize_handle, shard_of, DeviceId, UserId};
use bongsu_proto::{v1, ErrorCode, ModelError};
use bongsu_raft_store::accounts::{AccountCommand, AccountView, DeviceKind};
use bongsu_raft_store::meta::shard_group;
use bongsu_raft_store::Command;

use crate::errors::{NodeError, Result};
use crate::node::Node;

fn bad(e: ModelError) -> NodeError {
    NodeError::rejected(e.code, e.to_string())
}

fn user(b: &[u8]) -> Result<UserId> {
    UserId::try_from(b).map_err(bad)
}

fn device(b: &[u8]) -> Result<DeviceId> {
    DeviceId::try_from(b).map_err(bad)
}

/// A token hash is a SHA-256: exactly 32 bytes.
fn hash32(field: &str, b: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(b).map_err(|_| {
        NodeError::rejected(
            ErrorCode::InvalidArgument,
            format!("{field}: a SHA-256 of 32 bytes, got {} bytes", b.len()),
        )
    })
}

/// A device kind from a forwarded write (the model's one definition, stored as is).
pub fn device_kind(k: i32) -> Result<DeviceKind> {
    DeviceKind::try_from(k).map_err(|_| {
        NodeError::rejected(
            ErrorCode::InvalidArgument,
            format!("kind: {k} is not a device kind"),
        )
    })
}

/// Validates an account write. The id decides the shard: a handle claim and its confirmation
/// go to the shard of `handle_key(handle)`, so that one shard decides who owns a handle;
/// everything else to the user's shard. `at_ms` is this node's clock, never the caller's: the
/// claim's grace period and a spent refresh token's reuse window are measured with it. `None` when the write is not an account command.
pub fn command(cmd: &write_request::Command, at_ms: u64) -> Result<Option<([u8; 16], Command)>> {
    let (key, a) = match cmd {
        write_request::Command::ClaimHandle(c) => {
            let handle = normalize_handle(&c.handle).map_err(bad)?;
            let user_id = user(&c.user_id)?;
            (
                handle_key(&handle),
                AccountCommand::ClaimHandle {
                    handle,
                    user_id,
                    at_ms,
                },
            )
        }
        write_request::Command::ConfirmHandle(c) => {
            let handle = normalize_handle(&c.handle).map_err(bad)?;
            let user_id = user(&c.user_id)?;
            (
                handle_key(&handle),
                AccountCommand::ConfirmHandle { handle, user_id },
            )
        }
        write_request::Command::CreateAccount(c) => {
            let user_id = user(&c.user_id)?;
            // Stored normalized, as claimed, so the account and its claim agree.
            let handle = normalize_handle(&c.handle).map_err(bad)?;
            (
                user_id.0,
                AccountCommand::CreateAccount {
                    user_id,
                    handle,
                    password_hash: c.password_hash.clone(),
                    at_ms,
                },
            )
        }
        write_request::Command::AddDevice(c) => {
            let user_id = user(&c.user_id)?;
            (
                user_id.0,
                AccountCommand::AddDevice {
                    user_id,
                    device_id: device(&c.device_id)?,
                    name: c.name.clone(),
                    kind: device_kind(c.kind)?,
                    refresh_hash: hash32("refresh_hash", &c.refresh_hash)?,
                    at_ms,
                },
            )
        }
        write_request::Command::RotateRefresh(c) => {
            let user_id = user(&c.user_id)?;
            (
                user_id.0,
                AccountCommand::RotateRefresh {
                    user_id,
                    device_id: device(&c.device_id)?,
                    old_hash: hash32("old_hash", &c.old_hash)?,
                    new_hash: hash32("new_hash", &c.new_hash)?,
                    // The spent token's reuse window is measured with it.
                    at_ms,
                },
            )
        }
        write_request::Command::RevokeDevice(c) => {
            let user_id = user(&c.user_id)?;
            (
                user_id.0,
                AccountCommand::RevokeDevice {
                    user_id,
                    device_id: device(&c.device_id)?,
                },
            )
        }
        _ => return Ok(None),
    };
    Ok(Some((key, Command::Account(a))))
}

impl Node {
    /// Who holds a handle and whether the claim is confirmed, read on the leader of the
    /// handle's shard.
    pub async fn resolve_handle(
        &self,
        req: pb::ResolveHandleRequest,
    ) -> Result<pb::ResolveHandleReply> {
        let handle = normalize_handle(&req.handle).map_err(bad)?;
        let group = shard_group(shard_of(&handle_key(&handle), self.shard_count()?));
        let h = self.linearizable(group).await?;
        let claim = AccountView::new(h.sm.view_store(), group).handle(&handle)?;
        Ok(pb::ResolveHandleReply {
            user_id: claim.map(|c| c.user_id.0.to_vec()).unwrap_or_default(),
            confirmed: claim.is_some_and(|c| c.confirmed),
        })
    }

    /// An account with its devices, read on the leader of the user's shard.
    pub async fn get_account(&self, req: pb::GetAccountRequest) -> Result<pb::GetAccountReply> {
        let user_id = user(&req.user_id)?;
        let group = shard_group(shard_of(&user_id.0, self.shard_count()?));
        let h = self.linearizable(group).await?;
        let view = AccountView::new(h.sm.view_store(), group);
        let Some(account) = view.account(&user_id)? else {
            return Ok(pb::GetAccountReply::default());
        };
        let devices = view
            .devices(&user_id)?
            .into_iter()
            .map(|(id, d)| pb::DeviceRecord {
                device_id: id.0.to_vec(),
                name: d.name,
                kind: v1::DeviceKind::from(d.kind) as i32,
                created_at_ms: d.created_at_ms,
                refresh_hash: d.refresh_hash.to_vec(),
                revoked: d.revoked,
            })
            .collect();
        Ok(pb::GetAccountReply {
            found: true,
            handle: account.handle,
            password_hash: account.password_hash,
            created_at_ms: account.created_at_ms,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bongsu_proto::internal::{AddDevice, ClaimHandle, ConfirmHandle, RotateRefresh};

    fn code(r: Result<Option<([u8; 16], Command)>>) -> Option<ErrorCode> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn claims_route_by_normalized_handle_and_the_rest_by_user() {
        let claim = write_request::Command::ClaimHandle(ClaimHandle {
            handle: "  Jisoo.Kim ".into(),
            user_id: vec![7; 16],
        });
        let (key, cmd) = command(&claim, 42).unwrap().unwrap();
        assert_eq!(key, handle_key("jisoo.kim"));
        assert!(matches!(
            cmd,
            Command::Account(AccountCommand::ClaimHandle { ref handle, at_ms: 42, .. })
                if handle == "jisoo.kim"
        ));
        let confirm = write_request::Command::ConfirmHandle(ConfirmHandle {
            handle: "JISOO.kim".into(),
            user_id: vec![7; 16],
        });
        let (key, cmd) = command(&confirm, 1).unwrap().unwrap();
        assert_eq!(key, handle_key("jisoo.kim"), "routed like the claim");
        assert!(matches!(
            cmd,
            Command::Account(AccountCommand::ConfirmHandle { ref handle, user_id })
                if handle == "jisoo.kim" && user_id == UserId([7; 16])
        ));
        let add = write_request::Command::AddDevice(AddDevice {
            user_id: vec![7; 16],
            device_id: vec![8; 16],
            name: "phone".into(),
            kind: v1::DeviceKind::Phone as i32,
            refresh_hash: vec![1; 32],
        });
        assert_eq!(command(&add, 1).unwrap().unwrap().0, [7; 16]);
        let rotate = write_request::Command::RotateRefresh(RotateRefresh {
            user_id: vec![7; 16],
            device_id: vec![8; 16],
            old_hash: vec![1; 32],
            new_hash: vec![2; 32],
        });
        let (key, cmd) = command(&rotate, 42).unwrap().unwrap();
        assert_eq!(key, [7; 16]);
        assert!(
            matches!(
                cmd,
                Command::Account(AccountCommand::RotateRefresh {
                    old_hash,
                    new_hash,
                    at_ms: 42,
                    ..
                }) if old_hash == [1; 32] && new_hash == [2; 32]
            ),
            "stamped with this node's clock: {cmd:?}"
        );
    }

    #[test]
    fn bad_account_writes_are_invalid_arguments() {
        let cases = vec![
            write_request::Command::ClaimHandle(ClaimHandle {
                handle: "no way!".into(),
                user_id: vec![7; 16],
            }),
            write_request::Command::ConfirmHandle(ConfirmHandle {
                handle: "no way!".into(),
                user_id: vec![7; 16],
            }),
            write_request::Command::ConfirmHandle(ConfirmHandle {
                handle: "jisoo".into(),
                user_id: vec![7; 15],
            }),
            write_request::Command::AddDevice(AddDevice {
                user_id: vec![7; 16],
                device_id: vec![8; 16],
                name: "phone".into(),
                kind: v1::DeviceKind::Unspecified as i32,
                refresh_hash: vec![1; 32],
            }),
            write_request::Command::AddDevice(AddDevice {
                user_id: vec![7; 16],
                device_id: vec![8; 16],
                name: "phone".into(),
                kind: 99,
                refresh_hash: vec![1; 32],
            }),
            write_request::Command::RotateRefresh(RotateRefresh {
                user_id: vec![7; 16],
                device_id: vec![8; 16],
                old_hash: vec![1; 31],
                new_hash: vec![2; 32],
            }),
            write_request::Command::RotateRefresh(RotateRefresh {
                user_id: vec![7; 15],
                device_id: vec![8; 16],
                old_hash: vec![1; 32],
                new_hash: vec![2; 32],
            }),
        ];
        for c in cases {
            assert_eq!(
                code(command(&c, 1)),
                Some(ErrorCode::InvalidArgument),
                "{c:?}"
            );
        }
    }

    #[test]
    fn device_kinds_round_trip() {
        for &k in DeviceKind::ALL {
            assert_eq!(device_kind(v1::DeviceKind::from(k) as i32).unwrap(), k);
        }
    }
}
