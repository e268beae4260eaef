//! Argon2id hashing (the length rules are `bongsu_proto::model::check_password`).
//!
//! Hashing costs tens of milliseconds of CPU on purpose, so it runs on the blocking pool and
//! never stalls the tasks that serve other requests.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

use crate::errors::{ApiError, Result};

/// An argon2id PHC string (salt and parameters included).
pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes);
        let salt = SaltString::encode_b64(&bytes)
            .map_err(|e| ApiError::unavailable(format!("cannot encode a salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::unavailable(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|_| ApiError::unavailable("password hashing was interrupted"))?
}

/// True when `password` matches the PHC string. A malformed stored hash is a mismatch (and
/// logged): the account cannot be signed into rather than signed into by anyone.
pub async fn verify(password: String, phc: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || match PasswordHash::new(&phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash is not a PHC string");
            false
        }
    })
    .await
    .map_err(|_| ApiError::unavailable("password verification was interrupted"))
}

/// Verifies against a fixed hash, so that a sign-in with an unknown handle takes as long as
/// one with a wrong password (no user enumeration by timing).
pub async fn verify_dummy(password: String) -> Result<()> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = match DUMMY.get() {
        Some(h) => h.clone(),
        None => {
            let h = hash("not a real password".to_string()).await?;
            DUMMY.get_or_init(|| h).clone()
        }
    };
    verify(password, phc).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse".to_string()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse".to_string(), h.clone())
            .await
            .expect("verify"));
        assert!(!verify("wrong horse!".to_string(), h).await.expect("verify"));
        assert!(!verify("x".to_string(), "garbage".to_string())
            .await
            .expect("verify"));
    }
}
