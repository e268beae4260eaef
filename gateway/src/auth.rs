//! Accounts and devices: sign-up, sign-in, refresh, revocation, and the check of every access
//! token.
//!
//! Passwords are hashed here (argon2id) and only the PHC string reaches a node; refresh tokens
//! are stored by the user's shard as SHA-256. Access tokens verify locally with the cluster's
//! keys; whether the device was revoked is cached for `device_check_secs`, so a revocation
//! reaches every gateway within that time without a lookup per request. Nothing here logs a
//! password or a token.

mod password;
mod signup;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bongsu_proto::internal::{
    write_request, AddDevice, CreateAccount, GetAccountReply, RevokeDevice, RotateRefresh,
};
use bongsu_proto::model::requests::{Device, SignIn, SignUp};
use bongsu_proto::model::{DeviceId, UserId};
use bongsu_proto::{v1, ErrorCode};
use tracing::instrument;

pub use tokens::{KeyRing, TokenClaims};

use crate::config::Config;
use crate::errors::{ApiError, Result};
use crate::router::{MapView, Router};

/// Who is calling: established from a verified access token by [`Auth::authenticate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: UserId,
    pub device: DeviceId,
}

/// Past this many cached device checks, stale ones are swept (memory stays bounded).
const DEVICE_CACHE_SWEEP: usize = 100_000;

/// The one answer to every failed sign-in: which part was wrong is not told (no user
/// enumeration).
fn wrong_credentials() -> ApiError {
    ApiError::unauthenticated("wrong handle or password")
}

pub struct Auth {
    router: Arc<Router>,
    access_ttl: Duration,
    device_check: Duration,
    /// The key ring and the map it was built from: rebuilt when the map changes.
    keys: Mutex<Option<(Arc<MapView>, Arc<KeyRing>)>>,
    /// Devices seen "not revoked", and when.
    devices: Mutex<HashMap<(UserId, DeviceId), Instant>>,
}

impl Auth {
    pub fn new(config: &Config, router: Arc<Router>) -> Auth {
        Auth {
            router,
            access_ttl: Duration::from_secs(config.access_ttl_secs.max(1)),
            device_check: Duration::from_secs(config.device_check_secs),
            keys: Mutex::new(None),
            devices: Mutex::new(HashMap::new()),
        }
    }

    /// The key ring of the current shard map.
    pub fn keys(&self) -> Arc<KeyRing> {
        let map = self.router.map();
        let mut cached = self.keys.lock().expect("key ring lock poisoned");
        if let Some((m, ring)) = cached.as_ref() {
            if Arc::ptr_eq(m, &map) {
                return ring.clone();
            }
        }
        let ring = Arc::new(KeyRing::new(&map.map.signing_keys));
        *cached = Some((map, ring.clone()));
        ring
    }

    /// Signature and expiry locally, then "not revoked" from the cache or the user's shard.
    pub async fn authenticate(&self, token: &str) -> Result<Caller> {
        let TokenClaims { user, device } = self.keys().verify(token)?;
        self.check_device(user, device).await?;
        Ok(Caller { user, device })
    }

    /// `UNAUTHENTICATED` if the device was revoked (or its account is gone). A "not revoked"
    /// seen less than `device_check_secs` ago is trusted without a lookup; push sessions call
    /// this periodically, so the many streams of a gateway cost one lookup per device per
    /// period at most.
    pub async fn check_device(&self, user: UserId, device: DeviceId) -> Result<()> {
        let key = (user, device);
        let fresh = self
            .devices
            .lock()
            .expect("device cache lock poisoned")
            .get(&key)
            .is_some_and(|at| at.elapsed() < self.device_check);
        if fresh {
            return Ok(());
        }
        let account = self.router.account(&user).await?;
        let live = account.as_ref().is_some_and(|a| {
            a.devices
                .iter()
                .any(|d| d.device_id == device.0 && !d.revoked)
        });
        if !live {
            self.forget_device(&user, &device);
            return Err(ApiError::unauthenticated("the device was signed out"));
        }
        let mut devices = self.devices.lock().expect("device cache lock poisoned");
        if devices.len() > DEVICE_CACHE_SWEEP {
            let ttl = self.device_check;
            devices.retain(|_, at| at.elapsed() < ttl);
        }
        devices.insert(key, Instant::now());
        Ok(())
    }

    /// How often a push session re-checks its device: the cache's lifetime, but never more
    /// often than once a second (a lifetime of 0 turns the cache off, not the check into a
    /// busy loop).
    pub fn device_check_every(&self) -> Duration {
        self.device_check.max(Duration::from_secs(1))
    }

    fn forget_device(&self, user: &UserId, device: &DeviceId) {
        self.devices
            .lock()
            .expect("device cache lock poisoned")
            .remove(&(*user, *device));
    }

    /// Claim the handle for a fresh user id, create the account, confirm the claim, add the
    /// device. The confirmation comes before the device so that no session is ever issued for
    /// an account whose handle could still be taken over (see `auth/signup.rs`); a sign-up
    /// that dies after it leaves an account the person can sign in to.
    #[instrument(skip_all, fields(user))]
    pub async fn sign_up(&self, req: v1::SignUpRequest) -> Result<v1::Session> {
        let SignUp {
            handle,
            password,
            device,
        } = SignUp::try_from(req)?;
        let hash = password::hash(password).await?;
        let user = UserId(tokens::random_id());
        tracing::Span::current().record("user", tracing::field::display(&user));
        signup::settle_before_claim(&self.router, &handle).await?;
        signup::claim(&self.router, &handle, user).await?;
        self.router
            .write(
                &user.0,
                write_request::Command::CreateAccount(CreateAccount {
                    user_id: user.0.to_vec(),
                    handle: handle.clone(),
                    password_hash: hash,
                }),
            )
            .await?;
        signup::confirm(&self.router, &handle, user).await?;
        tracing::info!("account created");
        self.add_device(user, handle, device).await
    }

    #[instrument(skip_all, fields(user))]
    pub async fn sign_in(&self, req: v1::SignInRequest) -> Result<v1::Session> {
        let SignIn {
            handle,
            password,
            device,
        } = SignIn::try_from(req)?;
        let Some(handle) = handle else {
            return Err(wrong_credentials());
        };
        let account = match signup::resolve(&self.router, &handle).await? {
            Some(claim) => self
                .router
                .account(&claim.user)
                .await?
                // A claim whose account has another handle is not this handle's account.
                .filter(|a| a.handle == handle)
                .map(|a| (claim, a)),
            None => None,
        };
        let Some((claim, account)) = account else {
            password::verify_dummy(password).await?;
            return Err(wrong_credentials());
        };
        let user = claim.user;
        tracing::Span::current().record("user", tracing::field::display(&user));
        if !password::verify(password, account.password_hash).await? {
            tracing::info!("sign-in with a wrong password");
            return Err(wrong_credentials());
        }
        if !claim.confirmed {
            // The account exists but its sign-up's confirmation was lost: confirm now, and
            // issue no session unless that holds (the claim may just have been taken over).
            match signup::confirm(&self.router, &handle, user).await {
                Ok(()) => tracing::info!("confirmed the handle at sign-in"),
                Err(e) if retryable(e.code) => return Err(e),
                Err(e) => {
                    tracing::info!(error = %e, "the account lost its handle");
                    return Err(wrong_credentials());
                }
            }
        }
        self.add_device(user, account.handle, device).await
    }

    async fn add_device(
        &self,
        user: UserId,
        handle: String,
        device: Device,
    ) -> Result<v1::Session> {
        let device_id = DeviceId(tokens::random_id());
        let refresh = tokens::new_refresh_token(user, device_id);
        self.router
            .write(
                &user.0,
                write_request::Command::AddDevice(AddDevice {
                    user_id: user.0.to_vec(),
                    device_id: device_id.0.to_vec(),
                    name: device.name,
                    kind: v1::DeviceKind::from(device.kind) as i32,
                    refresh_hash: tokens::refresh_hash(&refresh),
                }),
            )
            .await?;
        tracing::info!(device = %device_id, "device signed in");
        self.session(user, handle, device_id, refresh)
    }

    fn session(
        &self,
        user: UserId,
        handle: String,
        device: DeviceId,
        refresh_token: String,
    ) -> Result<v1::Session> {
        let (access_token, access_expires_at_ms) =
            self.keys().sign(user, device, self.access_ttl)?;
        // A device that just signed in is live: no lookup on its first request.
        self.devices
            .lock()
            .expect("device cache lock poisoned")
            .insert((user, device), Instant::now());
        Ok(v1::Session {
            user_id: user.0.to_vec(),
            handle,
            device_id: device.0.to_vec(),
            access_token,
            access_expires_at_ms,
            refresh_token,
        })
    }

    /// Rotates the refresh token and issues a new access token. Refresh tokens are single-use,
    /// except that the one spent last is accepted once more for a short while (its reply may
    /// have been lost; the user's shard decides, see `REFRESH_REUSE_MS` in raft-store).
    #[instrument(skip_all, fields(user, device))]
    pub async fn refresh(&self, req: v1::RefreshRequest) -> Result<v1::Session> {
        let (user, device) = tokens::parse_refresh_token(&req.refresh_token)?;
        let span = tracing::Span::current();
        span.record("user", tracing::field::display(&user));
        span.record("device", tracing::field::display(&device));
        let next = tokens::new_refresh_token(user, device);
        let rotated = self
            .router
            .write(
                &user.0,
                write_request::Command::RotateRefresh(RotateRefresh {
                    user_id: user.0.to_vec(),
                    device_id: device.0.to_vec(),
                    old_hash: tokens::refresh_hash(&req.refresh_token),
                    new_hash: tokens::refresh_hash(&next),
                }),
            )
            .await;
        match rotated {
            Ok(_) => {}
            Err(e) if retryable(e.code) => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "refresh refused");
                return Err(ApiError::unauthenticated(
                    "the refresh token is invalid, used, or its device was signed out",
                ));
            }
        }
        let Some(account) = self.router.account(&user).await? else {
            return Err(ApiError::unauthenticated("the account no longer exists"));
        };
        self.session(user, account.handle, device, next)
    }

    pub async fn list_devices(&self, c: &Caller) -> Result<v1::ListDevicesReply> {
        let account = self.account(&c.user).await?;
        Ok(v1::ListDevicesReply {
            devices: account
                .devices
                .into_iter()
                .map(|d| v1::Device {
                    current: d.device_id == c.device.0,
                    device_id: d.device_id,
                    kind: d.kind,
                    name: d.name,
                    created_at_ms: d.created_at_ms,
                    revoked: d.revoked,
                })
                .collect(),
        })
    }

    #[instrument(skip_all, fields(user = %c.user, device = %c.device))]
    pub async fn revoke_device(
        &self,
        c: &Caller,
        req: v1::RevokeDeviceRequest,
    ) -> Result<v1::RevokeDeviceReply> {
        let target = DeviceId::try_from(req.device_id.as_slice())?;
        // Only the caller's own user id is ever sent, so nobody revokes another's device.
        self.router
            .write(
                &c.user.0,
                write_request::Command::RevokeDevice(RevokeDevice {
                    user_id: c.user.0.to_vec(),
                    device_id: target.0.to_vec(),
                }),
            )
            .await?;
        self.forget_device(&c.user, &target);
        tracing::info!(revoked = %target, "device signed out");
        Ok(v1::RevokeDeviceReply {})
    }

    async fn account(&self, user: &UserId) -> Result<GetAccountReply> {
        self.router
            .account(user)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))
    }
}

fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::ResourceExhausted
    )
}
