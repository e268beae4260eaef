//! The gateway's half of handle claims: what keeps a handle from being lost to a sign-up that
//! died between claiming it and creating the account, without ever taking one from an account
//! somebody signed in to.
//!
//! The node half and the argument that both halves together are safe are in the module docs
//! of `bongsu_raft_store::accounts`. In short, the nodes let a claim that was never confirmed
//! be taken over after a grace period, and this side keeps two rules:
//!
//! - **G1** no session is issued for a user before its claim is confirmed ([`confirm`] is the
//!   last step of sign-up before the device is added, and sign-in confirms a claim it finds
//!   unconfirmed);
//! - **G2** before a sign-up claims a handle held by an unconfirmed claim, the old owner's
//!   account is looked up and, if it exists, its claim is confirmed instead
//!   ([`settle_before_claim`]).

use bongsu_proto::internal::{write_request, ClaimHandle, ConfirmHandle, ResolveHandleRequest};
use bongsu_proto::model::{handle_key, UserId};
use bongsu_proto::ErrorCode;

use crate::errors::{ApiError, Result};
use crate::router::Router;

/// Who holds a handle, as the handle's shard says.
pub(super) struct Claim {
    pub user: UserId,
    pub confirmed: bool,
}

fn taken(handle: &str) -> ApiError {
    ApiError::new(ErrorCode::HandleTaken, format!("handle {handle} is taken"))
}

/// The claim on a normalized handle, read on the leader of its shard (linearizable).
pub(super) async fn resolve(router: &Router, handle: &str) -> Result<Option<Claim>> {
    let shard = router.shard(&handle_key(handle)).await?;
    let req = ResolveHandleRequest {
        handle: handle.to_string(),
    };
    let reply = router
        .call(shard, |mut c| {
            let req = req.clone();
            async move { c.resolve_handle(req).await }
        })
        .await?;
    if reply.user_id.is_empty() {
        return Ok(None);
    }
    let user = UserId::try_from(reply.user_id.as_slice())
        .map_err(|e| ApiError::unavailable(format!("a node sent a bad user id: {e}")))?;
    Ok(Some(Claim {
        user,
        confirmed: reply.confirmed,
    }))
}

/// Claims a normalized handle for `user`; `HANDLE_TAKEN` when somebody else holds it (and the
/// nodes do not let this claim take it over).
pub(super) async fn claim(router: &Router, handle: &str, user: UserId) -> Result<()> {
    router
        .write(
            &handle_key(handle),
            write_request::Command::ClaimHandle(ClaimHandle {
                handle: handle.to_string(),
                user_id: user.0.to_vec(),
            }),
        )
        .await?;
    Ok(())
}

/// Confirms `user`'s claim on a normalized handle. Send only once the account exists: a
/// confirmed claim is never taken over.
pub(super) async fn confirm(router: &Router, handle: &str, user: UserId) -> Result<()> {
    router
        .write(
            &handle_key(handle),
            write_request::Command::ConfirmHandle(ConfirmHandle {
                handle: handle.to_string(),
                user_id: user.0.to_vec(),
            }),
        )
        .await?;
    Ok(())
}

/// G2, before a sign-up claims `handle`: `HANDLE_TAKEN` if the handle belongs to an account
/// (confirming the claim first when that account's own confirmation was lost), `Ok` when the
/// handle is free or held only by a claim without an account, which the nodes then let the
/// claim take over or not, by its age.
///
/// An account created after the lookup here cannot win against a takeover that follows: its
/// confirmation is then refused by the handle's shard, and without it no session is issued
/// for it (G1).
pub(super) async fn settle_before_claim(router: &Router, handle: &str) -> Result<()> {
    let Some(old) = resolve(router, handle).await? else {
        return Ok(());
    };
    if old.confirmed {
        return Err(taken(handle));
    }
    match router.account(&old.user).await? {
        Some(account) if account.handle == handle => {
            tracing::info!(owner = %old.user, "confirming a claim whose sign-up did not");
            match confirm(router, handle, old.user).await {
                // Confirmed for the old owner; or it lost the handle meanwhile, to another
                // sign-up: taken either way.
                Ok(()) => Err(taken(handle)),
                Err(e) if e.code == ErrorCode::HandleTaken => Err(taken(handle)),
                Err(e) => Err(e),
            }
        }
        // No account for this claim (or, impossibly, one for another handle): the claim is
        // only a sign-up in progress or a dead one, and the nodes tell which by its age.
        _ => Ok(()),
    }
}
