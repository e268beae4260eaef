//! Access tokens (PASETO v4.public, signed with the cluster's Ed25519 keys) and refresh tokens
//! (opaque random strings whose SHA-256 the user's shard keeps).
//!
//! Signing keys come from the meta group through the shard map, so every gateway in every
//! datacenter signs and verifies the same tokens without a network call (ARCHITECTURE.md
//! invariant 2). The key id travels in the token's footer; retired keys still verify.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bongsu_proto::internal::SigningKeyEntry;
use bongsu_proto::model::{DeviceId, UserId};
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::Public;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::errors::{ApiError, Result};

/// The claim with the device id (the user id is the standard `sub`).
const DEVICE_CLAIM: &str = "dev";

/// What a verified access token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub user: UserId,
    pub device: DeviceId,
}

/// The cluster's token keys, parsed once per shard-map change.
#[derive(Default)]
pub struct KeyRing {
    /// The newest key that is not retired: every new token is signed with it.
    signer: Option<(String, AsymmetricSecretKey<V4>)>,
    verifiers: HashMap<String, AsymmetricPublicKey<V4>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Footer {
    kid: String,
}

fn bad_token() -> ApiError {
    // One message for every way a token can be wrong: which check failed helps only an
    // attacker.
    ApiError::unauthenticated("the access token is invalid or expired")
}

impl KeyRing {
    pub fn new(entries: &[SigningKeyEntry]) -> KeyRing {
        let mut ring = KeyRing::default();
        let mut newest: Option<(u64, &str)> = None;
        for e in entries {
            let public = match <[u8; 32]>::try_from(e.seed.as_slice()) {
                Ok(seed) => {
                    let pk = ed25519_dalek::SigningKey::from_bytes(&seed)
                        .verifying_key()
                        .to_bytes();
                    if !e.public_key.is_empty() && e.public_key != pk {
                        tracing::warn!(kid = %e.kid, "signing key: public key does not match its seed; using the seed's");
                    }
                    if e.retired_at_ms == 0 {
                        let mut both = seed.to_vec();
                        both.extend_from_slice(&pk);
                        match AsymmetricSecretKey::<V4>::from(&both) {
                            Ok(sk) => {
                                if newest.is_none_or(|(at, kid)| {
                                    (e.created_at_ms, e.kid.as_str()) > (at, kid)
                                }) {
                                    newest = Some((e.created_at_ms, &e.kid));
                                    ring.signer = Some((e.kid.clone(), sk));
                                }
                            }
                            Err(_) => tracing::warn!(kid = %e.kid, "signing key unusable"),
                        }
                    }
                    pk.to_vec()
                }
                Err(_) => e.public_key.clone(),
            };
            match AsymmetricPublicKey::<V4>::from(&public) {
                Ok(pk) => {
                    ring.verifiers.insert(e.kid.clone(), pk);
                }
                Err(_) => tracing::warn!(kid = %e.kid, "signing key without a usable public key"),
            }
        }
        ring
    }

    /// True when new tokens can be signed.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// An access token for a device, valid for `ttl`, and when it expires (ms since the epoch).
    pub fn sign(&self, user: UserId, device: DeviceId, ttl: Duration) -> Result<(String, u64)> {
        let mut claims = Claims::new_expires_in(&ttl)
            .map_err(|_| ApiError::unavailable("cannot build token claims"))?;
        // Claims keep whole seconds, so the expiry reported to the client is rounded the same.
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires_ms = (now_s + ttl.as_secs()) * 1000;
        claims
            .subject(&user.to_string())
            .and_then(|_| claims.add_additional(DEVICE_CLAIM, device.to_string()))
            .map_err(|_| ApiError::unavailable("cannot build token claims"))?;
        Ok((self.sign_claims(&claims)?, expires_ms))
    }

    fn sign_claims(&self, claims: &Claims) -> Result<String> {
        let (kid, sk) = self
            .signer
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("no token-signing key is known yet"))?;
        let footer = serde_json::to_vec(&Footer { kid: kid.clone() })
            .map_err(|_| ApiError::unavailable("cannot encode the token footer"))?;
        let payload = claims
            .to_string()
            .map_err(|_| ApiError::unavailable("cannot encode token claims"))?;
        PublicToken::sign(sk, payload.as_bytes(), Some(&footer), None)
            .map_err(|_| ApiError::unavailable("cannot sign the token"))
    }

    /// Checks the signature with the key the footer names, then the expiry.
    pub fn verify(&self, token: &str) -> Result<TokenClaims> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| bad_token())?;
        let footer: Footer =
            serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| bad_token())?;
        let pk = self.verifiers.get(&footer.kid).ok_or_else(bad_token)?;
        let trusted = PublicToken::verify(pk, &untrusted, None, None).map_err(|_| bad_token())?;
        let claims = Claims::from_string(trusted.payload()).map_err(|_| bad_token())?;
        let mut rules = ClaimsValidationRules::new();
        // Gateways in other datacenters have clocks that differ by a little: a token issued
        // "in the future" by a few milliseconds is fine; only the expiry matters.
        rules.disable_valid_at();
        rules.validate_claims(&claims).map_err(|_| bad_token())?;
        let text = |name: &str| {
            claims
                .get_claim(name)
                .and_then(|v| v.as_str())
                .ok_or_else(bad_token)
        };
        Ok(TokenClaims {
            user: text("sub")?.parse().map_err(|_| bad_token())?,
            device: text(DEVICE_CLAIM)?.parse().map_err(|_| bad_token())?,
        })
    }
}

/// A fresh random 16-byte id (user or device).
pub fn random_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b
}

/// A refresh token: `<user hex>.<device hex>.<32 random bytes, base64url>`. The ids let the
/// gateway find the device's shard without a lookup; the random part is the secret.
pub fn new_refresh_token(user: UserId, device: DeviceId) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret);
    format!("{user}.{device}.{}", URL_SAFE_NO_PAD.encode(secret))
}

/// What the user's shard stores for a refresh token: never the token itself.
pub fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The user and device a refresh token is for, if it is well formed.
pub fn parse_refresh_token(token: &str) -> Result<(UserId, DeviceId)> {
    let bad = || ApiError::unauthenticated("the refresh token is invalid");
    let mut parts = token.split('.');
    let (Some(u), Some(d), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let user: UserId = u.parse().map_err(|_| bad())?;
    let device: DeviceId = d.parse().map_err(|_| bad())?;
    // Only the exact spelling this gateway issued: its hash is what the node compares.
    if user.to_string() != u || device.to_string() != d {
        return Err(bad());
    }
    let secret = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    if secret.len() != 32 {
        return Err(bad());
    }
    Ok((user, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, seed: u8, created: u64, retired: u64) -> SigningKeyEntry {
        let pk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes();
        SigningKeyEntry {
            kid: kid.to_string(),
            seed: vec![seed; 32],
            public_key: pk.to_vec(),
            created_at_ms: created,
            retired_at_ms: retired,
        }
    }

    const U: UserId = UserId([0xab; 16]);
    const D: DeviceId = DeviceId([9; 16]);

    #[test]
    fn a_signed_token_verifies_and_names_its_device() {
        let ring = KeyRing::new(&[key("k1", 1, 1, 0)]);
        let (t, exp) = ring.sign(U, D, Duration::from_secs(60)).expect("sign");
        assert!(t.starts_with("v4.public."));
        assert!(exp > 0);
        assert_eq!(
            ring.verify(&t).expect("verify"),
            TokenClaims { user: U, device: D }
        );
    }

    #[test]
    fn the_newest_live_key_signs_and_retired_keys_still_verify() {
        let old = KeyRing::new(&[key("k1", 1, 1, 0)]);
        let (t_old, _) = old.sign(U, D, Duration::from_secs(60)).expect("sign");
        let ring = KeyRing::new(&[key("k1", 1, 1, 5), key("k2", 2, 3, 0), key("k0", 3, 0, 0)]);
        let (t_new, _) = ring.sign(U, D, Duration::from_secs(60)).expect("sign");
        let footer = t_new.rsplit('.').next().expect("footer");
        let footer = URL_SAFE_NO_PAD.decode(footer).expect("b64");
        assert_eq!(footer, br#"{"kid":"k2"}"#);
        assert!(ring.verify(&t_old).is_ok());
        assert!(ring.verify(&t_new).is_ok());
    }

    #[test]
    fn only_retired_keys_cannot_sign() {
        let ring = KeyRing::new(&[key("k1", 1, 1, 5)]);
        assert!(!ring.can_sign());
        assert!(ring.sign(U, D, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn bad_tokens_are_unauthenticated() {
        let ring = KeyRing::new(&[key("k1", 1, 1, 0)]);
        let other = KeyRing::new(&[key("k1", 2, 1, 0)]);
        let (forged, _) = other.sign(U, D, Duration::from_secs(60)).expect("sign");
        let unknown_kid = KeyRing::new(&[key("zz", 1, 1, 0)])
            .sign(U, D, Duration::from_secs(60))
            .expect("sign")
            .0;
        let mut expired = Claims::new().expect("claims");
        expired.subject(&U.to_string()).expect("sub");
        expired
            .add_additional(DEVICE_CLAIM, D.to_string())
            .expect("dev");
        expired
            .expiration("2001-01-01T00:00:00+00:00")
            .expect("exp");
        let expired = ring.sign_claims(&expired).expect("sign");
        let (good, _) = ring.sign(U, D, Duration::from_secs(60)).expect("sign");
        let mut flipped = good.clone().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for (name, t) in [
            ("wrong key", forged.as_str()),
            ("unknown kid", unknown_kid.as_str()),
            ("expired", expired.as_str()),
            ("tampered", flipped.as_str()),
            ("garbage", "hello"),
            ("empty", ""),
            ("v4 header only", "v4.public."),
        ] {
            let e = ring.verify(t).expect_err(name);
            assert_eq!(e.code, bongsu_proto::ErrorCode::Unauthenticated, "{name}");
        }
    }

    #[test]
    fn refresh_tokens_parse_only_as_issued() {
        let t = new_refresh_token(U, D);
        assert_eq!(parse_refresh_token(&t).expect("parse"), (U, D));
        assert_eq!(refresh_hash(&t).len(), 32);
        assert_ne!(new_refresh_token(U, D), t);
        let secret = t.rsplit('.').next().expect("secret");
        for bad in [
            String::new(),
            "a.b.c".to_string(),
            format!("{U}.{D}"),
            format!("{U}.{D}.{secret}.x"),
            format!("{}.{D}.{secret}", U.to_string().to_uppercase()),
            format!("{U}.{D}.{}", URL_SAFE_NO_PAD.encode([1u8; 31])),
            format!("{U}.{D}.!!!"),
        ] {
            assert!(parse_refresh_token(&bad).is_err(), "{bad}");
        }
    }
}
